//! Loading LLaMA checkpoints: Hugging Face folders (`config.json` + single or sharded
//! safetensors, or `pytorch_model.bin`) and llama.cpp GGUF files, into [`Llama`].
//!
//! | HF name (optional `model.` prefix) | GGUF name | module field | note |
//! | --- | --- | --- | --- |
//! | `embed_tokens.weight` `[vocab, d]` | `token_embd.weight` | `embed_tokens` | also the head when tied |
//! | `layers.{i}.input_layernorm.weight` | `blk.{i}.attn_norm.weight` | `layers[i].input_layernorm` | |
//! | `layers.{i}.self_attn.q_proj.{weight,bias}` | `blk.{i}.attn_q.*` | `…self_attn.q_proj` | GGUF rows un-permuted |
//! | `layers.{i}.self_attn.k_proj.{weight,bias}` | `blk.{i}.attn_k.*` | `…self_attn.k_proj` | GGUF rows un-permuted |
//! | `layers.{i}.self_attn.v_proj.{weight,bias}` | `blk.{i}.attn_v.*` | `…self_attn.v_proj` | |
//! | `layers.{i}.self_attn.o_proj.{weight,bias}` | `blk.{i}.attn_output.*` | `…self_attn.o_proj` | |
//! | `layers.{i}.post_attention_layernorm.weight` | `blk.{i}.ffn_norm.weight` | `…post_attention_layernorm` | |
//! | `layers.{i}.mlp.gate_proj.*` | `blk.{i}.ffn_gate.*` | `…mlp.gate_proj` | |
//! | `layers.{i}.mlp.up_proj.*` | `blk.{i}.ffn_up.*` | `…mlp.up_proj` | |
//! | `layers.{i}.mlp.down_proj.*` | `blk.{i}.ffn_down.*` | `…mlp.down_proj` | |
//! | `norm.weight` | `output_norm.weight` | `norm` | |
//! | `lm_head.weight` | `output.weight` | `lm_head`, absent when tied | `nn.Linear`: `[out, in]` |
//! | `layers.{i}.self_attn.rotary_emb.inv_freq` | — | — | RoPE buffer of old checkpoints: skipped |
//! | — | `rope_freqs.weight` | RoPE frequency divisors | llama3-scaled GGUF files |
//!
//! GGUF: llama.cpp's converter permutes the rows of `attn_q` / `attn_k` within each head
//! from half-split order to adjacent pairs (`reshape(heads, 2, hd/2, d).swapaxes(1, 2)`).
//! The loader undoes this, so the module always uses HF's half-split rotation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use zoo_gguf::{GgufError, GgufFile, TensorNames};
use zoo_nn::chat::{ChatError, ChatFormat, Template, TemplateFormat};
use zoo_nn::quant::{QMatrix, QType, Storage, WeightFormat};
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{RmsNorm, TextEncoding, TextGenerator, TextTokenizer, TokenizerError};

use crate::config::{LlamaConfig, RopeScalingConfig, TokenIds};
use crate::model::{Attention, DecoderLayer, Llama, LlamaRope, Mlp};

/// Why a LLaMA checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    /// `config.json` (or another JSON file of the folder) is missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The GGUF file is damaged or its metadata does not describe a LLaMA model.
    #[error("GGUF {path}: {source}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        source: GgufError,
    },
    /// The GGUF metadata is inconsistent or describes an unsupported variant.
    #[error("GGUF {path}: {reason}")]
    GgufModel {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The weights do not fit the config, or the file is damaged.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The tokenizer files are unreadable.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template is invalid.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The checkpoint cannot be written as GGUF (the message says why).
    #[error("GGUF export: {0}")]
    Export(String),
}

/// A LLaMA model with its tokenizer, prompt encoding, chat format and stop ids.
pub type LlamaGenerator<B> = TextGenerator<B, Llama<B>>;

