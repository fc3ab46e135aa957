//! Parity with tiny random HF LLaMA checkpoints (tests/fixtures/llama_fixtures.py) on every
//! compiled-in backend: logits, exact greedy tokens, cache-incremental decoding, GGUF loading,
//! and load errors.

use crate::common::full_logits;
use std::path::PathBuf;

use burn::tensor::{backend::Backend, Tensor};
use zoo_backends::BackendKind;
use zoo_llama::{load, load_gguf, open, Llama, LlamaConfig, LlamaError, Message};
use zoo_nn::weights::{WeightError, Weights};
use zoo_nn::{generate, ids_tensor, CausalLm, Logits, Sampler, Sampling};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/llama"))
}

struct Reference {
    prompt: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(fixtures().join(name).join("reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let logits = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    Reference {
        prompt: ids("prompt"),
        logits,
        greedy: ids("greedy"),
    }
}

fn rows<B: Backend>(t: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [_, n, v] = t.dims();
    let flat: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Logits, greedy tokens and cache-incremental decoding of one model against its reference.
fn check<B: Backend>(label: &str, model: &Llama<B>, r: &Reference, tol: f32, device: &B::Device) {
    let logits = full_logits(model, &r.prompt, device);
    let diff = max_diff(&logits, &r.logits);
    assert!(
        diff < tol,
        "{label}: logits differ by {diff} (tolerance {tol})"
    );

    let mut sampler = Sampler::new(Sampling::greedy());
    let new = generate(model, &r.prompt, r.greedy.len(), &mut sampler, &[], |_| {
        true
    })
    .unwrap();
    assert_eq!(new, r.greedy, "{label}: greedy tokens");

    // Prefill 5 tokens, then one at a time: the same logits as the full pass.
    let mut cache = model.new_cache(1, r.prompt.len());
    let mut inc = rows(
        model
            .forward_cached(
                ids_tensor::<B>(&r.prompt[..5], device),
                &mut cache,
                Logits::All,
            )
            .unwrap(),
    );
    for &id in &r.prompt[5..] {
        let out = model
            .forward_cached(ids_tensor::<B>(&[id], device), &mut cache, Logits::Last)
            .unwrap();
        inc.extend(rows(out));
    }
    let diff = max_diff(&inc, &logits);
    assert!(
        diff < tol,
        "{label}: cached decoding differs from the full pass by {diff}"
    );
}

struct Parity {
    kind: BackendKind,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        for name in ["gqa", "llama3_tied", "dynamic", "linear_bias"] {
            let (config, model) = load::<B>(&fixtures().join(name), &device).unwrap();
            let r = reference(name);
            check(
                &format!("{name} on {}", self.kind.name()),
                &model,
                &r,
                tol,
                &device,
            );
            assert_eq!(config.tie_word_embeddings, model.lm_head.is_none());
        }
        // The GGUF copy of `gqa` (q/k rows permuted by the converter) gives the same outputs.
        let (config, model) = load_gguf::<B>(&fixtures().join("gqa.gguf"), &device).unwrap();
        assert_eq!(
            (
                config.num_attention_heads,
                config.kv_heads(),
                config.head_dim()
            ),
            (4, 2, 8)
        );
        check(
            &format!("gqa.gguf on {}", self.kind.name()),
            &model,
            &reference("gqa"),
            tol,
            &device,
        );
    }
}

#[test]
fn hf_and_gguf_fixtures_match_transformers_on_every_backend() {
    for kind in zoo_backends::test_backends().unwrap() {
        zoo_backends::with_backend!(kind, |B, device| { (Parity { kind }).run::<B>(device) })
            .unwrap();
    }
}

struct BadLoads;

impl BadLoads {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixtures().join("gqa");
        let config = zoo_llama::load::read_config(&dir).unwrap();
        let build = |config: &LlamaConfig| -> Result<(), WeightError> {
            let mut weights = Weights::open(&dir)?;
            zoo_llama::from_weights::<B>(config, &mut weights, None, &device)?;
            weights.finish(|n| n.ends_with("rotary_emb.inv_freq"))
        };
        // One layer more than the checkpoint has: a missing tensor, named.
        let more = LlamaConfig {
            num_hidden_layers: 3,
            ..config.clone()
        };
        match build(&more) {
            Err(WeightError::Missing { name, .. }) => {
                assert_eq!(name, "model.layers.2.input_layernorm.weight")
            }
            other => panic!("expected a missing tensor, got {other:?}"),
        }
        // A wrong intermediate size: a shape error naming the tensor.
        let wrong = LlamaConfig {
            intermediate_size: 48,
            ..config.clone()
        };
        match build(&wrong) {
            Err(WeightError::Shape {
                name,
                expected,
                found,
            }) => {
                assert_eq!(name, "model.layers.0.mlp.gate_proj.weight");
                assert_eq!((expected, found), (vec![48, 16], vec![32, 16]));
            }
            other => panic!("expected a shape error, got {other:?}"),
        }
        // One layer fewer: the second layer's tensors are unused.
        let fewer = LlamaConfig {
            num_hidden_layers: 1,
            ..config.clone()
        };
        match build(&fewer) {
            Err(WeightError::Unused(names)) => {
                assert_eq!(names.len(), 9);
                assert!(names.iter().all(|n| n.starts_with("model.layers.1.")));
            }
            other => panic!("expected unused tensors, got {other:?}"),
        }
        // A folder without weights, a truncated GGUF file, a non-LLaMA config.
        assert!(matches!(
            load::<B>(&fixtures(), &device),
            Err(LlamaError::Config { .. })
        ));
        let bytes = std::fs::read(fixtures().join("gqa.gguf")).unwrap();
        let cut =
            std::env::temp_dir().join(format!("zoo-llama-truncated-{}.gguf", std::process::id()));
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let err = load_gguf::<B>(&cut, &device).unwrap_err();
        std::fs::remove_file(&cut).ok();
        assert!(matches!(err, LlamaError::Gguf { .. }), "{err}");
    }
}

