//! GPT-2 parity with HF transformers on every compiled-in backend: logits, hidden states,
//! exact greedy tokens, cache-incremental decoding, seeded sampling, and every bad load.

use std::path::{Path, PathBuf};

use crate::common::*;
use burn::tensor::backend::Backend;
use burn_zoo::backends::{tolerance, BackendKind};
use burn_zoo::gpt2::{self, Gpt2Error};
use burn_zoo::nn::generate::ids_tensor;
use burn_zoo::nn::{generate, CausalLm, Logits, Sampler, Sampling, WeightError};

fn fixture(name: &str) -> PathBuf {
    fixtures().join("gpt2").join(name)
}

/// Logits and hidden states of the whole prompt, greedy tokens, and incremental decoding.
struct Parity {
    kind: BackendKind,
    name: &'static str,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture(self.name);
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let (config, model) = gpt2::load::<B>(&dir, &device).unwrap();
        let tol = tolerance(self.kind);

        // Full forward: logits and hidden states.
        let mut cache = model.new_cache(1, prompt.len());
        let logits = model
            .forward_cached(ids_tensor::<B>(&prompt, &device), &mut cache, Logits::All)
            .unwrap();
        let logits = tensor_rows(logits);
        let diff = max_abs_diff(&logits, &rows(&reference["logits"]));
        eprintln!("  {} logits max |diff| = {diff:e}", self.name);
        assert!(
            diff < tol,
            "{}: logits differ by {diff} (tolerance {tol})",
            self.name
        );

        let mut cache = model.cache(1, prompt.len());
        let hidden = model
            .hidden(ids_tensor::<B>(&prompt, &device), &mut cache)
            .unwrap();
        let diff = max_abs_diff(&tensor_rows(hidden), &rows(&reference["hidden"]));
        assert!(diff < tol, "{}: hidden states differ by {diff}", self.name);

        // Incremental decoding with the cache, one token at a time, equals the full pass.
        let mut cache = model.new_cache(1, prompt.len());
        let mut stepwise = Vec::new();
        for &id in &prompt {
            let out = model
                .forward_cached(ids_tensor::<B>(&[id], &device), &mut cache, Logits::All)
                .unwrap();
            stepwise.extend(tensor_rows(out));
        }
        let diff = max_abs_diff(&stepwise, &logits);
        assert!(
            diff < tol,
            "{}: cached decoding differs from the full pass by {diff}",
            self.name
        );

        // Mixed: a prefix in one call, then the rest in another.
        let split = prompt.len() / 2;
        let mut cache = model.new_cache(1, prompt.len());
        let mut mixed = tensor_rows(
            model
                .forward_cached(
                    ids_tensor::<B>(&prompt[..split], &device),
                    &mut cache,
                    Logits::All,
                )
                .unwrap(),
        );
        mixed.extend(tensor_rows(
            model
                .forward_cached(
                    ids_tensor::<B>(&prompt[split..], &device),
                    &mut cache,
                    Logits::All,
                )
                .unwrap(),
        ));
        let diff = max_abs_diff(&mixed, &logits);
        assert!(
            diff < tol,
            "{}: chunked prefill differs by {diff}",
            self.name
        );

        // Exact greedy tokens, as transformers' generate (which stops at eos).
        let want = ids(&reference["greedy"]);
        let stop: Vec<u32> = config.eos_token_id.into_iter().collect();
        let mut sampler = Sampler::new(Sampling::greedy());
        let got = generate(&model, &prompt, want.len(), &mut sampler, &stop, |_| true).unwrap();
        assert_eq!(got, want, "{}: greedy tokens", self.name);
    }
}

#[test]
fn tiny_a_matches_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity {
        kind,
        name: "tiny-a",
    });
}

#[test]
fn tiny_b_pytorch_bin_untied_head_matches_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity {
        kind,
        name: "tiny-b",
    });
}

/// Seeded sampling gives the same tokens for the same seed, other tokens for another seed.
struct Sampled;

impl Sampled {
    fn run<B: Backend>(self, device: B::Device) {
        let (_, model) = gpt2::load::<B>(&fixture("tiny-a"), &device).unwrap();
        let draw = |seed| {
            let mut sampler = Sampler::new(Sampling {
                temperature: 1.5,
                top_k: Some(50),
                top_p: Some(0.95),
                repeat_penalty: 1.1,
                seed,
                ..Sampling::default()
            });
            generate(&model, &[40, 72, 79], 24, &mut sampler, &[], |_| true).unwrap()
        };
        let a = draw(7);
        assert_eq!(a.len(), 24);
        assert_eq!(a, draw(7), "same seed, same tokens");
        assert_ne!(a, draw(8), "another seed, other tokens");
    }
}

