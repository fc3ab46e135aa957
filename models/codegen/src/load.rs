//! Loading a Hugging Face CodeGen or MOSS folder (`config.json` + `model.safetensors`,
//! `pytorch_model.bin`, or their sharded indexes) into [`CodeGen`].
//!
//! | checkpoint name | module field | note |
//! | --- | --- | --- |
//! | `transformer.wte.weight` `[vocab, d]` | `wte` | |
//! | `transformer.h.{i}.ln_1.{weight,bias}` | `h[i].ln_1` | |
//! | `transformer.h.{i}.attn.qkv_proj.weight` `[3d, d]` | `h[i].attn.{q,k,v}_proj` | split here, once: see below |
//! | `transformer.h.{i}.attn.out_proj.weight` `[d, d]` | `h[i].attn.out_proj` | no bias |
//! | `transformer.h.{i}.mlp.fc_in.{weight,bias}` `[inner, d]` | `h[i].mlp.fc_in` | |
//! | `transformer.h.{i}.mlp.fc_out.{weight,bias}` `[d, inner]` | `h[i].mlp.fc_out` | |
//! | `transformer.ln_f.{weight,bias}` | `ln_f` | |
//! | `lm_head.{weight,bias}` `[vocab, d]` | `lm_head` | untied, with a bias |
//! | `transformer.h.{i}.attn.causal_mask`, `….attn.masked_bias` | — | buffers of older checkpoints (MOSS's): skipped |
//!
//! Every matrix is `nn.Linear`'s `[out, in]`. HF CodeGen reads the `3d` outputs of `qkv_proj`
//! as [`MP_NUM`] = 4 consecutive groups of `3d / 4`, each holding a `d / 4` slice of the
//! queries, then of the **values**, then of the keys (`query, value, key = split(…)`), the
//! slices of the 4 groups joined in group order. The rows are regrouped here into three
//! `[d, d]` matrices, so the forward pass never sees the grouping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{
    ChatFormat, Dense, LayerNorm, TextEncoding, TextGenerator, TokenizerError, WeightFormat,
};

use crate::chat::MossFormat;
use crate::config::MP_NUM;
use crate::model::{rotary_table, Attention, Block, CodeGen, Mlp};
use crate::tokenizer::load_tokenizer;
use crate::CodeGenConfig;

/// Why a CodeGen / MOSS checkpoint could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CodeGenError {
    /// `config.json` is missing, unreadable, or describes a model this crate cannot run.
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

/// A CodeGen or MOSS model with its tokenizer, stop ids and (MOSS) chat format.
pub type CodeGenGenerator<B> = TextGenerator<B, CodeGen<B>>;

/// Opens a CodeGen or MOSS folder with its tokenizer and eos ids; MOSS (`model_type: "moss"`)
/// also gets its chat format ([`MossFormat`]), which stops at `<eom>`.
pub fn open<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<CodeGenGenerator<B>, CodeGenError> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<CodeGenGenerator<B>, CodeGenError> {
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = load_tokenizer(dir)?;
    let chat = config
        .is_moss()
        .then(|| Arc::new(MossFormat) as Arc<dyn ChatFormat>);
    Ok(TextGenerator::new(
        model,
        dir,
        tokenizer,
        TextEncoding::Tokenizer,
        chat,
        config.eos_ids(),
    ))
}

/// Reads and checks `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<CodeGenConfig, CodeGenError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| CodeGenError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    CodeGenConfig::from_json(&text).map_err(|reason| CodeGenError::Config { path, reason })
}

/// Loads a CodeGen / MOSS folder onto `device`: every checkpoint tensor is used or the load
/// fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(CodeGenConfig, CodeGen<B>), CodeGenError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(CodeGenConfig, CodeGen<B>), CodeGenError> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(is_buffer)?;
    Ok((config, model))
}

/// The causal-mask buffers older checkpoints carry; not parameters.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".attn.causal_mask") || name.ends_with(".attn.masked_bias")
}

