//! `Blip2Config`: the fields of a Hugging Face `Blip2ForConditionalGeneration` `config.json`
//! (its `vision_config`, `qformer_config` and `text_config`), with HF's defaults, and BLIP's
//! `preprocessor_config.json`.

use serde::Deserialize;
use zoo_llama::LlamaConfig;
use zoo_nn::Activation;

/// `vision_config` (HF `Blip2VisionConfig`): the EVA-ViT of BLIP-2.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    /// Width of the tokens.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of one patch in pixels.
    pub patch_size: usize,
    /// MLP activation name.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// The fused `qkv` projection has a bias (q and v trained, k zero in BLIP-2).
    pub qkv_bias: bool,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1408,
            intermediate_size: 6144,
            num_hidden_layers: 39,
            num_attention_heads: 16,
            image_size: 224,
            patch_size: 14,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-6,
            qkv_bias: true,
        }
    }
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens the encoder produces: the class token and one per patch.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `qformer_config` (HF `Blip2QFormerConfig`): the BERT-style querying transformer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct QFormerConfig {
    /// Width of the query tokens.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// MLP activation name.
    pub hidden_act: String,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Layer `i` cross-attends into the image when `i % cross_attention_frequency == 0`.
    pub cross_attention_frequency: usize,
    /// Width of the image features (the vision encoder's `hidden_size`).
    pub encoder_hidden_size: usize,
    /// The text branch of the Q-Former (InstructBLIP): not supported.
    pub use_qformer_text_input: bool,
}

impl Default for QFormerConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            cross_attention_frequency: 2,
            encoder_hidden_size: 1408,
            use_qformer_text_input: false,
        }
    }
}

impl QFormerConfig {
    /// Whether layer `i` has cross-attention into the image features.
    pub fn has_cross_attention(&self, i: usize) -> bool {
        i.is_multiple_of(self.cross_attention_frequency)
    }
}

/// The raw `config.json` of a `Blip2ForConditionalGeneration` folder.
#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    vision_config: VisionConfig,
    #[serde(default)]
    qformer_config: QFormerConfig,
    #[serde(default)]
    text_config: Option<serde_json::Value>,
    #[serde(default = "default_query_tokens")]
    num_query_tokens: usize,
    #[serde(default)]
    image_token_index: Option<u32>,
}

fn default_query_tokens() -> usize {
    32
}

/// A BLIP-2 `config.json` with a LLaMA language model, checked to be self-consistent.
#[derive(Debug, Clone, PartialEq)]
pub struct Blip2Config {
    /// The vision encoder.
    pub vision: VisionConfig,
    /// The Q-Former.
    pub qformer: QFormerConfig,
    /// The language model (`text_config`).
    pub text: LlamaConfig,
    /// Learned query tokens: the image's cost in language-model positions.
    pub num_query_tokens: usize,
    /// The placeholder id the query outputs replace (`image_token_index`; transformers 5).
    pub image_token_index: Option<u32>,
}

