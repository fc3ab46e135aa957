//! The portable kernels: plain scalar Rust, one dot product per (weight row, activation row).
//! They are the reference the SIMD kernels are tested against: the same integer block sums and
//! the same per-block float products, summed in order.

use super::{Tile, TileFn};
use crate::act::Act;
use crate::formats::{bf16_at, f16_at, k_scale_min};
use crate::QType;

pub(crate) fn kernel(qtype: QType) -> TileFn {
    match qtype {
        QType::F32 => tile_f32,
        QType::F16 => tile_f16,
        QType::BF16 => tile_bf16,
        QType::Q8_0 => tile_q8_0,
        QType::Q4_0 => tile_q4_0,
        QType::Q4_1 => tile_q4_1,
        QType::Q4_K => tile_q4_k,
        QType::Q5_K => tile_q5_k,
        QType::Q6_K => tile_q6_k,
    }
}

#[inline(always)]
fn each(t: &Tile<'_>, dot: impl Fn(&[u8], &Act<'_>, usize) -> f32) {
    for r in 0..t.rows {
        let w = &t.w[r * t.row_bytes..(r + 1) * t.row_bytes];
        for c in t.acts.clone() {
            // SAFETY: r < rows and c in acts; the caller guarantees the output rectangle.
            unsafe { t.store(r, c, dot(w, t.act, c)) };
        }
    }
}

macro_rules! tile_fn {
    ($name:ident, $dot:ident) => {
        /// # Safety
        /// See [`TileFn`].
        unsafe fn $name(t: &Tile<'_>) {
            each(t, $dot)
        }
    };
}

tile_fn!(tile_f32, dot_f32);
tile_fn!(tile_f16, dot_f16);
tile_fn!(tile_bf16, dot_bf16);
tile_fn!(tile_q8_0, dot_q8_0);
tile_fn!(tile_q4_0, dot_q4_0);
tile_fn!(tile_q4_1, dot_q4_1);
tile_fn!(tile_q4_k, dot_q4_k);
tile_fn!(tile_q5_k, dot_q5_k);
tile_fn!(tile_q6_k, dot_q6_k);

fn x_row<'a>(a: &'a Act<'_>, c: usize) -> &'a [f32] {
    &a.x[c * a.cols..(c + 1) * a.cols]
}

fn dot_f32(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let mut acc = 0f32;
    for (b, &x) in w.chunks_exact(4).zip(x_row(a, c)) {
        acc += f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x;
    }
    acc
}

fn dot_f16(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let mut acc = 0f32;
    for (i, &x) in x_row(a, c).iter().enumerate() {
        acc += f16_at(w, 2 * i) * x;
    }
    acc
}

fn dot_bf16(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let mut acc = 0f32;
    for (i, &x) in x_row(a, c).iter().enumerate() {
        acc += bf16_at(w, 2 * i) * x;
    }
    acc
}

/// The quants, scales and block count of activation row `c` (32-value blocks).
fn q8_row<'a>(a: &'a Act<'_>, c: usize) -> (&'a [i8], &'a [f32], usize) {
    let nb = a.nb();
    (
        &a.qs[c * a.cols..(c + 1) * a.cols],
        &a.d[c * nb..(c + 1) * nb],
        nb,
    )
}

fn dot_q8_0(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let (qa, da, nb) = q8_row(a, c);
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[34 * b..34 * b + 34];
        let qa = &qa[32 * b..32 * b + 32];
        let mut isum = 0i32;
        for i in 0..32 {
            isum += (blk[2 + i] as i8) as i32 * qa[i] as i32;
        }
        acc += isum as f32 * (f16_at(blk, 0) * da[b]);
    }
    acc
}

fn dot_q4_0(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let (qa, da, nb) = q8_row(a, c);
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[18 * b..18 * b + 18];
        let qa = &qa[32 * b..32 * b + 32];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += ((blk[2 + j] & 0x0F) as i32 - 8) * qa[j] as i32;
            isum += ((blk[2 + j] >> 4) as i32 - 8) * qa[j + 16] as i32;
        }
        acc += isum as f32 * (f16_at(blk, 0) * da[b]);
    }
    acc
}

fn dot_q4_1(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let (qa, da, nb) = q8_row(a, c);
    let sa = &a.s[c * nb..(c + 1) * nb];
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[20 * b..20 * b + 20];
        let qa = &qa[32 * b..32 * b + 32];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (blk[4 + j] & 0x0F) as i32 * qa[j] as i32;
            isum += (blk[4 + j] >> 4) as i32 * qa[j + 16] as i32;
        }
        acc += isum as f32 * (f16_at(blk, 0) * da[b]) + f16_at(blk, 2) * sa[b];
    }
    acc
}

/// Activation row `c` as Q8_K: quants, scales, sums of 16, super-block count.
fn q8k_row<'a>(a: &'a Act<'_>, c: usize) -> (&'a [i8], &'a [f32], &'a [i16], usize) {
    let nb = a.nb();
    (
        &a.qs[c * a.cols..(c + 1) * a.cols],
        &a.d[c * nb..(c + 1) * nb],
        &a.bsums[c * nb * 16..(c + 1) * nb * 16],
        nb,
    )
}

