//! The tokenizer stored in a GGUF file's metadata, rebuilt as a `tokenizers::Tokenizer`.
//!
//! Two vocabulary kinds are supported, named by `tokenizer.ggml.model`:
//! - `gpt2`: byte-level BPE from `tokens` and `merges`, split into words the way
//!   `tokenizer.ggml.pre` names (llama.cpp's pre-tokenizer names);
//! - `llama`: SentencePiece-style BPE from `tokens` and `scores` (merges are recovered from the
//!   scores: a pair merges earlier when the token it forms scores higher), with byte fallback
//!   and `▁` standing for spaces.
//!
//! Tokens typed CONTROL (and the bos/eos/unk/pad tokens) become special added tokens, so
//! `decode(ids, true)` skips them; tokens typed USER_DEFINED become plain added tokens, matched
//! whole in the text.

use std::collections::{HashMap, HashSet};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::NormalizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{GgufError, Result};
use crate::reader::GgufFile;

/// llama.cpp's token type for a normal token.
pub const TOKEN_NORMAL: i64 = 1;
/// llama.cpp's token type for the unknown token.
pub const TOKEN_UNKNOWN: i64 = 2;
/// llama.cpp's token type for control tokens such as `<s>` or `<|im_start|>`.
pub const TOKEN_CONTROL: i64 = 3;
/// llama.cpp's token type for user-defined added tokens.
pub const TOKEN_USER_DEFINED: i64 = 4;
/// llama.cpp's token type for byte tokens such as `<0x0A>`.
pub const TOKEN_BYTE: i64 = 6;

/// LLaMA 3's word-splitting pattern (llama.cpp `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's word-splitting pattern (llama.cpp `qwen2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The llama.cpp pre-tokenizer names accepted for `gpt2` vocabularies.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] = &[
    "default",
    "gpt-2",
    "gpt2",
    "smollm",
    "starcoder",
    "refact",
    "codeshell",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "smaug-bpe",
    "dbrx",
    "qwen2",
    "deepseek-r1-qwen",
];

/// A GGUF file's tokenizer with its special token ids.
#[derive(Clone)]
pub struct GgufTokenizer {
    /// The tokenizer (adds bos/eos itself when the file asks for it).
    pub tokenizer: Tokenizer,
    /// The beginning-of-sequence id (`tokenizer.ggml.bos_token_id`).
    pub bos_id: Option<u32>,
    /// The end-of-sequence id (`tokenizer.ggml.eos_token_id`).
    pub eos_id: Option<u32>,
    /// The unknown-token id (`tokenizer.ggml.unknown_token_id`).
    pub unk_id: Option<u32>,
    /// The padding id (`tokenizer.ggml.padding_token_id`).
    pub pad_id: Option<u32>,
    /// Whether encoding with special tokens prepends bos.
    pub add_bos: bool,
    /// Whether encoding with special tokens appends eos.
    pub add_eos: bool,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("unk_id", &self.unk_id)
            .field("pad_id", &self.pad_id)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish()
    }
}

impl GgufTokenizer {
    /// Token ids for `text`, with bos/eos added when `add_special_tokens` and the file asks.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| GgufError::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text for `ids`, leaving out special tokens when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special_tokens)
            .map_err(|e| GgufError::Tokenizer(format!("decoding failed: {e}")))
    }
}

fn tok_err(msg: impl std::fmt::Display) -> GgufError {
    GgufError::Tokenizer(msg.to_string())
}

/// What the metadata says about the vocabulary, shared by both kinds.
struct VocabInfo<'a> {
    tokens: &'a [String],
    types: Option<Vec<i64>>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
}

