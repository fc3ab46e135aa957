//! Scratch: one ChatGLM-6B block (as zoo-glm computes it) as plain Burn ops, wgpu vs flex.
//! Flags (comma separated) switch parts off or change them, to find what fusion gets wrong.
use burn::tensor::{
    activation, backend::Backend, Bool, ElementConversion, Int, Tensor, TensorData,
};

fn data(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

fn t<B: Backend, const D: usize>(seed: u64, dims: [usize; D], d: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data(seed, dims.iter().product()), dims), d)
}

/// A `[rows, cols]` matrix as zoo-nn's `PackedMatrix` keeps a Q8_0 one on the GPU: four 8-bit
/// codes per i32 word, a scale and an offset per block of 32; `unpack` is zoo-nn's unpacking
/// path (the one taken when its fused cubecl kernel cannot run, as under fusion).
struct Packed<B: Backend> {
    codes: Tensor<B, 2, Int>,
    scales: Tensor<B, 2>,
    offsets: Tensor<B, 2>,
    cols: usize,
}

impl<B: Backend> Packed<B> {
    fn new(seed: u64, rows: usize, cols: usize, d: &B::Device) -> Self {
        let q: Vec<u32> = data(seed, rows * cols)
            .iter()
            .map(|v| ((v + 0.5) * 255.0) as u32)
            .collect();
        let codes: Vec<i64> = q
            .chunks_exact(4)
            .map(|w| (w[0] | w[1] << 8 | w[2] << 16 | w[3] << 24) as i32 as i64)
            .collect();
        let groups = cols / 32;
        let scales: Vec<f32> = data(seed + 7, rows * groups)
            .iter()
            .map(|v| 0.01 + v.abs() * 0.01)
            .collect();
        let offsets: Vec<f32> = scales.iter().map(|s| -128.0 * s).collect();
        Self {
            codes: Tensor::from_data(TensorData::new(codes, [rows, cols / 4]), d),
            scales: Tensor::from_data(TensorData::new(scales, [rows, groups]), d),
            offsets: Tensor::from_data(TensorData::new(offsets, [rows, groups]), d),
            cols,
        }
    }

    fn unpack(&self) -> Tensor<B, 2> {
        let [rows, words] = self.codes.dims();
        let parts: Vec<Tensor<B, 3, Int>> = (0..4)
            .map(|k| {
                self.codes
                    .clone()
                    .bitwise_right_shift_scalar((8 * k as i64).elem())
                    .bitwise_and_scalar(255i64.elem())
                    .unsqueeze_dim(2)
            })
            .collect();
        let q = Tensor::cat(parts, 2)
            .reshape([rows, words * 4 / 32, 32])
            .float();
        (q * self.scales.clone().unsqueeze_dim(2) + self.offsets.clone().unsqueeze_dim(2))
            .reshape([rows, self.cols])
    }
}

struct Flags(String);
impl Flags {
    fn on(&self, flag: &str) -> bool {
        self.0.split(',').any(|v| v == flag)
    }
}

/// `x · Wᵀ` as zoo-nn's `times_transposed`: `(W · xᵀ)ᵀ` for up to 64 rows.
fn linear<B: Backend>(f: &Flags, x: Tensor<B, 3>, w: &Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, n, d_in] = x.dims();
    let d_out = w.dims()[0];
    let x = x.reshape([b * n, d_in]);
    let y = if f.on("plainmm") {
        x.matmul(w.clone().transpose())
    } else {
        w.clone().matmul(x.transpose()).transpose()
    };
    y.reshape([b, n, d_out])
}

fn layer_norm<B: Backend>(f: &Flags, x: Tensor<B, 3>) -> Tensor<B, 3> {
    if f.on("noln") {
        return x;
    }
    let (var, mean) = x.clone().var_mean_bias(2);
    (x - mean) / (var + 1e-5).sqrt()
}

fn rope_half<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let [b, h, n, _] = x.dims();
    let half = cos.dims()[1];
    let cos: Tensor<B, 4> = cos.unsqueeze();
    let sin: Tensor<B, 4> = sin.unsqueeze();
    let x1 = x.clone().slice([0..b, 0..h, 0..n, 0..half]);
    let x2 = x.slice([0..b, 0..h, 0..n, half..2 * half]);
    let out1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let out2 = x2 * cos + x1 * sin;
    Tensor::cat(vec![out1, out2], 3)
}

fn cos_sin<B: Backend>(pos: &[usize], half: usize, d: &B::Device) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let (mut c, mut s) = (Vec::new(), Vec::new());
    for &p in pos {
        for i in 0..half {
            let a = p as f32 / 10000f32.powf(2.0 * i as f32 / (2 * half) as f32);
            c.push(a.cos());
            s.push(a.sin());
        }
    }
    let shape = [pos.len(), half];
    (
        Tensor::from_data(TensorData::new(c, shape), d),
        Tensor::from_data(TensorData::new(s, shape), d),
    )
}

