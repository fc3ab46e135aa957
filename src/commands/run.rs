//! `zoo forward` and `zoo generate`: the verification interface and text generation.

use std::path::PathBuf;

use anyhow::bail;
use burn_zoo::eval::ForwardOptions;
use burn_zoo::nn::WeightFormat;
use burn_zoo::nn::{GenerationConfig, Logits};
use burn_zoo::resolve::Family;
use burn_zoo::seq2seq::DynSeq2Seq;
use burn_zoo::DynLanguageModel;
use serde_json::json;

use super::{
    parse_ids, print_json, resolve_model, stream_to_stdout, Context, SamplingArgs, WeightArgs,
};

/// Arguments of `zoo forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// A catalog id or a model folder.
    pub model: String,
    /// Token ids, comma separated: `--ids 1,2,3`.
    #[arg(long)]
    pub ids: String,
    /// Print the final hidden states (after the last norm) instead of the logits.
    #[arg(long)]
    pub hidden: bool,
    /// BERT: token type (segment) ids, one per id.
    #[arg(long)]
    pub token_type_ids: Option<String>,
    /// BERT: attention mask, one 0 or 1 per id (default: all 1).
    #[arg(long)]
    pub attention_mask: Option<String>,
    /// T5: the decoder's input ids (`--ids` are then the encoder's), starting with the decoder
    /// start token (0), as transformers takes `decoder_input_ids`.
    #[arg(long)]
    pub decoder_ids: Option<String>,
    /// BLIP-2 / MiniGPT-4: a PNG or JPEG image whose query embeddings replace the ids' image
    /// placeholders (`num_query_tokens` copies of `image_token_index`).
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// An adapter folder to apply: PEFT LoRA (GPT-2, LLaMA, GLM) or ChatGLM-6B / ChatGLM2/3 P-Tuning v2.
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

/// Arguments of `zoo generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A catalog id or a model folder.
    pub model: String,
    /// The prompt text, encoded as the model's own tokenizer does (bos included where it adds
    /// one).
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma separated.
    #[arg(long)]
    pub ids: Option<String>,
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling (samples at temperature 1.0 unless --greedy).
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Do not stop at the model's end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// BLIP-2 / MiniGPT-4: a PNG or JPEG image whose query embeddings replace the prompt's
    /// image placeholders.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// A PEFT LoRA adapter folder to apply (`adapter_model.safetensors` + `adapter_config.json`).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

/// `zoo forward`.
pub fn forward(ctx: &Context, args: ForwardArgs) -> anyhow::Result<()> {
    let ids = parse_ids(&args.ids)?;
    let parse_opt = |s: &Option<String>| s.as_deref().map(parse_ids).transpose();
    let options = ForwardOptions {
        hidden: args.hidden,
        token_type_ids: parse_opt(&args.token_type_ids)?,
        attention_mask: parse_opt(&args.attention_mask)?,
        format: args.weights.format()?,
        decoder_ids: parse_opt(&args.decoder_ids)?,
    };
    let model = resolve_model(&args.model)?;
    let kind = ctx.backend()?;
    let rows = if args.image.is_some() || args.adapter.is_some() {
        let lm = open_lm(kind, &model.path, options.format, args.adapter.as_deref())?;
        if let Some(image) = &args.image {
            lm.set_image(image)?;
        }
        let what = if args.hidden {
            Logits::Hidden
        } else {
            Logits::All
        };
        lm.forward_rows(&ids, what)?
    } else {
        burn_zoo::eval::forward_on(kind, &model, &ids, &options)?
    };
    let what = if args.hidden { "hidden" } else { "logits" };
    if ctx.json {
        return print_json(&json!({ what: rows }));
    }
    println!(
        "{what}: {} positions x {} (backend {kind}); use --json for the values",
        rows.len(),
        rows.first().map_or(0, Vec::len)
    );
    for (pos, (id, row)) in ids.iter().zip(&rows).enumerate() {
        let (best, value) = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        println!("  position {pos} (id {id}): argmax {best} ({value:.4})");
    }
    Ok(())
}

