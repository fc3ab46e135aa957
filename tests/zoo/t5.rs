//! Parity with tiny random HF T5 checkpoints (tests/fixtures/t5_fixtures.py) on every
//! compiled-in backend: encoder output and decoder logits, exact greedy tokens, cached decoding
//! equal to the full pass, text generation through the tokenizer, a q8_0 load, relative-position
//! buckets, and load errors.

use std::path::PathBuf;

use burn::tensor::{backend::Backend, Tensor};
use zoo_backends::BackendKind;
use zoo_nn::weights::{WeightError, Weights};
use zoo_nn::{ids_tensor, QType, WeightFormat};
use zoo_t5::{load, open, open_with, relative_position_bucket, T5Config, T5Error, T5};

use crate::common::{ids, json, max_abs_diff, min_cosine, rows};

fn dir(name: &str) -> PathBuf {
    crate::common::fixtures().join("t5").join(name)
}

struct Reference {
    encoder_ids: Vec<u32>,
    decoder_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    encoder_out: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn reference(name: &str) -> Reference {
    let v = json(&dir(name).join("reference.json"));
    Reference {
        encoder_ids: ids(&v["encoder_ids"]),
        decoder_ids: ids(&v["decoder_ids"]),
        logits: rows(&v["logits"]),
        encoder_out: rows(&v["encoder_out"]),
        greedy: ids(&v["greedy"]),
    }
}

fn host_rows<B: Backend>(t: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [_, n, v] = t.dims();
    let flat: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    (0..n).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// The full-pass decoder logits of the reference's inputs.
fn full_logits<B: Backend>(model: &T5<B>, r: &Reference, device: &B::Device) -> Vec<Vec<f32>> {
    host_rows(model.forward(
        ids_tensor::<B>(&r.encoder_ids, device),
        ids_tensor::<B>(&r.decoder_ids, device),
    ))
}

/// Encoder output, logits, greedy tokens and cached decoding of one model against its reference.
fn check<B: Backend>(label: &str, model: &T5<B>, r: &Reference, tol: f32, device: &B::Device) {
    let encoder_out = model.encode(ids_tensor::<B>(&r.encoder_ids, device));
    let diff = max_abs_diff(&host_rows(encoder_out.clone()), &r.encoder_out);
    assert!(diff < tol, "{label}: encoder output differs by {diff}");

    let logits = full_logits(model, r, device);
    let diff = max_abs_diff(&logits, &r.logits);
    eprintln!("{label}: max |logit - transformers| = {diff:e}");
    assert!(
        diff < tol,
        "{label}: logits differ by {diff} (tolerance {tol})"
    );

    // transformers generated with min_new_tokens = max_new_tokens: no stop at eos.
    let new = model.generate_greedy(&r.encoder_ids, r.greedy.len(), None);
    assert_eq!(new, r.greedy, "{label}: greedy tokens");

    // Prefill 5 decoder ids, then one at a time: the same logits as the full pass.
    let mut cache = model.cache(1, r.decoder_ids.len());
    let mut inc = host_rows(
        model
            .decode(
                ids_tensor::<B>(&r.decoder_ids[..5], device),
                &encoder_out,
                &mut cache,
            )
            .unwrap(),
    );
    for &id in &r.decoder_ids[5..] {
        let out = model
            .decode(ids_tensor::<B>(&[id], device), &encoder_out, &mut cache)
            .unwrap();
        inc.extend(host_rows(out));
    }
    let diff = max_abs_diff(&inc, &logits);
    assert!(
        diff < tol,
        "{label}: cached decoding differs from the full pass by {diff}"
    );
    // The cache is full now: one more position is an error, not a panic.
    let err = model
        .decode(ids_tensor::<B>(&[3], device), &encoder_out, &mut cache)
        .unwrap_err();
    assert_eq!(err.needed, r.decoder_ids.len() + 1);
}

struct Parity {
    kind: BackendKind,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        for name in ["flan", "t5"] {
            let (config, model) = load::<B>(&dir(name), &device).unwrap();
            let label = format!("{name} on {}", self.kind.name());
            check(&label, &model, &reference(name), tol, &device);
            // Flan-T5: own head, no rescale; T5: head tied to `shared`, rescaled.
            let flan = name == "flan";
            assert_eq!(model.lm_head.is_some(), flan, "{label}: head");
            assert_eq!(model.scale_decoder_outputs, !flan, "{label}: rescale");
            assert_eq!(config.gated(), flan, "{label}: gated");
            assert_eq!(model.decoder_start_token_id, 0);
        }

        // Text in, text out, through tokenizer.json (T5 appends </s> to the prompt).
        let generator = open::<B>(&dir("flan"), &device).unwrap();
        let v = json(&dir("flan").join("reference.json"));
        let prompt = v["text_prompt"].as_str().unwrap();
        let prompt_ids = generator.encode(prompt).unwrap();
        assert_eq!(prompt_ids, ids(&v["text_prompt_ids"]));
        let new = generator.model.generate_greedy(&prompt_ids, 12, None);
        assert_eq!(new, ids(&v["text_new_ids"]));
        let text = generator
            .tokenizer
            .as_ref()
            .unwrap()
            .decode(&new, true)
            .unwrap();
        assert_eq!(text, v["text"].as_str().unwrap());
        // The same through the facade-facing helpers.
        let rows = generator
            .forward_rows(
                &reference("flan").encoder_ids,
                &reference("flan").decoder_ids,
            )
            .unwrap();
        assert!(max_abs_diff(&rows, &reference("flan").logits) < tol);
    }
}

#[test]
fn t5_fixtures_match_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity { kind });
}

