//! Activations prepared for the dot-product kernels: quantised once per `matmul` call, in the
//! type ggml pairs with each weight format (`vec_dot_type`).
//!
//! The layout is ours (structure of arrays, so kernels load scales and quants with plain
//! vector loads), the numbers are ggml's x86 ones:
//! * Q8_0 (for Q8_0/Q4_0 weights): per 32 values, `d = amax/127` rounded to f16,
//!   `q = round_ties_even(x · (127/amax))`; we also keep `d·Σq` per block (for offsets).
//! * Q8_1 (for Q4_1 weights): Q8_0 plus `s = f16(d·Σq)` with the unrounded `d`.
//! * Q8_K (for K-quants): per 256 values, `d = −max/127` in f32 (max = the value of largest
//!   magnitude), `q = nearest_int(x · (−127/max))`, and sums of each 16 quants.
//!
//! Every kernel set uses these same numbers, so they differ only in float summation order.

use crate::formats::{nearest_int, round_f16};
use crate::QType;

/// Which activation encoding a weight format wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ActKind {
    /// Raw f32 (F32/F16/BF16 weights).
    F32,
    /// Q8_0 blocks of 32 (`d`, `qs`, and `d·Σq` in `dsum`).
    Q8_0,
    /// Q8_1 blocks of 32 (`d`, `qs`, `s`).
    Q8_1,
    /// Q8_K super-blocks of 256 (`d`, `qs`, `bsums`).
    Q8K,
}

impl ActKind {
    pub(crate) fn for_weights(qtype: QType) -> ActKind {
        match qtype {
            QType::F32 | QType::F16 | QType::BF16 => ActKind::F32,
            QType::Q8_0 | QType::Q4_0 => ActKind::Q8_0,
            QType::Q4_1 => ActKind::Q8_1,
            QType::Q4_K | QType::Q5_K | QType::Q6_K => ActKind::Q8K,
        }
    }

    fn block(self) -> usize {
        match self {
            ActKind::F32 => 1,
            ActKind::Q8_0 | ActKind::Q8_1 => 32,
            ActKind::Q8K => 256,
        }
    }
}

/// `n` activation rows of `cols` values, prepared for one weight format.
pub(crate) struct Act<'a> {
    pub kind: ActKind,
    pub cols: usize,
    /// The raw activations (`[n, cols]`); what F32/F16/BF16 kernels read.
    pub x: &'a [f32],
    /// Quants, `[n, cols]`.
    pub qs: Vec<i8>,
    /// Scales, `[n, cols / block]` (f16-rounded for Q8_0/Q8_1).
    pub d: Vec<f32>,
    /// Q8_1: `s = f16(d·Σq)` per block; `[n, cols/32]`.
    pub s: Vec<f32>,
    /// Q8_0: `d·Σq` per block (with the f16-rounded `d`); `[n, cols/32]`.
    pub dsum: Vec<f32>,
    /// Q8_K: sums of each 16 quants; `[n, cols/16]`.
    pub bsums: Vec<i16>,
}

impl<'a> Act<'a> {
    /// Prepares `x` (`[n, cols]`) for weights of `qtype`.
    pub(crate) fn new(qtype: QType, x: &'a [f32], n: usize, cols: usize) -> Act<'a> {
        let kind = ActKind::for_weights(qtype);
        let mut act = Act {
            kind,
            cols,
            x,
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            dsum: Vec::new(),
            bsums: Vec::new(),
        };
        if kind == ActKind::F32 {
            return act;
        }
        let nb = cols / kind.block();
        act.qs = vec![0; n * cols];
        act.d = vec![0.0; n * nb];
        match kind {
            ActKind::Q8_0 => act.dsum = vec![0.0; n * nb],
            ActKind::Q8_1 => act.s = vec![0.0; n * nb],
            _ => act.bsums = vec![0; n * cols / 16],
        }
        let rows = RowsMut {
            qs: &mut act.qs,
            d: &mut act.d,
            s: &mut act.s,
            dsum: &mut act.dsum,
            bsums: &mut act.bsums,
        };
        crate::parallel::for_each_act_row(n, cols, kind, rows, |r, row| {
            quantize_row(kind, &x[r * cols..(r + 1) * cols], row)
        });
        act
    }

    pub(crate) fn nb(&self) -> usize {
        self.cols / self.kind.block()
    }
}

/// Mutable views of all prepared activation arrays (split per row by the caller).
pub(crate) struct RowsMut<'b> {
    pub qs: &'b mut [i8],
    pub d: &'b mut [f32],
    pub s: &'b mut [f32],
    pub dsum: &'b mut [f32],
    pub bsums: &'b mut [i16],
}

