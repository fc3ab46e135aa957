//! x86-64 kernels: AVX2 + FMA + F16C on 256-bit vectors, the same code compiled for AVX-512
//! (32 vector registers, so bigger tiles) with VNNI's `vpdpbusd` where the CPU has it, and
//! 512-bit Q8_0/Q4_0/Q4_1 kernels (two blocks per instruction) for CPUs whose AVX-512 units are
//! full width.
//!
//! Tiles run in micro-tiles of up to 4 weight rows × `C` activation rows: each weight block is
//! loaded and unpacked once per micro-tile and multiplied with every activation row in it, and
//! each activation block is loaded once for all the rows. Per row group the block scales are
//! gathered into a small buffer and multiplied with the activation scales eight at a time, so the
//! inner loop per block and pair is: integer dot product, convert, one FMA.
//!
//! Integer products (exact in i32, as ggml): 4-bit weights `q ∈ 0..=15` times the signed
//! activation quants is `u8 × i8` (`vpmaddubsw` + `vpmaddwd`, or `vpdpbusd`). Offsets are taken
//! out per row instead of per block: Q4_0's `(q − 8)·a` is `q·a − 8·Σa`, and VNNI's Q8_0 uses
//! `w + 128` (so `u8`) and subtracts `128·Σa`; `Σ_blocks d_w·(d_a·Σa)` is one dot product per
//! row with the activation's per-block `d·Σq`. AVX2's Q8_0 uses the `sign` trick instead.
//! K-quants multiply by their 6/8-bit sub-block scales in `vpmaddwd`, and take minima and Q6_K's
//! −32 from the activation's sums of 16.

// Tiles are indexed [row][act] on purpose: the loops are over const-generic tile sizes and unroll.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::{KernelSet, Tile, TileFn};
use crate::act::Act;
use crate::QType;

pub(crate) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub(crate) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

pub(crate) fn has_vnni() -> bool {
    has_avx512() && is_x86_feature_detected!("avx512vnni")
}

/// Whether to run the 512-bit Q8_0/Q4_0/Q4_1 kernels (`ZOO_QUANT_WIDE=1|0` decides; by default
/// yes, except on AMD Zen 4 (family 19h), which executes 512-bit instructions as two 256-bit
/// halves: there the 256-bit kernels measured 10–20 % faster).
pub(crate) fn prefer_wide() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| match std::env::var("ZOO_QUANT_WIDE").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => !is_amd_family_19h(),
    })
}

fn is_amd_family_19h() -> bool {
    let (vendor, sig) = (__cpuid(0), __cpuid(1));
    let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    let family = ((sig.eax >> 8) & 0xF) + ((sig.eax >> 20) & 0xFF);
    amd && family == 0x19
}

/// The 512-bit variant of a Q8_0/Q4_0/Q4_1 kernel, if the CPU has AVX-512 VNNI.
pub(crate) fn wide_kernel(qtype: QType) -> Option<TileFn> {
    if !has_vnni() {
        return None;
    }
    match qtype {
        QType::Q8_0 => Some(avx512vnni_wide::q8_0),
        QType::Q4_0 => Some(avx512vnni_wide::q4_0),
        QType::Q4_1 => Some(avx512vnni_wide::q4_1),
        _ => None,
    }
}

pub(crate) fn kernel(set: KernelSet, qtype: QType) -> TileFn {
    if set == KernelSet::Avx512 && prefer_wide() {
        if let Some(k) = wide_kernel(qtype) {
            return k;
        }
    }
    macro_rules! pick {
        ($m:ident) => {
            match qtype {
                QType::F32 => $m::f32_,
                QType::F16 => $m::f16_,
                QType::BF16 => $m::bf16_,
                QType::Q8_0 => $m::q8_0,
                QType::Q4_0 => $m::q4_0,
                QType::Q4_1 => $m::q4_1,
                QType::Q4_K => $m::q4_k,
                QType::Q5_K => $m::q5_k,
                QType::Q6_K => $m::q6_k,
            }
        };
    }
    match set {
        KernelSet::Avx512 if has_vnni() => pick!(avx512vnni),
        KernelSet::Avx512 => pick!(avx512),
        _ => pick!(avx2),
    }
}

