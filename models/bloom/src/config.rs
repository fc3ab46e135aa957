//! `BloomConfig`: the fields of a Hugging Face BLOOM `config.json`, with HF's defaults and the
//! older names some BLOOM checkpoints still use (`n_embed`, `num_attention_heads`,
//! `num_hidden_layers`).

use serde::{Deserialize, Deserializer};
use serde_json::Value;
use zoo_nn::Activation;

/// The longest sequence [`Bloom`](crate::Bloom) accepts unless told otherwise. ALiBi itself has
/// no maximum length; 2048 is the sequence length BLOOM was trained with (raise
/// `Bloom::max_positions` to go further).
pub const DEFAULT_MAX_POSITIONS: usize = 2048;

/// A BLOOM `config.json` (HF `BloomConfig`); absent fields take HF's defaults.
///
/// Fields the forward pass does not depend on (dropouts, `pretraining_tp`, `slow_but_exact`,
/// `n_inner`, which HF's BLOOM ignores too) are accepted and not kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct BloomConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Hidden size (`hidden_size`, or `n_embed` in older configs).
    pub hidden_size: usize,
    /// Transformer blocks (`n_layer`, or `num_hidden_layers`).
    pub n_layer: usize,
    /// Attention heads (`n_head`, or `num_attention_heads`).
    pub n_head: usize,
    /// LayerNorm epsilon (every LayerNorm of the model).
    pub layer_norm_epsilon: f64,
    /// The blocks' residuals start from the LayerNorm outputs instead of the block inputs.
    pub apply_residual_connection_post_layernorm: bool,
    /// The LM head shares the token embedding (always, in published BLOOM checkpoints).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids (one id or a list in `config.json`).
    pub eos_token_id: Vec<u32>,
    /// Must be `bloom` when present.
    pub model_type: Option<String>,
}

impl Default for BloomConfig {
    fn default() -> Self {
        Self {
            vocab_size: 250880,
            hidden_size: 64,
            n_layer: 2,
            n_head: 8,
            layer_norm_epsilon: 1e-5,
            apply_residual_connection_post_layernorm: false,
            tie_word_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: vec![2],
            model_type: Some("bloom".into()),
        }
    }
}

/// `config.json` as written, aliases side by side, before they are resolved.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    n_embed: Option<usize>,
    n_layer: Option<usize>,
    num_hidden_layers: Option<usize>,
    n_head: Option<usize>,
    num_attention_heads: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    apply_residual_connection_post_layernorm: Option<bool>,
    tie_word_embeddings: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    bos_token_id: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    eos_token_id: Option<Value>,
    model_type: Option<String>,
}

/// A field that is present, `null` included (`Some(Value::Null)`, where plain `Option` gives
/// `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// One of two names for the same size; they must agree when both are given.
fn either(
    (name, value): (&str, Option<usize>),
    (alias, alias_value): (&str, Option<usize>),
    default: usize,
) -> Result<usize, String> {
    match (value, alias_value) {
        (Some(a), Some(b)) if a != b => Err(format!("`{name}` {a} and `{alias}` {b} disagree")),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Ok(default),
    }
}

/// Token ids given as `null`, one id, or a list of ids.
fn token_ids(name: &str, value: &Value) -> Result<Vec<u32>, String> {
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| format!("`{name}` must be token ids, found {value}"))
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(list) => list.iter().map(id).collect(),
        v => Ok(vec![id(v)?]),
    }
}

