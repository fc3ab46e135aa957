//! Weights kept in their stored precision inside the modules: f16, bf16 and llama.cpp's block
//! formats (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K), multiplied without turning the whole matrix
//! into f32.
//!
//! Where the product runs depends on the backend:
//!
//! - **CPU backends** (flex, ndarray): the matrix stays on the host as a [`QMatrix`] — a slice
//!   of the memory-mapped GGUF file, or bytes quantized at load — and `x · Wᵀ` runs in
//!   zoo-quant's fused SIMD kernels (activations quantized per block, as ggml does) on
//!   rayon's pool. The activations are the only data that cross between Burn and the kernel.
//! - **GPU backends** (wgpu, CUDA) and autodiff: Q4_0, Q4_1 and Q8_0 matrices live on the
//!   device as a [`PackedMatrix`] (4- or 8-bit codes packed in `i32` words, plus an f32 scale
//!   and offset per block of 32). A product of up to [`PackedMatrix::FUSED_ROWS`] rows (decoding)
//!   runs in one fused cubecl kernel that reads the codes as packed ([`crate::packed_gpu`]);
//!   a longer one (prefill) unpacks the matrix with Burn's integer ops for one matmul, so only
//!   one layer's f32 weights exist at a time. Under fusion or autodiff the unpacking path is
//!   used throughout. Other stored formats are widened to f32 at load on these backends.
//!
//! Which formats to keep is the user's choice ([`WeightFormat`]): as stored (a GGUF file's own
//! types; f32 for Hugging Face checkpoints), an element type for everything (`--dtype`), or
//! a block format for the transformer's matrices (`--quantize`).

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{backend::Backend, ElementConversion, Int, Tensor, TensorData};

pub use zoo_quant::{cpu_features, QMatrix, QType, QuantError, Storage};

/// Whether a backend multiplies stored-format matrices on the host (the CPU backends, whose
/// tensors live in host memory) rather than unpacking them on the device.
pub fn runs_on_host<B: Backend>(device: &B::Device) -> bool {
    matches!(B::name(device).as_str(), "flex" | "ndarray")
}

/// The formats weights are kept in, per kind of tensor; `None` keeps the checkpoint's own
/// (a GGUF tensor's type, f32 for Hugging Face checkpoints). Norms, biases and position
/// tables always stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WeightFormat {
    /// The matrices of the transformer blocks (attention and MLP projections).
    pub matrices: Option<QType>,
    /// Token embeddings (read row by row; the LM head too when it is tied).
    pub embeddings: Option<QType>,
    /// An untied LM head.
    pub head: Option<QType>,
    /// On the CPU backends, quantize the activations to 8 bits per block before each product
    /// with a block-format matrix, as llama.cpp does (llama.cpp's exact numbers; faster
    /// memory-bound decode of large models); by default the product is the exact `x · Wᵀ` of the stored weights, as on the
    /// GPU backends.
    pub int8_activations: bool,
}

impl WeightFormat {
    /// Every tensor as the checkpoint stores it.
    pub const AS_STORED: WeightFormat = WeightFormat {
        matrices: None,
        embeddings: None,
        head: None,
        int8_activations: false,
    };

    /// Every matrix in one element type (`--dtype f32|f16|bf16`).
    pub fn dtype(t: QType) -> Self {
        Self {
            matrices: Some(t),
            embeddings: Some(t),
            head: Some(t),
            int8_activations: false,
        }
    }

    /// The block matrices quantized to `t`, embeddings and head to Q8_0 — as llama.cpp's
    /// `llama-quantize` keeps the output layer at higher precision than the blocks
    /// (`--quantize q8_0|q4_0|q4_1`).
    pub fn quantized(t: QType) -> Self {
        Self {
            matrices: Some(t),
            embeddings: Some(QType::Q8_0),
            head: Some(QType::Q8_0),
            int8_activations: false,
        }
    }

    /// A short description (`as stored`, `q4_0 (embeddings q8_0, head q8_0)`).
    pub fn describe(&self) -> String {
        let name = |t: Option<QType>| t.map_or("as stored", QType::name);
        let mut out = if self.matrices == self.embeddings && self.embeddings == self.head {
            name(self.matrices).to_string()
        } else {
            format!(
                "{} (embeddings {}, head {})",
                name(self.matrices),
                name(self.embeddings),
                name(self.head)
            )
        };
        if self.int8_activations {
            out += ", int8 activations";
        }
        out
    }
}

/// A matrix kept on the host in a stored format (shared, cheap to clone), and whether its
/// products quantize the activations to 8 bits (llama.cpp's arithmetic) or are exact.
#[derive(Clone)]
pub struct HostMatrix(pub Arc<QMatrix>, pub bool);

