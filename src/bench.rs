//! Speed and memory of any model: prefill and decode tokens/s of causal LMs, sentences/s of
//! BERT encoders, load time, peak resident memory, and on a text the (pseudo-)perplexity —
//! what `zoo bench` and `zoo compare --measure` report, as JSON.

use std::time::Instant;

use burn::tensor::backend::Backend;
use serde_json::{json, Value};
use zoo_backends::{with_backend, BackendKind};

use crate::bert::SentenceEncoder;
use crate::catalog::{Architecture, ModelEntry, Positional};
use crate::eval::{causal_nll, masked_nll};
use crate::nn::{
    CausalLm, GenerationConfig, Sampling, TextEncoding, TextGenerator, WeightFormat, Weights,
};
use crate::resolve::{Family, ModelRef};
use crate::{CausalModel, Error, LanguageModel};

/// How speed is measured, for footnotes and JSON.
pub const SPEED_METHOD: &str = "causal models: greedy generation of --gen-len tokens after a fixed prompt of --prompt-len pseudo-random token ids (both cut to fit small contexts; the lengths used are in the JSON), batch 1, with the KV cache; prefill = prompt tokens / time to the first new token, decode = new tokens after the first / the remaining time. BERT: batches of one sentence of --prompt-len words. BLIP-2 / MiniGPT-4: image encode = seconds for one image of the model's size through the vision encoder, the Q-Former and the projection (pixel values given; reading and resizing a file not included), timed apart from the text-only prefill and decode. Median of --runs timed runs after one warm-up run, (min–max) in brackets; load = reading the weights onto the device";

/// How memory is measured, for footnotes and JSON.
pub const MEMORY_METHOD: &str = "peak resident memory (VmHWM, Linux) of a child process of zoo that loaded and measured only this model on this backend: weights, activations and the backend's own allocations; GPU memory is not included; MB = 10⁶ bytes";

/// How perplexity is computed, for footnotes and JSON.
pub const PERPLEXITY_METHOD: &str = "perplexity = exp(mean negative log-likelihood of each next token) over the --text file as one string, tokenized by the model's own tokenizer (BOS first where the model adds one; the first token is not scored). A text longer than the window (the model's context, or --window) is scored in windows moved by --stride tokens (default half the window): each token is scored once, in the first window that contains it after the part already scored, so after the first window every token has at least window − stride tokens of left context (the strided method of the Hugging Face perplexity guide)";

/// How pseudo-perplexity is computed, for footnotes and JSON.
pub const PSEUDO_PERPLEXITY_METHOD: &str = "pseudo-perplexity (Salazar et al. 2020, Masked Language Model Scoring) = exp(−mean log p(token | all other tokens)), each token replaced by [MASK] in turn; every non-empty line of the --text file is one sequence [CLS] line [SEP] (a line longer than the model's maximum length is cut into pieces); only BERT checkpoints with a masked-LM head (cls.predictions) have one";

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchSettings {
    /// Prompt tokens (causal LMs; cut to half the context of small models) or words per
    /// sentence (BERT).
    pub prompt_len: usize,
    /// Tokens generated per run (causal LMs).
    pub gen_len: usize,
    /// Sentences per forward pass (BERT).
    pub batch: usize,
    /// Timed runs after one warm-up run.
    pub runs: usize,
    /// Perplexity window in tokens (default: the model's context).
    pub window: Option<usize>,
    /// Tokens the window moves by (default: half the window).
    pub stride: Option<usize>,
    /// The formats the weights are kept in.
    pub format: WeightFormat,
}

/// The most tokens one benchmark forward pass holds (`--batch` × `--prompt-len`).
pub const MAX_BATCH_TOKENS: usize = 1 << 16;

impl BenchSettings {
    /// Checks the numbers.
    pub fn check(&self) -> Result<(), Error> {
        if self.runs == 0 || self.prompt_len == 0 || self.batch == 0 {
            return Err(Error::Input(
                "runs, prompt length and batch must be at least 1".into(),
            ));
        }
        // One forward pass of `batch` sentences holds batch × prompt_len tokens (and their
        // attention scores): bounded so a typo cannot reserve the machine's memory.
        if self.batch > 1 && self.batch.saturating_mul(self.prompt_len) > MAX_BATCH_TOKENS {
            return Err(Error::Input(format!(
                "a batch of {} sentences of {} tokens is {} tokens per pass, above the {MAX_BATCH_TOKENS} the bench runs",
                self.batch,
                self.prompt_len,
                self.batch.saturating_mul(self.prompt_len)
            )));
        }
        if self.window.is_some_and(|w| w < 2) {
            return Err(Error::Input("the window must be at least 2 tokens".into()));
        }
        if self.stride == Some(0) {
            return Err(Error::Input("the stride must be at least 1 token".into()));
        }
        Ok(())
    }
}

