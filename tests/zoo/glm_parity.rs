//! HF `GlmForCausalLM` parity (fixtures from tests/fixtures/glm_fixtures.py, transformers
//! 5.23.0) and ChatGLM-6B incremental decoding with the prefix-LM mask vs one full pass.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use zoo_backends::BackendKind;
use zoo_glm::{hf, v1, ChatGlmV1Config};
use zoo_nn::{generate, ids_tensor, CausalLm, Logits, Sampler, Sampling, Weights};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/glm"))
}

fn values(t: burn::tensor::Tensor<impl Backend, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

struct HfParity {
    kind: BackendKind,
    name: &'static str,
}

impl HfParity {
    fn run<B: Backend>(self, device: B::Device) {
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("{}.json", self.name))).unwrap(),
        )
        .unwrap();
        let ids: Vec<u32> = reference["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want: Vec<f32> = reference["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let greedy: Vec<u32> = reference["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();

        let (config, model) = hf::load::<B>(&fixtures().join(self.name), &device).unwrap();
        let mut cache = model.new_cache(1, ids.len());
        let got = values(
            model
                .forward_cached(ids_tensor::<B>(&ids, &device), &mut cache, Logits::All)
                .unwrap(),
        );
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let tol = zoo_backends::tolerance(self.kind);
        assert!(
            worst <= tol,
            "{} logits: max |diff| {worst} > {tol}",
            self.name
        );

        let mut sampler = Sampler::new(Sampling::greedy());
        let out = generate(&model, &ids, greedy.len(), &mut sampler, &[], |_| true).unwrap();
        assert_eq!(out, greedy, "{}: greedy tokens", self.name);
        assert_eq!(config.eos_ids(), vec![1, 2]);
    }
}

#[test]
fn hf_glm_matches_transformers_safetensors_untied_with_bias() {
    for kind in zoo_backends::test_backends().unwrap() {
        zoo_backends::with_backend!(kind, |B, device| {
            (HfParity {
                kind,
                name: "hf_tiny",
            })
            .run::<B>(device)
        })
        .unwrap();
    }
}

#[test]
fn hf_glm_matches_transformers_bin_tied_without_bias() {
    for kind in zoo_backends::test_backends().unwrap() {
        zoo_backends::with_backend!(kind, |B, device| {
            (HfParity {
                kind,
                name: "hf_tiny_bin",
            })
            .run::<B>(device)
        })
        .unwrap();
    }
}

#[test]
fn hf_load_rejects_missing_and_unused_tensors() {
    let dir = fixtures().join("hf_tiny");
    let config = hf::read_hf_config(&dir).unwrap();
    let device = Default::default();
    // An extra tensor is an error at finish.
    let mut weights = Weights::open(&dir).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("model.extra".to_string(), (vec![1], vec![0.0f32]));
    let mut with_extra = Weights::from_f32("extra", extra);
    hf::from_weights::<burn::backend::Flex>(&config, &mut weights, &device).unwrap();
    weights.finish(|_| false).unwrap();
    assert!(hf::from_weights::<burn::backend::Flex>(&config, &mut with_extra, &device).is_err());
}

