//! OPT parity with tiny random HF checkpoints (tests/fixtures/opt_fixtures.py) on every
//! compiled-in backend: logits (tolerance 1e-4 on the CPU backends, 1e-3 on the GPU ones),
//! exact greedy tokens, cached decoding equal to the full pass, q8_0 / f16 loads staying
//! close, the tokenizer's bos-prefixed encoding, and load errors that name the problem.
//!
//! Fixtures: `pre_ln` (opt-125m's layout, tied head, tokenizer), `post_ln_proj` (opt-350m's:
//! post-LN, no final LayerNorm, `word_embed_proj_dim` 16 ≠ hidden 32 with `project_in` /
//! `project_out`, a `pytorch_model.bin` with the original `decoder.` names), `plain_untied`
//! (no biases, LayerNorms without weights, untied head, GELU).

use std::path::{Path, PathBuf};

use crate::common::*;
use burn::tensor::backend::Backend;
use zoo_backends::BackendKind;
use zoo_nn::weights::WeightError;
use zoo_nn::{generate, ids_tensor, CausalLm, Logits, QType, Sampler, Sampling, WeightFormat};
use zoo_opt::{OptConfig, OptError};

const FIXTURES: [&str; 3] = ["pre_ln", "post_ln_proj", "plain_untied"];

fn fixture(name: &str) -> PathBuf {
    fixtures().join("opt").join(name)
}

/// Logits, greedy tokens and cached decoding of every fixture against transformers.
struct Parity {
    kind: BackendKind,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        for name in FIXTURES {
            let label = format!("{name} on {}", self.kind.name());
            let dir = fixture(name);
            let reference = json(&dir.join("reference.json"));
            let prompt = ids(&reference["prompt"]);
            let (config, model) = zoo_opt::load::<B>(&dir, &device).unwrap();
            assert_eq!(config.tie_word_embeddings, model.lm_head.is_none());
            assert_eq!(config.has_projections(), model.project_in.is_some());
            assert_eq!(
                config.do_layer_norm_before,
                model.final_layer_norm.is_some()
            );

            // The whole prompt in one pass.
            let logits = full_logits(&model, &prompt, &device);
            let diff = max_abs_diff(&logits, &rows(&reference["logits"]));
            eprintln!("  {label}: logits max |diff| = {diff:e}");
            assert!(
                diff < tol,
                "{label}: logits differ by {diff} (tolerance {tol})"
            );

            // One token at a time through the cache: the full pass's logits.
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
                "{label}: cached decoding differs from the full pass by {diff}"
            );

            // A prefix in one call, then the rest: the same again.
            let split = prompt.len() / 2;
            let mut cache = model.new_cache(1, prompt.len());
            let mut chunked = Vec::new();
            for part in [&prompt[..split], &prompt[split..]] {
                let out = model
                    .forward_cached(ids_tensor::<B>(part, &device), &mut cache, Logits::All)
                    .unwrap();
                chunked.extend(tensor_rows(out));
            }
            let diff = max_abs_diff(&chunked, &logits);
            assert!(diff < tol, "{label}: chunked prefill differs by {diff}");

            // Exact greedy tokens, as transformers' generate with eos ignored.
            let want = ids(&reference["greedy"]);
            assert_eq!(want.len(), 12);
            let mut sampler = Sampler::new(Sampling::greedy());
            let got = generate(&model, &prompt, want.len(), &mut sampler, &[], |_| true).unwrap();
            assert_eq!(got, want, "{label}: greedy tokens");

            // Past the context: an error, not a panic.
            let mut cache = model.new_cache(1, 64);
            let long = vec![3u32; config.max_position_embeddings + 1];
            let err = model
                .forward_cached(ids_tensor::<B>(&long, &device), &mut cache, Logits::Last)
                .unwrap_err();
            assert_eq!(err.capacity, config.max_position_embeddings, "{label}");
        }
    }
}

#[test]
fn fixtures_match_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity { kind });
}

/// Weights kept as f16, or quantized to q8_0 at load, stay close to transformers' f32 logits.
struct Formats;

