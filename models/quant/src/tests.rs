//! Unit tests: formats, quantisers (golden bytes and error bounds), and `matmul` for every format
//! and every kernel set this CPU has, against the dequantised matrix and against the portable
//! kernels.

use std::sync::Arc;

use crate::act::{quantize_row, Act, ActKind};
use crate::formats::{bf16_bits, f16_at, f16_bits};
use crate::{KernelSet, QMatrix, QType, QuantError, Storage};

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [−1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Roughly Gaussian (sum of four uniforms), with occasional outliers and whole zero blocks
    /// so that d = 0 and clamping paths run.
    fn values(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n)
            .map(|_| {
                let g = (self.f() + self.f() + self.f() + self.f()) * 0.5;
                if self.next().is_multiple_of(97) {
                    g * 8.0
                } else {
                    g
                }
            })
            .collect();
        if n >= 64 {
            // One all-zero 32-block, and one constant block, at pseudo-random places.
            let z = (self.next() as usize % (n / 32)) * 32;
            v[z..z + 32].fill(0.0);
            let k = (self.next() as usize % (n / 32)) * 32;
            v[k..k + 32].fill(0.25);
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// QType and QMatrix::new

#[test]
fn qtype_tables() {
    let expect = [
        (QType::F32, "f32", 0, 1, 4),
        (QType::F16, "f16", 1, 1, 2),
        (QType::BF16, "bf16", 30, 1, 2),
        (QType::Q8_0, "q8_0", 8, 32, 34),
        (QType::Q4_0, "q4_0", 2, 32, 18),
        (QType::Q4_1, "q4_1", 3, 32, 20),
        (QType::Q4_K, "q4_k", 12, 256, 144),
        (QType::Q5_K, "q5_k", 13, 256, 176),
        (QType::Q6_K, "q6_k", 14, 256, 210),
    ];
    for (t, name, id, bs, bb) in expect {
        assert_eq!(t.name(), name);
        assert_eq!(t.ggml_id(), id);
        assert_eq!(t.block_size(), bs);
        assert_eq!(t.block_bytes(), bb);
        assert_eq!(QType::from_name(name), Some(t));
        assert_eq!(QType::from_name(&name.to_uppercase()), Some(t));
        assert_eq!(QType::from_ggml_id(id), Some(t));
        assert_eq!(t.row_bytes(512), Some(512 / bs * bb));
        assert_eq!(t.to_string(), name);
    }
    assert_eq!(QType::from_name("q5_0"), None);
    assert_eq!(QType::from_ggml_id(6), None);
    assert_eq!(QType::Q4_0.row_bytes(48), None);
    assert_eq!(QType::Q6_K.row_bytes(4096), Some(16 * 210));
    assert_eq!(QType::F16.row_bytes(7), Some(14));
}

#[test]
fn new_validates_lengths() {
    let err = QMatrix::new(QType::Q4_0, 3, 64, Storage::Owned(vec![0; 107])).unwrap_err();
    assert_eq!(
        err,
        QuantError::LengthMismatch {
            qtype: QType::Q4_0,
            rows: 3,
            cols: 64,
            row_bytes: 36,
            expected: 108,
            actual: 107
        }
    );
    assert_eq!(
        err.to_string(),
        "a q4_0 matrix of 3×64 takes 108 bytes (36 per row), but 107 bytes were given"
    );
    let err = QMatrix::new(QType::Q6_K, 1, 300, Storage::Owned(vec![])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "300 columns is not a multiple of the q6_k block size 256"
    );
    let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![0u8; 100]);
    let err = QMatrix::new(
        QType::Q8_0,
        1,
        32,
        Storage::Shared {
            owner: owner.clone(),
            offset: 80,
            len: 34,
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "shared storage range 80..114 lies outside its owner's 100 bytes"
    );
    let m = QMatrix::new(
        QType::Q8_0,
        2,
        32,
        Storage::Shared {
            owner,
            offset: 10,
            len: 68,
        },
    )
    .unwrap();
    assert_eq!(m.bytes().len(), 68);
    assert_eq!(m.row_bytes(1).len(), 34);
    let err = QMatrix::quantize(QType::F16, 2, 3, &[0.0; 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "5 values were given for a 2×3 matrix (6 needed)"
    );
    assert!(QMatrix::new(QType::F32, 0, 5, Storage::Owned(vec![])).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Quantisers: golden bytes

fn le16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Q8_0 by hand, from `quantize_row_q8_0_ref`: x_j = (j − 16)/8, so amax = 2 (j = 0, x = −2);
/// d = 2/127 = 0.015748031…, stored as f16 0x2408 (= 2⁻⁶·(1 + 8/1024) = 0.0157470703125); id = 1/d = 63.5 (exactly,
/// in f32: 1/(2/127) rounds to 63.5); q_j = round((j − 16)/8 · 63.5) = round(7.9375·(j − 16)),
/// halves away from zero. E.g. j = 0: −127; j = 1: round(−119.0625) = −119; j = 15: −8
/// (−7.9375); j = 16: 0; j = 31: round(119.0625) = 119.
#[test]
fn golden_q8_0() {
    let x: Vec<f32> = (0..32).map(|j| (j as f32 - 16.0) / 8.0).collect();
    let m = QMatrix::quantize(QType::Q8_0, 1, 32, &x).unwrap();
    let b = m.bytes();
    assert_eq!(le16(b, 0), 0x2408);
    let q: Vec<i8> = b[2..].iter().map(|&v| v as i8).collect();
    let expect: Vec<i8> = (0..32)
        .map(|j| {
            let v = 7.9375f64 * (j as f64 - 16.0);
            (v.abs() + 0.5).floor().copysign(v) as i8
        })
        .collect();
    assert_eq!(q, expect);
    assert_eq!(&q[..4], &[-127, -119, -111, -103]);
    assert_eq!(q[31], 119);
}

/// Q4_0 by hand, from `quantize_row_q4_0_ref`: x_j = j/4 − 4 for j < 16, x_j = (j − 16)/8 for
/// j ≥ 16. The value of largest magnitude is x_0 = −4, so d = −4/−8 = 0.5 (f16 0x3800), id = 2;
/// q_j = min(15, trunc(x_j·2 + 8.5)): low half j/2 + 0.5 → trunc(j/2 + 0.5) = 0,1,1,2,2,…,8
/// (j = 0..15: 0,1,1,2,2,3,3,4,4,5,5,6,6,7,7,8); high half (j−16)/4 + 8.5 → 8,8,9,9,9,9,10,
/// 10,10,10,11,11,11,11,12,12. Byte j = low | high << 4.
#[test]
fn golden_q4_0() {
    let x: Vec<f32> = (0..32)
        .map(|j| {
            if j < 16 {
                j as f32 / 4.0 - 4.0
            } else {
                (j - 16) as f32 / 8.0
            }
        })
        .collect();
    let m = QMatrix::quantize(QType::Q4_0, 1, 32, &x).unwrap();
    let b = m.bytes();
    assert_eq!(le16(b, 0), 0x3800);
    let lo = [0u8, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8];
    let hi = [8u8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11, 12, 12];
    let expect: Vec<u8> = (0..16).map(|j| lo[j] | hi[j] << 4).collect();
    assert_eq!(&b[2..18], &expect[..]);
    // Dequantised: d·(q − 8).
    let y = m.dequantize();
    assert_eq!(y[0], -4.0);
    assert_eq!(y[1], -3.5);
    assert_eq!(y[16], 0.0);
    assert_eq!(y[31], 2.0);
}

/// Q4_1 by hand, from `quantize_row_q4_1_ref`: x_j = j/10 − 1 (j = 0..31), min = −1,
/// max = 2.1 (in f32: 31/10 − 1 = 2.1000001), d = 3.1/15 = 0.20666…, f16 0x329d
/// (0.20666503…), m = −1 (f16 0xbc00); q_j = min(15, trunc((x_j + 1)/d + 0.5)) =
/// trunc(j·0.48387 + 0.5): 0,0,1,1,2,2,3,3,4,4,5,5,6,6,7,7, 8,8,9,9,10,10,11,11,12,12,13,13,
/// 14,14,15,15 (j = 31: 15.5 → 15).
#[test]
fn golden_q4_1() {
    let x: Vec<f32> = (0..32).map(|j| j as f32 / 10.0 - 1.0).collect();
    let m = QMatrix::quantize(QType::Q4_1, 1, 32, &x).unwrap();
    let b = m.bytes();
    assert_eq!(le16(b, 0), 0x329d);
    assert_eq!(le16(b, 2), 0xbc00);
    let q: Vec<u8> = (0..32u8).map(|j| j / 2).collect();
    let expect: Vec<u8> = (0..16).map(|j| q[j] | q[j + 16] << 4).collect();
    assert_eq!(&b[4..20], &expect[..]);
}

/// All-zero blocks: d = 0 and the quants sit at the zero point (Q4_0: 8, Q4_1: 0 with m = 0),
/// and dequantise to exact zeros, never NaN. (Q4_0's d is 0/−8 = −0.0, f16 0x8000, as in ggml.)
#[test]
fn zero_blocks() {
    let x = vec![0f32; 512];
    for t in [
        QType::Q8_0,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q4_K,
        QType::Q5_K,
        QType::Q6_K,
    ] {
        let m = QMatrix::quantize(t, 2, 256, &x).unwrap();
        let b = m.bytes();
        match t {
            QType::Q8_0 => assert!(b.chunks(34).all(|c| c.iter().all(|&v| v == 0))),
            QType::Q4_0 => assert!(b
                .chunks(18)
                .all(|c| c[..2] == [0, 0x80] && c[2..].iter().all(|&v| v == 0x88))),
            QType::Q4_1 => assert!(b.iter().all(|&v| v == 0)),
            _ => assert!(b.iter().all(|&v| v == 0), "{t}"),
        }
        assert!(m.dequantize().iter().all(|&v| v == 0.0), "{t}");
        let mut y = vec![1f32; 6];
        let xs: Vec<f32> = (0..768).map(|i| (i as f32).sin()).collect();
        m.matmul(&xs, 3, &mut y);
        assert!(y.iter().all(|&v| v == 0.0), "{t}: {y:?}");
    }
}

#[test]
fn golden_f16_bf16() {
    let x = [1.0f32, -2.5, 1.0 / 3.0, 65504.0, 1e-8, f32::INFINITY];
    let m = QMatrix::quantize(QType::F16, 1, 6, &x).unwrap();
    let got: Vec<u16> = m.bytes().chunks(2).map(|c| le16(c, 0)).collect();
    assert_eq!(got, [0x3c00, 0xc100, 0x3555, 0x7bff, 0x0000, 0x7c00]);
    let m = QMatrix::quantize(QType::BF16, 1, 6, &x).unwrap();
    let got: Vec<u16> = m.bytes().chunks(2).map(|c| le16(c, 0)).collect();
    // 1/3 = 0x3eaaaaab → bf16 0x3eab (round up); 65504 = 0x477fe000 → 0x4780 (ties to even
    // would keep 0x477f only below half: 0xe000 > 0x8000, so rounds up).
    assert_eq!(got, [0x3f80, 0xc020, 0x3eab, 0x4780, 0x322c, 0x7f80]);
    assert_eq!(bf16_bits(f32::NAN) & 0x7fc0, 0x7fc0);
    assert_eq!(f16_bits(0.5), 0x3800);
}

/// Byte-for-byte agreement with ggml's reference quantisers (`ggml_quantize_chunk` without an
/// importance matrix, i.e. `quantize_row_*_ref`, from ggml commit d99724f2): the expected FNV-1a
/// hashes were computed by quantising the same input with libggml. The input is exact in f32 in
/// any language: x_i = ((i·7919 mod 1999) − 999)/256 over 4 rows of 512, with an all-zero
/// 32-block at 64..96 and a constant one (0.75) at 256..288.
#[test]
fn quantisers_match_ggml_bytes() {
    let mut x: Vec<f32> = (0..2048)
        .map(|i| ((i * 7919) % 1999 - 999) as f32 / 256.0)
        .collect();
    x[64..96].fill(0.0);
    x[256..288].fill(0.75);
    let fnv = |b: &[u8]| {
        b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &v| {
            (h ^ v as u64).wrapping_mul(0x100_0000_01b3)
        })
    };
    let expect = [
        (QType::F16, 4096, 0x47fc_f412_2992_cc41u64),
        (QType::BF16, 4096, 0xa2ee_b23b_305f_f600),
        (QType::Q8_0, 2176, 0x7dae_c5b3_de7b_5eb1),
        (QType::Q4_0, 1152, 0xcd47_56e9_df46_0d81),
        (QType::Q4_1, 1280, 0x840d_dd7a_10af_828f),
        (QType::Q4_K, 1152, 0x64c7_c2fb_9fa4_a55d),
        (QType::Q5_K, 1408, 0x2cb6_d13a_741f_732f),
        (QType::Q6_K, 1680, 0x6354_9d6d_272d_82de),
    ];
    for (t, len, hash) in expect {
        let m = QMatrix::quantize(t, 4, 512, &x).unwrap();
        assert_eq!(m.bytes().len(), len, "{t}");
        assert_eq!(fnv(m.bytes()), hash, "{t}: bytes differ from ggml's");
    }
}

// ---------------------------------------------------------------------------------------------
// Quantisers: round-trip error bounds

/// Per-block bounds on |x − dequantise(quantise(x))|, derived from each reference quantiser
/// (f16 rounding of a scale s changes it by at most s·2⁻¹¹):
/// * Q8_0: d = amax/127, |q| ≤ 127: ≤ d/2 + 127·d·2⁻¹¹.
/// * Q4_0: d = amax/8; values round to the nearest level, except the clamp at +8 → 7, one full
///   step: ≤ d + 8·d·2⁻¹¹.
/// * Q4_1: d = (max − min)/15, q ≤ 15: ≤ d/2 + 15·d·2⁻¹¹ + |min|·2⁻¹¹.
#[test]
fn round_trip_bounds_32() {
    let mut rng = Rng(7);
    let x = rng.values(64 * 256);
    for t in [QType::Q8_0, QType::Q4_0, QType::Q4_1] {
        let m = QMatrix::quantize(t, 64, 256, &x).unwrap();
        let y = m.dequantize();
        for (xb, yb) in x.chunks(32).zip(y.chunks(32)) {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let min = xb.iter().fold(f32::MAX, |a, &v| a.min(v));
            let max = xb.iter().fold(f32::MIN, |a, &v| a.max(v));
            let e = 1.0 / 2048.0;
            let bound = match t {
                QType::Q8_0 => amax / 127.0 * (0.5 + 127.0 * e),
                QType::Q4_0 => amax / 8.0 * (1.0 + 8.0 * e),
                _ => (max - min) / 15.0 * (0.5 + 15.0 * e) + min.abs() * e,
            } * 1.0001
                + 1e-30;
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= bound, "{t}: {a} → {b}, bound {bound}");
            }
        }
    }
}

/// K-quants fit scales by search, so their bound is statistical: RMS error over a Gaussian-ish
/// matrix relative to the RMS value (llama.cpp's `test-quantize-fns` checks similar totals).
/// Measured on this data (Gaussian-ish with 1 % outliers at 8σ): q4_k 0.090, q5_k 0.045,
/// q6_k 0.025; the limits leave ~25 % room.
/// Each weight is also within the group's scale of its value (one 6-bit step of the block maxima
/// plus the level spacing).
#[test]
fn round_trip_k_quants() {
    let mut rng = Rng(11);
    let x = rng.values(32 * 1024);
    for (t, limit) in [
        (QType::Q4_K, 0.11),
        (QType::Q5_K, 0.056),
        (QType::Q6_K, 0.031),
    ] {
        let m = QMatrix::quantize(t, 32, 1024, &x).unwrap();
        let y = m.dequantize();
        let (mut se, mut sx) = (0f64, 0f64);
        for (a, b) in x.iter().zip(&y) {
            se += ((a - b) as f64).powi(2);
            sx += (*a as f64).powi(2);
        }
        let rel = (se / sx).sqrt();
        assert!(rel < limit, "{t}: relative RMS error {rel:.4} ≥ {limit}");
        for (xb, yb) in x.chunks(256).zip(y.chunks(256)) {
            let range =
                xb.iter().fold(0f32, |a, &v| a.max(v)) - xb.iter().fold(0f32, |a, &v| a.min(v));
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= range / 4.0 + 1e-6,
                    "{t}: {a} → {b} (range {range})"
                );
            }
        }
        // Quantising the dequantised values again is (nearly) a fixed point.
        let m2 = QMatrix::quantize(t, 32, 1024, &y).unwrap();
        let y2 = m2.dequantize();
        let drift: f64 = y
            .iter()
            .zip(&y2)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        assert!(
            (drift / sx).sqrt() < limit / 2.0,
            "{t}: requantisation drift"
        );
    }
}

