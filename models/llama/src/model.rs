//! The LLaMA module tree. Field names follow the HF checkpoint (`embed_tokens`,
//! `layers.{i}.self_attn.q_proj`, `mlp.gate_proj`, …), so `load.rs` needs almost no renaming.
//!
//! RoPE is always the half-split rotation of HF LLaMA (`rotate_half`). GGUF weights, whose
//! `attn_q` / `attn_k` rows llama.cpp's converter permuted for adjacent-pair rotation, are
//! un-permuted when they are loaded (`load.rs`), so one forward path serves both formats.

use burn::module::Module;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use zoo_nn::attention::{attention, causal_mask, CacheFull, KvCache};
use zoo_nn::fused::swap_dims_12;
use zoo_nn::rope::{self, rope_half};
use zoo_nn::{Activation, CausalLm, Dense, Embed, Logits, RmsNorm};

use crate::config::{LlamaConfig, RopeScaling};

/// LLaMA: token embedding, decoder layers, final RMSNorm, LM head.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embedding `[vocab, d]`, also the LM head when tied.
    pub embed_tokens: Embed<B>,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final RMSNorm.
    pub norm: RmsNorm<B>,
    /// A separate LM head, only when the checkpoint does not tie it.
    pub lm_head: Option<Dense<B>>,
    /// Rotary frequencies and tables.
    pub rope: LlamaRope<B>,
    /// Longest sequence accepted.
    pub max_positions: usize,
}

/// One pre-norm layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Grouped-query self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU feed-forward network.
    pub mlp: Mlp<B>,
}

/// Causal grouped-query self-attention with rotary positions.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[d, heads * head_dim]`.
    pub q_proj: Dense<B>,
    /// `[d, kv_heads * head_dim]`.
    pub k_proj: Dense<B>,
    /// `[d, kv_heads * head_dim]`.
    pub v_proj: Dense<B>,
    /// `[heads * head_dim, d]`.
    pub o_proj: Dense<B>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// `down(act(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[d, inner]`.
    pub gate_proj: Dense<B>,
    /// `[d, inner]`.
    pub up_proj: Dense<B>,
    /// `[inner, d]`.
    pub down_proj: Dense<B>,
    /// The gate activation (SiLU).
    #[module(skip)]
    pub act: Activation,
}

/// Rotary embedding state: a precomputed cos/sin table, and for dynamic NTK the recipe to
/// recompute frequencies for sequences longer than `max_position_embeddings`.
#[derive(Module, Debug)]
pub struct LlamaRope<B: Backend> {
    /// `[rows, head_dim / 2]`.
    cos: Tensor<B, 2>,
    /// `[rows, head_dim / 2]`.
    sin: Tensor<B, 2>,
    /// Dynamic NTK scaling is on.
    dynamic: bool,
    /// Rotated features per head.
    dim: usize,
    /// RoPE base.
    theta: f64,
    /// Dynamic NTK factor.
    factor: f64,
    /// Positions before dynamic NTK starts rescaling.
    max_positions: usize,
    /// The frequencies of the table, for positions past its rows.
    #[module(skip)]
    inv_freq: Vec<f64>,
}

/// Rows of the precomputed cos/sin table: positions beyond are computed when a pass reaches
/// them, so a config claiming a context of 10¹² positions costs nothing until it is used.
pub const ROPE_TABLE_ROWS: usize = 4096;

impl<B: Backend> LlamaRope<B> {
    /// The rotary state for `config`; `freq_factors` (GGUF `rope_freqs.weight`) divide the
    /// standard frequencies when given, replacing the config's scaling.
    pub fn new(config: &LlamaConfig, freq_factors: Option<&[f32]>, device: &B::Device) -> Self {
        let dim = config.head_dim();
        let theta = config.rope_theta();
        let scaling = config.rope().unwrap_or(RopeScaling::Default);
        let mut dynamic = false;
        let mut dyn_factor = 1.0;
        let inv_freq = match (freq_factors, scaling) {
            (Some(factors), _) => rope::default_inv_freq(dim, theta)
                .into_iter()
                .zip(factors)
                .map(|(f, &s)| f / s as f64)
                .collect(),
            (None, RopeScaling::Default) => rope::default_inv_freq(dim, theta),
            (None, RopeScaling::Linear { factor }) => rope::linear_inv_freq(dim, theta, factor),
            (None, RopeScaling::Dynamic { factor }) => {
                dynamic = true;
                dyn_factor = factor;
                rope::default_inv_freq(dim, theta)
            }
            (
                None,
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                },
            ) => rope::llama3_inv_freq(
                dim,
                theta,
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            ),
        };
        let rows = config
            .max_position_embeddings
            .min(config.context_length())
            .min(ROPE_TABLE_ROWS);
        let (cos, sin) = rope::cos_sin(&inv_freq, 0, rows, device);
        Self {
            cos,
            sin,
            dynamic,
            dim,
            theta,
            factor: dyn_factor,
            max_positions: config.max_position_embeddings,
            inv_freq,
        }
    }

    /// cos/sin for positions `past..past + t` of a forward pass that ends at `past + t`.
    ///
    /// Dynamic NTK follows HF: a pass whose sequence ends beyond `max_position_embeddings`
    /// rotates all its positions with frequencies recomputed for that length, while keys
    /// already in the cache keep the rotation they were stored with.
    pub fn cos_sin(
        &self,
        past: usize,
        t: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        if self.dynamic && past + t > self.max_positions {
            let inv = rope::dynamic_ntk_inv_freq(
                self.dim,
                self.theta,
                self.factor,
                past + t,
                self.max_positions,
            );
            return rope::cos_sin(&inv, past, t, device);
        }
        if past + t > self.cos.dims()[0] {
            return rope::cos_sin(&self.inv_freq, past, t, device);
        }
        let half = self.dim / 2;
        (
            self.cos.clone().slice([past..past + t, 0..half]),
            self.sin.clone().slice([past..past + t, 0..half]),
        )
    }
}

