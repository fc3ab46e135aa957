#![no_main]
//! The GloVe package's readers: the `.npy` matrix and the parquet word list.

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let path = common::file("words.parquet", rest);
        let _ = zoo_word2vec::read_parquet_strings(&path);
    } else {
        let npy = common::file("vectors.npy", rest);
        // The matrix is read first; the missing word list then ends the load.
        let _ = zoo_word2vec::read_glove_npy(&npy, npy.with_extension("absent.parquet"));
    }
});
