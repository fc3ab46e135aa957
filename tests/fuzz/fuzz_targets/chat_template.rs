#![no_main]
//! Chat-template rendering: a checkpoint's Jinja template (GGUF `tokenizer.chat_template`,
//! `tokenizer_config.json`) over a fixed conversation.

use libfuzzer_sys::fuzz_target;
use zoo_nn::chat::{render, Message, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::jinja(source, "<s>", "</s>") else {
        return;
    };
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hello?"),
        Message::new("assistant", "Hi."),
        Message::new("user", "What is 2 + 2?"),
    ];
    let _ = render(&template, &messages, true);
});