impl Blip2Config {
    /// Parses `config.json` text and checks it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(t) = &raw.model_type {
            if t != "blip-2" && t != "blip_2" {
                return Err(format!("model_type is `{t}`, not `blip-2`"));
            }
        }
        let Some(text_config) = raw.text_config else {
            return Err("no text_config: the language model is not described".into());
        };
        let text_type = text_config
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("opt");
        if text_type != "llama" {
            return Err(format!(
                "text_config.model_type is `{text_type}`: only a LLaMA language model (MiniGPT-4's Vicuna) is supported"
            ));
        }
        let text = LlamaConfig::from_json(&text_config.to_string())
            .map_err(|e| format!("text_config: {e}"))?;
        let config = Self {
            vision: raw.vision_config,
            qformer: raw.qformer_config,
            text,
            num_query_tokens: raw.num_query_tokens,
            image_token_index: raw.image_token_index,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the sizes fit together and the activations are known.
    pub fn validate(&self) -> Result<(), String> {
        let (v, q) = (&self.vision, &self.qformer);
        for (name, x) in [
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("qformer_config.hidden_size", q.hidden_size),
            ("qformer_config.num_hidden_layers", q.num_hidden_layers),
            ("qformer_config.num_attention_heads", q.num_attention_heads),
            ("qformer_config.intermediate_size", q.intermediate_size),
            (
                "qformer_config.cross_attention_frequency",
                q.cross_attention_frequency,
            ),
            ("num_query_tokens", self.num_query_tokens),
        ] {
            if x == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(format!(
                "vision_config.hidden_size {} is not divisible by num_attention_heads {}",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if !q.hidden_size.is_multiple_of(q.num_attention_heads) {
            return Err(format!(
                "qformer_config.hidden_size {} is not divisible by num_attention_heads {}",
                q.hidden_size, q.num_attention_heads
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(format!(
                "vision_config.image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if v.image_size > 4096 {
            return Err(format!(
                "vision_config.image_size {} is larger than the 4096 pixels supported",
                v.image_size
            ));
        }
        if q.use_qformer_text_input {
            return Err(
                "qformer_config.use_qformer_text_input (InstructBLIP's text queries) is not supported"
                    .into(),
            );
        }
        activation(&v.hidden_act, "vision_config.hidden_act")?;
        activation(&q.hidden_act, "qformer_config.hidden_act")?;
        if let Some(id) = self.image_token_index {
            if id as usize >= self.text.vocab_size {
                return Err(format!(
                    "image_token_index {id} is outside the vocabulary of {} tokens",
                    self.text.vocab_size
                ));
            }
        }
        if self.num_query_tokens >= self.text.context_length() {
            return Err(format!(
                "{} query tokens do not fit the language model's context of {}",
                self.num_query_tokens,
                self.text.context_length()
            ));
        }
        Ok(())
    }

    /// The vision encoder's activation.
    pub fn vision_activation(&self) -> Activation {
        activation(&self.vision.hidden_act, "").expect("validated")
    }

    /// The Q-Former's activation.
    pub fn qformer_activation(&self) -> Activation {
        activation(&self.qformer.hidden_act, "").expect("validated")
    }

    /// Parameters of the vision encoder.
    pub fn vision_parameters(&self) -> usize {
        let v = &self.vision;
        let (d, f) = (v.hidden_size, v.intermediate_size);
        let patch = 3 * v.patch_size * v.patch_size * d + d;
        let block = (3 * d * d + if v.qkv_bias { 3 * d } else { 0 }) // qkv
            + d * d + d // projection
            + d * f + f + f * d + d // fc1, fc2
            + 4 * d; // two LayerNorms
        patch + d + v.num_positions() * d + v.num_hidden_layers * block + 2 * d
    }

    /// Parameters of the query tokens, the Q-Former and the projection.
    pub fn qformer_parameters(&self) -> usize {
        let q = &self.qformer;
        let (d, e, f) = (q.hidden_size, q.encoder_hidden_size, q.intermediate_size);
        let attention = |kv: usize| d * d + d + 2 * (kv * d + d) + d * d + d + 2 * d;
        let mut n = self.num_query_tokens * d + 2 * d;
        for i in 0..q.num_hidden_layers {
            n += attention(d) + d * f + f + f * d + d + 2 * d;
            if q.has_cross_attention(i) {
                n += attention(e);
            }
        }
        n + d * self.text.hidden_size + self.text.hidden_size
    }
}

fn activation(name: &str, field: &str) -> Result<Activation, String> {
    Activation::from_hf_name(name).ok_or_else(|| format!("{field} `{name}` is not supported"))
}

/// BLIP's `preprocessor_config.json` (`BlipImageProcessor`): how an image becomes pixel values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PreprocessorConfig {
    /// Resize to `size`.
    pub do_resize: bool,
    /// The target size.
    pub size: ImageSize,
    /// PIL resampling filter: 3 (bicubic) is supported.
    pub resample: u32,
    /// Multiply the 8-bit values by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std`, per channel.
    pub do_normalize: bool,
    /// Per-channel mean (CLIP's by default).
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation (CLIP's by default).
    pub image_std: [f64; 3],
    /// Convert to RGB first (grey replicated, transparency composited onto white).
    pub do_convert_rgb: bool,
}

/// `size` of a preprocessor config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ImageSize {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// CLIP's mean, which BLIP uses.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// CLIP's standard deviation, which BLIP uses.
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: ImageSize {
                height: 384,
                width: 384,
            },
            resample: 3,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
            do_convert_rgb: true,
        }
    }
}

impl PreprocessorConfig {
    /// Parses `preprocessor_config.json` text and checks it against the model's image size.
    pub fn from_json(text: &str, image_size: usize) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        config.validate(image_size)?;
        Ok(config)
    }

    /// The processor for a model without `preprocessor_config.json`: BLIP's defaults at the
    /// model's image size.
    pub fn for_image_size(image_size: usize) -> Self {
        Self {
            size: ImageSize {
                height: image_size,
                width: image_size,
            },
            ..Self::default()
        }
    }

    /// Checks the settings are ones the zoo implements and give the model's input size.
    pub fn validate(&self, image_size: usize) -> Result<(), String> {
        if !self.do_resize {
            return Err(
                "do_resize false is not supported: images are resized to the model's size".into(),
            );
        }
        if self.resample != 3 {
            return Err(format!(
                "resample {} is not supported (3, PIL's bicubic, is)",
                self.resample
            ));
        }
        if self.size.height != image_size || self.size.width != image_size {
            return Err(format!(
                "size {}x{} differs from the vision encoder's image_size {image_size}",
                self.size.height, self.size.width
            ));
        }
        if self.do_normalize && self.image_std.contains(&0.0) {
            return Err("image_std has a zero".into());
        }
        Ok(())
    }
}
