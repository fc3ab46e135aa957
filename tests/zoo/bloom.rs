//! BLOOM parity with HF transformers (tests/fixtures/bloom_fixtures.py) on every compiled-in
//! backend: logits, exact greedy tokens, cache-incremental decoding equal to the full pass,
//! ALiBi slopes, both residual settings, quantized loads, the tokenizer, and bad loads.
//!
//! Fixtures: `tiny6` (6 heads, pre-LN residuals, `transformer.`-prefixed safetensors,
//! tokenizer.json) and `post_ln` (3 heads, `apply_residual_connection_post_layernorm`, bare
//! names in pytorch_model.bin with a stored tied head, old config names).

use std::path::{Path, PathBuf};

use crate::common::*;
use burn::tensor::backend::Backend;
use burn_zoo::backends::{tolerance, BackendKind};
use burn_zoo::nn::generate::ids_tensor;
use burn_zoo::nn::quant::QType;
use burn_zoo::nn::{generate, CausalLm, Logits, Sampler, Sampling, WeightError, WeightFormat};
use zoo_bloom::{Bloom, BloomConfig, BloomError};

fn fixture(name: &str) -> PathBuf {
    fixtures().join("bloom").join(name)
}

fn logits_of<B: Backend>(model: &Bloom<B>, ids: &[u32], device: &B::Device) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(1, ids.len());
    tensor_rows(
        model
            .forward_cached(ids_tensor::<B>(ids, device), &mut cache, Logits::All)
            .unwrap(),
    )
}

/// Logits of the prompt, cached decoding one token at a time and in two chunks, and the exact
/// greedy tokens, against transformers.
struct Parity {
    kind: BackendKind,
    name: &'static str,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture(self.name);
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let (_, model) = zoo_bloom::load::<B>(&dir, &device).unwrap();
        let tol = tolerance(self.kind);

        let logits = logits_of(&model, &prompt, &device);
        let diff = max_abs_diff(&logits, &rows(&reference["logits"]));
        eprintln!(
            "  [{}] {} logits max |diff| = {diff:e}",
            self.kind.name(),
            self.name
        );
        assert!(
            diff < tol,
            "{}: logits differ by {diff} (tolerance {tol})",
            self.name
        );

        // One token at a time with the cache: the same logits as the full pass.
        let mut cache = model.new_cache(1, prompt.len());
        let mut stepwise = Vec::new();
        for &id in &prompt {
            let out = model
                .forward_cached(ids_tensor::<B>(&[id], &device), &mut cache, Logits::All)
                .unwrap();
            stepwise.extend(tensor_rows(out));
        }
        let diff = max_abs_diff(&stepwise, &logits);
        eprintln!(
            "  [{}] {} cached step-by-step vs full max |diff| = {diff:e}",
            self.kind.name(),
            self.name
        );
        assert!(
            diff < tol,
            "{}: cached decoding differs from the full pass by {diff}",
            self.name
        );

        // A prefix in one call, the rest in another (a causal mask after cached positions).
        let split = 5;
        let mut cache = model.new_cache(1, prompt.len());
        let mut chunked = tensor_rows(
            model
                .forward_cached(
                    ids_tensor::<B>(&prompt[..split], &device),
                    &mut cache,
                    Logits::All,
                )
                .unwrap(),
        );
        chunked.extend(tensor_rows(
            model
                .forward_cached(
                    ids_tensor::<B>(&prompt[split..], &device),
                    &mut cache,
                    Logits::All,
                )
                .unwrap(),
        ));
        let diff = max_abs_diff(&chunked, &logits);
        assert!(
            diff < tol,
            "{}: chunked prefill differs by {diff}",
            self.name
        );

        // Exact greedy tokens (transformers generated them with no stop id).
        let want = ids(&reference["greedy"]);
        assert!(want.len() >= 10);
        let mut sampler = Sampler::new(Sampling::greedy());
        let got = generate(&model, &prompt, want.len(), &mut sampler, &[], |_| true).unwrap();
        assert_eq!(got, want, "{}: greedy tokens", self.name);
    }
}

#[test]
fn tiny6_six_heads_matches_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity {
        kind,
        name: "tiny6",
    });
}

#[test]
fn post_ln_residuals_bin_bare_names_match_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity {
        kind,
        name: "post_ln",
    });
}

