//! `zoo bench`: warm-up, then R timed runs; median and spread of prefill and decode tokens/s
//! (causal models) or sentences/s (BERT), a BLIP-2 model's image-encoding seconds, load time
//! and peak memory.

use burn_zoo::bench::{peak_rss_bytes, BenchSettings};
use serde_json::json;

use super::{fetch, print_json, resolve_model, Context, WeightArgs};

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
    #[arg(long, default_value_t = 1, value_parser = super::positive)]
    pub batch: usize,
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 5, value_parser = super::positive)]
    pub runs: usize,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// Build the catalog architecture at its real size with seeded random weights instead of
    /// loading it (never downloads): speed and memory of 6B–13B shapes on this machine.
    #[arg(long)]
    pub random_weights: bool,
    /// Seed of --random-weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
        format: args.weights.format()?,
    };
    settings.check()?;
    let kind = ctx.backend()?;
    let mut report = if args.random_weights {
        let catalog = fetch::catalog()?;
        let entry = catalog.get(&args.model)?;
        burn_zoo::bench::measure_random_on(kind, entry, &settings, args.seed)?
    } else {
        let model = resolve_model(&args.model)?;
        burn_zoo::bench::measure_on(kind, &model, &settings, None)?
    };
    report["backend"] = json!(kind.name());
    report["peak_rss_bytes"] = json!(peak_rss_bytes());
    if ctx.json {
        return print_json(&report);
    }
    println!("model      {}", report["model"].as_str().unwrap_or(""));
    println!("backend    {kind}");
    println!(
        "weights    {}",
        report["weights"].as_str().unwrap_or("as stored")
    );
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
    let image = &report["image_encode_secs"];
    if !image.is_null() {
        println!(
            "image      {:>10.4} s median to encode one {}x{} image into {} query tokens  (min {:.4}, max {:.4}, {} runs)",
            image["median"].as_f64().unwrap_or(0.0),
            report["image_size"],
            report["image_size"],
            report["image_tokens"],
            image["min"].as_f64().unwrap_or(0.0),
            image["max"].as_f64().unwrap_or(0.0),
            image["runs"].as_array().map_or(0, Vec::len)
        );
    }
    println!(
        "peak RSS   {:.1} MB",
        report["peak_rss_bytes"].as_u64().unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}
