//! `zoo forward` and `zoo generate`: the verification interface and text generation.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use burn::tensor::backend::Backend;
use burn_zoo::backends::{self, BackendTask};
use burn_zoo::gpt2;
use burn_zoo::nn::generate::ids_tensor;
use burn_zoo::nn::tokenizer::TextStream;
use burn_zoo::nn::{generate as generate_loop, CausalLm, Logits, Sampler, Sampling, TextTokenizer};
use burn_zoo::resolve::{Family, ModelRef};
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
    /// Always take the most likely token.
    #[arg(long)]
    pub greedy: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
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
    /// Do not stop at the model's end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
}

/// `zoo forward`.
pub fn forward(ctx: &Context, args: ForwardArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    let ids = parse_ids(&args.ids)?;
    let kind = ctx.backend()?;
    let rows = backends::run(
        kind,
        ForwardTask {
            model,
            ids: ids.clone(),
            hidden: args.hidden,
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
            .fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
        println!("  position {pos} (id {id}): argmax {best} ({value:.4})");
    }
    Ok(())
}

struct ForwardTask {
    model: ModelRef,
    ids: Vec<u32>,
    hidden: bool,
}

impl BackendTask for ForwardTask {
    type Output = anyhow::Result<Vec<Vec<f32>>>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        match self.model.family {
            Family::Gpt2 => {
                let (_, model) = gpt2::load::<B>(&self.model.path, &device)?;
                check_ids(&self.ids, model.vocab_size(), model.max_positions())?;
                let ids = ids_tensor::<B>(&self.ids, &device);
                let out = if self.hidden {
                    let mut cache = model.cache(1, self.ids.len());
                    model.hidden(ids, &mut cache)?
                } else {
                    let mut cache = model.new_cache(1, self.ids.len());
                    model.forward_cached(ids, &mut cache, Logits::All)?
                };
                rows(out)
            }
        }
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
    Ok((0..t).map(|i| values[i * n..(i + 1) * n].to_vec()).collect())
}

/// `zoo generate`.
pub fn generate(ctx: &Context, args: GenerateArgs) -> anyhow::Result<()> {
    let model = resolve_model(&args.model)?;
    let tokenizer = TextTokenizer::from_dir(&model.path)?;
    let prompt_ids = match (&args.prompt, &args.ids) {
        (_, Some(ids)) => parse_ids(ids)?,
        (Some(text), None) => {
            let tokenizer = tokenizer.as_ref().with_context(|| {
                format!(
                    "{} has no tokenizer (tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe): use --ids",
                    model.path.display()
                )
            })?;
            let ids = tokenizer.encode(text, false)?;
            if ids.is_empty() {
                bail!("the prompt encodes to no tokens");
            }
            ids
        }
        (None, None) => bail!("give --prompt TEXT or --ids 1,2,3"),
    };
    let sampling = Sampling {
        greedy: args.greedy,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repeat_penalty: args.repeat_penalty,
        seed: args.seed,
    };
    sampling.validate().map_err(anyhow::Error::msg)?;
    let kind = ctx.backend()?;
    let task = GenerateTask {
        path: model.path.clone(),
        family: model.family,
        prompt: prompt_ids,
        prompt_text: args.prompt.clone(),
        max_new: args.max_new_tokens,
        sampling,
        ignore_eos: args.ignore_eos,
        tokenizer,
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
    let decode_rate = if out.decode_secs > 0.0 {
        (out.ids.len().saturating_sub(1)) as f64 / out.decode_secs
    } else {
        0.0
    };
    eprintln!(
        "[{kind}] prompt {} tokens in {:.3}s ({:.1} tok/s), {} new tokens, decode {:.1} tok/s",
        out.prompt_len,
        out.prefill_secs,
        out.prompt_len as f64 / out.prefill_secs.max(1e-9),
        out.ids.len(),
        decode_rate
    );
    Ok(())
}

struct GenerateTask {
    path: PathBuf,
    family: Family,
    prompt: Vec<u32>,
    prompt_text: Option<String>,
    max_new: usize,
    sampling: Sampling,
    ignore_eos: bool,
    tokenizer: Option<TextTokenizer>,
    stream: bool,
}

struct GenerateOutput {
    ids: Vec<u32>,
    text: Option<String>,
    prompt_len: usize,
    prefill_secs: f64,
    decode_secs: f64,
}

impl BackendTask for GenerateTask {
    type Output = anyhow::Result<GenerateOutput>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        match self.family {
            Family::Gpt2 => {
                let (config, model) = gpt2::load::<B>(&self.path, &device)?;
                let stop: Vec<u32> = if self.ignore_eos {
                    vec![]
                } else {
                    config.eos_token_id.into_iter().collect()
                };
                self.run_model(&model, &stop)
            }
        }
    }
}

impl GenerateTask {
    fn run_model<B: Backend, M: CausalLm<B>>(
        &self,
        model: &M,
        stop: &[u32],
    ) -> anyhow::Result<GenerateOutput>
    where
        M::Error: 'static,
    {
        let mut sampler = Sampler::new(self.sampling.clone());
        let mut stdout = std::io::stdout().lock();
        if self.stream {
            match (&self.prompt_text, &self.tokenizer) {
                (Some(text), _) => write!(stdout, "{text}")?,
                (None, Some(tok)) => write!(stdout, "{}", tok.decode(&self.prompt, false)?)?,
                (None, None) => {}
            }
            stdout.flush()?;
        }
        let mut stream = TextStream::new(&self.prompt);
        let start = Instant::now();
        let mut first_token_at = None;
        let mut failure: Option<anyhow::Error> = None;
        let ids = generate_loop(model, &self.prompt, self.max_new, &mut sampler, stop, |id| {
            if first_token_at.is_none() {
                first_token_at = Some(start.elapsed().as_secs_f64());
            }
            if !self.stream {
                return true;
            }
            let result = match &self.tokenizer {
                Some(tok) => stream
                    .push(tok, id)
                    .map_err(anyhow::Error::from)
                    .and_then(|piece| match piece {
                        Some(piece) => write!(stdout, "{piece}").map_err(anyhow::Error::from),
                        None => Ok(()),
                    }),
                None => write!(stdout, " {id}").map_err(anyhow::Error::from),
            }
            .and_then(|()| stdout.flush().map_err(anyhow::Error::from));
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
        let text = match &self.tokenizer {
            Some(tok) => Some(tok.decode(&ids, false)?),
            None => None,
        };
        Ok(GenerateOutput {
            text,
            prompt_len: self.prompt.len(),
            prefill_secs,
            decode_secs: total - prefill_secs,
            ids,
        })
    }
}
