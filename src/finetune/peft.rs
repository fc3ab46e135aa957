//! LoRA adapters in PEFT's format: which layers of a model can take one (by the checkpoint's
//! own module names), attaching fresh adapters, and reading / writing
//! `adapter_model.safetensors` + `adapter_config.json` as PEFT does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde_json::{json, Value};

use super::FinetuneError;
use crate::bert::Bert;
use crate::glm::hf::GlmHf;
use crate::glm::v2::ChatGlmV2;
use crate::gpt2::Gpt2;
use crate::llama::Llama;
use crate::nn::{CausalLm, Dense, Logits, Lora, Weights};

/// The settings file of a PEFT adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// PEFT's prefix of every adapter tensor of a causal LM.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// A causal LM that can be fine-tuned: its linear layers by checkpoint module path, and the
/// logits of a whole batch.
pub trait Trainable<B: Backend>: burn::module::Module<B> {
    /// Every linear layer with its module path in the Hugging Face checkpoint
    /// (`model.layers.0.self_attn.q_proj`, `transformer.h.0.attn.c_attn`).
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)>;

    /// [`Trainable::dense_layers`], mutable.
    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)>;

    /// Logits `[batch, t, vocab]` of every position of `ids` `[batch, t]`.
    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError>;

    /// [`Trainable::batch_logits`] of rows right-padded after `lengths[i]` real tokens. A
    /// causal LM never looks ahead, so its padding changes nothing before it and this is
    /// `batch_logits`; an encoder that attends both ways masks the padding here.
    fn padded_logits(
        &self,
        ids: Tensor<B, 2, Int>,
        lengths: &[usize],
    ) -> Result<Tensor<B, 3>, FinetuneError> {
        let _ = lengths;
        self.batch_logits(ids)
    }

    /// The logits `[rows.len(), vocab]` of the flat positions `rows` (`row * t + i`, ascending)
    /// of a right-padded batch: the positions whose labels the loss scores. By default every
    /// position's logits, then those rows; a model whose LM head works position by position runs
    /// the head on these rows only (most positions of a chat record are prompt or padding, and
    /// the head is the model's largest matrix). Equal either way.
    fn scored_logits(
        &self,
        ids: Tensor<B, 2, Int>,
        lengths: &[usize],
        rows: &[usize],
    ) -> Result<Tensor<B, 2>, FinetuneError> {
        let [b, t] = ids.dims();
        let logits = self.padded_logits(ids, lengths)?;
        let v = logits.dims()[2];
        Ok(select_rows(logits.reshape([b * t, v]), rows))
    }

    /// How far ahead a position's label is: 1 for a causal LM (transformers' shifted loss: the
    /// logits at `i` predict the label at `i + 1`), 0 for a masked LM (the label at `i`).
    fn label_shift(&self) -> usize {
        1
    }

    /// The longest sequence the model accepts.
    fn context(&self) -> usize;

    /// The layers LoRA targets when none are given: PEFT's defaults for the architecture
    /// (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`).
    fn default_targets(&self) -> &'static [&'static str] {
        &["q_proj", "v_proj"]
    }
}

/// The logits of every position of a batch, through a fresh cache sized for it: what a
/// causal LM whose positions are plain `0, 1, 2, …` needs (right padding after a row's end is
/// causal, so it changes nothing before it).
fn causal_batch_logits<B: Backend, M: CausalLm<B>>(
    model: &M,
    ids: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 3>, FinetuneError>
where
    FinetuneError: From<M::Error>,
{
    let [b, t] = ids.dims();
    let mut cache = model.new_cache(b, t);
    Ok(model.forward_cached(ids, &mut cache, Logits::All)?)
}

/// Rows `rows` of `x` `[n, d]`.
fn select_rows<B: Backend>(x: Tensor<B, 2>, rows: &[usize]) -> Tensor<B, 2> {
    let device = x.device();
    let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    x.select(
        0,
        Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device),
    )
}

