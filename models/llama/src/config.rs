//! `LlamaConfig`: the fields of a Hugging Face LLaMA `config.json`, with HF's defaults.
//!
//! Both spellings of RoPE settings are read: transformers ≤ 4.x writes `rope_theta` and
//! `rope_scaling` (`type` or `rope_type`), transformers 5 writes `rope_parameters` (which also
//! holds `rope_theta`).

use serde::Deserialize;
use zoo_nn::Activation;

/// RoPE scaling settings (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RopeScalingConfig {
    /// `linear`, `dynamic`, `llama3` or `default` (transformers ≥ 4.43 and 5).
    pub rope_type: Option<String>,
    /// The same, as older configs spell it.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Scale factor.
    pub factor: Option<f64>,
    /// llama3: wavelengths longer than `original / low_freq_factor` are divided by `factor`.
    pub low_freq_factor: Option<f64>,
    /// llama3: wavelengths shorter than `original / high_freq_factor` are kept.
    pub high_freq_factor: Option<f64>,
    /// llama3: the context length the model was pretrained with.
    pub original_max_position_embeddings: Option<usize>,
    /// RoPE base (transformers 5 keeps it here).
    pub rope_theta: Option<f64>,
}

/// The RoPE frequency scheme, resolved from the config.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain `1 / theta^(2i/d)`.
    Default,
    /// Frequencies divided by `factor` (position interpolation).
    Linear {
        /// Divides every frequency.
        factor: f64,
    },
    /// Dynamic NTK: the base grows with the sequence once it passes `max_position_embeddings`.
    Dynamic {
        /// Scale factor.
        factor: f64,
    },
    /// LLaMA 3.1's piecewise scaling of low frequencies.
    Llama3 {
        /// Scale factor for low frequencies.
        factor: f64,
        /// Low-frequency boundary factor.
        low_freq_factor: f64,
        /// High-frequency boundary factor.
        high_freq_factor: f64,
        /// Pretraining context length.
        original_max_position_embeddings: usize,
    },
}

/// `eos_token_id`: one id or a list of ids.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids (LLaMA 3 has more than one end token).
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

/// A LLaMA `config.json` (HF `LlamaConfig`); absent fields take HF's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); `None` means as many as query heads.
    pub num_key_value_heads: Option<usize>,
    /// Size of one head; `None` means `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base (older configs); transformers 5 puts it in `rope_parameters`.
    pub rope_theta: Option<f64>,
    /// RoPE scaling (older configs).
    pub rope_scaling: Option<RopeScalingConfig>,
    /// RoPE base and scaling (transformers 5).
    pub rope_parameters: Option<RopeScalingConfig>,
    /// Context length.
    pub max_position_embeddings: usize,
    /// The LM head shares the token embedding.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// Biases on q/k/v/o projections.
    pub attention_bias: bool,
    /// Biases on gate/up/down projections.
    pub mlp_bias: bool,
    /// MLP activation name (`silu`).
    pub hidden_act: String,
    /// `llama` (or a LLaMA-architecture name such as `mistral` without sliding window).
    pub model_type: Option<String>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            rms_norm_eps: 1e-6,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            max_position_embeddings: 2048,
            tie_word_embeddings: false,
            bos_token_id: Some(1),
            eos_token_id: Some(TokenIds::One(2)),
            attention_bias: false,
            mlp_bias: false,
            hidden_act: "silu".into(),
            model_type: Some("llama".into()),
        }
    }
}

impl LlamaConfig {
    /// Parses `config.json` text and checks it is self-consistent.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together, the activation and the RoPE scaling are known.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if t != "llama" {
                return Err(format!("model_type is `{t}`, not `llama`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
            ("head_dim", self.head_dim()),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        let hd = self.head_dim();
        if hd == 0 || !hd.is_multiple_of(2) {
            return Err(format!("head_dim {hd} must be even and positive"));
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(format!("rms_norm_eps {} is not valid", self.rms_norm_eps));
        }
        let theta = self.rope_theta();
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!("rope_theta {theta} must be positive"));
        }
        self.activation()?;
        self.rope()?;
        Ok(())
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// RoPE base.
    pub fn rope_theta(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10000.0)
    }

    /// End-of-sequence ids (empty when the config names none).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// The MLP activation.
    pub fn activation(&self) -> Result<Activation, String> {
        Activation::from_hf_name(&self.hidden_act)
            .ok_or_else(|| format!("hidden_act `{}` is not supported", self.hidden_act))
    }

    /// The RoPE scheme, from `rope_scaling` or `rope_parameters`.
    pub fn rope(&self) -> Result<RopeScaling, String> {
        let Some(s) = self.rope_scaling.as_ref().or(self.rope_parameters.as_ref()) else {
            return Ok(RopeScaling::Default);
        };
        let kind = s
            .rope_type
            .as_deref()
            .or(s.kind.as_deref())
            .unwrap_or("default");
        let factor = || -> Result<f64, String> {
            let f = s
                .factor
                .ok_or_else(|| format!("rope scaling `{kind}` needs `factor`"))?;
            if f.is_finite() && f >= 1.0 {
                Ok(f)
            } else {
                Err(format!("rope scaling factor {f} must be >= 1"))
            }
        };
        Ok(match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: factor()? },
            "dynamic" => RopeScaling::Dynamic { factor: factor()? },
            "llama3" => {
                let low = s
                    .low_freq_factor
                    .ok_or("llama3 rope scaling needs `low_freq_factor`")?;
                let high = s
                    .high_freq_factor
                    .ok_or("llama3 rope scaling needs `high_freq_factor`")?;
                let orig = s
                    .original_max_position_embeddings
                    .ok_or("llama3 rope scaling needs `original_max_position_embeddings`")?;
                if !(low > 0.0 && high > low && orig > 0) {
                    return Err(format!(
                        "llama3 rope scaling needs 0 < low_freq_factor ({low}) < high_freq_factor ({high}) and original_max_position_embeddings > 0"
                    ));
                }
                RopeScaling::Llama3 {
                    factor: factor()?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: orig,
                }
            }
            other => {
                return Err(format!(
                    "rope scaling type `{other}` is not supported (linear, dynamic, llama3)"
                ))
            }
        })
    }

    /// The longest sequence the model accepts: `max_position_embeddings`, times `factor` for
    /// dynamic NTK scaling (whose purpose is running past it).
    pub fn context_length(&self) -> usize {
        match self.rope() {
            Ok(RopeScaling::Dynamic { factor }) => {
                (self.max_position_embeddings as f64 * factor) as usize
            }
            _ => self.max_position_embeddings,
        }
    }

    /// Parameters of the model (a tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (d, i, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        let ab = usize::from(self.attention_bias);
        let mb = usize::from(self.mlp_bias);
        let attn = d * h * hd + 2 * d * kv * hd + h * hd * d + ab * (h * hd + 2 * kv * hd + d);
        let mlp = 3 * d * i + mb * (2 * i + d);
        let layer = attn + mlp + 2 * d;
        let head = if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * d
        };
        self.vocab_size * d + self.num_hidden_layers * layer + d + head
    }
}
