#![no_main]
//! The GGUF reader: header, metadata, tensor table, dequantisation, tokenizer, configs.

use libfuzzer_sys::fuzz_target;
use zoo_gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for t in file.tensors() {
        if t.n_elements() <= 1 << 20 {
            let _ = file.tensor_f32(&t.name);
        }
    }
    let _ = file.chat_template();
    if let Ok(tok) = file.tokenizer() {
        if let Ok(ids) = tok.encode("Hello world, 12 €", true) {
            let _ = tok.decode(&ids, false);
        }
    }
    let _ = zoo_llama::load::config_from_gguf(&file);
    let _ = zoo_gpt2::load::config_from_gguf(&file);
});
