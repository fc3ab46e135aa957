//! Full fine-tuning (`--method full`): every parameter of a small model trains, and the result
//! is a Hugging Face folder (`model.safetensors` under the base checkpoint's names and
//! layouts, in f32, beside a copy of the base folder's config and tokenizer files).
//!
//! Implemented for GPT-2, LLaMA and GLM. The checkpoint layout is the loader's table read
//! backwards. GPT-2 (models/gpt2/src/load.rs): `Conv1D` weights are `[in, out]`, so the
//! module's `[out, in]` matrices are transposed back; a tied LM head is `wte` and is not
//! written (as transformers' `save_pretrained` leaves it out). LLaMA (models/llama/src/load.rs):
//! every matrix is an `nn.Linear`, `[out, in]` as the module holds it, q/k in HF's half-split
//! order (the loader permutes only GGUF rows; the base must be an HF folder); a tied head is
//! not written either. GLM (models/glm/src): ChatGLM-6B, ChatGLM2/3's `chatglm` layout and
//! GLM-4's `GlmForCausalLM`, every matrix an `nn.Linear` held `[out, in]` with the fused
//! `query_key_value` / `gate_up_proj` rows as stored (the modules split them at run time); the
//! rotary `inv_freq` buffers some checkpoints carry are copied from the base unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::FinetuneError;
use crate::glm::{ChatGlmV1, ChatGlmV2, GlmHf};
use crate::gpt2::Gpt2;
use crate::llama::Llama;
use crate::nn::{Dense, LayerNorm, RmsNorm};

/// Tensors by checkpoint name: `(shape, row-major f32 values)`.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn put<B: Backend, const D: usize>(out: &mut NamedTensors, name: String, t: Tensor<B, D>) {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 tensor");
    out.insert(name, (shape, values));
}

fn put_norm<B: Backend>(out: &mut NamedTensors, name: &str, n: &LayerNorm<B>) {
    put(out, format!("{name}.weight"), n.weight.val());
    put(out, format!("{name}.bias"), n.bias.val());
}

/// A `Conv1D` layer: weight `[in, out]`.
fn put_conv1d<B: Backend>(out: &mut NamedTensors, name: &str, d: &Dense<B>) {
    put(out, format!("{name}.weight"), d.weight.val().transpose());
    if let Some(b) = &d.bias {
        put(out, format!("{name}.bias"), b.val());
    }
}

/// Every parameter of a GPT-2 module under its checkpoint name (`prefix` is `transformer.`
/// or empty, as the base checkpoint names them) in the checkpoint's layout.
pub fn gpt2_tensors<B: Backend>(model: &Gpt2<B>, prefix: &str) -> NamedTensors {
    let mut out = BTreeMap::new();
    put(
        &mut out,
        format!("{prefix}wte.weight"),
        model.wte.weight.val(),
    );
    put(
        &mut out,
        format!("{prefix}wpe.weight"),
        model.wpe.weight.val(),
    );
    for (i, block) in model.h.iter().enumerate() {
        let b = format!("{prefix}h.{i}");
        put_norm(&mut out, &format!("{b}.ln_1"), &block.ln_1);
        put_conv1d(&mut out, &format!("{b}.attn.c_attn"), &block.attn.c_attn);
        put_conv1d(&mut out, &format!("{b}.attn.c_proj"), &block.attn.c_proj);
        put_norm(&mut out, &format!("{b}.ln_2"), &block.ln_2);
        put_conv1d(&mut out, &format!("{b}.mlp.c_fc"), &block.mlp.c_fc);
        put_conv1d(&mut out, &format!("{b}.mlp.c_proj"), &block.mlp.c_proj);
    }
    put_norm(&mut out, &format!("{prefix}ln_f"), &model.ln_f);
    if let Some(head) = &model.lm_head {
        // nn.Linear: [vocab, d], the module's own layout.
        put(&mut out, "lm_head.weight".to_string(), head.weight.val());
    }
    out
}

/// An `nn.Linear` layer: weight `[out, in]`, as the module holds it.
fn put_linear<B: Backend>(out: &mut NamedTensors, name: &str, d: &Dense<B>) {
    put(out, format!("{name}.weight"), d.weight.val());
    if let Some(b) = &d.bias {
        put(out, format!("{name}.bias"), b.val());
    }
}

fn put_rms<B: Backend>(out: &mut NamedTensors, name: &str, n: &RmsNorm<B>) {
    put(out, format!("{name}.weight"), n.weight.val());
}

