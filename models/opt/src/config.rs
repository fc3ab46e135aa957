//! `OptConfig`: the fields of a Hugging Face OPT `config.json`, with HF's defaults.

use serde::Deserialize;
use zoo_nn::Activation;

/// An OPT `config.json` (HF `OPTConfig`); absent fields take HF's defaults (opt-125m's sizes).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct OptConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Hidden size of the blocks.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// MLP inner size.
    pub ffn_dim: usize,
    /// Longest sequence (the position table has two more rows: OPT's offset).
    pub max_position_embeddings: usize,
    /// Pre-LN blocks (`true`: opt-125m, 1.3b and up) or post-LN blocks (`false`: opt-350m).
    pub do_layer_norm_before: bool,
    /// Drop the final LayerNorm of a pre-LN model (checkpoints fine-tuned before
    /// transformers 4.20.1).
    #[serde(rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
    /// Width of the token embedding and the LM head; `None` means `hidden_size`. When it
    /// differs, `project_in` / `project_out` map between it and `hidden_size` (opt-350m).
    pub word_embed_proj_dim: Option<usize>,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP activation name (`relu` for OPT).
    pub activation_function: String,
    /// Padding id.
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence id (`</s>`, 2), which OPT's tokenizer puts before every prompt.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// q/k/v/out projections and the MLP have biases.
    pub enable_bias: bool,
    /// The LayerNorms have a weight and a bias (otherwise they only normalise).
    pub layer_norm_elementwise_affine: bool,
    /// The LM head shares the token embedding.
    pub tie_word_embeddings: bool,
    /// Must be `opt` when present.
    pub model_type: Option<String>,
}

/// One token id or a list of them, as `eos_token_id` may be written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

impl Default for OptConfig {
    fn default() -> Self {
        Self {
            vocab_size: 50272,
            hidden_size: 768,
            num_hidden_layers: 12,
            ffn_dim: 3072,
            max_position_embeddings: 2048,
            do_layer_norm_before: true,
            remove_final_layer_norm: false,
            word_embed_proj_dim: None,
            num_attention_heads: 12,
            activation_function: "relu".into(),
            pad_token_id: Some(1),
            bos_token_id: Some(2),
            eos_token_id: Some(TokenIds::One(2)),
            enable_bias: true,
            layer_norm_elementwise_affine: true,
            tie_word_embeddings: true,
            model_type: Some("opt".into()),
        }
    }
}

/// OPT's LayerNorms are `nn.LayerNorm` with PyTorch's default epsilon (not in the config).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// OPT's learned positions start at row 2 of `embed_positions` (fairseq's padding offset).
pub const POSITION_OFFSET: usize = 2;

impl OptConfig {
    /// Parses `config.json` text and checks it is self-consistent.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together and the activation is known.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "opt" {
                return Err(format!("model_type is `{t}`, not `opt`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("ffn_dim", self.ffn_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("num_attention_heads", self.num_attention_heads),
            ("word_embed_proj_dim", self.embed_dim()),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// Width of the token embedding and the LM head (`word_embed_proj_dim`, else hidden).
    pub fn embed_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }

    /// Whether `project_in` / `project_out` exist (`word_embed_proj_dim != hidden_size`).
    pub fn has_projections(&self) -> bool {
        self.embed_dim() != self.hidden_size
    }

    /// Whether the decoder ends with `final_layer_norm` (pre-LN models, unless removed).
    pub fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self.remove_final_layer_norm
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The MLP activation.
    pub fn activation(&self) -> Result<Activation, String> {
        Activation::from_hf_name(&self.activation_function).ok_or_else(|| {
            format!(
                "activation_function `{}` is not supported",
                self.activation_function
            )
        })
    }

    /// The end-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Parameters of the model (the tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, e, f, l) = (
            self.hidden_size,
            self.embed_dim(),
            self.ffn_dim,
            self.num_hidden_layers,
        );
        let bias = usize::from(self.enable_bias);
        let norm = if self.layer_norm_elementwise_affine {
            2 * d
        } else {
            0
        };
        let block = 4 * (d * d + bias * d) // q, k, v, out
            + d * f + bias * f // fc1
            + f * d + bias * d // fc2
            + 2 * norm;
        let projections = if self.has_projections() { 2 * d * e } else { 0 };
        let final_norm = if self.has_final_layer_norm() { norm } else { 0 };
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * e
        };
        self.vocab_size * e
            + (self.max_position_embeddings + POSITION_OFFSET) * d
            + projections
            + l * block
            + final_norm
            + head
    }
}
