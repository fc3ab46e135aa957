//! GPT-Neo (EleutherAI, Black et al., 2021) and its fine-tunes (LaMini-Neo): GPT-2's pre-LN
//! decoder with learned positions and a tied head, but layers that alternate between global
//! causal attention and local attention over a sliding window, separate bias-free q/k/v
//! projections, and no `1/sqrt(head_dim)` scaling of the attention scores.
//!
//! - [`config`]: `GptNeoConfig`, a mirror of HF `config.json`.
//! - [`model`]: `GptNeo<B>`, the module, readable top to bottom.
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open`] adds the
//!   tokenizer and stop ids.

pub mod config;
pub mod load;
pub mod model;

pub use config::{AttentionKind, GptNeoConfig, TokenIds};
pub use load::{
    from_weights, load, load_with, open, open_with, read_config, GptNeoError, GptNeoGenerator,
};
pub use model::{GptNeo, GptNeoCache};