/// Deterministic pseudo-random values in [-0.5, 0.5).
fn lcg(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

struct V1Incremental {
    kind: BackendKind,
}

impl V1Incremental {
    fn run<B: Backend>(self, device: B::Device) {
        let (d, inner, vocab, layers) = (16usize, 32usize, 12usize, 2usize);
        let config: ChatGlmV1Config = serde_json::from_value(serde_json::json!({
            "hidden_size": d, "num_attention_heads": 2, "num_layers": layers, "vocab_size": vocab,
            "inner_hidden_size": inner, "max_sequence_length": 32,
            "gmask_token_id": 9, "mask_token_id": 8, "bos_token_id": 10, "eos_token_id": 11
        }))
        .unwrap();
        let mut seed = 7u64;
        let mut t = BTreeMap::new();
        let mut put = |name: String, shape: Vec<usize>, seed: &mut u64| {
            let n = shape.iter().product();
            t.insert(name, (shape, lcg(seed, n)));
        };
        put(
            "transformer.word_embeddings.weight".into(),
            vec![vocab, d],
            &mut seed,
        );
        for i in 0..layers {
            let p = format!("transformer.layers.{i}");
            for (name, shape) in [
                ("input_layernorm.weight", vec![d]),
                ("input_layernorm.bias", vec![d]),
                ("attention.query_key_value.weight", vec![3 * d, d]),
                ("attention.query_key_value.bias", vec![3 * d]),
                ("attention.dense.weight", vec![d, d]),
                ("attention.dense.bias", vec![d]),
                ("post_attention_layernorm.weight", vec![d]),
                ("post_attention_layernorm.bias", vec![d]),
                ("mlp.dense_h_to_4h.weight", vec![inner, d]),
                ("mlp.dense_h_to_4h.bias", vec![inner]),
                ("mlp.dense_4h_to_h.weight", vec![d, inner]),
                ("mlp.dense_4h_to_h.bias", vec![d]),
            ] {
                put(format!("{p}.{name}"), shape, &mut seed);
            }
        }
        put(
            "transformer.final_layernorm.weight".into(),
            vec![d],
            &mut seed,
        );
        put(
            "transformer.final_layernorm.bias".into(),
            vec![d],
            &mut seed,
        );
        put("lm_head.weight".into(), vec![vocab, d], &mut seed);
        let mut weights = Weights::from_f32("tiny v1", t);
        let model = v1::from_weights::<B>(&config, &mut weights, None, &device).unwrap();
        weights.finish(|_| false).unwrap();

        // Context "1 2 3 [gMASK]", then <sop>: context length 4, mask position 3.
        let prompt = [1u32, 2, 3, 9, 10];
        let new = 6;
        let mut sampler = Sampler::new(Sampling::greedy());
        let generated = generate(&model, &prompt, new, &mut sampler, &[], |_| true).unwrap();
        assert_eq!(generated.len(), new);

        // Step by step with the cache, keeping every step's logits.
        let mut cache = model.new_cache(1, prompt.len() + new);
        let mut steps = values(
            model
                .forward_cached(ids_tensor::<B>(&prompt, &device), &mut cache, Logits::Last)
                .unwrap(),
        );
        for &id in &generated[..new - 1] {
            steps.extend(values(
                model
                    .forward_cached(ids_tensor::<B>(&[id], &device), &mut cache, Logits::Last)
                    .unwrap(),
            ));
        }
        // One full pass over prompt + generated tokens (prefix-LM mask over the context).
        let mut all: Vec<u32> = prompt.to_vec();
        all.extend(&generated[..new - 1]);
        let mut cache = model.new_cache(1, all.len());
        let full = values(
            model
                .forward_cached(ids_tensor::<B>(&all, &device), &mut cache, Logits::All)
                .unwrap(),
        );
        let full_rows = &full[(prompt.len() - 1) * vocab..];
        assert_eq!(full_rows.len(), steps.len());
        let worst = full_rows
            .iter()
            .zip(&steps)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let tol = zoo_backends::tolerance(self.kind);
        assert!(
            worst <= tol,
            "incremental vs full: max |diff| {worst} > {tol}"
        );
        // The greedy choices are the argmax of the full pass's rows.
        for (k, row) in full_rows.chunks(vocab).enumerate() {
            assert_eq!(zoo_nn::sampling::argmax(row), generated[k], "token {k}");
        }
        // The prefix-LM mask matters: a causal-only pass gives different logits.
        let layout = v1::PromptLayout::of(&all, 9, 8, 10).unwrap();
        let (pos, block): (Vec<usize>, Vec<usize>) =
            (0..all.len()).map(|i| layout.positions(i)).unzip();
        let mut cache = model.cache(1, all.len());
        let causal = values(
            model
                .lm_logits(
                    model
                        .hidden(ids_tensor::<B>(&all, &device), &pos, &block, 0, &mut cache)
                        .unwrap(),
                )
                .unwrap(),
        );
        let diff = causal
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff > 1e-3,
            "causal-only attention should differ from the prefix-LM mask"
        );
    }
}

#[test]
fn chatglm6b_incremental_generation_equals_full_forward() {
    for kind in zoo_backends::test_backends().unwrap() {
        zoo_backends::with_backend!(kind, |B, device| {
            (V1Incremental { kind }).run::<B>(device)
        })
        .unwrap();
    }
}

#[test]
fn chatglm6b_prompt_layout_needs_gmask_and_sop() {
    assert!(v1::PromptLayout::of(&[1, 2, 3], 9, 8, 10).is_err());
    let layout = v1::PromptLayout::of(&[5, 9, 10, 4], 9, 8, 10).unwrap();
    assert_eq!(layout.context, 2);
    assert_eq!(layout.mask_position, 1);
    assert_eq!(layout.positions(0), (0, 0));
    assert_eq!(layout.positions(2), (1, 1));
    assert_eq!(layout.positions(3), (1, 2));
}

#[test]
fn chatglm6b_memory_claim() {
    // THUDM/chatglm-6b config: vocab 130528, hidden 4096, 28 layers, inner 16384.
    let shape = zoo_glm::memory::Shape::chatglm_v1(130528, 4096, 28, 16384);
    let gb = |b: usize| b as f64 / 1e9;
    let params = shape.parameters() as f64 / 1e9;
    // 6.2B in the model card counts the LM head once; the checkpoint stores it separately.
    assert!((6.6..6.8).contains(&params), "parameters {params}B");
    println!(
        "params {params:.3}B fp16 {:.2} GB int8 {:.2} GB int4 {:.2} GB kv/token {} B",
        gb(shape.weight_bytes(16)),
        gb(shape.weight_bytes(8)),
        gb(shape.weight_bytes(4)),
        shape.kv_bytes_per_token()
    );
    assert!(
        (12.0..13.5).contains(&gb(shape.weight_bytes(16))),
        "fp16 {}",
        gb(shape.weight_bytes(16))
    );
    let kv = shape.kv_bytes_per_token();
    assert_eq!(kv, 2 * 28 * 2 * 4096); // fp16 keys + values, every layer
                                       // INT4 weights + a 2048-token KV cache ≈ 6 GB.
    let int4 = gb(shape.weight_bytes(4) + 2048 * kv);
    assert!((5.0..6.5).contains(&int4), "int4 + cache {int4}");
}
