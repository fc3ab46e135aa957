//! The counters of `zoo serve`, rendered as Prometheus text at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    state: Mutex<HistogramState>,
}

#[derive(Debug, Default)]
struct HistogramState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Bucket bounds for latencies, 1 ms to 2 minutes.
const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Histogram {
    fn seconds() -> Self {
        Self {
            bounds: SECONDS,
            state: Mutex::new(HistogramState {
                counts: vec![0; SECONDS.len()],
                ..HistogramState::default()
            }),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (count, &bound) in s.counts.iter_mut().zip(self.bounds) {
            if value <= bound {
                *count += 1;
            }
        }
        s.sum += value;
        s.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (count, bound) in s.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count);
        let _ = writeln!(out, "{name}_sum {}", s.sum);
        let _ = writeln!(out, "{name}_count {}", s.count);
    }
}

/// Everything `/metrics` reports, for the whole server.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    cancelled: AtomicU64,
    steps: AtomicU64,
    step_sequences: AtomicU64,
    /// Seconds from a request's arrival to its response head.
    pub request_seconds: Histogram,
    /// Seconds from a generation request's arrival to its first token.
    pub time_to_first_token: Histogram,
    /// Seconds from a generation request's arrival to its last token.
    pub generation_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            step_sequences: AtomicU64::new(0),
            request_seconds: Histogram::seconds(),
            time_to_first_token: Histogram::seconds(),
            generation_seconds: Histogram::seconds(),
        }
    }
}

/// The gauges of one model, read when `/metrics` is rendered.
#[derive(Debug, Clone)]
pub(crate) struct ModelGauges {
    /// The model's id.
    pub id: String,
    /// Requests waiting for a slot.
    pub waiting: usize,
    /// Sequences running.
    pub active: usize,
    /// Slots.
    pub slots: usize,
}

impl Metrics {
    /// Counts one answered request.
    pub fn add_request(&self, endpoint: &'static str, status: u16, seconds: f64) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((endpoint, status)).or_insert(0) += 1;
        drop(r);
        self.request_seconds.observe(seconds);
    }

    /// Counts prompt (or embedded) tokens.
    pub fn add_prompt(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts generated tokens.
    pub fn add_generated(&self, n: usize) {
        self.generated_tokens.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a request cancelled because its client went away.
    pub fn add_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one decoding step over `n` sequences.
    pub fn add_step(&self, n: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_sequences.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, models: &[ModelGauges]) -> String {
        let mut out = String::new();
        out.push_str("# HELP zoo_requests_total HTTP requests answered, by endpoint and status.\n# TYPE zoo_requests_total counter\n");
        for ((endpoint, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "zoo_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let counters = [
            (
                "zoo_prompt_tokens_total",
                "Prompt tokens prefilled (and tokens embedded).",
                &self.prompt_tokens,
            ),
            (
                "zoo_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
            (
                "zoo_cancelled_total",
                "Requests cancelled because the client disconnected.",
                &self.cancelled,
            ),
            (
                "zoo_decode_steps_total",
                "Decoding steps (one forward pass over all running sequences).",
                &self.steps,
            ),
            (
                "zoo_decode_step_sequences_total",
                "Sequences summed over decoding steps (divided by the steps: the mean batch).",
                &self.step_sequences,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        type Gauge = fn(&ModelGauges) -> usize;
        let gauges: [(&str, &str, Gauge); 3] = [
            ("zoo_queue_depth", "Requests waiting for a slot.", |g| {
                g.waiting
            }),
            ("zoo_active_sequences", "Sequences running.", |g| g.active),
            ("zoo_slots", "Sequences decoded together at most.", |g| {
                g.slots
            }),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for g in models {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", escape(&g.id), value(g));
            }
        }
        self.request_seconds.render(
            &mut out,
            "zoo_request_duration_seconds",
            "Seconds from a request's arrival to its response head.",
        );
        self.time_to_first_token.render(
            &mut out,
            "zoo_time_to_first_token_seconds",
            "Seconds from a generation request's arrival to its first token.",
        );
        self.generation_seconds.render(
            &mut out,
            "zoo_generation_duration_seconds",
            "Seconds from a generation request's arrival to its last token.",
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
