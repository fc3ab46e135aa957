//! One GLM model of any generation behind one type, with its tokenizer, prompt encoding and
//! chat format: what `zoo generate` and `zoo chat` need, for a Rust user too.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{backend::Backend, Int, Tensor};
use zoo_nn::chat::{ChatError, ChatFormat, Message};
use zoo_nn::{CausalLm, Logits, TextEncoding, TextGenerator, TextTokenizer, WeightFormat};

use crate::chat::{render_ids, stop_ids, Generation, Turn};
use crate::{detect, hf, tokenizer, v1, v2, GlmError, GlmKind};

/// A GLM module of any generation.
#[derive(Debug)]
pub enum Glm<B: Backend> {
    /// ChatGLM-6B.
    V1(v1::ChatGlmV1<B>),
    /// ChatGLM2/3 or GLM-4 in the `chatglm` layout.
    V2(v2::ChatGlmV2<B>),
    /// GLM-4 as HF `GlmForCausalLM`.
    Hf(hf::GlmHf<B>),
}

/// The cache of a [`Glm`] model.
#[derive(Debug)]
pub enum GlmCache<B: Backend> {
    /// ChatGLM-6B's cache (with its prompt layout).
    V1(v1::V1Cache<B>),
    /// ChatGLM2/3 / GLM-4.
    V2(v2::V2Cache<B>),
    /// HF GLM-4.
    Hf(hf::GlmHfCache<B>),
}

impl<B: Backend> CausalLm<B> for Glm<B> {
    type Cache = GlmCache<B>;
    type Error = GlmError;

    fn new_cache(&self, batch: usize, capacity: usize) -> Self::Cache {
        match self {
            Glm::V1(m) => GlmCache::V1(m.new_cache(batch, capacity)),
            Glm::V2(m) => GlmCache::V2(m.new_cache(batch, capacity)),
            Glm::Hf(m) => GlmCache::Hf(m.new_cache(batch, capacity)),
        }
    }

    fn forward_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut Self::Cache,
        logits: Logits,
    ) -> Result<Tensor<B, 3>, GlmError> {
        match (self, cache) {
            (Glm::V1(m), GlmCache::V1(c)) => m.forward_cached(ids, c, logits),
            (Glm::V2(m), GlmCache::V2(c)) => m.forward_cached(ids, c, logits),
            (Glm::Hf(m), GlmCache::Hf(c)) => m.forward_cached(ids, c, logits),
            _ => Err(GlmError::Input(
                "the cache belongs to another GLM generation".into(),
            )),
        }
    }

    fn max_positions(&self) -> usize {
        match self {
            Glm::V1(m) => m.max_positions(),
            Glm::V2(m) => m.max_positions(),
            Glm::Hf(m) => m.max_positions(),
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Glm::V1(m) => m.vocab_size(),
            Glm::V2(m) => m.vocab_size(),
            Glm::Hf(m) => m.vocab_size(),
        }
    }

    fn device(&self) -> B::Device {
        match self {
            Glm::V1(m) => m.device(),
            Glm::V2(m) => m.device(),
            Glm::Hf(m) => m.device(),
        }
    }

    fn valid_prompt(&self, ids: Vec<u32>) -> Vec<u32> {
        match self {
            Glm::V1(m) => m.valid_prompt(ids),
            Glm::V2(m) => m.valid_prompt(ids),
            Glm::Hf(m) => m.valid_prompt(ids),
        }
    }
}

/// ChatGLM's chat, built as ids exactly as the generation's original code builds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlmFormat(pub Generation);

impl ChatFormat for GlmFormat {
    fn name(&self) -> String {
        self.0.name().to_string()
    }

