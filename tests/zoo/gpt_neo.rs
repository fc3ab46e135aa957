//! GPT-Neo parity with a tiny random HF checkpoint (tests/fixtures/gpt_neo_fixtures.py) on every
//! compiled-in backend: logits and hidden states, exact greedy tokens, cached decoding equal to
//! the full pass with a local window shorter than the sequence, quantized loads, the tokenizer,
//! and every bad load being an error that names the problem.

use std::path::{Path, PathBuf};

use crate::common::*;
use burn::tensor::backend::Backend;
use zoo_backends::{tolerance, BackendKind};
use zoo_gptneo::{load, load_with, open_with, AttentionKind, GptNeo, GptNeoConfig, GptNeoError};
use zoo_nn::{generate, ids_tensor, CausalLm, Logits, QType, Sampler, Sampling};
use zoo_nn::{WeightError, WeightFormat};

fn fixture() -> PathBuf {
    fixtures().join("gpt_neo").join("tiny")
}

/// Logits of `ids` in chunks (`[5, 7]` = five positions in one call, then seven), one cache.
fn chunked<B: Backend>(
    model: &GptNeo<B>,
    ids: &[u32],
    chunks: &[usize],
    device: &B::Device,
) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(1, ids.len());
    let mut out = Vec::new();
    let mut at = 0;
    for &n in chunks {
        let logits = model
            .forward_cached(
                ids_tensor::<B>(&ids[at..at + n], device),
                &mut cache,
                Logits::All,
            )
            .unwrap();
        out.extend(tensor_rows(logits));
        at += n;
    }
    assert_eq!(at, ids.len());
    out
}

/// Logits, hidden states, greedy tokens and cached decoding against transformers.
struct Parity {
    kind: BackendKind,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture();
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let (config, model) = load::<B>(&dir, &device).unwrap();
        let tol = tolerance(self.kind);
        assert_eq!(
            config.attention_layers().unwrap(),
            [
                AttentionKind::Global,
                AttentionKind::Local { window: 4 },
                AttentionKind::Local { window: 4 }
            ]
        );
        assert!(prompt.len() > config.window_size);

        // The whole prompt in one pass: logits and hidden states.
        let logits = chunked(&model, &prompt, &[prompt.len()], &device);
        let diff = max_abs_diff(&logits, &rows(&reference["logits"]));
        eprintln!("  gpt_neo logits max |diff| = {diff:e} (tolerance {tol:e})");
        assert!(diff < tol, "logits differ by {diff} (tolerance {tol})");
        let mut cache = model.cache(1, prompt.len());
        let hidden = model
            .hidden(ids_tensor::<B>(&prompt, &device), &mut cache)
            .unwrap();
        let diff = max_abs_diff(&tensor_rows(hidden), &rows(&reference["hidden"]));
        assert!(diff < tol, "hidden states differ by {diff}");

        // Exact greedy tokens, as transformers' generate with its cache (eos not stopping).
        let want = ids(&reference["greedy"]);
        let mut sampler = Sampler::new(Sampling::greedy());
        let got = generate(&model, &prompt, want.len(), &mut sampler, &[], |_| true).unwrap();
        assert_eq!(got, want, "greedy tokens");

        // Prompt + greedy tokens (24 positions, window 4): one token at a time, and in chunks
        // that start inside and past the window, all equal the full pass.
        let all: Vec<u32> = prompt.iter().chain(&want).copied().collect();
        let full = chunked(&model, &all, &[all.len()], &device);
        let diff = max_abs_diff(&full[..prompt.len()], &logits);
        assert!(
            diff < tol,
            "longer full pass changed the prompt's logits by {diff}"
        );
        for chunks in [vec![1; all.len()], vec![5, 7, 1, 1, 10], vec![3, 2, 12, 7]] {
            let got = chunked(&model, &all, &chunks, &device);
            let diff = max_abs_diff(&got, &full);
            eprintln!("  gpt_neo cached {chunks:?} vs full pass: max |diff| = {diff:e}");
            assert!(diff < tol, "cached decoding {chunks:?} differs by {diff}");
        }
    }
}

#[test]
fn tiny_matches_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity { kind });
}

