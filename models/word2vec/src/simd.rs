//! Dot products and `y += a·x` on f32 slices: a portable version and, where the CPU has them,
//! AVX2 + FMA versions chosen at run time.

/// The two vector primitives the trainer and the queries are built from.
pub(crate) trait Kernel: Copy + Send + Sync {
    /// Σ a[i]·b[i] over the common length.
    fn dot(a: &[f32], b: &[f32]) -> f32;
    /// y[i] += alpha·x[i] over the common length.
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]);
}

/// Plain Rust with eight accumulators, which LLVM turns into SSE on any x86-64 (and NEON on arm).
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Kernel for Portable {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [0.0f32; 8];
        let ca = a.chunks_exact(8);
        let cb = b.chunks_exact(8);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for k in 0..8 {
                acc[k] += x[k] * y[k];
            }
        }
        let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for (x, y) in ra.iter().zip(rb) {
            s += x * y;
        }
        s
    }

    #[inline(always)]
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += alpha * *xi;
        }
    }
}

/// AVX2 + FMA; only constructed after `is_x86_feature_detected!` said yes.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY: every load reads 8 floats at offsets i..i+8 <= n of both slices.
        unsafe {
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i + 8 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
            let acc = _mm256_add_ps(acc0, acc1);
            let lo = _mm256_castps256_ps128(acc);
            let hi = _mm256_extractf128_ps(acc, 1);
            let s4 = _mm_add_ps(lo, hi);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
            let mut s = _mm_cvtss_f32(s1);
            while i < n {
                s += *pa.add(i) * *pb.add(i);
                i += 1;
            }
            s
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(super) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: every access is at offsets i..i+8 <= n of both slices.
        unsafe {
            while i + 8 <= n {
                let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
                _mm256_storeu_ps(py.add(i), r);
                i += 8;
            }
            while i < n {
                *py.add(i) += alpha * *px.add(i);
                i += 1;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Kernel for Avx2 {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: `Avx2` values exist only when the CPU supports AVX2 and FMA.
        unsafe { avx2::dot(a, b) }
    }
    #[inline(always)]
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: as above.
        unsafe { avx2::axpy(alpha, x, y) }
    }
}

/// Whether the AVX2 + FMA kernels may be used on this CPU.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// out[r] = dot(matrix row r, q) for every row of a row-major `[rows, dim]` matrix.
pub(crate) fn matvec(matrix: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features were just detected.
        unsafe { matvec_avx2(matrix, dim, q, out) };
        return;
    }
    matvec_generic::<Portable>(matrix, dim, q, out);
}

#[inline(always)]
fn matvec_generic<K: Kernel>(matrix: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(matrix.chunks_exact(dim)) {
        *o = K::dot(row, q);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_avx2(matrix: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    matvec_generic::<Avx2>(matrix, dim, q, out)
}

/// Plain dot product with run-time dispatch (for one-off uses outside hot loops).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        return Avx2::dot(a, b);
    }
    Portable::dot(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_naive_sums() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 50, 100, 301] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
            let naive: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64) * (*y as f64))
                .sum();
            assert!((Portable::dot(&a, &b) as f64 - naive).abs() < 1e-4);
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-4);
            let mut y1 = b.clone();
            let mut y2 = b.clone();
            Portable::axpy(0.5, &a, &mut y1);
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                Avx2::axpy(0.5, &a, &mut y2);
            } else {
                Portable::axpy(0.5, &a, &mut y2);
            }
            for ((p, q), (x, y)) in y1.iter().zip(&y2).zip(a.iter().zip(&b)) {
                assert!((p - (y + 0.5 * x)).abs() < 1e-6);
                assert!((p - q).abs() < 1e-6);
            }
        }
    }
}
