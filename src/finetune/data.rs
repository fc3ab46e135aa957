//! Training records: Alpaca instructions, ChatGLM prompt/response pairs, ShareGPT / Vicuna
//! conversations and pre-tokenized sequences, turned into token ids with labels (`-100` = not
//! scored).

use std::path::Path;

use serde_json::Value;

use super::FinetuneError;
use crate::nn::{ChatFormat, Message, PipelineError, TextTokenizer};

/// The label of a position the loss does not score (transformers' `ignore_index`).
pub const IGNORE: i64 = -100;

/// One training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The token ids.
    pub input_ids: Vec<u32>,
    /// One label per id: the id itself where scored, [`IGNORE`] elsewhere.
    pub labels: Vec<i64>,
}

impl Example {
    /// Labels that the shifted causal-LM loss scores (every label but the first position's).
    pub fn scored(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE).count()
    }
}

/// How the records of a data file are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// Decided from the first record's keys.
    Auto,
    /// `{"instruction", "input", "output"}`: Alpaca's prompt template, loss on the response.
    Alpaca,
    /// `{"prompt", "response"}` (ChatGLM's P-Tuning data): loss on the response.
    PromptResponse,
    /// `{"input_ids": [...], "labels": [...]}` (labels optional: every id scored).
    Tokens,
    /// ShareGPT / Vicuna conversations, `{"conversations": [{"from": "human"|"gpt"|"system",
    /// "value"}]}`, or the same as `{"messages": [{"role", "content"}]}`: the model's chat
    /// template, the loss on the assistant turns only (each answer and the id that ends it),
    /// as FastChat's `preprocess` masks them.
    Conversations,
}

impl std::str::FromStr for DataFormat {
    type Err = FinetuneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => DataFormat::Auto,
            "alpaca" => DataFormat::Alpaca,
            "chatglm" | "prompt-response" => DataFormat::PromptResponse,
            "tokens" | "tokenized" => DataFormat::Tokens,
            "sharegpt" | "conversations" | "messages" => DataFormat::Conversations,
            _ => {
                return Err(FinetuneError::Config(format!(
                    "unknown data format `{s}`: expected auto, alpaca, chatglm, sharegpt or tokens"
                )))
            }
        })
    }
}

/// What turning text into ids needs from the model.
pub struct TextSide<'a> {
    /// The checkpoint's tokenizer.
    pub tokenizer: Option<&'a TextTokenizer>,
    /// Encodes a prompt as the model's pipeline does (BOS where the model wants one).
    pub encode_prompt: &'a dyn Fn(&str) -> Result<Vec<u32>, PipelineError>,
    /// The end-of-sequence id appended after a response.
    pub eos: Option<u32>,
    /// Tokens in the vocabulary (ids must be below it).
    pub vocab: usize,
    /// The model's chat format (conversations need it).
    pub chat: Option<&'a dyn ChatFormat>,
}

/// Alpaca's prompt for a record with an input.
const ALPACA_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
/// Alpaca's prompt for a record without one.
const ALPACA_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// Alpaca's prompt for an instruction and an optional input.
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    if input.is_empty() {
        ALPACA_NO_INPUT.replace("{instruction}", instruction)
    } else {
        ALPACA_WITH_INPUT
            .replace("{instruction}", instruction)
            .replace("{input}", input)
    }
}

/// The records of `path` (a JSON array, or JSON lines), each with where it is for messages.
fn records(path: &Path) -> Result<Vec<(String, Value)>, FinetuneError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FinetuneError::Data(format!("{}: {e}", path.display())))?;
    let where_ = |what: String| FinetuneError::Data(format!("{}: {what}", path.display()));
    if text.trim_start().starts_with('[') {
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| where_(format!("not a JSON array of records: {e}")))?;
        let items = value.as_array().cloned().unwrap_or_default();
        return Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("record {}", i + 1), v))
            .collect());
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| where_(format!("line {}: not JSON: {e}", i + 1)))?;
        out.push((format!("line {}", i + 1), value));
    }
    Ok(out)
}

