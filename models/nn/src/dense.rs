//! A linear layer kept as PyTorch keeps it, `[out, in]`, with the matrix product oriented by
//! the number of rows.
//!
//! Burn's `Linear` stores `[in, out]` and always computes `x · W`. On the CPU backends (the
//! `gemm` crate behind flex) a product with few rows — one sentence, one decoded token — is
//! 1.4–1.8× faster as `(W · xᵀ)ᵀ` with the weight contiguous as the left operand: measured on
//! this project's 2-core machine for `[13, 384] × [384, 1536]` with weights cold in cache,
//! 650 µs → 460 µs. With many rows both orientations cost the same, so `Dense` switches at
//! [`Dense::SMALL_ROWS`].
//!
//! The weight may also be kept in a stored format (f16, bf16, Q8_0, Q4_0, Q4_1, K-quants; see
//! [`crate::quant`]): then the float weight is a placeholder and the product runs on the
//! stored matrix.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::activation::Activation;
use crate::lora::Lora;
use crate::quant::{runs_on_host, HostMatrix, PackedMatrix, QMatrix};

/// `y = x Wᵀ + b` with `W: [out, in]`.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    /// `[out, in]`, contiguous; a `[1, 1]` placeholder when the weight is kept stored.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The weight in a stored format, multiplied on the host (CPU backends).
    pub host: Option<HostMatrix>,
    /// The weight packed on the device (GPU backends).
    pub packed: Option<PackedMatrix<B>>,
    /// A LoRA adapter added to the product (fine-tuning, PEFT adapters).
    pub lora: Option<Lora<B>>,
    /// `[out, in]`.
    dims: [usize; 2],
}

impl<B: Backend> Dense<B> {
    /// Up to this many rows the product is computed as `(W · xᵀ)ᵀ`.
    pub const SMALL_ROWS: usize = 64;

    /// A layer from its `[out, in]` weight and optional `[out]` bias.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        let dims = weight.dims();
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            host: None,
            packed: None,
            lora: None,
            dims,
        }
    }

    /// A layer whose `[out, in]` weight stays in its stored format: on the host for the CPU
    /// backends, packed on the device where the format allows, else widened to f32.
    pub fn stored(weight: QMatrix, bias: Option<Tensor<B, 1>>, device: &B::Device) -> Self {
        Self::stored_with(weight, bias, false, device)
    }

    /// [`Dense::stored`]; with `int8_activations` the host products quantize the activations
    /// per block as llama.cpp does (see [`crate::quant::WeightFormat`]).
    pub fn stored_with(
        weight: QMatrix,
        bias: Option<Tensor<B, 1>>,
        int8_activations: bool,
        device: &B::Device,
    ) -> Self {
        let dims = [weight.rows(), weight.cols()];
        let placeholder = || Param::from_tensor(Tensor::zeros([1, 1], device));
        let (weight_param, host, packed) = if runs_on_host::<B>(device) {
            (
                placeholder(),
                Some(HostMatrix(Arc::new(weight), int8_activations)),
                None,
            )
        } else if let Some(packed) = PackedMatrix::new(&weight, device) {
            (placeholder(), None, Some(packed))
        } else {
            let values = weight.dequantize();
            let t = Tensor::from_data(TensorData::new(values, dims), device);
            (Param::from_tensor(t), None, None)
        };
        Self {
            weight: weight_param,
            bias: bias.map(Param::from_tensor),
            host,
            packed,
            lora: None,
            dims,
        }
    }

    /// Input features.
    pub fn d_in(&self) -> usize {
        self.dims[1]
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.dims[0]
    }

    /// The format the weight is kept in (`f32`, or the stored one).
    pub fn format(&self) -> &'static str {
        match (&self.host, &self.packed) {
            (Some(h), _) => h.0.qtype().name(),
            (None, Some(_)) => "packed",
            _ => "f32",
        }
    }

    /// Bytes the weight takes in memory.
    pub fn weight_bytes(&self) -> usize {
        match (&self.host, &self.packed) {
            (Some(h), _) => h.0.bytes().len(),
            _ => self.dims[0] * self.dims[1] * 4,
        }
    }

    /// The weight as an f32 tensor `[out, in]` (dequantized when it is kept stored).
    pub fn weight_f32(&self) -> Tensor<B, 2> {
        match (&self.host, &self.packed) {
            (Some(h), _) => Tensor::from_data(
                TensorData::new(h.0.dequantize(), self.dims),
                &self.weight.device(),
            ),
            (None, Some(p)) => p.dequantize(),
            _ => self.weight.val(),
        }
    }

    /// Applies the layer to the last axis.
    ///
    /// # Shapes
    /// - `x`: `[..., in]` → `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let low_rank = self.lora.as_ref().map(|lora| lora.forward(x.clone()));
        let y = match (&self.host, &self.packed) {
            (Some(h), _) => h.times_transposed(x),
            (None, Some(p)) => p.times_transposed(x),
            _ => times_transposed(x, self.weight.val()),
        };
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze::<D>(),
            None => y,
        };
        match low_rank {
            Some(update) => y + update,
            None => y,
        }
    }
}

