//! Splitting a product into tiles and running them on rayon's global pool.
//!
//! The calling thread takes part: tiles are handed out through an atomic counter to the caller
//! and to `threads − 1` helpers spawned on the pool, and the caller spin-waits for the last one,
//! so a call costs no sleeping round trip; small products run inline with no threads at all.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::act::{Act, ActKind, RowsMut};
use crate::kernels::{ExactKernels, Tile, TileFn, XTile};
use crate::QMatrix;

/// Below this many weight bytes × activation rows a product runs on the calling thread.
const SERIAL_WORK: usize = 48 * 1024;
/// How long the caller of a parallel product spins for its helpers' last tiles before it
/// yields its core.
const SPIN_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
/// Tiles per thread when a product runs in parallel.
const TILES_PER_THREAD: usize = 4;
/// Activation rows per tile are capped so that a tile's quantised activations stay in L2.
const ACT_TILE_BYTES: usize = 512 * 1024;

struct OutPtr(*mut f32);
// SAFETY: tiles write disjoint parts of the output.
unsafe impl Sync for OutPtr {}
unsafe impl Send for OutPtr {}

/// Runs `kernel` over all tiles of `y = x · Wᵀ`; `cb` is the number of activation rows the
/// kernel handles at once.
pub(crate) fn matmul(m: &QMatrix, kernel: TileFn, cb: usize, x: &[f32], n: usize, y: &mut [f32]) {
    let act = Act::new(m.qtype(), x, n, m.cols());
    let (rows, row_bytes) = (m.rows(), m.row_stride());
    let bytes = m.bytes();
    let threads = rayon::current_num_threads().max(1);
    let work = rows.saturating_mul(row_bytes).saturating_mul(n);

    // Activation chunks: all of them unless their quants would overflow L2.
    let act_rows_fit = (ACT_TILE_BYTES / m.cols().max(1)).max(cb);
    let act_chunk = if n <= act_rows_fit {
        n
    } else {
        (act_rows_fit / cb * cb).max(cb)
    };
    let parallel = threads > 1 && work >= SERIAL_WORK;
    let grid = Grid::new(
        rows,
        n,
        act_chunk,
        8,
        parallel.then_some(threads * TILES_PER_THREAD),
    );

    let out = OutPtr(y.as_mut_ptr());
    let act = &act;
    let out = &out;
    let run = |t: usize| {
        let (r, c) = grid.tile(t);
        let tile = Tile {
            w: &bytes[r.start * row_bytes..r.end * row_bytes],
            row_bytes,
            rows: r.len(),
            act,
            // SAFETY: in bounds of y (c.start < n, r.start < rows).
            out: unsafe { out.0.add(c.start * rows + r.start) },
            acts: c,
            out_stride: rows,
        };
        // SAFETY: the tile's rectangle of y is valid and written by this task only; the kernel
        // set is available (checked by the caller).
        unsafe { kernel(&tile) };
    };
    run_tasks(grid.tasks(), if parallel { threads } else { 1 }, &run);
}

/// A product split into tiles: row chunks × activation chunks, one task each.
struct Grid {
    rows: usize,
    n: usize,
    row_chunk: usize,
    row_chunks: usize,
    act_chunk: usize,
    act_chunks: usize,
}

impl Grid {
    /// Activation rows in chunks of `act_chunk`; weight rows in chunks that are a multiple of
    /// `row_align`. Run in parallel (`tiles`: how many are wanted; `None`: serially), there
    /// are several tiles per thread,
    /// handed out dynamically, so that the calling thread absorbs the work of a helper that
    /// wakes late (and uneven threads balance); at least 16 rows each so that a tile amortises
    /// its setup.
    fn new(
        rows: usize,
        n: usize,
        act_chunk: usize,
        row_align: usize,
        tiles: Option<usize>,
    ) -> Self {
        let act_chunks = n.div_ceil(act_chunk);
        let row_chunks_wanted = match tiles {
            Some(tiles) => tiles.div_ceil(act_chunks).min(rows / 16).max(1),
            None => 1,
        };
        let row_chunk = rows
            .div_ceil(row_chunks_wanted)
            .next_multiple_of(row_align)
            .min(rows);
        Self {
            rows,
            n,
            row_chunk,
            row_chunks: rows.div_ceil(row_chunk),
            act_chunk,
            act_chunks,
        }
    }

    fn tasks(&self) -> usize {
        self.row_chunks * self.act_chunks
    }

    /// Task `t`'s weight rows and activation rows.
    fn tile(&self, t: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (ac, rc) = (t / self.row_chunks, t % self.row_chunks);
        let r0 = rc * self.row_chunk;
        let c0 = ac * self.act_chunk;
        (
            r0..(r0 + self.row_chunk).min(self.rows),
            c0..(c0 + self.act_chunk).min(self.n),
        )
    }
}

/// Activation rows per tile of the panel kernels at most: their packed activations for one
/// 256-column panel step (`rows · 1 KiB`) stay in L2 while all weight rows of the tile pass.
const GEMM_ACT_CHUNK: usize = 192;

