//! A small reader for exactly one kind of parquet file: one (possibly optional, never null)
//! UTF-8 string column, PLAIN or dictionary encoded, uncompressed or Snappy, data pages v1 or v2.
//! That is what the GloVe 6B package's word list (`glove_6B_index.parquet`) is; anything else is
//! refused with an error saying which feature is missing.

use std::path::Path;

use crate::error::{format_err, io_err, Result};

/// Reads every value of the file's only column as strings, row groups in order.
pub fn read_string_column(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
    read_string_column_bytes(&data).map_err(|m| format_err(path, format!("parquet: {m}")))
}

type R<T> = std::result::Result<T, String>;

fn read_string_column_bytes(data: &[u8]) -> R<Vec<String>> {
    let n = data.len();
    if n < 12 || &data[..4] != b"PAR1" || &data[n - 4..] != b"PAR1" {
        return Err("missing PAR1 magic".into());
    }
    let meta_len =
        u32::from_le_bytes([data[n - 8], data[n - 7], data[n - 6], data[n - 5]]) as usize;
    if meta_len > n - 12 {
        return Err("footer length exceeds the file".into());
    }
    let meta = FileMeta::parse(&data[n - 8 - meta_len..n - 8])?;
    let mut out = Vec::with_capacity(meta.num_rows.min(n as u64) as usize);
    for chunk in &meta.chunks {
        read_chunk(data, chunk, meta.max_def, &mut out)?;
    }
    if out.len() as u64 != meta.num_rows {
        return Err(format!(
            "read {} values, footer says {} rows",
            out.len(),
            meta.num_rows
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------- Thrift compact protocol

struct Thrift<'a> {
    buf: &'a [u8],
    pos: usize,
}

#[derive(Clone, Copy)]
struct FieldHeader {
    id: i16,
    ty: u8,
}

impl<'a> Thrift<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    fn byte(&mut self) -> R<u8> {
        let b = *self.buf.get(self.pos).ok_or("thrift data truncated")?;
        self.pos += 1;
        Ok(b)
    }
    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("thrift varint too long".into())
    }
    fn zigzag(&mut self) -> R<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }
    fn binary(&mut self) -> R<&'a [u8]> {
        let len = self.varint()? as usize;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len());
        let end = end.ok_or("thrift string runs past the data")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// The next field header of a struct, or None at its end.
    fn field(&mut self, last: &mut i16) -> R<Option<FieldHeader>> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let ty = b & 0x0f;
        let delta = (b >> 4) as i16;
        let id = if delta == 0 {
            self.zigzag()? as i16
        } else {
            *last + delta
        };
        *last = id;
        Ok(Some(FieldHeader { id, ty }))
    }
    fn list_header(&mut self) -> R<(usize, u8)> {
        let b = self.byte()?;
        let mut size = (b >> 4) as usize;
        if size == 15 {
            size = self.varint()? as usize;
        }
        if size > self.buf.len() {
            return Err("thrift list longer than the data".into());
        }
        Ok((size, b & 0x0f))
    }
    fn int(&mut self, ty: u8) -> R<i64> {
        match ty {
            3 => Ok(self.byte()? as i8 as i64),
            4..=6 => self.zigzag(),
            _ => Err(format!("thrift: expected an integer, got type {ty}")),
        }
    }
    fn skip(&mut self, ty: u8, depth: u32) -> R<()> {
        if depth > 32 {
            return Err("thrift nesting too deep".into());
        }
        match ty {
            1 | 2 => {}
            3 => {
                self.byte()?;
            }
            4..=6 => {
                self.varint()?;
            }
            7 => {
                self.pos += 8;
            }
            8 => {
                self.binary()?;
            }
            9 | 10 => {
                let (n, et) = self.list_header()?;
                for _ in 0..n {
                    self.skip_elem(et, depth)?;
                }
            }
            11 => {
                let n = self.varint()? as usize;
                if n > 0 {
                    let kv = self.byte()?;
                    for _ in 0..n {
                        self.skip_elem(kv >> 4, depth)?;
                        self.skip_elem(kv & 0x0f, depth)?;
                    }
                }
            }
            12 => {
                let mut last = 0;
                while let Some(f) = self.field(&mut last)? {
                    self.skip(f.ty, depth + 1)?;
                }
            }
            _ => return Err(format!("thrift: unknown type {ty}")),
        }
        if self.pos > self.buf.len() {
            return Err("thrift data truncated".into());
        }
        Ok(())
    }
    /// List elements encode booleans as a whole byte, unlike struct fields.
    fn skip_elem(&mut self, ty: u8, depth: u32) -> R<()> {
        if ty == 1 || ty == 2 {
            self.byte().map(|_| ())
        } else {
            self.skip(ty, depth + 1)
        }
    }
}

