//! `zoo list` and `zoo info`.

use anyhow::Context as _;
use burn_zoo::resolve::ModelRef;
use serde_json::json;

use super::{fetch, print_json, resolve_model, Context, WeightArgs};
use burn_zoo::catalog;
use burn_zoo::describe::weight_bytes_as_loaded;

/// Arguments of `zoo info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A catalog id or a model folder.
    pub model: String,
    /// Also report the weight memory in this format.
    #[command(flatten)]
    pub weights: WeightArgs,
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
            if catalog::is_cached(m, &cache) {
                "yes"
            } else {
                "no"
            },
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
            // Sizes computed from the config alone (no weights needed).
            let sizes = catalog::compare::compare(entry).ok();
            let format = args.weights.format()?;
            if let Some(bytes) = sizes
                .as_ref()
                .and_then(|c| weight_bytes_as_loaded(c, format))
            {
                value["computed"]["weight_bytes_as_loaded"] =
                    json!({ "format": format.describe(), "bytes": bytes });
            }
            if let Some(c) = &sizes {
                value["computed"] = json!({
                    "parameters": c.parameters,
                    "weight_bytes": c.weight_bytes,
                    "kv_bytes_per_token_fp16": c.kv_bytes_per_token,
                    "kv_bytes_full_context_fp16": c.kv_bytes_full_context,
                    "flops_per_token": c.flops_per_token,
                });
            }
            if ctx.json {
                return print_json(&value);
            }
            println!(
                "{}  ({}, {})",
                entry.id,
                entry.architecture.as_str(),
                entry.license
            );
            println!("{}", entry.variant);
            if let Some(notes) = &entry.notes {
                println!("{notes}");
            }
            if let Some(c) = &sizes {
                let gb = |b: u64| b as f64 / 1e9;
                println!();
                println!("parameters   {} (counted from the config)", c.parameters);
                let layers = c.layers.map_or("-".into(), |l| l.to_string());
                match c.decoder_layers {
                    Some(dec) => println!("layers       {layers} encoder + {dec} decoder"),
                    None => println!("layers       {layers}"),
                }
                println!("hidden       {}", c.hidden);
                if let (Some(h), Some(kv)) = (c.heads, c.kv_heads) {
                    println!("heads        {h} ({kv} key/value)");
                }
                println!("vocabulary   {}", c.vocab);
                println!(
                    "context      {}",
                    c.context.map_or("-".into(), |l| l.to_string())
                );
                println!("positions    {}", c.positional);
                let w = &c.weight_bytes;
                println!(
                    "weights      fp32 {:.2} GB, fp16 {:.2} GB, int8 {:.2} GB, int4 {:.2} GB",
                    gb(w.fp32),
                    gb(w.fp16),
                    gb(w.int8),
                    gb(w.int4)
                );
                if let Some(bytes) = weight_bytes_as_loaded(c, format) {
                    println!(
                        "as loaded   {:.2} GB of weights ({})",
                        gb(bytes),
                        format.describe()
                    );
                }
                if let (Some(per), Some(full)) = (c.kv_bytes_per_token, c.kv_bytes_full_context) {
                    println!(
                        "KV cache     {:.1} KiB per token (fp16), {:.2} GB at full context",
                        per as f64 / 1024.0,
                        gb(full)
                    );
                }
            }
            println!();
            println!("template     {}", entry.template);
            for source in &entry.sources {
                println!("source       {}", source.describe());
            }
            println!(
                "cached       {}",
                if catalog::is_cached(entry, &cache) {
                    "yes"
                } else {
                    "no (zoo fetch fetches it)"
                }
            );
            return Ok(());
        }
    }
    let model = resolve_model(&args.model)?;
    let mut facts = folder_facts(&model)?;
    let format = args.weights.format()?;
    let entry = burn_zoo::describe::catalog_entry(&model, &args.model)?;
    if let Some(bytes) = catalog::compare::compare(&entry)
        .ok()
        .and_then(|c| weight_bytes_as_loaded(&c, format))
    {
        facts["weight_bytes_as_loaded"] = json!(bytes);
        facts["weight_format"] = json!(format.describe());
    }
    if ctx.json {
        return print_json(&facts);
    }
    for (key, value) in facts.as_object().expect("an object") {
        let shown = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{key:<16} {shown}");
    }
    Ok(())
}