/// Q4_K and Q5_K: Σ_blocks d·da·Σ_g sc_g·Σ q·qa − dmin·da·Σ_g m_g·(sum of the group's quants).
fn dot_q45_k(w: &[u8], a: &Act<'_>, c: usize, five: bool) -> f32 {
    let (qa, da, bsums, nb) = q8k_row(a, c);
    let bb = if five { 176 } else { 144 };
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[bb * b..bb * b + bb];
        let (sc, mn) = k_scale_min(&blk[4..16]);
        let (qh, qs) = if five {
            (&blk[16..48], &blk[48..176])
        } else {
            (&blk[0..0], &blk[16..144])
        };
        let qa = &qa[256 * b..256 * b + 256];
        let bs = &bsums[16 * b..16 * b + 16];
        let (mut isum, mut msum) = (0i32, 0i32);
        for g in 0..8 {
            let (chunk, shift) = (g / 2, (g % 2) * 4);
            let mut gsum = 0i32;
            for i in 0..32 {
                let mut q = (qs[32 * chunk + i] >> shift) & 0x0F;
                if five {
                    q |= ((qh[i] >> g) & 1) << 4;
                }
                gsum += q as i32 * qa[32 * g + i] as i32;
            }
            isum += sc[g] as i32 * gsum;
            msum += mn[g] as i32 * (bs[2 * g] as i32 + bs[2 * g + 1] as i32);
        }
        let d = da[b] * f16_at(blk, 0);
        let dmin = da[b] * f16_at(blk, 2);
        acc += d * isum as f32 - dmin * msum as f32;
    }
    acc
}

fn dot_q4_k(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    dot_q45_k(w, a, c, false)
}

fn dot_q5_k(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    dot_q45_k(w, a, c, true)
}

/// Q6_K: Σ_blocks d·da·Σ_16 sc·Σ (q − 32)·qa.
fn dot_q6_k(w: &[u8], a: &Act<'_>, c: usize) -> f32 {
    let (qa, da, _, nb) = q8k_row(a, c);
    let mut acc = 0f32;
    for b in 0..nb {
        let blk = &w[210 * b..210 * b + 210];
        let (ql, qh, sc) = (&blk[0..128], &blk[128..192], &blk[192..208]);
        let qa = &qa[256 * b..256 * b + 256];
        let mut sums = [0i32; 16];
        for half in 0..2 {
            for i in 0..32 {
                let (l0, l1, h) = (ql[64 * half + i], ql[64 * half + 32 + i], qh[32 * half + i]);
                let q = [
                    (l0 & 0x0F) | ((h & 3) << 4),
                    (l1 & 0x0F) | (((h >> 2) & 3) << 4),
                    (l0 >> 4) | (((h >> 4) & 3) << 4),
                    (l1 >> 4) | (((h >> 6) & 3) << 4),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let p = 128 * half + 32 * k + i;
                    sums[p / 16] += (qk as i32 - 32) * qa[p] as i32;
                }
            }
        }
        let mut isum = 0i32;
        for (j, &s) in sums.iter().enumerate() {
            isum += (sc[j] as i8) as i32 * s;
        }
        acc += da[b] * f16_at(blk, 208) * isum as f32;
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Exact products (f32 activations)

/// The exact kernel: each weight row dequantised once (ggml's `dequantize_row_*`, so the very
/// f32 weights of [`crate::QMatrix::dequantize`]) and dotted with every activation row of the
/// tile, in eight interleaved partial sums.
pub(crate) fn exact_kernel(qtype: QType) -> super::XTileFn {
    match qtype {
        QType::F32 => exact_f32,
        QType::F16 => exact_f16,
        QType::BF16 => exact_bf16,
        QType::Q8_0 => exact_q8_0,
        QType::Q4_0 => exact_q4_0,
        QType::Q4_1 => exact_q4_1,
        QType::Q4_K => exact_q4_k,
        QType::Q5_K => exact_q5_k,
        QType::Q6_K => exact_q6_k,
    }
}

macro_rules! exact_fn {
    ($name:ident, $t:expr) => {
        /// # Safety
        /// See [`super::XTileFn`].
        unsafe fn $name(t: &super::XTile<'_>) {
            unsafe { exact_tile($t, t) }
        }
    };
}

exact_fn!(exact_f32, QType::F32);
exact_fn!(exact_f16, QType::F16);
exact_fn!(exact_bf16, QType::BF16);
exact_fn!(exact_q8_0, QType::Q8_0);
exact_fn!(exact_q4_0, QType::Q4_0);
exact_fn!(exact_q4_1, QType::Q4_1);
exact_fn!(exact_q4_k, QType::Q4_K);
exact_fn!(exact_q5_k, QType::Q5_K);
exact_fn!(exact_q6_k, QType::Q6_K);

/// # Safety
/// See [`super::XTileFn`].
unsafe fn exact_tile(qtype: QType, t: &super::XTile<'_>) {
    let cols = t.cols;
    let mut w = vec![0f32; cols];
    for r in 0..t.rows {
        crate::formats::dequantize(qtype, &t.w[r * t.row_bytes..(r + 1) * t.row_bytes], &mut w);
        for c in t.acts.clone() {
            let y = dot_f32s(&w, &t.x[c * cols..(c + 1) * cols]);
            // SAFETY: r < rows and c in acts; the caller guarantees the output rectangle.
            unsafe { t.store(r, c, y) };
        }
    }
}

/// Σ a·b in eight interleaved partial sums (which the compiler vectorises), then the rest.
fn dot_f32s(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}
