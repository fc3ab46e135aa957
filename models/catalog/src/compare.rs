//! Architectures side by side from their catalog configs alone: parameters, FLOPs and memory.
//!
//! Everything here follows from [`ArchConfig`] (no weights are read):
//!
//! - **Parameters** are counted per family from the shapes (tied matrices once).
//! - **FLOPs per token** (forward pass) follow Kaplan et al. 2020, eq. 2.2:
//!   `C = 2·N + 2·n_layer·n_ctx·d_attn`, with `N` the weight-matrix parameters of the
//!   transformer blocks (attention and MLP; no embeddings, biases, norms or LM head) and
//!   `d_attn = heads × head_dim`; `n_ctx` is the model's full context. The LM-head matmul
//!   (`2·d_model·n_vocab`, causal models only) is reported apart.
//! - **Weight bytes**: fp32 = 4 B and fp16 = 2 B per parameter; int8 / int4 quantise only
//!   the weight matrices of the blocks (1 B / 0.5 B each) and keep everything else in fp16
//!   (embeddings, LM head, pooler, norms, biases), as ChatGLM-6B's `quantization.py`,
//!   bitsandbytes and GPTQ do by default; scales are not counted (per-row fp16 scales add
//!   under 0.1 %, group-128 scales about 3 % at int4).
//! - **KV cache** per token: `kv_heads × head_dim × 2 (K and V) × layers × bytes`, at fp16;
//!   encoders (BERT) and word vectors keep no cache.
//! - **Encoder-decoders (T5)**: a "token" is one encoder token plus one decoder token. `N`
//!   holds both stacks' matrices (the decoder's cross-attention included) and the attention
//!   term counts the encoder's self-attention, the decoder's self-attention and its
//!   cross-attention over an encoder input of the same `n_ctx`; the KV cache holds, per
//!   token, the decoder's self-attention K/V and the cross-attention K/V of one encoder
//!   position.

use std::fmt::Write as _;

use serde::Serialize;

use crate::error::CatalogError;
use crate::schema::{
    Activation, ArchConfig, Architecture, ModelEntry, NormKind, NormPosition, Positional,
};

/// Bytes per element of the KV cache as reported (fp16).
pub const KV_BYTES_PER_ELEMENT: u64 = 2;

/// The FLOPs formula, as printed in footnotes and JSON.
pub const FLOPS_FORMULA: &str = "FLOPs/token (forward) = 2·N + 2·n_layer·n_ctx·d_attn (Kaplan et al. 2020, eq. 2.2): N = weight-matrix parameters of the transformer blocks (attention q/k/v/o and MLP; no embeddings, biases, norms or LM head), d_attn = heads × head_dim, n_ctx = the model's full context; the LM-head matmul 2·d_model·n_vocab of causal models is not included; an encoder-decoder (T5) token is one encoder token plus one decoder token, N covers both stacks and n_layer counts encoder self-attention, decoder self-attention and cross-attention layers";

/// The quantisation assumption, as printed in footnotes and JSON.
pub const QUANT_ASSUMPTION: &str = "int8 / int4 = the weight matrices of the transformer blocks at 1 / 0.5 byte per weight, everything else (token and position embeddings, LM head, BERT pooler, norms, biases) at fp16, as ChatGLM-6B's quantization.py, bitsandbytes and GPTQ do; quantisation scales not counted (per-row fp16 scales add < 0.1 %, group-128 scales ≈ 3 % at int4)";

/// The KV-cache formula, as printed in footnotes and JSON.
pub const KV_FORMULA: &str = "KV cache = kv_heads × head_dim × 2 (K and V) × layers × 2 bytes (fp16) per token; encoders (BERT) and word vectors keep no KV cache; an encoder-decoder (T5) keeps the decoder's self-attention K/V per decoder token and the cross-attention K/V per encoder token, both counted per token";

/// Where a model's parameters sit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParamCount {
    /// Token, position and token-type tables (with BERT's embedding LayerNorm).
    pub embedding: u64,
    /// Weight matrices of the transformer blocks (attention and MLP): the `N` of the FLOPs.
    pub block_matrices: u64,
    /// Biases and norm weights of the blocks, and the final norm.
    pub block_vectors: u64,
    /// A separate LM-head matrix (0 when tied to the embedding or absent).
    pub lm_head: u64,
    /// BERT's pooler (dense layer and bias).
    pub pooler: u64,
}

impl ParamCount {
    /// All parameters, tied matrices counted once.
    pub fn total(&self) -> u64 {
        self.embedding + self.block_matrices + self.block_vectors + self.lm_head + self.pooler
    }

    /// Parameters that stay fp16 under int8 / int4 quantisation (all but the block matrices).
    pub fn unquantised(&self) -> u64 {
        self.total() - self.block_matrices
    }
}

/// Weight memory at the usual precisions, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightBytes {
    /// 4 bytes per parameter.
    pub fp32: u64,
    /// 2 bytes per parameter.
    pub fp16: u64,
    /// Block matrices at 1 byte, the rest at fp16.
    pub int8: u64,
    /// Block matrices at half a byte, the rest at fp16.
    pub int4: u64,
}

impl WeightBytes {
    /// The weight bytes of a parameter split.
    pub fn of(p: &ParamCount) -> WeightBytes {
        let rest = 2 * p.unquantised();
        WeightBytes {
            fp32: 4 * p.total(),
            fp16: 2 * p.total(),
            int8: p.block_matrices + rest,
            int4: p.block_matrices.div_ceil(2) + rest,
        }
    }
}

impl ParamCount {
    /// Bytes of the weights kept with the block matrices at `block_bits` per weight, the token
    /// tables and the LM head at `table_bits`, and the vectors (norms, biases) in f32 — how the
    /// zoo keeps a model loaded with `--dtype` / `--quantize` (block formats count their scales:
    /// Q4_0 4.5 bits, Q4_1 5, Q8_0 8.5).
    pub fn bytes_at(&self, block_bits: f64, table_bits: f64) -> u64 {
        let bits = self.block_matrices as f64 * block_bits
            + (self.embedding + self.lm_head + self.pooler) as f64 * table_bits
            + self.block_vectors as f64 * 32.0;
        (bits / 8.0).ceil() as u64
    }
}

