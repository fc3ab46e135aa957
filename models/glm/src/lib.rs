//! The GLM family: ChatGLM-6B (GLM architecture), ChatGLM2-6B / ChatGLM3-6B / GLM-4 in the
//! original `chatglm` layout, and GLM-4 in Hugging Face's `GlmForCausalLM` layout.
//!
//! - [`v1`]: ChatGLM-6B: fused per-head QKV, 2-D rotary positions, prefix-LM mask, `alpha`
//!   residuals over LayerNorm outputs, layer-scaled attention, tanh GELU, P-Tuning v2 prefix.
//! - [`v2`]: ChatGLM2/3 and GLM-4 (`chatglm` layout): multi-query groups in the fused QKV,
//!   interleaved RoPE on half of each head, RMSNorm, SwiGLU, P-Tuning v2 prefix.
//! - [`hf`]: GLM-4 as HF `GlmForCausalLM` (partial interleaved rotary, fused `gate_up_proj`).
//! - [`memory`]: weight and KV-cache memory of a configuration (`zoo info`).
//! - [`tokenizer`], [`chat`]: the tokenizers of each generation and their chat prompt formats.
//! - [`open`]: any generation behind one type ([`Glm`]), with tokenizer and chat format.

pub mod chat;
pub mod error;
pub mod hf;
pub mod memory;
pub mod open;
pub mod tokenizer;
pub mod v1;
pub mod v2;

pub use chat::{render_ids, stop_ids, Generation};
pub use error::GlmError;
pub use hf::{GlmHf, GlmHfCache, GlmHfConfig};
pub use open::{open, open_with, Glm, GlmCache, GlmFormat, GlmGenerator};
pub use v1::{ChatGlmV1, ChatGlmV1Config, PromptLayout, V1Cache};
pub use v2::{ChatGlmV2, ChatGlmV2Config, V2Cache};

use std::path::Path;

/// Which GLM generation a model folder holds, from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlmKind {
    /// ChatGLM-6B (`position_encoding_2d`, `inner_hidden_size`).
    V1,
    /// ChatGLM2/3 or GLM-4 in the `chatglm` layout (`multi_query_group_num`, `kv_channels`).
    V2,
    /// HF `GlmForCausalLM` (`model_type: "glm"`).
    Hf,
}

/// Detects the generation of a model folder from `config.json`.
pub fn detect(dir: &Path) -> Result<GlmKind, GlmError> {
    let json = error::read_json(&dir.join("config.json"))?;
    if json.get("model_type").and_then(|v| v.as_str()) == Some("glm") {
        return Ok(GlmKind::Hf);
    }
    if json.get("position_encoding_2d").is_some() || json.get("inner_hidden_size").is_some() {
        return Ok(GlmKind::V1);
    }
    if json.get("kv_channels").is_some() || json.get("multi_query_group_num").is_some() {
        return Ok(GlmKind::V2);
    }
    Err(GlmError::Config {
        path: dir.join("config.json"),
        reason: "not a GLM config: expected model_type \"glm\" (HF GlmForCausalLM), \
                 position_encoding_2d (ChatGLM-6B) or kv_channels (ChatGLM2/3, GLM-4)"
            .into(),
    })
}