/// Median, minimum, maximum and every value of some measurements, as JSON.
pub fn spread(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    json!({
        "median": median,
        "min": v.first().copied().unwrap_or(0.0),
        "max": v.last().copied().unwrap_or(0.0),
        "runs": v,
    })
}

/// Memory the kernel says is available for new allocations (Linux `MemAvailable`).
fn mem_available() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Peak resident memory of this process so far, in bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Sentences/s of `runs` timed batches of `batch` sentences of about `words` words each, after
/// one warm-up batch; also returns the words per sentence.
pub fn encoder_rates<B: Backend>(
    encoder: &SentenceEncoder<B>,
    words: usize,
    batch: usize,
    runs: usize,
) -> Result<(Vec<f64>, usize), Error> {
    let sentence = "the quick brown fox jumps over the lazy dog ".repeat(words / 9 + 1);
    let words: Vec<&str> = sentence.split_whitespace().take(words.max(1)).collect();
    let text = words.join(" ");
    let texts: Vec<&str> = vec![text.as_str(); batch.max(1)];
    encoder.embed(&texts, texts.len())?; // warm-up
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        encoder.embed(&texts, texts.len())?;
        rates.push(texts.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok((rates, words.len()))
}

/// Prefill and decode tokens/s of `runs` greedy generations of `gen_len` tokens after a fixed
/// pseudo-random prompt of `prompt_len` ids, after one warm-up run (decode empty when
/// `gen_len < 2`). No stop ids: every run does exactly the same work.
pub fn causal_rates<B: Backend, M: CausalLm<B>>(
    lm: &TextGenerator<B, M>,
    prompt_len: usize,
    gen_len: usize,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let vocab = lm.model.vocab_size() as u64;
    let prompt: Vec<u32> = (0..prompt_len as u64)
        .map(|i| ((i * 2_654_435_761 + 12_345) % vocab.min(30_000)) as u32)
        .collect();
    let prompt = lm.model.valid_prompt(prompt);
    let config = GenerationConfig {
        max_new_tokens: gen_len,
        sampling: Sampling::greedy(),
        stop_ids: Some(Vec::new()),
    };
    lm.generate(&prompt, &config, |_| true)?;
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let out = lm.generate(&prompt, &config, |_| true)?;
        prefill.push(out.stats.prefill_rate());
        if gen_len > 1 {
            decode.push(out.stats.decode_rate());
        }
    }
    Ok((prefill, decode))
}

/// Seconds to encode one image (vision encoder, Q-Former, projection) in each of `runs` timed
/// runs after one warm-up run; see [`SPEED_METHOD`].
pub fn image_encode_secs<B: Backend>(model: &crate::blip2::Blip2Lm<B>, runs: usize) -> Vec<f64> {
    model.time_image_encode();
    (0..runs).map(|_| model.time_image_encode()).collect()
}

