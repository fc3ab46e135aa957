//! MiniGPT-4's own release, as its code (LAVIS's BLIP-2 code, `mini_gpt4.py`) reads it: no
//! `config.json`, three PyTorch checkpoints under LAVIS's names and a Vicuna folder.
//!
//! ```text
//! FOLDER/
//!   pretrained_minigpt4.pth          {"model": {llama_proj.weight, llama_proj.bias}}: MiniGPT-4's
//!                                    projection (any one `*minigpt4*.pth`, e.g. the 7B release's
//!                                    `prerained_minigpt4_7b.pth`)
//!   blip2_pretrained_flant5xxl.pth   {"model": {query_tokens, ln_vision.*, Qformer.bert.*, …}}:
//!                                    LAVIS's BLIP-2 (any one `blip2_pretrained*.pth`)
//!   eva_vit_g.pth                    {cls_token, pos_embed, patch_embed.proj.*, blocks.{i}.*}:
//!                                    LAVIS's EVA ViT-g (optional when the BLIP-2 checkpoint holds
//!                                    `visual_encoder.*`)
//!   vicuna/                          the language model, a Hugging Face LLaMA folder
//!                                    (config.json, weights, tokenizer)
//!   minigpt4.json                    optional: sizes that differ from MiniGPT-4's (below)
//! ```
//!
//! The files are read in MiniGPT-4's order, each non-strictly over the one before (a tensor in
//! a later file replaces the earlier one): `eva_vit_g.pth` (as `visual_encoder.*`), the BLIP-2
//! checkpoint, the projection. A checkpoint saved as `{"model": state_dict}` is read from its
//! `model` entry (tensors beside it, an optimizer's state, are not read); a bare state dict
//! as it is.
//!
//! The sizes are MiniGPT-4's (`create_eva_vit_g`, `init_Qformer`, its eval config): EVA ViT-g
//! (width 1408, 39 blocks, 16 heads, MLP 6144, 14-pixel patches, 224-pixel images, LayerNorm
//! eps 1e-6, q/v biases), the Q-Former of BERT-base (768 wide, 12 layers, 12 heads,
//! cross-attention every 2nd layer, eps 1e-12), 32 query tokens; the language model's are in
//! `vicuna/config.json`. `minigpt4.json` may change them with the field names of transformers'
//! `Blip2Config` (`vision_config`, `qformer_config`, `num_query_tokens`) and set
//! `image_token_index`, the id that stands for an image position in `--ids` (default 0,
//! LLaMA's `<unk>`, which its byte-fallback tokenizer never produces). Images are
//! preprocessed as MiniGPT-4's `Blip2ImageEvalProcessor` does: bicubic resize to the image
//! size, CLIP mean / std (BLIP's processor defaults).
//!
//! | LAVIS name | HF name it is read as |
//! | --- | --- |
//! | `visual_encoder.cls_token` | `vision_model.embeddings.class_embedding` |
//! | `visual_encoder.pos_embed` | `vision_model.embeddings.position_embedding` (not interpolated: its grid must be the image's) |
//! | `visual_encoder.patch_embed.proj.*` | `vision_model.embeddings.patch_embedding.*` |
//! | `visual_encoder.blocks.{i}.norm{1,2}.*` | `vision_model.encoder.layers.{i}.layer_norm{1,2}.*` |
//! | `visual_encoder.blocks.{i}.attn.qkv.weight`, `.attn.q_bias`, `.attn.v_bias` | `….self_attn.qkv.weight`, `.q_bias`, `.v_bias` (k has no bias) |
//! | `visual_encoder.blocks.{i}.attn.proj.*` | `….self_attn.projection.*` |
//! | `visual_encoder.blocks.{i}.mlp.fc{1,2}.*` | `….mlp.fc{1,2}.*` |
//! | `ln_vision.*` | `vision_model.post_layernorm.*` |
//! | `query_tokens` | `query_tokens` |
//! | `Qformer.bert.embeddings.LayerNorm.*` | `qformer.layernorm.*` |
//! | `Qformer.bert.encoder.layer.{i}.attention.self.*` | `qformer.encoder.layer.{i}.attention.attention.*` |
//! | `Qformer.bert.encoder.layer.{i}.crossattention.self.*` | `….crossattention.attention.*` |
//! | `Qformer.bert.encoder.layer.{i}.{attention,crossattention}.output.*`, `.intermediate_query.*`, `.output_query.*` | same under `qformer.encoder.layer.{i}.` |
//! | `llama_proj.*` | `language_projection.*` |
//!
//! Every other tensor is an error, except what MiniGPT-4 itself drops ([`dropped_by_minigpt4`]):
//! the Q-Former's text branch (`Qformer.cls.*`, word / position embeddings, each layer's
//! `intermediate.*` / `output.*`), BLIP-2's own projections and heads (`t5_proj.*`,
//! `opt_proj.*`, `vision_proj.*`, `text_proj.*`, `itm_head.*`, `temp`), and EVA blocks past
//! the depth used (BLIP-2 takes the second-last layer of EVA-CLIP) with EVA's final
//! `norm` / `fc_norm` / `head`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::Value;
use zoo_nn::weights::{WeightError, Weights};
use zoo_nn::WeightFormat;

