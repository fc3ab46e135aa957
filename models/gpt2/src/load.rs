//! Loading a Hugging Face GPT-2 folder (`config.json` + `model.safetensors` or
//! `pytorch_model.bin`) into [`Gpt2`].
//!
//! | checkpoint name (optional `transformer.` prefix) | module field | note |
//! | --- | --- | --- |
//! | `wte.weight` `[vocab, d]` | `wte` | also the LM head when tied |
//! | `wpe.weight` `[n_positions, d]` | `wpe` | |
//! | `h.{i}.ln_1.{weight,bias}` | `h[i].ln_1` | |
//! | `h.{i}.attn.c_attn.{weight,bias}` `[d, 3d]` | `h[i].attn.c_attn` | `Conv1D`: already `[in, out]` |
//! | `h.{i}.attn.c_proj.{weight,bias}` `[d, d]` | `h[i].attn.c_proj` | `Conv1D` |
//! | `h.{i}.ln_2.{weight,bias}` | `h[i].ln_2` | |
//! | `h.{i}.mlp.c_fc.{weight,bias}` `[d, inner]` | `h[i].mlp.c_fc` | `Conv1D` |
//! | `h.{i}.mlp.c_proj.{weight,bias}` `[inner, d]` | `h[i].mlp.c_proj` | `Conv1D` |
//! | `ln_f.{weight,bias}` | `ln_f` | |
//! | `lm_head.weight` `[vocab, d]` | `lm_head` or checked equal to `wte` | `nn.Linear`: `[out, in]` |
//! | `h.{i}.attn.bias`, `h.{i}.attn.masked_bias` | — | causal-mask buffers of old checkpoints: skipped |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use zoo_gguf::{GgufFile, TensorNames};
use zoo_nn::quant::{QMatrix, QType, Storage};
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{LayerNorm, TextEncoding, TextGenerator, TextTokenizer, TokenizerError, WeightFormat};

use crate::model::{Attention, Block, Gpt2, Mlp};
use crate::Gpt2Config;

/// Why a GPT-2 checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Gpt2Error {
    /// `config.json` is missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    Config {
        /// The config file.
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
    /// The checkpoint cannot be written as GGUF (the message says why).
    #[error("GGUF export: {0}")]
    Export(String),
}

/// A GPT-2 model with its tokenizer and stop id.
pub type Gpt2Generator<B> = TextGenerator<B, Gpt2<B>>;

/// Opens a GPT-2 folder with its tokenizer (`tokenizer.json`, `vocab.json` + `merges.txt`, or
/// OpenAI's `encoder.json` + `vocab.bpe`) and eos id. GPT-2 has no chat format of its own.
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Gpt2Generator<B>, Gpt2Error> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<Gpt2Generator<B>, Gpt2Error> {
    if dir.is_file()
        && dir
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return open_gguf(dir, device, format);
    }
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = TextTokenizer::from_dir(dir)?;
    Ok(TextGenerator::new(
        model,
        dir,
        tokenizer,
        TextEncoding::Tokenizer,
        None,
        config.eos_token_id.into_iter().collect(),
    ))
}

/// Reads `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<Gpt2Config, Gpt2Error> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Gpt2Error::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Gpt2Config::from_json(&text).map_err(|reason| Gpt2Error::Config { path, reason })
}

/// Loads a GPT-2 model folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Gpt2Config, Gpt2<B>), Gpt2Error> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(Gpt2Config, Gpt2<B>), Gpt2Error> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(is_buffer)?;
    Ok((config, model))
}

/// The causal-mask buffers older checkpoints carry; not parameters.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias")
}

/// Builds the module from checkpoint tensors (names with or without `transformer.`).
pub fn from_weights<B: Backend>(
    config: &Gpt2Config,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<Gpt2<B>, WeightError> {
    let p = if weights.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, vocab, inner) = (config.n_embd, config.vocab_size, config.inner_size());
    let eps = config.layer_norm_epsilon;
    let act = config
        .activation()
        .expect("validated when the config was read");

    let embedding =
        |w: &mut Weights, name: &str, rows: usize| -> Result<Embedding<B>, WeightError> {
            Ok(Embedding {
                weight: Param::from_tensor(w.tensor(name, [rows, d], device)?),
            })
        };
    let norm = |w: &mut Weights, prefix: &str| -> Result<LayerNorm<B>, WeightError> {
        Ok(LayerNorm::new(
            w.tensor(&format!("{prefix}.weight"), [d], device)?,
            w.tensor(&format!("{prefix}.bias"), [d], device)?,
            eps,
        ))
    };

    let wte = weights.embedding(&format!("{p}wte.weight"), vocab, d, device)?;
    let wpe = embedding(weights, &format!("{p}wpe.weight"), config.n_positions)?;
    let mut h = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let b = format!("{p}h.{i}");
        let mut scale = if config.scale_attn_weights {
            1.0 / (config.head_dim() as f64).sqrt()
        } else {
            1.0
        };
        if config.scale_attn_by_inverse_layer_idx {
            scale /= (i + 1) as f64;
        }
        h.push(Block {
            ln_1: norm(weights, &format!("{b}.ln_1"))?,
            attn: Attention {
                c_attn: weights.dense(
                    &format!("{b}.attn.c_attn"),
                    d,
                    3 * d,
                    true,
                    LinearLayout::InOut,
                    device,
                )?,
                c_proj: weights.dense(
                    &format!("{b}.attn.c_proj"),
                    d,
                    d,
                    true,
                    LinearLayout::InOut,
                    device,
                )?,
                n_head: config.n_head,
                scale,
            },
            ln_2: norm(weights, &format!("{b}.ln_2"))?,
            mlp: Mlp {
                c_fc: weights.dense(
                    &format!("{b}.mlp.c_fc"),
                    d,
                    inner,
                    true,
                    LinearLayout::InOut,
                    device,
                )?,
                c_proj: weights.dense(
                    &format!("{b}.mlp.c_proj"),
                    inner,
                    d,
                    true,
                    LinearLayout::InOut,
                    device,
                )?,
                act,
            },
        });
    }
    let ln_f = norm(weights, &format!("{p}ln_f"))?;
    let lm_head = if config.tie_word_embeddings {
        // Some writers store the tied head anyway; it must then equal the embedding.
        weights.take_tied("lm_head.weight", &format!("{p}wte.weight"), &[vocab, d])?;
        None
    } else {
        Some(weights.head("lm_head", d, vocab, false, LinearLayout::OutIn, device)?)
    };
    Ok(Gpt2 {
        wte,
        wpe,
        h,
        ln_f,
        lm_head,
        n_positions: config.n_positions,
    })
}

