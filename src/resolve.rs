//! What `MODEL` means on the command line: a Hugging Face folder (its `config.json` names the
//! architecture) or a catalog id.

use std::path::{Path, PathBuf};

/// The model families the zoo can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// GPT-2 and its sizes (distilgpt2 included).
    Gpt2,
    /// BERT encoders (BertModel, BertForMaskedLM, sentence-transformers folders).
    Bert,
    /// LLaMA and its descendants (Alpaca, Vicuna, TinyLlama, SmolLM2), HF folders or GGUF files.
    Llama,
    /// GLM: ChatGLM-6B, ChatGLM2/3 and GLM-4 in the chatglm layout, GLM-4 in HF layout.
    Glm,
    /// Meta's OPT.
    Opt,
    /// BigScience's BLOOM / BLOOMZ.
    Bloom,
    /// Salesforce's CodeGen and Fudan's MOSS (`model_type` `codegen` or `moss`).
    CodeGen,
    /// EleutherAI's GPT-Neo (LaMini-Neo).
    GptNeo,
    /// T5 / Flan-T5 (LaMini-Flan-T5): an encoder-decoder.
    T5,
    /// BLIP-2 with a LLaMA language model (MiniGPT-4): images and text in, text out.
    Blip2,
}

impl Family {
    /// Whether the family is a causal (decoder-only) language model: all but BERT and T5.
    pub fn is_causal(self) -> bool {
        !matches!(self, Family::Bert | Family::T5)
    }

    /// The family's name as `zoo info` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Bert => "bert",
            Family::Llama => "llama",
            Family::Glm => "glm",
            Family::Opt => "opt",
            Family::Bloom => "bloom",
            Family::CodeGen => "codegen",
            Family::GptNeo => "gpt_neo",
            Family::T5 => "t5",
            Family::Blip2 => "blip-2",
        }
    }
}

/// A model the zoo found: its family and where its files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// The architecture family.
    pub family: Family,
    /// The folder with `config.json` and the weights.
    pub path: PathBuf,
}

/// Why `MODEL` could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not a path that exists, and not a catalog id.
    #[error("`{0}` is neither a model folder nor a known model id (see `zoo list`)")]
    NotFound(String),
    /// The folder has no `config.json`.
    #[error("{0} has no config.json: not a Hugging Face model folder")]
    NoConfig(PathBuf),
    /// `config.json` is unreadable or not JSON.
    #[error("cannot read {path}: {reason}")]
    BadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The architecture is not one the zoo implements.
    #[error("{path}: model_type `{model_type}` is not supported (supported: gpt2, bert, llama, glm, chatglm, opt, bloom, codegen, moss, gpt_neo, t5, blip-2)")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// Its `model_type`.
        model_type: String,
    },
}

/// Resolves a model folder by reading `model_type` from its `config.json`; a `.gguf` file is
/// a LLaMA-family model; a folder in MiniGPT-4's release layout (see `zoo_blip2::release`) is
/// BLIP-2.
pub fn resolve_path(path: &Path) -> Result<ModelRef, ResolveError> {
    if !path.exists() {
        return Err(ResolveError::NotFound(path.display().to_string()));
    }
    if path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        // The family is the file's `general.architecture`.
        let file = zoo_gguf::GgufFile::open(path).map_err(|e| ResolveError::BadConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let arch = file.architecture().unwrap_or("").to_string();
        let family = match arch.as_str() {
            "llama" => Family::Llama,
            "gpt2" => Family::Gpt2,
            _ => {
                return Err(ResolveError::Unsupported {
                    path: path.to_path_buf(),
                    model_type: arch,
                })
            }
        };
        return Ok(ModelRef {
            family,
            path: path.to_path_buf(),
        });
    }
    if zoo_blip2::release::is_release(path) {
        // MiniGPT-4's own release: LAVIS checkpoints and a vicuna/ folder, no config.json.
        return Ok(ModelRef {
            family: Family::Blip2,
            path: path.to_path_buf(),
        });
    }
    let config = path.join("config.json");
    if !config.is_file() {
        return Err(ResolveError::NoConfig(path.to_path_buf()));
    }
    let bad = |reason: String| ResolveError::BadConfig {
        path: config.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&config).map_err(|e| bad(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let model_type = json
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let family = match model_type.as_str() {
        "gpt2" => Family::Gpt2,
        "bert" => Family::Bert,
        "llama" => Family::Llama,
        "glm" | "chatglm" => Family::Glm,
        "opt" => Family::Opt,
        "bloom" => Family::Bloom,
        "codegen" | "moss" => Family::CodeGen,
        "gpt_neo" => Family::GptNeo,
        "t5" => Family::T5,
        "blip-2" | "blip_2" => Family::Blip2,
        _ => {
            return Err(ResolveError::Unsupported {
                path: config,
                model_type,
            })
        }
    };
    Ok(ModelRef {
        family,
        path: path.to_path_buf(),
    })
}
