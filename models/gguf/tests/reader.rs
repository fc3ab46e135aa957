//! GGUF reading and dequantisation against fixtures from tests/fixtures/gguf_fixtures.py, and
//! corrupted files made here.

use std::path::PathBuf;

use zoo_gguf::{Array, GgmlType, GgufError, GgufFile, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gguf")
        .join(name)
}

#[test]
fn metadata_of_every_value_type() {
    let f = GgufFile::open(fixture("quants.gguf")).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.architecture().unwrap(), "zootest");
    let m = f.metadata();
    assert_eq!(m["test.u8"], Value::U8(200));
    assert_eq!(m["test.i8"], Value::I8(-100));
    assert_eq!(m["test.u16"], Value::U16(60000));
    assert_eq!(m["test.i16"], Value::I16(-30000));
    assert_eq!(m["test.u32"], Value::U32(4_000_000_000));
    assert_eq!(m["test.i32"], Value::I32(-2_000_000_000));
    assert_eq!(m["test.u64"], Value::U64(18_000_000_000_000_000_000));
    assert_eq!(m["test.i64"], Value::I64(-9_000_000_000_000_000_000));
    assert_eq!(m["test.f32"], Value::F32(0.1));
    assert_eq!(m["test.f64"], Value::F64(0.1));
    assert_eq!(m["test.bool"], Value::Bool(true));
    assert_eq!(f.get_str("test.string").unwrap(), "héllo ▁ 😀");
    assert_eq!(
        m["test.array_u16"],
        Value::Array(Array::U16(vec![1, 2, 65535]))
    );
    assert_eq!(
        m["test.array_i64"],
        Value::Array(Array::I64(vec![-1, 0, 1]))
    );
    assert_eq!(
        m["test.array_f64"],
        Value::Array(Array::F64(vec![0.5, -2.25]))
    );
    assert_eq!(
        m["test.array_bool"],
        Value::Array(Array::Bool(vec![true, false, true]))
    );
    assert_eq!(
        f.get_str_array("test.array_string").unwrap(),
        ["a", "", "ü"]
    );
    let nested = f.get_array("test.array_nested").unwrap();
    assert_eq!(
        *nested,
        Array::Array(vec![Array::I32(vec![1, 2]), Array::I32(vec![3])])
    );
    // Typed getters convert between integer widths where the value fits.
    assert_eq!(f.get_u32("test.u8").unwrap(), 200);
    assert_eq!(f.get_u64("test.u64").unwrap(), 18_000_000_000_000_000_000);
    assert_eq!(f.get_i64("test.i8").unwrap(), -100);
    assert_eq!(f.get_f32("test.f64").unwrap(), 0.1f32);
    assert_eq!(f.get_int_array("test.array_u16").unwrap(), [1, 2, 65535]);
    assert!(f.get_bool("test.bool").unwrap());
}

#[test]
fn getter_errors_name_the_key() {
    let f = GgufFile::open(fixture("quants.gguf")).unwrap();
    let e = f.get_u32("llama.block_count").unwrap_err();
    assert!(matches!(&e, GgufError::MissingKey(k) if k == "llama.block_count"));
    assert!(e.to_string().contains("llama.block_count"));
    let e = f.get_u32("test.i8").unwrap_err();
    assert!(matches!(e, GgufError::WrongType { .. }), "{e}");
    assert!(
        e.to_string().contains("test.i8") && e.to_string().contains("i8 -100"),
        "{e}"
    );
    let e = f.get_u32("test.u64").unwrap_err();
    assert!(e.to_string().contains("test.u64"), "{e}");
    let e = f.get_str("test.f32").unwrap_err();
    assert!(e.to_string().contains("test.f32"), "{e}");
    let e = f.tensor_f32("nope.weight").unwrap_err();
    assert!(matches!(&e, GgufError::MissingTensor(n) if n == "nope.weight"));
}

