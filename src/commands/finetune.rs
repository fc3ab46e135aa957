//! `zoo finetune`: LoRA and P-Tuning v2 fine-tuning with a progress bar, checkpoints and `--resume`.

use std::path::PathBuf;

use anyhow::bail;
use burn_zoo::finetune::{
    self, DataFormat, Event, FinetuneOptions, LoraConfig, Method, OptimizerKind, Schedule,
    TrainConfig,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{print_json, resolve_model, Context};

/// Arguments of `zoo finetune`.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// A catalog id, a model folder or a .gguf file (GPT-2, LLaMA and GLM; BERT masked LMs
    /// with lora; ChatGLM-6B and ChatGLM2/3 with ptuning-v2).
    pub model: String,
    /// Training records: Alpaca JSON/JSONL, `{"prompt","response"}` JSONL, ShareGPT / Vicuna
    /// conversations (`conversations` or `messages`), or pre-tokenized
    /// `{"input_ids","labels"}` JSONL.
    #[arg(long)]
    pub data: PathBuf,
    /// Records for the evaluation loss (same format).
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// The records' format: auto, alpaca, chatglm (prompt/response), sharegpt or tokens.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// What trains: lora (adapters on a frozen base; GPT-2, LLaMA, GLM, and BERT masked LMs with the
    /// masked-LM loss on pre-tokenized records), ptuning-v2 (the P-Tuning
    /// v2 prefix encoder; ChatGLM-6B, ChatGLM2/3) or full (every parameter of an HF folder; GPT-2, LLaMA,
    /// GLM; written as an HF folder).
    #[arg(long, default_value = "lora")]
    pub method: String,
    /// ptuning-v2: prefix positions of a new prefix (omit to continue the model's or
    /// --adapter's prefix).
    #[arg(long)]
    pub pre_seq_len: Option<usize>,
    /// The output folder (PEFT adapter, checkpoints, loss curve).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an output folder that already holds an adapter or checkpoints.
    #[arg(long)]
    pub force: bool,
    /// Continue from the latest checkpoint in --out.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Start from this PEFT adapter folder (its config sets rank, alpha and targets), or with
    /// ptuning-v2 from this P-Tuning checkpoint folder.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// Dropout on the adapters' input.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Layers that get adapters, by the checkpoint's module names. Default: PEFT's for the
    /// architecture: q_proj,v_proj (LLaMA, GLM-4 as GlmForCausalLM), c_attn (GPT-2),
    /// query,value (BERT), query_key_value (ChatGLM-6B/2/3).
    #[arg(long, value_delimiter = ',')]
    pub target: Vec<String>,
    /// adamw or sgd.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Learning-rate decay after warmup: constant, linear or cosine.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Steps of linear warmup.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Records per forward pass.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Forward passes per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Optimizer steps.
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Passes over the data (instead of --steps).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Seed of the shuffle, the adapters' initialisation and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Batches in file order, wrapping around.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Clip the global gradient norm (torch's clip_grad_norm_); 0 turns clipping off.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Truncate every record to this many tokens.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Evaluate on --eval-data before the first step, every this many steps and after the last.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Write a checkpoint (adapter, optimizer state, step) every this many steps.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
}

