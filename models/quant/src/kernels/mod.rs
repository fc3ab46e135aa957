//! Kernel sets and their selection.
//!
//! A kernel computes one tile of the product: a range of weight rows against a range of
//! prepared activation rows ([`Tile`]). Each set has one kernel per format.

use std::sync::OnceLock;

use crate::act::Act;
use crate::QType;

pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_exact;

/// One tile of `y = x · Wᵀ`: weight rows `w` (`rows` rows of `row_bytes`) times activation rows
/// `acts`, written to `out[(c − acts.start) · out_stride + r]`.
pub(crate) struct Tile<'t> {
    pub w: &'t [u8],
    pub row_bytes: usize,
    pub rows: usize,
    pub act: &'t Act<'t>,
    pub acts: std::ops::Range<usize>,
    pub out: *mut f32,
    pub out_stride: usize,
}

impl Tile<'_> {
    /// Stores one result.
    ///
    /// # Safety
    /// `r < rows` and `c` in `acts`; the tile's output rectangle must be valid and not written by
    /// anyone else.
    #[inline(always)]
    pub(crate) unsafe fn store(&self, r: usize, c: usize, v: f32) {
        unsafe { *self.out.add((c - self.acts.start) * self.out_stride + r) = v };
    }
}

/// A kernel: computes a whole tile.
///
/// # Safety
/// The tile's `out` rectangle must be valid for writes and the CPU must have the kernel set's
/// features.
pub(crate) type TileFn = unsafe fn(&Tile<'_>);

/// One tile of the exact product `y = x · Wᵀ` (f32 activations): weight rows `w` (`rows` rows
/// of `row_bytes`) times activation rows `acts` of `x` (`[n, cols]`), written to
/// `out[(c − acts.start) · out_stride + r]`. Panel (GEMM) kernels read the activations from
/// `xp` instead: `x` transposed in groups of `lanes` rows, `[⌈n/lanes⌉][cols][lanes]`, zero
/// padded; their tiles start at a multiple of `lanes`. Streaming kernels that factor block
/// offsets out of their sums read `xs`: the sums of each 32 activations, `[n][cols/32]`.
pub(crate) struct XTile<'t> {
    pub w: &'t [u8],
    pub row_bytes: usize,
    pub rows: usize,
    pub cols: usize,
    pub x: &'t [f32],
    pub xp: &'t [f32],
    pub xs: &'t [f32],
    pub acts: std::ops::Range<usize>,
    pub out: *mut f32,
    pub out_stride: usize,
}

impl XTile<'_> {
    /// Stores one result.
    ///
    /// # Safety
    /// As [`Tile::store`].
    #[inline(always)]
    pub(crate) unsafe fn store(&self, r: usize, c: usize, v: f32) {
        unsafe { *self.out.add((c - self.acts.start) * self.out_stride + r) = v };
    }
}

/// An exact kernel: computes a whole [`XTile`].
///
/// # Safety
/// As [`TileFn`].
pub(crate) type XTileFn = unsafe fn(&XTile<'_>);

/// The exact kernels of one set for one format.
#[derive(Clone, Copy)]
pub(crate) struct ExactKernels {
    /// Streams the weights once per few activation rows, widening them in registers; runs any
    /// tile, and is the one used for `n < gemm_from`.
    pub stream: XTileFn,
    /// Whether `stream` reads the activations' sums of 32 (`XTile::xs`).
    pub sums: bool,
    /// Widens a block of weights once into an f32 panel and runs an SGEMM micro-kernel over
    /// it for all activation rows of the tile (`n ≥ gemm_from`).
    pub gemm: Option<Gemm>,
}

/// A panel kernel and how it wants its tiles.
#[derive(Clone, Copy)]
pub(crate) struct Gemm {
    pub kernel: XTileFn,
    /// Activation rows per packed group (vector lanes).
    pub lanes: usize,
    /// Tiles' row counts are multiples of this (the micro-kernel's rows), except the last.
    pub rows: usize,
    /// Activation rows from which the panel kernel is used.
    pub from: usize,
}

/// A family of kernels for one kind of CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelSet {
    /// Scalar Rust, the reference: runs everywhere.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (256-bit vectors).
    Avx2,
    /// x86-64 with AVX-512 F/BW/VL (and VNNI where present), plus AVX2/FMA/F16C.
    Avx512,
}

impl KernelSet {
    pub const ALL: [KernelSet; 3] = [KernelSet::Portable, KernelSet::Avx2, KernelSet::Avx512];

    /// `"portable"`, `"avx2"`, `"avx512"`: the names `ZOO_QUANT_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            KernelSet::Portable => "portable",
            KernelSet::Avx2 => "avx2",
            KernelSet::Avx512 => "avx512",
        }
    }

    pub fn from_name(s: &str) -> Option<KernelSet> {
        KernelSet::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the set.
    pub fn is_available(self) -> bool {
        match self {
            KernelSet::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 => x86::has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The sets this CPU can run, slowest first.
    pub fn available() -> Vec<KernelSet> {
        KernelSet::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest set this CPU can run.
    pub fn best() -> KernelSet {
        *KernelSet::available()
            .last()
            .expect("the portable set is always available")
    }

    /// The set `matmul` uses: `ZOO_QUANT_KERNEL` if it names an available set, else the best.
    pub fn active() -> KernelSet {
        static ACTIVE: OnceLock<KernelSet> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            std::env::var("ZOO_QUANT_KERNEL")
                .ok()
                .and_then(|s| KernelSet::from_name(&s))
                .filter(|k| k.is_available())
                .unwrap_or_else(KernelSet::best)
        })
    }

    /// What this set runs on this CPU: `"avx512vnni"`, `"avx512"`, `"avx2"` or `"portable"`.
    pub fn features(self) -> &'static str {
        match self {
            KernelSet::Portable => "portable",
            KernelSet::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx512 if x86::has_vnni() => "avx512vnni",
            KernelSet::Avx512 => "avx512",
        }
    }

    /// The kernel for weights of `qtype`.
    pub(crate) fn kernel(self, qtype: QType) -> TileFn {
        match self {
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 | KernelSet::Avx512 if self.is_available() => x86::kernel(self, qtype),
            _ => portable::kernel(qtype),
        }
    }

    /// The exact (f32 activation) kernels for weights of `qtype`.
    pub(crate) fn exact(self, qtype: QType) -> ExactKernels {
        match self {
            #[cfg(target_arch = "x86_64")]
            KernelSet::Avx2 | KernelSet::Avx512 if self.is_available() => {
                x86_exact::kernels(self, qtype)
            }
            _ => ExactKernels {
                stream: portable::exact_kernel(qtype),
                sums: false,
                gemm: None,
            },
        }
    }

    /// Activation rows a kernel of this set handles at once (tiles are split in multiples).
    pub(crate) fn act_block(self) -> usize {
        match self {
            KernelSet::Portable => 4,
            KernelSet::Avx2 => 3,
            KernelSet::Avx512 => 4,
        }
    }
}

/// Which kernel set `matmul` runs on this CPU: `"avx512vnni"`, `"avx512"`, `"avx2"` or
/// `"portable"`.
pub fn cpu_features() -> &'static str {
    KernelSet::active().features()
}
