//! GPT-2 from a Hugging Face folder's files: `config.json`, `model.safetensors` and the
//! tokenizer (`tokenizer.json`, else `vocab.json` + `merges.txt`), as `zoo_gpt2::open` reads
//! them from disk.

use std::path::Path;

use burn::backend::wgpu::WgpuDevice;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};
use zoo_gpt2::{Gpt2, Gpt2Config};
use zoo_nn::{TextEncoding, TextGenerator, TextTokenizer, Weights};

use crate::{Files, B};

fn tokenizer(files: &mut Files) -> Result<TextTokenizer, String> {
    if let Some(bytes) = files.take("tokenizer.json") {
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| format!("tokenizer.json: {e}"))?;
        return Ok(TextTokenizer::new(inner));
    }
    let vocab_text = files
        .text("vocab.json")?
        .ok_or("no tokenizer.json, nor vocab.json and merges.txt")?;
    let merges_text = files
        .text("merges.txt")?
        .ok_or("vocab.json without merges.txt")?;
    let vocab: std::collections::HashMap<String, u32> =
        serde_json::from_str(&vocab_text).map_err(|e| format!("vocab.json: {e}"))?;
    let vocab: Vocab = vocab.into_iter().collect();
    let merges = merges_text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("merges.txt: bad line `{l}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("vocab.json / merges.txt: {e}"))?;
    // As TextTokenizer::from_byte_level_bpe builds it from files.
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_decoder(Some(ByteLevel::new(false, true, true)));
    if inner.token_to_id("<|endoftext|>").is_some() {
        inner.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
    }
    Ok(TextTokenizer::new(inner))
}

/// A GPT-2 generator from a folder's files.
pub(crate) fn open(
    model: &str,
    mut files: Files,
    device: &WgpuDevice,
) -> Result<TextGenerator<B, Gpt2<B>>, String> {
    let config_text = files.text("config.json")?.ok_or_else(|| {
        format!(
            "{model}: no .gguf file and no config.json (files: {:?})",
            files.names().collect::<Vec<_>>()
        )
    })?;
    let kind: serde_json::Value =
        serde_json::from_str(&config_text).map_err(|e| format!("config.json: {e}"))?;
    let model_type = kind
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    if model_type != "gpt2" {
        return Err(format!(
            "{model}: model_type `{model_type}`: the page generates from GPT-2 folders and LLaMA-family .gguf files"
        ));
    }
    let config = Gpt2Config::from_json(&config_text).map_err(|e| format!("config.json: {e}"))?;
    let bytes = files.take("model.safetensors").ok_or_else(|| {
        format!("{model}: model.safetensors is missing (the page reads safetensors)")
    })?;
    let mut weights =
        Weights::from_safetensors_bytes("model.safetensors", bytes).map_err(|e| e.to_string())?;
    let gpt2 = zoo_gpt2::load::from_weights::<B>(&config, &mut weights, device)
        .map_err(|e| e.to_string())?;
    // The causal-mask buffers older checkpoints carry are not parameters.
    weights
        .finish(|name| name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"))
        .map_err(|e| e.to_string())?;
    let tokenizer = tokenizer(&mut files)?;
    Ok(TextGenerator::new(
        gpt2,
        Path::new(model),
        Some(tokenizer),
        TextEncoding::Tokenizer,
        None,
        config.eos_token_id.into_iter().collect(),
    ))
}
