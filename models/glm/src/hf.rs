//! GLM-4 in Hugging Face's layout (`GlmForCausalLM`, transformers 5.23 `modeling_glm.py`).
//!
//! Separate `q_proj`/`k_proj`/`v_proj` (bias when `attention_bias`), `o_proj` without bias,
//! interleaved RoPE on the first `head_dim * partial_rotary_factor` features of each head
//! (HF repeats each frequency twice and rotates adjacent pairs), GQA, pre-RMSNorm blocks,
//! fused `gate_up_proj` (`silu(gate) * up`, gate first), final RMSNorm, `lm_head` (tied to
//! the embedding when `tie_word_embeddings`).
//!
//! | checkpoint name | field |
//! | --- | --- |
//! | `model.embed_tokens.weight` `[vocab, d]` | `embed_tokens` |
//! | `model.layers.{i}.input_layernorm.weight` | `layers[i].input_layernorm` |
//! | `model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}` | `layers[i].{q,k,v}_proj` |
//! | `model.layers.{i}.self_attn.o_proj.weight` | `layers[i].o_proj` |
//! | `model.layers.{i}.post_attention_layernorm.weight` | `layers[i].post_attention_layernorm` |
//! | `model.layers.{i}.mlp.gate_up_proj.weight` `[2 inter, d]` | `layers[i].gate_up_proj` |
//! | `model.layers.{i}.mlp.down_proj.weight` | `layers[i].down_proj` |
//! | `model.norm.weight` | `norm` |
//! | `lm_head.weight` | `lm_head`, or checked equal to `embed_tokens` when tied |

use std::path::Path;

use burn::module::Module;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use serde::Deserialize;
use zoo_nn::attention::{attention, causal_mask, KvCache};
use zoo_nn::fused::swiglu;
use zoo_nn::rope::rope_interleaved;
use zoo_nn::weights::{LinearLayout, Weights};
use zoo_nn::{CausalLm, Dense, Embed, Logits, RmsNorm, WeightError, WeightFormat};

use crate::error::{read_config, GlmError};
use zoo_nn::rope::{cos_sin_at, inv_freq_f32};

