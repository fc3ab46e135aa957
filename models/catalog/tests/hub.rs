//! The hf source against a local HTTP server in the hub's URL layout
//! (`/{repo}/resolve/{revision}/{file}`, with the etag / x-repo-commit / content-range
//! headers hf-hub reads), serving small fake files.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use zoo_catalog::{
    fetch, is_cached, Catalog, CatalogError, FetchEvent, FetchOptions, FetchedModel, SourceKind,
    MANIFEST_FILE,
};

const REPO: &str = "test-org/tiny-model";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[derive(Default)]
struct State {
    /// URL path → body.
    files: HashMap<String, Vec<u8>>,
    /// URL path → etag to send instead of the body's sha256.
    etags: HashMap<String, String>,
    /// URL path → bytes after which the next body response is cut off.
    cut: HashMap<String, usize>,
    /// Every request: (path, Range header).
    log: Vec<(String, Option<String>)>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1, one connection at a time, `Connection: close`.
struct Hub {
    endpoint: String,
    state: Arc<Mutex<State>>,
}

impl Hub {
    fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let _ = serve(stream, &shared);
            }
        });
        Hub { endpoint, state }
    }

    fn put(&self, file: &str, body: &[u8]) {
        let path = format!("/{REPO}/resolve/main/{file}");
        self.state.lock().unwrap().files.insert(path, body.to_vec());
    }

    fn cut_once(&self, file: &str, after: usize) {
        let path = format!("/{REPO}/resolve/main/{file}");
        self.state.lock().unwrap().cut.insert(path, after);
    }

    fn lie_about_etag(&self, file: &str, etag: &str) {
        let path = format!("/{REPO}/resolve/main/{file}");
        self.state
            .lock()
            .unwrap()
            .etags
            .insert(path, etag.to_string());
    }

    fn log(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Body requests (not hf-hub's `bytes=0-0` metadata probes) for one file.
    fn body_requests(&self, file: &str) -> Vec<Option<String>> {
        let path = format!("/{REPO}/resolve/main/{file}");
        self.log()
            .into_iter()
            .filter(|(p, r)| *p == path && r.as_deref() != Some("bytes=0-0"))
            .map(|(_, r)| r)
            .collect()
    }
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 65536 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());

    let mut st = state.lock().unwrap();
    st.log.push((path.clone(), range.clone()));
    let Some(body) = st.files.get(&path).cloned() else {
        drop(st);
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nx-error-code: EntryNotFound\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    let etag = st.etags.get(&path).cloned().unwrap_or_else(|| sha(&body));
    let len = body.len();
    let (status, start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                len - 1
            } else {
                b.parse().unwrap()
            };
            ("206 Partial Content", a, b.min(len - 1))
        }
        None => ("200 OK", 0, len - 1),
    };
    let slice = &body[start..=end];
    let cut = if slice.len() > 1 {
        st.cut.remove(&path)
    } else {
        None
    };
    drop(st);
    let mut head = format!(
        "HTTP/1.1 {status}\r\netag: \"{etag}\"\r\nx-repo-commit: {COMMIT}\r\naccept-ranges: bytes\r\ncontent-length: {}\r\nconnection: close\r\n",
        slice.len()
    );
    if status.starts_with("206") {
        head.push_str(&format!("content-range: bytes {start}-{end}/{len}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match cut {
        Some(n) => {
            stream.write_all(&slice[..n.min(slice.len())])?;
            stream.flush()?;
            stream.shutdown(Shutdown::Both)?;
        }
        None => stream.write_all(slice)?,
    }
    Ok(())
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("zoo-catalog-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Fixture {
    hub: Hub,
    config: Vec<u8>,
    index: Vec<u8>,
    shard1: Vec<u8>,
    shard2: Vec<u8>,
    tmp: TempDir,
}

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";
const INDEX: &str = "model.safetensors.index.json";

impl Fixture {
    fn new(name: &str) -> Fixture {
        let hub = Hub::start();
        let config = br#"{"model_type": "gpt2", "n_layer": 2}"#.to_vec();
        let index = format!(
            r#"{{"metadata": {{"total_size": 3}}, "weight_map": {{"h.0.w": "{SHARD1}", "h.1.w": "{SHARD2}", "wte": "{SHARD1}"}}}}"#
        )
        .into_bytes();
        let shard1 = noise(100_000, 1);
        let shard2 = noise(50_000, 2);
        hub.put("config.json", &config);
        hub.put(INDEX, &index);
        hub.put(SHARD1, &shard1);
        hub.put(SHARD2, &shard2);
        Fixture {
            hub,
            config,
            index,
            shard1,
            shard2,
            tmp: TempDir::new(name),
        }
    }

    fn cache(&self) -> PathBuf {
        self.tmp.0.join("zoo")
    }

    fn hf_home(&self) -> PathBuf {
        self.tmp.0.join("hf")
    }

    /// A catalog with one entry whose hf source lists `files` (and a sha256 for config.json).
    fn catalog(&self, files: &[&str], config_sha: &str) -> Catalog {
        let files: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
        let text = format!(
            r#"
schema_version = 1
[[model]]
id = "tiny"
architecture = "gpt2"
variant = "a two-layer test model"
license = "MIT"
parameters = 1000
context_length = 16
[model.config]
layers = 2
hidden_size = 8
heads = 2
kv_heads = 2
intermediate_size = 32
vocab_size = 10
max_positions = 16
positional = "learned"
norm = "layernorm"
activation = "gelu_new"
tied_embeddings = true
[[model.source]]
kind = "hf"
repo = "{REPO}"
revision = "main"
revision_verified = false
files = [{}]
sha256 = {{ "config.json" = "{config_sha}" }}
"#,
            files.join(", ")
        );
        let c = Catalog::parse(&text).unwrap();
        c.validate().unwrap();
        c
    }

    fn good_catalog(&self) -> Catalog {
        self.catalog(&["config.json", INDEX], &sha(&self.config))
    }

    fn fetch_with(
        &self,
        catalog: &Catalog,
        endpoint: &str,
        cache: &Path,
        events: &RefCell<Vec<FetchEvent>>,
    ) -> Result<FetchedModel, CatalogError> {
        let progress = |e: FetchEvent| events.borrow_mut().push(e);
        let mut opts = FetchOptions::new(cache, &progress).with_source(Some(SourceKind::Hf));
        opts.hf_endpoint = Some(endpoint.to_string());
        opts.hf_home = Some(self.hf_home());
        fetch(catalog.get("tiny").unwrap(), &opts)
    }

    fn fetch(&self, catalog: &Catalog) -> Result<FetchedModel, CatalogError> {
        let events = RefCell::new(Vec::new());
        self.fetch_with(catalog, &self.hub.endpoint, &self.cache(), &events)
    }

    fn assert_files(&self, dir: &Path) {
        assert_eq!(fs::read(dir.join("config.json")).unwrap(), self.config);
        assert_eq!(fs::read(dir.join(INDEX)).unwrap(), self.index);
        assert_eq!(fs::read(dir.join(SHARD1)).unwrap(), self.shard1);
        assert_eq!(fs::read(dir.join(SHARD2)).unwrap(), self.shard2);
    }
}

/// The single source failure inside `AllSourcesFailed`.
fn only_failure(result: Result<FetchedModel, CatalogError>) -> CatalogError {
    match result {
        Err(CatalogError::AllSourcesFailed { id, mut failures }) => {
            assert_eq!(id, "tiny");
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].source, format!("hf {REPO}@main"));
            failures.remove(0).error
        }
        other => panic!("expected AllSourcesFailed, got {other:?}"),
    }
}

fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[test]
fn fetches_sharded_checkpoint_then_serves_it_from_cache() {
    let fx = Fixture::new("success");
    let catalog = fx.good_catalog();
    let events = RefCell::new(Vec::new());
    let got = fx
        .fetch_with(&catalog, &fx.hub.endpoint, &fx.cache(), &events)
        .unwrap();
    assert_eq!(got.id, "tiny");
    assert_eq!(got.path, fx.cache().join("tiny").join("hf"));
    assert!(!got.cached);
    fx.assert_files(&got.path);
    // The shards came from the index, each downloaded once (hf-hub always sends a Range).
    let whole = || Some("bytes=0-".to_string());
    assert_eq!(fx.hub.body_requests(SHARD1), [whole()]);
    assert_eq!(fx.hub.body_requests(SHARD2), [whole()]);
    let last = events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            FetchEvent::Downloading { file, done, total } if file == SHARD1 => {
                Some((*done, *total))
            }
            _ => None,
        })
        .next_back();
    assert_eq!(last, Some((100_000, Some(100_000))));

    // The manifest records every file's sha256 and size.
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(got.path.join(MANIFEST_FILE)).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    assert_eq!(files[2]["path"], SHARD1);
    assert_eq!(files[2]["sha256"], sha(&fx.shard1));
    assert_eq!(files[2]["size"], 100_000);
    assert!(is_cached(catalog.get("tiny").unwrap(), &fx.cache()));

    // Second fetch: verified from the cache, no request at all.
    let requests = fx.hub.log().len();
    let again = fx.fetch(&catalog).unwrap();
    assert!(again.cached);
    assert_eq!(again.path, got.path);
    assert_eq!(fx.hub.log().len(), requests);
}

