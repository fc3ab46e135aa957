//! Loading a Hugging Face OPT folder (`config.json` + `model.safetensors`, sharded
//! safetensors or `pytorch_model.bin`) into [`Opt`].
//!
//! | checkpoint name (`model.decoder.` or `decoder.` prefix) | module field | note |
//! | --- | --- | --- |
//! | `embed_tokens.weight` `[vocab, e]` | `embed_tokens` | `e` = `word_embed_proj_dim`; also the head when tied |
//! | `embed_positions.weight` `[max_position_embeddings + 2, d]` | `embed_positions` | position `p` is row `p + 2` |
//! | `project_in.weight` `[d, e]` | `project_in` | only when `e != d`; no bias |
//! | `layers.{i}.self_attn.{q,k,v,out}_proj.{weight,bias}` `[d, d]` | `layers[i].self_attn.*` | biases when `enable_bias` |
//! | `layers.{i}.self_attn_layer_norm.{weight,bias}` | `layers[i].self_attn_layer_norm` | when `layer_norm_elementwise_affine` |
//! | `layers.{i}.fc1.{weight,bias}` `[ffn_dim, d]` | `layers[i].fc1` | biases when `enable_bias` |
//! | `layers.{i}.fc2.{weight,bias}` `[d, ffn_dim]` | `layers[i].fc2` | |
//! | `layers.{i}.final_layer_norm.{weight,bias}` | `layers[i].final_layer_norm` | the MLP's norm |
//! | `final_layer_norm.{weight,bias}` | `final_layer_norm` | pre-LN models without `_remove_final_layer_norm` only |
//! | `project_out.weight` `[e, d]` | `project_out` | only when `e != d`; no bias |
//! | `lm_head.weight` `[vocab, e]` (no prefix) | `lm_head`, or checked equal to `embed_tokens` when tied | no bias |
//!
//! Every `nn.Linear` is `[out, in]`. Without `layer_norm_elementwise_affine` the LayerNorms
//! have no tensors (weight 1, bias 0). No tensor is skipped: OPT checkpoints carry no buffers.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use tokenizers::AddedToken;
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{
    Dense, LayerNorm, TextEncoding, TextGenerator, TextTokenizer, TokenizerError, WeightFormat,
};

use crate::config::{LAYER_NORM_EPS, POSITION_OFFSET};
use crate::model::{Attention, DecoderLayer, Opt};
use crate::OptConfig;

/// Why an OPT checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OptError {
    /// `config.json` is missing, unreadable or describes a model OPT cannot run.
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

/// An OPT model with its tokenizer, bos-prefixed prompt encoding and stop ids.
pub type OptGenerator<B> = TextGenerator<B, Opt<B>>;

/// Opens an OPT folder with its tokenizer (`tokenizer.json`, or GPT-2's byte-level BPE
/// `vocab.json` + `merges.txt` as facebook/opt-* ship it) and eos ids. Text prompts start with
/// `bos_token_id` (`</s>`), as OPT's tokenizer writes them. OPT has no chat format.
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<OptGenerator<B>, OptError> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<OptGenerator<B>, OptError> {
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = read_tokenizer(dir)?;
    let encoding = prompt_encoding(tokenizer.as_ref(), config.bos_token_id);
    Ok(TextGenerator::new(
        model,
        dir,
        tokenizer,
        encoding,
        None,
        config.eos_ids(),
    ))
}

/// The folder's tokenizer, with OPT's `<s>`, `<pad>`, `</s>`, `<unk>` marked special (so they
/// are not split, and skipped when decoding asks to). `None` if the folder has none.
pub fn read_tokenizer(dir: &Path) -> Result<Option<TextTokenizer>, OptError> {
    let Some(tokenizer) = TextTokenizer::from_dir(dir)? else {
        return Ok(None);
    };
    let mut inner = tokenizer.inner().clone();
    let specials: Vec<AddedToken> = ["<s>", "<pad>", "</s>", "<unk>"]
        .into_iter()
        .filter(|t| inner.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t, true))
        .collect();
    inner.add_special_tokens(&specials);
    Ok(Some(TextTokenizer::new(inner)))
}

/// How prompts are encoded: OPT's tokenizer puts `bos` before the text. A `tokenizer.json`
/// whose post-processor already does so is used as it is; otherwise bos is added here.
pub fn prompt_encoding(tokenizer: Option<&TextTokenizer>, bos: Option<u32>) -> TextEncoding {
    let Some(bos) = bos else {
        return TextEncoding::Tokenizer;
    };
    let adds_bos = tokenizer
        .and_then(|t| t.encode("a", true).ok())
        .is_some_and(|ids| ids.first() == Some(&bos));
    if adds_bos {
        TextEncoding::Tokenizer
    } else {
        TextEncoding::Wrap {
            prefix: vec![bos],
            suffix: Vec::new(),
        }
    }
}

