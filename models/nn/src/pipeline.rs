//! A causal language model made usable: the module with its tokenizer, how text prompts are
//! encoded, its chat format and stop ids, and the generation loop with streaming and timings.
//!
//! Every family's `open(path, device)` returns a [`TextGenerator`] over its own module; the
//! `burn-zoo` facade dispatches over the families with one enum. This is the layer
//! transformers spreads over `AutoModelForCausalLM`, `GenerationMixin` and
//! `apply_chat_template`.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::chat::{ChatError, ChatFormat, Message};
use crate::generate::{generate, ids_tensor, CausalLm, GenerateError, Logits};
use crate::sampling::{Sampler, Sampling};
use crate::tokenizer::{TextStream, TextTokenizer, TokenizerError};

/// Why a pipeline step failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Text was given but the checkpoint ships no tokenizer.
    #[error("{0} has no tokenizer (tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe, or one inside the GGUF file): give token ids instead")]
    NoTokenizer(PathBuf),
    /// A chat was asked for but the model has no chat format.
    #[error(
        "{0} has no chat template: choose one (chatml, alpaca, vicuna-v1.1, llama-2-chat, zephyr)"
    )]
    NoChatFormat(PathBuf),
    /// Encoding or decoding failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat format could not build the prompt.
    #[error(transparent)]
    Chat(#[from] ChatError),
    /// The prompt encodes to no tokens.
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    /// An id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadId {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The prompt plus the tokens asked for exceed the context.
    #[error(
        "prompt of {prompt} tokens + {new} new tokens exceeds the model's context of {context}"
    )]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// New tokens asked for.
        new: usize,
        /// Context length.
        context: usize,
    },
    /// The model's forward pass failed.
    #[error("{0}")]
    Model(String),
    /// Reading a result back from the device failed.
    #[error("reading the output from the device: {0}")]
    Readback(String),
}

impl<E: std::error::Error + 'static> From<GenerateError<E>> for PipelineError {
    fn from(e: GenerateError<E>) -> Self {
        match e {
            GenerateError::EmptyPrompt => PipelineError::EmptyPrompt,
            GenerateError::TooLong {
                prompt,
                new,
                context,
            } => PipelineError::TooLong {
                prompt,
                new,
                context,
            },
            GenerateError::BadId { id, vocab } => PipelineError::BadId { id, vocab },
            GenerateError::Model(e) => PipelineError::Model(e.to_string()),
        }
    }
}

/// How a text prompt becomes ids, so that `zoo generate --prompt TEXT` feeds exactly what
/// transformers' `tokenizer(TEXT).input_ids` (or llama.cpp's tokenizer) gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextEncoding {
    /// The tokenizer's own post-processor adds what the checkpoint wants (`add_special_tokens`):
    /// Llama-2's `<s>`, a GGUF file's bos, nothing for GPT-2.
    Tokenizer,
    /// The plain text ids between fixed ids the original tokenizer adds in code (ChatGLM's
    /// `[gMASK] <sop>`).
    Wrap {
        /// Ids put before the text.
        prefix: Vec<u32>,
        /// Ids put after the text.
        suffix: Vec<u32>,
    },
}

impl TextEncoding {
    /// The ids of a text prompt with `tokenizer`, as the checkpoint's reference tokenizer gives
    /// them (what [`TextGenerator::encode`] does, for code that holds only the tokenizer).
    pub fn encode(&self, tokenizer: &TextTokenizer, text: &str) -> Result<Vec<u32>, PipelineError> {
        let ids = match self {
            TextEncoding::Tokenizer => tokenizer.encode(text, true)?,
            TextEncoding::Wrap { prefix, suffix } => {
                let mut ids = prefix.clone();
                ids.extend(tokenizer.encode(text, false)?);
                ids.extend_from_slice(suffix);
                ids
            }
        };
        if ids.is_empty() {
            return Err(PipelineError::EmptyPrompt);
        }
        Ok(ids)
    }
}

