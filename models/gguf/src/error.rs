//! The crate's error type.

use std::path::PathBuf;

use crate::types::GgmlType;

/// Everything that can go wrong reading a GGUF file, its tensors or its tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file does not start with the bytes `GGUF`.
    #[error("not a GGUF file: it starts with bytes {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    /// A GGUF file written in big-endian byte order.
    #[error("big-endian GGUF files are not supported (version field reads {0:#010x})")]
    BigEndian(u32),
    /// The file ends before a field it declares.
    #[error("GGUF file truncated: {what} needs {needed} bytes at offset {offset}, but the file is {len} bytes long")]
    Truncated {
        /// The field being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// A count that cannot fit in the rest of the file.
    #[error("corrupt GGUF file: {what} is {count}, which needs at least {needed} bytes but only {available} remain")]
    AbsurdCount {
        /// The counted thing.
        what: String,
        /// The count read.
        count: u64,
        /// The smallest number of bytes that count needs (saturated).
        needed: u64,
        /// The bytes left in the file.
        available: u64,
    },
    /// A metadata value type id outside the GGUF specification.
    #[error("corrupt GGUF file: metadata key {key:?} has unknown value type {type_id}")]
    UnknownValueType {
        /// The metadata key.
        key: String,
        /// The type id read.
        type_id: u32,
    },
    /// A tensor data type id that ggml does not define.
    #[error("corrupt GGUF file: tensor {tensor:?} has unknown data type {type_id}")]
    UnknownDtype {
        /// The tensor name.
        tensor: String,
        /// The type id read.
        type_id: u32,
    },
    /// A tensor whose data lies (partly) past the end of the file.
    #[error("corrupt GGUF file: tensor {tensor:?} occupies bytes {start}..{end} of the file, past its end at {len}")]
    TensorOutOfBounds {
        /// The tensor name.
        tensor: String,
        /// First byte (absolute file offset).
        start: u64,
        /// One past the last byte (absolute file offset).
        end: u64,
        /// The file length.
        len: u64,
    },
    /// Any other structural problem, described in words.
    #[error("corrupt GGUF file: {0}")]
    Invalid(String),
    /// A metadata key that the file does not have.
    #[error("GGUF metadata key {0:?} is missing")]
    MissingKey(String),
    /// A metadata key whose value has another type than asked for.
    #[error("GGUF metadata key {key:?} holds {found}, expected {expected}")]
    WrongType {
        /// The metadata key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },
    /// A tensor name that the file does not have.
    #[error("tensor {0:?} is not in the GGUF file")]
    MissingTensor(String),
    /// A tensor type that has no dequantisation here.
    #[error("tensor {tensor:?}: dequantising {dtype} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K)")]
    UnsupportedDtype {
        /// The tensor name.
        tensor: String,
        /// Its type.
        dtype: GgmlType,
    },
    /// The tokenizer described by the metadata cannot be built.
    #[error("GGUF tokenizer: {0}")]
    Tokenizer(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, GgufError>;
