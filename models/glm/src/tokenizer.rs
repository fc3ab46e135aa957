//! The tokenizers of the GLM family read from the files they ship, as [`TextTokenizer`]s.
//!
//! - ChatGLM-6B (v1): `ice_text.model`, a SentencePiece model whose ids are shifted by 20000
//!   image tokens; `\n`, tabs and runs of 2–80 spaces become the pieces `<n>`, `<|tab|>`,
//!   `<|blank_N|>` before SentencePiece sees the text.
//! - ChatGLM2/3: `tokenizer.model` (SentencePiece) plus special tokens after its pieces:
//!   `[MASK] [gMASK] [sMASK] sop eop`, and for v3 `<|system|> <|user|> <|assistant|>
//!   <|observation|>`.
//! - GLM-4: `tokenizer.model` as tiktoken ranks (`base64 rank` lines), GLM-4's pre-tokenizer
//!   regex, byte-level BPE, and 14 special tokens after the ranks.
//!
//! SentencePiece `.model` files are protobuf `ModelProto` messages; [`SpModel::parse`] reads
//! them with a small wire-format decoder. The pieces become a `tokenizers` Unigram or BPE model
//! (as `trainer_spec.model_type` says) with SentencePiece's normalisation (precompiled
//! charsmap, extra-whitespace removal, `▁` dummy prefix and whitespace escaping), byte
//! fallback, user-defined pieces as added tokens and control pieces as special tokens.
//!
//! Known differences from the originals, on text nobody types by accident: special-token text
//! (`[gMASK]`, `<|user|>`, `</s>`…) inside a text is encoded as that special token (v2/v3 and
//! GLM-4's tiktoken encode it as plain characters); the ids 0..20000 of v1 decode to nothing
//! (as in the original) and have no token string.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Precompiled, Prepend, Replace, Sequence};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};
use zoo_nn::TextTokenizer;

use crate::chat::Generation;
use crate::GlmError;

/// ChatGLM-6B's id offset: ids below it are image tokens.
pub const V1_IMAGE_TOKENS: u32 = 20000;
/// ChatGLM-6B's special pieces, in the order the original appends them.
pub const V1_SPECIAL_TOKENS: [&str; 8] = [
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<unused_0>",
    "<sop>",
    "<eop>",
    "<ENC>",
    "<dBLOCK>",
];
/// ChatGLM2-6B's special tokens, numbered after the SentencePiece pieces.
pub const V2_SPECIAL_TOKENS: [&str; 5] = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"];
/// ChatGLM3-6B's special tokens, numbered after the SentencePiece pieces.
pub const V3_SPECIAL_TOKENS: [&str; 9] = [
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "sop",
    "eop",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
];
/// GLM-4's special tokens, numbered after the tiktoken ranks.
pub const GLM4_SPECIAL_TOKENS: [&str; 14] = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
];
/// GLM-4's pre-tokenizer regex (tiktoken `pat_str`).
pub const GLM4_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const SPACE_SYMBOL: &str = "\u{2581}";
const V1_MAX_BLANK: usize = 80;

/// The type of a SentencePiece piece (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece.
    Normal,
    /// The unknown-token piece.
    Unknown,
    /// A control piece (`<s>`, `</s>`…): never produced from text.
    Control,
    /// A user-defined piece: always kept whole.
    UserDefined,
    /// A reserved, unused piece.
    Unused,
    /// A byte-fallback piece `<0xXX>`.
    Byte,
}

/// One piece of a SentencePiece model.
#[derive(Debug, Clone, PartialEq)]
pub struct SpPiece {
    /// The piece text (`▁` for spaces).
    pub piece: String,
    /// Its score (log probability for Unigram, merge priority for BPE).
    pub score: f32,
    /// Its type.
    pub kind: PieceType,
}

/// The segmentation algorithm of a SentencePiece model (`TrainerSpec.ModelType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpModelType {
    /// Unigram language model (Viterbi over piece scores).
    Unigram,
    /// Byte-pair encoding (merges by piece score).
    Bpe,
}

