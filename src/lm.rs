//! Any causal language model of the zoo behind one type: [`open`] reads a folder or a `.gguf`
//! file, finds its family, and returns a [`LanguageModel`] — the module with its tokenizer,
//! prompt encoding, chat format, stop ids and the generation loop.
//!
//! ```no_run
//! use burn_zoo::nn::{Conversation, GenerationConfig};
//! # fn main() -> Result<(), burn_zoo::Error> {
//! type B = burn::backend::Flex;
//! let lm = burn_zoo::open::<B>("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Default::default())?;
//! let mut chat = Conversation::new(None);
//! chat.push_user("What is the capital of France?");
//! let answer = lm.reply(&mut chat, &GenerationConfig::greedy(64), |piece| {
//!     print!("{piece}");
//!     true
//! })?;
//! println!("\n{}", answer.stats.summary());
//! # Ok(()) }
//! ```

use std::path::Path;

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::glm::{Glm, GlmCache, GlmError};
use crate::gpt2::{Gpt2, Gpt2Cache};
use crate::llama::{Llama, LlamaCache};
use crate::nn::attention::CacheFull;
use crate::nn::{CausalLm, Logits, TextGenerator};
use crate::resolve::{resolve_path, Family};
use crate::Error;

/// The module of any causal LM family.
#[derive(Debug)]
pub enum CausalModel<B: Backend> {
    /// GPT-2.
    Gpt2(Gpt2<B>),
    /// LLaMA and its descendants (HF folders and GGUF files).
    Llama(Llama<B>),
    /// Any GLM generation.
    Glm(Glm<B>),
}

/// The cache of a [`CausalModel`].
#[derive(Debug)]
pub enum CausalCache<B: Backend> {
    /// GPT-2's.
    Gpt2(Gpt2Cache<B>),
    /// LLaMA's.
    Llama(LlamaCache<B>),
    /// GLM's.
    Glm(GlmCache<B>),
}

/// Why a forward pass of a [`CausalModel`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The sequence does not fit the cache or the context.
    #[error(transparent)]
    CacheFull(#[from] CacheFull),
    /// A GLM model refused its input.
    #[error(transparent)]
    Glm(#[from] GlmError),
    /// A cache of another family was passed.
    #[error("the cache belongs to another model family")]
    WrongCache,
}

impl<B: Backend> CausalLm<B> for CausalModel<B> {
    type Cache = CausalCache<B>;
    type Error = ForwardError;

    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache {
        match self {
            CausalModel::Gpt2(m) => CausalCache::Gpt2(m.new_cache(batch, capacity)),
            CausalModel::Llama(m) => CausalCache::Llama(m.new_cache(batch, capacity)),
            CausalModel::Glm(m) => CausalCache::Glm(m.new_cache(batch, capacity)),
        }
    }

    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, ForwardError> {
        Ok(match (self, cache) {
            (CausalModel::Gpt2(m), CausalCache::Gpt2(c)) => m.forward_cached(ids, c, logits)?,
            (CausalModel::Llama(m), CausalCache::Llama(c)) => m.forward_cached(ids, c, logits)?,
            (CausalModel::Glm(m), CausalCache::Glm(c)) => m.forward_cached(ids, c, logits)?,
            _ => return Err(ForwardError::WrongCache),
        })
    }

    fn max_positions(&self) -> usize {
        match self {
            CausalModel::Gpt2(m) => m.max_positions(),
            CausalModel::Llama(m) => m.max_positions(),
            CausalModel::Glm(m) => m.max_positions(),
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            CausalModel::Gpt2(m) => m.vocab_size(),
            CausalModel::Llama(m) => m.vocab_size(),
            CausalModel::Glm(m) => m.vocab_size(),
        }
    }

    fn device(&self) -> B::Device {
        match self {
            CausalModel::Gpt2(m) => m.device(),
            CausalModel::Llama(m) => m.device(),
            CausalModel::Glm(m) => m.device(),
        }
    }
}

/// A causal LM of any family with everything that makes it usable from text.
pub type LanguageModel<B> = TextGenerator<B, CausalModel<B>>;

/// Opens a causal LM — a Hugging Face folder (GPT-2, LLaMA, GLM) or a `.gguf` file — with its
/// tokenizer, prompt encoding, chat format and stop ids.
pub fn open<B: Backend>(path: &Path, device: &B::Device) -> Result<LanguageModel<B>, Error> {
    let model = resolve_path(path)?;
    let path = model.path.as_path();
    Ok(match model.family {
        Family::Gpt2 => crate::gpt2::open::<B>(path, device)?.map_model(CausalModel::Gpt2),
        Family::Llama => crate::llama::open::<B>(path, device)?.map_model(CausalModel::Llama),
        Family::Glm => crate::glm::open::<B>(path, device)?.map_model(CausalModel::Glm),
        Family::Bert => return Err(Error::NotCausal(model.path)),
    })
}