// ---------------------------------------------------------------- footer

struct ChunkMeta {
    codec: i64,
    num_values: i64,
    start: usize,
    physical_type: i64,
}

struct FileMeta {
    num_rows: u64,
    max_def: u8,
    chunks: Vec<ChunkMeta>,
}

impl FileMeta {
    fn parse(buf: &[u8]) -> R<Self> {
        let mut t = Thrift::new(buf);
        let mut last = 0;
        let mut num_rows = None;
        let mut leaves: Vec<(i64, i64)> = Vec::new(); // (type, repetition) of leaf schema elements
        let mut chunks = Vec::new();
        while let Some(f) = t.field(&mut last)? {
            match (f.id, f.ty) {
                (2, 9) => {
                    let (n, _) = t.list_header()?;
                    for i in 0..n {
                        let (ty, rep, children) = parse_schema_element(&mut t)?;
                        if i > 0 && children == 0 {
                            leaves.push((ty, rep));
                        }
                    }
                }
                (3, 6) => num_rows = Some(t.zigzag()?),
                (4, 9) => {
                    let (n, _) = t.list_header()?;
                    for _ in 0..n {
                        parse_row_group(&mut t, &mut chunks)?;
                    }
                }
                _ => t.skip(f.ty, 0)?,
            }
        }
        if leaves.len() != 1 {
            return Err(format!(
                "expected one column, the schema has {}",
                leaves.len()
            ));
        }
        let (ty, rep) = leaves[0];
        if ty != 6 {
            return Err(format!(
                "the column's physical type is {ty}, not BYTE_ARRAY (6)"
            ));
        }
        let max_def = match rep {
            0 => 0,
            1 => 1,
            _ => return Err("repeated columns are not supported".into()),
        };
        let num_rows = num_rows.ok_or("footer lacks num_rows")?;
        Ok(Self {
            num_rows: u64::try_from(num_rows).map_err(|_| "negative num_rows")?,
            max_def,
            chunks,
        })
    }
}

fn parse_schema_element(t: &mut Thrift) -> R<(i64, i64, i64)> {
    let (mut ty, mut rep, mut children) = (-1, 0, 0);
    let mut last = 0;
    while let Some(f) = t.field(&mut last)? {
        match f.id {
            1 => ty = t.int(f.ty)?,
            3 => rep = t.int(f.ty)?,
            5 => children = t.int(f.ty)?,
            _ => t.skip(f.ty, 1)?,
        }
    }
    Ok((ty, rep, children))
}

fn parse_row_group(t: &mut Thrift, chunks: &mut Vec<ChunkMeta>) -> R<()> {
    let mut last = 0;
    while let Some(f) = t.field(&mut last)? {
        if f.id == 1 && f.ty == 9 {
            let (n, _) = t.list_header()?;
            for _ in 0..n {
                let mut last_c = 0;
                while let Some(fc) = t.field(&mut last_c)? {
                    if fc.id == 3 && fc.ty == 12 {
                        chunks.push(parse_column_meta(t)?);
                    } else if fc.id == 1 && fc.ty == 8 {
                        if !t.binary()?.is_empty() {
                            return Err("column chunks in other files are not supported".into());
                        }
                    } else {
                        t.skip(fc.ty, 2)?;
                    }
                }
            }
        } else {
            t.skip(f.ty, 1)?;
        }
    }
    Ok(())
}

