//! An OpenAI-compatible HTTP server over the zoo's models (`zoo serve`).
//!
//! [`Server::load`] opens each model once, on its own worker thread (see [`engine`]): causal
//! LMs through [`crate::open_with`], BERT / sentence-transformers encoders through
//! [`crate::bert::SentenceEncoder`]. [`Server::run`] answers on a listener until the shutdown
//! future completes:
//!
//! - `POST /v1/chat/completions` (the model's chat format; `stream: true` as server-sent
//!   events ending with `data: [DONE]`), `POST /v1/completions`, `POST /v1/embeddings`,
//!   `GET /v1/models`;
//! - `GET /health`, `GET /metrics` (Prometheus text), `POST /tokenize`, `POST /detokenize`;
//! - `GET /`: a chat page.
//!
//! Errors have OpenAI's JSON shape (`{"error": {"message", "type", "param", "code"}}`) and a
//! 4xx status for what the client sent wrong. Request bodies are limited in size, the queue of
//! each model is bounded (over it: 429), and at most `parallel` sequences per model run at once,
//! decoded together one token per step.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use burn_zoo::serve::{ModelKind, ModelSpec, ServeOptions, Server};
//! let options = ServeOptions::new(burn_zoo::backends::BackendKind::Flex);
//! let spec = ModelSpec::new("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), ModelKind::Causal);
//! let server = Server::load(options, vec![spec])?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod api;
mod engine;
mod metrics;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use zoo_backends::{with_backend, BackendKind};

use crate::bert::SentenceEncoder;
use crate::nn::{ChatFormat, Template, TemplateFormat, TextEncoding, TextTokenizer, WeightFormat};
use crate::Error;
use engine::{EmbedJob, GenJob, WorkerShared};
use metrics::{Metrics, ModelGauges};

/// What kind of model a [`ModelSpec`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A causal LM (chat and completions).
    Causal,
    /// A BERT / sentence-transformers encoder (embeddings).
    Encoder,
}

impl ModelKind {
    /// `causal-lm` or `encoder`.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Causal => "causal-lm",
            ModelKind::Encoder => "encoder",
        }
    }
}

/// One model to serve.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The id clients name it by (`model` in requests).
    pub id: String,
    /// A model folder or `.gguf` file.
    pub path: PathBuf,
    /// Causal LM or encoder.
    pub kind: ModelKind,
    /// How the weights are kept in memory.
    pub format: WeightFormat,
    /// A chat template for a causal LM.
    pub template: Option<Template>,
    /// Whether `template` replaces the checkpoint's own format (else it is used only when the
    /// checkpoint has none).
    pub template_overrides: bool,
}

