//! Memory of a GLM configuration: weights at fp16 / INT8 / INT4 and the KV cache per token
//! (`zoo info chatglm-6b`), from config numbers alone.

/// The numbers of a decoder that decide its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Vocabulary rows of the embedding (and of the LM head).
    pub vocab: usize,
    /// Model width.
    pub hidden: usize,
    /// Blocks.
    pub layers: usize,
    /// Parameters of one block's linear weights (the part INT8/INT4 quantisation packs).
    pub block_linear: usize,
    /// Other parameters of one block (biases, norms), kept in fp16.
    pub block_other: usize,
    /// Whether the LM head is a separate matrix.
    pub separate_head: bool,
    /// Key/value features cached per token and layer (keys + values).
    pub kv_per_layer: usize,
}

impl Shape {
    /// ChatGLM-6B from its `config.json` numbers (fused QKV with bias, two LayerNorms, GELU MLP).
    pub fn chatglm_v1(vocab: usize, hidden: usize, layers: usize, inner: usize) -> Self {
        let block_linear = hidden * 3 * hidden + hidden * hidden + 2 * hidden * inner;
        let block_other = 3 * hidden + hidden + inner + hidden + 4 * hidden;
        Self {
            vocab,
            hidden,
            layers,
            block_linear,
            block_other,
            separate_head: true,
            kv_per_layer: 2 * hidden,
        }
    }

    /// Every parameter.
    pub fn parameters(&self) -> usize {
        let emb = self.vocab * self.hidden * if self.separate_head { 2 } else { 1 };
        emb + self.layers * (self.block_linear + self.block_other) + 2 * self.hidden
    }

    /// Weight bytes when block linears take `bits` bits each (16, 8 or 4) plus one fp16
    /// scale per output row (as ChatGLM's quantisation does); embeddings, LM head, biases
    /// and norms stay fp16.
    pub fn weight_bytes(&self, bits: usize) -> usize {
        let fp16_rest = self.parameters() - self.layers * self.block_linear;
        let linear = self.layers * self.block_linear * bits / 8;
        let scales = if bits < 16 {
            // one scale per output row of each linear: 3h + h + inner + h rows ≈ block_other
            self.layers * self.block_other * 2
        } else {
            0
        };
        2 * fp16_rest + linear + scales
    }

    /// fp16 KV-cache bytes per token of context.
    pub fn kv_bytes_per_token(&self) -> usize {
        2 * self.layers * self.kv_per_layer
    }
}
