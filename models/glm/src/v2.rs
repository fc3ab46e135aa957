//! ChatGLM2-6B, ChatGLM3-6B and GLM-4 in the original `chatglm` layout.
//!
//! Facts from the original `modeling_chatglm.py` (v2/v3; GLM-4 adds `rope_ratio`):
//! - `query_key_value` is `[q: heads * kv_channels, k: groups * kv_channels, v: same]`
//!   (multi-query groups), with bias (`add_qkv_bias`); other linears have no bias unless
//!   `add_bias_linear`.
//! - RoPE on the first half of each head (`kv_channels / 2` features), interleaved pairs,
//!   base `10000 * rope_ratio`, angles in f32; positions are plain `0, 1, 2, …`.
//! - Pre-RMSNorm blocks with plain residuals, SwiGLU (`silu(gate) * up`, gate first),
//!   final RMSNorm, `output_layer` LM head of `padded_vocab_size` rows.
//! - Causal attention inside a step, full attention to the cache.
//! - P-Tuning v2: the prefix keys/values (`[num_layers * 2, groups, pre_seq_len, kv_channels]`)
//!   are prepended to every layer's cache, un-rotated, and not counted in the positions.
//!
//! Checkpoint names (optional `transformer.` prefix):
//!
//! | checkpoint name | field |
//! | --- | --- |
//! | `embedding.word_embeddings.weight` `[padded_vocab, d]` | `word_embeddings` |
//! | `encoder.layers.{i}.input_layernorm.weight` | `layers[i].input_layernorm` |
//! | `encoder.layers.{i}.self_attention.query_key_value.{weight,bias}` | `layers[i].query_key_value` |
//! | `encoder.layers.{i}.self_attention.dense.weight` | `layers[i].dense` |
//! | `encoder.layers.{i}.post_attention_layernorm.weight` | `layers[i].post_attention_layernorm` |
//! | `encoder.layers.{i}.mlp.dense_h_to_4h.weight` `[2 ffn, d]` | `layers[i].dense_h_to_4h` |
//! | `encoder.layers.{i}.mlp.dense_4h_to_h.weight` | `layers[i].dense_4h_to_h` |
//! | `encoder.final_layernorm.weight` | `final_layernorm` |
//! | `output_layer.weight` | `output_layer` (absent: hidden states only) |
//! | `prefix_encoder.*` | evaluated once into `prefix` |
//! | `rotary_pos_emb.inv_freq` | buffer, skipped (recomputed) |

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor};
use serde::Deserialize;
use zoo_nn::attention::{attention, causal_mask, KvCache};
use zoo_nn::fused::swiglu;
use zoo_nn::rope::rope_interleaved;
use zoo_nn::weights::{LinearLayout, Weights};
use zoo_nn::{CausalLm, Dense, Embed, Logits, RmsNorm, WeightFormat};

use crate::error::{read_config, GlmError};
use zoo_nn::rope::{cos_sin_at, inv_freq_f32};

/// `config.json` of ChatGLM2/3 and GLM-4 (`chatglm` layout).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatGlmV2Config {
    /// Model width.
    pub hidden_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Head size.
    pub kv_channels: usize,
    /// Whether keys/values use `multi_query_group_num` groups.
    #[serde(default = "default_true")]
    pub multi_query_attention: bool,
    /// Key/value groups.
    #[serde(default = "default_groups")]
    pub multi_query_group_num: usize,
    /// Embedding / LM-head rows.
    pub padded_vocab_size: usize,
    /// SwiGLU width.
    pub ffn_hidden_size: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub layernorm_epsilon: f64,
    /// Must be true: LayerNorm variants are not implemented.
    #[serde(default = "default_true")]
    pub rmsnorm: bool,
    /// Bias on every linear.
    #[serde(default)]
    pub add_bias_linear: bool,
    /// Bias on the fused QKV.
    #[serde(default = "default_true")]
    pub add_qkv_bias: bool,
    /// Must be false.
    #[serde(default)]
    pub apply_residual_connection_post_layernorm: bool,
    /// Must be true.
    #[serde(default = "default_true")]
    pub post_layer_norm: bool,
    /// Context length.
    #[serde(default = "default_seq")]
    pub seq_length: usize,
    /// RoPE base multiplier (GLM-4, ChatGLM3-32k): base = `10000 * rope_ratio`.
    #[serde(default = "default_ratio")]
    pub rope_ratio: f64,
    /// P-Tuning v2 prefix length.
    #[serde(default)]
    pub pre_seq_len: Option<usize>,
    /// Whether the prefix encoder has the two-layer MLP.
    #[serde(default)]
    pub prefix_projection: bool,
}