impl Formats {
    fn run<B: Backend>(self, device: B::Device) {
        // `post_ln_proj` has hidden 32, a whole q8_0 block: its attention, fc1 and project_out
        // are quantized (fc2's 48 inputs and the 16-wide embedding stay f32).
        let dir = fixture("post_ln_proj");
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let want = rows(&reference["logits"]);
        for (format, limit) in [
            (WeightFormat::dtype(QType::F16), 0.9999),
            (WeightFormat::quantized(QType::Q8_0), 0.999),
        ] {
            let (_, model) = zoo_opt::load_with::<B>(&dir, &device, format).unwrap();
            // On the CPU backends the matrices stay in the asked format (GPUs pack or widen).
            if zoo_nn::quant::runs_on_host::<B>(&device) {
                let layer = &model.layers[0];
                let expected = format.matrices.unwrap().name();
                assert_eq!(layer.self_attn.q_proj.format(), expected);
                assert_eq!(layer.fc1.format(), expected);
                if format.matrices == Some(QType::Q8_0) {
                    assert_eq!(
                        layer.fc2.format(),
                        "f32",
                        "48 inputs: not whole q8_0 blocks"
                    );
                }
            }
            let got = full_logits(&model, &prompt, &device);
            let cos = min_cosine(&got, &want);
            let diff = max_abs_diff(&got, &want);
            eprintln!("  {}: cosine {cos}, max |diff| {diff:e}", format.describe());
            assert!(cos >= limit, "{}: cosine {cos}", format.describe());
        }
    }
}

#[test]
fn f16_and_q8_0_loads_stay_close_on_every_backend() {
    on_every_backend!(|_| Formats);
}

/// `open_with` reads the folder's GPT-2 BPE files and starts prompts with `</s>`, as
/// transformers' OPT tokenizer does.
struct Tokenizer;

impl Tokenizer {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture("pre_ln");
        let reference = json(&dir.join("reference.json"));
        let generator = zoo_opt::open_with::<B>(&dir, &device, WeightFormat::AS_STORED).unwrap();
        let text = reference["text"].as_str().unwrap();
        let encoded = generator.encode(text).unwrap();
        assert_eq!(encoded, ids(&reference["text_ids"]));
        assert_eq!(encoded[0], 2);
        assert_eq!(
            generator.decode(&encoded, true).unwrap(),
            reference["decoded"].as_str().unwrap()
        );
        assert_eq!(generator.eos_ids, vec![2]);
        // A folder without tokenizer files opens too, for ids only.
        let bare = zoo_opt::open::<B>(&fixture("post_ln_proj"), &device).unwrap();
        assert!(bare.tokenizer.is_none());
    }
}

#[test]
fn tokenizer_prepends_bos_like_transformers() {
    on_every_backend!(|_| Tokenizer);
}

// ---------------------------------------------------------------------------------------------
// Bad loads: each is an error that names the problem, never a panic.

struct Load {
    dir: PathBuf,
}

impl Load {
    fn run<B: Backend>(self, device: B::Device) -> Result<(), OptError> {
        zoo_opt::load::<B>(&self.dir, &device).map(|_| ())
    }
}

fn load_on_cpu(dir: &Path) -> Result<(), OptError> {
    zoo_backends::with_backend!(cpu_backend(), |B, device| {
        (Load {
            dir: dir.to_path_buf(),
        })
        .run::<B>(device)
    })
    .unwrap()
}

/// A copy of a fixture in a temporary folder, to damage.
fn copy_of(name: &str) -> tempfile::TempDir {
    copy_dir(&fixture(name))
}

#[test]
fn missing_tensor_is_named() {
    let tmp = copy_of("pre_ln");
    rewrite_weights(tmp.path(), |t| {
        t.remove("model.decoder.layers.1.fc1.weight").unwrap();
    });
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, OptError::Weights(WeightError::Missing { name, .. }) if name == "model.decoder.layers.1.fc1.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let tmp = copy_of("pre_ln");
    rewrite_weights(tmp.path(), |t| {
        let entry = t
            .get_mut("model.decoder.layers.0.self_attn.out_proj.weight")
            .unwrap();
        entry.0 = vec![8, 32];
    });
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("model.decoder.layers.0.self_attn.out_proj.weight") && err.contains("[8, 32]"),
        "{err}"
    );
    // The position table must have OPT's two extra rows.
    let tmp = copy_of("pre_ln");
    rewrite_weights(tmp.path(), |t| {
        let entry = t.get_mut("model.decoder.embed_positions.weight").unwrap();
        entry.0 = vec![32, 16];
        entry.1.truncate(32 * 16);
    });
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("embed_positions.weight") && err.contains("[34, 16]"),
        "{err}"
    );
}