impl ModelSpec {
    /// A model served as `id`, its weights as stored, its own chat format.
    pub fn new(id: &str, path: &Path, kind: ModelKind) -> Self {
        Self {
            id: id.to_string(),
            path: path.to_path_buf(),
            kind,
            format: WeightFormat::AS_STORED,
            template: None,
            template_overrides: false,
        }
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The backend every model runs on.
    pub backend: BackendKind,
    /// Sequences of one model decoded together at most (slots).
    pub parallel: usize,
    /// Requests per model that may wait for a slot; more are refused with 429.
    pub queue: usize,
    /// New tokens of a request that gives no `max_tokens` (at most what the context leaves).
    pub default_max_tokens: usize,
    /// Largest request body, in bytes; larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Texts one embeddings request may carry at most.
    pub max_embedding_inputs: usize,
}

impl ServeOptions {
    /// The defaults: 4 slots, 64 waiting requests, 512 new tokens, 1 MiB bodies, 256 texts.
    pub fn new(backend: BackendKind) -> Self {
        Self {
            backend,
            parallel: 4,
            queue: 64,
            default_max_tokens: 512,
            max_body_bytes: 1 << 20,
            max_embedding_inputs: 256,
        }
    }
}

/// One line per answered request, for the program that runs the server to show (the library
/// never prints).
#[derive(Debug, Clone)]
pub struct RequestLog {
    /// `POST`, `GET`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// Seconds to the response head.
    pub seconds: f64,
}

/// The text side of a causal LM, kept outside its worker so that prompts are built and
/// checked without waiting for the model.
#[derive(Debug)]
pub(crate) struct LmText {
    pub tokenizer: TextTokenizer,
    pub encoding: TextEncoding,
    pub chat_format: Option<Arc<dyn ChatFormat>>,
    pub eos_ids: Vec<u32>,
    pub chat_stop_ids: Vec<u32>,
    pub context: usize,
    pub vocab: usize,
}

/// A loaded causal LM: its worker's queue and its text side.
#[derive(Debug)]
pub(crate) struct LmHandle {
    pub id: String,
    pub jobs: Sender<GenJob>,
    pub shared: Arc<WorkerShared>,
    pub text: LmText,
}

/// A loaded encoder: its worker's queue and tokenizer.
#[derive(Debug)]
pub(crate) struct EncoderHandle {
    pub id: String,
    pub jobs: Sender<EmbedJob>,
    pub shared: Arc<WorkerShared>,
    pub tokenizer: TextTokenizer,
    pub dim: usize,
}

/// Everything the request handlers share.
pub(crate) struct AppState {
    pub lms: Vec<LmHandle>,
    pub encoders: Vec<EncoderHandle>,
    pub options: ServeOptions,
    pub metrics: Arc<Metrics>,
    pub shutting_down: Arc<AtomicBool>,
    pub next_id: AtomicU64,
    pub created: u64,
    pub log: Option<Arc<dyn Fn(RequestLog) + Send + Sync>>,
}

impl AppState {
    pub(crate) fn gauges(&self) -> Vec<ModelGauges> {
        let gauge = |id: &str, s: &WorkerShared| ModelGauges {
            id: id.to_string(),
            waiting: s.waiting.load(Ordering::SeqCst),
            active: s.active.load(Ordering::SeqCst),
            slots: s.slots,
        };
        self.lms
            .iter()
            .map(|m| gauge(&m.id, &m.shared))
            .chain(self.encoders.iter().map(|e| gauge(&e.id, &e.shared)))
            .collect()
    }
}

/// Loaded models ready to answer: see the [module documentation](self).
pub struct Server {
    state: Arc<AppState>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("models", &self.models())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens every model on its worker thread (in order; the first failure is returned).
    pub fn load(options: ServeOptions, specs: Vec<ModelSpec>) -> Result<Self, Error> {
        if options.parallel == 0 || options.queue == 0 || options.default_max_tokens == 0 {
            return Err(Error::Input(
                "parallel slots, queue length and default max tokens must be at least 1".into(),
            ));
        }
        if specs.is_empty() {
            return Err(Error::Input("give at least one model to serve".into()));
        }
        let mut ids: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Input(format!(
                "two models have the id `{}`: give each model once",
                w[0]
            )));
        }
        let metrics = Arc::new(Metrics::default());
        let shutting_down = Arc::new(AtomicBool::new(false));
        let mut lms = Vec::new();
        let mut encoders = Vec::new();
        let mut threads = Vec::new();
        for spec in specs {
            let shared = Arc::new(WorkerShared {
                slots: match spec.kind {
                    ModelKind::Causal => options.parallel,
                    ModelKind::Encoder => 1,
                },
                waiting: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                shutting_down: shutting_down.clone(),
                metrics: metrics.clone(),
            });
            match spec.kind {
                ModelKind::Causal => {
                    let (handle, thread) = load_lm(options.backend, spec, shared)?;
                    lms.push(handle);
                    threads.push(thread);
                }
                ModelKind::Encoder => {
                    let (handle, thread) = load_encoder(options.backend, spec, shared)?;
                    encoders.push(handle);
                    threads.push(thread);
                }
            }
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            state: Arc::new(AppState {
                lms,
                encoders,
                options,
                metrics,
                shutting_down,
                next_id: AtomicU64::new(1),
                created,
                log: None,
            }),
            threads: Mutex::new(threads),
        })
    }

    /// Calls `log` once per answered request (before [`Server::run`]).
    pub fn on_request(&mut self, log: impl Fn(RequestLog) + Send + Sync + 'static) {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.log = Some(Arc::new(log));
        }
    }

    /// The served models: id and kind.
    pub fn models(&self) -> Vec<(String, ModelKind)> {
        self.state
            .lms
            .iter()
            .map(|m| (m.id.clone(), ModelKind::Causal))
            .chain(
                self.state
                    .encoders
                    .iter()
                    .map(|e| (e.id.clone(), ModelKind::Encoder)),
            )
            .collect()
    }

    /// Answers on `listener` until `shutdown` completes; then in-flight generations are
    /// cancelled (their clients get an error event or a 503), open connections are closed and
    /// the worker threads end.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let flag = self.state.shutting_down.clone();
        let router = api::router(self.state.clone());
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                flag.store(true, Ordering::SeqCst);
            })
            .await;
        self.state.shutting_down.store(true, Ordering::SeqCst);
        let Server { state, threads } = self;
        // The workers end when their job channels close, i.e. when the last state is dropped.
        drop(state);
        let threads = std::mem::take(&mut *threads.lock().unwrap_or_else(|e| e.into_inner()));
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .map_err(std::io::Error::other)?;
        result
    }
}

