//! The one error type of zoo-catalog.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong reading the catalog or fetching a model.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The catalog text is not valid TOML for the zoo schema.
    #[error("{origin} is not a valid zoo catalog: {message}")]
    Parse {
        /// Where the text came from.
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// One or more entries break the schema's rules.
    #[error("the catalog has {} problem(s):\n  {}", problems.len(), problems.join("\n  "))]
    Invalid {
        /// One line per problem, each starting with the entry id.
        problems: Vec<String>,
    },
    /// No entry has this id.
    #[error("unknown model id `{id}`{}", suggestion_text(suggestions))]
    UnknownId {
        /// The id asked for.
        id: String,
        /// The closest ids in the catalog.
        suggestions: Vec<String>,
    },
    /// A source kind name that is not hf, pip or npm.
    #[error("unknown source kind `{0}` (expected hf, pip or npm)")]
    UnknownSourceKind(String),
    /// The entry has no source of the kind asked for.
    #[error("model `{id}` has no {kind} source (it has: {available})")]
    NoSuchSource {
        /// The model id.
        id: String,
        /// The kind asked for.
        kind: String,
        /// The kinds it does have.
        available: String,
    },
    /// Every source was tried and failed.
    #[error("could not fetch `{id}`: {}", failures_text(failures))]
    AllSourcesFailed {
        /// The model id.
        id: String,
        /// Each source tried, with why it failed, in the order tried.
        failures: Vec<SourceFailure>,
    },
    /// A file's content does not have the sha256 it should.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        /// The file (name within its source).
        file: String,
        /// The sha256 the catalog (or hub) promised.
        expected: String,
        /// The sha256 of what arrived.
        actual: String,
    },
    /// The entry cannot be compared from its config (a tokenizer, or a required fact missing).
    #[error("cannot compare `{id}`: {reason}")]
    NotComparable {
        /// The model id.
        id: String,
        /// What is missing or why the entry has no architecture to compare.
        reason: String,
    },
    /// The server answered 404.
    #[error("not found (HTTP 404): {url}")]
    NotFound {
        /// The URL asked for.
        url: String,
    },
    /// The server answered another error status.
    #[error("HTTP {status} from {url}")]
    Http {
        /// The URL asked for.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The server could not be reached (refused, DNS, TLS, proxy).
    #[error("cannot connect for {url}: {message}")]
    ConnectionFailed {
        /// The URL asked for.
        url: String,
        /// What the network stack said.
        message: String,
    },
    /// The connection broke during the body; the partial file is kept for resuming.
    #[error("download of {url} was interrupted ({message}); run the fetch again to resume")]
    Interrupted {
        /// The URL asked for.
        url: String,
        /// What the network stack said.
        message: String,
    },
    /// The hub answered in a way the client cannot use (missing headers, bad resume).
    #[error("hub error for {url}: {message}")]
    Hub {
        /// The URL asked for.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A shard index (`*.index.json`) could not be read.
    #[error("shard index {file} is unusable: {message}")]
    BadIndex {
        /// The index file.
        file: String,
        /// What is wrong with it.
        message: String,
    },
    /// An external client (pip, npm) could not be started.
    #[error("cannot run `{command}`: {message}")]
    ToolMissing {
        /// The command line.
        command: String,
        /// Why it did not start.
        message: String,
    },
    /// An external client (pip, npm) ran and failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Tool {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it printed.
        output: String,
    },
    /// The downloaded package does not contain a wanted file.
    #[error("{archive} does not contain {path}")]
    MissingInArchive {
        /// The archive file name.
        archive: String,
        /// The path looked for inside it.
        path: String,
    },
    /// The downloaded package cannot be read as a zip / tar.gz.
    #[error("cannot read archive {archive}: {message}")]
    Archive {
        /// The archive file name.
        archive: String,
        /// What the reader said.
        message: String,
    },
    /// No cache folder could be determined.
    #[error("no cache folder: set ZOO_CACHE (no user cache directory is known on this system)")]
    NoCacheDir,
    /// A local file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One source that failed during a fetch.
#[derive(Debug)]
pub struct SourceFailure {
    /// The source, as `Source::describe` writes it.
    pub source: String,
    /// Why it failed.
    pub error: CatalogError,
}

fn suggestion_text(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        " (`zoo list` shows the catalog)".to_string()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

fn failures_text(failures: &[SourceFailure]) -> String {
    match failures {
        [] => "no source was tried".to_string(),
        [one] => format!("{}: {}", one.source, one.error),
        many => format!(
            "every source failed:{}",
            many.iter()
                .map(|f| format!("\n  - {}: {}", f.source, f.error))
                .collect::<String>()
        ),
    }
}

impl CatalogError {
    /// Shorthand for an I/O error on a path.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CatalogError::Io {
            path: path.into(),
            source,
        }
    }
}