fn parse_column_meta(t: &mut Thrift) -> R<ChunkMeta> {
    let mut last = 0;
    let (mut codec, mut num_values, mut data_off, mut dict_off, mut ty) = (0, 0, -1, -1, -1);
    while let Some(f) = t.field(&mut last)? {
        match f.id {
            1 => ty = t.int(f.ty)?,
            4 => codec = t.int(f.ty)?,
            5 => num_values = t.int(f.ty)?,
            9 => data_off = t.int(f.ty)?,
            11 => dict_off = t.int(f.ty)?,
            _ => t.skip(f.ty, 3)?,
        }
    }
    let start = if dict_off > 0 && dict_off < data_off {
        dict_off
    } else {
        data_off
    };
    Ok(ChunkMeta {
        codec,
        num_values,
        start: usize::try_from(start).map_err(|_| "bad page offset")?,
        physical_type: ty,
    })
}

// ---------------------------------------------------------------- pages

struct PageHeader {
    kind: i64,
    uncompressed: usize,
    compressed: usize,
    num_values: usize,
    encoding: i64,
    // v2 only
    def_len: usize,
    rep_len: usize,
    v2_compressed: bool,
}

fn parse_page_header(t: &mut Thrift) -> R<PageHeader> {
    let mut h = PageHeader {
        kind: -1,
        uncompressed: 0,
        compressed: 0,
        num_values: 0,
        encoding: 0,
        def_len: 0,
        rep_len: 0,
        v2_compressed: true,
    };
    let mut last = 0;
    let size = |v: i64| usize::try_from(v).map_err(|_| "negative size in page header".to_string());
    while let Some(f) = t.field(&mut last)? {
        match (f.id, f.ty) {
            (1, _) => h.kind = t.int(f.ty)?,
            (2, _) => h.uncompressed = size(t.int(f.ty)?)?,
            (3, _) => h.compressed = size(t.int(f.ty)?)?,
            (5 | 7 | 8, 12) => {
                let v2 = f.id == 8;
                let mut l = 0;
                while let Some(g) = t.field(&mut l)? {
                    match (g.id, v2) {
                        (1, _) => h.num_values = size(t.int(g.ty)?)?,
                        (2, false) | (4, true) => h.encoding = t.int(g.ty)?,
                        (5, true) => h.def_len = size(t.int(g.ty)?)?,
                        (6, true) => h.rep_len = size(t.int(g.ty)?)?,
                        (7, true) => h.v2_compressed = g.ty == 1,
                        _ => t.skip(g.ty, 2)?,
                    }
                }
            }
            _ => t.skip(f.ty, 1)?,
        }
    }
    Ok(h)
}