impl<B: Backend> Dense<B> {
    /// Several layers applied to the same input: `layers[i].forward(x)` for each. On the CPU
    /// backends, when every layer keeps its weight on the host with exact products and has no
    /// LoRA adapter, the products run as one pass (`QMatrix::matmul_exact_many`: the input is
    /// converted and packed once, the pool woken once) and give the same numbers.
    ///
    /// # Shapes
    /// - `x`: `[..., in]` → one `[..., out_i]` per layer
    pub fn forward_many<const D: usize>(
        layers: &[&Dense<B>],
        x: Tensor<B, D>,
    ) -> Vec<Tensor<B, D>> {
        match host_matrices(layers) {
            Some(ms) => {
                let device = x.device();
                let (ys, dims) = host_outputs(layers, &ms, x);
                ys.into_iter()
                    .zip(&ms)
                    .map(|(y, m)| {
                        let mut out = dims;
                        out[D - 1] = m.rows();
                        Tensor::from_data(TensorData::new(y, out), &device)
                    })
                    .collect()
            }
            None => layers.iter().map(|l| l.forward(x.clone())).collect(),
        }
    }

    /// `act(gate(x)) · up(x)`, the gated MLP's inner product (LLaMA's SwiGLU). On the CPU
    /// backends with host-kept weights (see [`Dense::forward_many`]) and SiLU, both products run
    /// as one pass and the gate's activation and the product as one more, on the host
    /// (`zoo_quant::elementwise::silu_mul`, within 3e-7 relative of Burn's `silu`). Otherwise
    /// SiLU's gated product is [`crate::fused::swiglu`] (one operation on flex and under its
    /// autodiff).
    ///
    /// # Shapes
    /// - `x`: `[..., in]` → `[..., out]`
    pub fn gated<const D: usize>(
        gate: &Dense<B>,
        up: &Dense<B>,
        act: Activation,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let layers = [gate, up];
        match host_matrices(&layers) {
            Some(ms) if act == Activation::Silu && gate.d_out() == up.d_out() => {
                let device = x.device();
                let (mut ys, mut dims) = host_outputs(&layers, &ms, x);
                let u = ys.pop().expect("two outputs");
                let mut g = ys.pop().expect("two outputs");
                zoo_quant::elementwise::silu_mul(&mut g, &u);
                dims[D - 1] = gate.d_out();
                Tensor::from_data(TensorData::new(g, dims), &device)
            }
            _ if act == Activation::Silu => {
                crate::fused::swiglu(gate.forward(x.clone()), up.forward(x))
            }
            _ => act.forward(gate.forward(x.clone())) * up.forward(x),
        }
    }
}

/// The host matrices of `layers` when all of them multiply exactly on the host, without LoRA,
/// over the same input width (and there are at least two).
fn host_matrices<'a, B: Backend>(layers: &[&'a Dense<B>]) -> Option<Vec<&'a QMatrix>> {
    let d_in = layers.first()?.d_in();
    if layers.len() < 2 {
        return None;
    }
    layers
        .iter()
        .map(|l| match (&l.host, &l.lora) {
            (Some(h), None) if !h.1 && l.d_in() == d_in => Some(&*h.0),
            _ => None,
        })
        .collect()
}

/// `x · Wᵢᵀ + bᵢ` for each layer on the host, as `[n, out_i]` vectors; and `x`'s dims.
fn host_outputs<B: Backend, const D: usize>(
    layers: &[&Dense<B>],
    ms: &[&QMatrix],
    x: Tensor<B, D>,
) -> (Vec<Vec<f32>>, [usize; D]) {
    let dims = x.dims();
    let n: usize = dims[..D - 1].iter().product();
    let input: Vec<f32> = x
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 activations");
    let mut ys: Vec<Vec<f32>> = ms.iter().map(|m| vec![0f32; n * m.rows()]).collect();
    let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| &mut y[..]).collect();
    QMatrix::matmul_exact_many(ms, &input, n, &mut outs);
    for (layer, y) in layers.iter().zip(ys.iter_mut()) {
        if let Some(b) = &layer.bias {
            let b: Vec<f32> = b
                .val()
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32 bias");
            for row in y.chunks_exact_mut(b.len()) {
                for (v, bv) in row.iter_mut().zip(&b) {
                    *v += bv;
                }
            }
        }
    }
    (ys, dims)
}

/// A token embedding `[vocab, d]` that may be kept in a stored format: lookups dequantize only
/// the rows they read, and as a tied LM head it multiplies in that format.
#[derive(Module, Debug)]
pub struct Embed<B: Backend> {
    /// `[vocab, d]` f32 table; a `[1, 1]` placeholder when the table is kept stored.
    pub weight: Param<Tensor<B, 2>>,
    /// The table in a stored format on the host (CPU backends).
    pub host: Option<HostMatrix>,
    /// The table packed on the device (GPU backends).
    pub packed: Option<PackedMatrix<B>>,
    /// `[vocab, d]`.
    dims: [usize; 2],
}