#[test]
fn tensor_infos() {
    let f = GgufFile::open(fixture("quants.gguf")).unwrap();
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "f32.weight",
            "f16.weight",
            "bf16.weight",
            "q4_0.weight",
            "q4_1.weight",
            "q8_0.weight",
            "q4_k.weight",
            "q5_k.weight",
            "q6_k.weight"
        ]
    );
    let t = f.tensor_info("q4_1.weight").unwrap();
    assert_eq!(t.dtype, GgmlType::Q4_1);
    assert_eq!(t.dims, [64, 2]);
    assert_eq!(t.shape(), [2, 64]);
    assert_eq!(t.n_elements(), 128);
    assert_eq!(t.n_bytes(), 4 * 20);
    let t = f.tensor_info("q6_k.weight").unwrap();
    assert_eq!(
        (t.dtype, t.shape(), t.n_bytes()),
        (GgmlType::Q6_K, vec![1, 256], 210)
    );
    for t in f.tensors() {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
        assert_eq!(f.tensor_bytes(&t.name).unwrap().len() as u64, t.n_bytes());
    }
}

#[test]
fn dequantisation_matches_gguf_python_bit_for_bit() {
    let f = GgufFile::open(fixture("quants.gguf")).unwrap();
    let expected = GgufFile::open(fixture("quants_expected.gguf")).unwrap();
    let mut checked = Vec::new();
    for t in f.tensors() {
        let (shape, got) = f.tensor_f32(&t.name).unwrap();
        let (eshape, want) = expected.tensor_f32(&t.name).unwrap();
        assert_eq!(expected.tensor_info(&t.name).unwrap().dtype, GgmlType::F32);
        assert_eq!(shape, eshape, "{}", t.name);
        assert_eq!(got.len(), want.len(), "{}", t.name);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{} element {i}: {g} vs {w}",
                t.name
            );
        }
        // Not all zeros: the fixture carries information.
        assert!(
            want.iter().filter(|x| **x != 0.0).count() > want.len() / 2,
            "{}",
            t.name
        );
        checked.push(t.dtype);
    }
    assert_eq!(checked.len(), 9);
    // Spot values independent of the Python package.
    let (_, f32s) = f.tensor_f32("f32.weight").unwrap();
    assert_eq!(f32s[2], f32::INFINITY);
    assert!(f32s[4].is_nan());
    let (_, f16s) = f.tensor_f32("f16.weight").unwrap();
    assert_eq!(f16s[7], 65504.0);
    assert_eq!(f16s[1].to_bits(), (-0.0f32).to_bits());
}

#[test]
fn gguf_v2_reads_like_v3() {
    let mut bytes = std::fs::read(fixture("quants.gguf")).unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 9);
    let (_, v) = f.tensor_f32("q8_0.weight").unwrap();
    let (_, e) = GgufFile::open(fixture("quants_expected.gguf"))
        .unwrap()
        .tensor_f32("q8_0.weight")
        .unwrap();
    assert_eq!(v, e);
}

// ---------------------------------------------------------------------------------------------
// Hand-made files.

/// A tiny GGUF writer for building (possibly broken) files.
#[derive(Default)]
struct Builder {
    version: u32,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
    alignment: usize,
}

fn gguf_string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

