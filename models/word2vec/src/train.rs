//! The fast CPU trainer, as in Mikolov's C tool: sub-sampling of frequent words, a window shrunk
//! at random per word, negatives drawn from unigram^0.75, hierarchical softmax over a Huffman
//! tree, linear learning-rate decay over all epochs, Hogwild threads.
//!
//! It fills the weight layout of the Burn modules ([`crate::SkipGram`], [`crate::Cbow`]):
//! `syn0` (input vectors, `[V, D]`), `syn1neg` (output vectors of negative sampling, `[V, D]`) and
//! `syn1` (inner nodes of hierarchical softmax, `[V − 1, D]`). One pair's update is exactly one SGD
//! step of the modules' summed loss (CBOW: the context's gradient is not divided by its size, as in
//! the C tool); a test checks both give the same update within 1e-6.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{io_err, Result, Word2VecError};
use crate::simd::{self, Kernel, Portable};
use crate::vectors::KeyedVectors;
use crate::vocab::{Corpus, Huffman, Vocab};

/// Which word predicts which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Each context word predicts the centre word.
    SkipGram,
    /// The mean of the context predicts the centre word.
    Cbow,
}

/// The output layer's loss (both may be on, as in the C tool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Negative sampling with this many negatives.
    NegativeSampling(usize),
    /// Hierarchical softmax.
    HierarchicalSoftmax,
}

/// Training settings; the defaults are gensim's.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Skip-gram or CBOW.
    pub arch: Architecture,
    /// Vector dimension.
    pub dim: usize,
    /// Maximum distance between centre and context word.
    pub window: usize,
    /// Negatives per prediction (0: no negative sampling).
    pub negative: usize,
    /// Use hierarchical softmax.
    pub hs: bool,
    /// Drop words seen fewer times.
    pub min_count: u64,
    /// Sub-sampling threshold for frequent words (0: off).
    pub sample: f64,
    /// Passes over the corpus.
    pub epochs: usize,
    /// Starting learning rate.
    pub alpha: f32,
    /// Final learning rate.
    pub min_alpha: f32,
    /// Worker threads (1: deterministic).
    pub threads: usize,
    /// Seed of all random draws.
    pub seed: u64,
    /// Sentences longer than this are split.
    pub max_sentence_len: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            arch: Architecture::Cbow,
            dim: 100,
            window: 5,
            negative: 5,
            hs: false,
            min_count: 5,
            sample: 1e-3,
            epochs: 5,
            alpha: 0.025,
            min_alpha: 0.0001,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 1,
            max_sentence_len: 10_000,
        }
    }
}

impl TrainConfig {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Word2VecError::InvalidArgument(m.to_string()));
        if self.dim == 0 {
            return bad("dim must be positive");
        }
        if self.window == 0 {
            return bad("window must be positive");
        }
        if self.negative == 0 && !self.hs {
            return bad("need negative > 0 or hierarchical softmax");
        }
        if self.epochs == 0 {
            return bad("epochs must be positive");
        }
        if self.threads == 0 {
            return bad("threads must be positive");
        }
        // Upper bounds: the tables are vocabulary × dim floats, each word costs
        // window × (negative + 1) dot products, so an absurd value is memory or time
        // without end, never a better model.
        for (name, value, max) in [
            ("dim", self.dim, MAX_DIM),
            ("window", self.window, MAX_WINDOW),
            ("negative", self.negative, MAX_NEGATIVE),
            ("epochs", self.epochs, MAX_EPOCHS),
            ("threads", self.threads, MAX_THREADS),
        ] {
            if value > max {
                return Err(Word2VecError::InvalidArgument(format!(
                    "{name} is {value}, above the largest accepted ({max})"
                )));
            }
        }
        let ok = |x: f64, strict: bool| x.is_finite() && (x > 0.0 || (!strict && x == 0.0));
        if !ok(self.alpha as f64, true)
            || !ok(self.min_alpha as f64, false)
            || !ok(self.sample, false)
        {
            return bad("alpha must be > 0, min_alpha and sample >= 0");
        }
        Ok(())
    }
}

