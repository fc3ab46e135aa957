#![no_main]
//! PyTorch `.bin` checkpoints (zip archives and legacy files) through zoo-nn's `Weights`.

use libfuzzer_sys::fuzz_target;
use zoo_nn::weights::Weights;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::file("pytorch_model.bin", data);
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
