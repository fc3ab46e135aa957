//! Loading a Hugging Face T5 folder (`config.json` + `model.safetensors` or
//! `pytorch_model.bin`) into [`T5`], and [`open_with`]: the model with its tokenizer.
//!
//! `E` = `encoder.block.{i}`, `D` = `decoder.block.{i}`; every matrix is `nn.Linear` `[out, in]`,
//! `inner = num_heads * d_kv`.
//!
//! | checkpoint name | module field | note |
//! | --- | --- | --- |
//! | `shared.weight` `[vocab, d]` | `shared` | also the LM head when `lm_head.weight` is absent |
//! | `encoder.embed_tokens.weight`, `decoder.embed_tokens.weight` | — | copies of `shared` some writers store: checked equal |
//! | `E.layer.0.SelfAttention.{q,k,v}.weight` `[inner, d]` | `encoder.block[i].self_attention.attention.{q,k,v}` | |
//! | `E.layer.0.SelfAttention.o.weight` `[d, inner]` | `….attention.o` | |
//! | `encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight` `[buckets, heads]` | `encoder.block[0]….relative_attention_bias` | first block only; the others reuse its bias |
//! | `E.layer.0.layer_norm.weight` `[d]` | `….self_attention.layer_norm` | |
//! | `E.layer.1.DenseReluDense.wi.weight` `[d_ff, d]` | `encoder.block[i].ff.dense_relu_dense.wi` | `relu` |
//! | `E.layer.1.DenseReluDense.{wi_0,wi_1}.weight` `[d_ff, d]` | `….wi`, `….wi_1` | `gated-*` |
//! | `E.layer.1.DenseReluDense.wo.weight` `[d, d_ff]` | `….wo` | |
//! | `E.layer.1.layer_norm.weight` | `encoder.block[i].ff.layer_norm` | |
//! | `encoder.final_layer_norm.weight` | `encoder.final_layer_norm` | |
//! | `D.layer.0.SelfAttention.*`, `D.layer.0.layer_norm.weight` | `decoder.block[i].self_attention` | as the encoder's; causal buckets |
//! | `D.layer.1.EncDecAttention.{q,k,v,o}.weight`, `D.layer.1.layer_norm.weight` | `decoder.block[i].cross_attention` | no position bias |
//! | `D.layer.2.DenseReluDense.*`, `D.layer.2.layer_norm.weight` | `decoder.block[i].ff` | |
//! | `decoder.final_layer_norm.weight` | `decoder.final_layer_norm` | |
//! | `lm_head.weight` `[vocab, d]` | `lm_head` | absent: the head is `shared` |
//! | `decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight` | — | unused table of old checkpoints; skipped, as HF does |

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{Dense, RmsNorm, TextTokenizer, TokenizerError, WeightFormat};

use crate::model::{
    Attention, Decoder, DecoderBlock, DenseReluDense, Encoder, EncoderBlock, LayerCrossAttention,
    LayerFf, LayerSelfAttention, T5,
};
use crate::T5Config;

/// Why a T5 checkpoint could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum T5Error {
    /// `config.json` is missing, unreadable, or describes a model the zoo cannot run.
    #[error("cannot read {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The weights do not fit the config, or the file is damaged.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// The tokenizer files are unreadable, or text could not be (de)coded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Text was given but the folder has no `tokenizer.json`.
    #[error("{0} has no tokenizer.json (spiece.model alone cannot be read): pass token ids")]
    NoTokenizer(PathBuf),
    /// An input sequence is empty.
    #[error("the {0} ids are empty")]
    Empty(&'static str),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadId {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// A T5 model with its config and, when the folder has one, its tokenizer.
#[derive(Debug)]
pub struct T5Generator<B: Backend> {
    /// The module.
    pub model: T5<B>,
    /// The checkpoint's config.
    pub config: T5Config,
    /// `tokenizer.json`, when present.
    pub tokenizer: Option<TextTokenizer>,
    /// The folder it was opened from.
    pub dir: PathBuf,
}

/// Opens a T5 folder with its tokenizer (`tokenizer.json` only: the SentencePiece
/// `spiece.model` is not read).
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<T5Generator<B>, T5Error> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the weights in `format` (see [`WeightFormat`]).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<T5Generator<B>, T5Error> {
    let (config, model) = load_with(dir, device, format)?;
    let tokenizer = TextTokenizer::from_dir(dir)?;
    Ok(T5Generator {
        model,
        config,
        tokenizer,
        dir: dir.to_path_buf(),
    })
}

/// Reads `config.json` from a model folder.
pub fn read_config(dir: &Path) -> Result<T5Config, T5Error> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| T5Error::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    T5Config::from_json(&text).map_err(|reason| T5Error::Config { path, reason })
}

