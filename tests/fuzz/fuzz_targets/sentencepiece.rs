#![no_main]
//! The SentencePiece `.model` reader (protobuf) and the tokenizer built from it.

use libfuzzer_sys::fuzz_target;
use zoo_glm::tokenizer::{sentencepiece_tokenizer, SpModel, SpOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = SpModel::parse(data) else {
        return;
    };
    if model.pieces.len() > 1 << 16 {
        return;
    }
    let options = SpOptions {
        id_offset: 0,
        v1_whitespace: data.first().is_some_and(|b| b & 1 == 1),
        extra_special: vec![],
    };
    if let Ok(tok) = sentencepiece_tokenizer(&model, &options) {
        if let Ok(ids) = tok.encode("Hello  world\n\t12", false) {
            let _ = tok.decode(&ids, false);
        }
    }
});
