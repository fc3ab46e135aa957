//! Dequantisation of ggml block formats to f32.
//!
//! Every format computes in f32 with the same operations, in the same order, as the reference
//! (ggml's C code and the `gguf` Python package), so results agree bit for bit.

use half::f16;

use crate::error::{GgufError, Result};
use crate::types::GgmlType;

/// Dequantises `data` (whole blocks of `dtype`) into `out`, which must hold exactly its weights.
pub fn dequantize(dtype: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let (bs, ts) = (dtype.block_size() as usize, dtype.type_size() as usize);
    if !data.len().is_multiple_of(ts) || data.len() / ts * bs != out.len() {
        return Err(GgufError::Invalid(format!(
            "{dtype} data of {} bytes does not hold {} weights ({bs} weights per {ts}-byte block)",
            data.len(),
            out.len()
        )));
    }
    let blocks = data.chunks_exact(ts).zip(out.chunks_exact_mut(bs));
    match dtype {
        GgmlType::F32 => {
            blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        GgmlType::F16 => blocks.for_each(|(b, o)| o[0] = f16_at(b, 0)),
        GgmlType::BF16 => blocks.for_each(|(b, o)| {
            o[0] = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
        }),
        GgmlType::Q4_0 => blocks.for_each(|(b, o)| q4_0(b, o)),
        GgmlType::Q4_1 => blocks.for_each(|(b, o)| q4_1(b, o)),
        GgmlType::Q8_0 => blocks.for_each(|(b, o)| q8_0(b, o)),
        GgmlType::Q4_K => blocks.for_each(|(b, o)| q4_k(b, o)),
        GgmlType::Q5_K => blocks.for_each(|(b, o)| q5_k(b, o)),
        GgmlType::Q6_K => blocks.for_each(|(b, o)| q6_k(b, o)),
        other => {
            return Err(GgufError::UnsupportedDtype {
                tensor: String::new(),
                dtype: other,
            })
        }
    }
    Ok(())
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_0: f16 scale d, 16 bytes of nibbles (low nibbles weights 0–15, high 16–31); w = d·(q − 8).
fn q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for (j, &q) in qs.iter().enumerate() {
        o[j] = d * ((q & 0x0F) as i32 - 8) as f32;
        o[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1: f16 scale d, f16 minimum m, 16 bytes of nibbles; w = d·q + m.
fn q4_1(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for (j, &q) in qs.iter().enumerate() {
        o[j] = d * (q & 0x0F) as f32 + m;
        o[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// Q8_0: f16 scale d, 32 signed bytes; w = d·q.
fn q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..34].iter().enumerate() {
        o[j] = d * (q as i8) as f32;
    }
}

/// The eight 6-bit (scale, min) pairs packed into 12 bytes by Q4_K and Q5_K.
fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for i in 0..4 {
        sc[i] = s[i] & 0x3F;
        mn[i] = s[i + 4] & 0x3F;
        sc[i + 4] = (s[i + 8] & 0x0F) | ((s[i] >> 2) & 0x30);
        mn[i + 4] = (s[i + 8] >> 4) | ((s[i + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K: 256 weights in 8 groups of 32; f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of
/// nibbles; w = (d·sc)·q − (dmin·m).
fn q4_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for g in 0..8 {
        let dl = d * sc[g] as f32;
        let ml = dmin * mn[g] as f32;
        let (chunk, shift) = (g / 2, (g % 2) * 4);
        for l in 0..32 {
            let q = (qs[32 * chunk + l] >> shift) & 0x0F;
            o[32 * g + l] = dl * q as f32 - ml;
        }
    }
}

/// Q5_K: Q4_K plus 32 bytes holding the fifth bit of each weight (bit g for group g).
fn q5_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for g in 0..8 {
        let dl = d * sc[g] as f32;
        let ml = dmin * mn[g] as f32;
        let (chunk, shift) = (g / 2, (g % 2) * 4);
        for l in 0..32 {
            let low = (qs[32 * chunk + l] >> shift) & 0x0F;
            let high = (qh[l] >> g) & 1;
            o[32 * g + l] = dl * (low | (high << 4)) as f32 - ml;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, f16 d;
/// w = (d·scale)·(q − 32) with one scale per 16 weights.
fn q6_k(b: &[u8], o: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    let mut ds = [0f32; 16];
    for (x, &s) in ds.iter_mut().zip(scales) {
        *x = d * (s as i8) as f32;
    }
    for half in 0..2 {
        let ql = &ql[64 * half..64 * half + 64];
        let qh = &qh[32 * half..32 * half + 32];
        let base = 128 * half;
        for l in 0..32 {
            let q = [
                (ql[l] & 0x0F) | ((qh[l] & 0x03) << 4),
                (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 0x03) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 0x03) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 0x03) << 4),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let p = base + 32 * k + l;
                o[p] = ds[p / 16] * (qk as i32 - 32) as f32;
            }
        }
    }
}
