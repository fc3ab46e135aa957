//! LLaMA (Touvron et al., 2023) and its instruction-tuned descendants (Alpaca, Vicuna,
//! TinyLlama, SmolLM2): RMSNorm, half-split RoPE with linear / dynamic NTK / llama3 scaling,
//! grouped-query attention over a preallocated KV cache, SwiGLU MLPs.
//!
//! - [`config`]: `LlamaConfig`, a mirror of HF `config.json`.
//! - [`model`]: `Llama<B>`, the module, readable top to bottom.
//! - [`load`]: HF folders and GGUF files to the module, strict about every tensor.
//! - [`open`]: a model with tokenizer, chat template and stop ids ([`LlamaGenerator`]).
//!
//! The chat templates (the checkpoint's Jinja, Alpaca, Vicuna, LLaMA-2, ChatML, Zephyr) are
//! shared by every family and live in `zoo_nn::chat`.

pub mod config;
pub mod export;
pub mod load;
pub mod model;

pub use config::{LlamaConfig, RopeScaling};
pub use load::{
    config_from_gguf, from_weights, load, load_gguf, load_with, open, open_gguf_file, open_with,
    LlamaError, LlamaGenerator,
};
pub use model::{Llama, LlamaCache};
pub use zoo_nn::chat::{render, ChatError, Message, Template};
