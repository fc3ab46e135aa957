//! Training speed and quality of the CPU trainer, to compare with
//! tests/bench/word2vec_bench_gensim.py (same corpus and settings).
//!
//! cargo run --release -p zoo-word2vec --example word2vec_bench -- CORPUS [REPEAT=10] [THREADS=2] [QUESTIONS] [WORDSIM]
//!
//! Environment: SEED (default 1), ARCHS (`skipgram`, `cbow`; default both).

use std::time::Instant;

use zoo_word2vec::eval::EvalOptions;
use zoo_word2vec::*;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let corpus = args.get(1).ok_or_else(|| {
        Word2VecError::InvalidArgument(
            "usage: word2vec_bench CORPUS [REPEAT] [THREADS] [QUESTIONS] [WORDSIM]".into(),
        )
    })?;
    let repeat: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let one = std::fs::read_to_string(corpus)
        .map_err(|e| Word2VecError::InvalidArgument(format!("{corpus}: {e}")))?;
    let text = one.repeat(repeat);
    // ARCHS=skipgram or ARCHS=cbow runs one of the two.
    let archs = std::env::var("ARCHS").unwrap_or_default().to_lowercase();
    for arch in [Architecture::SkipGram, Architecture::Cbow] {
        if !archs.is_empty() && !archs.contains(&format!("{arch:?}").to_lowercase()) {
            continue;
        }
        let seed: u64 = std::env::var("SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let config = TrainConfig {
            arch,
            dim: 100,
            window: 5,
            negative: 5,
            threads,
            epochs: 5,
            seed,
            ..TrainConfig::default()
        };
        let t = Instant::now();
        let trained = train(&text, &config, &mut |_| {})?;
        let secs = t.elapsed().as_secs_f64();
        let words = text.split_whitespace().count() as f64 * config.epochs as f64;
        let kv = trained.keyed_vectors()?;
        print!(
            "{arch:?}: vocab {} | train {:.2}s | {:.0} corpus words/s (incl. vocab) | {:.0} words/s (trainer) | loss {:.4}",
            kv.len(),
            secs,
            words / secs,
            trained.words_per_sec,
            trained.final_loss
        );
        if let (Some(q), Some(ws)) = (args.get(4), args.get(5)) {
            let a = evaluate_word_analogies(&kv, q, &EvalOptions::default())?;
            let p = evaluate_word_pairs(&kv, ws, &EvalOptions::default())?;
            print!(
                " | analogies {:.4} ({} q) | wordsim pearson {:.4} spearman {:.4} oov {:.1}%",
                a.total.accuracy(),
                a.total.correct + a.total.incorrect,
                p.pearson,
                p.spearman,
                p.oov_ratio
            );
        }
        println!();
    }
    Ok(())
}