/// A causal LM, with a PEFT LoRA adapter applied when one is given.
pub fn open_lm(
    kind: burn_zoo::backends::BackendKind,
    path: &std::path::Path,
    format: burn_zoo::nn::WeightFormat,
    adapter: Option<&std::path::Path>,
) -> anyhow::Result<DynLanguageModel> {
    Ok(match adapter {
        Some(dir) => DynLanguageModel::open_adapted(kind, path, format, dir)?,
        None => DynLanguageModel::open(kind, path, format)?,
    })
}

/// `zoo generate`.
pub fn generate(ctx: &Context, args: GenerateArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    let ids = args.ids.as_deref().map(parse_ids).transpose()?;
    if ids.is_none() && args.prompt.is_none() {
        bail!("give --prompt TEXT or --ids 1,2,3");
    }
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.sampling(true)?,
        stop_ids: args.ignore_eos.then(Vec::new),
    };
    let format = args.weights.format()?;
    let stream = !ctx.json;
    let kind = ctx.backend()?;
    if model.family == Family::T5 {
        return generate_seq2seq(ctx, &args, &model.path, ids, &config, format);
    }
    let lm = open_lm(kind, &model.path, format, args.adapter.as_deref())?;
    let image = args.image.as_deref().map(|p| lm.set_image(p)).transpose()?;
    let prompt = match (&ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => lm.encode(text)?,
        (None, None) => unreachable!("checked above"),
    };
    if stream {
        match (&args.prompt, lm.tokenizer()) {
            (Some(text), _) => stream_to_stdout(text),
            (None, Some(_)) => stream_to_stdout(&lm.decode(&prompt, false)?),
            (None, None) => true,
        };
    }
    let out = lm.generate(&prompt, &config, |piece| !stream || stream_to_stdout(piece))?;
    if ctx.json {
        let mut value = json!({ "ids": out.ids, "prompt_ids": prompt });
        if let Some(image) = &image {
            value["image_tokens"] = json!(image.tokens);
            value["image_encode_secs"] = json!(image.preprocess_secs + image.encode_secs);
        }
        if let Some(text) = out.text {
            value["text"] = json!(text);
        }
        print_json(&value)?;
    } else if out.text.is_none() {
        // Without a tokenizer nothing was streamed: print the ids.
        let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
    } else {
        println!();
    }
    if let Some(image) = &image {
        eprintln!(
            "[{kind}] image: {} positions, read in {:.3}s, encoded in {:.3}s",
            image.tokens, image.preprocess_secs, image.encode_secs
        );
    }
    eprintln!("[{kind}] {}", out.stats.summary());
    Ok(())
}

/// `zoo generate` on an encoder-decoder (T5): the prompt (text, or `--ids`) is the encoder's
/// input; the new decoder ids are printed without the start token.
fn generate_seq2seq(
    ctx: &Context,
    args: &GenerateArgs,
    path: &std::path::Path,
    ids: Option<Vec<u32>>,
    config: &GenerationConfig,
    format: WeightFormat,
) -> anyhow::Result<()> {
    let kind = ctx.backend()?;
    let t5 = DynSeq2Seq::open(kind, path, format)?;
    let encoder_ids = match (ids, &args.prompt) {
        (Some(ids), _) => ids,
        (None, Some(text)) => t5.encode(text)?,
        (None, None) => bail!("give --prompt TEXT or --ids 1,2,3"),
    };
    let stream = !ctx.json;
    let out = t5.generate(&encoder_ids, config, |piece| {
        !stream || stream_to_stdout(piece)
    })?;
    if ctx.json {
        let mut value = json!({ "ids": out.ids, "encoder_ids": encoder_ids });
        if let Some(text) = out.text {
            value["text"] = json!(text);
        }
        print_json(&value)?;
    } else if out.text.is_none() {
        let ids: Vec<String> = out.ids.iter().map(u32::to_string).collect();
        println!("{}", ids.join(" "));
    } else {
        println!();
    }
    eprintln!("[{kind}] {}", out.stats.summary());
    Ok(())
}
