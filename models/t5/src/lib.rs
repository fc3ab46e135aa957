//! T5 (Raffel et al., 2020) and its instruction-tuned descendants (Flan-T5, LaMini-Flan-T5):
//! an encoder-decoder transformer with relative-position buckets, RMS-style norms, unscaled
//! attention, ReLU or gated-GELU feed-forwards and cross-attention over the encoder output.
//!
//! - [`config`]: `T5Config`, a mirror of HF `config.json`.
//! - [`model`]: `T5<B>`, the module, readable top to bottom: [`T5::encode`], [`T5::decode`]
//!   over a [`T5Cache`], [`T5::forward`], [`T5::generate_greedy`].
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open_with`]
//!   adds the tokenizer ([`T5Generator::generate_text`]).
//!
//! T5 is not a `CausalLm`: the decoder needs the encoder output, so it has its own API.

pub mod config;
pub mod load;
pub mod model;

pub use config::{T5Config, TokenIds};
pub use load::{from_weights, load, load_with, open, open_with, read_config, T5Error, T5Generator};
pub use model::{relative_position_bucket, T5Cache, T5};