/// One model's architecture facts, sizes, compute and memory, computed from its config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Catalog id.
    pub id: String,
    /// Architecture family as in zoo.toml (`gpt2`, `bert`, `llama`, `chatglm`, `glm`, …).
    pub family: String,
    /// Family with its generation and kind, for display (`chatglm v1 (GLM, prefix-LM decoder)`).
    pub family_label: String,
    /// The catalog's variant text.
    pub variant: String,
    /// Whether the model is a causal decoder (has an LM head and a KV cache).
    pub causal: bool,
    /// Parameters counted from the config (tied matrices once).
    pub parameters: u64,
    /// The catalog's published count, when it has one.
    pub published_parameters: Option<u64>,
    /// Where the parameters sit.
    pub breakdown: ParamCount,
    /// Transformer blocks (the encoder's, for an encoder-decoder).
    pub layers: Option<u64>,
    /// Decoder blocks of an encoder-decoder.
    pub decoder_layers: Option<u64>,
    /// Attention layers one token passes through (= `layers`; T5: encoder self-attention,
    /// decoder self-attention and cross-attention), the `n_layer` of the FLOPs' attention term.
    pub attention_layers: Option<u64>,
    /// Model width (vector size for word vectors).
    pub hidden: u64,
    /// Query heads.
    pub heads: Option<u64>,
    /// Key/value heads.
    pub kv_heads: Option<u64>,
    /// Per-head size.
    pub head_dim: Option<u64>,
    /// `MHA`, `GQA` or `MQA` (with the group count for ChatGLM2-style multi-query groups).
    pub attention: Option<String>,
    /// MLP inner width.
    pub intermediate: Option<u64>,
    /// Token-embedding rows (words for word vectors).
    pub vocab: u64,
    /// Longest sequence trained for.
    pub context: Option<u64>,
    /// Positional scheme, for display.
    pub positional: String,
    /// Norm kind and placement, for display.
    pub norm: Option<String>,
    /// MLP activation (SwiGLU when gated), for display.
    pub activation: Option<String>,
    /// Forward FLOPs per token at full context (Kaplan: `2·N + 2·n_layer·n_ctx·d_attn`).
    pub flops_per_token: Option<u64>,
    /// The LM-head matmul per token, `2·d_model·n_vocab` (0 for encoders and word vectors).
    pub lm_head_flops_per_token: u64,
    /// Weight memory at fp32 / fp16 / int8 / int4.
    pub weight_bytes: WeightBytes,
    /// KV-cache bytes per token at fp16 (None: no KV cache).
    pub kv_bytes_per_token: Option<u64>,
    /// KV-cache bytes at the full context, fp16.
    pub kv_bytes_full_context: Option<u64>,
}

impl Comparison {
    /// Forward FLOPs per token with `n_ctx` tokens of context (Kaplan's formula).
    pub fn flops_per_token_at(&self, n_ctx: u64) -> Option<u64> {
        let (layers, heads, hd) = (self.attention_layers?, self.heads?, self.head_dim?);
        Some(2 * self.breakdown.block_matrices + 2 * layers * n_ctx * heads * hd)
    }

    /// fp16 weights plus an fp16 KV cache of `n_ctx` tokens, in bytes.
    pub fn fp16_memory_at(&self, n_ctx: u64) -> u64 {
        self.weight_bytes.fp16 + self.kv_bytes_per_token.unwrap_or(0) * n_ctx
    }
}

fn missing(id: &str, field: &str) -> CatalogError {
    CatalogError::NotComparable {
        id: id.to_string(),
        reason: format!("config.{field} is missing"),
    }
}

/// Reads a required, positive config fact.
fn need(id: &str, field: &str, value: Option<u64>) -> Result<u64, CatalogError> {
    match value {
        Some(v) if v > 0 => Ok(v),
        Some(_) => Err(CatalogError::NotComparable {
            id: id.to_string(),
            reason: format!("config.{field} is 0"),
        }),
        None => Err(missing(id, field)),
    }
}

fn need_flag(id: &str, field: &str, value: Option<bool>) -> Result<bool, CatalogError> {
    value.ok_or_else(|| missing(id, field))
}

/// The shapes of one transformer stack, read from the config.
struct Stack {
    layers: u64,
    d: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    inner: u64,
    vocab: u64,
    norm: NormKind,
    gated: bool,
    qkv_bias: bool,
    linear_bias: bool,
    tied: bool,
}

impl Stack {
    fn read(id: &str, c: &ArchConfig) -> Result<Stack, CatalogError> {
        let layers = need(id, "layers", c.layers)?;
        let d = need(id, "hidden_size", c.hidden_size)?;
        let heads = need(id, "heads", c.heads)?;
        let kv_heads = need(id, "kv_heads", c.kv_heads)?;
        if !heads.is_multiple_of(kv_heads) {
            return Err(CatalogError::NotComparable {
                id: id.to_string(),
                reason: format!("config.heads {heads} is not a multiple of kv_heads {kv_heads}"),
            });
        }
        let head_dim = need(id, "head_dim (or hidden_size / heads)", c.head_size())?;
        Ok(Stack {
            layers,
            d,
            heads,
            kv_heads,
            head_dim,
            inner: need(id, "intermediate_size", c.intermediate_size)?,
            vocab: need(id, "vocab_size", c.vocab_size)?,
            norm: c.norm.ok_or_else(|| missing(id, "norm"))?,
            gated: need_flag(id, "gated_mlp", c.gated_mlp)?,
            qkv_bias: need_flag(id, "qkv_bias", c.qkv_bias)?,
            linear_bias: need_flag(id, "linear_bias", c.linear_bias)?,
            tied: need_flag(id, "tied_embeddings", c.tied_embeddings)?,
        })
    }

    /// Parameters of one norm layer (LayerNorm has a bias, RMSNorm does not).
    fn norm_params(&self) -> u64 {
        match self.norm {
            NormKind::Layernorm => 2 * self.d,
            NormKind::Rmsnorm => self.d,
        }
    }

    /// Width of the attention (query heads × head size).
    fn d_attn(&self) -> u64 {
        self.heads * self.head_dim
    }

    /// Weight matrices of one block: q, k, v (k and v at `kv_heads`), output, and the MLP.
    fn block_matrices(&self) -> u64 {
        let d_kv = self.kv_heads * self.head_dim;
        let attention = self.d * self.d_attn() + 2 * self.d * d_kv + self.d_attn() * self.d;
        let mlp = if self.gated { 3 } else { 2 } * self.d * self.inner;
        attention + mlp
    }

    /// Biases and the two norms of one block.
    fn block_vectors(&self) -> u64 {
        let mut v = 2 * self.norm_params();
        if self.qkv_bias {
            v += self.d_attn() + 2 * self.kv_heads * self.head_dim;
        }
        if self.linear_bias {
            // Attention output bias, then the MLP's up (and gate) and down biases.
            v += self.d;
            v += if self.gated {
                2 * self.inner
            } else {
                self.inner
            } + self.d;
        }
        v
    }

