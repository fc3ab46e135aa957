//! The subcommands of `zoo`, one module per group.

pub mod backends;
pub mod bench;
pub mod bert;
pub mod chat;
pub mod compare;
pub mod fetch;
pub mod finetune;
pub mod info;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod web;
pub mod word2vec;

use anyhow::{bail, Context as _};
use burn_zoo::backends::BackendKind;
use burn_zoo::nn::{QType, Sampling, WeightFormat};
use burn_zoo::resolve::{resolve_path, ModelRef};

/// Options every command takes.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--backend` (or `ZOO_BACKEND`), unresolved.
    pub backend: Option<String>,
    /// `--json`.
    pub json: bool,
}

impl Context {
    /// The backend to run on, opened and checked.
    pub fn backend(&self) -> anyhow::Result<BackendKind> {
        let choice = burn_zoo::backends::choice_from(self.backend.as_deref())?;
        Ok(burn_zoo::backends::resolve(choice)?)
    }
}

/// An error and its causes on one line, each cause once: a library error that already shows
/// its source (`cannot read F: No such file`) is not followed by that source again.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    message
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a truncated file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Resolves `MODEL`: a path (a Hugging Face folder), else a catalog id, fetched if needed.
pub fn resolve_model(model: &str) -> anyhow::Result<ModelRef> {
    if names_a_path(model) {
        return Ok(resolve_path(std::path::Path::new(model))?);
    }
    let fetched = fetch::fetch_id(model, None)?;
    Ok(resolve_path(&fetched.path)?)
}

/// Whether a `MODEL` argument is a path (it exists, or has a separator) rather than a catalog id.
pub fn names_a_path(model: &str) -> bool {
    std::path::Path::new(model).exists()
        || model.contains('/')
        || model.contains(std::path::MAIN_SEPARATOR)
}

/// A flag value that must be a whole number of at least 1 (`--top-k 0`, `--batch 0` and the
/// like are rejected by the parser, before anything runs).
pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("`{text}` is not a whole number ({e})")),
    }
}

/// Parses `1,2,3` (spaces allowed) into token ids.
pub fn parse_ids(text: &str) -> anyhow::Result<Vec<u32>> {
    if text.trim().is_empty() {
        bail!("--ids is empty: give at least one token id");
    }
    let ids: Vec<u32> = text
        .split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, s)| {
            if s.is_empty() {
                bail!(
                    "`{text}` has an empty entry at position {}: give ids separated by single commas, as 1,2,3",
                    i + 1
                );
            }
            s.parse::<u32>().with_context(|| {
                format!(
                    "`{s}` is not a token id (expected non-negative integers separated by commas)"
                )
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if ids.is_empty() {
        bail!("--ids is empty: give at least one token id");
    }
    Ok(ids)
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
    #[arg(long, value_parser = positive)]
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

/// The weight-format flags of every command that loads a model.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WeightArgs {
    /// Keep every matrix in this element type: f32, f16 or bf16 (default: as the checkpoint
    /// stores it; a GGUF file's block formats stay as they are).
    #[arg(long, conflicts_with = "quantize")]
    pub dtype: Option<String>,
    /// Quantize the transformer's matrices at load: q8_0, q4_0 or q4_1 (embeddings and an
    /// untied LM head go to q8_0, as llama.cpp keeps the output layer at higher precision).
    #[arg(long)]
    pub quantize: Option<String>,
    /// CPU backends: quantize activations to 8 bits per block before block-format products,
    /// as llama.cpp does (llama.cpp's numbers; faster decode of large models, e.g. LLaMA-2-7B
    /// q4_0 7.5 vs 5.4 tok/s on 2 Zen 4 cores); by default the products are exact for the
    /// stored weights, as on a GPU.
    #[arg(long)]
    pub int8_activations: bool,
}

impl WeightArgs {
    /// The checked formats.
    pub fn format(&self) -> anyhow::Result<WeightFormat> {
        let parse = |name: &str, allowed: &[QType], flag: &str| -> anyhow::Result<QType> {
            QType::from_name(name)
                .filter(|t| allowed.contains(t))
                .with_context(|| {
                    let names: Vec<&str> = allowed.iter().map(|t| t.name()).collect();
                    format!("{flag} {name}: expected one of {}", names.join(", "))
                })
        };
        let mut format = match (&self.dtype, &self.quantize) {
            (Some(_), Some(_)) => bail!("give --dtype or --quantize, not both"),
            (Some(d), None) => {
                WeightFormat::dtype(parse(d, &[QType::F32, QType::F16, QType::BF16], "--dtype")?)
            }
            (None, Some(q)) => WeightFormat::quantized(parse(
                q,
                &[QType::Q8_0, QType::Q4_0, QType::Q4_1],
                "--quantize",
            )?),
            (None, None) => WeightFormat::AS_STORED,
        };
        format.int8_activations = self.int8_activations;
        Ok(format)
    }
}

/// Writes a piece of streamed text to stdout at once; `false` (stop) when stdout is closed.
pub fn stream_to_stdout(piece: &str) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(piece.as_bytes()).is_ok() && out.flush().is_ok()
}

/// Prints a JSON value on stdout.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
