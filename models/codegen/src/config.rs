//! `CodeGenConfig`: the fields of a Hugging Face CodeGen `config.json` (also MOSS's, whose
//! `model_type` is `moss`), with HF's defaults.

use serde::Deserialize;
use zoo_nn::Activation;

/// Groups HF CodeGen splits the fused `qkv_proj` output into (`mp_num`, the TPU-v4 cores of
/// the original training); each group holds a slice of the queries, values and keys.
pub const MP_NUM: usize = 4;

/// The `model_type` strings this crate loads.
pub const MODEL_TYPES: [&str; 2] = ["codegen", "moss"];

/// One id or a list of ids (`eos_token_id` may be either).
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

/// A CodeGen / MOSS `config.json` (HF `CodeGenConfig`); absent fields take HF's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CodeGenConfig {
    /// Tokens in the vocabulary (rows of `wte` and `lm_head`).
    pub vocab_size: usize,
    /// Longest sequence (rows of the rotary table; HF `max_position_embeddings`).
    pub n_positions: usize,
    /// Context length of the original training; unused by the forward pass.
    pub n_ctx: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Features of each head that are rotated (the first `rotary_dim`, adjacent pairs).
    pub rotary_dim: Option<usize>,
    /// MLP inner size; `None` means `4 * n_embd`.
    pub n_inner: Option<usize>,
    /// MLP activation name (`gelu_new`).
    pub activation_function: String,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f64,
    /// The LM head shares the token embedding (never in CodeGen or MOSS checkpoints).
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// `codegen` or `moss` when present.
    pub model_type: Option<String>,
    /// Bits per weight of MOSS's GPTQ-quantized releases (32: not quantized).
    pub wbits: Option<u32>,
}

impl Default for CodeGenConfig {
    fn default() -> Self {
        Self {
            vocab_size: 50400,
            n_positions: 2048,
            n_ctx: 2048,
            n_embd: 4096,
            n_layer: 28,
            n_head: 16,
            rotary_dim: Some(64),
            n_inner: None,
            activation_function: "gelu_new".into(),
            layer_norm_epsilon: 1e-5,
            tie_word_embeddings: false,
            bos_token_id: Some(50256),
            eos_token_id: Some(TokenIds::One(50256)),
            model_type: Some("codegen".into()),
            wbits: None,
        }
    }
}

impl CodeGenConfig {
    /// Parses `config.json` text and checks it is one this crate can run.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together (as HF's reshapes need them to) and the activation is known.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.model_type {
            if !MODEL_TYPES.contains(&t.as_str()) {
                return Err(format!("model_type is `{t}`, not `codegen` or `moss`"));
            }
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.inner_size()),
        ] {
            zoo_nn::limits::check_size(name, v)?;
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if !self.n_head.is_multiple_of(MP_NUM) {
            return Err(format!(
                "n_head {} is not divisible by {MP_NUM}: CodeGen's qkv_proj holds {MP_NUM} \
                 groups of whole heads",
                self.n_head
            ));
        }
        let Some(rotary) = self.rotary_dim else {
            return Err(
                "rotary_dim is null: rotary over the whole hidden size is not \
                        supported (HF cannot run it with more than one head either)"
                    .into(),
            );
        };
        if rotary == 0 || !rotary.is_multiple_of(2) || rotary > self.head_dim() {
            return Err(format!(
                "rotary_dim {rotary} must be even, positive and at most head_dim {}",
                self.head_dim()
            ));
        }
        if self.tie_word_embeddings {
            return Err(
                "tie_word_embeddings is true: CodeGen's head is a separate Linear \
                        with a bias; a tied head is not supported"
                    .into(),
            );
        }
        if let Some(bits) = self.wbits.filter(|&b| b < 32) {
            return Err(format!(
                "wbits is {bits}: GPTQ-quantized MOSS checkpoints are not supported \
                 (use the f16 release and --quantize)"
            ));
        }
        self.activation()?;
        Ok(())
    }

    /// Whether this is a MOSS config (`model_type: "moss"`).
    pub fn is_moss(&self) -> bool {
        self.model_type.as_deref() == Some("moss")
    }

    /// MLP inner size.
    pub fn inner_size(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Rotated features per head (validated: `Some`).
    pub fn rotary(&self) -> usize {
        self.rotary_dim.unwrap_or(self.head_dim())
    }

    /// The end-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
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

    /// Parameters of the model.
    pub fn num_parameters(&self) -> usize {
        let (d, inner, l) = (self.n_embd, self.inner_size(), self.n_layer);
        let block = 2 * d // ln_1
            + 3 * d * d // qkv_proj
            + d * d // out_proj
            + d * inner + inner // fc_in
            + inner * d + d; // fc_out
        self.vocab_size * d + l * block + 2 * d + self.vocab_size * d + self.vocab_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#"{"model_type": "codegen", "vocab_size": 96, "n_positions": 64,
        "n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "n_inner": 64}"#;

    #[test]
    fn configs_it_cannot_run_are_errors_that_say_why() {
        let c = CodeGenConfig::from_json(TINY).unwrap();
        assert_eq!((c.head_dim(), c.rotary(), c.inner_size()), (8, 4, 64));
        assert_eq!(c.eos_ids(), vec![50256]);
        let bad =
            |from: &str, to: &str| CodeGenConfig::from_json(&TINY.replace(from, to)).unwrap_err();
        assert!(bad("\"codegen\"", "\"gptj\"").contains("model_type"));
        assert!(bad("\"n_head\": 4", "\"n_head\": 2").contains("divisible by 4"));
        assert!(bad("\"n_head\": 4", "\"n_head\": 3").contains("n_embd 32"));
        assert!(bad("\"rotary_dim\": 4", "\"rotary_dim\": 10").contains("rotary_dim 10"));
        assert!(bad("\"rotary_dim\": 4", "\"rotary_dim\": 3").contains("even"));
        assert!(bad("\"rotary_dim\": 4", "\"rotary_dim\": null").contains("null"));
        assert!(bad("\"n_inner\": 64", "\"n_inner\": 64, \"wbits\": 4").contains("GPTQ"));
        assert!(bad(
            "\"n_inner\": 64",
            "\"n_inner\": 64, \"activation_function\": \"swish2\""
        )
        .contains("swish2"));
        assert!(bad(
            "\"n_inner\": 64",
            "\"n_inner\": 64, \"tie_word_embeddings\": true"
        )
        .contains("tie_word_embeddings"));
        assert!(bad("\"n_embd\": 32", "\"n_embd\": \"32\"").contains("invalid type"));
        let moss = CodeGenConfig::from_json(&TINY.replace("\"codegen\"", "\"moss\"").replace(
            "\"n_inner\": 64",
            "\"n_inner\": 64, \"eos_token_id\": [106068, 5], \"wbits\": 32",
        ))
        .unwrap();
        assert!(moss.is_moss());
        assert_eq!(moss.eos_ids(), vec![106068, 5]);
    }
}