/// One module of kernels per feature set: the generic bodies below, compiled with the features
/// enabled (they are `#[inline(always)]`, so the intrinsics inline into these functions).
macro_rules! kernel_set {
    ($m:ident, $features:literal, $vnni:literal, $wide:literal, $cmax:literal) => {
        // The wide set only differs (and is only used) for Q8_0, Q4_0 and Q4_1.
        #[allow(dead_code)]
        mod $m {
            use super::*;

            #[target_feature(enable = $features)]
            pub(super) unsafe fn f32_(t: &Tile<'_>) {
                unsafe { float_tile::<F32W, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn f16_(t: &Tile<'_>) {
                unsafe { float_tile::<F16W, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn bf16_(t: &Tile<'_>) {
                unsafe { float_tile::<BF16W, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q8_0(t: &Tile<'_>) {
                unsafe { b32_tile::<Q8_0W, $vnni, $wide, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q4_0(t: &Tile<'_>) {
                unsafe { b32_tile::<Q4_0W, $vnni, $wide, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q4_1(t: &Tile<'_>) {
                unsafe { b32_tile::<Q4_1W, $vnni, $wide, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q4_k(t: &Tile<'_>) {
                unsafe { k_tile::<Q4KW, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q5_k(t: &Tile<'_>) {
                unsafe { k_tile::<Q5KW, $cmax>(t) }
            }
            #[target_feature(enable = $features)]
            pub(super) unsafe fn q6_k(t: &Tile<'_>) {
                unsafe { k_tile::<Q6KW, $cmax>(t) }
            }
        }
    };
}

kernel_set!(avx2, "avx2,fma,f16c", false, false, 3);
kernel_set!(
    avx512,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl",
    false,
    false,
    4
);
kernel_set!(
    avx512vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    true,
    false,
    4
);
kernel_set!(
    avx512vnni_wide,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    true,
    true,
    4
);

// ---------------------------------------------------------------------------------------------
// Helpers

#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[inline(always)]
pub(super) unsafe fn rd_u16(p: *const u8) -> u16 {
    unsafe { (p as *const u16).read_unaligned() }
}

#[inline(always)]
pub(super) unsafe fn f16_to_f32(bits: u16) -> f32 {
    unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))) }
}

/// Reads the f16 at byte `off` of each of `nb` blocks of `bb` bytes from `p`, as f32, into `out`.
#[inline(always)]
pub(super) unsafe fn f16_column(p: *const u8, bb: usize, off: usize, nb: usize, out: *mut f32) {
    unsafe {
        let mut b = 0;
        while b + 8 <= nb {
            let q = |k: usize| rd_u16(p.add((b + k) * bb + off)) as u64;
            let lo = q(0) | q(1) << 16 | q(2) << 32 | q(3) << 48;
            let hi = q(4) | q(5) << 16 | q(6) << 32 | q(7) << 48;
            let v = _mm256_cvtph_ps(_mm_set_epi64x(hi as i64, lo as i64));
            _mm256_storeu_ps(out.add(b), v);
            b += 8;
        }
        while b < nb {
            *out.add(b) = f16_to_f32(rd_u16(p.add(b * bb + off)));
            b += 1;
        }
    }
}

/// Reads the f16s at bytes 0 and 2 of each of `nb` blocks of `bb` bytes from `p` as f32 into
/// `d` and `m`: eight blocks per `vpgatherdd`.
#[inline(always)]
pub(super) unsafe fn f16_pairs(p: *const u8, bb: usize, nb: usize, d: *mut f32, m: *mut f32) {
    unsafe {
        let idx = _mm256_mullo_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(bb as i32),
        );
        // Bytes 0,1 of each dword to the low half of each 128-bit lane, bytes 2,3 to the high half.
        let split = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3,
            6, 7, 10, 11, 14, 15,
        );
        let mut b = 0;
        while b + 8 <= nb {
            let g = _mm256_i32gather_epi32::<1>(p.add(b * bb) as *const i32, idx);
            // [d0..d3 | m0..m3 | d4..d7 | m4..m7] as u16, then d0..d7 and m0..m7.
            let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_shuffle_epi8(g, split));
            _mm256_storeu_ps(d.add(b), _mm256_cvtph_ps(_mm256_castsi256_si128(v)));
            _mm256_storeu_ps(m.add(b), _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(v)));
            b += 8;
        }
        while b < nb {
            *d.add(b) = f16_to_f32(rd_u16(p.add(b * bb)));
            *m.add(b) = f16_to_f32(rd_u16(p.add(b * bb + 2)));
            b += 1;
        }
    }
}

/// Software prefetch of the rows after a micro-tile while it computes.
///
/// A micro-tile reads `R` rows side by side, which the hardware prefetchers follow poorly when
/// the weights stream from DRAM; the rows that come next are contiguous, so each of the tile's
/// loop iterations prefetches its share of the next `R` rows into L2, at least
/// [`PREFETCH_AHEAD`] bytes ahead (for short rows one row group is too close to hide DRAM
/// latency).
#[derive(Clone, Copy)]
pub(super) struct Prefetch {
    next: *const u8,
    step: usize,
}

/// The least distance in bytes between the rows being read and those being prefetched
/// (measured on Zen 4: 1.4 KB ahead lost 30 % on SmolLM2 shapes, 4–9 KB was best).
const PREFETCH_AHEAD: usize = 4096;

impl Prefetch {
    /// For a micro-tile of `rows` rows of `rb` bytes at `w`, over `iters` iterations.
    #[inline(always)]
    pub(super) fn new(w: *const u8, rows: usize, rb: usize, iters: usize) -> Prefetch {
        let group = rows * rb;
        Prefetch {
            next: w.wrapping_add(group.max(PREFETCH_AHEAD)),
            step: group.div_ceil(iters.max(1)).next_multiple_of(64),
        }
    }

    /// Prefetches iteration `i`'s share. Prefetches never fault, so the addresses may run past
    /// the end of the matrix.
    #[inline(always)]
    pub(super) unsafe fn at(self, i: usize) {
        let p = self.next.wrapping_add(i * self.step);
        let mut o = 0;
        while o < self.step {
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o) as *const i8);
            o += 64;
        }
    }
}

/// Σ a[i]·b[i] over `n` floats.
#[inline(always)]
unsafe fn dot_f32s(a: *const f32, b: *const f32, n: usize) -> f32 {
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc);
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            s += *a.add(i) * *b.add(i);
            i += 1;
        }
        s
    }
}

/// `u8 × i8` products summed in fours (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`; the pair sums
/// must fit i16, which holds for `u ≤ 127` with any `s`).
#[inline(always)]
unsafe fn dot_u8i8_z<const VNNI: bool>(u: __m256i, s: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
        }
    }
}

