//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in zoo-word2vec.
#[derive(Debug, thiserror::Error)]
pub enum Word2VecError {
    /// An operating-system error while reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A vectors file (word2vec, GloVe, npy, parquet) that does not follow its format.
    #[error("{path}: {message}")]
    Format {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// Query or evaluation words that are not in the vocabulary.
    #[error("word(s) not in vocabulary: {}", .0.join(", "))]
    UnknownWords(Vec<String>),
    /// An argument outside its allowed range (empty query, zero dimension, bad training setting…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A vector holding NaN or infinity (see [`crate::allow_non_finite`]).
    #[error("the vector of `{word}` (entry {entry}) holds {value}: refusing vectors that make every cosine NaN (pass --allow-nan to load them anyway)")]
    NonFinite {
        /// The word.
        word: String,
        /// Its row, from 0.
        entry: usize,
        /// The first bad value.
        value: f32,
    },
    /// An output file that exists and may not be replaced.
    #[error("{0} exists: not overwriting it (pass --force to replace it)")]
    Exists(PathBuf),
    /// A Burn module whose tables do not match the expected shapes.
    #[error("shape mismatch: {0}")]
    Shape(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Word2VecError>;

pub(crate) fn io_err(path: &std::path::Path, source: std::io::Error) -> Word2VecError {
    Word2VecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn format_err(path: &std::path::Path, message: impl Into<String>) -> Word2VecError {
    Word2VecError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