/// Reads the training records of `path` as examples of at most `max_len` tokens (right
/// truncation). A record that is malformed, has an id outside the vocabulary, or scores no
/// token after truncation is an error naming its line.
pub fn load_examples(
    path: &Path,
    format: DataFormat,
    text: &TextSide<'_>,
    max_len: usize,
) -> Result<Vec<Example>, FinetuneError> {
    let records = records(path)?;
    if records.is_empty() {
        return Err(FinetuneError::Data(format!(
            "{}: no records",
            path.display()
        )));
    }
    let format = match format {
        DataFormat::Auto => detect(&records[0].1).ok_or_else(|| {
            FinetuneError::Data(format!(
                "{}: cannot tell the format from the first record's keys (expected `instruction`/`output`, `prompt`/`response`, `conversations`, `messages` or `input_ids`); give --format",
                path.display()
            ))
        })?,
        f => f,
    };
    records
        .iter()
        .map(|(at, value)| {
            let bad = |what: String| FinetuneError::Data(format!("{}: {at}: {what}", path.display()));
            let mut ex = example(value, format, text).map_err(bad)?;
            ex.input_ids.truncate(max_len);
            ex.labels.truncate(max_len);
            if let Some(&id) = ex.input_ids.iter().find(|&&id| id as usize >= text.vocab) {
                return Err(bad(format!(
                    "token id {id} is outside the vocabulary of {} tokens",
                    text.vocab
                )));
            }
            if ex.scored() == 0 {
                return Err(bad(format!(
                    "no token is scored{} (the loss needs at least one label after the first position)",
                    if max_len < usize::MAX { format!(" within --max-len {max_len}") } else { String::new() }
                )));
            }
            Ok(ex)
        })
        .collect()
}

fn detect(value: &Value) -> Option<DataFormat> {
    let has = |k: &str| value.get(k).is_some();
    if has("input_ids") {
        Some(DataFormat::Tokens)
    } else if has("instruction") && has("output") {
        Some(DataFormat::Alpaca)
    } else if has("prompt") && has("response") {
        Some(DataFormat::PromptResponse)
    } else if has("conversations") || has("messages") {
        Some(DataFormat::Conversations)
    } else {
        None
    }
}

fn string_field<'v>(value: &'v Value, key: &str, required: bool) -> Result<&'v str, String> {
    match value.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) if !required => Ok(""),
        None => Err(format!("missing `{key}`")),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

fn id_list(value: &Value, key: &str) -> Result<Option<Vec<i64>>, String> {
    match value.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| format!("`{key}` holds `{v}`, not an integer"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("`{key}` is not an array of integers")),
    }
}

/// A prompt and a response as ids, the loss on the response and the end-of-sequence id.
fn prompt_response(prompt: &str, response: &str, text: &TextSide<'_>) -> Result<Example, String> {
    let tokenizer = text
        .tokenizer
        .ok_or("the model has no tokenizer: give pre-tokenized records (`input_ids`)")?;
    let mut ids = (text.encode_prompt)(prompt).map_err(|e| e.to_string())?;
    let n_prompt = ids.len();
    ids.extend(
        tokenizer
            .encode(response, false)
            .map_err(|e| e.to_string())?,
    );
    ids.extend(text.eos);
    let labels = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| if i < n_prompt { IGNORE } else { id as i64 })
        .collect();
    Ok(Example {
        input_ids: ids,
        labels,
    })
}

fn example(value: &Value, format: DataFormat, text: &TextSide<'_>) -> Result<Example, String> {
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    match format {
        DataFormat::Alpaca => {
            let instruction = string_field(value, "instruction", true)?;
            let input = string_field(value, "input", false)?;
            let output = string_field(value, "output", true)?;
            prompt_response(&alpaca_prompt(instruction, input), output, text)
        }
        DataFormat::PromptResponse => {
            let prompt = string_field(value, "prompt", true)?;
            let response = string_field(value, "response", true)?;
            prompt_response(prompt, response, text)
        }
        DataFormat::Tokens => {
            let ids = id_list(value, "input_ids")?.ok_or("missing `input_ids`")?;
            if ids.is_empty() {
                return Err("`input_ids` is empty".into());
            }
            let input_ids = ids
                .iter()
                .map(|&id| u32::try_from(id).map_err(|_| format!("`input_ids` holds {id}")))
                .collect::<Result<Vec<u32>, _>>()?;
            let labels = match id_list(value, "labels")? {
                None => ids,
                Some(labels) => {
                    if labels.len() != ids.len() {
                        return Err(format!(
                            "`labels` has {} entries for {} `input_ids`",
                            labels.len(),
                            ids.len()
                        ));
                    }
                    if let Some(l) = labels.iter().find(|&&l| l != IGNORE && l < 0) {
                        return Err(format!("`labels` holds {l} (use -100 for not scored)"));
                    }
                    labels
                }
            };
            Ok(Example { input_ids, labels })
        }
        DataFormat::Conversations => conversation(value, text),
        DataFormat::Auto => unreachable!("resolved by load_examples"),
    }
}

