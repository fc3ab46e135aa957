//! The six ChatGLM golden files of `reference/chatglm/` (made by the original
//! `modeling_chatglm.py` in f32 on CPU): three steps each with the KV cache.
//!
//! The files are read from `$ZOO_CHATGLM_REFERENCE/chatglm/` (CI points the variable at
//! `../shared/reference`); without it the tests print a notice and pass without checking.
//!
//! Tolerance: the reference ran in f32 on CPU and every operation here is the same f32 math
//! in a possibly different summation order, so the CPU backends must agree to 1e-5 absolute
//! on hidden states of magnitude ~1 (a few f32 ulps accumulated over 1 layer); GPU backends
//! reorder reductions and may use fast-math exp/tanh, so they get 1e-4 (observed below that).
//! Observed on flex: 1.2e-7 to 2.4e-7 for the four plain files.
//!
//! The two P-Tuning files store the prefix keys/values as f16, but the reference ran with
//! the prefix encoder's f32 output: the inputs themselves are perturbed by up to half an f16
//! ulp (2^-11 relative), which shows up as 3e-6 (v1) and 1e-4 (v3) in the outputs on every
//! backend. Those two files get 3e-4: above that input-rounding floor, far below any
//! layout or math error (a wrong rotation, mask or split gives differences of 1e-2 to 1).

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use zoo_backends::BackendKind;
use zoo_glm::{v1, v2, ChatGlmV1Config, ChatGlmV2Config};
use zoo_nn::{QType, WeightFormat, Weights};

fn reference_dir() -> Option<PathBuf> {
    match std::env::var("ZOO_CHATGLM_REFERENCE") {
        Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("chatglm")),
        _ => {
            println!("ZOO_CHATGLM_REFERENCE is not set: skipping the ChatGLM golden-tensor tests");
            None
        }
    }
}

fn tolerance(kind: BackendKind, ptuning: bool) -> f32 {
    if ptuning {
        3e-4
    } else if kind.is_gpu() {
        1e-4
    } else {
        1e-5
    }
}

/// The tolerance of a run with the weights kept in f16 or Q8_0 instead of f32 (`None`: f32).
///
/// f16 rounds each weight by at most 2⁻¹¹ relative, so a product `Σ wᵢxᵢ` moves by at most
/// 2⁻¹¹·Σ|wᵢ||xᵢ|; through one layer of these tiny models (|x| ≈ 1, 32–128 terms, two residual
/// branches, LayerNorm rescaling) that bounds the hidden states' change near 2e-3 — measured
/// 7.6e-5 to 4.0e-4 on flex, ndarray and wgpu alike. Q8_0 rounds each weight by up to
/// amax/254 of its block of 32, about 2⁻⁸ relative per product; the products themselves are
/// exact (f32 activations) on every backend by default. Measured 1.8e-3 to 3.9e-3 (wgpu);
/// with `--int8-activations` (each block of activations rounded the same way, as llama.cpp)
/// it was 1.9e-3 to 8.5e-3 on flex and ndarray, so 2e-2 bounds both with room.
fn format_tolerance(format: WeightFormat) -> Option<f32> {
    match format.matrices? {
        QType::F16 => Some(2e-3),
        QType::Q8_0 => Some(2e-2),
        _ => None,
    }
}

/// Reads the concatenated little-endian arrays of one golden file in order.
struct Reader {
    bytes: Vec<u8>,
    pos: usize,
    name: String,
}

impl Reader {
    fn open(name: &str) -> Option<Self> {
        let path = reference_dir()?.join(name);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Some(Self {
            bytes,
            pos: 0,
            name: name.to_string(),
        })
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let end = self.pos + n;
        assert!(
            end <= self.bytes.len(),
            "{} is shorter than its README layout",
            self.name
        );
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        out
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn i32s(&mut self, n: usize) -> Vec<i64> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            .collect()
    }

    fn f16s(&mut self, n: usize) -> Vec<f32> {
        self.take(2 * n)
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()
    }

    fn finish(&self) {
        assert_eq!(
            self.pos,
            self.bytes.len(),
            "{}: trailing bytes after the README layout",
            self.name
        );
    }
}

/// The weights (name, shape) in file order, then the three steps.
struct Golden {
    weights: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    prefix: Option<(Vec<usize>, Vec<f32>)>,
    steps: Vec<(Vec<i64>, Vec<f32>)>,
}

fn read_golden(
    file: &str,
    layout: &[(&str, &[usize])],
    prefix: Option<[usize; 4]>,
) -> Option<Golden> {
    let mut r = Reader::open(file)?;
    let prefix = prefix.map(|shape| (shape.to_vec(), r.f16s(shape.iter().product())));
    let mut weights = BTreeMap::new();
    for (name, shape) in layout {
        let data = r.f32s(shape.iter().product());
        weights.insert(name.to_string(), (shape.to_vec(), data));
    }
    let mut steps = Vec::new();
    for t in [3, 1, 1] {
        let x = r.i32s(t);
        let y = r.f32s(t * 32);
        steps.push((x, y));
    }
    r.finish();
    Some(Golden {
        weights,
        prefix,
        steps,
    })
}

