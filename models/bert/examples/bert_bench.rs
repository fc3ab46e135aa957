//! Sentences per second of a sentence-transformers BERT (all-MiniLM-L6-v2) on flex, at batch
//! size 1 and 32, over the fixed sentences of tests/fixtures/bert/bench_sentences.txt.
//!
//! ```text
//! cargo run --release -p zoo-bert --features zoo-bert/flex --example bert_bench -- /work/cache/minilm [ROUNDS]
//! ```
//! Compare with `python tests/bench/bert_bench_torch.py /work/cache/minilm` (2 threads).

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Flex;
use zoo_bert::SentenceEncoder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("ZOO_MINILM_DIR").map(PathBuf::from))
        .ok_or("usage: bert_bench MODEL_DIR [ROUNDS] (or set ZOO_MINILM_DIR)")?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(4);
    let sentences_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/bert/bench_sentences.txt"
    );
    let text = std::fs::read_to_string(sentences_path)?;
    let base: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let sentences: Vec<&str> = base
        .iter()
        .cycle()
        .take(base.len() * rounds)
        .copied()
        .collect();

    let device = Default::default();
    let encoder = SentenceEncoder::<Flex>::load(&dir, &device)?;
    encoder.embed(&base[..8], 8)?; // warm-up

    let start = Instant::now();
    for s in &base {
        encoder.embed(&[s], 1)?;
    }
    let single = base.len() as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    encoder.embed(&sentences, 32)?;
    let batched = sentences.len() as f64 / start.elapsed().as_secs_f64();

    println!(
        "zoo-bert flex: batch 1: {single:.1} sentences/s ({} sentences)",
        base.len()
    );
    println!(
        "zoo-bert flex: batch 32: {batched:.1} sentences/s ({} sentences)",
        sentences.len()
    );
    Ok(())
}
