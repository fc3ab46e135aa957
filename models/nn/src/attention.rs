//! Scaled dot-product attention (multi-head, grouped-query and multi-query) over a
//! preallocated key/value cache.

use burn::module::Module;
use burn::tensor::{activation::softmax, backend::Backend, Bool, Tensor, TensorData};

/// One layer's keys and values, preallocated for `capacity` positions and written in place.
///
/// `append` writes the new positions into the buffers with `slice_assign` (Burn reuses the
/// buffer when nothing else holds it) instead of concatenating a new tensor every step.
#[derive(Module, Debug)]
pub struct KvCache<B: Backend> {
    keys: Tensor<B, 4>,
    values: Tensor<B, 4>,
    len: usize,
}

/// Appending past the preallocated capacity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sequence needs {needed} positions but the cache holds {capacity} (context length exceeded)")]
pub struct CacheFull {
    /// Positions that would be needed.
    pub needed: usize,
    /// Positions allocated.
    pub capacity: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `[batch, kv_heads, capacity, head_dim]` keys and values.
    pub fn new(
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        device: &B::Device,
    ) -> Self {
        Self::with_dims(batch, kv_heads, capacity, head_dim, head_dim, device)
    }

    /// An empty cache whose value head size differs from the key head size.
    pub fn with_dims(
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        key_dim: usize,
        value_dim: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            keys: Tensor::zeros([batch, kv_heads, capacity, key_dim], device),
            values: Tensor::zeros([batch, kv_heads, capacity, value_dim], device),
            len: 0,
        }
    }

    /// Positions already stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions allocated.
    pub fn capacity(&self) -> usize {
        self.keys.dims()[2]
    }

    /// Writes `k`/`v` (`[batch, kv_heads, t, dim]`) after the stored positions and returns all
    /// keys and values so far, `[batch, kv_heads, len + t, dim]`.
    pub fn append(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), CacheFull> {
        let [b, h, t, dk] = k.dims();
        let dv = v.dims()[3];
        let end = self.len + t;
        if end > self.capacity() {
            return Err(CacheFull {
                needed: end,
                capacity: self.capacity(),
            });
        }
        let device = k.device();
        let keys = std::mem::replace(&mut self.keys, Tensor::empty([0, 0, 0, 0], &device));
        let values = std::mem::replace(&mut self.values, Tensor::empty([0, 0, 0, 0], &device));
        self.keys = keys.slice_assign([0..b, 0..h, self.len..end, 0..dk], k);
        self.values = values.slice_assign([0..b, 0..h, self.len..end, 0..dv], v);
        self.len = end;
        Ok((
            self.keys.clone().slice([0..b, 0..h, 0..end, 0..dk]),
            self.values.clone().slice([0..b, 0..h, 0..end, 0..dv]),
        ))
    }
}

/// The causal mask for `t` new queries after `past` cached positions: `[t, past + t]`,
/// `true` where query `i` must not see key `j` (`j > past + i`).
pub fn causal_mask<B: Backend>(t: usize, past: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let total = past + t;
    let mut mask = Vec::with_capacity(t * total);
    for i in 0..t {
        for j in 0..total {
            mask.push(j > past + i);
        }
    }
    Tensor::from_data(TensorData::new(mask, [t, total]), device)
}

/// `softmax(q k^T * scale + mask) v` with grouped-query heads.
///
/// Query heads are grouped onto key/value heads (`heads / kv_heads` queries share one): with
/// `kv_heads == heads` this is multi-head attention, with `kv_heads == 1` multi-query.
/// `mask` is `true` where attention is forbidden, broadcastable to `[batch, 1, t, s]`
/// (pass `[1, 1, t, s]` for a causal mask, `[batch, 1, 1, s]` for padding).
///
/// # Shapes
/// - `q`: `[batch, heads, t, d]`
/// - `k`: `[batch, kv_heads, s, d]`, `v`: `[batch, kv_heads, s, dv]`
/// - returns `[batch, heads, t, dv]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: Option<Tensor<B, 4, Bool>>,
    scale: f64,
) -> Tensor<B, 4> {
    let [b, h, t, d] = q.dims();
    let kv_heads = k.dims()[1];
    let s = k.dims()[2];
    let dv = v.dims()[3];
    let groups = h / kv_heads;
    // Fold the query heads of one group into the sequence axis: one matmul per kv head.
    let q = q.reshape([b, kv_heads, groups * t, d]);
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let scores = match mask {
        Some(mask) => {
            let [mb, _, mt, ms] = mask.dims();
            let mask = mask
                .reshape([mb, 1, 1, mt, ms])
                .expand([b, kv_heads, groups, t, s])
                .reshape([b, kv_heads, groups * t, s]);
            scores.mask_fill(mask, f32::MIN)
        }
        None => scores,
    };
    let probs = softmax(scores, 3);
    probs.matmul(v).reshape([b, h, t, dv])
}
