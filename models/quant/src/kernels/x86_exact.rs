//! Exact kernels for x86-64: `y = x · Wᵀ` with f32 activations, the weights widened in
//! registers to the f32 values `dequantize` gives, AVX2 + FMA on 256-bit vectors and AVX-512 on
//! 512-bit ones.
//!
//! Widening is exact by construction: every format's dequantised weight is `a·q + b` for a small
//! integer `q` and per-block f32 constants `a`, `b`, with `a·q` exact in f32, so one FMA of the
//! converted `q` rounds exactly as `dequantize` does (Q8_0's `d·q`, Q4_0's `d·(q − 8)` and
//! Q6_K's `ds·(q − 32)` are exact products). With 512-bit vectors, 4- and 5-bit quants skip the
//! conversion: the block's 16 (32) possible weights are computed once into a table and picked
//! with `vpermps` (`vpermt2ps`).
//!
//! Two kernels per format:
//! * streaming, for few activation rows (decode): `R` weight rows at a time, each block widened
//!   in registers and multiplied into `R × C` accumulators, the next rows prefetched; the weights
//!   are read once per `C ≤ 4` activation rows, so one activation row runs at memory speed.
//!   On AVX-512 it trims the work per block further (on Zen 4 a 512-bit broadcast costs as much
//!   as an FMA): the block scales of Q4_0/Q4_1 are collected per row in one pass (`vpermt2w`
//!   picks several blocks' headers out of two loads, one conversion), and offsets are factored
//!   out of the sums: Q4_1's minimum `m` and the K-quants' group minima enter as
//!   `Σ_b m_b·Σ_{i∈b} x_i`, with the activations' sums of 32 computed once per product (the
//!   weights are then `d·q`, still exact; the sum differs from the dequantised product only in
//!   rounding order).
//! * panel (GEMM), for many activation rows (prefill): per 256 columns, `NR` weight rows are
//!   widened once into a small f32 panel (in L1), and a register-blocked SGEMM micro-kernel
//!   multiplies it with the activations, which the caller has packed transposed (`lanes`
//!   activation rows per vector), `NR × CV` vectors of accumulators; partial sums over the
//!   256-column steps are kept in a per-tile buffer.

// Tiles are indexed [row][act] on purpose: the loops are over const-generic tile sizes and unroll.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::x86::{f16_to_f32, k_scales, rd_u16, Prefetch};
use super::{ExactKernels, Gemm, KernelSet, XTile};
use crate::QType;

// ---------------------------------------------------------------------------------------------
// Vectors

/// An f32 vector type: `__m256` (AVX2) or `__m512` (AVX-512).
trait Vf: Copy {
    /// Lanes.
    const L: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(p: *mut f32, v: Self);
    /// `*p` in every lane.
    unsafe fn splat(p: *const f32) -> Self;
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    /// The lanes summed down to 8 (`__m512`: its halves added).
    unsafe fn fold(v: Self) -> __m256;
    /// Visits the block at `p` as vectors of its f32 weights: `f(i, v)` for weights
    /// `i·L..(i+1)·L`.
    unsafe fn widen<F: XFmt>(p: *const u8, f: impl FnMut(usize, Self));
    /// Whether the streaming kernel uses [`XFmt::pre`] and [`Vf::widen_split`].
    const SPLIT: bool;
    /// The streaming kernel's widening ([`XFmt::w16_split`]).
    unsafe fn widen_split<F: XFmt>(p: *const u8, pre: *const f32, f: impl FnMut(usize, Self));
}

impl Vf for __m256 {
    const L: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fold(v: Self) -> __m256 {
        v
    }
    #[inline(always)]
    unsafe fn widen<F: XFmt>(p: *const u8, f: impl FnMut(usize, Self)) {
        unsafe { F::w8(p, f) }
    }
    const SPLIT: bool = false;
    #[inline(always)]
    unsafe fn widen_split<F: XFmt>(p: *const u8, _: *const f32, f: impl FnMut(usize, Self)) {
        unsafe { F::w8(p, f) }
    }
}

