//! P-Tuning v2 for ChatGLM-6B and ChatGLM2/3: only the prefix encoder trains, the model stays
//! frozen.
//!
//! ChatGLM's `PrefixEncoder` without projection (`prefix_projection: false`, what its
//! `ptuning/` scripts train) is one embedding `transformer.prefix_encoder.embedding.weight`
//! `[pre_seq_len, num_layers * 2 * kv_heads * head_dim]` (ChatGLM-6B: every head, so
//! `num_layers * 2 * hidden`; ChatGLM2/3: the `multi_query_group_num` key/value groups of
//! `kv_channels`), whose rows, reshaped to `[pre_seq_len, num_layers * 2, kv_heads, head_dim]`,
//! are the keys (even index) and values (odd) put in front of every layer's cache. The zoo's
//! models hold the same numbers permuted to `[num_layers * 2, kv_heads, pre_seq_len,
//! head_dim]` (`ChatGlmV1::prefix`, `ChatGlmV2::prefix`), and that tensor is what trains here:
//! a permutation changes neither the gradient's values nor AdamW/SGD (both act element by
//! element) nor the global norm clipping uses, so training it is training the embedding.
//!
//! The result is written as ChatGLM's trainer writes a P-Tuning checkpoint: a folder with
//! `config.json` (the base config with `pre_seq_len` and `prefix_projection: false`) and the
//! prefix encoder's one tensor under its checkpoint name, in `pytorch_model.bin` (PyTorch's
//! `torch.save` format, which ChatGLM's `main.py --ptuning_checkpoint` `torch.load`s) and the
//! same in `model.safetensors` (see [`write_prefix`]). [`load_with_prefix`] runs such a folder over
//! its ChatGLM-6B base model through the zoo's loader (`zoo_glm::v1::from_weights`, which
//! evaluates `prefix_encoder.*` when `pre_seq_len` is set, with or without projection);
//! [`apply_prefix`] puts a projection-free prefix onto either generation.

use std::path::Path;

use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde_json::Value;

use super::peft::{write_atomic, Trainable};
use super::FinetuneError;
use crate::glm::v1::{ChatGlmV1, ChatGlmV1Config};
use crate::glm::v2::ChatGlmV2;
use crate::nn::{CausalLm, Dense, Logits, Weights};

/// The prefix encoder's tensor in ChatGLM's P-Tuning checkpoints.
pub const PREFIX_KEY: &str = "transformer.prefix_encoder.embedding.weight";

/// The safetensors file the prefix is written to (see [`write_prefix`]).
pub const PREFIX_FILE: &str = "model.safetensors";

/// The `torch.save` file the prefix is written to, as ChatGLM's trainer writes it.
pub const PREFIX_BIN: &str = "pytorch_model.bin";

impl<B: Backend> Trainable<B> for ChatGlmV1<B> {
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("transformer.layers.{i}");
            out.push((format!("{p}.attention.query_key_value"), &l.query_key_value));
            out.push((format!("{p}.attention.dense"), &l.dense));
            out.push((format!("{p}.mlp.dense_h_to_4h"), &l.dense_h_to_4h));
            out.push((format!("{p}.mlp.dense_4h_to_h"), &l.dense_4h_to_h));
        }
        if let Some(head) = &self.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }

    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("transformer.layers.{i}");
            out.push((
                format!("{p}.attention.query_key_value"),
                &mut l.query_key_value,
            ));
            out.push((format!("{p}.attention.dense"), &mut l.dense));
            out.push((format!("{p}.mlp.dense_h_to_4h"), &mut l.dense_h_to_4h));
            out.push((format!("{p}.mlp.dense_4h_to_h"), &mut l.dense_4h_to_h));
        }
        if let Some(head) = &mut self.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }

    /// Row by row: each row's own `[gMASK]` and `<sop>` fix its positions and its prefix-LM
    /// mask, as ChatGLM's `get_position_ids` / `get_masks` do per sequence. Right padding
    /// after a row's end is causal, so it changes nothing before it.
    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError> {
        let [b, t] = ids.dims();
        let mut rows = Vec::with_capacity(b);
        for r in 0..b {
            let row = ids.clone().slice([r..r + 1, 0..t]);
            let mut cache = self.cache(1, t);
            rows.push(self.forward_cached(row, &mut cache, Logits::All)?);
        }
        Ok(Tensor::cat(rows, 0))
    }

    fn context(&self) -> usize {
        self.max_positions
    }

    fn default_targets(&self) -> &'static [&'static str] {
        &["query_key_value"]
    }
}

