//! Parsing a GGUF file: header, metadata, tensor infos and the data section.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use crate::dequant::dequantize;
use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

/// The alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The most dimensions a ggml tensor can have.
pub const MAX_DIMS: u32 = 4;
/// The deepest nesting of arrays inside arrays that is accepted.
const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's entry in the file's tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor name (llama.cpp naming, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// The dimensions as stored: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// The data type.
    pub dtype: GgmlType,
    /// Byte offset of the data, relative to the start of the data section.
    pub offset: u64,
    n_bytes: u64,
}

impl TensorInfo {
    /// The row-major shape, outermost first (PyTorch order): `dims` reversed.
    pub fn shape(&self) -> Vec<usize> {
        // Every dimension was checked to fit in memory (its bytes lie inside the file).
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The number of bytes of data.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// The bytes of a file: memory-mapped, or owned.
pub struct FileBytes(Bytes);

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// An opened GGUF file: its metadata and tensor table, with the tensor data memory-mapped.
pub struct GgufFile {
    bytes: std::sync::Arc<FileBytes>,
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.bytes.as_ref().as_ref().len())
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let bytes = if len == 0 {
            Bytes::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only; like every reader of memory-mapped files we rely on
            // the file not being truncated by another process while it is open.
            Bytes::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Self::parse(bytes)
    }

    /// Parses and validates a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(bytes: Bytes) -> Result<Self> {
        let header = parse_header(&bytes)?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            index,
            alignment: header.alignment,
            data_start: header.data_start,
            bytes: std::sync::Arc::new(FileBytes(bytes)),
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (from `general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute file offset where the data section starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// One metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn wrong(key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: found.describe(),
        }
    }

    /// An integer metadata value (of any integer type) that fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        v.as_integer()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| Self::wrong(key, "an integer fitting u32", v))
    }

    /// An integer metadata value (of any integer type) that fits in `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_integer()
            .and_then(|x| u64::try_from(x).ok())
            .ok_or_else(|| Self::wrong(key, "an integer fitting u64", v))
    }

    /// An integer metadata value (of any integer type) that fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let v = self.require(key)?;
        v.as_integer()
            .and_then(|x| i64::try_from(x).ok())
            .ok_or_else(|| Self::wrong(key, "an integer fitting i64", v))
    }

    /// A float metadata value (`f32`, or `f64` rounded to `f32`).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        match v {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            _ => Err(Self::wrong(key, "a float", v)),
        }
    }

    /// A float metadata value (`f32` widened, or `f64`).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_float().ok_or_else(|| Self::wrong(key, "a float", v))
    }

    /// A boolean metadata value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "a bool", v)),
        }
    }

    /// A string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// An array metadata value of any element type.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| Self::wrong(key, "an array", v))
    }

    /// An array-of-strings metadata value.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            Value::Array(Array::String(v)) => Ok(v),
            v => Err(Self::wrong(key, "an array of strings", v)),
        }
    }

    /// An array-of-`f32` metadata value.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.require(key)? {
            Value::Array(Array::F32(v)) => Ok(v),
            v => Err(Self::wrong(key, "an array of f32", v)),
        }
    }

    /// An array of integers (of any integer type) as `i64`s.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.require(key)?;
        v.as_array()
            .and_then(Array::to_i64_vec)
            .ok_or_else(|| Self::wrong(key, "an array of integers", v))
    }

    /// The architecture name (`general.architecture`, e.g. `llama`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// The key `{architecture}.{suffix}`, e.g. `llama.block_count` for `block_count`.
    pub fn arch_key(&self, suffix: &str) -> Result<String> {
        Ok(format!("{}.{suffix}", self.architecture()?))
    }

    /// The Jinja chat template stored in the file (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.get("tokenizer.chat_template").and_then(Value::as_str)
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor's entry.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| GgufError::MissingTensor(name.to_string()))
    }

    /// A tensor's raw bytes as stored (quantised blocks for quantised types).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        // Bounds were checked when the file was opened.
        let start = (self.data_start + info.offset) as usize;
        Ok(&self.bytes.as_ref().as_ref()[start..start + info.n_bytes as usize])
    }

    /// The file's bytes, shared (tensors kept as stored borrow from them), and where `name`'s
    /// data starts in them.
    pub fn shared_tensor(&self, name: &str) -> Result<(std::sync::Arc<FileBytes>, usize, usize)> {
        let info = self.tensor_info(name)?;
        let start = (self.data_start + info.offset) as usize;
        Ok((self.bytes.clone(), start, info.n_bytes as usize))
    }

    /// A tensor dequantised to f32, with its row-major shape (outermost first).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.tensor_info(name)?;
        if !info.dtype.can_dequantize() {
            return Err(GgufError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: info.dtype,
            });
        }
        let bytes = self.tensor_bytes(name)?;
        let mut out = vec![0f32; info.n_elements() as usize];
        dequantize(info.dtype, bytes, &mut out).map_err(|e| match e {
            GgufError::UnsupportedDtype { dtype, .. } => GgufError::UnsupportedDtype {
                tensor: name.to_string(),
                dtype,
            },
            other => other,
        })?;
        Ok((info.shape(), out))
    }
}

/// What the header, metadata and tensor table say.
struct Header {
    version: u32,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: u64,
}

