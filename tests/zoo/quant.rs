//! Weights kept in their stored formats: on every backend, a `Dense` / `Embed` over a stored
//! matrix gives what the same layer over the dequantized f32 matrix gives, within the error
//! the format's product adds (stated per case below); whole models keep their answers.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_zoo::backends::{tolerance, BackendKind};
use burn_zoo::gguf::GgufFile;
use burn_zoo::nn::quant::{runs_on_host, QMatrix, QType, Storage};
use burn_zoo::nn::{Dense, Embed, WeightFormat};

use crate::common::*;

/// Seeded values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Matrices of every stored type: Q8_0 / Q4_0 / Q4_1 / F16 / BF16 quantized here, the
/// K-quants taken from the GGUF fixture written by the `gguf` package.
fn matrices() -> Vec<QMatrix> {
    let (rows, cols) = (40, 96);
    let w = values(rows * cols, 7);
    let mut out: Vec<QMatrix> = [QType::Q8_0, QType::Q4_0, QType::Q4_1, QType::F16, QType::BF16]
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

/// The largest error a product over `m` may add to `x · Wᵀ` beyond f32 rounding: where the
/// product runs on the host, block formats quantize each block of 32 (256 for K-quants)
/// activations to 8 bits — an error of at most amax/254 per activation — so row `r` may move
/// by Σ_blocks amax_b/254 · Σ_{i∈b} |w_ri|; f16/bf16 weights keep f32 activations. On the
/// device the weights are unpacked exactly.
fn bound(m: &QMatrix, x: &[f32], n: usize, host: bool) -> Vec<f32> {
    let (rows, cols) = (m.rows(), m.cols());
    let w = m.dequantize();
    let block = match m.qtype() {
        QType::Q4_K | QType::Q5_K | QType::Q6_K => 256,
        _ => 32,
    };
    let quantized_acts = host && !matches!(m.qtype(), QType::F16 | QType::BF16 | QType::F32);
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
            let stored = Dense::<B>::stored(m.clone(), None, &device);
            let reference = Dense::<B>::new(
                Tensor::from_data(TensorData::new(m.dequantize(), [rows, cols]), &device),
                None,
            );
            for n in [1usize, 5, 70] {
                let x = values(n * cols, 11 + n as u64);
                let input = || Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
                let got = flat(stored.forward(input()));
                let want = flat(reference.forward(input()));
                let limit = bound(&m, &x, n, host);
                for (i, ((g, w), l)) in got.iter().zip(&want).zip(&limit).enumerate() {
                    let slack = if host { 0.0 } else { tolerance(self.kind) };
                    assert!(
                        (g - w).abs() <= l + slack,
                        "{} {} n={n} [{i}]: {g} vs {w} (bound {l})",
                        self.kind,
                        m.qtype().name()
                    );
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
            assert!(diff <= 1e-6, "{} {} lookup: {diff}", self.kind, m.qtype().name());
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
/// same file loaded at f32 (the weights dequantized), within the activation-quantization error;
/// the f16 file within f16 weight rounding of the original checkpoint.
#[test]
fn quantized_llama_matches_its_dequantized_weights_on_every_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixtures().join("pipeline/bos_llama");
    let reference = json(&dir.join("reference.json"));
    let prompt: Vec<String> = ids(&reference["input_ids"])
        .iter()
        .map(u32::to_string)
        .collect();
    let prompt = prompt.join(",");
    for to in ["q8_0", "q4_0", "q4_1", "f16"] {
        let out = tmp.path().join(format!("m-{to}.gguf"));
        let q = zoo(&[
            "quantize",
            &dir.display().to_string(),
            "--to",
            to,
            "--out",
            &out.display().to_string(),
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
            let scale = dequantized
                .iter()
                .flatten()
                .fold(0f32, |a, v| a.max(v.abs()));
            // Q8 activations (host) move each logit by well under 1 % of the largest logit on
            // this 2-layer model; exact unpacking (GPU) only by f32 rounding.
            assert!(
                diff <= 0.01 * scale + 1e-3,
                "{backend} {to}: stored vs dequantized logits differ by {diff} (max |logit| {scale})"
            );
            if to == "f16" {
                let d = max_abs_diff(&stored, &rows(&reference["logits"]));
                assert!(d < 0.02 * scale, "{backend} f16 vs transformers f32: {d}");
            }
        }
    }
}

/// `--quantize` on an HF folder of every family runs on every backend and keeps the argmax of
/// the final position for a well-separated fixture (GPT-2, LLaMA, GLM) or the embeddings'
/// direction (BERT).
#[test]
fn quantize_flag_works_for_every_family_on_every_backend() {
    let gpt2 = json(&fixtures().join("gpt2/tiny-a/reference.json"));
    let llama = json(&fixtures().join("pipeline/bos_llama/reference.json"));
    let glm = json(&fixtures().join("glm/hf_tiny.json"));
    let cases = [
        (fixtures().join("gpt2/tiny-a"), ids(&gpt2["prompt"]), rows(&gpt2["logits"])),
        (
            fixtures().join("pipeline/bos_llama"),
            ids(&llama["input_ids"]),
            rows(&llama["logits"]),
        ),
        (fixtures().join("glm/hf_tiny"), ids(&glm["ids"]), rows(&glm["logits"])),
    ];
    for backend in backend_names() {
        for (dir, prompt, want) in &cases {
            let p: Vec<String> = prompt.iter().map(u32::to_string).collect();
            for q in ["q8_0", "q4_0", "q4_1"] {
                let out = zoo(&[
                    "forward",
                    dir.to_str().unwrap(),
                    "--ids",
                    &p.join(","),
                    "--quantize",
                    q,
                    "--backend",
                    &backend,
                    "--json",
                ]);
                let got = rows(&stdout_json(&out)["logits"]);
                assert_eq!(got.len(), want.len());
                let scale = want.iter().flatten().fold(0f32, |a, v| a.max(v.abs()));
                let diff = max_abs_diff(&got, want);
                // 4-bit weights of a random tiny model: logits stay within 25 % of the scale.
                let limit = if q == "q8_0" { 0.05 } else { 0.25 } * scale;
                assert!(diff < limit, "{backend} {dir:?} {q}: {diff} (scale {scale})");
            }
        }
        let minilm = fixtures().join("bert/tiny_mlm");
        let out = zoo(&[
            "embed",
            minilm.to_str().unwrap(),
            "a man is eating food",
            "--quantize",
            "q8_0",
            "--backend",
            &backend,
            "--json",
        ]);
        let q = rows(&stdout_json(&out)["embeddings"]);
        let out = zoo(&[
            "embed",
            minilm.to_str().unwrap(),
            "a man is eating food",
            "--backend",
            &backend,
            "--json",
        ]);
        let f = rows(&stdout_json(&out)["embeddings"]);
        let cos: f32 = q[0].iter().zip(&f[0]).map(|(a, b)| a * b).sum::<f32>()
            / (q[0].iter().map(|a| a * a).sum::<f32>().sqrt()
                * f[0].iter().map(|a| a * a).sum::<f32>().sqrt());
        assert!(cos > 0.99, "{backend}: BERT q8_0 embedding cosine {cos}");
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
}