use crate::config::Blip2Config;
use crate::load::{image_side, ImageSide};
use crate::model::Blip2;
use crate::Blip2Error;

/// The optional file with sizes that differ from MiniGPT-4's.
pub const CONFIG_FILE: &str = "minigpt4.json";
/// LAVIS's EVA ViT-g checkpoint.
pub const EVA_FILE: &str = "eva_vit_g.pth";
/// The language model's folder.
pub const VICUNA_DIR: &str = "vicuna";
/// The layout, for messages.
pub const LAYOUT: &str = "a MiniGPT-4 release folder holds pretrained_minigpt4.pth (the projection), blip2_pretrained_flant5xxl.pth (LAVIS's BLIP-2 Q-Former), eva_vit_g.pth (LAVIS's EVA ViT-g) and vicuna/ (a Hugging Face LLaMA folder), optionally minigpt4.json";

/// The files of a MiniGPT-4 release folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFiles {
    /// MiniGPT-4's projection checkpoint.
    pub projection: PathBuf,
    /// LAVIS's BLIP-2 checkpoint (query tokens, `ln_vision`, Q-Former).
    pub blip2: PathBuf,
    /// LAVIS's EVA ViT-g checkpoint, when the folder has one.
    pub eva: Option<PathBuf>,
    /// The language model's Hugging Face folder.
    pub vicuna: PathBuf,
    /// `minigpt4.json`, when the folder has one.
    pub config: Option<PathBuf>,
}

fn is_projection(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".pth") && n.contains("minigpt4")
}

fn is_blip2(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with(".pth") && n.starts_with("blip2_pretrained")
}

