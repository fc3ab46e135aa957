//! `zoo quantize`: a Hugging Face checkpoint written as a GGUF file llama.cpp runs.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use burn_zoo::nn::QType;
use serde_json::json;

use super::{print_json, resolve_model, Context};

/// Arguments of `zoo quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    /// A catalog id or a Hugging Face folder (LLaMA or GPT-2).
    pub model: String,
    /// The type of the transformer's matrices: q8_0, q4_0, q4_1, f16 or f32 (embeddings and an
    /// untied head are written at q8_0 for the 4-bit types; norms stay f32).
    #[arg(long)]
    pub to: String,
    /// The GGUF file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `zoo quantize`.
pub fn quantize(ctx: &Context, args: QuantizeArgs) -> anyhow::Result<()> {
    let to = QType::from_name(&args.to)
        .filter(|t| {
            matches!(
                t,
                QType::F32 | QType::F16 | QType::Q8_0 | QType::Q4_0 | QType::Q4_1
            )
        })
        .with_context(|| format!("--to {}: expected q8_0, q4_0, q4_1, f16 or f32", args.to))?;
    if args.out.is_dir() {
        bail!(
            "--out {} is a folder: name the .gguf file to write",
            args.out.display()
        );
    }
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists: pass --force to overwrite it",
            args.out.display()
        );
    }
    let model = resolve_model(&args.model)?;
    if model.path.canonicalize().ok() == args.out.canonicalize().ok() {
        bail!("--out is the model itself: choose another file");
    }
    let start = std::time::Instant::now();
    let tensors = burn_zoo::export::to_gguf(&model, to, &args.out)?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    if ctx.json {
        return print_json(&json!({
            "out": args.out,
            "type": to.name(),
            "tensors": tensors,
            "bytes": bytes,
        }));
    }
    eprintln!(
        "wrote {} ({tensors} tensors, {:.1} MB, {}) in {:.1}s",
        args.out.display(),
        bytes as f64 / 1e6,
        to.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
