//! `zoo compare`: architectures side by side from their catalog configs (no weights needed).

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use burn_zoo::catalog::compare::{self, Comparison};

use super::{fetch, print_json, Context};

/// Arguments of `zoo compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Catalog ids to put side by side (see `zoo list`).
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
    /// Overwrite the --plot file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `zoo compare MODEL…`: parameters, FLOPs, weight and KV-cache memory from the configs alone.
pub fn compare(ctx: &Context, args: CompareArgs) -> anyhow::Result<()> {
    let catalog = fetch::catalog()?;
    let models: Vec<Comparison> = args
        .models
        .iter()
        .map(|id| -> anyhow::Result<Comparison> {
            let entry = catalog.get(id)?;
            Ok(compare::compare(entry)?)
        })
        .collect::<anyhow::Result<_>>()?;

    if let Some(path) = &args.plot {
        if path.exists() && !args.force {
            bail!(
                "{} already exists: pass --force to overwrite it",
                path.display()
            );
        }
        let svg = compare::memory_svg(&models, args.plot_max_context);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }

    if ctx.json {
        return print_json(&compare::to_json(&models));
    }
    if args.markdown {
        print!("{}", compare::to_markdown(&models));
    } else {
        print!("{}", compare::to_text(&models));
    }
    Ok(())
}