/// Loads a T5 model folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(T5Config, T5<B>), T5Error> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the weights in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(T5Config, T5<B>), T5Error> {
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    weights.set_format(format);
    let model = from_weights(&config, &mut weights, device)?;
    weights.finish(is_ignored)?;
    Ok((config, model))
}

/// Tensors HF itself ignores when loading (`_keys_to_ignore_on_load_unexpected`).
pub fn is_ignored(name: &str) -> bool {
    name == "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
}

/// Builds the module from checkpoint tensors.
pub fn from_weights<B: Backend>(
    config: &T5Config,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<T5<B>, WeightError> {
    let (d, vocab) = (config.d_model, config.vocab_size);
    let shared = weights.embedding("shared.weight", vocab, d, device)?;
    for copy in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
        weights.take_tied(copy, "shared.weight", &[vocab, d])?;
    }
    let b = Builder {
        config,
        device,
        act: config
            .activation()
            .expect("validated when the config was read"),
    };

    let mut encoder_blocks = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("encoder.block.{i}.layer");
        encoder_blocks.push(EncoderBlock {
            self_attention: LayerSelfAttention {
                attention: b.attention(weights, &format!("{p}.0.SelfAttention"), i == 0)?,
                layer_norm: b.norm(weights, &format!("{p}.0.layer_norm"))?,
            },
            ff: b.ff(weights, &format!("{p}.1"))?,
        });
    }
    let encoder = Encoder {
        block: encoder_blocks,
        final_layer_norm: b.norm(weights, "encoder.final_layer_norm")?,
        num_buckets: config.relative_attention_num_buckets,
        max_distance: config.relative_attention_max_distance,
    };

    let mut decoder_blocks = Vec::with_capacity(config.decoder_layers());
    for i in 0..config.decoder_layers() {
        let p = format!("decoder.block.{i}.layer");
        decoder_blocks.push(DecoderBlock {
            self_attention: LayerSelfAttention {
                attention: b.attention(weights, &format!("{p}.0.SelfAttention"), i == 0)?,
                layer_norm: b.norm(weights, &format!("{p}.0.layer_norm"))?,
            },
            cross_attention: LayerCrossAttention {
                enc_dec_attention: b.attention(
                    weights,
                    &format!("{p}.1.EncDecAttention"),
                    false,
                )?,
                layer_norm: b.norm(weights, &format!("{p}.1.layer_norm"))?,
            },
            ff: b.ff(weights, &format!("{p}.2"))?,
        });
    }
    let decoder = Decoder {
        block: decoder_blocks,
        final_layer_norm: b.norm(weights, "decoder.final_layer_norm")?,
        num_buckets: config.relative_attention_num_buckets,
        max_distance: config.relative_attention_max_distance,
    };

    // transformers 5 ties the head to `shared` unless the checkpoint stores its own.
    let lm_head = if weights.contains("lm_head.weight") {
        Some(weights.head("lm_head", d, vocab, false, LinearLayout::OutIn, device)?)
    } else {
        None
    };
    Ok(T5 {
        shared,
        encoder,
        decoder,
        lm_head,
        scale_decoder_outputs: config.scales_decoder_output(),
        decoder_start_token_id: config.decoder_start(),
    })
}

/// The sizes every layer is read with.
struct Builder<'a, B: Backend> {
    config: &'a T5Config,
    device: &'a B::Device,
    act: zoo_nn::Activation,
}

