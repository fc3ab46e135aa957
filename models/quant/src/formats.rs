//! Block layouts: reference quantisers (ggml's `quantize_row_*_ref`, same float operations in
//! the same order, so the bytes agree) and dequantisers (ggml's `dequantize_row_*`).

use half::f16;

use crate::QType;

/// Quantises whole rows: `values.len()` is a multiple of the block size and `out` holds exactly
/// the blocks.
pub(crate) fn quantize(qtype: QType, values: &[f32], out: &mut [u8]) {
    let (bs, bb) = (qtype.block_size(), qtype.block_bytes());
    debug_assert_eq!(values.len() / bs * bb, out.len());
    let blocks = values.chunks_exact(bs).zip(out.chunks_exact_mut(bb));
    match qtype {
        QType::F32 => blocks.for_each(|(v, o)| o.copy_from_slice(&v[0].to_le_bytes())),
        QType::F16 => blocks.for_each(|(v, o)| o.copy_from_slice(&f16_bits(v[0]).to_le_bytes())),
        QType::BF16 => blocks.for_each(|(v, o)| o.copy_from_slice(&bf16_bits(v[0]).to_le_bytes())),
        QType::Q8_0 => blocks.for_each(|(v, o)| quantize_q8_0(v, o)),
        QType::Q4_0 => blocks.for_each(|(v, o)| quantize_q4_0(v, o)),
        QType::Q4_1 => blocks.for_each(|(v, o)| quantize_q4_1(v, o)),
        QType::Q4_K => blocks.for_each(|(v, o)| quantize_q4_k(v, o)),
        QType::Q5_K => blocks.for_each(|(v, o)| quantize_q5_k(v, o)),
        QType::Q6_K => blocks.for_each(|(v, o)| quantize_q6_k(v, o)),
    }
}

/// Dequantises whole blocks into `out`, which holds exactly their weights.
pub(crate) fn dequantize(qtype: QType, bytes: &[u8], out: &mut [f32]) {
    let (bs, bb) = (qtype.block_size(), qtype.block_bytes());
    debug_assert_eq!(bytes.len() / bb * bs, out.len());
    let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bs));
    match qtype {
        QType::F32 => blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        QType::F16 => blocks.for_each(|(b, o)| o[0] = f16_at(b, 0)),
        QType::BF16 => blocks.for_each(|(b, o)| o[0] = bf16_at(b, 0)),
        QType::Q8_0 => blocks.for_each(|(b, o)| dequantize_q8_0(b, o)),
        QType::Q4_0 => blocks.for_each(|(b, o)| dequantize_q4_0(b, o)),
        QType::Q4_1 => blocks.for_each(|(b, o)| dequantize_q4_1(b, o)),
        QType::Q4_K => blocks.for_each(|(b, o)| dequantize_q4_k(b, o)),
        QType::Q5_K => blocks.for_each(|(b, o)| dequantize_q5_k(b, o)),
        QType::Q6_K => blocks.for_each(|(b, o)| dequantize_q6_k(b, o)),
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars

/// f32 → f16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
pub(crate) fn f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// f32 → bf16 bits as ggml's `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept quiet.
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

#[inline]
pub(crate) fn bf16_at(b: &[u8], i: usize) -> f32 {
    f32::from_bits((u16::from_le_bytes([b[i], b[i + 1]]) as u32) << 16)
}

/// f32 rounded through f16 and back.
#[inline]
pub(crate) fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// ggml's `nearest_int`: round to nearest, ties to even, by adding 1.5·2²³ (valid for
/// |x| ≤ 4194303, which every caller guarantees).
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

// ---------------------------------------------------------------------------------------------
// 32-weight blocks

/// `quantize_row_q8_0_ref`: d = amax/127, q = round(x/d) (half away from zero).
fn quantize_q8_0(x: &[f32], o: &mut [u8]) {
    let amax = x
        .iter()
        .fold(0f32, |m, v| if m > v.abs() { m } else { v.abs() });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    o[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
    for (q, &v) in o[2..34].iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
}

/// `quantize_row_q4_0_ref`: d = −max/8 where max is the value of largest magnitude (so it maps
/// to q = 0), q = min(15, trunc(x/d + 8.5)).
fn quantize_q4_0(x: &[f32], o: &mut [u8]) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    o[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
    for j in 0..16 {
        let lo = ((x[j] * id + 8.5) as i8).min(15) as u8;
        let hi = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
        o[2 + j] = lo | (hi << 4);
    }
}

/// `quantize_row_q4_1_ref`: d = (max − min)/15, m = min, q = min(15, trunc((x − min)/d + 0.5)).
fn quantize_q4_1(x: &[f32], o: &mut [u8]) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    o[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
    o[2..4].copy_from_slice(&f16_bits(min).to_le_bytes());
    for j in 0..16 {
        let lo = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
        let hi = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
        o[4 + j] = lo | (hi << 4);
    }
}

fn dequantize_q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (y, &q) in o.iter_mut().zip(&b[2..34]) {
        *y = (q as i8) as f32 * d;
    }
}

fn dequantize_q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        o[j] = ((b[2 + j] & 0x0F) as i32 - 8) as f32 * d;
        o[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
    }
}

fn dequantize_q4_1(b: &[u8], o: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        o[j] = (b[4 + j] & 0x0F) as f32 * d + m;
        o[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
    }
}

// ---------------------------------------------------------------------------------------------
// K-quants (256-weight super-blocks)

