#![no_main]
//! The safetensors reader of zoo-nn's `Weights`: header, offsets, dtypes, every tensor read.

use libfuzzer_sys::fuzz_target;
use zoo_nn::weights::Weights;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::file("model.safetensors", data);
    read_all(&path);
});

fn read_all(path: &std::path::Path) {
    let Ok(mut w) = Weights::open(path) else {
        return;
    };
    let names: Vec<String> = w.names().map(str::to_string).collect();
    for name in names {
        if let Some(shape) = w.shape(&name) {
            if shape.iter().product::<usize>() <= common::MAX_ELEMENTS {
                let _ = w.take_f32(&name, &shape);
            }
        }
    }
}