/// [`Trainable::scored_logits`] of a causal LM: the final hidden states of every position
/// (`Logits::Hidden`), then `head` on the scored rows only.
fn causal_scored_logits<B: Backend, M: CausalLm<B>>(
    model: &M,
    ids: Tensor<B, 2, Int>,
    rows: &[usize],
    head: impl FnOnce(Tensor<B, 3>) -> Result<Tensor<B, 3>, FinetuneError>,
) -> Result<Tensor<B, 2>, FinetuneError>
where
    FinetuneError: From<M::Error>,
{
    let [b, t] = ids.dims();
    let mut cache = model.new_cache(b, t);
    let hidden = model.forward_cached(ids, &mut cache, Logits::Hidden)?;
    let d = hidden.dims()[2];
    let picked = select_rows(hidden.reshape([b * t, d]), rows);
    let logits = head(picked.unsqueeze::<3>())?;
    let v = logits.dims()[2];
    Ok(logits.reshape([rows.len(), v]))
}

/// [`Trainable::scored_logits`] of a causal LM through [`causal_scored_logits`], with `head`
/// the expression that maps the picked hidden states `h` `[1, n, d]` of model `m` to logits.
macro_rules! scored_through_head {
    (|$m:ident, $h:ident| $head:expr) => {
        fn scored_logits(
            &self,
            ids: Tensor<B, 2, Int>,
            _lengths: &[usize],
            rows: &[usize],
        ) -> Result<Tensor<B, 2>, FinetuneError> {
            let $m = self;
            causal_scored_logits(self, ids, rows, |$h| $head)
        }
    };
}

macro_rules! llama_denses {
    ($model:expr, $iter:ident, $($r:tt)*) => {{
        let mut out = Vec::new();
        for (i, layer) in $model.layers.$iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), $($r)* layer.self_attn.q_proj));
            out.push((format!("{p}.self_attn.k_proj"), $($r)* layer.self_attn.k_proj));
            out.push((format!("{p}.self_attn.v_proj"), $($r)* layer.self_attn.v_proj));
            out.push((format!("{p}.self_attn.o_proj"), $($r)* layer.self_attn.o_proj));
            out.push((format!("{p}.mlp.gate_proj"), $($r)* layer.mlp.gate_proj));
            out.push((format!("{p}.mlp.up_proj"), $($r)* layer.mlp.up_proj));
            out.push((format!("{p}.mlp.down_proj"), $($r)* layer.mlp.down_proj));
        }
        out
    }};
}

macro_rules! gpt2_denses {
    ($model:expr, $iter:ident, $($r:tt)*) => {{
        let mut out = Vec::new();
        for (i, block) in $model.h.$iter().enumerate() {
            let p = format!("transformer.h.{i}");
            out.push((format!("{p}.attn.c_attn"), $($r)* block.attn.c_attn));
            out.push((format!("{p}.attn.c_proj"), $($r)* block.attn.c_proj));
            out.push((format!("{p}.mlp.c_fc"), $($r)* block.mlp.c_fc));
            out.push((format!("{p}.mlp.c_proj"), $($r)* block.mlp.c_proj));
        }
        out
    }};
}

impl<B: Backend> Trainable<B> for Llama<B> {
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)> {
        let mut out = llama_denses!(self, iter, &);
        if let Some(head) = &self.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }

    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)> {
        let mut out = llama_denses!(self, iter_mut, &mut);
        if let Some(head) = &mut self.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }

    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError> {
        causal_batch_logits(self, ids)
    }

    scored_through_head!(|m, h| Ok(m.lm_logits(h)));

    fn context(&self) -> usize {
        self.max_positions
    }
}

impl<B: Backend> Trainable<B> for Gpt2<B> {
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)> {
        let mut out = gpt2_denses!(self, iter, &);
        if let Some(head) = &self.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }

    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)> {
        let mut out = gpt2_denses!(self, iter_mut, &mut);
        if let Some(head) = &mut self.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }

    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError> {
        causal_batch_logits(self, ids)
    }

    scored_through_head!(|m, h| Ok(m.lm_logits(h)));

    fn context(&self) -> usize {
        self.n_positions
    }

    fn default_targets(&self) -> &'static [&'static str] {
        &["c_attn"]
    }
}

