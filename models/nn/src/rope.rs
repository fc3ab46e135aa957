//! Rotary position embeddings: the half-split layout of HF LLaMA / GPT-NeoX and the
//! interleaved (adjacent pairs) layout of GPT-J, GGUF LLaMA weights and GLM; both may rotate
//! only the first `rotary_dim` features of each head (partial rotary).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Precomputed cos/sin for every position: `[max_positions, rotary_dim / 2]` each.
#[derive(Debug, Clone)]
pub struct RotaryTable<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    rotary_dim: usize,
}

/// `1 / theta^(2i / dim)` for `i < dim / 2`: the standard rotary frequencies.
pub fn default_inv_freq(dim: usize, theta: f64) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / dim as f64))
        .collect()
}

/// Linear scaling (position interpolation): the standard frequencies divided by `factor`.
pub fn linear_inv_freq(dim: usize, theta: f64, factor: f64) -> Vec<f64> {
    default_inv_freq(dim, theta)
        .into_iter()
        .map(|f| f / factor)
        .collect()
}

/// LLaMA 3.1 scaling: frequencies whose wavelength exceeds `original / low_freq_factor` are
/// divided by `factor`, those shorter than `original / high_freq_factor` are kept, and those
/// in between are interpolated smoothly (HF `_compute_llama3_parameters`).
pub fn llama3_inv_freq(
    dim: usize,
    theta: f64,
    factor: f64,
    low_freq_factor: f64,
    high_freq_factor: f64,
    original_max_positions: usize,
) -> Vec<f64> {
    let old = original_max_positions as f64;
    let low_wavelen = old / low_freq_factor;
    let high_wavelen = old / high_freq_factor;
    default_inv_freq(dim, theta)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else {
                let smooth =
                    (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

/// Dynamic NTK scaling for a sequence of `seq_len` positions: up to `max_positions` the
/// standard frequencies; beyond, the base becomes
/// `theta * (factor * seq_len / max_positions - (factor - 1))^(dim / (dim - 2))`
/// (HF `_compute_dynamic_ntk_parameters`, recomputed whenever the sequence grows).
pub fn dynamic_ntk_inv_freq(
    dim: usize,
    theta: f64,
    factor: f64,
    seq_len: usize,
    max_positions: usize,
) -> Vec<f64> {
    let seq = seq_len.max(max_positions) as f64;
    let ratio = factor * seq / max_positions as f64 - (factor - 1.0);
    let base = theta * ratio.powf(dim as f64 / (dim as f64 - 2.0));
    default_inv_freq(dim, base)
}

/// `1 / base^(2i / dim)` for `i < dim / 2`, computed in f32 as PyTorch computes it when the
/// original code builds `inv_freq` in f32 (GLM).
pub fn inv_freq_f32(dim: usize, base: f64) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim as f32;
            (1.0f32 / (base as f32).powf(exponent)) as f64
        })
        .collect()
}

/// cos and sin for positions `start..start + t` with these frequencies, without a table:
/// `[t, inv_freq.len()]` each (for frequencies that change with the sequence length).
pub fn cos_sin<B: Backend>(
    inv_freq: &[f64],
    start: usize,
    t: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let positions: Vec<usize> = (start..start + t).collect();
    cos_sin_at(inv_freq, &positions, device)
}

/// cos and sin of `position * inv_freq[i]` for arbitrary positions (GLM's 2-D positions are
/// not consecutive): `[positions.len(), inv_freq.len()]` each, in f32 as PyTorch computes them
/// (f32 position × f32 frequency).
pub fn cos_sin_at<B: Backend>(
    inv_freq: &[f64],
    positions: &[usize],
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in inv_freq {
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

impl<B: Backend> RotaryTable<B> {
    /// A table for these frequencies (`rotary_dim = 2 * inv_freq.len()`); position `p` has
    /// angle `p * inv_freq[i] * position_scale` (`position_scale` < 1 for linear scaling).
    pub fn new(
        inv_freq: &[f64],
        max_positions: usize,
        position_scale: f64,
        device: &B::Device,
    ) -> Self {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in inv_freq {
                // Angles in f32 as PyTorch computes them (f32 position × f32 frequency).
                let angle = (p as f32 * position_scale as f32) * (f as f32);
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_positions, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_positions, half]), device),
            rotary_dim: 2 * half,
        }
    }

    /// Positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Features rotated per head.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    /// cos and sin for consecutive positions `start..start + t`: `[t, rotary_dim / 2]` each.
    pub fn range(&self, start: usize, t: usize) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let half = self.rotary_dim / 2;
        (
            self.cos.clone().slice([start..start + t, 0..half]),
            self.sin.clone().slice([start..start + t, 0..half]),
        )
    }

    /// cos and sin for arbitrary positions: `[t, rotary_dim / 2]` each.
    pub fn select(&self, positions: &[usize]) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let device = self.cos.device();
        let idx: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [positions.len()]), &device);
        (
            self.cos.clone().select(0, idx.clone()),
            self.sin.clone().select(0, idx),
        )
    }
}

