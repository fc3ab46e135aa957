//! Element-wise activations on the host, in straight-line arithmetic the compiler vectorizes
//! (compiled for AVX-512, AVX2 and plain targets, chosen like the matrix kernels), over the
//! caller's slice in place and in parallel on rayon's pool.

use rayon::prelude::*;

use crate::KernelSet;

/// Below this many values the work stays on the calling thread.
const SERIAL: usize = 1 << 15;

/// `x ← 0.5·x·(1 + erf(x/√2))` (GELU with the exact erf, HF `gelu`) to within 2e-7·|x|.
pub fn gelu_erf(x: &mut [f32]) {
    let set = KernelSet::active();
    let run = |c: &mut [f32]| match set {
        // SAFETY: the kernel set is available (KernelSet::active checks).
        #[cfg(target_arch = "x86_64")]
        KernelSet::Avx512 => unsafe { gelu_avx512(c) },
        #[cfg(target_arch = "x86_64")]
        KernelSet::Avx2 => unsafe { gelu_avx2(c) },
        _ => gelu_all(c),
    };
    if x.len() < SERIAL {
        run(x);
    } else {
        x.par_chunks_mut(SERIAL / 2).for_each(run);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn gelu_avx512(x: &mut [f32]) {
    gelu_all(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_avx2(x: &mut [f32]) {
    gelu_all(x)
}

#[inline(always)]
fn gelu_all(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu(*v);
    }
}

/// `g ← silu(g)·u = g·σ(g)·u`: SwiGLU's gated product (LLaMA's `act(gate(x)) * up(x)`) in one
/// pass, with the sigmoid through the vectorizable `exp` (relative error below 3e-7).
///
/// # Panics
/// When the slices differ in length.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "gate and up have the same shape");
    let set = KernelSet::active();
    let run = |(g, u): (&mut [f32], &[f32])| match set {
        // SAFETY: the kernel set is available (KernelSet::active checks).
        #[cfg(target_arch = "x86_64")]
        KernelSet::Avx512 => unsafe { silu_mul_avx512(g, u) },
        #[cfg(target_arch = "x86_64")]
        KernelSet::Avx2 => unsafe { silu_mul_avx2(g, u) },
        _ => silu_mul_all(g, u),
    };
    if g.len() < SERIAL {
        run((g, u));
    } else {
        g.par_chunks_mut(SERIAL / 2)
            .zip(u.par_chunks(SERIAL / 2))
            .for_each(run);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn silu_mul_avx512(g: &mut [f32], u: &[f32]) {
    silu_mul_all(g, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(g: &mut [f32], u: &[f32]) {
    silu_mul_all(g, u)
}

#[inline(always)]
fn silu_mul_all(g: &mut [f32], u: &[f32]) {
    for (a, &b) in g.iter_mut().zip(u) {
        *a = silu(*a) * b;
    }
}

/// SwiGLU's backward pass: for `y = silu(g)·u` and the gradient `dy` of `y`, writes
/// `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))` and `du = dy·silu(g)`, in one pass over the five slices
/// (the sigmoid through the vectorizable `exp`, as [`silu_mul`]).
///
/// # Panics
/// When the slices differ in length.
pub fn swiglu_backward(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    let n = g.len();
    assert!(
        u.len() == n && dy.len() == n && dg.len() == n && du.len() == n,
        "gate, up and the gradients have the same shape"
    );
    let set = KernelSet::active();
    let run = |start: usize, dg: &mut [f32], du: &mut [f32]| {
        let end = start + dg.len();
        let (g, u, dy) = (&g[start..end], &u[start..end], &dy[start..end]);
        match set {
            // SAFETY: the kernel set is available (KernelSet::active checks).
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 => unsafe { swiglu_backward_avx512(g, u, dy, dg, du) },
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => unsafe { swiglu_backward_avx2(g, u, dy, dg, du) },
            _ => swiglu_backward_all(g, u, dy, dg, du),
        }
    };
    if n < SERIAL {
        run(0, dg, du);
    } else {
        let chunk = SERIAL / 2;
        dg.par_chunks_mut(chunk)
            .zip(du.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (dg, du))| run(i * chunk, dg, du));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn swiglu_backward_avx512(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    swiglu_backward_all(g, u, dy, dg, du)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_backward_avx2(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    swiglu_backward_all(g, u, dy, dg, du)
}

#[inline(always)]
fn swiglu_backward_all(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
    for i in 0..dg
        .len()
        .min(g.len())
        .min(u.len())
        .min(dy.len())
        .min(du.len())
    {
        let x = g[i];
        let s = sigmoid(x);
        let d = dy[i];
        du[i] = d * x * s;
        dg[i] = d * u[i] * s * (1.0 + x * (1.0 - s));
    }
}

/// `σ(x)`, with `e^(−|x|)` (an argument ≤ 0, as [`crate::attention::exp`] wants):
/// `1/(1 + e^(−x))` for `x ≥ 0`, `e^x/(1 + e^x)` below.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = crate::attention::exp(-x.abs());
    (if x >= 0.0 { 1.0 } else { e }) / (1.0 + e)
}

/// `x·σ(x)`.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// GELU of one value through [`erf`].
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), with `e^(−x²)` from
/// [`crate::attention`]'s vectorizable `exp`.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * crate::attention::exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SiLU·up against the f64 definition over ±100 (tails included).
    #[test]
    fn silu_mul_matches_its_definition() {
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-3).collect();
        let us: Vec<f32> = (0..xs.len())
            .map(|i| ((i % 7) as f32 - 3.0) * 0.5)
            .collect();
        let mut got = xs.clone();
        silu_mul(&mut got, &us);
        for ((&x, &u), &g) in xs.iter().zip(&us).zip(&got) {
            let (x, u) = (x as f64, u as f64);
            let want = x / (1.0 + (-x).exp()) * u;
            assert!(
                (g as f64 - want).abs() <= 4e-7 * want.abs() + 1e-30,
                "x {x}, u {u}: {g} vs {want}"
            );
        }
    }

    /// SwiGLU's backward pass against the f64 derivatives over ±100 (tails included), on
    /// enough values to run in parallel.
    #[test]
    fn swiglu_backward_matches_the_derivatives() {
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-3).collect();
        let us: Vec<f32> = (0..xs.len())
            .map(|i| ((i % 7) as f32 - 3.0) * 0.5)
            .collect();
        let dys: Vec<f32> = (0..xs.len())
            .map(|i| ((i % 5) as f32 - 1.5) * 0.3)
            .collect();
        let (mut dg, mut du) = (vec![0f32; xs.len()], vec![0f32; xs.len()]);
        swiglu_backward(&xs, &us, &dys, &mut dg, &mut du);
        for i in 0..xs.len() {
            let (x, u, d) = (xs[i] as f64, us[i] as f64, dys[i] as f64);
            let s = 1.0 / (1.0 + (-x).exp());
            let want_du = d * x * s;
            let want_dg = d * u * s * (1.0 + x * (1.0 - s));
            assert!(
                (du[i] as f64 - want_du).abs() <= 5e-7 * want_du.abs() + 1e-30,
                "x {x}: du {} vs {want_du}",
                du[i]
            );
            assert!(
                (dg[i] as f64 - want_dg).abs()
                    <= 1e-6 * (want_dg.abs() + (d * u * s).abs()) + 1e-30,
                "x {x}: dg {} vs {want_dg}",
                dg[i]
            );
        }
    }

    /// erf against f64's (libm through a series-free identity is not in std: compare with a
    /// high-order reference sum) and GELU against its definition, over ±10.
    #[test]
    fn gelu_matches_its_definition() {
        // erf by its Taylor series (converges fast for |x| ≤ 3) and 1 − erfc asymptotics past.
        fn erf64(x: f64) -> f64 {
            if x.abs() > 5.0 {
                return x.signum();
            }
            let (mut term, mut sum, x2) = (x, x, x * x);
            for n in 1..200 {
                term *= -x2 / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        }
        let xs: Vec<f32> = (-100_000..=100_000).map(|i| i as f32 * 1e-4).collect();
        let mut got = xs.clone();
        gelu_erf(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let x = x as f64;
            let want = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            assert!(
                (g as f64 - want).abs() <= 2e-7 * (1.0 + x.abs()),
                "x {x}: {g} vs {want}"
            );
        }
    }
}