/// The normaliser settings of a SentencePiece model (`NormalizerSpec`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpNormalizer {
    /// Rule name (`nmt_nfkc`, `identity`, `user_defined`…).
    pub name: String,
    /// Precompiled character map (empty for `identity`).
    pub precompiled_charsmap: Vec<u8>,
    /// Whether a `▁` is put in front of the text.
    pub add_dummy_prefix: bool,
    /// Whether leading, trailing and repeated spaces are removed.
    pub remove_extra_whitespaces: bool,
    /// Whether spaces become `▁`.
    pub escape_whitespaces: bool,
}

/// A SentencePiece `.model` file: pieces, model type and normaliser.
#[derive(Debug, Clone, PartialEq)]
pub struct SpModel {
    /// The pieces; a piece's index is its id.
    pub pieces: Vec<SpPiece>,
    /// Unigram or BPE.
    pub model_type: SpModelType,
    /// Whether unknown characters fall back to `<0xXX>` byte pieces.
    pub byte_fallback: bool,
    /// `trainer_spec.treat_whitespace_as_suffix` (unsupported when set).
    pub whitespace_as_suffix: bool,
    /// The normaliser.
    pub normalizer: SpNormalizer,
}

impl SpModel {
    /// Reads a `.model` file.
    pub fn read(path: &Path) -> Result<Self, GlmError> {
        let bytes = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
        Self::parse(&bytes).map_err(|reason| file_err(path, reason))
    }

    /// Parses the bytes of a serialized `ModelProto`.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut model = SpModel {
            pieces: Vec::new(),
            model_type: SpModelType::Unigram,
            byte_fallback: false,
            whitespace_as_suffix: false,
            normalizer: SpNormalizer {
                name: String::new(),
                precompiled_charsmap: Vec::new(),
                add_dummy_prefix: true,
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            },
        };
        let mut model_type = 1u64;
        let mut r = Wire::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => model.pieces.push(parse_piece(b)?),
                (2, Value::Bytes(b)) => {
                    // TrainerSpec; repeated occurrences merge, as protobuf specifies.
                    let mut t = Wire::new(b);
                    while let Some((f, v)) = t.next_field()? {
                        match (f, v) {
                            (3, Value::Varint(v)) => model_type = v,
                            (24, Value::Varint(v)) => model.whitespace_as_suffix = v != 0,
                            (35, Value::Varint(v)) => model.byte_fallback = v != 0,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(b)) => {
                    let n = &mut model.normalizer;
                    let mut t = Wire::new(b);
                    while let Some((f, v)) = t.next_field()? {
                        match (f, v) {
                            (1, Value::Bytes(s)) => n.name = utf8(s, "normalizer name")?,
                            (2, Value::Bytes(s)) => n.precompiled_charsmap = s.to_vec(),
                            (3, Value::Varint(v)) => n.add_dummy_prefix = v != 0,
                            (4, Value::Varint(v)) => n.remove_extra_whitespaces = v != 0,
                            (5, Value::Varint(v)) => n.escape_whitespaces = v != 0,
                            _ => {}
                        }
                    }
                }
                (1..=3, _) => return Err(format!("field {field} has the wrong wire type")),
                _ => {}
            }
        }
        model.model_type = match model_type {
            1 => SpModelType::Unigram,
            2 => SpModelType::Bpe,
            3 => return Err("WORD SentencePiece models are not supported".into()),
            4 => return Err("CHAR SentencePiece models are not supported".into()),
            t => return Err(format!("unknown model type {t}")),
        };
        if model.pieces.is_empty() {
            return Err("not a SentencePiece model: no pieces".into());
        }
        Ok(model)
    }

    /// Id of the unknown piece, if any.
    pub fn unk_id(&self) -> Option<usize> {
        self.pieces
            .iter()
            .position(|p| p.kind == PieceType::Unknown)
    }
}

