//! ChatGLM-6B (`THUDM/chatglm-6b`, GLM architecture) with optional P-Tuning v2 prefix.
//!
//! What differs from a plain decoder (facts from the original `modeling_chatglm.py`):
//! - `query_key_value` packs q, k, v per head: its output is `[heads, 3, head_dim]`.
//! - 2-D rotary positions: the first half of each head is rotated with the position row, the
//!   second half with the block-position row, each half with the half-split (`rotate_half`)
//!   layout over its own `head_dim / 2` features; `inv_freq` is rounded to f16 as the original
//!   stores it.
//! - Attention scores use `query_key_layer_scaling_coeff = layer + 1`: q is divided by
//!   `sqrt(head_dim) * coeff` and the scores multiplied back by `coeff` (reproduced exactly).
//! - Residuals add the LayerNorm *output* scaled by `alpha = sqrt(2 * 28)`: the original's
//!   `GLMBlock` has `num_layers=28` as a default argument that `ChatGLMModel` never passes, so
//!   alpha is `sqrt(56)` whatever `num_layers` says (the golden tensors confirm it; for the real
//!   28-layer model both readings agree).
//! - MLP: tanh GELU; final LayerNorm; LM head `lm_head` (`[vocab, hidden]`, untied).
//! - Prefix-LM mask: the context (tokens before `<sop>`) sees itself bidirectionally,
//!   later tokens are causal. Positions: context tokens `0..context`, every later token the
//!   `[gMASK]` position; block positions `0` for the context, then `1, 2, …`.
//! - P-Tuning v2: the prefix encoder's output is prepended to every layer's key/value cache,
//!   un-rotated, visible to every token, and not counted in the positions.
//!
//! Checkpoint names (optional `transformer.` prefix on everything except `lm_head`):
//!
//! | checkpoint name | field |
//! | --- | --- |
//! | `word_embeddings.weight` `[vocab, d]` | `word_embeddings` |
//! | `layers.{i}.input_layernorm.{weight,bias}` | `layers[i].input_layernorm` |
//! | `layers.{i}.attention.query_key_value.{weight,bias}` `[3d, d]` | `layers[i].query_key_value` |
//! | `layers.{i}.attention.dense.{weight,bias}` | `layers[i].dense` |
//! | `layers.{i}.post_attention_layernorm.{weight,bias}` | `layers[i].post_attention_layernorm` |
//! | `layers.{i}.mlp.dense_h_to_4h.{weight,bias}`, `dense_4h_to_h` | `layers[i].dense_h_to_4h`, `dense_4h_to_h` |
//! | `final_layernorm.{weight,bias}` | `final_layernorm` |
//! | `lm_head.weight` | `lm_head` (absent: hidden states only) |
//! | `prefix_encoder.embedding.weight`, `prefix_encoder.trans.{0,2}.{weight,bias}` | evaluated once into `prefix` |
//! | `layers.{i}.attention.rotary_emb.inv_freq` | buffer, skipped (recomputed) |

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use serde::Deserialize;
use zoo_nn::attention::{attention, KvCache};
use zoo_nn::rope::rope_half;
use zoo_nn::weights::{LinearLayout, Weights};
use zoo_nn::{Activation, CausalLm, Dense, Embed, LayerNorm, Logits, WeightError, WeightFormat};

use crate::error::{check_ids, read_config, GlmError};
use zoo_nn::rope::cos_sin_at;

/// `num_layers` the original `GLMBlock` uses for `alpha` whatever the config says.
const ORIGINAL_BLOCK_LAYERS: f64 = 28.0;