/// Matrices kept as Q8_0 (embedding and tied head Q8_0 too) or f16 give transformers' logits
/// for the same weights rounded to that format (the fixture script rounds them as zoo-quant
/// does); the cache still equals the full pass.
struct Quantized {
    kind: BackendKind,
}

impl Quantized {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture();
        let reference = json(&dir.join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let tol = tolerance(self.kind);
        for (format, key) in [
            (WeightFormat::quantized(QType::Q8_0), "q8_0_logits"),
            (WeightFormat::dtype(QType::F16), "f16_logits"),
        ] {
            let name = format.describe();
            let (_, model) = load_with::<B>(&dir, &device, format).unwrap();
            let got = chunked(&model, &prompt, &[prompt.len()], &device);
            let diff = max_abs_diff(&got, &rows(&reference[key]));
            let from_f32 = max_abs_diff(&got, &rows(&reference["logits"]));
            eprintln!(
                "  gpt_neo {name}: max |diff| = {diff:e} to transformers with {key}, \
                 {from_f32:e} to f32"
            );
            assert!(
                diff < tol,
                "{name}: logits differ by {diff} (tolerance {tol})"
            );
            let step = chunked(&model, &prompt, &[1; 12], &device);
            let diff = max_abs_diff(&step, &got);
            assert!(diff < tol, "{name}: cached decoding differs by {diff}");
        }
    }
}

#[test]
fn quantized_loads_stay_close_on_every_backend() {
    on_every_backend!(|kind| Quantized { kind });
}

/// `open_with` finds `vocab.json` + `merges.txt` and encodes as transformers' GPT2Tokenizer.
struct Tokenizer;

impl Tokenizer {
    fn run<B: Backend>(self, device: B::Device) {
        let dir = fixture();
        let lm = open_with::<B>(&dir, &device, WeightFormat::AS_STORED).unwrap();
        assert_eq!(lm.eos_ids, vec![261]);
        let tokenizer = lm.tokenizer.as_ref().expect("vocab.json + merges.txt");
        let reference = json(&dir.join("reference.json"));
        for case in reference["tokenizer"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(
                tokenizer.encode(text, false).unwrap(),
                ids(&case["ids"]),
                "{text:?}"
            );
            let round = tokenizer.decode(&ids(&case["ids"]), false).unwrap();
            assert_eq!(round, text);
        }
    }
}

#[test]
fn open_with_reads_the_gpt2_tokenizer() {
    zoo_backends::with_backend!(cpu_backend(), |B, device| { Tokenizer.run::<B>(device) }).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Bad loads: each is an error that names the problem, never a panic.

fn load_on_cpu(dir: &Path) -> Result<(), GptNeoError> {
    zoo_backends::with_backend!(cpu_backend(), |B, device| {
        load::<B>(dir, &device).map(|_| ())
    })
    .unwrap()
}

/// A copy of the fixture in a temporary folder, to damage.
fn copy_of_tiny() -> tempfile::TempDir {
    copy_dir(&fixture())
}

#[test]
fn missing_wrong_shaped_and_unused_tensors_are_named() {
    let tmp = copy_of_tiny();
    rewrite_weights(tmp.path(), |t| {
        t.remove("transformer.h.2.attn.attention.v_proj.weight")
            .unwrap();
    });
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, GptNeoError::Weights(WeightError::Missing { name, .. })
            if name == "transformer.h.2.attn.attention.v_proj.weight"),
        "{err}"
    );

    let tmp = copy_of_tiny();
    rewrite_weights(tmp.path(), |t| {
        // GPT-2's Conv1D layout `[in, out]` instead of nn.Linear's `[out, in]`.
        t.get_mut("transformer.h.0.mlp.c_fc.weight").unwrap().0 = vec![32, 64];
    });
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("transformer.h.0.mlp.c_fc.weight") && err.contains("[32, 64]"),
        "{err}"
    );

    let tmp = copy_of_tiny();
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "transformer.h.1.attn.attention.q_proj.bias".into(),
            (vec![32], vec![0.0; 32]),
        );
    });
    let err = load_on_cpu(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, GptNeoError::Weights(WeightError::Unused(names))
            if names == &["transformer.h.1.attn.attention.q_proj.bias".to_string()]),
        "{err}"
    );

    // The mask buffers of old checkpoints are not parameters: skipped.
    let tmp = copy_of_tiny();
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "transformer.h.0.attn.attention.bias".into(),
            (vec![1, 1, 2, 2], vec![1.0, 0.0, 1.0, 1.0]),
        );
        t.insert(
            "transformer.h.1.attn.attention.masked_bias".into(),
            (vec![], vec![-1e9]),
        );
    });
    load_on_cpu(tmp.path()).unwrap();
}