/// Runs the exact kernels over all tiles of `y = x · Wᵀ`.
pub(crate) fn matmul_exact(m: &QMatrix, k: ExactKernels, x: &[f32], n: usize, y: &mut [f32]) {
    matmul_exact_many(&mut [(m, k, y)], x, n);
}

/// One matrix's share of [`matmul_exact_many`]: its tiles and the layout they need.
struct ExactPart<'a> {
    m: &'a QMatrix,
    kernel: crate::kernels::XTileFn,
    /// Lanes of the packed activations for the panel kernel (`None`: streaming).
    lanes: Option<usize>,
    grid: Grid,
    out: OutPtr,
    /// The first task of this part.
    first: usize,
}

/// `ys[i] = x · Wᵢᵀ` for matrices that share `x` (the same `cols`), as one parallel region: the
/// activations are packed once per layout and all matrices' tiles are handed out together, so a
/// layer's q/k/v (or gate/up) products cost one wake-up of the helpers instead of three. Each
/// matrix is split into tiles in proportion to its share of the work; every tile computes
/// exactly what `matmul_exact` of its matrix computes for those rows.
pub(crate) fn matmul_exact_many(
    jobs: &mut [(&QMatrix, ExactKernels, &mut [f32])],
    x: &[f32],
    n: usize,
) {
    let Some(first) = jobs.first() else {
        return;
    };
    let cols = first.0.cols();
    let threads = rayon::current_num_threads().max(1);
    let works: Vec<usize> = jobs
        .iter()
        .map(|(m, _, _)| m.rows().saturating_mul(m.row_stride()).saturating_mul(n))
        .collect();
    let work: usize = works.iter().fold(0usize, |a, &w| a.saturating_add(w));
    let parallel = threads > 1 && work >= SERIAL_WORK;
    // Packed activations per lane count (one kernel set: in practice a single layout).
    let mut packed: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut sums = false;
    let mut parts = Vec::with_capacity(jobs.len());
    let mut tasks = 0;
    for ((m, k, y), &w) in jobs.iter_mut().zip(&works) {
        debug_assert_eq!(
            m.cols(),
            cols,
            "matrices of one product share their columns"
        );
        let gemm = k.gemm.filter(|g| n >= g.from);
        let (kernel, row_align, act_align, act_max) = match gemm {
            Some(g) => (
                g.kernel,
                g.rows,
                g.lanes,
                GEMM_ACT_CHUNK / g.lanes * g.lanes,
            ),
            // The streaming kernels read the weights once per tile: all activation rows in one.
            None => (k.stream, 4, 1, n),
        };
        if let Some(g) = gemm {
            if !packed.iter().any(|(l, _)| *l == g.lanes) {
                packed.push((g.lanes, pack(x, n, cols, g.lanes, parallel)));
            }
        } else {
            sums |= k.sums;
        }
        let act_chunk = n.div_ceil(n.div_ceil(act_max)).next_multiple_of(act_align);
        // This matrix's share of the tiles: as many in all as the products would want one by
        // one (small tiles keep the threads balanced when a helper wakes late), given out in
        // proportion to the work.
        let tiles = parallel.then(|| {
            let all = threads * TILES_PER_THREAD * works.len();
            let share = all as f64 * w as f64 / work.max(1) as f64;
            (share.round() as usize).max(1)
        });
        let grid = Grid::new(m.rows(), n, act_chunk, row_align, tiles);
        let part_tasks = grid.tasks();
        parts.push(ExactPart {
            m,
            kernel,
            lanes: gemm.map(|g| g.lanes),
            grid,
            out: OutPtr(y.as_mut_ptr()),
            first: tasks,
        });
        tasks += part_tasks;
    }
    // Sums of each 32 activations, for streaming kernels that factor out block offsets.
    let xs: Vec<f32> = if sums {
        x.chunks_exact(32).map(|c| c.iter().sum()).collect()
    } else {
        Vec::new()
    };
    let (parts, packed, xs) = (&parts[..], &packed[..], &xs[..]);
    let run = |t: usize| {
        let part = &parts[parts.partition_point(|p| p.first <= t) - 1];
        let (m, grid) = (part.m, &part.grid);
        let (rows, row_bytes) = (m.rows(), m.row_stride());
        let (r, c) = grid.tile(t - part.first);
        let xp = match part.lanes {
            Some(l) => {
                &packed
                    .iter()
                    .find(|(pl, _)| *pl == l)
                    .expect("packed above")
                    .1[..]
            }
            None => &[][..],
        };
        let tile = XTile {
            w: &m.bytes()[r.start * row_bytes..r.end * row_bytes],
            row_bytes,
            rows: r.len(),
            cols,
            x,
            xp,
            xs,
            // SAFETY: in bounds of this part's y (c.start < n, r.start < rows).
            out: unsafe { part.out.0.add(c.start * rows + r.start) },
            acts: c,
            out_stride: rows,
        };
        // SAFETY: as in `matmul`.
        unsafe { (part.kernel)(&tile) };
    };
    run_tasks(tasks, if parallel { threads } else { 1 }, &run);
}