/// The GPT-2 config a GGUF file's `gpt2.*` metadata describes.
pub fn config_from_gguf(file: &GgufFile) -> Result<Gpt2Config, String> {
    let arch = file.architecture().map_err(|e| e.to_string())?;
    if arch != "gpt2" {
        return Err(format!("general.architecture is `{arch}`, not `gpt2`"));
    }
    let req = |s: &str| {
        file.get_u64(&format!("gpt2.{s}"))
            .map(|v| v as usize)
            .map_err(|e| e.to_string())
    };
    let d = req("embedding_length")?;
    let vocab = file
        .tensor_info("token_embd.weight")
        .map_err(|e| e.to_string())?
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let eps = file
        .get_f64("gpt2.attention.layer_norm_epsilon")
        .map(|e| (e as f32).to_string().parse().unwrap_or(e))
        .unwrap_or(1e-5);
    let config = Gpt2Config {
        vocab_size: vocab,
        n_positions: req("context_length")?,
        n_embd: d,
        n_layer: req("block_count")?,
        n_head: req("attention.head_count")?,
        n_inner: Some(req("feed_forward_length")?),
        layer_norm_epsilon: eps,
        tie_word_embeddings: file.tensor_info("output.weight").is_err(),
        bos_token_id: file.bos_token_id(),
        eos_token_id: file.eos_token_id(),
        ..Gpt2Config::default()
    };
    config.validate()?;
    Ok(config)
}

/// GGUF tensor names (llama.cpp's `gpt2`) to the checkpoint's names.
const NAMES: TensorNames = TensorNames {
    fixed: &[
        ("token_embd.weight", "wte.weight"),
        ("position_embd.weight", "wpe.weight"),
        ("output_norm.weight", "ln_f.weight"),
        ("output_norm.bias", "ln_f.bias"),
        ("output.weight", "lm_head.weight"),
    ],
    blocks: &[
        ("attn_norm", "ln_1"),
        ("attn_qkv", "attn.c_attn"),
        ("attn_output", "attn.c_proj"),
        ("ffn_norm", "ln_2"),
        ("ffn_up", "mlp.c_fc"),
        ("ffn_down", "mlp.c_proj"),
    ],
    layers: "h",
};

/// Opens a GGUF GPT-2 file (llama.cpp's `gpt2` architecture, as `zoo quantize` writes it) with
/// its tokenizer, its matrices kept as the file stores them (or in `format`).
pub fn open_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<Gpt2Generator<B>, Gpt2Error> {
    let gguf_err = |e: zoo_gguf::GgufError| Gpt2Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = GgufFile::open(path).map_err(gguf_err)?;
    let config = config_from_gguf(&file).map_err(|reason| Gpt2Error::Config {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut stored = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for info in file.tensors() {
        let name = NAMES
            .checkpoint_name(&info.name)
            .unwrap_or_else(|| info.name.clone());
        let shape = info.shape();
        let qtype = QType::from_ggml_id(info.dtype.id());
        let table = name.ends_with("wte.weight") || name.ends_with("wpe.weight");
        match (qtype, shape.len()) {
            // Matrices kept as the file stores them, rows = outputs (llama.cpp's layout).
            (Some(q), 2) if !(table && q == QType::F32) => {
                let (owner, offset, len) = file.shared_tensor(&info.name).map_err(gguf_err)?;
                let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = owner;
                let m = QMatrix::new(
                    q,
                    shape[0],
                    shape[1],
                    Storage::Shared { owner, offset, len },
                )
                .map_err(|e| Gpt2Error::Config {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{}`: {e}", info.name),
                })?;
                stored.insert(name, m);
            }
            _ => {
                let (shape, data) = file.tensor_f32(&info.name).map_err(gguf_err)?;
                tensors.insert(name, (shape, data));
            }
        }
    }
    let mut weights = Weights::from_stored(&path.display().to_string(), stored, tensors);
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(|_| false)?;
    let tokenizer = if file.get("tokenizer.ggml.model").is_some() {
        Some(TextTokenizer::new(
            file.tokenizer().map_err(gguf_err)?.tokenizer,
        ))
    } else {
        None
    };
    Ok(TextGenerator::new(
        model,
        path,
        tokenizer,
        TextEncoding::Tokenizer,
        None,
        config.eos_token_id.into_iter().collect(),
    ))
}
