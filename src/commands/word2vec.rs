//! `zoo train-word2vec`, `zoo similar`, `zoo analogy`, `zoo eval-word2vec`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use burn_zoo::word2vec::{
    self, AnalogyMethod, Architecture, EvalOptions, KeyedVectors, TrainConfig, Word2VecFormat,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{fetch, print_json, Context};

/// Arguments of `zoo train-word2vec`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Training text: one sentence per line, words separated by whitespace.
    #[arg(long)]
    pub corpus: PathBuf,
    /// skipgram or cbow.
    #[arg(long, default_value = "skipgram")]
    pub arch: String,
    /// Vector size.
    #[arg(long, default_value_t = 100)]
    pub dim: usize,
    /// Largest context window (shrunk at random per word).
    #[arg(long, default_value_t = 5)]
    pub window: usize,
    /// Negative samples per example (0 with --hs: hierarchical softmax only).
    #[arg(long, default_value_t = 5)]
    pub negative: usize,
    /// Use hierarchical softmax.
    #[arg(long)]
    pub hs: bool,
    /// Ignore words rarer than this.
    #[arg(long, default_value_t = 5)]
    pub min_count: u64,
    /// Sub-sampling threshold of frequent words.
    #[arg(long, default_value_t = 1e-3)]
    pub sample: f64,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Starting learning rate, decaying linearly to 0.0001 (default 0.025, as gensim).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the vectors (word2vec text format, or binary with --binary).
    #[arg(long)]
    pub out: PathBuf,
    /// Write the C tool's binary format.
    #[arg(long)]
    pub binary: bool,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `zoo similar`.
#[derive(Debug, clap::Args)]
pub struct SimilarArgs {
    /// Vectors: a word2vec/GloVe file, the GloVe package folder, or a catalog id.
    pub vectors: String,
    /// The query word.
    pub word: String,
    /// Neighbours to show.
    #[arg(long, default_value_t = 10, value_parser = super::positive)]
    pub top: usize,
}

/// Arguments of `zoo analogy`.
#[derive(Debug, clap::Args)]
pub struct AnalogyArgs {
    /// Vectors: a word2vec/GloVe file, the GloVe package folder, or a catalog id.
    pub vectors: String,
    /// Words added, comma separated (king,woman).
    #[arg(long)]
    pub positive: String,
    /// Words subtracted, comma separated (man).
    #[arg(long, default_value = "")]
    pub negative: String,
    /// Answers to show.
    #[arg(long, default_value_t = 10, value_parser = super::positive)]
    pub top: usize,
    /// 3CosMul (Levy & Goldberg) instead of 3CosAdd.
    #[arg(long)]
    pub cosmul: bool,
}

/// Arguments of `zoo eval-word2vec`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Vectors: a word2vec/GloVe file, the GloVe package folder, or a catalog id.
    pub vectors: String,
    /// Google's analogy questions (questions-words.txt).
    #[arg(long)]
    pub analogies: Option<PathBuf>,
    /// Word pairs with human scores (wordsim353.tsv, simlex999.txt).
    #[arg(long)]
    pub similarity: Option<PathBuf>,
    /// Only the most frequent this many words take part in the analogies.
    #[arg(long, default_value_t = 300_000)]
    pub restrict_vocab: usize,
}

/// Whether two paths name the same existing file (also through symbolic or hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Loads vectors from a path, or fetches a catalog id first.
fn load(spec: &str) -> anyhow::Result<KeyedVectors> {
    let path = Path::new(spec);
    let path = if path.exists() {
        path.to_path_buf()
    } else if spec.contains('/') {
        bail!("{spec} does not exist");
    } else {
        fetch::fetch_id(spec, None)?.path
    };
    let start = Instant::now();
    let kv = word2vec::load_vectors(&path)?;
    eprintln!(
        "loaded {} words x {} dims in {:.2}s",
        kv.len(),
        kv.dim(),
        start.elapsed().as_secs_f64()
    );
    Ok(kv)
}

fn words(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect()
}

fn print_neighbors(
    ctx: &Context,
    word: Option<&str>,
    list: &[(String, f32)],
) -> anyhow::Result<()> {
    if ctx.json {
        let mut value = json!({ "neighbors": list });
        if let Some(word) = word {
            value["word"] = json!(word);
        }
        return print_json(&value);
    }
    for (w, c) in list {
        println!("{c:>8.4}  {w}");
    }
    Ok(())
}

