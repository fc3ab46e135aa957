//! LLaMA (Touvron et al., 2023) and its instruction-tuned descendants (Alpaca, Vicuna,
//! TinyLlama, SmolLM2): RMSNorm, half-split RoPE with linear / dynamic NTK / llama3 scaling,
//! grouped-query attention over a preallocated KV cache, SwiGLU MLPs.
//!
//! - [`config`]: `LlamaConfig`, a mirror of HF `config.json`.
//! - [`model`]: `Llama<B>`, the module, readable top to bottom.
//! - [`load`]: HF folders and GGUF files to the module, strict about every tensor.
//! - [`chat`]: chat templates (the checkpoint's Jinja, Alpaca, Vicuna, LLaMA-2, ChatML, Zephyr).

pub mod chat;
pub mod config;
pub mod load;
pub mod model;

pub use chat::{render, ChatError, Message, Template};
pub use config::{LlamaConfig, RopeScaling};
pub use load::{config_from_gguf, from_weights, load, load_gguf, open, LlamaError, LoadedLlama};
pub use model::{Llama, LlamaCache};
