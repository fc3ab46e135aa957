//! The `zoo` binary as a user runs it: the verification interface (`forward`, `generate
//! --json`) against the transformers reference, streaming, and clear errors for bad input.

use std::process::Output;

use crate::common::*;

fn fixture(name: &str) -> String {
    fixtures().join("gpt2").join(name).display().to_string()
}

#[test]
fn forward_json_matches_transformers_logits() {
    for backend in backend_names() {
        for name in ["tiny-a", "tiny-b"] {
            let reference = json(&fixtures().join("gpt2").join(name).join("reference.json"));
            let prompt: Vec<String> = ids(&reference["prompt"])
                .iter()
                .map(u32::to_string)
                .collect();
            let out = zoo(&[
                "forward",
                &fixture(name),
                "--ids",
                &prompt.join(","),
                "--backend",
                &backend,
                "--json",
            ]);
            let value = stdout_json(&out);
            let diff = max_abs_diff(&rows(&value["logits"]), &rows(&reference["logits"]));
            let kind = backend
                .parse::<burn_zoo::backends::BackendChoice>()
                .unwrap();
            let tol = match kind {
                burn_zoo::backends::BackendChoice::Named(k) => burn_zoo::backends::tolerance(k),
                _ => unreachable!(),
            };
            assert!(diff < tol, "{backend} {name}: {diff}");
        }
    }
}

#[test]
fn generate_json_gives_transformers_greedy_tokens_and_text() {
    for backend in backend_names() {
        let reference = json(&fixtures().join("gpt2/tiny-a/reference.json"));
        let prompt: Vec<String> = ids(&reference["prompt"])
            .iter()
            .map(u32::to_string)
            .collect();
        let greedy = ids(&reference["greedy"]);
        let n = greedy.len().to_string();
        let out = zoo(&[
            "generate",
            &fixture("tiny-a"),
            "--ids",
            &prompt.join(","),
            "--greedy",
            "--max-new-tokens",
            &n,
            "--backend",
            &backend,
            "--json",
        ]);
        let value = stdout_json(&out);
        assert_eq!(ids(&value["ids"]), greedy, "{backend}");
        assert_eq!(value["text"], reference["greedy_text"], "{backend}");
    }
}

#[test]
fn generate_streams_prompt_and_continuation() {
    let reference = json(&fixtures().join("gpt2/tiny-a/reference.json"));
    let out = zoo(&[
        "generate",
        &fixture("tiny-a"),
        "--prompt",
        "the",
        "--greedy",
        "--max-new-tokens",
        "5",
        "--backend",
        &backend_names()[0],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("the"), "{text:?}");
    assert!(text.len() > "the".len(), "{text:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tok/s"), "{stderr}");
    let _ = reference;
}

#[test]
fn sampling_with_a_seed_is_reproducible_from_the_cli() {
    let run = |seed: &str| {
        stdout_json(&zoo(&[
            "generate",
            &fixture("tiny-a"),
            "--ids",
            "1,2,3",
            "--temperature",
            "1.3",
            "--top-k",
            "40",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--max-new-tokens",
            "20",
            "--ignore-eos",
            "--json",
        ]))["ids"]
            .clone()
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "panic instead of an error: {stderr}"
    );
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

#[test]
fn bad_input_gives_clear_errors() {
    let a = fixture("tiny-a");
    assert_clean_error(
        &zoo(&["forward", "/nonexistent/model", "--ids", "1"]),
        "neither a model folder",
    );
    assert_clean_error(
        &zoo(&["forward", &a, "--ids", "1,x,3"]),
        "`x` is not a token id",
    );
    assert_clean_error(&zoo(&["forward", &a, "--ids", ""]), "--ids is empty");
    assert_clean_error(
        &zoo(&["forward", &a, "--ids", "1,9999"]),
        "outside the vocabulary",
    );
    let long: Vec<String> = (0..65).map(|i| (i % 200).to_string()).collect();
    assert_clean_error(&zoo(&["forward", &a, "--ids", &long.join(",")]), "context");
    assert_clean_error(
        &zoo(&["generate", &a, "--ids", "1,2", "--max-new-tokens", "100"]),
        "exceeds the model's context",
    );
    assert_clean_error(
        &zoo(&["forward", &a, "--ids", "1", "--backend", "tpu"]),
        "unknown backend `tpu`",
    );
    assert_clean_error(
        &zoo(&["generate", &a, "--ids", "1", "--temperature", "0"]),
        "temperature",
    );
    assert_clean_error(
        &zoo(&["generate", &fixture("tiny-b"), "--prompt", "hi"]),
        "has no tokenizer",
    );
    for kind in burn_zoo::backends::BackendKind::ALL {
        if !kind.is_compiled() {
            assert_clean_error(
                &zoo(&["forward", &a, "--ids", "1", "--backend", kind.name()]),
                "not compiled into this binary",
            );
        }
    }
}

#[test]
fn backends_lists_every_backend() {
    let value = stdout_json(&zoo(&["backends", "--json"]));
    let list = value["backends"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    let flex = list.iter().find(|b| b["name"] == "flex").unwrap();
    assert_eq!(flex["compiled"], true);
    assert_eq!(flex["available"], true);
    // `auto` never picks a CPU emulation of a GPU (lavapipe here): only hardware adapters.
    let adapter = &value["wgpu_adapter"];
    if adapter["hardware"] == false {
        assert!(
            value["auto"] == "flex" || value["auto"] == "cuda",
            "auto chose {} on a software adapter {adapter}",
            value["auto"]
        );
    }
    if let Some(kind) = adapter["device_type"].as_str() {
        assert_eq!(
            adapter["hardware"],
            kind != "Cpu" && kind != "Other",
            "{adapter}"
        );
    }
}
