//! Fine-tuning causal LMs with Burn's autodiff: LoRA adapters (PEFT's format) trained with
//! transformers' causal-LM loss, AdamW or SGD, warmup + linear / cosine decay, gradient
//! accumulation and global-norm clipping, on any backend compiled in.
//!
//! [`Trainer`] runs one optimizer step at a time over a model that implements [`Trainable`];
//! [`finetune`] is the whole job as `zoo finetune` runs it (data, adapters, evaluation,
//! checkpoints, resuming, the final adapter folder), reporting progress through a callback.

pub mod data;
pub mod full;
pub mod merge;
pub mod peft;
pub mod ptuning;
pub mod svg;
pub mod torch_save;

use std::collections::HashSet;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{
    adaptor::OptimizerAdaptor, AdamW, AdamWConfig, GradientsAccumulator, GradientsParams,
    Optimizer, Sgd, SgdConfig,
};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use serde_json::{json, Value};
use zoo_backends::BackendKind;

pub use data::{load_examples, DataFormat, Example, TextSide, IGNORE};
pub use peft::{LoraConfig, Trainable};

use crate::nn::attention::CacheFull;
use crate::nn::CausalLm;
use crate::resolve::{resolve_path, Family};

/// Why fine-tuning (or loading an adapter) failed.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// The model failed to open.
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// Adapter tensors missing, misshapen or unused.
    #[error(transparent)]
    Weights(#[from] crate::nn::WeightError),
    /// A sequence longer than the model's context.
    #[error(transparent)]
    Forward(#[from] CacheFull),
    /// The backend cannot be used.
    #[error(transparent)]
    Backend(#[from] zoo_backends::BackendError),
    /// A data file or one of its records is unusable (the message names the line).
    #[error("{0}")]
    Data(String),
    /// Settings that do not fit together.
    #[error("{0}")]
    Config(String),
    /// An adapter folder that cannot be read.
    #[error("{0}")]
    Adapter(String),
    /// A checkpoint that cannot be written or resumed.
    #[error("{0}")]
    Checkpoint(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

impl From<crate::glm::GlmError> for FinetuneError {
    fn from(e: crate::glm::GlmError) -> Self {
        FinetuneError::Model(crate::Error::from(e))
    }
}

impl FinetuneError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        FinetuneError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// torch.optim.AdamW (decoupled weight decay, bias-corrected moments, eps outside the root).
    AdamW,
    /// torch.optim.SGD without momentum (weight decay added to the gradient).
    Sgd,
}

/// How the learning rate changes after warmup (transformers' schedules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Constant after warmup.
    Constant,
    /// Linear decay to 0 at the last step.
    Linear,
    /// Half a cosine down to 0 at the last step.
    Cosine,
}

/// The settings of the optimizer loop.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay (AdamW: decoupled; SGD: L2 added to the gradient).
    pub weight_decay: f64,
    /// AdamW's β₁.
    pub beta1: f64,
    /// AdamW's β₂.
    pub beta2: f64,
    /// AdamW's ε.
    pub eps: f64,
    /// The decay after warmup.
    pub schedule: Schedule,
    /// Steps of linear warmup from 0.
    pub warmup_steps: usize,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Forward passes per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps in all.
    pub steps: usize,
    /// Seed of the shuffle, the adapters' initialisation and dropout.
    pub seed: u64,
    /// Shuffle the records every epoch (else file order, wrapping around).
    pub shuffle: bool,
    /// Clip the global gradient norm to this (torch's `clip_grad_norm_`).
    pub max_grad_norm: Option<f64>,
    /// The id right padding uses (its positions are never scored).
    pub pad_id: u32,
}

impl TrainConfig {
    /// The learning rate of step `step` (0-based), as transformers' schedules give it.
    pub fn lr_at(&self, step: usize) -> f64 {
        let (total, warmup) = (self.steps, self.warmup_steps);
        if step < warmup {
            return self.lr * step as f64 / warmup.max(1) as f64;
        }
        let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
        self.lr
            * match self.schedule {
                Schedule::Constant => 1.0,
                Schedule::Linear => (1.0 - progress).max(0.0),
                Schedule::Cosine => {
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
            }
    }

    /// Sequences per optimizer step.
    pub fn per_step(&self) -> usize {
        self.batch_size * self.grad_accum
    }

    fn check(&self) -> Result<(), FinetuneError> {
        let bad = |m: &str| Err(FinetuneError::Config(m.to_string()));
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1");
        }
        if self.grad_accum == 0 {
            return bad("--grad-accum must be at least 1");
        }
        if self.steps == 0 {
            return bad("no steps to run: give --steps or --epochs above 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("--weight-decay must be 0 or more");
        }
        if let Some(n) = self.max_grad_norm {
            if !(n.is_finite() && n > 0.0) {
                return bad("--max-grad-norm must be a positive number");
            }
        }
        Ok(())
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The step, 1-based.
    pub step: usize,
    /// The loss before the update (mean over the step's scored labels).
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens the step read (padding excluded).
    pub tokens: usize,
}

enum Optim<B: AutodiffBackend, M: AutodiffModule<B>> {
    AdamW(OptimizerAdaptor<AdamW, M, B>),
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
}

/// The optimizer loop over one model and one training set.
pub struct Trainer<B: AutodiffBackend, M: AutodiffModule<B> + Trainable<B>> {
    model: Option<M>,
    optim: Optim<B, M>,
    config: TrainConfig,
    examples: Vec<Example>,
    step: usize,
    order: (usize, Vec<usize>),
    device: B::Device,
}

/// A batch: ids and labels `[b, t]` row-major (right padded), each row's real length, and the
/// tokens it holds.
struct Batch {
    ids: Vec<i64>,
    labels: Vec<i64>,
    lengths: Vec<usize>,
    b: usize,
    t: usize,
    tokens: usize,
}

fn make_batch(examples: &[&Example], pad_id: u32) -> Batch {
    let b = examples.len();
    let t = examples
        .iter()
        .map(|e| e.input_ids.len())
        .max()
        .unwrap_or(0);
    let mut ids = Vec::with_capacity(b * t);
    let mut labels = Vec::with_capacity(b * t);
    for e in examples {
        ids.extend(e.input_ids.iter().map(|&i| i as i64));
        labels.extend(&e.labels);
        for _ in e.input_ids.len()..t {
            ids.push(pad_id as i64);
            labels.push(IGNORE);
        }
    }
    Batch {
        ids,
        labels,
        lengths: examples.iter().map(|e| e.input_ids.len()).collect(),
        b,
        t,
        tokens: examples.iter().map(|e| e.input_ids.len()).sum(),
    }
}

impl Batch {
    /// Labels the loss scores: all but each row's first `shift` (see [`lm_loss_sum`]).
    fn scored(&self, shift: usize) -> usize {
        (0..self.b)
            .map(|r| {
                self.labels[r * self.t + shift..(r + 1) * self.t]
                    .iter()
                    .filter(|&&l| l != IGNORE)
                    .count()
            })
            .sum()
    }

    /// The flat positions `row * t + i` whose logits score a label (the label at `i + shift`),
    /// and those labels: what [`Trainable::scored_logits`] computes and the loss scores.
    fn scored_rows(&self, shift: usize) -> (Vec<usize>, Vec<i64>) {
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for r in 0..self.b {
            for i in 0..self.t.saturating_sub(shift) {
                let l = self.labels[r * self.t + i + shift];
                if l != IGNORE {
                    rows.push(r * self.t + i);
                    targets.push(l);
                }
            }
        }
        (rows, targets)
    }

    /// The summed loss of the batch's scored labels: the logits of the scored positions only
    /// ([`Trainable::scored_logits`]), their cross-entropy summed.
    fn loss_sum<B: Backend, M: Trainable<B>>(
        &self,
        model: &M,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>, FinetuneError> {
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(self.ids.clone(), [self.b, self.t]),
            device,
        );
        let shift = model.label_shift();
        let (rows, targets) = self.scored_rows(shift);
        if rows.is_empty() {
            // Nothing scored (every label truncated away): a zero loss with zero gradients.
            let logits = model.padded_logits(ids, &self.lengths)?;
            return Ok(lm_loss_sum(logits, &self.labels, shift));
        }
        let logits = model.scored_logits(ids, &self.lengths, &rows)?;
        Ok(rows_loss_sum(logits, &targets))
    }
}

/// The summed cross-entropy of `logits` `[n, vocab]` against one target id per row.
pub fn rows_loss_sum<B: Backend>(logits: Tensor<B, 2>, targets: &[i64]) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let targets =
        Tensor::<B, 2, Int>::from_data(TensorData::new(targets.to_vec(), [n, 1]), &device);
    log_softmax(logits, 1).gather(1, targets).sum().neg()
}

/// The summed cross-entropy of every scored label after the shift by one (transformers'
/// causal-LM loss before its division by the number of scored labels).
///
/// # Shapes
/// - `logits`: `[b, t, vocab]`, `labels`: `b * t` row-major → `[1]`
pub fn causal_lm_loss_sum<B: Backend>(logits: Tensor<B, 3>, labels: &[i64]) -> Tensor<B, 1> {
    lm_loss_sum(logits, labels, 1)
}

/// The summed cross-entropy of every scored label, the logits at position `i` scoring the label
/// at `i + shift`: `shift` 1 is transformers' causal-LM loss, 0 BertForMaskedLM's (before the
/// division by the number of scored labels).
///
/// # Shapes
/// - `logits`: `[b, t, vocab]`, `labels`: `b * t` row-major → `[1]`
pub fn lm_loss_sum<B: Backend>(logits: Tensor<B, 3>, labels: &[i64], shift: usize) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let device = logits.device();
    let n = b * (t - shift);
    let mut targets = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for r in 0..b {
        for &l in &labels[r * t + shift..(r + 1) * t] {
            targets.push(if l == IGNORE { 0 } else { l });
            weights.push(if l == IGNORE { 0.0f32 } else { 1.0 });
        }
    }
    let logits = if shift == 0 {
        logits
    } else {
        logits.slice([0..b, 0..t - shift, 0..v])
    };
    let logp = log_softmax(logits.reshape([n, v]), 1);
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let weights = Tensor::<B, 1>::from_data(TensorData::new(weights, [n]), &device);
    (logp.gather(1, targets).reshape([n]) * weights).sum().neg()
}

/// Mean loss of `examples` (batches of `batch_size`; no gradients, no dropout): the causal-LM
/// loss, or the masked-LM loss for a model whose [`Trainable::label_shift`] is 0.
pub fn eval_loss<B: Backend, M: Trainable<B>>(
    model: &M,
    examples: &[Example],
    batch_size: usize,
    pad_id: u32,
    device: &B::Device,
) -> Result<f64, FinetuneError> {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = make_batch(&refs, pad_id);
        let s: f64 = batch.loss_sum(model, device)?.into_scalar().elem();
        sum += s;
        count += batch.scored(model.label_shift());
    }
    Ok(sum / count.max(1) as f64)
}