fn read_chunk(data: &[u8], c: &ChunkMeta, max_def: u8, out: &mut Vec<String>) -> R<()> {
    if c.physical_type != 6 {
        return Err("column chunk is not BYTE_ARRAY".into());
    }
    if c.codec != 0 && c.codec != 1 {
        return Err(format!(
            "compression codec {} is not supported (only none and Snappy)",
            c.codec
        ));
    }
    let mut pos = c.start;
    let mut dict: Vec<String> = Vec::new();
    let mut seen = 0usize;
    let want = usize::try_from(c.num_values).map_err(|_| "negative value count")?;
    while seen < want {
        let mut t = Thrift::new(
            data.get(pos..)
                .ok_or("page offset past the end of the file")?,
        );
        let h = parse_page_header(&mut t)?;
        let body_start = pos + t.pos;
        let body = data
            .get(body_start..body_start + h.compressed)
            .ok_or("page body runs past the end of the file")?;
        pos = body_start + h.compressed;
        match h.kind {
            2 => {
                let raw = decompress(c.codec, body, h.uncompressed)?;
                dict = plain_strings(&raw, h.num_values)?;
            }
            0 | 3 => {
                let (levels, values): (Vec<u8>, Vec<u8>);
                let def = if h.kind == 0 {
                    let raw = decompress(c.codec, body, h.uncompressed)?;
                    let mut p = 0;
                    let mut d = Vec::new();
                    if max_def > 0 {
                        let len = raw.get(..4).ok_or("page too short for levels")?;
                        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                        levels = raw.get(4..4 + len).ok_or("level data truncated")?.to_vec();
                        d = rle_hybrid(&levels, 1, h.num_values)?;
                        p = 4 + len;
                    }
                    values = raw[p..].to_vec();
                    d
                } else {
                    if h.rep_len > 0 {
                        return Err("repetition levels are not supported".into());
                    }
                    let lv = body.get(..h.def_len).ok_or("level data truncated")?;
                    let rest = &body[h.def_len..];
                    values = if h.v2_compressed {
                        decompress(c.codec, rest, h.uncompressed - h.def_len)?
                    } else {
                        rest.to_vec()
                    };
                    if max_def > 0 {
                        rle_hybrid(lv, 1, h.num_values)?
                    } else {
                        Vec::new()
                    }
                };
                if let Some(i) = def.iter().position(|&d| d == 0) {
                    return Err(format!(
                        "null value at row {} (words must not be null)",
                        out.len() + i
                    ));
                }
                let n = h.num_values;
                match h.encoding {
                    0 => out.extend(plain_strings(&values, n)?),
                    2 | 8 => {
                        let bw = *values.first().ok_or("empty dictionary-index page")?;
                        if bw > 32 {
                            return Err(format!("bit width {bw} too large"));
                        }
                        for id in rle_hybrid(&values[1..], bw, n)? {
                            let w = dict
                                .get(id as usize)
                                .ok_or_else(|| format!("dictionary index {id} out of range"))?;
                            out.push(w.clone());
                        }
                    }
                    e => return Err(format!("value encoding {e} is not supported")),
                }
                seen += n;
            }
            _ => {} // index pages: skip
        }
    }
    Ok(())
}

fn decompress(codec: i64, body: &[u8], uncompressed: usize) -> R<Vec<u8>> {
    match codec {
        0 => Ok(body.to_vec()),
        _ => {
            let out = snappy(body)?;
            if out.len() != uncompressed {
                return Err(format!(
                    "snappy gave {} bytes, page header says {uncompressed}",
                    out.len()
                ));
            }
            Ok(out)
        }
    }
}

fn plain_strings(raw: &[u8], n: usize) -> R<Vec<String>> {
    let mut out = Vec::with_capacity(n.min(raw.len() / 4));
    let mut p = 0;
    for i in 0..n {
        let len = raw.get(p..p + 4).ok_or("PLAIN strings truncated")?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let s = raw
            .get(p + 4..p + 4 + len)
            .ok_or("PLAIN string truncated")?;
        let s = std::str::from_utf8(s).map_err(|_| format!("value {i} is not UTF-8"))?;
        out.push(s.to_string());
        p += 4 + len;
    }
    Ok(out)
}

