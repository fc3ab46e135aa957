//! The BLIP-2 module tree, as `Blip2ForConditionalGeneration` holds it: the vision transformer
//! (`vision_model`), the learned `query_tokens`, the Q-Former (`qformer`), the
//! `language_projection`, and a LLaMA `language_model` (zoo-llama's module, unchanged).
//!
//! An image becomes `num_query_tokens` embeddings in the language model's space:
//! pixels → [`VisionModel`] (patches + class token + positions, pre-LN blocks, final LayerNorm)
//! → [`QFormer`] (the query tokens attend to each other and, every
//! `cross_attention_frequency` layers, to the image features) → `language_projection`. Those
//! embeddings replace, in order, the placeholder ids (`image_token_index`) of the prompt; the
//! language model then runs over the whole sequence, RoPE positions counting every position.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor};
use zoo_llama::{Llama, LlamaCache};
use zoo_nn::attention::{attention, CacheFull};
use zoo_nn::{Activation, Dense, LayerNorm};

/// BLIP-2 with a LLaMA language model (MiniGPT-4's graph).
#[derive(Module, Debug)]
pub struct Blip2<B: Backend> {
    /// The image encoder.
    pub vision_model: VisionModel<B>,
    /// Learned queries `[num_query_tokens, qformer hidden]`.
    pub query_tokens: Param<Tensor<B, 2>>,
    /// The querying transformer.
    pub qformer: QFormer<B>,
    /// Q-Former width → language model width.
    pub language_projection: Dense<B>,
    /// The language model.
    pub language_model: Llama<B>,
    /// The placeholder id the query embeddings replace.
    #[module(skip)]
    pub image_token_index: Option<u32>,
}

/// The vision transformer (EVA-ViT in BLIP-2).
#[derive(Module, Debug)]
pub struct VisionModel<B: Backend> {
    /// Patches, class token, positions.
    pub embeddings: VisionEmbeddings<B>,
    /// Pre-LN blocks (`encoder.layers`).
    pub layers: Vec<VisionLayer<B>>,
    /// LayerNorm over the last block's output.
    pub post_layernorm: LayerNorm<B>,
}

/// Patch embedding (a stride-`p` convolution, computed as a matmul over flattened patches),
/// the class token and learned positions.
#[derive(Module, Debug)]
pub struct VisionEmbeddings<B: Backend> {
    /// The convolution as `[d, 3 * p * p]` (input order channel, row, column).
    pub patch_embedding: Dense<B>,
    /// `[d]`.
    pub class_embedding: Param<Tensor<B, 1>>,
    /// `[1 + grid², d]`.
    pub position_embedding: Param<Tensor<B, 2>>,
    /// Pixels per patch side.
    pub patch_size: usize,
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct VisionLayer<B: Backend> {
    /// Norm before attention.
    pub layer_norm1: LayerNorm<B>,
    /// Self-attention.
    pub self_attn: VisionAttention<B>,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm<B>,
    /// `fc2(act(fc1(x)))`.
    pub fc1: Dense<B>,
    /// See `fc1`.
    pub fc2: Dense<B>,
    /// The MLP activation (GELU).
    #[module(skip)]
    pub act: Activation,
}

/// Multi-head self-attention with one fused `qkv` projection.
#[derive(Module, Debug)]
pub struct VisionAttention<B: Backend> {
    /// `[3d, d]`, rows q then k then v; the bias (when `qkv_bias`) is q's, zeros, v's.
    pub qkv: Dense<B>,
    /// `[d, d]`.
    pub projection: Dense<B>,
    /// Heads.
    pub num_heads: usize,
}

/// The Q-Former: a LayerNorm over the query tokens, then BERT-style post-LN layers.
#[derive(Module, Debug)]
pub struct QFormer<B: Backend> {
    /// Applied to the query tokens first.
    pub layernorm: LayerNorm<B>,
    /// The layers (`encoder.layer`).
    pub layers: Vec<QFormerLayer<B>>,
}

/// Self-attention among the queries, cross-attention into the image (some layers), and the
/// queries' own feed-forward block (`intermediate_query`, `output_query`).
#[derive(Module, Debug)]
pub struct QFormerLayer<B: Backend> {
    /// Self-attention.
    pub attention: QFormerAttention<B>,
    /// Cross-attention into the image features, in layers `i % cross_attention_frequency == 0`.
    pub crossattention: Option<QFormerAttention<B>>,
    /// `[inner, d]`.
    pub intermediate_query: Dense<B>,
    /// `[d, inner]`.
    pub output_query: Dense<B>,
    /// LayerNorm over `output_query(…) + input`.
    pub output_query_norm: LayerNorm<B>,
    /// The intermediate activation (GELU).
    #[module(skip)]
    pub act: Activation,
}

/// BERT attention with its output block: `LayerNorm(dense(attn(x, kv)) + x)`.
#[derive(Module, Debug)]
pub struct QFormerAttention<B: Backend> {
    /// `[d, d]`.
    pub query: Dense<B>,
    /// `[d, d_kv]`.
    pub key: Dense<B>,
    /// `[d, d_kv]`.
    pub value: Dense<B>,
    /// `[d, d]` (`output.dense`).
    pub output: Dense<B>,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm<B>,
    /// Heads.
    pub num_heads: usize,
}

/// Why a forward pass with an image failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The sequence does not fit the context.
    #[error(transparent)]
    CacheFull(#[from] CacheFull),
    /// The prompt's placeholders do not match the image's query embeddings.
    #[error("the ids hold {found} image placeholders (id {id}) but the image gives {expected} query embeddings: put exactly {expected} copies of {id} where the image goes")]
    Placeholders {
        /// Placeholders in the ids.
        found: usize,
        /// Query tokens of the model.
        expected: usize,
        /// The placeholder id.
        id: u32,
    },
    /// The ids hold placeholders but no image was given.
    #[error("the ids hold {found} image placeholders (id {id}) but no image was given")]
    NoImage {
        /// Placeholders in the ids.
        found: usize,
        /// The placeholder id.
        id: u32,
    },
    /// The checkpoint names no placeholder id, so an image cannot go anywhere.
    #[error("the config has no image_token_index: the prompt cannot say where the image goes")]
    NoPlaceholderId,
}

impl<B: Backend> Blip2<B> {
    /// Query tokens (the image's cost in language-model positions).
    pub fn num_query_tokens(&self) -> usize {
        self.query_tokens.dims()[0]
    }

