//! Checkpoints written as GGUF files llama.cpp runs (`zoo quantize`).

use std::path::Path;

use crate::nn::QType;
use crate::resolve::{Family, ModelRef};
use crate::Error;

/// Writes the Hugging Face folder `model` (LLaMA or GPT-2) as a GGUF file at `out`, its
/// matrices in `to` (f32, f16, q8_0, q4_0, q4_1), through a temporary file renamed into place.
/// Returns the number of tensors written.
pub fn to_gguf(model: &ModelRef, to: QType, out: &Path) -> Result<usize, Error> {
    if model.path.is_file() {
        return Err(Error::Input(format!(
            "{} is already a GGUF file: give a Hugging Face folder",
            model.path.display()
        )));
    }
    let writer = match model.family {
        Family::Llama => crate::llama::export::to_gguf(&model.path, to)?,
        Family::Gpt2 => crate::gpt2::export::to_gguf(&model.path, to)?,
        other => {
            return Err(Error::Input(format!(
                "GGUF export is written for LLaMA and GPT-2 folders, not {}",
                other.name()
            )))
        }
    };
    writer
        .write(out)
        .map_err(|e| Error::Input(format!("writing {}: {e}", out.display())))?;
    Ok(writer.tensors().len())
}