impl Vf for __m512 {
    const L: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> Self {
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fold(v: Self) -> __m256 {
        unsafe { hi_plus_lo(v) }
    }
    #[inline(always)]
    unsafe fn widen<F: XFmt>(p: *const u8, f: impl FnMut(usize, Self)) {
        unsafe { F::w16(p, f) }
    }
    const SPLIT: bool = true;
    #[inline(always)]
    unsafe fn widen_split<F: XFmt>(p: *const u8, pre: *const f32, f: impl FnMut(usize, Self)) {
        unsafe { F::w16_split(p, pre, f) }
    }
}

/// The two 256-bit halves of `v`, added.
#[inline(always)]
unsafe fn hi_plus_lo(v: __m512) -> __m256 {
    unsafe {
        _mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Formats

/// Which offsets the streaming kernel's 512-bit widening ([`XFmt::w16_split`]) leaves out of
/// the weights, to be added as `Σ offset·(sum of the activations it applies to)`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offsets {
    /// None: the weights are whole.
    None,
    /// One per 32 weights: the second array of [`XFmt::pre`].
    Per32,
}

/// A weight format as the exact kernels see it.
trait XFmt {
    /// Weights per block (element formats: chunks of 32).
    const BLOCK: usize;
    /// Bytes per block.
    const BYTES: usize;
    /// Bytes per weight of an element format, whose rows may end in a partial chunk; 0 for
    /// block formats.
    const ELEM: usize = 0;
    /// The block at `p` as `BLOCK/8` vectors of 8 weights.
    unsafe fn w8(p: *const u8, f: impl FnMut(usize, __m256));
    /// The block at `p` as `BLOCK/16` vectors of 16 weights.
    unsafe fn w16(p: *const u8, f: impl FnMut(usize, __m512));
    /// Element formats: the weight at `p`.
    unsafe fn elem(_p: *const u8) -> f32 {
        0.0
    }
    /// Arrays of f32 constants that the 512-bit streaming kernel collects for whole rows with
    /// [`XFmt::pre`] (0: none): scales, and offsets (see `OFFSETS`), `PER` per block each.
    /// Kept in memory, they enter the product loop as embedded broadcasts (on Zen 4 a
    /// register broadcast costs a shuffle, and shuffles are what the loop is short of).
    const PRE: usize = 0;
    /// Constants per block in each [`XFmt::pre`] array.
    const PER: usize = 1;
    /// The constants of the `nb` blocks at `p`: array j at `out + j·stride`, `PER` per block
    /// (writes up to 8 values past the end).
    unsafe fn pre(_p: *const u8, _nb: usize, _out: *mut f32, _stride: usize) {}
    /// What [`XFmt::w16_split`] leaves out.
    const OFFSETS: Offsets = Offsets::None;
    /// Whether [`XFmt::w16_split`] also leaves out the block scale (array 0 of [`XFmt::pre`],
    /// one per block), which the kernel then applies once per block to the block's sum.
    const SCALED: bool = false;
    /// The 512-bit streaming kernel's widening: as [`XFmt::w16`], with the block's constants of
    /// array 0 at `pre`, less the offsets named by `OFFSETS`.
    unsafe fn w16_split(p: *const u8, _pre: *const f32, f: impl FnMut(usize, __m512)) {
        unsafe { Self::w16(p, f) }
    }
}

struct F32X;
struct F16X;
struct BF16X;
struct Q8_0X;
struct Q4_0X;
struct Q4_1X;
struct Q4KX;
struct Q5KX;
struct Q6KX;

impl XFmt for F32X {
    const BLOCK: usize = 32;
    const BYTES: usize = 128;
    const ELEM: usize = 4;
    #[inline(always)]
    unsafe fn w8(p: *const u8, mut f: impl FnMut(usize, __m256)) {
        unsafe {
            for i in 0..4 {
                f(i, _mm256_loadu_ps((p as *const f32).add(8 * i)));
            }
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, mut f: impl FnMut(usize, __m512)) {
        unsafe {
            for i in 0..2 {
                f(i, _mm512_loadu_ps((p as *const f32).add(16 * i)));
            }
        }
    }
    #[inline(always)]
    unsafe fn elem(p: *const u8) -> f32 {
        unsafe { (p as *const f32).read_unaligned() }
    }
}

impl XFmt for F16X {
    const BLOCK: usize = 32;
    const BYTES: usize = 64;
    const ELEM: usize = 2;
    #[inline(always)]
    unsafe fn w8(p: *const u8, mut f: impl FnMut(usize, __m256)) {
        unsafe {
            for i in 0..4 {
                f(
                    i,
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(16 * i) as *const __m128i)),
                );
            }
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, mut f: impl FnMut(usize, __m512)) {
        unsafe {
            for i in 0..2 {
                f(
                    i,
                    _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32 * i) as *const __m256i)),
                );
            }
        }
    }
    #[inline(always)]
    unsafe fn elem(p: *const u8) -> f32 {
        unsafe { f16_to_f32(rd_u16(p)) }
    }
}

impl XFmt for BF16X {
    const BLOCK: usize = 32;
    const BYTES: usize = 64;
    const ELEM: usize = 2;
    #[inline(always)]
    unsafe fn w8(p: *const u8, mut f: impl FnMut(usize, __m256)) {
        unsafe {
            for i in 0..4 {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(16 * i) as *const __m128i));
                f(i, _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h)));
            }
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, mut f: impl FnMut(usize, __m512)) {
        unsafe {
            for i in 0..2 {
                let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.add(32 * i) as *const __m256i));
                f(i, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h)));
            }
        }
    }
    #[inline(always)]
    unsafe fn elem(p: *const u8) -> f32 {
        unsafe { f32::from_bits((rd_u16(p) as u32) << 16) }
    }
}

/// 8 bytes at `p`, zero-extended to 8 dwords.
#[inline(always)]
unsafe fn u8x8(p: *const u8) -> __m256i {
    unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i)) }
}

/// 16 bytes at `p`, zero-extended to 16 dwords.
#[inline(always)]
unsafe fn u8x16(p: *const u8) -> __m512i {
    unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(p as *const __m128i)) }
}

/// `a·q + b` for dwords `q` (exact when `a·q` is).
#[inline(always)]
unsafe fn affine8(q: __m256i, a: __m256, b: __m256) -> __m256 {
    unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), a, b) }
}

/// 0, 1, …, 15.
#[inline(always)]
unsafe fn iota16() -> __m512 {
    unsafe {
        _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        )
    }
}

/// Weights `table[q & 15]` for dwords `q`.
#[inline(always)]
unsafe fn pick16(q: __m512i, table: __m512) -> __m512 {
    unsafe { _mm512_permutexvar_ps(q, table) }
}

/// The f16 at `p` in all 8 lanes.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16(rd_u16(p) as i16)) }
}

/// The f16 at `p` in all 16 lanes.
#[inline(always)]
unsafe fn f16x16(p: *const u8) -> __m512 {
    unsafe { _mm512_cvtph_ps(_mm256_set1_epi16(rd_u16(p) as i16)) }
}

/// The f16 pair at `p` as `[a, b, a, b, …]` (8 lanes).
#[inline(always)]
unsafe fn f16_pair8(p: *const u8) -> __m256 {
    unsafe { _mm256_cvtph_ps(_mm_set1_epi32((p as *const i32).read_unaligned())) }
}

/// The f16 pair at `p` as `[a, b, a, b, …]` (16 lanes).
#[inline(always)]
unsafe fn f16_pair16(p: *const u8) -> __m512 {
    unsafe { _mm512_cvtph_ps(_mm256_set1_epi32((p as *const i32).read_unaligned())) }
}

/// `vpermt2w` indices picking word 0 (and word 1, when `PAIR`) of consecutive blocks of `BB`
/// bytes from a 128-byte window: lane i < n takes block i's word 0, lane 8 + i its word 1.
const fn header_index<const BB: usize, const PAIR: bool>() -> [u16; 32] {
    let mut idx = [0u16; 32];
    let n = header_blocks::<BB, PAIR>();
    let mut i = 0;
    while i < n {
        idx[i] = (BB / 2 * i) as u16;
        if PAIR {
            idx[8 + i] = (BB / 2 * i + 1) as u16;
        }
        i += 1;
    }
    idx
}

/// Blocks whose header (2 bytes, or 4 when `PAIR`) lies in a 128-byte window (at most 8).
const fn header_blocks<const BB: usize, const PAIR: bool>() -> usize {
    let n = (128 - if PAIR { 4 } else { 2 }) / BB + 1;
    if n > 8 {
        8
    } else {
        n
    }
}

