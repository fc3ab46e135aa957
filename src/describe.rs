//! A model on disk described as a catalog entry, from its own config (a folder's
//! `config.json`, or a GGUF file's metadata), so `zoo compare` and `zoo info` treat folders and
//! `.gguf` files like catalog ids; and weight memory in the format a model is loaded in.

use crate::catalog::compare::Comparison;
use crate::catalog::{
    Activation, ArchConfig, Architecture, ModelEntry, NormKind, NormPosition, Positional,
};
use crate::glm::{ChatGlmV1Config, ChatGlmV2Config, GlmKind};
use crate::nn::{QType, WeightFormat};
use crate::resolve::{Family, ModelRef};
use crate::{bert, blip2, bloom, codegen, glm, gpt2, gptneo, llama, opt, t5, Error};

fn activation(name: &str) -> Option<Activation> {
    match name {
        "gelu" => Some(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluNew),
        "silu" | "swish" => Some(Activation::Silu),
        "relu" => Some(Activation::Relu),
        _ => None,
    }
}

/// The architecture facts of a LLaMA config (a LLaMA folder or GGUF, BLIP-2's language model).
fn llama_arch(c: &llama::LlamaConfig) -> ArchConfig {
    let u = |n: usize| Some(n as u64);
    ArchConfig {
        layers: u(c.num_hidden_layers),
        hidden_size: u(c.hidden_size),
        heads: u(c.num_attention_heads),
        kv_heads: u(c.kv_heads()),
        head_dim: u(c.head_dim()),
        intermediate_size: u(c.intermediate_size),
        vocab_size: u(c.vocab_size),
        max_positions: u(c.context_length()),
        positional: Some(Positional::RopeHalf),
        rope_theta: Some(c.rope_theta()),
        norm: Some(NormKind::Rmsnorm),
        norm_eps: Some(c.rms_norm_eps),
        norm_position: Some(NormPosition::Pre),
        activation: activation(&c.hidden_act),
        gated_mlp: Some(true),
        qkv_bias: Some(c.attention_bias),
        linear_bias: Some(c.mlp_bias),
        tied_embeddings: Some(c.tie_word_embeddings),
        ..ArchConfig::default()
    }
}

