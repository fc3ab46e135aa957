//! A Hugging Face tokenizer written as GGUF `tokenizer.ggml.*` metadata, the way llama.cpp's
//! `convert_hf_to_gguf.py` writes a byte-level BPE vocabulary (GPT-2, SmolLM2, Llama-3 style):
//! model `gpt2`, every token by id, token types, merges, special ids, the chat template.

use crate::error::{GgufError, Result};
use crate::value::{Array, Value};
use crate::writer::GgufWriter;
use crate::{TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_USER_DEFINED};

/// llama.cpp's token type for ids no token uses (padding rows of the embedding).
const TOKEN_UNUSED: i32 = 5;

/// What the tokenizer metadata needs besides the tokenizer itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizerExport {
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Whether llama.cpp should put bos first when it tokenizes a prompt.
    pub add_bos: bool,
    /// The chat template (Jinja), if the checkpoint has one.
    pub chat_template: Option<String>,
    /// Rows of the model's embedding: the vocabulary is padded to it.
    pub vocab_rows: usize,
}

fn bad(msg: impl std::fmt::Display) -> GgufError {
    GgufError::Tokenizer(msg.to_string())
}

/// Adds the `tokenizer.ggml.*` keys for the tokenizer serialized as `tokenizer_json` (a
/// `tokenizer.json`, or `tokenizers::Tokenizer::to_string`). Only byte-level BPE tokenizers
/// with GPT-2's pre-tokenizer are written; anything else is an error naming what it is.
pub fn add_tokenizer(
    w: &mut GgufWriter,
    tokenizer_json: &str,
    opts: &TokenizerExport,
) -> Result<()> {
    let json: serde_json::Value =
        serde_json::from_str(tokenizer_json).map_err(|e| bad(format!("tokenizer.json: {e}")))?;
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad(format!(
            "only BPE tokenizers are written to GGUF, not {}",
            model["type"]
        )));
    }
    let pre = &json["pre_tokenizer"];
    let byte_level =
        pre["type"].as_str() == Some("ByteLevel") && pre["use_regex"].as_bool() != Some(false);
    if !byte_level {
        return Err(bad(format!(
            "only GPT-2's byte-level pre-tokenizer is written to GGUF, not {pre}"
        )));
    }
    if pre["add_prefix_space"].as_bool() == Some(true) {
        return Err(bad(
            "a byte-level pre-tokenizer that adds a prefix space has no llama.cpp equivalent",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("tokenizer.json has no model.vocab"))?;
    let added = json["added_tokens"].as_array().cloned().unwrap_or_default();
    let max_id = vocab
        .values()
        .filter_map(|v| v.as_u64())
        .chain(added.iter().filter_map(|t| t["id"].as_u64()))
        .max()
        .ok_or_else(|| bad("the vocabulary is empty"))? as usize;
    let n = opts.vocab_rows.max(max_id + 1);
    let mut tokens: Vec<Option<String>> = vec![None; n];
    let mut types = vec![TOKEN_NORMAL as i32; n];
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("a vocabulary id is not a number"))? as usize;
        tokens[id] = Some(token.clone());
    }
    for t in &added {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(bad("an added token has no id or content"));
        };
        let id = id as usize;
        tokens[id] = Some(content.to_string());
        types[id] = if t["special"].as_bool() == Some(true) {
            TOKEN_CONTROL as i32
        } else {
            TOKEN_USER_DEFINED as i32
        };
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = TOKEN_UNUSED;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|m| match m {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(pair) if pair.len() == 2 => Some(format!(
                        "{} {}",
                        pair[0].as_str().unwrap_or(""),
                        pair[1].as_str().unwrap_or("")
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    w.set("tokenizer.ggml.model", Value::String("gpt2".into()))
        .set("tokenizer.ggml.pre", Value::String("gpt-2".into()))
        .set("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
        .set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .set("tokenizer.ggml.merges", Value::Array(Array::String(merges)))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(opts.add_bos))
        .set("tokenizer.ggml.add_eos_token", Value::Bool(false));
    if let Some(bos) = opts.bos {
        w.set("tokenizer.ggml.bos_token_id", Value::U32(bos));
    }
    if let Some(eos) = opts.eos {
        w.set("tokenizer.ggml.eos_token_id", Value::U32(eos));
    }
    if let Some(t) = &opts.chat_template {
        w.set("tokenizer.chat_template", Value::String(t.clone()));
    }
    Ok(())
}
