//! `zoo chat`: a conversation in the model's chat format, streaming each reply.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::bail;
use burn_zoo::nn::{Conversation, GenerationConfig, Template, TemplateFormat};
use burn_zoo::resolve::Family;
use serde_json::json;

use super::{
    fetch, print_json, resolve_model, stream_to_stdout, Context, SamplingArgs, WeightArgs,
};

/// Arguments of `zoo chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// A catalog id, a model folder or a .gguf file.
    pub model: String,
    /// One user message: answer it and exit (otherwise: read messages from stdin).
    #[arg(long)]
    pub message: Option<String>,
    /// A system message put first.
    #[arg(long)]
    pub system: Option<String>,
    /// Prompt format: the checkpoint's own template by default, else the catalog's; or one of
    /// chatml, alpaca, vicuna-v1.1, llama-2-chat, zephyr.
    #[arg(long)]
    pub template: Option<String>,
    /// Tokens per reply at most.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// BLIP-2 / MiniGPT-4: the PNG or JPEG image the conversation is about (MiniGPT-4's
    /// prompt puts it at `<ImageHere>` in the first message).
    #[arg(long)]
    pub image: Option<std::path::PathBuf>,
    /// Sampling (greedy unless --temperature, --top-k or --top-p is given).
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// A PEFT LoRA adapter folder to apply (`adapter_model.safetensors` + `adapter_config.json`).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

/// `zoo chat`.
pub fn chat(ctx: &Context, args: ChatArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    // --template wins; else the checkpoint's own format; else the catalog's for its models.
    let template = match &args.template {
        Some(name) => Some(Template::named(name)?),
        None => None,
    };
    // Only consulted when the checkpoint has no format of its own: the catalog also names
    // formats that live in a family's crate (chatglm…, moss), which the checkpoint then brings.
    let catalog_template = || -> anyhow::Result<Option<Template>> {
        Ok(fetch::catalog()
            .ok()
            .and_then(|c| c.get(&args.model).ok().map(|e| e.template.clone()))
            .filter(|t| t != "none")
            .map(|name| Template::named(&name))
            .transpose()?)
    };
    if ctx.json && args.message.is_none() {
        bail!("--json needs --message (one turn)");
    }
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.sampling(false)?,
        stop_ids: None,
    };
    let format = args.weights.format()?;
    let stream = !ctx.json;
    let kind = ctx.backend()?;
    let mut lm = super::run::open_lm(kind, &model.path, format, args.adapter.as_deref())?;
    match (&args.image, model.family == Family::Blip2) {
        (Some(image), _) => {
            lm.set_image(image)?;
        }
        (None, true) => bail!("a MiniGPT-4 / BLIP-2 chat is about an image: pass --image FILE"),
        (None, false) => {}
    }
    match (template, lm.has_chat_format()) {
        (Some(t), _) => lm.set_chat_format(Arc::new(TemplateFormat::new(t, None))),
        (None, false) => {
            if let Some(t) = catalog_template()? {
                lm.set_chat_format(Arc::new(TemplateFormat::new(t, None)));
            }
        }
        (None, true) => {}
    }
    if !lm.has_chat_format() {
        bail!(
            "{} has no chat template: pass --template (chatml, alpaca, vicuna-v1.1, llama-2-chat, zephyr)",
            model.path.display()
        );
    }
    {
        let mut conversation = Conversation::new(args.system.as_deref());
        let mut lines = std::io::stdin().lock().lines();
        loop {
            let user = match &args.message {
                Some(m) => m.clone(),
                None => {
                    eprint!("> ");
                    std::io::stderr().flush()?;
                    match lines.next() {
                        Some(line) => line?,
                        None => break,
                    }
                }
            };
            if user.trim() == "/reset" {
                conversation.reset();
                eprintln!("(history cleared)");
                continue;
            }
            conversation.push_user(&user);
            let out = lm.reply(&mut conversation, &config, |piece| {
                !stream || stream_to_stdout(piece)
            })?;
            if ctx.json {
                print_json(&json!({
                    "reply": out.text.unwrap_or_default(),
                    "prompt_tokens": out.stats.prompt_len,
                    "new_tokens": out.stats.new_tokens,
                    "decode_tok_s": out.stats.decode_rate(),
                }))?;
            } else {
                println!();
                eprintln!("[{}]", out.stats.summary());
            }
            if args.message.is_some() {
                break;
            }
        }
    }
    Ok(())
}