#[test]
fn bad_checkpoints_are_errors_naming_the_tensor() {
    for kind in zoo_backends::test_backends().unwrap() {
        zoo_backends::with_backend!(kind, |B, device| { (BadLoads).run::<B>(device) }).unwrap();
    }
    let base = std::fs::read_to_string(fixtures().join("gqa/config.json")).unwrap();
    let bad_rope = base.replace("\"rope_type\": \"default\"", "\"rope_type\": \"yarn\"");
    assert!(LlamaConfig::from_json(&bad_rope)
        .unwrap_err()
        .contains("yarn"));
    let bad_heads = base.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
    assert!(LlamaConfig::from_json(&bad_heads)
        .unwrap_err()
        .contains("num_key_value_heads"));
    let old_style = r#"{"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 4, "vocab_size": 64, "rope_theta": 500000.0,
        "rope_scaling": {"type": "linear", "factor": 4.0}, "eos_token_id": [5, 7]}"#;
    let c = LlamaConfig::from_json(old_style).unwrap();
    assert_eq!(
        c.rope().unwrap(),
        zoo_llama::RopeScaling::Linear { factor: 4.0 }
    );
    assert_eq!(
        (c.rope_theta(), c.eos_ids(), c.head_dim()),
        (500000.0, vec![5, 7], 4)
    );
    // Found by the `config` fuzz target (seed `crash-3f6b464f`): an explicit `head_dim` of
    // 2.2e17 passed validation and overflowed the parameter count; it is bounded like every
    // other width now.
    let seed = include_str!("../fuzz/seeds/config/crash-3f6b464f");
    let err = LlamaConfig::from_json(seed).unwrap_err();
    assert!(err.contains("head_dim"), "{err}");
}

struct GgufChat;

impl GgufChat {
    fn run<B: Backend>(self, device: B::Device) {
        let loaded = open::<B>(&fixtures().join("gqa.gguf"), &device).unwrap();
        assert_eq!(loaded.eos_ids, vec![2]);
        assert!(loaded.tokenizer.is_none());
        let format = loaded.chat_format().unwrap();
        assert_eq!(format.name(), "jinja");
        let text = format
            .prompt_text(&[Message::new("user", "hi")])
            .unwrap()
            .unwrap();
        assert_eq!(text, "<user>hi\n<assistant>");
    }
}

#[test]
fn gguf_open_brings_template_and_stop_ids() {
    let kind = zoo_backends::test_backends().unwrap()[0];
    zoo_backends::with_backend!(kind, |B, device| { GgufChat.run::<B>(device) }).unwrap();
}

struct SmolLm2 {
    path: PathBuf,
}

impl SmolLm2 {
    fn run<B: Backend>(self, device: B::Device) -> (String, usize, f64) {
        let lm = open::<B>(&self.path, &device).unwrap();
        let m = &lm.model;
        let a = &m.layers[0].self_attn;
        assert_eq!(
            (m.layers.len(), a.num_heads, a.num_kv_heads, a.head_dim),
            (30, 9, 3, 64)
        );
        assert!(
            m.lm_head.is_none(),
            "SmolLM2 ties its head to the embedding"
        );
        let messages = [Message::new("user", "What is the capital of France?")];
        let text = lm
            .chat_format()
            .unwrap()
            .prompt_text(&messages)
            .unwrap()
            .unwrap();
        assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
        let prompt = lm.chat_prompt(&messages).unwrap();
        assert_eq!(prompt[0], 1); // <|im_start|>
        assert!(lm.chat_stop_ids().contains(&2));
        let mut conversation = zoo_nn::Conversation::new(None);
        conversation.push_user("What is the capital of France?");
        let out = lm
            .reply(
                &mut conversation,
                &zoo_nn::GenerationConfig::greedy(20),
                |_| true,
            )
            .unwrap();
        let secs = out.stats.prefill_secs + out.stats.decode_secs;
        (out.text.unwrap(), out.ids.len(), secs)
    }
}

#[test]
fn smollm2_answers_paris() {
    let Some(path) = std::env::var_os("ZOO_SMOLLM2_GGUF") else {
        println!(
            "skipped: set ZOO_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf to run this test"
        );
        return;
    };
    let kind = zoo_backends::test_backends()
        .unwrap()
        .into_iter()
        .find(|k| !k.is_gpu())
        .unwrap_or(BackendKind::Flex);
    let (answer, n, secs) = zoo_backends::with_backend!(kind, |B, device| {
        (SmolLm2 { path: path.into() }).run::<B>(device)
    })
    .unwrap();
    println!(
        "SmolLM2 on {}: {answer:?} ({n} tokens, {:.1} tokens/s incl. prefill)",
        kind.name(),
        n as f64 / secs
    );
    assert!(answer.contains("Paris"), "{answer}");
}