/// `x` (`[n, cols]`) transposed in groups of `lanes` rows: `[⌈n/lanes⌉][cols][lanes]`, the
/// rows past `n` zero.
fn pack(x: &[f32], n: usize, cols: usize, lanes: usize, parallel: bool) -> Vec<f32> {
    let groups = n.div_ceil(lanes);
    let mut xp = vec![0f32; groups * cols * lanes];
    let one = |g: usize, out: &mut [f32]| {
        // Columns in chunks, so that the chunk of every row of the group stays in L1.
        const K: usize = 64;
        let rows = lanes.min(n - g * lanes);
        for k0 in (0..cols).step_by(K) {
            let k1 = (k0 + K).min(cols);
            for l in 0..rows {
                let xr = &x[(g * lanes + l) * cols..][k0..k1];
                for (k, &v) in (k0..k1).zip(xr) {
                    out[k * lanes + l] = v;
                }
            }
        }
    };
    if parallel && n * cols >= 1 << 16 {
        use rayon::prelude::*;
        xp.par_chunks_mut(cols * lanes)
            .enumerate()
            .for_each(|(g, out)| one(g, out));
    } else {
        for (g, out) in xp.chunks_mut(cols * lanes).enumerate() {
            one(g, out);
        }
    }
    xp
}

/// State shared between the caller and its helpers for one `run_tasks`.
struct Shared {
    /// The next task to claim.
    next: AtomicUsize,
    /// Tasks finished (or abandoned by a panic).
    finished: AtomicUsize,
    /// Whether a task panicked.
    panicked: AtomicBool,
    tasks: usize,
    /// The task body, on the caller's stack. Only dereferenced for a claimed task `t < tasks`, and
    /// the caller returns only after all of those have finished.
    f: *const (dyn Fn(usize) + Sync),
}

// SAFETY: `f` points to a `Sync` closure, used as described above; the rest is atomics.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= self.tasks {
                return;
            }
            // SAFETY: t < tasks is unfinished, so the caller is still waiting and `f` is alive.
            let f = unsafe { &*self.f };
            if catch_unwind(AssertUnwindSafe(|| f(t))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            self.finished.fetch_add(1, Ordering::Release);
        }
    }
}

/// Runs `f(0..tasks)` on the caller and up to `threads − 1` helpers on rayon's pool. Tasks are
/// claimed through an atomic counter; the caller spins (rather than sleeping on a condition
/// variable, which costs a wake-up of several µs) until the last one finishes.
pub(crate) fn run_tasks(tasks: usize, threads: usize, f: &(dyn Fn(usize) + Sync)) {
    if tasks == 1 || threads == 1 {
        (0..tasks).for_each(f);
        return;
    }
    // SAFETY (lifetime erasure): see `Shared::f`; `run_tasks` does not return before every
    // claimed task has finished, and unclaimed tasks are never run after that.
    let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        panicked: AtomicBool::new(false),
        tasks,
        f,
    });
    for _ in 1..threads.min(tasks) {
        let s = shared.clone();
        rayon::spawn(move || s.work());
    }
    shared.work();
    // Spin (rather than yield) while the helpers finish their last tiles: a yield hands the core
    // to any other runnable thread — a server's network threads, a client on the same machine —
    // for a whole time slice, long after the helpers are done. Only a wait far longer than a
    // tile takes falls back to yielding.
    let started = std::time::Instant::now();
    let mut spins = 0u32;
    while shared.finished.load(Ordering::Acquire) < tasks {
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(256) && started.elapsed() > SPIN_WAIT {
            std::thread::yield_now();
        }
    }
    if shared.panicked.load(Ordering::Relaxed) {
        panic!("a zoo-quant kernel task panicked");
    }
}

/// Quantises activation rows `0..n` into `rows`, in parallel when there are many.
pub(crate) fn for_each_act_row(
    n: usize,
    cols: usize,
    kind: ActKind,
    rows: RowsMut<'_>,
    f: impl Fn(usize, RowsMut<'_>) + Sync,
) {
    fn go(
        start: usize,
        n: usize,
        cols: usize,
        kind: ActKind,
        rows: RowsMut<'_>,
        f: &(impl Fn(usize, RowsMut<'_>) + Sync),
    ) {
        if n * cols <= 64 * 1024 || n == 1 {
            let mut rest = rows;
            for r in start..start + n {
                let (one, tail) = rest.split_rows(1, cols, kind);
                f(r, one);
                rest = tail;
            }
            return;
        }
        let half = n / 2;
        let (a, b) = rows.split_rows(half, cols, kind);
        rayon::join(
            || go(start, half, cols, kind, a, f),
            || go(start + half, n - half, cols, kind, b, f),
        );
    }
    go(0, n, cols, kind, rows, &f);
}