fn default_true() -> bool {
    true
}
fn default_groups() -> usize {
    1
}
fn default_eps() -> f64 {
    1e-5
}
fn default_seq() -> usize {
    2048
}
fn default_ratio() -> f64 {
    1.0
}

impl ChatGlmV2Config {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        if self.multi_query_attention {
            self.multi_query_group_num
        } else {
            self.num_attention_heads
        }
    }

    /// Checks what the module relies on.
    pub fn validate(&self) -> Result<(), String> {
        zoo_nn::limits::check_sizes(&[
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_layers", self.num_layers),
            ("kv_channels", self.kv_channels),
            ("padded_vocab_size", self.padded_vocab_size),
            ("ffn_hidden_size", self.ffn_hidden_size),
            ("seq_length", self.seq_length),
        ])?;
        if !self.rmsnorm {
            return Err("rmsnorm = false is not supported".into());
        }
        if self.apply_residual_connection_post_layernorm || !self.post_layer_norm {
            return Err("only pre-norm residuals with a final norm are supported".into());
        }
        let g = self.kv_heads();
        if g == 0 || !self.num_attention_heads.is_multiple_of(g) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of the {g} key/value groups",
                self.num_attention_heads
            ));
        }
        if !self.kv_channels.is_multiple_of(4) || self.kv_channels == 0 {
            return Err(format!(
                "kv_channels {} must be a positive multiple of 4",
                self.kv_channels
            ));
        }
        if self.num_layers == 0 || self.padded_vocab_size == 0 {
            return Err("num_layers and padded_vocab_size must be positive".into());
        }
        Ok(())
    }
}

/// ChatGLM2/3 / GLM-4 (`chatglm` layout).
#[derive(Module, Debug)]
pub struct ChatGlmV2<B: Backend> {
    /// Token embedding `[padded_vocab, d]`.
    pub word_embeddings: Embed<B>,
    /// The blocks.
    pub layers: Vec<V2Block<B>>,
    /// Final RMSNorm.
    pub final_layernorm: RmsNorm<B>,
    /// LM head (absent when only hidden states are loaded).
    pub output_layer: Option<Dense<B>>,
    /// P-Tuning v2 prefix, `[num_layers * 2, groups, pre_seq_len, kv_channels]`.
    pub prefix: Option<Param<Tensor<B, 4>>>,
    /// Query heads.
    pub heads: usize,
    /// Key/value groups.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Context length.
    pub max_positions: usize,
    /// RoPE frequencies (for `kv_channels / 2` rotated features).
    pub inv_freq: Vec<f64>,
}

/// One block: `x + attn(norm(x))`, then `x + swiglu(norm(x))`.
#[derive(Module, Debug)]
pub struct V2Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Fused `[q, k, v]` projection.
    pub query_key_value: Dense<B>,
    /// Attention output projection.
    pub dense: Dense<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// `[gate, up]` projection.
    pub dense_h_to_4h: Dense<B>,
    /// Down projection.
    pub dense_4h_to_h: Dense<B>,
}

/// Key/value caches (the P-Tuning prefix, if any, at the front).
#[derive(Debug)]
pub struct V2Cache<B: Backend> {
    /// One cache per block.
    pub layers: Vec<KvCache<B>>,
    /// Prefix positions at the front of every cache.
    pub prefix_len: usize,
}