/// The largest vector size trained (published word2vec / GloVe vectors use at most 1000).
pub const MAX_DIM: usize = 1 << 14;
/// The most floats in one of the two training tables (vocabulary × dim: 8 GiB of f32).
pub const MAX_TABLE_FLOATS: usize = 1 << 31;
/// The largest context window.
pub const MAX_WINDOW: usize = 1000;
/// The most negative samples per example (word2vec uses 5–20).
pub const MAX_NEGATIVE: usize = 1000;
/// The most passes over the corpus.
pub const MAX_EPOCHS: usize = 100_000;
/// The most worker threads.
pub const MAX_THREADS: usize = 1024;

/// A progress report, given to the caller's callback from the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Current epoch, from 1.
    pub epoch: usize,
    /// Number of epochs.
    pub epochs: usize,
    /// Corpus words processed so far, all epochs.
    pub words_done: u64,
    /// Corpus words to process, all epochs.
    pub words_total: u64,
    /// Current learning rate.
    pub alpha: f32,
    /// Mean loss per prediction (one positive or one tree node) since the last report.
    pub loss: f64,
    /// Corpus words per second since the start.
    pub words_per_sec: f64,
}

/// Trained weights in the modules' layout, with the vocabulary.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The vocabulary; row i of every table is word i.
    pub vocab: Vocab,
    /// The settings used.
    pub config: TrainConfig,
    /// Input vectors `[V, D]` (the word vectors users keep).
    pub syn0: Vec<f32>,
    /// Output vectors of negative sampling `[V, D]` (empty without it).
    pub syn1neg: Vec<f32>,
    /// Inner-node vectors of hierarchical softmax `[V − 1, D]` (empty without it).
    pub syn1: Vec<f32>,
    /// Corpus words per second over the whole run.
    pub words_per_sec: f64,
    /// Mean loss per prediction over the last epoch.
    pub final_loss: f64,
}

impl Trained {
    /// The input vectors as queryable word vectors.
    pub fn keyed_vectors(&self) -> Result<KeyedVectors> {
        KeyedVectors::new(
            self.vocab.words().to_vec(),
            self.config.dim,
            self.syn0.clone(),
        )
    }
}

// ---------------------------------------------------------------- sigmoid and random numbers

const MAX_EXP: f32 = 6.0;
const EXP_TABLE_SIZE: usize = 1000;

/// σ and log σ on [−6, 6] in 1000 steps, as the C tool tabulates them.
pub(crate) struct SigmoidTable {
    sig: Vec<f32>,
    log_sig: Vec<f32>,
}

impl SigmoidTable {
    fn new() -> Self {
        let xs =
            (0..=EXP_TABLE_SIZE).map(|i| (i as f32 / EXP_TABLE_SIZE as f32 * 2.0 - 1.0) * MAX_EXP);
        let sig: Vec<f32> = xs.map(|x| 1.0 / (1.0 + (-x).exp())).collect();
        let log_sig = sig.iter().map(|s| s.ln()).collect();
        Self { sig, log_sig }
    }
    #[inline(always)]
    fn idx(x: f32) -> usize {
        ((x + MAX_EXP) * (EXP_TABLE_SIZE as f32 / MAX_EXP / 2.0)) as usize
    }
}

/// How one prediction turns its logit into a gradient factor.
pub(crate) trait Sigmoid {
    /// Exact sigmoids never skip saturated predictions.
    const EXACT: bool;
    /// (label − σ(x)) and −log σ(±x) for the label, saturated outside ±6.
    fn ns(&self, x: f32, label: f32) -> (f32, f32);
    /// For hierarchical softmax: None outside (−6, 6), which the C tool skips.
    fn hs(&self, x: f32, label: f32) -> Option<(f32, f32)>;
}

