//! Sentence embeddings and fill-mask on top of [`Bert`]: WordPiece tokenization, padded
//! batches, pooling and normalisation as a sentence-transformers folder describes them.
//!
//! A sentence-transformers folder has `modules.json` listing a `Transformer` (the BERT
//! folder, usually the root), a `Pooling` folder with `config.json` (`pooling_mode_*`
//! flags) and optionally `Normalize`. A plain HF folder gets mean pooling without
//! normalisation (what sentence-transformers does with a bare checkpoint).

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor};
use serde::Deserialize;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};
use zoo_nn::{TextTokenizer, TokenizerError, WeightFormat};

use crate::load::{load_with, BertError};
use crate::model::{Batch, Bert};
use crate::BertConfig;

/// One way of turning token states into a sentence vector (sentence-transformers' modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's (`[CLS]`) state.
    Cls,
    /// Element-wise maximum over real tokens.
    Max,
    /// Mean over real tokens.
    Mean,
    /// Sum over real tokens divided by the square root of their count.
    MeanSqrtLen,
}

/// `1_Pooling/config.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PoolingConfig {
    pooling_mode_cls_token: bool,
    pooling_mode_mean_tokens: bool,
    pooling_mode_max_tokens: bool,
    pooling_mode_mean_sqrt_len_tokens: bool,
    pooling_mode_weightedmean_tokens: bool,
    pooling_mode_lasttoken: bool,
}

/// One entry of `modules.json`.
#[derive(Debug, Deserialize)]
struct ModuleEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// A tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Ids with `[CLS]` / `[SEP]`, at most the model's maximum.
    pub ids: Vec<u32>,
    /// Tokens before truncation (equal to `ids.len()` when nothing was cut).
    pub full_len: usize,
}

impl Encoded {
    /// Whether the text was cut to fit the model.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// Embeddings of several texts, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// Whether each text was truncated to the maximum length.
    pub truncated: Vec<bool>,
}

/// One fill-mask answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The token as text (`tokenizer.decode([id])`, as the HF pipeline shows it).
    pub token: String,
    /// Its id.
    pub id: u32,
    /// Its softmax probability.
    pub prob: f32,
}

/// A BERT checkpoint with its tokenizer, pooling and normalisation: sentence embeddings and
/// masked-token prediction.
#[derive(Debug)]
pub struct SentenceEncoder<B: Backend> {
    /// The encoder.
    pub model: Bert<B>,
    /// Its config.
    pub config: BertConfig,
    /// Pooling modes, concatenated in this order (sentence-transformers' order).
    pub pooling: Vec<Pooling>,
    /// L2-normalise the pooled vector.
    pub normalize: bool,
    /// Longest token sequence fed to the model (`max_seq_length`, else the position table).
    pub max_len: usize,
    tokenizer: TextTokenizer,
    device: B::Device,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, BertError> {
    let text = std::fs::read_to_string(path).map_err(|e| BertError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| BertError::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Joins a `modules.json` path onto the folder, refusing paths that leave it.
fn sub_dir(dir: &Path, rel: &str) -> Result<PathBuf, BertError> {
    if rel.split(['/', '\\']).any(|c| c == "..") || Path::new(rel).is_absolute() {
        return Err(BertError::Config {
            path: dir.join("modules.json"),
            reason: format!("module path `{rel}` leaves the model folder"),
        });
    }
    Ok(dir.join(rel))
}

/// Reads the tokenizer of a BERT folder: `tokenizer.json` with its fixed padding and
/// truncation turned off, else `vocab.txt` as a BERT WordPiece tokenizer.
pub fn read_tokenizer(dir: &Path) -> Result<TextTokenizer, BertError> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        let mut inner = TextTokenizer::from_file(&json)?.inner().clone();
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Load {
                path: json.clone(),
                reason: e.to_string(),
            })?;
        return Ok(TextTokenizer::new(inner));
    }
    let vocab = dir.join("vocab.txt");
    if vocab.is_file() {
        return wordpiece_from_vocab(dir, &vocab);
    }
    Err(BertError::Tokenizer(TokenizerError::Load {
        path: dir.to_path_buf(),
        reason: "no tokenizer.json or vocab.txt".into(),
    }))
}

