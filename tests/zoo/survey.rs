//! The survey's other decoder families through the `zoo` binary, as a user checks them against
//! transformers: the verification interface (`zoo generate --ids … --greedy --json`, `zoo
//! forward --ids … --json`) on the transformers fixtures of OPT (pre- and post-LN), BLOOM (6
//! heads, both residual variants), CodeGen and MOSS, GPT-Neo (local window shorter than the
//! prompt), and T5 / Flan-T5 (encoder ids, decoder ids, text to text), on every backend; `zoo
//! info`, `zoo compare`, `zoo chat` and `zoo bench` knowing the families.

use crate::common::*;

/// Fixture folders (under tests/fixtures) made by the families' fixture scripts.
const DECODERS: [&str; 8] = [
    "opt/pre_ln",
    "opt/post_ln_proj",
    "opt/plain_untied",
    "bloom/tiny6",
    "bloom/post_ln",
    "codegen/tiny",
    "codegen/moss",
    "gpt_neo/tiny",
];

fn tolerance(backend: &str) -> f32 {
    match backend
        .parse::<burn_zoo::backends::BackendChoice>()
        .unwrap()
    {
        burn_zoo::backends::BackendChoice::Named(k) => burn_zoo::backends::tolerance(k),
        _ => unreachable!("test backends are named"),
    }
}

#[test]
fn verification_interface_matches_transformers_token_for_token() {
    for backend in backend_names() {
        for name in DECODERS {
            let dir = fixtures().join(name);
            let reference = json(&dir.join("reference.json"));
            let prompt = id_list(&ids(&reference["prompt"]));
            let greedy = ids(&reference["greedy"]);
            let dir = dir.display().to_string();
            let n = greedy.len().to_string();
            let out = zoo(&[
                "generate",
                &dir,
                "--ids",
                &prompt,
                "--greedy",
                "--ignore-eos",
                "--max-new-tokens",
                &n,
                "--backend",
                &backend,
                "--json",
            ]);
            assert_eq!(
                ids(&stdout_json(&out)["ids"]),
                greedy,
                "{backend} {name}: greedy ids"
            );
            let out = zoo(&[
                "forward",
                &dir,
                "--ids",
                &prompt,
                "--backend",
                &backend,
                "--json",
            ]);
            let diff = max_abs_diff(
                &rows(&stdout_json(&out)["logits"]),
                &rows(&reference["logits"]),
            );
            let tol = tolerance(&backend);
            assert!(diff < tol, "{backend} {name}: logits differ by {diff}");
        }
    }
}

#[test]
fn info_and_compare_know_each_family() {
    let expect = [
        (
            "opt/post_ln_proj",
            "opt",
            "OPT (decoder)",
            "learned absolute (offset 2)",
        ),
        (
            "bloom/tiny6",
            "bloom",
            "BLOOM (decoder)",
            "ALiBi (linear bias by distance)",
        ),
        (
            "codegen/tiny",
            "codegen",
            "CodeGen (decoder, parallel blocks)",
            "RoPE (interleaved",
        ),
        (
            "codegen/moss",
            "codegen",
            "MOSS (CodeGen decoder)",
            "RoPE (interleaved",
        ),
        (
            "gpt_neo/tiny",
            "gpt_neo",
            "GPT-Neo (decoder, local + global)",
            "learned absolute",
        ),
    ];
    for (name, family, label, positions) in expect {
        let dir = fixtures().join(name).display().to_string();
        let info = stdout_json(&zoo(&["info", &dir, "--json"]));
        assert_eq!(info["family"], family, "{name}");
        let params = info["parameters"].as_u64().unwrap();
        let compared = stdout_json(&zoo(&["compare", &dir, "--json"]));
        let m = &compared["models"][0];
        assert_eq!(m["family_label"], label, "{name}");
        assert!(
            m["positional"].as_str().unwrap().starts_with(positions),
            "{name}: {}",
            m["positional"]
        );
        // The count from the config equals the tensors in the checkpoint.
        assert_eq!(m["parameters"].as_u64().unwrap(), params, "{name}");
    }
    // T5: two stacks, relative positions, no KV cache per layer of a decoder-only model.
    let dir = fixtures().join("t5/flan").display().to_string();
    let info = stdout_json(&zoo(&["info", &dir, "--json"]));
    assert_eq!(info["family"], "t5");
    assert_eq!(
        info["decoder_layers"],
        json(&fixtures().join("t5/flan/config.json"))["num_decoder_layers"]
    );
    let m = &stdout_json(&zoo(&["compare", &dir, "--json"]))["models"][0];
    assert_eq!(m["family_label"], "T5 (encoder-decoder)");
    assert!(m["positional"]
        .as_str()
        .unwrap()
        .starts_with("relative buckets"));
    assert!(m["decoder_layers"].as_u64().unwrap() > 0);
}

