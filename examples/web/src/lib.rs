//! The zoo in a browser: the same generic modules as the native `zoo`, compiled to
//! wasm32-unknown-unknown on Burn's WebGPU backend (wgpu in the browser).
//!
//! The page (`index.html`, `app.js`) downloads a model's files, hands them to [`Files`], and
//! calls [`run`] with a job; tokens stream back through a JS callback as they are chosen. In
//! the browser nothing may read a GPU tensor synchronously, so the decoding loop here is the
//! zoo's ([`zoo_nn::generate`]) with `into_data_async().await` in place of `into_data()`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::wgpu::{graphics, init_setup_async, RuntimeOptions, WgpuDevice};
use burn::backend::Wgpu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;
use serde_json::json;
use wasm_bindgen::prelude::*;
use zoo_nn::{
    ids_tensor, CausalLm, Logits, Message, Sampler, Sampling, TextGenerator, TextStream,
    WeightFormat,
};

mod embed;
mod gpt2;

/// The backend: wgpu on the browser's WebGPU, f32 floats, i32 ints.
pub type B = Wgpu;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// Panics go to the browser console with their message (the default is a bare `unreachable`).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| console_error(&info.to_string())));
}

/// Sets up the WebGPU device (the adapter's own limits, so large weights fit) and describes
/// the adapter.
#[wasm_bindgen]
pub async fn init_gpu() -> Result<String, JsError> {
    let device = WgpuDevice::default();
    let setup = init_setup_async::<graphics::WebGpu>(&device, RuntimeOptions::default()).await;
    let info = setup.adapter.get_info();
    let limits = setup.device.limits();
    let name = if info.name.is_empty() {
        "the browser's adapter".to_string()
    } else {
        info.name
    };
    Ok(format!(
        "{name} ({:?}); max storage binding {} MiB, max buffer {} MiB",
        info.backend,
        limits.max_storage_buffer_binding_size >> 20,
        limits.max_buffer_size >> 20
    ))
}

/// A model's files, downloaded by the page: a `.gguf` file, or a Hugging Face folder's
/// `config.json`, weights and tokenizer files, by name.
#[wasm_bindgen]
#[derive(Default)]
pub struct Files {
    files: BTreeMap<String, Vec<u8>>,
}

#[wasm_bindgen]
impl Files {
    /// No files yet.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Files {
        Files::default()
    }

    /// Adds one file (`name` as in the folder: `config.json`, `1_Pooling/config.json`, …).
    pub fn add(&mut self, name: String, bytes: Vec<u8>) {
        self.files.insert(name, bytes);
    }
}