/// The key/value caches of every layer.
#[derive(Debug)]
pub struct LlamaCache<B: Backend> {
    /// One cache per layer.
    pub layers: Vec<KvCache<B>>,
}

impl<B: Backend> Llama<B> {
    /// Hidden states after the final norm (transformers' `last_hidden_state`).
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut LlamaCache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let x = self.embed_tokens.forward(ids);
        self.hidden_from_embeds(x, cache)
    }

    /// [`Llama::hidden`] from input embeddings instead of ids (transformers' `inputs_embeds`):
    /// what a multimodal model feeds when image features take some of the positions. RoPE
    /// positions continue from what the cache holds.
    ///
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    pub fn hidden_from_embeds(
        &self,
        x: Tensor<B, 3>,
        cache: &mut LlamaCache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [_, t, _] = x.dims();
        let device = x.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.max_positions {
            return Err(CacheFull {
                needed: past + t,
                capacity: self.max_positions,
            });
        }
        let (cos, sin) = self.rope.cos_sin(past, t, &device);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        let mut x = x;
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, &cos, &sin, layer_cache, mask.clone())?;
        }
        Ok(self.norm.forward(x))
    }

    /// Logits over the vocabulary from the final hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, d]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            // The embedding `[vocab, d]` is the head's `[out, in]` weight.
            None => self.embed_tokens.project(hidden),
        }
    }

    /// A cache with room for `capacity` positions for a batch.
    pub fn cache(&self, batch: usize, capacity: usize) -> LlamaCache<B> {
        let device = self.embed_tokens.device();
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.self_attn;
                KvCache::new(batch, a.num_kv_heads, capacity, a.head_dim, &device)
            })
            .collect();
        LlamaCache { layers }
    }
}

impl<B: Backend> Llama<B> {
    /// One decoding step for several independent sequences at once: `ids[i]` is the next token
    /// of sequence `i`, `caches[i]` its own single-sequence cache (lengths may differ). Every
    /// projection and MLP runs on the stacked `[n, 1, d]` batch, so the weights are read once
    /// per step for all sequences; rotary positions and attention are per sequence, against its
    /// own cache. Returns the logits `[n, vocab]`, equal to `n` separate
    /// [`CausalLm::forward_cached`] calls of one token each.
    pub fn decode_step(
        &self,
        ids: &[u32],
        caches: &mut [&mut LlamaCache<B>],
    ) -> Result<Tensor<B, 2>, CacheFull> {
        let n = ids.len();
        assert_eq!(n, caches.len(), "one cache per sequence");
        let device = self.embed_tokens.device();
        let (mut coss, mut sins) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for cache in caches.iter() {
            let past = cache.layers.first().map_or(0, KvCache::len);
            if past + 1 > self.max_positions {
                return Err(CacheFull {
                    needed: past + 1,
                    capacity: self.max_positions,
                });
            }
            let (cos, sin) = self.rope.cos_sin(past, 1, &device);
            coss.push(cos);
            sins.push(sin);
        }
        // Row i rotates sequence i's new position: one rotation per layer for all of them.
        let rotation = (Tensor::cat(coss, 0), Tensor::cat(sins, 0));
        let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let ids =
            Tensor::<B, 2, Int>::from_data(burn::tensor::TensorData::new(data, [n, 1]), &device);
        let mut x = self.embed_tokens.forward(ids);
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(x.clone());
            let mut layer_caches: Vec<&mut KvCache<B>> =
                caches.iter_mut().map(|c| &mut c.layers[l]).collect();
            let h = layer
                .self_attn
                .forward_each(h, &rotation, &mut layer_caches)?;
            x = x + h;
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        let logits = self.lm_logits(self.norm.forward(x));
        let vocab = logits.dims()[2];
        Ok(logits.reshape([n, vocab]))
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let h = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            cos,
            sin,
            cache,
            mask,
        )?;
        let x = x + h;
        Ok(x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x)))
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]`, `cos`/`sin`: `[t, head_dim / 2]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [b, t, _] = x.dims();
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let [q, k, v] = self.qkv(x);
        let (q, k, v) = (heads(q, h), heads(k, kv), heads(v, kv));
        let q = rope_half(q, cos.clone(), sin.clone());
        let k = rope_half(k, cos.clone(), sin.clone());
        let (k, v) = cache.append(k, v)?;
        let out = attention(q, k, v, mask, 1.0 / (hd as f64).sqrt());
        Ok(self
            .o_proj
            .forward(swap_dims_12(out).reshape([b, t, h * hd])))
    }
}

