#![no_main]
//! Word-vector files: format detection, word2vec text and binary, GloVe text.

use libfuzzer_sys::fuzz_target;
use zoo_word2vec::{load_vectors, read_word2vec, Word2VecFormat};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::file("vectors.txt", data);
    if let Ok(kv) = load_vectors(&path) {
        if let Some(w) = kv.words().first() {
            let _ = kv.similar(w, 3);
        }
    }
    let _ = read_word2vec(&path, Word2VecFormat::Text);
    let _ = read_word2vec(&path, Word2VecFormat::Binary);
});