    /// The blocks, the final norm (pre-norm stacks only) and an untied LM head.
    fn count(&self, final_norm: bool) -> ParamCount {
        ParamCount {
            embedding: self.vocab * self.d,
            block_matrices: self.layers * self.block_matrices(),
            block_vectors: self.layers * self.block_vectors()
                + if final_norm { self.norm_params() } else { 0 },
            lm_head: if self.tied { 0 } else { self.vocab * self.d },
            pooler: 0,
        }
    }
}

/// GPT-2: learned positions, fused `c_attn` with bias, GELU MLP with biases, pre-LN, tied head.
fn count_gpt2(e: &ModelEntry, s: &Stack) -> Result<ParamCount, CatalogError> {
    let positions = need(&e.id, "max_positions", e.config.max_positions)?;
    let mut p = s.count(true);
    p.embedding += positions * s.d;
    Ok(p)
}

/// BERT: word + position + token-type tables and an embedding LayerNorm, post-LN blocks (no
/// final norm), and the pooler (BertModel's count; the MLM head is not included).
fn count_bert(e: &ModelEntry, s: &Stack) -> Result<ParamCount, CatalogError> {
    let positions = need(&e.id, "max_positions", e.config.max_positions)?;
    let types = need(&e.id, "type_vocab_size", e.config.type_vocab_size)?;
    let mut p = s.count(false);
    p.embedding += positions * s.d + types * s.d + s.norm_params();
    p.pooler = s.d * s.d + s.d;
    Ok(p)
}

/// OPT: learned positions with 2 extra rows, q/k/v/o and fc1/fc2 with biases, tied head; the
/// token table `embed_dim` wide with bias-free `project_in` / `project_out` when that differs
/// from the width (opt-350m); a final LayerNorm only in pre-LN models.
fn count_opt(e: &ModelEntry, s: &Stack) -> Result<ParamCount, CatalogError> {
    let c = &e.config;
    let positions = need(&e.id, "max_positions", c.max_positions)? + c.position_offset.unwrap_or(0);
    let pre = c.norm_position != Some(NormPosition::Post);
    let mut p = s.count(pre);
    let embed = c.embed_dim.unwrap_or(s.d);
    p.embedding = s.vocab * embed + positions * s.d;
    if embed != s.d {
        p.embedding += 2 * embed * s.d;
    }
    if !s.tied {
        p.lm_head = s.vocab * embed;
    }
    Ok(p)
}

/// BLOOM: ALiBi (no position table), a LayerNorm after the token embedding, fused
/// `query_key_value` with bias, GELU MLP with biases, pre-LN, tied head.
fn count_bloom(e: &ModelEntry, s: &Stack) -> ParamCount {
    let mut p = s.count(true);
    if e.config.embedding_norm == Some(true) {
        p.embedding += s.norm_params();
    }
    p
}

/// CodeGen / MOSS: one LayerNorm per block feeding attention and MLP in parallel, bias-free
/// `qkv_proj` and `out_proj` (so `linear_bias` stands for the MLP's biases only), an untied
/// LM head with a bias.
fn count_codegen(e: &ModelEntry, s: &Stack) -> ParamCount {
    let mut p = s.count(true);
    if e.config.parallel_block == Some(true) {
        p.block_vectors -= s.layers * s.norm_params();
    }
    if s.linear_bias {
        // `out_proj` has no bias: the Stack counted one.
        p.block_vectors -= s.layers * s.d;
    }
    if e.config.lm_head_bias == Some(true) {
        p.lm_head += s.vocab;
    }
    p
}

/// T5: a shared token table, `layers` encoder blocks (self-attention, MLP, two RMS norms) and
/// `decoder_layers` decoder blocks (self-attention, cross-attention, MLP, three norms), a final
/// norm per stack, one relative-position bias table (`buckets × heads`) per stack (counted
/// with the embeddings), no biases; the LM head tied or not.
fn count_t5(e: &ModelEntry, s: &Stack) -> Result<ParamCount, CatalogError> {
    let dec = need(&e.id, "decoder_layers", e.config.decoder_layers)?;
    let buckets = need(&e.id, "relative_buckets", e.config.relative_buckets)?;
    let attn = 4 * s.d * s.d_attn();
    let enc_block = s.block_matrices();
    Ok(ParamCount {
        embedding: s.vocab * s.d + 2 * buckets * s.heads,
        block_matrices: s.layers * enc_block + dec * (enc_block + attn),
        block_vectors: s.layers * 2 * s.norm_params()
            + dec * 3 * s.norm_params()
            + 2 * s.norm_params(),
        lm_head: if s.tied { 0 } else { s.vocab * s.d },
        pooler: 0,
    })
}

/// LLaMA: rotary (no position table), GQA q/k/v/o without biases, SwiGLU, RMSNorm, head tied
/// or not.
fn count_llama(s: &Stack) -> ParamCount {
    s.count(true)
}

/// ChatGLM-6B (v1, GLM): 2-D rotary, fused per-head `query_key_value` with bias, `dense` with
/// bias, GELU MLP with biases, two LayerNorms per block and a final one; LM head tied.
/// ChatGLM2/3 and GLM-4: multi-query groups, bias on q/k/v only, SwiGLU, RMSNorm, separate
/// `output_layer`. The config flags carry each difference, so one count serves both.
fn count_glm(s: &Stack) -> ParamCount {
    s.count(true)
}

/// The models of `docs/compare.md`, in its column order (written by the catalog's `compare`
/// example, checked by its `docs_are_current` test).
pub const DOC_MODELS: [&str; 8] = [
    "gpt2",
    "all-minilm-l6-v2",
    "smollm2-135m-instruct",
    "chatglm-6b",
    "vicuna-7b",
    "llama-2-7b",
    "vicuna-13b",
    "bert-base-uncased",
];

/// The models of `docs/compare.md`'s second table: the survey's other families beside LLaMA
/// and ChatGLM.
pub const SURVEY_MODELS: [&str; 6] = [
    "opt-6.7b",
    "bloom-7b1",
    "moss-moon-003-sft",
    "llama-2-7b",
    "chatglm-6b",
    "flan-t5-base",
];

