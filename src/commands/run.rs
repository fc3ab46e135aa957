//! `zoo forward` and `zoo generate`: the verification interface and text generation.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context as _};
use burn::tensor::backend::Backend;
use burn_zoo::backends::{self, BackendTask};
use burn_zoo::glm::{self, GlmKind};
use burn_zoo::nn::generate::ids_tensor;
use burn_zoo::nn::tokenizer::TextStream;
use burn_zoo::nn::{generate as generate_loop, CausalLm, Logits, Sampler, Sampling, TextTokenizer};
use burn_zoo::resolve::{config_eos_ids, Family, ModelRef};
use burn_zoo::{bert, gpt2, llama};
use serde_json::json;

use super::{parse_ids, print_json, resolve_model, Context};

/// Arguments of `zoo forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// A catalog id or a model folder.
    pub model: String,
    /// Token ids, comma separated: `--ids 1,2,3`.
    #[arg(long)]
    pub ids: String,
    /// Print the final hidden states instead of the logits.
    #[arg(long)]
    pub hidden: bool,
    /// BERT: token type (segment) ids, one per id.
    #[arg(long)]
    pub token_type_ids: Option<String>,
    /// BERT: attention mask, one 0 or 1 per id (default: all 1).
    #[arg(long)]
    pub attention_mask: Option<String>,
}

/// The sampling flags of `zoo generate` and `zoo chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Always take the most likely token.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature (generate: 1.0 by default; chat: greedy unless a sampling flag is
    /// given).
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Penalise tokens already in the sequence (1.0: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The checked settings; `sample_by_default` says whether no flag at all means sampling
    /// (generate) or greedy decoding (chat).
    pub fn sampling(&self, sample_by_default: bool) -> anyhow::Result<Sampling> {
        let asked_to_sample =
            self.temperature.is_some() || self.top_k.is_some() || self.top_p.is_some();
        let sampling = Sampling {
            greedy: self.greedy || !(sample_by_default || asked_to_sample),
            temperature: self.temperature.unwrap_or(1.0),
            top_k: self.top_k,
            top_p: self.top_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
        };
        sampling.validate().map_err(anyhow::Error::msg)?;
        Ok(sampling)
    }
}

/// Arguments of `zoo generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A catalog id or a model folder.
    pub model: String,
    /// The prompt text (needs the model's tokenizer).
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
}

/// `zoo forward`.
pub fn forward(ctx: &Context, args: ForwardArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    let ids = parse_ids(&args.ids)?;
    let kind = ctx.backend()?;
    let parse_opt = |s: &Option<String>| s.as_deref().map(parse_ids).transpose();
    let token_type_ids = parse_opt(&args.token_type_ids)?;
    let attention_mask = parse_opt(&args.attention_mask)?;
    if (token_type_ids.is_some() || attention_mask.is_some()) && model.family != Family::Bert {
        bail!("--token-type-ids and --attention-mask are for BERT models");
    }
    let rows = backends::run(
        kind,
        ForwardTask {
            model,
            ids: ids.clone(),
            hidden: args.hidden,
            token_type_ids,
            attention_mask,
        },
    )??;
    if ctx.json {
        let key = if args.hidden { "hidden" } else { "logits" };
        return print_json(&json!({ key: rows }));
    }
    let what = if args.hidden { "hidden" } else { "logits" };
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

struct ForwardTask {
    model: ModelRef,
    ids: Vec<u32>,
    hidden: bool,
    token_type_ids: Option<Vec<u32>>,
    attention_mask: Option<Vec<u32>>,
}

impl BackendTask for ForwardTask {
    type Output = anyhow::Result<Vec<Vec<f32>>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        if self.model.family == Family::Bert {
            return bert_forward::<B>(&self, &device);
        }
        let what = if self.hidden {
            Logits::Hidden
        } else {
            Logits::All
        };
        with_causal_lm::<B, _>(
            &self.model,
            &device,
            ForwardVisitor {
                ids: &self.ids,
                what,
            },
        )
    }
}

struct ForwardVisitor<'a> {
    ids: &'a [u32],
    what: Logits,
}

