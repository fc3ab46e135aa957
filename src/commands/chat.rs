//! `zoo chat`: a conversation in the model's chat template, streaming each reply.

use std::io::{BufRead, Write};

use anyhow::{bail, Context as _};
use burn::tensor::backend::Backend;
use burn_zoo::backends::{self, BackendTask};
use burn_zoo::glm;
use burn_zoo::llama::{render, Message, Template};
use burn_zoo::nn::{CausalLm, Sampling, TextTokenizer};
use burn_zoo::resolve::ModelRef;
use serde_json::json;

use super::run::{run_generation, with_causal_lm, LmExtras, LmVisitor, SamplingArgs};
use super::{fetch, print_json, resolve_model, Context};

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
    /// Sampling (greedy unless --temperature, --top-k or --top-p is given).
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `zoo chat`.
pub fn chat(ctx: &Context, args: ChatArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    // The catalog names a template for its models; the checkpoint's own one wins over it.
    let catalog_template = fetch::catalog()
        .ok()
        .and_then(|c| c.get(&args.model).ok().map(|e| e.template.clone()))
        .filter(|t| t != "none");
    let template = match &args.template {
        Some(name) => Some(Template::named(name)?),
        None => None,
    };
    let sampling = args.sampling.sampling(false)?;
    if ctx.json && args.message.is_none() {
        bail!("--json needs --message (one turn)");
    }
    let kind = ctx.backend()?;
    backends::run(
        kind,
        ChatTask {
            model,
            args,
            template,
            catalog_template,
            sampling,
            json: ctx.json,
        },
    )?
}

/// How prompts are built from the conversation.
enum Format {
    /// A text template (the checkpoint's Jinja template or a named format).
    Template(Template),
    /// ChatGLM's own id-level format.
    Glm(glm::Generation),
}

impl Format {
    /// The prompt ids for the conversation so far (ending with the user's message).
    fn prompt(
        &self,
        history: &[Message],
        tokenizer: &TextTokenizer,
        bos: Option<u32>,
    ) -> anyhow::Result<Vec<u32>> {
        match self {
            Format::Template(template) => {
                let text = render(template, history, true)?;
                let mut ids = tokenizer.encode(&text, false)?;
                if let Some(bos) = bos.filter(|_| !template.includes_bos()) {
                    if ids.first() != Some(&bos) {
                        ids.insert(0, bos);
                    }
                }
                Ok(ids)
            }
            Format::Glm(generation) => {
                let (query, past) = history.split_last().context("no message")?;
                let turns: Vec<glm::chat::Turn> = past
                    .chunks(2)
                    .filter(|pair| pair.len() == 2)
                    .map(|pair| (pair[0].content.clone(), pair[1].content.clone()))
                    .collect();
                Ok(glm::chat::render_ids(
                    *generation,
                    tokenizer,
                    &turns,
                    &query.content,
                )?)
            }
        }
    }
}

struct ChatTask {
    model: ModelRef,
    args: ChatArgs,
    template: Option<Template>,
    catalog_template: Option<String>,
    sampling: Sampling,
    json: bool,
}

impl BackendTask for ChatTask {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let model = self.model.clone();
        with_causal_lm::<B, _>(&model, &device, self)
    }
}

impl LmVisitor for ChatTask {
    type Out = ();

    fn visit<B: Backend, M: CausalLm<B>>(self, model: &M, extras: LmExtras) -> anyhow::Result<()> {
        let tokenizer = extras
            .tokenizer
            .as_ref()
            .with_context(|| format!("{} has no tokenizer", self.model.path.display()))?;
        // ChatGLM builds its prompts as ids in its own format; the rest render a template.
        let format = match extras.glm_chat {
            Some(generation) => {
                if self.args.system.is_some() || self.template.is_some() {
                    bail!("ChatGLM models use their own chat format: --system and --template do not apply");
                }
                Format::Glm(generation)
            }
            None => Format::Template(
                match (self.template, extras.template.clone(), &self.catalog_template) {
                    (Some(t), _, _) => t,
                    (None, Some(t), _) => t,
                    (None, None, Some(name)) => Template::named(name)?,
                    (None, None, None) => bail!(
                        "{} has no chat template: pass --template (chatml, alpaca, vicuna-v1.1, llama-2-chat, zephyr)",
                        self.model.path.display()
                    ),
                },
            ),
        };
        // Generation ends at the model's eos and at the format's end-of-turn tokens.
        let mut stop = extras.stop_ids.clone();
        match &format {
            Format::Template(template) => {
                for token in template.end_of_turn() {
                    if let Some(id) = tokenizer.token_id(&token) {
                        stop.push(id);
                    }
                }
            }
            Format::Glm(generation) => stop.extend(glm::chat::stop_ids(*generation, tokenizer)?),
        }
        let mut history: Vec<Message> = Vec::new();
        if let Some(system) = &self.args.system {
            history.push(Message::new("system", system));
        }
        let context = model.max_positions();
        let interactive = self.args.message.is_none();
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            let user = match &self.args.message {
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
                history.retain(|m| m.role == "system");
                eprintln!("(history cleared)");
                continue;
            }
            history.push(Message::new("user", &user));
            // Keep the conversation within the context: drop the oldest turns first.
            let prompt = loop {
                let ids = format.prompt(&history, tokenizer, extras.bos)?;
                if ids.len() + self.args.max_new_tokens <= context {
                    break ids;
                }
                let first_turn = history.iter().position(|m| m.role != "system");
                match first_turn {
                    Some(i) if history.len() - i > 1 => {
                        history.remove(i);
                    }
                    _ => bail!(
                        "the message ({} tokens) plus --max-new-tokens {} exceeds the context of {context}",
                        ids.len(),
                        self.args.max_new_tokens
                    ),
                }
            };
            let mut stdout = std::io::stdout().lock();
            let stream = !self.json;
            let sink = |piece: &str| -> anyhow::Result<()> {
                write!(stdout, "{piece}")?;
                stdout.flush()?;
                Ok(())
            };
            let (ids, stats) = run_generation(
                model,
                &prompt,
                self.args.max_new_tokens,
                &self.sampling,
                &stop,
                Some(tokenizer),
                stream.then_some(sink),
            )?;
            let reply_ids: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|id| !stop.contains(id))
                .collect();
            let reply = tokenizer.decode(&reply_ids, true)?;
            if self.json {
                print_json(&json!({
                    "reply": reply.trim(),
                    "prompt_tokens": prompt.len(),
                    "new_tokens": ids.len(),
                    "decode_tok_s": stats.decode_rate(),
                }))?;
            } else {
                println!();
                eprintln!("[{}]", stats.summary());
            }
            history.push(Message::new("assistant", reply.trim()));
            if !interactive {
                break;
            }
        }
        Ok(())
    }
}
