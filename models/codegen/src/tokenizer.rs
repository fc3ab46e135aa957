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
/// ids of `added_tokens.json`; tokens named in `special_tokens_map.json` are special (left out
/// of decoded text on request). `None` when the folder has no tokenizer.
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
    let added: BTreeMap<String, u32> = if added_path.is_file() {
        let text =
            std::fs::read_to_string(&added_path).map_err(|e| err(&added_path, e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| err(&added_path, e.to_string()))?
    } else {
        BTreeMap::new()
    };
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
    let special = special_tokens(dir)?;
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
