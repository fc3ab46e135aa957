//! Training records: Alpaca instructions, ChatGLM prompt/response pairs and pre-tokenized
//! sequences, turned into token ids with labels (`-100` = not scored).

use std::path::Path;

use serde_json::Value;

use super::FinetuneError;
use crate::nn::{PipelineError, TextTokenizer};

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
}

impl std::str::FromStr for DataFormat {
    type Err = FinetuneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => DataFormat::Auto,
            "alpaca" => DataFormat::Alpaca,
            "chatglm" | "prompt-response" => DataFormat::PromptResponse,
            "tokens" | "tokenized" => DataFormat::Tokens,
            _ => {
                return Err(FinetuneError::Config(format!(
                    "unknown data format `{s}`: expected auto, alpaca, chatglm or tokens"
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
                "{}: cannot tell the format from the first record's keys (expected `instruction`/`output`, `prompt`/`response` or `input_ids`); give --format",
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
        DataFormat::Auto => unreachable!("resolved by load_examples"),
    }
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
}
