//! The fusion investigation of docs/gpu.md: zoo-nn's Embed/Dense with Q8_0 weights and the
//! Q8_0 GPT-Neo fixture, wgpu (with Burn's fusion) against flex, piece by piece. Built only with
//! the `fusion` feature, so the test command never compiles it:
//! `cargo run --release --no-default-features --features flex,ndarray,wgpu,fusion --example fusion_packed -- neo[,chainfirst|,twice|,warm=PIECE][,sync][,cap12]`
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use zoo_nn::quant::QMatrix;
use zoo_nn::{Dense, Embed, QType};

fn vals(seed: u64, n: usize) -> Vec<f32> {
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

fn q8(seed: u64, rows: usize, cols: usize) -> QMatrix {
    QMatrix::quantize(QType::Q8_0, rows, cols, &vals(seed, rows * cols)).unwrap()
}

/// The largest absolute difference between two equally long vectors.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn v<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn run<B: Backend>(flags: &str, d: &B::Device) -> Vec<(String, Vec<f32>)> {
    let on = |f: &str| flags.split(',').any(|x| x == f);
    let (vocab, h) = (262, 32);
    let emb = Embed::<B>::stored(q8(1, vocab, h), d);
    let dense = Dense::<B>::stored(q8(2, 3 * h, h), None, d);
    let n = 12;
    let ids: Vec<i64> = (0..n as i64).map(|i| (i * 37 + 5) % vocab as i64).collect();
    let ids: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(ids, [1, n]), d);
    let mut out = Vec::new();
    let x = emb.forward(ids);
    if on("embed") {
        out.push(("embed".into(), v(x.clone())));
    }
    let hid: Tensor<B, 3> = Tensor::from_data(TensorData::new(vals(5, n * h), [1, n, h]), d);
    if on("project") {
        out.push(("project(fixed)".into(), v(emb.project(hid.clone()))));
    }
    if on("dense") {
        out.push(("dense(fixed)".into(), v(dense.forward(hid.clone()))));
    }
    if on("chain") {
        let y = dense.forward(x.clone());
        out.push(("dense(embed)".into(), v(y.clone())));
        let y = y.slice([0..1, 0..n, 0..h]);
        out.push(("project(dense(embed))".into(), v(emb.project(y))));
    }
    if on("deq") {
        out.push(("emb deq".into(), v(emb.weight_f32())));
        out.push(("dense deq".into(), v(dense.weight_f32())));
    }
    out
}

fn main() {
    let flags = std::env::args()
        .nth(1)
        .unwrap_or("embed,project,dense,chain,deq".into());
    if flags.split(',').any(|x| x == "neo") {
        return neo::run(&flags);
    }
    let want = run::<burn::backend::Flex>(&flags, &Default::default());
    let got = run::<burn::backend::Wgpu>(&flags, &Default::default());
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        let diff = max_diff(g, w);
        let big = w.iter().map(|a| a.abs()).fold(0f32, f32::max);
        println!("{name}: max |wgpu - flex| = {diff:.3e} (max |flex| {big:.3})");
    }
}

mod neo {
    use burn::backend::{Flex, Wgpu};
    use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
    use zoo_gptneo::{load_with, GptNeo};
    use zoo_nn::{QType, WeightFormat};