/// Counts an entry's parameters from its config, per family.
pub fn parameter_count(e: &ModelEntry) -> Result<ParamCount, CatalogError> {
    let c = &e.config;
    match e.architecture {
        Architecture::Tokenizer => Err(CatalogError::NotComparable {
            id: e.id.clone(),
            reason: "a tokenizer has no weights".to_string(),
        }),
        Architecture::Word2vec | Architecture::Glove => Ok(ParamCount {
            embedding: need(&e.id, "vocab_size", c.vocab_size)?
                * need(&e.id, "hidden_size", c.hidden_size)?,
            ..ParamCount::default()
        }),
        Architecture::Gpt2 => count_gpt2(e, &Stack::read(&e.id, c)?),
        Architecture::Bert => count_bert(e, &Stack::read(&e.id, c)?),
        Architecture::Llama => Ok(count_llama(&Stack::read(&e.id, c)?)),
        Architecture::Chatglm | Architecture::Glm => Ok(count_glm(&Stack::read(&e.id, c)?)),
        Architecture::Opt => count_opt(e, &Stack::read(&e.id, c)?),
        Architecture::Bloom => Ok(count_bloom(e, &Stack::read(&e.id, c)?)),
        Architecture::Codegen | Architecture::Moss => Ok(count_codegen(e, &Stack::read(&e.id, c)?)),
        // Learned positions, q/k/v without bias, out_proj and MLP with bias: GPT-2's count.
        Architecture::GptNeo => count_gpt2(e, &Stack::read(&e.id, c)?),
        Architecture::T5 => count_t5(e, &Stack::read(&e.id, c)?),
    }
}

fn family_label(e: &ModelEntry) -> String {
    match e.architecture {
        Architecture::Gpt2 => "GPT-2 (decoder)".into(),
        Architecture::Bert => "BERT (encoder)".into(),
        Architecture::Llama => "LLaMA (decoder)".into(),
        Architecture::Chatglm if e.config.positional == Some(Positional::Rope2d) => {
            "ChatGLM v1 (GLM, prefix-LM decoder)".into()
        }
        Architecture::Chatglm => "ChatGLM2/3 (decoder)".into(),
        Architecture::Glm => "GLM-4 (decoder)".into(),
        Architecture::Opt => "OPT (decoder)".into(),
        Architecture::Bloom => "BLOOM (decoder)".into(),
        Architecture::Codegen => "CodeGen (decoder, parallel blocks)".into(),
        Architecture::Moss => "MOSS (CodeGen decoder)".into(),
        Architecture::GptNeo => "GPT-Neo (decoder, local + global)".into(),
        Architecture::T5 => "T5 (encoder-decoder)".into(),
        Architecture::Word2vec => "word2vec (word vectors)".into(),
        Architecture::Glove => "GloVe (word vectors)".into(),
        Architecture::Tokenizer => "tokenizer".into(),
    }
}

fn positional_label(c: &ArchConfig) -> String {
    let theta = c
        .rope_theta
        .map(|t| format!(", θ={}", trim_float(t)))
        .unwrap_or_default();
    let part = match c.rotary_fraction {
        Some(f) if f < 1.0 => format!(", {} of each head", fraction(f)),
        _ => String::new(),
    };
    match c.positional {
        Some(Positional::Learned) => match c.position_offset {
            Some(o) if o > 0 => format!("learned absolute (offset {o})"),
            _ => "learned absolute".into(),
        },
        Some(Positional::Alibi) => "ALiBi (linear bias by distance)".into(),
        Some(Positional::Relative) => match c.relative_buckets {
            Some(b) => format!("relative buckets ({b}, per-head bias)"),
            None => "relative buckets".into(),
        },
        Some(Positional::RopeHalf) => format!("RoPE (half-split{part}{theta})"),
        Some(Positional::RopeInterleaved) => format!("RoPE (interleaved{part}{theta})"),
        Some(Positional::Rope2d) => format!("2-D RoPE (position + block{theta})"),
        Some(Positional::None) | None => "none".into(),
    }
}

