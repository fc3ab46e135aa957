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
use std::sync::Arc;

use burn::tensor::{backend::Backend, Int, Tensor};
use zoo_backends::{with_backend, BackendKind};

use crate::blip2::{Blip2Lm, ImageStats};
use crate::bloom::{Bloom, BloomCache};
use crate::codegen::{CodeGen, CodeGenCache};
use crate::glm::{Glm, GlmCache, GlmError};
use crate::gpt2::{Gpt2, Gpt2Cache};
use crate::gptneo::{GptNeo, GptNeoCache};
use crate::llama::{Llama, LlamaCache};
use crate::nn::attention::CacheFull;
use crate::nn::{
    CausalLm, ChatFormat, Conversation, Generated, GenerationConfig, Logits, Message,
    PipelineError, TextGenerator, TextTokenizer, WeightFormat,
};
use crate::opt::{Opt, OptCache};
use crate::resolve::{resolve_path, Family};
use crate::Error;

/// The module of any causal LM family.
// One value per loaded model: the variants' sizes (module headers of a few KB, the weights
// live on the device) do not matter, and boxing them would only add a pointer chase.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CausalModel<B: Backend> {
    /// GPT-2.
    Gpt2(Gpt2<B>),
    /// LLaMA and its descendants (HF folders and GGUF files).
    Llama(Llama<B>),
    /// Any GLM generation.
    Glm(Glm<B>),
    /// OPT.
    Opt(Opt<B>),
    /// BLOOM.
    Bloom(Bloom<B>),
    /// CodeGen and MOSS.
    CodeGen(CodeGen<B>),
    /// GPT-Neo.
    GptNeo(GptNeo<B>),
    /// BLIP-2 / MiniGPT-4: a LLaMA fed image embeddings (its cache is LLaMA's).
    Blip2(Blip2Lm<B>),
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
    /// OPT's.
    Opt(OptCache<B>),
    /// BLOOM's.
    Bloom(BloomCache<B>),
    /// CodeGen's.
    CodeGen(CodeGenCache<B>),
    /// GPT-Neo's.
    GptNeo(GptNeoCache<B>),
}

/// `$body` with `$m` bound to the family's module, for every family.
macro_rules! each_family {
    ($model:expr, |$m:ident| $body:expr) => {
        match $model {
            CausalModel::Gpt2($m) => $body,
            CausalModel::Llama($m) => $body,
            CausalModel::Glm($m) => $body,
            CausalModel::Opt($m) => $body,
            CausalModel::Bloom($m) => $body,
            CausalModel::CodeGen($m) => $body,
            CausalModel::GptNeo($m) => $body,
            CausalModel::Blip2($m) => $body,
        }
    };
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
    /// A BLIP-2 model refused its input (image placeholders).
    #[error(transparent)]
    Blip2(#[from] crate::blip2::ForwardError),
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
            CausalModel::Opt(m) => CausalCache::Opt(m.new_cache(batch, capacity)),
            CausalModel::Bloom(m) => CausalCache::Bloom(m.new_cache(batch, capacity)),
            CausalModel::CodeGen(m) => CausalCache::CodeGen(m.new_cache(batch, capacity)),
            CausalModel::GptNeo(m) => CausalCache::GptNeo(m.new_cache(batch, capacity)),
            CausalModel::Blip2(m) => CausalCache::Llama(m.new_cache(batch, capacity)),
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
            (CausalModel::Opt(m), CausalCache::Opt(c)) => m.forward_cached(ids, c, logits)?,
            (CausalModel::Bloom(m), CausalCache::Bloom(c)) => m.forward_cached(ids, c, logits)?,
            (CausalModel::CodeGen(m), CausalCache::CodeGen(c)) => {
                m.forward_cached(ids, c, logits)?
            }
            (CausalModel::GptNeo(m), CausalCache::GptNeo(c)) => m.forward_cached(ids, c, logits)?,
            (CausalModel::Blip2(m), CausalCache::Llama(c)) => m.forward_cached(ids, c, logits)?,
            _ => return Err(ForwardError::WrongCache),
        })
    }

    fn max_positions(&self) -> usize {
        each_family!(self, |m| m.max_positions())
    }

    fn vocab_size(&self) -> usize {
        each_family!(self, |m| m.vocab_size())
    }

    fn device(&self) -> B::Device {
        each_family!(self, |m| m.device())
    }

    fn valid_prompt(&self, ids: Vec<u32>) -> Vec<u32> {
        each_family!(self, |m| m.valid_prompt(ids))
    }
}

