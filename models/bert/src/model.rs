//! The BERT module tree. Field names follow the checkpoint (`embeddings.word_embeddings`,
//! `encoder.layer.{i}.attention.self.query`, `cls.predictions.transform.dense`, …; `LayerNorm`
//! becomes `layer_norm` and `self` becomes `self_attn`), so `load.rs` is a short table.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use zoo_nn::attention::attention;
use zoo_nn::{Activation, Dense, LayerNorm};

/// BERT: embeddings, a stack of post-LN encoder layers, and optional pooler / MLM heads.
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    /// Word + position + token-type embeddings, then LayerNorm.
    pub embeddings: Embeddings<B>,
    /// The encoder layers (`encoder.layer.{i}`).
    pub layers: Vec<Layer<B>>,
    /// `tanh(dense(hidden[:, 0]))`, when the checkpoint has one.
    pub pooler: Option<Dense<B>>,
    /// The masked-language-model head (`cls.predictions`), when the checkpoint has one.
    pub cls: Option<MlmHead<B>>,
}

/// `LayerNorm(word[ids] + position[0..s] + token_type[types])`.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// `[vocab, d]`; also the MLM decoder when tied.
    pub word_embeddings: Embedding<B>,
    /// `[max_position_embeddings, d]`.
    pub position_embeddings: Embedding<B>,
    /// `[type_vocab_size, d]`.
    pub token_type_embeddings: Embedding<B>,
    /// The embedding LayerNorm.
    pub layer_norm: LayerNorm<B>,
}

/// One post-LN encoder layer: `x = LN(x + attn(x))`, then `x = LN(x + ffn(x))`.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    /// Self-attention and its output projection + norm.
    pub attention: Attention<B>,
    /// First feed-forward projection, `[intermediate, d]` (`[out, in]`).
    pub intermediate: Dense<B>,
    /// Second feed-forward projection, `[d, intermediate]` (`[out, in]`).
    pub output: Dense<B>,
    /// Norm after the feed-forward residual (`output.LayerNorm`).
    pub output_norm: LayerNorm<B>,
    /// Feed-forward activation.
    #[module(skip)]
    pub act: Activation,
}

/// Bidirectional multi-head self-attention (`attention.self`, `attention.output`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `self.query`, `[d, d]`.
    pub query: Dense<B>,
    /// `self.key`, `[d, d]`.
    pub key: Dense<B>,
    /// `self.value`, `[d, d]`.
    pub value: Dense<B>,
    /// `output.dense`, `[d, d]`.
    pub dense: Dense<B>,
    /// `output.LayerNorm`, after the attention residual.
    pub layer_norm: LayerNorm<B>,
    /// Heads.
    pub heads: usize,
}

/// `cls.predictions`: `decoder(LN(act(dense(h)))) + bias`.
#[derive(Module, Debug)]
pub struct MlmHead<B: Backend> {
    /// `transform.dense`, `[d, d]`.
    pub dense: Dense<B>,
    /// `transform.LayerNorm`.
    pub layer_norm: LayerNorm<B>,
    /// An untied decoder `[d, vocab]`; `None` means the word embedding is the decoder.
    pub decoder: Option<Param<Tensor<B, 2>>>,
    /// `cls.predictions.bias`, `[vocab]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Transform activation (`hidden_act`).
    #[module(skip)]
    pub act: Activation,
}