/// Opens a HF folder or a `.gguf` file with its tokenizer, chat template and stop ids.
///
/// Text prompts are encoded as transformers' `tokenizer(text)` does (the post-processor of
/// `tokenizer.json` adds Llama-2's `<s>`), or as llama.cpp does for GGUF files
/// (`tokenizer.ggml.add_bos_token`).
pub fn open<B: Backend>(path: &Path, device: &B::Device) -> Result<LlamaGenerator<B>, LlamaError> {
    open_with(path, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    path: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<LlamaGenerator<B>, LlamaError> {
    if is_gguf(path) {
        open_gguf(path, device, format)
    } else {
        open_dir(path, device, format)
    }
}

/// Whether `path` is a `.gguf` file.
fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, LlamaError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |reason: String| LlamaError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

fn open_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<LlamaGenerator<B>, LlamaError> {
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = TextTokenizer::from_dir(dir)?;
    let mut eos_ids = config.eos_ids();
    if let Some(gen) = read_json(&dir.join("generation_config.json"))? {
        if let Some(eos) = gen.get("eos_token_id") {
            if let Ok(ids) = serde_json::from_value::<TokenIds>(eos.clone()) {
                eos_ids.extend(ids.to_vec());
            }
        }
    }
    let template = match read_json(&dir.join("tokenizer_config.json"))? {
        Some(tc) => hf_chat_template(&tc)?,
        None => None,
    };
    // transformers' apply_chat_template adds no bos beyond what the template writes.
    let format = template.map(|t| Arc::new(TemplateFormat::new(t, None)) as Arc<dyn ChatFormat>);
    Ok(TextGenerator::new(
        model,
        dir,
        tokenizer,
        TextEncoding::Tokenizer,
        format,
        eos_ids,
    ))
}

/// The chat template of a `tokenizer_config.json`, with its bos/eos token texts.
fn hf_chat_template(tc: &serde_json::Value) -> Result<Option<Template>, LlamaError> {
    let text = match tc.get("chat_template") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // A list of named templates: take `default`, else the first.
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or(list.first())
            .and_then(|t| t.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        _ => None,
    };
    let token = |key: &str| -> String {
        match tc.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_string(),
            None => String::new(),
        }
    };
    Ok(match text {
        Some(text) => Some(Template::jinja(
            &text,
            &token("bos_token"),
            &token("eos_token"),
        )?),
        None => None,
    })
}

/// Reads `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<LlamaConfig, LlamaError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| LlamaError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    LlamaConfig::from_json(&text).map_err(|reason| LlamaError::Config { path, reason })
}

/// Loads a HF LLaMA folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(LlamaConfig, Llama<B>), LlamaError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(LlamaConfig, Llama<B>), LlamaError> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, None, device)?;
    weights.finish(|name| name.ends_with("rotary_emb.inv_freq"))?;
    Ok((config, model))
}

/// Builds the module from HF-named tensors (with or without the `model.` prefix);
/// `freq_factors` divide the RoPE frequencies (GGUF `rope_freqs.weight`).
pub fn from_weights<B: Backend>(
    config: &LlamaConfig,
    weights: &mut Weights,
    freq_factors: Option<&[f32]>,
    device: &B::Device,
) -> Result<Llama<B>, WeightError> {
    let p = if weights.contains("model.embed_tokens.weight") {
        "model."
    } else {
        ""
    };
    let (d, vocab, inner) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size,
    );
    let (h, kv, hd) = (
        config.num_attention_heads,
        config.kv_heads(),
        config.head_dim(),
    );
    let eps = config.rms_norm_eps;
    let act = config
        .activation()
        .expect("validated when the config was read");
    let (ab, mb) = (config.attention_bias, config.mlp_bias);
    let norm = |w: &mut Weights, name: &str| -> Result<RmsNorm<B>, WeightError> {
        Ok(RmsNorm::new(w.tensor(name, [d], device)?, eps))
    };
    let embed_tokens = weights.embedding(&format!("{p}embed_tokens.weight"), vocab, d, device)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = format!("{p}layers.{i}");
        let lin = |w: &mut Weights, name: &str, din: usize, dout: usize, bias: bool| {
            w.dense(
                &format!("{l}.{name}"),
                din,
                dout,
                bias,
                LinearLayout::OutIn,
                device,
            )
        };
        layers.push(DecoderLayer {
            input_layernorm: norm(weights, &format!("{l}.input_layernorm.weight"))?,
            self_attn: Attention {
                q_proj: lin(weights, "self_attn.q_proj", d, h * hd, ab)?,
                k_proj: lin(weights, "self_attn.k_proj", d, kv * hd, ab)?,
                v_proj: lin(weights, "self_attn.v_proj", d, kv * hd, ab)?,
                o_proj: lin(weights, "self_attn.o_proj", h * hd, d, ab)?,
                num_heads: h,
                num_kv_heads: kv,
                head_dim: hd,
            },
            post_attention_layernorm: norm(
                weights,
                &format!("{l}.post_attention_layernorm.weight"),
            )?,
            mlp: Mlp {
                gate_proj: lin(weights, "mlp.gate_proj", d, inner, mb)?,
                up_proj: lin(weights, "mlp.up_proj", d, inner, mb)?,
                down_proj: lin(weights, "mlp.down_proj", inner, d, mb)?,
                act,
            },
        });
    }
    let norm_f = norm(weights, &format!("{p}norm.weight"))?;
    let lm_head = if config.tie_word_embeddings {
        // Some writers store the tied head anyway; it must then equal the embedding.
        weights.take_tied(
            "lm_head.weight",
            &format!("{p}embed_tokens.weight"),
            &[vocab, d],
        )?;
        None
    } else {
        Some(weights.head("lm_head", d, vocab, false, LinearLayout::OutIn, device)?)
    };
    Ok(Llama {
        embed_tokens,
        layers,
        norm: norm_f,
        lm_head,
        rope: LlamaRope::new(config, freq_factors, device),
        max_positions: config.context_length(),
    })
}

