//! The Burn modules: the model's definition, trainable on any backend with autodiff.
//!
//! Tables are named after the C tool's arrays: `syn0` (input vectors, `[V, D]`), `syn1neg`
//! (output vectors of negative sampling, `[V, D]`), `syn1` (inner nodes of the Huffman tree for
//! hierarchical softmax, `[max(V − 1, 1), D]`). The CPU trainer ([`crate::train`]) fills the same
//! layout, and one of its updates equals one SGD step of these losses (summed, not averaged).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use crate::error::{Result as W2vResult, Word2VecError};
pub use crate::train::HostBatch;
use crate::train::{Architecture, Progress, TrainConfig, Trained};
use crate::vocab::{Corpus, Huffman, Vocab};

/// Sizes of a word2vec model.
#[derive(Config, Debug)]
pub struct Word2VecConfig {
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Vector dimension D.
    pub dim: usize,
}

impl Word2VecConfig {
    fn tables<B: Backend>(&self, device: &B::Device) -> [Param<Tensor<B, 2>>; 3] {
        let (v, d) = (self.vocab_size.max(1), self.dim.max(1));
        let half = 1.0 / d as f64;
        [
            Param::from_tensor(Tensor::random(
                [v, d],
                Distribution::Uniform(-half, half),
                device,
            )),
            Param::from_tensor(Tensor::zeros([v, d], device)),
            Param::from_tensor(Tensor::zeros([v.saturating_sub(1).max(1), d], device)),
        ]
    }

    /// A skip-gram model initialised as gensim does (syn0 uniform in ±1/D, the rest zero).
    pub fn init_skipgram<B: Backend>(&self, device: &B::Device) -> SkipGram<B> {
        let [syn0, syn1neg, syn1] = self.tables(device);
        SkipGram {
            syn0,
            syn1neg,
            syn1,
        }
    }

    /// A CBOW model initialised as gensim does.
    pub fn init_cbow<B: Backend>(&self, device: &B::Device) -> Cbow<B> {
        let [syn0, syn1neg, syn1] = self.tables(device);
        Cbow {
            syn0,
            syn1neg,
            syn1,
        }
    }
}

/// Skip-gram: the input vector of one word predicts another word.
#[derive(Module, Debug)]
pub struct SkipGram<B: Backend> {
    /// Input vectors `[V, D]`.
    pub syn0: Param<Tensor<B, 2>>,
    /// Output vectors of negative sampling `[V, D]`.
    pub syn1neg: Param<Tensor<B, 2>>,
    /// Inner-node vectors of hierarchical softmax `[max(V − 1, 1), D]`.
    pub syn1: Param<Tensor<B, 2>>,
}

/// CBOW: the mean of the context's input vectors predicts the centre word.
#[derive(Module, Debug)]
pub struct Cbow<B: Backend> {
    /// Input vectors `[V, D]`.
    pub syn0: Param<Tensor<B, 2>>,
    /// Output vectors of negative sampling `[V, D]`.
    pub syn1neg: Param<Tensor<B, 2>>,
    /// Inner-node vectors of hierarchical softmax `[max(V − 1, 1), D]`.
    pub syn1: Param<Tensor<B, 2>>,
}

/// Negative-sampling loss, summed: −log σ(h·o_t) − Σ_k mask_k log σ(−h·o_k).
///
/// # Shapes
/// h `[N, D]`, target `[N]`, negatives `[N, K]`, neg_mask `[N, K]` → `[1]`
fn ns_loss<B: Backend>(
    h: Tensor<B, 2>,
    out: Tensor<B, 2>,
    target: Tensor<B, 1, Int>,
    negatives: Tensor<B, 2, Int>,
    neg_mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [n, d] = h.dims();
    let [_, k] = negatives.dims();
    let pos = out.clone().select(0, target); // [N, D]
    let pos_logit = (h.clone() * pos).sum_dim(1); // [N, 1]
    let neg = out.select(0, negatives.reshape([n * k])).reshape([n, k, d]);
    let neg_logit = (h.unsqueeze_dim::<3>(1) * neg).sum_dim(2).reshape([n, k]); // [N, K]
    let pos_term = log_sigmoid(pos_logit).sum();
    let neg_term = (log_sigmoid(neg_logit.neg()) * neg_mask).sum();
    (pos_term + neg_term).neg()
}