impl Files {
    pub(crate) fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.files.remove(name)
    }

    pub(crate) fn text(&self, name: &str) -> Result<Option<String>, String> {
        self.files
            .get(name)
            .map(|b| String::from_utf8(b.clone()).map_err(|_| format!("{name} is not UTF-8")))
            .transpose()
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

/// What the page asks for (from its URL).
#[derive(Debug, Deserialize)]
struct Job {
    /// `chat`, `generate` or `embed`.
    task: String,
    /// The model's name, for messages (`/models/smollm2/…gguf`).
    model: String,
    /// The user message (chat) or the text to continue (generate).
    #[serde(default)]
    prompt: String,
    /// The sentences to embed (embed).
    #[serde(default)]
    texts: Vec<String>,
    #[serde(default = "default_max_new")]
    max_new_tokens: usize,
    /// Greedy decoding (else temperature 1 sampling with `seed`).
    #[serde(default)]
    greedy: bool,
    #[serde(default)]
    seed: u64,
}

fn default_max_new() -> usize {
    64
}

/// Runs one job on `files`; `on_token(text, count)` is called as each token is chosen. Returns
/// the result as JSON: `{"ids", "text", "prompt_ids"}` or `{"embeddings"}`.
#[wasm_bindgen]
pub async fn run(job: String, files: Files, on_token: js_sys::Function) -> Result<String, JsError> {
    let job: Job = serde_json::from_str(&job).map_err(|e| JsError::new(&format!("job: {e}")))?;
    let out = match job.task.as_str() {
        "chat" | "generate" => text_job(&job, files, &on_token).await,
        "embed" => embed::run(&job.model, &job.texts, files).await,
        other => Err(format!("unknown task `{other}`: chat, generate or embed")),
    };
    out.map(|v| v.to_string()).map_err(|e| JsError::new(&e))
}

async fn text_job(
    job: &Job,
    mut files: Files,
    on_token: &js_sys::Function,
) -> Result<serde_json::Value, String> {
    let device = WgpuDevice::default();
    let path = Path::new(&job.model);
    let gguf = files
        .names()
        .find(|n| n.ends_with(".gguf"))
        .map(str::to_string);
    let Some(gguf) = gguf else {
        let lm = gpt2::open(&job.model, files, &device)?;
        return complete(job, &lm, on_token).await;
    };
    let bytes = files.take(&gguf).expect("listed");
    let file = zoo_gguf::GgufFile::from_bytes(bytes).map_err(|e| format!("{gguf}: {e}"))?;
    let lm = zoo_llama::open_gguf_file::<B>(&file, path, &device, WeightFormat::AS_STORED)
        .map_err(|e| e.to_string())?;
    drop(file);
    complete(job, &lm, on_token).await
}

/// A chat answer or a continuation, as `zoo chat` / `zoo generate` compute it.
async fn complete<M: CausalLm<B>>(
    job: &Job,
    lm: &TextGenerator<B, M>,
    on_token: &js_sys::Function,
) -> Result<serde_json::Value, String> {
    let chat = job.task == "chat";
    let (prompt, stop) = if chat {
        let messages = [Message::new("user", &job.prompt)];
        (
            lm.chat_prompt(&messages).map_err(|e| e.to_string())?,
            lm.chat_stop_ids(),
        )
    } else {
        (
            lm.encode(&job.prompt).map_err(|e| e.to_string())?,
            lm.eos_ids.clone(),
        )
    };
    lm.check_ids(&prompt).map_err(|e| e.to_string())?;
    let settings = if job.greedy {
        Sampling::greedy()
    } else {
        Sampling {
            seed: job.seed,
            ..Sampling::default()
        }
    };
    let mut sampler = Sampler::new(settings);
    let tokenizer = lm.tokenizer().map_err(|e| e.to_string())?;
    let mut stream = TextStream::new(&prompt);
    let mut count = 0u32;
    let mut failure = None;
    let ids = generate(
        &lm.model,
        &prompt,
        job.max_new_tokens,
        &mut sampler,
        &stop,
        |id| {
            count += 1;
            let piece = match stream.push(tokenizer, id) {
                Ok(p) => p.unwrap_or_default(),
                Err(e) => {
                    failure = Some(e.to_string());
                    return false;
                }
            };
            let _ = on_token.call2(
                &JsValue::NULL,
                &JsValue::from_str(&piece),
                &JsValue::from(count),
            );
            true
        },
    )
    .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let stopped = ids.last().is_some_and(|id| stop.contains(id));
    let text = if chat {
        // As `zoo chat` keeps the answer: the stop token left out, special tokens skipped, trimmed.
        let body = &ids[..ids.len() - usize::from(stopped)];
        lm.decode(body, true)
            .map_err(|e| e.to_string())?
            .trim()
            .to_string()
    } else {
        lm.decode(&ids, false).map_err(|e| e.to_string())?
    };
    Ok(json!({ "ids": ids, "text": text, "prompt_ids": prompt }))
}

/// [`zoo_nn::generate`] with asynchronous reads: up to `max_new` tokens after `prompt`,
/// stopping at any id of `stop` (kept) or when `on_token` returns `false`.
async fn generate<M: CausalLm<B>>(
    model: &M,
    prompt: &[u32],
    max_new: usize,
    sampler: &mut Sampler,
    stop: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>, String> {
    if prompt.is_empty() {
        return Err("the prompt is empty".into());
    }
    let context = model.max_positions();
    if prompt.len() + max_new > context {
        return Err(format!(
            "prompt of {} tokens + {max_new} new tokens exceeds the model's context of {context}",
            prompt.len()
        ));
    }
    let device = model.device();
    let mut cache = model.new_cache(1, prompt.len() + max_new);
    let mut history = prompt.to_vec();
    let mut new_ids = Vec::with_capacity(max_new);
    let mut input = prompt.to_vec();
    while new_ids.len() < max_new {
        let ids = ids_tensor::<B>(&input, &device);
        let logits = model
            .forward_cached(ids, &mut cache, Logits::Last)
            .map_err(|e| e.to_string())?;
        let [_, t, vocab] = logits.dims();
        let row = read(logits.slice([0..1, t - 1..t, 0..vocab])).await?;
        let next = sampler.sample(&row, &history);
        history.push(next);
        new_ids.push(next);
        if !on_token(next) || stop.contains(&next) {
            break;
        }
        input = vec![next];
    }
    Ok(new_ids)
}

/// A tensor's values, read back from the GPU without blocking the page.
pub(crate) async fn read<Bk: Backend, const D: usize>(
    t: Tensor<Bk, D>,
) -> Result<Vec<f32>, String> {
    t.into_data_async()
        .await
        .map_err(|e| format!("reading a tensor back from the GPU: {e:?}"))?
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("{e:?}"))
}
