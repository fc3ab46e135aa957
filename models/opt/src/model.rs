//! The OPT module tree. Field names follow the checkpoint (`embed_tokens`,
//! `layers.{i}.self_attn.q_proj`, `layers.{i}.fc1`, …), so `load.rs` needs almost no renaming.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use zoo_nn::attention::{attention, causal_mask, CacheFull, KvCache};
use zoo_nn::{Activation, CausalLm, Dense, Embed, LayerNorm, Logits};

use crate::config::POSITION_OFFSET;

/// OPT: token embedding (optionally projected in), learned positions, `num_hidden_layers`
/// pre-LN or post-LN blocks, optional final LayerNorm and projection out, LM head.
#[derive(Module, Debug)]
pub struct Opt<B: Backend> {
    /// Token embedding `[vocab, word_embed_proj_dim]`, also the LM head when tied.
    pub embed_tokens: Embed<B>,
    /// Learned positions `[max_position_embeddings + 2, hidden]`; position `p` is row `p + 2`.
    pub embed_positions: Embedding<B>,
    /// `word_embed_proj_dim → hidden`, no bias; only when the two differ (opt-350m).
    pub project_in: Option<Dense<B>>,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final LayerNorm of pre-LN models; absent for post-LN ones.
    pub final_layer_norm: Option<LayerNorm<B>>,
    /// `hidden → word_embed_proj_dim`, no bias; only when the two differ.
    pub project_out: Option<Dense<B>>,
    /// A separate LM head `[vocab, word_embed_proj_dim]`, only when the checkpoint does not tie it.
    pub lm_head: Option<Dense<B>>,
    /// Longest sequence.
    pub max_positions: usize,
}

/// One decoder layer: attention then MLP, each with a residual and a LayerNorm that comes
/// before (pre-LN) or after (post-LN) it.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Causal self-attention.
    pub self_attn: Attention<B>,
    /// The attention's LayerNorm.
    pub self_attn_layer_norm: LayerNorm<B>,
    /// MLP up projection, weight `[ffn_dim, hidden]`.
    pub fc1: Dense<B>,
    /// MLP down projection, weight `[hidden, ffn_dim]`.
    pub fc2: Dense<B>,
    /// The MLP's LayerNorm.
    pub final_layer_norm: LayerNorm<B>,
    /// The activation between `fc1` and `fc2`.
    #[module(skip)]
    pub act: Activation,
    /// Norms before the residual branches (`true`) or after the residual sums (`false`).
    #[module(skip)]
    pub do_layer_norm_before: bool,
}

/// Causal multi-head self-attention with separate q/k/v projections.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection, weight `[hidden, hidden]`.
    pub q_proj: Dense<B>,
    /// Key projection.
    pub k_proj: Dense<B>,
    /// Value projection.
    pub v_proj: Dense<B>,
    /// Output projection.
    pub out_proj: Dense<B>,
    /// Heads.
    pub num_heads: usize,
    /// `1/sqrt(head_dim)`, applied to the projected queries.
    pub scaling: f64,
}

/// The key/value caches of every layer.
#[derive(Debug)]
pub struct OptCache<B: Backend> {
    /// One cache per layer.
    pub layers: Vec<KvCache<B>>,
}

impl<B: Backend> Opt<B> {
    /// Hidden states as the LM head sees them: after the final LayerNorm and `project_out`.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, word_embed_proj_dim]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut OptCache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [batch, t] = ids.dims();
        let device = ids.device();
        let past = cache.layers.first().map_or(0, KvCache::len);
        if past + t > self.max_positions {
            return Err(CacheFull {
                needed: past + t,
                capacity: self.max_positions,
            });
        }
        // Without padding, HF's `cumsum(attention_mask) - 1` is 0, 1, …: the rows are offset by 2.
        let rows: Vec<i64> = (past..past + t)
            .map(|p| (p + POSITION_OFFSET) as i64)
            .collect();
        let rows = Tensor::<B, 2, Int>::from_data(TensorData::new(rows, [1, t]), &device)
            .expand([batch, t]);
        let mut x = self.embed_tokens.forward(ids);
        if let Some(project_in) = &self.project_in {
            x = project_in.forward(x);
        }
        x = x + self.embed_positions.forward(rows);
        let mask = (t > 1).then(|| causal_mask::<B>(t, past, &device).unsqueeze::<4>());
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(x, layer_cache, mask.clone())?;
        }
        if let Some(norm) = &self.final_layer_norm {
            x = norm.forward(x);
        }
        if let Some(project_out) = &self.project_out {
            x = project_out.forward(x);
        }
        Ok(x)
    }

    /// Logits over the vocabulary.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, word_embed_proj_dim]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            // `embed_tokens` `[vocab, e]` is the head's `[out, in]` weight.
            None => self.embed_tokens.project(hidden),
        }
    }

    /// A cache with room for `capacity` positions for a batch.
    pub fn cache(&self, batch: usize, capacity: usize) -> OptCache<B> {
        let device = self.embed_tokens.device();
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                let heads = layer.self_attn.num_heads;
                let d = layer.self_attn.out_proj.d_out();
                KvCache::new(batch, heads, capacity, d / heads, &device)
            })
            .collect();
        OptCache { layers }
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, t, hidden]` → `[batch, t, hidden]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        if self.do_layer_norm_before {
            // opt-125m, 1.3b and larger: `x + f(norm(x))`.
            let x = x.clone()
                + self
                    .self_attn
                    .forward(self.self_attn_layer_norm.forward(x), cache, mask)?;
            Ok(x.clone() + self.mlp(self.final_layer_norm.forward(x)))
        } else {
            // opt-350m: `norm(x + f(x))`.
            let x = self
                .self_attn_layer_norm
                .forward(x.clone() + self.self_attn.forward(x, cache, mask)?);
            Ok(self.final_layer_norm.forward(x.clone() + self.mlp(x)))
        }
    }

    /// `fc2(act(fc1(x)))`.
    fn mlp(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(self.act.forward(self.fc1.forward(x)))
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, t, hidden]` → `[batch, t, hidden]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        cache: &mut KvCache<B>,
        mask: Option<Tensor<B, 4, Bool>>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [b, t, d] = x.dims();
        let (h, hd) = (self.num_heads, d / self.num_heads);
        let heads = |y: Tensor<B, 3>| y.reshape([b, t, h, hd]).swap_dims(1, 2);
        // As HF (and fairseq): the projected queries, bias included, are scaled before `q k^T`.
        let q = heads(self.q_proj.forward(x.clone()) * self.scaling);
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let (k, v) = cache.append(k, v)?;
        let out = attention(q, k, v, mask, 1.0);
        Ok(self
            .out_proj
            .forward(out.swap_dims(1, 2).reshape([b, t, d])))
    }
}

impl<B: Backend> CausalLm<B> for Opt<B> {
    type Cache = OptCache<B>;
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