impl std::fmt::Debug for HostMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostMatrix({} [{}, {}])",
            self.0.qtype().name(),
            self.0.rows(),
            self.0.cols()
        )
    }
}

impl HostMatrix {
    /// `x · Wᵀ` over the last axis, computed by zoo-quant's fused kernels on the host.
    ///
    /// # Shapes
    /// - `x`: `[..., cols]` → `[..., rows]`
    pub fn times_transposed<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let m = &self.0;
        let dims = x.dims();
        let n: usize = dims[..D - 1].iter().product();
        let device = x.device();
        let input: Vec<f32> = x
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 activations");
        let mut y = vec![0f32; n * m.rows()];
        if self.1 {
            m.matmul(&input, n, &mut y);
        } else {
            m.matmul_exact(&input, n, &mut y);
        }
        let mut out = dims;
        out[D - 1] = m.rows();
        Tensor::from_data(TensorData::new(y, out), &device)
    }

    /// The rows `ids` (`[batch, t]`) of the matrix, dequantized: an embedding lookup that
    /// reads only those rows.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, cols]`
    pub fn rows<B: Backend>(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let m = &self.0;
        let [b, t] = ids.dims();
        let device = ids.device();
        let ids: Vec<i64> = ids
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("integer ids");
        let cols = m.cols();
        let mut out = vec![0f32; ids.len() * cols];
        for (i, &id) in ids.iter().enumerate() {
            // Callers check ids against the vocabulary; an id outside it is a bug here.
            let r = usize::try_from(id).expect("a token id is non-negative");
            m.dequantize_rows(r..r + 1, &mut out[i * cols..(i + 1) * cols]);
        }
        Tensor::from_data(TensorData::new(out, [b, t, cols]), &device)
    }
}

/// A Q4_0 / Q4_1 / Q8_0 matrix on the device: `w = scale[g] · q + offset[g]` for each block
/// `g` of 32 weights, with the codes `q` packed in `i32` words (eight 4-bit or four 8-bit codes
/// per word, weight `8w + k` in bits `4k..4k + 4` of word `w`).
#[derive(Module, Debug)]
pub struct PackedMatrix<B: Backend> {
    /// `[rows, cols · bits / 32]` packed codes.
    codes: Tensor<B, 2, Int>,
    /// `[rows, cols / 32]`.
    scales: Tensor<B, 2>,
    /// `[rows, cols / 32]`.
    offsets: Tensor<B, 2>,
    /// Bits per code (4 or 8).
    bits: usize,
    /// Input features.
    cols: usize,
}

/// Weights per block of the packed layout.
const PACK_GROUP: usize = 32;

impl<B: Backend> PackedMatrix<B> {
    /// Whether [`PackedMatrix::new`] takes matrices of this type.
    pub fn supports(qtype: QType) -> bool {
        matches!(qtype, QType::Q4_0 | QType::Q4_1 | QType::Q8_0)
    }

