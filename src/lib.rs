//! burn-zoo: the architectures that shaped open language models, as generic Burn modules.
//!
//! This crate is the facade over the workspace: each model family is its own crate
//! (`zoo-gpt2`, …), shared blocks live in `zoo-nn`, backend selection in `zoo-backends`.
//! It owns what makes a model usable from Rust without the `zoo` binary:
//!
//! - [`open`]: any causal LM (folder or `.gguf`) as a [`LanguageModel`] — tokenizer, prompt
//!   encoding, chat format, stop ids, streaming generation with timings;
//! - [`resolve`]: what a user types as `MODEL` (a folder, a `.gguf` file) to a family;
//! - [`seq2seq`]: encoder-decoders (T5, Flan-T5, LaMini-Flan-T5) behind one backend-free
//!   type, with the same generation settings and verification interface;
//! - [`eval`]: raw forward passes of any family (the verification interface), perplexity and
//!   pseudo-perplexity;
//! - [`bench`]: speed and memory of any model, as `zoo bench` and `zoo compare --measure`
//!   report them;
//! - [`finetune`]: LoRA fine-tuning under Burn's autodiff, PEFT adapters read and written.
//! - [`serve`]: an OpenAI-compatible HTTP server with batched decoding (`zoo serve`).

pub use zoo_backends as backends;
pub use zoo_bert as bert;
pub use zoo_blip2 as blip2;
pub use zoo_bloom as bloom;
pub use zoo_catalog as catalog;
pub use zoo_codegen as codegen;
pub use zoo_gguf as gguf;
pub use zoo_glm as glm;
pub use zoo_gpt2 as gpt2;
pub use zoo_gptneo as gptneo;
pub use zoo_llama as llama;
pub use zoo_nn as nn;
pub use zoo_opt as opt;
pub use zoo_t5 as t5;
pub use zoo_word2vec as word2vec;

pub mod bench;
pub mod describe;
pub mod encoder;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod lm;
pub mod resolve;
pub mod seq2seq;
pub mod serve;

pub use lm::{
    open, open_with, CausalCache, CausalModel, DynLanguageModel, ForwardError, LanguageModel,
};

use std::path::PathBuf;

/// Everything that can go wrong opening or running a model through the facade.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `MODEL` is not a model the zoo can open.
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// A GPT-2 checkpoint failed to load.
    #[error(transparent)]
    Gpt2(#[from] gpt2::Gpt2Error),
    /// A LLaMA checkpoint failed to load.
    #[error(transparent)]
    Llama(#[from] llama::LlamaError),
    /// A GLM checkpoint failed to load or run.
    #[error(transparent)]
    Glm(#[from] glm::GlmError),
    /// A BERT checkpoint failed to load or run.
    #[error(transparent)]
    Bert(#[from] bert::BertError),
    /// An OPT checkpoint failed to load.
    #[error(transparent)]
    Opt(#[from] opt::OptError),
    /// A BLOOM checkpoint failed to load.
    #[error(transparent)]
    Bloom(#[from] bloom::BloomError),
    /// A CodeGen or MOSS checkpoint failed to load.
    #[error(transparent)]
    CodeGen(#[from] codegen::CodeGenError),
    /// A GPT-Neo checkpoint failed to load.
    #[error(transparent)]
    GptNeo(#[from] gptneo::GptNeoError),
    /// A T5 checkpoint failed to load or run.
    #[error(transparent)]
    T5(#[from] t5::T5Error),
    /// A BLIP-2 / MiniGPT-4 checkpoint or image failed to load.
    #[error(transparent)]
    Blip2(#[from] blip2::Blip2Error),
    /// Checkpoint tensors missing, misshapen or unreadable.
    #[error(transparent)]
    Weights(#[from] nn::WeightError),
    /// Bad ids, no tokenizer, no chat format, a prompt too long, a failed forward pass.
    #[error(transparent)]
    Pipeline(#[from] nn::PipelineError),
    /// A BERT or T5 folder where a causal LM is needed.
    #[error(
        "{0} is not a causal language model: BERT encoders take `embed`, `fill-mask` or `forward`; T5 encoder-decoders take `generate` or `forward`"
    )]
    NotCausal(PathBuf),
    /// A causal LM where a BERT encoder is needed.
    #[error("{path} is a {family} model; this needs a BERT encoder")]
    NotEncoder {
        /// The model.
        path: PathBuf,
        /// Its family.
        family: &'static str,
    },
    /// Inputs the task cannot use (the message says which and why).
    #[error("{0}")]
    Input(String),
}
