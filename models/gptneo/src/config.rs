//! `GptNeoConfig`: the fields of a Hugging Face GPT-Neo `config.json`, with HF's defaults.

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

/// What a layer's attention may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    /// Every earlier position (causal).
    Global,
    /// Only the last `window` positions, the query's own included.
    Local {
        /// `window_size` of the config.
        window: usize,
    },
}

/// A GPT-Neo `config.json` (HF `GPTNeoConfig`); absent fields take HF's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct GptNeoConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Longest sequence (learned position embeddings).
    pub max_position_embeddings: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Transformer blocks.
    #[serde(alias = "num_hidden_layers")]
    pub num_layers: usize,
    /// Attention heads.
    #[serde(alias = "num_attention_heads")]
    pub num_heads: usize,
    /// MLP inner size; `None` means `4 * hidden_size`.
    pub intermediate_size: Option<usize>,
    /// Layer attention pattern: `[[["global", "local"], 12]]` repeats the pair 12 times. HF
    /// expands it into `attention_layers` (also written to config.json, and ignored here as
    /// by HF, which recomputes it).
    pub attention_types: Vec<(Vec<String>, usize)>,
    /// Positions a local layer sees, the query's own included.
    pub window_size: usize,
    /// MLP activation name (`gelu_new` for GPT-Neo).
    pub activation_function: String,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// The LM head shares the token embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// Must be `gpt_neo` when present.
    pub model_type: Option<String>,
}

impl Default for GptNeoConfig {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            max_position_embeddings: 2048,
            hidden_size: 2048,
            num_layers: 24,
            num_heads: 16,
            intermediate_size: None,
            attention_types: vec![(vec!["global".into(), "local".into()], 12)],
            window_size: 256,
            activation_function: "gelu_new".into(),
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: true,
            bos_token_id: Some(50256),
            eos_token_id: Some(TokenIds::One(50256)),
            model_type: Some("gpt_neo".into()),
        }
    }
}

impl GptNeoConfig {
    /// Parses `config.json` text and checks it is self-consistent.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together, the attention pattern covers every layer and the
    /// activation is known.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "gpt_neo" {
                return Err(format!("model_type is `{t}`, not `gpt_neo`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if self.intermediate_size == Some(0) {
            return Err("intermediate_size must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        self.attention_layers()?;
        self.activation()?;
        Ok(())
    }

    /// The attention of every layer, `attention_types` expanded as HF does.
    pub fn attention_layers(&self) -> Result<Vec<AttentionKind>, String> {
        let mut layers = Vec::new();
        for (kinds, repeat) in &self.attention_types {
            for _ in 0..*repeat {
                for kind in kinds {
                    layers.push(match kind.as_str() {
                        "global" => AttentionKind::Global,
                        "local" if self.window_size == 0 => {
                            return Err("window_size must be positive for local layers".into())
                        }
                        "local" => AttentionKind::Local {
                            window: self.window_size,
                        },
                        other => {
                            return Err(format!(
                            "attention type `{other}` is not supported (only `global` and `local`)"
                        ))
                        }
                    });
                }
            }
        }
        if layers.len() != self.num_layers {
            return Err(format!(
                "attention_types expands to {} layers but num_layers is {}",
                layers.len(),
                self.num_layers
            ));
        }
        Ok(layers)
    }

    /// MLP inner size.
    pub fn inner_size(&self) -> usize {
        self.intermediate_size.unwrap_or(4 * self.hidden_size)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
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

    /// End-of-sequence ids (empty when the config names none).
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(TokenIds::One(id)) => vec![*id],
            Some(TokenIds::Many(ids)) => ids.clone(),
            None => Vec::new(),
        }
    }

    /// Parameters of the model (the tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, inner, l) = (self.hidden_size, self.inner_size(), self.num_layers);
        let block = 2 * 2 * d // two LayerNorms
            + 3 * d * d // q_proj, k_proj, v_proj (no bias)
            + d * d + d // out_proj
            + d * inner + inner // c_fc
            + inner * d + d; // c_proj
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.max_position_embeddings * d + l * block + 2 * d + head
    }
}