/// The f16 headers of the `nb` blocks of `BB` bytes at `p` as f32: word 0 (the scale) into
/// `out[..nb]` and, when `PAIR`, word 1 (the minimum) into `out[stride..stride + nb]`. Two
/// 64-byte loads and one `vpermt2w` collect several blocks' headers for one conversion (much
/// cheaper than converting and broadcasting them one by one in the product loop). Writes up to
/// 8 values past `nb`.
#[inline(always)]
unsafe fn headers<const BB: usize, const PAIR: bool>(
    p: *const u8,
    nb: usize,
    out: *mut f32,
    stride: usize,
) {
    unsafe {
        let idx = const { header_index::<BB, PAIR>() };
        let idx = _mm512_loadu_si512(idx.as_ptr() as *const __m512i);
        let per = const { header_blocks::<BB, PAIR>() };
        let mut b = 0;
        while b < nb {
            let src = p.add(b * BB);
            // Load only the row's bytes: the last windows are masked (no fault past the end).
            let left = (nb - b) * BB;
            let (lo, hi) = if left >= 128 {
                (
                    _mm512_loadu_si512(src as *const __m512i),
                    _mm512_loadu_si512(src.add(64) as *const __m512i),
                )
            } else {
                let m = |n: usize| {
                    if n >= 64 {
                        u64::MAX
                    } else {
                        (1u64 << n) - 1
                    }
                };
                (
                    _mm512_maskz_loadu_epi8(m(left), src as *const i8),
                    _mm512_maskz_loadu_epi8(m(left.saturating_sub(64)), src.add(64) as *const i8),
                )
            };
            let words = _mm512_permutex2var_epi16(lo, idx, hi);
            let f = _mm512_cvtph_ps(_mm512_castsi512_si256(words));
            _mm256_storeu_ps(out.add(b), _mm512_castps512_ps256(f));
            if PAIR {
                _mm256_storeu_ps(
                    out.add(stride + b),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(f))),
                );
            }
            b += per;
        }
    }
}

/// Q8_0: `w = d·q`.
impl XFmt for Q8_0X {
    const BLOCK: usize = 32;
    const BYTES: usize = 34;
    #[inline(always)]
    unsafe fn w8(p: *const u8, mut f: impl FnMut(usize, __m256)) {
        unsafe {
            let d = f16x8(p);
            for i in 0..4 {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(2 + 8 * i) as *const __m128i));
                f(i, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
            }
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, mut f: impl FnMut(usize, __m512)) {
        unsafe {
            let d = f16x16(p);
            for i in 0..2 {
                f(i, _mm512_mul_ps(q8_0_q16(p, i), d));
            }
        }
    }
    const PRE: usize = 1;
    #[inline(always)]
    unsafe fn pre(p: *const u8, nb: usize, out: *mut f32, stride: usize) {
        unsafe { headers::<34, false>(p, nb, out, stride) }
    }
    const SCALED: bool = true;
    #[inline(always)]
    unsafe fn w16_split(p: *const u8, _: *const f32, mut f: impl FnMut(usize, __m512)) {
        unsafe {
            for i in 0..2 {
                f(i, q8_0_q16(p, i));
            }
        }
    }
}

/// Quants `16i..16i + 16` of the Q8_0 block at `p`, as f32.
#[inline(always)]
unsafe fn q8_0_q16(p: *const u8, i: usize) -> __m512 {
    unsafe {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            p.add(2 + 16 * i) as *const __m128i
        )))
    }
}

/// A 4-bit block of 32 (quants at byte `QS`) as `a·q + b`: weights 0..16 in the low nibbles of
/// the 16 bytes, 16..32 in the high ones.
#[inline(always)]
unsafe fn q4_w8<const QS: usize>(
    p: *const u8,
    a: __m256,
    b: __m256,
    mut f: impl FnMut(usize, __m256),
) {
    unsafe {
        let m4 = _mm256_set1_epi32(0x0F);
        for j in 0..2 {
            let q = u8x8(p.add(QS + 8 * j));
            f(j, affine8(_mm256_and_si256(q, m4), a, b));
            f(2 + j, affine8(_mm256_srli_epi32::<4>(q), a, b));
        }
    }
}

/// As [`q4_w8`], the weights picked from the block's table of 16.
#[inline(always)]
unsafe fn q4_w16<const QS: usize>(p: *const u8, table: __m512, mut f: impl FnMut(usize, __m512)) {
    unsafe {
        let q = u8x16(p.add(QS));
        f(0, pick16(q, table));
        f(1, pick16(_mm512_srli_epi32::<4>(q), table));
    }
}

/// −8, −7, …, 7.
#[inline(always)]
unsafe fn iota16_m8() -> __m512 {
    unsafe { _mm512_sub_ps(iota16(), _mm512_set1_ps(8.0)) }
}

/// Q4_0: `w = d·(q − 8)` (= `d·q − 8d`, exact either way).
impl XFmt for Q4_0X {
    const BLOCK: usize = 32;
    const BYTES: usize = 18;
    #[inline(always)]
    unsafe fn w8(p: *const u8, f: impl FnMut(usize, __m256)) {
        unsafe {
            let d = f16x8(p);
            q4_w8::<2>(p, d, _mm256_mul_ps(d, _mm256_set1_ps(-8.0)), f)
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, f: impl FnMut(usize, __m512)) {
        unsafe { q4_w16::<2>(p, _mm512_mul_ps(iota16_m8(), f16x16(p)), f) }
    }
    const PRE: usize = 1;
    #[inline(always)]
    unsafe fn pre(p: *const u8, nb: usize, out: *mut f32, stride: usize) {
        unsafe { headers::<18, false>(p, nb, out, stride) }
    }
    #[inline(always)]
    unsafe fn w16_split(p: *const u8, pre: *const f32, f: impl FnMut(usize, __m512)) {
        unsafe { q4_w16::<2>(p, _mm512_mul_ps(iota16_m8(), _mm512_set1_ps(*pre)), f) }
    }
}

/// Q4_1: `w = d·q + m`; the streaming kernel's split weights are `d·q`, with `m` per block.
impl XFmt for Q4_1X {
    const BLOCK: usize = 32;
    const BYTES: usize = 20;
    #[inline(always)]
    unsafe fn w8(p: *const u8, f: impl FnMut(usize, __m256)) {
        unsafe {
            let dm = f16_pair8(p);
            q4_w8::<4>(p, _mm256_moveldup_ps(dm), _mm256_movehdup_ps(dm), f)
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, f: impl FnMut(usize, __m512)) {
        unsafe {
            let dm = f16_pair16(p);
            let table = _mm512_fmadd_ps(iota16(), _mm512_moveldup_ps(dm), _mm512_movehdup_ps(dm));
            q4_w16::<4>(p, table, f)
        }
    }
    const PRE: usize = 2;
    #[inline(always)]
    unsafe fn pre(p: *const u8, nb: usize, out: *mut f32, stride: usize) {
        unsafe { headers::<20, true>(p, nb, out, stride) }
    }
    const OFFSETS: Offsets = Offsets::Per32;
    #[inline(always)]
    unsafe fn w16_split(p: *const u8, pre: *const f32, f: impl FnMut(usize, __m512)) {
        unsafe { q4_w16::<4>(p, _mm512_mul_ps(iota16(), _mm512_set1_ps(*pre)), f) }
    }
}

/// Q4_K/Q5_K group constants: `d·sc_g` for the 8 groups of 32, and their offsets `−dmin·m_g`.
#[inline(always)]
unsafe fn k45_params(p: *const u8) -> (__m256, __m256) {
    unsafe {
        let (sc, mn) = k_scales(p.add(4));
        let d = _mm256_set1_ps(f16_to_f32(rd_u16(p)));
        let dmin = _mm256_set1_ps(-f16_to_f32(rd_u16(p.add(2))));
        let f = |v: u64| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)));
        (_mm256_mul_ps(f(sc), d), _mm256_mul_ps(f(mn), dmin))
    }
}

