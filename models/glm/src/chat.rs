//! The chat prompt formats of the GLM generations, built as token ids exactly as the original
//! code builds them, and the ids that end an answer.
//!
//! - ChatGLM-6B (v1, `ChatGLMForConditionalGeneration.chat`): the query alone when there is
//!   no history, else `[Round i]\n问：{q}\n答：{a}\n` per past round (i from 0) and
//!   `[Round n]\n问：{query}\n答：`; the text's ids, then `[gMASK] <sop>`. Stops at `<eop>`.
//! - ChatGLM2-6B (`build_prompt`): `[Round i]\n\n问：{q}\n\n答：{a}\n\n` (i from 1) and
//!   `[Round n]\n\n问：{query}\n\n答：`, prefixed by `[gMASK] sop`. Stops at `</s>`.
//! - ChatGLM3-6B (`build_chat_input`): `[gMASK] sop`, then per message the role token, the ids
//!   of `"\n"` and the ids of the message, each encoded on its own; ends with
//!   `<|assistant|>`. Stops at `</s>`, `<|user|>` or `<|observation|>`.
//! - GLM-4 (`build_chat_input`): as v3 with `[gMASK] <sop>`; stops at `<|endoftext|>`,
//!   `<|user|>` or `<|observation|>`.

use zoo_nn::TextTokenizer;

use crate::GlmError;

/// A GLM generation, as far as tokenizer and chat format go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generation {
    /// ChatGLM-6B.
    V1,
    /// ChatGLM2-6B.
    V2,
    /// ChatGLM3-6B.
    V3,
    /// GLM-4 (chatglm or HF layout).
    Glm4,
}

impl Generation {
    /// The name used on the command line and in the catalog.
    pub fn name(self) -> &'static str {
        match self {
            Generation::V1 => "chatglm",
            Generation::V2 => "chatglm2",
            Generation::V3 => "chatglm3",
            Generation::Glm4 => "glm4",
        }
    }

    /// Parses [`Generation::name`] (also `v1`, `v2`, `v3`, `glm-4`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "chatglm" | "chatglm-6b" | "chatglm1" | "v1" => Some(Generation::V1),
            "chatglm2" | "chatglm2-6b" | "v2" => Some(Generation::V2),
            "chatglm3" | "chatglm3-6b" | "v3" => Some(Generation::V3),
            "glm4" | "glm-4" => Some(Generation::Glm4),
            _ => None,
        }
    }
}

/// One past exchange: the user's query and the model's answer.
pub type Turn = (String, String);

/// The text prompt of v1 and v2 (which encode a whole text); `None` for v3 and GLM-4.
pub fn render_text(generation: Generation, history: &[Turn], query: &str) -> Option<String> {
    match generation {
        Generation::V1 if history.is_empty() => Some(query.to_string()),
        Generation::V1 => {
            let mut p = String::new();
            for (i, (q, a)) in history.iter().enumerate() {
                p += &format!("[Round {i}]\n问：{q}\n答：{a}\n");
            }
            p += &format!("[Round {}]\n问：{query}\n答：", history.len());
            Some(p)
        }
        Generation::V2 => {
            let mut p = String::new();
            for (i, (q, a)) in history.iter().enumerate() {
                p += &format!("[Round {}]\n\n问：{q}\n\n答：{a}\n\n", i + 1);
            }
            p += &format!("[Round {}]\n\n问：{query}\n\n答：", history.len() + 1);
            Some(p)
        }
        Generation::V3 | Generation::Glm4 => None,
    }
}

fn special(
    tokenizer: &TextTokenizer,
    token: &str,
    generation: Generation,
) -> Result<u32, GlmError> {
    tokenizer.token_id(token).ok_or_else(|| {
        GlmError::Input(format!(
            "the tokenizer has no {token} token, which the {} chat format needs",
            generation.name()
        ))
    })
}

/// The prompt ids for `query` after `history`, as the generation's original chat builds them.
pub fn render_ids(
    generation: Generation,
    tokenizer: &TextTokenizer,
    history: &[Turn],
    query: &str,
) -> Result<Vec<u32>, GlmError> {
    let id = |t: &str| special(tokenizer, t, generation);
    let encode = |text: &str| tokenizer.encode(text, false).map_err(GlmError::from);
    match generation {
        Generation::V1 => {
            let text = render_text(generation, history, query).unwrap_or_default();
            let mut ids = encode(&text)?;
            ids.extend([id("[gMASK]")?, id("<sop>")?]);
            Ok(ids)
        }
        Generation::V2 => {
            let text = render_text(generation, history, query).unwrap_or_default();
            let mut ids = vec![id("[gMASK]")?, id("sop")?];
            ids.extend(encode(&text)?);
            Ok(ids)
        }
        Generation::V3 | Generation::Glm4 => {
            let sop = if generation == Generation::V3 {
                "sop"
            } else {
                "<sop>"
            };
            let (user, assistant) = (id("<|user|>")?, id("<|assistant|>")?);
            let newline = encode("\n")?;
            let mut ids = vec![id("[gMASK]")?, id(sop)?];
            let message = |role: u32, text: &str, ids: &mut Vec<u32>| -> Result<(), GlmError> {
                ids.push(role);
                ids.extend_from_slice(&newline);
                ids.extend(encode(text)?);
                Ok(())
            };
            for (q, a) in history {
                message(user, q, &mut ids)?;
                message(assistant, a, &mut ids)?;
            }
            message(user, query, &mut ids)?;
            ids.push(assistant);
            Ok(ids)
        }
    }
}

/// The ids that end an answer in the generation's original chat.
pub fn stop_ids(generation: Generation, tokenizer: &TextTokenizer) -> Result<Vec<u32>, GlmError> {
    let names: &[&str] = match generation {
        Generation::V1 => &["<eop>"],
        Generation::V2 => &["</s>"],
        Generation::V3 => &["</s>", "<|user|>", "<|observation|>"],
        Generation::Glm4 => &["<|endoftext|>", "<|user|>", "<|observation|>"],
    };
    names
        .iter()
        .map(|t| special(tokenizer, t, generation))
        .collect()
}