impl<B: Backend> ChatGlmV2<B> {
    /// An empty cache (holding the prefix, if any) with room for `capacity` tokens.
    pub fn cache(&self, batch: usize, capacity: usize) -> V2Cache<B> {
        let device = self.word_embeddings.device();
        let (g, hd) = (self.kv_heads, self.head_dim);
        let pre = self.prefix.as_ref().map_or(0, |p| p.dims()[2]);
        let layers = (0..self.layers.len())
            .map(|i| {
                let mut cache = KvCache::new(batch, g, pre + capacity, hd, &device);
                if let Some(prefix) = &self.prefix {
                    let prefix = prefix.val();
                    let k = prefix
                        .clone()
                        .slice([2 * i..2 * i + 1, 0..g, 0..pre, 0..hd]);
                    let v = prefix.slice([2 * i + 1..2 * i + 2, 0..g, 0..pre, 0..hd]);
                    cache
                        .append(k.expand([batch, g, pre, hd]), v.expand([batch, g, pre, hd]))
                        .expect("the cache was sized for the prefix");
                }
                cache
            })
            .collect();
        V2Cache {
            layers,
            prefix_len: pre,
        }
    }

    /// Hidden states after the final norm, continuing the cache.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut V2Cache<B>,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        let start = past - cache.prefix_len;
        if start + t > self.max_positions {
            return Err(GlmError::Input(format!(
                "{} tokens exceed the context of {}",
                start + t,
                self.max_positions
            )));
        }
        let positions: Vec<usize> = (start..start + t).collect();
        let rot = cos_sin_at::<B>(&self.inv_freq, &positions, &device);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        let mut x = self.word_embeddings.forward(ids);
        for (block, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, layer_cache, mask.clone(), &rot, self)?;
        }
        Ok(self.final_layernorm.forward(x))
    }
}

impl<B: Backend> V2Block<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, burn::tensor::Bool>>,
        rot: &(Tensor<B, 2>, Tensor<B, 2>),
        m: &ChatGlmV2<B>,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [b, t, d] = x.dims();
        let (h, g, hd) = (m.heads, m.kv_heads, m.head_dim);
        let qkv = self
            .query_key_value
            .forward(self.input_layernorm.forward(x.clone()));
        let split = |from: usize, heads: usize| {
            qkv.clone()
                .slice([0..b, 0..t, from..from + heads * hd])
                .reshape([b, t, heads, hd])
                .swap_dims(1, 2)
        };
        let q = split(0, h);
        let k = split(h * hd, g);
        let v = split((h + g) * hd, g);
        let q = rope_interleaved(q, rot.0.clone(), rot.1.clone());
        let k = rope_interleaved(k, rot.0.clone(), rot.1.clone());
        let (k, v) = cache.append(k, v)?;
        let ctx = attention(q, k, v, mask, 1.0 / (hd as f64).sqrt());
        let x = x + self
            .dense
            .forward(ctx.swap_dims(1, 2).reshape([b, t, h * hd]));
        let up = self
            .dense_h_to_4h
            .forward(self.post_attention_layernorm.forward(x.clone()));
        let ffn = up.dims()[2] / 2;
        let gate = up.clone().slice([0..b, 0..t, 0..ffn]);
        let up = up.slice([0..b, 0..t, ffn..2 * ffn]);
        let _ = d;
        Ok(x.clone() + self.dense_4h_to_h.forward(swiglu(gate, up)))
    }
}

impl<B: Backend> CausalLm<B> for ChatGlmV2<B> {
    type Cache = V2Cache<B>;
    type Error = GlmError;

    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache {
        self.cache(batch, capacity)
    }

    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, GlmError> {
        // Ids stay on the device: callers check them against the vocabulary (the generation
        // loop and `TextGenerator` do) instead of a copy to the host at every step.
        let hidden = self.hidden(ids, cache)?;
        if logits == Logits::Hidden {
            return Ok(hidden);
        }
        let hidden = logits.positions(hidden);
        match &self.output_layer {
            Some(head) => Ok(head.forward(hidden)),
            None => Err(GlmError::Input(
                "this checkpoint has no output_layer: only hidden states".into(),
            )),
        }
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn vocab_size(&self) -> usize {
        self.word_embeddings.vocab_size()
    }

    fn device(&self) -> B::Device {
        self.word_embeddings.device()
    }
}

/// Loads a ChatGLM2/3 or GLM-4 (`chatglm` layout) folder: every tensor must be used.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ChatGlmV2Config, ChatGlmV2<B>), GlmError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(ChatGlmV2Config, ChatGlmV2<B>), GlmError> {
    let path = dir.join("config.json");
    let config: ChatGlmV2Config = read_config(&path)?;
    config
        .validate()
        .map_err(|reason| GlmError::Config { path, reason })?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, None, device)?;
    weights.finish(|name| name.ends_with("rotary_pos_emb.inv_freq"))?;
    Ok((config, model))
}