impl Sigmoid for SigmoidTable {
    const EXACT: bool = false;
    #[inline(always)]
    fn ns(&self, x: f32, label: f32) -> (f32, f32) {
        let c = x.clamp(-MAX_EXP, MAX_EXP);
        let i = Self::idx(c).min(EXP_TABLE_SIZE);
        let g = if x > MAX_EXP {
            label - 1.0
        } else if x < -MAX_EXP {
            label
        } else {
            label - self.sig[i]
        };
        let li = if label > 0.5 { i } else { EXP_TABLE_SIZE - i };
        (g, -self.log_sig[li])
    }
    #[inline(always)]
    fn hs(&self, x: f32, label: f32) -> Option<(f32, f32)> {
        if x <= -MAX_EXP || x >= MAX_EXP {
            return None;
        }
        let i = Self::idx(x);
        let li = if label > 0.5 { i } else { EXP_TABLE_SIZE - i };
        Some((label - self.sig[i], -self.log_sig[li]))
    }
}

/// The exact logistic function (for the reference SGD step).
pub(crate) struct ExactSigmoid;

impl Sigmoid for ExactSigmoid {
    const EXACT: bool = true;
    fn ns(&self, x: f32, label: f32) -> (f32, f32) {
        let s = 1.0 / (1.0 + (-x).exp());
        let p = if label > 0.5 { s } else { 1.0 - s };
        (label - s, -p.ln())
    }
    fn hs(&self, x: f32, label: f32) -> Option<(f32, f32)> {
        Some(self.ns(x, label))
    }
}

/// SplitMix64: a counter passed through a 64-bit mixer. The C tool's linear congruential
/// generator is cheaper, but its consecutive outputs are correlated, and the alias draw below
/// takes its bucket and its coin from two consecutive outputs.
#[derive(Clone, Copy)]
struct Rng(u64);

impl Rng {
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A uniform integer below n.
    #[inline(always)]
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
    /// 24 random bits.
    #[inline(always)]
    fn bits24(&mut self) -> u32 {
        (self.next() >> 40) as u32
    }
}

/// Walker's alias table for drawing negatives from unigram^0.75 in O(1).
struct Alias {
    threshold: Vec<u32>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(counts: &[u64], power: f64) -> Self {
        let n = counts.len();
        let w: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(power)).collect();
        let total: f64 = w.iter().sum();
        let mut p: Vec<f64> = w.iter().map(|x| x / total * n as f64).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| p[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            p[l] -= 1.0 - p[s];
            if p[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        for &i in large.iter().chain(&small) {
            p[i] = 1.0;
        }
        let threshold = p
            .iter()
            .map(|x| ((x * (1u64 << 24) as f64).round() as u64).min(1 << 24) as u32)
            .collect();
        Self { threshold, alias }
    }
    #[inline(always)]
    fn draw(&self, rng: &mut Rng) -> usize {
        let i = rng.below(self.threshold.len());
        if rng.bits24() < self.threshold[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

// ---------------------------------------------------------------- the per-pair updates

/// Shared weights, written by all threads at once (Hogwild, as the C tool and gensim do).
#[derive(Clone, Copy)]
struct Shared {
    syn0: *mut f32,
    syn1neg: *mut f32,
    syn1: *mut f32,
    dim: usize,
}

// SAFETY: Hogwild — threads update rows without locks; races only lose or blend a few updates of
// plain f32 values, which SGD tolerates; no pointer is freed while the workers run.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, base: *mut f32, i: usize) -> &mut [f32] {
        // SAFETY: callers pass a row index inside the table `base` points to.
        unsafe { std::slice::from_raw_parts_mut(base.add(i * self.dim), self.dim) }
    }
}

struct Tables<'a> {
    neg: Option<&'a Alias>,
    negative: usize,
    huffman: Option<&'a Huffman>,
}

/// One prediction of `target` from hidden vector `h`: updates the output tables, accumulates the
/// gradient of `h` into `grad`, returns (loss, predictions).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn predict<K: Kernel, S: Sigmoid>(
    w: &Shared,
    t: &Tables,
    sig: &S,
    rng: &mut Rng,
    h: &[f32],
    target: usize,
    alpha: f32,
    grad: &mut [f32],
) -> (f32, u32) {
    let mut loss = 0.0;
    let mut n = 0;
    if let Some(hf) = t.huffman {
        for (&p, &code) in hf.points(target).iter().zip(hf.codes(target)) {
            // SAFETY: inner nodes are < V − 1 rows of syn1.
            let node = unsafe { w.row(w.syn1, p as usize) };
            let x = K::dot(h, node);
            if let Some((g, l)) = sig.hs(x, 1.0 - code as f32) {
                let g = g * alpha;
                K::axpy(g, node, grad);
                K::axpy(g, h, node);
                loss += l;
                n += 1;
            }
        }
    }
    if let Some(table) = t.neg {
        for d in 0..=t.negative {
            let (word, label) = if d == 0 {
                (target, 1.0)
            } else {
                let x = table.draw(rng);
                if x == target {
                    continue;
                }
                (x, 0.0)
            };
            // SAFETY: word ids are < V rows of syn1neg.
            let out = unsafe { w.row(w.syn1neg, word) };
            let x = K::dot(h, out);
            if !S::EXACT && (x <= -MAX_EXP || x >= MAX_EXP) {
                continue;
            }
            let (g, l) = sig.ns(x, label);
            let g = g * alpha;
            K::axpy(g, out, grad);
            K::axpy(g, h, out);
            loss += l;
            n += (d == 0) as u32;
        }
    }
    (loss, n)
}