    /// The vision encoder's last hidden state (after `post_layernorm`).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, size, size]` → `[batch, 1 + grid², d_vision]`
    pub fn image_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        self.vision_model.forward(pixels)
    }

    /// The Q-Former's output for image features.
    ///
    /// # Shapes
    /// - `features`: `[batch, s, d_vision]` → `[batch, num_query_tokens, d_qformer]`
    pub fn query_output(&self, features: Tensor<B, 3>) -> Tensor<B, 3> {
        let b = features.dims()[0];
        let [n, d] = self.query_tokens.dims();
        let queries = self.query_tokens.val().unsqueeze::<3>().expand([b, n, d]);
        self.qformer.forward(queries, features)
    }

    /// The image as language-model input embeddings (transformers' `get_image_features`).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, size, size]` → `[batch, num_query_tokens, d_text]`
    pub fn image_embeds(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let query = self.query_output(self.image_features(pixels));
        self.language_projection.forward(query)
    }

    /// The language model's input embeddings for `ids`, the placeholders replaced in order by
    /// the rows of `image` (one sequence).
    ///
    /// # Shapes
    /// - `ids`: `t` ids, `image`: `[1, num_query_tokens, d_text]` → `[1, t, d_text]`
    pub fn input_embeds(
        &self,
        ids: &[u32],
        image: Option<&Tensor<B, 3>>,
    ) -> Result<Tensor<B, 3>, ForwardError> {
        let device = self.query_tokens.device();
        let text = self
            .language_model
            .embed_tokens
            .forward(zoo_nn::ids_tensor::<B>(ids, &device));
        let found = match self.image_token_index {
            Some(id) => ids.iter().filter(|&&x| x == id).count(),
            None => 0,
        };
        let Some(image) = image else {
            return match (found, self.image_token_index) {
                (0, _) => Ok(text),
                (found, Some(id)) => Err(ForwardError::NoImage { found, id }),
                (_, None) => unreachable!("placeholders need a placeholder id"),
            };
        };
        let id = self
            .image_token_index
            .ok_or(ForwardError::NoPlaceholderId)?;
        let expected = self.num_query_tokens();
        if found != expected {
            return Err(ForwardError::Placeholders {
                found,
                expected,
                id,
            });
        }
        // Runs of text rows and image rows, in order.
        let d = text.dims()[2];
        let mut parts = Vec::new();
        let (mut start, mut next_query) = (0, 0);
        while start < ids.len() {
            let is_image = ids[start] == id;
            let mut end = start;
            while end < ids.len() && (ids[end] == id) == is_image {
                end += 1;
            }
            if is_image {
                let n = end - start;
                parts.push(
                    image
                        .clone()
                        .slice([0..1, next_query..next_query + n, 0..d]),
                );
                next_query += n;
            } else {
                parts.push(text.clone().slice([0..1, start..end, 0..d]));
            }
            start = end;
        }
        Ok(Tensor::cat(parts, 1))
    }

