//! LayerNorm and RMSNorm with the checkpoint's own epsilon.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift, `[d]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Added to the variance (1e-5 for GPT-2, 1e-12 for BERT).
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Builds the norm from its tensors.
    pub fn new(weight: Tensor<B, 1>, bias: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
            eps,
        }
    }

    /// # Shapes
    /// `x`: `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.weight.val().unsqueeze() + self.bias.val().unsqueeze()
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Scale, `[d]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Builds the norm from its weight.
    pub fn new(weight: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            eps,
        }
    }

    /// # Shapes
    /// `x`: `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let ms = x.clone().powi_scalar(2).mean_dim(D - 1);
        // A division, not `recip()`: burn-ndarray 0.21 computes `recip` with the CPU's
        // approximate reciprocal instruction (relative error up to 2⁻¹⁴) when the buffer is
        // aligned for SIMD and exactly otherwise, so its logits drifted by 1e-4 and changed
        // from run to run with the allocator's alignment.
        x / (ms + self.eps).sqrt() * self.weight.val().unsqueeze()
    }
}
