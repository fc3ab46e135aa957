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
        let [cb, ch, _, cdk] = self.keys.dims();
        if self.len == 0
            && t == self.capacity()
            && [b, h, dk, dv] == [cb, ch, cdk, self.values.dims()[3]]
        {
            // One pass fills the whole cache (a training or scoring forward): the cache is
            // `k` and `v` themselves, with no copy into it (nor, under autodiff, out of it).
            self.keys = k;
            self.values = v;
            self.len = end;
            return Ok((self.keys.clone(), self.values.clone()));
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
    if crate::quant::runs_on_host::<B>(&q.device()) && host::supports(&q, &k, mask.as_ref()) {
        return host::attention(q, k, v, mask, scale);
    }
    attention_ops(q, k, v, mask, scale)
}

/// [`attention`] as Burn ops: a matmul per key/value head, the mask, softmax, a matmul.
fn attention_ops<B: Backend>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn rand(dims: [usize; 4], seed: u64) -> Tensor<Flex, 4> {
        let n = dims.iter().product::<usize>();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_data(TensorData::new(v, dims), &Default::default())
    }

    fn max_diff(a: Tensor<Flex, 4>, b: Tensor<Flex, 4>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// The host kernel (flex) equals Burn's ops on transposed queries, a sliced KV cache,
    /// grouped heads, causal and padding masks.
    #[test]
    fn host_attention_equals_the_ops() {
        let device = Default::default();
        let (b, h, kvh, t, d) = (2, 6, 2, 5, 16);
        // Queries in the projection's [b, t, h, d] layout, read as [b, h, t, d].
        let q = rand([b, t, h, d], 1).swap_dims(1, 2);
        let mut cache = KvCache::<Flex>::new(b, kvh, 32, d, &device);
        cache
            .append(rand([b, kvh, 4, d], 2), rand([b, kvh, 4, d], 3))
            .unwrap();
        let (k, v) = cache
            .append(rand([b, kvh, t, d], 4), rand([b, kvh, t, d], 5))
            .unwrap();
        let s = k.dims()[2];
        let causal = causal_mask::<Flex>(t, s - t, &device).unsqueeze::<4>();
        let padding: Vec<bool> = (0..b * s).map(|i| i % 5 == 1).collect();
        let padding =
            Tensor::<Flex, 4, Bool>::from_data(TensorData::new(padding, [b, 1, 1, s]), &device);
        for mask in [None, Some(causal), Some(padding)] {
            let host = attention(q.clone(), k.clone(), v.clone(), mask.clone(), 0.25);
            let ops = attention_ops(q.clone(), k.clone(), v.clone(), mask, 0.25);
            assert_eq!(host.dims(), [b, h, t, d]);
            let diff = max_diff(host, ops);
            assert!(diff < 1e-5, "{diff}");
        }
    }
}

/// The CPU backends' attention: one fused pass on the host (`zoo_quant::attention`), reading
/// flex tensors in place (strided views: no head transposes or KV-cache copies) and other
/// host tensors through `into_data`.
mod host {
    use crate::host::Host;
    use burn::tensor::{backend::Backend, Bool, Tensor, TensorData};
    use zoo_quant::attention::Mask;

    /// Whether the mask is one the host kernel takes (`[1 | batch, 1, 1 | t, s]`).
    pub(super) fn supports<B: Backend>(
        q: &Tensor<B, 4>,
        k: &Tensor<B, 4>,
        mask: Option<&Tensor<B, 4, Bool>>,
    ) -> bool {
        let ([b, _, t, _], s) = (q.dims(), k.dims()[2]);
        mask.is_none_or(|m| {
            let [mb, mh, mt, ms] = m.dims();
            (mb == 1 || mb == b) && mh == 1 && (mt == 1 || mt == t) && ms == s
        })
    }

    pub(super) fn attention<B: Backend>(
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        mask: Option<Tensor<B, 4, Bool>>,
        scale: f64,
    ) -> Tensor<B, 4> {
        let [b, h, t, _] = q.dims();
        let s = k.dims()[2];
        let dv = v.dims()[3];
        let device = q.device();
        let mask_data = mask.map(|m| {
            let [mb, mh, mt, ms] = m.dims();
            let data = m
                .into_data()
                .convert::<bool>()
                .into_vec::<bool>()
                .unwrap_or_default();
            (data, [mb, mh, mt, ms])
        });
        let mask = match &mask_data {
            None => Mask::None,
            Some((data, [mb, _, mt, ms])) => {
                // The causal pattern is recognised, so hidden key blocks are skipped.
                let past = s.saturating_sub(t);
                let causal = *mb == 1
                    && *mt == t
                    && s >= t
                    && data
                        .chunks(s)
                        .enumerate()
                        .all(|(i, row)| row.iter().enumerate().all(|(j, &x)| x == (j > past + i)));
                if causal {
                    Mask::Causal { past }
                } else {
                    Mask::Bool {
                        data,
                        dims: [*mb, *mt, *ms],
                    }
                }
            }
        };
        let mut out = vec![0f32; b * t * h * dv];
        let (qh, kh, vh) = (Host::new(q), Host::new(k), Host::new(v));
        zoo_quant::attention::attention(
            qh.view(),
            kh.view(),
            vh.view(),
            mask,
            scale as f32,
            &mut out,
        )
        .expect("attention shapes checked by the caller");
        // Written as [b, t, h, dv]: the caller's swap back to [b, t, h·dv] is then free.
        Tensor::<B, 4>::from_data(TensorData::new(out, [b, t, h, dv]), &device).swap_dims(1, 2)
    }
}