impl<'b> RowsMut<'b> {
    /// Splits off the first `k` rows (of `cols` values each).
    pub(crate) fn split_rows(
        self,
        k: usize,
        cols: usize,
        kind: ActKind,
    ) -> (RowsMut<'b>, RowsMut<'b>) {
        let nb = cols / kind.block();
        let at = |len: usize, per: usize| if len == 0 { 0 } else { k * per };
        let (qs0, qs1) = self.qs.split_at_mut(at(self.qs.len(), cols));
        let (d0, d1) = self.d.split_at_mut(at(self.d.len(), nb));
        let (s0, s1) = self.s.split_at_mut(at(self.s.len(), nb));
        let (u0, u1) = self.dsum.split_at_mut(at(self.dsum.len(), nb));
        let (b0, b1) = self.bsums.split_at_mut(at(self.bsums.len(), cols / 16));
        (
            RowsMut {
                qs: qs0,
                d: d0,
                s: s0,
                dsum: u0,
                bsums: b0,
            },
            RowsMut {
                qs: qs1,
                d: d1,
                s: s1,
                dsum: u1,
                bsums: b1,
            },
        )
    }
}

/// Quantises one activation row.
pub(crate) fn quantize_row(kind: ActKind, x: &[f32], out: RowsMut<'_>) {
    match kind {
        ActKind::F32 => {}
        ActKind::Q8_0 | ActKind::Q8_1 => {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is present.
                    unsafe { quantize_q8_avx2(kind, x, out) };
                    return;
                }
            }
            quantize_q8(kind, x, out)
        }
        ActKind::Q8K => quantize_q8k(x, out),
    }
}

/// The Q8_0/Q8_1 quantiser in AVX2: the same operations as [`quantize_q8`] (`|x|` maximum,
/// one multiply by `127/amax`, round half to even), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_avx2(kind: ActKind, x: &[f32], out: RowsMut<'_>) {
    use std::arch::x86_64::*;
    assert!(x.len().is_multiple_of(32) && out.qs.len() >= x.len() && out.d.len() >= x.len() / 32);
    if kind == ActKind::Q8_1 {
        assert!(out.s.len() >= x.len() / 32);
    } else {
        assert!(out.dsum.len() >= x.len() / 32);
    }
    // f32 → f16 → f32 with F16C (round to nearest even, as `round_f16`).
    let r16 = |v: f32| {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
            _mm_set_ss(v),
        )))
    };
    for b in 0..x.len() / 32 {
        // SAFETY: the asserts above keep every access in bounds.
        unsafe {
            let p = x.as_ptr().add(32 * b);
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let sign = _mm256_set1_ps(-0.0);
            let m = _mm256_max_ps(
                _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
            );
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let q = v.map(|vi| _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(vi, id))));
            let s8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(s8),
                _mm256_extracti128_si256::<1>(s8),
            );
            let s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
            let sum = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32::<1>(s4)));
            // Pack to bytes; the 128-bit lanes interleave, which the permute undoes.
            let p16a = _mm256_packs_epi32(q[0], q[1]);
            let p16b = _mm256_packs_epi32(q[2], q[3]);
            let p8 = _mm256_packs_epi16(p16a, p16b);
            let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(out.qs.as_mut_ptr().add(32 * b) as *mut __m256i, p8);
            let d16 = r16(d);
            out.d[b] = d16;
            if kind == ActKind::Q8_1 {
                out.s[b] = r16(d * sum as f32);
            } else {
                out.dsum[b] = d16 * sum as f32;
            }
        }
    }
}

/// The plain build of the Q8_0/Q8_1 quantiser (the SIMD build must match it bit for bit).
#[cfg(test)]
pub(crate) fn quantize_q8_plain(kind: ActKind, x: &[f32], out: RowsMut<'_>) {
    quantize_q8(kind, x, out)
}

#[inline(always)]
fn quantize_q8(kind: ActKind, x: &[f32], out: RowsMut<'_>) {
    for (b, xb) in x.chunks_exact(32).enumerate() {
        let mut amax = 0f32;
        for &v in xb {
            amax = amax.max(v.abs());
        }
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let qs = &mut out.qs[32 * b..32 * b + 32];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(xb) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        let d16 = round_f16(d);
        out.d[b] = d16;
        if kind == ActKind::Q8_1 {
            out.s[b] = round_f16(d * sum as f32);
        } else {
            out.dsum[b] = d16 * sum as f32;
        }
    }
}

fn quantize_q8k(x: &[f32], out: RowsMut<'_>) {
    for (b, xb) in x.chunks_exact(256).enumerate() {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let qs = &mut out.qs[256 * b..256 * b + 256];
        let bsums = &mut out.bsums[16 * b..16 * b + 16];
        if amax == 0.0 {
            out.d[b] = 0.0;
            qs.fill(0);
            bsums.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, q16) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            *s = q16.iter().map(|&q| q as i16).sum();
        }
        out.d[b] = 1.0 / iscale;
    }
}
