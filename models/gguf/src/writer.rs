//! Writing GGUF files (version 3, little-endian) that llama.cpp loads: metadata, then the
//! tensor table, then each tensor's bytes aligned to `general.alignment` (32).
//!
//! The file is written to a temporary name beside the target and renamed into place when it is
//! complete, so a crash never leaves a truncated file under the name asked for.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::types::GgmlType;
use crate::value::{Array, Value};
use crate::DEFAULT_ALIGNMENT;

/// One tensor to write: its name, its row-major shape (outermost first, as PyTorch), its type
/// and its bytes exactly as llama.cpp reads them (whole blocks for block formats).
#[derive(Debug, Clone)]
pub struct TensorOut {
    /// llama.cpp's tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Row-major shape, outermost first.
    pub shape: Vec<usize>,
    /// The storage type.
    pub dtype: GgmlType,
    /// The bytes.
    pub data: Vec<u8>,
}

/// A GGUF file being assembled: metadata in insertion order, then tensors.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorOut>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key (a repeated key replaces the earlier value).
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor; its byte count must match its shape and type.
    pub fn add_tensor(&mut self, tensor: TensorOut) -> Result<&mut Self> {
        let n: usize = tensor.shape.iter().product();
        let (bs, ts) = (
            tensor.dtype.block_size() as usize,
            tensor.dtype.type_size() as usize,
        );
        let inner = tensor.shape.last().copied().unwrap_or(1);
        if !inner.is_multiple_of(bs) || n / bs * ts != tensor.data.len() {
            return Err(GgufError::Invalid(format!(
                "tensor `{}`: {} bytes of {} do not hold the shape {:?}",
                tensor.name,
                tensor.data.len(),
                tensor.dtype,
                tensor.shape
            )));
        }
        if self.tensors.iter().any(|t| t.name == tensor.name) {
            return Err(GgufError::Invalid(format!(
                "tensor `{}` is added twice",
                tensor.name
            )));
        }
        self.tensors.push(tensor);
        Ok(self)
    }

    /// The tensors added so far.
    pub fn tensors(&self) -> &[TensorOut] {
        &self.tensors
    }

    /// Writes the file to `path` through a temporary file renamed into place.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = temp_path(path);
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| GgufError::Io { path: p, source }
        };
        let result = (|| {
            let file = File::create(&tmp).map_err(io(&tmp))?;
            let mut w = BufWriter::new(file);
            self.write_to(&mut w).map_err(io(&tmp))?;
            let file = w.into_inner().map_err(|e| GgufError::Io {
                path: tmp.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Writes the whole file to `w`.
    pub fn write_to(&self, w: &mut (impl Write + Seek)) -> std::io::Result<()> {
        let alignment = DEFAULT_ALIGNMENT;
        w.write_all(b"GGUF")?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(w, key)?;
            write_value(w, value, true)?;
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            write_string(w, &t.name)?;
            w.write_all(&(t.shape.len() as u32).to_le_bytes())?;
            // GGUF lists dimensions innermost first.
            for &d in t.shape.iter().rev() {
                w.write_all(&(d as u64).to_le_bytes())?;
            }
            w.write_all(&t.dtype.id().to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(alignment);
        }
        pad(w, alignment)?;
        let start = w.stream_position()?;
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            let here = w.stream_position()? - start;
            w.write_all(&vec![0u8; (off - here) as usize])?;
            w.write_all(&t.data)?;
        }
        pad(w, alignment)?;
        Ok(())
    }
}

/// `path` with `.part` appended, beside it.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

fn pad(w: &mut (impl Write + Seek), alignment: u64) -> std::io::Result<()> {
    let pos = w.stream_position()?;
    let padded = pos.next_multiple_of(alignment);
    w.write_all(&vec![0u8; (padded - pos) as usize])
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn array_type_id(a: &Array) -> u32 {
    match a {
        Array::U8(_) => 0,
        Array::I8(_) => 1,
        Array::U16(_) => 2,
        Array::I16(_) => 3,
        Array::U32(_) => 4,
        Array::I32(_) => 5,
        Array::F32(_) => 6,
        Array::Bool(_) => 7,
        Array::String(_) => 8,
        Array::Array(_) => 9,
        Array::U64(_) => 10,
        Array::I64(_) => 11,
        Array::F64(_) => 12,
    }
}

fn write_value(w: &mut impl Write, v: &Value, with_type: bool) -> std::io::Result<()> {
    if with_type {
        w.write_all(&type_id(v).to_le_bytes())?;
    }
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_string(w, s),
        Value::Array(a) => write_array(w, a),
    }
}

fn write_array(w: &mut impl Write, a: &Array) -> std::io::Result<()> {
    w.write_all(&array_type_id(a).to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
        };
    }
    match a {
        Array::U8(v) => each!(v),
        Array::I8(v) => each!(v),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => {
            for x in v {
                w.write_all(&[u8::from(*x)])?;
            }
        }
        Array::String(v) => {
            for s in v {
                write_string(w, s)?;
            }
        }
        Array::Array(v) => {
            for inner in v {
                write_array(w, inner)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GgufFile;

    /// What the writer writes, the reader reads back: metadata of every kind, tensors of
    /// several types and shapes, offsets aligned.
    #[test]
    fn round_trips_through_the_reader() {
        let mut g = GgufWriter::new();
        g.set("general.architecture", Value::String("llama".into()))
            .set("llama.block_count", Value::U32(2))
            .set("x.f", Value::F32(0.5))
            .set("x.flag", Value::Bool(true))
            .set(
                "tokenizer.ggml.tokens",
                Value::Array(Array::String(vec!["a".into(), "bc".into()])),
            )
            .set("x.ints", Value::Array(Array::I32(vec![1, -2, 3])));
        let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        g.add_tensor(TensorOut {
            name: "a".into(),
            shape: vec![2, 3],
            dtype: GgmlType::F32,
            data: f32s,
        })
        .unwrap();
        let q8: Vec<u8> = (0..34 * 2).map(|i| i as u8).collect();
        g.add_tensor(TensorOut {
            name: "b".into(),
            shape: vec![2, 32],
            dtype: GgmlType::Q8_0,
            data: q8.clone(),
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("zoo-gguf-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.gguf");
        g.write(&path).unwrap();
        assert!(!dir.join("t.gguf.part").exists());
        let r = GgufFile::open(&path).unwrap();
        assert_eq!(r.architecture().unwrap(), "llama");
        assert_eq!(r.get_u32("llama.block_count").unwrap(), 2);
        assert_eq!(r.get_f32("x.f").unwrap(), 0.5);
        assert!(r.get_bool("x.flag").unwrap());
        assert_eq!(
            r.get_str_array("tokenizer.ggml.tokens").unwrap(),
            ["a", "bc"]
        );
        assert_eq!(r.tensor_info("a").unwrap().shape(), vec![2, 3]);
        let (_, a) = r.tensor_f32("a").unwrap();
        assert_eq!(a, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(r.tensor_bytes("b").unwrap(), q8.as_slice());
        assert_eq!(r.data_start() % 32, 0);
        // A tensor whose bytes do not fit its shape is refused.
        let err = g
            .add_tensor(TensorOut {
                name: "c".into(),
                shape: vec![3],
                dtype: GgmlType::F32,
                data: vec![0; 8],
            })
            .unwrap_err();
        assert!(err.to_string().contains("do not hold"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