impl LmVisitor for ForwardVisitor<'_> {
    type Out = Vec<Vec<f32>>;

    fn visit<B: Backend, M: CausalLm<B>>(
        self,
        model: &M,
        _: LmExtras,
    ) -> anyhow::Result<Self::Out> {
        check_ids(self.ids, model.vocab_size(), model.max_positions())?;
        let device = model.device();
        let mut cache = model.new_cache(1, self.ids.len());
        let out =
            model.forward_cached(ids_tensor::<B>(self.ids, &device), &mut cache, self.what)?;
        rows(out)
    }
}

/// `zoo forward` on a BERT checkpoint: MLM logits (or hidden states) per position.
fn bert_forward<B: Backend>(
    task: &ForwardTask,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (config, model) = bert::load::<B>(&task.model.path, device)?;
    let types = task.token_type_ids.as_ref().map(|t| vec![t.clone()]);
    let batch = bert::Batch::new(
        std::slice::from_ref(&task.ids),
        types.as_deref(),
        config.pad_token_id,
        model.vocab_size(),
        model.type_vocab_size(),
    )?;
    let (ids, types, mut mask) = batch.tensors::<B>(device);
    if let Some(m) = &task.attention_mask {
        if m.len() != task.ids.len() || m.iter().any(|&v| v > 1) {
            bail!(
                "--attention-mask needs one 0 or 1 per id ({} ids)",
                task.ids.len()
            );
        }
        let data: Vec<i64> = m.iter().map(|&v| v as i64).collect();
        mask = burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(data, [1, m.len()]),
            device,
        );
    }
    let hidden = model.forward(ids, Some(types), Some(mask))?;
    if task.hidden {
        return rows(hidden);
    }
    match model.mlm_logits(hidden) {
        Some(logits) => rows(logits),
        None => bail!(
            "{} has no masked-LM head: use --hidden",
            task.model.path.display()
        ),
    }
}

/// What a loaded causal LM brings besides its module.
pub struct LmExtras {
    /// The checkpoint's tokenizer, if it ships one.
    pub tokenizer: Option<TextTokenizer>,
    /// Ids at which generation stops.
    pub stop_ids: Vec<u32>,
    /// Beginning-of-sequence id to put first, when the model wants one.
    pub bos: Option<u32>,
    /// The checkpoint's own chat template (LLaMA family).
    pub template: Option<llama::Template>,
    /// The ChatGLM generation whose chat format builds prompts as ids (GLM family).
    pub glm_chat: Option<glm::Generation>,
}

/// Code that runs on any causal LM of the zoo.
pub trait LmVisitor {
    /// What it returns.
    type Out;
    /// Runs on the loaded model.
    fn visit<B: Backend, M: CausalLm<B>>(
        self,
        model: &M,
        extras: LmExtras,
    ) -> anyhow::Result<Self::Out>;
}

/// Loads the causal LM at `model` on backend `B` and hands it to `visitor`.
pub fn with_causal_lm<B: Backend, V: LmVisitor>(
    model: &ModelRef,
    device: &B::Device,
    visitor: V,
) -> anyhow::Result<V::Out> {
    let path = &model.path;
    match model.family {
        Family::Gpt2 => {
            let (config, m) = gpt2::load::<B>(path, device)?;
            let extras = LmExtras {
                tokenizer: TextTokenizer::from_dir(path)?,
                stop_ids: config.eos_token_id.into_iter().collect(),
                bos: None,
                template: None,
                glm_chat: None,
            };
            visitor.visit(&m, extras)
        }
        Family::Llama => {
            let l = llama::open::<B>(path, device)?;
            let extras = LmExtras {
                tokenizer: l.tokenizer,
                stop_ids: l.stop_ids,
                bos: if l.add_bos { l.bos_id } else { None },
                template: l.template,
                glm_chat: None,
            };
            visitor.visit(&l.model, extras)
        }
        Family::Glm => {
            let glm_chat = glm::tokenizer::detect_generation(path)?;
            let tokenizer = match glm_chat {
                Some(generation) => Some(glm::tokenizer::load_tokenizer(path, generation)?),
                None => TextTokenizer::from_dir(path)?,
            };
            match glm::detect(path)? {
                GlmKind::V1 => {
                    let (config, m) = glm::v1::load::<B>(path, device)?;
                    let extras = LmExtras { tokenizer, stop_ids: vec![config.eos_token_id], bos: None, template: None, glm_chat };
                    visitor.visit(&m, extras)
                }
                GlmKind::V2 => {
                    let (_, m) = glm::v2::load::<B>(path, device)?;
                    let extras = LmExtras { tokenizer, stop_ids: config_eos_ids(path), bos: None, template: None, glm_chat };
                    visitor.visit(&m, extras)
                }
                GlmKind::Hf => {
                    let (config, m) = glm::hf::load::<B>(path, device)?;
                    let extras = LmExtras { tokenizer, stop_ids: config.eos_ids(), bos: None, template: None, glm_chat };
                    visitor.visit(&m, extras)
                }
            }
        }
        Family::Bert => bail!(
            "{} is a BERT encoder, not a causal language model: use `zoo embed`, `zoo fill-mask` or `zoo forward`",
            path.display()
        ),
    }
}