/// The parameter id of the trainable prefix (fixed, so a saved optimizer state applies to the
/// prefix loaded again on `--resume`).
fn prefix_id() -> ParamId {
    ParamId::from(PREFIX_KEY.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    }))
}

/// A GLM generation that runs a P-Tuning v2 prefix: ChatGLM-6B and ChatGLM2/3.
pub trait PrefixTuned<B: Backend>: Trainable<B> {
    /// The prefix `[num_layers * 2, kv_heads, pre_seq_len, head_dim]`, if any.
    fn prefix(&self) -> Option<&Param<Tensor<B, 4>>>;

    /// [`PrefixTuned::prefix`], to set.
    fn prefix_mut(&mut self) -> &mut Option<Param<Tensor<B, 4>>>;

    /// `(num_layers, kv_heads, head_dim)`: the prefix's layout.
    fn prefix_layout(&self) -> (usize, usize, usize);

    /// Where the model's tensors live.
    fn prefix_device(&self) -> B::Device;
}

impl<B: Backend> PrefixTuned<B> for ChatGlmV1<B> {
    fn prefix(&self) -> Option<&Param<Tensor<B, 4>>> {
        self.prefix.as_ref()
    }

    fn prefix_mut(&mut self) -> &mut Option<Param<Tensor<B, 4>>> {
        &mut self.prefix
    }

    fn prefix_layout(&self) -> (usize, usize, usize) {
        let d = self.word_embeddings.dim();
        (self.layers.len(), self.heads, d / self.heads)
    }

    fn prefix_device(&self) -> B::Device {
        self.word_embeddings.device()
    }
}

impl<B: Backend> PrefixTuned<B> for ChatGlmV2<B> {
    fn prefix(&self) -> Option<&Param<Tensor<B, 4>>> {
        self.prefix.as_ref()
    }

    fn prefix_mut(&mut self) -> &mut Option<Param<Tensor<B, 4>>> {
        &mut self.prefix
    }

    fn prefix_layout(&self) -> (usize, usize, usize) {
        (self.layers.len(), self.kv_heads, self.head_dim)
    }

    fn prefix_device(&self) -> B::Device {
        self.word_embeddings.device()
    }
}

/// The model's prefix `[num_layers * 2, kv_heads, pre, head_dim]` from the prefix encoder's
/// embedding `[pre, num_layers * 2 * kv_heads * head_dim]` (the loader's layout).
fn prefix_of_embedding<B: Backend>(
    embedding: Tensor<B, 2>,
    layers: usize,
    heads: usize,
    head_dim: usize,
) -> Tensor<B, 4> {
    let pre = embedding.dims()[0];
    embedding
        .reshape([pre, layers * 2, heads, head_dim])
        .permute([1, 2, 0, 3])
}

/// The prefix encoder's embedding `[pre, num_layers * 2 * kv_heads * head_dim]` of a model's
/// prefix.
pub fn embedding_of_prefix<B: Backend>(prefix: Tensor<B, 4>) -> Tensor<B, 2> {
    let [l2, heads, pre, hd] = prefix.dims();
    prefix.permute([2, 0, 1, 3]).reshape([pre, l2 * heads * hd])
}