/// Hierarchical-softmax loss, summed over each word's Huffman path: label = 1 − code.
///
/// # Shapes
/// h `[N, D]`, points `[N, L]`, codes `[N, L]`, mask `[N, L]` → `[1]`
fn hs_loss<B: Backend>(
    h: Tensor<B, 2>,
    nodes: Tensor<B, 2>,
    points: Tensor<B, 2, Int>,
    codes: Tensor<B, 2>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [n, d] = h.dims();
    let [_, l] = points.dims();
    let w = nodes.select(0, points.reshape([n * l])).reshape([n, l, d]);
    let logit = (h.unsqueeze_dim::<3>(1) * w).sum_dim(2).reshape([n, l]); // [N, L]
    let label = codes.neg().add_scalar(1.0);
    let ll = label.clone() * log_sigmoid(logit.clone())
        + label.neg().add_scalar(1.0) * log_sigmoid(logit.neg());
    (ll * mask).sum().neg()
}

impl<B: Backend> SkipGram<B> {
    /// The hidden vectors: the input rows.
    ///
    /// # Shapes
    /// input `[N]` → `[N, D]`
    pub fn hidden(&self, input: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.syn0.val().select(0, input)
    }

    /// Negative-sampling loss of predicting `target` from `input` (summed over the batch).
    ///
    /// # Shapes
    /// input `[N]`, target `[N]`, negatives `[N, K]`, neg_mask `[N, K]` (0 drops a negative) → `[1]`
    pub fn forward_ns(
        &self,
        input: Tensor<B, 1, Int>,
        target: Tensor<B, 1, Int>,
        negatives: Tensor<B, 2, Int>,
        neg_mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        ns_loss(
            self.hidden(input),
            self.syn1neg.val(),
            target,
            negatives,
            neg_mask,
        )
    }

    /// Hierarchical-softmax loss of the targets' Huffman paths (summed over the batch).
    ///
    /// # Shapes
    /// input `[N]`, points `[N, L]`, codes `[N, L]`, mask `[N, L]` → `[1]`
    pub fn forward_hs(
        &self,
        input: Tensor<B, 1, Int>,
        points: Tensor<B, 2, Int>,
        codes: Tensor<B, 2>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        hs_loss(self.hidden(input), self.syn1.val(), points, codes, mask)
    }
}

impl<B: Backend> Cbow<B> {
    /// The hidden vectors: the mean of the context rows, whose gradient reaches every context
    /// word undivided (the C tool's update).
    ///
    /// # Shapes
    /// context `[N, C]`, mask `[N, C]` (0 for padding) → `[N, D]`
    pub fn hidden(&self, context: Tensor<B, 2, Int>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, c] = context.dims();
        let rows = self.syn0.val().select(0, context.reshape([n * c]));
        let d = rows.dims()[1];
        let sum = (rows.reshape([n, c, d]) * mask.clone().unsqueeze_dim::<3>(2))
            .sum_dim(1)
            .reshape([n, d]);
        let count = mask.sum_dim(1).clamp_min(1.0); // [N, 1]
                                                    // Value: sum / count. Gradient: straight through `sum`, i.e. not divided by count.
        sum.clone().detach() / count + (sum.clone() - sum.detach())
    }

    /// Negative-sampling loss of predicting `target` from its context (summed over the batch).
    ///
    /// # Shapes
    /// context `[N, C]`, context_mask `[N, C]`, target `[N]`, negatives `[N, K]`, neg_mask `[N, K]` → `[1]`
    pub fn forward_ns(
        &self,
        context: Tensor<B, 2, Int>,
        context_mask: Tensor<B, 2>,
        target: Tensor<B, 1, Int>,
        negatives: Tensor<B, 2, Int>,
        neg_mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        ns_loss(
            self.hidden(context, context_mask),
            self.syn1neg.val(),
            target,
            negatives,
            neg_mask,
        )
    }

    /// Hierarchical-softmax loss of the targets' Huffman paths (summed over the batch).
    ///
    /// # Shapes
    /// context `[N, C]`, context_mask `[N, C]`, points `[N, L]`, codes `[N, L]`, mask `[N, L]` → `[1]`
    pub fn forward_hs(
        &self,
        context: Tensor<B, 2, Int>,
        context_mask: Tensor<B, 2>,
        points: Tensor<B, 2, Int>,
        codes: Tensor<B, 2>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        hs_loss(
            self.hidden(context, context_mask),
            self.syn1.val(),
            points,
            codes,
            mask,
        )
    }
}

