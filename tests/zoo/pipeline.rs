//! The library pipeline (`burn_zoo::open`) and the bugs found when the zoo was tried as a new
//! user would: text prompts get the tokenizer's bos, `--hidden` is the final-norm output in
//! every family, ndarray is repeatable and exact on an odd LLaMA shape, `compare` takes folders.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn_zoo::backends::{tolerance, with_backend};
use burn_zoo::nn::{Conversation, GenerationConfig, Logits, Template, TemplateFormat};

use crate::common::*;

fn pipeline_fixture(name: &str) -> PathBuf {
    fixtures().join("pipeline").join(name)
}

/// `x · Wᵀ` for rows `x` and a `[out, in]` matrix `w` stored in a safetensors file.
fn times_head(rows: &[Vec<f32>], file: &Path, name: &str) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let w: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (out, inp) = (t.shape()[0], t.shape()[1]);
    rows.iter()
        .map(|x| {
            assert_eq!(x.len(), inp);
            (0..out)
                .map(|o| (0..inp).map(|i| x[i] * w[o * inp + i]).sum())
                .collect()
        })
        .collect()
}

struct BosLlama {
    kind: burn_zoo::backends::BackendKind,
}

impl BosLlama {
    fn run<B: Backend>(self, device: B::Device) {
        let reference = json(&pipeline_fixture("bos_llama/reference.json"));
        let lm = burn_zoo::open::<B>(&pipeline_fixture("bos_llama"), &device).unwrap();
        let text = reference["text"].as_str().unwrap();
        // transformers' tokenizer(text).input_ids: the post-processor puts <s> first.
        let prompt = lm.encode(text).unwrap();
        assert_eq!(prompt, ids(&reference["input_ids"]));
        assert_eq!(prompt[0], 1);
        let greedy = ids(&reference["greedy"]);
        let config = GenerationConfig {
            stop_ids: Some(Vec::new()),
            ..GenerationConfig::greedy(greedy.len())
        };
        let out = lm.generate(&prompt, &config, |_| true).unwrap();
        assert_eq!(out.ids, greedy, "{}", self.kind);
        let hidden = lm.forward_rows(&prompt, Logits::Hidden).unwrap();
        let diff = max_abs_diff(&hidden, &rows(&reference["hidden"]));
        assert!(diff < tolerance(self.kind), "{}: hidden {diff}", self.kind);
    }
}

#[test]
fn text_prompts_get_the_tokenizers_bos_and_transformers_greedy_tokens() {
    on_every_backend!(|kind| BosLlama { kind });
}

#[test]
fn generate_prompt_feeds_what_transformers_tokenizer_gives() {
    let reference = json(&pipeline_fixture("bos_llama/reference.json"));
    let dir = pipeline_fixture("bos_llama").display().to_string();
    let greedy = ids(&reference["greedy"]);
    for backend in backend_names() {
        let out = zoo(&[
            "generate",
            &dir,
            "--prompt",
            reference["text"].as_str().unwrap(),
            "--greedy",
            "--ignore-eos",
            "--max-new-tokens",
            &greedy.len().to_string(),
            "--backend",
            &backend,
            "--json",
        ]);
        let value = stdout_json(&out);
        assert_eq!(ids(&value["ids"]), greedy, "{backend}: only the new ids");
    }
}

/// A model folder, its head's tensor name, a prompt, transformers' logits and, where the
/// fixture has them, its final hidden states.
type HiddenCase = (
    PathBuf,
    &'static str,
    Vec<u32>,
    Vec<Vec<f32>>,
    Option<Vec<Vec<f32>>>,
);

/// `zoo forward --hidden` is the final-norm output in every family: times the LM head it gives
/// the logits (checked against transformers' logits), and it equals transformers'
/// `last_hidden_state` where the fixture has one.
#[test]
fn forward_hidden_is_the_final_norm_output_in_every_family() {
    let cases: Vec<HiddenCase> = {
        let gpt2 = json(&fixtures().join("gpt2/tiny-b/reference.json"));
        let llama = json(&pipeline_fixture("bos_llama/reference.json"));
        let glm = json(&fixtures().join("glm/hf_tiny.json"));
        vec![
            (
                fixtures().join("gpt2/tiny-b"),
                "lm_head.weight",
                ids(&gpt2["prompt"]),
                rows(&gpt2["logits"]),
                Some(rows(&gpt2["hidden"])),
            ),
            (
                pipeline_fixture("bos_llama"),
                "lm_head.weight",
                ids(&llama["input_ids"]),
                rows(&llama["logits"]),
                Some(rows(&llama["hidden"])),
            ),
            (
                fixtures().join("glm/hf_tiny"),
                "lm_head.weight",
                ids(&glm["ids"]),
                rows(&glm["logits"]),
                None,
            ),
        ]
    };
    for backend in backend_names() {
        let kind = match backend.parse().unwrap() {
            burn_zoo::backends::BackendChoice::Named(k) => k,
            _ => unreachable!(),
        };
        for (dir, head, prompt, logits, hidden) in &cases {
            let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
            let weights = ["model.safetensors", "pytorch_model.bin"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file())
                .unwrap();
            let out = zoo(&[
                "forward",
                &dir.display().to_string(),
                "--ids",
                &ids.join(","),
                "--hidden",
                "--backend",
                &backend,
                "--json",
            ]);
            let got = rows(&stdout_json(&out)["hidden"]);
            if let Some(want) = hidden {
                let diff = max_abs_diff(&got, want);
                assert!(diff < tolerance(kind), "{backend} {dir:?}: hidden {diff}");
            }
            if weights.extension().is_some_and(|e| e == "safetensors") {
                let diff = max_abs_diff(&times_head(&got, &weights, head), logits);
                assert!(
                    diff < 10.0 * tolerance(kind),
                    "{backend} {dir:?}: hidden · head differs from the logits by {diff}"
                );
            }
        }
    }
}