/// What to generate: how many tokens, how to pick them, where to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub sampling: Sampling,
    /// Ids that end generation: `None` for the model's own (eos, and in a chat the format's
    /// end-of-turn ids); `Some(vec![])` to ignore them all.
    pub stop_ids: Option<Vec<u32>>,
}

impl GenerationConfig {
    /// Greedy decoding of up to `max_new_tokens`, stopping at the model's stop ids.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            sampling: Sampling::greedy(),
            stop_ids: None,
        }
    }
}

/// Timings of one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenStats {
    /// Prompt tokens.
    pub prompt_len: usize,
    /// New tokens.
    pub new_tokens: usize,
    /// Seconds until the first new token was chosen (the prefill).
    pub prefill_secs: f64,
    /// Seconds for the tokens after the first.
    pub decode_secs: f64,
}

impl GenStats {
    /// Prompt tokens per second.
    pub fn prefill_rate(&self) -> f64 {
        self.prompt_len as f64 / self.prefill_secs.max(1e-9)
    }

    /// New tokens per second after the first.
    pub fn decode_rate(&self) -> f64 {
        self.new_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }

    /// One line: prompt tokens, prefill rate, new tokens, decode rate.
    pub fn summary(&self) -> String {
        format!(
            "prompt {} tokens in {:.3}s ({:.1} tok/s), {} new tokens, decode {:.1} tok/s",
            self.prompt_len,
            self.prefill_secs,
            self.prefill_rate(),
            self.new_tokens,
            self.decode_rate()
        )
    }
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The new ids (a final stop id included).
    pub ids: Vec<u32>,
    /// The stop id generation ended on, if it did.
    pub stopped_on: Option<u32>,
    /// The new text without the stop id, special tokens kept (`None` without a tokenizer); for
    /// [`TextGenerator::reply`], the answer as the conversation keeps it (trimmed, special
    /// tokens left out).
    pub text: Option<String>,
    /// Timings.
    pub stats: GenStats,
}

/// A conversation: messages with roles `system`, `user` and `assistant`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
}

impl Conversation {
    /// An empty conversation, or one that starts with a system message.
    pub fn new(system: Option<&str>) -> Self {
        Self {
            messages: system
                .map(|s| vec![Message::new("system", s)])
                .unwrap_or_default(),
        }
    }

    /// Adds a user message.
    pub fn push_user(&mut self, text: &str) {
        self.messages.push(Message::new("user", text));
    }

    /// Forgets every message but the system message.
    pub fn reset(&mut self) {
        self.messages.retain(|m| m.role == "system");
    }
}

/// A causal LM with everything that makes it usable from text.
pub struct TextGenerator<B: Backend, M: CausalLm<B>> {
    /// The module.
    pub model: M,
    /// The checkpoint's tokenizer, if it ships one.
    pub tokenizer: Option<TextTokenizer>,
    /// How text prompts are encoded.
    pub encoding: TextEncoding,
    /// The chat format (the checkpoint's own template, a family's id-level format, or one set
    /// with [`TextGenerator::set_chat_format`]).
    pub chat_format: Option<Arc<dyn ChatFormat>>,
    /// The model's end-of-sequence ids.
    pub eos_ids: Vec<u32>,
    /// Where the model was loaded from (for messages).
    pub source: PathBuf,
    backend: PhantomData<B>,
}

impl<B: Backend, M: CausalLm<B> + std::fmt::Debug> std::fmt::Debug for TextGenerator<B, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextGenerator")
            .field("source", &self.source)
            .field("encoding", &self.encoding)
            .field("chat_format", &self.chat_format)
            .field("eos_ids", &self.eos_ids)
            .finish_non_exhaustive()
    }
}