/// Rotates the first `2 * cos.dims()[1]` features of each head, pairing feature `i` with
/// `i + rotary_dim / 2` (HF `rotate_half`).
///
/// # Shapes
/// - `x`: `[batch, heads, t, head_dim]`, `cos`/`sin`: `[t, rotary_dim / 2]` → like `x`
pub fn rope_half<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> Tensor<B, 4> {
    if B::ad_enabled(&x.device()) {
        return rope_ops(x, cos, sin, false);
    }
    if crate::quant::runs_on_host::<B>(&x.device()) {
        return rope_host(x, cos, sin, false);
    }
    let [b, h, t, d] = x.dims();
    let half = cos.dims()[1];
    let r = 2 * half;
    let cos: Tensor<B, 4> = cos.unsqueeze();
    let sin: Tensor<B, 4> = sin.unsqueeze();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, half..r]);
    let out1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let out2 = x2 * cos + x1 * sin;
    if r == d {
        Tensor::cat(vec![out1, out2], 3)
    } else {
        let pass = x.slice([0..b, 0..h, 0..t, r..d]);
        Tensor::cat(vec![out1, out2, pass], 3)
    }
}

/// Rotates adjacent pairs `(2i, 2i + 1)` of the first `2 * cos.dims()[1]` features of each head.
///
/// # Shapes
/// - `x`: `[batch, heads, t, head_dim]`, `cos`/`sin`: `[t, rotary_dim / 2]` → like `x`
pub fn rope_interleaved<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> Tensor<B, 4> {
    if B::ad_enabled(&x.device()) {
        return rope_ops(x, cos, sin, true);
    }
    if crate::quant::runs_on_host::<B>(&x.device()) {
        return rope_host(x, cos, sin, true);
    }
    let [b, h, t, d] = x.dims();
    let half = cos.dims()[1];
    let r = 2 * half;
    let cos: Tensor<B, 5> = cos.reshape([1, 1, t, half, 1]);
    let sin: Tensor<B, 5> = sin.reshape([1, 1, t, half, 1]);
    let pairs = x
        .clone()
        .slice([0..b, 0..h, 0..t, 0..r])
        .reshape([b, h, t, half, 2]);
    let even = pairs.clone().slice([0..b, 0..h, 0..t, 0..half, 0..1]);
    let odd = pairs.slice([0..b, 0..h, 0..t, 0..half, 1..2]);
    let out_even = even.clone() * cos.clone() - odd.clone() * sin.clone();
    let out_odd = odd * cos + even * sin;
    let rotated = Tensor::cat(vec![out_even, out_odd], 4).reshape([b, h, t, r]);
    if r == d {
        rotated
    } else {
        let pass = x.slice([0..b, 0..h, 0..t, r..d]);
        Tensor::cat(vec![rotated, pass], 3)
    }
}

/// The two features rotated by angle `c` of `half`: adjacent `(2c, 2c + 1)` in the
/// interleaved layout, `(c, c + half)` in the half-split one.
fn partner(c: usize, half: usize, interleaved: bool) -> (usize, usize) {
    if interleaved {
        (2 * c, 2 * c + 1)
    } else {
        (c, c + half)
    }
}