/// Sums the squared gradients of every parameter that has one.
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    seen: HashSet<ParamId>,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

/// Multiplies every gradient by `factor`.
struct GradScale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    seen: HashSet<ParamId>,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Counts the trainable (gradient-requiring) parameters.
struct CountTrainable {
    n: usize,
}

impl<B: Backend> ModuleVisitor<B> for CountTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            self.n += param.shape().num_elements();
        }
    }
}

/// Parameters of `model` that train.
pub fn trainable_parameters<B: Backend, M: Module<B>>(model: &M) -> usize {
    let mut count = CountTrainable { n: 0 };
    model.visit(&mut count);
    count.n
}

/// SplitMix64, for the shuffle.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The order of the records in epoch `epoch`: a seeded Fisher–Yates shuffle, or file order.
fn epoch_order(n: usize, epoch: usize, seed: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut rng = SplitMix(seed ^ (epoch as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
        for i in (1..n).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
    }
    order
}

impl<B, M> Trainer<B, M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Trainable<B>,
{
    /// A trainer at step 0; the model's trainable parameters are those that require gradients
    /// (for LoRA: the adapters on a frozen base).
    pub fn new(
        model: M,
        examples: Vec<Example>,
        config: TrainConfig,
        device: &B::Device,
    ) -> Result<Self, FinetuneError> {
        config.check()?;
        if examples.is_empty() {
            return Err(FinetuneError::Data("no training records".into()));
        }
        let context = model.context();
        if let Some((i, e)) = examples
            .iter()
            .enumerate()
            .find(|(_, e)| e.input_ids.len() > context)
        {
            return Err(FinetuneError::Data(format!(
                "record {} has {} tokens, more than the model's context of {context}: give --max-len",
                i + 1,
                e.input_ids.len()
            )));
        }
        let optim = match config.optimizer {
            OptimizerKind::AdamW => Optim::AdamW(
                AdamWConfig::new()
                    .with_beta_1(config.beta1 as f32)
                    .with_beta_2(config.beta2 as f32)
                    .with_epsilon(config.eps as f32)
                    .with_weight_decay(config.weight_decay as f32)
                    .init(),
            ),
            OptimizerKind::Sgd => Optim::Sgd(
                SgdConfig::new()
                    .with_weight_decay((config.weight_decay > 0.0).then(|| {
                        burn::optim::decay::WeightDecayConfig::new(config.weight_decay as f32)
                    }))
                    .init(),
            ),
        };
        let order = (
            0,
            epoch_order(examples.len(), 0, config.seed, config.shuffle),
        );
        Ok(Self {
            model: Some(model),
            optim,
            config,
            examples,
            step: 0,
            order,
            device: device.clone(),
        })
    }

    /// The model as it is now.
    pub fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the model is always present between steps")
    }

    /// The trained model.
    pub fn into_model(self) -> M {
        self.model
            .expect("the model is always present between steps")
    }

    /// Steps done so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    fn example_at(&mut self, position: usize) -> usize {
        let n = self.examples.len();
        let epoch = position / n;
        if self.order.0 != epoch {
            self.order = (
                epoch,
                epoch_order(n, epoch, self.config.seed, self.config.shuffle),
            );
        }
        self.order.1[position % n]
    }

    /// Runs the next optimizer step: `grad_accum` forward/backward passes of `batch_size`
    /// records, their gradients summed (each pass's loss divided by the step's scored labels,
    /// so the sum is the gradient of the step's mean loss), clipped, applied.
    pub fn step(&mut self) -> Result<StepStats, FinetuneError> {
        let per_step = self.config.per_step();
        let chosen: Vec<usize> = (0..per_step)
            .map(|i| self.example_at(self.step * per_step + i))
            .collect();
        let batches: Vec<Batch> = chosen
            .chunks(self.config.batch_size)
            .map(|c| {
                let refs: Vec<&Example> = c.iter().map(|&i| &self.examples[i]).collect();
                make_batch(&refs, self.config.pad_id)
            })
            .collect();
        let model = self.model.take().expect("model present");
        let shift = model.label_shift();
        let total: usize = batches.iter().map(|b| b.scored(shift)).sum();
        B::seed(
            &self.device,
            self.config.seed.wrapping_add(self.step as u64),
        );
        let mut accumulator = GradientsAccumulator::<M>::new();
        let mut loss = 0.0f64;
        let mut tokens = 0;
        for batch in &batches {
            let part = match batch.loss_sum(&model, &self.device) {
                Ok(l) => l.div_scalar(total as f64),
                Err(e) => {
                    self.model = Some(model);
                    return Err(e);
                }
            };
            let value: f64 = part.clone().into_scalar().elem();
            loss += value;
            tokens += batch.tokens;
            let grads = GradientsParams::from_grads(part.backward(), &model);
            accumulator.accumulate(&model, grads);
        }
        let mut grads = accumulator.grads();
        let mut norm = GradNorm::<B> {
            grads: &grads,
            seen: HashSet::new(),
            total: None,
        };
        model.visit(&mut norm);
        let grad_norm = match norm.total {
            Some(t) => {
                let s: f64 = t.into_scalar().elem();
                s.sqrt()
            }
            None => 0.0,
        };
        if let Some(max) = self.config.max_grad_norm {
            let factor = (max / (grad_norm + 1e-6)).min(1.0);
            model.visit(&mut GradScale::<B> {
                grads: &mut grads,
                factor,
                seen: HashSet::new(),
                backend: PhantomData,
            });
        }
        let lr = self.config.lr_at(self.step);
        let model = match &mut self.optim {
            Optim::AdamW(o) => o.step(lr, model, grads),
            Optim::Sgd(o) => o.step(lr, model, grads),
        };
        self.model = Some(model);
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss,
            lr,
            grad_norm,
            tokens,
        })
    }

    /// Writes the optimizer state to `path` (Burn's binary record).
    pub fn save_optimizer(&self, path: &Path) -> Result<(), FinetuneError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let err = |e: burn::record::RecorderError| {
            FinetuneError::Checkpoint(format!("{}: {e}", path.display()))
        };
        match &self.optim {
            Optim::AdamW(o) => {
                Recorder::<B>::record(&recorder, o.to_record(), path.to_path_buf()).map_err(err)
            }
            Optim::Sgd(o) => {
                Recorder::<B>::record(&recorder, o.to_record(), path.to_path_buf()).map_err(err)
            }
        }
    }

    /// Continues from a checkpoint: the optimizer state of `path` and `step` steps done.
    pub fn resume(&mut self, path: &Path, step: usize) -> Result<(), FinetuneError> {
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let err = |e: burn::record::RecorderError| {
            FinetuneError::Checkpoint(format!("{}: {e}", path.display()))
        };
        let optim = std::mem::replace(&mut self.optim, Optim::Sgd(SgdConfig::new().init()));
        self.optim = match optim {
            Optim::AdamW(o) => {
                let record = Recorder::<B>::load(&recorder, path.to_path_buf(), &self.device)
                    .map_err(err)?;
                Optim::AdamW(o.load_record(record))
            }
            Optim::Sgd(o) => {
                let record = Recorder::<B>::load(&recorder, path.to_path_buf(), &self.device)
                    .map_err(err)?;
                Optim::Sgd(o.load_record(record))
            }
        };
        self.step = step;
        Ok(())
    }
}