struct Worker<'a> {
    w: Shared,
    t: Tables<'a>,
    keep: &'a [u32],
    window: usize,
    arch: Architecture,
    sig: &'a SigmoidTable,
}

impl Worker<'_> {
    /// Trains on one sentence; returns (loss, predictions).
    #[inline(always)]
    fn sentence<K: Kernel>(
        &self,
        sent: &[u32],
        rng: &mut Rng,
        alpha: f32,
        buf: &mut Vec<u32>,
        neu1: &mut [f32],
        neu1e: &mut [f32],
    ) -> (f64, u64) {
        buf.clear();
        for &id in sent {
            if self.keep[id as usize] >= (1 << 24) || rng.bits24() < self.keep[id as usize] {
                buf.push(id);
            }
        }
        let (mut loss, mut n) = (0.0f64, 0u64);
        let len = buf.len();
        let win = self.window;
        for i in 0..len {
            let word = buf[i] as usize;
            let b = rng.below(win);
            let lo = (i + b).saturating_sub(win);
            let hi = (i + win - b + 1).min(len);
            // SAFETY: ids index rows inside the tables.
            unsafe {
                match self.arch {
                    Architecture::SkipGram => {
                        for c in (lo..hi).filter(|&c| c != i) {
                            let l1 = self.w.row(self.w.syn0, buf[c] as usize);
                            neu1e.fill(0.0);
                            let (l, k) = predict::<K, _>(
                                &self.w, &self.t, self.sig, rng, l1, word, alpha, neu1e,
                            );
                            K::axpy(1.0, neu1e, l1);
                            loss += l as f64;
                            n += k as u64;
                        }
                    }
                    Architecture::Cbow => {
                        neu1.fill(0.0);
                        let mut cw = 0;
                        for c in (lo..hi).filter(|&c| c != i) {
                            K::axpy(1.0, self.w.row(self.w.syn0, buf[c] as usize), neu1);
                            cw += 1;
                        }
                        if cw == 0 {
                            continue;
                        }
                        let inv = 1.0 / cw as f32;
                        neu1.iter_mut().for_each(|x| *x *= inv);
                        neu1e.fill(0.0);
                        let (l, k) = predict::<K, _>(
                            &self.w, &self.t, self.sig, rng, neu1, word, alpha, neu1e,
                        );
                        for c in (lo..hi).filter(|&c| c != i) {
                            K::axpy(1.0, neu1e, self.w.row(self.w.syn0, buf[c] as usize));
                        }
                        loss += l as f64;
                        n += k as u64;
                    }
                }
            }
        }
        (loss, n)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn sentence_avx2(
    wk: &Worker,
    sent: &[u32],
    rng: &mut Rng,
    alpha: f32,
    buf: &mut Vec<u32>,
    neu1: &mut [f32],
    neu1e: &mut [f32],
) -> (f64, u64) {
    wk.sentence::<simd::Avx2>(sent, rng, alpha, buf, neu1, neu1e)
}

// ---------------------------------------------------------------- the driver

/// Trains on a text file (one sentence per line, words separated by whitespace).
pub fn train_file(
    path: impl AsRef<Path>,
    config: &TrainConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Trained> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    train(&text, config, progress)
}

/// Trains on a text (one sentence per line); `progress` is called from this thread about ten
/// times a second and once at the end of every epoch.
pub fn train(
    text: &str,
    config: &TrainConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Trained> {
    config.check()?;
    let vocab = Vocab::build(text, config.min_count)?;
    let corpus = Corpus::encode(text, &vocab, config.max_sentence_len);
    train_corpus(vocab, &corpus, config, progress)
}

/// Trains on an already encoded corpus.
pub fn train_corpus(
    vocab: Vocab,
    corpus: &Corpus,
    config: &TrainConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Trained> {
    config.check()?;
    let (v, dim) = (vocab.len(), config.dim);
    if v == 0 {
        return Err(Word2VecError::InvalidArgument("empty vocabulary".into()));
    }
    if v.saturating_mul(dim) > MAX_TABLE_FLOATS {
        return Err(Word2VecError::InvalidArgument(format!(
            "{v} words × dim {dim} is {} floats per table, above the {MAX_TABLE_FLOATS} trained (raise --min-count or lower --dim)",
            v.saturating_mul(dim)
        )));
    }
    let mut rng = Rng(config.seed);
    let mut syn0: Vec<f32> = (0..v * dim)
        .map(|_| ((rng.next() >> 16 & 0xffff) as f32 / 65536.0 - 0.5) / dim as f32)
        .collect();
    let mut syn1neg = if config.negative > 0 {
        vec![0.0f32; v * dim]
    } else {
        Vec::new()
    };
    let mut syn1 = if config.hs {
        vec![0.0f32; v.saturating_sub(1).max(1) * dim]
    } else {
        Vec::new()
    };
    let alias = (config.negative > 0).then(|| Alias::new(vocab.counts(), 0.75));
    let huffman = config.hs.then(|| Huffman::new(vocab.counts()));
    let keep = keep_thresholds(&vocab, config.sample);
    let sig = SigmoidTable::new();
    let shared = Shared {
        syn0: syn0.as_mut_ptr(),
        syn1neg: syn1neg.as_mut_ptr(),
        syn1: syn1.as_mut_ptr(),
        dim,
    };
    let worker = Worker {
        w: shared,
        t: Tables {
            neg: alias.as_ref(),
            negative: config.negative,
            huffman: huffman.as_ref(),
        },
        keep: &keep,
        window: config.window,
        arch: config.arch,
        sig: &sig,
    };
    let use_avx2 = simd::has_avx2();

    let corpus_words = corpus.ids.len() as u64;
    let words_total = corpus_words * config.epochs as u64;
    let sentences: Vec<&[u32]> = corpus.sentences().collect();
    let threads = config.threads.min(sentences.len().max(1));
    // Contiguous sentence ranges of about equal word counts.
    let mut bounds = vec![0usize];
    let mut acc = 0u64;
    for (i, s) in sentences.iter().enumerate() {
        acc += s.len() as u64;
        if acc * threads as u64 >= corpus_words * bounds.len() as u64 && bounds.len() < threads {
            bounds.push(i + 1);
        }
    }
    while bounds.len() <= threads {
        bounds.push(sentences.len());
    }
    *bounds.last_mut().unwrap_or(&mut 0) = sentences.len();

    let done = AtomicU64::new(0);
    let loss_bits = AtomicU64::new(0);
    let preds = AtomicU64::new(0);
    let start = Instant::now();
    let (a0, a1) = (config.alpha, config.min_alpha);
    let alpha_at = |d: u64| -> f32 {
        (a0 - (a0 - a1) * (d as f64 / words_total.max(1) as f64) as f32).max(a1)
    };
    let mut final_loss = 0.0;
    for epoch in 0..config.epochs {
        let finished = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (epoch_loss, epoch_preds) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..threads {
                let range = &sentences[bounds[t]..bounds[t + 1]];
                let (worker, done, finished) = (&worker, &done, &finished);
                let (loss_bits, preds, epoch_loss, epoch_preds) =
                    (&loss_bits, &preds, &epoch_loss, &epoch_preds);
                let seed = config.seed ^ ((epoch as u64) << 32) ^ ((t as u64) << 48) ^ 0x9e37_79b9;
                let alpha_at = &alpha_at;
                s.spawn(move || {
                    let mut rng = Rng(seed);
                    let mut buf = Vec::new();
                    let (mut neu1, mut neu1e) = (vec![0.0f32; dim], vec![0.0f32; dim]);
                    let (mut local_words, mut local_loss, mut local_n) = (0u64, 0.0f64, 0u64);
                    let (mut tot_loss, mut tot_n) = (0.0f64, 0u64);
                    let mut alpha = alpha_at(done.load(Ordering::Relaxed));
                    for sent in range {
                        #[cfg(target_arch = "x86_64")]
                        let (l, n) = if use_avx2 {
                            // SAFETY: AVX2 and FMA were detected.
                            unsafe {
                                sentence_avx2(
                                    worker, sent, &mut rng, alpha, &mut buf, &mut neu1, &mut neu1e,
                                )
                            }
                        } else {
                            worker.sentence::<Portable>(
                                sent, &mut rng, alpha, &mut buf, &mut neu1, &mut neu1e,
                            )
                        };
                        #[cfg(not(target_arch = "x86_64"))]
                        let (l, n) = worker.sentence::<Portable>(
                            sent, &mut rng, alpha, &mut buf, &mut neu1, &mut neu1e,
                        );
                        local_words += sent.len() as u64;
                        local_loss += l;
                        local_n += n;
                        if local_words >= 10_000 {
                            let d = done.fetch_add(local_words, Ordering::Relaxed) + local_words;
                            alpha = alpha_at(d);
                            add_f64(loss_bits, local_loss);
                            preds.fetch_add(local_n, Ordering::Relaxed);
                            tot_loss += local_loss;
                            tot_n += local_n;
                            (local_words, local_loss, local_n) = (0, 0.0, 0);
                        }
                    }
                    done.fetch_add(local_words, Ordering::Relaxed);
                    add_f64(loss_bits, local_loss);
                    preds.fetch_add(local_n, Ordering::Relaxed);
                    add_f64(epoch_loss, tot_loss + local_loss);
                    epoch_preds.fetch_add(tot_n + local_n, Ordering::Relaxed);
                    finished.fetch_add(1, Ordering::Release);
                });
            }
            let report = |progress: &mut dyn FnMut(&Progress)| {
                let d = done.load(Ordering::Relaxed);
                let l = f64::from_bits(loss_bits.swap(0, Ordering::Relaxed));
                let n = preds.swap(0, Ordering::Relaxed);
                progress(&Progress {
                    epoch: epoch + 1,
                    epochs: config.epochs,
                    words_done: d,
                    words_total,
                    alpha: alpha_at(d),
                    loss: if n > 0 { l / n as f64 } else { 0.0 },
                    words_per_sec: d as f64 / start.elapsed().as_secs_f64().max(1e-9),
                });
            };
            while finished.load(Ordering::Acquire) < threads && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if start.elapsed().as_millis() % 100 < 20 {
                    report(progress);
                }
            }
            report(progress);
            stop.store(true, Ordering::Relaxed);
        });
        let n = epoch_preds.load(Ordering::Relaxed);
        final_loss = if n > 0 {
            f64::from_bits(epoch_loss.load(Ordering::Relaxed)) / n as f64
        } else {
            0.0
        };
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok(Trained {
        vocab,
        config: config.clone(),
        syn0,
        syn1neg,
        syn1,
        words_per_sec: words_total as f64 / secs,
        final_loss,
    })
}

fn add_f64(a: &AtomicU64, x: f64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some((f64::from_bits(b) + x).to_bits())
    });
}