impl<B: Backend> Embed<B> {
    /// An f32 table.
    pub fn new(weight: Tensor<B, 2>) -> Self {
        let dims = weight.dims();
        Self {
            weight: Param::from_tensor(weight),
            host: None,
            packed: None,
            dims,
        }
    }

    /// A table kept in its stored format (see [`Dense::stored`]).
    pub fn stored(table: QMatrix, device: &B::Device) -> Self {
        Self::stored_with(table, false, device)
    }

    /// [`Embed::stored`], its tied-head products with int8 activations or exact.
    pub fn stored_with(table: QMatrix, int8_activations: bool, device: &B::Device) -> Self {
        let d = Dense::stored_with(table, None, int8_activations, device);
        Self {
            weight: d.weight,
            host: d.host,
            packed: d.packed,
            dims: d.dims,
        }
    }

    /// Rows of the table (the vocabulary).
    pub fn vocab_size(&self) -> usize {
        self.dims[0]
    }

    /// Features per row.
    pub fn dim(&self) -> usize {
        self.dims[1]
    }

    /// The device the table is on.
    pub fn device(&self) -> B::Device {
        self.weight.device()
    }

    /// The format the table is kept in.
    pub fn format(&self) -> &'static str {
        match (&self.host, &self.packed) {
            (Some(h), _) => h.0.qtype().name(),
            (None, Some(_)) => "packed",
            _ => "f32",
        }
    }

    /// Bytes the table takes in memory.
    pub fn weight_bytes(&self) -> usize {
        match (&self.host, &self.packed) {
            (Some(h), _) => h.0.bytes().len(),
            _ => self.dims[0] * self.dims[1] * 4,
        }
    }

    /// The rows of `ids`.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, d]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match (&self.host, &self.packed) {
            (Some(h), _) => h.rows(ids),
            (None, Some(p)) => p.rows_of(ids),
            _ => burn::tensor::module::embedding(self.weight.val(), ids),
        }
    }

    /// The table as a tied LM head: `hidden · Eᵀ`.
    ///
    /// # Shapes
    /// - `hidden`: `[..., d]` → `[..., vocab]`
    pub fn project<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        match (&self.host, &self.packed) {
            (Some(h), _) => h.times_transposed(hidden),
            (None, Some(p)) => p.times_transposed(hidden),
            _ => times_transposed(hidden, self.weight.val()),
        }
    }

    /// The table as an f32 tensor `[vocab, d]` (dequantized when kept stored).
    pub fn weight_f32(&self) -> Tensor<B, 2> {
        match (&self.host, &self.packed) {
            (Some(h), _) => Tensor::from_data(
                TensorData::new(h.0.dequantize(), self.dims),
                &self.weight.device(),
            ),
            (None, Some(p)) => p.dequantize(),
            _ => self.weight.val(),
        }
    }
}

/// `x Wᵀ` over the last axis for a weight kept `[out, in]` (a [`Dense`] layer's, or a tied
/// head's embedding), oriented by the number of rows as [`Dense`] explains.
///
/// # Shapes
/// - `x`: `[..., in]`, `weight`: `[out, in]` → `[..., out]`
pub fn times_transposed<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let d_out = weight.dims()[0];
    let x = x.reshape([rows, d_in]);
    let y = if rows <= Dense::<B>::SMALL_ROWS {
        weight.matmul(x.transpose()).transpose()
    } else {
        x.matmul(weight.transpose())
    };
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    /// Both orientations give `x Wᵀ + b`, checked against a scalar loop.
    #[test]
    fn few_and_many_rows_match_the_definition() {
        let device = Default::default();
        let (d_in, d_out) = (5, 3);
        let w: Vec<f32> = (0..d_in * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..d_out).map(|i| i as f32 - 1.0).collect();
        let dense = Dense::<Flex>::new(
            Tensor::from_data(TensorData::new(w.clone(), [d_out, d_in]), &device),
            Some(Tensor::from_data(
                TensorData::new(b.clone(), [d_out]),
                &device,
            )),
        );
        assert_eq!((dense.d_in(), dense.d_out()), (d_in, d_out));
        for rows in [
            1,
            7,
            Dense::<Flex>::SMALL_ROWS,
            Dense::<Flex>::SMALL_ROWS + 37,
        ] {
            let x: Vec<f32> = (0..rows * d_in).map(|i| (i as f32 * 0.11).cos()).collect();
            let input =
                Tensor::<Flex, 3>::from_data(TensorData::new(x.clone(), [1, rows, d_in]), &device);
            let got: Vec<f32> = dense
                .forward(input)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap();
            assert_eq!(got.len(), rows * d_out);
            for r in 0..rows {
                for o in 0..d_out {
                    let want: f32 = (0..d_in)
                        .map(|i| x[r * d_in + i] * w[o * d_in + i])
                        .sum::<f32>()
                        + b[o];
                    let diff = (got[r * d_out + o] - want).abs();
                    assert!(
                        diff < 1e-5,
                        "rows {rows}: [{r}, {o}] {} vs {want}",
                        got[r * d_out + o]
                    );
                }
            }
        }
    }
}
