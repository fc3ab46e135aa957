//! The CodeGen module tree (also MOSS's). Field names follow the checkpoint (`wte`,
//! `h.{i}.ln_1`, `h.{i}.attn.out_proj`, `h.{i}.mlp.fc_in`, …), so `load.rs` needs almost no
//! renaming; the one exception is `attn.qkv_proj`, split at load into `q_proj` / `k_proj` /
//! `v_proj` (see `load.rs`).
//!
//! A block runs attention and MLP in parallel from one LayerNorm, as GPT-J does:
//! `x + attn(ln_1(x)) + mlp(ln_1(x))`. Attention rotates the first `rotary_dim` features of
//! each query and key head in adjacent pairs (HF `rotate_every_two`) and passes the rest
//! through.

use burn::module::Module;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use zoo_nn::attention::{attention, causal_mask, CacheFull, KvCache};
use zoo_nn::rope::{self, rope_interleaved};
use zoo_nn::{Activation, CausalLm, Dense, Embed, LayerNorm, Logits};

/// CodeGen: token embedding, `n_layer` parallel blocks, final LayerNorm, a biased LM head.
#[derive(Module, Debug)]
pub struct CodeGen<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub wte: Embed<B>,
    /// The transformer blocks.
    pub h: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// LM head `[vocab, d]` with a bias (never tied to `wte`).
    pub lm_head: Dense<B>,
    /// cos of every position's rotary angles, `[n_positions, rotary_dim / 2]`.
    pub cos: Tensor<B, 2>,
    /// sin of every position's rotary angles, `[n_positions, rotary_dim / 2]`.
    pub sin: Tensor<B, 2>,
    /// Longest sequence.
    pub n_positions: usize,
}

/// One block: `x + attn(ln_1(x)) + mlp(ln_1(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// The one norm, shared by attention and MLP.
    pub ln_1: LayerNorm<B>,
    /// Causal self-attention with partial rotary positions.
    pub attn: Attention<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

/// Causal multi-head self-attention; no projection has a bias.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Queries `[d, d]` (`[out, in]`), from the checkpoint's `qkv_proj`.
    pub q_proj: Dense<B>,
    /// Keys `[d, d]`, from the checkpoint's `qkv_proj`.
    pub k_proj: Dense<B>,
    /// Values `[d, d]`, from the checkpoint's `qkv_proj`.
    pub v_proj: Dense<B>,
    /// Output projection `[d, d]`.
    pub out_proj: Dense<B>,
    /// Heads.
    pub n_head: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// `fc_out(gelu_new(fc_in(x)))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `[inner, d]` with bias.
    pub fc_in: Dense<B>,
    /// `[d, inner]` with bias.
    pub fc_out: Dense<B>,
    /// The activation between them.
    #[module(skip)]
    pub act: Activation,
}

/// The key/value caches of every block.
#[derive(Debug)]
pub struct CodeGenCache<B: Backend> {
    /// One cache per block.
    pub layers: Vec<KvCache<B>>,
}

/// cos and sin of HF CodeGen's rotary angles (`create_sinusoidal_positions`: base 10000,
/// computed in f32) for `n_positions` positions: `[n_positions, rotary_dim / 2]` each.
pub fn rotary_table<B: Backend>(
    rotary_dim: usize,
    n_positions: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    rope::cos_sin(
        &rope::inv_freq_f32(rotary_dim, 10000.0),
        0,
        n_positions,
        device,
    )
}

impl<B: Backend> CodeGen<B> {
    /// Hidden states after the final LayerNorm.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut CodeGenCache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [_, t] = ids.dims();
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.n_positions {
            return Err(CacheFull {
                needed: past + t,
                capacity: self.n_positions,
            });
        }
        let half = self.cos.dims()[1];
        let cos = self.cos.clone().slice([past..past + t, 0..half]);
        let sin = self.sin.clone().slice([past..past + t, 0..half]);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        let mut x = self.wte.forward(ids);
        for (block, layer_cache) in self.h.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, &cos, &sin, layer_cache, mask.clone())?;
        }
        Ok(self.ln_f.forward(x))
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, d]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        self.lm_head.forward(hidden)
    }

    /// A cache with room for `capacity` positions for a batch.
    pub fn cache(&self, batch: usize, capacity: usize) -> CodeGenCache<B> {
        let device = self.wte.device();
        let layers = self
            .h
            .iter()
            .map(|block| {
                let a = &block.attn;
                KvCache::new(batch, a.n_head, capacity, a.head_dim, &device)
            })
            .collect();
        CodeGenCache { layers }
    }
}

impl<B: Backend> Block<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]`, `cos`/`sin`: `[t, rotary_dim / 2]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let h = self.ln_1.forward(x.clone());
        let attn = self.attn.forward(h.clone(), cos, sin, cache, mask)?;
        // HF's order of the sum: attention, MLP, residual.
        Ok(attn + self.mlp.forward(h) + x)
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]`, `cos`/`sin`: `[t, rotary_dim / 2]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 2>,
        sin: &Tensor<B, 2>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.n_head, self.head_dim);
        let heads = |y: Tensor<B, 3>| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        // The first rotary_dim features of each head rotate in adjacent pairs; the rest pass.
        let q = rope_interleaved(q, cos.clone(), sin.clone());
        let k = rope_interleaved(k, cos.clone(), sin.clone());
        let (k, v) = cache.append(k, v)?;
        // HF divides the f32 scores by sqrt(head_dim); activations here are f32 throughout.
        let out = attention(q, k, v, mask, 1.0 / (hd as f64).sqrt());
        Ok(self
            .out_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, d])))
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc_out.forward(self.act.forward(self.fc_in.forward(x)))
    }
}

impl<B: Backend> CausalLm<B> for CodeGen<B> {
    type Cache = CodeGenCache<B>;
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