struct Quantized {
    kind: BackendKind,
}

impl Quantized {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        for name in ["flan", "t5"] {
            let format = WeightFormat::quantized(QType::Q8_0);
            let generator = open_with::<B>(&dir(name), &device, format).unwrap();
            let m = &generator.model;
            let attention = &m.encoder.block[0].self_attention.attention;
            // q8_0 on the host, "packed" q8_0 on a GPU.
            for format in [
                attention.q.format(),
                m.decoder.block[1].ff.dense_relu_dense.wo.format(),
                m.shared.format(),
            ] {
                assert!(["q8_0", "packed"].contains(&format), "{name}: {format}");
            }
            let r = reference(name);
            let logits = full_logits(m, &r, &device);
            // transformers with the same weights rounded through Q8_0 (the fixture script).
            let want = rows(&json(&dir(name).join("reference.json"))["logits_q8_0"]);
            let diff = max_abs_diff(&logits, &want);
            let shift = max_abs_diff(&logits, &r.logits);
            let cos = min_cosine(&logits, &r.logits);
            eprintln!(
                "{name} q8_0 on {}: max |logit - transformers(q8_0 weights)| = {diff:e}; \
                 from the f32 logits: max {shift:e}, min cosine {cos}",
                self.kind.name()
            );
            assert!(diff < tol, "{name} q8_0: logits differ by {diff}");
            assert!(cos > 0.98, "{name} q8_0: cosine to f32 {cos}");
        }
    }
}

#[test]
fn t5_q8_0_load_stays_close_on_every_backend() {
    on_every_backend!(|kind| Quantized { kind });
}

#[test]
fn t5_relative_position_buckets_match_transformers() {
    let v = json(&crate::common::fixtures().join("t5/buckets.json"));
    let first = v["first"].as_i64().unwrap();
    for (key, table) in v["buckets"].as_object().unwrap() {
        let parts: Vec<&str> = key.split('_').collect();
        let (nb, md) = (parts[0].parse().unwrap(), parts[1].parse().unwrap());
        let bidirectional = parts[2] == "bi";
        for (i, want) in ids(table).into_iter().enumerate() {
            let rel = first + i as i64;
            assert_eq!(
                relative_position_bucket(rel, bidirectional, nb, md),
                want as usize,
                "{key}: relative position {rel}"
            );
        }
    }
}

struct BadLoads;

