//! Weights kept in their stored formats: on every backend, a `Dense` / `Embed` over a stored
//! matrix gives what the same layer over the dequantized f32 matrix gives, within the error
//! the format's product adds (stated per case below); whole models keep their answers.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_zoo::backends::{tolerance, BackendKind};
use burn_zoo::gguf::GgufFile;
use burn_zoo::nn::quant::{runs_on_host, PackedMatrix, QMatrix, QType, Storage};
use burn_zoo::nn::{Dense, Embed, WeightFormat};

use crate::common::*;

/// Seeded values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Matrices of every stored type: Q8_0 / Q4_0 / Q4_1 / F16 / BF16 quantized here, the
/// K-quants taken from the GGUF fixture written by the `gguf` package.
fn matrices() -> Vec<QMatrix> {
    let (rows, cols) = (40, 96);
    let w = values(rows * cols, 7);
    let mut out: Vec<QMatrix> = [
        QType::Q8_0,
        QType::Q4_0,
        QType::Q4_1,
        QType::F16,
        QType::BF16,
    ]
    .into_iter()
    .map(|t| QMatrix::quantize(t, rows, cols, &w).unwrap())
    .collect();
    let file = GgufFile::open(fixtures().join("gguf/quants.gguf")).unwrap();
    for (name, t) in [
        ("q4_k.weight", QType::Q4_K),
        ("q5_k.weight", QType::Q5_K),
        ("q6_k.weight", QType::Q6_K),
    ] {
        let bytes = file.tensor_bytes(name).unwrap().to_vec();
        out.push(QMatrix::new(t, 1, 256, Storage::Owned(bytes)).unwrap());
    }
    out
}

/// The largest error a product over `m` may add to `x · Wᵀ`: f32 summation order,
/// 1e-5·Σ|w||x|; and with `int8` activations (the llama.cpp-style host products), block formats
/// quantize each block of 32 (256 for K-quants) activations to 8 bits — an error of at most
/// amax/254 per activation — so row `r` may move by Σ_blocks amax_b/254 · Σ_{i∈b} |w_ri| more;
/// f16/bf16 weights keep f32 activations either way.
fn bound(m: &QMatrix, x: &[f32], n: usize, int8: bool) -> Vec<f32> {
    let (rows, cols) = (m.rows(), m.cols());
    let w = m.dequantize();
    let block = match m.qtype() {
        QType::Q4_K | QType::Q5_K | QType::Q6_K => 256,
        _ => 32,
    };
    let quantized_acts = int8 && !matches!(m.qtype(), QType::F16 | QType::BF16 | QType::F32);
    let mut out = vec![0f32; n * rows];
    for i in 0..n {
        let xr = &x[i * cols..(i + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let magnitude: f32 = xr.iter().zip(wr).map(|(a, b)| (a * b).abs()).sum();
            let mut e = 1e-5 * magnitude;
            if quantized_acts {
                for (xb, wb) in xr.chunks(block).zip(wr.chunks(block)) {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
                    e += amax / 254.0 * 1.01 * wb.iter().map(|v| v.abs()).sum::<f32>();
                }
            }
            out[i * rows + r] = e;
        }
    }
    out
}

struct StoredProducts {
    kind: BackendKind,
}

impl StoredProducts {
    fn run<B: Backend>(self, device: B::Device) {
        let host = runs_on_host::<B>(&device);
        for m in matrices() {
            let (rows, cols) = (m.rows(), m.cols());
            let reference = Dense::<B>::new(
                Tensor::from_data(TensorData::new(m.dequantize(), [rows, cols]), &device),
                None,
            );
            // Exact products, and (where they run on the host) llama.cpp-style int8 ones.
            for int8 in [false, true] {
                let stored = Dense::<B>::stored_with(m.clone(), None, int8, &device);
                for n in [1usize, 5, 70] {
                    let x = values(n * cols, 11 + n as u64);
                    let input = || {
                        Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [n, cols]), &device)
                    };
                    let got = flat(stored.forward(input()));
                    let want = flat(reference.forward(input()));
                    let limit = bound(&m, &x, n, int8 && host);
                    for (i, ((g, w), l)) in got.iter().zip(&want).zip(&limit).enumerate() {
                        let slack = if host { 0.0 } else { tolerance(self.kind) };
                        assert!(
                            (g - w).abs() <= l + slack,
                            "{} {} int8={int8} n={n} [{i}]: {g} vs {w} (bound {l})",
                            self.kind,
                            m.qtype().name()
                        );
                    }
                }
            }
            // An embedding lookup reads exactly the dequantized rows.
            let table = Embed::<B>::stored(m.clone(), &device);
            let ids = [rows - 1, 0, rows / 2];
            let ids_t = Tensor::<B, 2, Int>::from_data(
                TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, 3]),
                &device,
            );
            let got = flat(table.forward(ids_t));
            let all = m.dequantize();
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&r| all[r * cols..(r + 1) * cols].to_vec())
                .collect();
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
            assert!(
                diff <= 1e-6,
                "{} {} lookup: {diff}",
                self.kind,
                m.qtype().name()
            );
        }
    }
}

