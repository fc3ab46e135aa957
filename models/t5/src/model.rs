//! The T5 module tree. Field names follow the checkpoint (`shared`, `encoder.block.{i}`,
//! `layer.0.SelfAttention.q`, `layer.1.DenseReluDense.wi`, …) in snake case, so `load.rs` needs
//! almost no renaming; `layer.{0,1,2}` become named fields.
//!
//! T5 differs from the decoder-only families in five places: an encoder and a decoder; the
//! attention has no `1/sqrt(d)` scaling and adds a learned bias per relative-position bucket
//! (owned by the first block of each stack, shared by the others); the norm is RMS-style
//! without bias; each decoder block attends to the encoder output (cross-attention, its keys
//! and values computed once); the decoder output is scaled by `d_model^-0.5` before a tied
//! head (original T5, not T5 v1.1 / Flan-T5).

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use zoo_nn::attention::{causal_mask, CacheFull, KvCache};
use zoo_nn::{Activation, Dense, Embed, RmsNorm};

/// T5: a shared token embedding, an encoder stack, a decoder stack with cross-attention, and
/// an LM head (the embedding when the checkpoint stores none).
#[derive(Module, Debug)]
pub struct T5<B: Backend> {
    /// Token embedding `[vocab, d]` of both stacks, also the LM head when no `lm_head` is stored.
    pub shared: Embed<B>,
    /// The encoder stack.
    pub encoder: Encoder<B>,
    /// The decoder stack.
    pub decoder: Decoder<B>,
    /// A separate LM head `[vocab, d]`, when the checkpoint stores `lm_head.weight`.
    pub lm_head: Option<Dense<B>>,
    /// Multiply the decoder output by `d_model^-0.5` before the head (original T5).
    pub scale_decoder_outputs: bool,
    /// First decoder input (`decoder_start_token_id`, T5's pad id 0).
    pub decoder_start_token_id: u32,
}

/// The encoder: bidirectional self-attention blocks and a final norm.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// The blocks; the first one owns the relative-position bias.
    pub block: Vec<EncoderBlock<B>>,
    /// Norm after the last block.
    pub final_layer_norm: RmsNorm<B>,
    /// Buckets of the relative-position bias.
    pub num_buckets: usize,
    /// Distance from which all positions share the last bucket.
    pub max_distance: usize,
}

/// The decoder: causal self-attention, cross-attention to the encoder, feed-forward.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// The blocks; the first one owns the relative-position bias.
    pub block: Vec<DecoderBlock<B>>,
    /// Norm after the last block.
    pub final_layer_norm: RmsNorm<B>,
    /// Buckets of the relative-position bias.
    pub num_buckets: usize,
    /// Distance from which all positions share the last bucket.
    pub max_distance: usize,
}

/// An encoder block: `layer.0` self-attention, `layer.1` feed-forward.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    /// `layer.0`.
    pub self_attention: LayerSelfAttention<B>,
    /// `layer.1`.
    pub ff: LayerFf<B>,
}

/// A decoder block: `layer.0` self-attention, `layer.1` cross-attention, `layer.2` feed-forward.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    /// `layer.0`.
    pub self_attention: LayerSelfAttention<B>,
    /// `layer.1`.
    pub cross_attention: LayerCrossAttention<B>,
    /// `layer.2`.
    pub ff: LayerFf<B>,
}

/// `x + SelfAttention(layer_norm(x))`.
#[derive(Module, Debug)]
pub struct LayerSelfAttention<B: Backend> {
    /// `SelfAttention`.
    pub attention: Attention<B>,
    /// Norm before the attention.
    pub layer_norm: RmsNorm<B>,
}

/// `x + EncDecAttention(layer_norm(x), encoder_out)`.
#[derive(Module, Debug)]
pub struct LayerCrossAttention<B: Backend> {
    /// `EncDecAttention`.
    pub enc_dec_attention: Attention<B>,
    /// Norm before the attention.
    pub layer_norm: RmsNorm<B>,
}

/// `x + DenseReluDense(layer_norm(x))`.
#[derive(Module, Debug)]
pub struct LayerFf<B: Backend> {
    /// `DenseReluDense`.
    pub dense_relu_dense: DenseReluDense<B>,
    /// Norm before the feed-forward.
    pub layer_norm: RmsNorm<B>,
}

