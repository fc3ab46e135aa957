//! `Gpt2Config`: the fields of a Hugging Face GPT-2 `config.json`, with HF's defaults.

use serde::Deserialize;
use zoo_nn::Activation;

/// A GPT-2 `config.json` (HF `GPT2Config`); absent fields take HF's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Longest sequence (learned position embeddings).
    pub n_positions: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// MLP inner size; `None` means `4 * n_embd`.
    pub n_inner: Option<usize>,
    /// MLP activation name (`gelu_new` for GPT-2).
    pub activation_function: String,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// Divide attention scores by `sqrt(head_dim)`.
    pub scale_attn_weights: bool,
    /// Also divide attention scores by `layer_index + 1`.
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Compute attention in f32 with the layer scaling folded in (numerically equal in f32).
    pub reorder_and_upcast_attn: bool,
    /// The LM head shares the token embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id.
    pub eos_token_id: Option<u32>,
    /// Must be `gpt2` when present.
    pub model_type: Option<String>,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_new".into(),
            layer_norm_epsilon: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            tie_word_embeddings: true,
            bos_token_id: Some(50256),
            eos_token_id: Some(50256),
            model_type: Some("gpt2".into()),
        }
    }
}

impl Gpt2Config {
    /// Parses `config.json` text and checks it is self-consistent.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together and the activation is known.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "gpt2" {
                return Err(format!("model_type is `{t}`, not `gpt2`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// MLP inner size.
    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
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

    /// Parameters of the model (the tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, inner, l) = (self.n_embd, self.inner_size(), self.n_layer);
        let block = 2 * 2 * d // two LayerNorms
            + d * 3 * d + 3 * d // c_attn
            + d * d + d // attn c_proj
            + d * inner + inner // c_fc
            + inner * d + d; // mlp c_proj
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.n_positions * d + l * block + 2 * d + head
    }
}
