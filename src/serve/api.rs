//! The HTTP face of `zoo serve`: OpenAI's request and response shapes, errors, streaming.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::oneshot;

use super::engine::{EmbedJob, Event, Failure, Finish, GenJob};
use super::{secs, AppState, EncoderHandle, LmHandle, RequestLog};
use crate::nn::{Message, Sampling};

type Shared = Arc<AppState>;

/// The chat page.
const PAGE: &str = include_str!("page.html");

/// Stop texts one request may give at most (OpenAI's limit).
const MAX_STOPS: usize = 4;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// Counts and logs every request (status, seconds to the response head).
async fn record(
    State(state): State<Shared>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let endpoint = endpoint_label(&path);
    let seconds = secs(start);
    state.metrics.add_request(endpoint, status, seconds);
    if let Some(log) = &state.log {
        log(RequestLog {
            method: method.to_string(),
            path,
            status,
            seconds,
        });
    }
    response
}

/// A fixed label per route (unknown paths share one, so clients cannot grow the metrics).
fn endpoint_label(path: &str) -> &'static str {
    let known = [
        "/",
        "/health",
        "/metrics",
        "/v1/models",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/tokenize",
        "/detokenize",
    ];
    known.into_iter().find(|&k| k == path).unwrap_or("other")
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    fn unknown_model(name: &str, known: &[&str]) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{name}` does not exist; this server has: {}",
                known.join(", ")
            ),
        )
        .param("model")
        .code("model_not_found")
    }

    fn failure(failure: Failure) -> Self {
        match failure {
            Failure::Shutdown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is shutting down",
            )
            .code("shutting_down"),
            Failure::Model(m) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("the model failed: {m}"),
            ),
        }
    }

    fn body(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

fn json_response(value: Value) -> Response {
    axum::Json(value).into_response()
}

/// A body over the limit is read on (and dropped) up to this many bytes before the 413 is sent,
/// so that the client, still sending, receives the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 << 20;

/// The body as JSON: 413 over the size limit, 400 when it is not JSON. At most the limit is kept
/// in memory.
async fn read_json(state: &AppState, body: Body) -> Result<Value, ApiError> {
    use futures_util::StreamExt;
    let limit = state.options.max_body_bytes;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?;
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than {limit} bytes"),
        )
        .code("request_too_large"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))
}

/// A JSON value as a request type, naming what is wrong.
fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad("the request body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad(format!("invalid request: {e}")))
}

fn refuse_when_shutting_down(state: &AppState) -> Result<(), ApiError> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError::failure(Failure::Shutdown));
    }
    Ok(())
}

impl AppState {
    fn known_ids(&self) -> Vec<&str> {
        self.lms
            .iter()
            .map(|m| m.id.as_str())
            .chain(self.encoders.iter().map(|e| e.id.as_str()))
            .collect()
    }

    /// The causal LM a request names (or the only one, when it names none).
    fn lm(&self, name: Option<&str>) -> Result<&LmHandle, ApiError> {
        match name {
            Some(name) => {
                if let Some(m) = self.lms.iter().find(|m| m.id == name) {
                    return Ok(m);
                }
                if self.encoders.iter().any(|e| e.id == name) {
                    return Err(ApiError::bad(format!(
                        "`{name}` is an embedding model: use /v1/embeddings"
                    ))
                    .param("model"));
                }
                Err(ApiError::unknown_model(name, &self.known_ids()))
            }
            None if self.lms.len() == 1 => Ok(&self.lms[0]),
            None => Err(ApiError::bad("name the model (`model`)").param("model")),
        }
    }

    /// The encoder a request names (or the only one, when it names none).
    fn encoder(&self, name: Option<&str>) -> Result<&EncoderHandle, ApiError> {
        match name {
            Some(name) => {
                if let Some(e) = self.encoders.iter().find(|e| e.id == name) {
                    return Ok(e);
                }
                if self.lms.iter().any(|m| m.id == name) {
                    return Err(ApiError::bad(format!(
                        "`{name}` is a causal language model, not an embedding model"
                    ))
                    .param("model"));
                }
                Err(ApiError::unknown_model(name, &self.known_ids()))
            }
            None if self.encoders.len() == 1 => Ok(&self.encoders[0]),
            None => Err(ApiError::bad("name the model (`model`)").param("model")),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Small endpoints

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no endpoint {method} {}", uri.path()),
    )
}

async fn health(State(state): State<Shared>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting down"})),
        )
            .into_response();
    }
    json_response(json!({"status": "ok"}))
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.gauges()),
    )
        .into_response()
}

async fn models(State(state): State<Shared>) -> Response {
    let mut data: Vec<Value> = state
        .lms
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": state.created,
                "owned_by": "burn-zoo",
                "zoo": {
                    "kind": "causal-lm",
                    "chat": m.text.chat_format.is_some(),
                    "context_length": m.text.context,
                    "slots": m.shared.slots,
                },
            })
        })
        .collect();
    data.extend(state.encoders.iter().map(|e| {
        json!({
            "id": e.id,
            "object": "model",
            "created": state.created,
            "owned_by": "burn-zoo",
            "zoo": {"kind": "encoder", "dimensions": e.dim},
        })
    }));
    json_response(json!({"object": "list", "data": data}))
}

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    model: Option<String>,
    content: String,
    #[serde(default = "yes")]
    add_special: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    model: Option<String>,
    tokens: Vec<u32>,
}

/// The tokenizer a `/tokenize` or `/detokenize` request names (default: the first model).
fn tokenizer_for<'a>(
    state: &'a AppState,
    name: Option<&str>,
) -> Result<(&'a crate::nn::TextTokenizer, Option<&'a LmHandle>), ApiError> {
    match name {
        None => match (state.lms.first(), state.encoders.first()) {
            (Some(m), _) => Ok((&m.text.tokenizer, Some(m))),
            (None, Some(e)) => Ok((&e.tokenizer, None)),
            (None, None) => Err(ApiError::bad("no model is loaded")),
        },
        Some(name) => {
            if let Some(m) = state.lms.iter().find(|m| m.id == name) {
                return Ok((&m.text.tokenizer, Some(m)));
            }
            if let Some(e) = state.encoders.iter().find(|e| e.id == name) {
                return Ok((&e.tokenizer, None));
            }
            Err(ApiError::unknown_model(name, &state.known_ids()))
        }
    }
}

async fn tokenize(State(state): State<Shared>, body: Body) -> Response {
    let result: Result<Response, ApiError> = async {
        let req: TokenizeRequest = parse(read_json(&state, body).await?)?;
        let (tokenizer, lm) = tokenizer_for(&state, req.model.as_deref())?;
        let tokens = match (lm, req.add_special) {
            // What a completion's prompt becomes.
            (Some(m), true) if !req.content.is_empty() => {
                m.text.encoding.encode(tokenizer, &req.content)
            }
            _ => tokenizer
                .encode(&req.content, req.add_special)
                .map_err(Into::into),
        }
        .map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(json_response(json!({ "tokens": tokens })))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn detokenize(State(state): State<Shared>, body: Body) -> Response {
    let result: Result<Response, ApiError> = async {
        let req: DetokenizeRequest = parse(read_json(&state, body).await?)?;
        let (tokenizer, _) = tokenizer_for(&state, req.model.as_deref())?;
        let vocab = tokenizer.vocab_size();
        if let Some(&id) = req.tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(ApiError::bad(format!(
                "token id {id} is outside the vocabulary of {vocab} tokens"
            ))
            .param("tokens"));
        }
        let content = tokenizer
            .decode(&req.tokens, false)
            .map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(json_response(json!({ "content": content })))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------------
// Generation

/// `stop`: one text or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The generation settings chat and completions share.
#[derive(Debug, Default, Deserialize)]
struct GenParams {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<i64>,
    stop: Option<Stop>,
    n: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// An extension that llama.cpp's server and vLLM take under the same name: generate past
    /// the model's end-of-turn / end-of-text ids until `max_tokens` (or a `stop` text), as
    /// benchmarks do to compare servers at equal lengths.
    ignore_eos: Option<bool>,
}

/// Content: a string, or a list of parts of which the text parts are read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    params: GenParams,
}

/// A completion prompt: a text, a list of one text, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Prompt,
    #[serde(flatten)]
    params: GenParams,
}

/// What a generation request asks for, checked.
struct Checked {
    max_tokens: usize,
    sampling: Sampling,
    stops: Vec<String>,
    stream: bool,
    include_usage: bool,
}

fn check_params(
    state: &AppState,
    lm: &LmHandle,
    p: &GenParams,
    prompt_len: usize,
) -> Result<Checked, ApiError> {
    if let Some(n) = p.n {
        if n != 1 {
            return Err(ApiError::bad(format!("only n = 1 is supported, got {n}")).param("n"));
        }
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad(format!(
            "temperature must be between 0 and 2, got {temperature}"
        ))
        .param("temperature"));
    }
    if let Some(top_p) = p.top_p {
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(
                ApiError::bad(format!("top_p must be in (0, 1], got {top_p}")).param("top_p"),
            );
        }
    }
    let asked = p.max_completion_tokens.or(p.max_tokens);
    if let Some(m) = asked {
        if m < 1 {
            return Err(
                ApiError::bad(format!("max_tokens must be at least 1, got {m}"))
                    .param("max_tokens"),
            );
        }
    }
    let context = lm.text.context;
    if prompt_len >= context {
        return Err(ApiError::bad(format!(
            "the prompt has {prompt_len} tokens; the model's context is {context} tokens"
        ))
        .param("messages")
        .code("context_length_exceeded"));
    }
    let room = context - prompt_len;
    let max_tokens = match asked {
        Some(m) if m as u64 > room as u64 => {
            return Err(ApiError::bad(format!(
                "the prompt has {prompt_len} tokens and max_tokens is {m}: together more than the model's context of {context} tokens"
            ))
            .param("max_tokens")
            .code("context_length_exceeded"))
        }
        Some(m) => m as usize,
        None => room.min(state.options.default_max_tokens),
    };
    let stops = match &p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stops.len() > MAX_STOPS || stops.iter().any(String::is_empty) {
        return Err(
            ApiError::bad(format!("stop takes up to {MAX_STOPS} non-empty texts")).param("stop"),
        );
    }
    let seed = match p.seed {
        Some(s) => s as u64,
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ state.next_id().wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }
    };
    let sampling = Sampling {
        greedy: temperature == 0.0,
        temperature: if temperature == 0.0 {
            1.0
        } else {
            temperature as f32
        },
        top_k: None,
        top_p: p.top_p.filter(|&t| t < 1.0).map(|t| t as f32),
        repeat_penalty: 1.0,
        seed,
    };
    sampling
        .validate()
        .map_err(|e| ApiError::bad(e).param("temperature"))?;
    Ok(Checked {
        max_tokens,
        sampling,
        stops,
        stream: p.stream.unwrap_or(false),
        include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// Hands a job to the model's worker: 429 when its queue is full.
fn submit(state: &AppState, lm: &LmHandle, job: GenJob) -> Result<(), ApiError> {
    refuse_when_shutting_down(state)?;
    let waiting = lm.shared.waiting.fetch_add(1, Ordering::SeqCst);
    if waiting >= state.options.queue {
        lm.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "{} requests are already waiting for {}: try again later",
                state.options.queue, lm.id
            ),
        )
        .code("queue_full"));
    }
    lm.jobs.send(job).map_err(|_| {
        lm.shared.waiting.fetch_sub(1, Ordering::SeqCst);
        ApiError::failure(Failure::Shutdown)
    })
}

/// Which OpenAI object a generation answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

/// What every chunk and response of one request repeats.
struct Reply {
    endpoint: Endpoint,
    id: String,
    model: String,
    created: u64,
}

impl Reply {
    fn new(state: &AppState, endpoint: Endpoint, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            endpoint,
            id: format!("{prefix}-{}", state.next_id()),
            model: model.to_string(),
            created,
        }
    }

    fn usage(finish: &Finish) -> Value {
        json!({
            "prompt_tokens": finish.prompt_tokens,
            "completion_tokens": finish.completion_tokens,
            "total_tokens": finish.prompt_tokens + finish.completion_tokens,
        })
    }

    fn object(&self, stream: bool) -> &'static str {
        match (self.endpoint, stream) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// The whole answer.
    fn complete(&self, text: &str, finish: &Finish) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text.trim()},
                "logprobs": null,
                "finish_reason": finish.reason.as_str(),
            }),
            Endpoint::Completion => json!({
                "index": 0,
                "text": text,
                "logprobs": null,
                "finish_reason": finish.reason.as_str(),
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": Self::usage(finish),
        })
    }

    /// One streamed chunk: a piece of text, the role (chat's first chunk) or the finish.
    fn chunk(&self, text: Option<&str>, first: bool, finish: Option<&Finish>) -> Value {
        let reason = finish.map(|f| f.reason.as_str());
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = match (first, text) {
                    (true, _) => json!({"role": "assistant", "content": ""}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason})
            }
            Endpoint::Completion => json!({
                "index": 0,
                "text": text.unwrap_or(""),
                "logprobs": null,
                "finish_reason": reason,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The usage chunk (`stream_options.include_usage`): no choices.
    fn usage_chunk(&self, finish: &Finish) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": Self::usage(finish),
        })
    }
}

/// Waits for the whole answer.
async fn collect(mut events: UnboundedReceiver<Event>) -> Result<(String, Finish), ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done(finish) => return Ok((text, finish)),
            Event::Failed(f) => return Err(ApiError::failure(f)),
        }
    }
    Err(ApiError::failure(Failure::Model(
        "the worker stopped without an answer".into(),
    )))
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The answer as server-sent events, ending with `data: [DONE]`. Dropping the body (the client
/// went away) drops the receiver, which cancels the generation.
fn stream_response(
    reply: Reply,
    events: UnboundedReceiver<Event>,
    include_usage: bool,
) -> Response {
    struct St {
        reply: Reply,
        events: UnboundedReceiver<Event>,
        pending: VecDeque<Bytes>,
        ended: bool,
        include_usage: bool,
    }
    let mut pending = VecDeque::new();
    if reply.endpoint == Endpoint::Chat {
        pending.push_back(sse(&reply.chunk(None, true, None)));
    }
    let st = St {
        reply,
        events,
        pending,
        ended: false,
        include_usage,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok::<Bytes, Infallible>(frame), st));
            }
            if st.ended {
                return None;
            }
            match st.events.recv().await {
                Some(Event::Text(t)) => {
                    st.pending
                        .push_back(sse(&st.reply.chunk(Some(&t), false, None)));
                }
                Some(Event::Done(finish)) => {
                    st.pending
                        .push_back(sse(&st.reply.chunk(None, false, Some(&finish))));
                    if st.include_usage {
                        st.pending.push_back(sse(&st.reply.usage_chunk(&finish)));
                    }
                    st.pending
                        .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    st.ended = true;
                }
                Some(Event::Failed(f)) => {
                    st.pending.push_back(sse(&ApiError::failure(f).body()));
                    st.pending
                        .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    st.ended = true;
                }
                None => {
                    let e = ApiError::failure(Failure::Model(
                        "the worker stopped without an answer".into(),
                    ));
                    st.pending.push_back(sse(&e.body()));
                    st.pending
                        .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    st.ended = true;
                }
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Runs a checked generation and answers (whole, or streamed).
fn generate(
    state: &AppState,
    lm: &LmHandle,
    endpoint: Endpoint,
    prompt: Vec<u32>,
    stop_ids: Vec<u32>,
    params: &GenParams,
) -> Result<(Reply, UnboundedReceiver<Event>, Checked), ApiError> {
    let vocab = lm.text.vocab;
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(ApiError::bad(format!(
            "token id {id} is outside the vocabulary of {vocab} tokens"
        ))
        .param("prompt"));
    }
    if prompt.is_empty() {
        return Err(ApiError::bad("the prompt is empty").param("prompt"));
    }
    let checked = check_params(state, lm, params, prompt.len())?;
    let stop_ids = if params.ignore_eos == Some(true) {
        Vec::new()
    } else {
        stop_ids
    };
    let (tx, rx) = unbounded_channel();
    let job = GenJob {
        prompt,
        max_tokens: checked.max_tokens,
        sampling: checked.sampling.clone(),
        stop_ids,
        stop_texts: checked.stops.clone(),
        events: tx,
        received: Instant::now(),
    };
    submit(state, lm, job)?;
    Ok((Reply::new(state, endpoint, &lm.id), rx, checked))
}

async fn answer(reply: Reply, events: UnboundedReceiver<Event>, checked: Checked) -> Response {
    if checked.stream {
        return stream_response(reply, events, checked.include_usage);
    }
    match collect(events).await {
        Ok((text, finish)) => json_response(reply.complete(&text, &finish)),
        Err(e) => e.into_response(),
    }
}

async fn chat(State(state): State<Shared>, body: Body) -> Response {
    let result: Result<Response, ApiError> = async {
        refuse_when_shutting_down(&state)?;
        let req: ChatRequest = parse(read_json(&state, body).await?)?;
        let lm = state.lm(req.model.as_deref())?;
        if req.messages.is_empty() {
            return Err(ApiError::bad("messages is empty").param("messages"));
        }
        let mut messages = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::bad(format!(
                        "unsupported role `{other}`: use system, user or assistant"
                    ))
                    .param("messages"))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::bad(format!(
                                    "content parts of type `{kind}` are not supported: give text"
                                ))
                                .param("messages"))
                            }
                        }
                    }
                    text
                }
            };
            messages.push(Message::new(role, &content));
        }
        let format = lm.text.chat_format.as_deref().ok_or_else(|| {
            ApiError::bad(format!(
                "{} has no chat template: use /v1/completions, or start the server with --template",
                lm.id
            ))
            .param("model")
        })?;
        let prompt = format
            .prompt_ids(&messages, &lm.text.tokenizer)
            .map_err(|e| ApiError::bad(e.to_string()).param("messages"))?;
        let (reply, events, checked) = generate(
            &state,
            lm,
            Endpoint::Chat,
            prompt,
            lm.text.chat_stop_ids.clone(),
            &req.params,
        )?;
        Ok(answer(reply, events, checked).await)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(state): State<Shared>, body: Body) -> Response {
    let result: Result<Response, ApiError> = async {
        refuse_when_shutting_down(&state)?;
        let req: CompletionRequest = parse(read_json(&state, body).await?)?;
        let lm = state.lm(req.model.as_deref())?;
        let text = match &req.prompt {
            Prompt::Text(t) => Some(t.as_str()),
            Prompt::Texts(v) if v.len() == 1 => Some(v[0].as_str()),
            Prompt::Texts(_) => {
                return Err(
                    ApiError::bad("give one prompt (a batch of prompts needs n requests)")
                        .param("prompt"),
                )
            }
            Prompt::Ids(_) => None,
        };
        let prompt = match (text, &req.prompt) {
            (Some(t), _) => lm
                .text
                .encoding
                .encode(&lm.text.tokenizer, t)
                .map_err(|e| ApiError::bad(e.to_string()).param("prompt"))?,
            (None, Prompt::Ids(ids)) => ids.clone(),
            (None, _) => Vec::new(),
        };
        let (reply, events, checked) = generate(
            &state,
            lm,
            Endpoint::Completion,
            prompt,
            lm.text.eos_ids.clone(),
            &req.params,
        )?;
        Ok(answer(reply, events, checked).await)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: Option<String>,
    input: Input,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
}

/// Standard base64 (RFC 4648, with padding) of little-endian f32 values: what OpenAI's
/// `encoding_format: "base64"` returns and its client decodes.
fn base64_f32(values: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn embeddings(State(state): State<Shared>, body: Body) -> Response {
    let result: Result<Response, ApiError> = async {
        refuse_when_shutting_down(&state)?;
        let req: EmbeddingRequest = parse(read_json(&state, body).await?)?;
        let encoder = state.encoder(req.model.as_deref())?;
        let texts = match req.input {
            Input::One(t) => vec![t],
            Input::Many(v) => v,
        };
        if texts.is_empty() {
            return Err(ApiError::bad("input is empty").param("input"));
        }
        let limit = state.options.max_embedding_inputs;
        if texts.len() > limit {
            return Err(ApiError::bad(format!(
                "input has {} texts; at most {limit} per request",
                texts.len()
            ))
            .param("input"));
        }
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "encoding_format must be float or base64, got {other}"
                ))
                .param("encoding_format"))
            }
        };
        if let Some(d) = req.dimensions {
            if d != encoder.dim as i64 {
                return Err(ApiError::bad(format!(
                    "{} gives {}-dimensional embeddings; dimensions cannot change it",
                    encoder.id, encoder.dim
                ))
                .param("dimensions"));
            }
        }
        refuse_when_shutting_down(&state)?;
        let waiting = encoder.shared.waiting.fetch_add(1, Ordering::SeqCst);
        if waiting >= state.options.queue {
            encoder.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!("too many requests are waiting for {}", encoder.id),
            )
            .code("queue_full"));
        }
        let (tx, rx) = oneshot::channel();
        if encoder.jobs.send(EmbedJob { texts, reply: tx }).is_err() {
            encoder.shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::failure(Failure::Shutdown));
        }
        let (vectors, tokens) = match rx.await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(ApiError::failure(Failure::Model(e))),
            Err(_) => return Err(ApiError::failure(Failure::Shutdown)),
        };
        let data: Vec<Value> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = if base64 {
                    json!(base64_f32(v))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": i, "embedding": embedding})
            })
            .collect();
        Ok(json_response(json!({
            "object": "list",
            "data": data,
            "model": encoder.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::base64_f32;

    #[test]
    fn base64_matches_rfc_4648() {
        // 1.0f32 = 00 00 80 3f; 2.5 = 00 00 20 40.
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.5]), "AACAPwAAIEA=");
        assert_eq!(base64_f32(&[]), "");
    }
}
