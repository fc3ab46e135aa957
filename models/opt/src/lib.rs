//! OPT (Zhang et al., 2022, Meta's Open Pre-trained Transformers): a decoder-only transformer
//! with learned positions (offset by 2), pre-LN (opt-125m, 1.3b and up) or post-LN (opt-350m)
//! blocks, ReLU MLPs, an optional projection between the embedding width and the hidden size,
//! and an LM head tied to the token embedding.
//!
//! - [`config`]: `OptConfig`, a mirror of HF `config.json`.
//! - [`model`]: `Opt<B>`, the module, readable top to bottom.
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open`] adds the
//!   tokenizer (GPT-2's byte-level BPE, prompts starting with `</s>`) and stop ids.

pub mod config;
pub mod load;
pub mod model;

pub use config::{OptConfig, TokenIds};
pub use load::{from_weights, load, load_with, open, open_with, OptError, OptGenerator};
pub use model::{Opt, OptCache};