/// Unpacks 16 bytes of nibbles into 32 bytes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    unsafe {
        let raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        let shifted = _mm256_srlv_epi64(raw, _mm256_set_epi64x(4, 4, 0, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
    }
}

// ---------------------------------------------------------------------------------------------
// 32-weight block formats: Q8_0, Q4_0, Q4_1

/// A 32-weight block format, as the micro-kernel sees it.
trait Block32 {
    /// Bytes per block.
    const BYTES: usize;
    /// Whether the block has a minimum `m` (f16 at byte 2) entering as `m·s`.
    const HAS_MIN: bool;
    /// The offset `k` of the unsigned weights the dot product sees (`q + k` for a weight `q`),
    /// removed as `−k·d_w·(d_a·Σqa)` per block.
    fn offset<const VNNI: bool>() -> f32;
    /// The weight block prepared for products with activation blocks.
    unsafe fn prep<const VNNI: bool>(p: *const u8) -> (__m256i, __m256i);
    /// The block's integer dot product with activation quants `a`.
    unsafe fn dot<const VNNI: bool>(w: (__m256i, __m256i), a: __m256i) -> __m256i;
    /// Two consecutive blocks as one 512-bit vector of unsigned quants (VNNI only).
    unsafe fn prep512(p: *const u8) -> __m512i;
}

struct Q8_0W;
struct Q4_0W;
struct Q4_1W;

#[inline(always)]
unsafe fn nibbles2(p0: *const u8, p1: *const u8) -> __m512i {
    unsafe {
        let v0 = _mm256_broadcastsi128_si256(_mm_loadu_si128(p0 as *const __m128i));
        let v1 = _mm256_broadcastsi128_si256(_mm_loadu_si128(p1 as *const __m128i));
        let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v0), v1);
        let sh = _mm512_srlv_epi64(v, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
        _mm512_and_si512(sh, _mm512_set1_epi8(0x0F))
    }
}

impl Block32 for Q8_0W {
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn prep<const VNNI: bool>(p: *const u8) -> (__m256i, __m256i) {
        unsafe {
            let w = _mm256_loadu_si256(p.add(2) as *const __m256i);
            if VNNI {
                (_mm256_xor_si256(w, _mm256_set1_epi8(-128)), w)
            } else {
                (_mm256_sign_epi8(w, w), w)
            }
        }
    }
    #[inline(always)]
    unsafe fn prep512(p: *const u8) -> __m512i {
        unsafe {
            let w0 = _mm256_loadu_si256(p.add(2) as *const __m256i);
            let w1 = _mm256_loadu_si256(p.add(36) as *const __m256i);
            let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(w0), w1);
            _mm512_xor_si512(w, _mm512_set1_epi8(-128))
        }
    }
    #[inline(always)]
    fn offset<const VNNI: bool>() -> f32 {
        if VNNI {
            128.0
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn dot<const VNNI: bool>(w: (__m256i, __m256i), a: __m256i) -> __m256i {
        unsafe {
            if VNNI {
                // (w + 128)·a; the 128·Σa is removed per row
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), w.0, a)
            } else {
                // |w| · (a with w's sign)
                dot_u8i8_z::<false>(w.0, _mm256_sign_epi8(a, w.1))
            }
        }
    }
}

impl Block32 for Q4_0W {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn prep<const VNNI: bool>(p: *const u8) -> (__m256i, __m256i) {
        unsafe {
            let q = nibbles(p.add(2));
            (q, q)
        }
    }
    #[inline(always)]
    unsafe fn prep512(p: *const u8) -> __m512i {
        unsafe { nibbles2(p.add(2), p.add(20)) }
    }
    #[inline(always)]
    fn offset<const VNNI: bool>() -> f32 {
        8.0
    }
    #[inline(always)]
    unsafe fn dot<const VNNI: bool>(w: (__m256i, __m256i), a: __m256i) -> __m256i {
        // q·a; (q − 8)·a = q·a − 8·Σa, and the 8·Σa is removed per row
        unsafe { dot_u8i8_z::<VNNI>(w.0, a) }
    }
}

impl Block32 for Q4_1W {
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn prep<const VNNI: bool>(p: *const u8) -> (__m256i, __m256i) {
        unsafe {
            let q = nibbles(p.add(4));
            (q, q)
        }
    }
    #[inline(always)]
    unsafe fn prep512(p: *const u8) -> __m512i {
        unsafe { nibbles2(p.add(4), p.add(24)) }
    }
    #[inline(always)]
    fn offset<const VNNI: bool>() -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn dot<const VNNI: bool>(w: (__m256i, __m256i), a: __m256i) -> __m256i {
        unsafe { dot_u8i8_z::<VNNI>(w.0, a) }
    }
}

/// Pointers into one activation row's Q8_0/Q8_1 data.
#[derive(Clone, Copy)]
struct ARow {
    qs: *const i8,
    d: *const f32,
    dsum: *const f32,
    s: *const f32,
}

