//! The decoding engine of `zoo serve`: one worker thread per loaded model owns the module and
//! schedules its requests.
//!
//! A causal LM's worker keeps up to `slots` sequences running, each with its own KV cache.
//! New requests are prefilled on their own as soon as a slot is free; then one step decodes one
//! token for every running sequence — for the LLaMA family in one batched forward pass
//! ([`crate::llama::Llama::decode_step`]: the weights are read once per step for all
//! sequences), for the other families one sequence after the other in the same loop. A
//! finished sequence frees its slot at once; a request whose client went away (its event
//! receiver dropped) is cancelled before the next step.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::bert::SentenceEncoder;
use crate::lm::{CausalCache, CausalModel, LanguageModel};
use crate::nn::{ids_tensor, CausalLm, Logits, Sampler, Sampling, TextStream, TextTokenizer};

/// How long an idle worker waits for work before it looks at the shutdown flag again.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// One generation request, as the HTTP layer hands it to a model's worker.
#[derive(Debug)]
pub(crate) struct GenJob {
    /// Prompt ids (checked against the vocabulary and the context by the HTTP layer).
    pub prompt: Vec<u32>,
    /// New tokens at most (prompt + this fits the context).
    pub max_tokens: usize,
    /// Checked sampling settings.
    pub sampling: Sampling,
    /// Ids that end the answer (not shown).
    pub stop_ids: Vec<u32>,
    /// Texts that end the answer (not shown).
    pub stop_texts: Vec<String>,
    /// Where the text goes; dropped by the HTTP layer when the client disconnects.
    pub events: UnboundedSender<Event>,
    /// When the request arrived (time to first token, generation time).
    pub received: Instant,
}

/// What a worker tells the HTTP layer about one request.
#[derive(Debug)]
pub(crate) enum Event {
    /// A piece of the answer.
    Text(String),
    /// The answer is complete.
    Done(Finish),
    /// The request failed or was cancelled.
    Failed(Failure),
}

/// Why a request ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server is shutting down.
    Shutdown,
    /// The model failed (the message says how).
    Model(String),
}

/// How an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finish {
    /// Stop id or stop text (`stop`), or the token limit (`length`).
    pub reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (a final stop id included).
    pub completion_tokens: usize,
}

/// OpenAI's `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishReason {
    /// A stop id or a stop text.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// The name OpenAI's API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the HTTP layer and a worker share: the queue and slot counters, the shutdown flag.
#[derive(Debug)]
pub(crate) struct WorkerShared {
    /// Sequences decoded together at most.
    pub slots: usize,
    /// Requests handed over but not started yet.
    pub waiting: AtomicUsize,
    /// Sequences running now.
    pub active: AtomicUsize,
    /// Set once by the server on SIGTERM / Ctrl-C: in-flight work is cancelled.
    pub shutting_down: Arc<AtomicBool>,
    /// Counters of the whole server.
    pub metrics: Arc<Metrics>,
}

/// One running sequence.
struct Seq<B: Backend> {
    job: GenJob,
    cache: CausalCache<B>,
    sampler: Sampler,
    history: Vec<u32>,
    stream: TextStream,
    stop: StopText,
    generated: usize,
    last: u32,
}

