//! Scaled dot-product attention on the host in one pass: `softmax(q·kᵀ·scale + mask)·v` for
//! every head, grouped-query heads included, read from strided views (so the callers' head
//! transposes and KV-cache slices are never copied) and written in `[batch, t, heads, dv]`
//! order (the layout the output projection reads).
//!
//! Work is split into tasks of one batch row × one key/value head × a chunk of queries; the
//! query heads that share a key/value head are handled together, so each key and value is read
//! once per task. Scores are computed four query rows × sixteen keys at a time from a transposed
//! key panel (no horizontal sums), the softmax runs per row, and `p·v` accumulates four rows ×
//! sixteen value columns at a time. Key blocks that a causal mask hides from every row of a tile
//! are skipped. The loops are written once and compiled for AVX-512, AVX2 + FMA and plain x86-64
//! / other targets, chosen at run time like the matrix kernels ([`crate::KernelSet`]).
//!
//! The numbers are the same as the three-op form (`matmul`, `mask_fill(f32::MIN)`, `softmax`,
//! `matmul`) up to the order of the float sums: a masked score is `f32::MIN`, so a row whose
//! keys are all masked gets uniform weights there as well.

use crate::parallel::run_tasks;
use crate::KernelSet;

/// A read-only strided view of a 4-D f32 tensor: element `[a, b, c, d]` is
/// `data[offset + a·strides[0] + b·strides[1] + c·strides[2] + d·strides[3]]`.
#[derive(Debug, Clone, Copy)]
pub struct View4<'a> {
    /// The buffer the view reads.
    pub data: &'a [f32],
    /// Index of element `[0, 0, 0, 0]`.
    pub offset: usize,
    /// The view's shape.
    pub dims: [usize; 4],
    /// Elements between neighbours along each axis (0 broadcasts).
    pub strides: [usize; 4],
}

impl View4<'_> {
    fn at(&self, a: usize, b: usize, c: usize, d: usize) -> usize {
        self.offset
            + a * self.strides[0]
            + b * self.strides[1]
            + c * self.strides[2]
            + d * self.strides[3]
    }

    /// Whether every element the view names lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.dims.contains(&0) {
            return true;
        }
        let last = self
            .dims
            .iter()
            .zip(self.strides)
            .try_fold(self.offset, |acc, (&n, s)| {
                (n - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            });
        matches!(last, Some(l) if l < self.data.len())
    }
}

/// Which keys each query may not see.
#[derive(Debug, Clone, Copy)]
pub enum Mask<'a> {
    /// Every query sees every key.
    None,
    /// Query `i` sees keys `0..=past + i` (`past` cached positions before the queries).
    Causal {
        /// Positions before the first query.
        past: usize,
    },
    /// `true` where query `i` of batch row `b` must not see key `j`: a `[mb, mt, ms]` row-major
    /// array, broadcast over the batch when `mb == 1` and over the queries when `mt == 1`.
    Bool {
        /// The mask values.
        data: &'a [bool],
        /// `[mb, mt, ms]`.
        dims: [usize; 3],
    },
}

/// Attention shapes that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attention shapes do not fit: {0}")]
pub struct AttentionShapeError(String);

/// `softmax(q·kᵀ·scale + mask)·v` with grouped-query heads, written to `out` as
/// `[batch, t, heads, dv]`.
///
/// `q` is `[batch, heads, t, d]`, `k` `[batch, kv_heads, s, d]`, `v` `[batch, kv_heads, s, dv]`;
/// `heads` must be a multiple of `kv_heads` (query head `h` reads key/value head
/// `h / (heads / kv_heads)`).
pub fn attention(
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    mask: Mask<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), AttentionShapeError> {
    attention_with(KernelSet::active(), q, k, v, mask, scale, out)
}