/// Unscaled multi-head attention with `num_heads * d_kv` inner width.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Queries, weight `[inner, d]`.
    pub q: Dense<B>,
    /// Keys, weight `[inner, d]`.
    pub k: Dense<B>,
    /// Values, weight `[inner, d]`.
    pub v: Dense<B>,
    /// Output, weight `[d, inner]`.
    pub o: Dense<B>,
    /// Bias per relative-position bucket and head, `[num_buckets, heads]`: only in the first
    /// block's self-attention.
    pub relative_attention_bias: Option<Embedding<B>>,
    /// Heads.
    pub n_heads: usize,
    /// Size of one head.
    pub d_kv: usize,
}

/// The feed-forward: `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)`.
#[derive(Module, Debug)]
pub struct DenseReluDense<B: Backend> {
    /// `wi` (or `wi_0` when gated), weight `[d_ff, d]`: goes through the activation.
    pub wi: Dense<B>,
    /// `wi_1`, weight `[d_ff, d]`: the linear half of the gated form.
    pub wi_1: Option<Dense<B>>,
    /// `wo`, weight `[d, d_ff]`.
    pub wo: Dense<B>,
    /// `relu` (T5) or `gelu_new` (gated-gelu: T5 v1.1, Flan-T5).
    #[module(skip)]
    pub act: Activation,
}

/// The decoder's state while generating: every block's self-attention keys and values, and
/// its cross-attention keys and values over the encoder output (computed on the first
/// [`T5::decode`] call and reused).
#[derive(Debug)]
pub struct T5Cache<B: Backend> {
    /// Self-attention cache per decoder block.
    pub self_attn: Vec<KvCache<B>>,
    /// Cross-attention `(keys, values)` per decoder block, `[batch, heads, s, d_kv]` each;
    /// empty until the first decode.
    pub cross: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> T5Cache<B> {
    /// Decoder positions already processed.
    pub fn len(&self) -> usize {
        self.self_attn.first().map_or(0, KvCache::len)
    }

    /// Whether nothing was decoded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> T5<B> {
    /// Runs the encoder.
    ///
    /// # Shapes
    /// - `ids`: `[batch, s]` → `[batch, s, d]`
    pub fn encode(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, s] = ids.dims();
        let device = ids.device();
        let mut x = self.shared.forward(ids);
        let first = &self.encoder.block[0].self_attention.attention;
        let buckets = bucket_ids(
            s,
            s,
            0,
            true,
            self.encoder.num_buckets,
            self.encoder.max_distance,
        );
        let bias = first
            .position_bias(buckets, s, s, &device)
            .expand([batch, first.n_heads, s, s]);
        for block in &self.encoder.block {
            x = block.forward(x, bias.clone());
        }
        self.encoder.final_layer_norm.forward(x)
    }

    /// An empty decoder cache with room for `capacity` decoder positions.
    pub fn cache(&self, batch: usize, capacity: usize) -> T5Cache<B> {
        let device = self.shared.device();
        let self_attn = self
            .decoder
            .block
            .iter()
            .map(|block| {
                let a = &block.self_attention.attention;
                KvCache::new(batch, a.n_heads, capacity, a.d_kv, &device)
            })
            .collect();
        T5Cache {
            self_attn,
            cross: Vec::new(),
        }
    }

    /// Runs the decoder over `ids` after the positions already in `cache`, attending to
    /// `encoder_out`, and returns the logits of every new position.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]`, `encoder_out`: `[batch, s, d]` → `[batch, t, vocab]`
    pub fn decode(
        &self,
        ids: Tensor<B, 2, Int>,
        encoder_out: &Tensor<B, 3>,
        cache: &mut T5Cache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let hidden = self.decoder_hidden(ids, encoder_out, cache)?;
        Ok(self.lm_logits(hidden))
    }

