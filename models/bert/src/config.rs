//! `BertConfig`: the fields of a Hugging Face BERT `config.json`, with HF's defaults.

use serde::Deserialize;
use zoo_nn::Activation;

/// A BERT `config.json` (HF `BertConfig`); absent fields take HF's defaults, unknown ones
/// (dropout rates, `initializer_range`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// WordPiece vocabulary size.
    pub vocab_size: usize,
    /// Hidden size `d`.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Feed-forward (and MLM transform) activation name: `gelu`, `gelu_new`, `relu`, …
    pub hidden_act: String,
    /// Longest sequence (learned absolute positions).
    pub max_position_embeddings: usize,
    /// Segment (token type) vocabulary size.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (1e-12 for BERT).
    pub layer_norm_eps: f64,
    /// Id of `[PAD]`.
    pub pad_token_id: u32,
    /// Must be `absolute`; relative position variants are not implemented.
    pub position_embedding_type: String,
    /// The MLM decoder shares the word embedding.
    pub tie_word_embeddings: bool,
    /// `bert` when present.
    pub model_type: Option<String>,
    /// Architectures the checkpoint was saved as (`BertModel`, `BertForMaskedLM`, …).
    pub architectures: Option<Vec<String>>,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
            tie_word_embeddings: true,
            model_type: Some("bert".into()),
            architectures: None,
        }
    }
}

impl BertConfig {
    /// Parses `config.json` text and checks it is self-consistent.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together and the variant is one the zoo implements.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "bert" {
                return Err(format!("model_type is `{t}`, not `bert`"));
            }
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(format!(
                "layer_norm_eps {} must be positive",
                self.layer_norm_eps
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The feed-forward activation.
    pub fn activation(&self) -> Result<Activation, String> {
        Activation::from_hf_name(&self.hidden_act)
            .ok_or_else(|| format!("hidden_act `{}` is not supported", self.hidden_act))
    }

    /// Parameters of the encoder, embeddings and pooler (heads excluded).
    pub fn num_parameters(&self) -> usize {
        let (d, i, l) = (
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
        );
        let embeddings =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d;
        let layer = 4 * (d * d + d) + 2 * 2 * d + (d * i + i) + (i * d + d);
        let pooler = d * d + d;
        embeddings + l * layer + pooler
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c = BertConfig::from_json(r#"{"hidden_size": 384, "num_attention_heads": 12}"#)
            .expect("valid");
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.layer_norm_eps, 1e-12);
        let err = BertConfig::from_json(r#"{"position_embedding_type": "relative_key"}"#)
            .expect_err("relative positions");
        assert!(err.contains("relative_key"), "{err}");
        let err = BertConfig::from_json(r#"{"hidden_size": 100, "num_attention_heads": 12}"#)
            .expect_err("indivisible");
        assert!(err.contains("divisible"), "{err}");
        let err = BertConfig::from_json(r#"{"hidden_act": "mish"}"#).expect_err("activation");
        assert!(err.contains("mish"), "{err}");
        // bert-base-uncased has 109,482,240 parameters without heads.
        assert_eq!(BertConfig::default().num_parameters(), 109_482_240);
    }
}
