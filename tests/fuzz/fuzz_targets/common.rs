// Shared by the targets: the input written to a file (the readers take paths, as users give).

use std::path::PathBuf;

/// Writes `data` to `/dev/shm` (or the temp folder) as `name` in a folder of this process.
#[allow(dead_code)]
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("zoo-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp folder");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("temp file");
    path
}

/// Elements read back from any one tensor (bounds the work per input, not what is checked).
#[allow(dead_code)]
pub const MAX_ELEMENTS: usize = 1 << 20;