macro_rules! glm2_denses {
    ($model:expr, $iter:ident, $($r:tt)*) => {{
        let mut out = Vec::new();
        for (i, l) in $model.layers.$iter().enumerate() {
            let p = format!("transformer.encoder.layers.{i}");
            out.push((format!("{p}.self_attention.query_key_value"), $($r)* l.query_key_value));
            out.push((format!("{p}.self_attention.dense"), $($r)* l.dense));
            out.push((format!("{p}.mlp.dense_h_to_4h"), $($r)* l.dense_h_to_4h));
            out.push((format!("{p}.mlp.dense_4h_to_h"), $($r)* l.dense_4h_to_h));
        }
        if let Some(head) = $($r)* $model.output_layer {
            out.push(("transformer.output_layer".to_string(), head));
        }
        out
    }};
}

/// ChatGLM2/3 and GLM-4 in the `chatglm` layout, under `ChatGLMForConditionalGeneration`'s
/// module names (`transformer.encoder.layers.0.self_attention.query_key_value`).
impl<B: Backend> Trainable<B> for ChatGlmV2<B> {
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)> {
        glm2_denses!(self, iter, &)
    }

    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)> {
        glm2_denses!(self, iter_mut, &mut)
    }

    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError> {
        causal_batch_logits(self, ids)
    }

    scored_through_head!(|m, h| match &m.output_layer {
        Some(head) => Ok(head.forward(h)),
        None => Err(FinetuneError::Config(
            "this checkpoint has no output_layer: it cannot be fine-tuned as a language model"
                .into(),
        )),
    });

    fn context(&self) -> usize {
        self.max_positions
    }

    fn default_targets(&self) -> &'static [&'static str] {
        &["query_key_value"]
    }
}

macro_rules! glm_hf_denses {
    ($model:expr, $iter:ident, $($r:tt)*) => {{
        let mut out = Vec::new();
        for (i, l) in $model.layers.$iter().enumerate() {
            let p = format!("model.layers.{i}");
            out.push((format!("{p}.self_attn.q_proj"), $($r)* l.q_proj));
            out.push((format!("{p}.self_attn.k_proj"), $($r)* l.k_proj));
            out.push((format!("{p}.self_attn.v_proj"), $($r)* l.v_proj));
            out.push((format!("{p}.self_attn.o_proj"), $($r)* l.o_proj));
            out.push((format!("{p}.mlp.gate_up_proj"), $($r)* l.gate_up_proj));
            out.push((format!("{p}.mlp.down_proj"), $($r)* l.down_proj));
        }
        if let Some(head) = $($r)* $model.lm_head {
            out.push(("lm_head".to_string(), head));
        }
        out
    }};
}

/// GLM-4 as transformers' `GlmForCausalLM` (`model.layers.0.self_attn.q_proj`,
/// `model.layers.0.mlp.gate_up_proj`).
impl<B: Backend> Trainable<B> for GlmHf<B> {
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)> {
        glm_hf_denses!(self, iter, &)
    }

    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)> {
        glm_hf_denses!(self, iter_mut, &mut)
    }

    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError> {
        causal_batch_logits(self, ids)
    }

    scored_through_head!(|m, h| Ok(m.lm_logits(h)));

    fn context(&self) -> usize {
        self.max_positions
    }
}

