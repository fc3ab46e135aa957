//! A LoRA adapter on a [`crate::Dense`] layer, as PEFT defines it: the layer computes
//! `x Wᵀ + b + (dropout(x) Aᵀ Bᵀ) · alpha / r` with `A: [r, in]` (PEFT's `lora_A.weight`) and
//! `B: [out, r]` (`lora_B.weight`). The base weight stays as it is; only `A` and `B` train.

use burn::module::{Module, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::dense::times_transposed;

/// The low-rank update `dropout(x) Aᵀ Bᵀ · scale` of one layer.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[r, in]` (PEFT's `lora_A.weight`).
    pub a: Param<Tensor<B, 2>>,
    /// `[out, r]` (PEFT's `lora_B.weight`).
    pub b: Param<Tensor<B, 2>>,
    /// Dropout on the adapter's input (active only under autodiff).
    pub dropout: Dropout,
    /// `alpha / r`.
    pub scale: f64,
}

impl<B: Backend> Lora<B> {
    /// An adapter from its `A` `[r, in]` and `B` `[out, r]` matrices (both trainable). `key`
    /// names the layer (its module path): the parameters' ids derive from it, so an optimizer
    /// state saved for an adapter applies to the same adapter loaded again.
    pub fn new(key: &str, a: Tensor<B, 2>, b: Tensor<B, 2>, alpha: f64, dropout: f64) -> Self {
        let r = a.dims()[0];
        Self {
            a: Param::initialized(param_id(key, "lora_A"), a.require_grad()),
            b: Param::initialized(param_id(key, "lora_B"), b.require_grad()),
            dropout: DropoutConfig::new(dropout).init(),
            scale: alpha / r as f64,
        }
    }

    /// PEFT's initial adapter for a `[out, in]` layer: `A` uniform in `±1/√in` (PyTorch's
    /// `kaiming_uniform_(a=√5)`, from `seed`), `B` zero, so the layer starts unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn init(
        key: &str,
        d_in: usize,
        d_out: usize,
        rank: usize,
        alpha: f64,
        dropout: f64,
        seed: u64,
        device: &B::Device,
    ) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let mut state = seed ^ fnv1a(key.as_bytes());
        let values: Vec<f32> = (0..rank * d_in)
            .map(|_| ((uniform01(&mut state) * 2.0 - 1.0) * bound) as f32)
            .collect();
        let a = Tensor::from_data(TensorData::new(values, [rank, d_in]), device);
        let b = Tensor::zeros([d_out, rank], device);
        Self::new(key, a, b, alpha, dropout)
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// `dropout(x) Aᵀ Bᵀ · scale` over the last axis.
    ///
    /// # Shapes
    /// - `x`: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = self.dropout.forward(x);
        let h = times_transposed(x, self.a.val());
        times_transposed(h, self.b.val()).mul_scalar(self.scale)
    }

    /// `scale · B A`, `[out, in]`: what merging adds to the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.b.val().matmul(self.a.val()).mul_scalar(self.scale)
    }
}

/// A parameter id that depends only on the layer's name and the matrix.
fn param_id(key: &str, matrix: &str) -> ParamId {
    ParamId::from(fnv1a(format!("{key}.{matrix}").as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64 step mapped to `[0, 1)`.
fn uniform01(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dense;
    use burn::backend::Flex;

    /// The adapted layer computes `x Wᵀ + b + x Aᵀ Bᵀ · alpha/r`, checked against a scalar loop.
    #[test]
    fn adapted_layer_matches_the_definition() {
        let device = Default::default();
        let (d_in, d_out, r) = (5, 3, 2);
        let w: Vec<f32> = (0..d_in * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<f32> = (0..r * d_in).map(|i| (i as f32 * 0.21).cos()).collect();
        let bm: Vec<f32> = (0..d_out * r).map(|i| (i as f32 * 0.53).sin()).collect();
        let mut dense = Dense::<Flex>::new(
            Tensor::from_data(TensorData::new(w.clone(), [d_out, d_in]), &device),
            None,
        );
        dense.lora = Some(Lora::new(
            "layer",
            Tensor::from_data(TensorData::new(a.clone(), [r, d_in]), &device),
            Tensor::from_data(TensorData::new(bm.clone(), [d_out, r]), &device),
            4.0,
            0.0,
        ));
        let x: Vec<f32> = (0..2 * d_in).map(|i| (i as f32 * 0.11).cos()).collect();
        let got: Vec<f32> = dense
            .forward(Tensor::<Flex, 2>::from_data(
                TensorData::new(x.clone(), [2, d_in]),
                &device,
            ))
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap();
        for row in 0..2 {
            let xr = &x[row * d_in..(row + 1) * d_in];
            let h: Vec<f32> = (0..r)
                .map(|k| (0..d_in).map(|i| xr[i] * a[k * d_in + i]).sum())
                .collect();
            for o in 0..d_out {
                let base: f32 = (0..d_in).map(|i| xr[i] * w[o * d_in + i]).sum();
                let low: f32 = (0..r).map(|k| h[k] * bm[o * r + k]).sum();
                let want = base + low * 2.0;
                let diff = (got[row * d_out + o] - want).abs();
                assert!(
                    diff < 1e-5,
                    "[{row}, {o}] {} vs {want}",
                    got[row * d_out + o]
                );
            }
        }
    }

    /// The initial adapter leaves the layer unchanged, and `A` stays within PEFT's bound.
    #[test]
    fn initial_adapter_is_a_no_op() {
        let device = Default::default();
        let lora = Lora::<Flex>::init("x.q_proj", 16, 8, 4, 8.0, 0.0, 7, &device);
        let a: Vec<f32> = lora.a.val().into_data().into_vec().unwrap();
        assert!(a.iter().all(|v| v.abs() <= 0.25), "bound 1/sqrt(16)");
        assert!(a.iter().any(|v| v.abs() > 0.05));
        let delta: Vec<f32> = lora.delta().into_data().into_vec().unwrap();
        assert!(delta.iter().all(|&v| v == 0.0));
        assert_eq!(lora.rank(), 4);
    }
}