/// Measures the model at `model` on backend `B`: load time, speed (see [`SPEED_METHOD`]) and,
/// with `text`, perplexity (causal LMs, [`PERPLEXITY_METHOD`]) or pseudo-perplexity (BERT
/// masked LMs, [`PSEUDO_PERPLEXITY_METHOD`]). Peak memory is added by the caller, which knows
/// what else its process holds.
pub fn measure<B: Backend>(
    model: &ModelRef,
    settings: &BenchSettings,
    text: Option<&str>,
    device: &B::Device,
) -> Result<Value, Error> {
    settings.check()?;
    let start = Instant::now();
    let s = settings;
    if model.family == Family::Bert {
        let encoder = SentenceEncoder::<B>::load_with(&model.path, device, s.format)?;
        let load_secs = start.elapsed().as_secs_f64();
        let (rates, words) = encoder_rates(&encoder, s.prompt_len, s.batch, s.runs)?;
        let mut out = json!({
            "family": Family::Bert.name(),
            "model": model.path,
            "load_secs": load_secs,
            "words_per_sentence": words,
            "batch": s.batch,
            "runs": s.runs,
            "sentences_per_s": spread(&rates),
        });
        if let Some(text) = text {
            match masked_nll(&encoder, text)? {
                None => {
                    out["pseudo_perplexity"] = Value::Null;
                    out["perplexity_note"] = json!("no masked-LM head (cls.predictions) in this checkpoint: no pseudo-perplexity");
                }
                Some(nll) => merge(
                    &mut out,
                    json!({
                        "pseudo_perplexity": nll.perplexity(),
                        "mean_nll": nll.mean(),
                        "text_tokens": nll.scored,
                        "scored_tokens": nll.scored,
                        "sequences": nll.windows,
                        "max_len": encoder.max_len,
                        "method": format!(
                            "pseudo-perplexity over {} tokens in {} sequence(s) of at most {} tokens; {PSEUDO_PERPLEXITY_METHOD}",
                            nll.scored, nll.windows, encoder.max_len
                        ),
                    }),
                ),
            }
        }
        return Ok(out);
    }
    if model.family == Family::T5 {
        return measure_seq2seq::<B>(model, settings, text, start, device);
    }
    let lm = crate::open_with::<B>(&model.path, device, s.format)?;
    let load_secs = start.elapsed().as_secs_f64();
    let context = lm.context_length();
    if context < 2 {
        return Err(Error::Input(format!(
            "the model's context of {context} tokens is too short to measure"
        )));
    }
    // The text is checked before the speed runs, so that a bad one fails at once.
    let scoring = match (text, &lm.tokenizer) {
        (None, _) => None,
        (Some(_), None) => Some(Err(format!(
            "{} has no tokenizer (tokenizer.json, vocab.json + merges.txt, or encoder.json + vocab.bpe): no perplexity",
            model.path.display()
        ))),
        (Some(text), Some(_)) => {
            let ids = lm.encode(text)?;
            if ids.len() < 2 {
                return Err(Error::Input(format!(
                    "the text encodes to {} token(s) with the model's tokenizer: perplexity needs at least 2",
                    ids.len()
                )));
            }
            let vocab = lm.model.vocab_size();
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::Input(format!(
                    "the tokenizer gives id {bad}, outside the model's vocabulary of {vocab}"
                )));
            }
            let window = s.window.unwrap_or(context);
            if window > context {
                return Err(Error::Input(format!(
                    "--window {window} exceeds the model's context of {context} tokens"
                )));
            }
            let stride = s.stride.unwrap_or((window / 2).max(1));
            if stride > window {
                return Err(Error::Input(format!(
                    "--stride {stride} is longer than the window of {window} tokens"
                )));
            }
            Some(Ok((ids, window, stride)))
        }
    };
    let prompt_len = s.prompt_len.min(context / 2).max(1);
    let gen_len = s.gen_len.min(context - prompt_len);
    let (prefill, decode) = causal_rates(&lm, prompt_len, gen_len, s.runs)?;
    let image = match &lm.model {
        CausalModel::Blip2(m) => Some(image_encode_secs(m, s.runs)),
        _ => None,
    };
    let mut out = json!({
        "family": model.family.name(),
        "model": model.path,
        "load_secs": load_secs,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "runs": s.runs,
        "prefill_tok_s": spread(&prefill),
        "decode_tok_s": if decode.is_empty() { Value::Null } else { spread(&decode) },
        "weights": s.format.describe(),
    });
    if let (Some(secs), CausalModel::Blip2(m)) = (image, &lm.model) {
        out["image_encode_secs"] = spread(&secs);
        out["image_tokens"] = json!(m.config.num_query_tokens);
        out["image_size"] = json!(m.config.vision.image_size);
    }
    let (ids, window, stride) = match scoring {
        None => return Ok(out),
        Some(Err(note)) => {
            out["perplexity"] = Value::Null;
            out["perplexity_note"] = json!(note);
            return Ok(out);
        }
        Some(Ok(scoring)) => scoring,
    };
    let nll = causal_nll(&lm.model, &ids, window, stride)?;
    merge(
        &mut out,
        json!({
            "perplexity": nll.perplexity(),
            "mean_nll": nll.mean(),
            "text_tokens": ids.len(),
            "scored_tokens": nll.scored,
            "window": window,
            "stride": stride,
            "windows": nll.windows,
            "method": format!(
                "perplexity over {} tokens ({} scored) in {} window(s) of {window} tokens, stride {stride}; {PERPLEXITY_METHOD}",
                ids.len(), nll.scored, nll.windows
            ),
        }),
    );
    Ok(out)
}