impl ARow {
    #[inline(always)]
    fn new(act: &Act<'_>, c: usize) -> ARow {
        let nb = act.nb();
        let at = |len: usize| if len == 0 { 0 } else { c * nb };
        ARow {
            qs: act.qs[c * act.cols..].as_ptr(),
            d: act.d[c * nb..].as_ptr(),
            dsum: act.dsum[at(act.dsum.len())..].as_ptr(),
            s: act.s[at(act.s.len())..].as_ptr(),
        }
    }
}

/// `R` weight rows × `C` activation rows over all `nb` blocks; `scale` holds the block scale
/// products `d_w·d_a` (`[R][C][nb]`). Returns the dot products without the `m·s` term.
#[inline(always)]
unsafe fn b32_micro<F: Block32, const VNNI: bool, const R: usize, const C: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    scale: *const f32,
    a: &[ARow; C],
) -> [[f32; C]; R] {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        // The next rows, fetched while these compute (so that the next row group's scale pass
        // finds them in cache rather than waiting on DRAM).
        let pf = Prefetch::new(w, R, rb, nb);
        for b in 0..nb {
            pf.at(b);
            let qa: [__m256i; C] =
                std::array::from_fn(|c| _mm256_loadu_si256(a[c].qs.add(32 * b) as *const __m256i));
            for r in 0..R {
                let wq = F::prep::<VNNI>(w.add(r * rb + b * F::BYTES));
                for c in 0..C {
                    let isum = F::dot::<VNNI>(wq, qa[c]);
                    let s = _mm256_broadcast_ss(&*scale.add((r * C + c) * nb + b));
                    acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc[r][c]);
                }
            }
        }
        let mut out = [[0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                out[r][c] = hsum(acc[r][c]);
            }
        }
        out
    }
}

/// [`b32_micro`] on 512-bit vectors, two blocks per `vpdpbusd` (VNNI only).
#[inline(always)]
unsafe fn b32_micro512<F: Block32, const R: usize, const C: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    scale: *const f32,
    a: &[ARow; C],
) -> [[f32; C]; R] {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        let pf = Prefetch::new(w, R, rb, nb / 2);
        let mut b = 0;
        while b + 2 <= nb {
            pf.at(b / 2);
            let qa: [__m512i; C] =
                std::array::from_fn(|c| _mm512_loadu_si512(a[c].qs.add(32 * b) as *const __m512i));
            for r in 0..R {
                let wq = F::prep512(w.add(r * rb + b * F::BYTES));
                for c in 0..C {
                    let isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, qa[c]);
                    let s2 =
                        _mm_castpd_ps(_mm_load_sd(scale.add((r * C + c) * nb + b) as *const f64));
                    let s = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(s2));
                    acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), s, acc[r][c]);
                }
            }
            b += 2;
        }
        let mut out = [[0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                out[r][c] = _mm512_reduce_add_ps(acc[r][c]);
            }
        }
        if b < nb {
            // An odd last block, on 256-bit vectors.
            for r in 0..R {
                let wq = F::prep::<true>(w.add(r * rb + b * F::BYTES));
                for c in 0..C {
                    let qa = _mm256_loadu_si256(a[c].qs.add(32 * b) as *const __m256i);
                    let isum = F::dot::<true>(wq, qa);
                    out[r][c] += hsum(_mm256_mul_ps(
                        _mm256_cvtepi32_ps(isum),
                        _mm256_set1_ps(*scale.add((r * C + c) * nb + b)),
                    ));
                }
            }
        }
        out
    }
}

/// One activation row (decode): [`b32_micro`]'s products in a single pass over the weights.
/// The `R` rows' f16 scales are gathered per block into one vector (integer loads and shifts,
/// one conversion), so there is no separate scale pass: each weight byte is touched once, in
/// order, as the memory system likes best. Returns the full dot products.
#[inline(always)]
unsafe fn b32_gemv<F: Block32, const VNNI: bool, const R: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    a: &ARow,
) -> [f32; R] {
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        // Lanes = rows: Σ d_w·(d_a·Σqa) (offsets) and Σ m·s (minima).
        let mut acc_o = _mm_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        let k = F::offset::<VNNI>();
        let pf = Prefetch::new(w, R, rb, nb);
        for b in 0..nb {
            pf.at(b);
            let p: [*const u8; R] = std::array::from_fn(|r| w.add(r * rb + b * F::BYTES));
            let h = |off: usize| {
                let mut v = 0u64;
                for r in 0..R {
                    v |= (rd_u16(p[r].add(off)) as u64) << (16 * r);
                }
                _mm_cvtph_ps(_mm_cvtsi64_si128(v as i64))
            };
            let d = h(0);
            let s = _mm_mul_ps(d, _mm_broadcast_ss(&*a.d.add(b)));
            let s8 = _mm256_castps128_ps256(s);
            let qa = _mm256_loadu_si256(a.qs.add(32 * b) as *const __m256i);
            for r in 0..R {
                let isum = F::dot::<VNNI>(F::prep::<VNNI>(p[r]), qa);
                let sr = _mm256_permutevar8x32_ps(s8, _mm256_set1_epi32(r as i32));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), sr, acc[r]);
            }
            if k != 0.0 {
                acc_o = _mm_fmadd_ps(d, _mm_broadcast_ss(&*a.dsum.add(b)), acc_o);
            }
            if F::HAS_MIN {
                acc_m = _mm_fmadd_ps(h(2), _mm_broadcast_ss(&*a.s.add(b)), acc_m);
            }
        }
        let mut o = [0f32; 4];
        let mut m = [0f32; 4];
        _mm_storeu_ps(o.as_mut_ptr(), acc_o);
        _mm_storeu_ps(m.as_mut_ptr(), acc_m);
        std::array::from_fn(|r| hsum(acc[r]) - k * o[r] + m[r])
    }
}

