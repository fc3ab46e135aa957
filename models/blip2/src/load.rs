//! Loading a Hugging Face `Blip2ForConditionalGeneration` folder whose `text_config` is a LLaMA
//! (`config.json`, `model.safetensors` / shards / `pytorch_model.bin`, `preprocessor_config.json`,
//! the language model's tokenizer) into [`Blip2`].
//!
//! | checkpoint name | module field | note |
//! | --- | --- | --- |
//! | `vision_model.embeddings.patch_embedding.weight` `[d, 3, p, p]` | `vision_model.embeddings.patch_embedding` | the convolution, flattened to `[d, 3p²]` |
//! | `vision_model.embeddings.patch_embedding.bias` `[d]` | same | |
//! | `vision_model.embeddings.class_embedding` `[1, 1, d]` | `…class_embedding` `[d]` | |
//! | `vision_model.embeddings.position_embedding` `[1, 1 + grid², d]` | `…position_embedding` | |
//! | `vision_model.encoder.layers.{i}.layer_norm{1,2}.{weight,bias}` | `vision_model.layers[i].layer_norm{1,2}` | eps `layer_norm_eps` |
//! | `vision_model.encoder.layers.{i}.self_attn.qkv.weight` `[3d, d]` | `…self_attn.qkv` | rows q, k, v |
//! | `vision_model.encoder.layers.{i}.self_attn.qkv.bias` `[3d]`, or `q_bias` + `v_bias` `[d]` | `…self_attn.qkv` bias | when `qkv_bias`; LAVIS's separate q/v biases get k = 0 |
//! | `vision_model.encoder.layers.{i}.self_attn.projection.{weight,bias}` | `…self_attn.projection` | |
//! | `vision_model.encoder.layers.{i}.mlp.fc{1,2}.{weight,bias}` | `…fc{1,2}` | |
//! | `vision_model.post_layernorm.{weight,bias}` | `vision_model.post_layernorm` | |
//! | `query_tokens` `[1, n, dq]` | `query_tokens` `[n, dq]` | |
//! | `qformer.layernorm.{weight,bias}` | `qformer.layernorm` | eps `qformer_config.layer_norm_eps` |
//! | `qformer.encoder.layer.{i}.attention.attention.{query,key,value}.{weight,bias}` | `qformer.layers[i].attention.*` | |
//! | `qformer.encoder.layer.{i}.attention.output.dense.*`, `….output.LayerNorm.*` | `….attention.output`, `….output_norm` | |
//! | `qformer.encoder.layer.{i}.crossattention.*` (same names) | `qformer.layers[i].crossattention` | layers `i % cross_attention_frequency == 0`; keys / values `[dq, d]` |
//! | `qformer.encoder.layer.{i}.intermediate_query.dense.*` | `….intermediate_query` | |
//! | `qformer.encoder.layer.{i}.output_query.dense.*`, `….output_query.LayerNorm.*` | `….output_query`, `….output_query_norm` | |
//! | `language_projection.{weight,bias}` `[d_text, dq]` | `language_projection` | |
//! | `language_model.*` | `language_model` | read by zoo-llama's loader after dropping the prefix (`model.…`, `lm_head.weight`) |
//!
//! A folder in MiniGPT-4's own release layout (LAVIS names, no `config.json`) is read by
//! [`crate::release`], which renames its tensors to these.
//!
//! Every `nn.Linear` is `[out, in]`. No tensor is skipped but LLaMA's `rotary_emb.inv_freq`
//! buffers of old checkpoints.

use std::path::Path;
use std::sync::Arc;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use zoo_nn::chat::ChatFormat;
use zoo_nn::weights::{LinearLayout, WeightError, Weights};
use zoo_nn::{Dense, LayerNorm, TextEncoding, TextGenerator, TextTokenizer, WeightFormat};

use crate::chat::MiniGpt4Format;
use crate::config::{Blip2Config, PreprocessorConfig};
use crate::model::{
    Blip2, QFormer, QFormerAttention, QFormerLayer, VisionAttention, VisionEmbeddings, VisionLayer,
    VisionModel,
};
use crate::{Blip2Error, Blip2Lm};