/// ChatGLM-6B's `config.json` (field names as the checkpoint writes them).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatGlmV1Config {
    /// Model width.
    pub hidden_size: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// MLP width (default `4 * hidden_size`).
    #[serde(default)]
    pub inner_hidden_size: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layernorm_epsilon: f64,
    /// Longest sequence.
    #[serde(default = "default_max_seq")]
    pub max_sequence_length: usize,
    /// Must be true (2-D positions): the 1-D variant is not implemented.
    #[serde(default = "default_true")]
    pub position_encoding_2d: bool,
    /// `<sop>`: the first token after the context.
    #[serde(default = "default_bos")]
    pub bos_token_id: u32,
    /// `<eop>`.
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
    /// `[MASK]`.
    #[serde(default = "default_mask")]
    pub mask_token_id: u32,
    /// `[gMASK]`.
    #[serde(default = "default_gmask")]
    pub gmask_token_id: u32,
    /// P-Tuning v2 prefix length, if the checkpoint carries a prefix encoder.
    #[serde(default)]
    pub pre_seq_len: Option<usize>,
    /// Whether the prefix encoder has the two-layer MLP.
    #[serde(default)]
    pub prefix_projection: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_max_seq() -> usize {
    2048
}
fn default_true() -> bool {
    true
}
fn default_bos() -> u32 {
    130004
}
fn default_eos() -> u32 {
    130005
}
fn default_mask() -> u32 {
    130000
}
fn default_gmask() -> u32 {
    130001
}

impl ChatGlmV1Config {
    /// MLP width.
    pub fn inner_size(&self) -> usize {
        self.inner_hidden_size.unwrap_or(4 * self.hidden_size)
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks what the module relies on.
    pub fn validate(&self) -> Result<(), String> {
        zoo_nn::limits::check_sizes(&[
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_layers", self.num_layers),
            ("vocab_size", self.vocab_size),
            ("max_sequence_length", self.max_sequence_length),
        ])?;
        if !self.position_encoding_2d {
            return Err(
                "position_encoding_2d = false is not supported (ChatGLM-6B uses 2-D)".into(),
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(4) {
            return Err(format!(
                "head size {} must be a multiple of 4 for 2-D RoPE",
                self.head_dim()
            ));
        }
        if self.num_layers == 0 || self.vocab_size == 0 {
            return Err("num_layers and vocab_size must be positive".into());
        }
        Ok(())
    }
}

/// ChatGLM-6B: embeddings, GLM blocks, final LayerNorm, LM head.
#[derive(Module, Debug)]
pub struct ChatGlmV1<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub word_embeddings: Embed<B>,
    /// The GLM blocks.
    pub layers: Vec<V1Block<B>>,
    /// Final LayerNorm.
    pub final_layernorm: LayerNorm<B>,
    /// LM head (absent when only hidden states are loaded).
    pub lm_head: Option<Dense<B>>,
    /// P-Tuning v2 prefix keys/values, `[num_layers * 2, heads, pre_seq_len, head_dim]`
    /// (even index keys, odd values of the same layer).
    pub prefix: Option<Param<Tensor<B, 4>>>,
    /// Heads.
    pub heads: usize,
    /// Longest sequence (without the prefix).
    pub max_positions: usize,
    /// `[gMASK]`, `[MASK]`, `<sop>` ids.
    pub special: [u32; 3],
}

/// One GLM block.
#[derive(Module, Debug)]
pub struct V1Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: LayerNorm<B>,
    /// Fused q/k/v, output per head `[q, k, v]` of `head_dim` each.
    pub query_key_value: Dense<B>,
    /// Attention output projection.
    pub dense: Dense<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: LayerNorm<B>,
    /// MLP up projection.
    pub dense_h_to_4h: Dense<B>,
    /// MLP down projection.
    pub dense_4h_to_h: Dense<B>,
    /// `sqrt(2 * 28)` (see the module doc).
    pub alpha: f64,
    /// `layer + 1`.
    pub coeff: f64,
    /// Rotary frequencies for one half of a head (f16-rounded).
    pub inv_freq: Vec<f64>,
}

/// Key/value caches plus the prompt layout the positions of later tokens follow.
#[derive(Debug)]
pub struct V1Cache<B: Backend> {
    /// One cache per block (the prefix, if any, already inside).
    pub layers: Vec<KvCache<B>>,
    /// Prefix positions at the front of every cache.
    pub prefix_len: usize,
    /// Tokens run so far (prefix excluded).
    pub seen: usize,
    /// The prompt's layout, fixed by the first `forward_cached` call.
    pub layout: Option<PromptLayout>,
}

/// Where the context ends and which position generated tokens take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLayout {
    /// Tokens before `<sop>` (they attend bidirectionally).
    pub context: usize,
    /// Index of `[gMASK]` (or `[MASK]`): the position every token from `<sop>` on takes.
    pub mask_position: usize,
}

