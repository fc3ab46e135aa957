#![no_main]
//! GLM-4's `tokenizer.model`: tiktoken ranks (base64 token, rank per line) and the BPE built.

use libfuzzer_sys::fuzz_target;
use zoo_glm::tokenizer::{
    parse_tiktoken_ranks, tiktoken_tokenizer, GLM4_PATTERN, GLM4_SPECIAL_TOKENS,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ranks) = parse_tiktoken_ranks(text) else {
        return;
    };
    if ranks.len() > 1 << 16 {
        return;
    }
    if let Ok(tok) = tiktoken_tokenizer(&ranks, GLM4_PATTERN, &GLM4_SPECIAL_TOKENS) {
        if let Ok(ids) = tok.encode("Hello world 12", false) {
            let _ = tok.decode(&ids, false);
        }
    }
});