impl<B: Backend> Attention<B> {
    /// The query, key and value projections of `x` (one pass on the CPU backends).
    fn qkv(&self, x: Tensor<B, 3>) -> [Tensor<B, 3>; 3] {
        let mut out = Dense::forward_many(&[&self.q_proj, &self.k_proj, &self.v_proj], x);
        let v = out.pop().expect("three projections");
        let k = out.pop().expect("three projections");
        let q = out.pop().expect("three projections");
        [q, k, v]
    }

    /// One new position for each of `n` sequences: the projections and the rotation on the
    /// whole `[n, 1, d]` batch (`cos`/`sin`: `[n, head_dim / 2]`, row i at sequence i's
    /// position), the cache append and attention per sequence.
    fn forward_each(
        &self,
        x: Tensor<B, 3>,
        (cos, sin): &(Tensor<B, 2>, Tensor<B, 2>),
        caches: &mut [&mut KvCache<B>],
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [n, _, _] = x.dims();
        let (h, kv, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // The sequences stand on the position axis: `[1, heads, n, hd]`.
        let by_position = |y: Tensor<B, 3>, m: usize| y.reshape([1, n, m, hd]).swap_dims(1, 2);
        let [q, k, v] = self.qkv(x);
        let q = rope_half(by_position(q, h), cos.clone(), sin.clone());
        let k = rope_half(by_position(k, kv), cos.clone(), sin.clone());
        let v = by_position(v, kv);
        let mut outs = Vec::with_capacity(n);
        for (i, cache) in caches.iter_mut().enumerate() {
            let qi = q.clone().narrow(2, i, 1);
            let ki = k.clone().narrow(2, i, 1);
            let vi = v.clone().narrow(2, i, 1);
            let (ks, vs) = cache.append(ki, vi)?;
            outs.push(attention(qi, ks, vs, None, 1.0 / (hd as f64).sqrt()));
        }
        let out = Tensor::cat(outs, 0);
        Ok(self
            .o_proj
            .forward(out.swap_dims(1, 2).reshape([n, 1, h * hd])))
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj
            .forward(Dense::gated(&self.gate_proj, &self.up_proj, self.act, x))
    }
}

impl<B: Backend> CausalLm<B> for Llama<B> {
    type Cache = LlamaCache<B>;
    type Error = CacheFull;

    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache {
        self.cache(batch, capacity)
    }

    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, CacheFull> {
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

#[cfg(test)]
mod rope_tests {
    use super::*;
    use burn::backend::Flex;

    fn values(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().unwrap()
    }

    #[test]
    fn a_huge_context_builds_few_rows_and_computes_the_rest_alike() {
        let config = LlamaConfig {
            max_position_embeddings: 60_000_000,
            hidden_size: 64,
            num_attention_heads: 4,
            ..LlamaConfig::default()
        };
        let device = Default::default();
        let rope = LlamaRope::<Flex>::new(&config, None, &device);
        assert_eq!(rope.cos.dims(), [ROPE_TABLE_ROWS, 8]);
        // Positions inside the table, across its end, and far beyond: the same formula.
        for (past, t) in [(4000, 96), (4090, 12), (59_999_990, 10)] {
            let (cos, sin) = rope.cos_sin(past, t, &device);
            let (want_cos, want_sin) = rope::cos_sin::<Flex>(&rope.inv_freq, past, t, &device);
            assert_eq!(values(cos), values(want_cos), "cos at {past}");
            assert_eq!(values(sin), values(want_sin), "sin at {past}");
        }
    }
}
