//! `zoo compare`: architectures side by side from their catalog configs (no weights needed),
//! and with `--measure` on their downloaded weights: speed, peak memory and perplexity.

mod measure;
mod speed_svg;

use std::path::{Path, PathBuf};

use anyhow::bail;
use burn_zoo::catalog::compare::{self, Comparison};
use burn_zoo::resolve::resolve_path;

use super::{fetch, names_a_path, print_json, Context};

pub use measure::{measure_one, MeasureOneArgs, MeasureSettings};

/// Arguments of `zoo compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Catalog ids (see `zoo list`), model folders or .gguf files to put side by side.
    #[arg(required = true)]
    pub models: Vec<String>,
    /// Print a Markdown table with footnotes stating the formulas.
    #[arg(long)]
    pub markdown: bool,
    /// Also write an SVG plot of fp16 weights + KV cache against context length to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Right end of the plot's context axis in tokens (0: the largest context of the models).
    #[arg(long, default_value_t = 0)]
    pub plot_max_context: usize,
    /// Overwrite the --plot / --plot-speed file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Measure each model on its weights (cached or a local path; never downloads), each in a
    /// child process per backend: load time, prefill/decode tokens/s or sentences/s, peak
    /// memory; with --text also perplexity. `--backend` may list several: `flex,ndarray`.
    #[arg(long)]
    pub measure: bool,
    /// With --measure: a text file to score (perplexity of causal models, pseudo-perplexity of
    /// BERT masked LMs).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// With --measure: write an SVG bar chart of decode tokens/s per model and backend here.
    #[arg(long)]
    pub plot_speed: Option<PathBuf>,
    #[command(flatten)]
    pub settings: MeasureSettings,
}

/// How each `MODEL` argument is shown in a table: a catalog id as it is, a path by its file
/// name — with as many parent folders as it takes to tell paths with the same name apart.
pub fn labels(models: &[String]) -> Vec<String> {
    let tail = |model: &str, parts: usize| -> String {
        if !names_a_path(model) {
            return model.to_string();
        }
        let path = Path::new(model.trim_end_matches('/'));
        let names: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let start = names.len().saturating_sub(parts);
        let shown = names[start..].join("/");
        if shown.is_empty() {
            model.to_string()
        } else {
            shown
        }
    };
    let mut parts = vec![1usize; models.len()];
    loop {
        let shown: Vec<String> = models
            .iter()
            .zip(&parts)
            .map(|(m, &p)| tail(m, p))
            .collect();
        let mut changed = false;
        for i in 0..models.len() {
            let clash =
                (0..models.len()).any(|j| j != i && shown[j] == shown[i] && models[j] != models[i]);
            if clash && tail(&models[i], parts[i] + 1) != shown[i] {
                parts[i] += 1;
                changed = true;
            }
        }
        if !changed {
            return shown;
        }
    }
}

/// Refuses to overwrite `path` without `--force`.
fn check_overwrite(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists: pass --force to overwrite it",
            path.display()
        );
    }
    Ok(())
}

/// `zoo compare MODEL…`: parameters, FLOPs, weight and KV-cache memory from the configs alone;
/// with `--measure`, also measured on the weights.
pub fn compare(ctx: &Context, args: CompareArgs) -> anyhow::Result<()> {
    if args.measure {
        return measure::compare_measured(ctx, &args);
    }
    if args.plot_speed.is_some() {
        bail!("--plot-speed plots measured speed: add --measure");
    }
    if args.text.is_some() {
        bail!("--text is scored only when measuring: add --measure");
    }
    let catalog = fetch::catalog()?;
    let labels = labels(&args.models);
    let models: Vec<Comparison> = args
        .models
        .iter()
        .zip(&labels)
        .map(|(model, label)| -> anyhow::Result<Comparison> {
            if names_a_path(model) {
                // A folder or .gguf file: described from its own config.
                let found = resolve_path(Path::new(model))?;
                let entry = burn_zoo::describe::catalog_entry(&found, label)?;
                return Ok(compare::compare(&entry)?);
            }
            Ok(compare::compare(catalog.get(model)?)?)
        })
        .collect::<anyhow::Result<_>>()?;

    if let Some(path) = &args.plot {
        check_overwrite(path, args.force)?;
        let svg = compare::memory_svg(&models, args.plot_max_context);
        super::write_atomic(path, svg.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }

    // With --dtype / --quantize: the weight memory in that format, per model.
    let format = args.settings.weights.format()?;
    let loaded: Vec<Option<u64>> = models
        .iter()
        .map(|c| burn_zoo::describe::weight_bytes_as_loaded(c, format))
        .collect();
    if ctx.json {
        let mut value = compare::to_json(&models);
        if loaded.iter().any(Option::is_some) {
            value["weight_bytes_as_loaded"] = serde_json::json!({
                "format": format.describe(),
                "bytes": loaded,
            });
        }
        return print_json(&value);
    }
    if args.markdown {
        print!("{}", compare::to_markdown(&models));
    } else {
        print!("{}", compare::to_text(&models));
    }
    if loaded.iter().any(Option::is_some) {
        println!("\nweights as loaded with {}:", format.describe());
        for (c, bytes) in models.iter().zip(&loaded) {
            if let Some(b) = bytes {
                println!("  {:<28} {:.2} GB", c.id, *b as f64 / 1e9);
            }
        }
    }
    Ok(())
}
