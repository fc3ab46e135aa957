//! llama.cpp's GGUF files: metadata, tensors dequantised to f32, and the tokenizer inside.
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
mod reader;
mod tokenizer;
mod types;
mod value;

pub use dequant::dequantize;
pub use error::{GgufError, Result};
pub use reader::{GgufFile, TensorInfo, DEFAULT_ALIGNMENT, MAX_DIMS};
pub use tokenizer::{
    GgufTokenizer, SUPPORTED_PRE_TOKENIZERS, TOKEN_BYTE, TOKEN_CONTROL, TOKEN_NORMAL,
    TOKEN_UNKNOWN, TOKEN_USER_DEFINED,
};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