/// A sequence longer than the learned positions, or an empty batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// More positions than `max_position_embeddings`.
    #[error("the sequence has {len} tokens but the model knows {max} positions")]
    TooLong {
        /// Tokens in the sequence.
        len: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// The batch or a sequence in it is empty.
    #[error("empty input: {0}")]
    Empty(&'static str),
    /// An id outside its table.
    #[error("{what} {id} is outside the table of {size} entries")]
    OutOfRange {
        /// Which ids (`token id`, `token type id`).
        what: &'static str,
        /// The id.
        id: u32,
        /// Rows in the table.
        size: usize,
    },
    /// Two inputs of one batch disagree in shape.
    #[error("{0}")]
    Shape(String),
}

impl<B: Backend> Bert<B> {
    /// Last hidden states of the encoder. `token_type_ids` defaults to zeros;
    /// `attention_mask` is HF's (1 = attend, 0 = padding) and defaults to all ones.
    ///
    /// # Shapes
    /// - `ids`, `token_type_ids`, `attention_mask`: `[batch, s]` → `[batch, s, d]`
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Result<Tensor<B, 3>, InputError> {
        let [batch, s] = ids.dims();
        let max = self.max_positions();
        if s > max {
            return Err(InputError::TooLong { len: s, max });
        }
        if batch == 0 || s == 0 {
            return Err(InputError::Empty("no tokens"));
        }
        for (name, t) in [
            ("token_type_ids", &token_type_ids),
            ("attention_mask", &attention_mask),
        ] {
            if let Some(t) = t {
                if t.dims() != [batch, s] {
                    return Err(InputError::Shape(format!(
                        "{name} has shape {:?} but the ids have [{batch}, {s}]",
                        t.dims()
                    )));
                }
            }
        }
        let mut x = self.embeddings.forward(ids, token_type_ids);
        // `true` where a key is padding: [batch, 1, 1, s], broadcast over heads and queries.
        let mask: Option<Tensor<B, 4, Bool>> =
            attention_mask.map(|m| m.equal_elem(0).reshape([batch, 1, 1, s]));
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        Ok(x)
    }

    /// The pooler output `tanh(dense(hidden[:, 0]))`, or `None` without a pooler.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, s, d]` → `[batch, d]`
    pub fn pooled(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        let [b, _, d] = hidden.dims();
        let first = hidden.slice([0..b, 0..1, 0..d]).reshape([b, d]);
        Some(pooler.forward(first).tanh())
    }

    /// MLM logits over the vocabulary, or `None` without an MLM head.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, s, d]` → `[batch, s, vocab]`
    pub fn mlm_logits(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        let head = self.cls.as_ref()?;
        let [b, s, d] = hidden.dims();
        let h = head
            .layer_norm
            .forward(activate(head.act, head.dense.forward(hidden)));
        let decoder = match &head.decoder {
            Some(w) => w.val(),
            None => self.embeddings.word_embeddings.weight.val().transpose(),
        };
        let vocab = decoder.dims()[1];
        let logits = h.reshape([b * s, d]).matmul(decoder) + head.bias.val().unsqueeze::<2>();
        Some(logits.reshape([b, s, vocab]))
    }

    /// MLM probabilities (softmax of [`Bert::mlm_logits`]).
    ///
    /// # Shapes
    /// - `hidden`: `[batch, s, d]` → `[batch, s, vocab]`
    pub fn mlm_probs(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 3>> {
        self.mlm_logits(hidden).map(|l| softmax(l, 2))
    }

    /// Longest sequence the model accepts.
    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    /// Rows of the word embedding.
    pub fn vocab_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[0]
    }

    /// Rows of the token-type embedding.
    pub fn type_vocab_size(&self) -> usize {
        self.embeddings.token_type_embeddings.weight.dims()[0]
    }

    /// Hidden size `d`.
    pub fn hidden_size(&self) -> usize {
        self.embeddings.word_embeddings.weight.dims()[1]
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embeddings.word_embeddings.weight.device()
    }
}

impl<B: Backend> Embeddings<B> {
    /// # Shapes
    /// - `ids`, `token_type_ids`: `[batch, s]` → `[batch, s, d]`
    fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        token_type_ids: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 3> {
        let s = ids.dims()[1];
        let d = self.word_embeddings.weight.dims()[1];
        let words = self.word_embeddings.forward(ids);
        let positions = self
            .position_embeddings
            .weight
            .val()
            .slice([0..s, 0..d])
            .unsqueeze::<3>();
        let types = match token_type_ids {
            Some(t) => self.token_type_embeddings.forward(t),
            // All zeros: row 0 of the table, broadcast.
            None => self
                .token_type_embeddings
                .weight
                .val()
                .slice([0..1, 0..d])
                .unsqueeze::<3>(),
        };
        self.layer_norm.forward(words + positions + types)
    }
}

impl<B: Backend> Layer<B> {
    /// # Shapes
    /// - `x`: `[batch, s, d]`, `mask`: `[batch, 1, 1, s]` → `[batch, s, d]`
    fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let x = self.attention.forward(x, mask);
        let ffn = self
            .output
            .forward(activate(self.act, self.intermediate.forward(x.clone())));
        self.output_norm.forward(x + ffn)
    }
}