/// `zoo similar`.
pub fn similar(ctx: &Context, args: SimilarArgs) -> anyhow::Result<()> {
    let kv = load(&args.vectors)?;
    let start = Instant::now();
    let list = kv.similar(&args.word, args.top)?;
    eprintln!(
        "query answered in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    print_neighbors(ctx, Some(&args.word), &list)
}

/// `zoo analogy`.
pub fn analogy(ctx: &Context, args: AnalogyArgs) -> anyhow::Result<()> {
    let kv = load(&args.vectors)?;
    let method = if args.cosmul {
        AnalogyMethod::CosMul
    } else {
        AnalogyMethod::CosAdd
    };
    let start = Instant::now();
    let list = kv.analogy(
        &words(&args.positive),
        &words(&args.negative),
        args.top,
        method,
    )?;
    eprintln!(
        "query answered in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    print_neighbors(ctx, None, &list)
}

/// `zoo eval-word2vec`.
pub fn eval(ctx: &Context, args: EvalArgs) -> anyhow::Result<()> {
    if args.analogies.is_none() && args.similarity.is_none() {
        bail!("give --analogies questions-words.txt and/or --similarity wordsim353.tsv");
    }
    let kv = load(&args.vectors)?;
    let opts = EvalOptions {
        restrict_vocab: args.restrict_vocab,
        ..EvalOptions::default()
    };
    let mut out = json!({});
    if let Some(path) = &args.analogies {
        let eval = word2vec::evaluate_word_analogies(&kv, path, &opts)?;
        let sections: Vec<_> = eval
            .sections
            .iter()
            .map(|s| json!({"section": s.section, "correct": s.correct, "incorrect": s.incorrect, "accuracy": s.accuracy()}))
            .collect();
        out["analogies"] = json!({
            "accuracy": eval.total.accuracy(),
            "correct": eval.total.correct,
            "questions_answered": eval.total.correct + eval.total.incorrect,
            "oov_ratio": eval.oov_ratio(),
            "sections": sections,
        });
        if !ctx.json {
            println!("analogies ({}):", path.display());
            for s in &eval.sections {
                println!(
                    "  {:<32} {:>6.2}%  ({}/{})",
                    s.section,
                    100.0 * s.accuracy(),
                    s.correct,
                    s.correct + s.incorrect
                );
            }
            println!(
                "  {:<32} {:>6.2}%  ({}/{}), {:.1}% of questions out of vocabulary",
                "overall",
                100.0 * eval.total.accuracy(),
                eval.total.correct,
                eval.total.correct + eval.total.incorrect,
                100.0 * eval.oov_ratio()
            );
        }
    }
    if let Some(path) = &args.similarity {
        let eval = word2vec::evaluate_word_pairs(&kv, path, &opts)?;
        out["similarity"] = json!({"pearson": eval.pearson, "spearman": eval.spearman, "oov_ratio": eval.oov_ratio, "pairs": eval.pairs});
        if !ctx.json {
            println!(
                "similarity ({}): Spearman {:.4}, Pearson {:.4}, {} pairs, {:.1}% out of vocabulary",
                path.display(),
                eval.spearman,
                eval.pearson,
                eval.pairs,
                100.0 * eval.oov_ratio
            );
        }
    }
    if ctx.json {
        print_json(&out)?;
    }
    Ok(())
}

/// `zoo train-word2vec`.
pub fn train(ctx: &Context, args: TrainArgs) -> anyhow::Result<()> {
    if args.out.is_dir() {
        bail!(
            "--out {} is a folder: name the vectors file to write",
            args.out.display()
        );
    }
    if same_file(&args.out, &args.corpus) {
        bail!(
            "--out {} is the corpus itself: choose another file (--force never overwrites the corpus)",
            args.out.display()
        );
    }
    if args.out.exists() && !args.force {
        bail!(
            "{} exists: pass --force to overwrite it",
            args.out.display()
        );
    }
    let arch = match args.arch.as_str() {
        "skipgram" | "skip-gram" | "sg" => Architecture::SkipGram,
        "cbow" => Architecture::Cbow,
        other => bail!("--arch must be skipgram or cbow, not `{other}`"),
    };
    let defaults = TrainConfig::default();
    let config = TrainConfig {
        arch,
        dim: args.dim,
        window: args.window,
        negative: args.negative,
        hs: args.hs,
        min_count: args.min_count,
        sample: args.sample,
        epochs: args.epochs,
        alpha: args.alpha.unwrap_or(defaults.alpha),
        threads: args.threads.unwrap_or(defaults.threads),
        seed: args.seed,
        ..defaults
    };
    let text = std::fs::read_to_string(&args.corpus)
        .with_context(|| format!("reading {}", args.corpus.display()))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {percent:>3}% epoch {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let trained = word2vec::train(&text, &config, &mut |p| {
        bar.set_length(p.words_total.max(1));
        bar.set_position(p.words_done);
        bar.set_message(format!(
            "{}/{}  {:.0} words/s  loss {:.4}  lr {:.5}",
            p.epoch + 1,
            p.epochs,
            p.words_per_sec,
            p.loss,
            p.alpha
        ));
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let kv = trained.keyed_vectors()?;
    let format = if args.binary {
        Word2VecFormat::Binary
    } else {
        Word2VecFormat::Text
    };
    // Through a temporary file; without --force a file created meanwhile is not replaced.
    word2vec::write_word2vec_file(&args.out, &kv, format, args.force)?;
    if ctx.json {
        print_json(&json!({
            "out": args.out,
            "words": kv.len(),
            "dim": kv.dim(),
            "seconds": secs,
            "words_per_sec": trained.words_per_sec,
            "final_loss": trained.final_loss,
        }))
    } else {
        eprintln!(
            "trained {} words x {} dims in {:.1}s ({:.0} words/s), wrote {}",
            kv.len(),
            kv.dim(),
            secs,
            trained.words_per_sec,
            args.out.display()
        );
        Ok(())
    }
}