/// How a SentencePiece model is turned into a GLM tokenizer.
#[derive(Debug, Clone, Default)]
pub struct SpOptions {
    /// Added to every piece id (ChatGLM-6B: 20000 image tokens).
    pub id_offset: u32,
    /// ChatGLM-6B's preprocessing: `\n` → `<n>`, tab → `<|tab|>`, 2–80 spaces → `<|blank_N|>`.
    pub v1_whitespace: bool,
    /// Special tokens numbered after the pieces (ChatGLM2/3).
    pub extra_special: Vec<String>,
}

/// Checks a precompiled charsmap (a darts double-array trie over UTF-8 bytes, then the
/// normalised strings) before tokenizers' reader sees it: that reader reserves the trie size
/// the first 4 bytes claim, and its lookup indexes the array unchecked, so a corrupt map
/// aborts or panics on some input text. Every node a lookup can reach is visited once, with
/// every byte that may follow it, so no input text can index outside the trie or the strings.
pub fn check_charsmap(map: &[u8]) -> Result<(), String> {
    let (size, rest) = match map {
        [a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest),
        _ => return Err("shorter than its 4-byte trie size".into()),
    };
    if size > rest.len() || size < 4 {
        return Err(format!(
            "the trie takes {size} bytes but {} follow",
            rest.len()
        ));
    }
    let trie: Vec<usize> = rest[..size / 4 * 4]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let strings = std::str::from_utf8(&rest[size / 4 * 4..])
        .map_err(|_| "its normalised strings are not UTF-8".to_string())?;
    let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
    let label = |u: usize| u & ((1 << 31) | 0xFF);
    let mut seen = vec![false; trie.len()];
    let mut bases = vec![offset(trie[0])];
    while let Some(base) = bases.pop() {
        for c in 1..=255usize {
            let child = base ^ c;
            let Some(&unit) = trie.get(child) else {
                return Err(format!(
                    "node {child} lies outside the trie of {} units",
                    trie.len()
                ));
            };
            if label(unit) != c {
                continue;
            }
            let next = child ^ offset(unit);
            let Some(&leaf) = trie.get(next) else {
                return Err(format!(
                    "node {next} lies outside the trie of {} units",
                    trie.len()
                ));
            };
            if (unit >> 8) & 1 == 1 {
                let at = leaf & ((1 << 31) - 1);
                if at > strings.len() || !strings.is_char_boundary(at) {
                    return Err(format!(
                        "a replacement starts at byte {at} of {} bytes of strings",
                        strings.len()
                    ));
                }
            }
            if !std::mem::replace(&mut seen[next], true) {
                bases.push(next);
            }
        }
    }
    Ok(())
}

