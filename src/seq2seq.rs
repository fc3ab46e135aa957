//! Encoder-decoder models — T5, Flan-T5, LaMini-Flan-T5 — behind one backend-free type, the
//! way [`crate::DynLanguageModel`] serves the decoders: text in, text out, the verification
//! interface (encoder ids + decoder ids → logits), and generation with any sampling settings.
//!
//! ```no_run
//! use burn_zoo::backends::BackendKind;
//! use burn_zoo::nn::{GenerationConfig, WeightFormat};
//! # fn main() -> Result<(), burn_zoo::Error> {
//! let t5 = burn_zoo::seq2seq::DynSeq2Seq::open(
//!     BackendKind::Flex,
//!     "LaMini-Flan-T5-77M".as_ref(),
//!     WeightFormat::AS_STORED,
//! )?;
//! let ids = t5.encode("What is the capital of France?")?;
//! let out = t5.generate(&ids, &GenerationConfig::greedy(32), |piece| {
//!     print!("{piece}");
//!     true
//! })?;
//! println!("\n{}", out.stats.summary());
//! # Ok(()) }
//! ```

use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::Backend;
use zoo_backends::{with_backend, BackendKind};

use crate::nn::pipeline::rows;
use crate::nn::{
    ids_tensor, GenStats, Generated, GenerationConfig, PipelineError, Sampler, TextStream,
    WeightFormat,
};
use crate::t5::T5Generator;
use crate::Error;

