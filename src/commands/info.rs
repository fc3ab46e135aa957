//! `zoo list` and `zoo info`.

use anyhow::Context as _;
use burn_zoo::gpt2::{load::read_config, Gpt2Config};
use burn_zoo::resolve::Family;
use serde_json::json;

use super::{fetch, print_json, resolve_model, Context};
use burn_zoo::catalog;

/// Arguments of `zoo info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A catalog id or a model folder.
    pub model: String,
}

/// `zoo list`: the catalog, with whether each model is in the cache.
pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let catalog = fetch::catalog()?;
    let cache = fetch::cache_dir()?;
    if ctx.json {
        let models: Vec<_> = catalog
            .models
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "architecture": m.architecture.as_str(),
                    "variant": m.variant,
                    "parameters": m.parameters,
                    "context_length": m.context_length,
                    "cached": catalog::is_cached(m, &cache),
                })
            })
            .collect();
        return print_json(&json!({ "models": models }));
    }
    println!(
        "{:<26} {:<10} {:>10} {:>8}  {:<6} variant",
        "id", "arch", "params", "context", "cached"
    );
    for m in &catalog.models {
        println!(
            "{:<26} {:<10} {:>10} {:>8}  {:<6} {}",
            m.id,
            m.architecture.as_str(),
            m.parameters.map_or("-".into(), human_count),
            m.context_length.map_or("-".into(), |c| c.to_string()),
            if catalog::is_cached(m, &cache) { "yes" } else { "no" },
            m.variant
        );
    }
    Ok(())
}

/// 124439808 → "124.4M".
fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// `zoo info MODEL`: a catalog entry (without downloading), or a model folder's config.
pub fn info(ctx: &Context, args: InfoArgs) -> anyhow::Result<()> {
    let path = std::path::Path::new(&args.model);
    if !path.exists() {
        let catalog = fetch::catalog()?;
        if let Ok(entry) = catalog.get(&args.model) {
            let cache = fetch::cache_dir()?;
            let mut value = serde_json::to_value(entry)?;
            value["cached"] = json!(catalog::is_cached(entry, &cache));
            if ctx.json {
                return print_json(&value);
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
    }
    let model = resolve_model(&args.model)?;
    match model.family {
        Family::Gpt2 => {
            let config: Gpt2Config = read_config(&model.path).context("reading the config")?;
            let params = config.num_parameters();
            if ctx.json {
                return print_json(&json!({
                    "path": model.path,
                    "family": "gpt2",
                    "layers": config.n_layer,
                    "hidden": config.n_embd,
                    "heads": config.n_head,
                    "vocab": config.vocab_size,
                    "context": config.n_positions,
                    "parameters": params,
                }));
            }
            println!("model       {}", model.path.display());
            println!("family      gpt2 (decoder-only, learned positions, pre-LN, {})", config.activation_function);
            println!("layers      {}", config.n_layer);
            println!("hidden      {} ({} heads of {})", config.n_embd, config.n_head, config.head_dim());
            println!("mlp         {}", config.inner_size());
            println!("vocab       {}", config.vocab_size);
            println!("context     {}", config.n_positions);
            println!("parameters  {params} ({:.1}M)", params as f64 / 1e6);
            println!("fp32        {:.1} MB", params as f64 * 4.0 / 1e6);
        }
    }
    Ok(())
}