/// Builds a tokenizer from a parsed SentencePiece model.
pub fn sentencepiece_tokenizer(
    model: &SpModel,
    options: &SpOptions,
) -> Result<TextTokenizer, String> {
    if model.whitespace_as_suffix {
        return Err("treat_whitespace_as_suffix is not supported".into());
    }
    let offset = options.id_offset as usize;
    // Image tokens (v1) hold a space, which the normaliser never lets through: unmatchable.
    let mut names: Vec<String> = (0..offset).map(|i| format!("<image {i}>")).collect();
    names.extend(model.pieces.iter().map(|p| p.piece.clone()));
    let unk = model.unk_id().map(|i| i + offset);

    let mut inner = match model.model_type {
        SpModelType::Unigram => {
            let min = model
                .pieces
                .iter()
                .map(|p| p.score as f64)
                .fold(f64::INFINITY, f64::min);
            let vocab = names
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let score = if i < offset {
                        min
                    } else {
                        model.pieces[i - offset].score as f64
                    };
                    (name.clone(), score)
                })
                .collect();
            let unigram = Unigram::from(vocab, unk, model.byte_fallback)
                .map_err(|e| format!("cannot build the Unigram model: {e}"))?;
            Tokenizer::new(unigram)
        }
        SpModelType::Bpe => {
            let mut vocab: HashMap<String, u32> = HashMap::with_capacity(names.len());
            for (i, name) in names.iter().enumerate() {
                // A duplicated piece keeps its first id, as SentencePiece's lookup does.
                vocab.entry(name.clone()).or_insert(i as u32);
            }
            let merges = sentencepiece_merges(model, &vocab);
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
                .byte_fallback(model.byte_fallback)
                .fuse_unk(true)
                // an isolated user-defined piece is looked up whole
                .ignore_merges(
                    model
                        .pieces
                        .iter()
                        .any(|p| p.kind == PieceType::UserDefined),
                );
            if let Some(unk) = unk {
                builder = builder.unk_token(names[unk].clone());
            }
            let bpe = builder
                .build()
                .map_err(|e| format!("cannot build the BPE model: {e}"))?;
            Tokenizer::new(bpe)
        }
    };

    inner.with_normalizer(Some(sp_normalizer(model, options.v1_whitespace)?));
    inner.with_decoder(Some(sp_decoder(model, options)?));

    // User-defined pieces are kept whole: isolated in the normalised text, then found whole in
    // the vocabulary. (As added tokens they would be normalised too, dummy prefix included.)
    let mut user: Vec<&str> = model
        .pieces
        .iter()
        .filter(|p| p.kind == PieceType::UserDefined)
        .map(|p| p.piece.as_str())
        .collect();
    if !user.is_empty() {
        user.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let pattern = user
            .iter()
            .map(|p| regex_escape(p))
            .collect::<Vec<_>>()
            .join("|");
        let split = Split::new(
            SplitPattern::Regex(pattern),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| format!("cannot isolate the user-defined pieces: {e}"))?;
        inner.with_pre_tokenizer(Some(split));
    }
    let special: Vec<AddedToken> = model
        .pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceType::Control | PieceType::Unknown))
        .map(|p| AddedToken::from(p.piece.clone(), true))
        .collect();
    inner.add_special_tokens(&special);
    let next = (offset + model.pieces.len()) as u32;
    add_specials_in_order(&mut inner, &options.extra_special, next)?;
    Ok(TextTokenizer::new(inner))
}

/// Adds special tokens that must get the ids `first`, `first + 1`, … in order.
fn add_specials_in_order(
    inner: &mut Tokenizer,
    tokens: &[String],
    first: u32,
) -> Result<(), String> {
    for (i, t) in tokens.iter().enumerate() {
        if inner.token_to_id(t).is_some() {
            return Err(format!("special token {t} is already a piece of the model"));
        }
        inner.add_special_tokens(&[AddedToken::from(t.clone(), true)]);
        let want = first + i as u32;
        if inner.token_to_id(t) != Some(want) {
            return Err(format!("special token {t} did not get id {want}"));
        }
    }
    Ok(())
}

/// BPE merges equivalent to SentencePiece's: every split of a normal piece into two known
/// pieces, ordered by the score of the merged piece (higher first).
fn sentencepiece_merges(model: &SpModel, vocab: &HashMap<String, u32>) -> Vec<(String, String)> {
    let mut order: Vec<usize> = (0..model.pieces.len())
        .filter(|&i| model.pieces[i].kind == PieceType::Normal)
        .collect();
    order.sort_by(|&a, &b| {
        model.pieces[b]
            .score
            .total_cmp(&model.pieces[a].score)
            .then(a.cmp(&b))
    });
    let mut merges = Vec::new();
    for i in order {
        let piece = &model.pieces[i].piece;
        let mut local: Vec<(u32, u32, &str, &str)> = Vec::new();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, l, r));
            }
        }
        local.sort();
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, l, r)| (l.to_string(), r.to_string())),
        );
    }
    merges
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn replace(pattern: impl Into<ReplacePattern>, content: &str) -> Result<Replace, String> {
    Replace::new(pattern, content).map_err(|e| format!("bad replace rule: {e}"))
}