/// What `zoo finetune` asks for.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// The base model (a Hugging Face folder or a `.gguf` file).
    pub model: PathBuf,
    /// The training records.
    pub data: PathBuf,
    /// Records for the evaluation loss.
    pub eval_data: Option<PathBuf>,
    /// How the records are laid out.
    pub format: DataFormat,
    /// Truncate every record to this many tokens.
    pub max_len: Option<usize>,
    /// The adapters to add (ignored when `adapter` is given: its config rules).
    pub lora: LoraConfig,
    /// An adapter folder to continue training from.
    pub adapter: Option<PathBuf>,
    /// The optimizer loop (`steps` resolved from `epochs` when that is given).
    pub train: TrainConfig,
    /// Epochs instead of steps.
    pub epochs: Option<f64>,
    /// Evaluate before the first step (when not resuming), every this many steps and after the last.
    pub eval_every: Option<usize>,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: Option<usize>,
    /// The output folder.
    pub out: PathBuf,
    /// Overwrite the files of an existing output folder.
    pub force: bool,
    /// Continue from the last checkpoint in the output folder.
    pub resume: bool,
    /// What trains.
    pub method: Method,
}

/// What trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// LoRA adapters on a frozen base (GPT-2, LLaMA), written as a PEFT adapter folder.
    Lora,
    /// P-Tuning v2 (ChatGLM-6B): only the prefix encoder, written as ChatGLM's P-Tuning
    /// checkpoint folder (see [`ptuning`]). `pre_seq_len` creates a new prefix; `None`
    /// continues the prefix of the model or of `--adapter`.
    PtuningV2 {
        /// Prefix positions of a new prefix.
        pre_seq_len: Option<usize>,
    },
    /// Every parameter (GPT-2, LLaMA), written as a Hugging Face folder (see [`full`]).
    Full,
}

