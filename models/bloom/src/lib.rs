//! BLOOM (BigScience, 2022): a decoder-only transformer with ALiBi position biases instead of
//! position embeddings, a LayerNorm right after the token embedding, fused per-head q/k/v,
//! tanh-GELU MLPs and an LM head tied to the token embedding.
//!
//! - [`config`]: `BloomConfig`, a mirror of HF `config.json` (with its old field names).
//! - [`model`]: `Bloom<B>`, the module, readable top to bottom; [`model::alibi_slopes`].
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open_with`]
//!   adds the tokenizer and stop id.

pub mod config;
pub mod load;
pub mod model;

pub use config::BloomConfig;
pub use load::{
    from_weights, load, load_with, open, open_with, read_config, BloomError, BloomGenerator,
};
pub use model::{alibi_slopes, Bloom, BloomCache};
