//! Scratch: zoo-nn's Q8_0 unpacking (integer shifts and masks, `cat`, `float`, scale and
//! offset) of whole matrices and of `select`ed rows (an embedding lookup), wgpu vs flex.
use burn::tensor::{backend::Backend, ElementConversion, Int, Tensor, TensorData};

fn codes(rows: usize, cols: usize) -> (Vec<i64>, Vec<f32>, Vec<f32>) {
    let mut s = 12345u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    };
    let q: Vec<u32> = (0..rows * cols).map(|_| next() % 256).collect();
    let words = q
        .chunks_exact(4)
        .map(|w| (w[0] | w[1] << 8 | w[2] << 16 | w[3] << 24) as i32 as i64)
        .collect();
    let scales: Vec<f32> = (0..rows * cols / 32)
        .map(|i| 0.01 + (i % 7) as f32 * 0.001)
        .collect();
    let offsets = scales.iter().map(|d| -128.0 * d).collect();
    (words, scales, offsets)
}

fn unpack<B: Backend>(c: Tensor<B, 2, Int>, s: Tensor<B, 2>, o: Tensor<B, 2>) -> Tensor<B, 2> {
    let [rows, words] = c.dims();
    let parts: Vec<Tensor<B, 3, Int>> = (0..4)
        .map(|k| {
            c.clone()
                .bitwise_right_shift_scalar((8 * k as i64).elem())
                .bitwise_and_scalar(255i64.elem())
                .unsqueeze_dim(2)
        })
        .collect();
    let q = Tensor::cat(parts, 2)
        .reshape([rows, words * 4 / 32, 32])
        .float();
    (q * s.unsqueeze_dim(2) + o.unsqueeze_dim(2)).reshape([rows, words * 4])
}

fn run<B: Backend>(ids: &[i64], d: &B::Device) -> Vec<Vec<f32>> {
    let (rows, cols) = (16, 64);
    let (w, s, o) = codes(rows, cols);
    let c: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(w, [rows, cols / 4]), d);
    let s: Tensor<B, 2> = Tensor::from_data(TensorData::new(s, [rows, cols / 32]), d);
    let o: Tensor<B, 2> = Tensor::from_data(TensorData::new(o, [rows, cols / 32]), d);
    let mut outs = Vec::new();
    // The whole matrix, then the rows of `ids` one lookup at a time.
    outs.push(unpack(c.clone(), s.clone(), o.clone()));
    for &id in ids {
        let idx: Tensor<B, 1, Int> = Tensor::from_data(TensorData::new(vec![id], [1]), d);
        outs.push(unpack(
            c.clone().select(0, idx.clone()),
            s.clone().select(0, idx.clone()),
            o.clone().select(0, idx),
        ));
    }
    outs.into_iter()
        .map(|t| t.into_data().convert::<f32>().into_vec::<f32>().unwrap())
        .collect()
}

fn main() {
    let ids = [3, 0, 7, 7, 15];
    let want = run::<burn::backend::Flex>(&ids, &Default::default());
    let got = run::<burn::backend::Wgpu>(&ids, &Default::default());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let diff = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let what = if i == 0 {
            "whole matrix".to_string()
        } else {
            format!("row {}", ids[i - 1])
        };
        println!("{what}: max |wgpu - flex| = {diff:.3e}");
    }
}