/// Lane `g` of `v` in all 8 lanes (one `vpermps`).
#[inline(always)]
unsafe fn lane8(v: __m256, g: usize) -> __m256 {
    unsafe { _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(g as i32)) }
}

/// Lane `g` of `v` in all 16 lanes (one `vpermps`).
#[inline(always)]
unsafe fn lane16(v: __m512, g: usize) -> __m512 {
    unsafe { _mm512_permutexvar_ps(_mm512_set1_epi32(g as i32), v) }
}

/// Q4_K/Q5_K streaming constants: `d·sc_g` into `out[..8]`, `−dmin·m_g` into
/// `out[stride..stride + 8]`, per block.
#[inline(always)]
unsafe fn k45_pre(p: *const u8, bb: usize, nb: usize, out: *mut f32, stride: usize) {
    unsafe {
        for b in 0..nb {
            let (a, m) = k45_params(p.add(b * bb));
            _mm256_storeu_ps(out.add(8 * b), a);
            _mm256_storeu_ps(out.add(stride + 8 * b), m);
        }
    }
}

/// Q4_K (and, with `FIVE`, Q5_K): group g (weights 32g..32g+32) is `(d·sc_g)·q − dmin·m_g`, q
/// the low (even g) or high (odd g) nibbles of the 32 bytes at `QS + 32·(g/2)`, Q5_K's fifth
/// bit being bit g of byte `16 + i` for weight i. With `split` (the streaming kernel's
/// constants, `d·sc_g` at `split[g]`): the weights less `−dmin·m_g`.
#[inline(always)]
unsafe fn k45_w16<const FIVE: bool>(
    p: *const u8,
    split: Option<*const f32>,
    mut f: impl FnMut(usize, __m512),
) {
    unsafe {
        let (a, b) = k45_params(p);
        let (a, b16) = (_mm512_castps256_ps512(a), _mm512_castps256_ps512(b));
        let qs = p.add(if FIVE { 48 } else { 16 });
        let iota_hi = _mm512_add_ps(iota16(), _mm512_set1_ps(16.0));
        let m4 = _mm512_set1_epi32(0x0F);
        let mut h = [
            _mm512_slli_epi32::<4>(u8x16(p.add(16))),
            _mm512_slli_epi32::<4>(u8x16(p.add(32))),
        ];
        for c in 0..4 {
            let q = [u8x16(qs.add(32 * c)), u8x16(qs.add(32 * c + 16))];
            for (k, g) in [2 * c, 2 * c + 1].into_iter().enumerate() {
                let (lo, hi) = if let Some(pre) = split {
                    let ag = _mm512_set1_ps(*pre.add(g));
                    (_mm512_mul_ps(iota16(), ag), _mm512_mul_ps(iota_hi, ag))
                } else {
                    let (ag, bg) = (lane16(a, g), lane16(b16, g));
                    (
                        _mm512_fmadd_ps(iota16(), ag, bg),
                        _mm512_fmadd_ps(iota_hi, ag, bg),
                    )
                };
                for j in 0..2 {
                    let nib = if k == 0 {
                        q[j]
                    } else {
                        _mm512_srli_epi32::<4>(q[j])
                    };
                    let v = if FIVE {
                        // Bits 0..3 from the nibble, bit 4 (the fifth bit) from h; vpermt2ps
                        // reads only bits 0..4.
                        let idx = _mm512_ternarylogic_epi32::<0xE4>(nib, h[j], m4);
                        h[j] = _mm512_srli_epi32::<1>(h[j]);
                        _mm512_permutex2var_ps(lo, idx, hi)
                    } else {
                        pick16(nib, lo)
                    };
                    f(2 * g + j, v);
                }
            }
        }
    }
}

/// The AVX2 widening of Q4_K/Q5_K (see [`k45_w16`]).
#[inline(always)]
unsafe fn k45_w8<const FIVE: bool>(p: *const u8, mut f: impl FnMut(usize, __m256)) {
    unsafe {
        let (a, b) = k45_params(p);
        let qs = p.add(if FIVE { 48 } else { 16 });
        let m4 = _mm256_set1_epi32(0x0F);
        let m16 = _mm256_set1_epi32(0x10);
        // The fifth bits, shifted so that group g's is at bit 4 after g shifts right by one.
        let mut h = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            h[j] = _mm256_slli_epi32::<4>(u8x8(p.add(16 + 8 * j)));
        }
        for c in 0..4 {
            let (g0, g1) = (2 * c, 2 * c + 1);
            let (a0, b0) = (lane8(a, g0), lane8(b, g0));
            let (a1, b1) = (lane8(a, g1), lane8(b, g1));
            for j in 0..4 {
                let q = u8x8(qs.add(32 * c + 8 * j));
                let mut q0 = _mm256_and_si256(q, m4);
                let mut q1 = _mm256_srli_epi32::<4>(q);
                if FIVE {
                    q0 = _mm256_or_si256(q0, _mm256_and_si256(h[j], m16));
                    h[j] = _mm256_srli_epi32::<1>(h[j]);
                    q1 = _mm256_or_si256(q1, _mm256_and_si256(h[j], m16));
                    h[j] = _mm256_srli_epi32::<1>(h[j]);
                }
                f(4 * g0 + j, affine8(q0, a0, b0));
                f(4 * g1 + j, affine8(q1, a1, b1));
            }
        }
    }
}

