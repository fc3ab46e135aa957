//! Throughput of GPT-2's hot kernels on every compiled backend (tokens per second): one block
//! at GPT-2 small's width (768, 12 heads, MLP 3072; LayerNorm, attention with the KV cache,
//! tanh GELU) for a prefill of 128 tokens and one decode step after 128 cached tokens, and the
//! pieces alone (LayerNorm, tanh GELU) on 128 tokens.
//!
//! The block is a 1-layer model with random weights built in memory through
//! `zoo_gpt2::load::from_weights` (vocabulary cut to 1024; `Logits::Hidden`: no LM head).
//! Run: `cargo bench -p zoo-gpt2 --features zoo-gpt2/flex --bench block`
//! (`ZOO_TEST_BACKENDS=flex,ndarray` picks the backends).

use std::collections::BTreeMap;
use std::hint::black_box;

use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zoo_backends::BackendKind;
use zoo_gpt2::Gpt2Config;
use zoo_nn::{ids_tensor, Activation, CausalLm, LayerNorm, Logits, Weights};

const D: usize = 768;
const HEADS: usize = 12;
const VOCAB: usize = 1024;
const PROMPT: usize = 128;

fn config() -> Gpt2Config {
    serde_json::from_value(serde_json::json!({
        "model_type": "gpt2", "n_embd": D, "n_head": HEADS, "n_layer": 1, "n_positions": 1024,
        "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
    }))
    .expect("config")
}

/// The checkpoint tensors of a 1-layer GPT-2 (Conv1D `[in, out]` layout) with random values.
fn tensors() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
            })
            .collect()
    };
    let shapes: [(&str, Vec<usize>); 14] = [
        ("wte.weight", vec![VOCAB, D]),
        ("wpe.weight", vec![1024, D]),
        ("h.0.ln_1.weight", vec![D]),
        ("h.0.ln_1.bias", vec![D]),
        ("h.0.attn.c_attn.weight", vec![D, 3 * D]),
        ("h.0.attn.c_attn.bias", vec![3 * D]),
        ("h.0.attn.c_proj.weight", vec![D, D]),
        ("h.0.attn.c_proj.bias", vec![D]),
        ("h.0.ln_2.weight", vec![D]),
        ("h.0.ln_2.bias", vec![D]),
        ("h.0.mlp.c_fc.weight", vec![D, 4 * D]),
        ("h.0.mlp.c_fc.bias", vec![4 * D]),
        ("h.0.mlp.c_proj.weight", vec![4 * D, D]),
        ("h.0.mlp.c_proj.bias", vec![D]),
    ];
    let mut map: BTreeMap<String, (Vec<usize>, Vec<f32>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name.to_string(), (shape, random(n)))
        })
        .collect();
    map.insert("ln_f.weight".into(), (vec![D], vec![1.0; D]));
    map.insert("ln_f.bias".into(), (vec![D], vec![0.0; D]));
    map
}

/// Waits for the device so that lazy backends (wgpu) are timed on finished work.
fn done<B: Backend, const N: usize>(t: Tensor<B, N>) {
    black_box(t.into_data());
}

struct Bench<'a> {
    c: &'a mut Criterion,
    kind: BackendKind,
}

impl Bench<'_> {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = self.kind.name();
        let mut weights = Weights::from_f32("random", tensors());
        let model =
            zoo_gpt2::load::from_weights::<B>(&config(), &mut weights, &device).expect("block");
        let prompt: Vec<u32> = (0..PROMPT as u32)
            .map(|i| (i * 31) % VOCAB as u32)
            .collect();
        let prefill = |cache: &mut _| {
            let ids = ids_tensor::<B>(&prompt, &device);
            model.forward_cached(ids, cache, Logits::Hidden).unwrap()
        };

        let mut group = self.c.benchmark_group(format!("gpt2_block/{kind}"));
        group.throughput(Throughput::Elements(PROMPT as u64));
        group.bench_function("prefill_128", |b| {
            b.iter(|| done(prefill(&mut model.new_cache(1, PROMPT + 1))))
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function("decode_step_after_128", |b| {
            b.iter_batched(
                || {
                    // The prefill is set-up, not timed.
                    let mut cache = model.new_cache(1, PROMPT + 1);
                    done(prefill(&mut cache));
                    cache
                },
                |mut cache| {
                    let ids = ids_tensor::<B>(&[5], &device);
                    done(
                        model
                            .forward_cached(ids, &mut cache, Logits::Hidden)
                            .unwrap(),
                    )
                },
                criterion::BatchSize::LargeInput,
            )
        });
        group.finish();

        let mut group = self.c.benchmark_group(format!("gpt2_kernels/{kind}"));
        group.throughput(Throughput::Elements(PROMPT as u64));
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<B, 3>::random([1, PROMPT, D], normal, &device);
        let norm = LayerNorm::new(
            Tensor::<B, 1>::ones([D], &device),
            Tensor::<B, 1>::zeros([D], &device),
            1e-5,
        );
        group.bench_function("layernorm_128x768", |b| {
            b.iter(|| done(norm.forward(x.clone())))
        });
        let h = Tensor::<B, 2>::random([PROMPT, 4 * D], normal, &device);
        group.bench_function("gelu_tanh_128x3072", |b| {
            b.iter(|| done(Activation::GeluTanh.forward(h.clone())))
        });
        group.finish();
    }
}

fn kernels(c: &mut Criterion) {
    for kind in zoo_backends::test_backends().expect("backends") {
        zoo_backends::with_backend!(kind, |B, device| {
            (Bench { c: &mut *c, kind }).run::<B>(device)
        })
        .expect("backend opens");
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