/// On the GPU backends (cubecl's wgpu and CUDA runtimes) a packed Q8_0 / Q4_0 / Q4_1 product of
/// up to `FUSED_ROWS` rows runs in the fused kernel — the codes are read as packed, the f32
/// matrix never exists — and equals `x · dequantize(W)ᵀ` within the f32 bound of the other
/// products. The tall shape has more rows than one dispatch dimension takes (32768 cubes), so
/// the rows spread over two.
#[test]
fn packed_products_run_in_the_fused_kernel_on_gpu_backends() {
    on_every_backend!(|kind| FusedPacked { kind });
}

struct FusedPacked {
    kind: BackendKind,
}

impl FusedPacked {
    fn run<B: Backend>(self, device: B::Device) {
        if runs_on_host::<B>(&device) {
            return; // the CPU backends multiply stored matrices on the host
        }
        for (rows, cols) in [(40usize, 96usize), (32_773, 64)] {
            let w = values(rows * cols, 3);
            for t in [QType::Q8_0, QType::Q4_0, QType::Q4_1] {
                let m = QMatrix::quantize(t, rows, cols, &w).unwrap();
                let dense = Dense::<B>::stored(m.clone(), None, &device);
                let packed = dense.packed.as_ref().expect("packed on the device");
                let wd = m.dequantize();
                for n in [1usize, PackedMatrix::<B>::FUSED_ROWS] {
                    let x = values(n * cols, 5 + n as u64);
                    let input =
                        Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
                    let got =
                        flat(packed.fused_product(input).unwrap_or_else(|| {
                            panic!("{}: the fused kernel did not run", self.kind)
                        }));
                    let limit = bound(&m, &x, n, false);
                    for i in 0..n {
                        for r in 0..rows {
                            let want: f64 = (0..cols)
                                .map(|c| f64::from(x[i * cols + c]) * f64::from(wd[r * cols + c]))
                                .sum();
                            let g = got[i * rows + r];
                            let l = limit[i * rows + r] + tolerance(self.kind);
                            assert!(
                                (f64::from(g) - want).abs() <= f64::from(l),
                                "{} {} [{rows}x{cols}] n={n} [{i}, {r}]: {g} vs {want}",
                                self.kind,
                                t.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

fn flat<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn stored_products_equal_the_dequantized_reference_on_every_backend() {
    on_every_backend!(|kind| StoredProducts { kind });
}

/// A tiny LLaMA written as GGUF by `zoo quantize` and loaded as stored gives the logits of the
/// same file loaded at f32 (the weights dequantized) on every backend: the products over stored
/// blocks are exact for the stored weights (up to f32 summation order). With
/// `--int8-activations` the CPU backends quantize the activations to 8 bits per block, as
/// llama.cpp does; on this random 2-layer model with N(0, 0.3) weights, whose logits a bf16
/// rounding of the weights already moves by 3 %, every row then keeps a cosine ≥ 0.99 with the
/// exact logits (measured 0.9947–0.9970).
#[test]
fn quantized_gguf_matches_its_dequantized_weights_on_every_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("pipeline/bos_llama");
    let reference = json(&dir.join("reference.json"));
    let prompt = id_list(&ids(&reference["input_ids"]));
    for to in ["q8_0", "q4_0", "q4_1", "f16"] {
        let out = tmp.path().join(format!("m-{to}.gguf"));
        let q = zoo(&[
            "quantize",
            dir.to_str().unwrap(),
            "--to",
            to,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        for backend in backend_names() {
            let forward = |extra: &[&str]| {
                let mut args = vec![
                    "forward",
                    out.to_str().unwrap(),
                    "--ids",
                    &prompt,
                    "--backend",
                    &backend,
                    "--json",
                ];
                args.extend_from_slice(extra);
                rows(&stdout_json(&zoo(&args))["logits"])
            };
            let stored = forward(&[]);
            let dequantized = forward(&["--dtype", "f32"]);
            let diff = max_abs_diff(&stored, &dequantized);
            assert!(
                diff <= 1e-4,
                "{backend} {to}: stored vs dequantized by {diff}"
            );
            let int8 = forward(&["--int8-activations"]);
            let cos = min_cosine(&int8, &dequantized);
            assert!(
                cos >= 0.99,
                "{backend} {to}: int8 activations: cosine {cos}"
            );
        }
    }
    // A file that exists is not overwritten without --force.
    let existing = tmp.path().join("m-q8_0.gguf");
    let again = zoo(&[
        "quantize",
        dir.to_str().unwrap(),
        "--to",
        "q8_0",
        "--out",
        existing.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    // A bad type is a clear error.
    let bad = zoo(&[
        "quantize",
        dir.to_str().unwrap(),
        "--to",
        "q3_k",
        "--out",
        tmp.path().join("x.gguf").to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected q8_0"));
}

/// `--quantize` / `--dtype` on an HF folder of every family (GPT-2, LLaMA, GLM, BERT) run on
/// every backend. Against
/// transformers' f32 logits: f16 and bf16 keep every row's cosine ≥ 0.999; Q8_0 ≥ 0.99; the
/// 4-bit types ≥ 0.94 on GPT-2 and GLM (measured 0.948–0.995). The random LLaMA fixture's
/// 4-bit logits are not compared: Q4_0's error of up to amax/16 per weight moves that chaotic
/// 2-layer model's logits to a cosine of 0.61 — its products are checked op by op above.
#[test]
fn weight_format_flags_work_for_every_family_on_every_backend() {
    let gpt2 = json(&fixtures().join("gpt2/tiny-a/reference.json"));
    let llama = json(&fixtures().join("pipeline/bos_llama/reference.json"));
    let glm = json(&fixtures().join("glm/hf_tiny.json"));
    let cases = [
        (
            fixtures().join("gpt2/tiny-a"),
            ids(&gpt2["prompt"]),
            rows(&gpt2["logits"]),
            true,
        ),
        (
            fixtures().join("pipeline/bos_llama"),
            ids(&llama["input_ids"]),
            rows(&llama["logits"]),
            false,
        ),
        (
            fixtures().join("glm/hf_tiny"),
            ids(&glm["ids"]),
            rows(&glm["logits"]),
            true,
        ),
    ];
    for backend in backend_names() {
        for (dir, prompt, want, check_4bit) in &cases {
            let p = id_list(prompt);
            for (flag, value, limit) in [
                ("--dtype", "f16", 0.999),
                ("--dtype", "bf16", 0.999),
                ("--quantize", "q8_0", 0.99),
                ("--quantize", "q4_0", 0.94),
                ("--quantize", "q4_1", 0.94),
            ] {
                let out = zoo(&[
                    "forward",
                    dir.to_str().unwrap(),
                    "--ids",
                    &p,
                    flag,
                    value,
                    "--backend",
                    &backend,
                    "--json",
                ]);
                let got = rows(&stdout_json(&out)["logits"]);
                assert_eq!(got.len(), want.len());
                if value.starts_with("q4") && !check_4bit {
                    continue;
                }
                let cos = min_cosine(&got, want);
                assert!(cos >= limit, "{backend} {dir:?} {value}: cosine {cos}");
            }
        }
        let bert = fixtures().join("bert/tiny_mlm");
        let embed = |extra: &[&str]| {
            let mut args = vec![
                "embed",
                bert.to_str().unwrap(),
                "a man is eating food",
                "--backend",
                &backend,
                "--json",
            ];
            args.extend_from_slice(extra);
            rows(&stdout_json(&zoo(&args))["embeddings"])
        };
        // BERT's sentence embedding against its f32 one (measured on flex and ndarray: f16
        // 0.9999999, bf16 0.999991, q8_0 0.99991, q4_1 0.9908, q4_0 0.9820; the MLP's down
        // projection, 48 columns, is not a whole number of blocks and stays f32).
        let reference = embed(&[]);
        for (flag, value, limit) in [
            ("--dtype", "f16", 0.9999),
            ("--dtype", "bf16", 0.9999),
            ("--quantize", "q8_0", 0.999),
            ("--quantize", "q4_0", 0.95),
            ("--quantize", "q4_1", 0.95),
        ] {
            let cos = min_cosine(&embed(&[flag, value]), &reference);
            assert!(
                cos > limit,
                "{backend}: BERT {value} embedding cosine {cos}"
            );
        }
    }
}

#[test]
fn weight_formats_are_described() {
    assert_eq!(WeightFormat::AS_STORED.describe(), "as stored");
    assert_eq!(
        WeightFormat::quantized(QType::Q4_0).describe(),
        "q4_0 (embeddings q8_0, head q8_0)"
    );
    assert_eq!(WeightFormat::dtype(QType::F16).describe(), "f16");
    let err = zoo(&["forward", "x", "--ids", "1", "--quantize", "q5_0"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("expected one of q8_0, q4_0, q4_1"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    let err = zoo(&[
        "forward",
        "x",
        "--ids",
        "1",
        "--dtype",
        "f16",
        "--quantize",
        "q8_0",
    ]);
    assert!(!err.status.success());
}

/// llama.cpp itself (llama-cpp-python, which builds it from source) loads the GGUF files
/// `zoo quantize` writes and continues a prompt with the same greedy tokens as the zoo on the
/// same file, and tokenizes text as the zoo does. Building llama.cpp takes ~20 minutes on two
/// cores, so this runs where `ZOO_LLAMA_CPP_PYTHON` names a Python that has `llama_cpp`
/// (`tests/bench/llama_cpp_greedy.py` is the llama.cpp side).
#[test]
fn llama_cpp_runs_the_gguf_files_the_zoo_writes() {
    let Some(python) = std::env::var_os("ZOO_LLAMA_CPP_PYTHON") else {
        println!("skipped: set ZOO_LLAMA_CPP_PYTHON to a python with llama-cpp-python");
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/llama_cpp_greedy.py");
    let tmp = tempfile::tempdir().unwrap();
    let llama = json(&fixtures().join("pipeline/bos_llama/reference.json"));
    let gpt2 = json(&fixtures().join("gpt2/tiny-a/reference.json"));
    // LLaMA: llama.cpp's graph is the zoo's arithmetic (with --int8-activations), so the
    // greedy tokens are equal. GPT-2: ggml computes GELU through an f16 lookup table (its
    // GGML_GELU_FP16), transformers and the zoo in f32; that moves the logits by ~5e-4 of
    // their scale at f16 and, once 8-bit activation rounding amplifies it, ~1 % at Q8_0/Q4
    // (measured cosines 0.99994–0.9999998), enough to flip later near-ties of this random
    // model. There the prompt's logits are compared (cosine ≥ 0.9995) and the first token.
    let cases = [
        (
            fixtures().join("pipeline/bos_llama"),
            ids(&llama["input_ids"]),
            llama["text"].as_str().unwrap().to_string(),
            true,
        ),
        (
            fixtures().join("gpt2/tiny-a"),
            ids(&gpt2["prompt"]),
            "hello world".to_string(),
            false,
        ),
    ];
    for (dir, prompt, text, same_arithmetic) in &cases {
        let p = id_list(prompt);
        for to in ["f16", "q8_0", "q4_0", "q4_1"] {
            let out = tmp.path().join(format!(
                "{}-{to}.gguf",
                dir.file_name().unwrap().to_string_lossy()
            ));
            let q = zoo(&[
                "quantize",
                dir.to_str().unwrap(),
                "--to",
                to,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
            let zoo_ids = ids(&stdout_json(&zoo(&[
                "generate",
                out.to_str().unwrap(),
                "--ids",
                &p,
                "--greedy",
                "--ignore-eos",
                "--max-new-tokens",
                "8",
                "--backend",
                "flex",
                "--json",
                // llama.cpp quantizes activations to 8 bits per block; with this flag the zoo
                // does too, and computes what llama.cpp computes.
                "--int8-activations",
            ]))["ids"]);
            let run = std::process::Command::new(&python)
                .arg(&script)
                .arg(&out)
                .args(["--ids", &p, "--n", "8", "--text", text])
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "llama.cpp: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let cpp: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
            if *same_arithmetic {
                assert_eq!(
                    ids(&cpp["ids"]),
                    zoo_ids,
                    "{dir:?} {to}: llama.cpp's greedy tokens"
                );
            } else {
                let zoo_logits = rows(
                    &stdout_json(&zoo(&[
                        "forward",
                        out.to_str().unwrap(),
                        "--ids",
                        &p,
                        "--backend",
                        "flex",
                        "--json",
                        "--int8-activations",
                    ]))["logits"],
                );
                let cpp_logits = rows(&serde_json::json!([cpp["logits"].clone()]));
                let last = zoo_logits.last().unwrap().clone();
                let cos = min_cosine(&[last], &cpp_logits);
                assert!(
                    cos >= 0.9995,
                    "{dir:?} {to}: llama.cpp's logits: cosine {cos}"
                );
                assert_eq!(
                    ids(&cpp["ids"])[0],
                    zoo_ids[0],
                    "{dir:?} {to}: llama.cpp's first greedy token"
                );
            }
            // The zoo's text prompt on the GGUF file is llama.cpp's tokenization of it.
            let encoded = ids(&stdout_json(&zoo(&[
                "generate",
                out.to_str().unwrap(),
                "--prompt",
                text,
                "--greedy",
                "--max-new-tokens",
                "1",
                "--backend",
                "flex",
                "--json",
                "--ignore-eos",
            ]))["prompt_ids"]);
            assert_eq!(ids(&cpp["tokens"]), encoded, "{dir:?} {to}: tokenization");
        }
    }
}

/// A GPT-2 folder written as GGUF reads back: the file at q8_0 gives exactly the logits of the
/// folder quantized to q8_0 at load (the same bytes, by the same quantizer), on every backend;
/// and the architecture of a GGUF file picks its family.
#[test]
fn gpt2_gguf_files_read_back_on_every_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("gpt2/tiny-a");
    let reference = json(&dir.join("reference.json"));
    let prompt = id_list(&ids(&reference["prompt"]));
    let out = tmp.path().join("tiny-a.q8_0.gguf");
    let q = zoo(&[
        "quantize",
        dir.to_str().unwrap(),
        "--to",
        "q8_0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    for backend in backend_names() {
        let forward = |model: &str, extra: &[&str]| {
            let mut args = vec![
                "forward",
                model,
                "--ids",
                &prompt,
                "--backend",
                &backend,
                "--json",
            ];
            args.extend_from_slice(extra);
            rows(&stdout_json(&zoo(&args))["logits"])
        };
        let from_file = forward(out.to_str().unwrap(), &[]);
        let at_load = forward(dir.to_str().unwrap(), &["--quantize", "q8_0"]);
        let diff = max_abs_diff(&from_file, &at_load);
        assert!(diff <= 1e-5, "{backend}: GGUF vs quantized at load: {diff}");
    }
    let info = zoo(&["info", out.to_str().unwrap(), "--json"]);
    assert_eq!(stdout_json(&info)["family"], "gpt2");
}