// ---------------------------------------------------------------- sampling for the Burn path

/// A training pair: the input ids (one for skip-gram, the context for CBOW) and the target.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Input rows of `syn0`.
    pub inputs: Vec<u32>,
    /// The word to predict.
    pub target: u32,
}

/// The CPU trainer's sampling (sub-sampling, shrunk windows, negatives) as a stream of pairs.
pub struct Sampler {
    keep: Vec<u32>,
    alias: Alias,
    rng: Rng,
    window: usize,
    negative: usize,
    arch: Architecture,
}

impl Sampler {
    /// A sampler for the vocabulary and settings.
    pub fn new(vocab: &Vocab, config: &TrainConfig) -> Self {
        Self {
            keep: keep_thresholds(vocab, config.sample),
            alias: Alias::new(vocab.counts(), 0.75),
            rng: Rng(config.seed),
            window: config.window.max(1),
            negative: config.negative,
            arch: config.arch,
        }
    }

    /// Appends one sentence's pairs.
    pub fn pairs(&mut self, sent: &[u32], out: &mut Vec<Pair>) {
        let buf: Vec<u32> = sent
            .iter()
            .copied()
            .filter(|&id| {
                self.keep[id as usize] >= (1 << 24) || self.rng.bits24() < self.keep[id as usize]
            })
            .collect();
        let (len, win) = (buf.len(), self.window);
        for i in 0..len {
            let b = self.rng.below(win);
            let lo = (i + b).saturating_sub(win);
            let hi = (i + win - b + 1).min(len);
            let ctx = (lo..hi).filter(|&c| c != i).map(|c| buf[c]);
            match self.arch {
                Architecture::SkipGram => out.extend(ctx.map(|c| Pair {
                    inputs: vec![c],
                    target: buf[i],
                })),
                Architecture::Cbow => {
                    let inputs: Vec<u32> = ctx.collect();
                    if !inputs.is_empty() {
                        out.push(Pair {
                            inputs,
                            target: buf[i],
                        });
                    }
                }
            }
        }
    }

