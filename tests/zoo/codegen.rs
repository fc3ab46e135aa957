//! Parity of zoo-codegen with tiny random HF CodeGen checkpoints
//! (tests/fixtures/codegen_fixtures.py) on every compiled-in backend: logits, exact greedy
//! tokens, cache-incremental decoding, the MOSS loader path (same weights, `model_type:
//! "moss"`, pytorch_model.bin with buffers), weights kept in f16 / Q8_0, MOSS's chat prompt
//! and tokenizer against transformers', and load errors.

use std::path::PathBuf;

use burn::tensor::{backend::Backend, Tensor};
use zoo_backends::BackendKind;
use zoo_codegen::{load, load_with, open, CodeGen, CodeGenConfig, CodeGenError};
use zoo_nn::weights::{WeightError, Weights};
use zoo_nn::{
    generate, ids_tensor, CausalLm, Logits, Message, QType, Sampler, Sampling, WeightFormat,
};

use crate::common::{full_logits, ids, json, max_abs_diff};

fn dir(name: &str) -> PathBuf {
    crate::common::fixtures().join("codegen").join(name)
}

struct Reference {
    prompt: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let v = json(&dir(name).join("reference.json"));
    Reference {
        prompt: ids(&v["prompt"]),
        logits: crate::common::rows(&v["logits"]),
        greedy: ids(&v["greedy"]),
    }
}

fn rows<B: Backend>(t: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [_, n, v] = t.dims();
    let flat: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// Logits within `tol` of transformers', the exact greedy tokens, and cached step-by-step
/// decoding equal to the full pass; returns the largest logit difference.
fn check<B: Backend>(
    label: &str,
    model: &CodeGen<B>,
    r: &Reference,
    tol: f32,
    device: &B::Device,
) -> f32 {
    let logits = full_logits(model, &r.prompt, device);
    let diff = max_abs_diff(&logits, &r.logits);
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

    // Prefill 4 tokens, then one at a time: the same logits as the full pass.
    let mut cache = model.new_cache(1, r.prompt.len());
    let mut inc = rows(
        model
            .forward_cached(
                ids_tensor::<B>(&r.prompt[..4], device),
                &mut cache,
                Logits::All,
            )
            .unwrap(),
    );
    for &id in &r.prompt[4..] {
        let out = model
            .forward_cached(ids_tensor::<B>(&[id], device), &mut cache, Logits::Last)
            .unwrap();
        inc.extend(rows(out));
    }
    let step = max_abs_diff(&inc, &logits);
    assert!(
        step < tol,
        "{label}: cached decoding differs from the full pass by {step}"
    );
    eprintln!("{label}: max |logit - transformers| = {diff:.2e}, cached vs full {step:.2e}");
    diff
}

struct Parity {
    kind: BackendKind,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        let backend = self.kind.name();
        for name in ["tiny", "moss"] {
            let (config, model) = load::<B>(&dir(name), &device).unwrap();
            assert_eq!(config.is_moss(), name == "moss");
            assert_eq!((config.head_dim(), config.rotary()), (8, 4));
            check(
                &format!("{name} on {backend}"),
                &model,
                &reference(name),
                tol,
                &device,
            );
        }
        // Weights kept in f16 and in Q8_0 (the split q/k/v too): close to the f32 logits.
        // f16 rounds each weight by ≤ 2⁻¹¹ relative, Q8_0 by ≤ amax/254 of its block of 32;
        // through two layers of weights ×0.3 randn, measured 3.6e-3 (f16) and 8.1e-2 (Q8_0)
        // on flex, ndarray and wgpu alike; the bounds leave room.
        let r = reference("tiny");
        for (format, bound) in [
            (WeightFormat::dtype(QType::F16), 2e-2),
            (WeightFormat::quantized(QType::Q8_0), 4e-1),
        ] {
            let (_, model) = load_with::<B>(&dir("tiny"), &device, format).unwrap();
            let attn = &model.h[0].attn;
            let want = format.matrices.unwrap().name();
            // The split q/k/v are kept as every other matrix is: as `want` on the host; on the
            // GPU backends packed (Q8_0) or widened to f32 (f16).
            let out = attn.out_proj.format();
            assert!(self.kind.is_gpu() || out == want, "{out}");
            for dense in [&attn.q_proj, &attn.k_proj, &attn.v_proj] {
                assert_eq!(dense.format(), out);
            }
            let diff = max_abs_diff(&full_logits(&model, &r.prompt, &device), &r.logits);
            eprintln!(
                "tiny as {} on {backend}: max |logit diff| = {diff:.2e}",
                format.describe()
            );
            assert!(
                diff < bound,
                "{}: logits differ by {diff}",
                format.describe()
            );
        }
    }
}

#[test]
fn codegen_and_moss_match_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity { kind });
}

