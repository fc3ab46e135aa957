//! `zoo compare --measure`: every model measured on its own weights. Each (model, backend)
//! runs in a child process of this binary (the hidden `zoo __measure`), so the peak memory
//! reported is that model's alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_zoo::backends::{self, BackendKind, BackendTask};
use burn_zoo::bert::{self, SentenceEncoder};
use burn_zoo::catalog::compare::{self, Comparison};
use burn_zoo::nn::{ids_tensor, CausalLm, Logits};
use burn_zoo::resolve::{resolve_path, Family, ModelRef};
use serde_json::{json, Value};

use super::speed_svg::{speed_svg, SpeedBar};
use super::{check_overwrite, CompareArgs};
use crate::commands::bench::{bert_rates, causal_rates, peak_rss_bytes, spread};
use crate::commands::run::{with_causal_lm, LmExtras, LmVisitor};
use crate::commands::{fetch, names_a_path, print_json, Context};

/// Masked copies of a sentence per forward pass when computing pseudo-perplexity.
const MLM_BATCH: usize = 16;

/// How speed is measured, for footnotes and JSON.
const SPEED_METHOD: &str = "causal models: greedy generation of --gen-len tokens after a fixed prompt of --prompt-len pseudo-random token ids (both cut to fit small contexts; the lengths used are in the JSON), batch 1, with the KV cache; prefill = prompt tokens / time to the first new token, decode = new tokens after the first / the remaining time. BERT: batches of one sentence of --prompt-len words. Median of --runs timed runs after one warm-up run, (min–max) in brackets; load = reading the weights onto the device";

/// How memory is measured, for footnotes and JSON.
const MEMORY_METHOD: &str = "peak resident memory (VmHWM, Linux) of a child process of zoo that loaded and measured only this model on this backend: weights, activations and the backend's own allocations; GPU memory is not included; MB = 10⁶ bytes";

/// How perplexity is computed, for footnotes and JSON.
const PERPLEXITY_METHOD: &str = "perplexity = exp(mean negative log-likelihood of each next token) over the --text file as one string, tokenized by the model's own tokenizer (BOS first where the model adds one; the first token is not scored). A text longer than the window (the model's context, or --window) is scored in windows moved by --stride tokens (default half the window): each token is scored once, in the first window that contains it after the part already scored, so after the first window every token has at least window − stride tokens of left context (the strided method of the Hugging Face perplexity guide)";

/// How pseudo-perplexity is computed, for footnotes and JSON.
const PSEUDO_PERPLEXITY_METHOD: &str = "pseudo-perplexity (Salazar et al. 2020, Masked Language Model Scoring) = exp(−mean log p(token | all other tokens)), each token replaced by [MASK] in turn; every non-empty line of the --text file is one sequence [CLS] line [SEP] (a line longer than the model's maximum length is cut into pieces); only BERT checkpoints with a masked-LM head (cls.predictions) have one";

/// The measurement settings `compare --measure` passes on to each child.
#[derive(Debug, Clone, clap::Args)]
pub struct MeasureSettings {
    /// With --measure: prompt tokens of the speed runs (cut to half the context of small
    /// models), or words per sentence for BERT.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// With --measure: tokens generated per speed run (causal models).
    #[arg(long, default_value_t = 32)]
    pub gen_len: usize,
    /// With --measure: timed speed runs after one warm-up run (median and min–max reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// With --measure --text: perplexity window in tokens (default: the model's context).
    #[arg(long)]
    pub window: Option<usize>,
    /// With --measure --text: tokens the perplexity window moves by (default: half the window).
    #[arg(long)]
    pub stride: Option<usize>,
}