/// `out[i] = a[i]·b[i]` for `n` floats.
#[inline(always)]
unsafe fn mul_f32s(a: *const f32, b: *const f32, n: usize, out: *mut f32) {
    unsafe {
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_mul_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)));
            _mm256_storeu_ps(out.add(i), v);
            i += 8;
        }
        while i < n {
            *out.add(i) = *a.add(i) * *b.add(i);
            i += 1;
        }
    }
}

/// Scratch space of one tile: weight scales (and minima) of a row group, and scale products of
/// a micro-tile.
struct Scratch {
    dw: Vec<f32>,
    mw: Vec<f32>,
    scale: Vec<f32>,
}

#[inline(always)]
unsafe fn b32_store<
    F: Block32,
    const VNNI: bool,
    const WIDE: bool,
    const R: usize,
    const C: usize,
>(
    t: &Tile<'_>,
    r0: usize,
    c0: usize,
    sc: &mut Scratch,
) {
    unsafe {
        let nb = t.act.nb();
        let a: [ARow; C] = std::array::from_fn(|c| ARow::new(t.act, c0 + c));
        let scale = sc.scale.as_mut_ptr();
        for r in 0..R {
            for c in 0..C {
                mul_f32s(
                    sc.dw.as_ptr().add(r * nb),
                    a[c].d,
                    nb,
                    scale.add((r * C + c) * nb),
                );
            }
        }
        let w = t.w.as_ptr().add(r0 * t.row_bytes);
        let v = if WIDE {
            b32_micro512::<F, R, C>(w, t.row_bytes, nb, scale, &a)
        } else {
            b32_micro::<F, VNNI, R, C>(w, t.row_bytes, nb, scale, &a)
        };
        for r in 0..R {
            for c in 0..C {
                let mut y = v[r][c];
                if F::HAS_MIN {
                    y += dot_f32s(sc.mw.as_ptr().add(r * nb), a[c].s, nb);
                }
                let k = F::offset::<VNNI>();
                if k != 0.0 {
                    y -= k * dot_f32s(sc.dw.as_ptr().add(r * nb), a[c].dsum, nb);
                }
                t.store(r0 + r, c0 + c, y);
            }
        }
    }
}

/// Dispatches a micro-tile of `R` rows and `cc ≤ CMAX` activation rows.
macro_rules! by_c {
    ($f:ident::<$($g:tt),*; $vnni:tt, $r:literal>($cc:expr, $cmax:ident, $($arg:expr),*)) => {
        match $cc {
            1 => $f::<$($g,)* $vnni, $r, 1>($($arg),*),
            2 => $f::<$($g,)* $vnni, $r, 2>($($arg),*),
            3 => $f::<$($g,)* $vnni, $r, 3>($($arg),*),
            _ if $cmax >= 4 => $f::<$($g,)* $vnni, $r, 4>($($arg),*),
            _ => unreachable!(),
        }
    };
}

#[inline(always)]
unsafe fn b32_tile<F: Block32, const VNNI: bool, const WIDE: bool, const CMAX: usize>(
    t: &Tile<'_>,
) {
    unsafe {
        let nb = t.act.nb();
        let rb = t.row_bytes;
        if t.acts.len() == 1 && !WIDE {
            let c = t.acts.start;
            let a = ARow::new(t.act, c);
            let mut r = 0;
            while r + 4 <= t.rows {
                let y = b32_gemv::<F, VNNI, 4>(t.w.as_ptr().add(r * rb), rb, nb, &a);
                for (k, &v) in y.iter().enumerate() {
                    t.store(r + k, c, v);
                }
                r += 4;
            }
            while r < t.rows {
                let y = b32_gemv::<F, VNNI, 1>(t.w.as_ptr().add(r * rb), rb, nb, &a);
                t.store(r, c, y[0]);
                r += 1;
            }
            return;
        }
        let mut sc = Scratch {
            dw: vec![0f32; 4 * nb],
            mw: vec![0f32; if F::HAS_MIN { 4 * nb } else { 0 }],
            scale: vec![0f32; 4 * CMAX * nb],
        };
        let mut r = 0;
        while r < t.rows {
            let rr = if t.rows - r >= 4 { 4 } else { 1 };
            for k in 0..rr {
                let p = t.w.as_ptr().add((r + k) * rb);
                let (d, m) = (sc.dw.as_mut_ptr().add(k * nb), sc.mw.as_mut_ptr());
                if F::HAS_MIN {
                    // d and m share a dword: one gather fetches both (faster than two scalar
                    // passes; for d alone the scalar pass is faster).
                    f16_pairs(p, F::BYTES, nb, d, m.add(k * nb));
                } else {
                    f16_column(p, F::BYTES, 0, nb, d);
                }
            }
            let mut c = t.acts.start;
            while c < t.acts.end {
                let cc = (t.acts.end - c).min(CMAX);
                if rr == 4 {
                    by_c!(b32_store::<F, VNNI; WIDE, 4>(cc, CMAX, t, r, c, &mut sc));
                } else {
                    by_c!(b32_store::<F, VNNI; WIDE, 1>(cc, CMAX, t, r, c, &mut sc));
                }
                c += cc;
            }
            r += rr;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// F32, F16, BF16: f32 activations, weights widened in registers

trait FloatW {
    const BYTES: usize;
    unsafe fn load8(p: *const u8) -> __m256;
    unsafe fn load1(p: *const u8) -> f32;
}

struct F32W;
struct F16W;
struct BF16W;

impl FloatW for F32W {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        unsafe { _mm256_loadu_ps(p as *const f32) }
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        unsafe { (p as *const f32).read_unaligned() }
    }
}

impl FloatW for F16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        unsafe { f16_to_f32(rd_u16(p)) }
    }
}