impl XFmt for Q4KX {
    const BLOCK: usize = 256;
    const BYTES: usize = 144;
    #[inline(always)]
    unsafe fn w8(p: *const u8, f: impl FnMut(usize, __m256)) {
        unsafe { k45_w8::<false>(p, f) }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, f: impl FnMut(usize, __m512)) {
        unsafe { k45_w16::<false>(p, None, f) }
    }
    const PRE: usize = 2;
    const PER: usize = 8;
    #[inline(always)]
    unsafe fn pre(p: *const u8, nb: usize, out: *mut f32, stride: usize) {
        unsafe { k45_pre(p, 144, nb, out, stride) }
    }
    const OFFSETS: Offsets = Offsets::Per32;
    #[inline(always)]
    unsafe fn w16_split(p: *const u8, pre: *const f32, f: impl FnMut(usize, __m512)) {
        unsafe { k45_w16::<false>(p, Some(pre), f) }
    }
}

impl XFmt for Q5KX {
    const BLOCK: usize = 256;
    const BYTES: usize = 176;
    #[inline(always)]
    unsafe fn w8(p: *const u8, f: impl FnMut(usize, __m256)) {
        unsafe { k45_w8::<true>(p, f) }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, f: impl FnMut(usize, __m512)) {
        unsafe { k45_w16::<true>(p, None, f) }
    }
    const PRE: usize = 2;
    const PER: usize = 8;
    #[inline(always)]
    unsafe fn pre(p: *const u8, nb: usize, out: *mut f32, stride: usize) {
        unsafe { k45_pre(p, 176, nb, out, stride) }
    }
    const OFFSETS: Offsets = Offsets::Per32;
    #[inline(always)]
    unsafe fn w16_split(p: *const u8, pre: *const f32, f: impl FnMut(usize, __m512)) {
        unsafe { k45_w16::<true>(p, Some(pre), f) }
    }
}

/// Q6_K sub-block scales `ds_s = d·sc_s` for sub-blocks `8j..8j + 8` of 16 weights.
#[inline(always)]
unsafe fn q6k_scales8(p: *const u8, j: usize) -> __m256 {
    unsafe {
        let d = _mm256_set1_ps(f16_to_f32(rd_u16(p.add(208))));
        let sc = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
            p.add(192 + 8 * j) as *const __m128i
        )));
        _mm256_mul_ps(sc, d)
    }
}

/// All 16 Q6_K sub-block scales.
#[inline(always)]
unsafe fn q6k_scales16(p: *const u8) -> __m512 {
    unsafe {
        let d = _mm512_set1_ps(f16_to_f32(rd_u16(p.add(208))));
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
            p.add(192) as *const __m128i
        )));
        _mm512_mul_ps(sc, d)
    }
}

/// Q6_K: sub-block s of 16 weights is `ds_s·(q − 32)`, `q − 32` taken in integers. Weight
/// `128h + 32k + i` has its low four bits in byte `64h + 32·(k & 1) + i` (low nibble for k < 2)
/// and its top two at bits `2k, 2k+1` of byte `128 + 32h + i`.
impl XFmt for Q6KX {
    const BLOCK: usize = 256;
    const BYTES: usize = 210;
    #[inline(always)]
    unsafe fn w8(p: *const u8, mut f: impl FnMut(usize, __m256)) {
        unsafe {
            let a = [q6k_scales8(p, 0), q6k_scales8(p, 1)];
            let m4 = _mm256_set1_epi32(0x0F);
            let m30 = _mm256_set1_epi32(0x30);
            let k32 = _mm256_set1_epi32(32);
            for h in 0..2 {
                for j in 0..4 {
                    let a0 = u8x8(p.add(64 * h + 8 * j));
                    let a1 = u8x8(p.add(64 * h + 32 + 8 * j));
                    let hq = u8x8(p.add(128 + 32 * h + 8 * j));
                    let q = [
                        _mm256_or_si256(
                            _mm256_and_si256(a0, m4),
                            _mm256_and_si256(_mm256_slli_epi32::<4>(hq), m30),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(a1, m4),
                            _mm256_and_si256(_mm256_slli_epi32::<2>(hq), m30),
                        ),
                        _mm256_or_si256(_mm256_srli_epi32::<4>(a0), _mm256_and_si256(hq, m30)),
                        _mm256_or_si256(
                            _mm256_srli_epi32::<4>(a1),
                            _mm256_and_si256(_mm256_srli_epi32::<2>(hq), m30),
                        ),
                    ];
                    for k in 0..4 {
                        let s = 8 * h + 2 * k + j / 2;
                        let w = _mm256_cvtepi32_ps(_mm256_sub_epi32(q[k], k32));
                        f(16 * h + 4 * k + j, _mm256_mul_ps(w, lane8(a[s / 8], s % 8)));
                    }
                }
            }
        }
    }
    #[inline(always)]
    unsafe fn w16(p: *const u8, f: impl FnMut(usize, __m512)) {
        unsafe { q6k_w16(p, None, f) }
    }
    const PRE: usize = 1;
    const PER: usize = 16;
    #[inline(always)]
    unsafe fn pre(p: *const u8, nb: usize, out: *mut f32, _: usize) {
        unsafe {
            for b in 0..nb {
                _mm512_storeu_ps(out.add(16 * b), q6k_scales16(p.add(210 * b)));
            }
        }
    }
    #[inline(always)]
    unsafe fn w16_split(p: *const u8, pre: *const f32, f: impl FnMut(usize, __m512)) {
        unsafe { q6k_w16(p, Some(pre), f) }
    }
}