impl MeasureSettings {
    fn child_args(&self) -> Vec<String> {
        let mut args = vec![
            "--prompt-len".to_string(),
            self.prompt_len.to_string(),
            "--gen-len".to_string(),
            self.gen_len.to_string(),
            "--runs".to_string(),
            self.runs.to_string(),
        ];
        if let Some(w) = self.window {
            args.extend(["--window".to_string(), w.to_string()]);
        }
        if let Some(s) = self.stride {
            args.extend(["--stride".to_string(), s.to_string()]);
        }
        args
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.runs == 0 || self.prompt_len == 0 || self.gen_len == 0 {
            bail!("--runs, --prompt-len and --gen-len must be at least 1");
        }
        if self.window.is_some_and(|w| w < 2) {
            bail!("--window must be at least 2 tokens");
        }
        if self.stride == Some(0) {
            bail!("--stride must be at least 1 token");
        }
        Ok(())
    }
}

/// Arguments of the hidden `zoo __measure`: one model on one backend, JSON on stdout.
#[derive(Debug, clap::Args)]
pub struct MeasureOneArgs {
    /// A model folder or a .gguf file.
    pub model: PathBuf,
    /// A text file to score.
    #[arg(long)]
    pub text: Option<PathBuf>,
    #[command(flatten)]
    pub settings: MeasureSettings,
}

/// Reads the `--text` file, refusing an empty one.
fn read_text(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the --text file {}", path.display()))?;
    if text.trim().is_empty() {
        bail!(
            "the --text file {} is empty: give some text to score",
            path.display()
        );
    }
    Ok(text)
}

/// `zoo __measure MODEL`: measures one model on the chosen backend, prints one JSON object.
pub fn measure_one(ctx: &Context, args: MeasureOneArgs) -> anyhow::Result<()> {
    args.settings.check()?;
    let model = resolve_path(&args.model)?;
    let text = args.text.as_deref().map(read_text).transpose()?;
    let kind = ctx.backend()?;
    let task = MeasureTask {
        model,
        text,
        settings: args.settings,
    };
    let mut report = backends::run(kind, task)??;
    report["backend"] = json!(kind.name());
    report["peak_rss_bytes"] = json!(peak_rss_bytes());
    print_json(&report)
}

struct MeasureTask {
    model: ModelRef,
    text: Option<String>,
    settings: MeasureSettings,
}

impl BackendTask for MeasureTask {
    type Output = anyhow::Result<Value>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let start = Instant::now();
        if self.model.family == Family::Bert {
            let encoder = SentenceEncoder::<B>::load(&self.model.path, &device)?;
            let load_secs = start.elapsed().as_secs_f64();
            let s = &self.settings;
            let (rates, words) = bert_rates(&encoder, s.prompt_len, 1, s.runs)?;
            let mut out = json!({
                "family": Family::Bert.name(),
                "load_secs": load_secs,
                "words_per_sentence": words,
                "batch": 1,
                "runs": s.runs,
                "sentences_per_s": spread(&rates),
            });
            if let Some(text) = &self.text {
                merge(&mut out, pseudo_perplexity(&encoder, text)?);
            }
            return Ok(out);
        }
        let model = self.model.clone();
        with_causal_lm::<B, _>(&model, &device, (self, start))
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

impl LmVisitor for (MeasureTask, Instant) {
    type Out = Value;

