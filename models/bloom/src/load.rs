//! Loading a Hugging Face BLOOM folder (`config.json` + `model.safetensors`, sharded
//! safetensors or `pytorch_model.bin`) into [`Bloom`].
//!
//! | checkpoint name (optional `transformer.` prefix) | module field | note |
//! | --- | --- | --- |
//! | `word_embeddings.weight` `[vocab, d]` | `word_embeddings` | also the LM head when tied |
//! | `word_embeddings_layernorm.{weight,bias}` | `word_embeddings_layernorm` | |
//! | `h.{i}.input_layernorm.{weight,bias}` | `h[i].input_layernorm` | |
//! | `h.{i}.self_attention.query_key_value.{weight,bias}` `[3d, d]` | `h[i].self_attention.query_key_value` | outputs per head `[heads, 3, head_dim]`, split in the forward |
//! | `h.{i}.self_attention.dense.{weight,bias}` `[d, d]` | `h[i].self_attention.dense` | |
//! | `h.{i}.post_attention_layernorm.{weight,bias}` | `h[i].post_attention_layernorm` | |
//! | `h.{i}.mlp.dense_h_to_4h.{weight,bias}` `[4d, d]` | `h[i].mlp.dense_h_to_4h` | |
//! | `h.{i}.mlp.dense_4h_to_h.{weight,bias}` `[d, 4d]` | `h[i].mlp.dense_4h_to_h` | |
//! | `ln_f.{weight,bias}` | `ln_f` | |
//! | `lm_head.weight` `[vocab, d]` | `lm_head`, or checked equal to `word_embeddings` when tied | never prefixed |
//!
//! All matrices are PyTorch `nn.Linear` weights, `[out, in]`. There are no buffers to skip; the
//! ALiBi slopes are computed from `n_head` ([`alibi_slopes`](crate::alibi_slopes)).

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{LayerNorm, TextEncoding, TextGenerator, TextTokenizer, TokenizerError, WeightFormat};

use crate::model::{alibi_slopes, Attention, Block, Bloom, Mlp};
use crate::BloomConfig;

/// Why a BLOOM checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BloomError {
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

/// A BLOOM model with its tokenizer and stop ids.
pub type BloomGenerator<B> = TextGenerator<B, Bloom<B>>;

/// Opens a BLOOM folder with its tokenizer (`tokenizer.json` when present) and eos ids.
/// BLOOM has no chat format of its own.
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<BloomGenerator<B>, BloomError> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<BloomGenerator<B>, BloomError> {
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = TextTokenizer::from_dir(dir)?;
    Ok(TextGenerator::new(
        model,
        dir,
        tokenizer,
        TextEncoding::Tokenizer,
        None,
        config.eos_token_id.clone(),
    ))
}

/// Reads `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<BloomConfig, BloomError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| BloomError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    BloomConfig::from_json(&text).map_err(|reason| BloomError::Config { path, reason })
}

/// Loads a BLOOM model folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(BloomConfig, Bloom<B>), BloomError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(BloomConfig, Bloom<B>), BloomError> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(|_| false)?;
    Ok((config, model))
}

/// Builds the module from checkpoint tensors (names with or without `transformer.`).
pub fn from_weights<B: Backend>(
    config: &BloomConfig,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<Bloom<B>, WeightError> {
    let p = if weights.contains("transformer.word_embeddings.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, vocab, inner) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size(),
    );
    let eps = config.layer_norm_epsilon;

    let norm = |w: &mut Weights, prefix: &str| -> Result<LayerNorm<B>, WeightError> {
        Ok(LayerNorm::new(
            w.tensor(&format!("{prefix}.weight"), [d], device)?,
            w.tensor(&format!("{prefix}.bias"), [d], device)?,
            eps,
        ))
    };
    let linear = |w: &mut Weights, prefix: &str, d_in: usize, d_out: usize| {
        w.dense(prefix, d_in, d_out, true, LinearLayout::OutIn, device)
    };

    let embedding_name = format!("{p}word_embeddings.weight");
    let word_embeddings = weights.embedding(&embedding_name, vocab, d, device)?;
    let word_embeddings_layernorm = norm(weights, &format!("{p}word_embeddings_layernorm"))?;
    let mut h = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let b = format!("{p}h.{i}");
        h.push(Block {
            input_layernorm: norm(weights, &format!("{b}.input_layernorm"))?,
            self_attention: Attention {
                query_key_value: linear(
                    weights,
                    &format!("{b}.self_attention.query_key_value"),
                    d,
                    3 * d,
                )?,
                dense: linear(weights, &format!("{b}.self_attention.dense"), d, d)?,
                n_head: config.n_head,
            },
            post_attention_layernorm: norm(weights, &format!("{b}.post_attention_layernorm"))?,
            mlp: Mlp {
                dense_h_to_4h: linear(weights, &format!("{b}.mlp.dense_h_to_4h"), d, inner)?,
                dense_4h_to_h: linear(weights, &format!("{b}.mlp.dense_4h_to_h"), inner, d)?,
            },
            residual_from_norm: config.apply_residual_connection_post_layernorm,
        });
    }
    let ln_f = norm(weights, &format!("{p}ln_f"))?;
    let lm_head = if config.tie_word_embeddings {
        // Some writers store the tied head anyway; it must then equal the embedding.
        weights.take_tied("lm_head.weight", &embedding_name, &[vocab, d])?;
        None
    } else {
        Some(weights.head("lm_head", d, vocab, false, LinearLayout::OutIn, device)?)
    };
    let slopes = alibi_slopes(config.n_head);
    let alibi_slopes = Tensor::from_data(TensorData::new(slopes, [config.n_head]), device);
    Ok(Bloom {
        word_embeddings,
        word_embeddings_layernorm,
        h,
        ln_f,
        lm_head,
        alibi_slopes,
        max_positions: config.max_positions(),
    })
}
