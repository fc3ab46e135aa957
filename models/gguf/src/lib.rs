//! llama.cpp's GGUF files: metadata, tensors (as stored or dequantised to f32), the tokenizer
//! inside, and writing new files ([`GgufWriter`]).
//!
//! ```no_run
//! let file = zoo_gguf::GgufFile::open("model.gguf")?;
//! let blocks = file.get_u32(&file.arch_key("block_count")?)?;
//! let (shape, weights) = file.tensor_f32("token_embd.weight")?;
//! let tok = file.tokenizer()?;
//! let ids = tok.encode("Hello", true)?;
//! # Ok::<(), zoo_gguf::GgufError>(())
//! ```

mod dequant;
mod error;
mod export;
mod names;
mod reader;
mod tokenizer;
mod types;
mod value;
mod writer;

pub use dequant::dequantize;
pub use error::{GgufError, Result};
pub use export::{add_tokenizer, TokenizerExport};
pub use names::TensorNames;
pub use reader::{FileBytes, GgufFile, TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS};
pub use tokenizer::{
    GgufTokenizer, SUPPORTED_PRE_TOKENIZERS, TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL,
    TOKEN_UNKNOWN, TOKEN_USER_DEFINED,
};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorOut};