impl<B: Backend> Seq<B> {
    /// Takes the chosen id `id`: streams its text, and says whether the sequence is finished.
    fn accept(&mut self, tokenizer: &TextTokenizer, id: u32, metrics: &Metrics) -> bool {
        self.history.push(id);
        self.generated += 1;
        self.last = id;
        metrics.add_generated(1);
        if self.generated == 1 {
            metrics
                .time_to_first_token
                .observe(self.job.received.elapsed().as_secs_f64());
        }
        if self.job.stop_ids.contains(&id) {
            self.finish(FinishReason::Stop, metrics);
            return true;
        }
        match self.stream.push(tokenizer, id) {
            Ok(Some(piece)) => {
                let (text, hit) = self.stop.push(&piece);
                if !text.is_empty() {
                    let _ = self.job.events.send(Event::Text(text));
                }
                if hit {
                    self.finish(FinishReason::Stop, metrics);
                    return true;
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = self
                    .job
                    .events
                    .send(Event::Failed(Failure::Model(e.to_string())));
                return true;
            }
        }
        if self.generated >= self.job.max_tokens {
            let rest = self.stop.flush();
            if !rest.is_empty() {
                let _ = self.job.events.send(Event::Text(rest));
            }
            self.finish(FinishReason::Length, metrics);
            return true;
        }
        false
    }

    fn finish(&self, reason: FinishReason, metrics: &Metrics) {
        metrics
            .generation_seconds
            .observe(self.job.received.elapsed().as_secs_f64());
        let _ = self.job.events.send(Event::Done(Finish {
            reason,
            prompt_tokens: self.job.prompt.len(),
            completion_tokens: self.generated,
        }));
    }
}

/// Holds back streamed text that may be the start of a stop text, and cuts the answer where a
/// stop text appears (OpenAI's `stop`: the stop text itself is not returned).
#[derive(Debug, Default)]
pub(crate) struct StopText {
    stops: Vec<String>,
    pending: String,
}

impl StopText {
    /// A matcher for these stop texts (none: text passes through).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds a piece; returns the text that can be shown now and whether a stop text appeared.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.pending.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is the start of a stop text.
        let mut keep = 0;
        for stop in &self.stops {
            for k in (1..stop.len()).rev() {
                if k <= keep || k > self.pending.len() {
                    continue;
                }
                let start = self.pending.len() - k;
                if stop.is_char_boundary(k)
                    && self.pending.is_char_boundary(start)
                    && self.pending[start..] == stop[..k]
                {
                    keep = k;
                    break;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The text held back (at the end of the answer).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// The last row of `[1, t, vocab]` logits.
fn last_row<B: Backend>(logits: Tensor<B, 3>) -> Result<Vec<f32>, String> {
    let [_, t, vocab] = logits.dims();
    logits
        .slice([0..1, t - 1..t, 0..vocab])
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| format!("reading the logits from the device: {e:?}"))
}

/// One decoding step for every running sequence: the logits row of each, in order.
fn step<B: Backend>(model: &CausalModel<B>, seqs: &mut [Seq<B>]) -> Result<Vec<Vec<f32>>, String> {
    if let (CausalModel::Llama(m), true) = (model, seqs.len() > 1) {
        let ids: Vec<u32> = seqs.iter().map(|s| s.last).collect();
        let mut caches = Vec::with_capacity(seqs.len());
        for s in seqs.iter_mut() {
            match &mut s.cache {
                CausalCache::Llama(c) => caches.push(c),
                _ => return Err("the cache belongs to another model family".into()),
            }
        }
        let logits = m
            .decode_step(&ids, &mut caches)
            .map_err(|e| e.to_string())?;
        let [n, vocab] = logits.dims();
        let values: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| format!("reading the logits from the device: {e:?}"))?;
        return Ok((0..n)
            .map(|i| values[i * vocab..(i + 1) * vocab].to_vec())
            .collect());
    }
    let device = model.device();
    seqs.iter_mut()
        .map(|s| {
            let logits = model
                .forward_cached(
                    ids_tensor::<B>(&[s.last], &device),
                    &mut s.cache,
                    Logits::Last,
                )
                .map_err(|e| e.to_string())?;
            last_row(logits)
        })
        .collect()
}

/// Prefills a new request and chooses its first token; `None` when it failed or is already
/// finished.
fn start<B: Backend>(
    lm: &LanguageModel<B>,
    tokenizer: &TextTokenizer,
    job: GenJob,
    metrics: &Metrics,
) -> Option<Seq<B>> {
    let model = &lm.model;
    let mut cache = model.new_cache(1, job.prompt.len() + job.max_tokens);
    let row = model
        .forward_cached(
            ids_tensor::<B>(&job.prompt, &model.device()),
            &mut cache,
            Logits::Last,
        )
        .map_err(|e| e.to_string())
        .and_then(last_row);
    let row = match row {
        Ok(row) => row,
        Err(e) => {
            let _ = job.events.send(Event::Failed(Failure::Model(e)));
            return None;
        }
    };
    metrics.add_prompt(job.prompt.len());
    let mut seq = Seq {
        sampler: Sampler::new(job.sampling.clone()),
        history: job.prompt.clone(),
        stream: TextStream::new(&job.prompt),
        stop: StopText::new(job.stop_texts.clone()),
        generated: 0,
        last: 0,
        cache,
        job,
    };
    let id = seq.sampler.sample(&row, &seq.history);
    if seq.accept(tokenizer, id, metrics) {
        None
    } else {
        Some(seq)
    }
}

/// The loop of a causal LM's worker thread; returns when the job channel is closed.
pub(crate) fn run_lm<B: Backend>(
    lm: &LanguageModel<B>,
    tokenizer: &TextTokenizer,
    jobs: Receiver<GenJob>,
    shared: &WorkerShared,
) {
    let metrics = &shared.metrics;
    let mut active: Vec<Seq<B>> = Vec::new();
    loop {
        if shared.shutting_down.load(Ordering::SeqCst) {
            for seq in active.drain(..) {
                let _ = seq.job.events.send(Event::Failed(Failure::Shutdown));
            }
            shared.active.store(0, Ordering::SeqCst);
            match jobs.recv_timeout(IDLE_POLL) {
                Ok(job) => {
                    shared.waiting.fetch_sub(1, Ordering::SeqCst);
                    let _ = job.events.send(Event::Failed(Failure::Shutdown));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            continue;
        }
        // Fill the free slots.
        while active.len() < shared.slots {
            let job = if active.is_empty() {
                match jobs.recv_timeout(IDLE_POLL) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            shared.waiting.fetch_sub(1, Ordering::SeqCst);
            if job.events.is_closed() {
                metrics.add_cancelled();
                continue;
            }
            if let Some(seq) = start(lm, tokenizer, job, metrics) {
                active.push(seq);
            }
            shared.active.store(active.len(), Ordering::SeqCst);
        }
        // Clients that went away free their slots before the step.
        active.retain(|s| {
            let gone = s.job.events.is_closed();
            if gone {
                metrics.add_cancelled();
            }
            !gone
        });
        shared.active.store(active.len(), Ordering::SeqCst);
        if active.is_empty() {
            continue;
        }
        metrics.add_step(active.len());
        match step(&lm.model, &mut active) {
            Ok(rows) => {
                let mut finished = vec![false; active.len()];
                for ((seq, row), done) in active.iter_mut().zip(rows).zip(finished.iter_mut()) {
                    let id = seq.sampler.sample(&row, &seq.history);
                    *done = seq.accept(tokenizer, id, metrics);
                }
                let mut done = finished.into_iter();
                active.retain(|_| !done.next().unwrap_or(true));
            }
            Err(e) => {
                for seq in active.drain(..) {
                    let _ = seq
                        .job
                        .events
                        .send(Event::Failed(Failure::Model(e.clone())));
                }
            }
        }
        shared.active.store(active.len(), Ordering::SeqCst);
    }
}

/// The embedding vectors of a job and the number of tokens read, or why not.
pub(crate) type EmbedReply = Result<(Vec<Vec<f32>>, usize), String>;

/// One embedding request.
#[derive(Debug)]
pub(crate) struct EmbedJob {
    /// The texts.
    pub texts: Vec<String>,
    /// The vectors and the number of tokens read, or why not.
    pub reply: oneshot::Sender<EmbedReply>,
}

/// Texts per forward pass of an encoder (what `zoo embed` uses by default, so that the vectors
/// are the same).
pub(crate) const EMBED_BATCH: usize = 32;

/// The loop of an encoder's worker thread; returns when the job channel is closed.
pub(crate) fn run_encoder<B: Backend>(
    encoder: &SentenceEncoder<B>,
    jobs: Receiver<EmbedJob>,
    shared: &WorkerShared,
) {
    loop {
        let job = match jobs.recv_timeout(IDLE_POLL) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        if shared.shutting_down.load(Ordering::SeqCst) {
            let _ = job.reply.send(Err("the server is shutting down".into()));
            continue;
        }
        if job.reply.is_closed() {
            shared.metrics.add_cancelled();
            continue;
        }
        shared.active.store(1, Ordering::SeqCst);
        let result: Result<(Vec<Vec<f32>>, usize), String> = (|| {
            let mut tokens = 0;
            for t in &job.texts {
                tokens += encoder.encode(t).map_err(|e| e.to_string())?.ids.len();
            }
            let refs: Vec<&str> = job.texts.iter().map(String::as_str).collect();
            let out = encoder
                .embed_detailed(&refs, EMBED_BATCH, true)
                .map_err(|e| e.to_string())?;
            Ok((out.vectors, tokens))
        })();
        if let Ok((_, tokens)) = &result {
            shared.metrics.add_prompt(*tokens);
        }
        shared.active.store(0, Ordering::SeqCst);
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::StopText;

    #[test]
    fn stop_texts_are_held_back_and_cut() {
        let mut s = StopText::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(s.push("Hello E"), ("Hello ".to_string(), false));
        assert_eq!(s.push("N"), (String::new(), false));
        assert_eq!(s.push("X more"), ("ENX more".to_string(), false));
        assert_eq!(s.push(" done\n"), (" done".to_string(), false));
        assert_eq!(s.push("\nafter"), (String::new(), true));
        let mut s = StopText::new(vec!["é!".into()]);
        assert_eq!(s.push("caf"), ("caf".to_string(), false));
        assert_eq!(s.push("é"), (String::new(), false));
        assert_eq!(s.flush(), "é");
        let mut plain = StopText::new(vec![]);
        assert_eq!(plain.push("a"), ("a".to_string(), false));
    }
}
