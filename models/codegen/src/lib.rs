//! CodeGen (Nijkamp et al., 2022, Salesforce) and MOSS (Fudan University, 2023, the same
//! architecture): a GPT-J-style decoder with parallel attention and MLP from one LayerNorm,
//! partial interleaved rotary positions, a fused `qkv_proj` in four groups, tanh-GELU MLPs and
//! an untied LM head with a bias.
//!
//! - [`config`]: `CodeGenConfig`, a mirror of HF `config.json` (`model_type` `codegen` or
//!   `moss`).
//! - [`model`]: `CodeGen<B>`, the module, readable top to bottom.
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open`] adds the
//!   tokenizer, eos ids and, for MOSS, its chat format.
//! - [`tokenizer`]: GPT-2 BPE with the checkpoint's added tokens.
//! - [`chat`]: MOSS's chat format.

pub mod chat;
pub mod config;
pub mod load;
pub mod model;
pub mod tokenizer;

pub use chat::{MossFormat, MOSS_META_INSTRUCTION};
pub use config::{CodeGenConfig, MODEL_TYPES};
pub use load::{
    from_weights, load, load_with, open, open_with, read_config, CodeGenError, CodeGenGenerator,
};
pub use model::{CodeGen, CodeGenCache};
pub use tokenizer::load_tokenizer;