impl GgufFile {
    /// The tokenizer described by the `tokenizer.ggml.*` metadata.
    pub fn tokenizer(&self) -> Result<GgufTokenizer> {
        let model = self.get_str("tokenizer.ggml.model")?;
        let tokens = self.get_str_array("tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            return Err(tok_err("tokenizer.ggml.tokens is empty"));
        }
        let types = match self.get("tokenizer.ggml.token_type") {
            None => None,
            Some(_) => Some(self.get_int_array("tokenizer.ggml.token_type")?),
        };
        if let Some(t) = &types {
            if t.len() != tokens.len() {
                return Err(tok_err(format!(
                    "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                    t.len(),
                    tokens.len()
                )));
            }
        }
        let id = |key: &str| -> Result<Option<u32>> {
            if self.get(key).is_none() {
                return Ok(None);
            }
            let id = self.get_u32(key)?;
            if id as usize >= tokens.len() {
                return Err(tok_err(format!(
                    "{key} is {id}, outside the vocabulary of {} tokens",
                    tokens.len()
                )));
            }
            Ok(Some(id))
        };
        let info = VocabInfo {
            tokens,
            types,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            unk_id: id("tokenizer.ggml.unknown_token_id")?,
            pad_id: id("tokenizer.ggml.padding_token_id")?,
        };
        let flag = |key: &str, default: bool| -> Result<bool> {
            match self.get(key) {
                None => Ok(default),
                Some(_) => self.get_bool(key),
            }
        };
        let (mut tokenizer, byte_level, default_bos) = match model {
            "gpt2" => {
                let pre = match self.get("tokenizer.ggml.pre") {
                    None => "default",
                    Some(_) => self.get_str("tokenizer.ggml.pre")?,
                };
                (self.byte_level_bpe(&info, pre)?, true, false)
            }
            "llama" => {
                let prefix = flag("tokenizer.ggml.add_space_prefix", true)?;
                (self.sentencepiece_bpe(&info, prefix)?, false, true)
            }
            other => {
                return Err(tok_err(format!(
                "tokenizer.ggml.model {other:?} is not supported (supported: \"gpt2\", \"llama\")"
            )))
            }
        };
        add_special_tokens(&mut tokenizer, &info, byte_level);
        let add_bos = flag("tokenizer.ggml.add_bos_token", default_bos)?;
        let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
        let bos = if add_bos {
            Some(
                info.bos_id
                    .ok_or_else(|| tok_err("add_bos_token is set but bos_token_id is missing"))?,
            )
        } else {
            None
        };
        let eos = if add_eos {
            Some(
                info.eos_id
                    .ok_or_else(|| tok_err("add_eos_token is set but eos_token_id is missing"))?,
            )
        } else {
            None
        };
        if bos.is_some() || eos.is_some() {
            tokenizer.with_post_processor(Some(bos_eos_processor(&info, bos, eos)?));
        }
        Ok(GgufTokenizer {
            tokenizer,
            bos_id: info.bos_id,
            eos_id: info.eos_id,
            unk_id: info.unk_id,
            pad_id: info.pad_id,
            add_bos,
            add_eos,
        })
    }

    /// The beginning-of-sequence token id, if the file names one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.get_u32("tokenizer.ggml.bos_token_id").ok()
    }

    /// The end-of-sequence token id, if the file names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.get_u32("tokenizer.ggml.eos_token_id").ok()
    }

    fn byte_level_bpe(&self, info: &VocabInfo<'_>, pre: &str) -> Result<Tokenizer> {
        let merges = self
            .get_str_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        tok_err(format!(
                            "merge {i} ({m:?}) has no space between its two parts"
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        // A byte-level vocabulary spells every token in GPT-2's byte alphabet; a token written
        // in plain text instead is respelled from its UTF-8 bytes.
        let alphabet = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
        let byte_chars = byte_to_char();
        let vocab: Vocab = info
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
                    t.clone()
                } else {
                    t.bytes().map(|b| byte_chars[b as usize]).collect()
                };
                (spelled, i as u32)
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| tok_err(format!("cannot build the BPE model: {e}")))?;
        let pre_tokenizer = byte_level_pre_tokenizer(pre)?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        Ok(tokenizer)
    }

    fn sentencepiece_bpe(&self, info: &VocabInfo<'_>, add_prefix: bool) -> Result<Tokenizer> {
        let scores = self.get_f32_array("tokenizer.ggml.scores")?;
        if scores.len() != info.tokens.len() {
            return Err(tok_err(format!(
                "tokenizer.ggml.scores has {} entries but tokenizer.ggml.tokens has {}",
                scores.len(),
                info.tokens.len()
            )));
        }
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(info.tokens.len());
        let mut last_score: HashMap<&str, f32> = HashMap::with_capacity(info.tokens.len());
        for (i, (t, &s)) in info.tokens.iter().zip(scores).enumerate() {
            ids.insert(t, i as u32);
            last_score.insert(t, s);
        }
        let merges = merges_from_scores(info.tokens, &ids, &last_score);
        let vocab: Vocab = ids.iter().map(|(&t, &i)| (t.to_string(), i)).collect();
        let mut builder = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(unk) = info.unk_id {
            builder = builder.unk_token(info.tokens[unk as usize].clone());
        } else if ids.contains_key("<unk>") {
            builder = builder.unk_token("<unk>".to_string());
        }
        let bpe = builder
            .build()
            .map_err(|e| tok_err(format!("cannot build the BPE model: {e}")))?;
        // Like llama.cpp: a space before the text (and after each special token) when the file
        // says add_space_prefix, then every space spelled `▁`; no splitting into words.
        let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
        if add_prefix {
            normalizers.push(Prepend::new("▁".to_string()).into());
        }
        normalizers.push(Replace::new(" ", "▁").map_err(tok_err)?.into());
        let mut decoders: Vec<DecoderWrapper> = vec![
            Replace::new("▁", " ").map_err(tok_err)?.into(),
            ByteFallback::new().into(),
            Fuse::new().into(),
        ];
        if add_prefix {
            decoders.push(Strip::new(' ', 1, 0).into());
        }
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_normalizer(Some(NormalizerSequence::new(normalizers)));
        tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));
        Ok(tokenizer)
    }
}