/// [`attention`] with a given kernel set (one that is available on this CPU).
pub fn attention_with(
    set: KernelSet,
    q: View4<'_>,
    k: View4<'_>,
    v: View4<'_>,
    mask: Mask<'_>,
    scale: f32,
    out: &mut [f32],
) -> Result<(), AttentionShapeError> {
    if !set.is_available() {
        return Err(AttentionShapeError(format!(
            "{set:?} kernels are not available on this CPU"
        )));
    }
    let [b, h, t, d] = q.dims;
    let [kb, kvh, s, kd] = k.dims;
    let [vb, vh, vs, dv] = v.dims;
    let bad = |what: String| Err(AttentionShapeError(what));
    if kb != b || vb != b || vh != kvh || vs != s || kd != d {
        return bad(format!("q {:?}, k {:?}, v {:?}", q.dims, k.dims, v.dims));
    }
    if kvh == 0 || h % kvh != 0 {
        return bad(format!("{h} query heads over {kvh} key/value heads"));
    }
    if out.len() != b * t * h * dv {
        return bad(format!("output of {} for {b}×{t}×{h}×{dv}", out.len()));
    }
    if !(q.in_bounds() && k.in_bounds() && v.in_bounds()) {
        return bad("a view reaches past its buffer".into());
    }
    if let Mask::Bool {
        data,
        dims: [mb, mt, ms],
    } = mask
    {
        if (mb != 1 && mb != b) || (mt != 1 && mt != t) || ms != s || data.len() != mb * mt * ms {
            return bad(format!("mask {:?} for {b}×{t}×{s}", [mb, mt, ms]));
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    let groups = h / kvh;
    // Queries per task: all of them for decoding; chunks for long prompts, so both threads
    // get work and a task's scores stay in L2.
    let threads = rayon::current_num_threads().max(1);
    let per_head = b * kvh;
    let mut chunk = t;
    while chunk > 8 && (per_head * t.div_ceil(chunk) < 4 * threads || chunk * groups * s > 1 << 16)
    {
        chunk = chunk.div_ceil(2);
    }
    let chunks = t.div_ceil(chunk);
    let tasks = per_head * chunks;
    let panels = s.div_ceil(L);
    let kt = (chunk * groups >= 2 * QR).then(|| {
        let mut kt = vec![0f32; b * kvh * panels * d * L];
        for (bg, kt) in kt.chunks_exact_mut(panels * d * L).enumerate() {
            for j in 0..s {
                let base = k.at(bg / kvh, bg % kvh, j, 0);
                let panel = &mut kt[(j / L) * d * L..];
                for c in 0..d {
                    panel[c * L + j % L] = k.data[base + c * k.strides[3]];
                }
            }
        }
        kt
    });
    let job = Job {
        kt,
        q,
        k,
        v,
        mask,
        scale,
        groups,
        out: OutPtr(out.as_mut_ptr()),
        out_len: out.len(),
    };
    let run = |task: usize| {
        let (bh, c) = (task / chunks, task % chunks);
        let (bi, g) = (bh / kvh, bh % kvh);
        let rows = c * chunk..((c + 1) * chunk).min(t);
        // SAFETY: tasks write disjoint (batch, query, head) rows of `out`; the kernel set is
        // available on this CPU (KernelSet::active checks).
        unsafe { job.run(set, bi, g, rows) };
    };
    let work = b * h * t * s * (d + dv);
    run_tasks(tasks, if work >= 1 << 16 { threads } else { 1 }, &run);
    Ok(())
}

struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint parts of the output.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

/// Query rows per register tile.
const QR: usize = 4;
/// Keys (and value columns) per register tile.
const L: usize = 16;

struct Job<'a> {
    /// Keys of every (batch row, key/value head) in transposed panels, when tasks have enough
    /// query rows to use them (prefill); decoding reads the keys in place.
    kt: Option<Vec<f32>>,
    q: View4<'a>,
    k: View4<'a>,
    v: View4<'a>,
    mask: Mask<'a>,
    scale: f32,
    groups: usize,
    out: OutPtr,
    out_len: usize,
}

impl Job<'_> {
    /// # Safety
    /// `set` is available on this CPU; no other task writes the output rows of `(bi, g, rows)`.
    unsafe fn run(&self, set: KernelSet, bi: usize, g: usize, rows: std::ops::Range<usize>) {
        match set {
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 => self.run_avx512(bi, g, rows),
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => self.run_avx2(bi, g, rows),
            _ => self.task::<1>(bi, g, rows),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn run_avx512(&self, bi: usize, g: usize, rows: std::ops::Range<usize>) {
        self.task::<4>(bi, g, rows)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, bi: usize, g: usize, rows: std::ops::Range<usize>) {
        self.task::<2>(bi, g, rows)
    }

    /// One batch row, one key/value head, the queries `rows` of each of its query heads.
    #[inline(always)]
    fn task<const W: usize>(&self, bi: usize, g: usize, rows: std::ops::Range<usize>) {
        let [_, h, t, d] = self.q.dims;
        let [_, _, s, _] = self.k.dims;
        let dv = self.v.dims[3];
        let n = rows.len() * self.groups;
        // Keys any row of this task may see (a causal mask hides the rest from all of them).
        let s_used = match self.mask {
            Mask::Causal { past } => (past + rows.end).min(s),
            _ => s,
        };
        let panels = s_used.div_ceil(L);

        // Values as contiguous rows (only copied when the view's rows are not).
        let v_rows: std::borrow::Cow<'_, [f32]> =
            if self.v.strides[3] == 1 && self.v.strides[2] == dv {
                let start = self.v.at(bi, g, 0, 0);
                std::borrow::Cow::Borrowed(&self.v.data[start..start + s_used * dv])
            } else {
                let mut rows = Vec::with_capacity(s_used * dv);
                for j in 0..s_used {
                    let base = self.v.at(bi, g, j, 0);
                    rows.extend((0..dv).map(|c| self.v.data[base + c * self.v.strides[3]]));
                }
                std::borrow::Cow::Owned(rows)
            };

        // The task's query rows, contiguous: row r = (head gi, query i) with r = gi·len + (i − start).
        let len = rows.len();
        let mut qs = vec![0f32; n.div_ceil(QR) * QR * d];
        for gi in 0..self.groups {
            let head = g * self.groups + gi;
            for (ri, i) in rows.clone().enumerate() {
                let base = self.q.at(bi, head, i, 0);
                let dst = &mut qs[(gi * len + ri) * d..][..d];
                for (c, x) in dst.iter_mut().enumerate() {
                    *x = self.q.data[base + c * self.q.strides[3]];
                }
            }
        }
        let query = |r: usize| rows.start + r % len;

        // Scores, then probabilities, one row of s_used per query row.
        let sw = panels * L;
        let mut p = vec![0f32; n.div_ceil(QR) * QR * sw];
        for r0 in (0..n).step_by(QR) {
            let last_query = (r0..(r0 + QR).min(n)).map(query).max().unwrap_or(0);
            for pi in 0..panels {
                let j0 = pi * L;
                if let Mask::Causal { past } = self.mask {
                    if j0 > past + last_query {
                        for r in 0..QR {
                            p[(r0 + r) * sw + j0..][..L].fill(f32::MIN);
                        }
                        continue;
                    }
                }
                let q0 = &qs[r0 * d..(r0 + QR) * d];
                let acc = match &self.kt {
                    Some(kt) => {
                        let per_head = s.div_ceil(L) * d * L;
                        let head = &kt[(bi * self.k.dims[1] + g) * per_head..][..per_head];
                        qk_tile::<W>(q0, &head[pi * d * L..(pi + 1) * d * L], d)
                    }
                    None => {
                        let keys = j0..(j0 + L).min(s_used);
                        qk_rows::<W>(q0, (n - r0).min(QR), &self.k, bi, g, keys)
                    }
                };
                for (r, row) in acc.iter().enumerate() {
                    let dst = &mut p[(r0 + r) * sw + j0..][..L];
                    for (o, &a) in dst.iter_mut().zip(row) {
                        *o = a * self.scale;
                    }
                }
            }
        }
        // Masks, softmax.
        for r in 0..n {
            let i = query(r);
            let row = &mut p[r * sw..r * sw + sw];
            row[s_used..].fill(f32::MIN);
            match self.mask {
                Mask::None => {}
                Mask::Causal { past } => {
                    let end = (past + i + 1).min(s_used);
                    row[end..s_used].fill(f32::MIN);
                }
                Mask::Bool {
                    data,
                    dims: [mb, mt, ms],
                } => {
                    let mrow = (if mb == 1 { 0 } else { bi }) * mt + if mt == 1 { 0 } else { i };
                    let m = &data[mrow * ms..mrow * ms + s_used];
                    for (x, &hide) in row.iter_mut().zip(m) {
                        if hide {
                            *x = f32::MIN;
                        }
                    }
                }
            }
            // Over whole vectors: the padding past s_used is f32::MIN and gets weight 0.
            softmax(row, s_used);
        }
        // out = p · v, QR rows × W·L value columns at a time, from the values padded to whole
        // vectors.
        let dvp = dv.div_ceil(L) * L;
        let vp: std::borrow::Cow<'_, [f32]> = if dvp == dv {
            v_rows
        } else {
            let mut vp = vec![0f32; s_used * dvp];
            for (dst, src) in vp.chunks_exact_mut(dvp).zip(v_rows.chunks_exact(dv.max(1))) {
                dst[..dv].copy_from_slice(src);
            }
            std::borrow::Cow::Owned(vp)
        };
        for r0 in (0..n).step_by(QR) {
            let rn = (n - r0).min(QR);
            // Keys with a non-zero weight for some row of the tile.
            let j_end = match self.mask {
                Mask::Causal { past } => {
                    let last = (r0..r0 + rn).map(query).max().unwrap_or(0);
                    (past + last + 1).min(s_used)
                }
                _ => s_used,
            };
            let p0 = &p[r0 * sw..(r0 + QR) * sw];
            for c0 in (0..dvp).step_by(W * L) {
                let vecs = ((dvp - c0) / L).min(W);
                let acc = pv_tile::<W>(p0, sw, &vp[c0..], dvp, vecs, j_end);
                for (r, acc) in acc.iter().enumerate().take(rn) {
                    let (gi, i) = ((r0 + r) / len, query(r0 + r));
                    let head = g * self.groups + gi;
                    let row = ((bi * t + i) * h + head) * dv;
                    for (k, a) in acc.iter().enumerate().take(vecs) {
                        let c = c0 + k * L;
                        let cw = dv.saturating_sub(c).min(L);
                        debug_assert!(row + c + cw <= self.out_len);
                        // SAFETY: (bi, i, head) is this task's row; in bounds of out (checked
                        // size: row + dv ≤ len).
                        unsafe {
                            std::ptr::copy_nonoverlapping(a.as_ptr(), self.out.0.add(row + c), cw);
                        }
                    }
                }
            }
        }
    }
}

/// Scores of `QR` query rows (`q`: `QR × d`) against the `L` keys of one transposed panel
/// (`panel[c·L + l]` = key `l`, feature `c`).
#[inline(always)]
fn qk_tile<const W: usize>(q: &[f32], panel: &[f32], d: usize) -> [[f32; L]; QR] {
    debug_assert!(q.len() >= QR * d && panel.len() >= d * L);
    #[cfg(target_arch = "x86_64")]
    if W == 4 {
        // SAFETY: W == 4 only in the AVX-512 instantiation (`run_avx512`); lengths checked above.
        return unsafe { x86::qk_tile(q, panel, d) };
    }
    let mut acc = [[0f32; L]; QR];
    for (c, kc) in panel.chunks_exact(L).enumerate().take(d) {
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = q[r * d + c];
            for l in 0..L {
                acc[l] += x * kc[l];
            }
        }
    }
    acc
}