fn run<B: Backend>(f: &Flags, device: &B::Device) -> Vec<Vec<f32>> {
    let (b, heads, cap, hd, vocab) = (1, 8, 8, 4, 5);
    let d = heads * hd;
    let emb = t::<B, 2>(99, [vocab, d], device);
    let b_qkv = t::<B, 1>(101, [3 * d], device);
    // The four matrices: f32, or Q8_0-packed and unpacked again at every use (flag `q8`).
    let packed = [
        Packed::<B>::new(100, 3 * d, d, device),
        Packed::<B>::new(102, d, d, device),
        Packed::<B>::new(103, 4 * d, d, device),
        Packed::<B>::new(104, d, 4 * d, device),
    ];
    let plain: Vec<Tensor<B, 2>> = packed.iter().map(|p| p.unpack()).collect();
    let plain: Vec<Tensor<B, 2>> = plain
        .into_iter()
        .map(|w| Tensor::from_data(w.into_data(), device))
        .collect();
    let weight = |i: usize| {
        if f.on("q8") {
            packed[i].unpack()
        } else {
            plain[i].clone()
        }
    };
    let alpha = 1.5;
    let mut keys: Tensor<B, 4> = Tensor::zeros([b, heads, cap, hd], device);
    let mut values: Tensor<B, 4> = Tensor::zeros([b, heads, cap, hd], device);
    let mut len = 0;
    let mut outs = Vec::new();
    // The golden file's steps: ids, positions, block positions, bidirectional context.
    let steps: [(&[i64], &[usize], &[usize], usize); 3] = [
        (&[1, 3, 4], &[0, 1, 1], &[0, 0, 1], 2),
        (&[2], &[1], &[2], 0),
        (&[0], &[1], &[3], 0),
    ];
    for (ids, pos, block, context) in steps {
        let n = ids.len();
        let ids: Tensor<B, 2, Int> =
            Tensor::from_data(TensorData::new(ids.to_vec(), [1, n]), device);
        let x = burn::tensor::module::embedding(emb.clone(), ids);
        let attn_in = layer_norm(f, x);
        let qkv = linear(f, attn_in.clone(), &weight(0)) + b_qkv.clone().unsqueeze::<3>();
        let qkv = qkv.reshape([b, n, heads, 3 * hd]);
        let qkv = if f.on("matqkv") { qkv + 0.0 } else { qkv };
        let part = |i: usize| {
            qkv.clone()
                .slice([0..b, 0..n, 0..heads, i * hd..(i + 1) * hd])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let (q, k) = if f.on("norope") {
            (q, k)
        } else {
            let rp = cos_sin::<B>(pos, hd / 4, device);
            let rb = cos_sin::<B>(block, hd / 4, device);
            let rotate = |x: Tensor<B, 4>| {
                let x1 = x.clone().slice([0..b, 0..heads, 0..n, 0..hd / 2]);
                let x2 = x.slice([0..b, 0..heads, 0..n, hd / 2..hd]);
                Tensor::cat(
                    vec![
                        rope_half(x1, rp.0.clone(), rp.1.clone()),
                        rope_half(x2, rb.0.clone(), rb.1.clone()),
                    ],
                    3,
                )
            };
            (rotate(q), rotate(k))
        };
        let q = q / 3.0;
        // The KV cache as zoo-nn's KvCache::append.
        let end = len + n;
        let (k, v) = if f.on("matkv") {
            (k + 0.0, v + 0.0)
        } else {
            (k, v)
        };
        let old_k = std::mem::replace(&mut keys, Tensor::empty([0, 0, 0, 0], device));
        let old_v = std::mem::replace(&mut values, Tensor::empty([0, 0, 0, 0], device));
        keys = old_k.slice_assign([0..b, 0..heads, len..end, 0..hd], k);
        values = old_v.slice_assign([0..b, 0..heads, len..end, 0..hd], v);
        len = end;
        let kk = keys.clone().slice([0..b, 0..heads, 0..end, 0..hd]);
        let vv = values.clone().slice([0..b, 0..heads, 0..end, 0..hd]);
        // Attention as zoo-nn's attention_ops.
        let scores = q.matmul(kk.swap_dims(2, 3)) * 1.0;
        let scores = if n > 1 && !f.on("nomask") {
            let past = end - n;
            let mut m = Vec::new();
            for i in 0..n {
                for j in 0..end {
                    let visible = j < past || (j - past) < context || (j - past) <= i;
                    m.push(!visible);
                }
            }
            let mask: Tensor<B, 4, Bool> =
                Tensor::from_data(TensorData::new(m, [1, 1, n, end]), device);
            let mask = mask
                .reshape([1, 1, 1, n, end])
                .expand([b, heads, 1, n, end])
                .reshape([b, heads, n, end]);
            scores.mask_fill(mask, f32::MIN)
        } else {
            scores
        };
        let ctx = activation::softmax(scores, 3)
            .matmul(vv)
            .reshape([b, heads, n, hd]);
        let attn_out = linear(f, ctx.swap_dims(1, 2).reshape([b, n, d]), &weight(1));
        let h = attn_in * alpha + attn_out;
        let out = if f.on("nomlp") {
            h
        } else {
            let mlp_in = layer_norm(f, h);
            let up = linear(f, mlp_in.clone(), &weight(2));
            let cube = up.clone() * up.clone() * up.clone();
            let g = up.clone() * activation::sigmoid((up + cube * 0.044715) * 1.5957691216057308);
            mlp_in * alpha + linear(f, g, &weight(3))
        };
        let out = layer_norm(f, out);
        outs.push(out.into_data().convert::<f32>().into_vec::<f32>().unwrap());
    }
    outs
}

fn main() {
    let flags = Flags(std::env::args().nth(1).unwrap_or_default());
    let want = run::<burn::backend::Flex>(&flags, &Default::default());
    let got = run::<burn::backend::Wgpu>(&flags, &Default::default());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let diff = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "[{}] step {}: max |wgpu - flex| = {diff:.3e}",
            flags.0,
            i + 1
        );
    }
}
