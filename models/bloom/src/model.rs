//! The BLOOM module tree. Field names follow the checkpoint (`word_embeddings`,
//! `h.{i}.self_attention.query_key_value`, …), so `load.rs` needs no renaming.
//!
//! Positions enter only through ALiBi: each head adds `slope * key_position` to its attention
//! scores. As in transformers, the bias uses the absolute key position `j` (not `j - i`): within
//! one query row the two differ by a constant, which softmax ignores, and with absolute key
//! positions the cached decode computes exactly the scores of the full pass.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use zoo_nn::attention::{causal_mask, CacheFull, KvCache};
use zoo_nn::{Activation, CausalLm, Dense, Embed, LayerNorm, Logits};

/// BLOOM: token embedding + LayerNorm, `n_layer` blocks with ALiBi attention, final
/// LayerNorm, LM head.
#[derive(Module, Debug)]
pub struct Bloom<B: Backend> {
    /// Token embedding `[vocab, d]`, also the LM head when tied.
    pub word_embeddings: Embed<B>,
    /// LayerNorm applied to the embeddings before the first block.
    pub word_embeddings_layernorm: LayerNorm<B>,
    /// The transformer blocks.
    pub h: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// A separate LM head `[vocab, d]`, only when the checkpoint does not tie it.
    pub lm_head: Option<Dense<B>>,
    /// ALiBi slope of each head, `[n_head]`.
    pub alibi_slopes: Tensor<B, 1>,
    /// Longest sequence accepted: a cap, ALiBi has no limit of its own (see
    /// [`DEFAULT_MAX_POSITIONS`](crate::config::DEFAULT_MAX_POSITIONS)).
    pub max_positions: usize,
}

/// One block: LayerNorm, attention, residual; LayerNorm, MLP, residual.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: LayerNorm<B>,
    /// Causal self-attention with ALiBi.
    pub self_attention: Attention<B>,
    /// Norm before the MLP.
    pub post_attention_layernorm: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
    /// Residuals start from the norms' outputs (`apply_residual_connection_post_layernorm`).
    pub residual_from_norm: bool,
}

/// Causal multi-head self-attention with fused, per-head q/k/v and ALiBi.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Weight `[3d, d]` (`[out, in]`), the outputs laid out per head: `[heads, 3, head_dim]`
    /// (head 0's q, k, v, then head 1's, …). Split in [`Attention::forward`].
    pub query_key_value: Dense<B>,
    /// Output projection, weight `[d, d]`.
    pub dense: Dense<B>,
    /// Heads.
    pub n_head: usize,
}

/// Two-layer MLP with BLOOM's tanh GELU.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Weight `[4d, d]`.
    pub dense_h_to_4h: Dense<B>,
    /// Weight `[d, 4d]`.
    pub dense_4h_to_h: Dense<B>,
}

/// The key/value caches of every block.
#[derive(Debug)]
pub struct BloomCache<B: Backend> {
    /// One cache per block.
    pub layers: Vec<KvCache<B>>,
}

/// transformers' ALiBi slopes for `n_head` heads: for the largest power of two `n ≤ n_head`,
/// `base^1 … base^n` with `base = 2^(-8/n)`; the heads beyond `n` take the odd powers
/// `1, 3, 5, …` of the base for `2n`, `2^(-4/n)`. Computed in f32 like transformers.
pub fn alibi_slopes(n_head: usize) -> Vec<f32> {
    let closest = 1usize << n_head.max(1).ilog2();
    // 2^(-(2^-(log2(n) - 3))) = 2^(-8/n), rounded to f32 as `torch.full(..., float32)` does.
    let base = |n: usize| 2f64.powf(-8.0 / n as f64) as f32;
    // `torch.pow(f32 base, int)`: the power of the f32 base, rounded once to f32.
    let pow = |base: f32, p: i32| f64::from(base).powi(p) as f32;
    let (b, extra) = (base(closest), base(2 * closest));
    let mut slopes: Vec<f32> = (1..=closest as i32).map(|p| pow(b, p)).collect();
    let remaining = n_head.saturating_sub(closest).min(closest);
    slopes.extend((0..remaining as i32).map(|i| pow(extra, 2 * i + 1)));
    slopes
}