/// The LLaMA config a GGUF file's `llama.*` metadata describes.
pub fn config_from_gguf(file: &GgufFile) -> Result<LlamaConfig, String> {
    let arch = file.architecture().map_err(|e| e.to_string())?;
    if arch != "llama" {
        return Err(format!("general.architecture is `{arch}`, not `llama`"));
    }
    let key = |s: &str| format!("llama.{s}");
    let req = |s: &str| {
        file.get_u64(&key(s))
            .map(|v| v as usize)
            .map_err(|e| e.to_string())
    };
    let opt = |s: &str| file.get(&key(s)).map(|_| req(s)).transpose();
    let hidden = req("embedding_length")?;
    let heads = req("attention.head_count")?;
    let kv = opt("attention.head_count_kv")?.unwrap_or(heads);
    if heads == 0 {
        return Err("llama.attention.head_count is 0".into());
    }
    let head_dim = opt("attention.key_length")?.unwrap_or(hidden / heads);
    if let Some(v) = opt("attention.value_length")? {
        if v != head_dim {
            return Err(format!(
                "value_length {v} differs from key_length {head_dim}: not supported"
            ));
        }
    }
    if let Some(r) = opt("rope.dimension_count")? {
        if r != head_dim {
            return Err(format!("rope.dimension_count {r} differs from the head size {head_dim} (partial rotary is not LLaMA)"));
        }
    }
    let vocab = match opt("vocab_size")? {
        Some(v) => v,
        None => file
            .tensor_info("token_embd.weight")
            .map_err(|e| e.to_string())?
            .shape()
            .first()
            .copied()
            .unwrap_or(0),
    };
    let f = |s: &str| {
        file.get(&key(s))
            .map(|_| file.get_f64(&key(s)).map_err(|e| e.to_string()))
            .transpose()
    };
    let theta = f("rope.freq_base")?.unwrap_or(10000.0);
    // f32 in the file: round-trip through f32 so 1e-5 does not become 9.99999974e-6.
    let eps = f("attention.layer_norm_rms_epsilon")?
        .map_or(1e-5, |e| (e as f32).to_string().parse().unwrap_or(e));
    let rope_scaling = match file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some("linear") => Some(RopeScalingConfig {
            rope_type: Some("linear".into()),
            factor: Some(
                f("rope.scaling.factor")?
                    .ok_or("linear rope scaling without llama.rope.scaling.factor")?,
            ),
            ..Default::default()
        }),
        Some(other) => return Err(format!("rope scaling type `{other}` is not supported")),
    };
    let has = |name: &str| file.tensor_info(name).is_ok();
    let config = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: req("feed_forward_length")?,
        num_hidden_layers: req("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        head_dim: Some(head_dim),
        rms_norm_eps: eps,
        rope_theta: Some(theta),
        rope_scaling,
        rope_parameters: None,
        max_position_embeddings: opt("context_length")?.unwrap_or(2048),
        tie_word_embeddings: !has("output.weight"),
        bos_token_id: file.bos_token_id(),
        eos_token_id: file.eos_token_id().map(TokenIds::One),
        attention_bias: has("blk.0.attn_q.bias"),
        mlp_bias: has("blk.0.ffn_gate.bias"),
        hidden_act: "silu".into(),
        model_type: Some("llama".into()),
    };
    config.validate()?;
    Ok(config)
}

