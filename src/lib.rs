//! burn-zoo: the architectures that shaped open language models, as generic Burn modules.
//!
//! This crate is the facade over the workspace: each model family is its own crate
//! (`zoo-gpt2`, …), shared blocks live in `zoo-nn`, backend selection in `zoo-backends`.
//! [`resolve`] turns what a user types as `MODEL` into a family and a folder.

pub use zoo_backends as backends;
pub use zoo_bert as bert;
pub use zoo_catalog as catalog;
pub use zoo_gguf as gguf;
pub use zoo_glm as glm;
pub use zoo_gpt2 as gpt2;
pub use zoo_llama as llama;
pub use zoo_nn as nn;
pub use zoo_word2vec as word2vec;

pub mod resolve;