impl TryFrom<RawConfig> for BloomConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let d = Self::default();
        let bos_token_id = match &raw.bos_token_id {
            None => d.bos_token_id,
            Some(v) => {
                let ids = token_ids("bos_token_id", v)?;
                if ids.len() > 1 {
                    return Err(format!("`bos_token_id` must be one id, found {v}"));
                }
                ids.first().copied()
            }
        };
        let eos_token_id = match &raw.eos_token_id {
            None => d.eos_token_id,
            Some(v) => token_ids("eos_token_id", v)?,
        };
        Ok(Self {
            vocab_size: raw.vocab_size.unwrap_or(d.vocab_size),
            hidden_size: either(
                ("hidden_size", raw.hidden_size),
                ("n_embed", raw.n_embed),
                d.hidden_size,
            )?,
            n_layer: either(
                ("n_layer", raw.n_layer),
                ("num_hidden_layers", raw.num_hidden_layers),
                d.n_layer,
            )?,
            n_head: either(
                ("n_head", raw.n_head),
                ("num_attention_heads", raw.num_attention_heads),
                d.n_head,
            )?,
            layer_norm_epsilon: raw.layer_norm_epsilon.unwrap_or(d.layer_norm_epsilon),
            apply_residual_connection_post_layernorm: raw
                .apply_residual_connection_post_layernorm
                .unwrap_or(d.apply_residual_connection_post_layernorm),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(d.tie_word_embeddings),
            bos_token_id,
            eos_token_id,
            model_type: raw.model_type,
        })
    }
}

impl BloomConfig {
    /// Parses `config.json` text and checks it is self-consistent.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "bloom" {
                return Err(format!("model_type is `{t}`, not `bloom`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if !self.hidden_size.is_multiple_of(self.n_head) {
            return Err(format!(
                "hidden_size {} is not divisible by n_head {}",
                self.hidden_size, self.n_head
            ));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(format!(
                "layer_norm_epsilon must be positive, found {}",
                self.layer_norm_epsilon
            ));
        }
        Ok(())
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_head
    }

    /// MLP inner size: always `4 * hidden_size` in BLOOM.
    pub fn intermediate_size(&self) -> usize {
        4 * self.hidden_size
    }

    /// The MLP activation: BLOOM's tanh GELU, whatever the config says.
    pub fn activation(&self) -> Activation {
        Activation::GeluTanh
    }

    /// The longest sequence the loaded model accepts ([`DEFAULT_MAX_POSITIONS`]: ALiBi has no
    /// limit of its own).
    pub fn max_positions(&self) -> usize {
        DEFAULT_MAX_POSITIONS
    }

    /// Parameters of the model (the tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, inner, l) = (self.hidden_size, self.intermediate_size(), self.n_layer);
        let block = 2 * 2 * d // two LayerNorms
            + d * 3 * d + 3 * d // query_key_value
            + d * d + d // dense
            + d * inner + inner // dense_h_to_4h
            + inner * d + d; // dense_4h_to_h
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + 2 * d + l * block + 2 * d + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_names_and_defaults() {
        let c = BloomConfig::from_json(
            r#"{"n_embed": 32, "num_attention_heads": 4, "n_layer": 3, "vocab_size": 10,
                "n_inner": null, "eos_token_id": [2, 5], "bos_token_id": null}"#,
        )
        .unwrap();
        assert_eq!(
            (c.hidden_size, c.n_head, c.n_layer, c.head_dim()),
            (32, 4, 3, 8)
        );
        assert_eq!((c.bos_token_id, c.eos_token_id), (None, vec![2, 5]));
        assert!(c.tie_word_embeddings && !c.apply_residual_connection_post_layernorm);
        assert_eq!(c.layer_norm_epsilon, 1e-5);
    }

    #[test]
    fn bad_configs_are_errors() {
        let err = |text: &str| BloomConfig::from_json(text).unwrap_err();
        assert!(err(r#"{"hidden_size": 32, "n_embed": 16}"#).contains("disagree"));
        assert!(err(r#"{"hidden_size": 30, "n_head": 4}"#).contains("not divisible"));
        assert!(err(r#"{"model_type": "gpt2"}"#).contains("not `bloom`"));
        assert!(err(r#"{"n_head": 0}"#).contains("n_head must be positive"));
        assert!(err(r#"{"eos_token_id": "x"}"#).contains("eos_token_id"));
        assert!(err(r#"{"layer_norm_epsilon": -1.0}"#).contains("layer_norm_epsilon"));
    }

    #[test]
    fn bloom_560m_parameter_count() {
        let c = BloomConfig {
            hidden_size: 1024,
            n_layer: 24,
            n_head: 16,
            ..Default::default()
        };
        // bigscience/bloom-560m: 559,214,592 parameters.
        assert_eq!(c.num_parameters(), 559_214_592);
    }
}