    fn prompt_ids(
        &self,
        messages: &[Message],
        tokenizer: &TextTokenizer,
    ) -> Result<Vec<u32>, ChatError> {
        if messages.iter().any(|m| m.role == "system") {
            return Err(ChatError::NoSystem(self.name()));
        }
        let (query, past) = match messages.split_last() {
            Some((q, past)) if q.role == "user" => (q, past),
            _ => return Err(ChatError::NoUserMessage),
        };
        let mut turns: Vec<Turn> = Vec::new();
        for pair in past.chunks(2) {
            match pair {
                [q, a] if q.role == "user" && a.role == "assistant" => {
                    turns.push((q.content.clone(), a.content.clone()))
                }
                _ => {
                    return Err(ChatError::Format(format!(
                        "the {} format needs alternating user and assistant messages",
                        self.name()
                    )))
                }
            }
        }
        render_ids(self.0, tokenizer, &turns, &query.content)
            .map_err(|e| ChatError::Format(e.to_string()))
    }

    fn stop_ids(&self, tokenizer: &TextTokenizer) -> Vec<u32> {
        stop_ids(self.0, tokenizer).unwrap_or_default()
    }
}

/// A GLM model with its tokenizer, prompt encoding and chat format.
pub type GlmGenerator<B> = TextGenerator<B, Glm<B>>;

/// Opens a GLM folder of any generation (see [`detect`]) with its tokenizer and chat format.
///
/// Text prompts get the special ids the original tokenizer adds, as transformers'
/// `tokenizer(text)` does: ChatGLM-6B appends `[gMASK] <sop>`, ChatGLM2/3 prepend
/// `[gMASK] sop`, GLM-4 prepends `[gMASK] <sop>` (a `tokenizer.json` adds them itself).
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<GlmGenerator<B>, GlmError> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<GlmGenerator<B>, GlmError> {
    let generation = tokenizer::detect_generation(dir)?;
    let tok = match generation {
        Some(g) => Some(tokenizer::load_tokenizer(dir, g)?),
        None => TextTokenizer::from_dir(dir)?,
    };
    let (model, eos_ids) = match detect(dir)? {
        GlmKind::V1 => {
            let (config, m) = v1::load_with::<B>(dir, device, format)?;
            (Glm::V1(m), vec![config.eos_token_id])
        }
        GlmKind::V2 => {
            let (_, m) = v2::load_with::<B>(dir, device, format)?;
            (Glm::V2(m), config_eos_ids(dir)?)
        }
        GlmKind::Hf => {
            let (config, m) = hf::load_with::<B>(dir, device, format)?;
            (Glm::Hf(m), config.eos_ids())
        }
    };
    let id = |t: &str| tok.as_ref().and_then(|k| k.token_id(t));
    let wrap = |prefix: &[&str], suffix: &[&str]| -> Option<TextEncoding> {
        Some(TextEncoding::Wrap {
            prefix: prefix.iter().map(|t| id(t)).collect::<Option<_>>()?,
            suffix: suffix.iter().map(|t| id(t)).collect::<Option<_>>()?,
        })
    };
    let tiktoken = dir.join("tokenizer.model").is_file();
    let encoding = match generation {
        Some(Generation::V1) => wrap(&[], &["[gMASK]", "<sop>"]),
        Some(Generation::V2 | Generation::V3) => wrap(&["[gMASK]", "sop"], &[]),
        Some(Generation::Glm4) if tiktoken => wrap(&["[gMASK]", "<sop>"], &[]),
        _ => None,
    }
    .unwrap_or(TextEncoding::Tokenizer);
    let format = generation.map(|g| Arc::new(GlmFormat(g)) as Arc<dyn ChatFormat>);
    Ok(TextGenerator::new(
        model, dir, tok, encoding, format, eos_ids,
    ))
}

/// The `eos_token_id` of a folder's `config.json` (a number or a list); empty when absent.
fn config_eos_ids(dir: &Path) -> Result<Vec<u32>, GlmError> {
    let json = crate::error::read_json(&dir.join("config.json"))?;
    Ok(match json.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u32).into_iter().collect(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_u64().map(|n| n as u32))
            .collect(),
        _ => Vec::new(),
    })
}
