//! Chat prompts, one abstraction for every family: a [`ChatFormat`] turns a conversation into
//! the prompt ids a model expects and names the ids that end its answer.
//!
//! Two kinds exist: text templates ([`Template`]: the checkpoint's own Jinja template rendered
//! with `minijinja`, or the named formats of Alpaca, Vicuna, LLaMA-2, ChatML and Zephyr), used
//! through [`TemplateFormat`]; and formats built as ids, such as ChatGLM's, which their family
//! crate implements. The rendered text of a template contains the special tokens the format
//! writes (`<|im_start|>`, LLaMA-2's `<s>`); it is encoded with special-token parsing on and
//! without adding bos again when [`Template::includes_bos`] says so.

use serde::Serialize;

use crate::tokenizer::{TextTokenizer, TokenizerError};

/// A chat template that cannot be parsed or rendered, or messages a format cannot express.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The Jinja template is invalid or failed while rendering.
    #[error("chat template: {0}")]
    Template(String),
    /// A message role the format does not know.
    #[error("the {format} format has no role `{role}` (known: {known})")]
    Role {
        /// The format.
        format: &'static str,
        /// The role given.
        role: String,
        /// The roles it accepts.
        known: &'static str,
    },
    /// No template of that name.
    #[error(
        "unknown chat template `{0}` (known: alpaca, vicuna-v1.1, llama-2-chat, chatml, zephyr)"
    )]
    Unknown(String),
    /// The conversation has no message, or does not end with the user's.
    #[error("the conversation must end with a user message")]
    NoUserMessage,
    /// The format has no system message.
    #[error("the {0} format has no system message")]
    NoSystem(String),
    /// A special token the format needs is not in the vocabulary.
    #[error("the tokenizer has no `{token}` token, which the {format} format needs")]
    MissingToken {
        /// The format.
        format: String,
        /// The token text.
        token: String,
    },
    /// The rendered prompt could not be encoded.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A format built as ids failed (its message says why).
    #[error("{0}")]
    Format(String),
}

/// How a model turns a conversation into prompt ids, and which ids end its answer.
///
/// Implemented by [`TemplateFormat`] (text templates) and by families whose original chat code
/// builds ids directly (ChatGLM).
pub trait ChatFormat: std::fmt::Debug + Send + Sync {
    /// A short name for messages (`jinja`, `chatml`, `chatglm2`…).
    fn name(&self) -> String;

    /// The prompt ids for `messages` (roles `system`, `user`, `assistant`; the last one the
    /// user's), ending where the assistant's answer begins.
    fn prompt_ids(
        &self,
        messages: &[Message],
        tokenizer: &TextTokenizer,
    ) -> Result<Vec<u32>, ChatError>;

    /// Ids that end an assistant turn in this format (besides the model's own eos ids).
    fn stop_ids(&self, tokenizer: &TextTokenizer) -> Vec<u32>;

    /// The prompt as text, for formats that render text (`None` for formats built as ids).
    fn prompt_text(&self, messages: &[Message]) -> Result<Option<String>, ChatError> {
        let _ = messages;
        Ok(None)
    }
}

/// A text [`Template`] as a [`ChatFormat`]: rendered, encoded with special tokens parsed, and
/// `bos` put first unless the text already starts with it (llama.cpp does so for GGUF files
/// that ask for bos; transformers' `apply_chat_template` never adds it, so HF folders pass
/// `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFormat {
    /// The template.
    pub template: Template,
    /// A beginning-of-sequence id to put first when the template does not write it.
    pub bos: Option<u32>,
}

impl TemplateFormat {
    /// A format from a template and the bos id to put first, if any.
    pub fn new(template: Template, bos: Option<u32>) -> Self {
        Self { template, bos }
    }
}

impl ChatFormat for TemplateFormat {
    fn name(&self) -> String {
        self.template.name().to_string()
    }