impl<B: Backend> Bloom<B> {
    /// Hidden states after the final LayerNorm.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut BloomCache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let t = ids.dims()[1];
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.max_positions {
            return Err(CacheFull {
                needed: past + t,
                capacity: self.max_positions,
            });
        }
        let x = self.word_embeddings.forward(ids);
        let mut x = self.word_embeddings_layernorm.forward(x);
        let alibi = self.alibi(past + t, &device);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, layer_cache, alibi.clone(), mask.clone())?;
        }
        Ok(self.ln_f.forward(x))
    }

    /// The ALiBi bias for `keys` key positions: `slope[h] * j`, `[1, heads, 1, keys]`.
    fn alibi(&self, keys: usize, device: &B::Device) -> Tensor<B, 4> {
        let heads = self.alibi_slopes.dims()[0];
        let positions: Vec<f32> = (0..keys).map(|j| j as f32).collect();
        let positions = Tensor::<B, 1>::from_data(TensorData::new(positions, [keys]), device);
        self.alibi_slopes.clone().reshape([1, heads, 1, 1]) * positions.reshape([1, 1, 1, keys])
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, d]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            // `word_embeddings` `[vocab, d]` is the head's `[out, in]` weight.
            None => self.word_embeddings.project(hidden),
        }
    }
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        alibi: Tensor<B, 4>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let normed = self.input_layernorm.forward(x.clone());
        let residual = if self.residual_from_norm {
            normed.clone()
        } else {
            x
        };
        let x = residual + self.self_attention.forward(normed, cache, alibi, mask)?;
        let normed = self.post_attention_layernorm.forward(x.clone());
        let residual = if self.residual_from_norm {
            normed.clone()
        } else {
            x
        };
        Ok(residual + self.mlp.forward(normed))
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    /// - `alibi`: `[1, heads, 1, past + t]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        alibi: Tensor<B, 4>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.n_head, d / self.n_head);
        // The fused outputs are `[heads, 3, head_dim]`: split q, k, v inside each head.
        let qkv = self.query_key_value.forward(x).reshape([b, t, h, 3, hd]);
        let part = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..t, 0..h, i..i + 1, 0..hd])
                .reshape([b, t, h, hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let (k, v) = cache.append(k, v)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)) * scale + alibi;
        let scores = match mask {
            Some(mask) => scores.mask_fill(mask, f32::MIN),
            None => scores,
        };
        let out = softmax(scores, 3).matmul(v);
        Ok(self.dense.forward(out.swap_dims(1, 2).reshape([b, t, d])))
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let inner = Activation::GeluTanh.forward(self.dense_h_to_4h.forward(x));
        self.dense_4h_to_h.forward(inner)
    }
}

impl<B: Backend> Bloom<B> {
    /// A cache with room for `capacity` positions for a batch.
    pub fn cache(&self, batch: usize, capacity: usize) -> BloomCache<B> {
        let device = self.word_embeddings.device();
        let layers = self
            .h
            .iter()
            .map(|block| {
                let heads = block.self_attention.n_head;
                let d = block.self_attention.dense.d_out();
                KvCache::new(batch, heads, capacity, d / heads, &device)
            })
            .collect();
        BloomCache { layers }
    }
}

impl<B: Backend> CausalLm<B> for Bloom<B> {
    type Cache = BloomCache<B>;
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
        Ok(self.lm_logits(logits.positions(hidden)))
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

#[cfg(test)]
mod tests {
    use super::alibi_slopes;

    #[test]
    fn slopes_for_powers_of_two_and_between() {
        // 8 heads: 2^-1 … 2^-8.
        let s = alibi_slopes(8);
        for (i, v) in s.iter().enumerate() {
            assert!((v - 0.5f32.powi(i as i32 + 1)).abs() < 1e-7);
        }
        // 6 heads: the 4-head slopes 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1, 2^-3 from the 8-head set.
        let want = [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125];
        assert_eq!(alibi_slopes(6), want);
        assert_eq!(alibi_slopes(1), [0.00390625]);
    }
}