/// The messages of a ShareGPT (`conversations`: `from` / `value`) or OpenAI-style (`messages`:
/// `role` / `content`) record, roles as `system`, `user`, `assistant`. As FastChat does, a
/// first turn that is not the user's (after a system message) is dropped; the turns must then
/// alternate user, assistant, user…
pub fn conversation_messages(value: &Value) -> Result<Vec<Message>, String> {
    let (key, role_key, text_key) = if value.get("conversations").is_some() {
        ("conversations", "from", "value")
    } else {
        ("messages", "role", "content")
    };
    let turns = value
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("`{key}` is missing or not an array"))?;
    let mut messages = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let role = turn
            .get(role_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("turn {}: `{role_key}` is missing or not a string", i + 1))?;
        let text = turn
            .get(text_key)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("turn {}: `{text_key}` is missing or not a string", i + 1))?;
        let role = match role {
            "human" | "user" => "user",
            "gpt" | "assistant" | "chatgpt" | "bard" | "bing" => "assistant",
            "system" => "system",
            other => return Err(format!("turn {}: unknown role `{other}`", i + 1)),
        };
        messages.push(Message::new(role, text));
    }
    let system = usize::from(messages.first().is_some_and(|m| m.role == "system"));
    if messages.get(system).is_some_and(|m| m.role != "user") {
        messages.remove(system);
    }
    for (i, m) in messages[system..].iter().enumerate() {
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if m.role != want {
            return Err(format!(
                "turn {}: a `{}` turn where a `{want}` turn belongs (turns alternate user, assistant)",
                i + system + 1,
                m.role
            ));
        }
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("no assistant turn to learn from".into());
    }
    Ok(messages)
}

/// The ids and labels of a conversation from the chat template's prompts.
///
/// `prefixes[k]` is the template's prompt before assistant turn `k` (every turn before it,
/// ending where the answer begins); `last_answer` the last answer's ids with the id that ends
/// it. The sequence is the last prefix followed by the last answer. Every earlier answer lies
/// inside it: it starts where its prefix ends and runs up to and including the first id of
/// `stops` after that (the template's end-of-turn token). The labels score those spans and
/// the last answer; everything else (system prompt, user turns, the template's role markers)
/// is `-100`. A template whose prompts do not extend each other, or that ends no answer with
/// a stop id, is an error.
pub fn conversation_labels(
    prefixes: &[Vec<u32>],
    last_answer: &[u32],
    stops: &[u32],
) -> Result<Example, String> {
    let last = prefixes.last().ok_or("no assistant turn")?;
    let mut scored = vec![false; last.len()];
    for (k, prefix) in prefixes.iter().enumerate().take(prefixes.len() - 1) {
        if !last.starts_with(prefix) {
            return Err(format!(
                "the chat template's prompt before answer {} is not the start of the later prompts: cannot tell where the answers lie",
                k + 1
            ));
        }
        let start = prefix.len();
        let next = prefixes[k + 1].len();
        let end = (start..next)
            .find(|&i| stops.contains(&last[i]))
            .ok_or_else(|| {
                format!(
                    "answer {} ends with none of the chat format's end-of-turn ids {stops:?}",
                    k + 1
                )
            })?;
        for s in &mut scored[start..=end] {
            *s = true;
        }
    }
    let mut input_ids = last.clone();
    input_ids.extend_from_slice(last_answer);
    let mut labels: Vec<i64> = input_ids
        .iter()
        .zip(&scored)
        .map(|(&id, &s)| if s { id as i64 } else { IGNORE })
        .collect();
    labels.extend(last_answer.iter().map(|&id| id as i64));
    Ok(Example { input_ids, labels })
}

