//! BERT (Devlin et al., 2018): a bidirectional encoder trained by predicting masked words
//! ("cloze"), with learned absolute positions, token-type embeddings and post-LN layers.
//!
//! - [`config`]: `BertConfig`, a mirror of HF `config.json`.
//! - [`model`]: `Bert<B>`, the module, readable top to bottom; `Batch` pads host-side inputs.
//! - [`load`]: checkpoint names to module fields, strict about every tensor.
//! - [`embed`]: `SentenceEncoder`: tokenization, pooled sentence embeddings, fill-mask.

pub mod config;
pub mod embed;
pub mod load;
pub mod model;

pub use config::BertConfig;
pub use embed::{read_tokenizer, Candidate, Embedded, Encoded, Pooling, SentenceEncoder};
pub use load::{load, load_with, read_config, BertError};
pub use model::{Batch, Bert, InputError};