/// `zoo finetune`.
pub fn finetune(ctx: &Context, args: FinetuneArgs) -> anyhow::Result<()> {
    let method = match args.method.as_str() {
        "lora" => Method::Lora,
        "ptuning-v2" | "p-tuning-v2" => {
            if args.pre_seq_len == Some(0) {
                bail!("--pre-seq-len must be at least 1");
            }
            Method::PtuningV2 {
                pre_seq_len: args.pre_seq_len,
            }
        }
        "full" => Method::Full,
        m => bail!("--method {m}: expected lora, ptuning-v2 or full"),
    };
    if args.pre_seq_len.is_some() && !matches!(method, Method::PtuningV2 { .. }) {
        bail!("--pre-seq-len goes with --method ptuning-v2");
    }
    let optimizer = match args.optimizer.as_str() {
        "adamw" => OptimizerKind::AdamW,
        "sgd" => OptimizerKind::Sgd,
        o => bail!("--optimizer {o}: expected adamw or sgd"),
    };
    let schedule = match args.schedule.as_str() {
        "constant" => Schedule::Constant,
        "linear" => Schedule::Linear,
        "cosine" => Schedule::Cosine,
        s => bail!("--schedule {s}: expected constant, linear or cosine"),
    };
    if args.steps.is_none() && args.epochs.is_none() {
        bail!("give --steps or --epochs");
    }
    if args.rank == 0 {
        bail!("--rank must be at least 1");
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be in [0, 1)");
    }
    let model = resolve_model(&args.model)?;
    let options = FinetuneOptions {
        model: model.path.clone(),
        data: args.data.clone(),
        eval_data: args.eval_data.clone(),
        format: args.format.parse::<DataFormat>()?,
        max_len: args.max_len,
        lora: LoraConfig {
            rank: args.rank,
            alpha: args.alpha,
            dropout: args.dropout,
            targets: args.target.clone(),
        },
        adapter: args.adapter.clone(),
        train: TrainConfig {
            optimizer,
            lr: args.lr,
            weight_decay: args.weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            schedule,
            warmup_steps: args.warmup_steps,
            batch_size: args.batch_size,
            grad_accum: args.grad_accum,
            steps: args.steps.unwrap_or(0),
            seed: args.seed,
            shuffle: !args.no_shuffle,
            max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
            pad_id: 0,
        },
        epochs: args.epochs,
        eval_every: args.eval_every,
        checkpoint_every: args.checkpoint_every,
        out: args.out.clone(),
        force: args.force,
        resume: args.resume,
        method,
    };
    let kind = ctx.backend()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  loss {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("a valid template"),
    );
    let started = std::time::Instant::now();
    let mut tokens = 0usize;
    let mut last_eval: Option<f64> = None;
    let report = finetune::finetune(kind, &options, &mut |event| match event {
        Event::Start {
            total_steps,
            start_step,
            examples,
            trainable,
        } => {
            bar.set_length(total_steps as u64);
            bar.set_position(start_step as u64);
            bar.reset_eta();
            bar.println(format!(
                "{examples} records, {trainable} trainable parameters, {kind}{}",
                if start_step > 0 {
                    format!(", resuming at step {start_step}")
                } else {
                    String::new()
                }
            ));
        }
        Event::Step(stats) => {
            tokens += stats.tokens;
            let rate = tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            let eval = last_eval.map_or(String::new(), |l| format!("  eval {l:.4}"));
            bar.set_message(format!("{:.4}{eval}  {rate:.0} tok/s", stats.loss));
            bar.inc(1);
        }
        Event::Eval { loss, .. } => last_eval = Some(loss),
        Event::Checkpoint { dir, .. } => bar.println(format!("checkpoint {}", dir.display())),
    })?;
    bar.finish();
    eprintln!(
        "result written to {} ({:.0} training tokens/s)",
        report.out.display(),
        report.tokens_per_s
    );
    if ctx.json {
        print_json(&json!({
            "losses": report.losses,
            "eval_losses": report.eval_losses.iter().map(|e| e.1).collect::<Vec<_>>(),
            "eval_steps": report.eval_losses.iter().map(|e| e.0).collect::<Vec<_>>(),
            "out": report.out,
            "tokens_per_s": report.tokens_per_s,
        }))?;
    }
    Ok(())
}

/// Arguments of `zoo merge-adapter`.
#[derive(Debug, clap::Args)]
pub struct MergeAdapterArgs {
    /// A catalog id or a Hugging Face model folder (the adapter's base).
    pub model: String,
    /// The PEFT LoRA adapter folder.
    #[arg(long)]
    pub adapter: PathBuf,
    /// The merged Hugging Face folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
}

/// `zoo merge-adapter`.
pub fn merge_adapter(ctx: &Context, args: MergeAdapterArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    let report = finetune::merge::merge_adapter(&model.path, &args.adapter, &args.out, args.force)?;
    eprintln!(
        "{} weights merged, {} tensors written to {}",
        report.merged.len(),
        report.tensors,
        report.out.display()
    );
    if ctx.json {
        print_json(&json!({
            "merged": report.merged,
            "tensors": report.tensors,
            "out": report.out,
        }))?;
    }
    Ok(())
}
