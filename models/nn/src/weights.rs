//! Reading checkpoint tensors by name, with strict bookkeeping.
//!
//! A [`Weights`] holds every tensor of a checkpoint (safetensors, sharded safetensors, PyTorch
//! `.bin`, or tensors another reader produced, e.g. from GGUF). Model loaders `take` tensors by
//! their checkpoint names with the shape they expect; [`Weights::finish`] then fails if any
//! tensor was left unused, except names the caller allow-lists explicitly (buffers such as
//! GPT-2's `attn.bias`). A missing tensor, a wrong shape, a truncated file or an unsupported
//! dtype is an error naming the tensor and the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::quant::{QMatrix, QType, QuantError, Storage, WeightFormat};

/// Everything that can go wrong reading checkpoint tensors.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file (truncated, bad header, offsets out of range).
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file is not a readable PyTorch checkpoint.
    #[error("{path} is not a readable PyTorch checkpoint: {reason}")]
    Pytorch {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A sharded checkpoint's index is malformed or names a missing shard.
    #[error("bad shard index {path}: {reason}")]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No weight file was found in a model folder.
    #[error("no weights in {0}: expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json")]
    NoWeights(PathBuf),
    /// The model needs a tensor the checkpoint does not have.
    #[error("tensor `{name}` is missing from {source_name}")]
    Missing {
        /// The checkpoint name that was looked for.
        name: String,
        /// Where it was looked for.
        source_name: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("tensor `{name}` has shape {found:?}, but the config implies {expected:?} (does config.json belong to these weights?)")]
    Shape {
        /// The tensor.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype the zoo cannot convert to f32.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    Dtype {
        /// The tensor.
        name: String,
        /// The dtype, as the file names it.
        dtype: String,
    },
    /// Two tensors that must agree (e.g. a tied LM head and the embedding) differ.
    #[error("tensor `{name}`: {reason}")]
    Inconsistent {
        /// The tensor.
        name: String,
        /// What does not agree.
        reason: String,
    },
    /// A tensor holds NaN or infinity (see [`allow_non_finite`]).
    #[error("tensor `{name}` holds {value} at element {index}: refusing weights that turn every output into NaN (pass --allow-nan to load them anyway)")]
    NonFinite {
        /// The tensor.
        name: String,
        /// The first bad element, row-major.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// The checkpoint has tensors the model did not use.
    #[error("{count} checkpoint tensor(s) were not used by the model: {names}", count = .0.len(), names = .0.join(", "))]
    Unused(Vec<String>),
}

static ALLOW_NON_FINITE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets weights holding NaN or infinity load (by default a tensor with one is
/// [`WeightError::NonFinite`]). For the whole process; the `zoo` binary sets it from
/// `--allow-nan` and says so on stderr.
pub fn allow_non_finite(allow: bool) {
    ALLOW_NON_FINITE.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// Fails on the first NaN or infinity of a tensor, unless [`allow_non_finite`] is on.
fn check_finite(name: &str, values: &[f32], offset: usize) -> Result<(), WeightError> {
    if ALLOW_NON_FINITE.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(WeightError::NonFinite {
            name: name.to_string(),
            index: offset + i,
            value: values[i],
        }),
    }
}

/// [`check_finite`] for a matrix in a stored format, a few rows at a time.
fn check_matrix(name: &str, m: &QMatrix) -> Result<(), WeightError> {
    if ALLOW_NON_FINITE.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let (rows, cols) = (m.rows(), m.cols());
    let step = (1 << 16) / cols.max(1) + 1;
    let mut buf = Vec::new();
    let mut r = 0;
    while r < rows {
        let end = (r + step).min(rows);
        buf.resize((end - r) * cols, 0.0);
        m.dequantize_rows(r..end, &mut buf);
        check_finite(name, &buf, r * cols)?;
        r = end;
    }
    Ok(())
}

/// Where one tensor's bytes are.
enum Entry {
    /// A tensor inside a memory-mapped safetensors file.
    Mapped {
        file: Arc<dyn AsRef<[u8]> + Send + Sync>,
        dtype: Dtype,
        shape: Vec<usize>,
        start: usize,
        end: usize,
    },
    /// A tensor already in memory as f32.
    Owned { shape: Vec<usize>, data: Vec<f32> },
    /// A tensor read from a PyTorch file, converted on demand.
    Data(TensorData),
    /// A matrix in a stored format (a GGUF tensor, kept as the file holds it).
    Stored(QMatrix),
}

impl Entry {
    fn shape(&self) -> Vec<usize> {
        match self {
            Entry::Mapped { shape, .. } | Entry::Owned { shape, .. } => shape.clone(),
            Entry::Data(data) => data.shape.to_vec(),
            Entry::Stored(m) => vec![m.rows(), m.cols()],
        }
    }
}

/// The tensors of one checkpoint, taken by name.
pub struct Weights {
    entries: BTreeMap<String, Entry>,
    used: BTreeSet<String>,
    source_name: String,
    format: WeightFormat,
    synthetic: Option<Synthetic>,
}

/// Seeded random tensors made on demand for any name (see [`Weights::synthetic`]).
struct Synthetic {
    seed: u64,
    absent: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("source", &self.source_name)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeightError + '_ {
    move |source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Weights {
    /// Opens the weights of a Hugging Face model folder, or one weight file.
    ///
    /// In a folder the first of `model.safetensors`, `model.safetensors.index.json`,
    /// `pytorch_model.bin`, `pytorch_model.bin.index.json` that exists is read.
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        if path.is_file() {
            return Self::open_file(path);
        }
        for name in [
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        ] {
            let candidate = path.join(name);
            if candidate.is_file() {
                return Self::open_file(&candidate);
            }
        }
        Err(WeightError::NoWeights(path.to_path_buf()))
    }

    fn open_file(path: &Path) -> Result<Self, WeightError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".index.json") {
            Self::open_sharded(path)
        } else if name.ends_with(".safetensors") {
            let mut weights = Self::empty(path.display().to_string());
            weights.add_safetensors(path)?;
            Ok(weights)
        } else {
            let mut weights = Self::empty(path.display().to_string());
            weights.add_pytorch(path)?;
            Ok(weights)
        }
    }

    fn empty(source_name: String) -> Self {
        Self {
            entries: BTreeMap::new(),
            used: BTreeSet::new(),
            source_name,
            format: WeightFormat::AS_STORED,
            synthetic: None,
        }
    }

    /// A checkpoint of seeded random weights in which every tensor a loader asks for exists —
    /// except the names `absent` picks (a tied head, optional parts) — with the shape the
    /// loader expects: the architecture at its real size without its weights, for measuring
    /// speed and memory. Matrices in a block format are made directly as random blocks, never
    /// as f32, so a 7B model at Q4_0 takes its Q4_0 size. Norm weights are 1, everything else
    /// small (±0.05 uniform, block scales 2⁻⁸).
    pub fn synthetic(seed: u64, absent: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        let mut weights = Self::empty(format!("random weights (seed {seed})"));
        weights.synthetic = Some(Synthetic {
            seed,
            absent: Box::new(absent),
        });
        weights
    }

    /// The seed of a synthetic tensor: the checkpoint's seed mixed with its name.
    fn synthetic_seed(&self, name: &str) -> Option<u64> {
        let s = self.synthetic.as_ref()?;
        if self.entries.contains_key(name) || (s.absent)(name) {
            return None;
        }
        let mut h = s.seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        }
        Some(h)
    }

    /// Keeps matrices in these formats from now on (see [`WeightFormat`]): [`Weights::dense`],
    /// [`Weights::head`] and [`Weights::embedding`] follow it.
    pub fn set_format(&mut self, format: WeightFormat) {
        self.format = format;
    }

    /// The formats matrices are kept in.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Builds weights from matrices in stored formats and f32 tensors (a GGUF file's), by name.
    pub fn from_stored(
        source_name: &str,
        stored: BTreeMap<String, QMatrix>,
        tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Self {
        let mut weights = Self::from_f32(source_name, tensors);
        for (name, m) in stored {
            weights.entries.insert(name, Entry::Stored(m));
        }
        weights
    }

    /// Builds weights from tensors already in memory (for example dequantised GGUF tensors).
    pub fn from_f32(source_name: &str, tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Self {
        let mut weights = Self::empty(source_name.to_string());
        for (name, (shape, data)) in tensors {
            weights.entries.insert(name, Entry::Owned { shape, data });
        }
        weights
    }

    /// Reads a `*.index.json` of a sharded checkpoint and every shard it names.
    fn open_sharded(index: &Path) -> Result<Self, WeightError> {
        let bad = |reason: String| WeightError::Index {
            path: index.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(index).map_err(io_err(index))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("no `weight_map` object".into()))?;
        let mut shards = BTreeSet::new();
        for file in map.values() {
            let file = file
                .as_str()
                .ok_or_else(|| bad("a `weight_map` value is not a file name".into()))?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(bad(format!("shard name `{file}` is not a plain file name")));
            }
            shards.insert(file.to_string());
        }
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut weights = Self::empty(index.display().to_string());
        for shard in shards {
            let path = dir.join(&shard);
            if !path.is_file() {
                return Err(bad(format!("shard {shard} does not exist")));
            }
            if shard.ends_with(".safetensors") {
                weights.add_safetensors(&path)?;
            } else {
                weights.add_pytorch(&path)?;
            }
        }
        for name in map.keys() {
            if !weights.entries.contains_key(name) {
                return Err(bad(format!(
                    "tensor `{name}` is listed but absent from its shard"
                )));
            }
        }
        Ok(weights)
    }

    /// The tensors of one safetensors file held in memory (a browser's download); `name`
    /// names it in messages.
    pub fn from_safetensors_bytes(name: &str, bytes: Vec<u8>) -> Result<Self, WeightError> {
        let mut weights = Self::empty(name.to_string());
        weights.add_safetensors_bytes(Path::new(name), Arc::new(bytes))?;
        Ok(weights)
    }

    fn add_safetensors(&mut self, path: &Path) -> Result<(), WeightError> {
        let file = File::open(path).map_err(io_err(path))?;
        // SAFETY: the map is read-only and the zoo never writes to checkpoint files; a file
        // truncated by another process while mapped is outside what any reader can defend.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        self.add_safetensors_bytes(path, Arc::new(mmap))
    }

    fn add_safetensors_bytes(
        &mut self,
        path: &Path,
        file: Arc<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<(), WeightError> {
        let data: &[u8] = (*file).as_ref();
        let bad = |reason: String| WeightError::Safetensors {
            path: path.to_path_buf(),
            reason,
        };
        let (header_len, metadata) =
            SafeTensors::read_metadata(data).map_err(|e| bad(e.to_string()))?;
        let data_start = 8 + header_len;
        let mut infos = Vec::new();
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            let elements = info
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor `{name}` is absurdly large")))?;
            let bytes = elements
                .checked_mul(info.dtype.bitsize() / 8)
                .ok_or_else(|| bad(format!("tensor `{name}` is absurdly large")))?;
            if end < start || end - start != bytes {
                return Err(bad(format!(
                    "tensor `{name}` has {} bytes for shape {:?}",
                    end.saturating_sub(start),
                    info.shape
                )));
            }
            if data_start.checked_add(end).is_none_or(|e| e > data.len()) {
                return Err(bad(format!(
                    "tensor `{name}` ends at byte {} but the file has {} bytes (truncated?)",
                    data_start.saturating_add(end),
                    data.len()
                )));
            }
            infos.push((name, info.dtype, info.shape.clone(), start, end));
        }
        for (name, dtype, shape, start, end) in infos {
            self.entries.insert(
                name,
                Entry::Mapped {
                    file: file.clone(),
                    dtype,
                    shape,
                    start: data_start + start,
                    end: data_start + end,
                },
            );
        }
        Ok(())
    }

    fn add_pytorch(&mut self, path: &Path) -> Result<(), WeightError> {
        crate::pickle::check_file(path).map_err(|reason| WeightError::Pytorch {
            path: path.to_path_buf(),
            reason,
        })?;
        #[cfg(target_arch = "wasm32")]
        return Err(WeightError::Pytorch {
            path: path.to_path_buf(),
            reason: "PyTorch .bin checkpoints are not read in the browser build: use safetensors"
                .into(),
        });
        #[cfg(not(target_arch = "wasm32"))]
        {
            let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| {
                WeightError::Pytorch {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            for (name, snapshot) in reader.into_tensors() {
                let data = snapshot.to_data().map_err(|e| WeightError::Pytorch {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}`: {e:?}"),
                })?;
                self.entries.insert(name, Entry::Data(data));
            }
            Ok(())
        }
    }

    /// Where the tensors come from, for messages.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Every tensor name in the checkpoint, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|s| s.as_str())
    }

    /// Whether the checkpoint has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name) || self.synthetic_seed(name).is_some()
    }

    /// The shape of a tensor, outermost dimension first.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.entries.get(name).map(Entry::shape)
    }

    /// Renames every tensor whose name starts with `from` to start with `to` instead: a
    /// checkpoint that nests a whole model under a prefix (BLIP-2's `language_model.`) is then
    /// read by that model's own loader.
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        let names: Vec<String> = self
            .entries
            .keys()
            .filter(|n| n.starts_with(from))
            .cloned()
            .collect();
        for name in names {
            if let Some(entry) = self.entries.remove(&name) {
                self.entries
                    .insert(format!("{to}{}", &name[from.len()..]), entry);
            }
        }
    }

    /// Adds the tensors of `other` (a second checkpoint laid over this one, such as a P-Tuning
    /// prefix over its base model); a name both hold takes `other`'s tensor.
    pub fn overlay(&mut self, other: Weights) {
        self.source_name = format!("{} + {}", self.source_name, other.source_name);
        self.absorb(other, "");
    }

    /// Moves every tensor of `other` in, named `prefix` + its name; a tensor already here under
    /// that name is replaced (checkpoints read in sequence, the later file winning, as a
    /// non-strict `load_state_dict` of each does). Used and skipped marks come along.
    pub fn absorb(&mut self, other: Weights, prefix: &str) {
        for (name, entry) in other.entries {
            let used = other.used.contains(&name);
            let name = format!("{prefix}{name}");
            self.used.remove(&name);
            if used {
                self.used.insert(name.clone());
            }
            self.entries.insert(name, entry);
        }
    }

    /// Marks a tensor as deliberately unused (a buffer such as a causal-mask constant).
    pub fn skip(&mut self, name: &str) {
        if self.entries.contains_key(name) {
            self.used.insert(name.to_string());
        }
    }

    /// Takes a tensor as f32 values in row-major order, checking its shape.
    pub fn take_f32(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>, WeightError> {
        if let Some(seed) = self.synthetic_seed(name) {
            let n: usize = expected.iter().product();
            let norm = name.contains("norm") || name.contains("ln_");
            return Ok(if norm && !name.ends_with("bias") {
                vec![1.0; n]
            } else {
                let mut rng = SplitMix(seed);
                (0..n).map(|_| rng.uniform() * 0.1 - 0.05).collect()
            });
        }
        let entry = self.entries.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            source_name: self.source_name.clone(),
        })?;
        let shape = entry.shape();
        if shape != expected {
            return Err(WeightError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        let values = match entry {
            Entry::Mapped {
                file,
                dtype,
                start,
                end,
                ..
            } => decode(name, *dtype, &(**file).as_ref()[*start..*end])?,
            Entry::Owned { data, .. } => data.clone(),
            Entry::Data(data) => data
                .clone()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| WeightError::Dtype {
                    name: name.to_string(),
                    dtype: format!("{:?} ({e:?})", data.dtype),
                })?,
            Entry::Stored(m) => m.dequantize(),
        };
        check_finite(name, &values, 0)?;
        self.used.insert(name.to_string());
        Ok(values)
    }

    /// Takes a `[rows, cols]` matrix (rows = output features) in the format `want`, or as
    /// stored when `want` is `None`: `Ok(None)` means "f32, as a plain tensor". A stored matrix
    /// asked for in another format is dequantized and quantized again.
    pub fn take_matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        want: Option<QType>,
    ) -> Result<Option<QMatrix>, WeightError> {
        // A row that is not a whole number of blocks stays f32, as llama.cpp's quantizer
        // falls back for such tensors (e.g. an MLP width of 48 with blocks of 32).
        let want = want.filter(|w| w.row_bytes(cols).is_some());
        if let (Some(seed), Some(q)) = (self.synthetic_seed(name), want) {
            if matches!(q, QType::Q8_0 | QType::Q4_0 | QType::Q4_1) {
                let bytes = random_blocks(q, rows, cols, seed);
                return QMatrix::new(q, rows, cols, Storage::Owned(bytes))
                    .map(Some)
                    .map_err(|e| self.quant_err(name, e));
            }
        }
        let stored = match self.entries.get(name) {
            Some(Entry::Stored(m)) => Some(m.clone()),
            Some(Entry::Mapped {
                file,
                dtype,
                start,
                end,
                ..
            }) if want.is_some_and(|w| mapped_type(*dtype) == Some(w)) => {
                // f16 / bf16 / f32 safetensors kept as they are, straight from the map.
                let owner: Arc<dyn AsRef<[u8]> + Send + Sync> = file.clone();
                let t = mapped_type(*dtype).expect("checked");
                Some(
                    QMatrix::new(
                        t,
                        rows,
                        cols,
                        Storage::Shared {
                            owner,
                            offset: *start,
                            len: end - start,
                        },
                    )
                    .map_err(|e| self.quant_err(name, e))?,
                )
            }
            _ => None,
        };
        if let Some(m) = stored {
            if [m.rows(), m.cols()] != [rows, cols] {
                return Err(WeightError::Shape {
                    name: name.to_string(),
                    expected: vec![rows, cols],
                    found: vec![m.rows(), m.cols()],
                });
            }
            if want.is_none_or(|w| w == m.qtype()) {
                check_matrix(name, &m)?;
                self.used.insert(name.to_string());
                return Ok((m.qtype() != QType::F32 || want.is_some()).then_some(m));
            }
        }
        let Some(want) = want else {
            return Ok(None);
        };
        let values = self.take_f32(name, &[rows, cols])?;
        QMatrix::quantize(want, rows, cols, &values)
            .map(Some)
            .map_err(|e| self.quant_err(name, e))
    }

    fn quant_err(&self, name: &str, e: QuantError) -> WeightError {
        WeightError::Inconsistent {
            name: name.to_string(),
            reason: e.to_string(),
        }
    }

    /// For a tied head: when the checkpoint also stores `name` (some writers do), takes it and
    /// fails unless it equals `source` (already read or not) value for value. Nothing happens
    /// when `name` is absent. Compared on the host, before anything reaches a device.
    pub fn take_tied(
        &mut self,
        name: &str,
        source: &str,
        shape: &[usize],
    ) -> Result<(), WeightError> {
        if !self.contains(name) {
            return Ok(());
        }
        let tied = self.take_f32(name, shape)?;
        let was_used = self.used.contains(source);
        let original = self.take_f32(source, shape)?;
        if !was_used {
            self.used.remove(source);
        }
        if tied != original {
            return Err(WeightError::Inconsistent {
                name: name.to_string(),
                reason: format!(
                    "the head is tied (tie_word_embeddings) but it differs from {source}"
                ),
            });
        }
        Ok(())
    }

    /// Takes a tensor onto `device`, checking its shape.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        let values = self.take_f32(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// Takes a `[rows, cols]` matrix and returns it transposed, `[cols, rows]`, on `device`.
    pub fn tensor_transposed<B: Backend>(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>, WeightError> {
        let values = self.take_f32(name, &[rows, cols])?;
        Ok(Tensor::from_data(
            TensorData::new(transpose(&values, rows, cols), [cols, rows]),
            device,
        ))
    }

    /// Builds a Burn `Linear` (`[in, out]`) from `{prefix}.weight` / `{prefix}.bias`.
    ///
    /// `layout` says how the checkpoint stores the weight: PyTorch `nn.Linear` keeps
    /// `[out, in]` (transposed here once, at load), GPT-2's `Conv1D` keeps `[in, out]`.
    pub fn linear<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        layout: LinearLayout,
        device: &B::Device,
    ) -> Result<Linear<B>, WeightError> {
        let (weight, bias) = self.weight_and_bias(
            prefix,
            d_in,
            d_out,
            bias,
            layout,
            LinearLayout::InOut,
            device,
        )?;
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        })
    }

    /// Builds a [`Dense`](crate::Dense) (`[out, in]`) from `{prefix}.weight` / `{prefix}.bias`;
    /// `layout` says how the checkpoint stores the weight.
    pub fn dense<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        layout: LinearLayout,
        device: &B::Device,
    ) -> Result<crate::Dense<B>, WeightError> {
        let format = self.format.matrices;
        self.dense_as(prefix, d_in, d_out, bias, layout, format, device)
    }

    /// [`Weights::dense`] for an LM head: kept in the format's `head` type.
    pub fn head<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        layout: LinearLayout,
        device: &B::Device,
    ) -> Result<crate::Dense<B>, WeightError> {
        let format = self.format.head;
        self.dense_as(prefix, d_in, d_out, bias, layout, format, device)
    }

    /// A [`Dense`](crate::Dense) whose weight is kept in `format` (`None`: as stored).
    #[allow(clippy::too_many_arguments)]
    pub fn dense_as<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        layout: LinearLayout,
        format: Option<QType>,
        device: &B::Device,
    ) -> Result<crate::Dense<B>, WeightError> {
        let name = format!("{prefix}.weight");
        // A matrix kept in a stored format is always `[out, in]` (ggml's rows), whatever the
        // checkpoint family's own layout.
        let layout = if matches!(self.entries.get(&name), Some(Entry::Stored(_))) {
            LinearLayout::OutIn
        } else {
            layout
        };
        let stored = match layout {
            LinearLayout::OutIn => self.take_matrix(&name, d_out, d_in, format)?,
            // GPT-2's Conv1D `[in, out]`: transposed once on the host, then stored.
            LinearLayout::InOut => match format {
                Some(f) if f.row_bytes(d_in).is_some() => {
                    let values = self.take_f32(&name, &[d_in, d_out])?;
                    let t = transpose(&values, d_in, d_out);
                    Some(
                        QMatrix::quantize(f, d_out, d_in, &t)
                            .map_err(|e| self.quant_err(&name, e))?,
                    )
                }
                _ => None,
            },
        };
        let bias = if bias {
            Some(self.tensor(&format!("{prefix}.bias"), [d_out], device)?)
        } else {
            None
        };
        // An f32 matrix is a Burn parameter (trainable, Burn's matmul) unless f32 was asked for
        // explicitly (`--dtype f32`): then, like every stored format, it is multiplied by
        // zoo-quant's kernels on the CPU backends (inference only; AVX-512 where Burn's gemm
        // runs AVX2).
        match stored {
            Some(m) if m.qtype() != QType::F32 || format.is_some() => Ok(
                crate::Dense::stored_with(m, bias, self.format.int8_activations, device),
            ),
            Some(m) => Ok(crate::Dense::new(
                Tensor::from_data(TensorData::new(m.dequantize(), [d_out, d_in]), device),
                bias,
            )),
            None => {
                let weight = if layout == LinearLayout::OutIn {
                    self.tensor(&name, [d_out, d_in], device)?
                } else {
                    self.tensor_transposed(&name, d_in, d_out, device)?
                };
                Ok(crate::Dense::new(weight, bias))
            }
        }
    }

    /// A token embedding `[vocab, d]` kept in the format's `embeddings` type.
    pub fn embedding<B: Backend>(
        &mut self,
        name: &str,
        vocab: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<crate::Embed<B>, WeightError> {
        let format = self.format.embeddings;
        match self.take_matrix(name, vocab, d, format)? {
            Some(m) if m.qtype() != QType::F32 || format.is_some() => Ok(
                crate::Embed::stored_with(m, self.format.int8_activations, device),
            ),
            Some(m) => Ok(crate::Embed::new(Tensor::from_data(
                TensorData::new(m.dequantize(), [vocab, d]),
                device,
            ))),
            None => Ok(crate::Embed::new(self.tensor(name, [vocab, d], device)?)),
        }
    }

    /// `{prefix}.weight`, stored as `stored`, returned contiguous as `wanted`, and the bias.
    #[allow(clippy::too_many_arguments)]
    fn weight_and_bias<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        stored: LinearLayout,
        wanted: LinearLayout,
        device: &B::Device,
    ) -> Result<(Tensor<B, 2>, Option<Tensor<B, 1>>), WeightError> {
        let name = format!("{prefix}.weight");
        let (rows, cols) = match stored {
            LinearLayout::OutIn => (d_out, d_in),
            LinearLayout::InOut => (d_in, d_out),
        };
        let weight = if stored == wanted {
            self.tensor(&name, [rows, cols], device)?
        } else {
            self.tensor_transposed(&name, rows, cols, device)?
        };
        let bias = if bias {
            Some(self.tensor(&format!("{prefix}.bias"), [d_out], device)?)
        } else {
            None
        };
        Ok((weight, bias))
    }

    /// Fails unless every tensor was taken or skipped; `allowed` names the tensors that may
    /// stay unused (buffers of the original code).
    pub fn finish(self, allowed: impl Fn(&str) -> bool) -> Result<(), WeightError> {
        let unused: Vec<String> = self
            .entries
            .keys()
            .filter(|name| !self.used.contains(*name) && !allowed(name))
            .cloned()
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(WeightError::Unused(unused))
        }
    }
}

/// SplitMix64: a small, fast, seeded generator for synthetic weights.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Random Q8_0 / Q4_0 / Q4_1 blocks: random codes, scale 2⁻⁸ (minimum −2⁻⁵ for Q4_1).
fn random_blocks(q: QType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let row_bytes = q.row_bytes(cols).unwrap_or(0);
    let mut bytes = vec![0u8; rows * row_bytes];
    let mut rng = SplitMix(seed);
    for chunk in bytes.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let d = half::f16::from_f32(1.0 / 256.0).to_le_bytes();
    let m = half::f16::from_f32(-1.0 / 32.0).to_le_bytes();
    for block in bytes.chunks_exact_mut(q.block_bytes()) {
        block[..2].copy_from_slice(&d);
        if q == QType::Q4_1 {
            block[2..4].copy_from_slice(&m);
        }
    }
    bytes
}

/// `[rows, cols]` row-major values as `[cols, rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The stored format of a safetensors element type that a [`QMatrix`] can hold as it is.
fn mapped_type(dtype: Dtype) -> Option<QType> {
    match dtype {
        Dtype::F32 => Some(QType::F32),
        Dtype::F16 => Some(QType::F16),
        Dtype::BF16 => Some(QType::BF16),
        _ => None,
    }
}

/// How a checkpoint stores a linear layer's weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearLayout {
    /// `[out_features, in_features]`: PyTorch `nn.Linear`.
    OutIn,
    /// `[in_features, out_features]`: GPT-2's `Conv1D`, and Burn's own layout.
    InOut,
}

fn decode(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, WeightError> {
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")) as f32)
            .collect(),
        other => {
            return Err(WeightError::Dtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(head: Option<Vec<f32>>) -> Weights {
        let mut t = BTreeMap::new();
        t.insert(
            "wte.weight".to_string(),
            (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        );
        if let Some(h) = head {
            t.insert("lm_head.weight".to_string(), (vec![2, 2], h));
        }
        Weights::from_f32("test", t)
    }

    #[test]
    fn tied_head_equal_absent_or_different() {
        // Equal: both consumed, the source still counts as unused until the model takes it.
        let mut w = weights(Some(vec![1.0, 2.0, 3.0, 4.0]));
        w.take_tied("lm_head.weight", "wte.weight", &[2, 2])
            .unwrap();
        match w.finish(|_| false) {
            Err(WeightError::Unused(names)) => assert_eq!(names, ["wte.weight"]),
            other => panic!("expected wte.weight unused, got {other:?}"),
        }
        let mut w = weights(Some(vec![1.0, 2.0, 3.0, 4.0]));
        w.take_f32("wte.weight", &[2, 2]).unwrap();
        w.take_tied("lm_head.weight", "wte.weight", &[2, 2])
            .unwrap();
        w.finish(|_| false).unwrap();
        // Absent: nothing to do.
        let mut w = weights(None);
        w.take_tied("lm_head.weight", "wte.weight", &[2, 2])
            .unwrap();
        // Different by one value: an error naming both.
        let mut w = weights(Some(vec![1.0, 2.0, 3.0, 4.5]));
        let err = w
            .take_tied("lm_head.weight", "wte.weight", &[2, 2])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lm_head.weight") && err.contains("wte.weight"),
            "{err}"
        );
        // Wrong shape of the stored head: a shape error.
        let mut w = weights(Some(vec![1.0, 2.0, 3.0, 4.0]));
        let err = w
            .take_tied("lm_head.weight", "wte.weight", &[4, 1])
            .unwrap_err();
        assert!(matches!(err, WeightError::Shape { .. }), "{err}");
    }
}