/// `config.json` of an HF `GlmForCausalLM` (transformers 5 `rope_parameters`, or the older
/// top-level `rope_theta` / `partial_rotary_factor`).
#[derive(Debug, Clone, Deserialize)]
pub struct GlmHfConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head size (default `hidden_size / num_attention_heads`).
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Must be `silu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Context length.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Bias on q/k/v.
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    /// LM head shares the embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// transformers 5: `{rope_type, rope_theta, partial_rotary_factor}`.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// transformers 4: RoPE base.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 4: share of each head that is rotated.
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

fn default_act() -> String {
    "silu".into()
}
fn default_eps() -> f64 {
    1.5625e-7
}
fn default_true() -> bool {
    true
}

impl GlmHfConfig {
    /// Head size.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// RoPE base.
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// Share of each head that is rotated (0.5 for GLM-4).
    pub fn partial_rotary_factor(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|r| r.get("partial_rotary_factor"))
            .and_then(|v| v.as_f64())
            .or(self.partial_rotary_factor)
            .unwrap_or(0.5)
    }

    /// Features rotated per head.
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor()) as usize
    }

    /// End-of-sequence ids (an int or a list in the config).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| v as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Checks what the module relies on.
    pub fn validate(&self) -> Result<(), String> {
        zoo_nn::limits::check_sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_dim()),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        if self.hidden_act != "silu" {
            return Err(format!(
                "hidden_act `{}` is not supported (GLM uses silu)",
                self.hidden_act
            ));
        }
        if let Some(kind) = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.get("rope_type"))
            .and_then(|v| v.as_str())
        {
            if kind != "default" {
                return Err(format!("rope_type `{kind}` is not supported"));
            }
        }
        let (h, g) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || g == 0 || h % g != 0 {
            return Err(format!(
                "num_attention_heads {h} is not a multiple of num_key_value_heads {g}"
            ));
        }
        let r = self.rotary_dim();
        if !r.is_multiple_of(2) || r > self.head_dim() {
            return Err(format!(
                "rotary dim {r} must be even and at most head_dim {}",
                self.head_dim()
            ));
        }
        if self.num_hidden_layers == 0 || self.vocab_size == 0 {
            return Err("num_hidden_layers and vocab_size must be positive".into());
        }
        Ok(())
    }
}

/// GLM-4 (`GlmForCausalLM`).
#[derive(Module, Debug)]
pub struct GlmHf<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub embed_tokens: Embed<B>,
    /// The decoder layers.
    pub layers: Vec<GlmHfLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// LM head; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Dense<B>>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Context length.
    pub max_positions: usize,
    /// RoPE frequencies for the rotated part of each head.
    pub inv_freq: Vec<f64>,
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct GlmHfLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Query projection.
    pub q_proj: Dense<B>,
    /// Key projection.
    pub k_proj: Dense<B>,
    /// Value projection.
    pub v_proj: Dense<B>,
    /// Output projection (no bias).
    pub o_proj: Dense<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// `[gate, up]` projection.
    pub gate_up_proj: Dense<B>,
    /// Down projection.
    pub down_proj: Dense<B>,
}

/// The key/value caches of every layer.
#[derive(Debug)]
pub struct GlmHfCache<B: Backend> {
    /// One cache per layer.
    pub layers: Vec<KvCache<B>>,
}

impl<B: Backend> GlmHf<B> {
    /// A cache with room for `capacity` positions.
    pub fn cache(&self, batch: usize, capacity: usize) -> GlmHfCache<B> {
        let device = self.embed_tokens.device();
        GlmHfCache {
            layers: (0..self.layers.len())
                .map(|_| KvCache::new(batch, self.kv_heads, capacity, self.head_dim, &device))
                .collect(),
        }
    }

    /// Hidden states after the final norm.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut GlmHfCache<B>,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.max_positions {
            return Err(GlmError::Input(format!(
                "{} tokens exceed max_position_embeddings {}",
                past + t,
                self.max_positions
            )));
        }
        let positions: Vec<usize> = (past..past + t).collect();
        let rot = cos_sin_at::<B>(&self.inv_freq, &positions, &device);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        let mut x = self.embed_tokens.forward(ids);
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, layer_cache, mask.clone(), &rot, self)?;
        }
        Ok(self.norm.forward(x))
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, d]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => self.embed_tokens.project(hidden),
        }
    }
}

impl<B: Backend> GlmHfLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
        rot: &(Tensor<B, 2>, Tensor<B, 2>),
        m: &GlmHf<B>,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [b, t, _] = x.dims();
        let (h, g, hd) = (m.heads, m.kv_heads, m.head_dim);
        let normed = self.input_layernorm.forward(x.clone());
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = heads(self.q_proj.forward(normed.clone()), h);
        let k = heads(self.k_proj.forward(normed.clone()), g);
        let v = heads(self.v_proj.forward(normed), g);
        let q = rope_interleaved(q, rot.0.clone(), rot.1.clone());
        let k = rope_interleaved(k, rot.0.clone(), rot.1.clone());
        let (k, v) = cache.append(k, v)?;
        let ctx = attention(q, k, v, mask, 1.0 / (hd as f64).sqrt());
        let x = x + self
            .o_proj
            .forward(ctx.swap_dims(1, 2).reshape([b, t, h * hd]));
        let gate_up = self
            .gate_up_proj
            .forward(self.post_attention_layernorm.forward(x.clone()));
        let inter = gate_up.dims()[2] / 2;
        let gate = gate_up.clone().slice([0..b, 0..t, 0..inter]);
        let up = gate_up.slice([0..b, 0..t, inter..2 * inter]);
        Ok(x + self.down_proj.forward(swiglu(gate, up)))
    }
}

impl<B: Backend> CausalLm<B> for GlmHf<B> {
    type Cache = GlmHfCache<B>;
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
        Ok(self.lm_logits(hidden))
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn vocab_size(&self) -> usize {
        self.embed_tokens.vocab_size()
    }

    fn device(&self) -> B::Device {
        self.embed_tokens.device()
    }
}

/// Reads and validates `config.json` of an HF GLM folder.
pub fn read_hf_config(dir: &Path) -> Result<GlmHfConfig, GlmError> {
    let path = dir.join("config.json");
    let config: GlmHfConfig = read_config(&path)?;
    config
        .validate()
        .map_err(|reason| GlmError::Config { path, reason })?;
    Ok(config)
}

/// Loads an HF `GlmForCausalLM` folder: every checkpoint tensor must be used.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(GlmHfConfig, GlmHf<B>), GlmError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(GlmHfConfig, GlmHf<B>), GlmError> {
    let config = read_hf_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(|_| false)?;
    Ok((config, model))
}

/// Builds the module from checkpoint tensors.
pub fn from_weights<B: Backend>(
    config: &GlmHfConfig,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<GlmHf<B>, GlmError> {
    let (d, h, g, hd) = (
        config.hidden_size,
        config.num_attention_heads,
        config.kv_heads(),
        config.head_dim(),
    );
    let (vocab, inter, eps) = (
        config.vocab_size,
        config.intermediate_size,
        config.rms_norm_eps,
    );
    let bias = config.attention_bias;
    let norm = |w: &mut Weights, name: &str| -> Result<RmsNorm<B>, WeightError> {
        Ok(RmsNorm::new(
            w.tensor(&format!("{name}.weight"), [d], device)?,
            eps,
        ))
    };
    let lin = |w: &mut Weights, name: &str, din: usize, dout: usize, bias: bool| {
        w.dense::<B>(name, din, dout, bias, LinearLayout::OutIn, device)
    };
    let embed_tokens = weights.embedding("model.embed_tokens.weight", vocab, d, device)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        layers.push(GlmHfLayer {
            input_layernorm: norm(weights, &format!("{p}.input_layernorm"))?,
            q_proj: lin(weights, &format!("{p}.self_attn.q_proj"), d, h * hd, bias)?,
            k_proj: lin(weights, &format!("{p}.self_attn.k_proj"), d, g * hd, bias)?,
            v_proj: lin(weights, &format!("{p}.self_attn.v_proj"), d, g * hd, bias)?,
            o_proj: lin(weights, &format!("{p}.self_attn.o_proj"), h * hd, d, false)?,
            post_attention_layernorm: norm(weights, &format!("{p}.post_attention_layernorm"))?,
            gate_up_proj: lin(
                weights,
                &format!("{p}.mlp.gate_up_proj"),
                d,
                2 * inter,
                false,
            )?,
            down_proj: lin(weights, &format!("{p}.mlp.down_proj"), inter, d, false)?,
        });
    }
    let norm = norm(weights, "model.norm")?;
    let lm_head = if config.tie_word_embeddings {
        // Some writers store the tied head anyway; it must then equal the embedding.
        weights.take_tied("lm_head.weight", "model.embed_tokens.weight", &[vocab, d])?;
        None
    } else {
        Some(weights.head("lm_head", d, vocab, false, LinearLayout::OutIn, device)?)
    };
    Ok(GlmHf {
        embed_tokens,
        layers,
        norm,
        lm_head,
        heads: h,
        kv_heads: g,
        head_dim: hd,
        max_positions: config.max_position_embeddings,
        inv_freq: inv_freq_f32(config.rotary_dim(), config.rope_theta()),
    })
}
