//! The GPT-Neo module tree. Field names follow the checkpoint (`wte`, `h.{i}.ln_1`,
//! `h.{i}.mlp.c_fc`, …); HF's `h.{i}.attn.attention.q_proj` is `h[i].attn.q_proj` here (HF's
//! `GPTNeoAttention` only wraps `GPTNeoSelfAttention`).

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use zoo_nn::attention::{attention, causal_mask, CacheFull, KvCache};
use zoo_nn::{Activation, CausalLm, Dense, Embed, LayerNorm, Logits};

use crate::AttentionKind;

/// GPT-Neo: token + position embeddings, pre-LN blocks with global or local attention, final
/// LayerNorm, LM head.
#[derive(Module, Debug)]
pub struct GptNeo<B: Backend> {
    /// Token embedding `[vocab, d]`, also the LM head when tied.
    pub wte: Embed<B>,
    /// Learned position embedding `[max_position_embeddings, d]`.
    pub wpe: Embedding<B>,
    /// The transformer blocks.
    pub h: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// A separate LM head `[vocab, d]`, only when the checkpoint does not tie it.
    pub lm_head: Option<Dense<B>>,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Positions a local layer sees (`window_size`), the query's own included.
    pub window_size: usize,
}

/// One pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Global or local causal self-attention.
    pub attn: SelfAttention<B>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

/// Multi-head self-attention without score scaling: `softmax(q k^T) v`.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Queries, weight `[d, d]`, no bias.
    pub q_proj: Dense<B>,
    /// Keys, weight `[d, d]`, no bias.
    pub k_proj: Dense<B>,
    /// Values, weight `[d, d]`, no bias.
    pub v_proj: Dense<B>,
    /// Output projection, weight `[d, d]` with bias.
    pub out_proj: Dense<B>,
    /// Heads.
    pub num_heads: usize,
    /// Whether this layer sees every earlier position or only a window of them.
    #[module(skip)]
    pub kind: AttentionKind,
}

/// Two-layer MLP with GELU (`nn.Linear` weights, `[out, in]`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Weight `[inner, d]`.
    pub c_fc: Dense<B>,
    /// Weight `[d, inner]`.
    pub c_proj: Dense<B>,
    /// The activation between them.
    #[module(skip)]
    pub act: Activation,
}

/// The key/value caches of every block.
#[derive(Debug)]
pub struct GptNeoCache<B: Backend> {
    /// One cache per block.
    pub layers: Vec<KvCache<B>>,
}

/// What the queries of one forward pass may see: `t` new positions after `past` cached ones.
struct Masks<B: Backend> {
    /// Global layers: every key `0..past + t`, masked above the diagonal (`None` for `t == 1`).
    global: Option<Tensor<B, 4, Bool>>,
    /// Local layers read keys `local_start..past + t` only: no query sees anything earlier.
    local_start: usize,
    /// Local layers: `[1, 1, t, past + t - local_start]`, `true` where the key is in the future
    /// or `window` or more positions back (`None` when nothing is masked).
    local: Option<Tensor<B, 4, Bool>>,
}

impl<B: Backend> Masks<B> {
    fn new(t: usize, past: usize, window: usize, device: &B::Device) -> Self {
        let total = past + t;
        // Query `past + i` sees keys `past + i + 1 - window ..= past + i`.
        let local_start = (past + 1).saturating_sub(window);
        let mut local = Vec::with_capacity(t * (total - local_start));
        for i in 0..t {
            let query = past + i;
            for key in local_start..total {
                local.push(key > query || query - key >= window);
            }
        }
        let local = local.iter().any(|&m| m).then(|| {
            Tensor::<B, 2, Bool>::from_data(
                TensorData::new(local, [t, total - local_start]),
                device,
            )
            .unsqueeze::<4>()
        });
        Self {
            global: (t > 1).then(|| causal_mask::<B>(t, past, device).unsqueeze::<4>()),
            local_start,
            local,
        }
    }
}

impl<B: Backend> GptNeo<B> {
    /// Hidden states after the final LayerNorm.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut GptNeoCache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [batch, t] = ids.dims();
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.max_position_embeddings {
            return Err(CacheFull {
                needed: past + t,
                capacity: self.max_position_embeddings,
            });
        }
        let positions: Vec<i64> = (past..past + t).map(|p| p as i64).collect();
        let positions = Tensor::<B, 2, Int>::from_data(TensorData::new(positions, [1, t]), &device)
            .expand([batch, t]);
        let mut x = self.wte.forward(ids) + self.wpe.forward(positions);
        let masks = Masks::new(t, past, self.window_size, &device);
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, layer_cache, &masks)?;
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
            // `wte` `[vocab, d]` is the head's `[out, in]` weight.
            None => self.wte.project(hidden),
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
        masks: &Masks<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x), cache, masks)?;
        Ok(x.clone() + self.mlp.forward(self.ln_2.forward(x)))
    }
}

impl<B: Backend> SelfAttention<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        masks: &Masks<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.num_heads, d / self.num_heads);
        let heads = |y: Tensor<B, 3>| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let (k, v) = cache.append(k, v)?;
        let (k, v, mask) = match self.kind {
            AttentionKind::Global => (k, v, masks.global.clone()),
            AttentionKind::Local { .. } => {
                // Only the window's keys; the cache keeps them all (HF's does too).
                let (start, end) = (masks.local_start, cache.len());
                (
                    k.slice([0..b, 0..h, start..end, 0..hd]),
                    v.slice([0..b, 0..h, start..end, 0..hd]),
                    masks.local.clone(),
                )
            }
        };
        // GPT-Neo does not scale the scores by 1/sqrt(head_dim).
        let out = attention(q, k, v, mask, 1.0);
        Ok(self
            .out_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, d])))
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.c_proj.forward(self.act.forward(self.c_fc.forward(x)))
    }
}

impl<B: Backend> GptNeo<B> {
    /// A cache with room for `capacity` positions for a batch.
    pub fn cache(&self, batch: usize, capacity: usize) -> GptNeoCache<B> {
        let device = self.wte.device();
        let layers = self
            .h
            .iter()
            .map(|block| {
                let heads = block.attn.num_heads;
                let d = block.attn.out_proj.d_out();
                KvCache::new(batch, heads, capacity, d / heads, &device)
            })
            .collect();
        GptNeoCache { layers }
    }
}

impl<B: Backend> CausalLm<B> for GptNeo<B> {
    type Cache = GptNeoCache<B>;
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
        self.max_position_embeddings
    }

    fn vocab_size(&self) -> usize {
        self.wte.vocab_size()
    }

    fn device(&self) -> B::Device {
        self.wte.device()
    }
}