impl FloatW for BF16W {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        unsafe { f32::from_bits((rd_u16(p) as u32) << 16) }
    }
}

#[inline(always)]
unsafe fn float_micro<F: FloatW, const UNUSED: bool, const R: usize, const C: usize>(
    t: &Tile<'_>,
    r0: usize,
    c0: usize,
) {
    unsafe {
        let cols = t.act.cols;
        let w = t.w.as_ptr().add(r0 * t.row_bytes);
        let rb = t.row_bytes;
        let x: [*const f32; C] = std::array::from_fn(|c| t.act.x[(c0 + c) * cols..].as_ptr());
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let pf = Prefetch::new(w, R, rb, cols / 8);
        let mut i = 0;
        if C == 1 {
            // One activation row: a second bank of accumulators, so that R FMA chains of
            // 4-cycle latency do not limit a memory-bound loop.
            let mut acc2 = [_mm256_setzero_ps(); R];
            while i + 16 <= cols {
                pf.at(i / 8);
                pf.at(i / 8 + 1);
                let x0 = _mm256_loadu_ps(x[0].add(i));
                let x1 = _mm256_loadu_ps(x[0].add(i + 8));
                for r in 0..R {
                    let p = w.add(r * rb + i * F::BYTES);
                    acc[r][0] = _mm256_fmadd_ps(F::load8(p), x0, acc[r][0]);
                    acc2[r] = _mm256_fmadd_ps(F::load8(p.add(8 * F::BYTES)), x1, acc2[r]);
                }
                i += 16;
            }
            for r in 0..R {
                acc[r][0] = _mm256_add_ps(acc[r][0], acc2[r]);
            }
        }
        while i + 8 <= cols {
            pf.at(i / 8);
            let xv: [__m256; C] = std::array::from_fn(|c| _mm256_loadu_ps(x[c].add(i)));
            for r in 0..R {
                let wv = F::load8(w.add(r * rb + i * F::BYTES));
                for c in 0..C {
                    acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                }
            }
            i += 8;
        }
        for r in 0..R {
            for c in 0..C {
                let mut y = hsum(acc[r][c]);
                for j in i..cols {
                    y += F::load1(w.add(r * rb + j * F::BYTES)) * *x[c].add(j);
                }
                t.store(r0 + r, c0 + c, y);
            }
        }
    }
}

