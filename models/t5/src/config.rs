//! `T5Config`: the fields of a Hugging Face T5 `config.json`, with HF's defaults.

use serde::Deserialize;
use zoo_nn::Activation;

/// `eos_token_id`: one id or a list of ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

/// A T5 `config.json` (HF `T5Config`, also Flan-T5 and LaMini-Flan-T5); absent fields take
/// HF's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct T5Config {
    /// Tokens in the vocabulary (rows of `shared`).
    pub vocab_size: usize,
    /// Hidden size.
    pub d_model: usize,
    /// Size of one attention head (independent of `d_model / num_heads`).
    pub d_kv: usize,
    /// Feed-forward inner size.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks; `None` means `num_layers`.
    pub num_decoder_layers: Option<usize>,
    /// Attention heads.
    pub num_heads: usize,
    /// Relative-position buckets of the first block's self-attention.
    pub relative_attention_num_buckets: usize,
    /// Distance from which all relative positions share the last bucket.
    pub relative_attention_max_distance: usize,
    /// Epsilon of the RMS-style `T5LayerNorm`.
    pub layer_norm_epsilon: f64,
    /// `relu` (T5) or `gated-gelu` (T5 v1.1, Flan-T5): `{act}` or `gated-{act}`.
    pub feed_forward_proj: String,
    /// The activation name HF derives from `feed_forward_proj` (saved by newer versions; wins
    /// over the derived one when present, as in HF).
    pub dense_act_fn: Option<String>,
    /// Whether the feed-forward is gated (derived from `feed_forward_proj` when absent).
    pub is_gated_act: Option<bool>,
    /// `false` in T5 v1.1 / Flan-T5 configs; only decides `scale_decoder_outputs` when that is
    /// absent (transformers 5 always ties the head unless the checkpoint stores its own).
    pub tie_word_embeddings: Option<bool>,
    /// Multiply the decoder output by `d_model^-0.5` before the LM head (original T5);
    /// `None` means `tie_word_embeddings != false`.
    pub scale_decoder_outputs: Option<bool>,
    /// Padding id (T5's decoder start token too).
    pub pad_token_id: Option<u32>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// First decoder input; `None` means `pad_token_id`.
    pub decoder_start_token_id: Option<u32>,
    /// Must be `true` when present.
    pub is_encoder_decoder: bool,
    /// Must be `t5` when present.
    pub model_type: Option<String>,
}

impl Default for T5Config {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_decoder_layers: None,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
            dense_act_fn: None,
            is_gated_act: None,
            tie_word_embeddings: None,
            scale_decoder_outputs: None,
            pad_token_id: Some(0),
            eos_token_id: Some(TokenIds::One(1)),
            decoder_start_token_id: None,
            is_encoder_decoder: true,
            model_type: Some("t5".into()),
        }
    }
}

impl T5Config {
    /// Parses `config.json` text and checks it is one the zoo can run.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes are positive, the activation is known and the model is an
    /// encoder-decoder T5.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "t5" {
                return Err(format!("model_type is `{t}`, not `t5`"));
            }
        }
        if !self.is_encoder_decoder {
            return Err(
                "is_encoder_decoder is false: only the full encoder-decoder T5 runs".into(),
            );
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
            ("num_heads", self.num_heads),
            (
                "relative_attention_num_buckets",
                self.relative_attention_num_buckets,
            ),
            (
                "relative_attention_max_distance",
                self.relative_attention_max_distance,
            ),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        // The log-spaced buckets need at least one exact bucket per direction and a maximum
        // distance beyond the exact range.
        if self.relative_attention_num_buckets < 4 {
            return Err(format!(
                "relative_attention_num_buckets {} is below 4",
                self.relative_attention_num_buckets
            ));
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 2 {
            return Err(format!(
                "relative_attention_max_distance {} must exceed relative_attention_num_buckets / 2",
                self.relative_attention_max_distance
            ));
        }
        let parts: Vec<&str> = self.feed_forward_proj.split('-').collect();
        if parts.len() > 2 || (parts.len() == 2 && parts[0] != "gated") {
            return Err(format!(
                "feed_forward_proj `{}` is not `{{act}}` or `gated-{{act}}`",
                self.feed_forward_proj
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// Decoder blocks.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// Width of all heads together, `num_heads * d_kv`.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Whether the feed-forward is `act(wi_0 x) * wi_1 x` rather than `act(wi x)`.
    pub fn gated(&self) -> bool {
        self.is_gated_act
            .unwrap_or_else(|| self.feed_forward_proj.starts_with("gated-"))
    }

    /// The feed-forward activation's HF name (`gated-gelu` means `gelu_new`, as in HF).
    pub fn activation_name(&self) -> String {
        if let Some(name) = &self.dense_act_fn {
            return name.clone();
        }
        if self.feed_forward_proj == "gated-gelu" {
            return "gelu_new".into();
        }
        let last = self.feed_forward_proj.rsplit('-').next();
        last.unwrap_or_default().to_string()
    }

    /// The feed-forward activation.
    pub fn activation(&self) -> Result<Activation, String> {
        let name = self.activation_name();
        Activation::from_hf_name(&name).ok_or_else(|| {
            format!(
                "feed-forward activation `{name}` (from feed_forward_proj `{}`) is not supported",
                self.feed_forward_proj
            )
        })
    }

    /// Whether the decoder output is multiplied by `d_model^-0.5` before the LM head.
    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings != Some(false))
    }

    /// End-of-sequence ids (empty when the config names none).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(TokenIds::One(id)) => vec![*id],
            Some(TokenIds::Many(ids)) => ids.clone(),
            None => Vec::new(),
        }
    }

    /// The first decoder input: `decoder_start_token_id`, else `pad_token_id`, else 0.
    pub fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id
            .or(self.pad_token_id)
            .unwrap_or(0)
    }
}