    fn visit<B: Backend, M: CausalLm<B>>(
        self,
        model: &M,
        extras: LmExtras,
    ) -> anyhow::Result<Value> {
        let (task, start) = self;
        let load_secs = start.elapsed().as_secs_f64();
        let s = &task.settings;
        let context = model.max_positions();
        if context < 2 {
            bail!("the model's context of {context} tokens is too short to measure");
        }
        // The text is checked before the speed runs, so that a bad one fails at once.
        let scoring = match (&task.text, &extras.tokenizer) {
            (None, _) => None,
            (Some(_), None) => Some(Err(format!(
                "{} has no tokenizer (tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe): no perplexity",
                task.model.path.display()
            ))),
            (Some(text), Some(tokenizer)) => {
                let mut ids = tokenizer.encode(text, false)?;
                if let Some(bos) = extras.bos {
                    if ids.first() != Some(&bos) {
                        ids.insert(0, bos);
                    }
                }
                if ids.len() < 2 {
                    bail!(
                        "the --text file encodes to {} token(s) with the model's tokenizer: perplexity needs at least 2",
                        ids.len()
                    );
                }
                let vocab = model.vocab_size();
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    bail!("the tokenizer gives id {bad}, outside the model's vocabulary of {vocab}");
                }
                let window = s.window.unwrap_or(context);
                if window > context {
                    bail!("--window {window} exceeds the model's context of {context} tokens");
                }
                let stride = s.stride.unwrap_or((window / 2).max(1));
                if stride > window {
                    bail!("--stride {stride} is longer than the window of {window} tokens");
                }
                Some(Ok((ids, window, stride)))
            }
        };
        let prompt_len = s.prompt_len.min(context / 2).max(1);
        let gen_len = s.gen_len.min(context - prompt_len);
        let (prefill, decode) = causal_rates(model, prompt_len, gen_len, s.runs)?;
        let mut out = json!({
            "family": task.model.family.name(),
            "load_secs": load_secs,
            "prompt_len": prompt_len,
            "gen_len": gen_len,
            "runs": s.runs,
            "prefill_tok_s": spread(&prefill),
            "decode_tok_s": if decode.is_empty() { Value::Null } else { spread(&decode) },
        });
        let (ids, window, stride) = match scoring {
            None => return Ok(out),
            Some(Err(note)) => {
                out["perplexity"] = Value::Null;
                out["perplexity_note"] = json!(note);
                return Ok(out);
            }
            Some(Ok(scoring)) => scoring,
        };
        let (nll, scored, windows) = causal_nll(model, &ids, window, stride)?;
        let mean = nll / scored as f64;
        merge(
            &mut out,
            json!({
                "perplexity": mean.exp(),
                "mean_nll": mean,
                "text_tokens": ids.len(),
                "scored_tokens": scored,
                "window": window,
                "stride": stride,
                "windows": windows,
                "method": format!(
                    "perplexity over {} tokens ({scored} scored) in {windows} window(s) of {window} tokens, stride {stride}; {PERPLEXITY_METHOD}",
                    ids.len()
                ),
            }),
        );
        Ok(out)
    }
}

/// Sum of next-token negative log-likelihoods over `ids` by the strided-window method, the
/// number of tokens scored and the number of windows run.
fn causal_nll<B: Backend, M: CausalLm<B>>(
    model: &M,
    ids: &[u32],
    window: usize,
    stride: usize,
) -> anyhow::Result<(f64, usize, usize)> {
    let device = model.device();
    let n = ids.len();
    let (mut nll, mut scored, mut windows) = (0.0f64, 0usize, 0usize);
    let (mut begin, mut done) = (0usize, 0usize);
    loop {
        let end = (begin + window).min(n);
        // Targets not scored yet that have at least one token of context in this window.
        let first = done.max(begin + 1);
        if first < end {
            let mut cache = model.new_cache(1, end - begin);
            let logits = model
                .forward_cached(
                    ids_tensor::<B>(&ids[begin..end], &device),
                    &mut cache,
                    Logits::All,
                )
                .map_err(anyhow::Error::new)?;
            let vocab = logits.dims()[2];
            let m = end - first;
            // The logits at position p predict the token at p + 1.
            let rows = logits.slice([0..1, first - 1 - begin..end - 1 - begin, 0..vocab]);
            let targets: Vec<i64> = ids[first..end].iter().map(|&i| i as i64).collect();
            let targets =
                Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [1, m, 1]), &device);
            let logp = log_softmax(rows, 2).gather(2, targets);
            nll -= to_f64(logp)?.into_iter().sum::<f64>();
            scored += m;
            windows += 1;
        }
        done = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    Ok((nll, scored, windows))
}

fn to_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> anyhow::Result<Vec<f64>> {
    let values: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("reading log-probabilities: {e:?}"))?;
    Ok(values.into_iter().map(f64::from).collect())
}