/// SentencePiece's normaliser (after ChatGLM-6B's whitespace preprocessing when asked).
fn sp_normalizer(model: &SpModel, v1_whitespace: bool) -> Result<NormalizerWrapper, String> {
    let mut steps: Vec<NormalizerWrapper> = Vec::new();
    if v1_whitespace {
        steps.push(replace("\n", "<n>")?.into());
        steps.push(replace("\t", "<|tab|>")?.into());
        for n in (2..=V1_MAX_BLANK).rev() {
            steps.push(replace(" ".repeat(n).as_str(), &format!("<|blank_{n}|>"))?.into());
        }
    }
    let spec = &model.normalizer;
    if !spec.precompiled_charsmap.is_empty() {
        check_charsmap(&spec.precompiled_charsmap)
            .map_err(|e| format!("bad precompiled charsmap: {e}"))?;
        let map = Precompiled::from(&spec.precompiled_charsmap)
            .map_err(|e| format!("bad precompiled charsmap: {e}"))?;
        steps.push(map.into());
    }
    if spec.remove_extra_whitespaces {
        steps.push(replace(ReplacePattern::Regex("^ +| +$".into()), "")?.into());
        steps.push(replace(ReplacePattern::Regex(" {2,}".into()), " ")?.into());
    }
    if spec.add_dummy_prefix {
        steps.push(Prepend::new(SPACE_SYMBOL.into()).into());
    }
    if spec.escape_whitespaces {
        steps.push(replace(" ", SPACE_SYMBOL)?.into());
    }
    Ok(Sequence::new(steps).into())
}

/// SentencePiece's decoding (and ChatGLM-6B's whitespace postprocessing).
fn sp_decoder(model: &SpModel, options: &SpOptions) -> Result<DecoderWrapper, String> {
    let mut steps: Vec<DecoderWrapper> = Vec::new();
    if options.id_offset > 0 {
        steps.push(replace(ReplacePattern::Regex("^<image [0-9]+>$".into()), "")?.into());
    }
    steps.push(replace(SPACE_SYMBOL, " ")?.into());
    steps.push(ByteFallback::new().into());
    steps.push(Fuse::new().into());
    if model.normalizer.add_dummy_prefix {
        steps.push(Strip::new(' ', 1, 0).into());
    }
    if options.v1_whitespace {
        steps.push(replace("<n>", "\n")?.into());
        steps.push(replace("<|tab|>", "\t")?.into());
        for n in 2..=V1_MAX_BLANK {
            steps.push(replace(format!("<|blank_{n}|>").as_str(), &" ".repeat(n))?.into());
        }
    }
    Ok(DecoderSequence::new(steps).into())
}

/// ChatGLM-6B's tokenizer from its `ice_text.model`.
pub fn chatglm_v1_tokenizer(path: &Path) -> Result<TextTokenizer, GlmError> {
    let model = SpModel::read(path)?;
    let options = SpOptions {
        id_offset: V1_IMAGE_TOKENS,
        v1_whitespace: true,
        extra_special: Vec::new(),
    };
    let tok = sentencepiece_tokenizer(&model, &options).map_err(|r| file_err(path, r))?;
    for t in ["[gMASK]", "<sop>", "<eop>"] {
        if tok.token_id(t).is_none() {
            return Err(file_err(path, format!("ChatGLM-6B piece {t} is missing")));
        }
    }
    Ok(tok)
}

/// ChatGLM2-6B's (`v3 = false`) or ChatGLM3-6B's tokenizer from its `tokenizer.model`.
pub fn chatglm_v2_tokenizer(path: &Path, v3: bool) -> Result<TextTokenizer, GlmError> {
    let model = SpModel::read(path)?;
    let specials: &[&str] = if v3 {
        &V3_SPECIAL_TOKENS
    } else {
        &V2_SPECIAL_TOKENS
    };
    let options = SpOptions {
        id_offset: 0,
        v1_whitespace: false,
        extra_special: specials.iter().map(|s| s.to_string()).collect(),
    };
    sentencepiece_tokenizer(&model, &options).map_err(|r| file_err(path, r))
}