/// Host copies of a model's three tables, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tables {
    /// `[V, D]` input vectors.
    pub syn0: Vec<f32>,
    /// `[V, D]` negative-sampling output vectors.
    pub syn1neg: Vec<f32>,
    /// `[max(V − 1, 1), D]` inner nodes.
    pub syn1: Vec<f32>,
}

fn to_vec<B: Backend>(t: Tensor<B, 2>) -> W2vResult<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Word2VecError::Shape(format!("reading a table back: {e:?}")))
}

fn param<B: Backend>(
    data: &[f32],
    rows: usize,
    dim: usize,
    name: &str,
    device: &B::Device,
) -> W2vResult<Param<Tensor<B, 2>>> {
    if data.len() != rows * dim {
        return Err(Word2VecError::Shape(format!(
            "{name} has {} values, expected {rows} × {dim}",
            data.len()
        )));
    }
    Ok(Param::from_tensor(Tensor::from_data(
        TensorData::new(data.to_vec(), [rows, dim]),
        device,
    )))
}

macro_rules! tables_impl {
    ($ty:ident) => {
        impl<B: Backend> $ty<B> {
            /// A model holding the given tables (empty `syn1neg` / `syn1` become zeros).
            pub fn from_tables(
                t: &Tables,
                vocab_size: usize,
                dim: usize,
                device: &B::Device,
            ) -> W2vResult<Self> {
                let v = vocab_size.max(1);
                let h = v.saturating_sub(1).max(1);
                let zeros = |n: usize, x: &Vec<f32>| {
                    if x.is_empty() {
                        vec![0.0; n * dim]
                    } else {
                        x.clone()
                    }
                };
                Ok(Self {
                    syn0: param(&t.syn0, v, dim, "syn0", device)?,
                    syn1neg: param(&zeros(v, &t.syn1neg), v, dim, "syn1neg", device)?,
                    syn1: param(&zeros(h, &t.syn1), h, dim, "syn1", device)?,
                })
            }

            /// A model holding what the CPU trainer learned.
            pub fn from_trained(t: &Trained, device: &B::Device) -> W2vResult<Self> {
                let tables = Tables {
                    syn0: t.syn0.clone(),
                    syn1neg: t.syn1neg.clone(),
                    syn1: t.syn1.clone(),
                };
                Self::from_tables(&tables, t.vocab.len(), t.config.dim, device)
            }

            /// Copies the three tables to the host.
            pub fn tables(&self) -> W2vResult<Tables> {
                Ok(Tables {
                    syn0: to_vec(self.syn0.val())?,
                    syn1neg: to_vec(self.syn1neg.val())?,
                    syn1: to_vec(self.syn1.val())?,
                })
            }
        }

        impl<B: AutodiffBackend> $ty<B> {
            /// One plain SGD step on `loss`: every table −= lr · gradient.
            pub fn sgd_step(self, loss: Tensor<B, 1>, lr: f64) -> Self {
                let grads = loss.backward();
                let step = |p: Param<Tensor<B, 2>>| {
                    let g = p.val().grad(&grads);
                    p.map(|t| match g {
                        Some(g) => Tensor::from_inner(t.inner() - g.mul_scalar(lr)).require_grad(),
                        None => t,
                    })
                };
                Self {
                    syn0: step(self.syn0),
                    syn1neg: step(self.syn1neg),
                    syn1: step(self.syn1),
                }
            }
        }
    };
}

