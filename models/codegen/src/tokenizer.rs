//! The CodeGen / MOSS tokenizer: GPT-2's byte-level BPE plus the checkpoint's added tokens
//! (CodeGen's runs of spaces and tabs; MOSS's `<|Human|>`, `<eoh>`, `<|MOSS|>`, `<eom>`, …),
//! from `tokenizer.json`, or from `vocab.json` + `merges.txt` + `added_tokens.json`.

use std::collections::BTreeMap;
use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};
use zoo_nn::{TextTokenizer, TokenizerError};

/// Reads a folder's tokenizer: `tokenizer.json` when present, else GPT-2's files with the
/// added tokens of `added_tokens.json` (or `tokenizer_config.json`'s `added_tokens_decoder`)
/// at their ids; tokens named in `special_tokens_map.json` or marked special are special
/// (left out of decoded text on request). `None` when the folder has no tokenizer.
pub fn load_tokenizer(dir: &Path) -> Result<Option<TextTokenizer>, TokenizerError> {
    let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
    if dir.join("tokenizer.json").is_file() || !(vocab.is_file() && merges.is_file()) {
        return TextTokenizer::from_dir(dir);
    }
    let err = |path: &Path, reason: String| TokenizerError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let (vocab_s, merges_s) = (vocab.to_string_lossy(), merges.to_string_lossy());
    let (mut table, merge_list) =
        BPE::read_file(&vocab_s, &merges_s).map_err(|e| err(&vocab, e.to_string()))?;
    let added_path = dir.join("added_tokens.json");
    let mut added: BTreeMap<String, u32> = if added_path.is_file() {
        let text =
            std::fs::read_to_string(&added_path).map_err(|e| err(&added_path, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(&added_path, e.to_string()))?
    } else {
        BTreeMap::new()
    };
    // Newer writers list added tokens in tokenizer_config.json instead.
    let (decoder, mut special) = config_added_tokens(dir)?;
    for (token, id) in decoder {
        added.entry(token).or_insert(id);
    }
    // Added tokens take the ids the file gives them: put them in the vocabulary first.
    let taken: BTreeMap<u32, String> = table.iter().map(|(t, &i)| (i, t.clone())).collect();
    for (token, &id) in &added {
        if let Some(other) = taken.get(&id).filter(|other| *other != token) {
            return Err(err(
                &added_path,
                format!("`{token}` has id {id}, which vocab.json gives to `{other}`"),
            ));
        }
        table.insert(token.clone(), id);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(table, merge_list)
        .build()
        .map_err(|e| err(&vocab, e.to_string()))?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_decoder(Some(ByteLevel::new(false, true, true)));
    special.extend(special_tokens(dir)?);
    let mut by_id: Vec<(&String, &u32)> = added.iter().collect();
    by_id.sort_by_key(|(_, &id)| id);
    for (token, _) in by_id {
        inner.add_tokens(&[AddedToken::from(token.clone(), special.contains(token))]);
    }
    let mut always = vec!["<|endoftext|>".to_string()];
    always.extend(special);
    for token in always {
        if !added.contains_key(&token) && inner.token_to_id(&token).is_some() {
            inner.add_special_tokens(&[AddedToken::from(token, true)]);
        }
    }
    Ok(Some(TextTokenizer::new(inner)))
}

/// Added tokens (token → id) and the texts of those that are special.
type AddedTokens = (BTreeMap<String, u32>, Vec<String>);

/// The `added_tokens_decoder` of `tokenizer_config.json` and which of its tokens are special;
/// empty without the file or the field.
fn config_added_tokens(dir: &Path) -> Result<AddedTokens, TokenizerError> {
    let path = dir.join("tokenizer_config.json");
    let (mut tokens, mut special) = (BTreeMap::new(), Vec::new());
    if !path.is_file() {
        return Ok((tokens, special));
    }
    let err = |reason: String| TokenizerError::Load {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    if let Some(map) = json.get("added_tokens_decoder").and_then(|m| m.as_object()) {
        for (id, entry) in map {
            let id: u32 = id
                .parse()
                .map_err(|_| err(format!("added_tokens_decoder key `{id}` is not an id")))?;
            let Some(content) = entry.get("content").and_then(|c| c.as_str()) else {
                return Err(err(format!("added token {id} has no `content`")));
            };
            if entry.get("special").and_then(|s| s.as_bool()) == Some(true) {
                special.push(content.to_string());
            }
            tokens.insert(content.to_string(), id);
        }
    }
    Ok((tokens, special))
}

/// The token texts `special_tokens_map.json` names (empty without the file).
fn special_tokens(dir: &Path) -> Result<Vec<String>, TokenizerError> {
    let path = dir.join("special_tokens_map.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let err = |reason: String| TokenizerError::Load {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    let mut push = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Object(o) => {
            if let Some(s) = o.get("content").and_then(|c| c.as_str()) {
                out.push(s.to_string());
            }
        }
        _ => {}
    };
    if let Some(map) = json.as_object() {
        for v in map.values() {
            match v {
                serde_json::Value::Array(list) => list.iter().for_each(&mut push),
                other => push(other),
            }
        }
    }
    Ok(out)
}