fn load_lm(
    kind: BackendKind,
    spec: ModelSpec,
    shared: Arc<WorkerShared>,
) -> Result<(LmHandle, JoinHandle<()>), Error> {
    let (jobs_tx, jobs_rx) = channel::<GenJob>();
    let (ready_tx, ready_rx) = channel::<Result<LmText, String>>();
    let worker_shared = shared.clone();
    let ModelSpec {
        id,
        path,
        format,
        template,
        template_overrides,
        ..
    } = spec;
    let thread = std::thread::Builder::new()
        .name(format!("zoo-serve {id}"))
        .spawn(move || {
            let outcome = with_backend!(kind, |B, device| {
                match crate::open_with::<B>(&path, &device, format) {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                    Ok(mut lm) => {
                        if let Some(t) = template {
                            if template_overrides || lm.chat_format.is_none() {
                                lm.set_chat_format(Arc::new(TemplateFormat::new(t, None)));
                            }
                        }
                        match lm.tokenizer.clone() {
                            None => {
                                let _ = ready_tx.send(Err(format!(
                                    "{} has no tokenizer: the server needs one to read and write text",
                                    path.display()
                                )));
                            }
                            Some(tokenizer) => {
                                let text = LmText {
                                    tokenizer: tokenizer.clone(),
                                    encoding: lm.encoding.clone(),
                                    chat_format: lm.chat_format.clone(),
                                    eos_ids: lm.eos_ids.clone(),
                                    chat_stop_ids: lm.chat_stop_ids(),
                                    context: lm.context_length(),
                                    vocab: crate::nn::CausalLm::vocab_size(&lm.model),
                                };
                                if ready_tx.send(Ok(text)).is_ok() {
                                    engine::run_lm(&lm, &tokenizer, jobs_rx, &worker_shared);
                                }
                            }
                        }
                    }
                }
            });
            if let Err(e) = outcome {
                let _ = ready_tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| Error::Input(format!("starting a worker thread: {e}")))?;
    let text = ready_rx
        .recv()
        .map_err(|_| Error::Input(format!("{id}: the model's worker stopped while loading")))?
        .map_err(|e| Error::Input(format!("{id}: {e}")))?;
    Ok((
        LmHandle {
            id,
            jobs: jobs_tx,
            shared,
            text,
        },
        thread,
    ))
}

fn load_encoder(
    kind: BackendKind,
    spec: ModelSpec,
    shared: Arc<WorkerShared>,
) -> Result<(EncoderHandle, JoinHandle<()>), Error> {
    let (jobs_tx, jobs_rx) = channel::<EmbedJob>();
    let (ready_tx, ready_rx) = channel::<Result<(TextTokenizer, usize), String>>();
    let worker_shared = shared.clone();
    let ModelSpec {
        id, path, format, ..
    } = spec;
    let thread = std::thread::Builder::new()
        .name(format!("zoo-serve {id}"))
        .spawn(move || {
            let outcome = with_backend!(kind, |B, device| {
                match SentenceEncoder::<B>::load_with(&path, &device, format) {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                    Ok(encoder) => {
                        let ready = (encoder.tokenizer().clone(), encoder.dim());
                        if ready_tx.send(Ok(ready)).is_ok() {
                            engine::run_encoder(&encoder, jobs_rx, &worker_shared);
                        }
                    }
                }
            });
            if let Err(e) = outcome {
                let _ = ready_tx.send(Err(e.to_string()));
            }
        })
        .map_err(|e| Error::Input(format!("starting a worker thread: {e}")))?;
    let (tokenizer, dim) = ready_rx
        .recv()
        .map_err(|_| Error::Input(format!("{id}: the model's worker stopped while loading")))?
        .map_err(|e| Error::Input(format!("{id}: {e}")))?;
    Ok((
        EncoderHandle {
            id,
            jobs: jobs_tx,
            shared,
            tokenizer,
            dim,
        },
        thread,
    ))
}

/// Seconds since `start`.
pub(crate) fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