/// A causal LM of any family with everything that makes it usable from text.
pub type LanguageModel<B> = TextGenerator<B, CausalModel<B>>;

/// Opens a causal LM — a Hugging Face folder (GPT-2, LLaMA, GLM, OPT, BLOOM, CodeGen / MOSS,
/// GPT-Neo) or a `.gguf` file — with its
/// tokenizer, prompt encoding, chat format and stop ids.
pub fn open<B: Backend>(path: &Path, device: &B::Device) -> Result<LanguageModel<B>, Error> {
    open_with(path, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format`: as stored (a GGUF file's own block formats),
/// in f16 / bf16, or quantized at load (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    path: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<LanguageModel<B>, Error> {
    let model = resolve_path(path)?;
    let path = model.path.as_path();
    Ok(match model.family {
        Family::Gpt2 => {
            crate::gpt2::open_with::<B>(path, device, format)?.map_model(CausalModel::Gpt2)
        }
        Family::Llama => {
            crate::llama::open_with::<B>(path, device, format)?.map_model(CausalModel::Llama)
        }
        Family::Glm => {
            crate::glm::open_with::<B>(path, device, format)?.map_model(CausalModel::Glm)
        }
        Family::Opt => {
            crate::opt::open_with::<B>(path, device, format)?.map_model(CausalModel::Opt)
        }
        Family::Bloom => {
            crate::bloom::open_with::<B>(path, device, format)?.map_model(CausalModel::Bloom)
        }
        Family::CodeGen => {
            crate::codegen::open_with::<B>(path, device, format)?.map_model(CausalModel::CodeGen)
        }
        Family::GptNeo => {
            crate::gptneo::open_with::<B>(path, device, format)?.map_model(CausalModel::GptNeo)
        }
        Family::Bert => return Err(Error::NotCausal(model.path)),
        Family::T5 => return Err(Error::NotCausal(model.path)),
        Family::Blip2 => {
            crate::blip2::open_with::<B>(path, device, format)?.map_model(CausalModel::Blip2)
        }
    })
}

/// A causal LM on the backend chosen at run time, without a backend type parameter: what a
/// program that takes `--backend` holds. The generic code is compiled once, in this crate.
pub struct DynLanguageModel {
    inner: Box<dyn ErasedLm>,
    kind: BackendKind,
}

impl std::fmt::Debug for DynLanguageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynLanguageModel")
            .field("backend", &self.kind)
            .field("source", &self.inner.source())
            .finish()
    }
}

/// The backend-free face of a [`LanguageModel`].
trait ErasedLm {
    fn source(&self) -> &Path;
    fn encode(&self, text: &str) -> Result<Vec<u32>, PipelineError>;
    fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, PipelineError>;
    fn tokenizer(&self) -> Option<&TextTokenizer>;
    fn has_chat_format(&self) -> bool;
    fn set_chat_format(&mut self, format: Arc<dyn ChatFormat>);
    fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>, PipelineError>;
    fn context_length(&self) -> usize;
    fn vocab_size(&self) -> usize;
    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError>;
    fn reply(
        &self,
        conversation: &mut Conversation,
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError>;
    fn forward_rows(&self, ids: &[u32], what: Logits) -> Result<Vec<Vec<f32>>, PipelineError>;
    fn set_image(&self, path: &Path) -> Result<ImageStats, Error>;
    fn pixel_values(&self, path: &Path) -> Result<Vec<f32>, Error>;
}

impl<B: Backend> ErasedLm for LanguageModel<B> {
    fn source(&self) -> &Path {
        &self.source
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, PipelineError> {
        TextGenerator::encode(self, text)
    }
    fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, PipelineError> {
        TextGenerator::decode(self, ids, skip_special)
    }
    fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }
    fn has_chat_format(&self) -> bool {
        self.chat_format.is_some()
    }
    fn set_chat_format(&mut self, format: Arc<dyn ChatFormat>) {
        TextGenerator::set_chat_format(self, format)
    }
    fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>, PipelineError> {
        TextGenerator::chat_prompt(self, messages)
    }
    fn context_length(&self) -> usize {
        TextGenerator::context_length(self)
    }
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }
    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        TextGenerator::generate(self, prompt, config, on_text)
    }
    fn reply(
        &self,
        conversation: &mut Conversation,
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        TextGenerator::reply(self, conversation, config, on_text)
    }
    fn forward_rows(&self, ids: &[u32], what: Logits) -> Result<Vec<Vec<f32>>, PipelineError> {
        TextGenerator::forward_rows(self, ids, what)
    }
    fn set_image(&self, path: &Path) -> Result<ImageStats, Error> {
        match &self.model {
            CausalModel::Blip2(m) => Ok(m.set_image(path)?),
            _ => Err(no_vision(&self.source)),
        }
    }
    fn pixel_values(&self, path: &Path) -> Result<Vec<f32>, Error> {
        match &self.model {
            CausalModel::Blip2(m) => Ok(m.pixel_values(path)?),
            _ => Err(no_vision(&self.source)),
        }
    }
}

/// `--image` given to a model without a vision encoder.
fn no_vision(source: &Path) -> Error {
    Error::Input(format!(
        "{} has no vision encoder: --image needs a BLIP-2 / MiniGPT-4 model",
        source.display()
    ))
}

impl DynLanguageModel {
    /// Opens the causal LM at `path` (folder or `.gguf`) on the backend `kind`, keeping its
    /// weights in `format` (see [`open_with`]).
    pub fn open(kind: BackendKind, path: &Path, format: WeightFormat) -> Result<Self, Error> {
        let inner = with_backend!(kind, |B, device| {
            Box::new(open_with::<B>(path, &device, format)?) as Box<dyn ErasedLm>
        })
        .map_err(|e| Error::Input(e.to_string()))?;
        Ok(Self { inner, kind })
    }

    /// [`DynLanguageModel::open`] with the PEFT LoRA adapter folder `adapter` applied
    /// (GPT-2, LLaMA, GLM; a ChatGLM-6B P-Tuning v2 folder too; see
    /// [`crate::finetune::apply_adapter`]).
    pub fn open_adapted(
        kind: BackendKind,
        path: &Path,
        format: WeightFormat,
        adapter: &Path,
    ) -> Result<Self, Error> {
        let inner = with_backend!(kind, |B, device| {
            let mut lm = open_with::<B>(path, &device, format)?;
            crate::finetune::apply_adapter(&mut lm.model, adapter)
                .map_err(|e| Error::Input(e.to_string()))?;
            Box::new(lm) as Box<dyn ErasedLm>
        })
        .map_err(|e| Error::Input(e.to_string()))?;
        Ok(Self { inner, kind })
    }

    /// The backend the model runs on.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// Where the model was loaded from.
    pub fn source(&self) -> &Path {
        self.inner.source()
    }

    /// The ids of a text prompt, as the checkpoint's reference tokenizer gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PipelineError> {
        self.inner.encode(text)
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, PipelineError> {
        self.inner.decode(ids, skip_special)
    }

    /// The checkpoint's tokenizer, if it ships one.
    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.inner.tokenizer()
    }

    /// Whether the model has a chat format.
    pub fn has_chat_format(&self) -> bool {
        self.inner.has_chat_format()
    }

    /// Replaces the chat format.
    pub fn set_chat_format(&mut self, format: Arc<dyn ChatFormat>) {
        self.inner.set_chat_format(format)
    }

    /// The prompt ids of a conversation that ends with the user's message.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>, PipelineError> {
        self.inner.chat_prompt(messages)
    }

    /// The longest sequence the model accepts.
    pub fn context_length(&self) -> usize {
        self.inner.context_length()
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// See [`TextGenerator::generate`].
    pub fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        self.inner.generate(prompt, config, &mut on_text)
    }

    /// See [`TextGenerator::reply`].
    pub fn reply(
        &self,
        conversation: &mut Conversation,
        config: &GenerationConfig,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        self.inner.reply(conversation, config, &mut on_text)
    }

    /// Reads, preprocesses and encodes an image (BLIP-2 / MiniGPT-4 models only): the next
    /// forward passes and generations put its query embeddings at the prompt's image
    /// placeholders.
    pub fn set_image(&self, path: &Path) -> Result<ImageStats, Error> {
        self.inner.set_image(path)
    }

    /// The pixel values an image file gives this model (BLIP-2 / MiniGPT-4 models only),
    /// `[3, size, size]` flattened.
    pub fn pixel_values(&self, path: &Path) -> Result<Vec<f32>, Error> {
        self.inner.pixel_values(path)
    }

    /// See [`TextGenerator::forward_rows`].
    pub fn forward_rows(&self, ids: &[u32], what: Logits) -> Result<Vec<Vec<f32>>, PipelineError> {
        self.inner.forward_rows(ids, what)
    }
}
