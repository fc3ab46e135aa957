//! Building blocks shared by every model family of burn-zoo.
//!
//! Only what the families compute identically lives here: checkpoint reading with strict
//! consumption ([`weights`]), linear layers oriented for few or many rows ([`dense`]),
//! weights kept in f16 / bf16 / block formats with fused products ([`quant`]),
//! LayerNorm / RMSNorm ([`norm`]), activations, scaled dot-product attention over a
//! preallocated KV cache ([`attention`]), rotary embeddings ([`rope`]), sampling
//! ([`sampling`]), the tokenizer wrapper ([`tokenizer`]), chat formats ([`chat`]), the
//! generation loop ([`generate`]) and the pipeline that makes a causal LM usable from text
//! ([`pipeline`]).

pub mod activation;
pub mod attention;
pub mod chat;
pub mod dense;
pub mod fused;
pub mod generate;
mod host;
pub mod limits;
pub mod lora;
pub mod norm;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod packed_gpu;
pub mod pickle;
pub mod pipeline;
pub mod quant;
pub mod rope;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use activation::Activation;
pub use attention::{attention, causal_mask, KvCache};
pub use chat::{render, ChatError, ChatFormat, Message, Template, TemplateFormat};
pub use dense::{times_transposed, Dense, Embed};
pub use generate::{generate, ids_tensor, CausalLm, GenerateError, Logits};
pub use lora::Lora;
pub use norm::{LayerNorm, RmsNorm};
pub use pipeline::{
    Conversation, GenStats, Generated, GenerationConfig, PipelineError, TextEncoding, TextGenerator,
};
pub use quant::{QType, WeightFormat};
pub use sampling::{Sampler, Sampling};
pub use tokenizer::{TextStream, TextTokenizer, TokenizerError};
pub use weights::{WeightError, Weights};
