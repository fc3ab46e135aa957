//! Loading a Hugging Face BERT folder (`config.json` + `model.safetensors` or
//! `pytorch_model.bin`) saved as `BertModel`, `BertForMaskedLM`, `BertForPreTraining` or by
//! sentence-transformers, into [`Bert`].
//!
//! `{p}` is `bert.` when the checkpoint has a head (`BertForMaskedLM`), empty for `BertModel`
//! and sentence-transformers folders; both are accepted.
//!
//! | checkpoint name | module field | note |
//! | --- | --- | --- |
//! | `{p}embeddings.word_embeddings.weight` `[vocab, d]` | `embeddings.word_embeddings` | also the MLM decoder when tied |
//! | `{p}embeddings.position_embeddings.weight` `[max_pos, d]` | `embeddings.position_embeddings` | |
//! | `{p}embeddings.token_type_embeddings.weight` `[types, d]` | `embeddings.token_type_embeddings` | |
//! | `{p}embeddings.LayerNorm.{weight,bias}` | `embeddings.layer_norm` | old TF ports: `gamma`/`beta` |
//! | `{p}encoder.layer.{i}.attention.self.{query,key,value}` | `layers[i].attention.{query,key,value}` | `nn.Linear`: `[out, in]` |
//! | `{p}encoder.layer.{i}.attention.output.dense` | `layers[i].attention.dense` | |
//! | `{p}encoder.layer.{i}.attention.output.LayerNorm` | `layers[i].attention.layer_norm` | |
//! | `{p}encoder.layer.{i}.intermediate.dense` | `layers[i].intermediate` | |
//! | `{p}encoder.layer.{i}.output.dense` | `layers[i].output` | |
//! | `{p}encoder.layer.{i}.output.LayerNorm` | `layers[i].output_norm` | |
//! | `{p}pooler.dense` (optional) | `pooler` | |
//! | `cls.predictions.transform.dense` (optional) | `cls.dense` | |
//! | `cls.predictions.transform.LayerNorm` | `cls.layer_norm` | |
//! | `cls.predictions.bias` `[vocab]` | `cls.bias` | |
//! | `cls.predictions.decoder.weight` `[vocab, d]` | checked equal to the word embedding when tied, else `cls.decoder` | |
//! | `cls.predictions.decoder.bias` `[vocab]` | checked equal to `cls.predictions.bias` | the same parameter in HF |
//! | `{p}embeddings.position_ids` | — | int64 buffer `[1, max_pos]`: skipped |
//! | `cls.seq_relationship.{weight,bias}` | — | next-sentence head of `BertForPreTraining`: skipped |

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::LayerNorm;
use zoo_nn::{Dense, WeightFormat};

use crate::model::{Attention, Bert, Embeddings, Layer, MlmHead};
use crate::BertConfig;

/// Why a BERT checkpoint could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    /// `config.json` (or another JSON file of the folder) is missing or unreadable.
    #[error("cannot read {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The weights do not fit the config, or the file is damaged.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The tokenizer is missing or failed.
    #[error(transparent)]
    Tokenizer(#[from] zoo_nn::TokenizerError),
    /// Input the model cannot take (too long, ids out of range, …).
    #[error(transparent)]
    Input(#[from] crate::model::InputError),
    /// A text is longer than the model's maximum and truncation was refused.
    #[error(
        "text {index} has {len} tokens, more than the model's maximum of {max} (truncation is off)"
    )]
    TooLong {
        /// Which text (0-based).
        index: usize,
        /// Its tokens, specials included.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Fill-mask was asked of a text without (or with several) mask tokens.
    #[error("{0}")]
    Mask(String),
    /// The checkpoint lacks a part the request needs (MLM head, pooler).
    #[error("{0}")]
    Unsupported(String),
}

/// Reads `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<BertConfig, BertError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| BertError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    BertConfig::from_json(&text).map_err(|reason| BertError::Config { path, reason })
}

/// Loads a BERT model folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(BertConfig, Bert<B>), BertError> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the encoder's matrices in `format` (embeddings and the masked-LM head
/// stay f32: they are read row by row or only for fill-mask).
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(BertConfig, Bert<B>), BertError> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(WeightFormat {
        embeddings: None,
        head: None,
        ..format
    });
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(is_skipped)?;
    Ok((config, model))
}

/// Tensors that are not parameters of the model: the position-id buffer and the
/// next-sentence-prediction head of `BertForPreTraining`.
fn is_skipped(name: &str) -> bool {
    name.ends_with("embeddings.position_ids") || name.starts_with("cls.seq_relationship.")
}