/// Q6_K's 512-bit widening; with `split`, the sub-block scales are read from `split[s]`.
#[inline(always)]
unsafe fn q6k_w16(p: *const u8, split: Option<*const f32>, mut f: impl FnMut(usize, __m512)) {
    unsafe {
        let a = q6k_scales16(p);
        let m4 = _mm512_set1_epi32(0x0F);
        let m30 = _mm512_set1_epi32(0x30);
        // The bits of 2²³ as an f32: OR'ed with q < 2²³ they read as 2²³ + q, so
        // `(that − (2²³ + 32))·ds` is `ds·(q − 32)` without an integer conversion (exact: the
        // difference is a small integer).
        let magic = _mm512_set1_epi32(0x4B00_0000);
        let bias = _mm512_set1_ps(8_388_640.0);
        for h in 0..2 {
            for j in 0..2 {
                let a0 = u8x16(p.add(64 * h + 16 * j));
                let a1 = u8x16(p.add(64 * h + 32 + 16 * j));
                let hq = u8x16(p.add(128 + 32 * h + 16 * j));
                // (shifted & 0x30) | magic, one vpternlogd each.
                let tops = [
                    _mm512_ternarylogic_epi32::<0xEA>(_mm512_slli_epi32::<4>(hq), m30, magic),
                    _mm512_ternarylogic_epi32::<0xEA>(_mm512_slli_epi32::<2>(hq), m30, magic),
                    _mm512_ternarylogic_epi32::<0xEA>(hq, m30, magic),
                    _mm512_ternarylogic_epi32::<0xEA>(_mm512_srli_epi32::<2>(hq), m30, magic),
                ];
                let lows = [
                    a0,
                    a1,
                    _mm512_srli_epi32::<4>(a0),
                    _mm512_srli_epi32::<4>(a1),
                ];
                for k in 0..4 {
                    // Bits 0..3 from the low quant, the rest (top bits, exponent) from tops.
                    let q = _mm512_ternarylogic_epi32::<0xE4>(lows[k], tops[k], m4);
                    let w = _mm512_sub_ps(_mm512_castsi512_ps(q), bias);
                    let s = 8 * h + 2 * k + j;
                    let ds = match split {
                        Some(pre) => _mm512_set1_ps(*pre.add(s)),
                        None => lane16(a, s),
                    };
                    f(s, _mm512_mul_ps(w, ds));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming kernel (few activation rows)

/// Σ a·b over `n` floats, summed down to 8 lanes (AVX-512; the last partial vector masked).
#[inline(always)]
unsafe fn dot8(a: *const f32, b: *const f32, n: usize) -> __m256 {
    unsafe {
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), acc);
            i += 16;
        }
        if i < n {
            let m = ((1u32 << (n - i)) - 1) as u16;
            let (va, vb) = (
                _mm512_maskz_loadu_ps(m, a.add(i)),
                _mm512_maskz_loadu_ps(m, b.add(i)),
            );
            acc = _mm512_fmadd_ps(va, vb, acc);
        }
        hi_plus_lo(acc)
    }
}

/// The sums of the lanes of each of `R` vectors.
#[inline(always)]
unsafe fn hsums<const R: usize>(v: [__m256; R]) -> [f32; R] {
    unsafe {
        if R == 4 {
            // Transposed: three `vhaddps` and one add for all four.
            let a = _mm256_hadd_ps(v[0], v[1]);
            let b = _mm256_hadd_ps(v[2], v[3]);
            let c = _mm256_hadd_ps(a, b);
            let s = _mm_add_ps(_mm256_castps256_ps128(c), _mm256_extractf128_ps::<1>(c));
            let mut out = [0f32; R];
            _mm_storeu_ps(out.as_mut_ptr(), s);
            out
        } else {
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = super::x86::hsum(v[r]);
            }
            out
        }
    }
}

/// Runs `$body` for `$r` = 0, 1, …, `$n − 1` (`$n` ≤ 4, a constant), written out: a block's
/// widening is too long for the compiler to unroll a loop over rows, and a rolled loop would
/// keep the accumulators in memory.
macro_rules! unroll4 {
    ($n:expr, $r:ident, $body:block) => {{
        const { assert!($n <= 4) };
        if $n > 0 {
            let $r = 0;
            $body
        }
        if $n > 1 {
            let $r = 1;
            $body
        }
        if $n > 2 {
            let $r = 2;
            $body
        }
        if $n > 3 {
            let $r = 3;
            $body
        }
    }};
}

/// `R` weight rows × `C ≤ 4` activation rows over the whole row; with split widening, `pre`
/// holds the rows' block constants (constant j of row r's block b at `j·stride + r·nb + b`).
#[inline(always)]
unsafe fn stream_micro<F: XFmt, V: Vf, const R: usize, const C: usize>(
    t: &XTile<'_>,
    r0: usize,
    c0: usize,
    pre: *const f32,
    stride: usize,
) {
    unsafe {
        let (cols, rb) = (t.cols, t.row_bytes);
        let nb = cols / F::BLOCK;
        let split = V::SPLIT && F::PRE > 0;
        let w = t.w.as_ptr().add(r0 * rb);
        let x: [*const f32; C] = std::array::from_fn(|c| t.x.as_ptr().add((c0 + c) * cols));
        // The activations' sums of 32, for offsets left out of the weights.
        let xs: [*const f32; C] = std::array::from_fn(|c| {
            if split && F::OFFSETS != Offsets::None {
                t.xs.as_ptr().add((c0 + c) * (cols / 32))
            } else {
                std::ptr::null()
            }
        });
        let mut acc = [[V::zero(); C]; R];
        // One activation row: a second bank of accumulators for odd vectors, so that R FMA
        // chains of 4-cycle latency do not limit the loop.
        let mut acc2 = [V::zero(); R];
        let pf = Prefetch::new(w, R, rb, nb);
        for b in 0..nb {
            pf.at(b);
            let k0 = b * F::BLOCK;
            unroll4!(R, r, {
                // SCALED: the block's products are summed apart, then scaled once.
                let mut bacc = [V::zero(); C];
                let mut bacc2 = V::zero();
                let scaled = split && F::SCALED;
                let (accr, acc2r) = if scaled {
                    (&mut bacc, &mut bacc2)
                } else {
                    (&mut acc[r], &mut acc2[r])
                };
                let f = |i: usize, wv: V| {
                    let k = k0 + i * V::L;
                    if C == 1 && i % 2 == 1 {
                        *acc2r = V::fma(wv, V::load(x[0].add(k)), *acc2r);
                    } else {
                        for c in 0..C {
                            accr[c] = V::fma(wv, V::load(x[c].add(k)), accr[c]);
                        }
                    }
                };
                let p = w.add(r * rb + b * F::BYTES);
                if split {
                    let pb = pre.add((r * nb + b) * F::PER);
                    V::widen_split::<F>(p, pb, f);
                    if scaled {
                        let d = V::splat(pb);
                        for c in 0..C {
                            acc[r][c] = V::fma(bacc[c], d, acc[r][c]);
                        }
                        if C == 1 {
                            acc2[r] = V::fma(bacc2, d, acc2[r]);
                        }
                    }
                } else {
                    V::widen::<F>(p, f);
                }
            });
        }
        if C == 1 {
            for r in 0..R {
                acc[r][0] = V::add(acc[r][0], acc2[r]);
            }
        }
        for c in 0..C {
            let mut v = [_mm256_setzero_ps(); R];
            for r in 0..R {
                v[r] = V::fold(acc[r][c]);
                if split && F::OFFSETS == Offsets::Per32 {
                    let n32 = nb * F::PER;
                    let m = dot8(pre.add(stride + r * n32), xs[c], n32);
                    v[r] = _mm256_add_ps(v[r], m);
                }
            }
            let ys = hsums(v);
            for r in 0..R {
                let mut y = ys[r];
                if F::ELEM > 0 {
                    for j in nb * F::BLOCK..cols {
                        y += F::elem(w.add(r * rb + j * F::ELEM)) * *x[c].add(j);
                    }
                }
                t.store(r0 + r, c0 + c, y);
            }
        }
    }
}

#[inline(always)]
unsafe fn stream_tile<F: XFmt, V: Vf, const CMAX: usize>(t: &XTile<'_>) {
    unsafe {
        let nb = t.cols / F::BLOCK;
        let uses_pre = V::SPLIT && F::PRE > 0;
        // PRE arrays of `stride` for 4 rows (room for `pre` to write past the end).
        let stride = 4 * nb * F::PER + 8;
        let mut pre = vec![0f32; if uses_pre { F::PRE * stride } else { 0 }];
        let pre = pre.as_mut_ptr();
        let mut r = 0;
        while r < t.rows {
            // Four rows at a time (two and eight measured no faster on Zen 4), then single rows.
            let rr = if t.rows - r >= 4 { 4 } else { 1 };
            if uses_pre {
                // The rows are contiguous: one pass over all their blocks.
                F::pre(t.w.as_ptr().add(r * t.row_bytes), rr * nb, pre, stride);
            }
            let mut c = t.acts.start;
            while c < t.acts.end {
                let cc = (t.acts.end - c).min(CMAX);
                macro_rules! go {
                    ($r:literal) => {
                        match cc {
                            1 => stream_micro::<F, V, $r, 1>(t, r, c, pre, stride),
                            2 => stream_micro::<F, V, $r, 2>(t, r, c, pre, stride),
                            3 => stream_micro::<F, V, $r, 3>(t, r, c, pre, stride),
                            _ => stream_micro::<F, V, $r, 4>(t, r, c, pre, stride),
                        }
                    };
                }
                if rr == 4 {
                    go!(4)
                } else {
                    go!(1)
                }
                c += cc;
            }
            r += rr;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Panel kernel (many activation rows)

/// Columns per panel step (a multiple of every block size).
const KC: usize = 256;

/// Cache lines to prefetch while a micro-kernel runs: `rows` rows of `lines` lines each,
/// `stride` bytes apart from `base` (the next row group's part of the panel step).
#[derive(Clone, Copy)]
struct Ahead {
    base: *const u8,
    stride: usize,
    lines: usize,
    rows: usize,
}

impl Ahead {
    const NONE: Ahead = Ahead {
        base: std::ptr::null(),
        stride: 0,
        lines: 0,
        rows: 0,
    };
}

/// Column `k` of the micro-kernel: `acc[r][g] += w[r][k] · x[g][k]`.
#[inline(always)]
unsafe fn micro_step<V: Vf, const NR: usize, const CV: usize>(
    w: *const f32,
    ps: usize,
    x: *const f32,
    xs: usize,
    k: usize,
    acc: &mut [[V; CV]; NR],
) {
    unsafe {
        let mut xv = [V::zero(); CV];
        for g in 0..CV {
            xv[g] = V::load(x.add(g * xs + k * V::L));
        }
        for r in 0..NR {
            let wv = V::splat(w.add(r * ps + k));
            for g in 0..CV {
                acc[r][g] = V::fma(wv, xv[g], acc[r][g]);
            }
        }
    }
}

/// `NR` panel rows × `CV` packed activation groups over `klen` columns, added into `y`
/// (`[CV][NR][L]`). `w`: panel rows `ps` floats apart; `x`: groups `xs` floats apart. One line
/// of `ahead` is prefetched per column step, spread over the loop (a burst of prefetches
/// before it stalls on the fill buffers while the lines come from L3 or memory).
#[inline(always)]
unsafe fn gemm_micro<V: Vf, const NR: usize, const CV: usize>(
    w: *const f32,
    ps: usize,
    x: *const f32,
    xs: usize,
    klen: usize,
    y: *mut f32,
    ahead: Ahead,
) {
    unsafe {
        let mut acc = [[V::zero(); CV]; NR];
        let pf = (ahead.rows * ahead.lines).min(klen);
        let (mut row, mut line) = (ahead.base, 0);
        for k in 0..pf {
            _mm_prefetch::<_MM_HINT_T0>(row.add(line * 64) as *const i8);
            line += 1;
            if line == ahead.lines {
                line = 0;
                row = row.add(ahead.stride);
            }
            micro_step::<V, NR, CV>(w, ps, x, xs, k, &mut acc);
        }
        for k in pf..klen {
            micro_step::<V, NR, CV>(w, ps, x, xs, k, &mut acc);
        }
        for g in 0..CV {
            for r in 0..NR {
                let p = y.add((g * NR + r) * V::L);
                V::store(p, V::add(V::load(p), acc[r][g]));
            }
        }
    }
}

#[inline(always)]
unsafe fn gemm_tile<F: XFmt, V: Vf, const NR: usize, const CV: usize>(t: &XTile<'_>) {
    unsafe {
        let (cols, rb, l) = (t.cols, t.row_bytes, V::L);
        let nb = cols / F::BLOCK;
        let tail = cols - nb * F::BLOCK;
        let kcb = (KC / F::BLOCK).max(1);
        // Panel rows: a step's columns plus an element format's tail, padded off a multiple of
        // the page size (rows read side by side would share cache sets).
        let ps = kcb * F::BLOCK + 32 + 16;
        let groups = t.acts.len().div_ceil(l);
        let g0 = t.acts.start / l;
        let row_groups = t.rows.div_ceil(NR);
        let mut panel = vec![0f32; NR * ps];
        // Partial sums: [row group][act group][NR][L].
        let mut ybuf = vec![0f32; row_groups * groups * NR * l];
        let (panel, ybuf) = (panel.as_mut_ptr(), ybuf.as_mut_ptr());
        let xs = cols * l;
        let mut b0 = 0;
        loop {
            let b1 = (b0 + kcb).min(nb);
            let last = b1 == nb;
            let klen = (b1 - b0) * F::BLOCK + if last { tail } else { 0 };
            let k0 = b0 * F::BLOCK;
            for q in 0..row_groups {
                let r0 = q * NR;
                let nr = NR.min(t.rows - r0);
                // The next row group's part of this step, fetched while this one computes
                // (rows are far apart: the hardware prefetchers do not follow).
                let mut ahead = if r0 + NR < t.rows {
                    let step = (b1 - b0) * F::BYTES + if last { tail * F::ELEM } else { 0 };
                    Ahead {
                        base: t.w.as_ptr().add((r0 + NR) * rb + b0 * F::BYTES),
                        stride: rb,
                        lines: step.div_ceil(64),
                        rows: NR.min(t.rows - r0 - NR),
                    }
                } else {
                    Ahead::NONE
                };
                for r in 0..nr {
                    let wr = t.w.as_ptr().add((r0 + r) * rb);
                    let pr = panel.add(r * ps);
                    for b in b0..b1 {
                        let pb = pr.add((b - b0) * F::BLOCK);
                        V::widen::<F>(wr.add(b * F::BYTES), |i, v| V::store(pb.add(i * l), v));
                    }
                    if last {
                        for j in 0..tail {
                            *pr.add((b1 - b0) * F::BLOCK + j) =
                                F::elem(wr.add((nb * F::BLOCK + j) * F::ELEM));
                        }
                    }
                }
                for r in nr..NR {
                    std::ptr::write_bytes(panel.add(r * ps), 0, klen);
                }
                let yq = ybuf.add(q * groups * NR * l);
                let mut g = 0;
                while g < groups {
                    let cv = CV.min(groups - g);
                    let xg = t.xp.as_ptr().add(((g0 + g) * cols + k0) * l);
                    let yg = yq.add(g * NR * l);
                    match cv {
                        1 => gemm_micro::<V, NR, 1>(panel, ps, xg, xs, klen, yg, ahead),
                        2 => gemm_micro::<V, NR, 2>(panel, ps, xg, xs, klen, yg, ahead),
                        _ => gemm_micro::<V, NR, CV>(panel, ps, xg, xs, klen, yg, ahead),
                    }
                    // Prefetched by the first call (enough columns for every line in practice;
                    // a short last step prefetches what it has time for).
                    ahead = Ahead::NONE;
                    g += cv;
                }
            }
            if last {
                break;
            }
            b0 = b1;
        }
        for c in t.acts.clone() {
            let (g, lane) = ((c - t.acts.start) / l, (c - t.acts.start) % l);
            for r in 0..t.rows {
                let (q, rr) = (r / NR, r % NR);
                t.store(r, c, *ybuf.add(((q * groups + g) * NR + rr) * l + lane));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel sets

/// One module per feature set: the generic bodies above compiled with the features enabled.
macro_rules! exact_set {
    ($m:ident, $features:literal, $v:ty, $cmax:literal, $nr:literal, $cv:literal) => {
        mod $m {
            use super::*;

            pub(super) const NR: usize = $nr;
            pub(super) const LANES: usize = <$v as Vf>::L;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn stream<F: XFmt>(t: &XTile<'_>) {
                unsafe { stream_tile::<F, $v, $cmax>(t) }
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn gemm<F: XFmt>(t: &XTile<'_>) {
                unsafe { gemm_tile::<F, $v, $nr, $cv>(t) }
            }
        }
    };
}

exact_set!(avx2, "avx2,fma,f16c", __m256, 4, 6, 2);
exact_set!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    __m512,
    4,
    8,
    3
);

/// Activation rows from which the panel kernel is used (below, the streaming kernel, which
/// reads the weights once per 4 activation rows): measured on Zen 4 (4096×4096, one thread),
/// the AVX-512 streaming kernel runs at 86–89 GFLOP/s for 4–12 rows and ties with the panel
/// kernel at 16; with AVX2 the panel kernel wins from 8.
fn gemm_from(default: usize) -> usize {
    static FROM: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    FROM.get_or_init(|| {
        std::env::var("ZOO_QUANT_GEMM_FROM")
            .ok()
            .and_then(|s| s.parse().ok())
    })
    .unwrap_or(default)
}

fn make<F: XFmt>(set: KernelSet) -> ExactKernels {
    match set {
        KernelSet::Avx512 => ExactKernels {
            stream: avx512::stream::<F>,
            sums: F::OFFSETS == Offsets::Per32,
            gemm: Some(Gemm {
                kernel: avx512::gemm::<F>,
                lanes: avx512::LANES,
                rows: avx512::NR,
                from: gemm_from(16),
            }),
        },
        _ => ExactKernels {
            stream: avx2::stream::<F>,
            sums: false,
            gemm: Some(Gemm {
                kernel: avx2::gemm::<F>,
                lanes: avx2::LANES,
                rows: avx2::NR,
                from: gemm_from(8),
            }),
        },
    }
}

/// The exact kernels of `set` (AVX2 or AVX-512, available) for `qtype`.
pub(crate) fn kernels(set: KernelSet, qtype: QType) -> ExactKernels {
    match qtype {
        QType::F32 => make::<F32X>(set),
        QType::F16 => make::<F16X>(set),
        QType::BF16 => make::<BF16X>(set),
        QType::Q8_0 => make::<Q8_0X>(set),
        QType::Q4_0 => make::<Q4_0X>(set),
        QType::Q4_1 => make::<Q4_1X>(set),
        QType::Q4_K => make::<Q4KX>(set),
        QType::Q5_K => make::<Q5KX>(set),
        QType::Q6_K => make::<Q6KX>(set),
    }
}
