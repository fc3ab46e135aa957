//! The fused product of a [`crate::quant::PackedMatrix`] on the cubecl backends (wgpu, CUDA):
//! one kernel reads the 4- or 8-bit codes, their block scales and offsets and the activations,
//! and writes `x · Wᵀ` — the f32 matrix never exists on the device.
//!
//! One cube computes one output feature for one row of `x`: its units stride over the packed
//! words of the weight row (adjacent units read adjacent words, so the loads coalesce), each
//! word's codes are unpacked in registers and dotted with the activations, a block's sum is
//! `scale · Σ q·x + offset · Σ x`, and the cube's partial sums are reduced in shared memory.
//! That is the matrix-vector shape of decoding (a few rows of `x`); for many rows the caller
//! unpacks once and uses the backend's matmul instead.
//!
//! The modules stay generic over `B: Backend`: the kernel runs when `B`'s tensors are cubecl
//! tensors of a runtime compiled in (checked by type at run time), and the caller falls back to
//! the unpacking path otherwise (fusion, autodiff, other backends).

use std::any::{Any, TypeId};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};
use burn_cubecl::cubecl::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeRuntime;

/// Units per cube: each strides over a weight row's packed words.
const UNITS: u32 = 64;

/// Cubes along the first dispatch dimension (rows beyond it continue on the second).
const CUBES_X: usize = 32768;

mod kernel {
    use burn_cubecl::cubecl;
    use burn_cubecl::cubecl::prelude::*;

    use super::UNITS;

    /// `out[n, r] = Σ_g scale[r, g] · Σ_k q[r, 32g + k] · x[n, 32g + k] + offset[r, g] · Σ_k x[n, 32g + k]`.
    ///
    /// `codes` holds `32 / bits` codes per `i32` word (weight `per_word · w + k` in bits
    /// `bits · k ..`), 32 weights per block.
    #[cube(launch)]
    pub fn packed_product_kernel(
        x: &Tensor<f32>,
        codes: &Tensor<i32>,
        scales: &Tensor<f32>,
        offsets: &Tensor<f32>,
        out: &mut Tensor<f32>,
        #[comptime] bits: u32,
    ) {
        // Rows are spread over x and y (a dispatch dimension holds at most 65535 cubes).
        let row = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
        let n = CUBE_POS_Z as usize;
        let rows = out.shape(1);
        if row >= rows {
            terminate!();
        }
        let cols = x.shape(1);
        let words = codes.shape(1);
        let groups = scales.shape(1);
        let per_word = comptime!(32 / bits) as usize;
        let words_per_group = comptime!(bits) as usize;
        let mask = comptime!((1u32 << bits) - 1) as i32;

        let mut acc = 0.0f32;
        let mut w = UNIT_POS_X as usize;
        while w < words {
            let word = codes[row * words + w];
            let base = n * cols + w * per_word;
            let mut dot = 0.0f32;
            let mut sum = 0.0f32;
            #[unroll]
            for k in 0..per_word {
                let q = f32::cast_from((word >> (k as i32 * bits as i32)) & mask);
                let xv = x[base + k];
                dot += q * xv;
                sum += xv;
            }
            let g = row * groups + w / words_per_group;
            acc += scales[g] * dot + offsets[g] * sum;
            w += UNITS as usize;
        }

        let mut partial = SharedMemory::<f32>::new(UNITS as usize);
        partial[UNIT_POS_X as usize] = acc;
        sync_cube();
        // A runtime value (the cube's size, UNITS), so the loop variable may change.
        let mut half = CUBE_DIM_X as usize / 2;
        while half > 0 {
            if (UNIT_POS_X as usize) < half {
                partial[UNIT_POS_X as usize] += partial[UNIT_POS_X as usize + half];
            }
            sync_cube();
            half /= 2;
        }
        if UNIT_POS_X == 0 {
            out[n * rows + row] = partial[0];
        }
    }
}

/// `x · Wᵀ` for the packed matrix (`codes`, `scales`, `offsets`, `bits` as in
/// [`crate::quant::PackedMatrix`]) on a cubecl backend, or `None` when `B`'s tensors are not
/// cubecl tensors of a compiled-in runtime with f32 floats and i32 integers.
///
/// # Shapes
/// - `x`: `[n, cols]` → `[n, rows]`
pub fn packed_product<B: Backend>(
    x: &Tensor<B, 2>,
    codes: &Tensor<B, 2, Int>,
    scales: &Tensor<B, 2>,
    offsets: &Tensor<B, 2>,
    bits: u32,
) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "wgpu")]
    if let Some(y) =
        on_runtime::<B, burn_cubecl::cubecl::wgpu::WgpuRuntime>(x, codes, scales, offsets, bits)
    {
        return Some(y);
    }
    #[cfg(feature = "cuda")]
    if let Some(y) =
        on_runtime::<B, burn_cubecl::cubecl::cuda::CudaRuntime>(x, codes, scales, offsets, bits)
    {
        return Some(y);
    }
    None
}