    /// Pads pairs into a batch and draws their negatives.
    pub fn batch(&mut self, pairs: &[Pair], arch: Architecture) -> HostBatch {
        let c = match arch {
            Architecture::SkipGram => 1,
            Architecture::Cbow => pairs
                .iter()
                .map(|p| p.inputs.len())
                .max()
                .unwrap_or(1)
                .max(1),
        };
        let (n, k) = (pairs.len(), self.negative);
        let mut hb = HostBatch {
            n,
            c,
            inputs: vec![0; n * c],
            input_mask: vec![0.0; n * c],
            target: Vec::with_capacity(n),
            negatives: Vec::with_capacity(n * k),
            neg_mask: Vec::with_capacity(n * k),
        };
        for (r, p) in pairs.iter().enumerate() {
            for (j, &x) in p.inputs.iter().take(c).enumerate() {
                hb.inputs[r * c + j] = x as i32;
                hb.input_mask[r * c + j] = 1.0;
            }
            hb.target.push(p.target as i32);
            for _ in 0..k {
                let x = self.alias.draw(&mut self.rng);
                hb.negatives.push(x as i32);
                hb.neg_mask
                    .push(if x == p.target as usize { 0.0 } else { 1.0 });
            }
        }
        hb
    }
}

fn keep_thresholds(vocab: &Vocab, sample: f64) -> Vec<u32> {
    let total = vocab.total() as f64;
    vocab
        .counts()
        .iter()
        .map(|&c| {
            if sample <= 0.0 {
                return 1 << 24;
            }
            let t = sample * total;
            let p = ((c as f64 / t).sqrt() + 1.0) * t / c as f64;
            (p.min(1.0) * (1u64 << 24) as f64) as u32
        })
        .collect()
}