    fn prompt_ids(
        &self,
        messages: &[Message],
        tokenizer: &TextTokenizer,
    ) -> Result<Vec<u32>, ChatError> {
        if messages.last().is_none_or(|m| m.role != "user") {
            return Err(ChatError::NoUserMessage);
        }
        let text = render(&self.template, messages, true)?;
        let mut ids = tokenizer.encode(&text, false)?;
        if let Some(bos) = self.bos.filter(|_| !self.template.includes_bos()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    fn prompt_text(&self, messages: &[Message]) -> Result<Option<String>, ChatError> {
        render(&self.template, messages, true).map(Some)
    }

    fn stop_ids(&self, tokenizer: &TextTokenizer) -> Vec<u32> {
        self.template
            .end_of_turn()
            .iter()
            .filter_map(|t| tokenizer.token_id(t))
            .collect()
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (Alpaca also accepts `input`: the instruction's input).
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with this role and text.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A prompt format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Template {
    /// A Jinja template from the checkpoint, with the texts of its bos/eos tokens.
    Jinja {
        /// The template source.
        source: String,
        /// `bos_token` as the template sees it.
        bos_token: String,
        /// `eos_token` as the template sees it.
        eos_token: String,
    },
    /// Stanford Alpaca (with an `### Input:` section when a message has role `input`).
    Alpaca,
    /// Vicuna v1.1 (`USER: … ASSISTANT: …</s>`).
    VicunaV11,
    /// LLaMA-2 chat (`<s>[INST] <<SYS>> … [/INST] … </s>`).
    Llama2Chat,
    /// ChatML (`<|im_start|>role\n…<|im_end|>`).
    ChatMl,
    /// Zephyr (`<|user|>\n…</s>`).
    Zephyr,
}

const ALPACA_PREAMBLE: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
const ALPACA_PREAMBLE_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";
const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

impl Template {
    /// A checked Jinja template.
    pub fn jinja(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        guarded(|| {
            let mut env = jinja_env();
            env.add_template("chat", source)
                .map(|_| ())
                .map_err(|e| ChatError::Template(e.to_string()))
        })?;
        Ok(Template::Jinja {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// A named format: `alpaca`, `vicuna-v1.1` (`vicuna`), `llama-2-chat` (`llama2`), `chatml`, `zephyr`.
    pub fn named(name: &str) -> Result<Self, ChatError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "alpaca" => Template::Alpaca,
            "vicuna" | "vicuna-v1.1" | "vicuna_v1.1" => Template::VicunaV11,
            "llama-2-chat" | "llama2" | "llama-2" | "llama2-chat" => Template::Llama2Chat,
            "chatml" => Template::ChatMl,
            "zephyr" => Template::Zephyr,
            _ => return Err(ChatError::Unknown(name.to_string())),
        })
    }

    /// Token texts that end an assistant turn in this format (map them to ids with the
    /// tokenizer and add the model's eos ids).
    pub fn end_of_turn(&self) -> Vec<String> {
        match self {
            Template::Jinja { eos_token, .. } => {
                let mut v = vec![eos_token.clone()];
                for t in ["<|im_end|>", "<|eot_id|>", "<|end|>"] {
                    if let Template::Jinja { source, .. } = self {
                        if source.contains(t) && !v.iter().any(|x| x == t) {
                            v.push(t.to_string());
                        }
                    }
                }
                v.retain(|s| !s.is_empty());
                v
            }
            Template::ChatMl => vec!["<|im_end|>".into()],
            Template::Alpaca | Template::VicunaV11 | Template::Llama2Chat | Template::Zephyr => {
                vec!["</s>".into()]
            }
        }
    }

    /// The format's name: `jinja` for a checkpoint's own template, else the named format's.
    pub fn name(&self) -> &'static str {
        match self {
            Template::Jinja { .. } => "jinja",
            Template::Alpaca => "alpaca",
            Template::VicunaV11 => "vicuna-v1.1",
            Template::Llama2Chat => "llama-2-chat",
            Template::ChatMl => "chatml",
            Template::Zephyr => "zephyr",
        }
    }

    /// Whether the rendered text already starts with the bos token (then do not add it again).
    pub fn includes_bos(&self) -> bool {
        match self {
            Template::Jinja { source, .. } => source.contains("bos_token"),
            Template::Llama2Chat => true,
            _ => false,
        }
    }
}

/// The work one compile or render may do, in minijinja's fuel: every instruction costs one, and
/// every 64 bytes of data the template creates (strings built with `~`, `*`, filters, the output)
/// cost one more, checked before a large allocation is made. A real chat template spends tens
/// per message; a template from a hostile file that loops (nested `range`s) or builds data
/// (`s ~ s` doubling, `"x" * 10**10`, `replace` squaring) stops here with an error instead of
/// running for hours or exhausting memory: a render produces at most `JINJA_FUEL * 64` bytes
/// (256 MiB) in all.
pub const JINJA_FUEL: u64 = 4_000_000;

/// The rendered prompt may be at most this many bytes, plus [`PROMPT_PER_MESSAGE_BYTE`] per byte
/// of the messages. Real templates add a few hundred bytes per message; a hostile template that
/// writes in a loop stops here with an error instead of filling memory.
pub const PROMPT_BASE_BYTES: usize = 1 << 20;
/// See [`PROMPT_BASE_BYTES`].
pub const PROMPT_PER_MESSAGE_BYTE: usize = 8;

fn prompt_limit(messages: &[Message]) -> usize {
    let given: usize = messages
        .iter()
        .map(|m| m.role.len() + m.content.len())
        .sum();
    PROMPT_BASE_BYTES.saturating_add(given.saturating_mul(PROMPT_PER_MESSAGE_BYTE))
}

/// Collects the rendered prompt and refuses to grow past `limit` bytes.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("the rendered prompt is too long"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn jinja_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(JINJA_FUEL));
    env
}

/// Runs minijinja on a template that came from a file. minijinja 2.12 panicked on some inputs
/// instead of returning an error (an `unwrap` on `None` when it compares an overflowed integer
/// expression with a float, found by the `chat_template` fuzz target); such a panic becomes a
/// template error here.
fn guarded<T>(f: impl FnOnce() -> Result<T, ChatError>) -> Result<T, ChatError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown reason".into());
        Err(ChatError::Template(format!(
            "the template engine failed on this template ({why})"
        )))
    })
}

