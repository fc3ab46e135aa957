//! The decoding loop every causal language model of the zoo shares.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::sampling::Sampler;

/// Which positions' logits a forward pass should compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every position (`zoo forward`, perplexity).
    All,
    /// Only the last position (generation: saves the LM head on the prompt).
    Last,
    /// No logits: the final hidden states (after the last norm) of every position.
    Hidden,
}

impl Logits {
    /// The positions of `hidden` (`[batch, t, d]`) whose logits are wanted.
    pub fn positions<B: Backend>(self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Logits::All | Logits::Hidden => hidden,
            Logits::Last => {
                let [b, t, d] = hidden.dims();
                hidden.slice([0..b, t - 1..t, 0..d])
            }
        }
    }
}

/// A decoder-only language model with a key/value cache.
pub trait CausalLm<B: Backend> {
    /// The model's cache for one sequence batch.
    type Cache;
    /// Why a forward pass can fail (context exceeded, bad ids).
    type Error: std::error::Error + Send + Sync + 'static;

    /// A cache with room for `capacity` positions.
    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache;

    /// Runs `ids` (`[batch, t]`) after what the cache holds and returns the logits
    /// `[batch, t or 1, vocab]` (or the hidden states `[batch, t, d]` for `Logits::Hidden`).
    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, Self::Error>;

    /// The longest sequence the model accepts.
    fn max_positions(&self) -> usize;

    /// Tokens in the vocabulary (ids must be below it).
    fn vocab_size(&self) -> usize;

    /// The device the weights are on.
    fn device(&self) -> B::Device;

    /// A prompt this model accepts, made from arbitrary ids (benchmarks, random weights): most
    /// models take any ids as they are; ChatGLM-6B needs its `[gMASK] <sop>` layout.
    fn valid_prompt(&self, ids: Vec<u32>) -> Vec<u32> {
        ids
    }
}

/// Why generation stopped early or failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError<E: std::error::Error + 'static> {
    /// The prompt is empty.
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    /// The prompt (plus the tokens asked for) does not fit the context.
    #[error(
        "prompt of {prompt} tokens + {new} new tokens exceeds the model's context of {context}"
    )]
    TooLong {
        /// Prompt tokens.
        prompt: usize,
        /// New tokens asked for.
        new: usize,
        /// The model's context length.
        context: usize,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadId {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Model(E),
}

/// Generates up to `max_new` tokens after `prompt`, calling `on_token` with each new id as soon
/// as it is chosen (return `false` to stop). Stops early at any id in `stop`. Returns the new
/// ids (a stop id included).
pub fn generate<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>, GenerateError<M::Error>> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let vocab = model.vocab_size();
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(GenerateError::BadId { id, vocab });
    }
    let context = model.max_positions();
    if prompt.len().saturating_add(max_new) > context {
        return Err(GenerateError::TooLong {
            prompt: prompt.len(),
            new: max_new,
            context,
        });
    }
    let device = model.device();
    let mut cache = model.new_cache(1, prompt.len() + max_new);
    let mut history: Vec<u32> = prompt.to_vec();
    let mut new_ids = Vec::with_capacity(max_new);
    let mut input = prompt.to_vec();
    while new_ids.len() < max_new {
        let ids = ids_tensor::<B>(&input, &device);
        let logits = model
            .forward_cached(ids, &mut cache, Logits::Last)
            .map_err(GenerateError::Model)?;
        let [_, t, vocab] = logits.dims();
        let row: Vec<f32> = logits
            .slice([0..1, t - 1..t, 0..vocab])
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 logits");
        let next = sampler.sample(&row, &history);
        history.push(next);
        new_ids.push(next);
        if !on_token(next) || stop.contains(&next) {
            break;
        }
        input = vec![next];
    }
    Ok(new_ids)
}

/// A `[1, n]` tensor of token ids.
pub fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}
