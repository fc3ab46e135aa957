//! cos/sin tables for arbitrary positions (GLM's 2-D positions are not consecutive), computed
//! on the host with the same f32 arithmetic as `zoo_nn::rope::RotaryTable`.

use burn::tensor::{backend::Backend, Tensor, TensorData};

/// cos and sin of `position * inv_freq[i]`, `[positions.len(), inv_freq.len()]` each.
pub fn cos_sin<B: Backend>(
    inv_freq: &[f64],
    positions: &[usize],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in inv_freq {
            // f32 position × f32 frequency, as PyTorch computes it.
            let angle = (p as f32) * (f as f32);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = [positions.len(), half];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// `1 / base^(2i / dim)` for `i < dim / 2`, computed in f32 as PyTorch does.
pub fn inv_freq_f32(dim: usize, base: f64) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            (1.0f32 / (base as f32).powf(exponent)) as f64
        })
        .collect()
}