/// Freezes `model` and makes its P-Tuning prefix the one trainable parameter. A model that
/// already has a prefix (a P-Tuning checkpoint) keeps it (`pre_seq_len`, if given, must match
/// its length); otherwise a prefix of `pre_seq_len` positions is created as ChatGLM's
/// `PrefixEncoder` creates it (`torch.nn.Embedding`: standard normal), from `seed`.
pub fn attach_prefix<B: Backend, M: PrefixTuned<B>>(
    model: M,
    pre_seq_len: Option<usize>,
    seed: u64,
) -> Result<M, FinetuneError> {
    let mut model = model.no_grad();
    let (layers, heads, hd) = model.prefix_layout();
    let width = layers * 2 * heads * hd;
    let prefix = match (model.prefix_mut().take(), pre_seq_len) {
        (Some(p), want) => {
            let have = p.dims()[2];
            if want.is_some_and(|w| w != have) {
                return Err(FinetuneError::Config(format!(
                    "--pre-seq-len {}: the model's P-Tuning prefix has {have} positions",
                    want.unwrap_or(0)
                )));
            }
            p.val()
        }
        (None, Some(pre)) if pre > 0 => {
            let device = model.prefix_device();
            let n = pre * width;
            let mut state = seed ^ 0x5052_4546_4958_0001;
            let values: Vec<f32> = (0..n).map(|_| standard_normal(&mut state)).collect();
            let emb = Tensor::<B, 2>::from_data(TensorData::new(values, [pre, width]), &device);
            prefix_of_embedding(emb, layers, heads, hd)
        }
        (None, _) => {
            return Err(FinetuneError::Config(
                "P-Tuning v2 needs --pre-seq-len N (at least 1): the model has no prefix yet"
                    .into(),
            ))
        }
    };
    *model.prefix_mut() = Some(Param::initialized(prefix_id(), prefix.require_grad()));
    Ok(model)
}

/// The prefix encoder's embedding of `model`, `([pre, num_layers * 2 * hidden], values)`.
pub fn prefix_embedding<B: Backend, M: PrefixTuned<B>>(
    model: &M,
) -> Option<(Vec<usize>, Vec<f32>)> {
    let prefix = model.prefix()?.val();
    let emb = embedding_of_prefix(prefix);
    let shape = emb.dims().to_vec();
    let values = emb
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 prefix");
    Some((shape, values))
}

/// Writes `model`'s prefix into the folder `dir` as a P-Tuning v2 checkpoint: `config.json`
/// is `base_config` (the base model's `config.json`) with `pre_seq_len` and
/// `prefix_projection: false`; the one tensor [`PREFIX_KEY`] goes to [`PREFIX_BIN`] and
/// [`PREFIX_FILE`].
///
/// ChatGLM's own trainer saves the same dictionary (the parameters that require gradients,
/// here the one prefix embedding) with `torch.save` as `pytorch_model.bin`, and its
/// `main.py --ptuning_checkpoint` `torch.load`s that file: [`PREFIX_BIN`] is that file
/// (written by [`super::torch_save`]). The same tensor in safetensors is for everything else
/// (the zoo's loader reads either, `model.safetensors` first).
pub fn write_prefix<B: Backend, M: PrefixTuned<B>>(
    dir: &Path,
    model: &M,
    base_config: &Path,
) -> Result<(), FinetuneError> {
    let (shape, values) = prefix_embedding(model)
        .ok_or_else(|| FinetuneError::Config("the model has no P-Tuning prefix".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| FinetuneError::io(dir, e))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), &bytes)
        .map_err(|e| FinetuneError::Checkpoint(format!("{PREFIX_KEY}: {e}")))?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let file = safetensors::serialize(vec![(PREFIX_KEY.to_string(), view)], metadata)
        .map_err(|e| FinetuneError::Checkpoint(e.to_string()))?;
    write_atomic(&dir.join(PREFIX_FILE), &file)?;
    let tensors =
        super::torch_save::F32Tensors::from([(PREFIX_KEY.to_string(), (shape.clone(), values))]);
    write_atomic(
        &dir.join(PREFIX_BIN),
        &super::torch_save::torch_save_bytes(&tensors),
    )?;
    let text =
        std::fs::read_to_string(base_config).map_err(|e| FinetuneError::io(base_config, e))?;
    let mut config: Value = serde_json::from_str(&text)
        .map_err(|e| FinetuneError::Checkpoint(format!("{}: {e}", base_config.display())))?;
    let obj = config.as_object_mut().ok_or_else(|| {
        FinetuneError::Checkpoint(format!("{}: not a JSON object", base_config.display()))
    })?;
    obj.insert("pre_seq_len".into(), shape[0].into());
    obj.insert("prefix_projection".into(), false.into());
    let text = serde_json::to_string_pretty(&config).expect("JSON");
    write_atomic(&dir.join("config.json"), text.as_bytes())
}