/// Merges implied by SentencePiece scores: every split of a token into two vocabulary tokens,
/// best-scoring result first (ties: shorter left part, then shorter right part, then by ids).
fn merges_from_scores(
    tokens: &[String],
    ids: &HashMap<&str, u32>,
    scores: &HashMap<&str, f32>,
) -> Vec<(String, String)> {
    let mut seen = HashSet::with_capacity(tokens.len());
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for t in tokens {
        if !seen.insert(t.as_str()) {
            continue;
        }
        let score = scores[t.as_str()];
        let start = merges.len();
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(cut);
            if ids.contains_key(l) && ids.contains_key(r) {
                merges.push((l, r, score));
            }
        }
        merges[start..].sort_by_key(|&(l, r, _)| (ids[l], ids[r]));
    }
    let key = |m: &(&str, &str, f32)| (m.2, m.0.chars().count(), m.1.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        kb.0.total_cmp(&ka.0)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

/// GPT-2's table from bytes to the printable characters that spell them.
fn byte_to_char() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                let c = char::from_u32(next).unwrap_or('?');
                next += 1;
                c
            }
        })
        .collect()
}

/// The word splitting a llama.cpp pre-tokenizer name stands for, followed by byte-level spelling.
fn byte_level_pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?;
        Ok(PreSequence::new(vec![
            split.into(),
            tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    let gpt2 = || tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
    Ok(match pre {
        // llama.cpp's own "default" differs slightly; like transformers we use GPT-2's split.
        "default" | "gpt-2" | "gpt2" => gpt2().into(),
        // Every digit on its own, then GPT-2's split (SmolLM's own tokenizer.json does the same).
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreSequence::new(vec![Digits::new(true).into(), gpt2().into()]).into()
        }
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "dbrx" => split(LLAMA3_SPLIT)?,
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_SPLIT)?,
        other => {
            return Err(tok_err(format!(
                "pre-tokenizer tokenizer.ggml.pre = {other:?} is not supported (supported: {})",
                SUPPORTED_PRE_TOKENIZERS.join(", ")
            )))
        }
    })
}

/// Adds CONTROL tokens and the named bos/eos/unk/pad tokens as special tokens, and USER_DEFINED
/// tokens as plain added tokens.
fn add_special_tokens(tokenizer: &mut Tokenizer, info: &VocabInfo<'_>, byte_level: bool) {
    let alphabet = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
    // In a byte-level vocabulary a token outside the byte alphabet cannot be a real token.
    let spelled = |t: &str| !byte_level || t.chars().all(|c| alphabet.contains(&c));
    let named: HashSet<u32> = [info.bos_id, info.eos_id, info.unk_id, info.pad_id]
        .into_iter()
        .flatten()
        .collect();
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (i, t) in info.tokens.iter().enumerate() {
        let ty = info.types.as_ref().map_or(TOKEN_NORMAL, |v| v[i]);
        if (ty == TOKEN_CONTROL || named.contains(&(i as u32))) && spelled(t) && !t.is_empty() {
            special.push(AddedToken::from(t.clone(), true).normalized(false));
        } else if ty == TOKEN_USER_DEFINED && !t.is_empty() {
            user.push(AddedToken::from(t.clone(), false).normalized(false));
        }
    }
    tokenizer.add_special_tokens(&special);
    tokenizer.add_tokens(&user);
}

fn bos_eos_processor(
    info: &VocabInfo<'_>,
    bos: Option<u32>,
    eos: Option<u32>,
) -> Result<TemplateProcessing> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    if let Some(b) = bos {
        single.push("bos");
        specials.push(
            SpecialToken::new("bos".into(), vec![b], vec![info.tokens[b as usize].clone()])
                .map_err(tok_err)?,
        );
    }
    single.push("$A");
    if let Some(e) = eos {
        single.push("eos");
        specials.push(
            SpecialToken::new("eos".into(), vec![e], vec![info.tokens[e as usize].clone()])
                .map_err(tok_err)?,
        );
    }
    for s in &single {
        pair.push(if *s == "$A" { "$A" } else { s });
    }
    for s in &single {
        pair.push(if *s == "$A" { "$B:1" } else { s });
    }
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(tok_err)?
        .try_pair(pair)
        .map_err(tok_err)?
        .special_tokens(specials)
        .build()
        .map_err(tok_err)
}