impl PromptLayout {
    /// The layout of a prompt as the original derives it: `[gMASK]` if present else `[MASK]`,
    /// and the context ends at the first `<sop>`.
    pub fn of(ids: &[u32], gmask: u32, mask: u32, bos: u32) -> Result<Self, GlmError> {
        let mask_position = ids
            .iter()
            .position(|&i| i == gmask)
            .or_else(|| ids.iter().position(|&i| i == mask))
            .ok_or_else(|| {
                GlmError::Input(format!(
                    "a ChatGLM-6B prompt needs [gMASK] ({gmask}) or [MASK] ({mask}) before <sop>"
                ))
            })?;
        let context = ids.iter().position(|&i| i == bos).ok_or_else(|| {
            GlmError::Input(format!(
                "a ChatGLM-6B prompt needs <sop> ({bos}) after the context"
            ))
        })?;
        Ok(Self {
            context,
            mask_position,
        })
    }

    /// Position and block position of token `index` of the sequence.
    pub fn positions(&self, index: usize) -> (usize, usize) {
        if index < self.context {
            (index, 0)
        } else {
            (self.mask_position, index - self.context + 1)
        }
    }
}

/// The prefix-LM mask for `t` new tokens after `past` cached ones, `[1, 1, t, past + t]`,
/// `true` = hidden: cached keys are visible, the first `context` new tokens see each other,
/// the rest are causal.
pub fn prefix_lm_mask<B: Backend>(
    t: usize,
    past: usize,
    context: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let total = past + t;
    let mut mask = Vec::with_capacity(t * total);
    for i in 0..t {
        for j in 0..total {
            let visible = j < past || (j - past) < context || (j - past) <= i;
            mask.push(!visible);
        }
    }
    Tensor::from_data(TensorData::new(mask, [1, 1, t, total]), device)
}

impl<B: Backend> ChatGlmV1<B> {
    /// An empty cache (holding the P-Tuning prefix, if any) with room for `capacity` tokens.
    pub fn cache(&self, batch: usize, capacity: usize) -> V1Cache<B> {
        let device = self.word_embeddings.device();
        let d = self.word_embeddings.dim();
        let hd = d / self.heads;
        let pre = self.prefix.as_ref().map_or(0, |p| p.dims()[2]);
        let layers = (0..self.layers.len())
            .map(|i| {
                let mut cache = KvCache::new(batch, self.heads, pre + capacity, hd, &device);
                if let Some(prefix) = self.prefix.as_ref().map(|p| p.val()) {
                    let k = prefix
                        .clone()
                        .slice([2 * i..2 * i + 1, 0..self.heads, 0..pre, 0..hd]);
                    let v =
                        prefix
                            .clone()
                            .slice([2 * i + 1..2 * i + 2, 0..self.heads, 0..pre, 0..hd]);
                    let k = k.expand([batch, self.heads, pre, hd]);
                    let v = v.expand([batch, self.heads, pre, hd]);
                    cache
                        .append(k, v)
                        .expect("the cache was sized for the prefix");
                }
                cache
            })
            .collect();
        V1Cache {
            layers,
            prefix_len: pre,
            seen: 0,
            layout: None,
        }
    }