/// Opens the ChatGLM-6B folder `base` with the P-Tuning checkpoint `ptuning` laid over it
/// (its `config.json` sets `pre_seq_len` / `prefix_projection`, its weights file holds the
/// prefix encoder), through the zoo's ChatGLM-6B loader. Every tensor of both must be used.
pub fn load_with_prefix<B: Backend>(
    base: &Path,
    ptuning: &Path,
    device: &B::Device,
) -> Result<(ChatGlmV1Config, ChatGlmV1<B>), FinetuneError> {
    let read = |dir: &Path| -> Result<Value, FinetuneError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| FinetuneError::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| FinetuneError::Checkpoint(format!("{}: {e}", path.display())))
    };
    let mut config = read(base)?;
    let over = read(ptuning)?;
    for key in ["pre_seq_len", "prefix_projection", "prefix_hidden_size"] {
        if let (Some(v), Some(obj)) = (over.get(key), config.as_object_mut()) {
            obj.insert(key.to_string(), v.clone());
        }
    }
    if config.get("pre_seq_len").and_then(Value::as_u64).is_none() {
        return Err(FinetuneError::Checkpoint(format!(
            "{}: config.json sets no pre_seq_len: not a P-Tuning checkpoint",
            ptuning.display()
        )));
    }
    let config: ChatGlmV1Config = serde_json::from_value(config)
        .map_err(|e| FinetuneError::Checkpoint(format!("{}: {e}", base.display())))?;
    let mut weights = Weights::open(base)?;
    weights.overlay(Weights::open(ptuning)?);
    let model = crate::glm::v1::from_weights::<B>(&config, &mut weights, None, device)?;
    weights.finish(|name| name.ends_with(".rotary_emb.inv_freq"))?;
    Ok((config, model))
}

/// Puts the prefix of the P-Tuning checkpoint folder `dir` (as [`write_prefix`] or ChatGLM's
/// trainer writes it, `prefix_projection: false`) onto a loaded ChatGLM-6B or ChatGLM2/3
/// model: what `--adapter DIR` does on `zoo generate` / `chat` / `forward`, and where
/// fine-tuning starts from with `--adapter` or `--resume`. The folder must hold the one prefix
/// tensor, `[pre_seq_len, num_layers * 2 * kv_heads * head_dim]`.
pub fn apply_prefix<B: Backend, M: PrefixTuned<B>>(
    model: &mut M,
    dir: &Path,
) -> Result<(), FinetuneError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| FinetuneError::io(&path, e))?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| FinetuneError::Adapter(format!("{}: {e}", path.display())))?;
    if config.get("prefix_projection").and_then(Value::as_bool) == Some(true) {
        return Err(FinetuneError::Adapter(format!(
            "{}: prefix_projection is true: open it with the base model through load_with_prefix",
            dir.display()
        )));
    }
    let mut weights = Weights::open(dir)?;
    let (layers, heads, hd) = model.prefix_layout();
    let width = layers * 2 * heads * hd;
    let shape = weights.shape(PREFIX_KEY).ok_or_else(|| {
        FinetuneError::Adapter(format!(
            "{}: no {PREFIX_KEY}: not a P-Tuning v2 checkpoint",
            dir.display()
        ))
    })?;
    let pre = shape.first().copied().unwrap_or(0);
    let values = weights.take_f32(PREFIX_KEY, &[pre, width])?;
    weights.finish(|_| false)?;
    let device = model.prefix_device();
    let emb = Tensor::<B, 2>::from_data(TensorData::new(values, [pre, width]), &device);
    *model.prefix_mut() = Some(Param::from_tensor(prefix_of_embedding(
        emb, layers, heads, hd,
    )));
    Ok(())
}

/// A standard normal sample (Box–Muller over SplitMix64).
fn standard_normal(state: &mut u64) -> f32 {
    let mut next = || {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let (u, v) = (next(), next());
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}
