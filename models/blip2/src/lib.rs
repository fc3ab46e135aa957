//! BLIP-2 (Li et al., 2023) and MiniGPT-4 (Zhu et al., 2023): a frozen vision transformer, a
//! Q-Former whose learned queries read the image, and a linear projection of the queries into
//! a LLaMA (Vicuna) language model, whose prompt carries the image as `num_query_tokens`
//! embeddings.
//!
//! - [`config`]: `Blip2Config` (HF `config.json`) and `PreprocessorConfig`
//!   (`preprocessor_config.json`).
//! - [`image`]: PNG / JPEG to pixel values exactly as BLIP's PIL image processor makes them.
//! - [`model`]: `Blip2<B>`, the module, readable top to bottom; the language model is
//!   zoo-llama's.
//! - [`load`]: checkpoint names to module fields, strict about every tensor; [`open`] adds the
//!   tokenizer, the image processor and MiniGPT-4's chat format ([`chat`]).
//! - [`release`]: MiniGPT-4's own release (`pretrained_minigpt4.pth`, LAVIS's BLIP-2 and
//!   EVA ViT-g checkpoints, a `vicuna/` folder), which [`load`] and [`open`] also read.
//! - [`Blip2Lm`]: the model as a causal LM whose first forward pass splices the image in.

pub mod chat;
pub mod config;
pub mod image;
pub mod load;
pub mod model;
pub mod release;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use zoo_llama::LlamaCache;
use zoo_nn::{CausalLm, Logits};

pub use crate::image::ImageError;
pub use chat::MiniGpt4Format;
pub use config::{Blip2Config, PreprocessorConfig, QFormerConfig, VisionConfig};
pub use load::{from_weights, load, load_with, open, open_with, Blip2Generator};
pub use model::{Blip2, ForwardError};