    /// Hidden states after the final LayerNorm for explicit 2-D positions.
    ///
    /// `context` new tokens at the start of this step attend bidirectionally (the prefix-LM
    /// mask); the rest are causal; everything in the cache is visible.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]`, `positions`/`block_positions`: `t` each → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: &[usize],
        block_positions: &[usize],
        context: usize,
        cache: &mut V1Cache<B>,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [_, t] = ids.dims();
        if positions.len() != t || block_positions.len() != t {
            return Err(GlmError::Input(format!(
                "{t} tokens need {t} positions and block positions, got {} and {}",
                positions.len(),
                block_positions.len()
            )));
        }
        if let Some(&p) = positions
            .iter()
            .chain(block_positions)
            .find(|&&p| p >= self.max_positions)
        {
            return Err(GlmError::Input(format!(
                "position {p} is beyond max_sequence_length {}",
                self.max_positions
            )));
        }
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        let mut x = self.word_embeddings.forward(ids);
        let mask = (t > 1).then(|| prefix_lm_mask::<B>(t, past, context, &device));
        let inv_freq = &self.layers[0].inv_freq;
        let rot_pos = cos_sin_at::<B>(inv_freq, positions, &device);
        let rot_block = cos_sin_at::<B>(inv_freq, block_positions, &device);
        for (block, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(
                x,
                layer_cache,
                mask.clone(),
                &rot_pos,
                &rot_block,
                self.heads,
            )?;
        }
        cache.seen += t;
        Ok(self.final_layernorm.forward(x))
    }

    /// Logits `[batch, t, vocab]`, or an error when the checkpoint has no LM head.
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Result<Tensor<B, 3>, GlmError> {
        match &self.lm_head {
            Some(head) => Ok(head.forward(hidden)),
            None => Err(GlmError::Input(
                "this checkpoint has no lm_head: only hidden states".into(),
            )),
        }
    }
}

impl<B: Backend> V1Block<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
        rot_pos: &(Tensor<B, 2>, Tensor<B, 2>),
        rot_block: &(Tensor<B, 2>, Tensor<B, 2>),
        heads: usize,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [b, t, d] = x.dims();
        let hd = d / heads;
        let half = hd / 2;
        let attn_in = self.input_layernorm.forward(x);
        // [b, t, heads, 3, hd] → q, k, v as [b, heads, t, hd].
        let qkv = self
            .query_key_value
            .forward(attn_in.clone())
            .reshape([b, t, heads, 3 * hd]);
        let part = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..t, 0..heads, i * hd..(i + 1) * hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        // 2-D RoPE: each half of the head with its own position row, half-split inside.
        let rotate = |x: Tensor<B, 4>| {
            let x1 = x.clone().slice([0..b, 0..heads, 0..t, 0..half]);
            let x2 = x.slice([0..b, 0..heads, 0..t, half..hd]);
            Tensor::cat(
                vec![
                    rope_half(x1, rot_pos.0.clone(), rot_pos.1.clone()),
                    rope_half(x2, rot_block.0.clone(), rot_block.1.clone()),
                ],
                3,
            )
        };
        let (q, k) = (rotate(q), rotate(k));
        // q / (sqrt(hd) * coeff), then scores * coeff, as the original (in f32).
        let q = q / ((hd as f64).sqrt() * self.coeff);
        let (k, v) = cache.append(k, v)?;
        let ctx = attention(q, k, v, mask, self.coeff);
        let attn_out = self.dense.forward(ctx.swap_dims(1, 2).reshape([b, t, d]));
        let h = attn_in * self.alpha + attn_out;
        let mlp_in = self.post_attention_layernorm.forward(h);
        let mlp_out = self
            .dense_4h_to_h
            .forward(Activation::GeluTanh.forward(self.dense_h_to_4h.forward(mlp_in.clone())));
        Ok(mlp_in * self.alpha + mlp_out)
    }
}

impl<B: Backend> CausalLm<B> for ChatGlmV1<B> {
    type Cache = V1Cache<B>;
    type Error = GlmError;

    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache {
        self.cache(batch, capacity)
    }