/// BERT under BertForMaskedLM's module names (`bert.encoder.layer.0.attention.self.query`,
/// `cls.predictions.transform.dense`) when the checkpoint has an MLM head, else BertModel's
/// (`encoder.layer.0.attention.self.query`, `pooler.dense`) — the names PEFT gives a model
/// loaded with `AutoModelForMaskedLM` / `AutoModel`.
macro_rules! bert_denses {
    ($model:expr, $iter:ident, $($r:tt)*) => {{
        let p = if $model.cls.is_some() { "bert." } else { "" };
        let mut out = Vec::new();
        for (i, layer) in $model.layers.$iter().enumerate() {
            let l = format!("{p}encoder.layer.{i}");
            out.push((format!("{l}.attention.self.query"), $($r)* layer.attention.query));
            out.push((format!("{l}.attention.self.key"), $($r)* layer.attention.key));
            out.push((format!("{l}.attention.self.value"), $($r)* layer.attention.value));
            out.push((format!("{l}.attention.output.dense"), $($r)* layer.attention.dense));
            out.push((format!("{l}.intermediate.dense"), $($r)* layer.intermediate));
            out.push((format!("{l}.output.dense"), $($r)* layer.output));
        }
        if let Some(pooler) = $($r)* $model.pooler {
            out.push((format!("{p}pooler.dense"), pooler));
        }
        if let Some(cls) = $($r)* $model.cls {
            out.push(("cls.predictions.transform.dense".to_string(), $($r)* cls.dense));
        }
        out
    }};
}

/// BERT trains with BertForMaskedLM's loss: the MLM logits of every position, scored against
/// that position's own label (no shift), padding masked out of the attention.
impl<B: Backend> Trainable<B> for Bert<B> {
    fn dense_layers(&self) -> Vec<(String, &Dense<B>)> {
        bert_denses!(self, iter, &)
    }

    fn dense_layers_mut(&mut self) -> Vec<(String, &mut Dense<B>)> {
        bert_denses!(self, iter_mut, &mut)
    }

    fn batch_logits(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, FinetuneError> {
        let [b, t] = ids.dims();
        self.padded_logits(ids, &vec![t; b])
    }

    fn padded_logits(
        &self,
        ids: Tensor<B, 2, Int>,
        lengths: &[usize],
    ) -> Result<Tensor<B, 3>, FinetuneError> {
        let [b, t] = ids.dims();
        let mask: Vec<i64> = (0..b)
            .flat_map(|r| (0..t).map(move |j| i64::from(j < lengths[r])))
            .collect();
        let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, [b, t]), &ids.device());
        let hidden = self
            .forward(ids, None, Some(mask))
            .map_err(|e| FinetuneError::Data(e.to_string()))?;
        self.mlm_logits(hidden).ok_or_else(|| {
            FinetuneError::Config(
                "this BERT checkpoint has no masked-LM head (cls.predictions): LoRA trains BERT \
                 with the masked-LM loss, which needs a BertForMaskedLM checkpoint"
                    .into(),
            )
        })
    }

    fn label_shift(&self) -> usize {
        0
    }

    fn default_targets(&self) -> &'static [&'static str] {
        &["query", "value"]
    }

    fn context(&self) -> usize {
        self.max_positions()
    }
}

/// The settings of a LoRA adapter (PEFT's `adapter_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank `r`.
    pub rank: usize,
    /// `lora_alpha`; the update is scaled by `alpha / r`.
    pub alpha: f64,
    /// `lora_dropout`.
    pub dropout: f64,
    /// Module names (`q_proj`, `c_attn`) or full module paths the adapters go on.
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Whether module `path` is one PEFT's `target_modules` list selects: the whole path, or its
/// last dotted components, equal to a target.
pub fn is_target(path: &str, targets: &[String]) -> bool {
    targets
        .iter()
        .any(|t| path == t || path.ends_with(&format!(".{t}")))
}

/// The module paths of `model` that `targets` select; every target must select something.
pub fn target_paths<B: Backend, M: Trainable<B>>(
    model: &M,
    targets: &[String],
) -> Result<Vec<String>, FinetuneError> {
    if targets.is_empty() {
        return Err(FinetuneError::Config(
            "no LoRA target modules: give --target (e.g. q_proj,v_proj)".into(),
        ));
    }
    let layers = model.dense_layers();
    for t in targets {
        if !layers
            .iter()
            .any(|(p, _)| is_target(p, std::slice::from_ref(t)))
        {
            let mut names: Vec<&str> = layers
                .iter()
                .map(|(p, _)| p.rsplit('.').next().unwrap_or(p))
                .collect();
            names.sort_unstable();
            names.dedup();
            return Err(FinetuneError::Config(format!(
                "LoRA target `{t}` matches no linear layer of this model (its layers: {})",
                names.join(", ")
            )));
        }
    }
    Ok(layers
        .iter()
        .filter(|(p, _)| is_target(p, targets))
        .map(|(p, _)| p.clone())
        .collect())
}

