//! Weights kept in their stored precision, and fused matrix products over them.
//!
//! A [`QMatrix`] holds a `[rows, cols]` row-major weight matrix (rows = output features) in one
//! of the ggml storage formats ([`QType`]): plain `f32`/`f16`/`bf16`, or the block-quantised
//! `q8_0`, `q4_0`, `q4_1`, `q4_k`, `q5_k`, `q6_k`. Two products compute `y = x · Wᵀ` straight
//! from the stored bytes, never materialising the weights as an f32 matrix:
//!
//! * [`QMatrix::matmul_exact`] — **the default.** The activations stay f32 and the weights are
//!   widened in registers to exactly the f32 values [`QMatrix::dequantize`] gives, so the result
//!   is `x · dequantize(W)ᵀ` up to the order of the float sums: the same numbers (to f32
//!   rounding) as multiplying the dequantised matrix, as PyTorch or a GPU backend would. A model
//!   run with it gives the same greedy answers as the same weights dequantised.
//! * [`QMatrix::matmul`] — **llama.cpp's arithmetic, opt-in.** For block formats each activation
//!   row is first quantised to 8 bits per block as ggml does (`q8_0` for Q8_0/Q4_0, `q8_1` for
//!   Q4_1, `q8_K` for the K-quants), and each block product is an integer dot product. This
//!   reproduces llama.cpp's outputs (to float rounding), and its prefill uses 8-bit integer
//!   dot products (`vpdpbusd`). It is not the dequantised product: the activation rounding
//!   (about 1/254 of each block's largest value) changes logits enough to change greedy answers.
//!   For example, SmolLM2-135M-Instruct in Q4_1 answers "What is the capital of France?"
//!   correctly with exact products and wrongly with 8-bit activations (as llama.cpp does).
//!   Use it to compare with llama.cpp, or where its speed matters more than those digits.
//!   For `f32`/`f16`/`bf16` weights both are the same product (and run the same kernels).
//!
//! Speed (AMD Zen 4, AVX-512, 2 cores; see `benches/matmul.rs`): for one activation row
//! (decode) both stream the weights at close to memory bandwidth once two threads share the
//! work (the exact product does more arithmetic per weight, so on one thread it is compute
//! bound first); for 2–4 rows the exact product is bound by f32 FMA throughput (it costs about
//! n× one row, where 8-bit products stay memory bound); for many rows (prefill) it runs an
//! SGEMM-style panel kernel at 90+ % of the FMA peak, as fast as or faster than the 8-bit path.
//!
//! How [`QMatrix::matmul_exact`] works: each format's dequantised weight is `a·q + b` for a small
//! integer `q` and per-block f32 constants (`a·q` exact in f32), so converting `q` and one FMA
//! (or, for 4- and 5-bit quants on AVX-512, a `vpermps` from the block's 16 or 32 possible
//! weights) gives the exact f32 weight. Few activation rows run a streaming kernel (several
//! weight rows at a time, software prefetch, block offsets such as Q4_1's minimum factored out
//! as `Σ_b m_b·Σ_{i∈b} x_i`); from 16 rows (8 with AVX2) a panel kernel widens each 256-column
//! strip of a few weight rows once into an L1-resident f32 panel and runs a register-blocked
//! micro-kernel over all activation rows, packed transposed.
//!
//! For [`QMatrix::matmul`] the activation quantisation is the same bit for bit in every kernel
//! set (`portable`, `avx2`, `avx512`), and follows ggml's x86 code (`d = amax/127` stored as
//! f16, `q = round_even(x·127/amax)`), so all kernel sets agree up to float summation order, and
//! agree with llama.cpp to rounding.
//!
//! Work is split over output rows (and activation rows when there are many) on rayon's global
//! pool, the calling thread included. The kernel set is chosen at run time
//! (`is_x86_feature_detected!`); the environment variable `ZOO_QUANT_KERNEL=portable|avx2|avx512`
//! forces one (unknown or unavailable values fall back to the best available). [`cpu_features`]
//! names the set in use. Within the AVX-512 set, `matmul`'s Q8_0/Q4_0/Q4_1 kernels use 512-bit
//! integer instructions except on AMD Zen 4, whose 512-bit units are double-pumped 256-bit ones
//! (`ZOO_QUANT_WIDE=1|0` overrides); the exact kernels use 512-bit vectors throughout (measured
//! faster on Zen 4: half the instructions for the same FMA throughput).
//!
//! Other architectures (aarch64 included) run the portable kernels: correct, but scalar.