#[test]
fn alibi_slopes_match_transformers() {
    let slopes = json(&fixture("slopes.json"));
    let slopes = slopes.as_object().unwrap();
    assert!(slopes.contains_key("112"), "BLOOM-176B's head count");
    for (heads, want) in slopes {
        let heads: usize = heads.parse().unwrap();
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = zoo_bloom::alibi_slopes(heads);
        assert_eq!(got.len(), heads);
        for (h, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= f32::EPSILON * w.abs(),
                "{heads} heads, head {h}: {g} vs transformers' {w}"
            );
        }
    }
}

/// Both residual settings are honoured: `tiny6`'s weights run with the other setting give
/// other logits, and the configs read as written.
struct ResidualSetting;

impl ResidualSetting {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture("tiny6");
        let config = zoo_bloom::read_config(&dir).unwrap();
        assert!(!config.apply_residual_connection_post_layernorm);
        let post = zoo_bloom::read_config(&fixture("post_ln")).unwrap();
        assert!(post.apply_residual_connection_post_layernorm);
        assert_eq!((post.hidden_size, post.n_head, post.n_layer), (24, 3, 2));
        assert_eq!(post.layer_norm_epsilon, 1e-3);

        let flipped = BloomConfig {
            apply_residual_connection_post_layernorm: true,
            ..config
        };
        let mut weights = burn_zoo::nn::Weights::open(&dir).unwrap();
        let model = zoo_bloom::from_weights::<B>(&flipped, &mut weights, &device).unwrap();
        weights.finish(|_| false).unwrap();
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let diff = max_abs_diff(
            &logits_of(&model, &prompt, &device),
            &rows(&reference["logits"]),
        );
        assert!(diff > 0.1, "the residual setting changed nothing ({diff})");
    }
}

#[test]
fn residual_setting_changes_the_model() {
    zoo_backends::with_backend!(cpu_backend(), |B, device| {
        ResidualSetting.run::<B>(device)
    })
    .unwrap();
}

/// f16 and q8_0 loads stay close to transformers' f32 logits and keep the first greedy token.
struct Quantized {
    kind: BackendKind,
}

impl Quantized {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture("tiny6");
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let want = rows(&reference["logits"]);
        let scale = want.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        // Measured on flex: f16 5.5e-3, q8_0 2.6e-2, for a largest |logit| of 5.57.
        for (format, name, limit) in [
            (WeightFormat::dtype(QType::F16), "f16", 0.005),
            (WeightFormat::quantized(QType::Q8_0), "q8_0", 0.02),
        ] {
            let (_, model) = zoo_bloom::load_with::<B>(&dir, &device, format).unwrap();
            // The MLP's down projection has 96 columns, three q8_0 blocks per row; the other
            // matrices (24 columns) stay f32 under q8_0, as llama.cpp's quantizer leaves them.
            // GPU backends pack a stored format on the device or widen it to f32.
            if !self.kind.is_gpu() {
                assert_eq!(model.h[0].mlp.dense_4h_to_h.format(), name);
            }
            let got = logits_of(&model, &prompt, &device);
            let diff = max_abs_diff(&got, &want);
            eprintln!(
                "  [{}] tiny6 {name} logits max |diff| = {diff:e} (largest |logit| {scale})",
                self.kind.name()
            );
            assert!(
                diff < limit * scale,
                "{name}: logits differ by {diff} (largest |logit| {scale})"
            );
            let first = |rows: &[Vec<f32>]| {
                let last = rows.last().unwrap();
                (0..last.len())
                    .max_by(|&a, &b| last[a].total_cmp(&last[b]))
                    .unwrap()
            };
            assert_eq!(first(&got), first(&want), "{name}: first greedy token");
        }
    }
}

#[test]
fn f16_and_q8_0_loads_stay_close_on_every_backend() {
    on_every_backend!(|kind| Quantized { kind });
}

/// `open` brings the tokenizer.json when there is one, and the eos id from the config.
struct Open;