/// `act(x)`, with an exact GELU gradient on every backend: under autodiff, GELU (erf) is written
/// as `x Φ(x)` with `Φ(x) = (1 + erf(x / √2)) / 2`, so Burn differentiates it through `erf`
/// (whose backward is the exact `2/√π e^(-u²)`). Burn 0.21's own `gelu` backward is exact
/// only on flex; burn-ndarray and the cubecl backends (wgpu, CUDA) take the default
/// `ActivationOps::gelu_backward`, the derivative of the *tanh* approximation, off by up to
/// 8.7e-4 (at |x| ≈ 2), which moved BERT's LoRA losses 1e-3 away from PEFT's (docs/finetune.md).
/// Without autodiff this is [`Activation::forward`].
pub fn activate<B: Backend, const D: usize>(act: Activation, x: Tensor<B, D>) -> Tensor<B, D> {
    if act == Activation::Gelu && B::ad_enabled(&x.device()) {
        let cdf = (x.clone() * core::f64::consts::FRAC_1_SQRT_2)
            .erf()
            .add_scalar(1.0)
            * 0.5;
        x * cdf
    } else {
        act.forward(x)
    }
}

impl<B: Backend> Attention<B> {
    /// `LN(x + dense(softmax(q k^T / sqrt(hd) + mask) v))`.
    ///
    /// # Shapes
    /// - `x`: `[batch, s, d]`, `mask`: `[batch, 1, 1, s]` → `[batch, s, d]`
    fn forward(&self, x: Tensor<B, 3>, mask: Option<Tensor<B, 4, Bool>>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let (h, hd) = (self.heads, d / self.heads);
        let heads = |t: Tensor<B, 3>| t.reshape([b, s, h, hd]).swap_dims(1, 2);
        let mut qkv = Dense::forward_many(&[&self.query, &self.key, &self.value], x.clone());
        let v = heads(qkv.pop().expect("three projections"));
        let k = heads(qkv.pop().expect("three projections"));
        let q = heads(qkv.pop().expect("three projections"));
        let out = attention(q, k, v, mask, 1.0 / (hd as f64).sqrt());
        let out = self.dense.forward(out.swap_dims(1, 2).reshape([b, s, d]));
        self.layer_norm.forward(x + out)
    }
}

/// A padded batch on the host, ready to become tensors: ids, token types and mask, `[batch, s]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Token ids, padded with `pad_id`.
    pub ids: Vec<i64>,
    /// Token type ids, padded with 0.
    pub token_type_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Sequences.
    pub batch: usize,
    /// Longest sequence (the padded length).
    pub len: usize,
}

impl Batch {
    /// Pads sequences of unequal length to the longest; checks ids against the model's tables.
    pub fn new(
        seqs: &[Vec<u32>],
        token_types: Option<&[Vec<u32>]>,
        pad_id: u32,
        vocab: usize,
        type_vocab: usize,
    ) -> Result<Self, InputError> {
        if seqs.is_empty() {
            return Err(InputError::Empty("no sequences"));
        }
        if let Some(tt) = token_types {
            if tt.len() != seqs.len() {
                return Err(InputError::Shape(format!(
                    "{} token type sequences for {} id sequences",
                    tt.len(),
                    seqs.len()
                )));
            }
        }
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        if len == 0 {
            return Err(InputError::Empty("every sequence is empty"));
        }
        let batch = seqs.len();
        let mut out = Self {
            ids: vec![pad_id as i64; batch * len],
            token_type_ids: vec![0; batch * len],
            attention_mask: vec![0; batch * len],
            batch,
            len,
        };
        for (i, seq) in seqs.iter().enumerate() {
            if seq.is_empty() {
                return Err(InputError::Empty("a sequence has no tokens"));
            }
            for (j, &id) in seq.iter().enumerate() {
                if id as usize >= vocab {
                    return Err(InputError::OutOfRange {
                        what: "token id",
                        id,
                        size: vocab,
                    });
                }
                out.ids[i * len + j] = id as i64;
                out.attention_mask[i * len + j] = 1;
            }
            if let Some(tt) = token_types {
                if tt[i].len() != seq.len() {
                    return Err(InputError::Shape(format!(
                        "sequence {i} has {} ids but {} token type ids",
                        seq.len(),
                        tt[i].len()
                    )));
                }
                for (j, &t) in tt[i].iter().enumerate() {
                    if t as usize >= type_vocab {
                        return Err(InputError::OutOfRange {
                            what: "token type id",
                            id: t,
                            size: type_vocab,
                        });
                    }
                    out.token_type_ids[i * len + j] = t as i64;
                }
            }
        }
        Ok(out)
    }

    /// `(ids, token_type_ids, attention_mask)` as `[batch, s]` tensors on `device`.
    #[allow(clippy::type_complexity)]
    pub fn tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.batch, self.len];
        let t = |v: &Vec<i64>| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v.clone(), shape), device)
        };
        (
            t(&self.ids),
            t(&self.token_type_ids),
            t(&self.attention_mask),
        )
    }
}