#[test]
fn compare_prints_the_survey_table() {
    let out = zoo(&[
        "compare",
        "opt-6.7b",
        "bloom-7b1",
        "moss-moon-003-sft",
        "llama-2-7b",
        "chatglm-6b",
        "flan-t5-base",
        "--json",
    ]);
    let value = stdout_json(&out);
    let models = value["models"].as_array().unwrap();
    let positions: Vec<&str> = models
        .iter()
        .map(|m| m["positional"].as_str().unwrap())
        .collect();
    assert_eq!(
        positions,
        [
            "learned absolute (offset 2)",
            "ALiBi (linear bias by distance)",
            "RoPE (interleaved, 0.25 of each head, θ=10000)",
            "RoPE (half-split, θ=10000)",
            "2-D RoPE (position + block, θ=10000)",
            "relative buckets (32, per-head bias)",
        ]
    );
    let params: Vec<u64> = models
        .iter()
        .map(|m| m["parameters"].as_u64().unwrap())
        .collect();
    assert_eq!(
        params,
        [
            6_658_473_984,
            7_069_016_064,
            16_717_980_160,
            6_738_415_616,
            6_173_286_400,
            247_577_856
        ]
    );
    // Flan-T5: 12 encoder + 12 decoder blocks, the cache holds self- and cross-attention.
    assert_eq!(models[5]["decoder_layers"], 12);
    assert_eq!(models[5]["kv_bytes_per_token"], 12 * 2 * 12 * 64 * 2 * 2);
}

#[test]
fn moss_chat_uses_its_own_format() {
    use burn_zoo::nn::Message;
    let dir = fixtures().join("codegen/moss").display().to_string();
    let backend = &backend_names()[0];
    // `zoo chat` on a MOSS folder renders MOSS's turns after its meta instruction: the same
    // prompt as generating from that text.
    // The tiny fixture's context (64) is shorter than MOSS's meta instruction: a short system
    // message stands in for it.
    let (system, question) = ("Be brief.", "What is the 2+2?");
    let text = burn_zoo::codegen::MossFormat
        .render(&[
            Message::new("system", system),
            Message::new("user", question),
        ])
        .unwrap();
    assert_eq!(text, "Be brief.<|Human|>: What is the 2+2?<eoh>\n<|MOSS|>:");
    let chat = stdout_json(&zoo(&[
        "chat",
        &dir,
        "--system",
        system,
        "--message",
        question,
        "--max-new-tokens",
        "4",
        "--json",
        "--backend",
        backend,
    ]));
    let generated = stdout_json(&zoo(&[
        "generate",
        &dir,
        "--prompt",
        &text,
        "--greedy",
        "--max-new-tokens",
        "4",
        "--json",
        "--backend",
        backend,
    ]));
    assert_eq!(
        chat["prompt_tokens"].as_u64().unwrap() as usize,
        ids(&generated["prompt_ids"]).len()
    );
}