/// The first of `keys` that `config.json` has.
fn pick(config: &serde_json::Value, keys: &[&str]) -> serde_json::Value {
    keys.iter()
        .find_map(|k| config.get(*k).filter(|v| !v.is_null()).cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// A model folder's (or GGUF file's) architecture facts, and its parameters counted from the
/// checkpoint's tensors (buffers excluded).
fn folder_facts(model: &ModelRef) -> anyhow::Result<serde_json::Value> {
    if model.path.is_file() {
        // A GGUF file: its family from general.architecture, its shape from the metadata.
        let file = burn_zoo::gguf::GgufFile::open(&model.path)?;
        let params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
        let entry = burn_zoo::describe::catalog_entry(model, &model.path.display().to_string())?;
        let c = &entry.config;
        return Ok(json!({
            "path": model.path,
            "family": model.family.name(),
            "format": "gguf",
            "types": c.dtype,
            "layers": c.layers,
            "hidden": c.hidden_size,
            "heads": c.heads,
            "kv_heads": c.kv_heads,
            "vocab": c.vocab_size,
            "context": entry.context_length,
            "parameters": params,
            "file_bytes": std::fs::metadata(&model.path).map(|m| m.len()).unwrap_or(0),
        }));
    }
    // The config as the loader reads it: one `forward` would refuse is refused here too,
    // never echoed as facts.
    burn_zoo::describe::catalog_entry(model, &model.path.display().to_string())?;
    if burn_zoo::blip2::release::is_release(&model.path) {
        return release_facts(model);
    }
    let text =
        std::fs::read_to_string(model.path.join("config.json")).context("reading config.json")?;
    let config: serde_json::Value = serde_json::from_str(&text).context("parsing config.json")?;
    let weights = burn_zoo::nn::Weights::open(&model.path)?;
    let is_buffer = |name: &str| {
        name.ends_with("attn.bias")
            || name.ends_with("attn.masked_bias")
            || name.ends_with("attn.attention.bias")
            || name.ends_with("attn.attention.masked_bias")
            || name.ends_with("attn.causal_mask")
            || name.ends_with("position_ids")
            || name.ends_with("inv_freq")
    };
    let params: usize = weights
        .names()
        .filter(|n| !is_buffer(n))
        .map(|n| weights.shape(n).map_or(0, |s| s.iter().product::<usize>()))
        .sum();
    let mut facts = json!({
        "path": model.path,
        "family": model.family.name(),
        "model_type": pick(&config, &["model_type"]),
        "layers": pick(&config, &["n_layer", "num_hidden_layers", "num_layers"]),
        "hidden": pick(&config, &["n_embd", "hidden_size", "d_model"]),
        "heads": pick(&config, &["n_head", "num_attention_heads", "num_heads"]),
        "kv_heads": pick(&config, &["num_key_value_heads", "multi_query_group_num", "n_head", "num_attention_heads", "num_heads"]),
        "vocab": pick(&config, &["vocab_size", "padded_vocab_size"]),
        "context": pick(&config, &["n_positions", "max_position_embeddings", "seq_length", "max_sequence_length"]),
        "parameters": params,
        "fp32_bytes": params * 4,
        "fp16_bytes": params * 2,
    });
    if model.family == burn_zoo::resolve::Family::Blip2 {
        // The language model's shape, the vision side counted apart, an image's token cost.
        let count = |prefixes: &[&str]| -> usize {
            weights
                .names()
                .filter(|n| !is_buffer(n) && prefixes.iter().any(|p| n.starts_with(p)))
                .map(|n| weights.shape(n).map_or(0, |s| s.iter().product::<usize>()))
                .sum()
        };
        let text = config.get("text_config").cloned().unwrap_or_default();
        for (key, names) in [
            ("layers", &["num_hidden_layers"][..]),
            ("hidden", &["hidden_size"]),
            ("heads", &["num_attention_heads"]),
            ("kv_heads", &["num_key_value_heads", "num_attention_heads"]),
            ("vocab", &["vocab_size"]),
            ("context", &["max_position_embeddings"]),
        ] {
            facts[key] = pick(&text, names);
        }
        facts["vision_parameters"] = json!(count(&["vision_model."]));
        facts["qformer_parameters"] =
            json!(count(&["qformer.", "query_tokens", "language_projection."]));
        facts["language_model_parameters"] = json!(count(&["language_model."]));
        facts["image_tokens"] = pick(&config, &["num_query_tokens"]);
    }
    if model.family == burn_zoo::resolve::Family::T5 {
        // `layers` is the encoder's; the decoder defaults to the same depth.
        let decoder = pick(&config, &["num_decoder_layers"]);
        facts["decoder_layers"] = if decoder.is_null() {
            facts["layers"].clone()
        } else {
            decoder
        };
    }
    Ok(facts)
}

/// `folder_facts` of a MiniGPT-4 release folder: the language model's shape from
/// `vicuna/config.json`, the parameters counted from the tensors its load uses.
fn release_facts(model: &ModelRef) -> anyhow::Result<serde_json::Value> {
    let config = burn_zoo::blip2::release::read_config(&model.path)?;
    let counts = burn_zoo::blip2::release::parameter_counts(&model.path)?;
    let t = &config.text;
    let params = counts.vision + counts.qformer + counts.language_model;
    Ok(json!({
        "path": model.path,
        "family": model.family.name(),
        "model_type": "minigpt4 (LAVIS release layout)",
        "layers": t.num_hidden_layers,
        "hidden": t.hidden_size,
        "heads": t.num_attention_heads,
        "kv_heads": t.num_key_value_heads.unwrap_or(t.num_attention_heads),
        "vocab": t.vocab_size,
        "context": t.context_length(),
        "parameters": params,
        "fp32_bytes": params * 4,
        "fp16_bytes": params * 2,
        "vision_parameters": counts.vision,
        "qformer_parameters": counts.qformer,
        "language_model_parameters": counts.language_model,
        "image_tokens": config.num_query_tokens,
    }))
}
