//! Throughput of the host attention kernel at a few model shapes (causal prefill, decode,
//! padded BERT batches): GFLOP/s counting 2·d + 2·dv flops per (query, visible key) pair.
//!
//! ```text
//! cargo run --release -p zoo-quant --example attention_bench
//! ```

use std::time::Instant;

use zoo_quant::attention::{attention, Mask, View4};

fn view(data: &[f32], dims: [usize; 4]) -> View4<'_> {
    View4 {
        data,
        offset: 0,
        dims,
        strides: [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1],
    }
}

fn main() {
    // (name, batch, heads, kv_heads, t, s, d, causal)
    let shapes = [
        ("SmolLM2 prefill 128", 1, 9, 3, 128, 128, 64, true),
        ("SmolLM2 decode at 512", 1, 9, 3, 1, 512, 64, true),
        ("MiniLM batch 32 × 14", 32, 12, 12, 14, 14, 32, false),
        ("LLaMA-7B prefill 128", 1, 32, 32, 128, 128, 128, true),
    ];
    for (name, b, h, kvh, t, s, d, causal) in shapes {
        let q = vec![0.01f32; b * h * t * d];
        let k = vec![0.02f32; b * kvh * s * d];
        let v = vec![0.03f32; b * kvh * s * d];
        let mut out = vec![0f32; b * t * h * d];
        let mask = if causal {
            Mask::Causal { past: s - t }
        } else {
            Mask::None
        };
        let pairs: usize = if causal {
            (0..t).map(|i| s - t + i + 1).sum::<usize>() * b * h
        } else {
            b * h * t * s
        };
        let run = |out: &mut [f32]| {
            attention(
                view(&q, [b, h, t, d]),
                view(&k, [b, kvh, s, d]),
                view(&v, [b, kvh, s, d]),
                mask,
                0.125,
                out,
            )
            .unwrap()
        };
        run(&mut out);
        let reps = (2e9 / (pairs as f64 * 4.0 * d as f64)).clamp(3.0, 20000.0) as usize;
        let start = Instant::now();
        for _ in 0..reps {
            run(&mut out);
        }
        let secs = start.elapsed().as_secs_f64() / reps as f64;
        let gflops = pairs as f64 * 4.0 * d as f64 / secs / 1e9;
        println!("{name:<24} {:>9.1} µs  {gflops:>6.1} GFLOP/s", secs * 1e6);
    }
}