/// Builds the module from checkpoint tensors. `prefix` overrides the P-Tuning prefix
/// (`[num_layers * 2, groups, pre_seq_len, kv_channels]`); otherwise a `prefix_encoder` in the
/// checkpoint is evaluated when `pre_seq_len` is set.
pub fn from_weights<B: Backend>(
    config: &ChatGlmV2Config,
    weights: &mut Weights,
    prefix: Option<Tensor<B, 4>>,
    device: &B::Device,
) -> Result<ChatGlmV2<B>, GlmError> {
    config.validate().map_err(|reason| GlmError::Config {
        path: "config.json".into(),
        reason,
    })?;
    let p = if weights.contains("transformer.embedding.word_embeddings.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, h, g, hd) = (
        config.hidden_size,
        config.num_attention_heads,
        config.kv_heads(),
        config.kv_channels,
    );
    let (vocab, ffn, eps) = (
        config.padded_vocab_size,
        config.ffn_hidden_size,
        config.layernorm_epsilon,
    );
    let bias = config.add_bias_linear;
    let norm = |w: &mut Weights, name: &str| -> Result<RmsNorm<B>, GlmError> {
        Ok(RmsNorm::new(
            w.tensor(&format!("{name}.weight"), [d], device)?,
            eps,
        ))
    };
    let word_embeddings = weights.embedding(
        &format!("{p}embedding.word_embeddings.weight"),
        vocab,
        d,
        device,
    )?;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let b = format!("{p}encoder.layers.{i}");
        let qkv_bias = config.add_bias_linear || config.add_qkv_bias;
        layers.push(V2Block {
            input_layernorm: norm(weights, &format!("{b}.input_layernorm"))?,
            query_key_value: weights.dense(
                &format!("{b}.self_attention.query_key_value"),
                d,
                (h + 2 * g) * hd,
                qkv_bias,
                LinearLayout::OutIn,
                device,
            )?,
            dense: weights.dense(
                &format!("{b}.self_attention.dense"),
                h * hd,
                d,
                bias,
                LinearLayout::OutIn,
                device,
            )?,
            post_attention_layernorm: norm(weights, &format!("{b}.post_attention_layernorm"))?,
            dense_h_to_4h: weights.dense(
                &format!("{b}.mlp.dense_h_to_4h"),
                d,
                2 * ffn,
                bias,
                LinearLayout::OutIn,
                device,
            )?,
            dense_4h_to_h: weights.dense(
                &format!("{b}.mlp.dense_4h_to_h"),
                ffn,
                d,
                bias,
                LinearLayout::OutIn,
                device,
            )?,
        });
    }
    let final_layernorm = norm(weights, &format!("{p}encoder.final_layernorm"))?;
    let head_name = format!("{p}output_layer");
    let output_layer = if weights.contains(&format!("{head_name}.weight")) {
        Some(weights.head(&head_name, d, vocab, false, LinearLayout::OutIn, device)?)
    } else {
        None
    };
    let prefix = match (prefix, config.pre_seq_len) {
        (Some(prefix), _) => {
            let want = [2 * config.num_layers, g, prefix.dims()[2], hd];
            if prefix.dims() != want {
                return Err(GlmError::Input(format!(
                    "P-Tuning prefix has shape {:?}, expected {want:?}",
                    prefix.dims()
                )));
            }
            Some(prefix)
        }
        (None, Some(pre)) => Some(crate::v1::prefix_from_encoder(
            weights,
            &format!("{p}prefix_encoder"),
            pre,
            config.num_layers,
            g,
            hd,
            d,
            config.prefix_projection,
            device,
        )?),
        (None, None) => None,
    };
    Ok(ChatGlmV2 {
        word_embeddings,
        layers,
        final_layernorm,
        output_layer,
        prefix: prefix.map(Param::from_tensor),
        heads: h,
        kv_heads: g,
        head_dim: hd,
        max_positions: config.seq_length,
        // RotaryEmbedding(kv_channels // 2): frequencies for kv_channels / 2 features.
        inv_freq: inv_freq_f32(hd / 2, 10000.0 * config.rope_ratio),
    })
}