    /// Logits over the vocabulary after the language model's final norm.
    ///
    /// # Shapes
    /// - `embeds`: `[1, t, d_text]` → `[1, t, d_text]` (hidden states)
    pub fn hidden_from_embeds(
        &self,
        embeds: Tensor<B, 3>,
        cache: &mut LlamaCache<B>,
    ) -> Result<Tensor<B, 3>, ForwardError> {
        Ok(self.language_model.hidden_from_embeds(embeds, cache)?)
    }

    /// The hidden states of plain ids (no image), for the decoding steps.
    ///
    /// # Shapes
    /// - `ids`: `[1, t]` → `[1, t, d_text]`
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        cache: &mut LlamaCache<B>,
    ) -> Result<Tensor<B, 3>, ForwardError> {
        Ok(self.language_model.hidden(ids, cache)?)
    }
}

impl<B: Backend> VisionModel<B> {
    /// # Shapes
    /// - `pixels`: `[batch, 3, size, size]` → `[batch, 1 + grid², d]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let mut x = self.embeddings.forward(pixels);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.post_layernorm.forward(x)
    }
}

impl<B: Backend> VisionEmbeddings<B> {
    /// # Shapes
    /// - `pixels`: `[batch, 3, size, size]` → `[batch, 1 + grid², d]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, c, h, w] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        // [b, c, gh, p, gw, p] → [b, gh, gw, c, p, p]: one row per patch, in the convolution
        // weight's (channel, row, column) order; patches row by row, as `flatten(2)` orders them.
        let patches = pixels
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, c * p * p]);
        let patches = self.patch_embedding.forward(patches);
        let d = patches.dims()[2];
        let class = self
            .class_embedding
            .val()
            .reshape([1, 1, d])
            .expand([b, 1, d]);
        let x = Tensor::cat(vec![class, patches], 1);
        x + self.position_embedding.val().unsqueeze::<3>()
    }
}

impl<B: Backend> VisionLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, s, d]` → `[batch, s, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let h = self.fc2.forward(
            self.act
                .forward(self.fc1.forward(self.layer_norm2.forward(x.clone()))),
        );
        x + h
    }
}

impl<B: Backend> VisionAttention<B> {
    /// # Shapes
    /// - `x`: `[batch, s, d]` → `[batch, s, d]`
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        // [b, s, 3, h, hd] → [3, b, h, s, hd]
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, s, 3, h, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| {
            qkv.clone()
                .slice([i..i + 1, 0..b, 0..h, 0..s, 0..hd])
                .reshape([b, h, s, hd])
        };
        let out = attention(part(0), part(1), part(2), None, 1.0 / (hd as f64).sqrt());
        self.projection
            .forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }
}

impl<B: Backend> QFormer<B> {
    /// # Shapes
    /// - `queries`: `[batch, n, d]`, `features`: `[batch, s, d_vision]` → `[batch, n, d]`
    pub fn forward(&self, queries: Tensor<B, 3>, features: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut x = self.layernorm.forward(queries);
        for layer in &self.layers {
            x = layer.forward(x, &features);
        }
        x
    }
}

impl<B: Backend> QFormerLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, n, d]`, `features`: `[batch, s, d_vision]` → `[batch, n, d]`
    fn forward(&self, x: Tensor<B, 3>, features: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attention.forward(x.clone(), x);
        let x = match &self.crossattention {
            Some(cross) => cross.forward(x, features.clone()),
            None => x,
        };
        let inner = self.act.forward(self.intermediate_query.forward(x.clone()));
        self.output_query_norm
            .forward(self.output_query.forward(inner) + x)
    }
}

impl<B: Backend> QFormerAttention<B> {
    /// Queries from `x`, keys and values from `kv` (`x` itself for self-attention).
    ///
    /// # Shapes
    /// - `x`: `[batch, n, d]`, `kv`: `[batch, s, d_kv]` → `[batch, n, d]`
    fn forward(&self, x: Tensor<B, 3>, kv: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let s = kv.dims()[1];
        let h = self.num_heads;
        let hd = d / h;
        let q = self
            .query
            .forward(x.clone())
            .reshape([b, n, h, hd])
            .swap_dims(1, 2);
        let k = self
            .key
            .forward(kv.clone())
            .reshape([b, s, h, hd])
            .swap_dims(1, 2);
        let v = self
            .value
            .forward(kv)
            .reshape([b, s, h, hd])
            .swap_dims(1, 2);
        let out = attention(q, k, v, None, 1.0 / (hd as f64).sqrt());
        let out = out.swap_dims(1, 2).reshape([b, n, d]);
        self.output_norm.forward(self.output.forward(out) + x)
    }
}