/// [`measure`] for an encoder-decoder (T5): `prompt_len` encoder tokens; prefill = the encoder
/// plus the first decoder step (encoder tokens per second), decode = the decoder's tokens after
/// the first, over its self-attention cache and the cross-attention K/V made once.
fn measure_seq2seq<B: Backend>(
    model: &ModelRef,
    s: &BenchSettings,
    text: Option<&str>,
    start: Instant,
    device: &B::Device,
) -> Result<Value, Error> {
    if s.batch != 1 {
        return Err(Error::Input(
            "encoder-decoders are measured at batch 1".into(),
        ));
    }
    let t5 = crate::t5::open_with::<B>(&model.path, device, s.format)?;
    let mut out = seq2seq_report(&t5, s, start)?;
    out["family"] = json!(model.family.name());
    out["model"] = json!(model.path);
    if text.is_some() {
        out["perplexity"] = Value::Null;
        out["perplexity_note"] = json!(
            "perplexity of an encoder-decoder needs a target text for the decoder: not measured"
        );
    }
    Ok(out)
}

/// How encoder-decoders are timed, for footnotes and JSON.
pub const SEQ2SEQ_METHOD: &str = "encoder-decoder: prefill = encoder tokens per second through the encoder and the first decoder step; decode = decoder tokens per second after the first";

/// One warm-up and `runs` timed generations of `gen_len` decoder tokens from `prompt_len`
/// encoder tokens, as a report (load time counted from `start`; the caller names the model).
fn seq2seq_report<B: Backend>(
    t5: &crate::t5::T5Generator<B>,
    s: &BenchSettings,
    start: Instant,
) -> Result<Value, Error> {
    let load_secs = start.elapsed().as_secs_f64();
    let (prompt_len, gen_len, runs) = (s.prompt_len, s.gen_len, s.runs);
    let vocab = t5.model.vocab_size() as u32;
    // Ids 3… (past T5's pad, eos and unk), spread over the vocabulary.
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| 3 + (i * 7919) % vocab.saturating_sub(3).max(1))
        .collect();
    let config = GenerationConfig {
        max_new_tokens: gen_len,
        sampling: Sampling::greedy(),
        stop_ids: Some(Vec::new()),
    };
    crate::seq2seq::generate(t5, &prompt, &config, &mut |_| true)?;
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let out = crate::seq2seq::generate(t5, &prompt, &config, &mut |_| true)?;
        prefill.push(out.stats.prefill_rate());
        if gen_len > 1 {
            decode.push(out.stats.decode_rate());
        }
    }
    Ok(json!({
        "load_secs": load_secs,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "runs": runs,
        "prefill_tok_s": spread(&prefill),
        "decode_tok_s": if decode.is_empty() { Value::Null } else { spread(&decode) },
        "weights": s.format.describe(),
        "method": SEQ2SEQ_METHOD,
    }))
}

