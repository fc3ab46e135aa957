//! The CPU trainer against the Burn modules (flex backend with autodiff): one SGD step on one
//! example gives the same update within 1e-6; and the trainer's own properties.

use burn::tensor::backend::AutodiffBackend;
use zoo_backends::test_backends;
use zoo_word2vec::model::{batch_loss_cbow, batch_loss_sg, train_burn, HostBatch, Tables};
use zoo_word2vec::train::{sgd_step, train, Example};
use zoo_word2vec::vocab::Huffman;
use zoo_word2vec::*;

/// Runs `check` for every case on one autodiff backend.
/// (The parameters must agree within `tol`: 1e-6 on CPU backends, 1e-5 on GPU backends.)
struct SgdStep {
    tol: f32,
}

impl SgdStep {
    fn run<B: AutodiffBackend>(self, dev: B::Device) {
        for (arch, hs, ex) in cases() {
            check::<B>(arch, hs, ex, &dev, self.tol);
        }
    }
}

const V: usize = 7;
const D: usize = 6;

fn tables() -> Tables {
    let f = |k: usize, s: f32| {
        (0..k)
            .map(|i| ((i * 37 % 23) as f32 / 23.0 - 0.5) * s)
            .collect::<Vec<f32>>()
    };
    Tables {
        syn0: f(V * D, 0.8),
        syn1neg: f(V * D, 0.6).into_iter().rev().collect(),
        syn1: f((V - 1) * D, 0.7),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn host_batch(ex: &Example, c: usize) -> HostBatch {
    let mut inputs = ex.inputs.iter().map(|&i| i as i32).collect::<Vec<_>>();
    let mut mask = vec![1.0; inputs.len()];
    inputs.resize(c, 0);
    mask.resize(c, 0.0);
    HostBatch {
        n: 1,
        c,
        inputs,
        input_mask: mask,
        target: vec![ex.target as i32],
        negatives: ex.negatives.iter().map(|&i| i as i32).collect(),
        neg_mask: ex
            .negatives
            .iter()
            .map(|&n| if n == ex.target { 0.0 } else { 1.0 })
            .collect(),
    }
}

fn check<B: AutodiffBackend>(arch: Architecture, hs: bool, ex: Example, dev: &B::Device, tol: f32) {
    let counts = [40u64, 20, 9, 7, 5, 2, 1];
    let hf = Huffman::new(&counts);
    let hfo = hs.then_some(&hf);
    let t = tables();
    let alpha = 0.05f32;
    let (mut s0, mut s1n, mut s1) = (t.syn0.clone(), t.syn1neg.clone(), t.syn1.clone());
    let cpu_loss = sgd_step(&mut s0, &mut s1n, &mut s1, D, hfo, &ex, alpha);
    let dev = dev.clone();
    let negative = ex.negatives.len();
    let (loss, after) = match arch {
        Architecture::SkipGram => {
            let m = SkipGram::<B>::from_tables(&t, V, D, &dev).unwrap();
            let loss = batch_loss_sg(&m, &host_batch(&ex, 1), hfo, negative, &dev);
            let l: f32 = loss.clone().into_data().to_vec::<f32>().unwrap()[0];
            (l, m.sgd_step(loss, alpha as f64).tables().unwrap())
        }
        Architecture::Cbow => {
            let m = Cbow::<B>::from_tables(&t, V, D, &dev).unwrap();
            let loss = batch_loss_cbow(&m, &host_batch(&ex, 4), hfo, negative, &dev);
            let l: f32 = loss.clone().into_data().to_vec::<f32>().unwrap()[0];
            (l, m.sgd_step(loss, alpha as f64).tables().unwrap())
        }
    };
    let what = format!("{arch:?} hs={hs} {ex:?}");
    assert!(
        (loss - cpu_loss).abs() < 10.0 * tol,
        "{what}: loss {loss} vs {cpu_loss}"
    );
    assert!(
        max_diff(&after.syn0, &s0) < tol,
        "{what}: syn0 {}",
        max_diff(&after.syn0, &s0)
    );
    assert!(max_diff(&after.syn1neg, &s1n) < tol, "{what}: syn1neg");
    assert!(max_diff(&after.syn1, &s1) < tol, "{what}: syn1");
    assert!(
        max_diff(&s0, &t.syn0) > 1e-3,
        "{what}: the step changed nothing"
    );
}

fn cases() -> Vec<(Architecture, bool, Example)> {
    vec![
        (
            Architecture::SkipGram,
            false,
            Example {
                inputs: vec![2],
                target: 4,
                negatives: vec![0, 5, 4, 1],
            },
        ),
        (
            Architecture::SkipGram,
            true,
            Example {
                inputs: vec![3],
                target: 6,
                negatives: vec![1, 2],
            },
        ),
        (
            Architecture::Cbow,
            false,
            Example {
                inputs: vec![1, 3, 5],
                target: 0,
                negatives: vec![2, 6, 4],
            },
        ),
        (
            Architecture::Cbow,
            true,
            Example {
                inputs: vec![1, 3, 3, 6],
                target: 5,
                negatives: vec![0],
            },
        ),
    ]
}

#[test]
fn one_sgd_step_matches_the_burn_module_within_1e6_on_every_backend() {
    for kind in test_backends().unwrap() {
        let tol = zoo_backends::tolerance(kind) / 100.0;
        zoo_backends::with_autodiff_backend!(kind, |B, device| {
            (SgdStep { tol }).run::<B>(device)
        })
        .unwrap();
    }
}

/// Two topics whose words never meet: a sentence draws from one topic only.
fn topic_corpus() -> String {
    let topics = [
        ["cat", "dog", "mouse", "horse", "cow", "sheep"],
        ["red", "blue", "green", "pink", "gray", "brown"],
    ];
    let mut s = 12345u64;
    let mut out = String::new();
    for line in 0..600 {
        let t = &topics[line % 2];
        for _ in 0..12 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.push_str(t[(s >> 33) as usize % 6]);
            out.push(' ');
        }
        out.push('\n');
    }
    out
}

fn topic_margin(kv: &KeyedVectors) -> f32 {
    let same = kv.similarity("cat", "dog").unwrap() + kv.similarity("red", "blue").unwrap();
    let cross = kv.similarity("cat", "red").unwrap() + kv.similarity("dog", "blue").unwrap();
    (same - cross) / 2.0
}

#[test]
fn cpu_trainer_is_deterministic_with_one_thread_and_learns_topics() {
    let text = topic_corpus();
    for arch in [Architecture::SkipGram, Architecture::Cbow] {
        for (negative, hs) in [(5, false), (0, true)] {
            let cfg = TrainConfig {
                arch,
                dim: 16,
                window: 3,
                negative,
                hs,
                min_count: 1,
                sample: 0.0,
                epochs: 3,
                threads: 1,
                ..TrainConfig::default()
            };
            let mut reports = 0;
            let a = train(&text, &cfg, &mut |p| {
                reports += 1;
                assert!(p.words_done <= p.words_total && p.alpha <= 0.025);
            })
            .unwrap();
            let b = train(&text, &cfg, &mut |_| {}).unwrap();
            assert_eq!(a.syn0, b.syn0, "{arch:?} hs={hs}: not deterministic");
            assert!(reports >= 3, "progress called {reports} times");
            let m = topic_margin(&a.keyed_vectors().unwrap());
            assert!(m > 0.5, "{arch:?} hs={hs}: topic margin {m}");
            assert!(a.final_loss.is_finite() && a.final_loss > 0.0);
        }
    }
}

struct BurnPath;

impl BurnPath {
    fn run<B: AutodiffBackend>(self, dev: B::Device) {
        burn_path_matches_cpu_path::<B>(&dev);
    }
}

#[test]
fn burn_path_and_cpu_path_reach_similar_quality_in_one_epoch_on_every_backend() {
    for kind in test_backends().unwrap() {
        zoo_backends::with_autodiff_backend!(kind, |B, device| { (BurnPath).run::<B>(device) })
            .unwrap();
    }
}

fn burn_path_matches_cpu_path<B: AutodiffBackend>(dev: &B::Device) {
    let text = topic_corpus();
    for arch in [Architecture::SkipGram, Architecture::Cbow] {
        let cfg = TrainConfig {
            arch,
            dim: 16,
            window: 3,
            negative: 5,
            min_count: 1,
            sample: 0.0,
            epochs: 1,
            threads: 1,
            alpha: 0.025,
            ..TrainConfig::default()
        };
        let cpu = train(&text, &cfg, &mut |_| {}).unwrap();
        // Summed-loss SGD: with a 12-word vocabulary a batch must stay small, or each row sums
        // too many updates at once (with real vocabularies batches of thousands are fine).
        let gpu = train_burn::<B>(&text, &cfg, 16, dev, &mut |_| {}).unwrap();
        let (mc, mg) = (
            topic_margin(&cpu.keyed_vectors().unwrap()),
            topic_margin(&gpu.keyed_vectors().unwrap()),
        );
        println!(
            "{arch:?}: topic margin cpu {mc:.3} burn {mg:.3}; loss cpu {:.3} burn {:.3}",
            cpu.final_loss, gpu.final_loss
        );
        assert!(mc > 0.3 && mg > 0.3, "{arch:?}: margins {mc} {mg}");
        assert!(
            (cpu.final_loss - gpu.final_loss).abs() < 0.5,
            "{arch:?}: losses differ"
        );
    }
}

#[test]
fn bad_settings_and_unknown_words_are_errors() {
    let text = topic_corpus();
    let bad = TrainConfig {
        negative: 0,
        hs: false,
        ..TrainConfig::default()
    };
    assert!(train(&text, &bad, &mut |_| {})
        .unwrap_err()
        .to_string()
        .contains("negative"));
    let none = TrainConfig {
        min_count: 100_000,
        ..TrainConfig::default()
    };
    assert!(train(&text, &none, &mut |_| {}).is_err());
}