fn role_err(format: &'static str, role: &str, known: &'static str) -> ChatError {
    ChatError::Role {
        format,
        role: role.to_string(),
        known,
    }
}

/// Renders `messages` in `template`; with `add_generation_prompt` the text ends where the
/// assistant's next answer begins.
pub fn render(
    template: &Template,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    let mut out = String::new();
    match template {
        Template::Jinja {
            source,
            bos_token,
            eos_token,
        } => {
            out = guarded(|| {
                let mut env = jinja_env();
                env.add_function(
                    "raise_exception",
                    |msg: String| -> Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            msg,
                        ))
                    },
                );
                env.add_template("chat", source)
                    .map_err(|e| ChatError::Template(e.to_string()))?;
                let tmpl = env
                    .get_template("chat")
                    .map_err(|e| ChatError::Template(e.to_string()))?;
                let limit = prompt_limit(messages);
                let mut sink = Bounded {
                    out: Vec::new(),
                    limit,
                    overflowed: false,
                };
                tmpl.render_captured_to(
                    minijinja::context! {
                        messages => minijinja::value::Serde(messages),
                        add_generation_prompt => add_generation_prompt,
                        bos_token => bos_token,
                        eos_token => eos_token,
                    },
                    &mut sink,
                )
                .map_err(|e| {
                    if sink.overflowed {
                        ChatError::Template(format!(
                            "the rendered prompt is longer than {limit} bytes (the limit is \
                             {PROMPT_BASE_BYTES} bytes plus {PROMPT_PER_MESSAGE_BYTE} per byte \
                             of the messages)"
                        ))
                    } else {
                        ChatError::Template(e.to_string())
                    }
                })?;
                String::from_utf8(sink.out).map_err(|_| {
                    ChatError::Template("the template rendered text that is not UTF-8".into())
                })
            })?;
        }
        Template::ChatMl => {
            for m in messages {
                out += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
            }
            if add_generation_prompt {
                out += "<|im_start|>assistant\n";
            }
        }
        Template::Zephyr => {
            for m in messages {
                if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                    return Err(role_err("zephyr", &m.role, "system, user, assistant"));
                }
                out += &format!("<|{}|>\n{}</s>\n", m.role, m.content);
            }
            if add_generation_prompt {
                out += "<|assistant|>\n";
            }
        }
        Template::Alpaca => {
            let has_input = messages.iter().any(|m| m.role == "input");
            let system = messages
                .iter()
                .find(|m| m.role == "system")
                .map(|m| m.content.as_str());
            out += system.unwrap_or(if has_input {
                ALPACA_PREAMBLE_INPUT
            } else {
                ALPACA_PREAMBLE
            });
            out += "\n\n";
            for m in messages {
                match m.role.as_str() {
                    "system" => {}
                    "user" => out += &format!("### Instruction:\n{}\n\n", m.content),
                    "input" => out += &format!("### Input:\n{}\n\n", m.content),
                    "assistant" => out += &format!("### Response:\n{}\n\n", m.content),
                    r => return Err(role_err("alpaca", r, "system, user, input, assistant")),
                }
            }
            if add_generation_prompt {
                out += "### Response:\n";
            }
        }
        Template::VicunaV11 => {
            let system = messages
                .iter()
                .find(|m| m.role == "system")
                .map(|m| m.content.as_str());
            out += system.unwrap_or(VICUNA_SYSTEM);
            out += " ";
            for m in messages {
                match m.role.as_str() {
                    "system" => {}
                    "user" => out += &format!("USER: {} ", m.content),
                    "assistant" => out += &format!("ASSISTANT: {}</s>", m.content),
                    r => return Err(role_err("vicuna-v1.1", r, "system, user, assistant")),
                }
            }
            if add_generation_prompt {
                out += "ASSISTANT:";
            }
        }
        Template::Llama2Chat => {
            let mut system = None;
            let mut open = false;
            for m in messages {
                match m.role.as_str() {
                    "system" => system = Some(m.content.as_str()),
                    "user" => {
                        let text = match system.take() {
                            Some(s) => format!("<<SYS>>\n{s}\n<</SYS>>\n\n{}", m.content),
                            None => m.content.clone(),
                        };
                        out += &format!("<s>[INST] {} [/INST]", text.trim());
                        open = true;
                    }
                    "assistant" => {
                        out += &format!(" {} </s>", m.content.trim());
                        open = false;
                    }
                    r => return Err(role_err("llama-2-chat", r, "system, user, assistant")),
                }
            }
            let _ = (open, add_generation_prompt); // the prompt already ends after [/INST]
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<Message> {
        vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello!"),
            Message::new("user", "What is 2+2?"),
        ]
    }

    #[test]
    fn named_formats_render_the_published_layouts() {
        let chatml = render(&Template::ChatMl, &conv(), true).unwrap();
        assert_eq!(
            chatml,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let vicuna = render(&Template::VicunaV11, &conv(), true).unwrap();
        assert_eq!(
            vicuna,
            format!("{VICUNA_SYSTEM} USER: Hi ASSISTANT: Hello!</s>USER: What is 2+2? ASSISTANT:")
        );
        let mut with_sys = vec![Message::new("system", "Be brief.")];
        with_sys.extend(conv());
        let llama2 = render(&Template::Llama2Chat, &with_sys, true).unwrap();
        assert_eq!(
            llama2,
            "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] What is 2+2? [/INST]"
        );
        let zephyr = render(&Template::Zephyr, &with_sys[..2], true).unwrap();
        assert_eq!(
            zephyr,
            "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
        );
        let alpaca = render(
            &Template::Alpaca,
            &[Message::new("user", "Name a color.")],
            true,
        )
        .unwrap();
        assert_eq!(
            alpaca,
            format!("{ALPACA_PREAMBLE}\n\n### Instruction:\nName a color.\n\n### Response:\n")
        );
        let alpaca_in = render(
            &Template::Alpaca,
            &[
                Message::new("user", "Translate."),
                Message::new("input", "Hallo"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            alpaca_in,
            format!("{ALPACA_PREAMBLE_INPUT}\n\n### Instruction:\nTranslate.\n\n### Input:\nHallo\n\n### Response:\n")
        );
        assert!(matches!(
            render(&Template::Zephyr, &[Message::new("tool", "x")], true),
            Err(ChatError::Role { .. })
        ));
        assert!(Template::named("nope").is_err());
        assert_eq!(Template::named("vicuna").unwrap(), Template::VicunaV11);
    }

    #[test]
    fn jinja_templates_render_like_the_named_chatml() {
        let source = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = Template::jinja(source, "<|im_start|>", "<|im_end|>").unwrap();
        assert_eq!(
            render(&t, &conv(), true).unwrap(),
            render(&Template::ChatMl, &conv(), true).unwrap()
        );
        assert_eq!(t.end_of_turn(), vec!["<|im_end|>".to_string()]);
        let raising =
            Template::jinja("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let err = render(&raising, &conv(), true).unwrap_err().to_string();
        assert!(err.contains("roles must alternate"), "{err}");
        assert!(Template::jinja("{% for %}", "", "").is_err());
    }

    /// Found by the `chat_template` fuzz target (seed `crash-0579fee3`): minijinja 2.12
    /// panicked on this template (the zoo caught it and reported a template error); 3.1
    /// renders it. Either way the caller gets an answer, not a panic.
    #[test]
    fn a_template_that_panicked_minijinja_renders_or_errors() {
        let source = include_str!("../../../tests/fuzz/seeds/chat_template/crash-0579fee3");
        let result = Template::jinja(source, "<s>", "</s>").and_then(|t| render(&t, &conv(), true));
        match result {
            Ok(text) => assert_eq!(text, "False/"),
            Err(e) => assert!(e.to_string().starts_with("chat template:"), "{e}"),
        }
    }

    /// A template that would run ~1e15 steps stops at the fuel limit with an error.
    #[test]
    fn a_template_that_loops_for_ever_runs_out_of_fuel() {
        let source = "{% for a in range(100000) %}{% for b in range(100000) %}\
                      {% for c in range(100000) %}{% set x = c %}{% endfor %}{% endfor %}\
                      {% endfor %}";
        let t = Template::jinja(source, "<s>", "</s>").unwrap();
        let err = render(&t, &conv(), true).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
    }

    /// A template that writes more than the prompt limit stops with an error that says so,
    /// long before fuel or memory run out.
    #[test]
    fn a_template_that_writes_too_much_is_an_error() {
        let source = "{% for a in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";
        let t = Template::jinja(source, "<s>", "</s>").unwrap();
        let err = render(&t, &conv(), true).unwrap_err().to_string();
        assert!(err.contains("longer than"), "{err}");
        // The limit grows with the messages: the same template over a small range renders.
        let small = Template::jinja(
            "{% for a in range(10) %}{{ 'x' * 1000 }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(render(&small, &conv(), true).unwrap().len(), 10_000);
    }

    /// Found by the `chat_template` fuzz target: a string or a list repeated ~1e10 times
    /// aborted the process in minijinja 2.12 (`str::repeat`, "memory allocation of 31604306176
    /// bytes failed"). minijinja 3.1 refuses a repetition of more than 1e8 bytes or items.
    #[test]
    fn a_huge_repetition_is_an_error() {
        for source in [
            "{{ 'x' * 30000000000 }}",
            "{{ [0] * 1073741824 }}",
            include_str!("../../../tests/fuzz/seeds/chat_template/oom-3ccb91fa"),
        ] {
            let t = Template::jinja(source, "<s>", "</s>").unwrap();
            let err = render(&t, &conv(), true).unwrap_err().to_string();
            assert!(err.starts_with("chat template:"), "{err}");
        }
    }

    /// Every seed of the `chat_template` fuzz target, the crash inputs among them, renders or
    /// fails with an error: none panics through, aborts or runs out of memory.
    #[test]
    fn every_fuzz_seed_renders_or_errors() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fuzz/seeds/chat_template");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Ok(source) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Ok(t) = Template::jinja(source, "<s>", "</s>") {
                let _ = render(&t, &conv(), true);
            }
            n += 1;
        }
        assert!(n >= 20, "only {n} seeds in {}", dir.display());
    }

    /// Data a template builds for itself is charged against the fuel (minijinja 3.1): doubling
    /// a string forty times, or squaring it with `replace`, stops with an error instead of
    /// exhausting memory.
    #[test]
    fn a_template_that_builds_data_runs_out_of_fuel() {
        for source in [
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}\
             {% set ns.s = ns.s|replace('x', ns.s) %}{% endfor %}{{ ns.s|length }}",
        ] {
            let t = Template::jinja(source, "<s>", "</s>").unwrap();
            let err = render(&t, &conv(), true).unwrap_err().to_string();
            assert!(err.contains("fuel"), "{err}");
        }
        // Twenty doublings (1 MiB) are within the budget.
        let fine = Template::jinja(
            "{% set ns = namespace(s='x') %}{% for i in range(20) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(render(&fine, &conv(), true).unwrap(), "1048576");
    }
}