#[test]
fn checksum_mismatch_against_the_catalog_is_an_error_and_leaves_no_file() {
    let fx = Fixture::new("mismatch");
    let wrong = sha(b"something else");
    let catalog = fx.catalog(&["config.json"], &wrong);
    let err = only_failure(fx.fetch(&catalog));
    match &err {
        CatalogError::ChecksumMismatch {
            file,
            expected,
            actual,
        } => {
            assert_eq!(file, "config.json");
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, sha(&fx.config));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let dir = fx.cache().join("tiny").join("hf");
    assert!(!dir.join("config.json").exists());
    assert!(!dir.join(MANIFEST_FILE).exists());
    assert!(!is_cached(catalog.get("tiny").unwrap(), &fx.cache()));
}

#[test]
fn checksum_mismatch_against_the_hub_etag_is_an_error() {
    let fx = Fixture::new("etag");
    let claimed = sha(b"what the hub says the shard is");
    fx.hub.lie_about_etag(SHARD2, &claimed);
    let err = only_failure(fx.fetch(&fx.good_catalog()));
    let CatalogError::ChecksumMismatch {
        file,
        expected,
        actual,
    } = err
    else {
        panic!("expected ChecksumMismatch, got {err:?}")
    };
    assert_eq!((file.as_str(), expected), (SHARD2, claimed));
    assert_eq!(actual, sha(&fx.shard2));
    assert!(!fx.cache().join("tiny/hf").join(SHARD2).exists());
}

#[test]
fn missing_file_is_a_404() {
    let fx = Fixture::new("notfound");
    let catalog = fx.catalog(&["config.json", "tokenizer.json"], &sha(&fx.config));
    let err = only_failure(fx.fetch(&catalog));
    let CatalogError::NotFound { url } = &err else {
        panic!("expected NotFound, got {err:?}")
    };
    assert_eq!(
        *url,
        format!("{}/{REPO}/resolve/main/tokenizer.json", fx.hub.endpoint)
    );
    assert!(err.to_string().starts_with("not found (HTTP 404)"));
}

#[test]
fn connection_refused_is_reported() {
    let fx = Fixture::new("refused");
    let endpoint = closed_port();
    let events = RefCell::new(Vec::new());
    let err = only_failure(fx.fetch_with(&fx.good_catalog(), &endpoint, &fx.cache(), &events));
    let CatalogError::ConnectionFailed { url, message } = &err else {
        panic!("expected ConnectionFailed, got {err:?}")
    };
    assert!(url.starts_with(&endpoint));
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(matches!(
        events.borrow().last(),
        Some(FetchEvent::SourceFailed { .. })
    ));
}

#[test]
fn interrupted_download_resumes_on_the_next_fetch() {
    let fx = Fixture::new("interrupted");
    let catalog = fx.good_catalog();
    fx.hub.cut_once(SHARD1, 40_000);
    let err = only_failure(fx.fetch(&catalog));
    let CatalogError::Interrupted { url, .. } = &err else {
        panic!("expected Interrupted, got {err:?}")
    };
    assert!(url.ends_with(SHARD1));
    // Nothing half-written under the final name, no manifest; the partial blob waits.
    let dir = fx.cache().join("tiny").join("hf");
    assert!(!dir.join(SHARD1).exists());
    assert!(!dir.join(MANIFEST_FILE).exists());
    let part = fx
        .hf_home()
        .join("hub/models--test-org--tiny-model/blobs")
        .join(format!("{}.part", sha(&fx.shard1)));
    assert_eq!(fs::metadata(&part).unwrap().len(), 40_000);

    let got = fx.fetch(&catalog).unwrap();
    assert!(!got.cached);
    fx.assert_files(&got.path);
    // The retry asked only for the missing bytes.
    assert_eq!(
        fx.hub.body_requests(SHARD1),
        [
            Some("bytes=0-".to_string()),
            Some("bytes=40000-".to_string())
        ]
    );
    // config.json was not downloaded twice.
    assert_eq!(fx.hub.body_requests("config.json").len(), 1);
}

#[test]
fn corrupted_cached_file_is_detected_and_fetched_again() {
    let fx = Fixture::new("corrupt");
    let catalog = fx.good_catalog();
    let got = fx.fetch(&catalog).unwrap();

    // Flip one byte in place (same size, so only hashing can tell).
    let target = got.path.join(SHARD2);
    let mut bytes = fs::read(&target).unwrap();
    bytes[1234] ^= 0xff;
    fs::write(&target, &bytes).unwrap();

    let again = fx.fetch(&catalog).unwrap();
    assert!(!again.cached);
    fx.assert_files(&again.path);
    assert_eq!(fx.hub.body_requests(SHARD2).len(), 2);
    assert_eq!(fx.hub.body_requests(SHARD1).len(), 1);

    // A deleted file is fetched again too.
    fs::remove_file(again.path.join("config.json")).unwrap();
    assert!(!is_cached(catalog.get("tiny").unwrap(), &fx.cache()));
    let third = fx.fetch(&catalog).unwrap();
    fx.assert_files(&third.path);
}

#[test]
fn cached_files_are_trusted_by_size_and_mtime_and_hashed_on_verify() {
    let fx = Fixture::new("trust");
    let catalog = fx.good_catalog();
    let got = fx.fetch(&catalog).unwrap();

    // A second fetch trusts the manifest: nothing is hashed, nothing downloaded.
    let events = RefCell::new(Vec::new());
    let again = fx
        .fetch_with(&catalog, &fx.hub.endpoint, &fx.cache(), &events)
        .unwrap();
    assert!(again.cached);
    let checked = |events: &RefCell<Vec<FetchEvent>>| {
        events
            .borrow()
            .iter()
            .filter(|e| matches!(e, FetchEvent::Checking { .. }))
            .count()
    };
    assert_eq!(checked(&events), 0, "a trusted cache is not hashed again");

    // A byte flipped with the mtime put back is invisible to the quick check…
    let target = got.path.join(SHARD2);
    let mtime = fs::metadata(&target).unwrap().modified().unwrap();
    let mut bytes = fs::read(&target).unwrap();
    bytes[99] ^= 0xff;
    fs::write(&target, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&target)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert!(fx.fetch(&catalog).unwrap().cached);
    // …and found by --verify, which hashes every file and fetches the bad one again.
    let events = RefCell::new(Vec::new());
    let progress = |e: FetchEvent| events.borrow_mut().push(e);
    let mut opts = FetchOptions::new(fx.cache(), &progress)
        .with_source(Some(SourceKind::Hf))
        .with_verify(true);
    opts.hf_endpoint = Some(fx.hub.endpoint.clone());
    opts.hf_home = Some(fx.hf_home());
    let verified = fetch(catalog.get("tiny").unwrap(), &opts).unwrap();
    assert!(!verified.cached);
    assert!(checked(&events) >= 4, "every file hashed");
    fx.assert_files(&verified.path);
}

#[test]
fn an_existing_hf_cache_is_reused_without_network() {
    let fx = Fixture::new("reuse");
    let catalog = fx.good_catalog();
    fx.fetch(&catalog).unwrap();
    // Another zoo cache, the hub unreachable: the HF cache has every file.
    let other = fx.tmp.0.join("zoo-2");
    let events = RefCell::new(Vec::new());
    let got = fx
        .fetch_with(&catalog, &closed_port(), &other, &events)
        .unwrap();
    assert_eq!(got.path, other.join("tiny").join("hf"));
    fx.assert_files(&got.path);
    assert!(!events
        .borrow()
        .iter()
        .any(|e| matches!(e, FetchEvent::Downloading { .. })));
}

#[test]
fn every_failing_source_is_listed() {
    let fx = Fixture::new("allfail");
    let text = format!(
        r#"
schema_version = 1
[[model]]
id = "two"
architecture = "tokenizer"
variant = "v"
license = "MIT"
[[model.source]]
kind = "hf"
repo = "test-org/absent"
revision = "main"
revision_verified = false
files = ["vocab.json"]
[[model.source]]
kind = "pip"
package = "not-a-real-package==0.0.1"
archive_sha256 = "{}"
files = ["x"]
"#,
        sha(b"x")
    );
    let catalog = Catalog::parse(&text).unwrap();
    catalog.validate().unwrap();
    let progress = |_: FetchEvent| {};
    let mut opts = FetchOptions::new(fx.cache(), &progress);
    opts.hf_endpoint = Some(fx.hub.endpoint.clone());
    opts.hf_home = Some(fx.hf_home());
    opts.pip_command = Some(vec!["/nonexistent/zoo-test-pip".to_string()]);
    let entry = catalog.get("two").unwrap();
    let err = fetch(entry, &opts).unwrap_err();
    let text = err.to_string();
    let CatalogError::AllSourcesFailed { failures, .. } = err else {
        panic!("expected AllSourcesFailed")
    };
    assert_eq!(failures.len(), 2);
    assert!(matches!(failures[0].error, CatalogError::NotFound { .. }));
    assert!(matches!(
        failures[1].error,
        CatalogError::ToolMissing { .. }
    ));
    assert!(text.starts_with("could not fetch `two`: every source failed:\n  - hf test-org/absent@main: not found (HTTP 404)"), "{text}");
    assert!(
        text.contains(
            "\n  - pip not-a-real-package==0.0.1: cannot run `/nonexistent/zoo-test-pip download"
        ),
        "{text}"
    );

    // Asking for a kind the entry lacks.
    let opts = FetchOptions::new(fx.cache(), &progress).with_source(Some(SourceKind::Npm));
    let err = fetch(entry, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model `two` has no npm source (it has: hf, pip)"
    );
}