/// Puts a fresh adapter (PEFT's initialisation, from `seed`) on every targeted layer; returns
/// how many layers took one.
pub fn attach_new<B: Backend, M: Trainable<B>>(
    model: &mut M,
    config: &LoraConfig,
    seed: u64,
) -> Result<usize, FinetuneError> {
    target_paths(model, &config.targets)?;
    let mut n = 0;
    for (path, dense) in model.dense_layers_mut() {
        if is_target(&path, &config.targets) {
            let device = dense.weight.device();
            dense.lora = Some(Lora::init(
                &path,
                dense.d_in(),
                dense.d_out(),
                config.rank,
                config.alpha,
                config.dropout,
                seed,
                &device,
            ));
            n += 1;
        }
    }
    Ok(n)
}

fn config_err(path: &Path, what: impl std::fmt::Display) -> FinetuneError {
    FinetuneError::Adapter(format!("{}: {what}", path.display()))
}

/// Reads an adapter folder's `adapter_config.json`. Settings the zoo does not implement
/// (DoRA, per-layer ranks, bias training, extra trained modules) are errors, not ignored.
pub fn read_config(dir: &Path) -> Result<LoraConfig, FinetuneError> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| config_err(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| config_err(&path, e))?;
    if let Some(t) = v.get("peft_type").and_then(Value::as_str) {
        if t != "LORA" {
            return Err(config_err(
                &path,
                format!("peft_type `{t}`: only LORA adapters are supported"),
            ));
        }
    }
    let flag = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let nonempty = |k: &str| match v.get(k) {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    for (key, on) in [
        ("use_dora", flag("use_dora")),
        ("use_rslora", flag("use_rslora")),
        ("lora_bias", flag("lora_bias")),
        ("rank_pattern", nonempty("rank_pattern")),
        ("alpha_pattern", nonempty("alpha_pattern")),
        ("modules_to_save", nonempty("modules_to_save")),
        ("layers_to_transform", nonempty("layers_to_transform")),
        ("target_parameters", nonempty("target_parameters")),
    ] {
        if on {
            return Err(config_err(&path, format!("`{key}` is set: not supported")));
        }
    }
    if let Some(b) = v.get("bias").and_then(Value::as_str) {
        if b != "none" {
            return Err(config_err(
                &path,
                format!("bias `{b}`: only \"none\" is supported"),
            ));
        }
    }
    let rank = v
        .get("r")
        .and_then(Value::as_u64)
        .filter(|&r| r > 0)
        .ok_or_else(|| config_err(&path, "`r` is missing or not a positive integer"))?
        as usize;
    let alpha = v
        .get("lora_alpha")
        .and_then(Value::as_f64)
        .ok_or_else(|| config_err(&path, "`lora_alpha` is missing"))?;
    let dropout = v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(config_err(
            &path,
            format!("`lora_dropout` {dropout} is not in [0, 1)"),
        ));
    }
    let targets = match v.get("target_modules") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| config_err(&path, "`target_modules` holds a non-string"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::String(s))
            if s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.') =>
        {
            vec![s.clone()]
        }
        Some(Value::String(s)) => {
            return Err(config_err(
                &path,
                format!("`target_modules` is the regular expression `{s}`: give a list of names"),
            ))
        }
        _ => return Err(config_err(&path, "`target_modules` is missing")),
    };
    Ok(LoraConfig {
        rank,
        alpha,
        dropout,
        targets,
    })
}