/// Reads a tiktoken ranks file (`base64-token rank` per line), in rank order.
pub fn read_tiktoken_ranks(path: &Path) -> Result<Vec<Vec<u8>>, GlmError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    parse_tiktoken_ranks(&text).map_err(|r| file_err(path, r))
}

/// Parses tiktoken ranks text into the token bytes of rank 0, 1, 2, …
pub fn parse_tiktoken_ranks(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut entries: Vec<(u64, Vec<u8>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(tok), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("line {}: expected `base64-token rank`", n + 1));
        };
        let bytes = base64_decode(tok).map_err(|e| format!("line {}: {e}", n + 1))?;
        let rank: u64 = rank
            .parse()
            .map_err(|_| format!("line {}: bad rank {rank:?}", n + 1))?;
        entries.push((rank, bytes));
    }
    if entries.is_empty() {
        return Err("no ranks".into());
    }
    entries.sort_by_key(|e| e.0);
    let mut seen = HashSet::new();
    for (i, (rank, bytes)) in entries.iter().enumerate() {
        if *rank != i as u64 {
            return Err(format!(
                "ranks must be 0..{} without gaps or repeats; rank {rank} breaks that",
                entries.len()
            ));
        }
        if !seen.insert(bytes.as_slice()) {
            return Err(format!("token of rank {rank} appears twice"));
        }
    }
    Ok(entries.into_iter().map(|e| e.1).collect())
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("bad base64 character {:?}", c as char)),
        } as u32)
    };
    let body = s.trim_end_matches('=').as_bytes();
    if !s.len().is_multiple_of(4) || s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return Err(format!("bad base64 token {s:?}"));
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Ok(out)
}

/// GPT-2's map from bytes to printable characters (byte-level BPE's alphabet).
fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            b as char
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\u{FFFD}')
        };
    }
    map
}

/// The two parts tiktoken's byte-pair merging ends with on `token` using only ranks below
/// `max_rank`; `None` if it does not end with exactly two.
fn last_merge(token: &[u8], max_rank: u32, ranks: &HashMap<&[u8], u32>) -> Option<(usize, usize)> {
    let mut bounds: Vec<usize> = (0..=token.len()).collect();
    loop {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..bounds.len().saturating_sub(2) {
            if let Some(&r) = ranks.get(&token[bounds[i]..bounds[i + 2]]) {
                if r < max_rank && best.is_none_or(|(br, _)| r < br) {
                    best = Some((r, i));
                }
            }
        }
        match best {
            Some((_, i)) => {
                bounds.remove(i + 1);
            }
            None => break,
        }
    }
    (bounds.len() == 3).then(|| (0, bounds[1]))
}