/// One batch of training pairs on the host, as the C tool samples them.
#[derive(Debug, Clone, Default)]
pub struct HostBatch {
    /// Rows N.
    pub n: usize,
    /// Context width C (1 for skip-gram).
    pub c: usize,
    /// `[N, C]` input ids (padding: 0).
    pub inputs: Vec<i32>,
    /// `[N, C]` 1 for real inputs, 0 for padding.
    pub input_mask: Vec<f32>,
    /// `[N]` targets.
    pub target: Vec<i32>,
    /// `[N, K]` negatives.
    pub negatives: Vec<i32>,
    /// `[N, K]` 0 where a negative equals its target.
    pub neg_mask: Vec<f32>,
}

// ---------------------------------------------------------------- one exact step (reference)

/// One training example for [`sgd_step`]: the ids of the hidden layer and the prediction.
#[derive(Debug, Clone)]
pub struct Example {
    /// Input rows of `syn0`: one for skip-gram, the context for CBOW (averaged).
    pub inputs: Vec<usize>,
    /// The word to predict.
    pub target: usize,
    /// Negative words (equal-to-target ones are skipped, as in the C tool).
    pub negatives: Vec<usize>,
}

/// Applies one example's update with the exact sigmoid, in the C tool's order; returns its loss.
/// With `huffman` it also does the hierarchical-softmax part over `syn1`.
pub fn sgd_step(
    syn0: &mut [f32],
    syn1neg: &mut [f32],
    syn1: &mut [f32],
    dim: usize,
    huffman: Option<&Huffman>,
    ex: &Example,
    alpha: f32,
) -> f32 {
    let w = Shared {
        syn0: syn0.as_mut_ptr(),
        syn1neg: syn1neg.as_mut_ptr(),
        syn1: syn1.as_mut_ptr(),
        dim,
    };
    let mut h = vec![0.0f32; dim];
    for &i in &ex.inputs {
        Portable::axpy(1.0, &syn0[i * dim..(i + 1) * dim], &mut h);
    }
    let inv = 1.0 / ex.inputs.len().max(1) as f32;
    h.iter_mut().for_each(|x| *x *= inv);
    let mut grad = vec![0.0f32; dim];
    let mut loss = 0.0;
    // SAFETY: ids come from the caller, who sized the tables.
    unsafe {
        if let Some(hf) = huffman {
            let t = Tables {
                neg: None,
                negative: 0,
                huffman: Some(hf),
            };
            loss += predict::<Portable, _>(
                &w,
                &t,
                &ExactSigmoid,
                &mut Rng(0),
                &h,
                ex.target,
                alpha,
                &mut grad,
            )
            .0;
        }
        for (d, &word) in std::iter::once(&ex.target).chain(&ex.negatives).enumerate() {
            if d > 0 && word == ex.target {
                continue;
            }
            let label = if d == 0 { 1.0 } else { 0.0 };
            let out = w.row(w.syn1neg, word);
            let (g, l) = ExactSigmoid.ns(Portable::dot(&h, out), label);
            Portable::axpy(g * alpha, out, &mut grad);
            Portable::axpy(g * alpha, &h, out);
            loss += l;
        }
    }
    for &i in &ex.inputs {
        Portable::axpy(1.0, &grad, &mut syn0[i * dim..(i + 1) * dim]);
    }
    loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_reproduces_unigram_power() {
        let counts = [100u64, 50, 10, 1];
        let a = Alias::new(&counts, 0.75);
        let mut rng = Rng(7);
        let mut hist = [0usize; 4];
        let n = 400_000;
        for _ in 0..n {
            hist[a.draw(&mut rng)] += 1;
        }
        let w: Vec<f64> = counts.iter().map(|&c| (c as f64).powf(0.75)).collect();
        let z: f64 = w.iter().sum();
        for i in 0..4 {
            let p = hist[i] as f64 / n as f64;
            assert!(
                (p - w[i] / z).abs() < 0.004,
                "word {i}: {p} vs {}",
                w[i] / z
            );
        }
    }

    #[test]
    fn table_sigmoid_is_close_to_exact() {
        let t = SigmoidTable::new();
        for k in -59..60 {
            let x = k as f32 / 10.0;
            let (g, l) = t.ns(x, 1.0);
            let (ge, le) = ExactSigmoid.ns(x, 1.0);
            assert!((g - ge).abs() < 0.01 && (l - le).abs() < 0.02, "{x}");
        }
    }
}