/// Moves a value to the type it is known (by `TypeId`) to have.
fn cast<A: 'static, T: 'static>(value: A) -> Option<T> {
    (Box::new(value) as Box<dyn Any>)
        .downcast::<T>()
        .ok()
        .map(|b| *b)
}

fn on_runtime<B: Backend, R: CubeRuntime>(
    x: &Tensor<B, 2>,
    codes: &Tensor<B, 2, Int>,
    scales: &Tensor<B, 2>,
    offsets: &Tensor<B, 2>,
    bits: u32,
) -> Option<Tensor<B, 2>> {
    if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<CubeTensor<R>>()
        || TypeId::of::<B::IntTensorPrimitive>() != TypeId::of::<CubeTensor<R>>()
    {
        return None;
    }
    let float = |t: &Tensor<B, 2>| -> Option<CubeTensor<R>> {
        match t.clone().into_primitive() {
            TensorPrimitive::Float(p) => cast::<_, CubeTensor<R>>(p),
            TensorPrimitive::QFloat(_) => None,
        }
    };
    let x = float(x)?;
    let scales = float(scales)?;
    let offsets = float(offsets)?;
    let codes: CubeTensor<R> = cast(codes.clone().into_primitive())?;
    if x.dtype != DType::F32
        || scales.dtype != DType::F32
        || offsets.dtype != DType::F32
        || codes.dtype != DType::I32
    {
        return None;
    }
    let (x, codes, scales, offsets) = (
        into_contiguous(x),
        into_contiguous(codes),
        into_contiguous(scales),
        into_contiguous(offsets),
    );
    let n = x.meta.shape()[0];
    let rows = codes.meta.shape()[0];
    let out = empty_device_contiguous_dtype::<R>(
        x.client.clone(),
        x.device.clone(),
        [n, rows].into(),
        DType::F32,
    );
    kernel::packed_product_kernel::launch::<R>(
        &x.client,
        CubeCount::Static(
            rows.min(CUBES_X) as u32,
            rows.div_ceil(CUBES_X) as u32,
            n as u32,
        ),
        CubeDim::new_1d(UNITS),
        x.clone().into_tensor_arg(),
        codes.into_tensor_arg(),
        scales.into_tensor_arg(),
        offsets.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        bits,
    );
    let out: B::FloatTensorPrimitive = cast(out)?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;
    use burn_cubecl::cubecl::wgpu::WgpuRuntime;
    use burn_cubecl::CubeBackend;

    use crate::quant::{PackedMatrix, QMatrix, QType};

    use super::*;

    /// The wgpu backend as burn builds it without fusion.
    type W = CubeBackend<WgpuRuntime, f32, i32, u32>;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The kernel's product equals `x · dequantize(W)ᵀ` (f64 reference) for every packed
    /// format, for one and several rows of `x`, and for more weight rows than one dispatch
    /// dimension holds.
    #[test]
    fn fused_product_equals_the_dequantized_product() {
        let device = Default::default();
        for (rows, cols) in [(40usize, 96usize), (32_773, 64)] {
            let w = values(rows * cols, 3);
            for t in [QType::Q8_0, QType::Q4_0, QType::Q4_1] {
                let m = QMatrix::quantize(t, rows, cols, &w).unwrap();
                let wd = m.dequantize();
                let packed = PackedMatrix::<W>::new(&m, &device).unwrap();
                for n in [1usize, 3] {
                    let x = values(n * cols, 9 + n as u64);
                    let input =
                        Tensor::<W, 2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
                    let got: Vec<f32> = packed
                        .fused_product(input)
                        .expect("the kernel runs on wgpu")
                        .into_data()
                        .convert::<f32>()
                        .into_vec()
                        .unwrap();
                    for i in 0..n {
                        for r in 0..rows {
                            let (mut want, mut size) = (0f64, 0f64);
                            for c in 0..cols {
                                let p = f64::from(x[i * cols + c]) * f64::from(wd[r * cols + c]);
                                want += p;
                                size += p.abs();
                            }
                            let g = f64::from(got[i * rows + r]);
                            assert!(
                                (g - want).abs() <= 1e-5 * size + 1e-6,
                                "{} [{rows}x{cols}] n={n} [{i}, {r}]: {g} vs {want}",
                                t.name()
                            );
                        }
                    }
                }
            }
        }
    }
}