/// A byte-level BPE tokenizer equivalent to tiktoken on `ranks` (token bytes in rank order)
/// with the pre-tokenizer `pattern` and special tokens numbered after the ranks.
pub fn tiktoken_tokenizer(
    ranks: &[Vec<u8>],
    pattern: &str,
    specials: &[&str],
) -> Result<TextTokenizer, String> {
    let map = byte_to_char();
    let text_of = |bytes: &[u8]| bytes.iter().map(|&b| map[b as usize]).collect::<String>();
    let rank_of: HashMap<&[u8], u32> = ranks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_slice(), i as u32))
        .collect();
    if let Some(b) = (0..=255u8).find(|b| !rank_of.contains_key(&[*b][..])) {
        return Err(format!("byte 0x{b:02X} has no rank"));
    }
    let vocab: HashMap<String, u32> = ranks
        .iter()
        .enumerate()
        .map(|(i, t)| (text_of(t), i as u32))
        .collect();
    let mut merges = Vec::new();
    for (rank, token) in ranks.iter().enumerate() {
        if token.len() < 2 {
            continue;
        }
        if let Some((_, cut)) = last_merge(token, rank as u32, &rank_of) {
            merges.push((text_of(&token[..cut]), text_of(&token[cut..])));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .build()
        .map_err(|e| format!("cannot build the BPE model: {e}"))?;
    let mut inner = Tokenizer::new(bpe);
    let split = Split::new(
        SplitPattern::Regex(pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| format!("bad pre-tokenizer pattern: {e}"))?;
    let pre: Vec<PreTokenizerWrapper> =
        vec![split.into(), ByteLevel::new(false, true, false).into()];
    inner.with_pre_tokenizer(Some(PreSequence::new(pre)));
    inner.with_decoder(Some(ByteLevel::new(false, true, false)));
    let specials: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    add_specials_in_order(&mut inner, &specials, ranks.len() as u32)?;
    Ok(TextTokenizer::new(inner))
}

/// GLM-4's tokenizer from its tiktoken-style `tokenizer.model`.
pub fn glm4_tokenizer(path: &Path) -> Result<TextTokenizer, GlmError> {
    let ranks = read_tiktoken_ranks(path)?;
    tiktoken_tokenizer(&ranks, GLM4_PATTERN, &GLM4_SPECIAL_TOKENS).map_err(|r| file_err(path, r))
}

/// Whether a `tokenizer.model` is a tiktoken ranks file (GLM-4) rather than SentencePiece.
fn is_tiktoken_file(path: &Path) -> Result<bool, GlmError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
    let head = &bytes[..bytes.len().min(256)];
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Ok(false);
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Ok(false);
    };
    let mut parts = line.split_whitespace();
    Ok(matches!(
        (parts.next(), parts.next().map(|r| r.parse::<u64>()), parts.next()),
        (Some(tok), Some(Ok(_)), None) if base64_decode(tok).is_ok()
    ))
}

/// The GLM generation whose tokenizer a model folder ships, from its files: `ice_text.model`
/// (v1), a SentencePiece `tokenizer.model` (v3 when `tokenizer_config.json` or
/// `tokenization_chatglm.py` names `<|user|>`, else v2), a tiktoken `tokenizer.model` or a
/// `tokenizer.json` (GLM-4). `None` when there is none of these.
pub fn detect_generation(dir: &Path) -> Result<Option<Generation>, GlmError> {
    if dir.join("ice_text.model").is_file() {
        return Ok(Some(Generation::V1));
    }
    let model = dir.join("tokenizer.model");
    if model.is_file() {
        if is_tiktoken_file(&model)? {
            return Ok(Some(Generation::Glm4));
        }
        let names_user = ["tokenizer_config.json", "tokenization_chatglm.py"]
            .iter()
            .any(|f| std::fs::read_to_string(dir.join(f)).is_ok_and(|s| s.contains("<|user|>")));
        return Ok(Some(if names_user {
            Generation::V3
        } else {
            Generation::V2
        }));
    }
    if dir.join("tokenizer.json").is_file() {
        return Ok(Some(Generation::Glm4));
    }
    Ok(None)
}

/// Loads the tokenizer of a model folder for `generation` (see [`detect_generation`]).
pub fn load_tokenizer(dir: &Path, generation: Generation) -> Result<TextTokenizer, GlmError> {
    let model = dir.join("tokenizer.model");
    match generation {
        Generation::V1 => chatglm_v1_tokenizer(&dir.join("ice_text.model")),
        Generation::V2 => chatglm_v2_tokenizer(&model, false),
        Generation::V3 => chatglm_v2_tokenizer(&model, true),
        Generation::Glm4 if model.is_file() => glm4_tokenizer(&model),
        Generation::Glm4 => {
            let json = dir.join("tokenizer.json");
            TextTokenizer::from_file(&json).map_err(|e| file_err(&json, e.to_string()))
        }
    }
}