    /// Unpacks a Q4_0, Q4_1 or Q8_0 matrix's blocks on the host and uploads codes, scales and
    /// offsets; `None` for other types.
    pub fn new(m: &QMatrix, device: &B::Device) -> Option<Self> {
        if !Self::supports(m.qtype()) {
            return None;
        }
        let (rows, cols) = (m.rows(), m.cols());
        let bits = if m.qtype() == QType::Q8_0 { 8 } else { 4 };
        let per_word = 32 / bits;
        let groups = cols / PACK_GROUP;
        let mut codes = Vec::with_capacity(rows * cols / per_word);
        let mut scales = Vec::with_capacity(rows * groups);
        let mut offsets = Vec::with_capacity(rows * groups);
        let f16 = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let mut q = [0u32; PACK_GROUP];
        for r in 0..rows {
            let bytes = m.row_bytes(r);
            for block in bytes.chunks_exact(m.qtype().block_bytes()) {
                let (d, offset) = match m.qtype() {
                    QType::Q4_0 => {
                        let d = f16(block, 0);
                        for (j, &b) in block[2..18].iter().enumerate() {
                            q[j] = u32::from(b & 0x0F);
                            q[j + 16] = u32::from(b >> 4);
                        }
                        (d, -8.0 * d)
                    }
                    QType::Q4_1 => {
                        let (d, m) = (f16(block, 0), f16(block, 2));
                        for (j, &b) in block[4..20].iter().enumerate() {
                            q[j] = u32::from(b & 0x0F);
                            q[j + 16] = u32::from(b >> 4);
                        }
                        (d, m)
                    }
                    _ => {
                        let d = f16(block, 0);
                        for (j, &b) in block[2..34].iter().enumerate() {
                            q[j] = u32::from((b as i8 as i32 + 128) as u8);
                        }
                        (d, -128.0 * d)
                    }
                };
                scales.push(d);
                offsets.push(offset);
                for word in q.chunks_exact(per_word) {
                    let packed = word
                        .iter()
                        .enumerate()
                        .fold(0u32, |acc, (k, &c)| acc | (c << (k * bits)));
                    codes.push(packed as i32 as i64);
                }
            }
        }
        let words = cols / per_word;
        Some(Self {
            codes: Tensor::from_data(TensorData::new(codes, [rows, words]), device),
            scales: Tensor::from_data(TensorData::new(scales, [rows, groups]), device),
            offsets: Tensor::from_data(TensorData::new(offsets, [rows, groups]), device),
            bits,
            cols,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.codes.dims()[0]
    }

    /// The `[rows', cols]` f32 weights of `codes`/`scales`/`offsets` (all rows, or some).
    fn unpack(
        &self,
        codes: Tensor<B, 2, Int>,
        scales: Tensor<B, 2>,
        offsets: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [rows, words] = codes.dims();
        let per_word = 32 / self.bits;
        let mask: B::IntElem = ((1i64 << self.bits) - 1).elem();
        let parts: Vec<Tensor<B, 3, Int>> = (0..per_word)
            .map(|k| {
                codes
                    .clone()
                    .bitwise_right_shift_scalar(((k * self.bits) as i64).elem())
                    .bitwise_and_scalar(mask)
                    .unsqueeze_dim(2)
            })
            .collect();
        let q = Tensor::cat(parts, 2)
            .reshape([rows, words * per_word / PACK_GROUP, PACK_GROUP])
            .float();
        (q * scales.unsqueeze_dim(2) + offsets.unsqueeze_dim(2)).reshape([rows, self.cols])
    }

    /// `x · Wᵀ` over the last axis. With at most [`PackedMatrix::FUSED_ROWS`] rows of `x` on a
    /// cubecl backend (wgpu, CUDA) one fused kernel reads the packed codes directly
    /// ([`PackedMatrix::fused_product`]); otherwise the matrix is unpacked for one matmul.
    ///
    /// # Shapes
    /// - `x`: `[..., cols]` → `[..., rows]`
    pub fn times_transposed<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let n: usize = dims[..D - 1].iter().product();
        if n <= Self::FUSED_ROWS {
            if let Some(y) = self.fused_product(x.clone().reshape([n, self.cols])) {
                let mut out = dims;
                out[D - 1] = self.rows();
                return y.reshape(out);
            }
        }
        crate::dense::times_transposed(x, self.dequantize())
    }

    /// `x · Wᵀ` by the fused kernel of [`crate::packed_gpu`], without unpacking the matrix;
    /// `None` where it does not run (a backend that is not cubecl's wgpu or CUDA runtime, or
    /// one wrapped by fusion or autodiff; builds without the `wgpu` / `cuda` features).
    ///
    /// # Shapes
    /// - `x`: `[n, cols]` → `[n, rows]`
    pub fn fused_product(&self, x: Tensor<B, 2>) -> Option<Tensor<B, 2>> {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        {
            crate::packed_gpu::packed_product(
                &x,
                &self.codes,
                &self.scales,
                &self.offsets,
                self.bits as u32,
            )
        }
        #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
        {
            let _ = x;
            None
        }
    }

    /// Up to this many rows a product runs in the fused kernel (decoding); above, unpacking
    /// once and the backend's matmul is faster.
    pub const FUSED_ROWS: usize = 8;

    /// The whole matrix in f32 on the device (transient: one product's worth).
    pub fn dequantize(&self) -> Tensor<B, 2> {
        self.unpack(
            self.codes.clone(),
            self.scales.clone(),
            self.offsets.clone(),
        )
    }

    /// The rows `ids` (`[batch, t]`), unpacked: an embedding lookup.
    ///
    /// # Shapes
    /// - `ids`: `[batch, t]` → `[batch, t, cols]`
    pub fn rows_of(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let flat = ids.reshape([b * t]);
        let out = self.unpack(
            self.codes.clone().select(0, flat.clone()),
            self.scales.clone().select(0, flat.clone()),
            self.offsets.clone().select(0, flat),
        );
        out.reshape([b, t, self.cols])
    }
}

/// Bytes of a matrix in `qtype` (for memory reports).
pub fn stored_bytes(qtype: QType, rows: usize, cols: usize) -> usize {
    qtype.row_bytes(cols).unwrap_or(cols * 4) * rows
}
