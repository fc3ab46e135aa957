//! `zoo embed`, `zoo similarity`, `zoo fill-mask`: the BERT family.

use std::io::BufRead;

use anyhow::bail;
use burn_zoo::nn::WeightFormat;
use burn_zoo::resolve::{Family, ModelRef};
use serde_json::json;

use super::{print_json, resolve_model, Context, WeightArgs};

/// Arguments of `zoo embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// A catalog id or a BERT / sentence-transformers folder.
    pub model: String,
    /// Texts to embed; none: one text per line from stdin.
    pub texts: Vec<String>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32, value_parser = super::positive)]
    pub batch_size: usize,
    /// Fail instead of truncating texts longer than the model's maximum.
    #[arg(long)]
    pub no_truncate: bool,
    /// A PEFT LoRA adapter folder to apply (e.g. one `zoo finetune --method lora` wrote).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub weights: WeightArgs,
}

/// Arguments of `zoo similarity`.
#[derive(Debug, clap::Args)]
pub struct SimilarityArgs {
    /// A catalog id or a BERT / sentence-transformers folder.
    pub model: String,
    /// Two or more texts.
    #[arg(num_args = 2.., required = true)]
    pub texts: Vec<String>,
}

/// Arguments of `zoo fill-mask`.
#[derive(Debug, clap::Args)]
pub struct FillMaskArgs {
    /// A catalog id or a BERT masked-LM folder.
    pub model: String,
    /// Text with one or more [MASK] tokens.
    pub text: String,
    /// Candidates per mask.
    #[arg(long, default_value_t = 5, value_parser = super::positive)]
    pub top: usize,
    /// A PEFT LoRA adapter folder to apply (e.g. one `zoo finetune --method lora` wrote).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

fn bert_model(spec: &str) -> anyhow::Result<ModelRef> {
    let model = resolve_model(spec)?;
    if model.family != Family::Bert {
        bail!(
            "{spec} is a {} model; this command needs a BERT encoder",
            model.family.name()
        );
    }
    Ok(model)
}

fn embed_texts(
    ctx: &Context,
    model: ModelRef,
    texts: Vec<String>,
    batch: usize,
    truncate: bool,
    format: WeightFormat,
    adapter: Option<&std::path::Path>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    if batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    let kind = ctx.backend()?;
    let n = texts.len();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (out, secs) =
        burn_zoo::encoder::embed_on(kind, &model.path, &refs, batch, truncate, format, adapter)?;
    for (i, t) in out.truncated.iter().enumerate() {
        if *t {
            eprintln!(
                "warning: text {} was truncated to the model's maximum length",
                i + 1
            );
        }
    }
    eprintln!(
        "[{kind}] {n} texts in {secs:.3}s ({:.1} texts/s)",
        n as f64 / secs.max(1e-9)
    );
    Ok(out.vectors)
}

/// `zoo embed`.
pub fn embed(ctx: &Context, args: EmbedArgs) -> anyhow::Result<()> {
    let model = bert_model(&args.model)?;
    let texts = if args.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()?
    } else {
        args.texts
    };
    if texts.is_empty() {
        bail!("no texts: give them as arguments or one per line on stdin");
    }
    let vectors = embed_texts(
        ctx,
        model,
        texts,
        args.batch_size,
        !args.no_truncate,
        args.weights.format()?,
        args.adapter.as_deref(),
    )?;
    if ctx.json {
        return print_json(&json!({ "embeddings": vectors }));
    }
    for v in &vectors {
        let shown: Vec<String> = v.iter().take(8).map(|x| format!("{x:.5}")).collect();
        println!("[{} ...] ({} dims)", shown.join(", "), v.len());
    }
    Ok(())
}

/// `zoo similarity`: cosine similarity of every pair of texts.
pub fn similarity(ctx: &Context, args: SimilarityArgs) -> anyhow::Result<()> {
    let model = bert_model(&args.model)?;
    let vectors = embed_texts(
        ctx,
        model,
        args.texts.clone(),
        32,
        true,
        WeightFormat::AS_STORED,
        None,
    )?;
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb).max(1e-12)
    };
    let n = vectors.len();
    let matrix: Vec<Vec<f32>> = (0..n)
        .map(|i| (0..n).map(|j| cos(&vectors[i], &vectors[j])).collect())
        .collect();
    if ctx.json {
        return print_json(&json!({ "texts": args.texts, "similarity": matrix }));
    }
    for (i, text) in args.texts.iter().enumerate() {
        println!("[{}] {text}", i + 1);
    }
    print!("{:>6}", "");
    for j in 0..n {
        print!("{:>8}", format!("[{}]", j + 1));
    }
    println!();
    for (i, row) in matrix.iter().enumerate() {
        print!("{:>6}", format!("[{}]", i + 1));
        for v in row {
            print!("{v:>8.4}");
        }
        println!();
    }
    Ok(())
}

/// `zoo fill-mask`.
pub fn fill_mask(ctx: &Context, args: FillMaskArgs) -> anyhow::Result<()> {
    let model = bert_model(&args.model)?;
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    let kind = ctx.backend()?;
    let masks = burn_zoo::encoder::fill_mask_on(
        kind,
        &model.path,
        &args.text,
        args.top,
        args.adapter.as_deref(),
    )?;
    if ctx.json {
        let list: Vec<_> = masks
            .iter()
            .map(|c| {
                c.iter()
                    .map(|c| json!({"token": c.token, "id": c.id, "score": c.prob}))
                    .collect::<Vec<_>>()
            })
            .collect();
        return print_json(&json!({ "masks": list }));
    }
    for (i, candidates) in masks.iter().enumerate() {
        if masks.len() > 1 {
            println!("[MASK] #{}", i + 1);
        }
        for c in candidates {
            println!("{:>8.4}  {}", c.prob, c.token);
        }
    }
    Ok(())
}