    /// The decoder's hidden states after its final norm (see [`T5::decode`]).
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]`, `encoder_out`: `[batch, s, d]` → `[batch, t, d]`
    pub fn decoder_hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        encoder_out: &Tensor<B, 3>,
        cache: &mut T5Cache<B>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let [batch, t] = ids.dims();
        let device = ids.device();
        let past = cache.len();
        let capacity = cache.self_attn.first().map_or(0, KvCache::capacity);
        if past + t > capacity {
            return Err(CacheFull {
                needed: past + t,
                capacity,
            });
        }
        if cache.cross.is_empty() {
            cache.cross = self
                .decoder
                .block
                .iter()
                .map(|block| {
                    let a = &block.cross_attention.enc_dec_attention;
                    (
                        a.heads(a.k.forward(encoder_out.clone())),
                        a.heads(a.v.forward(encoder_out.clone())),
                    )
                })
                .collect();
        }
        let mut x = self.shared.forward(ids);
        let first = &self.decoder.block[0].self_attention.attention;
        let total = past + t;
        let buckets = bucket_ids(
            t,
            total,
            past,
            false,
            self.decoder.num_buckets,
            self.decoder.max_distance,
        );
        let mut bias = first.position_bias(buckets, t, total, &device);
        if t > 1 {
            let mask = causal_mask::<B>(t, past, &device).unsqueeze::<4>();
            bias = bias.mask_fill(mask.expand([1, first.n_heads, t, total]), f32::MIN);
        }
        let bias = bias.expand([batch, first.n_heads, t, total]);
        for ((block, self_cache), (ck, cv)) in self
            .decoder
            .block
            .iter()
            .zip(cache.self_attn.iter_mut())
            .zip(cache.cross.iter())
        {
            x = block.forward(x, bias.clone(), self_cache, ck.clone(), cv.clone())?;
        }
        Ok(self.decoder.final_layer_norm.forward(x))
    }

    /// Logits over the vocabulary from decoder hidden states.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, t, d]` → `[batch, t, vocab]`
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = if self.scale_decoder_outputs {
            let d = hidden.dims()[2] as f64;
            hidden * d.powf(-0.5)
        } else {
            hidden
        };
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => self.shared.project(hidden),
        }
    }

    /// One full pass: the encoder over `encoder_ids`, the decoder over `decoder_ids` (which
    /// start with the decoder start token).
    ///
    /// # Shapes
    /// - `encoder_ids`: `[batch, s]`, `decoder_ids`: `[batch, t]` → `[batch, t, vocab]`
    pub fn forward(
        &self,
        encoder_ids: Tensor<B, 2, Int>,
        decoder_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [batch, t] = decoder_ids.dims();
        let encoder_out = self.encode(encoder_ids);
        let mut cache = self.cache(batch, t);
        self.decode(decoder_ids, &encoder_out, &mut cache)
            .expect("the cache holds every decoder position")
    }

    /// Greedy decoding for one sequence: the new decoder ids (without the start token), at most
    /// `max_new`, ending at `eos` when it comes. Ids must be below the vocabulary size.
    pub fn generate_greedy(
        &self,
        encoder_ids: &[u32],
        max_new: usize,
        eos: Option<u32>,
    ) -> Vec<u32> {
        let device = self.shared.device();
        let encoder_out = self.encode(ids_tensor::<B>(encoder_ids, &device));
        let mut cache = self.cache(1, max_new.max(1));
        let mut input = self.decoder_start_token_id;
        let mut new = Vec::with_capacity(max_new);
        while new.len() < max_new {
            let logits = self
                .decode(ids_tensor::<B>(&[input], &device), &encoder_out, &mut cache)
                .expect("the cache holds max_new decoder positions");
            let row: Vec<f32> = logits
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("logits read back as f32");
            let next = argmax(&row);
            new.push(next);
            if Some(next) == eos {
                break;
            }
            input = next;
        }
        new
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.shared.vocab_size()
    }

    /// The device the weights are on.
    pub fn device(&self) -> B::Device {
        self.shared.device()
    }
}

impl<B: Backend> EncoderBlock<B> {
    /// # Shapes
    /// - `x`: `[batch, s, d]`, `bias`: `[batch, heads, s, s]` → `[batch, s, d]`
    fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let sa = &self.self_attention;
        let h = sa.layer_norm.forward(x.clone());
        let (k, v) = (
            sa.attention.k.forward(h.clone()),
            sa.attention.v.forward(h.clone()),
        );
        let (k, v) = (sa.attention.heads(k), sa.attention.heads(v));
        let x = x + sa.attention.attend(h, k, v, Some(bias));
        self.ff.forward(x)
    }
}

impl<B: Backend> DecoderBlock<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]`, `bias`: `[batch, heads, t, past + t]` (causal mask folded in),
    ///   `cross_k` / `cross_v`: `[batch, heads, s, d_kv]` → `[batch, t, d]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        bias: Tensor<B, 4>,
        cache: &mut KvCache<B>,
        cross_k: Tensor<B, 4>,
        cross_v: Tensor<B, 4>,
    ) -> Result<Tensor<B, 3>, CacheFull> {
        let sa = &self.self_attention;
        let h = sa.layer_norm.forward(x.clone());
        let k = sa.attention.heads(sa.attention.k.forward(h.clone()));
        let v = sa.attention.heads(sa.attention.v.forward(h.clone()));
        let (k, v) = cache.append(k, v)?;
        let x = x + sa.attention.attend(h, k, v, Some(bias));

        let ca = &self.cross_attention;
        let h = ca.layer_norm.forward(x.clone());
        let x = x + ca.enc_dec_attention.attend(h, cross_k, cross_v, None);
        Ok(self.ff.forward(x))
    }
}

