//! `zoo compare --measure`: every model measured on its own weights. Each (model, backend)
//! runs in a child process of this binary (the hidden `zoo __measure`), so the peak memory
//! reported is that model's alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use burn_zoo::backends::{self, BackendKind};
use burn_zoo::bench::{
    peak_rss_bytes, BenchSettings, MEMORY_METHOD, PERPLEXITY_METHOD, PSEUDO_PERPLEXITY_METHOD,
    SPEED_METHOD,
};
use burn_zoo::catalog::compare::{self, Comparison};
use burn_zoo::resolve::{resolve_path, ModelRef};
use serde_json::{json, Value};

use super::speed_svg::{speed_svg, SpeedBar};
use super::{check_overwrite, CompareArgs};
use crate::commands::{fetch, names_a_path, print_json, Context, WeightArgs};

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
    #[command(flatten)]
    pub weights: WeightArgs,
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
        if let Some(d) = &self.weights.dtype {
            args.extend(["--dtype".to_string(), d.clone()]);
        }
        if let Some(q) = &self.weights.quantize {
            args.extend(["--quantize".to_string(), q.clone()]);
        }
        if self.weights.int8_activations {
            args.push("--int8-activations".to_string());
        }
        args
    }

    fn bench(&self) -> anyhow::Result<BenchSettings> {
        Ok(BenchSettings {
            prompt_len: self.prompt_len,
            gen_len: self.gen_len,
            batch: 1,
            runs: self.runs,
            window: self.window,
            stride: self.stride,
            format: self.weights.format()?,
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.gen_len == 0 {
            bail!("--runs, --prompt-len and --gen-len must be at least 1");
        }
        self.bench()?.check()?;
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
    let settings = args.settings.bench()?;
    let kind = ctx.backend()?;
    let mut report = burn_zoo::bench::measure_on(kind, &model, &settings, text.as_deref())?;
    report["backend"] = json!(kind.name());
    report["peak_rss_bytes"] = json!(peak_rss_bytes());
    print_json(&report)
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
fn resolve_cached(arg: &str, label: String) -> anyhow::Result<Target> {
    if names_a_path(arg) {
        let model = resolve_path(Path::new(arg))?;
        let comparison = burn_zoo::describe::catalog_entry(&model, &label)
            .ok()
            .and_then(|entry| compare::compare(&entry).ok());
        return Ok(Target {
            label,
            model,
            comparison,
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
        .zip(super::labels(&args.models))
        .map(|(m, label)| resolve_cached(m, label))
        .collect::<anyhow::Result<_>>()?;
    if let Some(plot) = &args.plot {
        check_overwrite(plot, args.force)?;
        if targets.iter().all(|t| t.comparison.is_none()) {
            bail!("--plot draws weights + KV cache from catalog configs: give catalog ids");
        }
    }
    if let Some(plot) = &args.plot_speed {
        check_overwrite(plot, args.force)?;
        if !targets.iter().any(|t| t.model.family.is_causal()) {
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
        crate::commands::write_atomic(plot, svg.as_bytes())?;
        eprintln!("wrote {}", plot.display());
    }

    let comparisons: Vec<Comparison> = targets
        .iter()
        .filter_map(|t| t.comparison.clone())
        .collect();
    if let Some(plot) = &args.plot {
        let svg = compare::memory_svg(&comparisons, args.plot_max_context);
        crate::commands::write_atomic(plot, svg.as_bytes())?;
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