/// The eight 6-bit (scale, min) pairs of Q4_K/Q5_K, unpacked from their 12 bytes
/// (ggml's `get_scale_min_k4`).
#[inline]
pub(crate) fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// Packs eight 6-bit scales and mins into 12 bytes (inverse of [`k_scale_min`]).
fn pack_scale_min(ls: &[u8; 8], lm: &[u8; 8], s: &mut [u8]) {
    s[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale·L − min` (L in 0..=nmax, min ≥ 0 returned) by a
/// search over candidate inverse scales, minimising the weighted squared error.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K/Q5_K shared part of `quantize_row_q{4,5}_K_ref`: per-group (scale, min) fits, 6-bit
/// quantised against the super-block maxima, then the weights re-quantised against the stored
/// scales. Returns the levels L (0..=nmax) and writes d, dmin and the 12 scale bytes.
fn quantize_k_groups(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    o: &mut [u8],
) -> [u8; 256] {
    let mut l = [0u8; 256];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            rdelta,
            nstep,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        // C stores nearest_int's int into a uint8_t (wrapping), then takes MIN(63, ·).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d_bits = f16_bits(max_scale / 63.0);
    let dmin_bits = f16_bits(max_min / 63.0);
    o[0..2].copy_from_slice(&d_bits.to_le_bytes());
    o[2..4].copy_from_slice(&dmin_bits.to_le_bytes());
    pack_scale_min(&ls, &lm, &mut o[4..16]);
    let (sc, mn) = k_scale_min(&o[4..16]);
    let (d_all, dmin_all) = (
        f16::from_bits(d_bits).to_f32(),
        f16::from_bits(dmin_bits).to_f32(),
    );
    for j in 0..8 {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * mn[j] as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    l
}

/// `quantize_row_q4_K_ref`.
fn quantize_q4_k(x: &[f32], o: &mut [u8]) {
    let l = quantize_k_groups(x, 15, -1.0, 0.1, 20, o);
    let qs = &mut o[16..144];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
}

/// `quantize_row_q5_K_ref`.
fn quantize_q5_k(x: &[f32], o: &mut [u8]) {
    let l = quantize_k_groups(x, 31, -0.5, 0.1, 15, o);
    let (qh, ql) = o[16..176].split_at_mut(32);
    qh.fill(0);
    for c in 0..4 {
        for i in 0..32 {
            let (mut l1, mut l2) = (l[64 * c + i], l[64 * c + 32 + i]);
            if l1 > 15 {
                l1 -= 16;
                qh[i] |= 1 << (2 * c);
            }
            if l2 > 15 {
                l2 -= 16;
                qh[i] |= 2 << (2 * c);
            }
            ql[32 * c + i] = l1 | (l2 << 4);
        }
    }
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights x²): a
/// symmetric fit x ≈ scale·(L − nmax), searching 19 candidate scales.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l.fill(0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        *li = (q + nmax) as i8;
        let w = v * v;
        sumlx += w * v * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut sumlx, mut suml2) = (0f32, 0f32);
        for &v in x {
            let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            sumlx += w * v * q as f32;
            suml2 += w * q as f32 * q as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                let q = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                *li = (q + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `quantize_row_q6_K_ref`.
fn quantize_q6_k(x: &[f32], o: &mut [u8]) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < 1e-15 {
        o[..210].fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d_bits = f16_bits(1.0 / iscale);
    o[208..210].copy_from_slice(&d_bits.to_le_bytes());
    let d_all = f16::from_bits(d_bits).to_f32();
    for ib in 0..16 {
        // C: int8_t = MIN(127, nearest_int(·)); the fit keeps it ≥ −128.
        o[192 + ib] = (nearest_int(iscale * scales[ib]).min(127) as i8) as u8;
    }
    for j in 0..16 {
        let d = d_all * (o[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for i in 0..16 {
            let q = nearest_int(x[16 * j + i] / d).clamp(-32, 31);
            l[16 * j + i] = (q + 32) as i8;
        }
    }
    let (ql, rest) = o.split_at_mut(128);
    let qh = &mut rest[..64];
    for half in 0..2 {
        let lb = &l[128 * half..128 * half + 128];
        for i in 0..32 {
            let q = |k: usize| lb[i + 32 * k] as u8;
            ql[64 * half + i] = (q(0) & 0x0F) | ((q(2) & 0x0F) << 4);
            ql[64 * half + 32 + i] = (q(1) & 0x0F) | ((q(3) & 0x0F) << 4);
            qh[32 * half + i] =
                (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
}

fn dequantize_q4_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for g in 0..8 {
        let (dl, ml) = (d * sc[g] as f32, dmin * mn[g] as f32);
        let (chunk, shift) = (g / 2, (g % 2) * 4);
        for i in 0..32 {
            o[32 * g + i] = dl * ((qs[32 * chunk + i] >> shift) & 0x0F) as f32 - ml;
        }
    }
}

fn dequantize_q5_k(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = k_scale_min(&b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for g in 0..8 {
        let (dl, ml) = (d * sc[g] as f32, dmin * mn[g] as f32);
        let (chunk, shift) = (g / 2, (g % 2) * 4);
        for i in 0..32 {
            let q = ((qs[32 * chunk + i] >> shift) & 0x0F) | (((qh[i] >> g) & 1) << 4);
            o[32 * g + i] = dl * q as f32 - ml;
        }
    }
}

fn dequantize_q6_k(b: &[u8], o: &mut [f32]) {
    let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
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
                o[p] = d * (sc[p / 16] as i8) as f32 * (qk as i32 - 32) as f32;
            }
        }
    }
}