/// Builds BERT's tokenizer from `vocab.txt`: BertNormalizer (lowercase unless
/// `tokenizer_config.json` says `do_lower_case: false`), BertPreTokenizer, WordPiece, and the
/// `[CLS] … [SEP]` post-processor.
fn wordpiece_from_vocab(dir: &Path, vocab: &Path) -> Result<TextTokenizer, BertError> {
    let load_err = |reason: String| {
        BertError::Tokenizer(TokenizerError::Load {
            path: vocab.to_path_buf(),
            reason,
        })
    };
    let lowercase = {
        let path = dir.join("tokenizer_config.json");
        if path.is_file() {
            let v: serde_json::Value = read_json(&path)?;
            v.get("do_lower_case")
                .and_then(|b| b.as_bool())
                .unwrap_or(true)
        } else {
            true
        }
    };
    let vocab_s = vocab
        .to_str()
        .ok_or_else(|| load_err("path is not UTF-8".into()))?;
    let model = WordPiece::from_file(vocab_s)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let mut inner = Tokenizer::new(model);
    inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    inner.with_pre_tokenizer(Some(BertPreTokenizer));
    inner.with_decoder(Some(WordPieceDecoder::default()));
    let id = |t: &str| {
        inner
            .token_to_id(t)
            .ok_or_else(|| load_err(format!("the vocabulary has no `{t}`")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    inner.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .filter(|t| inner.token_to_id(t).is_some())
        .map(|t| AddedToken::from(*t, true))
        .collect();
    inner.add_special_tokens(&specials);
    Ok(TextTokenizer::new(inner))
}

impl<B: Backend> SentenceEncoder<B> {
    /// Loads a sentence-transformers folder or a plain HF BERT folder onto `device`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, BertError> {
        Self::load_with(dir, device, WeightFormat::AS_STORED)
    }

    /// [`SentenceEncoder::load`], keeping the encoder's matrices in `format`.
    pub fn load_with(
        dir: &Path,
        device: &B::Device,
        format: WeightFormat,
    ) -> Result<Self, BertError> {
        let mut model_dir = dir.to_path_buf();
        let mut pooling_dir = None;
        let mut normalize = false;
        let modules_path = dir.join("modules.json");
        if modules_path.is_file() {
            let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
            for m in modules {
                match m.kind.rsplit('.').next().unwrap_or("") {
                    "Transformer" => model_dir = sub_dir(dir, &m.path)?,
                    "Pooling" => pooling_dir = Some(sub_dir(dir, &m.path)?),
                    "Normalize" => normalize = true,
                    other => {
                        return Err(BertError::Config {
                            path: modules_path.clone(),
                            reason: format!("module type `{other}` is not supported"),
                        })
                    }
                }
            }
        }
        let pooling = match pooling_dir {
            Some(p) => parse_pooling(&p.join("config.json"))?,
            None => vec![Pooling::Mean],
        };
        let (config, model) = load_with::<B>(&model_dir, device, format)?;
        let tokenizer = read_tokenizer(&model_dir)?;
        let mut max_len = config.max_position_embeddings;
        for st_config in [
            model_dir.join("sentence_bert_config.json"),
            dir.join("sentence_bert_config.json"),
        ] {
            if st_config.is_file() {
                let v: serde_json::Value = read_json(&st_config)?;
                if let Some(m) = v.get("max_seq_length").and_then(|m| m.as_u64()) {
                    max_len = max_len.min(m as usize);
                }
                break;
            }
        }
        if max_len < 2 {
            return Err(BertError::Config {
                path: model_dir.join("sentence_bert_config.json"),
                reason: format!("max_seq_length {max_len} leaves no room for [CLS] and [SEP]"),
            });
        }
        Ok(Self::from_parts(
            model, config, pooling, normalize, max_len, tokenizer, device,
        ))
    }

    /// An encoder from parts already loaded (a browser page's downloaded files); `tokenizer`
    /// should have padding and truncation off, as [`read_tokenizer`] leaves it.
    pub fn from_parts(
        model: Bert<B>,
        config: BertConfig,
        pooling: Vec<Pooling>,
        normalize: bool,
        max_len: usize,
        tokenizer: TextTokenizer,
        device: &B::Device,
    ) -> Self {
        Self {
            model,
            config,
            pooling,
            normalize,
            max_len,
            tokenizer,
            device: device.clone(),
        }
    }

    /// The tokenizer (padding and truncation off).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Length of one embedding.
    pub fn dim(&self) -> usize {
        self.model.hidden_size() * self.pooling.len()
    }

    /// Tokenizes with `[CLS]`/`[SEP]`, cutting to `max_len` (keeping the final `[SEP]`).
    pub fn encode(&self, text: &str) -> Result<Encoded, BertError> {
        let mut ids = self.tokenizer.encode(text, true)?;
        let full_len = ids.len();
        if full_len > self.max_len {
            let last = ids[full_len - 1];
            ids.truncate(self.max_len - 1);
            ids.push(last);
        }
        Ok(Encoded { ids, full_len })
    }

    /// Embeds `texts` in batches of `batch_size` (longest first, to pad little); over-long
    /// texts are truncated.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>, BertError> {
        Ok(self.embed_detailed(texts, batch_size, true)?.vectors)
    }

    /// Like [`SentenceEncoder::embed`], also saying which texts were truncated; with
    /// `allow_truncation == false` an over-long text is an error instead.
    pub fn embed_detailed(
        &self,
        texts: &[&str],
        batch_size: usize,
        allow_truncation: bool,
    ) -> Result<Embedded, BertError> {
        let encoded = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        if !allow_truncation {
            if let Some((index, e)) = encoded.iter().enumerate().find(|(_, e)| e.truncated()) {
                return Err(BertError::TooLong {
                    index,
                    len: e.full_len,
                    max: self.max_len,
                });
            }
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded[i].ids.len()));
        let mut vectors = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|&i| encoded[i].ids.clone()).collect();
            let pooled = self.embed_ids(&seqs)?;
            for (&i, v) in chunk.iter().zip(pooled) {
                vectors[i] = v;
            }
        }
        Ok(Embedded {
            vectors,
            truncated: encoded.iter().map(Encoded::truncated).collect(),
        })
    }

    /// Pooled (and normalised, if configured) vectors of already tokenized sequences, one batch.
    pub fn embed_ids(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, BertError> {
        let pooled = self.pooled_ids(seqs)?;
        let dim = pooled.dims()[1];
        let flat = to_vec(pooled)?;
        Ok(flat.chunks(dim).map(<[f32]>::to_vec).collect())
    }

    /// [`SentenceEncoder::embed_ids`] left on the device, `[batch, dim]` (read it back
    /// asynchronously in a browser).
    pub fn pooled_ids(&self, seqs: &[Vec<u32>]) -> Result<Tensor<B, 2>, BertError> {
        let batch = Batch::new(
            seqs,
            None,
            self.config.pad_token_id,
            self.model.vocab_size(),
            self.model.type_vocab_size(),
        )?;
        let (ids, types, mask) = batch.tensors::<B>(&self.device);
        let hidden = self.model.forward(ids, Some(types), Some(mask.clone()))?;
        Ok(pool(hidden, mask, &self.pooling, self.normalize))
    }

    /// The `top_k` most likely tokens for the single `[MASK]` in `text`.
    pub fn fill_mask(&self, text: &str, top_k: usize) -> Result<Vec<Candidate>, BertError> {
        let mut all = self.fill_masks(text, top_k)?;
        if all.len() != 1 {
            return Err(BertError::Mask(format!(
                "the text has {} mask tokens; fill_mask takes exactly one (use fill_masks)",
                all.len()
            )));
        }
        Ok(all.remove(0))
    }

    /// The `top_k` most likely tokens for every `[MASK]` in `text`, in order.
    pub fn fill_masks(&self, text: &str, top_k: usize) -> Result<Vec<Vec<Candidate>>, BertError> {
        if self.model.cls.is_none() {
            return Err(BertError::Unsupported(
                "this checkpoint has no masked-language-model head (cls.predictions)".into(),
            ));
        }
        let mask_id = self
            .tokenizer
            .token_id("[MASK]")
            .ok_or_else(|| BertError::Mask("the tokenizer has no [MASK] token".into()))?;
        let encoded = self.encode(text)?;
        if encoded.truncated() {
            return Err(BertError::TooLong {
                index: 0,
                len: encoded.full_len,
                max: self.max_len,
            });
        }
        let positions: Vec<usize> = encoded
            .ids
            .iter()
            .enumerate()
            .filter(|(_, &id)| id == mask_id)
            .map(|(i, _)| i)
            .collect();
        if positions.is_empty() {
            return Err(BertError::Mask("the text has no [MASK] token".into()));
        }
        let batch = Batch::new(
            std::slice::from_ref(&encoded.ids),
            None,
            self.config.pad_token_id,
            self.model.vocab_size(),
            self.model.type_vocab_size(),
        )?;
        let (ids, types, mask) = batch.tensors::<B>(&self.device);
        let hidden = self.model.forward(ids, Some(types), Some(mask))?;
        let d = hidden.dims()[2];
        let mut out = Vec::with_capacity(positions.len());
        for &p in &positions {
            let h = hidden.clone().slice([0..1, p..p + 1, 0..d]);
            let probs = self
                .model
                .mlm_probs(h)
                .ok_or_else(|| BertError::Unsupported("no MLM head".into()))?;
            let probs = to_vec(probs)?;
            let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut list = Vec::with_capacity(top_k.min(ranked.len()));
            for &(id, prob) in ranked.iter().take(top_k) {
                let id = id as u32;
                list.push(Candidate {
                    token: self.tokenizer.decode(&[id], false)?,
                    id,
                    prob,
                });
            }
            out.push(list);
        }
        Ok(out)
    }
}