const V1_LAYOUT: &[(&str, &[usize])] = &[
    ("word_embeddings.weight", &[5, 32]),
    ("layers.0.input_layernorm.weight", &[32]),
    ("layers.0.input_layernorm.bias", &[32]),
    ("layers.0.attention.query_key_value.weight", &[96, 32]),
    ("layers.0.attention.query_key_value.bias", &[96]),
    ("layers.0.attention.dense.weight", &[32, 32]),
    ("layers.0.attention.dense.bias", &[32]),
    ("layers.0.post_attention_layernorm.weight", &[32]),
    ("layers.0.post_attention_layernorm.bias", &[32]),
    ("layers.0.mlp.dense_h_to_4h.weight", &[128, 32]),
    ("layers.0.mlp.dense_h_to_4h.bias", &[128]),
    ("layers.0.mlp.dense_4h_to_h.weight", &[32, 128]),
    ("layers.0.mlp.dense_4h_to_h.bias", &[32]),
    ("final_layernorm.weight", &[32]),
    ("final_layernorm.bias", &[32]),
];

const V2_LAYOUT: &[(&str, &[usize])] = &[
    ("embedding.word_embeddings.weight", &[5, 32]),
    ("encoder.layers.0.input_layernorm.weight", &[32]),
    (
        "encoder.layers.0.self_attention.query_key_value.weight",
        &[48, 32],
    ),
    (
        "encoder.layers.0.self_attention.query_key_value.bias",
        &[48],
    ),
    ("encoder.layers.0.self_attention.dense.weight", &[32, 32]),
    ("encoder.layers.0.post_attention_layernorm.weight", &[32]),
    ("encoder.layers.0.mlp.dense_h_to_4h.weight", &[96, 32]),
    ("encoder.layers.0.mlp.dense_4h_to_h.weight", &[32, 48]),
    ("encoder.final_layernorm.weight", &[32]),
];

fn ids<B: Backend>(x: &[i64], device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(x.to_vec(), [1, x.len()]), device)
}

fn prefix_tensor<B: Backend>(g: &Golden, device: &B::Device) -> Option<Tensor<B, 4>> {
    g.prefix.as_ref().map(|(shape, data)| {
        Tensor::from_data(
            TensorData::new(data.clone(), [shape[0], shape[1], shape[2], shape[3]]),
            device,
        )
    })
}

