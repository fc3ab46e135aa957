//! A pre-flight check of PyTorch `.bin` files, before burn-store's reader parses them.
//!
//! A pickle is a small stack program. burn-store's unpickler builds the objects recursively,
//! so a 400 KB file that nests lists 150 000 levels deep overflows the stack (an abort, not an
//! error). [`check_file`] walks the opcodes once, tracking only how deeply each value on the
//! stack (and in the memo) nests, and refuses a pickle deeper than [`MAX_DEPTH`] — a state
//! dict nests about six levels. It also tells a damaged zip archive from a pickle problem.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The deepest nesting of containers accepted in a checkpoint's pickle.
pub const MAX_DEPTH: u32 = 256;
/// The largest `data.pkl` read for the check (a 7B checkpoint's is ~100 KB).
pub const MAX_PICKLE_BYTES: u64 = 1 << 28;

/// Checks a PyTorch checkpoint (zip archive or legacy file) before it is parsed; the error
/// is the reason, for [`crate::WeightError::Pytorch`].
pub fn check_file(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    if n == 4 && &magic == b"PK\x03\x04" {
        return check_zip(file);
    }
    if n < 2 {
        return Err(format!("the file is only {n} bytes long"));
    }
    // A legacy (pre-1.6) file: consecutive pickles (magic number, protocol, system info,
    // the state dict) followed by raw storages.
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut data = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| e.to_string())?
        .take(len.min(MAX_PICKLE_BYTES))
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.get(257..262) == Some(b"ustar") {
        return Err(
            "it is a tar archive, the format of PyTorch before 0.4, which the zoo does \
                    not read: load it with torch.load and save it again with torch.save"
                .into(),
        );
    }
    // The legacy layout's five pickles, as burn-store reads them: magic number, protocol,
    // system info, the state dict, the storage keys; the raw storages follow.
    let mut pos = 0;
    for i in 0..5 {
        match scan(&data[pos..]) {
            Ok(Some(end)) => pos += end,
            // The data ended: the reader reports the truncation.
            Ok(None) => break,
            Err(_) if i == 0 && pos == 0 && data[0] != 0x80 => {
                return Err(
                    "it is neither a zip archive (PyTorch 1.6 and later) nor a pickle \
                            (older torch.save): not a PyTorch checkpoint"
                        .into(),
                )
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn check_zip(file: std::fs::File) -> Result<(), String> {
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| format!("its zip archive is damaged or truncated ({e}); download it again"))?;
    let name = archive
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or("its zip archive has no data.pkl: not a PyTorch checkpoint")?;
    let entry = archive
        .by_name(&name)
        .map_err(|e| format!("its zip archive is damaged ({name}: {e})"))?;
    if entry.size() > MAX_PICKLE_BYTES {
        return Err(format!(
            "{name} is {} bytes, more than the {MAX_PICKLE_BYTES} a checkpoint's pickle takes",
            entry.size()
        ));
    }
    let mut data = Vec::new();
    entry
        .take(MAX_PICKLE_BYTES)
        .read_to_end(&mut data)
        .map_err(|e| format!("its zip archive is damaged or truncated ({name}: {e})"))?;
    scan(&data).map(|_| ())
}

/// One value on the simulated stack: how deeply it nests and how many objects it holds, or a
/// MARK.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Val(Val),
}

#[derive(Clone, Copy, Default)]
struct Val {
    depth: u32,
    nodes: u64,
}

const LEAF: Val = Val { depth: 0, nodes: 1 };

impl Val {
    /// A container holding `inner`.
    fn around(inner: Val) -> Val {
        Val {
            depth: inner.depth.saturating_add(1),
            nodes: inner.nodes.saturating_add(1),
        }
    }
    fn with(self, other: Val) -> Val {
        Val {
            depth: self.depth.max(other.depth),
            nodes: self.nodes.saturating_add(other.nodes),
        }
    }
}

/// Walks one pickle the way burn-store's unpickler will: `Ok(Some(len))` when it ends with
/// STOP after `len` bytes, `Ok(None)` when the data ends first (the reader then reports the
/// truncation). It is an error when the pickle nests deeper than [`MAX_DEPTH`], when its
/// memo copies more objects than the file could hold (burn-store clones a memoized object at
/// every put and get, so a few hundred bytes can ask for billions of objects), or when it
/// does something a checkpoint never does and this walk cannot follow — pops a MARK as a
/// value, or uses an opcode outside what `torch.save` writes — since the reader might follow
/// it somewhere this check has not looked.
pub fn scan(data: &[u8]) -> Result<Option<usize>, String> {
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u64, Val> = HashMap::new();
    // Objects the unpickler will copy through the memo and DUP, against what the file holds.
    let clone_budget = 4 * data.len() as u64 + (1 << 20);
    let mut cloned = 0u64;
    let mut pos = 0usize;
    // Argument readers: `None` when the data ends early.
    let take = |pos: &mut usize, n: u64| -> Option<usize> {
        let start = *pos;
        let end = start.checked_add(usize::try_from(n).ok()?)?;
        (end <= data.len()).then(|| {
            *pos = end;
            start
        })
    };
    let uint = |pos: &mut usize, n: usize| -> Option<u64> {
        let s = take(pos, n as u64)?;
        let mut v = 0u64;
        for (i, &b) in data[s..s + n].iter().enumerate() {
            v |= u64::from(b) << (8 * i);
        }
        Some(v)
    };
    // A line argument, without its newline.
    let line = |pos: &mut usize| -> Option<&[u8]> {
        let rest = &data[*pos..];
        let nl = rest.iter().position(|&b| b == b'\n')?;
        *pos += nl + 1;
        Some(&rest[..nl])
    };
    // Data ended: the reader reports the truncation.
    macro_rules! or_end {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let mut op_at: usize;
    let mut op: u8;
    let odd = |op_at: usize, op: u8, what: &str| -> String {
        format!(
            "its pickle {what} at byte {op_at} (opcode 0x{op:02x}): not a checkpoint torch.save writes"
        )
    };
    // A value popped from the stack; a MARK there is an error.
    macro_rules! pop {
        () => {
            match stack.pop() {
                Some(Slot::Val(v)) => v,
                Some(Slot::Mark) => return Err(odd(op_at, op, "takes a MARK as a value")),
                None => return Err(odd(op_at, op, "pops an empty stack")),
            }
        };
    }
    // Everything down to the last MARK, merged.
    macro_rules! pop_mark {
        () => {{
            let mut all = Val { depth: 0, nodes: 0 };
            loop {
                match stack.pop() {
                    Some(Slot::Mark) => break all,
                    Some(Slot::Val(v)) => all = all.with(v),
                    None => return Err(odd(op_at, op, "has no MARK to pop to")),
                }
            }
        }};
    }
    // The value on top; a copy of it costs its objects.
    macro_rules! top_copy {
        () => {{
            let v = match stack.last() {
                Some(Slot::Val(v)) => *v,
                Some(Slot::Mark) => return Err(odd(op_at, op, "copies a MARK")),
                None => return Err(odd(op_at, op, "copies from an empty stack")),
            };
            cloned = cloned.saturating_add(v.nodes);
            v
        }};
    }
    macro_rules! get {
        ($key:expr) => {{
            let v = memo.get(&$key).copied().unwrap_or(LEAF);
            cloned = cloned.saturating_add(v.nodes);
            stack.push(Slot::Val(v));
        }};
    }
    // Adds `inner` to the container on top of the stack.
    macro_rules! grow {
        ($inner:expr) => {{
            let inner: Val = $inner;
            match stack.last_mut() {
                Some(Slot::Val(v)) => {
                    v.depth = v.depth.max(inner.depth.saturating_add(1));
                    v.nodes = v.nodes.saturating_add(inner.nodes);
                    *v
                }
                Some(Slot::Mark) => return Err(odd(op_at, op, "adds to a MARK")),
                None => return Err(odd(op_at, op, "adds to an empty stack")),
            }
        }};
    }
    loop {
        op_at = pos;
        op = *or_end!(data.get(pos));
        pos += 1;
        let mut made: Option<Val> = None;
        match op {
            b'.' => return Ok(Some(pos)),
            b'(' => stack.push(Slot::Mark),
            // Scalars and references with fixed-size or line arguments.
            b'N' | 0x88 | 0x89 => stack.push(Slot::Val(LEAF)),
            b'K' | b'h' | b'q' | 0x82 => {
                let v = or_end!(uint(&mut pos, 1));
                match op {
                    b'h' => get!(v),
                    b'q' => {
                        let d = top_copy!();
                        memo.insert(v, d);
                    }
                    _ => stack.push(Slot::Val(LEAF)),
                }
            }
            b'M' | 0x83 => {
                or_end!(uint(&mut pos, 2));
                stack.push(Slot::Val(LEAF));
            }
            b'J' | 0x84 => {
                or_end!(uint(&mut pos, 4));
                stack.push(Slot::Val(LEAF));
            }
            b'j' | b'r' => {
                let v = or_end!(uint(&mut pos, 4));
                if op == b'j' {
                    get!(v);
                } else {
                    let d = top_copy!();
                    memo.insert(v, d);
                }
            }
            b'G' => {
                or_end!(take(&mut pos, 8));
                stack.push(Slot::Val(LEAF));
            }
            b'F' | b'I' | b'L' | b'S' | b'V' | b'P' => {
                or_end!(line(&mut pos));
                stack.push(Slot::Val(LEAF));
            }
            b'g' | b'p' => {
                let text = or_end!(line(&mut pos));
                let key = std::str::from_utf8(text)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let Some(key) = key else {
                    return Err(odd(op_at, op, "has a memo key that is not a number"));
                };
                if op == b'g' {
                    get!(key);
                } else {
                    let d = top_copy!();
                    memo.insert(key, d);
                }
            }
            0x94 => {
                let d = top_copy!();
                let key = memo.len() as u64;
                memo.insert(key, d);
            }
            b'c' => {
                let module = or_end!(line(&mut pos));
                let name = or_end!(line(&mut pos));
                let bare = |s: &[u8]| s.strip_suffix(b"\r").unwrap_or(s) == b"mark";
                // burn-store's MARK is this very global on its stack.
                if bare(module) && bare(name) {
                    return Err(odd(op_at, op, "names the global mark.mark"));
                }
                stack.push(Slot::Val(LEAF));
            }
            // Length-prefixed strings and bytes.
            b'U' | b'C' | 0x8c | 0x8a => {
                let n = or_end!(uint(&mut pos, 1));
                or_end!(take(&mut pos, n));
                stack.push(Slot::Val(LEAF));
            }
            b'T' | b'X' | b'B' | 0x8b => {
                let n = or_end!(uint(&mut pos, 4));
                or_end!(take(&mut pos, n));
                stack.push(Slot::Val(LEAF));
            }
            0x8d | 0x8e | 0x96 => {
                let n = or_end!(uint(&mut pos, 8));
                or_end!(take(&mut pos, n));
                stack.push(Slot::Val(LEAF));
            }
            0x80 => {
                or_end!(take(&mut pos, 1));
            }
            0x95 => {
                or_end!(take(&mut pos, 8));
            }
            // Empty containers.
            b']' | b'}' | b')' | 0x8f => stack.push(Slot::Val(Val { depth: 1, nodes: 1 })),
            // Stack manipulation.
            b'0' => {
                if stack.pop().is_none() {
                    return Err(odd(op_at, op, "pops an empty stack"));
                }
            }
            b'1' => {
                pop_mark!();
            }
            b'2' => {
                let d = top_copy!();
                stack.push(Slot::Val(d));
            }
            // Containers built from the values above a MARK.
            b't' | b'l' | b'd' | 0x91 | b'o' => {
                let v = Val::around(pop_mark!());
                stack.push(Slot::Val(v));
                made = Some(v);
            }
            b'i' => {
                or_end!(line(&mut pos));
                or_end!(line(&mut pos));
                let v = Val::around(pop_mark!());
                stack.push(Slot::Val(v));
                made = Some(v);
            }
            // Values added to the container below them.
            b'a' | b'b' => {
                let x = pop!();
                made = Some(grow!(x));
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                made = Some(grow!(v.with(k)));
            }
            b'e' | b'u' | 0x90 => {
                let x = pop_mark!();
                made = Some(grow!(x));
            }
            0x85..=0x87 => {
                let mut all = Val { depth: 0, nodes: 0 };
                for _ in 0..op - 0x84 {
                    all = all.with(pop!());
                }
                let v = Val::around(all);
                stack.push(Slot::Val(v));
                made = Some(v);
            }
            // Calls: the result holds its arguments.
            b'R' | 0x81 => {
                let args = pop!();
                let callable = pop!();
                let v = Val::around(args.with(callable));
                stack.push(Slot::Val(v));
                made = Some(v);
            }
            0x92 => {
                let mut all = Val { depth: 0, nodes: 0 };
                for _ in 0..3 {
                    all = all.with(pop!());
                }
                let v = Val::around(all);
                stack.push(Slot::Val(v));
                made = Some(v);
            }
            0x93 => {
                pop!();
                pop!();
                stack.push(Slot::Val(LEAF));
            }
            b'Q' => {
                let v = Val::around(pop!());
                stack.push(Slot::Val(v));
                made = Some(v);
            }
            0x97 => stack.push(Slot::Val(LEAF)),
            0x98 => {}
            _ => return Err(odd(op_at, op, "has an opcode outside pickle protocols 0–5")),
        }
        if let Some(v) = made {
            if v.depth > MAX_DEPTH {
                return Err(format!(
                    "its pickle nests containers more than {MAX_DEPTH} levels deep (at byte {pos}): not a checkpoint the zoo reads (a state dict nests about 6)"
                ));
            }
        }
        if cloned > clone_budget {
            return Err(format!(
                "its pickle copies memoized objects {cloned} times by byte {pos}, more than the {clone_budget} a {}-byte pickle can hold: not a checkpoint the zoo reads",
                data.len()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[[…]]]` nested `depth` times, as pickle protocol 2 writes it.
    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', depth));
        p.extend(std::iter::repeat_n(b'a', depth - 1));
        p.push(b'.');
        p
    }

    #[test]
    fn shallow_pickles_pass_and_deep_ones_fail() {
        assert_eq!(scan(&nested_lists(10)).unwrap(), Some(2 + 10 + 9 + 1));
        let e = scan(&nested_lists(150_000)).unwrap_err();
        assert!(e.contains("more than 256 levels"), "{e}");
    }

    #[test]
    fn nesting_through_the_memo_is_counted() {
        // x = []; repeat: x = [x] via BINPUT / POP / EMPTY_LIST / BINGET / APPEND, with a
        // stack that never holds more than two values.
        let mut p = vec![0x80, 2, b']', b'q', 0, b'0'];
        for _ in 0..300 {
            p.extend_from_slice(&[b']', b'h', 0, b'a', b'q', 0, b'0']);
        }
        p.extend_from_slice(b"N.");
        let e = scan(&p).unwrap_err();
        assert!(e.contains("levels deep"), "{e}");
    }

    #[test]
    fn truncated_pickles_are_left_to_the_reader_and_foreign_bytes_are_errors() {
        assert_eq!(scan(&[0x80, 2, b']']).unwrap(), None);
        let e = scan(b"\xff\xfe").unwrap_err();
        assert!(e.contains("outside pickle protocols"), "{e}");
    }

    /// burn-store keeps its MARK on the value stack, so `( a` appends the MARK to a list and
    /// goes on; the scan must not stop following there (it did: the reader then built a
    /// 100 000-deep list behind the scan's back and overflowed the stack, the `pytorch_bin`
    /// fuzz target's SIGSEGV).
    #[test]
    fn a_mark_used_as_a_value_is_an_error() {
        let mut p = vec![0x80, 2, b']', b'(', b'a'];
        p.extend(nested_lists(100_000)[2..].iter().copied());
        let e = scan(&p).unwrap_err();
        assert!(e.contains("takes a MARK as a value"), "{e}");
        let e = scan(b"\x80\x02cmark\nmark\n]a.").unwrap_err();
        assert!(e.contains("mark.mark"), "{e}");
    }

    /// `x = []; x = [x, x]` thirty times: 300 bytes that the unpickler, which copies a
    /// memoized object at every get, would grow into 2^30 objects.
    #[test]
    fn memo_copies_are_bounded_by_the_file() {
        let mut p = vec![0x80, 2, b']', b'q', 0, b'0'];
        for _ in 0..30 {
            p.extend_from_slice(&[b'(', b'h', 0, b'h', 0, b'l', b'q', 0, b'0']);
        }
        p.extend_from_slice(b"N.");
        let e = scan(&p).unwrap_err();
        assert!(e.contains("copies memoized objects"), "{e}");
        // Ten rounds (a few thousand copies) stay within the budget.
        let mut p = vec![0x80, 2, b']', b'q', 0, b'0'];
        for _ in 0..10 {
            p.extend_from_slice(&[b'(', b'h', 0, b'h', 0, b'l', b'q', 0, b'0']);
        }
        p.extend_from_slice(b"N.");
        assert!(scan(&p).unwrap().is_some());
    }

    #[test]
    fn foreign_files_and_tar_archives_get_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("zoo-pickle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pytorch_model.bin");
        std::fs::write(&path, b"hello, this is a text file\n").unwrap();
        let e = check_file(&path).unwrap_err();
        assert!(e.contains("neither a zip archive"), "{e}");
        let mut tar = vec![0u8; 512];
        tar[..8].copy_from_slice(b"storages");
        tar[257..262].copy_from_slice(b"ustar");
        std::fs::write(&path, &tar).unwrap();
        let e = check_file(&path).unwrap_err();
        assert!(e.contains("tar archive"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The stricter walk still passes every PyTorch checkpoint the repository's fixtures hold
    /// (written by torch.save: zip archives and the legacy layout), and refuses the hostile
    /// ones.
    #[test]
    fn every_fixture_checkpoint_passes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let mut seen = 0;
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.file_name().is_some_and(|n| n == "pytorch_model.bin") {
                    check_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen >= 8, "only {seen} fixture checkpoints found");
        let deep = check_file(&root.join("hostile/deep_list.bin")).unwrap_err();
        assert!(deep.contains("levels deep"), "{deep}");
    }
}