fn file_names(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Whether `dir` is laid out as MiniGPT-4's release (no `config.json`, one of its checkpoints).
pub fn is_release(dir: &Path) -> bool {
    dir.is_dir()
        && !dir.join("config.json").exists()
        && file_names(dir)
            .iter()
            .any(|n| is_projection(n) || is_blip2(n) || n == EVA_FILE)
}

/// Finds the release's files, or says which is missing.
pub fn files(dir: &Path) -> Result<ReleaseFiles, Blip2Error> {
    let layout = |reason: String| Blip2Error::Layout {
        dir: dir.to_path_buf(),
        reason: format!("{reason} ({LAYOUT})"),
    };
    let names = file_names(dir);
    let one = |pick: fn(&str) -> bool, what: &str| -> Result<PathBuf, Blip2Error> {
        let found: Vec<&String> = names.iter().filter(|n| pick(n)).collect();
        match found.as_slice() {
            [name] => Ok(dir.join(name)),
            [] => Err(layout(format!("no {what}"))),
            many => Err(layout(format!(
                "several candidates for {what}: {}; keep one",
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    let projection = one(
        is_projection,
        "pretrained_minigpt4.pth (MiniGPT-4's projection, a `*minigpt4*.pth` file)",
    )?;
    let blip2 = one(
        is_blip2,
        "blip2_pretrained_flant5xxl.pth (LAVIS's BLIP-2 checkpoint, a `blip2_pretrained*.pth` file)",
    )?;
    let vicuna = dir.join(VICUNA_DIR);
    if !vicuna.join("config.json").is_file() {
        return Err(layout(format!(
            "no {}: the language model's Hugging Face folder with its config.json",
            vicuna.join("config.json").display()
        )));
    }
    let eva = dir.join(EVA_FILE);
    let config = dir.join(CONFIG_FILE);
    Ok(ReleaseFiles {
        projection,
        blip2,
        eva: eva.is_file().then_some(eva),
        vicuna,
        config: config.is_file().then_some(config),
    })
}

fn read_json(path: &Path) -> Result<Value, Blip2Error> {
    let bad = |reason: String| Blip2Error::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
}

/// The release's config: MiniGPT-4's sizes, `minigpt4.json`'s changes, `vicuna/config.json`.
pub fn read_config(dir: &Path) -> Result<Blip2Config, Blip2Error> {
    let files = files(dir)?;
    let text = read_json(&files.vicuna.join("config.json"))?;
    let (mut raw, path) = match &files.config {
        Some(path) => (read_json(path)?, path.clone()),
        None => (serde_json::json!({}), dir.join(CONFIG_FILE)),
    };
    let Some(obj) = raw.as_object_mut() else {
        return Err(Blip2Error::Config {
            path,
            reason: "not a JSON object".into(),
        });
    };
    const KNOWN: [&str; 4] = [
        "vision_config",
        "qformer_config",
        "num_query_tokens",
        "image_token_index",
    ];
    if let Some(key) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Blip2Error::Config {
            path,
            reason: format!("unknown field `{key}` (known: {})", KNOWN.join(", ")),
        });
    }
    obj.insert("model_type".into(), "blip-2".into());
    obj.insert("text_config".into(), text);
    obj.entry("image_token_index").or_insert(0.into());
    Blip2Config::from_json(&raw.to_string()).map_err(|reason| Blip2Error::Config { path, reason })
}

/// A checkpoint's state dict: its `model` entry when it has one, else all of it.
fn state_dict(path: &Path) -> Result<Weights, Blip2Error> {
    let mut w = Weights::open(path)?;
    if w.names().any(|n| n.starts_with("model.")) {
        let others: Vec<String> = w
            .names()
            .filter(|n| !n.starts_with("model."))
            .map(str::to_string)
            .collect();
        for name in others {
            w.skip(&name);
        }
        w.rename_prefix("model.", "");
    }
    Ok(w)
}

/// LAVIS prefixes and the HF prefixes they are read as (the table above).
fn rules(config: &Blip2Config) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = [
        (
            "visual_encoder.cls_token",
            "vision_model.embeddings.class_embedding",
        ),
        (
            "visual_encoder.pos_embed",
            "vision_model.embeddings.position_embedding",
        ),
        (
            "visual_encoder.patch_embed.proj.",
            "vision_model.embeddings.patch_embedding.",
        ),
        ("ln_vision.", "vision_model.post_layernorm."),
        ("Qformer.bert.embeddings.LayerNorm.", "qformer.layernorm."),
        ("llama_proj.", "language_projection."),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for i in 0..config.vision.num_hidden_layers {
        let (a, b) = (
            format!("visual_encoder.blocks.{i}."),
            format!("vision_model.encoder.layers.{i}."),
        );
        for (x, y) in [
            ("norm1.", "layer_norm1."),
            ("norm2.", "layer_norm2."),
            ("attn.qkv.", "self_attn.qkv."),
            ("attn.q_bias", "self_attn.q_bias"),
            ("attn.v_bias", "self_attn.v_bias"),
            ("attn.proj.", "self_attn.projection."),
            ("mlp.", "mlp."),
        ] {
            r.push((format!("{a}{x}"), format!("{b}{y}")));
        }
    }
    for i in 0..config.qformer.num_hidden_layers {
        let (a, b) = (
            format!("Qformer.bert.encoder.layer.{i}."),
            format!("qformer.encoder.layer.{i}."),
        );
        for (x, y) in [
            ("attention.self.", "attention.attention."),
            ("attention.output.", "attention.output."),
            ("crossattention.self.", "crossattention.attention."),
            ("crossattention.output.", "crossattention.output."),
            ("intermediate_query.", "intermediate_query."),
            ("output_query.", "output_query."),
        ] {
            r.push((format!("{a}{x}"), format!("{b}{y}")));
        }
    }
    r
}

/// The LAVIS name of an HF name (itself when no rule made it).
fn lavis_name(rules: &[(String, String)], name: &str) -> String {
    rules
        .iter()
        .filter(|(_, hf)| name.starts_with(hf.as_str()))
        .max_by_key(|(_, hf)| hf.len())
        .map_or(name.to_string(), |(lavis, hf)| {
            format!("{lavis}{}", &name[hf.len()..])
        })
}

/// A weight error with the tensor named as the release's files name it.
fn renamed(rules: &[(String, String)], e: WeightError) -> WeightError {
    let n = |name: String| lavis_name(rules, &name);
    match e {
        WeightError::Missing { name, source_name } => WeightError::Missing {
            name: n(name),
            source_name,
        },
        WeightError::Shape {
            name,
            expected,
            found,
        } => WeightError::Shape {
            name: n(name),
            expected,
            found,
        },
        WeightError::Dtype { name, dtype } => WeightError::Dtype {
            name: n(name),
            dtype,
        },
        WeightError::Inconsistent { name, reason } => WeightError::Inconsistent {
            name: n(name),
            reason,
        },
        WeightError::NonFinite { name, index, value } => WeightError::NonFinite {
            name: n(name),
            index,
            value,
        },
        WeightError::Unused(names) => WeightError::Unused(names.into_iter().map(n).collect()),
        other => other,
    }
}

/// The tensors MiniGPT-4 itself does not load (LAVIS names; see the module docs).
pub fn dropped_by_minigpt4(name: &str, config: &Blip2Config) -> bool {
    const PREFIXES: [&str; 11] = [
        "t5_proj.",
        "opt_proj.",
        "vision_proj.",
        "text_proj.",
        "itm_head.",
        "Qformer.cls.",
        "Qformer.bert.embeddings.word_embeddings.",
        "Qformer.bert.embeddings.position_embeddings.",
        "visual_encoder.norm.",
        "visual_encoder.fc_norm.",
        "visual_encoder.head.",
    ];
    if name == "temp"
        || name == "Qformer.bert.embeddings.position_ids"
        || PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return true;
    }
    let index_and_rest = |prefix: &str| -> Option<(usize, String)> {
        let rest = name.strip_prefix(prefix)?;
        let (i, rest) = rest.split_once('.')?;
        Some((i.parse().ok()?, rest.to_string()))
    };
    if let Some((i, _)) = index_and_rest("visual_encoder.blocks.") {
        return i >= config.vision.num_hidden_layers;
    }
    if let Some((_, rest)) = index_and_rest("Qformer.bert.encoder.layer.") {
        return rest.starts_with("intermediate.") || rest.starts_with("output.");
    }
    false
}

/// The image side's tensors of a release, read in MiniGPT-4's order and named as
/// [`crate::load`] reads them; with the renaming rules, for messages.
fn image_weights(
    files: &ReleaseFiles,
    config: &Blip2Config,
    dir: &Path,
) -> Result<(Weights, Vec<(String, String)>), Blip2Error> {
    let mut sources = Vec::new();
    for path in [
        files.eva.as_ref(),
        Some(&files.blip2),
        Some(&files.projection),
    ]
    .into_iter()
    .flatten()
    {
        sources.extend(
            path.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string),
        );
    }
    let mut w = Weights::from_f32(
        &format!(
            "the MiniGPT-4 release in {} ({})",
            dir.display(),
            sources.join(", ")
        ),
        BTreeMap::new(),
    );
    if let Some(eva) = &files.eva {
        w.absorb(state_dict(eva)?, "visual_encoder.");
    }
    w.absorb(state_dict(&files.blip2)?, "");
    w.absorb(state_dict(&files.projection)?, "");
    if !w.names().any(|n| n.starts_with("visual_encoder.")) {
        return Err(Blip2Error::Layout {
            dir: dir.to_path_buf(),
            reason: format!(
                "no vision encoder: no {EVA_FILE} (LAVIS's EVA ViT-g) and no visual_encoder.* tensors in {}",
                files.blip2.display()
            ),
        });
    }
    let rules = rules(config);
    for (lavis, hf) in &rules {
        w.rename_prefix(lavis, hf);
    }
    Ok((w, rules))
}

/// Loads a MiniGPT-4 release folder, every tensor used but those [`dropped_by_minigpt4`];
/// the language model's matrices in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(Blip2Config, Blip2<B>), Blip2Error> {
    let config = read_config(dir)?;
    let files = files(dir)?;
    let (mut w, rules) = image_weights(&files, &config, dir)?;
    let ImageSide {
        vision_model,
        query_tokens,
        qformer,
        language_projection,
    } = image_side(&config, &mut w, device).map_err(|e| renamed(&rules, e))?;
    w.finish(|name| dropped_by_minigpt4(name, &config))
        .map_err(|e| renamed(&rules, e))?;
    let mut lm = Weights::open(&files.vicuna)?;
    lm.set_format(format);
    let language_model = zoo_llama::from_weights(&config.text, &mut lm, None, device)?;
    lm.finish(|name| name.ends_with("rotary_emb.inv_freq"))?;
    Ok((
        config.clone(),
        Blip2 {
            vision_model,
            query_tokens,
            qformer,
            language_projection,
            language_model,
            image_token_index: config.image_token_index,
        },
    ))
}

/// Parameters of a release counted from its tensors (as `zoo info` counts an HF folder's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParameterCounts {
    /// The vision encoder and `ln_vision`.
    pub vision: usize,
    /// Query tokens, Q-Former and the projection.
    pub qformer: usize,
    /// The language model (buffers excluded).
    pub language_model: usize,
}

/// Counts the parameters of the tensors a release's load uses.
pub fn parameter_counts(dir: &Path) -> Result<ParameterCounts, Blip2Error> {
    let config = read_config(dir)?;
    let files = files(dir)?;
    let (w, _) = image_weights(&files, &config, dir)?;
    let count = |w: &Weights, pick: &dyn Fn(&str) -> bool| -> usize {
        w.names()
            .filter(|n| pick(n))
            .map(|n| w.shape(n).map_or(0, |s| s.iter().product::<usize>()))
            .sum()
    };
    let lm = Weights::open(&files.vicuna)?;
    Ok(ParameterCounts {
        vision: count(&w, &|n| n.starts_with("vision_model.")),
        qformer: count(&w, &|n| {
            n == "query_tokens"
                || n.starts_with("qformer.")
                || n.starts_with("language_projection.")
        }),
        language_model: count(&lm, &|n| !n.ends_with("inv_freq")),
    })
}