/// A module of a block, by the tensors it writes.
enum Part<'a, B: Backend> {
    /// `nn.Linear`: weight `[out, in]` (and bias).
    Linear(&'a Dense<B>),
    /// RMSNorm: weight.
    Rms(&'a RmsNorm<B>),
    /// LayerNorm: weight and bias.
    Norm(&'a LayerNorm<B>),
}

/// Writes the modules of one block under `{block}.{name}`.
fn put_block<B: Backend>(out: &mut NamedTensors, block: &str, parts: &[(&str, Part<'_, B>)]) {
    for (name, part) in parts {
        let name = format!("{block}.{name}");
        match part {
            Part::Linear(d) => put_linear(out, &name, d),
            Part::Rms(n) => put_rms(out, &name, n),
            Part::Norm(n) => put_norm(out, &name, n),
        }
    }
}

/// Every parameter of a LLaMA module under its checkpoint name (`prefix` is `model.` or
/// empty, as the base checkpoint names them).
pub fn llama_tensors<B: Backend>(model: &Llama<B>, prefix: &str) -> NamedTensors {
    let mut out = BTreeMap::new();
    put(
        &mut out,
        format!("{prefix}embed_tokens.weight"),
        model.embed_tokens.weight.val(),
    );
    for (i, layer) in model.layers.iter().enumerate() {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        put_block(
            &mut out,
            &format!("{prefix}layers.{i}"),
            &[
                ("input_layernorm", Part::Rms(&layer.input_layernorm)),
                ("self_attn.q_proj", Part::Linear(&a.q_proj)),
                ("self_attn.k_proj", Part::Linear(&a.k_proj)),
                ("self_attn.v_proj", Part::Linear(&a.v_proj)),
                ("self_attn.o_proj", Part::Linear(&a.o_proj)),
                (
                    "post_attention_layernorm",
                    Part::Rms(&layer.post_attention_layernorm),
                ),
                ("mlp.gate_proj", Part::Linear(&m.gate_proj)),
                ("mlp.up_proj", Part::Linear(&m.up_proj)),
                ("mlp.down_proj", Part::Linear(&m.down_proj)),
            ],
        );
    }
    put_rms(&mut out, &format!("{prefix}norm"), &model.norm);
    if let Some(head) = &model.lm_head {
        put_linear(&mut out, "lm_head", head);
    }
    out
}

/// The prefix the LLaMA checkpoint of the folder `dir` puts on its names (`model.` or none).
pub fn llama_prefix(dir: &Path) -> Result<&'static str, FinetuneError> {
    let w = crate::nn::Weights::open(dir)?;
    Ok(if w.contains("embed_tokens.weight") {
        ""
    } else {
        "model."
    })
}

/// Writes a trained LLaMA as a Hugging Face folder `dir`: `model.safetensors` plus the other
/// files of the base folder `base` (config, tokenizer).
pub fn write_llama<B: Backend>(
    dir: &Path,
    model: &Llama<B>,
    base: &Path,
    prefix: &str,
) -> Result<(), FinetuneError> {
    std::fs::create_dir_all(dir).map_err(|e| FinetuneError::io(dir, e))?;
    super::merge::write_folder(base, dir, &llama_tensors(model, prefix))
}

/// Every parameter of a GLM-4 `GlmForCausalLM` module under its checkpoint name.
pub fn glm_hf_tensors<B: Backend>(model: &GlmHf<B>) -> NamedTensors {
    let mut out = BTreeMap::new();
    put(
        &mut out,
        "model.embed_tokens.weight".into(),
        model.embed_tokens.weight.val(),
    );
    for (i, layer) in model.layers.iter().enumerate() {
        put_block(
            &mut out,
            &format!("model.layers.{i}"),
            &[
                ("input_layernorm", Part::Rms(&layer.input_layernorm)),
                ("self_attn.q_proj", Part::Linear(&layer.q_proj)),
                ("self_attn.k_proj", Part::Linear(&layer.k_proj)),
                ("self_attn.v_proj", Part::Linear(&layer.v_proj)),
                ("self_attn.o_proj", Part::Linear(&layer.o_proj)),
                (
                    "post_attention_layernorm",
                    Part::Rms(&layer.post_attention_layernorm),
                ),
                ("mlp.gate_up_proj", Part::Linear(&layer.gate_up_proj)),
                ("mlp.down_proj", Part::Linear(&layer.down_proj)),
            ],
        );
    }
    put_rms(&mut out, "model.norm", &model.norm);
    if let Some(head) = &model.lm_head {
        put_linear(&mut out, "lm_head", head);
    }
    out
}

/// Every parameter of a ChatGLM2/3 (`chatglm` layout) module under its checkpoint name
/// (`prefix` is `transformer.` or empty, as the base names them).
pub fn chatglm_v2_tensors<B: Backend>(model: &ChatGlmV2<B>, prefix: &str) -> NamedTensors {
    let mut out = BTreeMap::new();
    put(
        &mut out,
        format!("{prefix}embedding.word_embeddings.weight"),
        model.word_embeddings.weight.val(),
    );
    for (i, layer) in model.layers.iter().enumerate() {
        put_block(
            &mut out,
            &format!("{prefix}encoder.layers.{i}"),
            &[
                ("input_layernorm", Part::Rms(&layer.input_layernorm)),
                (
                    "self_attention.query_key_value",
                    Part::Linear(&layer.query_key_value),
                ),
                ("self_attention.dense", Part::Linear(&layer.dense)),
                (
                    "post_attention_layernorm",
                    Part::Rms(&layer.post_attention_layernorm),
                ),
                ("mlp.dense_h_to_4h", Part::Linear(&layer.dense_h_to_4h)),
                ("mlp.dense_4h_to_h", Part::Linear(&layer.dense_4h_to_h)),
            ],
        );
    }
    put_rms(
        &mut out,
        &format!("{prefix}encoder.final_layernorm"),
        &model.final_layernorm,
    );
    if let Some(head) = &model.output_layer {
        put_linear(&mut out, &format!("{prefix}output_layer"), head);
    }
    out
}

/// Every parameter of a ChatGLM-6B module under its checkpoint name (`prefix` is
/// `transformer.` or empty, as the base names them; the head is `lm_head` either way).
pub fn chatglm_v1_tensors<B: Backend>(model: &ChatGlmV1<B>, prefix: &str) -> NamedTensors {
    let mut out = BTreeMap::new();
    put(
        &mut out,
        format!("{prefix}word_embeddings.weight"),
        model.word_embeddings.weight.val(),
    );
    for (i, layer) in model.layers.iter().enumerate() {
        put_block(
            &mut out,
            &format!("{prefix}layers.{i}"),
            &[
                ("input_layernorm", Part::Norm(&layer.input_layernorm)),
                (
                    "attention.query_key_value",
                    Part::Linear(&layer.query_key_value),
                ),
                ("attention.dense", Part::Linear(&layer.dense)),
                (
                    "post_attention_layernorm",
                    Part::Norm(&layer.post_attention_layernorm),
                ),
                ("mlp.dense_h_to_4h", Part::Linear(&layer.dense_h_to_4h)),
                ("mlp.dense_4h_to_h", Part::Linear(&layer.dense_4h_to_h)),
            ],
        );
    }
    put_norm(
        &mut out,
        &format!("{prefix}final_layernorm"),
        &model.final_layernorm,
    );
    if let Some(head) = &model.lm_head {
        put_linear(&mut out, "lm_head", head);
    }
    out
}

/// The prefix a ChatGLM checkpoint of the folder `dir` puts on its names (`transformer.` or
/// none): ChatGLM-6B's `word_embeddings` or ChatGLM2/3's `embedding.word_embeddings`.
pub fn chatglm_prefix(dir: &Path) -> Result<&'static str, FinetuneError> {
    let w = crate::nn::Weights::open(dir)?;
    Ok(
        if w.contains("transformer.word_embeddings.weight")
            || w.contains("transformer.embedding.word_embeddings.weight")
        {
            "transformer."
        } else {
            ""
        },
    )
}

/// Writes the trained `tensors` of a GLM model as a Hugging Face folder `dir`, beside the
/// base folder's other files; the base's rotary `inv_freq` buffers (not parameters: the
/// modules compute them from the config) are copied as stored, so the folder has every tensor
/// the base had but a tied head.
pub fn write_glm(dir: &Path, mut tensors: NamedTensors, base: &Path) -> Result<(), FinetuneError> {
    let mut weights = crate::nn::Weights::open(base)?;
    let buffers: Vec<String> = weights
        .names()
        .filter(|n| n.ends_with("inv_freq") && !tensors.contains_key(*n))
        .map(str::to_string)
        .collect();
    for name in buffers {
        let shape = weights.shape(&name).unwrap_or_default();
        let values = weights.take_f32(&name, &shape)?;
        tensors.insert(name, (shape, values));
    }
    std::fs::create_dir_all(dir).map_err(|e| FinetuneError::io(dir, e))?;
    super::merge::write_folder(base, dir, &tensors)
}

/// The prefix the base checkpoint of `dir` puts on GPT-2's names (`transformer.` or none).
pub fn gpt2_prefix(dir: &Path) -> Result<&'static str, FinetuneError> {
    let w = crate::nn::Weights::open(dir)?;
    Ok(if w.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    })
}

/// Writes a trained GPT-2 as a Hugging Face folder `dir`: `model.safetensors` plus the other
/// files of the base folder `base` (config, tokenizer).
pub fn write_gpt2<B: Backend>(
    dir: &Path,
    model: &Gpt2<B>,
    base: &Path,
    prefix: &str,
) -> Result<(), FinetuneError> {
    std::fs::create_dir_all(dir).map_err(|e| FinetuneError::io(dir, e))?;
    super::merge::write_folder(base, dir, &gpt2_tensors(model, prefix))
}

/// Gives every parameter an id derived from its module path (FNV-1a of `h.0.attn.c_attn.weight`),
/// so that an optimizer state saved in one run (Burn keys it by parameter id, and a loaded
/// model's ids are random) finds its parameters in the next: what `--resume` needs.
pub fn path_param_ids<B: Backend, M: Module<B>>(model: M) -> M {
    model.map(&mut PathIds { path: Vec::new() })
}

struct PathIds {
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for PathIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        let hash = self
            .path
            .join(".")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
        Param::from_mapped_value(ParamId::from(hash), tensor, mapper)
    }
}