impl BadLoads {
    fn run<B: Backend>(self, device: B::Device) {
        let flan = dir("flan");
        let config = zoo_t5::read_config(&flan).unwrap();
        let build = |config: &T5Config| -> Result<(), WeightError> {
            let mut weights = Weights::open(&flan)?;
            zoo_t5::from_weights::<B>(config, &mut weights, &device)?;
            weights.finish(zoo_t5::load::is_ignored)
        };
        // One encoder layer more than the checkpoint has: a missing tensor, named.
        let more = T5Config {
            num_layers: 3,
            ..config.clone()
        };
        match build(&more) {
            Err(WeightError::Missing { name, .. }) => {
                assert_eq!(name, "encoder.block.2.layer.0.SelfAttention.q.weight")
            }
            other => panic!("expected a missing tensor, got {other:?}"),
        }
        // The relu form on a gated checkpoint: `wi` is missing.
        let relu = T5Config {
            feed_forward_proj: "relu".into(),
            dense_act_fn: None,
            is_gated_act: None,
            ..config.clone()
        };
        match build(&relu) {
            Err(WeightError::Missing { name, .. }) => {
                assert_eq!(name, "encoder.block.0.layer.1.DenseReluDense.wi.weight")
            }
            other => panic!("expected a missing tensor, got {other:?}"),
        }
        // A wrong d_ff: a shape error naming the tensor.
        let wrong = T5Config {
            d_ff: 48,
            ..config.clone()
        };
        match build(&wrong) {
            Err(WeightError::Shape {
                name,
                expected,
                found,
            }) => {
                assert_eq!(name, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight");
                assert_eq!((expected, found), (vec![48, 32], vec![64, 32]));
            }
            other => panic!("expected a shape error, got {other:?}"),
        }
        // A different bucket count: the bias table's shape is wrong.
        let buckets = T5Config {
            relative_attention_num_buckets: 16,
            ..config.clone()
        };
        match build(&buckets) {
            Err(WeightError::Shape { name, .. }) => assert_eq!(
                name,
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ),
            other => panic!("expected a shape error, got {other:?}"),
        }
        // One decoder layer fewer: the second decoder block's tensors are unused.
        let fewer = T5Config {
            num_decoder_layers: Some(1),
            ..config.clone()
        };
        match build(&fewer) {
            Err(WeightError::Unused(names)) => {
                // q k v o ×2, three norms, wi_0 wi_1 wo.
                assert_eq!(names.len(), 14, "{names:?}");
                assert!(names.iter().all(|n| n.starts_with("decoder.block.1.")));
            }
            other => panic!("expected unused tensors, got {other:?}"),
        }
        // A folder without config.json.
        assert!(matches!(
            load::<B>(&crate::common::fixtures().join("t5"), &device),
            Err(T5Error::Config { .. })
        ));
        // An embedding copy that differs from `shared`.
        let tmp = std::env::temp_dir().join(format!("zoo-t5-copy-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::copy(flan.join("config.json"), tmp.join("config.json")).unwrap();
        let bytes = std::fs::read(flan.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec(), t.data().to_vec()))
            .collect();
        for (n, _, data) in &mut tensors {
            if n == "decoder.embed_tokens.weight" {
                data[0] ^= 0x40;
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, shape, data)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    data,
                )
                .unwrap();
                (n.clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, &tmp.join("model.safetensors")).unwrap();
        let err = load::<B>(&tmp, &device).unwrap_err();
        std::fs::remove_dir_all(&tmp).ok();
        match err {
            T5Error::Weights(WeightError::Inconsistent { name, .. }) => {
                assert_eq!(name, "decoder.embed_tokens.weight")
            }
            other => panic!("expected an inconsistent copy, got {other:?}"),
        }

        // Bad inputs are errors too.
        let t5 = open::<B>(&dir("t5"), &device).unwrap();
        assert!(matches!(
            t5.generate_ids(&[5, 96], 3),
            Err(T5Error::BadId { id: 96, vocab: 96 })
        ));
        assert!(matches!(
            t5.forward_rows(&[5], &[]),
            Err(T5Error::Empty("decoder"))
        ));
        let err = t5.generate_text("hello", 3).unwrap_err();
        assert!(matches!(err, T5Error::NoTokenizer(_)), "{err}");
        assert!(err.to_string().contains("spiece.model"));
    }
}

#[test]
fn t5_bad_checkpoints_are_errors_naming_the_problem() {
    on_every_backend!(|_kind| BadLoads);

    let base = std::fs::read_to_string(dir("flan").join("config.json")).unwrap();
    let config = T5Config::from_json(&base).unwrap();
    assert_eq!(
        (
            config.num_layers,
            config.decoder_layers(),
            config.num_heads,
            config.d_kv
        ),
        (2, 2, 4, 8)
    );
    assert_eq!(config.activation_name(), "gelu_new");
    for (from, to, says) in [
        ("\"model_type\": \"t5\"", "\"model_type\": \"bart\"", "bart"),
        (
            "\"dense_act_fn\": \"gelu_new\"",
            "\"dense_act_fn\": \"mish\"",
            "mish",
        ),
        ("\"num_heads\": 4", "\"num_heads\": 0", "num_heads"),
        (
            "\"relative_attention_max_distance\": 16",
            "\"relative_attention_max_distance\": 3",
            "relative_attention_max_distance",
        ),
        (
            "\"is_encoder_decoder\": true",
            "\"is_encoder_decoder\": false",
            "is_encoder_decoder",
        ),
        ("\"d_model\": 32", "\"d_model\": \"big\"", "invalid type"),
    ] {
        assert!(base.contains(from), "{from}");
        let err = T5Config::from_json(&base.replace(from, to)).unwrap_err();
        assert!(err.contains(says), "{to}: {err}");
    }
    // `feed_forward_proj` as HF checks it; the derived activation when dense_act_fn is absent.
    let minimal = |proj: &str| format!(r#"{{"feed_forward_proj": "{proj}"}}"#);
    let err = T5Config::from_json(&minimal("gelu-relu")).unwrap_err();
    assert!(err.contains("feed_forward_proj"), "{err}");
    let c = T5Config::from_json(&minimal("gated-silu")).unwrap();
    assert_eq!((c.gated(), c.activation_name()), (true, "silu".to_string()));
    let c = T5Config::from_json(&minimal("gated-gelu")).unwrap();
    assert_eq!(c.activation_name(), "gelu_new");
    // Original T5 configs name no tie: rescaled; Flan-T5's `false`: not.
    assert!(T5Config::from_json("{}").unwrap().scales_decoder_output());
    assert!(!config.scales_decoder_output());
}