/// Undoes llama.cpp's q/k row permutation: within each of `heads` blocks of rows, stored row
/// `2i + j` goes back to row `j * hd/2 + i`.
fn unpermute(data: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// [`unpermute`] on a matrix kept in a stored format: whole rows move, bytes unchanged.
fn unpermute_rows(m: &QMatrix, heads: usize) -> Result<QMatrix, String> {
    let rows = m.rows();
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(format!("{rows} rows, not a multiple of 2 × {heads} heads"));
    }
    let hd = rows / heads;
    let half = hd / 2;
    let row_bytes = m.row_bytes(0).len();
    let mut out = vec![0u8; rows * row_bytes];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * half + i;
                out[dst * row_bytes..(dst + 1) * row_bytes].copy_from_slice(m.row_bytes(src));
            }
        }
    }
    QMatrix::new(m.qtype(), rows, m.cols(), Storage::Owned(out)).map_err(|e| e.to_string())
}

/// GGUF tensor names to HF names.
const NAMES: TensorNames = TensorNames {
    fixed: &[
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ],
    blocks: &[
        ("attn_norm", "input_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ],
    layers: "model.layers",
};

/// Loads a GGUF LLaMA file onto `device`, its matrices kept as the file stores them.
pub fn load_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LlamaConfig, Llama<B>), LlamaError> {
    let file = GgufFile::open(path).map_err(|source| LlamaError::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    load_gguf_file(&file, path, device, WeightFormat::AS_STORED)
}

/// Loads a GGUF LLaMA file keeping its matrices as the file stores them (Q4_1, Q8_0, …),
/// or in `format` where it names a type.
fn load_gguf_file<B: Backend>(
    file: &GgufFile,
    path: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(LlamaConfig, Llama<B>), LlamaError> {
    let gguf_err = |source| LlamaError::Gguf {
        path: path.to_path_buf(),
        source,
    };
    let config = config_from_gguf(file).map_err(|reason| LlamaError::GgufModel {
        path: path.to_path_buf(),
        reason,
    })?;
    let (h, kv) = (config.num_attention_heads, config.kv_heads());
    let mut tensors = BTreeMap::new();
    let mut stored = BTreeMap::new();
    let mut freq_factors = None;
    let bad = |reason: String| LlamaError::GgufModel {
        path: path.to_path_buf(),
        reason,
    };
    for info in file.tensors() {
        // Unknown names keep their GGUF name, so the strict check reports them.
        let name = NAMES
            .checkpoint_name(&info.name)
            .unwrap_or_else(|| info.name.clone());
        let heads = if info.name.contains(".attn_q.") {
            Some(h)
        } else if info.name.contains(".attn_k.") {
            Some(kv)
        } else {
            None
        };
        let shape = info.shape();
        let qtype = QType::from_ggml_id(info.dtype.id()).filter(|t| *t != QType::F32);
        if let (Some(qtype), 2) = (qtype, shape.len()) {
            // A matrix kept as the file stores it: a slice of the memory map.
            let (rows, cols) = (shape[0], shape[1]);
            let (owner, offset, len) = file.shared_tensor(&info.name).map_err(gguf_err)?;
            let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = owner;
            let m = QMatrix::new(qtype, rows, cols, Storage::Shared { owner, offset, len })
                .map_err(|e| bad(format!("tensor `{}`: {e}", info.name)))?;
            let m = match heads {
                Some(n) => unpermute_rows(&m, n)
                    .map_err(|reason| bad(format!("tensor `{}`: {reason}", info.name)))?,
                None => m,
            };
            stored.insert(name, m);
            continue;
        }
        let (shape, data) = file.tensor_f32(&info.name).map_err(gguf_err)?;
        if info.name == "rope_freqs.weight" {
            freq_factors = Some(data);
            continue;
        }
        let data = match heads {
            Some(n) => {
                let rows = shape.first().copied().unwrap_or(0);
                let cols = shape.get(1).copied().unwrap_or(1);
                if rows % (2 * n) != 0 {
                    return Err(bad(format!(
                        "tensor `{}` has {rows} rows, not a multiple of 2 × {n} heads",
                        info.name
                    )));
                }
                unpermute(&data, rows, cols, n)
            }
            None => data,
        };
        tensors.insert(name, (shape, data));
    }
    if let Some(ff) = &freq_factors {
        if ff.len() != config.head_dim() / 2 {
            return Err(LlamaError::GgufModel {
                path: path.to_path_buf(),
                reason: format!(
                    "rope_freqs.weight has {} values, expected {}",
                    ff.len(),
                    config.head_dim() / 2
                ),
            });
        }
    }
    let mut weights = Weights::from_stored(&path.display().to_string(), stored, tensors);
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, freq_factors.as_deref(), device)?;
    weights.finish(|_| false)?;
    Ok((config, model))
}

fn open_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<LlamaGenerator<B>, LlamaError> {
    let file = GgufFile::open(path).map_err(|source| LlamaError::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    open_gguf_file(&file, path, device, format)
}

/// [`open_with`] for a GGUF file already read (from memory: a browser's download);
/// `path` names it in messages.
pub fn open_gguf_file<B: Backend>(
    file: &GgufFile,
    path: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<LlamaGenerator<B>, LlamaError> {
    let (config, model) = load_gguf_file(file, path, device, format)?;
    let gguf_tok = if file.get("tokenizer.ggml.model").is_some() {
        Some(file.tokenizer().map_err(|source| LlamaError::Gguf {
            path: path.to_path_buf(),
            source,
        })?)
    } else {
        None
    };
    let add_bos = gguf_tok.as_ref().is_some_and(|t| t.add_bos);
    // The GGUF tokenizer's post-processor adds bos itself when the file asks for it.
    let tokenizer = gguf_tok.map(|t| TextTokenizer::new(t.tokenizer));
    let token_text = |id: Option<u32>| -> String {
        let tokens = file.get_str_array("tokenizer.ggml.tokens").ok();
        id.and_then(|i| tokens.and_then(|t| t.get(i as usize)).cloned())
            .unwrap_or_default()
    };
    let template = match file.chat_template() {
        Some(text) => Some(Template::jinja(
            text,
            &token_text(config.bos_token_id),
            &token_text(file.eos_token_id()),
        )?),
        None => None,
    };
    // llama.cpp tokenizes a rendered chat with bos first when the file asks for it.
    let bos = config.bos_token_id.filter(|_| add_bos);
    let format = template.map(|t| Arc::new(TemplateFormat::new(t, bos)) as Arc<dyn ChatFormat>);
    let mut eos_ids = config.eos_ids();
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        if let Ok(id) = file.get_u32(key) {
            eos_ids.push(id);
        }
    }
    Ok(TextGenerator::new(
        model,
        path,
        tokenizer,
        TextEncoding::Tokenizer,
        format,
        eos_ids,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // 2 heads of 4 rows, 1 column: original rows 0..8.
        let original: Vec<f32> = (0..8).map(|x| x as f32).collect();
        // llama.cpp: reshape(2, 2, 2, 1).swapaxes(1, 2): per head [0, 2, 1, 3].
        let permuted = vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
        assert_eq!(unpermute(&permuted, 8, 1, 2), original);
        assert_eq!(
            NAMES.checkpoint_name("blk.3.ffn_down.weight").as_deref(),
            Some("model.layers.3.mlp.down_proj.weight")
        );
        assert_eq!(NAMES.checkpoint_name("blk.x.attn_q.weight"), None);
    }
}