/// A T5 catalog entry at its real size with seeded random weights in `format`.
fn random_t5<B: Backend>(
    entry: &ModelEntry,
    format: WeightFormat,
    seed: u64,
    device: &B::Device,
) -> Result<crate::t5::T5Generator<B>, Error> {
    let c = &entry.config;
    let need = |what: &str, v: Option<u64>| -> Result<u64, Error> {
        v.ok_or_else(|| {
            Error::Input(format!(
                "the catalog entry {} has no {what}: its shape is unknown",
                entry.id
            ))
        })
    };
    let (layers, d, heads) = (
        need("layers", c.layers)?,
        need("hidden_size", c.hidden_size)?,
        need("heads", c.heads)?,
    );
    let tied = c.tied_embeddings == Some(true);
    let config = crate::t5::T5Config::from_json(
        &json!({
            "vocab_size": need("vocab_size", c.vocab_size)?, "d_model": d,
            "d_kv": c.head_size().unwrap_or(d / heads), "d_ff": need("intermediate_size", c.intermediate_size)?,
            "num_layers": layers, "num_decoder_layers": c.decoder_layers.unwrap_or(layers),
            "num_heads": heads,
            "relative_attention_num_buckets": c.relative_buckets.unwrap_or(32),
            "relative_attention_max_distance": 128,
            "layer_norm_epsilon": c.norm_eps.unwrap_or(1e-6),
            "feed_forward_proj": if c.gated_mlp == Some(true) { "gated-gelu" } else { "relu" },
            "tie_word_embeddings": tied, "is_encoder_decoder": true, "model_type": "t5",
            "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
        })
        .to_string(),
    )
    .map_err(|e| Error::Input(format!("{}: {e}", entry.id)))?;
    let mut w = Weights::synthetic(seed, move |n: &str| {
        n.ends_with("embed_tokens.weight") || (tied && n == "lm_head.weight")
    });
    w.set_format(format);
    let model = crate::t5::from_weights(&config, &mut w, device)?;
    Ok(crate::t5::T5Generator {
        model,
        config,
        tokenizer: None,
        dir: std::path::PathBuf::from(format!("random:{}", entry.id)),
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// How random-weight models are measured, for footnotes and JSON.
pub const RANDOM_METHOD: &str = "random weights: the catalog architecture at its real size, every matrix seeded random in the asked format (block formats made directly as random blocks, never as f32), norms 1; nothing is downloaded. Speed and memory do not depend on the values; the outputs are meaningless";

/// The catalog model `entry` at its real size with seeded random weights in `format`, as a
/// [`LanguageModel`] without a tokenizer (for speed and memory: the outputs are noise).
/// LLaMA, GPT-2 and the chatglm-layout GLM generations are supported.
pub fn random_model<B: Backend>(
    entry: &ModelEntry,
    format: WeightFormat,
    seed: u64,
    device: &B::Device,
) -> Result<LanguageModel<B>, Error> {
    let c = &entry.config;
    let need = |what: &str, v: Option<u64>| -> Result<usize, Error> {
        v.map(|v| v as usize).ok_or_else(|| {
            Error::Input(format!(
                "the catalog entry {} has no {what}: its shape is unknown",
                entry.id
            ))
        })
    };
    let (layers, d, heads) = (
        need("layers", c.layers)?,
        need("hidden_size", c.hidden_size)?,
        need("heads", c.heads)?,
    );
    let vocab = need("vocab_size", c.vocab_size)?;
    let inner = need("intermediate_size", c.intermediate_size)?;
    let context = need("context_length", entry.context_length.or(c.max_positions))?;
    let tied = c.tied_embeddings == Some(true);
    let path = std::path::PathBuf::from(format!("random:{}", entry.id));
    let input = |e: String| Error::Input(format!("{}: {e}", entry.id));
    let model = match entry.architecture {
        Architecture::Llama => {
            let config = crate::llama::LlamaConfig::from_json(
                &json!({
                    "vocab_size": vocab, "hidden_size": d, "intermediate_size": inner,
                    "num_hidden_layers": layers, "num_attention_heads": heads,
                    "num_key_value_heads": c.kv_heads.unwrap_or(heads as u64),
                    "head_dim": c.head_size(), "rms_norm_eps": c.norm_eps.unwrap_or(1e-5),
                    "rope_theta": c.rope_theta.unwrap_or(10000.0),
                    "max_position_embeddings": context, "tie_word_embeddings": tied,
                    "hidden_act": "silu", "model_type": "llama",
                })
                .to_string(),
            )
            .map_err(input)?;
            let mut w = Weights::synthetic(seed, move |n: &str| tied && n == "lm_head.weight");
            w.set_format(format);
            CausalModel::Llama(crate::llama::from_weights(&config, &mut w, None, device)?)
        }
        Architecture::Gpt2 => {
            let config = crate::gpt2::Gpt2Config::from_json(
                &json!({
                    "vocab_size": vocab, "n_positions": context, "n_embd": d, "n_layer": layers,
                    "n_head": heads, "n_inner": inner, "tie_word_embeddings": tied,
                    "activation_function": "gelu_new", "model_type": "gpt2",
                })
                .to_string(),
            )
            .map_err(input)?;
            let mut w = Weights::synthetic(seed, move |n: &str| {
                (tied && n == "lm_head.weight") || n.starts_with("transformer.")
            });
            w.set_format(format);
            CausalModel::Gpt2(crate::gpt2::load::from_weights(&config, &mut w, device)?)
        }
        Architecture::Chatglm if c.positional == Some(Positional::Rope2d) => {
            let config: crate::glm::ChatGlmV1Config = serde_json::from_value(json!({
                "hidden_size": d, "num_attention_heads": heads, "num_layers": layers,
                "vocab_size": vocab, "inner_hidden_size": inner,
                "layernorm_epsilon": c.norm_eps.unwrap_or(1e-5), "max_sequence_length": context,
            }))
            .map_err(|e| input(e.to_string()))?;
            let mut w = Weights::synthetic(seed, |n: &str| n.contains("prefix_encoder"));
            w.set_format(format);
            CausalModel::Glm(crate::glm::Glm::V1(crate::glm::v1::from_weights(
                &config, &mut w, None, device,
            )?))
        }
        Architecture::Chatglm => {
            let kv = c.kv_heads.unwrap_or(heads as u64);
            let config: crate::glm::ChatGlmV2Config = serde_json::from_value(json!({
                "hidden_size": d, "num_attention_heads": heads, "num_layers": layers,
                "kv_channels": c.head_size().unwrap_or((d / heads) as u64),
                "multi_query_attention": kv < heads as u64, "multi_query_group_num": kv,
                "padded_vocab_size": vocab, "ffn_hidden_size": inner,
                "layernorm_epsilon": c.norm_eps.unwrap_or(1e-5), "rmsnorm": true,
                "add_bias_linear": c.linear_bias == Some(true),
                "add_qkv_bias": c.qkv_bias != Some(false), "seq_length": context,
                "rope_ratio": c.rope_theta.unwrap_or(10000.0) / 10000.0,
            }))
            .map_err(|e| input(e.to_string()))?;
            let mut w = Weights::synthetic(seed, |n: &str| n.contains("prefix_encoder"));
            w.set_format(format);
            CausalModel::Glm(crate::glm::Glm::V2(crate::glm::v2::from_weights(
                &config, &mut w, None, device,
            )?))
        }
        Architecture::Opt => {
            let pre = c.norm_position != Some(crate::catalog::NormPosition::Post);
            let config = crate::opt::OptConfig::from_json(&json!({
                "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": layers,
                "num_attention_heads": heads, "ffn_dim": inner,
                "max_position_embeddings": context, "do_layer_norm_before": pre,
                "word_embed_proj_dim": c.embed_dim.unwrap_or(d as u64),
                "activation_function": "relu", "tie_word_embeddings": tied, "model_type": "opt",
            }).to_string())
            .map_err(input)?;
            let mut w = Weights::synthetic(seed, move |n: &str| tied && n == "lm_head.weight");
            w.set_format(format);
            CausalModel::Opt(crate::opt::from_weights(&config, &mut w, device)?)
        }
        Architecture::Bloom => {
            let config = crate::bloom::BloomConfig::from_json(&json!({
                "vocab_size": vocab, "hidden_size": d, "n_layer": layers, "n_head": heads,
                "layer_norm_epsilon": c.norm_eps.unwrap_or(1e-5),
                "tie_word_embeddings": tied, "model_type": "bloom",
            }).to_string())
            .map_err(input)?;
            let mut w = Weights::synthetic(seed, move |n: &str| {
                (tied && n == "lm_head.weight") || n.starts_with("transformer.")
            });
            w.set_format(format);
            CausalModel::Bloom(crate::bloom::from_weights(&config, &mut w, device)?)
        }
        Architecture::Codegen | Architecture::Moss => {
            let rotary = (c.rotary_fraction.unwrap_or(1.0) * (d / heads) as f64).round() as usize;
            let config = crate::codegen::CodeGenConfig::from_json(&json!({
                "vocab_size": vocab, "n_embd": d, "n_layer": layers, "n_head": heads,
                "n_inner": inner, "rotary_dim": rotary, "n_positions": context, "n_ctx": context,
                "activation_function": "gelu_new",
                "layer_norm_epsilon": c.norm_eps.unwrap_or(1e-5),
                "tie_word_embeddings": false, "model_type": entry.architecture.as_str(),
            }).to_string())
            .map_err(input)?;
            let mut w = Weights::synthetic(seed, |_: &str| false);
            w.set_format(format);
            CausalModel::CodeGen(crate::codegen::from_weights(&config, &mut w, device)?)
        }
        Architecture::GptNeo => {
            let window = c.local_window.unwrap_or(256);
            // Global and local layers alternate, as in every GPT-Neo checkpoint.
            let mut attention_types = Vec::new();
            if layers / 2 > 0 {
                attention_types.push(json!([["global", "local"], layers / 2]));
            }
            if layers % 2 == 1 {
                attention_types.push(json!([["global"], 1]));
            }
            let config = crate::gptneo::GptNeoConfig::from_json(&json!({
                "vocab_size": vocab, "hidden_size": d, "num_layers": layers, "num_heads": heads,
                "intermediate_size": inner, "max_position_embeddings": context,
                "attention_types": attention_types,
                "window_size": window, "activation_function": "gelu_new",
                "layer_norm_epsilon": c.norm_eps.unwrap_or(1e-5),
                "tie_word_embeddings": tied, "model_type": "gpt_neo",
            }).to_string())
            .map_err(input)?;
            let mut w = Weights::synthetic(seed, move |n: &str| {
                (tied && n == "lm_head.weight") || n.starts_with("transformer.")
            });
            w.set_format(format);
            CausalModel::GptNeo(crate::gptneo::from_weights(&config, &mut w, device)?)
        }
        other => {
            return Err(Error::Input(format!(
                "random weights are made for the decoder families (LLaMA, GPT-2, GLM, OPT, BLOOM, CodeGen / MOSS, GPT-Neo), not {other} ({})",
                entry.id
            )))
        }
    };
    Ok(TextGenerator::new(
        model,
        &path,
        None,
        TextEncoding::Tokenizer,
        None,
        Vec::new(),
    ))
}

/// [`measure`] on a catalog architecture with random weights ([`random_model`]).
pub fn measure_random<B: Backend>(
    entry: &ModelEntry,
    settings: &BenchSettings,
    seed: u64,
    device: &B::Device,
) -> Result<Value, Error> {
    settings.check()?;
    let s = settings;
    // Refuse a model that cannot fit: an f32 7B model (27 GB) on a 24 GB machine would be
    // killed by the kernel half-way through making its weights.
    if let (Ok(c), Some(available)) = (crate::catalog::compare::compare(entry), mem_available()) {
        let needed =
            crate::describe::weight_bytes_as_loaded(&c, s.format).unwrap_or(c.weight_bytes.fp32);
        if needed > available / 10 * 9 {
            return Err(Error::Input(format!(
                "{} at {} needs about {:.1} GB of weights and {:.1} GB of memory is available: use --quantize q4_0 (or q8_0, --dtype f16)",
                entry.id,
                s.format.describe(),
                needed as f64 / 1e9,
                available as f64 / 1e9
            )));
        }
    }
    let start = Instant::now();
    if entry.architecture == Architecture::T5 {
        let t5 = random_t5::<B>(entry, s.format, seed, device)?;
        let mut out = seq2seq_report(&t5, s, start)?;
        merge(
            &mut out,
            json!({
                "family": entry.architecture.as_str(),
                "model": entry.id,
                "random_weights": true,
                "seed": seed,
                "method": format!("{RANDOM_METHOD}; {SEQ2SEQ_METHOD}"),
            }),
        );
        return Ok(out);
    }
    let lm = random_model::<B>(entry, s.format, seed, device)?;
    let load_secs = start.elapsed().as_secs_f64();
    let context = lm.context_length();
    let prompt_len = s.prompt_len.min(context / 2).max(1);
    let gen_len = s.gen_len.min(context - prompt_len);
    let (prefill, decode) = causal_rates(&lm, prompt_len, gen_len, s.runs)?;
    Ok(json!({
        "family": entry.architecture.as_str(),
        "model": entry.id,
        "random_weights": true,
        "seed": seed,
        "weights": s.format.describe(),
        "load_secs": load_secs,
        "prompt_len": prompt_len,
        "gen_len": gen_len,
        "runs": s.runs,
        "prefill_tok_s": spread(&prefill),
        "decode_tok_s": if decode.is_empty() { Value::Null } else { spread(&decode) },
        "method": RANDOM_METHOD,
    }))
}

/// [`measure`] on the backend `kind` chosen at run time.
pub fn measure_on(
    kind: BackendKind,
    model: &ModelRef,
    settings: &BenchSettings,
    text: Option<&str>,
) -> Result<Value, Error> {
    with_backend!(kind, |B, device| {
        measure::<B>(model, settings, text, &device)?
    })
    .map_err(|e| Error::Input(e.to_string()))
}

/// [`measure_random`] on the backend `kind` chosen at run time.
pub fn measure_random_on(
    kind: BackendKind,
    entry: &ModelEntry,
    settings: &BenchSettings,
    seed: u64,
) -> Result<Value, Error> {
    with_backend!(kind, |B, device| {
        measure_random::<B>(entry, settings, seed, &device)?
    })
    .map_err(|e| Error::Input(e.to_string()))
}