    fn up<const D: usize>(t: &Tensor<Flex, D>) -> Tensor<Wgpu, D> {
        Tensor::from_data(t.to_data(), &Default::default())
    }
    fn cmp<const D: usize>(name: &str, w: Tensor<Wgpu, D>, f: &Tensor<Flex, D>) {
        let g = super::v(w);
        let r = super::v(f.clone());
        let diff = super::max_diff(&g, &r);
        let big = r.iter().map(|a| a.abs()).fold(0f32, f32::max);
        println!("{name}: max |wgpu - flex| = {diff:.3e} (max |flex| {big:.3})");
    }
    fn model<B: Backend>(q8: bool) -> GptNeo<B> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt_neo/tiny");
        let fmt = if q8 {
            WeightFormat::quantized(QType::Q8_0)
        } else {
            WeightFormat::AS_STORED
        };
        load_with::<B>(&dir, &Default::default(), fmt).unwrap().1
    }

    pub fn run(flags: &str) {
        let on = |f: &str| flags.split(',').any(|x| x == f);
        let q8 = !on("f32");
        let cap = if on("cap12") { 12 } else { 32 };
        let ids: Vec<i64> = vec![5, 17, 200, 3, 99, 261, 0, 42, 7, 7, 150, 33];
        let n = ids.len();
        let idw: Tensor<Wgpu, 2, Int> =
            Tensor::from_data(TensorData::new(ids.clone(), [1, n]), &Default::default());
        let mw = model::<Wgpu>(q8);
        // `sync`: flush the device's pending work (the load's) before anything runs.
        if on("sync") {
            <Wgpu as Backend>::sync(&Default::default()).unwrap();
        }
        let first = if on("chainfirst") {
            let mut cw = mw.cache(1, cap);
            Some(super::v(mw.hidden(idw.clone(), &mut cw).unwrap()))
        } else {
            None
        };
        let mf = model::<Flex>(q8);
        let idf: Tensor<Flex, 2, Int> =
            Tensor::from_data(TensorData::new(ids, [1, n]), &Default::default());
        // `twice`: the whole forward twice on wgpu (fresh caches), each against flex.
        // `warm=PIECE`: one piece on wgpu (embed, ln1, qproj, cfc, cproj, project) before it.
        if on("twice") || flags.contains("warm=") {
            let mut cf = mf.cache(1, cap);
            let r = super::v(mf.hidden(idf.clone(), &mut cf).unwrap());
            let ef = mf.wte.forward(idf.clone());
            let l1f = mf.h[0].ln_1.forward(ef.clone());
            let fcf = mf.h[0].mlp.c_fc.forward(l1f.clone());
            let piece = flags.split(',').find_map(|f| f.strip_prefix("warm="));
            match piece {
                Some("embed") => drop(super::v(mw.wte.forward(idw.clone()))),
                Some("ln1") => drop(super::v(mw.h[0].ln_1.forward(up(&ef)))),
                Some("qproj") => drop(super::v(mw.h[0].attn.q_proj.forward(up(&l1f)))),
                Some("cfc") => drop(super::v(mw.h[0].mlp.c_fc.forward(up(&l1f)))),
                Some("cproj") => drop(super::v(mw.h[0].mlp.c_proj.forward(up(&fcf)))),
                Some("project") => drop(super::v(mw.wte.project(up(&l1f)))),
                _ => {}
            }
            for pass in 1..=if on("twice") { 2 } else { 1 } {
                let mut cw = mw.cache(1, cap);
                let g = super::v(mw.hidden(idw.clone(), &mut cw).unwrap());
                let diff = super::max_diff(&g, &r);
                println!("hidden, pass {pass}, warm-up {piece:?}: {diff:.3e}");
            }
            return;
        }
        if let Some(g) = first {
            let mut cf = mf.cache(1, cap);
            let r = super::v(mf.hidden(idf.clone(), &mut cf).unwrap());
            let diff = super::max_diff(&g, &r);
            println!("hidden, wgpu first in process (cap {cap}): {diff:.3e}");
            return;
        }
        let ef = mf.wte.forward(idf.clone());
        cmp("wte.forward", mw.wte.forward(idw.clone()), &ef);
        cmp("wte.weight_f32", mw.wte.weight_f32(), &mf.wte.weight_f32());
        let l1f = mf.h[0].ln_1.forward(ef.clone());
        cmp("ln_1(same x)", mw.h[0].ln_1.forward(up(&ef)), &l1f);
        let qf = mf.h[0].attn.q_proj.forward(l1f.clone());
        cmp("q_proj(same x)", mw.h[0].attn.q_proj.forward(up(&l1f)), &qf);
        cmp(
            "q_proj.weight_f32",
            mw.h[0].attn.q_proj.weight_f32(),
            &mf.h[0].attn.q_proj.weight_f32(),
        );
        let fcf = mf.h[0].mlp.c_fc.forward(l1f.clone());
        cmp("c_fc(same x)", mw.h[0].mlp.c_fc.forward(up(&l1f)), &fcf);
        let cpf = mf.h[0].mlp.c_proj.forward(fcf.clone());
        cmp("c_proj(same x)", mw.h[0].mlp.c_proj.forward(up(&fcf)), &cpf);
        let pf = mf.wte.project(l1f.clone());
        cmp("wte.project(same x)", mw.wte.project(up(&l1f)), &pf);
        let one = l1f.clone().slice([0..1, 0..1, 0..32]);
        cmp(
            "q_proj(1 row)",
            mw.h[0].attn.q_proj.forward(up(&one)),
            &mf.h[0].attn.q_proj.forward(one.clone()),
        );
        cmp(
            "wte.project(1 row)",
            mw.wte.project(up(&one)),
            &mf.wte.project(one),
        );
        let mut cf = mf.cache(1, cap);
        let mut cw = mw.cache(1, cap);
        let hf = mf.hidden(idf, &mut cf).unwrap();
        let hw = mw.hidden(idw, &mut cw).unwrap();
        cmp("hidden (chain)", hw.clone(), &hf);
        cmp("logits(chain)", mw.lm_logits(hw), &mf.lm_logits(hf));
    }
}