impl<B: Backend> Builder<'_, B> {
    fn dense(
        &self,
        w: &mut Weights,
        prefix: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<Dense<B>, WeightError> {
        w.dense(prefix, d_in, d_out, false, LinearLayout::OutIn, self.device)
    }

    fn norm(&self, w: &mut Weights, prefix: &str) -> Result<RmsNorm<B>, WeightError> {
        Ok(RmsNorm::new(
            w.tensor(
                &format!("{prefix}.weight"),
                [self.config.d_model],
                self.device,
            )?,
            self.config.layer_norm_epsilon,
        ))
    }

    /// `{prefix}.{q,k,v,o}` and, for the first block's self-attention, the bucket table.
    fn attention(
        &self,
        w: &mut Weights,
        prefix: &str,
        relative_bias: bool,
    ) -> Result<Attention<B>, WeightError> {
        let c = self.config;
        let (d, inner) = (c.d_model, c.inner_dim());
        let relative_attention_bias = if relative_bias {
            let table = w.tensor(
                &format!("{prefix}.relative_attention_bias.weight"),
                [c.relative_attention_num_buckets, c.num_heads],
                self.device,
            )?;
            Some(Embedding {
                weight: Param::from_tensor(table),
            })
        } else {
            None
        };
        Ok(Attention {
            q: self.dense(w, &format!("{prefix}.q"), d, inner)?,
            k: self.dense(w, &format!("{prefix}.k"), d, inner)?,
            v: self.dense(w, &format!("{prefix}.v"), d, inner)?,
            o: self.dense(w, &format!("{prefix}.o"), inner, d)?,
            relative_attention_bias,
            n_heads: c.num_heads,
            d_kv: c.d_kv,
        })
    }

    /// `{prefix}.DenseReluDense.*` and `{prefix}.layer_norm`.
    fn ff(&self, w: &mut Weights, prefix: &str) -> Result<LayerFf<B>, WeightError> {
        let (d, d_ff) = (self.config.d_model, self.config.d_ff);
        let p = format!("{prefix}.DenseReluDense");
        let (wi, wi_1) = if self.config.gated() {
            (
                self.dense(w, &format!("{p}.wi_0"), d, d_ff)?,
                Some(self.dense(w, &format!("{p}.wi_1"), d, d_ff)?),
            )
        } else {
            (self.dense(w, &format!("{p}.wi"), d, d_ff)?, None)
        };
        Ok(LayerFf {
            dense_relu_dense: DenseReluDense {
                wi,
                wi_1,
                wo: self.dense(w, &format!("{p}.wo"), d_ff, d)?,
                act: self.act,
            },
            layer_norm: self.norm(w, &format!("{prefix}.layer_norm"))?,
        })
    }
}

impl<B: Backend> T5Generator<B> {
    /// Checks `what` ids (`encoder` / `decoder`) are non-empty and inside the vocabulary.
    pub fn check_ids(&self, ids: &[u32], what: &'static str) -> Result<(), T5Error> {
        if ids.is_empty() {
            return Err(T5Error::Empty(what));
        }
        let vocab = self.model.vocab_size();
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(&id) => Err(T5Error::BadId { id, vocab }),
            None => Ok(()),
        }
    }

    /// End-of-sequence ids of the config.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.config.eos_ids()
    }

    /// One full pass: the logits of every decoder position, as rows of floats.
    pub fn forward_rows(
        &self,
        encoder_ids: &[u32],
        decoder_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>, T5Error> {
        self.check_ids(encoder_ids, "encoder")?;
        self.check_ids(decoder_ids, "decoder")?;
        let device = self.model.device();
        let logits = self.model.forward(
            zoo_nn::ids_tensor::<B>(encoder_ids, &device),
            zoo_nn::ids_tensor::<B>(decoder_ids, &device),
        );
        let [_, t, n] = logits.dims();
        let values: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("logits read back as f32");
        Ok((0..t)
            .map(|i| values[i * n..(i + 1) * n].to_vec())
            .collect())
    }

    /// Greedy decoding: up to `max_new` new decoder ids, stopping after the config's eos.
    pub fn generate_ids(&self, encoder_ids: &[u32], max_new: usize) -> Result<Vec<u32>, T5Error> {
        self.check_ids(encoder_ids, "encoder")?;
        let eos = self.eos_ids().first().copied();
        Ok(self.model.generate_greedy(encoder_ids, max_new, eos))
    }

    /// Prompt text to encoder ids, ending with eos `</s>` as T5's tokenizer does.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, T5Error> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| T5Error::NoTokenizer(self.dir.clone()))?;
        let mut ids = tokenizer.encode(prompt, true)?;
        if let Some(&eos) = self.eos_ids().first() {
            if ids.last() != Some(&eos) {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// Greedy text-to-text generation: the decoded new tokens, special tokens skipped.
    pub fn generate_text(&self, prompt: &str, max_new: usize) -> Result<String, T5Error> {
        let ids = self.encode(prompt)?;
        let new = self.generate_ids(&ids, max_new)?;
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| T5Error::NoTokenizer(self.dir.clone()))?;
        Ok(tokenizer.decode(&new, true)?)
    }
}
