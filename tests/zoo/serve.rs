//! `zoo serve` as a client sees it: a server started on loopback (any free port) over a tiny
//! LLaMA fixture, driven with raw HTTP and with the official `openai` Python client
//! (`ZOO_OPENAI_PYTHON`, a venv `tests/run.sh` makes), and over the real SmolLM2 / MiniLM
//! weights (`ZOO_SMOLLM2_GGUF`, `ZOO_MINILM_DIR`) for real answers. Plus the batched decoding
//! step against single-sequence decoding, on every backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use serde_json::{json, Value};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// The server under test

/// A `zoo serve` child process; killed when dropped.
struct Served {
    child: Child,
    base: String,
    addr: String,
    log: mpsc::Receiver<String>,
    /// Held until the server has been killed (fields drop after `Drop::drop`).
    _serial: MutexGuard<'static, ()>,
}

impl Served {
    // The child is waited for on every path: moved into `Served`, whose `Drop` kills and waits
    // for it, or killed and waited for before the panic (clippy cannot follow the move).
    #[allow(clippy::zombie_processes)]
    fn start(args: &[&str]) -> Served {
        // One server at a time: two tests' servers side by side have failed
        // `bad_requests_get_openai_json_errors` and the 32-stream test now and then (not
        // reproduced alone, cause not found), and each server wants both cores anyway.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut child = Command::new(env!("CARGO_BIN_EXE_zoo"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .env_remove("ZOO_BACKEND")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start zoo serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find("http://") {
                        let rest = &line[at + "http://".len()..];
                        let addr = rest.split_whitespace().next().unwrap().to_string();
                        return Served {
                            _serial: serial,
                            child,
                            base: format!("http://{addr}"),
                            addr,
                            log: rx,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("zoo serve did not start: {}", seen.join("\n"));
                }
            }
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path, None)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = http(&self.addr, "POST", path, Some(body.to_string().as_bytes()));
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, value)
    }

    /// A Prometheus counter or gauge (the first sample of `name`).
    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| {
                l.starts_with(name)
                    && l[name.len()..].starts_with([' ', '{'])
                    && !l.starts_with('#')
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request (`Connection: close`): status and body, chunked bodies joined.
fn http(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let body = body.unwrap_or(b"");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A server may answer (413) before reading a large body: a failed write is not an error.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return (status, body.to_string());
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    (status, out)
}

/// The `data:` payloads of a server-sent-event body.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The streamed text of a chat or completion stream, its finish reason; asserts `[DONE]` ends it.
fn streamed(body: &str) -> (String, String) {
    let events = events(body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    let mut text = String::new();
    let mut finish = String::new();
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(v.get("error").is_none(), "{v}");
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
                text.push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
    }
    (text, finish)
}

/// The tiny LLaMA with a byte-level tokenizer (`tests/fixtures/pipeline/bos_llama`), its
/// context widened to 4096 positions, in a folder named `tiny-chat` (its id on the server).
fn tiny_chat_model() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-chat");
    std::fs::create_dir(&dir).unwrap();
    let from = fixtures().join("pipeline/bos_llama");
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    set_config(&dir, "max_position_embeddings", json!(4096));
    (tmp, dir)
}

