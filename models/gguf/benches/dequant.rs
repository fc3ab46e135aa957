//! Throughput of GGUF dequantisation to f32 (weights per second), for the block formats the
//! zoo meets most: Q4_0, Q4_K and Q8_0. One tensor of 1 Mi weights per format, as from a
//! 1024 × 1024 matrix; block scales set to 1.0 (f16) so every output is finite.
//!
//! Run: `cargo bench -p zoo-gguf --bench dequant`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use zoo_gguf::{dequantize, GgmlType};

/// Weights per tensor.
const N: usize = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift64*).
fn bytes(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Random quantised blocks of `dtype` whose f16 scales (at the given byte offsets of each
/// block) are 1.0.
fn blocks(dtype: GgmlType, scale_offsets: &[usize]) -> Vec<u8> {
    let ts = dtype.type_size() as usize;
    let n_blocks = N / dtype.block_size() as usize;
    let mut data = bytes(n_blocks * ts, 0x9e37_79b9_7f4a_7c15);
    for block in data.chunks_exact_mut(ts) {
        for &o in scale_offsets {
            block[o..o + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
        }
    }
    data
}

fn dequant(c: &mut Criterion) {
    let mut group = c.benchmark_group("dequantize");
    group.throughput(Throughput::Elements(N as u64));
    // Q4_0: d, 16 bytes of nibbles. Q8_0: d, 32 int8. Q4_K: d, dmin, 12 scale bytes, 128 bytes.
    for (dtype, scales) in [
        (GgmlType::Q4_0, &[0usize][..]),
        (GgmlType::Q8_0, &[0][..]),
        (GgmlType::Q4_K, &[0, 2][..]),
    ] {
        let data = blocks(dtype, scales);
        let mut out = vec![0f32; N];
        group.bench_function(dtype.name(), |b| {
            b.iter(|| {
                dequantize(dtype, black_box(&data), &mut out).expect("whole blocks");
                black_box(out[N - 1])
            })
        });
    }
    group.finish();
}

criterion_group!(benches, dequant);
criterion_main!(benches);