#[test]
fn moss_chat_prompt_and_tokenizer_match_transformers() {
    let d = dir("moss");
    let v = json(&d.join("reference.json"));
    let generator = open::<burn::backend::Flex>(&d, &Default::default()).unwrap();
    let text = v["chat_text"].as_str().unwrap();
    let system = text.split("<|Human|>").next().unwrap();
    let messages = [
        Message::new("system", system),
        Message::new("user", "Hi there"),
        Message::new("assistant", "Hello!"),
        Message::new("user", "What is the 2+2?"),
    ];
    let format = generator.chat_format().unwrap();
    assert_eq!(format.name(), "moss");
    assert_eq!(
        format.prompt_text(&messages).unwrap().as_deref(),
        Some(text)
    );
    assert_eq!(
        generator.chat_prompt(&messages).unwrap(),
        ids(&v["chat_ids"])
    );
    // <eom> from added_tokens.json is both the config's eos and the format's stop id.
    let eom = v["eom"].as_u64().unwrap() as u32;
    assert_eq!(
        generator.tokenizer.as_ref().unwrap().token_id("<eom>"),
        Some(eom)
    );
    assert_eq!(generator.chat_stop_ids(), vec![eom]);
    assert_eq!(generator.eos_ids, vec![eom]);

    // CodeGen: no chat format; its whitespace added tokens are matched in text.
    let codegen = open::<burn::backend::Flex>(&dir("tiny"), &Default::default()).unwrap();
    assert!(codegen.chat_format().is_err());
    let tok = codegen.tokenizer.as_ref().unwrap();
    let spaces = tok.token_id("    ").unwrap();
    let ids = tok.encode("a\n    b", false).unwrap();
    assert!(ids.contains(&spaces), "{ids:?}");
    assert_eq!(tok.decode(&ids, false).unwrap(), "a\n    b");
}

struct BadLoads;

impl BadLoads {
    fn run<B: Backend>(self, device: B::Device) {
        let d = dir("tiny");
        let config = zoo_codegen::read_config(&d).unwrap();
        let build = |config: &CodeGenConfig| -> Result<(), WeightError> {
            let mut weights = Weights::open(&d)?;
            zoo_codegen::from_weights::<B>(config, &mut weights, &device)?;
            weights.finish(zoo_codegen::load::is_buffer)
        };
        // One layer more than the checkpoint has: a missing tensor, named.
        let more = CodeGenConfig {
            n_layer: 3,
            ..config.clone()
        };
        match build(&more) {
            Err(WeightError::Missing { name, .. }) => {
                assert_eq!(name, "transformer.h.2.ln_1.weight")
            }
            other => panic!("expected a missing tensor, got {other:?}"),
        }
        // A wrong MLP width: a shape error naming the tensor (fc_in's bias is read first).
        let wrong = CodeGenConfig {
            n_inner: Some(32),
            ..config.clone()
        };
        match build(&wrong) {
            Err(WeightError::Shape {
                name,
                expected,
                found,
            }) => {
                assert_eq!(name, "transformer.h.0.mlp.fc_in.bias");
                assert_eq!((expected, found), (vec![32], vec![64]));
            }
            other => panic!("expected a shape error, got {other:?}"),
        }
        // One layer fewer: the second block's tensors are unused.
        let fewer = CodeGenConfig {
            n_layer: 1,
            ..config.clone()
        };
        match build(&fewer) {
            Err(WeightError::Unused(names)) => {
                assert_eq!(names.len(), 8, "{names:?}");
                assert!(names.iter().all(|n| n.starts_with("transformer.h.1.")));
            }
            other => panic!("expected unused tensors, got {other:?}"),
        }
        // A folder without a config: a config error naming the file.
        match load::<B>(&crate::common::fixtures().join("codegen"), &device) {
            Err(CodeGenError::Config { path, .. }) => assert!(path.ends_with("config.json")),
            other => panic!("expected a config error, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn bad_codegen_checkpoints_are_errors_naming_the_problem() {
    on_every_backend!(|_kind| BadLoads);
    // A config it cannot run: an error naming the field, from `load` too.
    let base = std::fs::read_to_string(dir("tiny").join("config.json")).unwrap();
    let tmp = std::env::temp_dir().join(format!("zoo-codegen-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        base.replace("\"n_head\": 4", "\"n_head\": 2"),
    )
    .unwrap();
    let err = load::<burn::backend::Flex>(&tmp, &Default::default()).unwrap_err();
    std::fs::remove_dir_all(&tmp).ok();
    assert!(matches!(err, CodeGenError::Config { .. }), "{err}");
    assert!(
        err.to_string().contains("n_head 2 is not divisible by 4"),
        "{err}"
    );
    let gptj = base.replace("\"codegen\"", "\"gptj\"");
    assert!(CodeGenConfig::from_json(&gptj)
        .unwrap_err()
        .contains("model_type is `gptj`"));
}