/// Scores of up to `QR` query rows against keys `keys` (at most `L`) read in place: one dot
/// product each (few rows: decoding, where packing the keys would cost more than it saves).
#[inline(always)]
fn qk_rows<const W: usize>(
    q: &[f32],
    rows: usize,
    k: &View4<'_>,
    bi: usize,
    g: usize,
    keys: std::ops::Range<usize>,
) -> [[f32; L]; QR] {
    let d = k.dims[3];
    let mut out = [[0f32; L]; QR];
    let mut tmp = Vec::new();
    for (l, j) in keys.enumerate() {
        let base = k.at(bi, g, j, 0);
        let key: &[f32] = if k.strides[3] == 1 {
            &k.data[base..base + d]
        } else {
            tmp.clear();
            tmp.extend((0..d).map(|c| k.data[base + c * k.strides[3]]));
            &tmp
        };
        for (r, out) in out.iter_mut().enumerate().take(rows) {
            out[l] = dot::<W>(&q[r * d..(r + 1) * d], key);
        }
    }
    out
}

/// `Σ a_i·b_i` in `L` lanes.
#[inline(always)]
fn dot<const W: usize>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if W == 4 {
        // SAFETY: W == 4 only in the AVX-512 instantiation.
        return unsafe { x86::dot(a, b) };
    }
    let mut lanes = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ_j p[r][j] · v[j][..vecs·L]` for `QR` probability rows (`p[r·sw + j]`) over keys
/// `0..j_end`, values `v[j·dvp ..]`.
#[inline(always)]
fn pv_tile<const W: usize>(
    p: &[f32],
    sw: usize,
    v: &[f32],
    dvp: usize,
    vecs: usize,
    j_end: usize,
) -> [[[f32; L]; W]; QR] {
    debug_assert!(vecs <= W && p.len() >= QR * sw && j_end <= sw);
    debug_assert!(j_end == 0 || v.len() >= (j_end - 1) * dvp + vecs * L);
    #[cfg(target_arch = "x86_64")]
    if W == 4 {
        // SAFETY: as in `qk_tile`; bounds checked above.
        let out = unsafe { x86::pv_tile(p, sw, v, dvp, vecs, j_end) };
        let mut acc = [[[0f32; L]; W]; QR];
        for (a, o) in acc.iter_mut().zip(out) {
            for (a, o) in a.iter_mut().zip(o) {
                *a = o;
            }
        }
        return acc;
    }
    let mut acc = [[[0f32; L]; W]; QR];
    for j in 0..j_end {
        let vr = &v[j * dvp..j * dvp + vecs * L];
        for (r, acc) in acc.iter_mut().enumerate() {
            let w = p[r * sw + j];
            for (a, v) in acc.iter_mut().zip(vr.chunks_exact(L)) {
                for l in 0..L {
                    a[l] += w * v[l];
                }
            }
        }
    }
    acc
}

/// The AVX-512 register tiles (the compiler does not find these shapes on its own).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{L, QR};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F is available; `q` holds `QR × d` values, `panel` `d × L`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn qk_tile(q: &[f32], panel: &[f32], d: usize) -> [[f32; L]; QR] {
        let mut acc = [_mm512_setzero_ps(); QR];
        let (qp, kp) = (q.as_ptr(), panel.as_ptr());
        for c in 0..d {
            let k = _mm512_loadu_ps(kp.add(c * L));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(_mm512_set1_ps(*qp.add(r * d + c)), k, *a);
            }
        }
        let mut out = [[0f32; L]; QR];
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
        out
    }

    /// # Safety
    /// AVX-512F is available; `a` and `b` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + L <= n {
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(ap.add(i)), _mm512_loadu_ps(bp.add(i)), acc);
            i += L;
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        while i < n {
            sum += *ap.add(i) * *bp.add(i);
            i += 1;
        }
        sum
    }

    /// # Safety
    /// AVX-512F is available; `p` holds `QR` rows of `sw ≥ j_end` values, `v` rows of `dvp`
    /// values from which the first `vecs ≤ 4` vectors of rows `0..j_end` are read.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pv_tile(
        p: &[f32],
        sw: usize,
        v: &[f32],
        dvp: usize,
        vecs: usize,
        j_end: usize,
    ) -> [[[f32; L]; 4]; QR] {
        let mut acc = [[_mm512_setzero_ps(); 4]; QR];
        let (pp, vp) = (p.as_ptr(), v.as_ptr());
        if vecs == 4 {
            for j in 0..j_end {
                let row = vp.add(j * dvp);
                let vv = [
                    _mm512_loadu_ps(row),
                    _mm512_loadu_ps(row.add(L)),
                    _mm512_loadu_ps(row.add(2 * L)),
                    _mm512_loadu_ps(row.add(3 * L)),
                ];
                for (r, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*pp.add(r * sw + j));
                    for (a, v) in a.iter_mut().zip(vv) {
                        *a = _mm512_fmadd_ps(w, v, *a);
                    }
                }
            }
        } else {
            for j in 0..j_end {
                let row = vp.add(j * dvp);
                for (r, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*pp.add(r * sw + j));
                    for (k, a) in a.iter_mut().enumerate().take(vecs) {
                        *a = _mm512_fmadd_ps(w, _mm512_loadu_ps(row.add(k * L)), *a);
                    }
                }
            }
        }
        let mut out = [[[0f32; L]; 4]; QR];
        for (o, a) in out.iter_mut().zip(acc) {
            for (o, a) in o.iter_mut().zip(a) {
                _mm512_storeu_ps(o.as_mut_ptr(), a);
            }
        }
        out
    }
}

/// `row ← softmax(row)` with [`exp`], reductions in `L` lanes; `row` is a whole number of
/// vectors of which the first `valid` are scores and the rest `f32::MIN`. A row with every
/// score `f32::MIN` (all keys masked) gets uniform weights over the valid ones, as the op form.
#[inline(always)]
fn softmax(row: &mut [f32], valid: usize) {
    let mut lanes = [f32::MIN; L];
    let mut chunks = row.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .fold(lanes.iter().fold(f32::MIN, |a, &b| a.max(b)), |a, &b| {
            a.max(b)
        });
    let mut sums = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            c[l] = exp(c[l] - max);
            sums[l] += c[l];
        }
    }
    let mut sum = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - max);
        sum += *x;
    }
    if max == f32::MIN {
        row[..valid].fill(1.0 / valid as f32);
        row[valid..].fill(0.0);
        return;
    }
    let inv = 1.0 / (sums.iter().sum::<f32>() + sum);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `eˣ` for `x ≤ 0` in straight-line arithmetic (so it vectorizes): `2ⁿ·eʳ` with
/// `n = round(x·log₂e)`, `|r| ≤ ln2 / 2`, and `eʳ` by its degree-6 Taylor polynomial (relative
/// error below 2e-7, about 2 ulp); 0 below −87 (where `eˣ` is under f32's normal range).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Whether query `i` of batch row `b` must not see key `j`.
    type Hidden<'a> = dyn Fn(usize, usize, usize) -> bool + 'a;

    /// The definition in f64, from contiguous `[b, h, t, d]` / `[b, kvh, s, d]` arrays.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        [b, h, t, d]: [usize; 4],
        kvh: usize,
        s: usize,
        dv: usize,
        hidden: &Hidden<'_>,
        scale: f64,
    ) -> Vec<f64> {
        let mut out = vec![0f64; b * t * h * dv];
        for bi in 0..b {
            for hi in 0..h {
                let g = hi / (h / kvh);
                for i in 0..t {
                    let mut sc: Vec<f64> = (0..s)
                        .map(|j| {
                            if hidden(bi, i, j) {
                                f32::MIN as f64
                            } else {
                                (0..d)
                                    .map(|c| {
                                        q[((bi * h + hi) * t + i) * d + c] as f64
                                            * k[((bi * kvh + g) * s + j) * d + c] as f64
                                    })
                                    .sum::<f64>()
                                    * scale
                            }
                        })
                        .collect();
                    let max = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let sum: f64 = sc
                        .iter_mut()
                        .map(|x| {
                            *x = (*x - max).exp();
                            *x
                        })
                        .sum();
                    for c in 0..dv {
                        out[((bi * t + i) * h + hi) * dv + c] = (0..s)
                            .map(|j| sc[j] / sum * v[((bi * kvh + g) * s + j) * dv + c] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    fn contiguous(data: &[f32], dims: [usize; 4]) -> View4<'_> {
        View4 {
            data,
            offset: 0,
            dims,
            strides: [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1],
        }
    }

    #[test]
    fn equals_the_definition_for_every_mask_and_layout() {
        // (batch, heads, kv_heads, t, s, d, dv)
        let shapes = [
            (1, 9, 3, 37, 37, 64, 64),
            (2, 4, 4, 1, 21, 16, 16),
            (1, 2, 1, 5, 45, 24, 40),
            (3, 6, 2, 13, 13, 8, 8),
            (1, 1, 1, 0, 0, 4, 4),
        ];
        for &(b, h, kvh, t, s, d, dv) in &shapes {
            let q = rand(b * h * t * d, 1);
            let k = rand(b * kvh * s * d, 2);
            let v = rand(b * kvh * s * dv, 3);
            let past = s - t;
            let pad: Vec<bool> = (0..b * s).map(|x| x % 7 == 3).collect();
            let causal = move |_: usize, i: usize, j: usize| j > past + i;
            let padding = |bi: usize, _: usize, j: usize| pad[bi * s + j];
            let none = |_: usize, _: usize, _: usize| false;
            let masks: [(Mask<'_>, &Hidden<'_>); 3] = [
                (Mask::None, &none),
                (Mask::Causal { past }, &causal),
                (
                    Mask::Bool {
                        data: &pad,
                        dims: [b, 1, s],
                    },
                    &padding,
                ),
            ];
            for (mask, hidden) in masks {
                let want = reference(&q, &k, &v, [b, h, t, d], kvh, s, dv, hidden, 0.125);
                for set in KernelSet::available() {
                    let mut out = vec![0f32; b * t * h * dv];
                    let mut job = || {
                        attention_with(
                            set,
                            contiguous(&q, [b, h, t, d]),
                            contiguous(&k, [b, kvh, s, d]),
                            contiguous(&v, [b, kvh, s, dv]),
                            mask,
                            0.125,
                            &mut out,
                        )
                    };
                    job().unwrap();
                    for (o, w) in out.iter().zip(&want) {
                        assert!((*o as f64 - w).abs() < 1e-5, "{set:?} {mask:?} {o} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp_and_zero_below_the_normal_range() {
        let mut worst = 0f64;
        for i in 0..=900_000 {
            let x = -(i as f32) * 1e-4;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            if x >= -87.0 {
                worst = worst.max((got - want).abs() / want);
            } else {
                assert_eq!(got, 0.0);
            }
        }
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::MIN), 0.0);
    }

    #[test]
    fn reads_transposed_and_sliced_views() {
        // q stored as [b, t, h, d] (the projection's layout) and read as [b, h, t, d]; k and v
        // in a cache of capacity 20 of which 11 positions are used.
        let (b, h, kvh, t, cap, s, d) = (2, 4, 2, 3, 20, 11, 8);
        let q_bthd = rand(b * t * h * d, 4);
        let kc = rand(b * kvh * cap * d, 5);
        let vc = rand(b * kvh * cap * d, 6);
        let mut q = vec![0f32; b * h * t * d];
        let (mut k, mut v) = (vec![0f32; b * kvh * s * d], vec![0f32; b * kvh * s * d]);
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..t {
                    for c in 0..d {
                        q[((bi * h + hi) * t + i) * d + c] =
                            q_bthd[((bi * t + i) * h + hi) * d + c];
                    }
                }
            }
            for g in 0..kvh {
                for j in 0..s {
                    for c in 0..d {
                        k[((bi * kvh + g) * s + j) * d + c] =
                            kc[((bi * kvh + g) * cap + j) * d + c];
                        v[((bi * kvh + g) * s + j) * d + c] =
                            vc[((bi * kvh + g) * cap + j) * d + c];
                    }
                }
            }
        }
        let past = s - t;
        let want = reference(
            &q,
            &k,
            &v,
            [b, h, t, d],
            kvh,
            s,
            d,
            &|_, i, j| j > past + i,
            0.3,
        );
        let mut out = vec![0f32; b * t * h * d];
        let cache = |data| View4 {
            data,
            offset: 0,
            dims: [b, kvh, s, d],
            strides: [kvh * cap * d, cap * d, d, 1],
        };
        attention(
            View4 {
                data: &q_bthd,
                offset: 0,
                dims: [b, h, t, d],
                strides: [t * h * d, d, h * d, 1],
            },
            cache(&kc),
            cache(&vc),
            Mask::Causal { past },
            0.3,
            &mut out,
        )
        .unwrap();
        for (o, w) in out.iter().zip(&want) {
            assert!((*o as f64 - w).abs() < 1e-5);
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let x = rand(64, 7);
        let view = |dims| contiguous(&x, dims);
        let mut out = vec![0f32; 16];
        let e = attention(
            view([1, 3, 1, 16]),
            view([1, 2, 1, 16]),
            view([1, 2, 1, 16]),
            Mask::None,
            1.0,
            &mut out,
        );
        assert!(e.is_err());
        let mut out = vec![0f32; 64];
        let e = attention(
            view([1, 1, 1, 64]),
            view([1, 1, 2, 64]),
            view([1, 1, 2, 64]),
            Mask::None,
            1.0,
            &mut out,
        );
        assert!(e.unwrap_err().to_string().contains("past its buffer"));
    }
}
