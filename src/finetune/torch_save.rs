//! A small writer of PyTorch's checkpoint format (what `torch.save(state_dict, path)` writes
//! since PyTorch 1.6): a ZIP archive, entries stored uncompressed, holding
//!
//! - `archive/data.pkl`: a protocol-2 pickle of an `OrderedDict` name → tensor, each tensor
//!   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` with
//!   its storage a persistent id `("storage", torch.FloatStorage, key, "cpu", numel)`;
//! - `archive/data/<key>`: each storage's raw little-endian f32 bytes (aligned to 64 bytes in
//!   the file, as PyTorch aligns them so that `torch.load(mmap=True)` can map them);
//! - `archive/byteorder` (`little`) and `archive/version` (`3`).
//!
//! Only what a state dict of contiguous f32 tensors needs; every global it names is on
//! `torch.load(weights_only=True)`'s allow-list. Written for P-Tuning v2's `pytorch_model.bin`
//! (ChatGLM's `main.py` `torch.load`s it); the format was read from PyTorch's
//! `torch/serialization.py` and the ZIP application note, no code taken.

use std::collections::BTreeMap;

/// Tensors by name: `(shape, row-major f32 values)`.
pub type F32Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The bytes of a `torch.save` file holding `tensors` as an `OrderedDict` (sorted by name).
pub fn torch_save_bytes(tensors: &F32Tensors) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<u8>)> = vec![("archive/data.pkl".into(), pickle(tensors))];
    entries.push(("archive/byteorder".into(), b"little".to_vec()));
    for (i, (_, (_, values))) in tensors.iter().enumerate() {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.push((format!("archive/data/{i}"), bytes));
    }
    entries.push(("archive/version".into(), b"3\n".to_vec()));
    zip_stored(&entries)
}

/// Pickle opcodes (protocol 2).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const SETITEMS: u8 = b'u';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const STOP: u8 = b'.';
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    p.push(op::BINUNICODE);
    p.extend((s.len() as u32).to_le_bytes());
    p.extend(s.as_bytes());
}

fn put_int(p: &mut Vec<u8>, v: usize) {
    p.push(op::BININT);
    p.extend((v as i32).to_le_bytes());
}

fn put_global(p: &mut Vec<u8>, module: &str, name: &str) {
    p.push(op::GLOBAL);
    p.extend(format!("{module}\n{name}\n").as_bytes());
}

fn put_tuple(p: &mut Vec<u8>, items: &[usize]) {
    p.push(op::MARK);
    for &v in items {
        put_int(p, v);
    }
    p.push(op::TUPLE);
}

/// `collections.OrderedDict()`.
fn put_ordered_dict(p: &mut Vec<u8>) {
    put_global(p, "collections", "OrderedDict");
    p.push(op::EMPTY_TUPLE);
    p.push(op::REDUCE);
}

fn pickle(tensors: &F32Tensors) -> Vec<u8> {
    let mut p = vec![op::PROTO, 2];
    put_ordered_dict(&mut p);
    p.push(op::MARK);
    for (i, (name, (shape, values))) in tensors.iter().enumerate() {
        put_str(&mut p, name);
        put_global(&mut p, "torch._utils", "_rebuild_tensor_v2");
        p.push(op::MARK);
        // The storage: persistent id ("storage", torch.FloatStorage, key, "cpu", numel).
        p.push(op::MARK);
        put_str(&mut p, "storage");
        put_global(&mut p, "torch", "FloatStorage");
        put_str(&mut p, &i.to_string());
        put_str(&mut p, "cpu");
        put_int(&mut p, values.len());
        p.push(op::TUPLE);
        p.push(op::BINPERSID);
        put_int(&mut p, 0); // storage offset
        put_tuple(&mut p, shape);
        // Row-major (contiguous) strides.
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        put_tuple(&mut p, &stride);
        p.push(op::NEWFALSE); // requires_grad
        put_ordered_dict(&mut p); // backward hooks
        p.push(op::TUPLE);
        p.push(op::REDUCE);
    }
    p.push(op::SETITEMS);
    p.push(op::STOP);
    p
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as ZIP records it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// A ZIP archive of `entries`, each stored (method 0), its data starting at a multiple of 64
/// (padding in the local header's extra field, as PyTorch pads).
fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len();
        let crc = crc32(data);
        let before_extra = offset + 30 + name.len();
        let mut extra_len = (64 - before_extra % 64) % 64;
        if extra_len > 0 && extra_len < 4 {
            extra_len += 64; // an extra field is at least its 4-byte header
        }
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend(sig.to_le_bytes());
            if central {
                h.extend(20u16.to_le_bytes()); // version made by
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend(0u16.to_le_bytes()); // flags
            h.extend(0u16.to_le_bytes()); // method: stored
            h.extend(0u16.to_le_bytes()); // time
            h.extend(0x21u16.to_le_bytes()); // date: 1980-01-01
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h
        };
        let mut local = header(0x0403_4b50, false);
        local.extend((extra_len as u16).to_le_bytes());
        local.extend(name.as_bytes());
        if extra_len > 0 {
            local.extend(0x4246u16.to_le_bytes()); // "FB", PyTorch's padding field id
            local.extend(((extra_len - 4) as u16).to_le_bytes());
            local.extend(std::iter::repeat_n(b'Z', extra_len - 4));
        }
        out.extend(local);
        out.extend(data);
        let mut c = header(0x0201_4b50, true);
        c.extend(0u16.to_le_bytes()); // extra length
        c.extend(0u16.to_le_bytes()); // comment length
        c.extend(0u16.to_le_bytes()); // disk number
        c.extend(0u16.to_le_bytes()); // internal attributes
        c.extend(0u32.to_le_bytes()); // external attributes
        c.extend((offset as u32).to_le_bytes());
        c.extend(name.as_bytes());
        central.extend(c);
    }
    let central_offset = out.len();
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend(0u16.to_le_bytes()); // this disk
    out.extend(0u16.to_le_bytes()); // disk of the central directory
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend((central_offset as u32).to_le_bytes());
    out.extend(0u16.to_le_bytes()); // comment length
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_a_known_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn data_is_aligned() {
        let mut t = F32Tensors::new();
        t.insert("a.weight".into(), (vec![2, 3], vec![1.0; 6]));
        let bytes = torch_save_bytes(&t);
        let needle: Vec<u8> = [1.0f32; 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .unwrap();
        assert_eq!(at % 64, 0);
    }
}
