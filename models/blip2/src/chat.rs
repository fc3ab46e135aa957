//! MiniGPT-4's conversation format (its `CONV_VISION_Vicuna0`): a system text, then turns
//! `Human: …` / `Assistant: …` separated by `###`, the image as `<Img><ImageHere></Img>` at the
//! start of the first user message, and the prompt ending with `###Assistant:`.
//!
//! As MiniGPT-4 does, the rendered text is split at `<ImageHere>`: the first piece is tokenized
//! with the tokenizer's special tokens (LLaMA's `<s>`), the others without, and the image's
//! `num_query_tokens` placeholders go between them — the query embeddings replace them when
//! the language model runs.

use zoo_nn::chat::{ChatError, ChatFormat, Message};
use zoo_nn::TextTokenizer;

/// MiniGPT-4's default system text.
pub const SYSTEM: &str = "Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I provide it to you. Please answer my questions.";

/// Where the image goes in a user message.
pub const IMAGE_HERE: &str = "<ImageHere>";

/// The separator that ends every turn (and the generation: MiniGPT-4 stops at `###`).
pub const SEP: &str = "###";

/// MiniGPT-4's prompt, with the image placeholders spliced in as ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MiniGpt4Format {
    /// The placeholder id (`image_token_index`).
    pub image_token: u32,
    /// Placeholders per image.
    pub num_query_tokens: usize,
}

impl MiniGpt4Format {
    /// The format for a model whose image takes `num_query_tokens` copies of `image_token`.
    pub fn new(image_token: u32, num_query_tokens: usize) -> Self {
        Self {
            image_token,
            num_query_tokens,
        }
    }
}

/// The prompt text for `messages`: the system message (or [`SYSTEM`]), each turn as
/// `###Human: …` / `###Assistant: …`, the image before the first user message, and
/// `###Assistant:` last.
pub fn render(messages: &[Message]) -> Result<String, ChatError> {
    if messages.last().is_none_or(|m| m.role != "user") {
        return Err(ChatError::NoUserMessage);
    }
    let system = messages
        .iter()
        .find(|m| m.role == "system")
        .map_or(SYSTEM, |m| m.content.as_str());
    let mut text = format!("{system}{SEP}");
    let mut image_placed = false;
    for m in messages.iter().filter(|m| m.role != "system") {
        match m.role.as_str() {
            "user" if !image_placed => {
                image_placed = true;
                text.push_str(&format!(
                    "Human: <Img>{IMAGE_HERE}</Img> {}{SEP}",
                    m.content
                ));
            }
            "user" => text.push_str(&format!("Human: {}{SEP}", m.content)),
            "assistant" => text.push_str(&format!("Assistant: {}{SEP}", m.content)),
            other => {
                return Err(ChatError::Role {
                    format: "minigpt4",
                    role: other.to_string(),
                    known: "system, user, assistant",
                })
            }
        }
    }
    text.push_str("Assistant:");
    Ok(text)
}

impl ChatFormat for MiniGpt4Format {
    fn name(&self) -> String {
        "minigpt4".into()
    }

    fn prompt_ids(
        &self,
        messages: &[Message],
        tokenizer: &TextTokenizer,
    ) -> Result<Vec<u32>, ChatError> {
        let text = render(messages)?;
        let mut ids = Vec::new();
        for (i, piece) in text.split(IMAGE_HERE).enumerate() {
            if i > 0 {
                ids.extend(std::iter::repeat_n(self.image_token, self.num_query_tokens));
            }
            ids.extend(tokenizer.encode(piece, i == 0)?);
        }
        Ok(ids)
    }

    fn stop_ids(&self, tokenizer: &TextTokenizer) -> Vec<u32> {
        // MiniGPT-4 stops at `###` (LLaMA has it as one token, 835).
        tokenizer.token_id(SEP).into_iter().collect()
    }

    fn prompt_text(&self, messages: &[Message]) -> Result<Option<String>, ChatError> {
        render(messages).map(Some)
    }
}
