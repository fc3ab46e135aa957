//! Parity with HF transformers / sentence-transformers on every compiled-in backend: tiny
//! random checkpoints made by tests/fixtures/bert_fixtures.py, and the real all-MiniLM-L6-v2
//! when `ZOO_MINILM_DIR` names its folder.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::Value;
use zoo_backends::BackendKind;
use zoo_bert::{Batch, BertError, SentenceEncoder};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bert"))
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture json");
    serde_json::from_str(&text).expect("valid json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| {
            s.as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        })
        .collect()
}

fn to_vec<B: Backend, const D: usize>(t: burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32")
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (i, diff) = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0.0f32),
            |acc, (i, d)| if d > acc.1 { (i, d) } else { acc },
        );
    assert!(
        diff <= tol * (1.0 + want[i].abs()),
        "{what}: max |diff| {diff} at {i} (got {}, want {}), tolerance {tol}",
        got[i],
        want[i]
    );
}

/// Hidden states and MLM logits of a padded batch of two sequences with token types.
struct TinyMlm {
    kind: BackendKind,
}

impl TinyMlm {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        let r = json("tiny_mlm_reference.json");
        let (config, model) =
            zoo_bert::load::<B>(&fixtures().join("tiny_mlm"), &device).expect("load");
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert!(model.cls.is_some() && model.pooler.is_none());
        let seqs = ids(&r["ids"]);
        let types = ids(&r["token_type_ids"]);
        assert_ne!(seqs[0].len(), seqs[1].len(), "the batch must need padding");
        let batch = Batch::new(
            &seqs,
            Some(&types),
            0,
            model.vocab_size(),
            model.type_vocab_size(),
        )
        .expect("batch");
        let (ids_t, types_t, mask_t) = batch.tensors::<B>(&device);
        let hidden = model
            .forward(ids_t, Some(types_t), Some(mask_t))
            .expect("forward");
        assert_eq!(hidden.dims().to_vec(), vec![2, batch.len, 32]);
        assert_close(
            &format!("{} hidden", self.kind),
            &to_vec(hidden.clone()),
            &floats(&r["hidden"]),
            tol,
        );
        let logits = model.mlm_logits(hidden).expect("MLM head");
        assert_close(
            &format!("{} logits", self.kind),
            &to_vec(logits),
            &floats(&r["logits"]),
            tol,
        );
        // The short sequence alone (no padding) gives its rows of the padded batch.
        let alone =
            Batch::new(&seqs[1..], Some(&types[1..]), 0, model.vocab_size(), 2).expect("batch");
        let (i, t, m) = alone.tensors::<B>(&device);
        let h = to_vec(model.forward(i, Some(t), Some(m)).expect("forward"));
        let want = floats(&r["hidden"]);
        let row = batch.len * 32;
        assert_close("unpadded", &h, &want[row..row + h.len()], tol);
    }
}

#[test]
fn tiny_mlm_hidden_and_logits_match_transformers() {
    on_every_backend!(|kind| TinyMlm { kind });
}

/// The fill-mask pipeline's top 5.
struct FillMask {
    kind: BackendKind,
}

impl FillMask {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        let r = &json("tiny_mlm_reference.json")["fill_mask"];
        let enc = SentenceEncoder::<B>::load(&fixtures().join("tiny_mlm"), &device).expect("load");
        let text = r["text"].as_str().expect("text");
        assert_eq!(
            enc.encode(text).expect("encode").ids,
            ids(&Value::Array(vec![r["ids"].clone()]))[0]
        );
        let got = enc.fill_mask(text, 5).expect("fill mask");
        let want = r["top"].as_array().expect("top");
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            let (wid, wprob) = (
                w["id"].as_u64().expect("id") as u32,
                w["prob"].as_f64().expect("p") as f32,
            );
            assert!(
                (g.prob - wprob).abs() <= tol,
                "{}: rank {k}: prob {} vs {wprob}",
                self.kind,
                g.prob
            );
            if g.id != wid {
                // Only a near tie may swap places.
                let neighbour = got.iter().find(|c| c.id == wid).expect("same top-k set");
                assert!(
                    (neighbour.prob - g.prob).abs() <= tol,
                    "{}: rank {k}: id {} vs {wid}",
                    self.kind,
                    g.id
                );
            } else {
                assert_eq!(g.token, w["token"].as_str().expect("token"));
            }
        }
        // A text without a mask, and one with two, are errors for fill_mask.
        assert!(matches!(
            enc.fill_mask("the man", 5),
            Err(BertError::Mask(_))
        ));
        assert!(matches!(
            enc.fill_mask("[MASK] is [MASK]", 5),
            Err(BertError::Mask(_))
        ));
        assert_eq!(
            enc.fill_masks("[MASK] is [MASK]", 3)
                .expect("two masks")
                .len(),
            2
        );
    }
}