fn parse_pooling(path: &Path) -> Result<Vec<Pooling>, BertError> {
    let c: PoolingConfig = read_json(path)?;
    if c.pooling_mode_weightedmean_tokens || c.pooling_mode_lasttoken {
        return Err(BertError::Config {
            path: path.to_path_buf(),
            reason: "weighted-mean and last-token pooling are not supported".into(),
        });
    }
    let mut modes = Vec::new();
    for (on, mode) in [
        (c.pooling_mode_cls_token, Pooling::Cls),
        (c.pooling_mode_max_tokens, Pooling::Max),
        (c.pooling_mode_mean_tokens, Pooling::Mean),
        (c.pooling_mode_mean_sqrt_len_tokens, Pooling::MeanSqrtLen),
    ] {
        if on {
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        return Err(BertError::Config {
            path: path.to_path_buf(),
            reason: "no pooling mode is switched on".into(),
        });
    }
    Ok(modes)
}

/// Pools token states over real tokens and optionally L2-normalises.
///
/// # Shapes
/// - `hidden`: `[batch, s, d]`, `mask`: `[batch, s]` (1 = token) → `[batch, d * modes]`
pub fn pool<B: Backend>(
    hidden: Tensor<B, 3>,
    mask: Tensor<B, 2, burn::tensor::Int>,
    modes: &[Pooling],
    normalize: bool,
) -> Tensor<B, 2> {
    let [b, s, d] = hidden.dims();
    let m = mask.float().reshape([b, s, 1]);
    let count = m.clone().sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
    let parts: Vec<Tensor<B, 2>> = modes
        .iter()
        .map(|mode| match mode {
            Pooling::Cls => hidden.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]),
            Pooling::Max => {
                let pad = m.clone().equal_elem(0.0).expand([b, s, d]);
                hidden
                    .clone()
                    .mask_fill(pad, -1e9)
                    .max_dim(1)
                    .reshape([b, d])
            }
            Pooling::Mean => {
                (hidden.clone() * m.clone()).sum_dim(1).reshape([b, d]) / count.clone()
            }
            Pooling::MeanSqrtLen => {
                (hidden.clone() * m.clone()).sum_dim(1).reshape([b, d]) / count.clone().sqrt()
            }
        })
        .collect();
    let pooled = Tensor::cat(parts, 1);
    if normalize {
        let norm = pooled
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        pooled / norm
    } else {
        pooled
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, BertError> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| BertError::Unsupported(format!("cannot read a tensor back: {e:?}")))
}