fn entry(id: &str, architecture: Architecture, variant: String, c: ArchConfig) -> ModelEntry {
    ModelEntry {
        id: id.to_string(),
        architecture,
        variant,
        license: "unknown (a local model)".to_string(),
        parameters: None,
        context_length: c.max_positions,
        template: "none".to_string(),
        notes: None,
        config: c,
        sources: Vec::new(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(model: &ModelRef) -> Result<T, Error> {
    let path = model.path.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Input(format!("cannot parse {}: {e}", path.display())))
}

/// The catalog entry `id` (a label for tables) describing the model at `model`, from its config.
pub fn catalog_entry(model: &ModelRef, id: &str) -> Result<ModelEntry, Error> {
    let u = |n: usize| Some(n as u64);
    let path = model.path.display().to_string();
    Ok(match model.family {
        Family::Gpt2 => {
            let c = if model.path.is_file() {
                let file = crate::gguf::GgufFile::open(&model.path)
                    .map_err(|e| Error::Input(format!("{path}: {e}")))?;
                gpt2::load::config_from_gguf(&file)
                    .map_err(|e| Error::Input(format!("{path}: {e}")))?
            } else {
                gpt2::load::read_config(&model.path)?
            };
            entry(
                id,
                Architecture::Gpt2,
                format!("GPT-2 at {path}"),
                ArchConfig {
                    layers: u(c.n_layer),
                    hidden_size: u(c.n_embd),
                    heads: u(c.n_head),
                    kv_heads: u(c.n_head),
                    intermediate_size: u(c.inner_size()),
                    vocab_size: u(c.vocab_size),
                    max_positions: u(c.n_positions),
                    positional: Some(Positional::Learned),
                    norm: Some(NormKind::Layernorm),
                    norm_eps: Some(c.layer_norm_epsilon),
                    norm_position: Some(NormPosition::Pre),
                    activation: activation(&c.activation_function),
                    gated_mlp: Some(false),
                    qkv_bias: Some(true),
                    linear_bias: Some(true),
                    tied_embeddings: Some(c.tie_word_embeddings),
                    ..ArchConfig::default()
                },
            )
        }
        Family::Bert => {
            let c = bert::read_config(&model.path)?;
            entry(
                id,
                Architecture::Bert,
                format!("BERT at {path}"),
                ArchConfig {
                    layers: u(c.num_hidden_layers),
                    hidden_size: u(c.hidden_size),
                    heads: u(c.num_attention_heads),
                    kv_heads: u(c.num_attention_heads),
                    intermediate_size: u(c.intermediate_size),
                    vocab_size: u(c.vocab_size),
                    max_positions: u(c.max_position_embeddings),
                    type_vocab_size: u(c.type_vocab_size),
                    positional: Some(Positional::Learned),
                    norm: Some(NormKind::Layernorm),
                    norm_eps: Some(c.layer_norm_eps),
                    norm_position: Some(NormPosition::Post),
                    activation: activation(&c.hidden_act),
                    gated_mlp: Some(false),
                    qkv_bias: Some(true),
                    linear_bias: Some(true),
                    tied_embeddings: Some(c.tie_word_embeddings),
                    ..ArchConfig::default()
                },
            )
        }
        Family::Llama => {
            let (c, what, dtype) = if model.path.is_file() {
                let file = crate::gguf::GgufFile::open(&model.path)
                    .map_err(|e| Error::Input(format!("{path}: {e}")))?;
                let c = llama::config_from_gguf(&file)
                    .map_err(|e| Error::Input(format!("{path}: {e}")))?;
                let types: std::collections::BTreeSet<String> =
                    file.tensors().iter().map(|t| t.dtype.to_string()).collect();
                let dtype = types.into_iter().collect::<Vec<_>>().join("+");
                (c, "GGUF", Some(dtype))
            } else {
                (llama::load::read_config(&model.path)?, "folder", None)
            };
            entry(
                id,
                Architecture::Llama,
                format!("LLaMA ({what}) at {path}"),
                ArchConfig {
                    dtype,
                    ..llama_arch(&c)
                },
            )
        }
        Family::Glm => match glm::detect(&model.path)? {
            GlmKind::V1 => {
                let c: ChatGlmV1Config = read_json(model)?;
                entry(
                    id,
                    Architecture::Chatglm,
                    format!("ChatGLM-6B layout at {path}"),
                    ArchConfig {
                        layers: u(c.num_layers),
                        hidden_size: u(c.hidden_size),
                        heads: u(c.num_attention_heads),
                        kv_heads: u(c.num_attention_heads),
                        intermediate_size: u(c.inner_size()),
                        vocab_size: u(c.vocab_size),
                        max_positions: u(c.max_sequence_length),
                        positional: Some(Positional::Rope2d),
                        rope_theta: Some(10000.0),
                        norm: Some(NormKind::Layernorm),
                        norm_eps: Some(c.layernorm_epsilon),
                        norm_position: Some(NormPosition::Deepnorm),
                        activation: Some(Activation::GeluNew),
                        gated_mlp: Some(false),
                        qkv_bias: Some(true),
                        linear_bias: Some(true),
                        tied_embeddings: Some(false),
                        ..ArchConfig::default()
                    },
                )
            }
            GlmKind::V2 => {
                let c: ChatGlmV2Config = read_json(model)?;
                entry(
                    id,
                    Architecture::Chatglm,
                    format!("ChatGLM2/3 / GLM-4 (chatglm layout) at {path}"),
                    ArchConfig {
                        layers: u(c.num_layers),
                        hidden_size: u(c.hidden_size),
                        heads: u(c.num_attention_heads),
                        kv_heads: u(c.kv_heads()),
                        head_dim: u(c.kv_channels),
                        intermediate_size: u(c.ffn_hidden_size),
                        vocab_size: u(c.padded_vocab_size),
                        max_positions: u(c.seq_length),
                        positional: Some(Positional::RopeInterleaved),
                        rope_theta: Some(10000.0 * c.rope_ratio),
                        rotary_fraction: Some(0.5),
                        norm: Some(if c.rmsnorm {
                            NormKind::Rmsnorm
                        } else {
                            NormKind::Layernorm
                        }),
                        norm_eps: Some(c.layernorm_epsilon),
                        norm_position: Some(NormPosition::Pre),
                        activation: Some(Activation::Silu),
                        gated_mlp: Some(true),
                        qkv_bias: Some(c.add_qkv_bias),
                        linear_bias: Some(c.add_bias_linear),
                        tied_embeddings: Some(false),
                        ..ArchConfig::default()
                    },
                )
            }
            GlmKind::Hf => {
                let c = glm::hf::read_hf_config(&model.path)?;
                entry(
                    id,
                    Architecture::Glm,
                    format!("GLM-4 (HF layout) at {path}"),
                    ArchConfig {
                        layers: u(c.num_hidden_layers),
                        hidden_size: u(c.hidden_size),
                        heads: u(c.num_attention_heads),
                        kv_heads: u(c.kv_heads()),
                        head_dim: u(c.head_dim()),
                        intermediate_size: u(c.intermediate_size),
                        vocab_size: u(c.vocab_size),
                        max_positions: u(c.max_position_embeddings),
                        positional: Some(Positional::RopeInterleaved),
                        rope_theta: Some(c.rope_theta()),
                        rotary_fraction: Some(c.partial_rotary_factor()),
                        norm: Some(NormKind::Rmsnorm),
                        norm_eps: Some(c.rms_norm_eps),
                        norm_position: Some(NormPosition::Pre),
                        activation: activation(&c.hidden_act),
                        gated_mlp: Some(true),
                        qkv_bias: Some(c.attention_bias),
                        linear_bias: Some(false),
                        tied_embeddings: Some(c.tie_word_embeddings),
                        ..ArchConfig::default()
                    },
                )
            }
        },
        Family::Opt => {
            let c = opt::load::read_config(&model.path)?;
            let pre = c.do_layer_norm_before;
            entry(
                id,
                Architecture::Opt,
                format!("OPT at {path}"),
                ArchConfig {
                    layers: u(c.num_hidden_layers),
                    hidden_size: u(c.hidden_size),
                    heads: u(c.num_attention_heads),
                    kv_heads: u(c.num_attention_heads),
                    intermediate_size: u(c.ffn_dim),
                    vocab_size: u(c.vocab_size),
                    max_positions: u(c.max_position_embeddings),
                    position_offset: Some(2),
                    embed_dim: c.has_projections().then(|| c.embed_dim() as u64),
                    positional: Some(Positional::Learned),
                    norm: Some(NormKind::Layernorm),
                    norm_eps: Some(1e-5),
                    norm_position: Some(if pre {
                        NormPosition::Pre
                    } else {
                        NormPosition::Post
                    }),
                    activation: activation(&c.activation_function),
                    gated_mlp: Some(false),
                    qkv_bias: Some(c.enable_bias),
                    linear_bias: Some(c.enable_bias),
                    tied_embeddings: Some(c.tie_word_embeddings),
                    ..ArchConfig::default()
                },
            )
        }
        Family::Bloom => {
            let c = bloom::read_config(&model.path)?;
            entry(
                id,
                Architecture::Bloom,
                format!("BLOOM at {path}"),
                ArchConfig {
                    layers: u(c.n_layer),
                    hidden_size: u(c.hidden_size),
                    heads: u(c.n_head),
                    kv_heads: u(c.n_head),
                    intermediate_size: u(c.intermediate_size()),
                    vocab_size: u(c.vocab_size),
                    max_positions: u(c.max_positions()),
                    positional: Some(Positional::Alibi),
                    norm: Some(NormKind::Layernorm),
                    norm_eps: Some(c.layer_norm_epsilon),
                    norm_position: Some(NormPosition::Pre),
                    activation: Some(Activation::GeluNew),
                    gated_mlp: Some(false),
                    qkv_bias: Some(true),
                    linear_bias: Some(true),
                    tied_embeddings: Some(c.tie_word_embeddings),
                    embedding_norm: Some(true),
                    ..ArchConfig::default()
                },
            )
        }
        Family::CodeGen => {
            let c = codegen::read_config(&model.path)?;
            let (arch, name) = if c.is_moss() {
                (Architecture::Moss, "MOSS")
            } else {
                (Architecture::Codegen, "CodeGen")
            };
            entry(
                id,
                arch,
                format!("{name} at {path}"),
                ArchConfig {
                    layers: u(c.n_layer),
                    hidden_size: u(c.n_embd),
                    heads: u(c.n_head),
                    kv_heads: u(c.n_head),
                    intermediate_size: u(c.inner_size()),
                    vocab_size: u(c.vocab_size),
                    max_positions: u(c.n_positions),
                    positional: Some(Positional::RopeInterleaved),
                    rope_theta: Some(10000.0),
                    rotary_fraction: Some(c.rotary() as f64 / c.head_dim() as f64),
                    norm: Some(NormKind::Layernorm),
                    norm_eps: Some(c.layer_norm_epsilon),
                    norm_position: Some(NormPosition::Pre),
                    activation: activation(&c.activation_function),
                    gated_mlp: Some(false),
                    qkv_bias: Some(false),
                    linear_bias: Some(true),
                    tied_embeddings: Some(c.tie_word_embeddings),
                    parallel_block: Some(true),
                    // CodeGen's config refuses a tied head: the head is separate, with a bias.
                    lm_head_bias: Some(true),
                    ..ArchConfig::default()
                },
            )
        }
        Family::GptNeo => {
            let c = gptneo::read_config(&model.path)?;
            entry(
                id,
                Architecture::GptNeo,
                format!("GPT-Neo at {path}"),
                ArchConfig {
                    layers: u(c.num_layers),
                    hidden_size: u(c.hidden_size),
                    heads: u(c.num_heads),
                    kv_heads: u(c.num_heads),
                    intermediate_size: u(c.inner_size()),
                    vocab_size: u(c.vocab_size),
                    max_positions: u(c.max_position_embeddings),
                    positional: Some(Positional::Learned),
                    norm: Some(NormKind::Layernorm),
                    norm_eps: Some(c.layer_norm_epsilon),
                    norm_position: Some(NormPosition::Pre),
                    activation: activation(&c.activation_function),
                    gated_mlp: Some(false),
                    qkv_bias: Some(false),
                    linear_bias: Some(true),
                    tied_embeddings: Some(c.tie_word_embeddings),
                    local_window: u(c.window_size),
                    ..ArchConfig::default()
                },
            )
        }
        Family::Blip2 => {
            let b = blip2::load::read_config(&model.path)?;
            let c = &b.text;
            let mut e = entry(
                id,
                Architecture::Llama,
                format!("BLIP-2 with a LLaMA language model at {path}"),
                llama_arch(c),
            );
            e.notes = Some(blip2_note(&b));
            e
        }
        Family::T5 => {
            let c = t5::read_config(&model.path)?;
            entry(
                id,
                Architecture::T5,
                format!("T5 at {path}"),
                ArchConfig {
                    layers: u(c.num_layers),
                    decoder_layers: u(c.decoder_layers()),
                    hidden_size: u(c.d_model),
                    heads: u(c.num_heads),
                    kv_heads: u(c.num_heads),
                    head_dim: u(c.d_kv),
                    intermediate_size: u(c.d_ff),
                    vocab_size: u(c.vocab_size),
                    positional: Some(Positional::Relative),
                    relative_buckets: u(c.relative_attention_num_buckets),
                    norm: Some(NormKind::Rmsnorm),
                    norm_eps: Some(c.layer_norm_epsilon),
                    norm_position: Some(NormPosition::Pre),
                    activation: activation(&c.activation_name()),
                    gated_mlp: Some(c.gated()),
                    qkv_bias: Some(false),
                    linear_bias: Some(false),
                    tied_embeddings: Some(c.tie_word_embeddings != Some(false)),
                    ..ArchConfig::default()
                },
            )
        }
    })
}

/// What a BLIP-2 model adds to its language model: the vision side's parameters and the
/// positions one image takes.
pub fn blip2_note(b: &blip2::Blip2Config) -> String {
    let v = &b.vision;
    format!(
        "vision encoder {} params ({} layers, hidden {}, {}x{} images in {}-pixel patches), Q-Former + queries + projection {} params ({} layers, hidden {}); an image costs {} language-model positions",
        b.vision_parameters(),
        v.num_hidden_layers,
        v.hidden_size,
        v.image_size,
        v.image_size,
        v.patch_size,
        b.qformer_parameters(),
        b.qformer.num_hidden_layers,
        b.qformer.hidden_size,
        b.num_query_tokens
    )
}

/// Bits per weight of a stored format, its block scales included (Q4_0 4.5, Q8_0 8.5).
fn bits(t: QType) -> f64 {
    (t.block_bytes() * 8) as f64 / t.block_size() as f64
}

/// The weight bytes of a comparison's parameters kept in `format` (`None` for "as stored",
/// which only the checkpoint itself knows): block matrices at the format's type, token
/// tables and the head at its embedding type, norms and biases in f32.
pub fn weight_bytes_as_loaded(c: &Comparison, format: WeightFormat) -> Option<u64> {
    let block = bits(format.matrices?);
    let table = bits(format.embeddings.unwrap_or(QType::F32));
    Some(c.breakdown.bytes_at(block, table))
}