mod act;
pub mod attention;
pub mod elementwise;
mod formats;
mod kernels;
mod parallel;

#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

pub use kernels::{cpu_features, KernelSet};

/// A storage format for weights: an element type, or a ggml block-quantisation format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // ggml's spelling
pub enum QType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl QType {
    /// Every format, in a fixed order.
    pub const ALL: [QType; 9] = [
        QType::F32,
        QType::F16,
        QType::BF16,
        QType::Q8_0,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q4_K,
        QType::Q5_K,
        QType::Q6_K,
    ];

    /// Weights per block (1 for element types).
    pub fn block_size(self) -> usize {
        match self {
            QType::F32 | QType::F16 | QType::BF16 => 1,
            QType::Q8_0 | QType::Q4_0 | QType::Q4_1 => 32,
            QType::Q4_K | QType::Q5_K | QType::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 | QType::BF16 => 2,
            QType::Q8_0 => 34,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q4_K => 144,
            QType::Q5_K => 176,
            QType::Q6_K => 210,
        }
    }

    /// Lower-case name, as llama.cpp spells it: `"q4_0"`, `"q4_k"`, `"bf16"`, ...
    pub fn name(self) -> &'static str {
        match self {
            QType::F32 => "f32",
            QType::F16 => "f16",
            QType::BF16 => "bf16",
            QType::Q8_0 => "q8_0",
            QType::Q4_0 => "q4_0",
            QType::Q4_1 => "q4_1",
            QType::Q4_K => "q4_k",
            QType::Q5_K => "q5_k",
            QType::Q6_K => "q6_k",
        }
    }

    /// The format called `s` (case-insensitive), if any.
    pub fn from_name(s: &str) -> Option<QType> {
        QType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    /// ggml's type id (`enum ggml_type`).
    pub fn ggml_id(self) -> u32 {
        match self {
            QType::F32 => 0,
            QType::F16 => 1,
            QType::Q4_0 => 2,
            QType::Q4_1 => 3,
            QType::Q8_0 => 8,
            QType::Q4_K => 12,
            QType::Q5_K => 13,
            QType::Q6_K => 14,
            QType::BF16 => 30,
        }
    }

    /// The format with ggml type id `id`, if it is one of ours.
    pub fn from_ggml_id(id: u32) -> Option<QType> {
        QType::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// Bytes of one row of `cols` weights; `None` if `cols` is not a multiple of the block size.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if cols.is_multiple_of(self.block_size()) {
            (cols / self.block_size()).checked_mul(self.block_bytes())
        } else {
            None
        }
    }
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong building a [`QMatrix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error(
        "a {qtype} matrix of {rows}×{cols} takes {expected} bytes ({row_bytes} per row), but {actual} bytes were given"
    )]
    LengthMismatch {
        qtype: QType,
        rows: usize,
        cols: usize,
        row_bytes: usize,
        expected: usize,
        actual: usize,
    },
    #[error("{cols} columns is not a multiple of the {qtype} block size {block_size}")]
    ColsNotMultiple {
        qtype: QType,
        cols: usize,
        block_size: usize,
    },
    #[error("{given} values were given for a {rows}×{cols} matrix ({expected} needed)")]
    ValueCount {
        rows: usize,
        cols: usize,
        expected: usize,
        given: usize,
    },
    #[error("shared storage range {offset}..{end} lies outside its owner's {owner_len} bytes")]
    SharedOutOfRange {
        offset: usize,
        end: usize,
        owner_len: usize,
    },
    #[error("quantizing to {0} is not supported")]
    Unsupported(QType),
    #[error("a {rows}×{cols} matrix is too large to address")]
    TooLarge { rows: usize, cols: usize },
}

/// Bytes of a matrix: owned, or borrowed from a memory-mapped file kept alive by an `Arc`.
#[derive(Clone)]
pub enum Storage {
    Owned(Vec<u8>),
    Shared {
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    },
}

impl Storage {
    /// The bytes (for `Shared`, `owner[offset..offset + len]`; validated by [`QMatrix::new`]).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Storage::Owned(v) => v,
            Storage::Shared { owner, offset, len } => {
                let all: &[u8] = (**owner).as_ref();
                &all[*offset..*offset + *len]
            }
        }
    }

    fn check(&self) -> Result<usize, QuantError> {
        match self {
            Storage::Owned(v) => Ok(v.len()),
            Storage::Shared { owner, offset, len } => {
                let owner_len = (**owner).as_ref().len();
                match offset.checked_add(*len) {
                    Some(end) if end <= owner_len => Ok(*len),
                    _ => Err(QuantError::SharedOutOfRange {
                        offset: *offset,
                        end: offset.saturating_add(*len),
                        owner_len,
                    }),
                }
            }
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            Storage::Shared { offset, len, .. } => {
                write!(f, "Shared {{ offset: {offset}, len: {len} }}")
            }
        }
    }
}

/// A `[rows, cols]` row-major matrix in one [`QType`] (rows = output features, cols = input
/// features, like PyTorch's `Linear` weight).
#[derive(Clone, Debug)]
pub struct QMatrix {
    qtype: QType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    storage: Storage,
}

impl QMatrix {
    /// Wraps stored bytes; their length must be exactly `rows · qtype.row_bytes(cols)`.
    pub fn new(
        qtype: QType,
        rows: usize,
        cols: usize,
        storage: Storage,
    ) -> Result<Self, QuantError> {
        let row_bytes = qtype.row_bytes(cols).ok_or(QuantError::ColsNotMultiple {
            qtype,
            cols,
            block_size: qtype.block_size(),
        })?;
        let expected = row_bytes
            .checked_mul(rows)
            .ok_or(QuantError::TooLarge { rows, cols })?;
        let actual = storage.check()?;
        if actual != expected {
            return Err(QuantError::LengthMismatch {
                qtype,
                rows,
                cols,
                row_bytes,
                expected,
                actual,
            });
        }
        Ok(QMatrix {
            qtype,
            rows,
            cols,
            row_bytes,
            storage,
        })
    }

    /// Quantises `values` (`rows · cols`, row-major) with ggml's reference quantisers
    /// (`quantize_row_*_ref`), so the bytes equal what llama.cpp's `llama-quantize` writes
    /// without an importance matrix.
    pub fn quantize(
        qtype: QType,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<Self, QuantError> {
        let row_bytes = qtype.row_bytes(cols).ok_or(QuantError::ColsNotMultiple {
            qtype,
            cols,
            block_size: qtype.block_size(),
        })?;
        let expected = rows
            .checked_mul(cols)
            .ok_or(QuantError::TooLarge { rows, cols })?;
        if values.len() != expected {
            return Err(QuantError::ValueCount {
                rows,
                cols,
                expected,
                given: values.len(),
            });
        }
        let mut bytes = vec![0u8; row_bytes * rows];
        if cols > 0 {
            formats::quantize(qtype, values, &mut bytes);
        }
        QMatrix::new(qtype, rows, cols, Storage::Owned(bytes))
    }

    pub fn qtype(&self) -> QType {
        self.qtype
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage the matrix was built from.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The stored bytes of all rows.
    pub fn bytes(&self) -> &[u8] {
        self.storage.as_slice()
    }

    /// The stored bytes of row `r`.
    pub fn row_bytes(&self, r: usize) -> &[u8] {
        assert!(r < self.rows, "row {r} of a matrix with {} rows", self.rows);
        &self.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantises `rows` into `out` (`rows.len() · cols` values); reads only those rows.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "rows {rows:?} of a matrix with {} rows",
            self.rows
        );
        assert_eq!(
            out.len(),
            rows.len() * self.cols,
            "output of {} values for {} rows of {} columns",
            out.len(),
            rows.len(),
            self.cols
        );
        if self.cols == 0 {
            return;
        }
        let bytes = &self.bytes()[rows.start * self.row_bytes..rows.end * self.row_bytes];
        formats::dequantize(self.qtype, bytes, out);
    }

    /// The whole matrix in `f32`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_rows(0..self.rows, &mut out);
        out
    }

    /// `y = x · Wᵀ` with llama.cpp's arithmetic: `x` is `[n, cols]` row-major, `y` is
    /// `[n, rows]`; for block formats the activations are quantised to 8 bits per block first
    /// (see the crate documentation: this is the opt-in, llama.cpp-compatible product;
    /// [`QMatrix::matmul_exact`] is the default). Fused: the weights are never materialised in
    /// `f32`. Uses the kernel set named by [`cpu_features`].
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32]) {
        self.matmul_with(KernelSet::active(), x, n, y)
    }

    /// [`QMatrix::matmul`] with a given kernel set (for tests and benchmarks); a set this CPU
    /// lacks falls back to the best available one.
    pub fn matmul_with(&self, kernels: KernelSet, x: &[f32], n: usize, y: &mut [f32]) {
        self.check_shapes(x, n, y);
        if n == 0 || self.rows == 0 {
            return;
        }
        if self.cols == 0 {
            y.fill(0.0);
            return;
        }
        let kernels = if kernels.is_available() {
            kernels
        } else {
            KernelSet::best()
        };
        if matches!(self.qtype, QType::F32 | QType::F16 | QType::BF16) {
            // No activation quantisation for element types: the same product as
            // `matmul_exact`, whose kernels are the faster ones.
            self.matmul_exact_kernels(kernels.exact(self.qtype), x, n, y);
            return;
        }
        self.matmul_kernel(kernels.kernel(self.qtype), kernels.act_block(), x, n, y);
    }

    /// `y = x · Wᵀ` computed exactly as `x · dequantize(W)ᵀ` in f32, up to the order of the
    /// float sums: `x` is `[n, cols]` row-major and stays f32, `y` is `[n, rows]`. The weights are
    /// widened in registers to the very f32 values [`QMatrix::dequantize`] gives, and never
    /// materialised as a matrix. This is the product to use by default; see the crate
    /// documentation for when [`QMatrix::matmul`] is the better choice.
    pub fn matmul_exact(&self, x: &[f32], n: usize, y: &mut [f32]) {
        self.matmul_exact_with(KernelSet::active(), x, n, y)
    }

    /// [`QMatrix::matmul_exact`] with a given kernel set (for tests and benchmarks); a set this
    /// CPU lacks falls back to the best available one.
    pub fn matmul_exact_with(&self, kernels: KernelSet, x: &[f32], n: usize, y: &mut [f32]) {
        self.check_shapes(x, n, y);
        let kernels = if kernels.is_available() {
            kernels
        } else {
            KernelSet::best()
        };
        self.matmul_exact_kernels(kernels.exact(self.qtype), x, n, y);
    }

    /// [`QMatrix::matmul_exact`] of several matrices on the same activations, in one parallel
    /// pass: `ys[i] = x · msᵢᵀ`, `x` `[n, cols]` shared (every matrix must have `cols`
    /// columns), `ys[i]` `[n, msᵢ.rows()]`. The numbers are those of `matmul_exact` on each
    /// matrix; the activations are packed once and the helpers woken once, which is what a
    /// layer's q/k/v or gate/up projections gain from it.
    ///
    /// # Panics
    /// When the shapes disagree (as `matmul_exact`).
    pub fn matmul_exact_many(ms: &[&QMatrix], x: &[f32], n: usize, ys: &mut [&mut [f32]]) {
        assert_eq!(ms.len(), ys.len(), "one output per matrix");
        for (m, y) in ms.iter().zip(ys.iter()) {
            m.check_shapes(x, n, y);
        }
        if n == 0 {
            return;
        }
        let kernels = KernelSet::active();
        let mut jobs: Vec<(&QMatrix, kernels::ExactKernels, &mut [f32])> = Vec::new();
        for (m, y) in ms.iter().zip(ys.iter_mut()) {
            if m.rows == 0 {
                continue;
            }
            if m.cols == 0 {
                y.fill(0.0);
                continue;
            }
            jobs.push((m, kernels.exact(m.qtype), &mut **y));
        }
        parallel::matmul_exact_many(&mut jobs, x, n);
    }

    /// `matmul_exact` with given kernels (tests reach kernel variants through this).
    pub(crate) fn matmul_exact_kernels(
        &self,
        kernels: kernels::ExactKernels,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) {
        if n == 0 || self.rows == 0 {
            return;
        }
        if self.cols == 0 {
            y.fill(0.0);
            return;
        }
        parallel::matmul_exact(self, kernels, x, n, y);
    }

    fn check_shapes(&self, x: &[f32], n: usize, y: &[f32]) {
        assert_eq!(
            x.len(),
            n * self.cols,
            "x holds {} values, not n·cols = {n}·{}",
            x.len(),
            self.cols
        );
        assert_eq!(
            y.len(),
            n * self.rows,
            "y holds {} values, not n·rows = {n}·{}",
            y.len(),
            self.rows
        );
    }

    /// `matmul` with a given kernel function (tests reach kernel variants through this).
    pub(crate) fn matmul_kernel(
        &self,
        kernel: kernels::TileFn,
        act_block: usize,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) {
        if n == 0 || self.rows == 0 {
            return;
        }
        if self.cols == 0 {
            y.fill(0.0);
            return;
        }
        parallel::matmul(self, kernel, act_block, x, n, y);
    }

    pub(crate) fn row_stride(&self) -> usize {
        self.row_bytes
    }
}