impl<B: Backend, M: CausalLm<B>> TextGenerator<B, M> {
    /// A generator over `model`; `eos_ids` are sorted and deduplicated.
    pub fn new(
        model: M,
        source: &Path,
        tokenizer: Option<TextTokenizer>,
        encoding: TextEncoding,
        chat_format: Option<Arc<dyn ChatFormat>>,
        mut eos_ids: Vec<u32>,
    ) -> Self {
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Self {
            model,
            tokenizer,
            encoding,
            chat_format,
            eos_ids,
            source: source.to_path_buf(),
            backend: PhantomData,
        }
    }

    /// The same pipeline around another module (a family's module wrapped in an enum).
    pub fn map_model<N: CausalLm<B>>(self, f: impl FnOnce(M) -> N) -> TextGenerator<B, N> {
        TextGenerator {
            model: f(self.model),
            tokenizer: self.tokenizer,
            encoding: self.encoding,
            chat_format: self.chat_format,
            eos_ids: self.eos_ids,
            source: self.source,
            backend: PhantomData,
        }
    }

    /// The tokenizer, or an error naming the checkpoint.
    pub fn tokenizer(&self) -> Result<&TextTokenizer, PipelineError> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| PipelineError::NoTokenizer(self.source.clone()))
    }

    /// The ids of a text prompt, as the checkpoint's reference tokenizer gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PipelineError> {
        self.encoding.encode(self.tokenizer()?, text)
    }

    /// The text of `ids` (special tokens kept unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, PipelineError> {
        Ok(self.tokenizer()?.decode(ids, skip_special)?)
    }

    /// Replaces the chat format.
    pub fn set_chat_format(&mut self, format: Arc<dyn ChatFormat>) {
        self.chat_format = Some(format);
    }

    /// The chat format, or an error naming the checkpoint.
    pub fn chat_format(&self) -> Result<&dyn ChatFormat, PipelineError> {
        self.chat_format
            .as_deref()
            .ok_or_else(|| PipelineError::NoChatFormat(self.source.clone()))
    }

    /// The prompt ids of a conversation that ends with the user's message.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>, PipelineError> {
        Ok(self
            .chat_format()?
            .prompt_ids(messages, self.tokenizer()?)?)
    }

    /// Ids that end an answer in a chat: the model's eos ids and the format's end-of-turn ids.
    pub fn chat_stop_ids(&self) -> Vec<u32> {
        let mut ids = self.eos_ids.clone();
        if let (Some(format), Some(tokenizer)) = (&self.chat_format, &self.tokenizer) {
            ids.extend(format.stop_ids(tokenizer));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The longest sequence the model accepts.
    pub fn context_length(&self) -> usize {
        self.model.max_positions()
    }

    /// Checks ids against the vocabulary and the context.
    pub fn check_ids(&self, ids: &[u32]) -> Result<(), PipelineError> {
        if ids.is_empty() {
            return Err(PipelineError::EmptyPrompt);
        }
        let vocab = self.model.vocab_size();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(PipelineError::BadId { id, vocab });
        }
        let context = self.model.max_positions();
        if ids.len() > context {
            return Err(PipelineError::TooLong {
                prompt: ids.len(),
                new: 0,
                context,
            });
        }
        Ok(())
    }

    /// One full forward pass over `ids`: the logits of every position (`Logits::All`), or the
    /// final hidden states after the last norm (`Logits::Hidden`), as rows of floats.
    pub fn forward_rows(&self, ids: &[u32], what: Logits) -> Result<Vec<Vec<f32>>, PipelineError> {
        self.check_ids(ids)?;
        let device = self.model.device();
        let mut cache = self.model.new_cache(1, ids.len());
        let out = self
            .model
            .forward_cached(ids_tensor::<B>(ids, &device), &mut cache, what)
            .map_err(|e| PipelineError::Model(e.to_string()))?;
        rows(out)
    }

    /// Generates after `prompt`, handing each whole piece of text to `on_text` as soon as it
    /// exists (return `false` to stop); without a tokenizer nothing is streamed.
    pub fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        let stop = config
            .stop_ids
            .clone()
            .unwrap_or_else(|| self.eos_ids.clone());
        self.run(prompt, config, &stop, on_text)
    }

    /// Answers the conversation's last user message in the chat format, streaming the text,
    /// and appends the answer to the conversation. The oldest turns are dropped (the system
    /// message kept) while the prompt plus `max_new_tokens` does not fit the context.
    pub fn reply(
        &self,
        conversation: &mut Conversation,
        config: &GenerationConfig,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        let context = self.context_length();
        let prompt = loop {
            let ids = self.chat_prompt(&conversation.messages)?;
            if ids.len() + config.max_new_tokens <= context {
                break ids;
            }
            let first_turn = conversation
                .messages
                .iter()
                .position(|m| m.role != "system");
            match first_turn {
                Some(i) if conversation.messages.len() - i > 1 => {
                    conversation.messages.remove(i);
                }
                _ => {
                    return Err(PipelineError::TooLong {
                        prompt: ids.len(),
                        new: config.max_new_tokens,
                        context,
                    })
                }
            }
        };
        let stop = config
            .stop_ids
            .clone()
            .unwrap_or_else(|| self.chat_stop_ids());
        let mut out = self.run(&prompt, config, &stop, on_text)?;
        // The answer as the conversation keeps it: special tokens left out, trimmed.
        let body = &out.ids[..out.ids.len() - usize::from(out.stopped_on.is_some())];
        let answer = self.decode(body, true)?.trim().to_string();
        conversation
            .messages
            .push(Message::new("assistant", &answer));
        out.text = Some(answer);
        Ok(out)
    }

    fn run(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        stop: &[u32],
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, PipelineError> {
        config
            .sampling
            .validate()
            .map_err(|e| PipelineError::Model(format!("sampling settings: {e}")))?;
        let mut sampler = Sampler::new(config.sampling.clone());
        let mut stream = TextStream::new(prompt);
        let tokenizer = self.tokenizer.as_ref();
        let start = Instant::now();
        let mut first_token_at = None;
        let mut failure: Option<TokenizerError> = None;
        let ids = generate(
            &self.model,
            prompt,
            config.max_new_tokens,
            &mut sampler,
            stop,
            |id| {
                if first_token_at.is_none() {
                    first_token_at = Some(start.elapsed().as_secs_f64());
                }
                let Some(tok) = tokenizer else {
                    return true;
                };
                // Padding rows of the embedding (OPT's 50272 rows over 50265 tokens, GLM's
                // padded vocabulary) have no text: the id is kept, the text skips it, as
                // transformers' decode does.
                if stop.contains(&id) {
                    return true;
                }
                match stream.push(tok, id) {
                    Ok(Some(piece)) => on_text(&piece),
                    Ok(None) => true,
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        let total = start.elapsed().as_secs_f64();
        let prefill_secs = first_token_at.unwrap_or(total);
        let stopped_on = ids.last().copied().filter(|id| stop.contains(id));
        let body = &ids[..ids.len() - usize::from(stopped_on.is_some())];
        let text = match tokenizer {
            Some(tok) => {
                let known: Vec<u32> = body
                    .iter()
                    .copied()
                    .filter(|&id| (id as usize) < tok.vocab_size())
                    .collect();
                Some(tok.decode(&known, false)?)
            }
            None => None,
        };
        Ok(Generated {
            stats: GenStats {
                prompt_len: prompt.len(),
                new_tokens: ids.len(),
                prefill_secs,
                decode_secs: total - prefill_secs,
            },
            ids,
            stopped_on,
            text,
        })
    }
}

/// `[1, t, n]` → t rows of n floats.
pub fn rows<B: Backend>(tensor: Tensor<B, 3>) -> Result<Vec<Vec<f32>>, PipelineError> {
    let [_, t, n] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| PipelineError::Readback(format!("{e:?}")))?;
    Ok((0..t)
        .map(|i| values[i * n..(i + 1) * n].to_vec())
        .collect())
}
