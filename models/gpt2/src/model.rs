//! The GPT-2 module tree. Field names follow the checkpoint (`wte`, `h.{i}.attn.c_attn`, …),
//! so `load.rs` needs almost no renaming.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use zoo_nn::attention::{attention, causal_mask, CacheFull, KvCache};
use zoo_nn::{Activation, CausalLm, Dense, Embed, LayerNorm, Logits};

/// GPT-2: token + position embeddings, `n_layer` pre-LN blocks, final LayerNorm, LM head.
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend> {
    /// Token embedding `[vocab, d]`, also the LM head when tied.
    pub wte: Embed<B>,
    /// Learned position embedding `[n_positions, d]`.
    pub wpe: Embedding<B>,
    /// The transformer blocks.
    pub h: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// A separate LM head `[d, vocab]`, only when the checkpoint does not tie it.
    pub lm_head: Option<Dense<B>>,
    /// Longest sequence.
    pub n_positions: usize,
}

/// One pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Causal self-attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

/// Causal multi-head self-attention with fused q/k/v projection.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Weight `[3d, d]` (`[out, in]`; the checkpoint's Conv1D `[d, 3d]` transposed at load):
    /// queries, keys and values side by side.
    pub c_attn: Dense<B>,
    /// Output projection, weight `[d, d]`.
    pub c_proj: Dense<B>,
    /// Heads.
    pub n_head: usize,
    /// Multiplies `q k^T`: `1/sqrt(head_dim)` and, optionally, `1/(layer + 1)`.
    pub scale: f64,
}

/// Two-layer MLP with GELU.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Weight `[inner, d]` (`[out, in]`).
    pub c_fc: Dense<B>,
    /// Weight `[d, inner]` (`[out, in]`).
    pub c_proj: Dense<B>,
    /// The activation between them.
    #[module(skip)]
    pub act: Activation,
}

/// The key/value caches of every block.
#[derive(Debug)]
pub struct Gpt2Cache<B: Backend> {
    /// One cache per block.
    pub layers: Vec<KvCache<B>>,
}

impl<B: Backend> Gpt2<B> {
    /// Hidden states after the final LayerNorm.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Gpt2Cache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [batch, t] = ids.dims();
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.n_positions {
            return Err(CacheFull {
                needed: past + t,
                capacity: self.n_positions,
            });
        }
        let positions: Vec<i64> = (past..past + t).map(|p| p as i64).collect();
        let positions = Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [1, t]), &device)
            .expand([batch, t]);
        let mut x = self.wte.forward(ids) + self.wpe.forward(positions);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, layer_cache, mask.clone())?;
        }
        Ok(self.ln_f.forward(x))
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, d]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                // `wte` `[vocab, d]` is the head's `[out, in]` weight.
                self.wte.project(hidden)
            }
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
        mask: Option<Tensor<B, 4, burn::tensor::Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), cache, mask)?;
        Ok(x.clone() + self.mlp.forward(self.ln_2.forward(x)))
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, burn::tensor::Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.n_head, d / self.n_head);
        let qkv = self.c_attn.forward(x);
        let split = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..t, i * d..(i + 1) * d])
                .reshape([b, t, h, hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let (k, v) = cache.append(k, v)?;
        let out = attention(q, k, v, mask, self.scale);
        Ok(self.c_proj.forward(out.swap_dims(1, 2).reshape([b, t, d])))
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.c_proj.forward(self.act.forward(self.c_fc.forward(x)))
    }
}

impl<B: Backend> Gpt2<B> {
    /// A cache with room for `capacity` positions for a batch.
    pub fn cache(&self, batch: usize, capacity: usize) -> Gpt2Cache<B> {
        let device = self.wte.device();
        let layers = self
            .h
            .iter()
            .map(|block| {
                let heads = block.attn.n_head;
                let d = block.attn.c_proj.d_out();
                KvCache::new(batch, heads, capacity, d / heads, &device)
            })
            .collect();
        Gpt2Cache { layers }
    }
}

impl<B: Backend> CausalLm<B> for Gpt2<B> {
    type Cache = Gpt2Cache<B>;
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
        self.n_positions
    }

    fn vocab_size(&self) -> usize {
        self.wte.vocab_size()
    }

    fn device(&self) -> B::Device {
        self.wte.device()
    }
}