fn check_ids(ids: &[u32], vocab: usize, context: usize) -> anyhow::Result<()> {
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        bail!("token id {bad} is outside the vocabulary of {vocab} tokens");
    }
    if ids.len() > context {
        bail!("{} ids exceed the model's context of {context}", ids.len());
    }
    Ok(())
}

/// `[1, t, n]` → t rows of n floats.
fn rows<B: Backend>(tensor: burn::tensor::Tensor<B, 3>) -> anyhow::Result<Vec<Vec<f32>>> {
    let [_, t, n] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("reading the output: {e:?}"))?;
    Ok((0..t)
        .map(|i| values[i * n..(i + 1) * n].to_vec())
        .collect())
}

/// `zoo generate`.
pub fn generate(ctx: &Context, args: GenerateArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    let prompt = match (&args.prompt, &args.ids) {
        (_, Some(ids)) => Prompt::Ids(parse_ids(ids)?),
        (Some(text), None) => Prompt::Text(text.clone()),
        (None, None) => bail!("give --prompt TEXT or --ids 1,2,3"),
    };
    let sampling = args.sampling.sampling(true)?;
    let kind = ctx.backend()?;
    let task = GenerateTask {
        model,
        prompt,
        max_new: args.max_new_tokens,
        sampling,
        ignore_eos: args.ignore_eos,
        stream: !ctx.json,
    };
    let out = backends::run(kind, task)??;
    if ctx.json {
        let mut value = json!({ "ids": out.ids });
        if let Some(text) = out.text {
            value["text"] = json!(text);
        }
        print_json(&value)?;
    } else {
        println!();
    }
    eprintln!("[{kind}] {}", out.stats.summary());
    Ok(())
}

/// The prompt as the user gave it.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Text, tokenized with the model's tokenizer.
    Text(String),
    /// Token ids, used as they are.
    Ids(Vec<u32>),
}

struct GenerateTask {
    model: ModelRef,
    prompt: Prompt,
    max_new: usize,
    sampling: Sampling,
    ignore_eos: bool,
    stream: bool,
}

/// Timings of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    /// Prompt tokens.
    pub prompt_len: usize,
    /// New tokens.
    pub new_tokens: usize,
    /// Seconds until the first new token (the prefill).
    pub prefill_secs: f64,
    /// Seconds for the remaining tokens.
    pub decode_secs: f64,
}

impl GenStats {
    /// Prompt tokens per second.
    pub fn prefill_rate(&self) -> f64 {
        self.prompt_len as f64 / self.prefill_secs.max(1e-9)
    }

    /// New tokens per second after the first.
    pub fn decode_rate(&self) -> f64 {
        self.new_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }

    /// One line for stderr.
    pub fn summary(&self) -> String {
        format!(
            "prompt {} tokens in {:.3}s ({:.1} tok/s), {} new tokens, decode {:.1} tok/s",
            self.prompt_len,
            self.prefill_secs,
            self.prefill_rate(),
            self.new_tokens,
            self.decode_rate()
        )
    }
}