tables_impl!(SkipGram);
tables_impl!(Cbow);

// ---------------------------------------------------------------- large-batch training on any backend

/// Trains a model with large-batch SGD through autodiff on backend `B` (the GPU path): the same
/// sampling as the CPU trainer (sub-sampling, shrunk windows, unigram^0.75 negatives, linear
/// learning-rate decay), `batch` pairs per step, negative sampling or hierarchical softmax.
pub fn train_burn<B: AutodiffBackend>(
    text: &str,
    config: &TrainConfig,
    batch: usize,
    device: &B::Device,
    progress: &mut dyn FnMut(&Progress),
) -> W2vResult<Trained> {
    if batch == 0 {
        return Err(Word2VecError::InvalidArgument(
            "batch must be positive".into(),
        ));
    }
    let vocab = Vocab::build(text, config.min_count)?;
    let corpus = Corpus::encode(text, &vocab, config.max_sentence_len);
    let (v, dim) = (vocab.len(), config.dim);
    B::seed(device, config.seed);
    let cfg = Word2VecConfig::new(v, dim);
    let huffman = config.hs.then(|| Huffman::new(vocab.counts()));
    let mut sampler = crate::train::Sampler::new(&vocab, config);
    let words_total = corpus.ids.len() as u64 * config.epochs as u64;
    let start = std::time::Instant::now();
    let mut done = 0u64;
    let mut last_loss = 0.0;
    let mut sg = (config.arch == Architecture::SkipGram).then(|| cfg.init_skipgram::<B>(device));
    let mut cb = (config.arch == Architecture::Cbow).then(|| cfg.init_cbow::<B>(device));
    for epoch in 0..config.epochs {
        let mut pending: Vec<crate::train::Pair> = Vec::new();
        let sentences: Vec<&[u32]> = corpus.sentences().collect();
        for (si, sent) in sentences.iter().enumerate() {
            sampler.pairs(sent, &mut pending);
            done += sent.len() as u64;
            let last = si + 1 == sentences.len();
            while pending.len() >= batch || (last && !pending.is_empty()) {
                let take = pending.len().min(batch);
                let chunk: Vec<_> = pending.drain(..take).collect();
                let alpha = (config.alpha as f64
                    - (config.alpha - config.min_alpha) as f64 * done as f64
                        / words_total.max(1) as f64)
                    .max(config.min_alpha as f64);
                let hb = sampler.batch(&chunk, config.arch);
                let (loss_val, preds);
                if let Some(m) = sg.take() {
                    let loss = batch_loss_sg(&m, &hb, huffman.as_ref(), config.negative, device);
                    loss_val = scalar(&loss);
                    preds = hb.n;
                    sg = Some(m.sgd_step(loss, alpha));
                } else if let Some(m) = cb.take() {
                    let loss = batch_loss_cbow(&m, &hb, huffman.as_ref(), config.negative, device);
                    loss_val = scalar(&loss);
                    preds = hb.n;
                    cb = Some(m.sgd_step(loss, alpha));
                } else {
                    unreachable!("one of the two models exists");
                }
                last_loss = loss_val / preds.max(1) as f64;
                progress(&Progress {
                    epoch: epoch + 1,
                    epochs: config.epochs,
                    words_done: done,
                    words_total,
                    alpha: alpha as f32,
                    loss: last_loss,
                    words_per_sec: done as f64 / start.elapsed().as_secs_f64().max(1e-9),
                });
            }
        }
    }
    let tables = match (sg, cb) {
        (Some(m), _) => m.tables()?,
        (_, Some(m)) => m.tables()?,
        _ => unreachable!("one of the two models exists"),
    };
    Ok(Trained {
        vocab,
        config: config.clone(),
        syn0: tables.syn0,
        syn1neg: if config.negative > 0 {
            tables.syn1neg
        } else {
            Vec::new()
        },
        syn1: if config.hs { tables.syn1 } else { Vec::new() },
        words_per_sec: words_total as f64 / start.elapsed().as_secs_f64().max(1e-9),
        final_loss: last_loss,
    })
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f64 {
    t.clone()
        .into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .ok()
        .and_then(|v| v.first().copied())
        .unwrap_or(f64::NAN)
}

struct DeviceBatch<B: Backend> {
    inputs: Tensor<B, 2, Int>,
    input_mask: Tensor<B, 2>,
    target: Tensor<B, 1, Int>,
    negatives: Tensor<B, 2, Int>,
    neg_mask: Tensor<B, 2>,
}

fn upload<B: Backend>(hb: &HostBatch, device: &B::Device) -> DeviceBatch<B> {
    let k = hb.negatives.len().checked_div(hb.n).unwrap_or(0);
    DeviceBatch {
        inputs: Tensor::from_data(TensorData::new(hb.inputs.clone(), [hb.n, hb.c]), device),
        input_mask: Tensor::from_data(TensorData::new(hb.input_mask.clone(), [hb.n, hb.c]), device),
        target: Tensor::from_data(TensorData::new(hb.target.clone(), [hb.n]), device),
        negatives: Tensor::from_data(TensorData::new(hb.negatives.clone(), [hb.n, k]), device),
        neg_mask: Tensor::from_data(TensorData::new(hb.neg_mask.clone(), [hb.n, k]), device),
    }
}

/// The Huffman paths of the targets, padded to the longest: (points, codes, mask).
fn paths<B: Backend>(
    hf: &Huffman,
    target: &[i32],
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>, Tensor<B, 2>) {
    let l = target
        .iter()
        .map(|&t| hf.codes(t as usize).len())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = target.len();
    let (mut p, mut c, mut m) = (vec![0i32; n * l], vec![0f32; n * l], vec![0f32; n * l]);
    for (r, &t) in target.iter().enumerate() {
        for (j, (&pt, &cd)) in hf
            .points(t as usize)
            .iter()
            .zip(hf.codes(t as usize))
            .enumerate()
        {
            p[r * l + j] = pt as i32;
            c[r * l + j] = cd as f32;
            m[r * l + j] = 1.0;
        }
    }
    (
        Tensor::from_data(TensorData::new(p, [n, l]), device),
        Tensor::from_data(TensorData::new(c, [n, l]), device),
        Tensor::from_data(TensorData::new(m, [n, l]), device),
    )
}

/// The summed loss of a skip-gram batch (negative sampling and/or hierarchical softmax).
pub fn batch_loss_sg<B: Backend>(
    m: &SkipGram<B>,
    hb: &HostBatch,
    hf: Option<&Huffman>,
    negative: usize,
    device: &B::Device,
) -> Tensor<B, 1> {
    let db = upload::<B>(hb, device);
    let input = db.inputs.reshape([hb.n]);
    let mut loss = Tensor::zeros([1], device);
    if negative > 0 {
        loss = loss + m.forward_ns(input.clone(), db.target, db.negatives, db.neg_mask);
    }
    if let Some(hf) = hf {
        let (p, c, mask) = paths::<B>(hf, &hb.target, device);
        loss = loss + m.forward_hs(input, p, c, mask);
    }
    loss
}

/// The summed loss of a CBOW batch (negative sampling and/or hierarchical softmax).
pub fn batch_loss_cbow<B: Backend>(
    m: &Cbow<B>,
    hb: &HostBatch,
    hf: Option<&Huffman>,
    negative: usize,
    device: &B::Device,
) -> Tensor<B, 1> {
    let db = upload::<B>(hb, device);
    let mut loss = Tensor::zeros([1], device);
    if negative > 0 {
        loss = loss
            + m.forward_ns(
                db.inputs.clone(),
                db.input_mask.clone(),
                db.target,
                db.negatives,
                db.neg_mask,
            );
    }
    if let Some(hf) = hf {
        let (p, c, mask) = paths::<B>(hf, &hb.target, device);
        loss = loss + m.forward_hs(db.inputs, db.input_mask, p, c, mask);
    }
    loss
}
