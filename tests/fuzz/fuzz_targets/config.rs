#![no_main]
//! `config.json` parsing and validation of every family, and the numbers derived from it.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = zoo_llama::LlamaConfig::from_json(text) {
        let _ = (c.num_parameters(), c.context_length(), c.head_dim());
    }
    if let Ok(c) = zoo_gpt2::Gpt2Config::from_json(text) {
        let _ = (c.num_parameters(), c.head_dim());
    }
    if let Ok(c) = zoo_bert::BertConfig::from_json(text) {
        let _ = (c.num_parameters(), c.head_dim());
    }
    if let Ok(c) = zoo_t5::T5Config::from_json(text) {
        let _ = (c.inner_dim(), c.decoder_layers());
    }
    if let Ok(c) = serde_json::from_str::<zoo_glm::GlmHfConfig>(text) {
        if c.validate().is_ok() {
            let _ = (c.head_dim(), c.rotary_dim());
        }
    }
    if let Ok(c) = serde_json::from_str::<zoo_glm::ChatGlmV2Config>(text) {
        let _ = c.validate();
    }
    if let Ok(c) = serde_json::from_str::<zoo_glm::ChatGlmV1Config>(text) {
        let _ = c.validate();
    }
});