#[test]
fn seeded_sampling_is_reproducible_on_every_backend() {
    on_every_backend!(|_| Sampled);
}

// ---------------------------------------------------------------------------------------------
// Bad loads: each is an error that names the problem, never a panic.

struct Load {
    dir: PathBuf,
}

impl Load {
    fn run<B: Backend>(self, device: B::Device) -> Result<(), Gpt2Error> {
        gpt2::load::<B>(&self.dir, &device).map(|_| ())
    }
}

fn load_on_flex(dir: &Path) -> Result<(), Gpt2Error> {
    zoo_backends::with_backend!(cpu_backend(), |B, device| {
        (Load {
            dir: dir.to_path_buf(),
        })
        .run::<B>(device)
    })
    .unwrap()
}

/// A copy of fixture `tiny-a` in a temporary folder, to damage.
fn copy_of_tiny_a() -> tempfile::TempDir {
    copy_dir(&fixture("tiny-a"))
}

#[test]
fn missing_tensor_is_named() {
    let tmp = copy_of_tiny_a();
    rewrite_weights(tmp.path(), |t| {
        t.remove("transformer.h.1.mlp.c_fc.weight").unwrap();
    });
    let err = load_on_flex(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Gpt2Error::Weights(WeightError::Missing { name, .. }) if name == "transformer.h.1.mlp.c_fc.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let tmp = copy_of_tiny_a();
    rewrite_weights(tmp.path(), |t| {
        let entry = t.get_mut("transformer.h.0.attn.c_proj.weight").unwrap();
        entry.0 = vec![16, 64];
    });
    let err = load_on_flex(tmp.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("transformer.h.0.attn.c_proj.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("[16, 64]"), "{err}");
}

#[test]
fn unused_tensor_is_an_error() {
    let tmp = copy_of_tiny_a();
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "transformer.h.0.attn.extra".into(),
            (vec![2], vec![1.0, 2.0]),
        );
    });
    let err = load_on_flex(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Gpt2Error::Weights(WeightError::Unused(names)) if names == &["transformer.h.0.attn.extra".to_string()]),
        "{err}"
    );
}

#[test]
fn truncated_file_is_an_error() {
    let tmp = copy_of_tiny_a();
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for keep in [4, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_on_flex(tmp.path()).unwrap_err();
        assert!(
            matches!(err, Gpt2Error::Weights(WeightError::Safetensors { .. })),
            "{keep}: {err}"
        );
    }
}

#[test]
fn config_that_does_not_match_the_weights_is_an_error() {
    // More layers than the checkpoint has: a missing tensor.
    let tmp = copy_of_tiny_a();
    set_config(tmp.path(), "n_layer", 3.into());
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("transformer.h.2."), "{err}");
    // Fewer layers: the checkpoint's layer 1 is unused.
    set_config(tmp.path(), "n_layer", 1.into());
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("not used") && err.contains("transformer.h.1."),
        "{err}"
    );
    // Another width: a shape error.
    set_config(tmp.path(), "n_layer", 2.into());
    set_config(tmp.path(), "n_embd", 64.into());
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
    // Nonsense sizes are refused before any tensor is read.
    set_config(tmp.path(), "n_embd", 30.into());
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("not divisible"), "{err}");
}

#[test]
fn missing_weights_and_config_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::copy(
        fixture("tiny-a").join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("no weights"), "{err}");
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"not a zip or pickle").unwrap();
    let err = load_on_flex(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("PyTorch"), "{err}");
}

#[test]
fn every_gpt2_size_loads_by_config_alone() {
    // The published configs: sizes must validate and count the published parameters.
    for (layers, d, heads, params) in [
        (12, 768, 12, 124_439_808usize),
        (24, 1024, 16, 354_823_168),
        (36, 1280, 20, 774_030_080),
        (48, 1600, 25, 1_557_611_200),
        (6, 768, 12, 81_912_576), // distilgpt2
    ] {
        let config = gpt2::Gpt2Config {
            n_layer: layers,
            n_embd: d,
            n_head: heads,
            ..Default::default()
        };
        config.validate().unwrap();
        assert_eq!(config.num_parameters(), params, "{layers} layers");
    }
}