fn fraction(f: f64) -> String {
    if (f - 0.5).abs() < 1e-9 {
        "half".into()
    } else {
        trim_float(f)
    }
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn norm_label(c: &ArchConfig) -> Option<String> {
    let kind = match c.norm? {
        NormKind::Layernorm => "LayerNorm",
        NormKind::Rmsnorm => "RMSNorm",
    };
    let place = match c.norm_position {
        Some(NormPosition::Pre) => ", pre",
        Some(NormPosition::Post) => ", post",
        Some(NormPosition::Deepnorm) => ", DeepNorm (α=√(2·layers))",
        None => "",
    };
    Some(format!("{kind}{place}"))
}

fn activation_label(c: &ArchConfig) -> Option<String> {
    let gated = c.gated_mlp == Some(true);
    Some(
        match (c.activation?, gated) {
            (Activation::Silu, true) => "SwiGLU",
            (Activation::Silu, false) => "SiLU",
            (Activation::Gelu, true) => "GeGLU",
            (Activation::Gelu, false) => "GELU (erf)",
            (Activation::GeluNew, true) => "GeGLU (tanh)",
            (Activation::GeluNew, false) => "GELU (tanh)",
            (Activation::Relu, true) => "ReGLU",
            (Activation::Relu, false) => "ReLU",
        }
        .to_string(),
    )
}

fn attention_label(heads: u64, kv: u64) -> String {
    if kv == heads {
        "MHA".into()
    } else if kv == 1 {
        "MQA".into()
    } else if kv < 4 && heads / kv >= 8 {
        // ChatGLM2+ call their few shared key/value heads "multi-query groups".
        format!("MQA, {kv} groups")
    } else {
        "GQA".into()
    }
}

/// Computes the comparison of one catalog entry from its config alone.
pub fn compare(e: &ModelEntry) -> Result<Comparison, CatalogError> {
    let breakdown = parameter_count(e)?;
    let c = &e.config;
    let vectors = matches!(e.architecture, Architecture::Word2vec | Architecture::Glove);
    let causal = !vectors && e.architecture != Architecture::Bert;
    let decoder_layers = if e.architecture.is_encoder_decoder() {
        c.decoder_layers
    } else {
        None
    };
    // Layers whose attention a token passes through, and whose K/V a token leaves behind.
    let (attention_layers, kv_layers) = match decoder_layers {
        Some(dec) => (c.layers.map(|l| l + 2 * dec), Some(2 * dec)),
        None => (c.layers, c.layers),
    };
    let hidden = need(&e.id, "hidden_size", c.hidden_size)?;
    let vocab = need(&e.id, "vocab_size", c.vocab_size)?;
    let context = if vectors { None } else { e.context_length };
    let (head_dim, kv_bytes_per_token) = if vectors {
        (None, None)
    } else {
        let hd = c.head_size();
        let kv = match (causal, c.kv_heads, hd, kv_layers) {
            (true, Some(kv), Some(hd), Some(l)) => Some(kv * hd * 2 * l * KV_BYTES_PER_ELEMENT),
            _ => None,
        };
        (hd, kv)
    };
    let mut out = Comparison {
        id: e.id.clone(),
        family: e.architecture.as_str().to_string(),
        family_label: family_label(e),
        variant: e.variant.clone(),
        causal,
        parameters: breakdown.total(),
        published_parameters: e.parameters,
        breakdown,
        layers: if vectors { None } else { c.layers },
        decoder_layers,
        attention_layers: if vectors { None } else { attention_layers },
        hidden,
        heads: if vectors { None } else { c.heads },
        kv_heads: if vectors { None } else { c.kv_heads },
        head_dim,
        attention: match (c.heads, c.kv_heads) {
            (Some(h), Some(kv)) if !vectors && kv > 0 => Some(match c.local_window {
                Some(w) => format!("{}, local window {w} / global", attention_label(h, kv)),
                None => attention_label(h, kv),
            }),
            _ => None,
        },
        intermediate: if vectors { None } else { c.intermediate_size },
        vocab,
        context,
        positional: positional_label(c),
        norm: if vectors { None } else { norm_label(c) },
        activation: if vectors { None } else { activation_label(c) },
        flops_per_token: None,
        lm_head_flops_per_token: if causal { 2 * hidden * vocab } else { 0 },
        weight_bytes: WeightBytes::of(&breakdown),
        kv_bytes_per_token,
        kv_bytes_full_context: match (kv_bytes_per_token, context) {
            (Some(kv), Some(ctx)) => Some(kv * ctx),
            _ => None,
        },
    };
    out.flops_per_token = context.and_then(|ctx| out.flops_per_token_at(ctx));
    Ok(out)
}

// ------------------------------------------------------------------------------ formatting

/// `6738415616` → `6,738,415,616`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes as decimal gigabytes (10⁹), with precision that suits the size.
pub fn gb(bytes: u64) -> String {
    let g = bytes as f64 / 1e9;
    if g >= 100.0 {
        format!("{g:.0} GB")
    } else if g >= 1.0 {
        format!("{g:.2} GB")
    } else {
        format!("{g:.3} GB")
    }
}

/// Bytes as KiB (1024), one decimal only when needed.
pub fn kib(bytes: u64) -> String {
    let k = bytes as f64 / 1024.0;
    if k.fract() == 0.0 {
        format!("{k:.0} KiB")
    } else {
        format!("{k:.1} KiB")
    }
}

/// FLOPs with an SI prefix (`14.03 G`, `188.7 M`).
pub fn flops(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else {
        format!("{:.1} M", x / 1e6)
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "—".to_string(), thousands)
}

/// The rows of the side-by-side table: a label and one cell per model.
pub fn table_rows(models: &[Comparison]) -> Vec<(String, Vec<String>)> {
    let row = |label: &str, f: &dyn Fn(&Comparison) -> String| {
        (label.to_string(), models.iter().map(f).collect::<Vec<_>>())
    };
    vec![
        row("family", &|m| m.family_label.clone()),
        row("parameters (counted)", &|m| thousands(m.parameters)),
        row(
            "= catalog's published count",
            &|m| match m.published_parameters {
                Some(p) if p == m.parameters => "yes".into(),
                Some(p) => format!("no ({})", thousands(p)),
                None => "—".into(),
            },
        ),
        row("layers", &|m| match m.decoder_layers {
            Some(dec) => format!("{} + {dec} (enc + dec)", opt(m.layers)),
            None => opt(m.layers),
        }),
        row("hidden", &|m| thousands(m.hidden)),
        row("heads / kv heads", &|m| match (m.heads, m.kv_heads) {
            (Some(h), Some(kv)) => {
                format!("{h} / {kv} ({})", m.attention.clone().unwrap_or_default())
            }
            _ => "—".into(),
        }),
        row("head dim", &|m| opt(m.head_dim)),
        row("MLP width", &|m| opt(m.intermediate)),
        row("vocabulary", &|m| thousands(m.vocab)),
        row("context", &|m| opt(m.context)),
        row("positions", &|m| m.positional.clone()),
        row("norm", &|m| m.norm.clone().unwrap_or_else(|| "—".into())),
        row("activation", &|m| {
            m.activation.clone().unwrap_or_else(|| "—".into())
        }),
        row("FLOPs/token at full context ¹", &|m| {
            m.flops_per_token.map_or_else(|| "—".into(), flops)
        }),
        row("+ LM head FLOPs/token", &|m| {
            if m.lm_head_flops_per_token == 0 {
                "—".into()
            } else {
                flops(m.lm_head_flops_per_token)
            }
        }),
        row("weights fp32", &|m| gb(m.weight_bytes.fp32)),
        row("weights fp16", &|m| gb(m.weight_bytes.fp16)),
        row("weights int8 ²", &|m| gb(m.weight_bytes.int8)),
        row("weights int4 ²", &|m| gb(m.weight_bytes.int4)),
        row("KV cache per token (fp16) ³", &|m| {
            m.kv_bytes_per_token.map_or_else(|| "—".into(), kib)
        }),
        row("KV cache at full context (fp16) ³", &|m| {
            m.kv_bytes_full_context.map_or_else(|| "—".into(), gb)
        }),
        row("fp16 weights + full KV cache", &|m| {
            gb(m.fp16_memory_at(m.context.unwrap_or(0)))
        }),
    ]
}

/// The comparison as a Markdown table (one column per model) with footnotes on the formulas.
pub fn to_markdown(models: &[Comparison]) -> String {
    let rows = table_rows(models);
    let mut header = vec![String::new()];
    header.extend(models.iter().map(|m| format!("`{}`", m.id)));
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (label, cells) in &rows {
        widths[0] = widths[0].max(label.chars().count());
        for (i, c) in cells.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            let _ = write!(s, " {c}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = line(&header);
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if i == 0 {
            let _ = write!(out, " {dashes} |");
        } else {
            // Right-aligned numbers read better; `---:` keeps the column width.
            let _ = write!(out, " {}: |", &dashes[..dashes.len().saturating_sub(1)]);
        }
    }
    out.push('\n');
    for (label, cells) in rows {
        let mut all = vec![label];
        all.extend(cells);
        out.push_str(&line(&all));
    }
    out.push('\n');
    let _ = writeln!(out, "¹ {FLOPS_FORMULA}.  ");
    let _ = writeln!(out, "² {QUANT_ASSUMPTION}.  ");
    let _ = writeln!(
        out,
        "³ {KV_FORMULA}. GB = 10⁹ bytes, KiB = 1024 bytes; parameters are counted from the config (tied matrices once); BERT is counted as BertModel with its pooler."
    );
    out
}

/// The comparison as plain aligned text for a terminal (the Markdown table's rows).
pub fn to_text(models: &[Comparison]) -> String {
    let rows = table_rows(models);
    let mut header = vec![String::new()];
    header.extend(models.iter().map(|m| m.id.clone()));
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (label, cells) in &rows {
        widths[0] = widths[0].max(label.chars().count());
        for (i, c) in cells.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut emit = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[i] - c.chars().count());
            if i == 0 {
                let _ = write!(s, "{c}{pad}");
            } else {
                let _ = write!(s, "  {pad}{c}");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    emit(&header);
    for (label, cells) in rows {
        let mut all = vec![label];
        all.extend(cells);
        emit(&all);
    }
    out.push('\n');
    let _ = writeln!(out, "¹ {FLOPS_FORMULA}.");
    let _ = writeln!(out, "² {QUANT_ASSUMPTION}.");
    let _ = writeln!(out, "³ {KV_FORMULA}. GB = 10⁹ bytes, KiB = 1024 bytes.");
    out
}

/// The comparison as JSON: `{"models": [...], "formulas": {...}}`.
pub fn to_json(models: &[Comparison]) -> serde_json::Value {
    serde_json::json!({
        "models": models,
        "formulas": {
            "flops_per_token": FLOPS_FORMULA,
            "quantisation": QUANT_ASSUMPTION,
            "kv_cache": KV_FORMULA,
            "units": "bytes; GB in text output = 1e9 bytes",
        },
    })
}

// ------------------------------------------------------------------------------------ plot

/// Line colours of the plot (Tableau 10).
const COLOURS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// `s` with the characters XML gives a meaning to (`& < > "`) escaped, for SVG text.
pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 × 10^k giving at most `max_ticks` steps over `0..=max`.
pub fn nice_step(max: f64, max_ticks: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / max_ticks;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A power-of-two tick step for token counts, at most 8 steps over `0..=max`.
fn token_step(max: u64) -> u64 {
    let mut step = 1u64;
    while max.div_ceil(step) > 8 {
        step *= 2;
    }
    step
}

/// `8192` → `8K`, `131072` → `128K`, `500` → `500`.
fn token_label(n: u64) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{}K", n / 1024)
    } else {
        n.to_string()
    }
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{v:.decimals$}")
}

/// Where model `i`'s line ends on an x axis running to `max_ctx` (0: the largest context).
fn line_ends(models: &[Comparison], max_ctx: usize) -> (u64, Vec<u64>) {
    let largest = models
        .iter()
        .filter_map(|m| m.context)
        .max()
        .unwrap_or(2048);
    let x_max = if max_ctx == 0 {
        largest
    } else {
        max_ctx as u64
    }
    .max(1);
    let ends = models
        .iter()
        .map(|m| m.context.map_or(x_max, |c| c.min(x_max)))
        .collect();
    (x_max, ends)
}

/// The first earlier model whose plotted line is the same as model `i`'s.
fn first_same_line(models: &[Comparison], ends: &[u64], i: usize) -> Option<usize> {
    let m = &models[i];
    (0..i).find(|&j| {
        let o = &models[j];
        ends[j] == ends[i]
            && o.weight_bytes.fp16 == m.weight_bytes.fp16
            && o.kv_bytes_per_token == m.kv_bytes_per_token
    })
}

/// The legend line of each model: id, memory at the end of its line, coinciding lines.
fn legend_texts(models: &[Comparison], max_ctx: usize) -> Vec<String> {
    let (_, ends) = line_ends(models, max_ctx);
    (0..models.len())
        .map(|i| {
            let m = &models[i];
            let end = ends[i];
            let mut text = match m.kv_bytes_per_token {
                Some(_) => format!(
                    "{} — {} at {}",
                    m.id,
                    gb(m.fp16_memory_at(end)),
                    token_label(end)
                ),
                None => format!("{} — {} (no KV cache)", m.id, gb(m.weight_bytes.fp16)),
            };
            if let Some(j) = first_same_line(models, &ends, i) {
                let _ = write!(text, ", same line as {}", models[j].id);
            }
            text
        })
        .collect()
}

/// An SVG line plot of fp16 weights + KV cache (GB) against context length, one line per
/// model, each ending at the model's own context; `max_ctx = 0` means the largest context.
pub fn memory_svg(models: &[Comparison], max_ctx: usize) -> String {
    let (left, top, bottom) = (72.0_f64, 64.0_f64, 92.0_f64);
    let (plot_w, plot_h) = (560.0_f64, 404.0_f64);
    let legend = legend_texts(models, max_ctx);
    // The legend sits right of the plot: swatch, gap, text at ~7.4 px per character.
    let longest = legend.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    let width = (left + plot_w + 60.0 + longest as f64 * 7.4)
        .max(760.0)
        .ceil();
    let height = top + plot_h.max(models.len() as f64 * 20.0) + bottom;

    // Each model's line: from context 0 to its own context (clipped to the axis).
    let (x_max, ends) = line_ends(models, max_ctx);
    let y_top_value = models
        .iter()
        .zip(&ends)
        .map(|(m, &end)| m.fp16_memory_at(end) as f64 / 1e9)
        .fold(0.0_f64, f64::max);
    let y_step = nice_step(y_top_value.max(1e-3), 8.0);
    let y_max = ((y_top_value / y_step).ceil().max(1.0)) * y_step;
    let x_step = token_step(x_max);

    let sx = |x: f64| left + x / x_max as f64 * plot_w;
    let sy = |y: f64| top + plot_h - y / y_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="17" font-weight="bold">Inference memory at fp16: weights + KV cache against context length</text>"#,
        width / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="48" text-anchor="middle" font-size="12" fill="#555555">computed from the catalog configs alone (zoo compare); each line ends at the model's context length</text>"##,
        width / 2.0
    );

    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y_max + y_step * 1e-6 {
        let py = sy(y);
        let _ = writeln!(
            s,
            r##"<line x1="{left:.1}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e3e3e3" stroke-width="1"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            py + 4.5,
            tick_label(y, y_step)
        );
        y += y_step;
    }
    // x ticks.
    let mut x = 0u64;
    while x <= x_max {
        let px = sx(x as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{top:.1}" x2="{px:.1}" y2="{:.1}" stroke="#f0f0f0" stroke-width="1"/>"##,
            top + plot_h
        );
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#333333"/>"##,
            top + plot_h,
            top + plot_h + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + plot_h + 20.0,
            token_label(x)
        );
        x += x_step;
    }
    // Axes.
    let _ = writeln!(
        s,
        r##"<line x1="{left:.1}" y1="{top:.1}" x2="{left:.1}" y2="{:.1}" stroke="#333333" stroke-width="1.5"/>"##,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333333" stroke-width="1.5"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">context length (tokens)</text>"#,
        left + plot_w / 2.0,
        top + plot_h + 42.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">memory (GB = 10⁹ bytes)</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );

    // Lines, endpoints and legend. A line that coincides with an earlier one is drawn
    // dashed on top of it, so both colours show.
    for (i, (m, &end)) in models.iter().zip(&ends).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let y0 = m.fp16_memory_at(0) as f64 / 1e9;
        let y1 = m.fp16_memory_at(end) as f64 / 1e9;
        let covers = first_same_line(models, &ends, i).is_some();
        let dash = if covers {
            r#" stroke-dasharray="9 9""#
        } else if m.kv_bytes_per_token.is_none() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{:.1},{:.1} {:.1},{:.1}" fill="none" stroke="{colour}" stroke-width="2.2"{dash}/>"#,
            sx(0.0),
            sy(y0),
            sx(end as f64),
            sy(y1)
        );
        if m.context.is_some() {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"/>"#,
                sx(end as f64),
                sy(y1)
            );
        }
        let ly = top + 8.0 + i as f64 * 20.0;
        let lx = left + plot_w + 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/>"#,
            lx + 22.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 30.0,
            ly + 4.5,
            xml_escape(&legend[i])
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{left:.1}" y="{:.1}" font-size="11" fill="#555555">KV cache = kv_heads × head_dim × 2 × layers × 2 bytes per token; weights = parameters counted from the config × 2 bytes.</text>"##,
        height - 14.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Catalog;

    fn catalog() -> Catalog {
        let c = Catalog::parse(crate::schema::EMBEDDED_CATALOG).unwrap();
        c.validate().unwrap();
        c
    }

    fn cmp(id: &str) -> Comparison {
        compare(catalog().get(id).unwrap()).unwrap()
    }

    #[test]
    fn counts_equal_every_published_count() {
        let c = catalog();
        let mut checked = 0;
        for e in &c.models {
            if e.architecture == Architecture::Tokenizer {
                assert!(matches!(
                    compare(e),
                    Err(CatalogError::NotComparable { .. })
                ));
                continue;
            }
            let m = compare(e).unwrap();
            assert_eq!(Some(m.parameters), e.parameters, "{}", e.id);
            checked += 1;
        }
        assert_eq!(checked, 37);
    }

    #[test]
    fn gpt2_small_by_hand() {
        let m = cmp("gpt2");
        // wte 50257·768 + wpe 1024·768; per block: 2 LN (2·1536), c_attn 768·2304 + 2304,
        // c_proj 768² + 768, c_fc 768·3072 + 3072, mlp c_proj 3072·768 + 768 = 7,087,872;
        // final LN 1536.
        assert_eq!(m.breakdown.embedding, 38_597_376 + 786_432);
        assert_eq!(m.breakdown.block_matrices, 12 * 7_077_888);
        assert_eq!(m.parameters, 38_597_376 + 786_432 + 12 * 7_087_872 + 1_536);
        assert_eq!(m.parameters, 124_439_808);
        // 2·N + 2·12·1024·768.
        assert_eq!(m.flops_per_token, Some(2 * 84_934_656 + 18_874_368));
        assert_eq!(m.lm_head_flops_per_token, 2 * 768 * 50_257);
        // 12 heads · 64 · 2 · 12 layers · 2 bytes = 36 KiB per token.
        assert_eq!(m.kv_bytes_per_token, Some(36_864));
        assert_eq!(m.kv_bytes_full_context, Some(36_864 * 1024));
        assert_eq!(m.weight_bytes.fp32, 497_759_232);
        assert_eq!(m.weight_bytes.fp16, 248_879_616);
        assert_eq!(m.attention.as_deref(), Some("MHA"));
    }

    #[test]
    fn llama2_7b_by_hand() {
        let m = cmp("llama-2-7b");
        // embed + lm_head 2·32000·4096; per block 4·4096² + 3·4096·11008 + 2·4096; final 4096.
        assert_eq!(m.parameters, 6_738_415_616);
        assert_eq!(m.breakdown.lm_head, 131_072_000);
        assert_eq!(m.breakdown.block_matrices, 32 * (67_108_864 + 135_266_304));
        // 32 kv heads · 128 · 2 · 32 layers · 2 bytes = 512 KiB/token; 2 GiB at 4096.
        assert_eq!(m.kv_bytes_per_token, Some(512 * 1024));
        assert_eq!(m.kv_bytes_full_context, Some(2 * 1024 * 1024 * 1024));
        assert_eq!(kib(m.kv_bytes_per_token.unwrap()), "512 KiB");
        assert_eq!(m.flops_per_token, Some(12_952_010_752 + 1_073_741_824));
        assert_eq!(m.weight_bytes.fp16, 13_476_831_232);
        // int4: block matrices at half a byte, embed + head + norms at 2 bytes.
        assert_eq!(
            m.weight_bytes.int4,
            6_476_005_376 / 2 + 2 * (6_738_415_616 - 6_476_005_376)
        );
        assert_eq!(m.activation.as_deref(), Some("SwiGLU"));
        assert_eq!(m.norm.as_deref(), Some("RMSNorm, pre"));
    }

    #[test]
    fn chatglm_6b_memory_matches_the_published_claims() {
        let m = cmp("chatglm-6b");
        assert_eq!(m.parameters, 6_173_286_400);
        // Per block: qkv 4096·12288, dense 4096², h→4h and 4h→h 2·4096·16384.
        assert_eq!(m.breakdown.block_matrices, 28 * 201_326_592);
        assert_eq!(m.weight_bytes.fp16, 12_346_572_800);
        assert_eq!(m.weight_bytes.int8, 5_637_144_576 + 2 * 536_141_824);
        assert_eq!(m.weight_bytes.int4, 2_818_572_288 + 2 * 536_141_824);
        // 32 heads · 128 · 2 · 28 · 2 bytes = 448 KiB per token; 0.94 GB at 2048.
        assert_eq!(m.kv_bytes_per_token, Some(458_752));
        let full = m.kv_bytes_full_context.unwrap();
        assert_eq!(full, 939_524_096);
        // The README's minimum GPU memory: FP16 13 GB, INT8 8 GB, INT4 6 GB. Weights + a
        // full-context cache give 13.3 and 7.6 GB; INT4 gives 4.8 GB, the remaining ~1 GB of
        // the 6 GB being activations and the CUDA context, which no config determines.
        let g = |b: u64| b as f64 / 1e9;
        assert!((g(m.weight_bytes.fp16 + full) - 13.0).abs() < 0.5);
        assert!((g(m.weight_bytes.int8 + full) - 8.0).abs() < 0.5);
        assert!(g(m.weight_bytes.int4 + full) < 6.0);
        assert!((g(m.weight_bytes.int4) - 3.9).abs() < 0.05);
        assert_eq!(
            m.family_label,
            "ChatGLM v1 (GLM, prefix-LM decoder)".to_string()
        );
    }

    #[test]
    fn glm_generations() {
        let m = cmp("chatglm2-6b");
        assert_eq!(m.parameters, 6_243_584_000);
        // 2 kv groups · 128 · 2 · 28 · 2 bytes = 28 KiB per token.
        assert_eq!(m.kv_bytes_per_token, Some(28 * 1024));
        assert_eq!(m.attention.as_deref(), Some("MQA, 2 groups"));
        let g = cmp("glm-4-9b-chat");
        assert_eq!(g.parameters, 9_399_951_360);
        assert_eq!(g.kv_bytes_per_token, Some(2 * 128 * 2 * 40 * 2));
    }

    #[test]
    fn encoders_and_vectors() {
        let b = cmp("bert-base-uncased");
        assert_eq!(b.parameters, 109_482_240);
        assert!(!b.causal);
        assert_eq!(b.kv_bytes_per_token, None);
        assert_eq!(b.lm_head_flops_per_token, 0);
        // Same blocks as GPT-2 small: the non-embedding matrices agree exactly.
        assert_eq!(
            b.breakdown.block_matrices,
            cmp("gpt2").breakdown.block_matrices
        );
        assert_eq!(b.breakdown.pooler, 768 * 768 + 768);
        let v = cmp("glove-6b-50d");
        assert_eq!(v.parameters, 20_000_000);
        assert_eq!(v.flops_per_token, None);
        assert_eq!(v.weight_bytes.int4, v.weight_bytes.fp16);
        let s = cmp("smollm2-135m-instruct");
        // 3 kv heads · 64 · 2 · 30 · 2 bytes = 22.5 KiB.
        assert_eq!(kib(s.kv_bytes_per_token.unwrap()), "22.5 KiB");
        assert_eq!(s.attention.as_deref(), Some("GQA"));
        assert_eq!(s.breakdown.lm_head, 0);
    }

    #[test]
    fn missing_facts_are_errors() {
        let mut e = catalog().get("gpt2").unwrap().clone();
        e.config.heads = None;
        let err = compare(&e).unwrap_err().to_string();
        assert_eq!(err, "cannot compare `gpt2`: config.heads is missing");
        e.config.heads = Some(5);
        assert!(compare(&e)
            .unwrap_err()
            .to_string()
            .contains("not a multiple"));
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(6_738_415_616), "6,738,415,616");
        assert_eq!(thousands(999), "999");
        assert_eq!(gb(12_346_572_800), "12.35 GB");
        assert_eq!(gb(45_426_432), "0.045 GB");
        assert_eq!(flops(14_025_752_576), "14.03 G");
        assert_eq!(token_label(131_072), "128K");
        assert_eq!(token_step(8192), 1024);
        assert_eq!(token_step(512), 64);
        assert_eq!(nice_step(26.9, 8.0), 5.0);
        assert_eq!(nice_step(0.3, 8.0), 0.05);
    }

    #[test]
    fn markdown_and_json() {
        let models = vec![cmp("gpt2"), cmp("llama-2-7b")];
        let md = to_markdown(&models);
        let lines: Vec<&str> = md.lines().collect();
        assert!(lines[0].starts_with("|"));
        assert!(lines[0].contains("`gpt2`") && lines[0].contains("`llama-2-7b`"));
        // Every table line has the same number of cells (3 columns → 4 pipes).
        for l in lines.iter().take_while(|l| l.starts_with('|')) {
            assert_eq!(l.matches('|').count(), 4, "{l}");
        }
        assert!(md.contains("| 6,738,415,616 "));
        assert!(md.contains("512 KiB"));
        assert!(md.contains("Kaplan"));
        let json = to_json(&models);
        assert_eq!(json["models"][1]["parameters"], 6_738_415_616u64);
        assert_eq!(json["models"][1]["kv_bytes_per_token"], 524_288);
        assert_eq!(json["models"][0]["weight_bytes"]["fp16"], 248_879_616);
        assert!(json["formulas"]["flops_per_token"]
            .as_str()
            .unwrap()
            .contains("2·N"));
    }

    #[test]
    fn svg_is_well_formed_and_scaled() {
        let models = vec![cmp("gpt2"), cmp("llama-2-7b"), cmp("bert-base-uncased")];
        let svg = memory_svg(&models, 0);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Balanced tags: every opened element is self-closed or closed.
        let opens = svg.matches("<text").count();
        assert_eq!(opens, svg.matches("</text>").count());
        assert_eq!(svg.matches("<polyline").count(), 3);
        // LLaMA-2-7B: 13.48 GB of weights + 2.15 GB of cache at 4096 tokens.
        assert!(svg.contains("llama-2-7b — 15.62 GB at 4K"));
        assert!(svg.contains("bert-base-uncased — 0.219 GB (no KV cache)"));
        // x axis ends at the largest context (4096) in steps of 512.
        assert!(svg.contains(">4K</text>") && svg.contains(">512</text>"));
        assert!(!svg.contains(">5K</text>"));
        // y axis: 15.6 GB rounds up to 16 with steps of 2.
        assert!(svg.contains(">16</text>") && svg.contains(">14</text>"));
        assert!(!svg.contains(">18</text>"));
        assert!(!svg.contains("NaN"));
        let empty = memory_svg(&[], 0);
        assert!(empty.contains("</svg>") && !empty.contains("NaN"));
    }
}
