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
    let mut pos = 0;
    for _ in 0..4 {
        match scan(&data[pos..]) {
            Ok(Some(end)) => pos += end,
            // Not (or no longer) a pickle the scan understands: the reader reports it.
            Ok(None) => break,
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

/// One value on the simulated stack: how deeply it nests, or a MARK.
#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Depth(u32),
}

/// Walks one pickle: `Ok(Some(len))` when it ends with STOP after `len` bytes, `Ok(None)` when
/// the bytes stop being a pickle this scan can follow (the reader then reports the problem),
/// an error when it nests deeper than [`MAX_DEPTH`].
pub fn scan(data: &[u8]) -> Result<Option<usize>, String> {
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u64, u32> = HashMap::new();
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
    let line = |pos: &mut usize| -> Option<()> {
        let rest = &data[*pos..];
        let nl = rest.iter().position(|&b| b == b'\n')?;
        *pos += nl + 1;
        Some(())
    };
    // Pops down to the last MARK: the deepest value above it.
    fn pop_mark(stack: &mut Vec<Slot>) -> Option<u32> {
        let mut deepest = 0;
        loop {
            match stack.pop()? {
                Slot::Mark => return Some(deepest),
                Slot::Depth(d) => deepest = deepest.max(d),
            }
        }
    }
    fn pop(stack: &mut Vec<Slot>) -> Option<u32> {
        match stack.pop()? {
            Slot::Depth(d) => Some(d),
            Slot::Mark => None,
        }
    }
    // Makes the top value contain values of depth `inner`.
    fn grow(stack: &mut [Slot], inner: u32) -> Option<u32> {
        match stack.last_mut()? {
            Slot::Depth(d) => {
                *d = (*d).max(inner.saturating_add(1));
                Some(*d)
            }
            Slot::Mark => None,
        }
    }
    macro_rules! or_stop {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    loop {
        let Some(&op) = data.get(pos) else {
            return Ok(None);
        };
        pos += 1;
        let mut deepest: Option<u32> = None;
        match op {
            b'.' => return Ok(Some(pos)),
            b'(' => stack.push(Slot::Mark),
            // Scalars and references with fixed-size or line arguments.
            b'N' | 0x88 | 0x89 => stack.push(Slot::Depth(0)),
            b'K' | b'h' | b'q' | 0x82 => {
                let v = or_stop!(uint(&mut pos, 1));
                match op {
                    b'h' => stack.push(Slot::Depth(memo.get(&v).copied().unwrap_or(0))),
                    b'q' => {
                        let d = or_stop!(top(&stack));
                        memo.insert(v, d);
                    }
                    _ => stack.push(Slot::Depth(0)),
                }
            }
            b'M' | 0x83 => {
                or_stop!(uint(&mut pos, 2));
                stack.push(Slot::Depth(0));
            }
            b'J' | 0x84 => {
                or_stop!(uint(&mut pos, 4));
                stack.push(Slot::Depth(0));
            }
            b'j' | b'r' => {
                let v = or_stop!(uint(&mut pos, 4));
                if op == b'j' {
                    stack.push(Slot::Depth(memo.get(&v).copied().unwrap_or(0)));
                } else {
                    let d = or_stop!(top(&stack));
                    memo.insert(v, d);
                }
            }
            b'G' => {
                or_stop!(take(&mut pos, 8));
                stack.push(Slot::Depth(0));
            }
            b'F' | b'I' | b'L' | b'S' | b'V' | b'P' => {
                or_stop!(line(&mut pos));
                stack.push(Slot::Depth(0));
            }
            b'g' | b'p' => {
                let start = pos;
                or_stop!(line(&mut pos));
                let key = std::str::from_utf8(&data[start..pos - 1])
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                let key = or_stop!(key);
                if op == b'g' {
                    stack.push(Slot::Depth(memo.get(&key).copied().unwrap_or(0)));
                } else {
                    let d = or_stop!(top(&stack));
                    memo.insert(key, d);
                }
            }
            0x94 => {
                let d = or_stop!(top(&stack));
                let key = memo.len() as u64;
                memo.insert(key, d);
            }
            b'c' => {
                or_stop!(line(&mut pos));
                or_stop!(line(&mut pos));
                stack.push(Slot::Depth(0));
            }
            // Length-prefixed strings and bytes.
            b'U' | b'C' | 0x8c | 0x8a => {
                let n = or_stop!(uint(&mut pos, 1));
                or_stop!(take(&mut pos, n));
                stack.push(Slot::Depth(0));
            }
            b'T' | b'X' | b'B' | 0x8b => {
                let n = or_stop!(uint(&mut pos, 4));
                or_stop!(take(&mut pos, n));
                stack.push(Slot::Depth(0));
            }
            0x8d | 0x8e | 0x96 => {
                let n = or_stop!(uint(&mut pos, 8));
                or_stop!(take(&mut pos, n));
                stack.push(Slot::Depth(0));
            }
            0x80 => {
                or_stop!(take(&mut pos, 1));
            }
            0x95 => {
                or_stop!(take(&mut pos, 8));
            }
            // Empty containers.
            b']' | b'}' | b')' | 0x8f => stack.push(Slot::Depth(1)),
            // Stack manipulation.
            b'0' => {
                or_stop!(stack.pop());
            }
            b'1' => {
                or_stop!(pop_mark(&mut stack));
            }
            b'2' => {
                let d = or_stop!(top(&stack));
                stack.push(Slot::Depth(d));
            }
            // Containers built from the values above a MARK.
            b't' | b'l' | b'd' | 0x91 | b'o' => {
                let d = or_stop!(pop_mark(&mut stack)).saturating_add(1);
                stack.push(Slot::Depth(d));
                deepest = Some(d);
            }
            b'i' => {
                or_stop!(line(&mut pos));
                or_stop!(line(&mut pos));
                let d = or_stop!(pop_mark(&mut stack)).saturating_add(1);
                stack.push(Slot::Depth(d));
                deepest = Some(d);
            }
            // Values added to the container below them.
            b'a' | b'b' => {
                let x = or_stop!(pop(&mut stack));
                deepest = Some(or_stop!(grow(&mut stack, x)));
            }
            b's' => {
                let v = or_stop!(pop(&mut stack));
                let k = or_stop!(pop(&mut stack));
                deepest = Some(or_stop!(grow(&mut stack, v.max(k))));
            }
            b'e' | b'u' | 0x90 => {
                let x = or_stop!(pop_mark(&mut stack));
                deepest = Some(or_stop!(grow(&mut stack, x)));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut d = 0;
                for _ in 0..n {
                    d = d.max(or_stop!(pop(&mut stack)));
                }
                let d = d.saturating_add(1);
                stack.push(Slot::Depth(d));
                deepest = Some(d);
            }
            // Calls: the result holds its arguments.
            b'R' | 0x81 => {
                let args = or_stop!(pop(&mut stack));
                let callable = or_stop!(pop(&mut stack));
                let d = args.max(callable).saturating_add(1);
                stack.push(Slot::Depth(d));
                deepest = Some(d);
            }
            0x92 => {
                let mut d = 0;
                for _ in 0..3 {
                    d = d.max(or_stop!(pop(&mut stack)));
                }
                let d = d.saturating_add(1);
                stack.push(Slot::Depth(d));
                deepest = Some(d);
            }
            0x93 => {
                or_stop!(pop(&mut stack));
                or_stop!(pop(&mut stack));
                stack.push(Slot::Depth(0));
            }
            b'Q' => {
                let d = or_stop!(pop(&mut stack)).saturating_add(1);
                stack.push(Slot::Depth(d));
                deepest = Some(d);
            }
            0x97 => stack.push(Slot::Depth(0)),
            0x98 => {}
            // An opcode outside protocols 0–5.
            _ => return Ok(None),
        }
        if let Some(d) = deepest {
            if d > MAX_DEPTH {
                return Err(format!(
                    "its pickle nests containers more than {MAX_DEPTH} levels deep (at byte {pos}): not a checkpoint the zoo reads (a state dict nests about 6)"
                ));
            }
        }
    }
}

fn top(stack: &[Slot]) -> Option<u32> {
    match stack.last()? {
        Slot::Depth(d) => Some(*d),
        Slot::Mark => None,
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
    fn truncated_or_foreign_bytes_are_left_to_the_reader() {
        assert_eq!(scan(&[0x80, 2, b']']).unwrap(), None);
        assert_eq!(scan(b"\xff\xfe").unwrap(), None);
    }
}