/// Pseudo-perplexity of a BERT masked LM on `text`, one line per sequence (Salazar et al.).
fn pseudo_perplexity<B: Backend>(enc: &SentenceEncoder<B>, text: &str) -> anyhow::Result<Value> {
    if enc.model.cls.is_none() {
        return Ok(json!({
            "pseudo_perplexity": null,
            "perplexity_note": "no masked-LM head (cls.predictions) in this checkpoint: no pseudo-perplexity",
        }));
    }
    let tok = enc.tokenizer();
    let id = |t: &str| {
        tok.token_id(t)
            .with_context(|| format!("the tokenizer has no {t} token"))
    };
    let (cls, sep, mask) = (id("[CLS]")?, id("[SEP]")?, id("[MASK]")?);
    let piece = enc.max_len.saturating_sub(2).max(1);
    let device = enc.model.device();
    let (mut nll, mut scored, mut sequences) = (0.0f64, 0usize, 0usize);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ids = tok.encode(line, false)?;
        for chunk in ids.chunks(piece) {
            let mut seq = Vec::with_capacity(chunk.len() + 2);
            seq.push(cls);
            seq.extend_from_slice(chunk);
            seq.push(sep);
            sequences += 1;
            let positions: Vec<usize> = (1..=chunk.len()).collect();
            for group in positions.chunks(MLM_BATCH) {
                let copies: Vec<Vec<u32>> = group
                    .iter()
                    .map(|&p| {
                        let mut c = seq.clone();
                        c[p] = mask;
                        c
                    })
                    .collect();
                let batch = bert::Batch::new(
                    &copies,
                    None,
                    enc.config.pad_token_id,
                    enc.model.vocab_size(),
                    enc.model.type_vocab_size(),
                )?;
                let (ids_t, types, attn) = batch.tensors::<B>(&device);
                let hidden = enc.model.forward(ids_t, Some(types), Some(attn))?;
                let [b, len, d] = hidden.dims();
                // The hidden state of each copy at its masked position, then the MLM head.
                let rows: Vec<i64> = group
                    .iter()
                    .enumerate()
                    .map(|(j, &p)| (j * len + p) as i64)
                    .collect();
                let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [b]), &device);
                let picked = hidden
                    .reshape([b * len, d])
                    .select(0, rows)
                    .reshape([b, 1, d]);
                let logits = enc
                    .model
                    .mlm_logits(picked)
                    .context("the checkpoint has no masked-LM head")?;
                let targets: Vec<i64> = group.iter().map(|&p| seq[p] as i64).collect();
                let targets =
                    Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [b, 1, 1]), &device);
                let logp = log_softmax(logits, 2).gather(2, targets);
                nll -= to_f64(logp)?.into_iter().sum::<f64>();
                scored += b;
            }
        }
    }
    if scored == 0 {
        bail!("the --text file encodes to no tokens with the model's tokenizer");
    }
    let mean = nll / scored as f64;
    Ok(json!({
        "pseudo_perplexity": mean.exp(),
        "mean_nll": mean,
        "text_tokens": scored,
        "scored_tokens": scored,
        "sequences": sequences,
        "max_len": enc.max_len,
        "method": format!(
            "pseudo-perplexity over {scored} tokens in {sequences} sequence(s) of at most {} tokens; {PSEUDO_PERPLEXITY_METHOD}",
            enc.max_len
        ),
    }))
}

// ------------------------------------------------------------------------------ the parent

/// One model as `compare --measure` found it.
struct Target {
    /// How the model is shown: the catalog id, or the file name of the path.
    label: String,
    model: ModelRef,
    comparison: Option<Comparison>,
}