/// Why a BLIP-2 checkpoint or an image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Blip2Error {
    /// `config.json` or `preprocessor_config.json` is missing, unreadable or unsupported.
    #[error("cannot read {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A MiniGPT-4 release folder lacks a file, or has two candidates for one.
    #[error("{dir}: {reason}")]
    Layout {
        /// The folder.
        dir: PathBuf,
        /// What is missing or ambiguous, and the layout expected.
        reason: String,
    },
    /// The weights do not fit the config, or the file is damaged.
    #[error(transparent)]
    Weights(#[from] zoo_nn::WeightError),
    /// The tokenizer files are unreadable.
    #[error(transparent)]
    Tokenizer(#[from] zoo_nn::TokenizerError),
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The forward pass refused its input.
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// What encoding one image cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageStats {
    /// Seconds to read, resize and normalise the file.
    pub preprocess_secs: f64,
    /// Seconds for the vision encoder, the Q-Former and the projection.
    pub encode_secs: f64,
    /// Language-model positions the image takes.
    pub tokens: usize,
}

/// A BLIP-2 model as a causal LM: the image set with [`Blip2Lm::set_image`] is spliced into the
/// first forward pass of every sequence (at its placeholder ids); later passes are plain LLaMA.
#[derive(Debug)]
pub struct Blip2Lm<B: Backend> {
    /// The module.
    pub model: Blip2<B>,
    /// The checkpoint's config.
    pub config: Blip2Config,
    /// How images become pixel values.
    pub preprocessor: PreprocessorConfig,
    /// The current image's query embeddings `[1, num_query_tokens, d_text]`.
    image: Mutex<Option<Tensor<B, 3>>>,
}

impl<B: Backend> Blip2Lm<B> {
    /// The model with no image set.
    pub fn new(model: Blip2<B>, config: Blip2Config, preprocessor: PreprocessorConfig) -> Self {
        Self {
            model,
            config,
            preprocessor,
            image: Mutex::new(None),
        }
    }

    /// The pixel values of an image file, `[3, size, size]` flattened (transformers'
    /// `pixel_values[0]`).
    pub fn pixel_values(&self, path: &Path) -> Result<Vec<f32>, Blip2Error> {
        Ok(crate::image::load_pixel_values(path, &self.preprocessor)?)
    }

    /// Pixel values as a `[1, 3, size, size]` tensor on the model's device.
    pub fn pixel_tensor(&self, values: Vec<f32>) -> Tensor<B, 4> {
        let s = self.config.vision.image_size;
        Tensor::from_data(TensorData::new(values, [1, 3, s, s]), &self.device())
    }

    /// Reads, preprocesses and encodes an image, and makes it the image of the next sequences.
    pub fn set_image(&self, path: &Path) -> Result<ImageStats, Blip2Error> {
        let start = Instant::now();
        let values = self.pixel_values(path)?;
        let preprocess_secs = start.elapsed().as_secs_f64();
        let (embeds, encode_secs) = self.encode(values);
        *self.image.lock().expect("image lock") = Some(embeds);
        Ok(ImageStats {
            preprocess_secs,
            encode_secs,
            tokens: self.config.num_query_tokens,
        })
    }

    /// The query embeddings of pixel values and the seconds the encoding took (vision
    /// encoder, Q-Former, projection, waiting for the device).
    fn encode(&self, values: Vec<f32>) -> (Tensor<B, 3>, f64) {
        let pixels = self.pixel_tensor(values);
        let start = Instant::now();
        let embeds = self.model.image_embeds(pixels);
        // Wait for the device, so that the time is the encoder's.
        let embeds = Tensor::from_data(embeds.into_data(), &self.device());
        (embeds, start.elapsed().as_secs_f64())
    }

    /// Seconds to encode one image of the model's size (a fixed synthetic pattern, already
    /// normalised: the encoder's time does not depend on the pixels), for benchmarks.
    pub fn time_image_encode(&self) -> f64 {
        let s = self.config.vision.image_size;
        let values = (0..3 * s * s)
            .map(|i| ((i % 251) as f32 / 125.0 - 1.0) * 1.5)
            .collect();
        self.encode(values).1
    }

    /// Sets (or clears) the image's query embeddings directly.
    pub fn set_image_embeds(&self, embeds: Option<Tensor<B, 3>>) {
        *self.image.lock().expect("image lock") = embeds;
    }

    /// Whether an image is set.
    pub fn has_image(&self) -> bool {
        self.image.lock().expect("image lock").is_some()
    }
}

impl<B: Backend> CausalLm<B> for Blip2Lm<B> {
    type Cache = LlamaCache<B>;
    type Error = ForwardError;

    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache {
        self.model.language_model.cache(batch, capacity)
    }

    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, ForwardError> {
        let first = cache.layers.first().is_none_or(|c| c.is_empty());
        let [batch, _] = ids.dims();
        let hidden = if first && batch == 1 {
            let host: Vec<u32> = ids
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .expect("i64 ids")
                .into_iter()
                .map(|v| v as u32)
                .collect();
            let image = self.image.lock().expect("image lock").clone();
            let embeds = self.model.input_embeds(&host, image.as_ref())?;
            self.model.hidden_from_embeds(embeds, cache)?
        } else {
            self.model.hidden(ids, cache)?
        };
        if logits == Logits::Hidden {
            return Ok(hidden);
        }
        Ok(self
            .model
            .language_model
            .lm_logits(logits.positions(hidden)))
    }

    fn max_positions(&self) -> usize {
        self.model.language_model.max_positions
    }

    fn vocab_size(&self) -> usize {
        self.model.language_model.embed_tokens.vocab_size()
    }

    fn device(&self) -> B::Device {
        self.model.language_model.embed_tokens.device()
    }

    fn valid_prompt(&self, ids: Vec<u32>) -> Vec<u32> {
        // Random prompts (benchmarks) must not hold placeholders without an image.
        match self.config.image_token_index {
            Some(id) if !self.has_image() => {
                let vocab = self.vocab_size() as u32;
                ids.into_iter()
                    .map(|x| if x == id { (x + 1) % vocab } else { x })
                    .collect()
            }
            _ => ids,
        }
    }
}