/// What happened, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// Training starts (or resumes at `start_step`).
    Start {
        /// Steps in all.
        total_steps: usize,
        /// Steps already done (resumed).
        start_step: usize,
        /// Training records.
        examples: usize,
        /// Trainable parameters.
        trainable: usize,
    },
    /// A step finished.
    Step(&'a StepStats),
    /// The evaluation loss after `step` steps.
    Eval {
        /// Steps done.
        step: usize,
        /// Mean loss over the evaluation records.
        loss: f64,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Steps done.
        step: usize,
        /// Its folder.
        dir: &'a Path,
    },
}

/// What a fine-tuning run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The loss of every step, before its update (resumed runs include the earlier steps).
    pub losses: Vec<f64>,
    /// `(step, loss)` of every evaluation.
    pub eval_losses: Vec<(usize, f64)>,
    /// The output folder.
    pub out: PathBuf,
    /// Tokens per second of the steps this run did.
    pub tokens_per_s: f64,
}

/// The latest `checkpoint-N` folder of `out`, with N.
fn latest_checkpoint(out: &Path) -> Option<(usize, PathBuf)> {
    std::fs::read_dir(out)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then(|| (n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

/// Fine-tunes the model of `options` on the backend `kind` under autodiff, writing the adapter
/// folder; `on_event` hears of every step, evaluation and checkpoint.
pub fn finetune(
    kind: BackendKind,
    options: &FinetuneOptions,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError> {
    zoo_backends::with_autodiff_backend!(kind, |B, device| {
        run_family::<B>(options, &device, on_event)
    })?
}

fn run_family<B: AutodiffBackend>(
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError> {
    let model = resolve_path(&options.model).map_err(crate::Error::from)?;
    // Training computes in f32: a GGUF's block-format matrices are dequantized once here.
    // Kept packed, the GPU-style product would unpack every matrix (the tied LM head included)
    // on every forward pass, which made LoRA on a Q4_1 SmolLM2 spend a fifth of its time
    // unpacking (see docs/finetune.md).
    let format = crate::nn::WeightFormat::dtype(crate::nn::QType::F32);
    match (options.method, model.family) {
        (Method::Lora, Family::Llama) => {
            let generator = crate::llama::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            run_generator(generator, options, device, false, on_event)
        }
        (Method::Lora, Family::Gpt2) => {
            let generator = crate::gpt2::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            run_generator(generator, options, device, true, on_event)
        }
        (Method::Lora, Family::Glm) => {
            use crate::glm::Glm;
            let generator = crate::glm::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            // One module type per generation: each trains under its own checkpoint's names.
            match &generator.model {
                Glm::V1(_) => {
                    let generator = generator.map_model(|m| match m {
                        Glm::V1(m) => m,
                        _ => unreachable!("matched as ChatGLM-6B above"),
                    });
                    run_generator(generator, options, device, false, on_event)
                }
                Glm::V2(_) => {
                    let generator = generator.map_model(|m| match m {
                        Glm::V2(m) => m,
                        _ => unreachable!("matched as ChatGLM2/3 above"),
                    });
                    run_generator(generator, options, device, false, on_event)
                }
                Glm::Hf(_) => {
                    let generator = generator.map_model(|m| match m {
                        Glm::Hf(m) => m,
                        _ => unreachable!("matched as GlmForCausalLM above"),
                    });
                    run_generator(generator, options, device, false, on_event)
                }
            }
        }
        (Method::PtuningV2 { pre_seq_len }, Family::Glm) => {
            let generator = crate::glm::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            run_ptuning(
                generator,
                &model.path,
                pre_seq_len,
                options,
                device,
                on_event,
            )
        }
        (Method::Full, Family::Gpt2) => {
            let generator = crate::gpt2::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            let prefix = full::gpt2_prefix(&model.path)?;
            let base = model.path.clone();
            run_full(
                generator,
                options,
                device,
                &|dir| {
                    Ok(
                        crate::gpt2::open_with::<B>(
                            dir,
                            device,
                            crate::nn::WeightFormat::AS_STORED,
                        )
                        .map_err(crate::Error::from)?
                        .model,
                    )
                },
                &|m, dir| full::write_gpt2(dir, m, &base, prefix),
                on_event,
            )
        }
        (Method::Full, Family::Llama) => {
            if !model.path.is_dir() {
                return Err(FinetuneError::Config(format!(
                    "{}: full fine-tuning writes a Hugging Face folder and needs one as the base, not a GGUF file",
                    model.path.display()
                )));
            }
            let generator = crate::llama::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            let prefix = full::llama_prefix(&model.path)?;
            let base = model.path.clone();
            run_full(
                generator,
                options,
                device,
                &|dir| {
                    Ok(crate::llama::open_with::<B>(
                        dir,
                        device,
                        crate::nn::WeightFormat::AS_STORED,
                    )
                    .map_err(crate::Error::from)?
                    .model)
                },
                &|m, dir| full::write_llama(dir, m, &base, prefix),
                on_event,
            )
        }
        (Method::Full, Family::Glm) => {
            use crate::glm::Glm;
            if !model.path.is_dir() {
                return Err(FinetuneError::Config(format!(
                    "{}: full fine-tuning writes a Hugging Face folder and needs one as the base, not a GGUF file",
                    model.path.display()
                )));
            }
            let generator = crate::glm::open_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            let with_prefix = match &generator.model {
                Glm::V1(m) => m.prefix.is_some(),
                Glm::V2(m) => m.prefix.is_some(),
                Glm::Hf(_) => false,
            };
            if with_prefix {
                return Err(FinetuneError::Config(format!(
                    "{}: the model carries a P-Tuning prefix (pre_seq_len in config.json); full fine-tuning starts from the base model",
                    model.path.display()
                )));
            }
            let base = model.path.clone();
            let prefix = full::chatglm_prefix(&model.path)?;
            let reopen = |dir: &Path| -> Result<Glm<B>, FinetuneError> {
                Ok(
                    crate::glm::open_with::<B>(dir, device, crate::nn::WeightFormat::AS_STORED)
                        .map_err(crate::Error::from)?
                        .model,
                )
            };
            let other = |dir: &Path| {
                FinetuneError::Checkpoint(format!(
                    "{}: the checkpoint holds another GLM generation than the base",
                    dir.display()
                ))
            };
            // One module type per generation, each written under its checkpoint's names.
            match &generator.model {
                Glm::V1(_) => run_full(
                    generator.map_model(|m| match m {
                        Glm::V1(m) => m,
                        _ => unreachable!("matched as ChatGLM-6B above"),
                    }),
                    options,
                    device,
                    &|dir| match reopen(dir)? {
                        Glm::V1(m) => Ok(m),
                        _ => Err(other(dir)),
                    },
                    &|m, dir| full::write_glm(dir, full::chatglm_v1_tensors(m, prefix), &base),
                    on_event,
                ),
                Glm::V2(_) => run_full(
                    generator.map_model(|m| match m {
                        Glm::V2(m) => m,
                        _ => unreachable!("matched as ChatGLM2/3 above"),
                    }),
                    options,
                    device,
                    &|dir| match reopen(dir)? {
                        Glm::V2(m) => Ok(m),
                        _ => Err(other(dir)),
                    },
                    &|m, dir| full::write_glm(dir, full::chatglm_v2_tensors(m, prefix), &base),
                    on_event,
                ),
                Glm::Hf(_) => run_full(
                    generator.map_model(|m| match m {
                        Glm::Hf(m) => m,
                        _ => unreachable!("matched as GlmForCausalLM above"),
                    }),
                    options,
                    device,
                    &|dir| match reopen(dir)? {
                        Glm::Hf(m) => Ok(m),
                        _ => Err(other(dir)),
                    },
                    &|m, dir| full::write_glm(dir, full::glm_hf_tensors(m), &base),
                    on_event,
                ),
            }
        }
        (Method::Lora, Family::Bert) => {
            let (_, bert) = crate::bert::load_with::<B>(&model.path, device, format)
                .map_err(crate::Error::from)?;
            run_bert(bert, options, device, on_event)
        }
        (Method::Full, other) => Err(FinetuneError::Config(format!(
            "full fine-tuning is implemented for GPT-2, LLaMA and GLM, not {} models",
            other.name()
        ))),
        (Method::PtuningV2 { .. }, other) => Err(FinetuneError::Config(format!(
            "P-Tuning v2 is implemented for ChatGLM-6B and ChatGLM2/3, not {} models",
            other.name()
        ))),
        (Method::Lora, other) => Err(FinetuneError::Config(format!(
            "LoRA fine-tuning of {} models is not implemented yet (GPT-2, LLaMA, GLM and BERT are)",
            other.name()
        ))),
    }
}

/// Where a run starts: the checkpoint to resume (`--resume`), after checking that `out` holds
/// no earlier result (`marker`) unless `--force`.
fn start_point(
    options: &FinetuneOptions,
    marker: &str,
) -> Result<Option<(usize, PathBuf)>, FinetuneError> {
    let out = &options.out;
    if options.resume {
        return Ok(Some(latest_checkpoint(out).ok_or_else(|| {
            FinetuneError::Checkpoint(format!(
                "--resume: {} holds no checkpoint-N folder to resume from",
                out.display()
            ))
        })?));
    }
    if (out.join(marker).exists() || latest_checkpoint(out).is_some()) && !options.force {
        return Err(FinetuneError::Config(format!(
            "{} already holds a trained result or checkpoints: give --force to overwrite, or --resume to continue",
            out.display()
        )));
    }
    Ok(None)
}

/// The training and evaluation records, encoded with `generator`'s tokenizer, prompt rule and
/// chat format, and the loop's settings with `--epochs` resolved.
fn read_data<B: Backend, M: CausalLm<B>>(
    options: &FinetuneOptions,
    generator: &crate::nn::TextGenerator<B, M>,
) -> Result<(Vec<Example>, Vec<Example>, TrainConfig), FinetuneError> {
    with_text_side(generator, |side| {
        read_examples(options, options.format, side)
    })
}

/// Calls `f` with what turning records into ids needs from `generator`: its tokenizer, prompt
/// rule, first eos id, vocabulary and chat format (what `zoo finetune` reads records with).
pub fn with_text_side<B: Backend, M: CausalLm<B>, T>(
    generator: &crate::nn::TextGenerator<B, M>,
    f: impl FnOnce(&TextSide<'_>) -> T,
) -> T {
    let encode = |text: &str| generator.encode(text);
    let side = TextSide {
        tokenizer: generator.tokenizer.as_ref(),
        encode_prompt: &encode,
        eos: generator.eos_ids.first().copied(),
        vocab: generator.model.vocab_size(),
        chat: generator.chat_format().ok(),
    };
    f(&side)
}

/// The training and evaluation records of `options` read as `format`, and the loop's settings
/// with `--epochs` resolved.
fn read_examples(
    options: &FinetuneOptions,
    format: DataFormat,
    side: &TextSide<'_>,
) -> Result<(Vec<Example>, Vec<Example>, TrainConfig), FinetuneError> {
    let max_len = options.max_len.unwrap_or(usize::MAX);
    let examples = load_examples(&options.data, format, side, max_len)?;
    let eval = match &options.eval_data {
        Some(path) => load_examples(path, format, side, max_len)?,
        None => Vec::new(),
    };
    let mut train = options.train.clone();
    if let Some(epochs) = options.epochs {
        if !(epochs.is_finite() && epochs > 0.0) {
            return Err(FinetuneError::Config("--epochs must be above 0".into()));
        }
        train.steps = ((examples.len() as f64 * epochs) / train.per_step() as f64).ceil() as usize;
    }
    Ok((examples, eval, train))
}

fn run_generator<B, M>(
    generator: crate::nn::TextGenerator<B, M>,
    options: &FinetuneOptions,
    device: &B::Device,
    fan_in_fan_out: bool,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Trainable<B> + crate::nn::CausalLm<B>,
    M::InnerModule: Trainable<B::InnerBackend>,
{
    let resume = start_point(options, "adapter_model.safetensors")?;
    let (examples, eval, train) = read_data(options, &generator)?;
    let source = options.model.display().to_string();
    let mut model = generator.model.no_grad();
    let lora = start_lora(
        &mut model,
        resume.as_ref().map(|(_, dir)| dir),
        options,
        train.seed,
    )?;
    let trainer = Trainer::new(model, examples, train, device)?;
    let save = |model: &M, dir: &Path| {
        let tensors = peft::adapter_tensors(model);
        peft::write_adapter(dir, &tensors, &lora, &source, fan_in_fan_out)
    };
    train_loop(trainer, &eval, resume, options, device, &save, on_event)
}

/// The adapter training starts from: the checkpoint being resumed, else `--adapter`, else a
/// new one (`options.lora`, seeded); attached to `model`, and its settings returned.
fn start_lora<B: Backend, M: Trainable<B>>(
    model: &mut M,
    resume: Option<&PathBuf>,
    options: &FinetuneOptions,
    seed: u64,
) -> Result<peft::LoraConfig, FinetuneError> {
    match resume.or(options.adapter.as_ref()) {
        Some(dir) => Ok(peft::load_adapter(model, dir)?),
        None => {
            let mut lora = options.lora.clone();
            if lora.targets.is_empty() {
                lora.targets = model
                    .default_targets()
                    .iter()
                    .map(|t| t.to_string())
                    .collect();
            }
            peft::attach_new(model, &lora, seed)?;
            Ok(lora)
        }
    }
}

/// LoRA on a BERT masked LM: BertForMaskedLM's loss on pre-tokenized records (`[MASK]` in
/// `input_ids` where a token is hidden, its id in `labels` there and -100 elsewhere), written
/// as a PEFT adapter of a plain `PeftModel` (PEFT has no masked-LM task type).
fn run_bert<B: AutodiffBackend>(
    bert: crate::bert::Bert<B>,
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError> {
    if bert.cls.is_none() {
        return Err(FinetuneError::Config(format!(
            "{}: this BERT checkpoint has no masked-LM head (cls.predictions); LoRA trains BERT \
             with the masked-LM loss, which needs a BertForMaskedLM checkpoint",
            options.model.display()
        )));
    }
    if !matches!(options.format, DataFormat::Auto | DataFormat::Tokens) {
        return Err(FinetuneError::Config(
            "LoRA on BERT trains the masked-LM loss on pre-tokenized records \
             ({\"input_ids\": [...], \"labels\": [...]}, [MASK] in the ids, -100 on unscored \
             labels): give --format tokens"
                .into(),
        ));
    }
    let resume = start_point(options, "adapter_model.safetensors")?;
    let no_text = |_: &str| -> Result<Vec<u32>, crate::nn::PipelineError> { Ok(Vec::new()) };
    let side = TextSide {
        tokenizer: None,
        encode_prompt: &no_text,
        eos: None,
        vocab: bert.vocab_size(),
        chat: None,
    };
    let (examples, eval, train) = read_examples(options, DataFormat::Tokens, &side)?;
    let source = options.model.display().to_string();
    let mut model = bert.no_grad();
    let lora = start_lora(
        &mut model,
        resume.as_ref().map(|(_, dir)| dir),
        options,
        train.seed,
    )?;
    let trainer = Trainer::new(model, examples, train, device)?;
    let save = |model: &crate::bert::Bert<B>, dir: &Path| {
        let tensors = peft::adapter_tensors(model);
        peft::write_adapter_as(dir, &tensors, &lora, &source, false, None)
    };
    train_loop(trainer, &eval, resume, options, device, &save, on_event)
}

fn run_ptuning<B: AutodiffBackend>(
    generator: crate::glm::GlmGenerator<B>,
    base: &Path,
    pre_seq_len: Option<usize>,
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError> {
    let resume = start_point(options, ptuning::PREFIX_FILE)?;
    let (examples, eval, train) = read_data(options, &generator)?;
    let start = match &resume {
        Some((_, dir)) => Some(dir.clone()),
        None => options.adapter.clone(),
    };
    let config = base.join("config.json");
    let job = PrefixJob {
        pre_seq_len,
        examples,
        eval,
        train,
        resume,
        config: &config,
    };
    match generator.model {
        crate::glm::Glm::V1(model) => {
            // Through the loader: a checkpoint of ChatGLM's own trainer may use the projection.
            let model = match &start {
                Some(dir) => ptuning::load_with_prefix::<B>(base, dir, device)?.1,
                None => model,
            };
            train_prefix(model, job, options, device, on_event)
        }
        crate::glm::Glm::V2(mut model) => {
            if let Some(dir) = &start {
                ptuning::apply_prefix(&mut model, dir)?;
            }
            train_prefix(model, job, options, device, on_event)
        }
        crate::glm::Glm::Hf(_) => Err(FinetuneError::Config(
            "P-Tuning v2 is implemented for ChatGLM-6B and ChatGLM2/3 (the chatglm layouts), not GLM-4's GlmForCausalLM"
                .into(),
        )),
    }
}

/// What a P-Tuning run trains on, for [`train_prefix`].
struct PrefixJob<'a> {
    pre_seq_len: Option<usize>,
    examples: Vec<Example>,
    eval: Vec<Example>,
    train: TrainConfig,
    resume: Option<(usize, PathBuf)>,
    /// The base model's `config.json`, which the written checkpoints extend.
    config: &'a Path,
}

/// Trains the P-Tuning v2 prefix of `model` (a new one, or the one it carries) and writes it
/// as ChatGLM's trainer does.
fn train_prefix<B, M>(
    model: M,
    job: PrefixJob<'_>,
    options: &FinetuneOptions,
    device: &B::Device,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ptuning::PrefixTuned<B>,
    M::InnerModule: Trainable<B::InnerBackend>,
{
    let model = ptuning::attach_prefix(model, job.pre_seq_len, job.train.seed)?;
    let trainer = Trainer::new(model, job.examples, job.train, device)?;
    let config = job.config;
    let save = |model: &M, dir: &Path| ptuning::write_prefix(dir, model, config);
    train_loop(
        trainer, &job.eval, job.resume, options, device, &save, on_event,
    )
}

/// Full fine-tuning of `generator`'s model: `reopen` opens a checkpoint folder (to resume),
/// `save` writes the trained model as a Hugging Face folder.
fn run_full<B, M>(
    generator: crate::nn::TextGenerator<B, M>,
    options: &FinetuneOptions,
    device: &B::Device,
    reopen: &dyn Fn(&Path) -> Result<M, FinetuneError>,
    save: &dyn Fn(&M, &Path) -> Result<(), FinetuneError>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Trainable<B> + CausalLm<B>,
    M::InnerModule: Trainable<B::InnerBackend>,
{
    if options.adapter.is_some() {
        return Err(FinetuneError::Config(
            "--adapter goes with lora or ptuning-v2, not --method full".into(),
        ));
    }
    let resume = start_point(options, "model.safetensors")?;
    let (examples, eval, train) = read_data(options, &generator)?;
    // A checkpoint is a whole model folder: resuming reopens it in place of the base.
    let model = match &resume {
        Some((_, dir)) => {
            drop(generator);
            reopen(dir)?
        }
        None => generator.model,
    };
    let model = full::path_param_ids(model);
    let trainer = Trainer::new(model, examples, train, device)?;
    train_loop(trainer, &eval, resume, options, device, save, on_event)
}

/// The optimizer loop every method shares: restores a checkpoint's losses and optimizer
/// state, steps, evaluates, writes checkpoints (`save` writes the trained parameters into a
/// folder) and the final result, the trainer state and the loss curve.
#[allow(clippy::too_many_arguments)]
fn train_loop<B, M>(
    mut trainer: Trainer<B, M>,
    eval: &[Example],
    resume: Option<(usize, PathBuf)>,
    options: &FinetuneOptions,
    device: &B::Device,
    save: &dyn Fn(&M, &Path) -> Result<(), FinetuneError>,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Report, FinetuneError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Trainable<B>,
    M::InnerModule: Trainable<B::InnerBackend>,
{
    let out = &options.out;
    let train = trainer.config().clone();
    let trainable = trainable_parameters(trainer.model());
    let mut losses = Vec::new();
    let mut eval_losses = Vec::new();
    if let Some((step, dir)) = &resume {
        let state = read_state(&dir.join("trainer_state.json"))?;
        losses = state.0;
        eval_losses = state.1;
        if losses.len() != *step {
            return Err(FinetuneError::Checkpoint(format!(
                "{}: trainer_state.json records {} losses for step {step}",
                dir.display(),
                losses.len()
            )));
        }
        trainer.resume(&dir.join("optimizer"), *step)?;
    }
    std::fs::create_dir_all(out).map_err(|e| FinetuneError::io(out, e))?;
    on_event(Event::Start {
        total_steps: train.steps,
        start_step: trainer.steps_done(),
        examples: trainer.examples.len(),
        trainable,
    });
    let evaluate = |trainer: &Trainer<B, M>| {
        let inner = trainer.model().valid();
        eval_loss(&inner, eval, train.batch_size, train.pad_id, device)
    };
    if !eval.is_empty() && options.eval_every.is_some_and(|n| n > 0) && trainer.steps_done() == 0 {
        // The base's loss, before the first update: the point the evaluation curve starts from.
        let loss = evaluate(&trainer)?;
        eval_losses.push((0, loss));
        on_event(Event::Eval { step: 0, loss });
    }
    let started = Instant::now();
    let mut run_tokens = 0usize;
    while trainer.steps_done() < train.steps {
        // On one of rayon's workers (inline when the caller is one already, as the `zoo`
        // binary is): the products' parallel parts then run on this thread and the others
        // instead of parking it (see `main.rs`).
        let stats = rayon::join(|| trainer.step(), || ()).0?;
        run_tokens += stats.tokens;
        losses.push(stats.loss);
        on_event(Event::Step(&stats));
        let step = stats.step;
        let last = step == train.steps;
        if !eval.is_empty() && (last || options.eval_every.is_some_and(|n| n > 0 && step % n == 0))
        {
            let loss = evaluate(&trainer)?;
            eval_losses.push((step, loss));
            on_event(Event::Eval { step, loss });
        }
        if options
            .checkpoint_every
            .is_some_and(|n| n > 0 && step % n == 0)
            && !last
        {
            let dir = out.join(format!("checkpoint-{step}"));
            let tmp = peft::tmp_name(&dir);
            save(trainer.model(), &tmp)?;
            trainer.save_optimizer(&tmp.join("optimizer"))?;
            write_state(&tmp.join("trainer_state.json"), &losses, &eval_losses, step)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| FinetuneError::io(&dir, e))?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| FinetuneError::io(&dir, e))?;
            on_event(Event::Checkpoint { step, dir: &dir });
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    save(trainer.model(), out)?;
    write_state(
        &out.join("trainer_state.json"),
        &losses,
        &eval_losses,
        train.steps,
    )?;
    peft::write_atomic(
        &out.join("loss_curve.svg"),
        svg::loss_curve(&losses, &eval_losses).as_bytes(),
    )?;
    Ok(Report {
        losses,
        eval_losses,
        out: out.clone(),
        tokens_per_s: run_tokens as f64 / seconds.max(1e-9),
    })
}

fn write_state(
    path: &Path,
    losses: &[f64],
    eval_losses: &[(usize, f64)],
    step: usize,
) -> Result<(), FinetuneError> {
    let value = json!({
        "step": step,
        "losses": losses,
        "eval_losses": eval_losses.iter().map(|(s, l)| json!([s, l])).collect::<Vec<_>>(),
    });
    peft::write_atomic(path, value.to_string().as_bytes())
}

type State = (Vec<f64>, Vec<(usize, f64)>);

fn read_state(path: &Path) -> Result<State, FinetuneError> {
    let text = std::fs::read_to_string(path).map_err(|e| FinetuneError::io(path, e))?;
    let bad = || FinetuneError::Checkpoint(format!("{}: not a trainer state", path.display()));
    let v: Value = serde_json::from_str(&text).map_err(|_| bad())?;
    let losses = v["losses"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|x| x.as_f64().ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()?;
    let evals = v["eval_losses"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|x| {
            let pair = || Some((x.get(0)?.as_u64()? as usize, x.get(1)?.as_f64()?));
            pair().ok_or_else(bad)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((losses, evals))
}

/// Loads the PEFT LoRA adapter folder `dir` onto a BERT encoder for inference (`zoo embed` /
/// `zoo fill-mask --adapter`).
pub fn apply_bert_adapter<B: Backend>(
    model: &mut crate::bert::Bert<B>,
    dir: &Path,
) -> Result<(), FinetuneError> {
    peft::load_adapter(model, dir).map(|_| ())
}

/// Loads the adapter folder `dir` onto a causal LM for inference: a PEFT LoRA adapter (GPT-2,
/// LLaMA, every GLM generation), or a P-Tuning v2 checkpoint (ChatGLM-6B, ChatGLM2/3; see
/// [`ptuning::apply_prefix`]).
pub fn apply_adapter<B: Backend>(
    model: &mut crate::CausalModel<B>,
    dir: &Path,
) -> Result<(), FinetuneError> {
    match model {
        crate::CausalModel::Llama(m) => peft::load_adapter(m, dir).map(|_| ()),
        crate::CausalModel::Gpt2(m) => peft::load_adapter(m, dir).map(|_| ()),
        // A PEFT folder is LoRA; a ChatGLM folder without one is a P-Tuning v2 checkpoint.
        crate::CausalModel::Glm(glm) if dir.join(peft::ADAPTER_CONFIG).is_file() => match glm {
            crate::glm::Glm::V1(m) => peft::load_adapter(m, dir).map(|_| ()),
            crate::glm::Glm::V2(m) => peft::load_adapter(m, dir).map(|_| ()),
            crate::glm::Glm::Hf(m) => peft::load_adapter(m, dir).map(|_| ()),
        },
        crate::CausalModel::Glm(crate::glm::Glm::V1(m)) => ptuning::apply_prefix(m, dir),
        crate::CausalModel::Glm(crate::glm::Glm::V2(m)) => ptuning::apply_prefix(m, dir),
        _ => Err(FinetuneError::Adapter(format!(
            "{}: adapters are implemented for GPT-2, LLaMA and GLM (LoRA) and ChatGLM-6B / ChatGLM2/3 (P-Tuning v2)",
            dir.display()
        ))),
    }
}