fn conversation(value: &Value, text: &TextSide<'_>) -> Result<Example, String> {
    let messages = conversation_messages(value)?;
    let (Some(tokenizer), Some(chat)) = (text.tokenizer, text.chat) else {
        return Err(
            "conversations need the model's tokenizer and chat template: give pre-tokenized records (`input_ids`)"
                .into(),
        );
    };
    let mut stops = chat.stop_ids(tokenizer);
    stops.extend(text.eos);
    let last_assistant = messages
        .iter()
        .rposition(|m| m.role == "assistant")
        .expect("checked: an assistant turn");
    let mut prefixes = Vec::new();
    for (i, m) in messages.iter().enumerate().take(last_assistant + 1) {
        if m.role == "assistant" {
            prefixes.push(
                chat.prompt_ids(&messages[..i], tokenizer)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let mut answer = tokenizer
        .encode(&messages[last_assistant].content, false)
        .map_err(|e| e.to_string())?;
    // The id that closes a turn: one the template itself writes in the prompt (ChatML's
    // `<|im_end|>` after the system and user turns, even where the model's eos is `</s>`),
    // else the first stop id (Vicuna / Llama-2 end only answers, with eos).
    let last_prefix = prefixes.last().expect("an assistant turn");
    let end = stops
        .iter()
        .copied()
        .find(|s| last_prefix.contains(s))
        .or_else(|| stops.first().copied())
        .ok_or("the chat format has no end-of-turn id and the model no eos id")?;
    answer.push(end);
    conversation_labels(&prefixes, &answer, &stops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> TextSide<'static> {
        TextSide {
            tokenizer: None,
            encode_prompt: &|_| Ok(vec![]),
            eos: None,
            vocab: 10,
            chat: None,
        }
    }

    fn write(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "zoo-finetune-data-{}-{}.jsonl",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn tokens_with_and_without_labels() {
        let path = write(
            "{\"input_ids\": [1, 2, 3], \"labels\": [-100, 2, 3]}\n\n{\"input_ids\": [4, 5]}\n",
        );
        let ex = load_examples(&path, DataFormat::Auto, &side(), usize::MAX).unwrap();
        assert_eq!(ex[0].labels, vec![-100, 2, 3]);
        assert_eq!(ex[1].labels, vec![4, 5]);
        assert_eq!(ex[0].scored(), 2);
    }

    #[test]
    fn bad_records_name_their_line() {
        for (text, want) in [
            (
                "{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 99]}\n",
                "line 2: token id 99",
            ),
            (
                "{\"input_ids\": [1, 2], \"labels\": [1]}\n",
                "line 1: `labels` has 1",
            ),
            ("{\"input_ids\": [1, 2]}\nnot json\n", "line 2: not JSON"),
            (
                "{\"input_ids\": [1, 2], \"labels\": [-100, -100]}\n",
                "line 1: no token is scored",
            ),
        ] {
            let path = write(text);
            let err = load_examples(&path, DataFormat::Tokens, &side(), usize::MAX).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn truncation_can_leave_nothing_to_score() {
        let path = write("{\"input_ids\": [1, 2, 3, 4], \"labels\": [-100, -100, 3, 4]}\n");
        let ok = load_examples(&path, DataFormat::Tokens, &side(), 3).unwrap();
        assert_eq!(ok[0].input_ids, vec![1, 2, 3]);
        let err = load_examples(&path, DataFormat::Tokens, &side(), 2).unwrap_err();
        assert!(err.to_string().contains("--max-len 2"), "{err}");
    }

    #[test]
    fn alpaca_prompts() {
        assert!(alpaca_prompt("Add", "").ends_with("### Instruction:\nAdd\n\n### Response:\n"));
        assert!(alpaca_prompt("Add", "1 2").contains("### Input:\n1 2\n\n### Response:\n"));
    }

    /// A ChatML-like layout in ids: 90 = `<|im_start|>`, 91 = `<|im_end|>`, 92 = newline,
    /// 80/81/82 = the role names system/user/assistant.
    fn chatml(messages: &[(&str, &[u32])]) -> Vec<u32> {
        let mut ids = Vec::new();
        for (role, text) in messages {
            let r = match *role {
                "system" => 80,
                "user" => 81,
                _ => 82,
            };
            ids.extend([90, r, 92]);
            ids.extend(*text);
            ids.extend([91, 92]);
        }
        ids.extend([90, 82, 92]);
        ids
    }

    /// Two rounds: only the answers and their `<|im_end|>` are scored — not the system prompt,
    /// the user turns, the role markers or the newline after `<|im_end|>`.
    #[test]
    fn conversation_scores_assistant_turns_only() {
        let sys: &[u32] = &[1, 2];
        let (u1, a1, u2, a2): (&[u32], &[u32], &[u32], &[u32]) = (&[3, 4], &[5, 6, 7], &[8], &[9]);
        let p1 = chatml(&[("system", sys), ("user", u1)]);
        let p2 = chatml(&[
            ("system", sys),
            ("user", u1),
            ("assistant", a1),
            ("user", u2),
        ]);
        let mut answer = a2.to_vec();
        answer.push(91);
        let ex = conversation_labels(&[p1.clone(), p2.clone()], &answer, &[91]).unwrap();
        let mut want_ids = p2.clone();
        want_ids.extend([9, 91]);
        assert_eq!(ex.input_ids, want_ids);
        let scored: Vec<u32> = ex
            .labels
            .iter()
            .filter(|&&l| l != IGNORE)
            .map(|&l| l as u32)
            .collect();
        assert_eq!(scored, vec![5, 6, 7, 91, 9, 91]);
        // The first answer's span starts right after its prompt.
        assert_eq!(ex.labels[p1.len()], 5);
        assert_eq!(ex.labels[p1.len() - 1], IGNORE);
        assert_eq!(
            ex.labels[p1.len() + 4],
            IGNORE,
            "the newline after <|im_end|>"
        );
        assert_eq!(ex.labels.len(), ex.input_ids.len());
    }

    #[test]
    fn conversation_errors() {
        let p1 = chatml(&[("user", &[3])]);
        let p2 = vec![7, 7, 7];
        let err = conversation_labels(&[p1.clone(), p2], &[9, 91], &[91]).unwrap_err();
        assert!(err.contains("not the start"), "{err}");
        // No end-of-turn id inside the first answer's span.
        let mut p2 = p1.clone();
        p2.extend([5, 6, 90, 81, 92, 8, 90, 82, 92]);
        let err = conversation_labels(&[p1, p2], &[9, 91], &[91]).unwrap_err();
        assert!(err.contains("end-of-turn"), "{err}");
    }

    #[test]
    fn sharegpt_and_messages_shapes() {
        let v: Value = serde_json::from_str(
            r#"{"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
        )
        .unwrap();
        let m = conversation_messages(&v).unwrap();
        assert_eq!(
            m,
            vec![Message::new("user", "q"), Message::new("assistant", "a")],
            "a leading gpt turn is dropped"
        );
        let v: Value = serde_json::from_str(
            r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        )
        .unwrap();
        assert_eq!(conversation_messages(&v).unwrap().len(), 3);
        for (text, want) in [
            (
                r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"}]}"#,
                "turn 2",
            ),
            (
                r#"{"conversations": [{"from": "robot", "value": "q"}]}"#,
                "unknown role `robot`",
            ),
            (
                r#"{"conversations": [{"from": "human", "value": "q"}]}"#,
                "no assistant turn",
            ),
            (
                r#"{"messages": [{"role": "user"}]}"#,
                "`content` is missing",
            ),
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            let err = conversation_messages(&v).unwrap_err();
            assert!(err.contains(want), "{err} / {want}");
        }
    }

    #[test]
    fn conversations_without_a_template_name_the_line() {
        let path = write(
            "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}]}\n{\"conversations\": 3}\n",
        );
        let err = load_examples(&path, DataFormat::Auto, &side(), usize::MAX).unwrap_err();
        assert!(
            err.to_string().contains("line 1: conversations need"),
            "{err}"
        );
    }
}