#[test]
fn unused_tensor_is_an_error() {
    let tmp = copy_of("pre_ln");
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "model.decoder.layers.0.self_attn.extra".into(),
            (vec![2], vec![1.0, 2.0]),
        );
    });
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, OptError::Weights(WeightError::Unused(names)) if names == &["model.decoder.layers.0.self_attn.extra".to_string()]),
        "{err}"
    );
    // A tied head stored anyway must equal the embedding.
    let tmp = copy_of("pre_ln");
    rewrite_weights(tmp.path(), |t| {
        let (shape, mut values) = t["model.decoder.embed_tokens.weight"].clone();
        values[5] += 1.0;
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
    // A post-LN config for pre-LN weights: the final LayerNorm is unused.
    let tmp = copy_of("pre_ln");
    set_config(tmp.path(), "do_layer_norm_before", false.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("not used") && err.contains("model.decoder.final_layer_norm"),
        "{err}"
    );
    // `_remove_final_layer_norm` (checkpoints fine-tuned before transformers 4.20.1): the same.
    let tmp = copy_of("pre_ln");
    set_config(tmp.path(), "_remove_final_layer_norm", true.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("not used") && err.contains("model.decoder.final_layer_norm"),
        "{err}"
    );
    // No projections declared for opt-350m-like weights: project_in/out unused, shapes wrong.
    let tmp = copy_of("post_ln_proj");
    set_config(tmp.path(), "word_embed_proj_dim", 32.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("decoder.embed_tokens.weight"), "{err}");
    // Biases declared absent: they are unused.
    let tmp = copy_of("pre_ln");
    set_config(tmp.path(), "enable_bias", false.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("not used") && err.contains("q_proj.bias"),
        "{err}"
    );
    // More layers than the checkpoint has: a missing tensor.
    set_config(tmp.path(), "enable_bias", true.into());
    set_config(tmp.path(), "num_hidden_layers", 3.into());
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model.decoder.layers.2."), "{err}");
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let base = std::fs::read_to_string(fixture("pre_ln").join("config.json")).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        v[key] = value;
        OptConfig::from_json(&v.to_string()).unwrap_err()
    };
    assert!(with("num_attention_heads", 3.into()).contains("not divisible"));
    assert!(with("activation_function", "swiglu".into()).contains("swiglu"));
    assert!(with("model_type", "gpt2".into()).contains("not `opt`"));
    assert!(with("hidden_size", 0.into()).contains("hidden_size"));
    assert!(with("ffn_dim", "wide".into()).contains("invalid type"));
    // Through the loader: an error naming config.json.
    let tmp = copy_of("pre_ln");
    set_config(tmp.path(), "num_attention_heads", 5.into());
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(matches!(&err, OptError::Config { path, .. } if path.ends_with("config.json")));
    assert!(err.to_string().contains("not divisible"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = load_on_cpu(empty.path()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn published_opt_configs_count_their_parameters() {
    // transformers' OPTForCausalLM(config).num_parameters() for facebook/opt-{125m,350m,1.3b}.
    for (config, params) in [
        (OptConfig::default(), 125_239_296usize),
        (
            OptConfig {
                hidden_size: 1024,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                ffn_dim: 4096,
                word_embed_proj_dim: Some(512),
                do_layer_norm_before: false,
                ..OptConfig::default()
            },
            331_196_416,
        ),
        (
            OptConfig {
                hidden_size: 2048,
                num_hidden_layers: 24,
                num_attention_heads: 32,
                ffn_dim: 8192,
                ..OptConfig::default()
            },
            1_315_758_080,
        ),
    ] {
        config.validate().unwrap();
        assert_eq!(config.num_parameters(), params, "{config:?}");
    }
}