impl Open {
    fn run<B: Backend>(self, device: B::Device) {
        let lm = zoo_bloom::open::<B>(&fixture("tiny6"), &device).unwrap();
        assert_eq!(lm.eos_ids, vec![2]);
        assert!(lm.chat_format.is_none());
        let tokenizer = lm.tokenizer.as_ref().expect("tiny6 ships tokenizer.json");
        assert_eq!(
            tokenizer.encode("w5 w17 w99", true).unwrap(),
            vec![5, 17, 99]
        );
        assert_eq!(tokenizer.token_id("</s>"), Some(2));
        assert_eq!(
            lm.context_length(),
            zoo_bloom::config::DEFAULT_MAX_POSITIONS
        );

        let lm = zoo_bloom::open::<B>(&fixture("post_ln"), &device).unwrap();
        assert!(lm.tokenizer.is_none());
        assert_eq!(lm.eos_ids, vec![2]);

        // Past the cap, a clear error rather than a panic.
        let (_, mut model) = zoo_bloom::load::<B>(&fixture("tiny6"), &device).unwrap();
        model.max_positions = 8;
        let mut sampler = Sampler::new(Sampling::greedy());
        let err = generate(&model, &[5; 6], 4, &mut sampler, &[], |_| true).unwrap_err();
        assert!(err.to_string().contains("context of 8"), "{err}");
        let mut cache = model.new_cache(1, 16);
        let err = model
            .forward_cached(ids_tensor::<B>(&[5; 9], &device), &mut cache, Logits::Last)
            .unwrap_err();
        assert_eq!((err.needed, err.capacity), (9, 8));
    }
}

#[test]
fn open_brings_tokenizer_and_eos() {
    zoo_backends::with_backend!(cpu_backend(), |B, device| { Open.run::<B>(device) }).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bad loads: each is an error that names the problem, never a panic.

struct Load {
    dir: PathBuf,
}

impl Load {
    fn run<B: Backend>(self, device: B::Device) -> Result<(), BloomError> {
        zoo_bloom::load::<B>(&self.dir, &device).map(|_| ())
    }
}

fn load_on_cpu(dir: &Path) -> Result<(), BloomError> {
    zoo_backends::with_backend!(cpu_backend(), |B, device| {
        (Load {
            dir: dir.to_path_buf(),
        })
        .run::<B>(device)
    })
    .unwrap()
}

/// A copy of fixture `tiny6` in a temporary folder, to damage.
fn copy_of_tiny6() -> tempfile::TempDir {
    copy_dir(&fixture("tiny6"))
}

#[test]
fn missing_wrong_shaped_and_unused_tensors_are_named() {
    let tmp = copy_of_tiny6();
    rewrite_weights(tmp.path(), |t| {
        t.remove("transformer.h.1.self_attention.query_key_value.bias")
            .unwrap();
    });
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, BloomError::Weights(WeightError::Missing { name, .. })
            if name == "transformer.h.1.self_attention.query_key_value.bias"),
        "{err}"
    );

    let tmp = copy_of_tiny6();
    rewrite_weights(tmp.path(), |t| {
        let entry = t
            .get_mut("transformer.h.0.mlp.dense_4h_to_h.weight")
            .unwrap();
        entry.0 = vec![96, 24];
    });
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("transformer.h.0.mlp.dense_4h_to_h.weight"),
        "{err}"
    );
    assert!(err.contains("[96, 24]"), "{err}");

    let tmp = copy_of_tiny6();
    rewrite_weights(tmp.path(), |t| {
        t.insert("transformer.h.0.extra".into(), (vec![2], vec![1.0, 2.0]));
    });
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, BloomError::Weights(WeightError::Unused(names))
            if names == &["transformer.h.0.extra".to_string()]),
        "{err}"
    );

    // A stored head that is not the embedding, while the config ties them.
    let tmp = copy_of_tiny6();
    rewrite_weights(tmp.path(), |t| {
        let (shape, mut values) = t["transformer.word_embeddings.weight"].clone();
        values[0] += 1.0;
        t.insert("lm_head.weight".into(), (shape, values));
    });
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("lm_head.weight") && err.contains("tied"),
        "{err}"
    );
}

#[test]
fn config_that_does_not_match_the_weights_is_an_error() {
    let tmp = copy_of_tiny6();
    set_config(tmp.path(), "n_layer", 3.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("transformer.h.2.input_layernorm.weight"),
        "{err}"
    );
    set_config(tmp.path(), "n_layer", 1.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("not used") && err.contains("transformer.h.1."),
        "{err}"
    );
    set_config(tmp.path(), "n_layer", 2.into());
    set_config(tmp.path(), "hidden_size", 36.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
    // Refused before any tensor is read.
    set_config(tmp.path(), "hidden_size", 20.into());
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(matches!(err, BloomError::Config { .. }), "{err}");
    assert!(
        err.to_string().contains("not divisible by n_head 6"),
        "{err}"
    );
    set_config(tmp.path(), "hidden_size", 24.into());
    set_config(tmp.path(), "n_embed", 48.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("`hidden_size` 24 and `n_embed` 48 disagree"),
        "{err}"
    );
    set_config(tmp.path(), "n_embed", 24.into());
    set_config(tmp.path(), "model_type", "gpt2".into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("not `bloom`"), "{err}");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
}
