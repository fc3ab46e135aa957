//! Throughput of the LLaMA family's hot kernels on every compiled backend (tokens per second):
//! one decoder layer (RMSNorm, GQA attention with RoPE and the KV cache, SwiGLU MLP) at
//! SmolLM2-135M's width for a prefill of 128 tokens and one decode step after 128 cached
//! tokens, and the pieces alone (RMSNorm, RoPE, SwiGLU MLP) on 128 tokens.
//!
//! The layer is a 1-layer checkpoint with random weights, written to a temporary folder and
//! loaded with `zoo_llama::load` (vocabulary cut to 1024; `Logits::Hidden`: no LM head).
//! Run: `cargo bench -p zoo-llama --features zoo-llama/flex --bench kernels`.

use std::hint::black_box;
use std::path::PathBuf;

use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zoo_backends::BackendKind;
use zoo_nn::rope::{default_inv_freq, rope_half, RotaryTable};
use zoo_nn::{ids_tensor, Activation, CausalLm, Logits, RmsNorm};

const HIDDEN: usize = 576;
const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const FFN: usize = 1536;
const VOCAB: usize = 1024;
const PROMPT: usize = 128;

/// A 1-layer LLaMA checkpoint of SmolLM2-135M's shapes with random weights.
fn checkpoint() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zoo-llama-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": HIDDEN, "intermediate_size": FFN,
        "num_hidden_layers": 1, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "vocab_size": VOCAB, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0, "tie_word_embeddings": true, "hidden_act": "silu",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
                v.to_le_bytes()
            })
            .collect()
    };
    let kv = KV_HEADS * HEAD_DIM;
    let shapes: Vec<(&str, Vec<usize>)> = vec![
        ("model.embed_tokens.weight", vec![VOCAB, HIDDEN]),
        ("model.norm.weight", vec![HIDDEN]),
        ("model.layers.0.input_layernorm.weight", vec![HIDDEN]),
        (
            "model.layers.0.post_attention_layernorm.weight",
            vec![HIDDEN],
        ),
        (
            "model.layers.0.self_attn.q_proj.weight",
            vec![HIDDEN, HIDDEN],
        ),
        ("model.layers.0.self_attn.k_proj.weight", vec![kv, HIDDEN]),
        ("model.layers.0.self_attn.v_proj.weight", vec![kv, HIDDEN]),
        (
            "model.layers.0.self_attn.o_proj.weight",
            vec![HIDDEN, HIDDEN],
        ),
        ("model.layers.0.mlp.gate_proj.weight", vec![FFN, HIDDEN]),
        ("model.layers.0.mlp.up_proj.weight", vec![FFN, HIDDEN]),
        ("model.layers.0.mlp.down_proj.weight", vec![HIDDEN, FFN]),
    ];
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            (name.to_string(), shape, random(n))
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("view");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("write safetensors");
    dir
}

/// Waits for the device so that lazy backends (wgpu) are timed on finished work.
fn done<B: Backend, const D: usize>(t: Tensor<B, D>) {
    black_box(t.into_data());
}

struct Bench<'a> {
    c: &'a mut Criterion,
    kind: BackendKind,
    dir: PathBuf,
}

impl Bench<'_> {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = self.kind.name();
        let (_, model) = zoo_llama::load::<B>(&self.dir, &device).expect("load the layer");
        let prompt: Vec<u32> = (0..PROMPT as u32)
            .map(|i| (i * 37) % VOCAB as u32)
            .collect();

        let mut group = self.c.benchmark_group(format!("llama_layer/{kind}"));
        group.throughput(Throughput::Elements(PROMPT as u64));
        group.bench_function("prefill_128", |b| {
            b.iter(|| {
                let mut cache = model.new_cache(1, PROMPT + 1);
                let ids = ids_tensor::<B>(&prompt, &device);
                done(
                    model
                        .forward_cached(ids, &mut cache, Logits::Hidden)
                        .unwrap(),
                )
            })
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function("decode_step_after_128", |b| {
            b.iter_batched(
                || {
                    // The prefill is set-up, not timed.
                    let mut cache = model.new_cache(1, PROMPT + 1);
                    let ids = ids_tensor::<B>(&prompt, &device);
                    done(
                        model
                            .forward_cached(ids, &mut cache, Logits::Hidden)
                            .unwrap(),
                    );
                    cache
                },
                |mut cache| {
                    let ids = ids_tensor::<B>(&[7], &device);
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

        let mut group = self.c.benchmark_group(format!("llama_kernels/{kind}"));
        group.throughput(Throughput::Elements(PROMPT as u64));
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<B, 3>::random([1, PROMPT, HIDDEN], normal, &device);
        let norm = RmsNorm::new(Tensor::<B, 1>::ones([HIDDEN], &device), 1e-5);
        group.bench_function("rmsnorm_128x576", |b| {
            b.iter(|| done(norm.forward(x.clone())))
        });
        let q = Tensor::<B, 4>::random([1, HEADS, PROMPT, HEAD_DIM], normal, &device);
        let table =
            RotaryTable::<B>::new(&default_inv_freq(HEAD_DIM, 100000.0), 2048, 1.0, &device);
        group.bench_function("rope_128x9x64", |b| {
            b.iter(|| {
                let (cos, sin) = table.range(0, PROMPT);
                done(rope_half(q.clone(), cos, sin))
            })
        });
        let w = |o: usize, i: usize| Tensor::<B, 2>::random([i, o], normal, &device) * 0.05;
        let (gate, up, down) = (w(FFN, HIDDEN), w(FFN, HIDDEN), w(HIDDEN, FFN));
        let x2 = x.clone().reshape([PROMPT, HIDDEN]);
        group.bench_function("swiglu_mlp_128x576x1536", |b| {
            b.iter(|| {
                let g = Activation::Silu.forward(x2.clone().matmul(gate.clone()));
                let h = g * x2.clone().matmul(up.clone());
                done(h.matmul(down.clone()))
            })
        });
        group.finish();
    }
}

fn kernels(c: &mut Criterion) {
    let dir = checkpoint();
    for kind in zoo_backends::test_backends().expect("backends") {
        zoo_backends::with_backend!(kind, |B, device| {
            (Bench {
                c: &mut *c,
                kind,
                dir: dir.clone(),
            })
            .run::<B>(device)
        })
        .expect("backend opens");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