/// Reads `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<OptConfig, OptError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| OptError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    OptConfig::from_json(&text).map_err(|reason| OptError::Config { path, reason })
}

/// Loads an OPT model folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(OptConfig, Opt<B>), OptError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(OptConfig, Opt<B>), OptError> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(|_| false)?;
    Ok((config, model))
}

/// Builds the module from checkpoint tensors (names under `model.decoder.` or `decoder.`).
pub fn from_weights<B: Backend>(
    config: &OptConfig,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<Opt<B>, WeightError> {
    let p = if weights.contains("decoder.embed_tokens.weight") {
        "decoder."
    } else {
        "model.decoder."
    };
    let (d, e, f, vocab) = (
        config.hidden_size,
        config.embed_dim(),
        config.ffn_dim,
        config.vocab_size,
    );
    let bias = config.enable_bias;
    let act = config
        .activation()
        .expect("validated when the config was read");

    let norm = |w: &mut Weights, prefix: &str| -> Result<LayerNorm<B>, WeightError> {
        if config.layer_norm_elementwise_affine {
            Ok(LayerNorm::new(
                w.tensor(&format!("{prefix}.weight"), [d], device)?,
                w.tensor(&format!("{prefix}.bias"), [d], device)?,
                LAYER_NORM_EPS,
            ))
        } else {
            Ok(LayerNorm::new(
                Tensor::ones([d], device),
                Tensor::zeros([d], device),
                LAYER_NORM_EPS,
            ))
        }
    };
    let linear = |w: &mut Weights,
                  prefix: &str,
                  d_in: usize,
                  d_out: usize,
                  bias: bool|
     -> Result<Dense<B>, WeightError> {
        w.dense(prefix, d_in, d_out, bias, LinearLayout::OutIn, device)
    };

    let embed_tokens = weights.embedding(&format!("{p}embed_tokens.weight"), vocab, e, device)?;
    let rows = config.max_position_embeddings + POSITION_OFFSET;
    let embed_positions = Embedding {
        weight: Param::from_tensor(weights.tensor(
            &format!("{p}embed_positions.weight"),
            [rows, d],
            device,
        )?),
    };
    let project_in = if config.has_projections() {
        Some(linear(weights, &format!("{p}project_in"), e, d, false)?)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = format!("{p}layers.{i}");
        let a = format!("{l}.self_attn");
        layers.push(DecoderLayer {
            self_attn: Attention {
                q_proj: linear(weights, &format!("{a}.q_proj"), d, d, bias)?,
                k_proj: linear(weights, &format!("{a}.k_proj"), d, d, bias)?,
                v_proj: linear(weights, &format!("{a}.v_proj"), d, d, bias)?,
                out_proj: linear(weights, &format!("{a}.out_proj"), d, d, bias)?,
                num_heads: config.num_attention_heads,
                scaling: 1.0 / (config.head_dim() as f64).sqrt(),
            },
            self_attn_layer_norm: norm(weights, &format!("{l}.self_attn_layer_norm"))?,
            fc1: linear(weights, &format!("{l}.fc1"), d, f, bias)?,
            fc2: linear(weights, &format!("{l}.fc2"), f, d, bias)?,
            final_layer_norm: norm(weights, &format!("{l}.final_layer_norm"))?,
            act,
            do_layer_norm_before: config.do_layer_norm_before,
        });
    }
    let final_layer_norm = if config.has_final_layer_norm() {
        Some(norm(weights, &format!("{p}final_layer_norm"))?)
    } else {
        None
    };
    let project_out = if config.has_projections() {
        Some(linear(weights, &format!("{p}project_out"), d, e, false)?)
    } else {
        None
    };
    let lm_head = if config.tie_word_embeddings {
        // Some writers store the tied head anyway; it must then equal the embedding.
        weights.take_tied(
            "lm_head.weight",
            &format!("{p}embed_tokens.weight"),
            &[vocab, e],
        )?;
        None
    } else {
        Some(weights.head("lm_head", e, vocab, false, LinearLayout::OutIn, device)?)
    };
    Ok(Opt {
        embed_tokens,
        embed_positions,
        project_in,
        layers,
        final_layer_norm,
        project_out,
        lm_head,
        max_positions: config.max_position_embeddings,
    })
}