/// Resolves `MODEL` without downloading: a path, or a catalog id already in the cache.
fn resolve_cached(arg: &str) -> anyhow::Result<Target> {
    if names_a_path(arg) {
        let path = Path::new(arg);
        let model = resolve_path(path)?;
        let label = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| arg.to_string());
        return Ok(Target {
            label,
            model,
            comparison: None,
        });
    }
    let catalog = fetch::catalog()?;
    let entry = catalog.get(arg)?;
    let cache = fetch::cache_dir()?;
    let Some(cached) = burn_zoo::catalog::cached_path(entry, &cache) else {
        bail!(
            "`{arg}` is not in the cache ({}): fetch it first with `zoo fetch {arg}` (compare --measure never downloads)",
            cache.display()
        );
    };
    let model = resolve_path(&cached)?;
    Ok(Target {
        label: arg.to_string(),
        model,
        comparison: compare::compare(entry).ok(),
    })
}

/// The backends of `--backend` (a comma-separated list allowed), else the automatic choice.
fn backend_list(ctx: &Context) -> anyhow::Result<Vec<BackendKind>> {
    let Some(list) = ctx.backend.as_deref() else {
        return Ok(vec![ctx.backend()?]);
    };
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = backends::resolve(backends::choice_from(Some(name))?)?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        bail!("--backend is empty: name one or more backends, e.g. `flex,ndarray`");
    }
    Ok(kinds)
}

/// Runs `zoo __measure` on one model and backend and reads its JSON.
fn run_child(
    target: &Target,
    kind: BackendKind,
    text: Option<&Path>,
    settings: &MeasureSettings,
) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("finding the zoo binary to run the measurement")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__measure")
        .arg(&target.model.path)
        .args(["--backend", kind.name()])
        .args(settings.child_args())
        .env_remove("ZOO_BACKEND");
    if let Some(text) = text {
        cmd.arg("--text").arg(text);
    }
    let out = cmd
        .output()
        .context("starting the child process that measures")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
        let reason = lines
            .iter()
            .find_map(|l| l.strip_prefix("error: "))
            .map(str::to_string)
            .or_else(|| {
                lines
                    .iter()
                    .position(|l| l.contains("panicked at"))
                    .map(|i| format!("crashed: {}", lines.get(i + 1).unwrap_or(&"")))
            })
            .unwrap_or_else(|| format!("the measuring process failed ({})", out.status));
        bail!("measuring {} on {kind}: {reason}", target.label);
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading the measurement of {} on {kind}", target.label))
}

