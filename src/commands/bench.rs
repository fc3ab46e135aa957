//! `zoo bench`: warm-up, then R timed runs; median and spread of prefill and decode tokens/s
//! (causal models) or sentences/s (BERT), load time and peak memory.

use burn_zoo::backends::with_backend;
use burn_zoo::bench::{peak_rss_bytes, BenchSettings};
use serde_json::json;

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

/// `zoo bench`.
pub fn bench(ctx: &Context, args: BenchArgs) -> anyhow::Result<()> {
    let settings = BenchSettings {
        prompt_len: args.prompt_len,
        gen_len: args.gen_len,
        batch: args.batch,
        runs: args.runs,
        window: None,
        stride: None,
    };
    settings.check()?;
    let model = resolve_model(&args.model)?;
    let kind = ctx.backend()?;
    let mut report = with_backend!(kind, |B, device| {
        burn_zoo::bench::measure::<B>(&model, &settings, None, &device)?
    })?;
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
    let row = |name: &str, key: &str, unit: &str| {
        let s = &report[key];
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
    row("prefill", "prefill_tok_s", "tok/s");
    row("decode", "decode_tok_s", "tok/s");
    row("sentences", "sentences_per_s", "sentences/s");
    println!(
        "peak RSS   {:.1} MB",
        report["peak_rss_bytes"].as_u64().unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}