#[test]
fn tiny_fill_mask_matches_the_pipeline() {
    on_every_backend!(|kind| FillMask { kind });
}

/// A BertModel saved as pytorch_model.bin with a position_ids buffer, tokenized from vocab.txt,
/// with cls + max pooling and normalisation from sentence-transformers files.
struct TinyBin {
    kind: BackendKind,
}

impl TinyBin {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        let r = json("tiny_bin_reference.json");
        let enc = SentenceEncoder::<B>::load(&fixtures().join("tiny_bin"), &device).expect("load");
        assert_eq!(
            enc.pooling,
            vec![zoo_bert::Pooling::Cls, zoo_bert::Pooling::Max]
        );
        assert!(enc.normalize && enc.model.cls.is_none());
        let texts: Vec<&str> = r["texts"]
            .as_array()
            .expect("texts")
            .iter()
            .map(|t| t.as_str().expect("text"))
            .collect();
        let want_ids = ids(&r["ids"]);
        for (t, w) in texts.iter().zip(&want_ids) {
            assert_eq!(&enc.encode(t).expect("encode").ids, w, "ids of {t:?}");
        }
        let batch = Batch::new(&want_ids, None, 0, enc.model.vocab_size(), 2).expect("batch");
        let (i, t, m) = batch.tensors::<B>(&device);
        let hidden = enc.model.forward(i, Some(t), Some(m)).expect("forward");
        assert_close(
            "hidden",
            &to_vec(hidden.clone()),
            &floats(&r["hidden"]),
            tol,
        );
        let pooled = enc.model.pooled(hidden).expect("pooler");
        assert_close("pooler", &to_vec(pooled), &floats(&r["pooled"]), tol);
        for batch_size in [1, 2, 32] {
            let got = enc.embed(&texts, batch_size).expect("embed");
            for (k, (g, w)) in got
                .iter()
                .zip(r["embeddings"].as_array().expect("embeddings"))
                .enumerate()
            {
                assert_close(
                    &format!("{} embedding {k} (batch {batch_size})", self.kind),
                    g,
                    &floats(w),
                    tol,
                );
            }
        }
        // max_position_embeddings is 16: a long text is cut (keeping [SEP]) or refused.
        let long = "the dog runs in the park ".repeat(5);
        let e = enc.encode(&long).expect("encode");
        assert!(e.truncated() && e.ids.len() == 16 && e.ids[15] == 3);
        let d = enc
            .embed_detailed(&[long.as_str(), "hello"], 4, true)
            .expect("truncating");
        assert_eq!(d.truncated, vec![true, false]);
        assert!(matches!(
            enc.embed_detailed(&["hello", long.as_str()], 4, false),
            Err(BertError::TooLong {
                index: 1,
                max: 16,
                ..
            })
        ));
        assert!(matches!(
            enc.fill_mask("[MASK]", 1),
            Err(BertError::Unsupported(_))
        ));
    }
}

#[test]
fn tiny_bin_sentence_transformers_folder_matches() {
    on_every_backend!(|kind| TinyBin { kind });
}