/// [`rope_half`] / [`rope_interleaved`] under autodiff (training, on any backend):
/// `x · C + (x R) · S` in the `[batch, t, heads, d]` layout the projections produce,
/// with `R` the `[d, d]` signed permutation that maps each feature to its partner (`-x₂` onto
/// `x₁`'s place, `x₁` onto `x₂`'s) and `C`, `S` the cos / sin of each position repeated over
/// the heads (1 and 0 on features past the rotary ones). Three products over whole contiguous
/// rows and one small matrix product, instead of slices, strided products and a
/// concatenation; the backward pass is as short (on flex the strided form was 15 % of a LoRA
/// step). Inference on the GPU backends keeps the slice form, which uploads nothing per call
/// (`R` is built on the host). The numbers equal [`rope_host`]'s: `x R` is
/// exact, and `x₁c + (-x₂)s` rounds like `x₁c - x₂s`.
fn rope_ops<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    interleaved: bool,
) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let half = cos.dims()[1];
    let r = 2 * half;
    let device = x.device();
    let mut perm = vec![0f32; d * d];
    for c in 0..half {
        let (p, q) = partner(c, half, interleaved);
        // (x R)[p] = -x[q], (x R)[q] = x[p]; R is [in, out].
        perm[q * d + p] = -1.0;
        perm[p * d + q] = 1.0;
    }
    let perm = Tensor::<B, 2>::from_data(TensorData::new(perm, [d, d]), &device);
    // [t, half] → [t, d]: each angle on both features of its pair, then the pass-through ones.
    let spread = |c: Tensor<B, 2>, rest: f32| {
        let pairs = if interleaved {
            c.reshape([t, half, 1]).repeat_dim(2, 2).reshape([t, r])
        } else {
            Tensor::cat(vec![c.clone(), c], 1)
        };
        let full = if r < d {
            Tensor::cat(vec![pairs, Tensor::full([t, d - r], rest, &device)], 1)
        } else {
            pairs
        };
        // Repeated over the heads: one row `[t * h * d]` that broadcasts over the batch.
        full.reshape([t, 1, d])
            .repeat_dim(1, h)
            .reshape([1, t * h * d])
    };
    let (c, s) = (spread(cos, 1.0), spread(sin, 0.0));
    let x = x.swap_dims(1, 2).reshape([b * t * h, d]);
    let rotated = x.clone().matmul(perm).reshape([b, t * h * d]);
    let out = x.reshape([b, t * h * d]) * c + rotated * s;
    out.reshape([b, t, h, d]).swap_dims(1, 2)
}