#[test]
fn dequantize_rows_reads_only_those_rows() {
    let mut rng = Rng(3);
    let x = rng.values(5 * 512);
    for t in QType::ALL {
        let m = QMatrix::quantize(t, 5, 512, &x).unwrap();
        let all = m.dequantize();
        let mut part = vec![0f32; 2 * 512];
        m.dequantize_rows(2..4, &mut part);
        assert_eq!(&part[..], &all[2 * 512..4 * 512], "{t}");
        // The matrix built from just those rows' bytes dequantises the same.
        let sub = QMatrix::new(
            t,
            2,
            512,
            Storage::Owned(m.bytes()[2 * m.row_stride()..4 * m.row_stride()].to_vec()),
        )
        .unwrap();
        assert_eq!(sub.dequantize(), part, "{t}");
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantisation

/// ggml's x86 `quantize_row_q8_0` by hand: x = 0.5·(j − 8) for 32 values has amax = 11.5,
/// d = 11.5/127 → f16; id = 127/11.5 = 11.043478; q_j = round_even(0.5·(j − 8)·id).
/// j = 0: −44.17 → −44; j = 1: −38.65 → −39; j = 31: 127.
#[test]
fn act_q8_0_by_hand() {
    let x: Vec<f32> = (0..32).map(|j| 0.5 * (j as f32 - 8.0)).collect();
    let act = Act::new(QType::Q4_0, &x, 1, 32);
    assert_eq!(act.qs[0], -44);
    assert_eq!(act.qs[1], -39);
    assert_eq!(act.qs[8], 0);
    assert_eq!(act.qs[31], 127);
    assert_eq!(act.d[0], f16_at(&f16_bits(11.5 / 127.0).to_le_bytes(), 0));
    assert_eq!(
        act.dsum[0],
        act.d[0] * act.qs.iter().map(|&q| q as i32).sum::<i32>() as f32
    );
    // Q8_1: s = f16(d·Σq) with the unrounded d.
    let act1 = Act::new(QType::Q4_1, &x, 1, 32);
    let s = (11.5f32 / 127.0) * act1.qs.iter().map(|&q| q as i32).sum::<i32>() as f32;
    assert_eq!(act1.s[0], f16_at(&f16_bits(s).to_le_bytes(), 0));
    // Q8_K: d = 1/(−127/max) = −11.5/127 (f32), q = nearest_int(x·(−127/max)): the value of
    // largest magnitude maps to −127 and the scale is negative.
    let xk: Vec<f32> = (0..256).map(|j| 0.5 * ((j % 32) as f32 - 8.0)).collect();
    let actk = Act::new(QType::Q4_K, &xk, 1, 256);
    assert_eq!(actk.d[0], 1.0 / (-127.0 / 11.5));
    assert_eq!(actk.qs[31], -127);
    assert_eq!(actk.qs[0], 44);
    assert_eq!(
        actk.bsums[0],
        actk.qs[..16].iter().map(|&q| q as i16).sum::<i16>()
    );
}

/// The SIMD build of the activation quantiser gives the same bits as the plain one.
#[test]
fn act_quantisation_is_the_same_everywhere() {
    let mut rng = Rng(5);
    let x = rng.values(4096);
    for kind in [ActKind::Q8_0, ActKind::Q8_1] {
        let (mut qs, mut d, mut s, mut sums, mut bs) = (
            vec![0i8; 4096],
            vec![0f32; 128],
            vec![0f32; 128],
            vec![0f32; 128],
            vec![],
        );
        let rows = crate::act::RowsMut {
            qs: &mut qs,
            d: &mut d,
            s: &mut s,
            dsum: &mut sums,
            bsums: &mut bs,
        };
        crate::act::quantize_q8_plain(kind, &x, rows);
        let (mut qs2, mut d2, mut s2, mut sums2, mut bs2) = (
            vec![0i8; 4096],
            vec![0f32; 128],
            vec![0f32; 128],
            vec![0f32; 128],
            vec![],
        );
        let rows = crate::act::RowsMut {
            qs: &mut qs2,
            d: &mut d2,
            s: &mut s2,
            dsum: &mut sums2,
            bsums: &mut bs2,
        };
        quantize_row(kind, &x, rows);
        assert_eq!(qs, qs2);
        assert_eq!(d, d2);
        assert_eq!(s, s2);
        assert_eq!(sums, sums2);
    }
}

// ---------------------------------------------------------------------------------------------
// matmul

/// Reference product in f64 from the dequantised matrix and the unquantised activations, plus
/// Σ|w||x| per output and the activation-quantisation error bound per output.
struct Reference {
    y: Vec<f64>,
    abs: Vec<f64>,
    bound: Vec<f64>,
}

/// Bound on |Σ w·(x − x̂)| where x̂ is the quantised activation:
/// * Q8_0/Q8_1 (block of 32, amax a): x̂ = f16(a/127)·round(x·127/a), so |x − x̂| ≤
///   a/254 + 127·(a/127)·2⁻¹¹ = a·(1/254 + 1/2048); for Q8_1 the `m·s` term adds
///   |m|·2⁻¹¹·Σ|x̂| (s is rounded to f16), bounded by |m|·2⁻¹⁰·Σ|x|.
/// * Q8_K (block of 256): x̂ = (max/127)·q in f32: |x − x̂| ≤ a/254 (+ f32 rounding).
fn reference(m: &QMatrix, x: &[f32], n: usize) -> Reference {
    let (rows, cols) = (m.rows(), m.cols());
    let w = m.dequantize();
    let kind = ActKind::for_weights(m.qtype());
    let (blk, per) = match kind {
        ActKind::F32 => (1, 0.0),
        ActKind::Q8_0 | ActKind::Q8_1 => (32, 1.0 / 254.0 + 1.0 / 2048.0),
        ActKind::Q8K => (256, 1.0 / 254.0 * 1.0001),
    };
    let mut out = Reference {
        y: vec![0.0; n * rows],
        abs: vec![0.0; n * rows],
        bound: vec![0.0; n * rows],
    };
    for c in 0..n {
        let xr = &x[c * cols..(c + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let (mut y, mut abs, mut bound) = (0f64, 0f64, 0f64);
            for (b, (wb, xb)) in wr.chunks(blk).zip(xr.chunks(blk)).enumerate() {
                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                let mut wabs = 0f64;
                for (&wi, &xi) in wb.iter().zip(xb) {
                    y += wi as f64 * xi as f64;
                    abs += (wi as f64 * xi as f64).abs();
                    wabs += (wi as f64).abs();
                }
                bound += amax * per * wabs;
                if kind == ActKind::Q8_1 {
                    let mw = f16_at(m.row_bytes(r), 20 * b + 2).abs() as f64;
                    bound += mw * xb.iter().map(|v| v.abs() as f64).sum::<f64>() / 1024.0;
                }
            }
            out.y[c * rows + r] = y;
            out.abs[c * rows + r] = abs;
            out.bound[c * rows + r] = bound;
        }
    }
    out
}

/// Checks `matmul` for one format and shape with every available kernel set:
/// (a) |y − y_f64(dequantised W, x)| ≤ activation bound + 2·cols·2⁻²⁴·Σ|w||x| (float sums);
/// (b) |y − y_portable| ≤ 2·cols·2⁻²⁴·Σ|w||x| + 1e-6·activation bound — both kernels sum the
///     same per-block products, in different orders.
fn check(t: QType, rows: usize, cols: usize, n: usize, seed: u64) {
    let mut rng = Rng(seed);
    let w = rng.values(rows * cols);
    let x = rng.values(n * cols);
    let m = QMatrix::quantize(t, rows, cols, &w).unwrap();
    let reference = reference(&m, &x, n);
    let mut portable = vec![f32::NAN; n * rows];
    m.matmul_with(KernelSet::Portable, &x, n, &mut portable);
    let float_err = 2.0 * cols as f64 * (0.5f64).powi(24);
    // Every available set, plus the 512-bit kernel variants where the CPU has them (they run by
    // default only where 512-bit units are full width).
    let mut runs: Vec<(String, crate::kernels::TileFn, usize)> = KernelSet::available()
        .into_iter()
        .map(|k| (k.name().to_string(), k.kernel(t), k.act_block()))
        .collect();
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = crate::kernels::x86::wide_kernel(t) {
        runs.push(("avx512-wide".to_string(), k, 4));
    }
    for (name, kernel, cb) in runs {
        let mut y = vec![f32::NAN; n * rows];
        m.matmul_kernel(kernel, cb, &x, n, &mut y);
        for i in 0..n * rows {
            let (got, want) = (y[i] as f64, reference.y[i]);
            let tol = reference.bound[i] + float_err * reference.abs[i] + 1e-30;
            assert!(
                (got - want).abs() <= tol,
                "{t} {rows}×{cols} n={n} {name} [{}, {}]: {got} vs f64 {want}: |Δ| = {:e} > {tol:e}",
                i / rows,
                i % rows,
                (got - want).abs()
            );
            let p = portable[i] as f64;
            let tol_p = float_err * reference.abs[i] + 1e-6 * reference.bound[i] + 1e-30;
            assert!(
                (got - p).abs() <= tol_p,
                "{t} {rows}×{cols} n={n} {name} [{}, {}]: {got} vs portable {p}: |Δ| = {:e} > {tol_p:e}",
                i / rows,
                i % rows,
                (got - p).abs()
            );
        }
    }
}

fn check_format(t: QType) {
    let k = t.block_size().max(32);
    let shapes: &[(usize, usize)] = if k == 256 {
        &[(13, 256), (37, 768), (8, 512)]
    } else {
        &[(13, 96), (37, 320), (8, 64), (5, 33 * 32)]
    };
    let mut seed = 1;
    for &(rows, cols) in shapes {
        for n in [1, 3, 17, 64] {
            seed += 1;
            check(t, rows, cols, n, seed);
        }
    }
}

#[test]
fn matmul_f32() {
    check_format(QType::F32);
    // Element types take any column count.
    check(QType::F32, 9, 37, 5, 99);
}

#[test]
fn matmul_f16() {
    check_format(QType::F16);
    check(QType::F16, 7, 13, 3, 98);
}

#[test]
fn matmul_bf16() {
    check_format(QType::BF16);
    check(QType::BF16, 7, 21, 4, 97);
}

#[test]
fn matmul_q8_0() {
    check_format(QType::Q8_0);
}

#[test]
fn matmul_q4_0() {
    check_format(QType::Q4_0);
}

#[test]
fn matmul_q4_1() {
    check_format(QType::Q4_1);
}

#[test]
fn matmul_q4_k() {
    check_format(QType::Q4_K);
}

#[test]
fn matmul_q5_k() {
    check_format(QType::Q5_K);
}

#[test]
fn matmul_q6_k() {
    check_format(QType::Q6_K);
}

/// Large enough to split into parallel tiles over rows and over activation chunks
/// (16384 columns: 32 activation rows per chunk).
#[test]
fn matmul_parallel_tiles() {
    check(QType::Q4_0, 67, 16384, 70, 1234);
    check(QType::Q4_K, 19, 16384, 40, 4321);
    check(QType::F16, 300, 512, 33, 777);
}

/// Matrices borrowing shared bytes compute the same as owned ones.
#[test]
fn shared_storage_matmul() {
    let mut rng = Rng(21);
    let w = rng.values(9 * 256);
    let x = rng.values(2 * 256);
    let m = QMatrix::quantize(QType::Q4_1, 9, 256, &w).unwrap();
    let mut file = vec![0xAAu8; 7];
    file.extend_from_slice(m.bytes());
    let len = m.bytes().len();
    let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(file);
    let s = QMatrix::new(
        QType::Q4_1,
        9,
        256,
        Storage::Shared {
            owner,
            offset: 7,
            len,
        },
    )
    .unwrap();
    let (mut y1, mut y2) = (vec![0f32; 18], vec![0f32; 18]);
    m.matmul(&x, 2, &mut y1);
    s.matmul(&x, 2, &mut y2);
    assert_eq!(y1, y2);
}

#[test]
fn kernel_set_names() {
    assert_eq!(KernelSet::from_name("AVX2"), Some(KernelSet::Avx2));
    assert_eq!(KernelSet::from_name("portable"), Some(KernelSet::Portable));
    assert_eq!(KernelSet::from_name("avx512"), Some(KernelSet::Avx512));
    assert_eq!(KernelSet::from_name("sse9"), None);
    assert!(KernelSet::Portable.is_available());
    assert_eq!(KernelSet::available()[0], KernelSet::Portable);
    let f = crate::cpu_features();
    assert!(
        ["portable", "avx2", "avx512", "avx512vnni"].contains(&f),
        "{f}"
    );
    // An unavailable set falls back to the best available one rather than failing.
    let m = QMatrix::quantize(QType::Q8_0, 1, 32, &[1.0; 32]).unwrap();
    let mut y = [0f32];
    for set in KernelSet::ALL {
        m.matmul_with(set, &[1.0; 32], 1, &mut y);
        // 32·(127·f16(1/127))², and f16(1/127) is within 2⁻¹¹ of 1/127.
        assert!((y[0] - 32.0).abs() < 32.0 * 2.0 / 2048.0, "{y:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// matmul_exact

/// Every exact kernel this CPU can run for `t`, by name: each set's streaming kernel, and its
/// panel kernel forced for every `n`.
fn exact_runs(t: QType) -> Vec<(String, crate::kernels::ExactKernels)> {
    let mut runs = Vec::new();
    for set in KernelSet::available() {
        let k = set.exact(t);
        runs.push((
            format!("{}/stream", set.name()),
            crate::kernels::ExactKernels { gemm: None, ..k },
        ));
        if let Some(g) = k.gemm {
            runs.push((
                format!("{}/gemm", set.name()),
                crate::kernels::ExactKernels {
                    gemm: Some(crate::kernels::Gemm { from: 1, ..g }),
                    ..k
                },
            ));
        }
    }
    runs
}

/// Checks `matmul_exact` for one format and shape with every exact kernel: the product must be
/// the f32 product of the dequantised matrix up to summation order,
/// |y − y_f64(dequantised W, x)| ≤ 2·cols·2⁻²⁴·Σ|w||x|.
fn check_exact(t: QType, rows: usize, cols: usize, n: usize, seed: u64) {
    let mut rng = Rng(seed);
    let w = rng.values(rows * cols);
    let x = rng.values(n * cols);
    let m = QMatrix::quantize(t, rows, cols, &w).unwrap();
    let wd = m.dequantize();
    let (mut want, mut abs) = (vec![0f64; n * rows], vec![0f64; n * rows]);
    for c in 0..n {
        let xr = &x[c * cols..(c + 1) * cols];
        for r in 0..rows {
            let wr = &wd[r * cols..(r + 1) * cols];
            for (&wi, &xi) in wr.iter().zip(xr) {
                want[c * rows + r] += wi as f64 * xi as f64;
                abs[c * rows + r] += (wi as f64 * xi as f64).abs();
            }
        }
    }
    let float_err = 2.0 * cols as f64 * (0.5f64).powi(24);
    for (name, k) in exact_runs(t) {
        let mut y = vec![f32::NAN; n * rows];
        m.matmul_exact_kernels(k, &x, n, &mut y);
        for i in 0..n * rows {
            let (got, want) = (y[i] as f64, want[i]);
            let tol = float_err * abs[i] + 1e-30;
            assert!(
                (got - want).abs() <= tol,
                "{t} {rows}×{cols} n={n} {name} [{}, {}]: {got} vs f64 {want}: |Δ| = {:e} > {tol:e}",
                i / rows,
                i % rows,
                (got - want).abs()
            );
        }
    }
}

fn check_exact_format(t: QType) {
    let shapes: &[(usize, usize)] = if t.block_size() == 256 {
        &[(13, 256), (37, 768), (9, 512), (1, 256)]
    } else {
        &[(13, 96), (37, 320), (7, 64), (5, 33 * 32), (25, 32)]
    };
    let mut seed = 100;
    for &(rows, cols) in shapes {
        for n in [1, 2, 3, 4, 5, 17, 64, 128] {
            seed += 1;
            check_exact(t, rows, cols, n, seed);
        }
    }
}

#[test]
fn exact_f32() {
    check_exact_format(QType::F32);
    // Element types take any column count (a partial last chunk, and a partial panel step).
    for (rows, cols) in [(9, 37), (3, 7), (11, 300)] {
        for n in [1, 3, 17, 40] {
            check_exact(QType::F32, rows, cols, n, (rows * cols + n) as u64);
        }
    }
}

#[test]
fn exact_f16() {
    check_exact_format(QType::F16);
    for n in [1, 4, 19] {
        check_exact(QType::F16, 7, 13, n, 98);
        check_exact(QType::F16, 10, 291, n, 97);
    }
}

#[test]
fn exact_bf16() {
    check_exact_format(QType::BF16);
    for n in [1, 4, 19] {
        check_exact(QType::BF16, 7, 21, n, 96);
        check_exact(QType::BF16, 10, 291, n, 95);
    }
}

#[test]
fn exact_q8_0() {
    check_exact_format(QType::Q8_0);
}

#[test]
fn exact_q4_0() {
    check_exact_format(QType::Q4_0);
}

#[test]
fn exact_q4_1() {
    check_exact_format(QType::Q4_1);
}

#[test]
fn exact_q4_k() {
    check_exact_format(QType::Q4_K);
}

#[test]
fn exact_q5_k() {
    check_exact_format(QType::Q5_K);
}

#[test]
fn exact_q6_k() {
    check_exact_format(QType::Q6_K);
}

/// The widening is bit-exact: with the identity as activations (n = cols) every kernel returns
/// the transposed dequantised matrix itself (each output is one product w·1 plus zeros).
#[test]
fn exact_widening_is_dequantize() {
    for t in QType::ALL {
        let (rows, cols) = (11, if t.block_size() == 256 { 256 } else { 96 });
        let mut rng = Rng(t.ggml_id() as u64 + 5);
        let m = QMatrix::quantize(t, rows, cols, &rng.values(rows * cols)).unwrap();
        let w = m.dequantize();
        let mut eye = vec![0f32; cols * cols];
        for k in 0..cols {
            eye[k * cols + k] = 1.0;
        }
        for (name, k) in exact_runs(t) {
            let mut y = vec![f32::NAN; cols * rows];
            m.matmul_exact_kernels(k, &eye, cols, &mut y);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        y[c * rows + r],
                        w[r * cols + c],
                        "{t} {name}: weight [{r}, {c}]"
                    );
                }
            }
        }
    }
}

/// Large enough to split into parallel tiles over rows and over activation chunks (more than
/// 192 activation rows for the panel kernels).
#[test]
fn exact_parallel_tiles() {
    check_exact(QType::Q4_0, 67, 4096, 200, 1234);
    check_exact(QType::Q6_K, 45, 2048, 250, 4321);
    check_exact(QType::F16, 300, 512, 33, 777);
    check_exact(QType::Q4_1, 301, 576, 3, 778);
}

/// Every public entry point agrees with the kernels it names, and an unavailable set falls back.
#[test]
fn exact_public_api() {
    let mut rng = Rng(31);
    let m = QMatrix::quantize(QType::Q4_1, 9, 256, &rng.values(9 * 256)).unwrap();
    let x = rng.values(3 * 256);
    let mut y = vec![0f32; 27];
    m.matmul_exact(&x, 3, &mut y);
    let mut y2 = vec![0f32; 27];
    m.matmul_exact_with(KernelSet::active(), &x, 3, &mut y2);
    assert_eq!(y, y2);
    for set in KernelSet::ALL {
        m.matmul_exact_with(set, &x, 3, &mut y2);
        for (a, b) in y.iter().zip(&y2) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{set:?}: {a} vs {b}"
            );
        }
    }
    // Empty shapes.
    m.matmul_exact(&[], 0, &mut []);
    let e = QMatrix::quantize(QType::F32, 2, 0, &[]).unwrap();
    let mut y = [1f32; 6];
    e.matmul_exact(&[], 3, &mut y);
    assert_eq!(y, [0.0; 6]);
}

/// `matmul_exact_many` gives, bit for bit, each matrix's own `matmul_exact` — mixed formats and
/// row counts, few activation rows (streaming kernels) and many (panel kernels), with the
/// thread pool's parallel split (the matrices are large enough to be split).
#[test]
fn matmul_exact_many_equals_each_product() {
    let mut rng = Rng(0x0005_eed0_f3a7);
    let cols = 320;
    let spec = [
        (QType::F32, 96),
        (QType::Q4_1, 200),
        (QType::Q8_0, 64),
        (QType::F16, 3),
    ];
    let ms: Vec<QMatrix> = spec
        .iter()
        .map(|&(t, rows)| QMatrix::quantize(t, rows, cols, &rng.values(rows * cols)).unwrap())
        .collect();
    let refs: Vec<&QMatrix> = ms.iter().collect();
    for n in [1, 3, 7, 16, 40, 130] {
        let x = rng.values(n * cols);
        let mut many: Vec<Vec<f32>> = ms.iter().map(|m| vec![f32::NAN; n * m.rows()]).collect();
        let mut outs: Vec<&mut [f32]> = many.iter_mut().map(|v| &mut v[..]).collect();
        QMatrix::matmul_exact_many(&refs, &x, n, &mut outs);
        for (m, got) in ms.iter().zip(&many) {
            let mut want = vec![0f32; n * m.rows()];
            m.matmul_exact(&x, n, &mut want);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} [{}, {cols}] n = {n}: the combined product differs",
                m.qtype().name(),
                m.rows()
            );
        }
    }
}