/// Builds the module from checkpoint tensors (names with or without `bert.`).
pub fn from_weights<B: Backend>(
    config: &BertConfig,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<Bert<B>, WeightError> {
    let p = if weights.contains("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let (d, vocab, inner) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size,
    );
    let eps = config.layer_norm_eps;
    let act = config
        .activation()
        .map_err(|reason| WeightError::Inconsistent {
            name: "config.json".into(),
            reason,
        })?;

    let embedding =
        |w: &mut Weights, name: &str, rows: usize| -> Result<Embedding<B>, WeightError> {
            Ok(Embedding {
                weight: Param::from_tensor(w.tensor(name, [rows, d], device)?),
            })
        };
    let norm = |w: &mut Weights, prefix: &str| -> Result<LayerNorm<B>, WeightError> {
        // Checkpoints converted from TensorFlow name the LayerNorm parameters gamma / beta.
        let (wn, bn) = if w.contains(&format!("{prefix}.gamma")) {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm::new(
            w.tensor(&format!("{prefix}.{wn}"), [d], device)?,
            w.tensor(&format!("{prefix}.{bn}"), [d], device)?,
            eps,
        ))
    };
    let linear = |w: &mut Weights,
                  prefix: &str,
                  d_in: usize,
                  d_out: usize|
     -> Result<Dense<B>, WeightError> {
        w.dense(prefix, d_in, d_out, true, LinearLayout::OutIn, device)
    };

    let e = format!("{p}embeddings");
    let embeddings = Embeddings {
        word_embeddings: embedding(weights, &format!("{e}.word_embeddings.weight"), vocab)?,
        position_embeddings: embedding(
            weights,
            &format!("{e}.position_embeddings.weight"),
            config.max_position_embeddings,
        )?,
        token_type_embeddings: embedding(
            weights,
            &format!("{e}.token_type_embeddings.weight"),
            config.type_vocab_size,
        )?,
        layer_norm: norm(weights, &format!("{e}.LayerNorm"))?,
    };

    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let l = format!("{p}encoder.layer.{i}");
        layers.push(Layer {
            attention: Attention {
                query: linear(weights, &format!("{l}.attention.self.query"), d, d)?,
                key: linear(weights, &format!("{l}.attention.self.key"), d, d)?,
                value: linear(weights, &format!("{l}.attention.self.value"), d, d)?,
                dense: linear(weights, &format!("{l}.attention.output.dense"), d, d)?,
                layer_norm: norm(weights, &format!("{l}.attention.output.LayerNorm"))?,
                heads: config.num_attention_heads,
            },
            intermediate: linear(weights, &format!("{l}.intermediate.dense"), d, inner)?,
            output: linear(weights, &format!("{l}.output.dense"), inner, d)?,
            output_norm: norm(weights, &format!("{l}.output.LayerNorm"))?,
            act,
        });
    }

    let pooler = if weights.contains(&format!("{p}pooler.dense.weight")) {
        Some(linear(weights, &format!("{p}pooler.dense"), d, d)?)
    } else {
        None
    };

    let cls = if weights.contains("cls.predictions.bias")
        || weights.contains("cls.predictions.transform.dense.weight")
    {
        let dense = linear(weights, "cls.predictions.transform.dense", d, d)?;
        let layer_norm = norm(weights, "cls.predictions.transform.LayerNorm")?;
        // HF ties `decoder.bias` to `predictions.bias`; either (or both) may be stored.
        let bias_name = if weights.contains("cls.predictions.bias") {
            "cls.predictions.bias"
        } else {
            "cls.predictions.decoder.bias"
        };
        let bias = weights.take_f32(bias_name, &[vocab])?;
        if bias_name == "cls.predictions.bias" && weights.contains("cls.predictions.decoder.bias") {
            let other = weights.take_f32("cls.predictions.decoder.bias", &[vocab])?;
            if other != bias {
                return Err(WeightError::Inconsistent {
                    name: "cls.predictions.decoder.bias".into(),
                    reason: "differs from cls.predictions.bias (they are one parameter in HF)"
                        .into(),
                });
            }
        }
        let decoder_name = "cls.predictions.decoder.weight";
        let decoder = if config.tie_word_embeddings {
            weights.take_tied(
                decoder_name,
                &format!("{p}embeddings.word_embeddings.weight"),
                &[vocab, d],
            )?;
            None
        } else {
            Some(Param::from_tensor(weights.tensor_transposed::<B>(
                decoder_name,
                vocab,
                d,
                device,
            )?))
        };
        Some(MlmHead {
            dense,
            layer_norm,
            decoder,
            bias: Param::from_tensor(burn::tensor::Tensor::from_data(
                burn::tensor::TensorData::new(bias, [vocab]),
                device,
            )),
            act,
        })
    } else {
        None
    };

    Ok(Bert {
        embeddings,
        layers,
        pooler,
        cls,
    })
}