impl<B: Backend> LayerFf<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.layer_norm.forward(x.clone());
        x + self.dense_relu_dense.forward(h)
    }
}

impl<B: Backend> DenseReluDense<B> {
    /// # Shapes
    /// - `x`: `[batch, t, d]` → `[batch, t, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = match &self.wi_1 {
            Some(wi_1) => self.act.forward(self.wi.forward(x.clone())) * wi_1.forward(x),
            None => self.act.forward(self.wi.forward(x)),
        };
        self.wo.forward(hidden)
    }
}

impl<B: Backend> Attention<B> {
    /// `[batch, n, heads * d_kv]` → `[batch, heads, n, d_kv]`.
    fn heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, _] = x.dims();
        x.reshape([b, n, self.n_heads, self.d_kv]).swap_dims(1, 2)
    }

    /// `o(softmax(q k^T + bias) v)` with the queries projected from `h`; no `1/sqrt(d_kv)`.
    ///
    /// # Shapes
    /// - `h`: `[batch, t, d]`, `k`, `v`: `[batch, heads, s, d_kv]`,
    ///   `bias`: `[batch, heads, t, s]` → `[batch, t, d]`
    fn attend(
        &self,
        h: Tensor<B, 3>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        bias: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = h.dims();
        let q = self.heads(self.q.forward(h));
        let scores = q.matmul(k.swap_dims(2, 3));
        let scores = match bias {
            Some(bias) => scores + bias,
            None => scores,
        };
        let out = softmax(scores, 3).matmul(v);
        self.o.forward(
            out.swap_dims(1, 2)
                .reshape([b, t, self.n_heads * self.d_kv]),
        )
    }

    /// The learned bias of each bucket for `t` queries over `s` keys, `[1, heads, t, s]`
    /// (zeros when this attention owns no bias table, as in HF).
    fn position_bias(
        &self,
        buckets: Vec<i64>,
        t: usize,
        s: usize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        match &self.relative_attention_bias {
            Some(table) => {
                let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(buckets, [t, s]), device);
                // `[t, s, heads]` → `[1, heads, t, s]`
                table.forward(ids).permute([2, 0, 1]).unsqueeze::<4>()
            }
            None => Tensor::zeros([1, self.n_heads, t, s], device),
        }
    }
}

/// The bucket of every (query, key) pair, row-major `[t, s]`, for queries at positions
/// `past..past + t` and keys at `0..s`.
fn bucket_ids(
    t: usize,
    s: usize,
    past: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(t * s);
    for i in 0..t {
        for j in 0..s {
            let relative = j as i64 - (past + i) as i64;
            out.push(
                relative_position_bucket(relative, bidirectional, num_buckets, max_distance) as i64,
            );
        }
    }
    out
}

/// T5's bucket of `relative = key position - query position` (Mesh TensorFlow's scheme, as HF
/// `T5Attention._relative_position_bucket`).
///
/// Bidirectional (encoder): half the buckets for keys after the query. Of each half, the first
/// half are exact distances `0..max_exact`; the rest are log-spaced up to `max_distance`, beyond
/// which everything shares the last bucket. Causal (decoder): only keys at or before the query
/// count (later ones go to bucket 0, and are masked anyway). The log is taken in f32, as HF does.
pub fn relative_position_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets;
    let mut bucket = 0;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative > 0 {
            bucket += num_buckets;
        }
        relative.unsigned_abs() as usize
    } else {
        (-relative.min(0)) as usize
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        return bucket + distance;
    }
    let log_ratio = ((distance as f32) / (max_exact as f32)).ln();
    let log_range = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
    let large = max_exact + (log_ratio / log_range * (num_buckets - max_exact) as f32) as usize;
    bucket + large.min(num_buckets - 1)
}

/// Index of the first largest value (as `torch.argmax`).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// A `[1, n]` tensor of token ids.
fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    zoo_nn::ids_tensor::<B>(ids, device)
}
