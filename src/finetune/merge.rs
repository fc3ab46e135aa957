//! `zoo merge-adapter`: a LoRA adapter folded into its base model's weights, written as a
//! Hugging Face folder.
//!
//! Every adapted layer's weight becomes `W + (alpha / r) · B A` (PEFT's `merge_and_unload`);
//! a layer stored transposed (GPT-2's `Conv1D`, `fan_in_fan_out: true`, `[in, out]`) gets
//! `(B A)ᵀ`. The work is on the checkpoint's tensors, by name, not on a loaded module: every
//! other tensor is copied as it is (in f32), and the folder's other files (config, tokenizer,
//! generation config) are copied beside `model.safetensors`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::peft::{read_config, PEFT_PREFIX};
use super::FinetuneError;
use crate::nn::Weights;

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// The checkpoint names of the weights the adapter changed.
    pub merged: Vec<String>,
    /// Tensors written in all.
    pub tensors: usize,
    /// The folder written.
    pub out: PathBuf,
}

fn adapter_err(dir: &Path, what: impl std::fmt::Display) -> FinetuneError {
    FinetuneError::Adapter(format!("{}: {what}", dir.display()))
}

/// The checkpoint name of the weight of module `path`: `{path}.weight`, or the same without
/// leading components the checkpoint does not use (GPT-2 folders often store `h.0.…` where
/// the module path is `transformer.h.0.…`).
fn weight_name(weights: &Weights, path: &str) -> Option<String> {
    let mut p = path;
    loop {
        let name = format!("{p}.weight");
        if weights.contains(&name) {
            return Some(name);
        }
        p = p.split_once('.')?.1;
    }
}

/// Folds the PEFT LoRA adapter `adapter` into the Hugging Face folder `model` and writes the
/// result as the folder `out` (through a temporary folder renamed into place; an existing
/// `out` is replaced only with `force`). Every adapter tensor must find its layer.
pub fn merge_adapter(
    model: &Path,
    adapter: &Path,
    out: &Path,
    force: bool,
) -> Result<MergeReport, FinetuneError> {
    if out.exists() && !force {
        return Err(FinetuneError::Config(format!(
            "{} exists: give --force to replace it",
            out.display()
        )));
    }
    if !model.is_dir() {
        return Err(FinetuneError::Config(format!(
            "{}: merging needs a Hugging Face model folder",
            model.display()
        )));
    }
    let config = read_config(adapter)?;
    let raw: Value = std::fs::read_to_string(adapter.join("adapter_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let fan_in_fan_out = raw
        .get("fan_in_fan_out")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let file = adapter.join("adapter_model.safetensors");
    if !file.is_file() {
        return Err(adapter_err(adapter, "no adapter_model.safetensors"));
    }
    let mut lora = Weights::open(&file)?;
    let mut base = Weights::open(model)?;
    // Module paths with an adapter, from the `lora_A` names.
    let paths: Vec<String> = lora
        .names()
        .filter_map(|n| {
            n.strip_prefix(PEFT_PREFIX)?
                .strip_suffix(".lora_A.weight")
                .map(str::to_string)
        })
        .collect();
    if paths.is_empty() {
        return Err(adapter_err(adapter, "no lora_A tensors under PEFT's names"));
    }
    let scale = config.scale();
    let r = config.rank;
    let mut deltas: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut merged = Vec::new();
    for path in &paths {
        let name = weight_name(&base, path).ok_or_else(|| {
            adapter_err(
                adapter,
                format!("the model has no weight for the adapted layer `{path}`"),
            )
        })?;
        let shape = base.shape(&name).unwrap_or_default();
        if shape.len() != 2 {
            return Err(adapter_err(
                adapter,
                format!("`{name}` has shape {shape:?}, not a matrix"),
            ));
        }
        let (d_out, d_in) = if fan_in_fan_out {
            (shape[1], shape[0])
        } else {
            (shape[0], shape[1])
        };
        let a = lora.take_f32(&format!("{PEFT_PREFIX}{path}.lora_A.weight"), &[r, d_in])?;
        let b = lora.take_f32(&format!("{PEFT_PREFIX}{path}.lora_B.weight"), &[d_out, r])?;
        let mut w = base.take_f32(&name, &shape)?;
        for o in 0..d_out {
            for i in 0..d_in {
                let d: f64 = (0..r)
                    .map(|k| b[o * r + k] as f64 * a[k * d_in + i] as f64)
                    .sum();
                let at = if fan_in_fan_out {
                    i * d_out + o
                } else {
                    o * d_in + i
                };
                w[at] += (scale * d) as f32;
            }
        }
        merged.push(name.clone());
        deltas.insert(name, (shape, w));
    }
    lora.finish(|_| false)?;
    // Every tensor of the base, merged ones replaced.
    let names: Vec<String> = base.names().map(str::to_string).collect();
    let mut all: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    for name in names {
        if let Some(t) = deltas.remove(&name) {
            all.insert(name, t);
            continue;
        }
        let shape = base.shape(&name).unwrap_or_default();
        let values = base.take_f32(&name, &shape)?;
        all.insert(name, (shape, values));
    }
    let tmp = super::peft::tmp_name(out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| FinetuneError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| FinetuneError::io(&tmp, e))?;
    let written = write_folder(model, &tmp, &all);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| FinetuneError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| FinetuneError::io(out, e))?;
    Ok(MergeReport {
        merged,
        tensors: all.len(),
        out: out.to_path_buf(),
    })
}

/// Writes `tensors` as `model.safetensors` in `dir` (through a temporary file) and copies
/// every other file of `model` except its weight files.
pub(crate) fn write_folder(
    model: &Path,
    dir: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<(), FinetuneError> {
    let raw: Vec<(&String, &Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = raw
        .iter()
        .map(|(n, s, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.to_vec(), bytes)
                .map(|v| (n.to_string(), v))
                .map_err(|e| FinetuneError::Checkpoint(format!("{n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| FinetuneError::Checkpoint(e.to_string()))?;
    super::peft::write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let entries = std::fs::read_dir(model).map_err(|e| FinetuneError::io(model, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FinetuneError::io(model, e))?;
        let from = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let weights = name.ends_with(".safetensors")
            || name.ends_with(".bin")
            || name.ends_with(".safetensors.index.json")
            || name.ends_with(".bin.index.json")
            || name.ends_with(".gguf");
        if weights || !from.is_file() {
            continue;
        }
        let to = dir.join(&name);
        std::fs::copy(&from, &to).map_err(|e| FinetuneError::io(&to, e))?;
    }
    Ok(())
}