    /// The first call is the prompt: its layout (`[gMASK]`, `<sop>`) fixes the positions and
    /// the prefix-LM mask; later calls continue causally.
    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, GlmError> {
        let [b, t] = ids.dims();
        let [gmask, mask, bos] = self.special;
        // Only the prompt is read on the host (its [gMASK] and <sop> fix the layout); later
        // steps take their positions from the layout without copying ids back.
        let (layout, context) = match cache.layout {
            Some(layout) => (layout, 0),
            None => {
                if b != 1 {
                    return Err(GlmError::Input(
                        "ChatGLM-6B prompts run one at a time (batch 1)".into(),
                    ));
                }
                let host: Vec<i64> = ids
                    .to_data()
                    .convert::<i64>()
                    .into_vec()
                    .map_err(|e| GlmError::Input(format!("token ids: {e:?}")))?;
                check_ids(&host, self.vocab_size())?;
                let row: Vec<u32> = host.iter().map(|&i| i as u32).collect();
                let layout = PromptLayout::of(&row, gmask, mask, bos)?;
                cache.layout = Some(layout);
                (layout, layout.context)
            }
        };
        let (positions, blocks): (Vec<usize>, Vec<usize>) = (cache.seen..cache.seen + t)
            .map(|i| layout.positions(i))
            .unzip();
        let hidden = self.hidden(ids, &positions, &blocks, context, cache)?;
        if logits == Logits::Hidden {
            return Ok(hidden);
        }
        let hidden = logits.positions(hidden);
        self.lm_logits(hidden)
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

    /// The last two ids become `[gMASK] <sop>` (a prompt shorter than two is just those).
    fn valid_prompt(&self, mut ids: Vec<u32>) -> Vec<u32> {
        let [gmask, _, bos] = self.special;
        ids.truncate(ids.len().saturating_sub(2));
        ids.extend([gmask, bos]);
        ids
    }
}

/// Rounds each value to the nearest f16 (the original keeps `inv_freq` in half precision).
fn round_f16(values: Vec<f64>) -> Vec<f64> {
    values
        .into_iter()
        .map(|v| half::f16::from_f64(v).to_f64())
        .collect()
}

/// Loads a ChatGLM-6B folder (`config.json` + weights): every tensor must be used.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(ChatGlmV1Config, ChatGlmV1<B>), GlmError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(ChatGlmV1Config, ChatGlmV1<B>), GlmError> {
    let path = dir.join("config.json");
    let config: ChatGlmV1Config = read_config(&path)?;
    config
        .validate()
        .map_err(|reason| GlmError::Config { path, reason })?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, None, device)?;
    weights.finish(|name| name.ends_with(".rotary_emb.inv_freq"))?;
    Ok((config, model))
}