#[inline(always)]
unsafe fn float_tile<F: FloatW, const CMAX: usize>(t: &Tile<'_>) {
    unsafe {
        let mut r = 0;
        while r < t.rows {
            let rr = if t.rows - r >= 4 { 4 } else { 1 };
            let mut c = t.acts.start;
            while c < t.acts.end {
                let cc = (t.acts.end - c).min(CMAX);
                if rr == 4 {
                    by_c!(float_micro::<F; false, 4>(cc, CMAX, t, r, c));
                } else {
                    by_c!(float_micro::<F; false, 1>(cc, CMAX, t, r, c));
                }
                c += cc;
            }
            r += rr;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// K-quants × Q8_K

/// `vpshufb` masks broadcasting i16 lane `j` (of each 128-bit half) to the whole vector.
static SHUF_I16: [[u8; 32]; 8] = {
    let mut m = [[0u8; 32]; 8];
    let mut j = 0;
    while j < 8 {
        let mut i = 0;
        while i < 32 {
            m[j][i] = (2 * j + i % 2) as u8;
            i += 1;
        }
        j += 1;
    }
    m
};

/// `vpshufb` masks giving i16 lane `2k` in the low half and `2k + 1` in the high half.
static SHUF_I16_PAIR: [[u8; 32]; 4] = {
    let mut m = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 32 {
            let lane = if i < 16 { 2 * k } else { 2 * k + 1 };
            m[k][i] = (2 * lane + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    m
};

#[inline(always)]
unsafe fn shuf(v: __m256i, mask: &[u8; 32]) -> __m256i {
    unsafe { _mm256_shuffle_epi8(v, _mm256_loadu_si256(mask.as_ptr() as *const __m256i)) }
}

/// Unpacks Q4_K/Q5_K's twelve scale bytes into eight 6-bit scales and eight 6-bit minima, one
/// per byte (the same as `k_scale_min`, in 32-bit word operations).
#[inline(always)]
pub(super) unsafe fn k_scales(s: *const u8) -> (u64, u64) {
    unsafe {
        let w0 = (s as *const u32).read_unaligned();
        let w1 = (s.add(4) as *const u32).read_unaligned();
        let w2 = (s.add(8) as *const u32).read_unaligned();
        let sc_lo = w0 & 0x3f3f_3f3f;
        let sc_hi = (w2 & 0x0f0f_0f0f) | ((w0 >> 2) & 0x3030_3030);
        let mn_lo = w1 & 0x3f3f_3f3f;
        let mn_hi = ((w2 >> 4) & 0x0f0f_0f0f) | ((w1 >> 2) & 0x3030_3030);
        (
            sc_lo as u64 | (sc_hi as u64) << 32,
            mn_lo as u64 | (mn_hi as u64) << 32,
        )
    }
}

/// One weight row's super-block, prepared: its scales, and the i16 vectors its products need.
struct KRow {
    d: f32,
    dmin: f32,
    /// Q4_K/Q5_K: the 8 scales as i16 in both 128-bit halves; Q6_K: the 16 scales as i16.
    sc: __m256i,
    /// Q4_K/Q5_K: the minima as i16 pairs `[m0, m0, m1, m1, …]` (against the 16-sums).
    mins: __m256i,
    /// Q5_K: the fifth bits.
    qh: __m256i,
}

/// A K-quant format as eight sub-blocks of 32 weights per super-block: quants as `u8 < 64`
/// (so `vpmaddubsw` cannot saturate) with i16 scales, plus a correction from the activation's
/// 16-sums.
trait KBlock {
    const BYTES: usize;
    unsafe fn row(p: *const u8) -> KRow;
    /// Sub-blocks `2k` and `2k + 1`: (quants, scales) each.
    unsafe fn pair(p: *const u8, row: &KRow, k: usize) -> [(__m256i, __m256i); 2];
    /// Adds the super-block's contribution (`isum`: Σ scale·q·qa in 8 lanes) to `acc`.
    unsafe fn finish(row: &KRow, isum: __m256i, bsums: __m256i, da: f32, acc: __m256) -> __m256;
}

struct Q4KW;
struct Q5KW;
struct Q6KW;

#[inline(always)]
unsafe fn q45k_row<const FIVE: bool>(p: *const u8) -> KRow {
    unsafe {
        let (sc, mn) = k_scales(p.add(4));
        let mn8 = _mm_cvtsi64_si128(mn as i64);
        KRow {
            d: f16_to_f32(rd_u16(p)),
            dmin: f16_to_f32(rd_u16(p.add(2))),
            sc: _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64))),
            mins: _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mn8, mn8)),
            qh: if FIVE {
                _mm256_loadu_si256(p.add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            },
        }
    }
}

#[inline(always)]
unsafe fn q45k_pair<const FIVE: bool>(
    p: *const u8,
    row: &KRow,
    k: usize,
) -> [(__m256i, __m256i); 2] {
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let raw = _mm256_loadu_si256(p.add(if FIVE { 48 } else { 16 } + 32 * k) as *const __m256i);
        let mut lo = _mm256_and_si256(raw, m4);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4);
        if FIVE {
            // Bit 2k of qh is the fifth bit of sub-block 2k, bit 2k + 1 of sub-block 2k + 1.
            let m16 = _mm256_set1_epi8(0x10);
            let h = _mm256_srl_epi16(row.qh, _mm_cvtsi32_si128(2 * k as i32));
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(h), m16));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(h), m16));
        }
        [
            (lo, shuf(row.sc, &SHUF_I16[2 * k])),
            (hi, shuf(row.sc, &SHUF_I16[2 * k + 1])),
        ]
    }
}

/// Q4_K/Q5_K: d·da·Σ sc·q·qa − dmin·da·Σ m·(16-sum pairs).
#[inline(always)]
unsafe fn q45k_finish(row: &KRow, isum: __m256i, bsums: __m256i, da: f32, acc: __m256) -> __m256 {
    unsafe {
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(row.d * da), acc);
        let msum = _mm256_madd_epi16(row.mins, bsums);
        _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(row.dmin * da), acc)
    }
}

impl KBlock for Q4KW {
    const BYTES: usize = 144;
    #[inline(always)]
    unsafe fn row(p: *const u8) -> KRow {
        unsafe { q45k_row::<false>(p) }
    }
    #[inline(always)]
    unsafe fn pair(p: *const u8, row: &KRow, k: usize) -> [(__m256i, __m256i); 2] {
        unsafe { q45k_pair::<false>(p, row, k) }
    }
    #[inline(always)]
    unsafe fn finish(row: &KRow, isum: __m256i, bsums: __m256i, da: f32, acc: __m256) -> __m256 {
        unsafe { q45k_finish(row, isum, bsums, da, acc) }
    }
}

impl KBlock for Q5KW {
    const BYTES: usize = 176;
    #[inline(always)]
    unsafe fn row(p: *const u8) -> KRow {
        unsafe { q45k_row::<true>(p) }
    }
    #[inline(always)]
    unsafe fn pair(p: *const u8, row: &KRow, k: usize) -> [(__m256i, __m256i); 2] {
        unsafe { q45k_pair::<true>(p, row, k) }
    }
    #[inline(always)]
    unsafe fn finish(row: &KRow, isum: __m256i, bsums: __m256i, da: f32, acc: __m256) -> __m256 {
        unsafe { q45k_finish(row, isum, bsums, da, acc) }
    }
}