/// [`rope_half`] / [`rope_interleaved`] on the CPU backends: one pass over the (possibly
/// transposed) input, written contiguous, with the same arithmetic as the op-by-op form.
fn rope_host<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    interleaved: bool,
) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let half = cos.dims()[1];
    let device = x.device();
    let table = |c: Tensor<B, 2>| {
        c.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default()
    };
    let (cos, sin) = (table(cos), table(sin));
    let x = crate::host::Host::new(x);
    let v = x.view();
    let mut out = vec![0f32; b * h * t * d];
    let mut rows = out.chunks_exact_mut(d.max(1));
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..t {
                let base = v.offset + bi * v.strides[0] + hi * v.strides[1] + i * v.strides[2];
                let at = |c: usize| v.data[base + c * v.strides[3]];
                let row = rows.next().expect("one row per position");
                let (cr, sr) = (&cos[i * half..][..half], &sin[i * half..][..half]);
                for c in 0..half {
                    let (p, q) = partner(c, half, interleaved);
                    let (x1, x2) = (at(p), at(q));
                    row[p] = x1 * cr[c] - x2 * sr[c];
                    row[q] = x2 * cr[c] + x1 * sr[c];
                }
                for (c, x) in row.iter_mut().enumerate().skip(2 * half) {
                    *x = at(c);
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(out, [b, h, t, d]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec().unwrap()
    }

    /// The obviously-correct scalar version of both layouts.
    fn slow(x: &[f32], d: usize, pos: usize, inv: &[f64], interleaved: bool) -> Vec<f32> {
        let mut out = x.to_vec();
        let half = inv.len();
        for (i, &f) in inv.iter().enumerate() {
            let a = (pos as f32) * (f as f32);
            let (c, s) = (a.cos(), a.sin());
            let (p, q) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + half)
            };
            out[p] = x[p] * c - x[q] * s;
            out[q] = x[q] * c + x[p] * s;
        }
        let _ = d;
        out
    }

    #[test]
    fn scaled_frequencies_follow_their_definitions() {
        let base = default_inv_freq(8, 100.0);
        let lin = linear_inv_freq(8, 100.0, 2.0);
        assert!(base
            .iter()
            .zip(&lin)
            .all(|(b, l)| (b / 2.0 - l).abs() < 1e-15));
        // wavelengths 6.28, 19.9, 62.8, 199 against original 8: 6.28 is between 8/4 and 8/1
        // (smoothed), the others are longer than 8 (divided by the factor).
        let l3 = llama3_inv_freq(8, 100.0, 4.0, 1.0, 4.0, 8);
        let smooth = (8.0 / (2.0 * std::f64::consts::PI) - 1.0) / 3.0;
        assert!((l3[0] - ((1.0 - smooth) / 4.0 + smooth)).abs() < 1e-12);
        for i in 1..4 {
            assert!((l3[i] - base[i] / 4.0).abs() < 1e-15);
        }
        assert_eq!(dynamic_ntk_inv_freq(8, 100.0, 2.0, 10, 16), base);
        let dynamic = dynamic_ntk_inv_freq(8, 100.0, 2.0, 32, 16);
        let grown = 100.0 * 3f64.powf(8.0 / 6.0);
        assert!((dynamic[1] - 1.0 / grown.powf(0.25)).abs() < 1e-12);
    }

    /// The op form (GPU backends, autodiff) equals the host pass bit for bit: both layouts,
    /// full and partial rotary, a transposed input as the attention passes it, batch and heads.
    #[test]
    fn the_op_form_equals_the_host_pass() {
        let device = Default::default();
        let (b, h, t) = (2, 3, 5);
        for (d, rotary) in [(8, 8), (12, 8)] {
            let inv = default_inv_freq(rotary, 10000.0);
            let table = RotaryTable::<Flex>::new(&inv, 16, 1.0, &device);
            let (cos, sin) = table.range(3, t);
            let x: Vec<f32> = (0..b * t * h * d)
                .map(|i| (i as f32 * 0.37).sin() * 3.0)
                .collect();
            let x = Tensor::<Flex, 4>::from_data(TensorData::new(x, [b, t, h, d]), &device)
                .swap_dims(1, 2);
            for interleaved in [false, true] {
                let host = values(rope_host(x.clone(), cos.clone(), sin.clone(), interleaved));
                let ops = values(rope_ops(x.clone(), cos.clone(), sin.clone(), interleaved));
                assert_eq!(
                    host, ops,
                    "d {d}, rotary {rotary}, interleaved {interleaved}"
                );
            }
        }
    }

    #[test]
    fn both_layouts_match_the_scalar_definition_with_partial_rotary() {
        let device = Default::default();
        let d = 8;
        let inv = default_inv_freq(4, 10000.0); // rotary_dim 4 of 8: partial
        let table = RotaryTable::<Flex>::new(&inv, 16, 1.0, &device);
        let x: Vec<f32> = (0..3 * d).map(|i| (i as f32 * 0.7).sin()).collect();
        let xt = Tensor::<Flex, 4>::from_data(TensorData::new(x.clone(), [1, 1, 3, d]), &device);
        let (cos, sin) = table.range(5, 3);
        let half = values(rope_half(xt.clone(), cos.clone(), sin.clone()));
        let inter = values(rope_interleaved(xt, cos, sin));
        for t in 0..3 {
            let row = &x[t * d..(t + 1) * d];
            let want_h = slow(row, d, 5 + t, &inv, false);
            let want_i = slow(row, d, 5 + t, &inv, true);
            for j in 0..d {
                assert!((half[t * d + j] - want_h[j]).abs() < 1e-6);
                assert!((inter[t * d + j] - want_i[j]).abs() < 1e-6);
            }
        }
        let (c1, _) = table.select(&[5, 6, 7]);
        let (c2, _) = table.range(5, 3);
        assert_eq!(
            c1.into_data().convert::<f32>().into_vec::<f32>().unwrap(),
            c2.into_data().convert::<f32>().into_vec::<f32>().unwrap()
        );
    }
}