fn file_err(path: &Path, reason: String) -> GlmError {
    GlmError::TokenizerFile {
        path: PathBuf::from(path),
        reason,
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
}

fn parse_piece(bytes: &[u8]) -> Result<SpPiece, String> {
    let mut piece = SpPiece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Wire::new(bytes);
    while let Some((field, value)) = r.next_field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => piece.piece = utf8(b, "piece")?,
            (2, Value::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, Value::Varint(v)) => {
                piece.kind = match v {
                    1 => PieceType::Normal,
                    2 => PieceType::Unknown,
                    3 => PieceType::Control,
                    4 => PieceType::UserDefined,
                    5 => PieceType::Unused,
                    6 => PieceType::Byte,
                    t => return Err(format!("piece {:?} has unknown type {t}", piece.piece)),
                }
            }
            (1..=3, _) => return Err(format!("piece field {field} has the wrong wire type")),
            _ => {}
        }
    }
    if piece.piece.is_empty() {
        return Err("a piece is empty".into());
    }
    Ok(piece)
}

/// A protobuf field value.
enum Value<'a> {
    Varint(u64),
    Fixed64(#[allow(dead_code)] u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// A minimal protobuf wire-format reader.
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated: {n} bytes announced, {} left",
                    self.buf.len() - self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.pos == self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| "field number too large".to_string())?;
        if field == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| "truncated")?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Value::Bytes(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().map_err(|_| "truncated")?,
            )),
            t => return Err(format!("unsupported wire type {t} (field {field})")),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_values() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("IQ==").unwrap(), b"!");
        assert_eq!(base64_decode("5L2g").unwrap(), "你".as_bytes());
        assert!(base64_decode("a$==").is_err());
        assert!(base64_decode("abc").is_err());
    }

    /// Found by the `sentencepiece` fuzz target: a charsmap whose trie points outside itself
    /// made tokenizers' normaliser panic on the first text encoded.
    #[test]
    fn a_corrupt_charsmap_is_an_error_at_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let bytes = std::fs::read(root.join("hostile/sentencepiece_bad_charsmap.model")).unwrap();
        let model = SpModel::parse(&bytes).unwrap();
        let options = SpOptions {
            id_offset: 0,
            v1_whitespace: false,
            extra_special: vec![],
        };
        let e = sentencepiece_tokenizer(&model, &options).unwrap_err();
        assert!(e.contains("bad precompiled charsmap"), "{e}");
        // The real maps pass the same check.
        for name in ["tokenizer.model", "ice_text.model"] {
            let real =
                SpModel::parse(&std::fs::read(root.join("glm/tokenizers").join(name)).unwrap())
                    .unwrap();
            if !real.normalizer.precompiled_charsmap.is_empty() {
                check_charsmap(&real.normalizer.precompiled_charsmap).unwrap();
            }
        }
        // A trie size beyond the bytes that follow (reserved unchecked by the reader).
        assert!(check_charsmap(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4]).is_err());
    }

    #[test]
    fn wire_errors_are_errors() {
        assert!(SpModel::parse(&[0x0a, 0x05, 0x0a]).is_err()); // truncated piece
        assert!(SpModel::parse(&[0xff; 12]).is_err()); // endless varint
        assert!(SpModel::parse(&[]).is_err()); // no pieces
        assert!(SpModel::parse(&[0x0b]).is_err()); // group wire type
    }

    #[test]
    fn ranks_need_no_gaps() {
        assert!(parse_tiktoken_ranks("IQ== 0\nIg== 2\n").is_err());
        assert!(parse_tiktoken_ranks("IQ== 0\nIQ== 1\n").is_err());
        assert!(parse_tiktoken_ranks("IQ== x\n").is_err());
        assert_eq!(
            parse_tiktoken_ranks("Ig== 1\nIQ== 0\n").unwrap(),
            vec![b"!".to_vec(), b"\"".to_vec()]
        );
    }
}
