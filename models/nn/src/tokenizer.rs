//! The tokenizer of a checkpoint, read from the files it ships, and streaming decoding.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// A tokenizer file that could not be read, or text that could not be (de)coded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer files are unreadable or malformed.
    #[error("cannot load tokenizer from {path}: {reason}")]
    Load {
        /// The file that failed.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Encoding failed.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// Decoding failed (for example an id outside the vocabulary).
    #[error("cannot decode ids: {0}")]
    Decode(String),
}

/// A checkpoint's tokenizer (a Hugging Face `tokenizers` tokenizer underneath).
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Vocabulary size with added tokens (`tokenizers` rebuilds the whole vocabulary map to
    /// answer this, so it is computed once).
    vocab_size: usize,
}

impl TextTokenizer {
    /// Wraps an already built tokenizer.
    pub fn new(inner: Tokenizer) -> Self {
        let vocab_size = inner.get_vocab_size(true);
        Self { inner, vocab_size }
    }

    /// Finds the tokenizer in a model folder: `tokenizer.json`, else `vocab.json` +
    /// `merges.txt`, else OpenAI's `encoder.json` + `vocab.bpe`. `None` if there is none.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, TokenizerError> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_file(&json).map(Some);
        }
        for (vocab, merges) in [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")] {
            let (vocab, merges) = (dir.join(vocab), dir.join(merges));
            if vocab.is_file() && merges.is_file() {
                return Self::from_byte_level_bpe(&vocab, &merges).map(Some);
            }
        }
        Ok(None)
    }

    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        Tokenizer::from_file(path)
            .map(Self::new)
            .map_err(|e| TokenizerError::Load {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Builds GPT-2's byte-level BPE from a vocabulary (`vocab.json` / `encoder.json`) and a
    /// merges list (`merges.txt` / `vocab.bpe`), with `<|endoftext|>` as a special token when
    /// the vocabulary has it.
    pub fn from_byte_level_bpe(vocab: &Path, merges: &Path) -> Result<Self, TokenizerError> {
        let load_err = |reason: String| TokenizerError::Load {
            path: vocab.to_path_buf(),
            reason,
        };
        let vocab_s = vocab
            .to_str()
            .ok_or_else(|| load_err("path is not UTF-8".into()))?;
        let merges_s = merges
            .to_str()
            .ok_or_else(|| load_err("path is not UTF-8".into()))?;
        let bpe = BPE::from_file(vocab_s, merges_s)
            .build()
            .map_err(|e| load_err(format!("{e} (with merges {})", merges.display())))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        if inner.token_to_id("<|endoftext|>").is_some() {
            inner.add_special_tokens(&[AddedToken::from("<|endoftext|>", true)]);
        }
        Ok(Self::new(inner))
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Text to ids; `add_special` adds what the tokenizer's post-processor adds (BOS, [CLS]…).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Ids to text; special tokens are kept unless `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let vocab = self.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&id| id >= vocab) {
            return Err(TokenizerError::Decode(format!(
                "id {bad} is outside the vocabulary of {vocab} tokens"
            )));
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

/// Turns a stream of generated ids into text pieces as soon as they are whole characters.
///
/// Byte-level BPE splits multi-byte characters across tokens; a piece is released only when
/// the decoded text does not end inside a character. Only a short window of recent ids is
/// decoded each step, so the cost per token stays constant.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl TextStream {
    /// A stream that starts after `context` (ids already shown, e.g. the prompt), so that
    /// tokenizers which drop a leading space at the start of a text decode the first new
    /// token as it reads in context.
    pub fn new(context: &[u32]) -> Self {
        let keep = context.len().min(4);
        let ids = context[context.len() - keep..].to_vec();
        Self {
            prefix: 0,
            read: ids.len(),
            ids,
        }
    }

    /// Adds one id; returns the text it completes, if any.
    pub fn push(
        &mut self,
        tokenizer: &TextTokenizer,
        id: u32,
    ) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        // Ids past the tokenizer's vocabulary (an embedding padded beyond it, in the prompt
        // or generated) have no text: the window decodes without them.
        let vocab = tokenizer.vocab_size();
        let text = |ids: &[u32]| {
            if ids.iter().all(|&id| (id as usize) < vocab) {
                return tokenizer.decode(ids, false);
            }
            let known: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|&id| (id as usize) < vocab)
                .collect();
            tokenizer.decode(&known, false)
        };
        let before = text(&self.ids[self.prefix..self.read])?;
        let now = text(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            // The window's decoding changed retroactively (rare); emit the new tail.
            let piece = now
                .char_indices()
                .nth(before.chars().count())
                .map(|(i, _)| now[i..].to_string())
                .unwrap_or_default();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }
}