impl Builder {
    fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            ..Default::default()
        }
    }
    fn kv_raw(mut self, key: &str, type_id: u32, value: &[u8]) -> Self {
        self.kv.extend(gguf_string(key.as_bytes()));
        self.kv.extend(type_id.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }
    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }
    fn tensor_raw(mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> Self {
        self.infos.extend(gguf_string(name.as_bytes()));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(type_id.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    /// Adds an f32 tensor with its data.
    fn tensor_f32(mut self, name: &str, values: &[f32]) -> Self {
        while !self.data.len().is_multiple_of(self.alignment) {
            self.data.push(0);
        }
        let offset = self.data.len() as u64;
        for v in values {
            self.data.extend(v.to_le_bytes());
        }
        self.tensor_raw(name, &[values.len() as u64], 0, offset)
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(self.version.to_le_bytes());
        b.extend(self.n_tensors.to_le_bytes());
        b.extend(self.n_kv.to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.infos);
        while !b.len().is_multiple_of(self.alignment) {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

/// Writes `bytes` to a temporary file and opens it.
fn open_bytes(name: &str, bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let dir = std::env::temp_dir().join(format!("zoo-gguf-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let r = GgufFile::open(&path);
    let from_memory = GgufFile::from_bytes(bytes.to_vec());
    assert_eq!(r.is_ok(), from_memory.is_ok());
    r
}

fn err(name: &str, bytes: &[u8]) -> GgufError {
    match open_bytes(name, bytes) {
        Ok(_) => panic!("{name}: expected an error"),
        Err(e) => e,
    }
}

#[test]
fn builder_file_is_valid() {
    let b = Builder::new()
        .kv_u32("general.alignment", 32)
        .tensor_f32("a", &[1.0, 2.0, 3.0])
        .tensor_f32("b", &[4.0; 5]);
    let f = open_bytes("valid.gguf", &b.bytes()).unwrap();
    assert_eq!(f.tensor_f32("b").unwrap(), (vec![5], vec![4.0; 5]));
    assert_eq!(f.tensor_f32("a").unwrap().1, [1.0, 2.0, 3.0]);
}

#[test]
fn bad_magic() {
    let e = err("magic.gguf", b"GGML\x03\x00\x00\x00rest of a file");
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"));
    let e = err("empty.gguf", b"");
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
}

#[test]
fn unsupported_versions() {
    for v in [1u32, 4, 99] {
        let mut b = Builder::new();
        b.version = v;
        let e = err("version.gguf", &b.bytes());
        assert!(
            matches!(e, GgufError::UnsupportedVersion(x) if x == v),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("version {v}")));
    }
    let mut b = Builder::new();
    b.version = 3u32.swap_bytes();
    let e = err("bigendian.gguf", &b.bytes());
    assert!(matches!(e, GgufError::BigEndian(_)), "{e}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = std::fs::read(fixture("quants.gguf")).unwrap();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    let end = f
        .tensors()
        .iter()
        .map(|t| f.data_start() + t.offset + t.n_bytes())
        .max()
        .unwrap();
    // Cuts everywhere before the end of the last tensor's data (what follows is padding).
    for len in (0..end as usize).step_by(7).chain([end as usize - 1]) {
        let r = GgufFile::from_bytes(bytes[..len].to_vec());
        let e = r.expect_err(&format!("cut at {len}"));
        assert!(
            matches!(
                e,
                GgufError::Truncated { .. }
                    | GgufError::TensorOutOfBounds { .. }
                    | GgufError::AbsurdCount { .. }
            ),
            "cut at {len}: {e}"
        );
    }
    let e = err("truncated.gguf", &bytes[..end as usize - 10]);
    assert!(
        matches!(&e, GgufError::TensorOutOfBounds { tensor, .. } if tensor == "q6_k.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("q6_k.weight"));
}

#[test]
fn tensor_offset_past_end() {
    let b = Builder::new()
        .tensor_f32("ok", &[1.0; 8])
        .tensor_raw("far", &[8], 0, 1 << 40);
    let e = err("offset.gguf", &b.bytes());
    assert!(
        matches!(&e, GgufError::TensorOutOfBounds { tensor, .. } if tensor == "far"),
        "{e}"
    );
    // Offset + size overflowing u64.
    let b = Builder::new().tensor_raw("wrap", &[8], 0, u64::MAX - 31);
    let e = err("wrap.gguf", &b.bytes());
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    // Dimensions whose byte size is far beyond the file.
    let b = Builder::new().tensor_raw("huge", &[1 << 20, 1 << 20, 1 << 20], 0, 0);
    let e = err("huge.gguf", &b.bytes());
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
    let b = Builder::new().tensor_raw("overflow", &[1 << 32, 1 << 32, 1 << 32], 0, 0);
    let e = err("overflow.gguf", &b.bytes());
    assert!(e.to_string().contains("overflow"), "{e}");
    // Misaligned offset.
    let b = Builder::new()
        .tensor_f32("a", &[1.0; 8])
        .tensor_raw("b", &[1], 0, 4);
    let e = err("misaligned.gguf", &b.bytes());
    assert!(
        e.to_string().contains("not a multiple of the alignment"),
        "{e}"
    );
}

#[test]
fn absurd_counts() {
    // 2^60 metadata entries.
    let mut b = Builder::new();
    b.n_kv = 1 << 60;
    let e = err("kvcount.gguf", &b.bytes());
    assert!(
        matches!(&e, GgufError::AbsurdCount { count, .. } if *count == 1 << 60),
        "{e}"
    );
    // 2^60 tensors.
    let mut b = Builder::new();
    b.n_tensors = 1 << 60;
    let e = err("tcount.gguf", &b.bytes());
    assert!(matches!(e, GgufError::AbsurdCount { .. }), "{e}");
    // An array of 2^60 strings.
    let mut v = 8u32.to_le_bytes().to_vec();
    v.extend((1u64 << 60).to_le_bytes());
    v.extend(gguf_string(b"one string"));
    let e = err(
        "strings.gguf",
        &Builder::new()
            .kv_raw("tokenizer.ggml.tokens", 9, &v)
            .bytes(),
    );
    assert!(
        matches!(&e, GgufError::AbsurdCount { count, .. } if *count == 1 << 60),
        "{e}"
    );
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");
    // An array of u64::MAX u8s.
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend(u64::MAX.to_le_bytes());
    let e = err("bytes.gguf", &Builder::new().kv_raw("x", 9, &v).bytes());
    assert!(matches!(e, GgufError::AbsurdCount { .. }), "{e}");
    // A string 2^60 bytes long.
    let mut v = (1u64 << 60).to_le_bytes().to_vec();
    v.extend(b"short");
    let e = err(
        "strlen.gguf",
        &Builder::new().kv_raw("general.name", 8, &v).bytes(),
    );
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("general.name"), "{e}");
    // A key 2^60 bytes long.
    let mut b = Builder::new();
    b.kv.extend((1u64 << 60).to_le_bytes());
    b.n_kv = 1;
    let e = err("keylen.gguf", &b.bytes());
    assert!(
        matches!(
            e,
            GgufError::Truncated { .. } | GgufError::AbsurdCount { .. }
        ),
        "{e}"
    );
    // Nested arrays that never end.
    let mut v = Vec::new();
    for _ in 0..64 {
        v.extend(9u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
    }
    v.extend([0u8; 64]);
    let e = err("deep.gguf", &Builder::new().kv_raw("deep", 9, &v).bytes());
    assert!(e.to_string().contains("deeper"), "{e}");
}

#[test]
fn unknown_types() {
    let b = Builder::new().tensor_raw("w", &[32], 99, 0);
    let e = err("dtype.gguf", &b.bytes());
    assert!(
        matches!(&e, GgufError::UnknownDtype { tensor, type_id: 99 } if tensor == "w"),
        "{e}"
    );
    assert!(e.to_string().contains("unknown data type 99"));
    let b = Builder::new().kv_raw("k", 13, &[0; 8]);
    let e = err("vtype.gguf", &b.bytes());
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 13, .. }),
        "{e}"
    );
    let mut v = 77u32.to_le_bytes().to_vec();
    v.extend(0u64.to_le_bytes());
    let e = err("atype.gguf", &Builder::new().kv_raw("arr", 9, &v).bytes());
    assert!(
        matches!(e, GgufError::UnknownValueType { type_id: 77, .. }),
        "{e}"
    );
}

#[test]
fn other_invalid_structures() {
    let cases: Vec<(&str, Builder, &str)> = vec![
        (
            "alignment",
            Builder::new().kv_u32("general.alignment", 3),
            "power of two",
        ),
        (
            "alignment0",
            Builder::new().kv_u32("general.alignment", 0),
            "power of two",
        ),
        ("bool", Builder::new().kv_raw("b", 7, &[2]), "bool byte 2"),
        (
            "utf8",
            Builder::new().kv_raw("s", 8, &gguf_string(&[0xff, 0xfe])),
            "UTF-8",
        ),
        (
            "dupkey",
            Builder::new().kv_u32("a", 1).kv_u32("a", 2),
            "appears twice",
        ),
        (
            "dims5",
            Builder::new().tensor_raw("t", &[1, 1, 1, 1, 1], 0, 0),
            "5 dimensions",
        ),
        (
            "dims0",
            Builder::new().tensor_raw("t", &[], 0, 0),
            "0 dimensions",
        ),
        (
            "zerodim",
            Builder::new().tensor_raw("t", &[0], 0, 0),
            "dimension 0",
        ),
        (
            "blocks",
            Builder::new().tensor_raw("t", &[33], 8, 0),
            "block size 32",
        ),
        (
            "duptensor",
            Builder::new()
                .tensor_f32("t", &[1.0])
                .tensor_f32("t", &[1.0]),
            "appears twice",
        ),
    ];
    for (name, b, needle) in cases {
        let e = err(name, &b.bytes());
        assert!(matches!(e, GgufError::Invalid(_)), "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
    }
}

#[test]
fn unsupported_dequantisation_names_the_type() {
    // A valid Q5_0 tensor: one block of 22 bytes.
    let mut b = Builder::new().tensor_raw("q5", &[32], GgmlType::Q5_0.id(), 0);
    b.data = vec![0; 22];
    let f = open_bytes("q5_0.gguf", &b.bytes()).unwrap();
    assert_eq!(f.tensor_bytes("q5").unwrap().len(), 22);
    let e = f.tensor_f32("q5").unwrap_err();
    assert!(
        matches!(&e, GgufError::UnsupportedDtype { tensor, dtype: GgmlType::Q5_0 } if tensor == "q5"),
        "{e}"
    );
    assert!(
        e.to_string().contains("Q5_0") && e.to_string().contains("q5"),
        "{e}"
    );
}

#[test]
fn unsupported_tokenizers_are_named() {
    let kv_str = |b: Builder, k: &str, v: &str| b.kv_raw(k, 8, &gguf_string(v.as_bytes()));
    let mut tokens = 8u32.to_le_bytes().to_vec();
    tokens.extend(3u64.to_le_bytes());
    tokens.extend(gguf_string(b"a"));
    tokens.extend(gguf_string(b"b"));
    tokens.extend(gguf_string(b"ab"));
    let mut merges = 8u32.to_le_bytes().to_vec();
    merges.extend(1u64.to_le_bytes());
    merges.extend(gguf_string(b"a b"));
    let base = || {
        Builder::new()
            .kv_raw("tokenizer.ggml.tokens", 9, &tokens)
            .kv_raw("tokenizer.ggml.merges", 9, &merges)
    };
    let f = open_bytes(
        "bert.gguf",
        &kv_str(base(), "tokenizer.ggml.model", "bert").bytes(),
    )
    .unwrap();
    let e = f.tokenizer().unwrap_err();
    assert!(e.to_string().contains("\"bert\" is not supported"), "{e}");
    let b = kv_str(base(), "tokenizer.ggml.model", "gpt2");
    let f = open_bytes(
        "pre.gguf",
        &kv_str(b, "tokenizer.ggml.pre", "mystery").bytes(),
    )
    .unwrap();
    let e = f.tokenizer().unwrap_err();
    assert!(
        e.to_string().contains("\"mystery\" is not supported"),
        "{e}"
    );
    let b = kv_str(base(), "tokenizer.ggml.model", "gpt2").kv_u32("tokenizer.ggml.bos_token_id", 7);
    let f = open_bytes("bos.gguf", &b.bytes()).unwrap();
    let e = f.tokenizer().unwrap_err();
    assert!(e.to_string().contains("bos_token_id is 7, outside"), "{e}");
    // The same vocabulary works, and encodes with the merge.
    let f = open_bytes(
        "ok.gguf",
        &kv_str(base(), "tokenizer.ggml.model", "gpt2").bytes(),
    )
    .unwrap();
    assert_eq!(
        f.tokenizer().unwrap().encode("abba", false).unwrap(),
        [2, 1, 0]
    );
    // A merge naming a token outside the vocabulary.
    let mut bad = 8u32.to_le_bytes().to_vec();
    bad.extend(1u64.to_le_bytes());
    bad.extend(gguf_string(b"a c"));
    let b = Builder::new()
        .kv_raw("tokenizer.ggml.tokens", 9, &tokens)
        .kv_raw("tokenizer.ggml.merges", 9, &bad);
    let f = open_bytes(
        "merge.gguf",
        &kv_str(b, "tokenizer.ggml.model", "gpt2").bytes(),
    )
    .unwrap();
    let e = f.tokenizer().unwrap_err();
    assert!(matches!(e, GgufError::Tokenizer(_)), "{e}");
    assert!(e.to_string().contains("out of vocabulary"), "{e}");
}