fn assert_close(file: &str, step: usize, got: Tensor<impl Backend, 3>, want: &[f32], tol: f32) {
    let got: Vec<f32> = got.into_data().convert::<f32>().into_vec().unwrap();
    assert_eq!(got.len(), want.len(), "{file} step {step}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("{file} step {step}: max |diff| = {worst:.3e}");
    assert!(
        worst <= tol,
        "{file} step {step}: max |diff| {worst} > {tol}"
    );
}

struct V1Golden {
    kind: BackendKind,
    file: &'static str,
    ptuning: bool,
    format: WeightFormat,
}

impl V1Golden {
    fn run<B: Backend>(self, device: B::Device) {
        let prefix_shape = self.ptuning.then_some([2, 8, 5, 4]);
        let Some(g) = read_golden(self.file, V1_LAYOUT, prefix_shape) else {
            return;
        };
        let config: ChatGlmV1Config = serde_json::from_value(serde_json::json!({
            "hidden_size": 32, "num_attention_heads": 8, "num_layers": 1, "vocab_size": 5,
            "inner_hidden_size": 128, "layernorm_epsilon": 1e-5, "max_sequence_length": 64,
            "position_encoding_2d": true
        }))
        .unwrap();
        let mut weights = Weights::from_f32(self.file, g.weights.clone());
        weights.set_format(self.format);
        let tol = format_tolerance(self.format).unwrap_or(tolerance(self.kind, self.ptuning));
        let model = v1::from_weights::<B>(
            &config,
            &mut weights,
            prefix_tensor::<B>(&g, &device),
            &device,
        )
        .unwrap();
        weights.finish(|_| false).unwrap();
        let mut cache = model.cache(1, 8);
        // Positions and masks exactly as the reference passed them (README).
        let steps: [(&[usize], &[usize], usize); 3] = [
            (&[0, 1, 1], &[0, 0, 1], 2),
            (&[1], &[2], 0),
            (&[1], &[3], 0),
        ];
        for (i, ((pos, block, context), (x, y))) in steps.iter().zip(&g.steps).enumerate() {
            let h = model
                .hidden(ids::<B>(x, &device), pos, block, *context, &mut cache)
                .unwrap();
            assert_close(self.file, i + 1, h, y, tol);
        }
    }
}

struct V2Golden {
    kind: BackendKind,
    file: &'static str,
    eps: f64,
    rope_ratio: f64,
    ptuning: bool,
    format: WeightFormat,
}

impl V2Golden {
    fn run<B: Backend>(self, device: B::Device) {
        let prefix_shape = self.ptuning.then_some([2, 2, 5, 4]);
        let Some(g) = read_golden(self.file, V2_LAYOUT, prefix_shape) else {
            return;
        };
        let config: ChatGlmV2Config = serde_json::from_value(serde_json::json!({
            "hidden_size": 32, "num_attention_heads": 8, "num_layers": 1, "kv_channels": 4,
            "multi_query_attention": true, "multi_query_group_num": 2, "padded_vocab_size": 5,
            "ffn_hidden_size": 48, "layernorm_epsilon": self.eps, "rmsnorm": true,
            "add_bias_linear": false, "add_qkv_bias": true, "seq_length": 64,
            "rope_ratio": self.rope_ratio
        }))
        .unwrap();
        let mut weights = Weights::from_f32(self.file, g.weights.clone());
        weights.set_format(self.format);
        let tol = format_tolerance(self.format).unwrap_or(tolerance(self.kind, self.ptuning));
        let model = v2::from_weights::<B>(
            &config,
            &mut weights,
            prefix_tensor::<B>(&g, &device),
            &device,
        )
        .unwrap();
        weights.finish(|_| false).unwrap();
        let mut cache = model.cache(1, 8);
        for (i, (x, y)) in g.steps.iter().enumerate() {
            let h = model.hidden(ids::<B>(x, &device), &mut cache).unwrap();
            assert_close(self.file, i + 1, h, y, tol);
        }
    }
}

fn each_backend(task: impl Fn(BackendKind)) {
    for kind in zoo_backends::test_backends().unwrap() {
        task(kind);
    }
}

#[test]
fn chatglm6b_golden() {
    each_backend(|kind| {
        zoo_backends::with_backend!(kind, |B, device| {
            (V1Golden {
                kind,
                file: "glm_model.data",
                ptuning: false,
                format: WeightFormat::AS_STORED,
            })
            .run::<B>(device)
        })
        .unwrap()
    });
}

#[test]
fn chatglm6b_ptuning_v2_golden() {
    each_backend(|kind| {
        zoo_backends::with_backend!(kind, |B, device| {
            (V1Golden {
                kind,
                file: "glm_ptuning_v2_model.data",
                ptuning: true,
                format: WeightFormat::AS_STORED,
            })
            .run::<B>(device)
        })
        .unwrap()
    });
}

#[test]
fn chatglm2_golden() {
    each_backend(|kind| {
        let task = V2Golden {
            kind,
            file: "glm2_model.data",
            eps: 1e-5,
            rope_ratio: 1.0,
            ptuning: false,
            format: WeightFormat::AS_STORED,
        };
        zoo_backends::with_backend!(kind, |B, device| { (task).run::<B>(device) }).unwrap()
    });
}

#[test]
fn chatglm3_golden() {
    each_backend(|kind| {
        let task = V2Golden {
            kind,
            file: "glm3_model.data",
            eps: 1e-5,
            rope_ratio: 1.0,
            ptuning: false,
            format: WeightFormat::AS_STORED,
        };
        zoo_backends::with_backend!(kind, |B, device| { (task).run::<B>(device) }).unwrap()
    });
}

#[test]
fn chatglm3_ptuning_v2_golden() {
    each_backend(|kind| {
        let task = V2Golden {
            kind,
            file: "glm3_ptuning_v2_model.data",
            eps: 1e-5,
            rope_ratio: 1.0,
            ptuning: true,
            format: WeightFormat::AS_STORED,
        };
        zoo_backends::with_backend!(kind, |B, device| { (task).run::<B>(device) }).unwrap()
    });
}

#[test]
fn glm4_chatglm_layout_golden() {
    each_backend(|kind| {
        let task = V2Golden {
            kind,
            file: "glm4_model.data",
            eps: 1.5625e-7,
            rope_ratio: 500.0,
            ptuning: false,
            format: WeightFormat::AS_STORED,
        };
        zoo_backends::with_backend!(kind, |B, device| { (task).run::<B>(device) }).unwrap()
    });
}

/// The four plain golden files with the weights kept in f16 and in Q8_0, on every backend,
/// within the tolerances of [`format_tolerance`].
#[test]
#[allow(clippy::clone_on_copy)] // the device is `Copy` on the CPU backends only
fn golden_files_hold_at_f16_and_q8_0() {
    for format in [
        WeightFormat::dtype(QType::F16),
        WeightFormat::quantized(QType::Q8_0),
    ] {
        each_backend(|kind| {
            zoo_backends::with_backend!(kind, |B, device| {
                V1Golden {
                    kind,
                    file: "glm_model.data",
                    ptuning: false,
                    format,
                }
                .run::<B>(device.clone());
                for (file, eps, rope_ratio) in [
                    ("glm2_model.data", 1e-5, 1.0),
                    ("glm3_model.data", 1e-5, 1.0),
                    ("glm4_model.data", 1.5625e-7, 500.0),
                ] {
                    V2Golden {
                        kind,
                        file,
                        eps,
                        rope_ratio,
                        ptuning: false,
                        format,
                    }
                    .run::<B>(device.clone());
                }
            })
            .unwrap()
        });
    }
}