/// `zoo compare MODEL… --measure`.
pub fn compare_measured(ctx: &Context, args: &CompareArgs) -> anyhow::Result<()> {
    args.settings.check()?;
    if let Some(text) = &args.text {
        read_text(text)?;
    }
    let kinds = backend_list(ctx)?;
    let targets: Vec<Target> = args
        .models
        .iter()
        .map(|m| resolve_cached(m))
        .collect::<anyhow::Result<_>>()?;
    if let Some(plot) = &args.plot {
        check_overwrite(plot, args.force)?;
        if targets.iter().all(|t| t.comparison.is_none()) {
            bail!("--plot draws weights + KV cache from catalog configs: give catalog ids");
        }
    }
    if let Some(plot) = &args.plot_speed {
        check_overwrite(plot, args.force)?;
        if targets.iter().all(|t| t.model.family == Family::Bert) {
            bail!("--plot-speed plots the decode speed of causal models, and none of the models is causal");
        }
    }

    let mut measured: Vec<(usize, BackendKind, Value)> = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        for &kind in &kinds {
            eprintln!("measuring {} on {kind}…", target.label);
            let mut row = run_child(target, kind, args.text.as_deref(), &args.settings)?;
            row["model"] = json!(target.label);
            row["path"] = json!(target.model.path);
            measured.push((i, kind, row));
        }
    }

    if let Some(plot) = &args.plot_speed {
        let bars: Vec<SpeedBar> = measured
            .iter()
            .filter_map(|(i, kind, row)| {
                Some(SpeedBar {
                    model: targets[*i].label.clone(),
                    backend: kind.name().to_string(),
                    tok_s: row["decode_tok_s"]["median"].as_f64()?,
                })
            })
            .collect();
        let runs = args.settings.runs;
        let svg = speed_svg(&bars, runs);
        std::fs::write(plot, svg).with_context(|| format!("writing {}", plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }

    let comparisons: Vec<Comparison> = targets
        .iter()
        .filter_map(|t| t.comparison.clone())
        .collect();
    if let Some(plot) = &args.plot {
        let svg = compare::memory_svg(&comparisons, args.plot_max_context);
        std::fs::write(plot, svg).with_context(|| format!("writing {}", plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }
    if ctx.json {
        let mut value = compare::to_json(&comparisons);
        value["measured"] = Value::Array(measured.into_iter().map(|(_, _, row)| row).collect());
        value["methods"] = json!({
            "speed": SPEED_METHOD,
            "memory": MEMORY_METHOD,
            "perplexity": PERPLEXITY_METHOD,
            "pseudo_perplexity": PSEUDO_PERPLEXITY_METHOD,
        });
        return print_json(&value);
    }
    let table = Table::build(&targets, &kinds, &measured, args.text.is_some());
    if args.markdown {
        print!("{}", table.markdown());
    } else {
        print!("{}", table.text());
    }
    Ok(())
}

// ------------------------------------------------------------------------------- the table

/// Formats one measured value of a row, if it has one.
type Cell = fn(&Value) -> Option<String>;

const SUPERSCRIPTS: [&str; 9] = ["¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"];

/// The side-by-side table: config rows (catalog models) and measured rows, with footnotes.
struct Table {
    header: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
    notes: Vec<String>,
}

/// A rate as `median (min–max)` over the timed runs, or the median alone for one run.
fn fmt_rate(v: &Value) -> Option<String> {
    let one = |x: f64| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    let median = one(v["median"].as_f64()?);
    let runs = v["runs"].as_array().map_or(0, Vec::len);
    match (v["min"].as_f64(), v["max"].as_f64()) {
        (Some(lo), Some(hi)) if runs > 1 => Some(format!("{median} ({}–{})", one(lo), one(hi))),
        _ => Some(median),
    }
}

fn fmt_sig(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

impl Table {
    fn build(
        targets: &[Target],
        kinds: &[BackendKind],
        measured: &[(usize, BackendKind, Value)],
        with_text: bool,
    ) -> Table {
        let n = targets.len();
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut notes = Vec::new();
        let comparisons: Vec<Comparison> = targets
            .iter()
            .filter_map(|t| t.comparison.clone())
            .collect();
        if !comparisons.is_empty() {
            let config_rows = compare::table_rows(&comparisons);
            for (label, cells) in config_rows {
                let mut cells = cells.into_iter();
                let all = targets
                    .iter()
                    .map(|t| match t.comparison {
                        Some(_) => cells.next().unwrap_or_default(),
                        None => "—".to_string(),
                    })
                    .collect();
                rows.push((label, all));
            }
            notes.push(compare::FLOPS_FORMULA.to_string());
            notes.push(compare::QUANT_ASSUMPTION.to_string());
            notes.push(format!(
                "{}. GB = 10⁹ bytes, KiB = 1024 bytes",
                compare::KV_FORMULA
            ));
        }
        let mut note = |text: &str| -> &'static str {
            notes.push(text.to_string());
            SUPERSCRIPTS.get(notes.len() - 1).copied().unwrap_or("*")
        };
        let speed = note(SPEED_METHOD);
        let memory = note(MEMORY_METHOD);
        // A method is stated only when some row has a value it explains.
        let any = |key: &str| measured.iter().any(|(_, _, row)| row[key].is_f64());
        let ppl = if with_text && any("perplexity") {
            note(PERPLEXITY_METHOD)
        } else {
            ""
        };
        let pppl = if with_text && any("pseudo_perplexity") {
            note(PSEUDO_PERPLEXITY_METHOD)
        } else {
            ""
        };
        let cell = |i: usize, kind: BackendKind, f: Cell| {
            measured
                .iter()
                .find(|(t, k, _)| *t == i && *k == kind)
                .and_then(|(_, _, row)| f(row))
                .unwrap_or_else(|| "—".to_string())
        };
        let load = |r: &Value| r["load_secs"].as_f64().map(|s| format!("{s:.2} s"));
        let prefill = |r: &Value| fmt_rate(&r["prefill_tok_s"]);
        let decode = |r: &Value| fmt_rate(&r["decode_tok_s"]);
        let sentences = |r: &Value| fmt_rate(&r["sentences_per_s"]);
        let rss = |r: &Value| {
            r["peak_rss_bytes"]
                .as_u64()
                .map(|b| format!("{:.0} MB", b as f64 / 1e6))
        };
        let perplexity = |r: &Value| r["perplexity"].as_f64().map(fmt_sig);
        let pseudo = |r: &Value| r["pseudo_perplexity"].as_f64().map(fmt_sig);
        let mut metrics: Vec<(String, Cell)> = vec![
            ("load time".into(), load as Cell),
            (format!("prefill tok/s {speed}"), prefill as Cell),
            (format!("decode tok/s {speed}"), decode as Cell),
            (format!("sentences/s {speed}"), sentences as Cell),
            (format!("peak RSS {memory}"), rss as Cell),
        ];
        if with_text {
            metrics.push((format!("perplexity {ppl}"), perplexity as Cell));
            metrics.push((format!("pseudo-perplexity {pppl}"), pseudo as Cell));
        }
        for (name, f) in metrics {
            for &kind in kinds {
                let cells: Vec<String> = (0..n).map(|i| cell(i, kind, f)).collect();
                if cells.iter().any(|c| c != "—") {
                    rows.push((format!("{name}, {kind}"), cells));
                }
            }
        }
        Table {
            header: targets.iter().map(|t| t.label.clone()).collect(),
            rows,
            notes,
        }
    }

    fn widths(&self, header: &[String]) -> Vec<usize> {
        let mut widths: Vec<usize> = std::iter::once(0)
            .chain(header.iter().map(|h| h.chars().count()))
            .collect();
        for (label, cells) in &self.rows {
            widths[0] = widths[0].max(label.chars().count());
            for (i, c) in cells.iter().enumerate() {
                widths[i + 1] = widths[i + 1].max(c.chars().count());
            }
        }
        widths
    }

    fn markdown(&self) -> String {
        let header: Vec<String> = self.header.iter().map(|h| format!("`{h}`")).collect();
        let widths = self.widths(&header);
        let line = |first: &str, cells: &[String]| {
            let mut s = format!(
                "| {first}{} |",
                " ".repeat(widths[0] - first.chars().count())
            );
            for (i, c) in cells.iter().enumerate() {
                s += &format!(" {c}{} |", " ".repeat(widths[i + 1] - c.chars().count()));
            }
            s + "\n"
        };
        let mut out = line("", &header);
        out += &format!("| {} |", "-".repeat(widths[0]));
        for w in &widths[1..] {
            out += &format!(" {}: |", "-".repeat(w.saturating_sub(1)));
        }
        out += "\n";
        for (label, cells) in &self.rows {
            out += &line(label, cells);
        }
        out += "\n";
        for (i, n) in self.notes.iter().enumerate() {
            out += &format!("{} {n}.  \n", SUPERSCRIPTS.get(i).unwrap_or(&"*"));
        }
        out
    }

    fn text(&self) -> String {
        let widths = self.widths(&self.header);
        let line = |first: &str, cells: &[String]| {
            let mut s = format!("{first}{}", " ".repeat(widths[0] - first.chars().count()));
            for (i, c) in cells.iter().enumerate() {
                s += &format!("  {}{c}", " ".repeat(widths[i + 1] - c.chars().count()));
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line("", &self.header);
        for (label, cells) in &self.rows {
            out += &line(label, cells);
        }
        out += "\n";
        for (i, n) in self.notes.iter().enumerate() {
            out += &format!("{} {n}.\n", SUPERSCRIPTS.get(i).unwrap_or(&"*"));
        }
        out
    }
}