/// Rows of HF's fused `qkv_proj` `[3d, d]` (row-major) regrouped into the query, key and value
/// matrices, `[d, d]` each (see the module documentation).
pub fn split_qkv(qkv: &[f32], d: usize) -> [Vec<f32>; 3] {
    let local = d / MP_NUM;
    // Within each group of 3 * local rows: queries first, then values, then keys.
    let take = |offset: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(d * d);
        for i in 0..d {
            let row = (i / local) * 3 * local + offset + i % local;
            out.extend_from_slice(&qkv[row * d..(row + 1) * d]);
        }
        out
    };
    [take(0), take(2 * local), take(local)]
}

/// The query, key and value projections of block `b`, from its `qkv_proj`, kept in the
/// weights' format like every other matrix.
fn split_attention<B: Backend>(
    weights: &mut Weights,
    b: &str,
    d: usize,
    device: &B::Device,
) -> Result<[Dense<B>; 3], WeightError> {
    let fused = format!("{b}.attn.qkv_proj.weight");
    let values = weights.take_f32(&fused, &[3 * d, d])?;
    let [q, k, v] = split_qkv(&values, d);
    let names = ["q_proj", "k_proj", "v_proj"].map(|n| format!("{b}.attn.{n}"));
    let tensors = names
        .iter()
        .zip([q, k, v])
        .map(|(n, m)| (format!("{n}.weight"), (vec![d, d], m)))
        .collect::<BTreeMap<_, _>>();
    let mut split = Weights::from_f32(&format!("{fused} of {}", weights.source_name()), tensors);
    split.set_format(weights.format());
    let dense = |split: &mut Weights, name: &str| {
        split.dense(name, d, d, false, LinearLayout::OutIn, device)
    };
    let out = [
        dense(&mut split, &names[0])?,
        dense(&mut split, &names[1])?,
        dense(&mut split, &names[2])?,
    ];
    split.finish(|_| false)?;
    Ok(out)
}

/// Builds the module from checkpoint tensors.
pub fn from_weights<B: Backend>(
    config: &CodeGenConfig,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<CodeGen<B>, WeightError> {
    let (d, vocab, inner) = (config.n_embd, config.vocab_size, config.inner_size());
    let eps = config.layer_norm_epsilon;
    let act = config
        .activation()
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

    let wte = weights.embedding("transformer.wte.weight", vocab, d, device)?;
    let mut h = Vec::with_capacity(config.n_layer);
    for i in 0..config.n_layer {
        let b = format!("transformer.h.{i}");
        let ln_1 = norm(weights, &format!("{b}.ln_1"))?;
        let [q_proj, k_proj, v_proj] = split_attention(weights, &b, d, device)?;
        h.push(Block {
            ln_1,
            attn: Attention {
                q_proj,
                k_proj,
                v_proj,
                out_proj: linear(weights, &format!("{b}.attn.out_proj"), d, d, false)?,
                n_head: config.n_head,
                head_dim: config.head_dim(),
            },
            mlp: Mlp {
                fc_in: linear(weights, &format!("{b}.mlp.fc_in"), d, inner, true)?,
                fc_out: linear(weights, &format!("{b}.mlp.fc_out"), inner, d, true)?,
                act,
            },
        });
    }
    let ln_f = norm(weights, "transformer.ln_f")?;
    let lm_head = weights.head("lm_head", d, vocab, true, LinearLayout::OutIn, device)?;
    let (cos, sin) = rotary_table(config.rotary(), config.n_positions, device);
    Ok(CodeGen {
        wte,
        h,
        ln_f,
        lm_head,
        cos,
        sin,
        n_positions: config.n_positions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qkv_rows_regroup_from_four_groups_of_query_value_key() {
        // d = 8: 4 groups of 6 rows (2 query, 2 value, 2 key), one value per row = its index.
        let d = 8;
        let qkv: Vec<f32> = (0..3 * d).flat_map(|r| vec![r as f32; d]).collect();
        let [q, k, v] = split_qkv(&qkv, d);
        let rows = |m: &[f32]| -> Vec<f32> { m.chunks(d).map(|r| r[0]).collect() };
        assert_eq!(rows(&q), [0., 1., 6., 7., 12., 13., 18., 19.]);
        assert_eq!(rows(&v), [2., 3., 8., 9., 14., 15., 20., 21.]);
        assert_eq!(rows(&k), [4., 5., 10., 11., 16., 17., 22., 23.]);
    }
}