/// Loads the adapter folder `dir` (PEFT's files) onto `model`: every targeted layer gets its
/// `lora_A` / `lora_B` from `adapter_model.safetensors`; a missing, misshapen or unused tensor
/// is an error. Returns the adapter's settings.
pub fn load_adapter<B: Backend, M: Trainable<B>>(
    model: &mut M,
    dir: &Path,
) -> Result<LoraConfig, FinetuneError> {
    let config = read_config(dir)?;
    target_paths(model, &config.targets)?;
    let file = dir.join("adapter_model.safetensors");
    if !file.is_file() {
        return Err(FinetuneError::Adapter(format!(
            "{}: no adapter_model.safetensors",
            dir.display()
        )));
    }
    let mut weights = Weights::open(&file)?;
    for (path, dense) in model.dense_layers_mut() {
        if !is_target(&path, &config.targets) {
            continue;
        }
        let (d_in, d_out, r) = (dense.d_in(), dense.d_out(), config.rank);
        let a = weights.take_f32(&format!("{PEFT_PREFIX}{path}.lora_A.weight"), &[r, d_in])?;
        let b = weights.take_f32(&format!("{PEFT_PREFIX}{path}.lora_B.weight"), &[d_out, r])?;
        let device = dense.weight.device();
        dense.lora = Some(Lora::new(
            &path,
            Tensor::from_data(TensorData::new(a, [r, d_in]), &device),
            Tensor::from_data(TensorData::new(b, [d_out, r]), &device),
            config.alpha,
            config.dropout,
        ));
    }
    weights.finish(|_| false)?;
    Ok(config)
}

/// The adapter tensors of `model` under PEFT's names, `(shape, values)`.
pub fn adapter_tensors<B: Backend, M: Trainable<B>>(
    model: &M,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let mut out = BTreeMap::new();
    for (path, dense) in model.dense_layers() {
        if let Some(lora) = &dense.lora {
            for (name, t) in [("lora_A", lora.a.val()), ("lora_B", lora.b.val())] {
                let shape = t.dims().to_vec();
                let values: Vec<f32> = t
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("f32 adapter");
                out.insert(
                    format!("{PEFT_PREFIX}{path}.{name}.weight"),
                    (shape, values),
                );
            }
        }
    }
    out
}

/// Writes `tensors` and `config` into the folder `dir` as PEFT's two files, each through a
/// temporary name renamed into place. `base` is recorded as `base_model_name_or_path`; the
/// adapter is a causal LM's (`task_type` `CAUSAL_LM`).
pub fn write_adapter(
    dir: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    config: &LoraConfig,
    base: &str,
    fan_in_fan_out: bool,
) -> Result<(), FinetuneError> {
    write_adapter_as(
        dir,
        tensors,
        config,
        base,
        fan_in_fan_out,
        Some("CAUSAL_LM"),
    )
}

/// [`write_adapter`] with PEFT's `task_type` given: `None` (JSON null) is a plain `PeftModel`,
/// what PEFT writes for a BertForMaskedLM (it has no masked-LM task type).
pub fn write_adapter_as(
    dir: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    config: &LoraConfig,
    base: &str,
    fan_in_fan_out: bool,
    task_type: Option<&str>,
) -> Result<(), FinetuneError> {
    std::fs::create_dir_all(dir).map_err(|e| FinetuneError::io(dir, e))?;
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let views = raw
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| FinetuneError::Adapter(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes = safetensors::serialize(views, metadata)
        .map_err(|e| FinetuneError::Adapter(e.to_string()))?;
    write_atomic(&dir.join("adapter_model.safetensors"), &bytes)?;
    let mut targets = config.targets.clone();
    targets.sort();
    let cfg = json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base,
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_dora": false,
        "use_rslora": false,
        "modules_to_save": null,
    });
    let text = serde_json::to_string_pretty(&cfg).expect("JSON");
    write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file in the same folder, renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FinetuneError> {
    let tmp = tmp_name(path);
    std::fs::write(&tmp, bytes).map_err(|e| FinetuneError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| FinetuneError::io(path, e))
}

/// `path` with `.tmp-<pid>` appended.
pub fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(name)
}
