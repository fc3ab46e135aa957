//! Sentence embeddings from a sentence-transformers folder (all-MiniLM-L6-v2), as
//! `zoo embed` computes them: the folder's own pooling and normalisation, one sentence at a
//! time.

use burn::backend::wgpu::WgpuDevice;
use serde::Deserialize;
use serde_json::json;
use zoo_bert::{BertConfig, Pooling, SentenceEncoder};
use zoo_nn::{TextTokenizer, Weights};

use crate::{read, Files, B};

/// One entry of `modules.json`.
#[derive(Deserialize)]
struct Module {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `1_Pooling/config.json` (the modes the zoo supports).
#[derive(Default, Deserialize)]
#[serde(default)]
struct PoolingConfig {
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// Joins a folder-relative module path and a file name (`""` + `config.json`).
fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn json<T: for<'de> Deserialize<'de>>(files: &Files, name: &str) -> Result<Option<T>, String> {
    files
        .text(name)?
        .map(|t| serde_json::from_str(&t).map_err(|e| format!("{name}: {e}")))
        .transpose()
}

/// Embeds `texts`; returns `{"embeddings": [[…], …]}`.
pub(crate) async fn run(
    model: &str,
    texts: &[String],
    mut files: Files,
) -> Result<serde_json::Value, String> {
    if texts.is_empty() {
        return Err("embed needs a JSON list of sentences in `prompt`".into());
    }
    let device = WgpuDevice::default();
    let (mut base, mut pooling_dir, mut normalize) = (String::new(), None, false);
    if let Some(modules) = json::<Vec<Module>>(&files, "modules.json")? {
        for m in modules {
            match m.kind.rsplit('.').next().unwrap_or("") {
                "Transformer" => base = m.path,
                "Pooling" => pooling_dir = Some(m.path),
                "Normalize" => normalize = true,
                other => {
                    return Err(format!(
                        "modules.json: module type `{other}` is not supported"
                    ))
                }
            }
        }
    }
    let pooling = match pooling_dir {
        Some(dir) => {
            let name = join(&dir, "config.json");
            let c: PoolingConfig =
                json(&files, &name)?.ok_or_else(|| format!("{model}: {name} is missing"))?;
            let modes: Vec<Pooling> = [
                (c.pooling_mode_cls_token, Pooling::Cls),
                (c.pooling_mode_max_tokens, Pooling::Max),
                (c.pooling_mode_mean_tokens, Pooling::Mean),
                (c.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
            ]
            .into_iter()
            .filter_map(|(on, mode)| on.then_some(mode))
            .collect();
            if modes.is_empty() {
                return Err(format!("{name}: no supported pooling mode is switched on"));
            }
            modes
        }
        None => vec![Pooling::Mean],
    };
    let config_name = join(&base, "config.json");
    let config_text = files
        .text(&config_name)?
        .ok_or_else(|| format!("{model}: {config_name} is missing"))?;
    let config = BertConfig::from_json(&config_text).map_err(|e| format!("{config_name}: {e}"))?;
    let weights_name = join(&base, "model.safetensors");
    let bytes = files
        .take(&weights_name)
        .ok_or_else(|| format!("{model}: {weights_name} is missing"))?;
    let mut weights =
        Weights::from_safetensors_bytes(&weights_name, bytes).map_err(|e| e.to_string())?;
    let bert = zoo_bert::load::from_weights::<B>(&config, &mut weights, &device)
        .map_err(|e| e.to_string())?;
    weights
        .finish(|name| {
            name.ends_with("embeddings.position_ids") || name.starts_with("cls.seq_relationship.")
        })
        .map_err(|e| e.to_string())?;
    let tokenizer_name = join(&base, "tokenizer.json");
    let tokenizer_bytes = files
        .take(&tokenizer_name)
        .ok_or_else(|| format!("{model}: {tokenizer_name} is missing"))?;
    let mut inner = tokenizers::Tokenizer::from_bytes(&tokenizer_bytes)
        .map_err(|e| format!("{tokenizer_name}: {e}"))?;
    inner.with_padding(None);
    inner
        .with_truncation(None)
        .map_err(|e| format!("{tokenizer_name}: {e}"))?;
    let mut max_len = config.max_position_embeddings;
    for name in [
        join(&base, "sentence_bert_config.json"),
        "sentence_bert_config.json".into(),
    ] {
        if let Some(v) = json::<serde_json::Value>(&files, &name)? {
            if let Some(m) = v.get("max_seq_length").and_then(|m| m.as_u64()) {
                max_len = max_len.min(m as usize);
            }
            break;
        }
    }
    let encoder = SentenceEncoder::from_parts(
        bert,
        config,
        pooling,
        normalize,
        max_len.max(2),
        TextTokenizer::new(inner),
        &device,
    );
    let mut vectors = Vec::with_capacity(texts.len());
    for text in texts {
        let ids = encoder.encode(text).map_err(|e| e.to_string())?.ids;
        let pooled = encoder.pooled_ids(&[ids]).map_err(|e| e.to_string())?;
        vectors.push(read(pooled).await?);
    }
    Ok(json!({ "embeddings": vectors }))
}