#[test]
fn t5_through_the_verification_interface_and_text() {
    for backend in backend_names() {
        for name in ["flan", "t5"] {
            let dir = fixtures().join("t5").join(name);
            let reference = json(&dir.join("reference.json"));
            let dir = dir.display().to_string();
            let encoder = id_list(&ids(&reference["encoder_ids"]));
            let greedy = ids(&reference["greedy"]);
            let n = greedy.len().to_string();
            let out = stdout_json(&zoo(&[
                "generate",
                &dir,
                "--ids",
                &encoder,
                "--greedy",
                "--ignore-eos",
                "--max-new-tokens",
                &n,
                "--backend",
                &backend,
                "--json",
            ]));
            assert_eq!(ids(&out["ids"]), greedy, "{backend} {name}: greedy ids");
            let out = stdout_json(&zoo(&[
                "forward",
                &dir,
                "--ids",
                &encoder,
                "--decoder-ids",
                &id_list(&ids(&reference["decoder_ids"])),
                "--backend",
                &backend,
                "--json",
            ]));
            let diff = max_abs_diff(&rows(&out["logits"]), &rows(&reference["logits"]));
            assert!(
                diff < tolerance(&backend),
                "{backend} {name}: logits differ by {diff}"
            );
        }
        // Text to text, as a LaMini-Flan-T5 user runs it: the prompt gets `</s>`, the answer
        // is transformers' decoded greedy output.
        let dir = fixtures().join("t5/flan");
        let reference = json(&dir.join("reference.json"));
        let out = stdout_json(&zoo(&[
            "generate",
            &dir.display().to_string(),
            "--prompt",
            reference["text_prompt"].as_str().unwrap(),
            "--greedy",
            "--ignore-eos",
            "--max-new-tokens",
            &ids(&reference["text_new_ids"]).len().to_string(),
            "--backend",
            &backend,
            "--json",
        ]));
        assert_eq!(
            out["encoder_ids"], reference["text_prompt_ids"],
            "{backend}"
        );
        assert_eq!(out["ids"], reference["text_new_ids"], "{backend}");
        assert_eq!(out["text"], reference["text"], "{backend}");
    }
}

#[test]
fn t5_misuse_is_a_clear_error() {
    let dir = fixtures().join("t5/flan").display().to_string();
    let fails = |args: &[&str], needle: &str| {
        let out = zoo(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    fails(&["forward", &dir, "--ids", "5,6"], "--decoder-ids");
    fails(
        &["forward", &dir, "--ids", "5,6", "--decoder-ids", "0,999"],
        "outside the vocabulary",
    );
    fails(
        &["chat", &dir, "--message", "hi"],
        "not a causal language model",
    );
    fails(
        &[
            "generate",
            &dir,
            "--ids",
            "5,6",
            "--max-new-tokens",
            "1000000",
        ],
        "longer than the 8192",
    );
    let gpt2 = fixtures().join("gpt2/tiny-a").display().to_string();
    fails(
        &["forward", &gpt2, "--ids", "5,6", "--decoder-ids", "0"],
        "encoder-decoders",
    );
}

#[test]
fn bench_measures_every_new_family() {
    let backend = &backend_names()[0];
    for name in [
        "opt/post_ln_proj",
        "bloom/tiny6",
        "codegen/tiny",
        "gpt_neo/tiny",
        "t5/flan",
    ] {
        let dir = fixtures().join(name).display().to_string();
        let out = stdout_json(&zoo(&[
            "bench",
            &dir,
            "--prompt-len",
            "6",
            "--gen-len",
            "4",
            "--runs",
            "1",
            "--backend",
            backend,
            "--json",
        ]));
        let row = if out["results"].is_array() {
            out["results"][0].clone()
        } else {
            out.clone()
        };
        for key in ["prefill_tok_s", "decode_tok_s"] {
            let rate = row[key]["median"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {out}"));
            assert!(rate > 0.0, "{name}: {key} {rate}");
        }
    }
}
