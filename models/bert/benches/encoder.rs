//! Throughput of BERT's hot kernels on every compiled backend: the linear layer at
//! all-MiniLM-L6-v2's widths for one sentence (13 rows) and a batch of 32 (416 rows) in both
//! orientations (`zoo_nn::Dense`'s choice against Burn's `x · W`, weights cold in cache), exact GELU, and — when
//! `ZOO_MINILM_DIR` names the all-MiniLM-L6-v2 folder — whole sentence embeddings at batch 1
//! and 32 over tests/fixtures/bert/bench_sentences.txt (sentences per second).
//!
//! Run: `cargo bench -p zoo-bert --features zoo-bert/flex --bench encoder`
//! (`ZOO_TEST_BACKENDS=flex,ndarray` picks the backends).

use std::hint::black_box;
use std::path::PathBuf;

use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zoo_backends::BackendKind;
use zoo_bert::SentenceEncoder;
use zoo_nn::{Activation, Dense};

const HIDDEN: usize = 384;
const FFN: usize = 1536;
/// Weight matrices cycled through by the linear-layer benches.
const COLD_MATRICES: usize = 24;

/// Waits for the device so that lazy backends (wgpu) are timed on finished work.
fn done<B: Backend, const D: usize>(t: Tensor<B, D>) {
    black_box(t.into_data());
}

struct Bench<'a> {
    c: &'a mut Criterion,
    kind: BackendKind,
    minilm: Option<PathBuf>,
}

impl Bench<'_> {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = self.kind.name();
        let normal = Distribution::Normal(0.0, 1.0);
        // As many matrices as a 6-layer model has (~57 MB), used in turn: the weights come from
        // memory as in a real forward pass, not from a cache that one matrix would stay in.
        let weights: Vec<Tensor<B, 2>> = (0..COLD_MATRICES)
            .map(|_| Tensor::<B, 2>::random([FFN, HIDDEN], normal, &device) * 0.05)
            .collect();
        let dense: Vec<Dense<B>> = weights
            .iter()
            .map(|w| Dense::new(w.clone(), None))
            .collect();
        let in_out: Vec<Tensor<B, 2>> = weights
            .iter()
            .map(|w| w.clone().transpose().reshape([HIDDEN, FFN]))
            .collect();

        let mut group = self.c.benchmark_group(format!("bert_kernels/{kind}"));
        for rows in [13, 416] {
            let x = Tensor::<B, 2>::random([rows, HIDDEN], normal, &device);
            group.throughput(Throughput::Elements(rows as u64));
            let mut i = 0;
            group.bench_function(format!("dense_{rows}x384x1536"), |b| {
                b.iter(|| {
                    i = (i + 1) % COLD_MATRICES;
                    done(dense[i].forward(x.clone()))
                })
            });
            group.bench_function(format!("x_matmul_w_{rows}x384x1536"), |b| {
                b.iter(|| {
                    i = (i + 1) % COLD_MATRICES;
                    done(x.clone().matmul(in_out[i].clone()))
                })
            });
        }
        let h = Tensor::<B, 2>::random([416, FFN], normal, &device);
        group.throughput(Throughput::Elements(416 * FFN as u64));
        group.bench_function("gelu_erf_416x1536", |b| {
            b.iter(|| done(Activation::Gelu.forward(h.clone())))
        });
        group.finish();

        let Some(dir) = self.minilm else {
            return;
        };
        let encoder = SentenceEncoder::<B>::load(&dir, &device).expect("load all-MiniLM-L6-v2");
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/bert/bench_sentences.txt"
        ))
        .expect("bench sentences");
        let sentences: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let mut group = self.c.benchmark_group(format!("minilm_embed/{kind}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(sentences.len() as u64));
        for batch in [1, 32] {
            group.bench_function(format!("64_sentences_batch_{batch}"), |b| {
                b.iter(|| black_box(encoder.embed(&sentences, batch).expect("embed")))
            });
        }
        group.finish();
    }
}

fn kernels(c: &mut Criterion) {
    let minilm = std::env::var_os("ZOO_MINILM_DIR").map(PathBuf::from);
    for kind in zoo_backends::test_backends().expect("backends") {
        zoo_backends::with_backend!(kind, |B, device| {
            (Bench {
                c: &mut *c,
                kind,
                minilm: minilm.clone(),
            })
            .run::<B>(device)
        })
        .expect("backend opens");
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