/// Builds the module from checkpoint tensors. `prefix` overrides the P-Tuning prefix
/// (`[num_layers * 2, heads, pre_seq_len, head_dim]`, as the prefix encoder outputs it);
/// otherwise a `prefix_encoder` in the checkpoint is evaluated when `pre_seq_len` is set.
pub fn from_weights<B: Backend>(
    config: &ChatGlmV1Config,
    weights: &mut Weights,
    prefix: Option<Tensor<B, 4>>,
    device: &B::Device,
) -> Result<ChatGlmV1<B>, GlmError> {
    config.validate().map_err(|reason| GlmError::Config {
        path: "config.json".into(),
        reason,
    })?;
    let p = if weights.contains("transformer.word_embeddings.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, heads, vocab, inner) = (
        config.hidden_size,
        config.num_attention_heads,
        config.vocab_size,
        config.inner_size(),
    );
    let hd = config.head_dim();
    let eps = config.layernorm_epsilon;
    let norm = |w: &mut Weights, prefix: &str| -> Result<LayerNorm<B>, WeightError> {
        Ok(LayerNorm::new(
            w.tensor(&format!("{prefix}.weight"), [d], device)?,
            w.tensor(&format!("{prefix}.bias"), [d], device)?,
            eps,
        ))
    };
    let word_embeddings =
        weights.embedding(&format!("{p}word_embeddings.weight"), vocab, d, device)?;
    // The original's GLMBlock default (num_layers = 28), never overridden: see the module doc.
    let alpha = (2.0 * ORIGINAL_BLOCK_LAYERS).sqrt();
    let inv_freq = round_f16(zoo_nn::rope::inv_freq_f32(hd / 2, 10000.0));
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let b = format!("{p}layers.{i}");
        let lin = |w: &mut Weights, name: &str, din: usize, dout: usize| {
            w.dense::<B>(
                &format!("{b}.{name}"),
                din,
                dout,
                true,
                LinearLayout::OutIn,
                device,
            )
        };
        layers.push(V1Block {
            input_layernorm: norm(weights, &format!("{b}.input_layernorm"))?,
            query_key_value: lin(weights, "attention.query_key_value", d, 3 * d)?,
            dense: lin(weights, "attention.dense", d, d)?,
            post_attention_layernorm: norm(weights, &format!("{b}.post_attention_layernorm"))?,
            dense_h_to_4h: lin(weights, "mlp.dense_h_to_4h", d, inner)?,
            dense_4h_to_h: lin(weights, "mlp.dense_4h_to_h", inner, d)?,
            alpha,
            coeff: (i + 1) as f64,
            inv_freq: inv_freq.clone(),
        });
    }
    let final_layernorm = norm(weights, &format!("{p}final_layernorm"))?;
    let lm_head = if weights.contains("lm_head.weight") {
        Some(weights.head("lm_head", d, vocab, false, LinearLayout::OutIn, device)?)
    } else {
        None
    };
    let prefix = match (prefix, config.pre_seq_len) {
        (Some(prefix), _) => {
            let want = [2 * config.num_layers, heads, prefix.dims()[2], hd];
            if prefix.dims() != want {
                return Err(GlmError::Input(format!(
                    "P-Tuning prefix has shape {:?}, expected {want:?}",
                    prefix.dims()
                )));
            }
            Some(prefix)
        }
        (None, Some(pre)) => Some(prefix_from_encoder(
            weights,
            &format!("{p}prefix_encoder"),
            pre,
            config.num_layers,
            heads,
            hd,
            d,
            config.prefix_projection,
            device,
        )?),
        (None, None) => None,
    };
    Ok(ChatGlmV1 {
        word_embeddings,
        layers,
        final_layernorm,
        lm_head,
        prefix: prefix.map(Param::from_tensor),
        heads,
        max_positions: config.max_sequence_length,
        special: [
            config.gmask_token_id,
            config.mask_token_id,
            config.bos_token_id,
        ],
    })
}

/// Evaluates a P-Tuning v2 prefix encoder (`embedding` and, with projection, `trans.0`,
/// tanh, `trans.2`) into `[num_layers * 2, kv_heads, pre_seq_len, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prefix_from_encoder<B: Backend>(
    weights: &mut Weights,
    prefix: &str,
    pre: usize,
    num_layers: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    projection: bool,
    device: &B::Device,
) -> Result<Tensor<B, 4>, GlmError> {
    let kv = num_layers * 2 * kv_heads * head_dim;
    let out = if projection {
        let emb_dim = weights
            .shape(&format!("{prefix}.embedding.weight"))
            .and_then(|s| s.get(1).copied())
            .unwrap_or(hidden);
        let emb: Tensor<B, 2> = weights.tensor(
            &format!("{prefix}.embedding.weight"),
            [pre, emb_dim],
            device,
        )?;
        let l0 = weights.dense::<B>(
            &format!("{prefix}.trans.0"),
            emb_dim,
            hidden,
            true,
            LinearLayout::OutIn,
            device,
        )?;
        let l2 = weights.dense::<B>(
            &format!("{prefix}.trans.2"),
            hidden,
            kv,
            true,
            LinearLayout::OutIn,
            device,
        )?;
        l2.forward(l0.forward(emb).tanh())
    } else {
        weights.tensor(&format!("{prefix}.embedding.weight"), [pre, kv], device)?
    };
    // [pre, layers * 2, kv_heads, hd] → [layers * 2, kv_heads, pre, hd]
    Ok(out
        .reshape([pre, num_layers * 2, kv_heads, head_dim])
        .permute([1, 2, 0, 3]))
}