/// A BLIP-2 model with its tokenizer, MiniGPT-4's chat format and stop ids.
pub type Blip2Generator<B> = TextGenerator<B, Blip2Lm<B>>;

fn read_text(path: &Path) -> Result<String, Blip2Error> {
    std::fs::read_to_string(path).map_err(|e| Blip2Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads `config.json` from a model folder (a MiniGPT-4 release folder's config from
/// [`crate::release::read_config`]).
pub fn read_config(dir: &Path) -> Result<Blip2Config, Blip2Error> {
    if crate::release::is_release(dir) {
        return crate::release::read_config(dir);
    }
    let path = dir.join("config.json");
    let text = read_text(&path)?;
    Blip2Config::from_json(&text).map_err(|reason| Blip2Error::Config { path, reason })
}

/// Reads `preprocessor_config.json`, or BLIP's defaults at the model's image size when the
/// folder has none.
pub fn read_preprocessor(
    dir: &Path,
    config: &Blip2Config,
) -> Result<PreprocessorConfig, Blip2Error> {
    let path = dir.join("preprocessor_config.json");
    let size = config.vision.image_size;
    if !path.is_file() {
        return Ok(PreprocessorConfig::for_image_size(size));
    }
    let text = read_text(&path)?;
    PreprocessorConfig::from_json(&text, size).map_err(|reason| Blip2Error::Config { path, reason })
}

/// Opens a BLIP-2 folder with its tokenizer, image processor and MiniGPT-4's chat format.
pub fn open<B: Backend>(dir: &Path, device: &B::Device) -> Result<Blip2Generator<B>, Blip2Error> {
    open_with(dir, device, WeightFormat::AS_STORED)
}

/// [`open`], keeping the language model's matrices in `format` (the vision encoder and the
/// Q-Former stay f32, as transformers keeps the Q-Former).
pub fn open_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<Blip2Generator<B>, Blip2Error> {
    let (config, model) = load_with(dir, device, format)?;
    let preprocessor = read_preprocessor(dir, &config)?;
    // A MiniGPT-4 release keeps the tokenizer with its language model.
    let lm_dir = if crate::release::is_release(dir) {
        dir.join(crate::release::VICUNA_DIR)
    } else {
        dir.to_path_buf()
    };
    let tokenizer = TextTokenizer::from_dir(&lm_dir)?;
    let chat = config.image_token_index.map(|id| {
        Arc::new(MiniGpt4Format::new(id, config.num_query_tokens)) as Arc<dyn ChatFormat>
    });
    let mut eos_ids = config.text.eos_ids();
    let gen = lm_dir.join("generation_config.json");
    if gen.is_file() {
        let value: serde_json::Value =
            serde_json::from_str(&read_text(&gen)?).map_err(|e| Blip2Error::Config {
                path: gen.clone(),
                reason: e.to_string(),
            })?;
        match value.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => eos_ids.extend(n.as_u64().map(|v| v as u32)),
            Some(serde_json::Value::Array(list)) => {
                eos_ids.extend(list.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
            }
            _ => {}
        }
    }
    Ok(TextGenerator::new(
        Blip2Lm::new(model, config, preprocessor),
        dir,
        tokenizer,
        TextEncoding::Tokenizer,
        chat,
        eos_ids,
    ))
}

/// Loads a BLIP-2 folder onto `device`: every checkpoint tensor is used or the load fails.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Blip2Config, Blip2<B>), Blip2Error> {
    load_with(dir, device, WeightFormat::AS_STORED)
}

/// [`load`], keeping the language model's matrices in `format`.
pub fn load_with<B: Backend>(
    dir: &Path,
    device: &B::Device,
    format: WeightFormat,
) -> Result<(Blip2Config, Blip2<B>), Blip2Error> {
    if crate::release::is_release(dir) {
        return crate::release::load_with(dir, device, format);
    }
    let config = read_config(dir)?;
    let mut weights = Weights::open(dir)?;
    let model = from_weights(&config, &mut weights, format, device)?;
    weights.finish(|name| name.ends_with("rotary_emb.inv_freq"))?;
    Ok((config, model))
}

/// Builds the module from checkpoint tensors (the names of the table above).
pub fn from_weights<B: Backend>(
    config: &Blip2Config,
    weights: &mut Weights,
    format: WeightFormat,
    device: &B::Device,
) -> Result<Blip2<B>, WeightError> {
    let ImageSide {
        vision_model,
        query_tokens,
        qformer,
        language_projection,
    } = image_side(config, weights, device)?;
    // The language model under its own names.
    weights.rename_prefix("language_model.", "");
    weights.set_format(format);
    let language_model = zoo_llama::from_weights(&config.text, weights, None, device)?;
    Ok(Blip2 {
        vision_model,
        query_tokens,
        qformer,
        language_projection,
        language_model,
        image_token_index: config.image_token_index,
    })
}

/// The modules before the language model: vision encoder, query tokens, Q-Former, projection.
pub(crate) struct ImageSide<B: Backend> {
    pub vision_model: VisionModel<B>,
    pub query_tokens: Param<Tensor<B, 2>>,
    pub qformer: QFormer<B>,
    pub language_projection: Dense<B>,
}

/// Reads the image side under the HF names of the table above (always f32).
pub(crate) fn image_side<B: Backend>(
    config: &Blip2Config,
    weights: &mut Weights,
    device: &B::Device,
) -> Result<ImageSide<B>, WeightError> {
    weights.set_format(WeightFormat::AS_STORED);
    let vision_model = vision(config, weights, device)?;
    let nq = config.num_query_tokens;
    let dq = config.qformer.hidden_size;
    let query_tokens: Tensor<B, 3> = weights.tensor("query_tokens", [1, nq, dq], device)?;
    let query_tokens = Param::from_tensor(query_tokens.reshape([nq, dq]));
    let qformer = qformer(config, weights, device)?;
    let language_projection = weights.dense(
        "language_projection",
        dq,
        config.text.hidden_size,
        true,
        LinearLayout::OutIn,
        device,
    )?;
    Ok(ImageSide {
        vision_model,
        query_tokens,
        qformer,
        language_projection,
    })
}

fn layer_norm<B: Backend>(
    w: &mut Weights,
    prefix: &str,
    d: usize,
    eps: f64,
    device: &B::Device,
) -> Result<LayerNorm<B>, WeightError> {
    Ok(LayerNorm::new(
        w.tensor(&format!("{prefix}.weight"), [d], device)?,
        w.tensor(&format!("{prefix}.bias"), [d], device)?,
        eps,
    ))
}

fn vision<B: Backend>(
    config: &Blip2Config,
    w: &mut Weights,
    device: &B::Device,
) -> Result<VisionModel<B>, WeightError> {
    let v = &config.vision;
    let (d, f, p) = (v.hidden_size, v.intermediate_size, v.patch_size);
    let eps = v.layer_norm_eps;
    let act = config.vision_activation();
    let e = "vision_model.embeddings";
    let conv: Tensor<B, 4> =
        w.tensor(&format!("{e}.patch_embedding.weight"), [d, 3, p, p], device)?;
    let conv_bias = w.tensor(&format!("{e}.patch_embedding.bias"), [d], device)?;
    let class: Tensor<B, 3> = w.tensor(&format!("{e}.class_embedding"), [1, 1, d], device)?;
    let n = v.num_positions();
    let positions: Tensor<B, 3> =
        w.tensor(&format!("{e}.position_embedding"), [1, n, d], device)?;
    let embeddings = VisionEmbeddings {
        patch_embedding: Dense::new(conv.reshape([d, 3 * p * p]), Some(conv_bias)),
        class_embedding: Param::from_tensor(class.reshape([d])),
        position_embedding: Param::from_tensor(positions.reshape([n, d])),
        patch_size: p,
    };
    let mut layers = Vec::with_capacity(v.num_hidden_layers);
    for i in 0..v.num_hidden_layers {
        let l = format!("vision_model.encoder.layers.{i}");
        let a = format!("{l}.self_attn");
        let qkv_weight = w.tensor(&format!("{a}.qkv.weight"), [3 * d, d], device)?;
        let qkv_bias = if !v.qkv_bias {
            None
        } else if w.contains(&format!("{a}.qkv.bias")) {
            Some(w.tensor(&format!("{a}.qkv.bias"), [3 * d], device)?)
        } else {
            // LAVIS / EVA: `q_bias` and `v_bias`, the keys without bias.
            let q = w.take_f32(&format!("{a}.q_bias"), &[d])?;
            let vb = w.take_f32(&format!("{a}.v_bias"), &[d])?;
            let all: Vec<f32> = q.into_iter().chain(vec![0.0; d]).chain(vb).collect();
            Some(Tensor::from_data(TensorData::new(all, [3 * d]), device))
        };
        let lin = |w: &mut Weights, name: &str, din: usize, dout: usize| {
            w.dense(
                &format!("{l}.{name}"),
                din,
                dout,
                true,
                LinearLayout::OutIn,
                device,
            )
        };
        layers.push(VisionLayer {
            layer_norm1: layer_norm(w, &format!("{l}.layer_norm1"), d, eps, device)?,
            self_attn: VisionAttention {
                qkv: Dense::new(qkv_weight, qkv_bias),
                projection: lin(w, "self_attn.projection", d, d)?,
                num_heads: v.num_attention_heads,
            },
            layer_norm2: layer_norm(w, &format!("{l}.layer_norm2"), d, eps, device)?,
            fc1: lin(w, "mlp.fc1", d, f)?,
            fc2: lin(w, "mlp.fc2", f, d)?,
            act,
        });
    }
    Ok(VisionModel {
        embeddings,
        layers,
        post_layernorm: layer_norm(w, "vision_model.post_layernorm", d, eps, device)?,
    })
}

fn qformer<B: Backend>(
    config: &Blip2Config,
    w: &mut Weights,
    device: &B::Device,
) -> Result<QFormer<B>, WeightError> {
    let q = &config.qformer;
    let (d, f) = (q.hidden_size, q.intermediate_size);
    let dv = config.vision.hidden_size;
    let eps = q.layer_norm_eps;
    let act = config.qformer_activation();
    let lin = |w: &mut Weights, name: &str, din: usize, dout: usize| {
        w.dense(name, din, dout, true, LinearLayout::OutIn, device)
    };
    let attention =
        |w: &mut Weights, prefix: &str, dkv: usize| -> Result<QFormerAttention<B>, WeightError> {
            Ok(QFormerAttention {
                query: lin(w, &format!("{prefix}.attention.query"), d, d)?,
                key: lin(w, &format!("{prefix}.attention.key"), dkv, d)?,
                value: lin(w, &format!("{prefix}.attention.value"), dkv, d)?,
                output: lin(w, &format!("{prefix}.output.dense"), d, d)?,
                output_norm: layer_norm(w, &format!("{prefix}.output.LayerNorm"), d, eps, device)?,
                num_heads: q.num_attention_heads,
            })
        };
    let mut layers = Vec::with_capacity(q.num_hidden_layers);
    for i in 0..q.num_hidden_layers {
        let l = format!("qformer.encoder.layer.{i}");
        layers.push(QFormerLayer {
            attention: attention(w, &format!("{l}.attention"), d)?,
            crossattention: if q.has_cross_attention(i) {
                Some(attention(w, &format!("{l}.crossattention"), dv)?)
            } else {
                None
            },
            intermediate_query: lin(w, &format!("{l}.intermediate_query.dense"), d, f)?,
            output_query: lin(w, &format!("{l}.output_query.dense"), f, d)?,
            output_query_norm: layer_norm(
                w,
                &format!("{l}.output_query.LayerNorm"),
                d,
                eps,
                device,
            )?,
            act,
        });
    }
    Ok(QFormer {
        layernorm: layer_norm(w, "qformer.layernorm", d, eps, device)?,
        layers,
    })
}