struct GenerateOutput {
    ids: Vec<u32>,
    text: Option<String>,
    stats: GenStats,
}

impl BackendTask for GenerateTask {
    type Output = anyhow::Result<GenerateOutput>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let model = self.model.clone();
        with_causal_lm::<B, _>(&model, &device, self)
    }
}

/// Turns the prompt into ids with the model's tokenizer (bos first when the model wants it).
pub fn prompt_ids(
    prompt: &Prompt,
    extras: &LmExtras,
    path: &std::path::Path,
) -> anyhow::Result<Vec<u32>> {
    match prompt {
        Prompt::Ids(ids) => Ok(ids.clone()),
        Prompt::Text(text) => {
            let tokenizer = extras.tokenizer.as_ref().with_context(|| {
                format!(
                    "{} has no tokenizer (tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe): use --ids",
                    path.display()
                )
            })?;
            let mut ids = tokenizer.encode(text, false)?;
            if let Some(bos) = extras.bos {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
            if ids.is_empty() {
                bail!("the prompt encodes to no tokens");
            }
            Ok(ids)
        }
    }
}

impl LmVisitor for GenerateTask {
    type Out = GenerateOutput;

    fn visit<B: Backend, M: CausalLm<B>>(
        self,
        model: &M,
        extras: LmExtras,
    ) -> anyhow::Result<GenerateOutput> {
        let prompt = prompt_ids(&self.prompt, &extras, &self.model.path)?;
        let stop = if self.ignore_eos {
            Vec::new()
        } else {
            extras.stop_ids.clone()
        };
        let mut stdout = std::io::stdout().lock();
        if self.stream {
            match (&self.prompt, &extras.tokenizer) {
                (Prompt::Text(text), _) => write!(stdout, "{text}")?,
                (Prompt::Ids(ids), Some(tok)) => write!(stdout, "{}", tok.decode(ids, false)?)?,
                (Prompt::Ids(_), None) => {}
            }
            stdout.flush()?;
        }
        let sink = |piece: &str| -> anyhow::Result<()> {
            write!(stdout, "{piece}")?;
            stdout.flush()?;
            Ok(())
        };
        let (ids, stats) = run_generation(
            model,
            &prompt,
            self.max_new,
            &self.sampling,
            &stop,
            extras.tokenizer.as_ref(),
            self.stream.then_some(sink),
        )?;
        let text = match &extras.tokenizer {
            Some(tok) => Some(tok.decode(&ids, false)?),
            None => None,
        };
        Ok(GenerateOutput { ids, text, stats })
    }
}

/// Generates after `prompt`, handing each completed piece of text (or ` id` without a
/// tokenizer) to `sink` as soon as it exists; returns the new ids and the timings.
pub fn run_generation<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompt: &[u32],
    max_new: usize,
    sampling: &Sampling,
    stop: &[u32],
    tokenizer: Option<&TextTokenizer>,
    mut sink: Option<impl FnMut(&str) -> anyhow::Result<()>>,
) -> anyhow::Result<(Vec<u32>, GenStats)> {
    let mut sampler = Sampler::new(sampling.clone());
    let mut stream = TextStream::new(prompt);
    let start = Instant::now();
    let mut first_token_at = None;
    let mut failure: Option<anyhow::Error> = None;
    let ids = generate_loop(model, prompt, max_new, &mut sampler, stop, |id| {
        if first_token_at.is_none() {
            first_token_at = Some(start.elapsed().as_secs_f64());
        }
        let Some(sink) = sink.as_mut() else {
            return true;
        };
        if stop.contains(&id) {
            return true;
        }
        let result = match tokenizer {
            Some(tok) => stream
                .push(tok, id)
                .map_err(anyhow::Error::from)
                .and_then(|piece| match piece {
                    Some(piece) => sink(&piece),
                    None => Ok(()),
                }),
            None => sink(&format!(" {id}")),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let total = start.elapsed().as_secs_f64();
    let prefill_secs = first_token_at.unwrap_or(total);
    let stats = GenStats {
        prompt_len: prompt.len(),
        new_tokens: ids.len(),
        prefill_secs,
        decode_secs: total - prefill_secs,
    };
    Ok((ids, stats))
}
