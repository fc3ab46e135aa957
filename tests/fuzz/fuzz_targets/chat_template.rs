#![no_main]
//! Chat-template rendering: a checkpoint's Jinja template (GGUF `tokenizer.chat_template`,
//! `tokenizer_config.json`) over a fixed conversation.

use libfuzzer_sys::fuzz_target;
use zoo_nn::chat::{render, Message, Template};

// libfuzzer-sys's panic hook aborts at the panic, before any unwinding; the zoo catches
// minijinja's own panics (`zoo_nn::chat` renders behind `catch_unwind`), so the default hook
// goes back: a panic the zoo catches is not a finding, and one it lets through still
// reaches libfuzzer-sys's `catch_unwind`, which aborts.
fuzz_target!(init: drop(std::panic::take_hook()), |data: &[u8]| {
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