/// all-MiniLM-L6-v2 against sentence-transformers.
struct MiniLm {
    kind: BackendKind,
    dir: PathBuf,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

impl MiniLm {
    fn run<B: Backend>(self, device: B::Device) {
        let r = json("minilm_reference.json");
        let enc = SentenceEncoder::<B>::load(&self.dir, &device).expect("load MiniLM");
        assert_eq!((enc.dim(), enc.max_len, enc.normalize), (384, 256, true));
        let food = enc.encode("A man is eating food.").expect("encode").ids;
        assert_eq!(food, vec![101, 1037, 2158, 2003, 5983, 2833, 1012, 102]);
        let texts: Vec<&str> = r["sentences"]
            .as_array()
            .expect("sentences")
            .iter()
            .map(|t| t.as_str().expect("text"))
            .collect();
        for (t, w) in texts.iter().zip(ids(&r["ids"])) {
            assert_eq!(enc.encode(t).expect("encode").ids, w, "ids of {t:?}");
        }
        for batch_size in [1, 32] {
            let got = enc.embed(&texts, batch_size).expect("embed");
            for ((t, g), w) in texts
                .iter()
                .zip(&got)
                .zip(r["embeddings"].as_array().expect("embeddings"))
            {
                let c = cosine(g, &floats(w));
                assert!(
                    c >= 0.9999,
                    "{}: cosine {c} for {t:?} (batch {batch_size})",
                    self.kind
                );
            }
        }
    }
}

#[test]
fn minilm_matches_sentence_transformers() {
    let Some(dir) = std::env::var_os("ZOO_MINILM_DIR").map(PathBuf::from) else {
        eprintln!("skipping minilm_matches_sentence_transformers: set ZOO_MINILM_DIR to the all-MiniLM-L6-v2 folder (see ASSETS.md)");
        return;
    };
    assert!(
        Path::new(&dir).join("config.json").is_file(),
        "ZOO_MINILM_DIR={} has no config.json",
        dir.display()
    );
    on_every_backend!(|kind| MiniLm {
        kind,
        dir: dir.clone(),
    });
}

#[test]
fn broken_inputs_are_errors() {
    let dir = fixtures().join("tiny_mlm");
    // Unknown ids, mismatched token types and empty batches are rejected before running.
    assert!(Batch::new(&[vec![2, 500]], None, 0, 100, 2).is_err());
    assert!(Batch::new(&[vec![2, 3]], Some(&[vec![0, 2]]), 0, 100, 2).is_err());
    assert!(Batch::new(&[vec![2, 3]], Some(&[vec![0]]), 0, 100, 2).is_err());
    assert!(Batch::new(&[], None, 0, 100, 2).is_err());
    // A config that does not match the weights names the tensor.
    let tmp = std::env::temp_dir().join(format!("zoo-bert-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    std::fs::copy(dir.join("model.safetensors"), tmp.join("model.safetensors")).expect("copy");
    let config = std::fs::read_to_string(dir.join("config.json")).expect("config");
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"),
    )
    .expect("write");
    let err = load_err(&tmp);
    assert!(err.contains("not used") && err.contains("layer.1"), "{err}");
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"hidden_size\": 32", "\"hidden_size\": 64"),
    )
    .expect("write");
    let err = load_err(&tmp);
    assert!(err.contains("shape"), "{err}");
    // A truncated weight file.
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    std::fs::write(tmp.join("config.json"), &config).expect("write");
    std::fs::write(tmp.join("model.safetensors"), &bytes[..bytes.len() / 2]).expect("write");
    let err = load_err(&tmp);
    assert!(
        err.contains("truncated") || err.contains("safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp).ok();
}

fn load_err(dir: &Path) -> String {
    struct Load(PathBuf);
    impl Load {
        fn run<B: Backend>(self, device: B::Device) -> String {
            match zoo_bert::load::<B>(&self.0, &device) {
                Ok(_) => "loaded".into(),
                Err(e) => e.to_string(),
            }
        }
    }
    let kind = zoo_backends::test_backends().expect("backends")[0];
    zoo_backends::with_backend!(kind, |B, device| {
        (Load(dir.to_path_buf())).run::<B>(device)
    })
    .expect("run")
}
