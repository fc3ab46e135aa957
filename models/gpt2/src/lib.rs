//! GPT-2 (Radford et al., 2019): a decoder-only transformer with learned positions, pre-LN
//! blocks, tanh-GELU MLPs and an LM head tied to the token embedding.
//!
//! - [`config`]: `Gpt2Config`, a mirror of HF `config.json`.
//! - [`model`]: `Gpt2<B>`, the module, readable top to bottom.
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open`] adds the
//!   tokenizer and stop id.

pub mod config;
pub mod export;
pub mod load;
pub mod model;

pub use config::Gpt2Config;
pub use load::{load, load_with, open, open_with, Gpt2Error, Gpt2Generator};
pub use model::{Gpt2, Gpt2Cache};