/// The RLE / bit-packed hybrid encoding of levels and dictionary indices.
fn rle_hybrid(buf: &[u8], bit_width: u8, n: usize) -> R<Vec<u32>> {
    let mut out = Vec::with_capacity(n);
    let mut t = Thrift::new(buf);
    let bw = bit_width as usize;
    let byte_width = bw.div_ceil(8);
    while out.len() < n {
        let header = t.varint()?;
        if header & 1 == 0 {
            let run = (header >> 1) as usize;
            let mut v = 0u32;
            for k in 0..byte_width {
                v |= (t.byte()? as u32) << (8 * k);
            }
            out.extend(std::iter::repeat_n(v, run.min(n - out.len())));
        } else {
            let groups = (header >> 1) as usize;
            let bytes = groups * bw;
            let chunk = buf
                .get(t.pos..t.pos + bytes)
                .ok_or("bit-packed run truncated")?;
            t.pos += bytes;
            let mask = if bw == 32 { u32::MAX } else { (1u32 << bw) - 1 };
            for k in 0..groups * 8 {
                if out.len() == n {
                    break;
                }
                let bit = k * bw;
                let mut word = 0u64;
                for b in 0..=bw.div_ceil(8) {
                    if let Some(&x) = chunk.get(bit / 8 + b) {
                        word |= (x as u64) << (8 * b);
                    }
                }
                out.push(((word >> (bit % 8)) as u32) & mask);
            }
        }
    }
    Ok(out)
}

/// Decompresses one raw Snappy block.
fn snappy(src: &[u8]) -> R<Vec<u8>> {
    let mut t = Thrift::new(src);
    let len = t.varint()? as usize;
    if len > src.len().saturating_mul(64) + 64 {
        return Err("snappy length is implausible".into());
    }
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let mut p = t.pos;
    let get = |p: usize, k: usize| -> R<&[u8]> {
        src.get(p..p + k)
            .ok_or_else(|| "snappy data truncated".to_string())
    };
    while p < src.len() {
        let tag = src[p];
        p += 1;
        let (copy_len, offset) = match tag & 3 {
            0 => {
                let mut l = (tag >> 2) as usize;
                if l >= 60 {
                    let k = l - 59;
                    let b = get(p, k)?;
                    l = b.iter().rev().fold(0usize, |a, &x| (a << 8) | x as usize);
                    p += k;
                }
                let lit = get(p, l + 1)?;
                out.extend_from_slice(lit);
                p += l + 1;
                continue;
            }
            1 => {
                let b = get(p, 1)?[0] as usize;
                p += 1;
                (
                    (((tag >> 2) & 7) as usize) + 4,
                    (((tag >> 5) as usize) << 8) | b,
                )
            }
            2 => {
                let b = get(p, 2)?;
                p += 2;
                (
                    ((tag >> 2) as usize) + 1,
                    u16::from_le_bytes([b[0], b[1]]) as usize,
                )
            }
            _ => {
                let b = get(p, 4)?;
                p += 4;
                (
                    ((tag >> 2) as usize) + 1,
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
                )
            }
        };
        if offset == 0 || offset > out.len() {
            return Err("snappy back-reference out of range".into());
        }
        if out.len() + copy_len > len {
            return Err("snappy output longer than announced".into());
        }
        let start = out.len() - offset;
        for k in 0..copy_len {
            let b = out[start + k];
            out.push(b);
        }
    }
    if out.len() != len {
        return Err("snappy output shorter than announced".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snappy_literals_and_overlapping_copies() {
        // "abcabcabcab": literal "abc" then copy(offset 3, len 8).
        let block = [11u8, 2 << 2, b'a', b'b', b'c', 1 | ((8 - 4) << 2), 3];
        assert_eq!(snappy(&block).unwrap(), b"abcabcabcab");
        assert!(snappy(&[11u8, 1 | (4 << 2), 9]).is_err());
    }

    #[test]
    fn rle_and_bit_packed_runs() {
        // RLE run: 5 × 3 (bit width 2), then one bit-packed group of 8 values 0..7 at width 3.
        let mut buf = vec![5 << 1, 3];
        buf.push((1 << 1) | 1);
        let vals: Vec<u32> = (0..8).collect();
        let mut bits = 0u32;
        for (i, v) in vals.iter().enumerate() {
            bits |= v << (3 * i);
        }
        buf.extend_from_slice(&bits.to_le_bytes()[..3]);
        assert_eq!(rle_hybrid(&buf[..2], 2, 5).unwrap(), vec![3; 5]);
        let got = rle_hybrid(&buf[2..], 3, 8).unwrap();
        assert_eq!(got, vals);
    }
}
