//! The error type of zoo-glm.

use std::path::{Path, PathBuf};

use zoo_nn::attention::CacheFull;
use zoo_nn::WeightError;

/// Everything that can go wrong loading or running a GLM model.
#[derive(Debug, thiserror::Error)]
pub enum GlmError {
    /// `config.json` is missing, unreadable, or describes something unsupported.
    #[error("{path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The weights do not fit the config, or the file is damaged.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The sequence does not fit the cache or the context.
    #[error(transparent)]
    CacheFull(#[from] CacheFull),
    /// A tokenizer file is unreadable or malformed.
    #[error("{path}: {reason}")]
    TokenizerFile {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Text that could not be encoded, or ids that could not be decoded.
    #[error(transparent)]
    Tokenizer(#[from] zoo_nn::TokenizerError),
    /// Inputs the model cannot run (bad positions, missing `[gMASK]`/`<sop>`, ids out of range).
    #[error("{0}")]
    Input(String),
}

/// Reads a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, GlmError> {
    let text = std::fs::read_to_string(path).map_err(|e| GlmError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| GlmError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses a config struct from a JSON file.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, GlmError> {
    let json = read_json(path)?;
    serde_json::from_value(json).map_err(|e| GlmError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Checks token ids against the vocabulary.
pub(crate) fn check_ids(ids: &[i64], vocab: usize) -> Result<(), GlmError> {
    match ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
        Some(id) => Err(GlmError::Input(format!(
            "token id {id} is outside the vocabulary of {vocab} tokens"
        ))),
        None => Ok(()),
    }
}