impl KBlock for Q6KW {
    const BYTES: usize = 210;
    #[inline(always)]
    unsafe fn row(p: *const u8) -> KRow {
        unsafe {
            KRow {
                d: f16_to_f32(rd_u16(p.add(208))),
                dmin: 0.0,
                sc: _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i)),
                mins: _mm256_setzero_si256(),
                qh: _mm256_setzero_si256(),
            }
        }
    }
    #[inline(always)]
    unsafe fn pair(p: *const u8, row: &KRow, k: usize) -> [(__m256i, __m256i); 2] {
        unsafe {
            // Half h = k/2 holds weights 128h..128h+128; of its four 32-weight sub-blocks, pair
            // k%2 = 0 is (low nibbles of ql0, of ql1), pair 1 is (high nibbles of ql0, of ql1),
            // with qh bits (0,1), (2,3) and (4,5), (6,7).
            let h = k / 2;
            let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
            let mut qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
            let m4 = _mm256_set1_epi8(0x0F);
            let m3 = _mm256_set1_epi8(0x03);
            let (a, b) = if k.is_multiple_of(2) {
                (_mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4))
            } else {
                qh = _mm256_srli_epi16::<4>(qh);
                (
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                )
            };
            let ha = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m3));
            let hb = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m3));
            // The 8 scales of half h in both 128-bit halves; sub-block j of the half takes scale
            // 2j for its first 16 weights and 2j + 1 for the rest.
            let sch = if h == 0 {
                _mm256_permute4x64_epi64::<0x44>(row.sc)
            } else {
                _mm256_permute4x64_epi64::<0xEE>(row.sc)
            };
            let j = 2 * (k % 2);
            [
                (_mm256_or_si256(a, ha), shuf(sch, &SHUF_I16_PAIR[j])),
                (_mm256_or_si256(b, hb), shuf(sch, &SHUF_I16_PAIR[j + 1])),
            ]
        }
    }
    /// Q6_K: d·da·Σ sc·(q − 32)·qa, the −32 as −32·Σ sc·(16-sums).
    #[inline(always)]
    unsafe fn finish(row: &KRow, isum: __m256i, bsums: __m256i, da: f32, acc: __m256) -> __m256 {
        unsafe {
            let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, row.sc));
            let total = _mm256_sub_epi32(isum, corr);
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_set1_ps(row.d * da), acc)
        }
    }
}

#[inline(always)]
unsafe fn k_micro<K: KBlock, const UNUSED: bool, const R: usize, const C: usize>(
    t: &Tile<'_>,
    r0: usize,
    c0: usize,
) {
    unsafe {
        let act = t.act;
        let nb = act.nb();
        let w = t.w.as_ptr().add(r0 * t.row_bytes);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let pf = Prefetch::new(w, R, t.row_bytes, nb);
        for b in 0..nb {
            pf.at(b);
            let qa: [*const i8; C] =
                std::array::from_fn(|c| act.qs.as_ptr().add((c0 + c) * act.cols + 256 * b));
            let da: [f32; C] = std::array::from_fn(|c| *act.d.as_ptr().add((c0 + c) * nb + b));
            let bs: [__m256i; C] = std::array::from_fn(|c| {
                _mm256_loadu_si256(
                    act.bsums.as_ptr().add(((c0 + c) * nb + b) * 16) as *const __m256i
                )
            });
            for r in 0..R {
                let p = w.add(r * t.row_bytes + b * K::BYTES);
                let row = K::row(p);
                let mut isum = [_mm256_setzero_si256(); C];
                for k in 0..4 {
                    let [(q0, s0), (q1, s1)] = K::pair(p, &row, k);
                    for c in 0..C {
                        let a0 = _mm256_loadu_si256(qa[c].add(64 * k) as *const __m256i);
                        let a1 = _mm256_loadu_si256(qa[c].add(64 * k + 32) as *const __m256i);
                        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, a0), s0);
                        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, a1), s1);
                        isum[c] = _mm256_add_epi32(isum[c], _mm256_add_epi32(p0, p1));
                    }
                }
                for c in 0..C {
                    acc[r][c] = K::finish(&row, isum[c], bs[c], da[c], acc[r][c]);
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                t.store(r0 + r, c0 + c, hsum(acc[r][c]));
            }
        }
    }
}

/// K-quant tiles: micro-tiles of 4 rows for one activation row or where there are 32 vector
/// registers, else 2.
#[inline(always)]
unsafe fn k_tile<K: KBlock, const CMAX: usize>(t: &Tile<'_>) {
    unsafe {
        let wide = CMAX >= 4 || t.acts.len() == 1;
        let mut r = 0;
        while r < t.rows {
            let rr = match t.rows - r {
                left if left >= 4 && wide => 4,
                left if left >= 2 => 2,
                _ => 1,
            };
            let mut c = t.acts.start;
            while c < t.acts.end {
                let cc = (t.acts.end - c).min(CMAX);
                match rr {
                    4 => by_c!(k_micro::<K; false, 4>(cc, CMAX, t, r, c)),
                    2 => by_c!(k_micro::<K; false, 2>(cc, CMAX, t, r, c)),
                    _ => by_c!(k_micro::<K; false, 1>(cc, CMAX, t, r, c)),
                }
                c += cc;
            }
            r += rr;
        }
    }
}
