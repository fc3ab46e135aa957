//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn_zoo::backends::{self, BackendKind};

/// The fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reads a JSON file.
pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A JSON array of arrays of numbers as rows of f32.
pub fn rows(value: &serde_json::Value) -> Vec<Vec<f32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// A JSON array of numbers as u32.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Largest absolute difference between two equally shaped row sets.
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "row length");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// Runs `$task.run::<B>(device)` on every backend the suite covers (`ZOO_TEST_BACKENDS`, else
/// all compiled in that open a device); the closure's argument is the backend's kind.
#[macro_export]
macro_rules! on_every_backend {
    (|$kind:pat_param| $task:expr) => {{
        let kinds = zoo_backends::test_backends()
            .expect("a backend named in ZOO_TEST_BACKENDS is unusable");
        assert!(!kinds.is_empty(), "no backend to test on");
        for kind in kinds {
            eprintln!("[{kind}]");
            #[allow(unused_variables)]
            let $kind = kind;
            zoo_backends::with_backend!(kind, |B, device| { ($task).run::<B>(device) })
                .expect("the backend is compiled in");
        }
    }};
}

/// A compiled-in CPU backend (flex, else ndarray), for tests about loading rather than numerics.
pub fn cpu_backend() -> BackendKind {
    [BackendKind::Flex, BackendKind::NdArray]
        .into_iter()
        .find(|k| k.is_compiled())
        .expect("a CPU backend (flex or ndarray) is compiled in")
}

/// Runs the `zoo` binary built for this test run (`ZOO_BACKEND` cleared).
pub fn zoo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zoo"))
        .args(args)
        .env_remove("ZOO_BACKEND")
        .output()
        .expect("run zoo")
}

/// Ids as the `--ids` argument: `1,2,3`.
pub fn id_list(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The JSON a successful `zoo … --json` printed.
pub fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "zoo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON value")
}

/// The names of the backends under test.
pub fn backend_names() -> Vec<String> {
    backends::test_backends()
        .unwrap()
        .into_iter()
        .map(|k| k.name().to_string())
        .collect()
}

/// `[1, t, n]` → t rows of n floats.
pub fn tensor_rows<B: burn::tensor::backend::Backend>(
    t: burn::tensor::Tensor<B, 3>,
) -> Vec<Vec<f32>> {
    let [_, n, d] = t.dims();
    let v: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    (0..n).map(|i| v[i * d..(i + 1) * d].to_vec()).collect()
}

/// The logits of every position of `ids` in one pass of a causal LM.
pub fn full_logits<B, M>(model: &M, ids: &[u32], device: &B::Device) -> Vec<Vec<f32>>
where
    B: burn::tensor::backend::Backend,
    M: burn_zoo::nn::CausalLm<B>,
    M::Error: std::fmt::Debug,
{
    let mut cache = model.new_cache(1, ids.len());
    tensor_rows(
        model
            .forward_cached(
                burn_zoo::nn::ids_tensor::<B>(ids, device),
                &mut cache,
                burn_zoo::nn::Logits::All,
            )
            .unwrap(),
    )
}

/// Smallest cosine similarity between corresponding rows.
pub fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let nx = x.iter().map(|p| p * p).sum::<f32>().sqrt();
            let ny = y.iter().map(|q| q * q).sum::<f32>().sqrt();
            dot / (nx * ny).max(1e-12)
        })
        .fold(1.0, f32::min)
}

/// A copy of a fixture folder in a temporary folder, to damage.
pub fn copy_dir(from: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// Rewrites a folder's `model.safetensors` (f32) through `edit` (name → (shape, values)).
pub fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = std::collections::BTreeMap::new();
    for (name, view) in st.tensors() {
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    edit(&mut tensors);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, values))| {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, shape, data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

/// Sets one key of a folder's `config.json`.
pub fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut config = json(&path);
    config[key] = value;
    std::fs::write(path, config.to_string()).unwrap();
}