/// A bounds-checked little-endian reader over the file bytes.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.data.len() as u64,
            });
        }
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in the rest of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<()> {
        let needed = count.saturating_mul(min_size);
        if needed > self.remaining() {
            return Err(GgufError::AbsurdCount {
                what: what(),
                count,
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                what: format!("{} ({len} bytes)", what()),
                offset: self.pos as u64,
                needed: len,
                len: self.data.len() as u64,
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| GgufError::Invalid(format!("{} is not valid UTF-8: {e}", what())))
    }

    fn value(&mut self, key: &str, ty: ValueType, depth: usize) -> Result<Value> {
        let what = || format!("value of metadata key {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(&what)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(&what)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => Value::Bool(self.bool(key)?),
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::Array => Value::Array(self.array_value(key, depth)?),
        })
    }

    fn bool(&mut self, key: &str) -> Result<bool> {
        match self.array::<1>(&|| format!("bool value of metadata key {key:?}"))?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(GgufError::Invalid(format!(
                "metadata key {key:?} holds bool byte {b}, expected 0 or 1"
            ))),
        }
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::Invalid(format!(
                "metadata key {key:?} nests arrays deeper than {MAX_ARRAY_DEPTH} levels"
            )));
        }
        let type_id = self.u32(&|| format!("array element type of metadata key {key:?}"))?;
        let elem = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
        })?;
        let count = self.u64(&|| format!("array length of metadata key {key:?}"))?;
        self.check_count(count, elem.min_size(), &|| {
            format!(
                "the length of array metadata key {key:?} (elements of type {})",
                elem.name()
            )
        })?;
        // `count` items fit in the rest of the file, so `count` fits in memory.
        let n = count as usize;
        let what = || format!("array elements of metadata key {key:?}");
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                const S: usize = std::mem::size_of::<$t>();
                let bytes = self.take(count * S as u64, &what)?;
                Array::$variant(
                    bytes
                        .chunks_exact(S)
                        .map(|c| {
                            let mut a = [0u8; S];
                            a.copy_from_slice(c);
                            <$t>::from_le_bytes(a)
                        })
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => fixed!(U8, u8),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => Array::Bool((0..n).map(|_| self.bool(key)).collect::<Result<_>>()?),
            ValueType::String => Array::String(
                (0..n)
                    .map(|i| self.string(&|| format!("string {i} of metadata key {key:?}")))
                    .collect::<Result<_>>()?,
            ),
            ValueType::Array => Array::Array(
                (0..n)
                    .map(|_| self.array_value(key, depth + 1))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

fn parse_header(data: &[u8]) -> Result<Header> {
    let mut c = Cursor { data, pos: 0 };
    if data.len() < 4 {
        return Err(GgufError::Truncated {
            what: "magic bytes".into(),
            offset: 0,
            needed: 4,
            len: data.len() as u64,
        });
    }
    let magic = c.array::<4>(&|| "magic bytes".into())?;
    if &magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = c.u32(&|| "version".into())?;
    if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
        return Err(GgufError::BigEndian(version));
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    // Smallest metadata entry: key length (8) + value type (4) + a 1-byte value.
    c.check_count(n_kv, 8 + 4 + 1, &|| "the metadata count".into())?;
    // Smallest tensor entry: name length (8) + n_dims (4) + type (4) + offset (8).
    c.check_count(n_tensors, 8 + 4 + 4 + 8, &|| "the tensor count".into())?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        let type_id = c.u32(&|| format!("value type of metadata key {key:?}"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.clone(),
            type_id,
        })?;
        let value = c.value(&key, ty, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(GgufError::Invalid(format!(
                "metadata key {key:?} appears twice"
            )));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_integer() {
            Some(a) if a > 0 && a <= 1 << 30 && (a & (a - 1)) == 0 => a as u64,
            _ => {
                return Err(GgufError::Invalid(format!(
                    "general.alignment is {}, expected a power of two",
                    v.describe()
                )))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = std::collections::HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let n_dims = c.u32(&|| format!("dimension count of tensor {name:?}"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Invalid(format!(
                "tensor {name:?} has {n_dims} dimensions (expected 1 to {MAX_DIMS})"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(c.u64(&|| format!("dimension {d} of tensor {name:?}"))?);
        }
        let type_id = c.u32(&|| format!("data type of tensor {name:?}"))?;
        let dtype = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownDtype {
            tensor: name.clone(),
            type_id,
        })?;
        let offset = c.u64(&|| format!("data offset of tensor {name:?}"))?;
        let n_bytes = tensor_bytes(&name, &dims, dtype)?;
        if !names.insert(name.clone()) {
            return Err(GgufError::Invalid(format!("tensor {name:?} appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            dtype,
            offset,
            n_bytes,
        });
    }

    let len = data.len() as u64;
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    for t in &tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::Invalid(format!(
                "tensor {:?} has data offset {} which is not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= len => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    len,
                })
            }
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// The byte size of a tensor, checking that its dimensions are sane for its type.
fn tensor_bytes(name: &str, dims: &[u64], dtype: GgmlType) -> Result<u64> {
    let invalid = |msg: String| GgufError::Invalid(format!("tensor {name:?} {msg}"));
    let mut n: u64 = 1;
    for &d in dims {
        if d == 0 || d > i64::MAX as u64 {
            return Err(invalid(format!("has dimension {d} in {dims:?}")));
        }
        n = n
            .checked_mul(d)
            .ok_or_else(|| invalid(format!("has dimensions {dims:?} whose product overflows")))?;
    }
    if !dims[0].is_multiple_of(dtype.block_size()) {
        return Err(invalid(format!(
            "has rows of {} elements, not a multiple of the {dtype} block size {}",
            dims[0],
            dtype.block_size()
        )));
    }
    (n / dtype.block_size())
        .checked_mul(dtype.type_size())
        .ok_or_else(|| invalid(format!("has dimensions {dims:?} whose byte size overflows")))
}