fn chat_body(content: &str, max_tokens: usize, stream: bool) -> Value {
    json!({
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

fn env_path(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            eprintln!("SKIPPED: set {name} (tests/run.sh sets it)");
            None
        }
    }
}

/// The text a byte-level tokenizer gives for random ids may end inside a character: compare
/// without a trailing replacement character.
fn whole_chars(text: &str) -> &str {
    text.trim_end_matches('\u{FFFD}')
}

// ---------------------------------------------------------------------------------------------
// Batched decoding

struct BatchedStep {
    kind: burn_zoo::backends::BackendKind,
}

impl BatchedStep {
    fn run<B: Backend>(self, device: B::Device) {
        use burn_zoo::nn::{ids_tensor, CausalLm, Logits};
        let model = burn_zoo::llama::open::<B>(&fixtures().join("llama/gqa"), &device)
            .unwrap()
            .model;
        let prompts: [&[u32]; 3] = [&[1, 5, 9, 2, 7], &[3, 8, 8, 1, 4, 6, 2, 9, 10], &[11]];
        let steps: [[u32; 3]; 3] = [[4, 7, 2], [9, 1, 5], [6, 6, 3]];
        // Each sequence twice: one cache for the batched steps, one for single decoding.
        let mut batched: Vec<_> = prompts.iter().map(|_| model.new_cache(1, 16)).collect();
        let mut single: Vec<_> = prompts.iter().map(|_| model.new_cache(1, 16)).collect();
        for (i, p) in prompts.iter().enumerate() {
            for cache in [&mut batched[i], &mut single[i]] {
                model
                    .forward_cached(ids_tensor::<B>(p, &device), cache, Logits::Last)
                    .unwrap();
            }
        }
        let tol = burn_zoo::backends::tolerance(self.kind);
        for ids in steps {
            let mut caches: Vec<_> = batched.iter_mut().collect();
            let got = model.decode_step(&ids, &mut caches).unwrap();
            assert_eq!(got.dims(), [3, model.vocab_size()]);
            let got: Vec<f32> = got.into_data().convert::<f32>().into_vec().unwrap();
            let vocab = model.vocab_size();
            for (i, &id) in ids.iter().enumerate() {
                let want = tensor_rows(
                    model
                        .forward_cached(
                            ids_tensor::<B>(&[id], &device),
                            &mut single[i],
                            Logits::Last,
                        )
                        .unwrap(),
                );
                let diff = max_abs_diff(&[got[i * vocab..(i + 1) * vocab].to_vec()], &want);
                assert!(diff < tol, "{}: sequence {i}: {diff}", self.kind);
            }
        }
        // A full cache is an error, not a panic.
        let mut full = model.new_cache(1, 16);
        let long: Vec<u32> = (0..16).map(|i| i % 10).collect();
        model
            .forward_cached(ids_tensor::<B>(&long, &device), &mut full, Logits::Last)
            .unwrap();
        let mut caches = vec![&mut full];
        assert!(model.decode_step(&[1], &mut caches).is_err());
    }
}

#[test]
fn batched_decode_step_equals_single_sequence_decoding() {
    on_every_backend!(|kind| BatchedStep { kind });
}

// ---------------------------------------------------------------------------------------------
// The API over the tiny model

#[test]
fn chat_completions_tokenize_and_32_concurrent_streams_on_every_backend() {
    let (_tmp, dir) = tiny_chat_model();
    let dir = dir.display().to_string();
    let reference = json(&fixtures().join("pipeline/bos_llama/reference.json"));
    for backend in backend_names() {
        let server = Served::start(&[
            &dir,
            "--template",
            "chatml",
            "--parallel",
            "4",
            "--backend",
            &backend,
        ]);
        let (status, health) = server.get("/health");
        assert_eq!(status, 200, "{health}");
        let (_, models) = server.get("/v1/models");
        let models: Value = serde_json::from_str(&models).unwrap();
        assert_eq!(models["data"][0]["id"], "tiny-chat");

        // The tokenizer as transformers has it.
        let text = reference["text"].as_str().unwrap();
        let (status, tokens) = server.post("/tokenize", &json!({"content": text}));
        assert_eq!(status, 200);
        assert_eq!(
            ids(&tokens["tokens"]),
            ids(&reference["input_ids"]),
            "{backend}"
        );
        let all_ids = ids(&reference["input_ids"]);
        let body_ids = &all_ids[1..];
        let (_, detok) = server.post("/detokenize", &json!({"tokens": body_ids}));
        assert_eq!(detok["content"], text);

        // Completions: the greedy text of `zoo generate`.
        let generated = stdout_json(&zoo(&[
            "generate",
            &dir,
            "--prompt",
            text,
            "--greedy",
            "--max-new-tokens",
            "6",
            "--backend",
            &backend,
            "--json",
        ]));
        let (status, completion) = server.post(
            "/v1/completions",
            &json!({"model": "tiny-chat", "prompt": text, "max_tokens": 6, "temperature": 0}),
        );
        assert_eq!(status, 200, "{completion}");
        assert_eq!(completion["object"], "text_completion");
        assert_eq!(
            whole_chars(completion["choices"][0]["text"].as_str().unwrap()),
            whole_chars(generated["text"].as_str().unwrap()),
            "{backend}"
        );
        let usage = &completion["usage"];
        assert_eq!(
            usage["prompt_tokens"],
            reference["input_ids"].as_array().unwrap().len()
        );
        assert_eq!(
            usage["completion_tokens"],
            generated["ids"].as_array().unwrap().len()
        );

        // Chat, whole and streamed: the same greedy answer.
        let (status, whole) = server.post("/v1/chat/completions", &chat_body("hi there", 8, false));
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
        let content = whole["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, body) = http(
            &server.addr,
            "POST",
            "/v1/chat/completions",
            Some(chat_body("hi there", 8, true).to_string().as_bytes()),
        );
        assert_eq!(status, 200);
        let (text, finish) = streamed(&body);
        assert_eq!(whole_chars(text.trim()), whole_chars(&content), "{backend}");
        assert_eq!(
            finish,
            whole["choices"][0]["finish_reason"].as_str().unwrap()
        );

        // 32 streaming clients at once over 4 slots, 4 different questions: each gets the
        // answer its question gets alone.
        let questions = ["hi there", "what is a cat?", "tell me a story", "2 + 2 ="];
        let alone: Vec<String> = questions
            .iter()
            .map(|q| {
                let (_, v) = server.post("/v1/chat/completions", &chat_body(q, 8, false));
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let steps_before = server.metric("zoo_decode_steps_total");
        let seqs_before = server.metric("zoo_decode_step_sequences_total");
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let addr = server.addr.clone();
                let body = chat_body(questions[i % 4], 8, true).to_string();
                std::thread::spawn(move || {
                    let (status, body) =
                        http(&addr, "POST", "/v1/chat/completions", Some(body.as_bytes()));
                    assert_eq!(status, 200, "{body}");
                    streamed(&body).0
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let text = h.join().expect("a client thread");
            assert_eq!(
                whole_chars(text.trim()),
                whole_chars(&alone[i % 4]),
                "{backend}: client {i}"
            );
        }
        let steps = server.metric("zoo_decode_steps_total") - steps_before;
        let seqs = server.metric("zoo_decode_step_sequences_total") - seqs_before;
        eprintln!(
            "[{backend}] 32 clients: {steps} steps, mean batch {:.2}",
            seqs / steps
        );
        assert!(
            seqs / steps > 1.5,
            "{backend}: sequences were not decoded together"
        );
        assert_eq!(server.metric("zoo_queue_depth"), 0.0);
        assert_eq!(server.metric("zoo_active_sequences"), 0.0);
        let (_, metrics) = server.get("/metrics");
        assert!(metrics
            .contains("zoo_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}"));
        assert!(metrics.contains("zoo_time_to_first_token_seconds_bucket{le=\"+Inf\"}"));
    }
}

/// `ignore_eos` (llama.cpp's and vLLM's extension): generation goes on past the model's
/// end-of-text id up to `max_tokens`. The tiny model's end-of-text id is set to one of its own
/// greedy tokens, so that without the flag the answer stops there.
#[test]
fn ignore_eos_generates_past_the_end_of_text_id() {
    let (_tmp, dir) = tiny_chat_model();
    let path = dir.display().to_string();
    let prompt = "Hello there, how are you";
    let generated = stdout_json(&zoo(&[
        "generate",
        &path,
        "--prompt",
        prompt,
        "--greedy",
        "--max-new-tokens",
        "8",
        "--backend",
        "flex",
        "--json",
    ]));
    let greedy = ids(&generated["ids"]);
    assert_eq!(greedy.len(), 8, "{generated}");
    // The first greedy token after the first that was not generated before it.
    let at = (1..greedy.len())
        .find(|&i| !greedy[..i].contains(&greedy[i]))
        .expect("the tiny model repeats one token");
    set_config(&dir, "eos_token_id", json!(greedy[at]));
    let server = Served::start(&[&path, "--backend", "flex"]);
    let body = |ignore: bool| {
        json!({"model": "tiny-chat", "prompt": prompt, "max_tokens": 8, "temperature": 0,
               "ignore_eos": ignore})
    };
    let (status, stopped) = server.post("/v1/completions", &body(false));
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop", "{stopped}");
    assert_eq!(stopped["usage"]["completion_tokens"], at + 1, "{stopped}");
    let (status, full) = server.post("/v1/completions", &body(true));
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["choices"][0]["finish_reason"], "length", "{full}");
    assert_eq!(full["usage"]["completion_tokens"], 8, "{full}");
    let stopped_text = stopped["choices"][0]["text"].as_str().unwrap();
    let full_text = full["choices"][0]["text"].as_str().unwrap();
    assert!(
        full_text.starts_with(whole_chars(stopped_text)) && full_text.len() > stopped_text.len(),
        "{stopped_text:?} then {full_text:?}"
    );
}

fn assert_error(server: &Served, path: &str, body: &[u8], status: u16, param: Option<&str>) {
    let (got, text) = http(&server.addr, "POST", path, Some(body));
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    assert_eq!(
        got,
        status,
        "{}: {value}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    let error = &value["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{value}"
    );
    assert!(error["type"].as_str().is_some(), "{value}");
    if let Some(p) = param {
        assert_eq!(error["param"], p, "{value}");
    }
}

#[test]
fn bad_requests_get_openai_json_errors() {
    let (_tmp, dir) = tiny_chat_model();
    let dir = dir.display().to_string();
    let backend = cpu_backend().name().to_string();
    let server = Served::start(&[
        &dir,
        "--template",
        "chatml",
        "--max-body",
        "65536",
        "--backend",
        &backend,
    ]);
    let chat = "/v1/chat/completions";
    let with = |key: &str, value: Value| {
        let mut body = chat_body("hi", 4, false);
        body[key] = value;
        body.to_string().into_bytes()
    };
    assert_error(
        &server,
        chat,
        b"{\"model\": \"tiny-chat\", \"messages\": [",
        400,
        None,
    );
    assert_error(&server, chat, b"[1, 2]", 400, None);
    assert_error(&server, chat, &with("messages", json!("hi")), 400, None);
    assert_error(
        &server,
        chat,
        &with("messages", json!([])),
        400,
        Some("messages"),
    );
    assert_error(
        &server,
        chat,
        &with("model", json!("nope")),
        404,
        Some("model"),
    );
    assert_error(
        &server,
        chat,
        &with("temperature", json!(2.5)),
        400,
        Some("temperature"),
    );
    assert_error(
        &server,
        chat,
        &with("temperature", json!(-1)),
        400,
        Some("temperature"),
    );
    assert_error(&server, chat, &with("top_p", json!(0)), 400, Some("top_p"));
    assert_error(
        &server,
        chat,
        &with("top_p", json!(1.5)),
        400,
        Some("top_p"),
    );
    assert_error(&server, chat, &with("n", json!(2)), 400, Some("n"));
    assert_error(
        &server,
        chat,
        &with("max_tokens", json!(0)),
        400,
        Some("max_tokens"),
    );
    assert_error(
        &server,
        chat,
        &with("max_tokens", json!(5000)),
        400,
        Some("max_tokens"),
    );
    assert_error(
        &server,
        chat,
        &with("stop", json!(["a", "b", "c", "d", "e"])),
        400,
        Some("stop"),
    );
    assert_error(
        &server,
        chat,
        &with("messages", json!([{"role": "wizard", "content": "hi"}])),
        400,
        Some("messages"),
    );
    // A prompt longer than the context (4096 positions).
    let long = "a b ".repeat(3000);
    let body = json!({"model": "tiny-chat", "prompt": long, "max_tokens": 1}).to_string();
    assert_error(
        &server,
        "/v1/completions",
        body.as_bytes(),
        400,
        Some("messages"),
    );
    // Token ids outside the vocabulary.
    let body = json!({"model": "tiny-chat", "prompt": [1, 99999], "max_tokens": 1}).to_string();
    assert_error(
        &server,
        "/v1/completions",
        body.as_bytes(),
        400,
        Some("prompt"),
    );
    // A body over the limit.
    let big = json!({"model": "tiny-chat", "prompt": "x".repeat(100_000)}).to_string();
    assert_error(&server, "/v1/completions", big.as_bytes(), 413, None);
    // Embeddings from a causal LM, an unknown endpoint.
    let body = json!({"model": "tiny-chat", "input": "hi"}).to_string();
    assert_error(
        &server,
        "/v1/embeddings",
        body.as_bytes(),
        400,
        Some("model"),
    );
    assert_error(&server, "/v1/nothing", b"{}", 404, None);
    let body = json!({"tokens": [1, 99999]}).to_string();
    assert_error(&server, "/detokenize", body.as_bytes(), 400, Some("tokens"));
    // Stop texts cut the answer, and the server still answers after all that.
    let (status, whole) = server.post(chat, &chat_body("hi there", 8, false));
    assert_eq!(status, 200, "{whole}");
    let answer = whole["choices"][0]["message"]["content"].as_str().unwrap();
    if let Some(c) = answer.trim().chars().nth(2) {
        let mut body = chat_body("hi there", 8, false);
        body["stop"] = json!(c.to_string());
        let (_, cut) = server.post(chat, &body);
        let cut_text = cut["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            !cut_text.contains(c),
            "{cut_text:?} contains the stop text {c:?}"
        );
        assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    }
    // The slot is freed just after the response is sent: on a loaded machine the metric can
    // still read 1 for a moment (seen once in a clean run, 2026-12-07).
    wait_for(10, "every sequence to end", || {
        server.metric("zoo_active_sequences") == 0.0
    });
}

/// Waits until `f` holds (polling), or panics after `secs`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a streaming chat and reads until the first content chunk; returns the open socket.
fn open_stream(addr: &str, max_tokens: usize) -> TcpStream {
    let body = chat_body("tell me everything", max_tokens, true).to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 3 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    stream
}

#[test]
fn a_disconnect_frees_its_slot_a_full_queue_is_429_and_sigterm_exits_cleanly() {
    let (_tmp, dir) = tiny_chat_model();
    let dir = dir.display().to_string();
    let backend = cpu_backend().name().to_string();
    let server = Served::start(&[
        &dir,
        "--template",
        "chatml",
        "--parallel",
        "1",
        "--queue",
        "1",
        "--backend",
        &backend,
    ]);
    // One slot: a client that goes away mid-stream must give it back at once.
    let stream = open_stream(&server.addr, 3900);
    wait_for(10, "the stream to run", || {
        server.metric("zoo_active_sequences") == 1.0
    });
    drop(stream);
    wait_for(10, "the cancelled stream to free its slot", || {
        server.metric("zoo_active_sequences") == 0.0
    });
    assert_eq!(server.metric("zoo_cancelled_total"), 1.0);
    assert!(server.metric("zoo_generated_tokens_total") < 3900.0);
    let (status, whole) = server.post("/v1/chat/completions", &chat_body("hi", 4, false));
    assert_eq!(status, 200, "{whole}");

    // The slot busy, one request waiting: the next one is refused with 429.
    let running = open_stream(&server.addr, 3900);
    let waiting = {
        let addr = server.addr.clone();
        std::thread::spawn(move || {
            let body = chat_body("hi", 2, false).to_string();
            http(&addr, "POST", "/v1/chat/completions", Some(body.as_bytes()))
        })
    };
    wait_for(10, "a request to wait", || {
        server.metric("zoo_queue_depth") == 1.0
    });
    assert_error(
        &server,
        "/v1/chat/completions",
        chat_body("hi", 2, false).to_string().as_bytes(),
        429,
        None,
    );
    drop(running);
    let (status, _) = waiting.join().unwrap();
    assert_eq!(status, 200);

    // SIGTERM with a stream in flight: the stream ends ([DONE] after an error event) and the
    // server exits with status 0.
    let mut stream = open_stream(&server.addr, 3900);
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("data: [DONE]"), "{rest}");
    assert!(rest.contains("shutting down"), "{rest}");
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "zoo serve did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut log = Vec::new();
    while let Ok(line) = server.log.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
}

// ---------------------------------------------------------------------------------------------
// The official client, real weights

fn openai_client(python: &str, base: &str, config: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/openai_client.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(base)
        .arg(config.to_string())
        .output()
        .expect("run the openai client");
    assert!(
        out.status.success(),
        "openai client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

fn check_client_errors(got: &Value) {
    assert_eq!(got["errors"]["unknown_model"]["status"], 404, "{got}");
    assert_eq!(got["errors"]["temperature"]["status"], 400, "{got}");
}

#[test]
fn the_openai_client_talks_to_the_tiny_model() {
    let Some(python) = env_path("ZOO_OPENAI_PYTHON") else {
        return;
    };
    let (_tmp, dir) = tiny_chat_model();
    let dir = dir.display().to_string();
    let backend = cpu_backend().name().to_string();
    let server = Served::start(&[&dir, "--template", "chatml", "--backend", &backend]);
    let got = openai_client(
        &python,
        &server.base,
        &json!({
            "chat_model": "tiny-chat",
            "messages": [{"role": "user", "content": "hi there"}],
            "max_tokens": 8,
            "completion_prompt": "the cat sat",
            "concurrent": 32,
        }),
    );
    assert_eq!(got["models"], json!(["tiny-chat"]));
    let content = got["chat"]["content"].as_str().unwrap();
    assert_eq!(got["chat"]["object"], "chat.completion");
    assert_eq!(
        whole_chars(got["chat_stream"]["content"].as_str().unwrap().trim()),
        whole_chars(content)
    );
    assert_eq!(got["chat_stream"]["usage"], got["chat"]["usage"]);
    assert_eq!(got["completion_stream"], got["completion"]["text"]);
    for (i, text) in got["concurrent"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            whole_chars(text.as_str().unwrap().trim()),
            whole_chars(content),
            "client {i}"
        );
    }
    check_client_errors(&got);
}

#[test]
fn smollm2_and_minilm_answer_the_openai_client_as_zoo_chat_and_zoo_embed_do() {
    let (Some(gguf), Some(minilm)) = (env_path("ZOO_SMOLLM2_GGUF"), env_path("ZOO_MINILM_DIR"))
    else {
        return;
    };
    let python = env_path("ZOO_OPENAI_PYTHON");
    let question = "What is the capital of France?";
    let sentences = ["A man is eating food.", "The sky is blue."];
    for backend in backend_names() {
        let server = Served::start(&[&gguf, &minilm, "--backend", &backend]);
        let (_, models) = server.get("/v1/models");
        let models: Value = serde_json::from_str(&models).unwrap();
        let lm = models["data"][0]["id"].as_str().unwrap().to_string();
        let encoder = models["data"][1]["id"].as_str().unwrap().to_string();
        let want = stdout_json(&zoo(&[
            "chat",
            &gguf,
            "--message",
            question,
            "--max-new-tokens",
            "20",
            "--backend",
            &backend,
            "--json",
        ]));
        let want_reply = want["reply"].as_str().unwrap();
        assert!(want_reply.contains("Paris"), "{want_reply}");
        let mut args = vec!["embed", minilm.as_str()];
        args.extend(sentences);
        args.extend(["--backend", backend.as_str(), "--json"]);
        let want_vectors = rows(&stdout_json(&zoo(&args))["embeddings"]);

        // Raw HTTP: the same answer and vectors.
        let (status, whole) = server.post(
            "/v1/chat/completions",
            &json!({"model": lm, "messages": [{"role": "user", "content": question}],
                    "max_tokens": 20, "temperature": 0}),
        );
        assert_eq!(status, 200, "{whole}");
        assert_eq!(
            whole["choices"][0]["message"]["content"], want_reply,
            "{backend}"
        );
        let (status, emb) = server.post(
            "/v1/embeddings",
            &json!({"model": encoder, "input": sentences}),
        );
        assert_eq!(status, 200, "{emb}");
        let got: Vec<Vec<f32>> = emb["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| rows(&json!([d["embedding"]])).remove(0))
            .collect();
        assert_eq!(got, want_vectors, "{backend}");

        let Some(python) = &python else { continue };
        let got = openai_client(
            python,
            &server.base,
            &json!({
                "chat_model": lm,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 20,
                "embed_model": encoder,
                "embed_inputs": sentences,
            }),
        );
        eprintln!("[{backend}] {}", got["chat"]["content"]);
        assert_eq!(got["chat"]["content"], want_reply, "{backend}");
        assert_eq!(
            got["chat_stream"]["content"].as_str().unwrap().trim(),
            want_reply
        );
        assert_eq!(
            got["chat_stream"]["finish_reason"],
            got["chat"]["finish_reason"]
        );
        // base64 (the client's default) and float: the f32 values zoo embed prints.
        let client_vectors = rows(&got["embeddings"]);
        assert_eq!(client_vectors, want_vectors, "{backend}");
        assert_eq!(
            rows(&json!([got["embedding_float"]])).remove(0),
            want_vectors[0]
        );
        assert!(got["embedding_usage"]["prompt_tokens"].as_u64().unwrap() > 4);
        check_client_errors(&got);
    }
}

// ---------------------------------------------------------------------------------------------
// The chat page in headless Chromium

#[test]
fn the_chat_page_streams_answers_and_keeps_the_conversation_in_chromium() {
    let (Some(playwright), Some(chromium)) =
        (env_path("ZOO_PLAYWRIGHT_DIR"), env_path("ZOO_CHROMIUM"))
    else {
        return;
    };
    let (_tmp, dir) = tiny_chat_model();
    let dir = dir.display().to_string();
    let backend = cpu_backend().name().to_string();
    let server = Served::start(&[&dir, "--template", "chatml", "--backend", &backend]);
    let (status, page) = server.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("<title>burn-zoo chat</title>"));
    let questions = ["hi there", "and then?"];
    // What the API answers for the same conversation.
    let ask = |messages: &Value| {
        let body = json!({"model": "tiny-chat", "messages": messages, "max_tokens": 12,
                          "temperature": 0});
        let (status, v) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{v}");
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = ask(&json!([{"role": "user", "content": questions[0]}]));
    let second = ask(&json!([
        {"role": "user", "content": questions[0]},
        {"role": "assistant", "content": first},
        {"role": "user", "content": questions[1]},
    ]));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve/page_test.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg(&server.base)
        .arg(&chromium)
        .args(questions)
        .env("NODE_PATH", Path::new(&playwright).join("node_modules"))
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "page test failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("the page test prints JSON");
    eprintln!("{got}");
    assert_eq!(got["model"], "tiny-chat");
    let answers = got["answers"].as_array().unwrap();
    assert_eq!(answers[0]["cls"], "msg assistant", "{got}");
    assert_eq!(
        whole_chars(answers[0]["text"].as_str().unwrap().trim()),
        whole_chars(&first)
    );
    assert_eq!(
        whole_chars(answers[1]["text"].as_str().unwrap().trim()),
        whole_chars(&second)
    );
    for stats in got["stats"].as_array().unwrap() {
        assert!(stats.as_str().unwrap().contains("tok/s"), "{got}");
    }
    assert_eq!(got["bubbles"].as_array().unwrap().len(), 4);
}
