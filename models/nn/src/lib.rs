//! Building blocks shared by every model family of burn-zoo.
//!
//! Only what the families compute identically lives here: checkpoint reading with strict
//! consumption ([`weights`]), linear layers oriented for few or many rows ([`dense`]), LayerNorm / RMSNorm ([`norm`]), activations, scaled dot-product
//! attention over a preallocated KV cache ([`attention`]), rotary embeddings ([`rope`]),
//! sampling ([`sampling`]), the tokenizer wrapper ([`tokenizer`]) and the generation loop
//! ([`generate`]).

pub mod activation;
pub mod attention;
pub mod dense;
pub mod generate;
pub mod norm;
pub mod rope;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use activation::Activation;
pub use attention::{attention, causal_mask, KvCache};
pub use dense::{times_transposed, Dense};
pub use generate::{generate, ids_tensor, CausalLm, GenerateError, Logits};
pub use norm::{LayerNorm, RmsNorm};
pub use sampling::{Sampler, Sampling};
pub use tokenizer::{TextStream, TextTokenizer, TokenizerError};
pub use weights::{WeightError, Weights};
