//! GLM tokenizers and chat formats against the ids of the original tokenizer code
//! (fixtures from tests/fixtures/glm_tokenizer_fixtures.py: sentencepiece 0.2.3, tiktoken 0.14.0).

use std::path::{Path, PathBuf};

use serde_json::Value;
use zoo_glm::chat::{render_ids, render_text, stop_ids, Generation, Turn};
use zoo_glm::tokenizer::{self, SpModel, SpModelType};
use zoo_nn::TextTokenizer;

fn dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/glm/tokenizers"
    ))
}

fn reference() -> Value {
    let text = std::fs::read_to_string(dir().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load(generation: Generation) -> TextTokenizer {
    let d = dir();
    match generation {
        Generation::V1 => tokenizer::chatglm_v1_tokenizer(&d.join("ice_text.model")).unwrap(),
        Generation::V2 => {
            tokenizer::chatglm_v2_tokenizer(&d.join("tokenizer.model"), false).unwrap()
        }
        Generation::V3 => {
            tokenizer::chatglm_v2_tokenizer(&d.join("tokenizer.model"), true).unwrap()
        }
        Generation::Glm4 => tokenizer::glm4_tokenizer(&d.join("glm4.tiktoken")).unwrap(),
    }
}

fn check(generation: Generation, key: &str) {
    let all = reference();
    let r = &all[key];
    let tok = load(generation);
    assert_eq!(
        tok.vocab_size() as u64,
        r["vocab_size"].as_u64().unwrap(),
        "{key} vocab size"
    );
    for (name, id) in r["special"].as_object().unwrap() {
        assert_eq!(
            tok.token_id(name),
            Some(id.as_u64().unwrap() as u32),
            "{key} {name}"
        );
    }
    let mut checked = 0;
    for t in r["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let want = ids(&t["ids"]);
        assert_eq!(
            tok.encode(text, false).unwrap(),
            want,
            "{key} encode {text:?}"
        );
        let decoded = t["decoded"].as_str().unwrap();
        assert_eq!(
            tok.decode(&want, false).unwrap(),
            decoded,
            "{key} decode {text:?}"
        );
        checked += want.len();
    }
    assert!(checked > 100, "{key}: only {checked} ids compared");
    for c in r["chats"].as_array().unwrap() {
        let history: Vec<Turn> = c["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let query = c["query"].as_str().unwrap();
        let got = render_ids(generation, &tok, &history, query).unwrap();
        assert_eq!(got, ids(&c["ids"]), "{key} chat {query:?}");
        assert_eq!(
            render_text(generation, &history, query).as_deref(),
            c.get("prompt").and_then(|p| p.as_str()),
            "{key} prompt text"
        );
    }
    assert_eq!(
        stop_ids(generation, &tok).unwrap(),
        ids(&r["stop_ids"]),
        "{key} stop ids"
    );
}

#[test]
fn chatglm_v1_ice_text_matches_reference() {
    check(Generation::V1, "v1");
}

#[test]
fn chatglm2_matches_reference() {
    check(Generation::V2, "v2");
}

#[test]
fn chatglm3_matches_reference() {
    check(Generation::V3, "v3");
}

#[test]
fn glm4_tiktoken_matches_reference() {
    check(Generation::Glm4, "glm4");
}

#[test]
fn round_trips_exactly() {
    let text = "Round trip: 你好，世界！ tabs\tand  two spaces, emoji 🙂\nnew line";
    for g in [Generation::V2, Generation::V3, Generation::Glm4] {
        let tok = load(g);
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{g:?}");
    }
    // v1 removes single leading/trailing spaces; runs of spaces, tabs and newlines survive.
    let tok = load(Generation::V1);
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    // image ids (below 20000) decode to nothing, as in the original
    let mut with_image = vec![7, 19999];
    with_image.extend(&ids);
    assert_eq!(tok.decode(&with_image, false).unwrap(), text);
}

#[test]
fn model_files_parse() {
    let v1 = SpModel::read(&dir().join("ice_text.model")).unwrap();
    assert_eq!(v1.model_type, SpModelType::Unigram);
    assert!(v1.byte_fallback && v1.normalizer.remove_extra_whitespaces);
    assert!(!v1.normalizer.precompiled_charsmap.is_empty());
    assert_eq!(v1.pieces.last().unwrap().piece, "<dBLOCK>");
    let v2 = SpModel::read(&dir().join("tokenizer.model")).unwrap();
    assert_eq!(v2.model_type, SpModelType::Bpe);
    assert_eq!(v2.normalizer.name, "identity");
    assert_eq!(v2.pieces.len(), 520);
    assert_eq!(v2.pieces[2].piece, "</s>");
}

fn copy_into(tmp: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(tmp).unwrap();
    for (from, to) in files {
        std::fs::copy(dir().join(from), tmp.join(to)).unwrap();
    }
}

#[test]
fn detects_generation_from_folder() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("glm_tokenizer_detect");
    let _ = std::fs::remove_dir_all(&base);
    copy_into(&base.join("v1"), &[("ice_text.model", "ice_text.model")]);
    copy_into(&base.join("v2"), &[("tokenizer.model", "tokenizer.model")]);
    copy_into(&base.join("v3"), &[("tokenizer.model", "tokenizer.model")]);
    std::fs::write(
        base.join("v3/tokenizer_config.json"),
        r#"{"added_tokens_decoder": {"64795": {"content": "<|user|>"}}}"#,
    )
    .unwrap();
    copy_into(&base.join("glm4"), &[("glm4.tiktoken", "tokenizer.model")]);
    std::fs::create_dir_all(base.join("none")).unwrap();
    for (sub, want) in [
        ("v1", Some(Generation::V1)),
        ("v2", Some(Generation::V2)),
        ("v3", Some(Generation::V3)),
        ("glm4", Some(Generation::Glm4)),
        ("none", None),
    ] {
        let d = base.join(sub);
        let got = tokenizer::detect_generation(&d).unwrap();
        assert_eq!(got, want, "{sub}");
        if let Some(g) = got {
            let tok = tokenizer::load_tokenizer(&d, g).unwrap();
            assert_eq!(
                stop_ids(g, &tok).unwrap(),
                ids(&reference()[match g {
                    Generation::V1 => "v1",
                    Generation::V2 => "v2",
                    Generation::V3 => "v3",
                    Generation::Glm4 => "glm4",
                }]["stop_ids"])
            );
        }
    }
}

#[test]
fn bad_files_are_errors() {
    let bytes = std::fs::read(dir().join("tokenizer.model")).unwrap();
    for cut in [1, 7, bytes.len() / 2, bytes.len() - 3] {
        assert!(SpModel::parse(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let missing = tokenizer::chatglm_v2_tokenizer(Path::new("/nonexistent/tokenizer.model"), false);
    assert!(missing
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/tokenizer.model"));
    // a v2 model has no <sop>/<eop> pieces: not a ChatGLM-6B tokenizer
    assert!(tokenizer::chatglm_v1_tokenizer(&dir().join("tokenizer.model")).is_err());
    assert!(tokenizer::parse_tiktoken_ranks("not base64! 0\n").is_err());
    // a v2 tokenizer has no <|user|>: the v3 format says so instead of panicking
    let v2 = load(Generation::V2);
    assert!(render_ids(Generation::V3, &v2, &[], "hi").is_err());
}
