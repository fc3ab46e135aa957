//! Loading a Hugging Face GPT-Neo folder (`config.json` + `model.safetensors` or
//! `pytorch_model.bin`) into [`GptNeo`].
//!
//! | checkpoint name (optional `transformer.` prefix) | module field | note |
//! | --- | --- | --- |
//! | `wte.weight` `[vocab, d]` | `wte` | also the LM head when tied |
//! | `wpe.weight` `[max_position_embeddings, d]` | `wpe` | |
//! | `h.{i}.ln_1.{weight,bias}` | `h[i].ln_1` | |
//! | `h.{i}.attn.attention.{q,k,v}_proj.weight` `[d, d]` | `h[i].attn.{q,k,v}_proj` | `nn.Linear` `[out, in]`, no bias |
//! | `h.{i}.attn.attention.out_proj.{weight,bias}` `[d, d]` | `h[i].attn.out_proj` | `nn.Linear` |
//! | `h.{i}.ln_2.{weight,bias}` | `h[i].ln_2` | |
//! | `h.{i}.mlp.c_fc.{weight,bias}` `[inner, d]` | `h[i].mlp.c_fc` | `nn.Linear` (not GPT-2's `Conv1D`) |
//! | `h.{i}.mlp.c_proj.{weight,bias}` `[d, inner]` | `h[i].mlp.c_proj` | `nn.Linear` |
//! | `ln_f.{weight,bias}` | `ln_f` | |
//! | `lm_head.weight` `[vocab, d]` | `lm_head` or checked equal to `wte` | |
//! | `h.{i}.attn.attention.bias`, `h.{i}.attn.attention.masked_bias` | — | causal / window mask buffers of old checkpoints: skipped |
//!
//! Whether layer `i` is global or local comes from the config's `attention_types`, not from the
//! checkpoint.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{LayerNorm, TextEncoding, TextGenerator, TextTokenizer, TokenizerError, WeightFormat};

use crate::model::{Block, GptNeo, Mlp, SelfAttention};
use crate::GptNeoConfig;

/// Why a GPT-Neo checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GptNeoError {
    /// `config.json` is missing, unreadable or describes a model this crate cannot run.
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
}

/// A GPT-Neo model with its tokenizer and stop ids.
pub type GptNeoGenerator<B> = TextGenerator<B, GptNeo<B>>;

/// Opens a GPT-Neo folder with its tokenizer (`tokenizer.json`, or `vocab.json` +
/// `merges.txt`: GPT-2's byte-level BPE) and eos ids. GPT-Neo has no chat format of its own.
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<GptNeoGenerator<B>, GptNeoError> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<GptNeoGenerator<B>, GptNeoError> {
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = TextTokenizer::from_dir(dir)?;
    Ok(TextGenerator::new(
        model,
        dir,
        tokenizer,
        TextEncoding::Tokenizer,
        None,
        config.eos_ids(),
    ))
}

/// Reads and checks `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<GptNeoConfig, GptNeoError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| GptNeoError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    GptNeoConfig::from_json(&text).map_err(|reason| GptNeoError::Config { path, reason })
}

/// Loads a GPT-Neo model folder onto `device`: every checkpoint tensor is used or the load
/// fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(GptNeoConfig, GptNeo<B>), GptNeoError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(GptNeoConfig, GptNeo<B>), GptNeoError> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(is_buffer)?;
    Ok((config, model))
}

/// The mask buffers older checkpoints carry; not parameters.
fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.attention.bias") || name.ends_with(".attn.attention.masked_bias")
}

/// Builds the module from checkpoint tensors (names with or without `transformer.`); `config`
/// must have passed [`GptNeoConfig::validate`].
pub fn from_weights<B: Backend>(
    config: &GptNeoConfig,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<GptNeo<B>, WeightError> {
    let p = if weights.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, vocab, inner) = (config.hidden_size, config.vocab_size, config.inner_size());
    let eps = config.layer_norm_epsilon;
    let act = config
        .activation()
        .expect("validated when the config was read");
    let kinds = config
        .attention_layers()
        .expect("validated when the config was read");

    let norm = |w: &mut Weights, prefix: &str| -> Result<LayerNorm<B>, WeightError> {
        Ok(LayerNorm::new(
            w.tensor(&format!("{prefix}.weight"), [d], device)?,
            w.tensor(&format!("{prefix}.bias"), [d], device)?,
            eps,
        ))
    };
    let linear = |w: &mut Weights, prefix: &str, d_in: usize, d_out: usize, bias: bool| {
        w.dense(prefix, d_in, d_out, bias, LinearLayout::OutIn, device)
    };

    let wte = weights.embedding(&format!("{p}wte.weight"), vocab, d, device)?;
    let wpe = Embedding {
        weight: Param::from_tensor(weights.tensor(
            &format!("{p}wpe.weight"),
            [config.max_position_embeddings, d],
            device,
        )?),
    };
    let mut h = Vec::with_capacity(config.num_layers);
    for (i, kind) in kinds.into_iter().enumerate() {
        let b = format!("{p}h.{i}");
        let a = format!("{b}.attn.attention");
        h.push(Block {
            ln_1: norm(weights, &format!("{b}.ln_1"))?,
            attn: SelfAttention {
                q_proj: linear(weights, &format!("{a}.q_proj"), d, d, false)?,
                k_proj: linear(weights, &format!("{a}.k_proj"), d, d, false)?,
                v_proj: linear(weights, &format!("{a}.v_proj"), d, d, false)?,
                out_proj: linear(weights, &format!("{a}.out_proj"), d, d, true)?,
                num_heads: config.num_heads,
                kind,
            },
            ln_2: norm(weights, &format!("{b}.ln_2"))?,
            mlp: Mlp {
                c_fc: linear(weights, &format!("{b}.mlp.c_fc"), d, inner, true)?,
                c_proj: linear(weights, &format!("{b}.mlp.c_proj"), inner, d, true)?,
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
    Ok(GptNeo {
        wte,
        wpe,
        h,
        ln_f,
        lm_head,
        max_position_embeddings: config.max_position_embeddings,
        window_size: config.window_size,
    })
}