struct OddLlama {
    kind: burn_zoo::backends::BackendKind,
}

impl OddLlama {
    fn run<B: Backend>(self, device: B::Device) {
        let reference = json(&pipeline_fixture("odd_llama/reference.json"));
        let prompt = ids(&reference["prompt"]);
        let lm = burn_zoo::open::<B>(&pipeline_fixture("odd_llama"), &device).unwrap();
        let first = lm.forward_rows(&prompt, Logits::All).unwrap();
        let diff = max_abs_diff(&first, &rows(&reference["logits"]));
        assert!(diff < tolerance(self.kind), "{}: logits {diff}", self.kind);
        // The same input twice gives the same bits.
        for _ in 0..3 {
            let again = lm.forward_rows(&prompt, Logits::All).unwrap();
            let same = first
                .iter()
                .flatten()
                .zip(again.iter().flatten())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{}: a second run gave other logits", self.kind);
        }
    }
}

#[test]
fn odd_llama_shape_is_exact_and_repeatable_on_every_backend() {
    on_every_backend!(|kind| OddLlama { kind });
}

/// The same `zoo forward` in separate processes gives the same bytes: burn-ndarray's
/// approximate `recip` made the logits depend on the allocator's alignment, which varies
/// between processes.
#[test]
fn forward_is_repeatable_across_processes_on_every_backend() {
    let reference = json(&pipeline_fixture("odd_llama/reference.json"));
    let prompt: Vec<String> = ids(&reference["prompt"])
        .iter()
        .map(u32::to_string)
        .collect();
    let dir = pipeline_fixture("odd_llama").display().to_string();
    for backend in backend_names() {
        let run = || {
            let out = zoo(&[
                "forward",
                &dir,
                "--ids",
                &prompt.join(","),
                "--backend",
                &backend,
                "--json",
            ]);
            stdout_json(&out);
            out.stdout
        };
        let first = run();
        for _ in 0..3 {
            assert!(
                run() == first,
                "{backend}: another process gave other logits"
            );
        }
    }
}

struct Chat;

impl Chat {
    fn run<B: Backend>(self, device: B::Device) {
        let lm = burn_zoo::open::<B>(&fixtures().join("llama/gqa.gguf"), &device).unwrap();
        // The GGUF fixture has a template but no tokenizer: a chat needs both.
        let mut conversation = Conversation::new(None);
        conversation.push_user("hi");
        let err = lm
            .reply(&mut conversation, &GenerationConfig::greedy(4), |_| true)
            .unwrap_err();
        assert!(err.to_string().contains("no tokenizer"), "{err}");
        // A folder without a chat template: the error names the way out.
        let gpt2 = burn_zoo::open::<B>(&fixtures().join("gpt2/tiny-a"), &device).unwrap();
        let err = gpt2
            .reply(&mut conversation, &GenerationConfig::greedy(4), |_| true)
            .unwrap_err();
        assert!(err.to_string().contains("no chat template"), "{err}");
        // With a named template, a conversation runs and keeps the answer.
        let mut gpt2 = gpt2;
        gpt2.set_chat_format(std::sync::Arc::new(TemplateFormat::new(
            Template::named("chatml").unwrap(),
            None,
        )));
        let out = gpt2
            .reply(&mut conversation, &GenerationConfig::greedy(4), |_| true)
            .unwrap();
        assert_eq!(conversation.messages.len(), 2);
        assert_eq!(conversation.messages[1].role, "assistant");
        assert_eq!(
            conversation.messages[1].content,
            out.text.clone().unwrap(),
            "the conversation keeps the answer"
        );
    }
}

#[test]
fn chat_errors_name_what_is_missing_and_history_is_kept() {
    let kind = cpu_backend();
    with_backend!(kind, |B, device| { Chat.run::<B>(device) }).unwrap();
}

#[test]
fn compare_takes_folders_and_gguf_files_and_tells_same_names_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (parent, source) in [("a", "gpt2/tiny-a"), ("b", "llama/gqa")] {
        let dir = tmp.path().join(parent).join("model");
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixtures().join(source)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        dirs.push(dir.display().to_string());
    }
    let gguf = fixtures().join("llama/gqa.gguf").display().to_string();
    let out = zoo(&["compare", &dirs[0], &dirs[1], &gguf, "--json"]);
    let value = stdout_json(&out);
    let models = value["models"].as_array().expect("models");
    let labels: Vec<&str> = models.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(labels, ["a/model", "b/model", "gqa.gguf"]);
    assert_eq!(models[0]["family"], "gpt2");
    assert_eq!(models[1]["family"], "llama");
    // The GGUF copy of `gqa` has the same architecture as its folder.
    assert_eq!(models[1]["parameters"], models[2]["parameters"]);
    let text = zoo(&["compare", &dirs[0], &dirs[1]]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains("a/model") && table.contains("b/model"),
        "{table}"
    );
}
