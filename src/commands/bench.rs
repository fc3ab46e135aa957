//! `zoo bench`: warm-up, then R timed runs; median and spread of prefill and decode tokens/s
//! (causal models) or sentences/s (BERT), load time and peak memory.

use std::time::Instant;

use anyhow::bail;
use burn::tensor::backend::Backend;
use burn_zoo::backends::{self, BackendTask};
use burn_zoo::bert::SentenceEncoder;
use burn_zoo::nn::{CausalLm, Sampling};
use burn_zoo::resolve::{Family, ModelRef};
use serde_json::json;

use super::run::{run_generation, with_causal_lm, LmExtras, LmVisitor};
use super::{print_json, resolve_model, Context};

/// Arguments of `zoo bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A catalog id, a model folder or a .gguf file.
    pub model: String,
    /// Prompt tokens (causal models) or tokens per sentence (BERT).
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Tokens generated per run (causal models).
    #[arg(long, default_value_t = 64)]
    pub gen_len: usize,
    /// Sentences per forward pass (BERT).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

/// Median, minimum and maximum of some measurements.
pub(crate) fn spread(values: &[f64]) -> serde_json::Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    json!({
        "median": median,
        "min": v.first().copied().unwrap_or(0.0),
        "max": v.last().copied().unwrap_or(0.0),
        "runs": v,
    })
}

/// Peak resident memory of this process so far, in bytes (Linux; 0 elsewhere).
pub(crate) fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `zoo bench`.
pub fn bench(ctx: &Context, args: BenchArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.prompt_len == 0 {
        bail!("--runs and --prompt-len must be at least 1");
    }
    let model = resolve_model(&args.model)?;
    let kind = ctx.backend()?;
    let mut report = backends::run(kind, BenchTask { model, args })??;
    report["backend"] = json!(kind.name());
    report["peak_rss_bytes"] = json!(peak_rss_bytes());
    if ctx.json {
        return print_json(&report);
    }
    println!("model      {}", report["model"].as_str().unwrap_or(""));
    println!("backend    {kind}");
    println!(
        "load       {:.2} s",
        report["load_secs"].as_f64().unwrap_or(0.0)
    );
    let row = |name: &str, unit: &str| {
        let s = &report[name];
        if !s.is_null() {
            println!(
                "{name:<10} {:>10.1} {unit} median  (min {:.1}, max {:.1}, {} runs)",
                s["median"].as_f64().unwrap_or(0.0),
                s["min"].as_f64().unwrap_or(0.0),
                s["max"].as_f64().unwrap_or(0.0),
                s["runs"].as_array().map_or(0, Vec::len)
            );
        }
    };
    row("prefill", "tok/s");
    row("decode", "tok/s");
    row("sentences", "sentences/s");
    println!(
        "peak RSS   {:.1} MB",
        report["peak_rss_bytes"].as_u64().unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}

struct BenchTask {
    model: ModelRef,
    args: BenchArgs,
}

impl BackendTask for BenchTask {
    type Output = anyhow::Result<serde_json::Value>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let start = Instant::now();
        if self.model.family == Family::Bert {
            let encoder = SentenceEncoder::<B>::load(&self.model.path, &device)?;
            let load_secs = start.elapsed().as_secs_f64();
            let (rates, words) = bert_rates(
                &encoder,
                self.args.prompt_len,
                self.args.batch,
                self.args.runs,
            )?;
            return Ok(json!({
                "model": self.model.path,
                "load_secs": load_secs,
                "batch": self.args.batch.max(1),
                "words_per_sentence": words,
                "sentences": spread(&rates),
            }));
        }
        let model = self.model.clone();
        with_causal_lm::<B, _>(&model, &device, (self, start))
    }
}

impl LmVisitor for (BenchTask, Instant) {
    type Out = serde_json::Value;

    fn visit<B: Backend, M: CausalLm<B>>(
        self,
        model: &M,
        _: LmExtras,
    ) -> anyhow::Result<Self::Out> {
        let (task, start) = self;
        let load_secs = start.elapsed().as_secs_f64();
        let args = &task.args;
        if args.prompt_len + args.gen_len > model.max_positions() {
            bail!(
                "--prompt-len {} + --gen-len {} exceeds the model's context of {}",
                args.prompt_len,
                args.gen_len,
                model.max_positions()
            );
        }
        let (prefill, decode) = causal_rates(model, args.prompt_len, args.gen_len, args.runs)?;
        Ok(json!({
            "model": task.model.path,
            "load_secs": load_secs,
            "prompt_len": args.prompt_len,
            "gen_len": args.gen_len,
            "prefill": spread(&prefill),
            "decode": if decode.is_empty() { serde_json::Value::Null } else { spread(&decode) },
        }))
    }
}

/// Sentences/s of `runs` timed batches of `batch` sentences of about `words` words each,
/// after one warm-up batch; also returns the words per sentence.
pub(crate) fn bert_rates<B: Backend>(
    encoder: &SentenceEncoder<B>,
    words: usize,
    batch: usize,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let sentence = "the quick brown fox jumps over the lazy dog ".repeat(words / 9 + 1);
    let words: Vec<&str> = sentence.split_whitespace().take(words.max(1)).collect();
    let text = words.join(" ");
    let texts: Vec<&str> = vec![text.as_str(); batch.max(1)];
    encoder.embed(&texts, texts.len())?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        encoder.embed(&texts, texts.len())?;
        rates.push(texts.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok((rates, words.len()))
}

/// Prefill and decode tokens/s of `runs` greedy generations of `gen_len` tokens after a fixed
/// pseudo-random prompt of `prompt_len` ids, after one warm-up run (decode empty when
/// `gen_len < 2`).
pub(crate) fn causal_rates<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompt_len: usize,
    gen_len: usize,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    // A fixed pseudo-random prompt of ordinary token ids; greedy, no stop ids: every run
    // does exactly the same work.
    let vocab = model.vocab_size() as u64;
    let prompt: Vec<u32> = (0..prompt_len as u64)
        .map(|i| ((i * 2_654_435_761 + 12_345) % vocab.min(30_000)) as u32)
        .collect();
    let greedy = Sampling::greedy();
    let none: Option<fn(&str) -> anyhow::Result<()>> = None;
    run_generation(model, &prompt, gen_len, &greedy, &[], None, none)?;
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (_, stats) = run_generation(model, &prompt, gen_len, &greedy, &[], None, none)?;
        prefill.push(stats.prefill_rate());
        if gen_len > 1 {
            decode.push(stats.decode_rate());
        }
    }
    Ok((prefill, decode))
}