/// An old-style `pytorch_model.bin` (uint8 / bool mask buffers, a stored tied head) loads
/// and computes the same logits.
struct LegacyBin;

impl LegacyBin {
    fn run<B: Backend>(self, device: B::Device) {
        let reference = json(&fixture().join("reference.json"));
        let prompt = ids(&reference["prompt"]);
        let dir = fixtures().join("gpt_neo").join("tiny-legacy-bin");
        let (_, model) = load::<B>(&dir, &device).unwrap();
        let got = chunked(&model, &prompt, &[prompt.len()], &device);
        let diff = max_abs_diff(&got, &rows(&reference["logits"]));
        assert!(diff < 1e-4, "logits differ by {diff}");
    }
}

#[test]
fn legacy_pytorch_bin_with_mask_buffers_loads() {
    zoo_backends::with_backend!(cpu_backend(), |B, device| { LegacyBin.run::<B>(device) }).unwrap();
}

#[test]
fn configs_that_cannot_run_are_errors() {
    let tmp = copy_of_tiny();
    let cases: [(&str, serde_json::Value, &str); 6] = [
        // More layers than the pattern names.
        (
            "num_layers",
            4.into(),
            "expands to 3 layers but num_layers is 4",
        ),
        (
            "attention_types",
            serde_json::json!([[["global", "sparse"], 1], [["local"], 1]]),
            "attention type `sparse`",
        ),
        ("window_size", 0.into(), "window_size"),
        ("hidden_size", 30.into(), "not divisible"),
        ("activation_function", "swiglu".into(), "swiglu"),
        ("model_type", "gpt2".into(), "not `gpt_neo`"),
    ];
    let original = std::fs::read(tmp.path().join("config.json")).unwrap();
    for (key, value, says) in cases {
        std::fs::write(tmp.path().join("config.json"), &original).unwrap();
        set_config(tmp.path(), key, value);
        let err = load_on_cpu(tmp.path()).unwrap_err();
        assert!(
            matches!(err, GptNeoError::Config { .. }) && err.to_string().contains(says),
            "{key}: {err}"
        );
    }
    // A config that fits the pattern but not the weights: layer 2's tensors are unused.
    std::fs::write(tmp.path().join("config.json"), &original).unwrap();
    set_config(tmp.path(), "num_layers", 2.into());
    set_config(
        tmp.path(),
        "attention_types",
        serde_json::json!([[["global", "local"], 1]]),
    );
    let err = load_on_cpu(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("not used") && err.contains("transformer.h.2."),
        "{err}"
    );
    // No config at all; no weights.
    let empty = tempfile::tempdir().unwrap();
    let err = load_on_cpu(empty.path()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::write(empty.path().join("config.json"), &original).unwrap();
    let err = load_on_cpu(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no weights"), "{err}");
}

#[test]
fn published_configs_count_their_parameters() {
    // Counts from transformers' GPTNeoForCausalLM built with these configs (tied head once).
    for (layers, d, heads, pairs, params) in [
        (12, 768, 12, 6, 125_198_592usize), // gpt-neo-125M, LaMini-Neo-125M
        (24, 2048, 16, 12, 1_315_575_808),  // gpt-neo-1.3B, LaMini-Neo-1.3B
        (32, 2560, 20, 16, 2_651_307_520),  // gpt-neo-2.7B
    ] {
        let config = GptNeoConfig {
            num_layers: layers,
            hidden_size: d,
            num_heads: heads,
            attention_types: vec![(vec!["global".into(), "local".into()], pairs)],
            ..Default::default()
        };
        config.validate().unwrap();
        assert_eq!(config.num_parameters(), params, "{layers} layers");
    }
    let aliases = r#"{"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32,
        "attention_types": [[["local"], 2]], "eos_token_id": [5, 7]}"#;
    let c = GptNeoConfig::from_json(aliases).unwrap();
    assert_eq!((c.num_layers, c.num_heads, c.eos_ids()), (2, 4, vec![5, 7]));
}