/// The backend-free face of a [`T5Generator`].
trait ErasedSeq2Seq {
    fn source(&self) -> &Path;
    fn encode(&self, text: &str) -> Result<Vec<u32>, Error>;
    fn has_tokenizer(&self) -> bool;
    fn vocab_size(&self) -> usize;
    fn forward_rows(
        &self,
        encoder_ids: &[u32],
        decoder_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>, Error>;
    fn generate(
        &self,
        encoder_ids: &[u32],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, Error>;
}

fn model_error(e: impl std::fmt::Display) -> Error {
    Error::Pipeline(PipelineError::Model(e.to_string()))
}

impl<B: Backend> ErasedSeq2Seq for T5Generator<B> {
    fn source(&self) -> &Path {
        &self.dir
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        Ok(T5Generator::encode(self, text)?)
    }

    fn has_tokenizer(&self) -> bool {
        self.tokenizer.is_some()
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn forward_rows(
        &self,
        encoder_ids: &[u32],
        decoder_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>, Error> {
        Ok(T5Generator::forward_rows(self, encoder_ids, decoder_ids)?)
    }

    fn generate(
        &self,
        encoder_ids: &[u32],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generated, Error> {
        generate(self, encoder_ids, config, on_text)
    }
}

/// The longest encoder input and decoder output [`generate`] takes: T5's relative positions
/// have no maximum of their own, but the encoder's attention grows with the square of its
/// input and the decoder's cache is allocated for the whole output up front.
pub const MAX_SEQ2SEQ_TOKENS: usize = 8192;

/// Generation from a T5 model: the encoder once, then the decoder one token at a time over its
/// self-attention cache and the cross-attention K/V computed at the first step; prefill time is
/// the encoder plus the first decoder step.
pub fn generate<B: Backend>(
    t5: &T5Generator<B>,
    encoder_ids: &[u32],
    config: &GenerationConfig,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generated, Error> {
    t5.check_ids(encoder_ids, "encoder")?;
    for (what, n) in [
        ("encoder input", encoder_ids.len()),
        ("decoder output", config.max_new_tokens),
    ] {
        if n > MAX_SEQ2SEQ_TOKENS {
            return Err(Error::Input(format!(
                "an {what} of {n} tokens is longer than the {MAX_SEQ2SEQ_TOKENS} an encoder-decoder takes here"
            )));
        }
    }
    config
        .sampling
        .validate()
        .map_err(|e| model_error(format!("sampling settings: {e}")))?;
    let stop = config.stop_ids.clone().unwrap_or_else(|| t5.eos_ids());
    let mut sampler = Sampler::new(config.sampling.clone());
    let device = t5.model.device();
    let start = Instant::now();
    let encoder_out = t5.model.encode(ids_tensor::<B>(encoder_ids, &device));
    let mut cache = t5.model.cache(1, config.max_new_tokens.max(1));
    let start_id = t5.config.decoder_start();
    // The decoder's sequence so far (start token first), for the repeat penalty and the
    // text stream.
    let mut history = vec![start_id];
    let mut stream = TextStream::new(&history);
    let mut new = Vec::with_capacity(config.max_new_tokens);
    let mut first_token_at = None;
    while new.len() < config.max_new_tokens {
        let last = *history.last().expect("starts with the start token");
        let logits = t5
            .model
            .decode(ids_tensor::<B>(&[last], &device), &encoder_out, &mut cache)
            .map_err(model_error)?;
        let row = rows(logits)?.pop().expect("one position");
        let next = sampler.sample(&row, &history);
        first_token_at.get_or_insert_with(|| start.elapsed().as_secs_f64());
        new.push(next);
        history.push(next);
        if stop.contains(&next) {
            break;
        }
        if let Some(tok) = &t5.tokenizer {
            if let Some(piece) = stream.push(tok, next).map_err(PipelineError::from)? {
                if !on_text(&piece) {
                    break;
                }
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    let prefill_secs = first_token_at.unwrap_or(total);
    let stopped_on = new.last().copied().filter(|id| stop.contains(id));
    let body = &new[..new.len() - usize::from(stopped_on.is_some())];
    let text = match &t5.tokenizer {
        Some(tok) => Some(tok.decode(body, true).map_err(PipelineError::from)?),
        None => None,
    };
    Ok(Generated {
        stats: GenStats {
            prompt_len: encoder_ids.len(),
            new_tokens: new.len(),
            prefill_secs,
            decode_secs: total - prefill_secs,
        },
        ids: new,
        stopped_on,
        text,
    })
}

/// An encoder-decoder model on the backend chosen at run time.
pub struct DynSeq2Seq {
    inner: Box<dyn ErasedSeq2Seq>,
    kind: BackendKind,
}

impl std::fmt::Debug for DynSeq2Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynSeq2Seq")
            .field("backend", &self.kind)
            .field("source", &self.inner.source())
            .finish()
    }
}

impl DynSeq2Seq {
    /// Opens the T5 folder at `path` on the backend `kind`, keeping its weights in `format`.
    pub fn open(kind: BackendKind, path: &Path, format: WeightFormat) -> Result<Self, Error> {
        let inner = with_backend!(kind, |B, device| {
            Box::new(crate::t5::open_with::<B>(path, &device, format)?) as Box<dyn ErasedSeq2Seq>
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

    /// The encoder ids of a text prompt, ending with `</s>` as T5's tokenizer gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        self.inner.encode(text)
    }

    /// Whether the folder has a tokenizer (`tokenizer.json`).
    pub fn has_tokenizer(&self) -> bool {
        self.inner.has_tokenizer()
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// One full pass: the logits of every decoder position (`decoder_ids` start with the
    /// decoder start token, as transformers takes them).
    pub fn forward_rows(
        &self,
        encoder_ids: &[u32],
        decoder_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>, Error> {
        self.inner.forward_rows(encoder_ids, decoder_ids)
    }

    /// Decodes up to `config.max_new_tokens` new ids (without the start token) from the
    /// encoder input, streaming the text of each as it comes; stops at eos (`config.stop_ids`
    /// overrides) or when `on_text` returns false.
    pub fn generate(
        &self,
        encoder_ids: &[u32],
        config: &GenerationConfig,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generated, Error> {
        self.inner.generate(encoder_ids, config, &mut on_text)
    }
}
