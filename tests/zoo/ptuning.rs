//! P-Tuning v2 for ChatGLM-6B (tests/fixtures/ptuning_fixtures.py makes the tiny checkpoint
//! and the records): the prefix gradients against central differences, a few AdamW steps
//! lower the loss with everything but the prefix frozen, the written checkpoint reloads
//! through the zoo's ChatGLM-6B loader with the trained model's logits, and `zoo finetune
//! --method ptuning-v2` trains, checkpoints and resumes. LoRA on the GLM layouts that have no
//! PyTorch reference here (ChatGLM-6B, and ChatGLM2's `chatglm` layout from the same script):
//! the adapter gradients against central differences, and `zoo finetune --method lora` with
//! PEFT's names and default targets.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn_zoo::finetune::ptuning::PrefixTuned;
use burn_zoo::finetune::{
    causal_lm_loss_sum, eval_loss, load_examples, ptuning, trainable_parameters, DataFormat,
    Example, OptimizerKind, Schedule, TextSide, TrainConfig, Trainable, Trainer,
};
use burn_zoo::glm::v1::ChatGlmV1;
use burn_zoo::glm::v2::ChatGlmV2;

use crate::common::{fixtures, json, max_abs_diff, rows, stdout_json, tensor_rows, zoo};

/// Prefix positions in these tests.
const PRE: usize = 3;

fn base_dir() -> PathBuf {
    fixtures().join("finetune/chatglm_tiny")
}

fn data_path() -> PathBuf {
    fixtures().join("finetune/chatglm_data.jsonl")
}

fn examples() -> Vec<Example> {
    let side = TextSide {
        tokenizer: None,
        encode_prompt: &|_| Ok(Vec::new()),
        eos: None,
        vocab: 24,
        chat: None,
    };
    load_examples(&data_path(), DataFormat::Tokens, &side, usize::MAX).unwrap()
}

/// Every record in one right-padded batch (pad id 3, ChatGLM-6B's `<pad>`): ids and labels.
fn whole_batch() -> (Vec<i64>, Vec<i64>, [usize; 2]) {
    let ex = examples();
    let t = ex.iter().map(|e| e.input_ids.len()).max().unwrap();
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    for e in &ex {
        ids.extend(e.input_ids.iter().map(|&i| i as i64));
        labels.extend(&e.labels);
        for _ in e.input_ids.len()..t {
            ids.push(3);
            labels.push(-100);
        }
    }
    (ids, labels, [ex.len(), t])
}

/// The mean causal-LM loss over every record (what the trainer's step loss is).
fn loss_of<B: Backend, M: Trainable<B>>(model: &M, device: &B::Device) -> Tensor<B, 1> {
    let (ids, labels, shape) = whole_batch();
    let scored = (0..shape[0])
        .map(|r| {
            labels[r * shape[1] + 1..(r + 1) * shape[1]]
                .iter()
                .filter(|&&l| l != -100)
                .count()
        })
        .sum::<usize>();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), device);
    let logits = model.batch_logits(ids).unwrap();
    causal_lm_loss_sum(logits, &labels).div_scalar(scored as f64)
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem()
}

/// The base model with a fresh trainable prefix (seeded, so the same on every backend).
fn with_prefix<B: Backend>(device: &B::Device, pre: usize) -> ChatGlmV1<B> {
    let (_, model) = burn_zoo::glm::v1::load::<B>(&base_dir(), device).unwrap();
    ptuning::attach_prefix(model, Some(pre), 7).unwrap()
}

/// ChatGLM2's `chatglm` layout (tests/fixtures/finetune/chatglm2_tiny) with a fresh trainable
/// prefix (seeded, so the same on every backend).
fn with_prefix_v2<B: Backend>(device: &B::Device, pre: usize) -> ChatGlmV2<B> {
    let dir = fixtures().join("finetune/chatglm2_tiny");
    let (_, model) = burn_zoo::glm::v2::load::<B>(&dir, device).unwrap();
    ptuning::attach_prefix(model, Some(pre), 7).unwrap()
}

/// The gradient of the mean loss with respect to every prefix element.
fn prefix_gradient<B: AutodiffBackend, M: PrefixTuned<B>>(
    model: &M,
    device: &B::Device,
) -> Vec<f64> {
    let loss = loss_of(model, device);
    let grads = loss.backward();
    let g = model
        .prefix()
        .unwrap()
        .val()
        .grad(&grads)
        .expect("the prefix has a gradient");
    g.into_data().convert::<f64>().into_vec().unwrap()
}

/// The gradient by central differences of fourth order,
/// `(8(L(p + h·eₖ) − L(p − h·eₖ)) − (L(p + 2h·eₖ) − L(p − 2h·eₖ))) / 12h` for every element
/// `k` of the prefix, on backend `B`.
fn finite_differences<B: Backend, M: PrefixTuned<B>>(
    mut model: M,
    device: &B::Device,
    h: f64,
) -> Vec<f64> {
    let prefix = model.prefix_mut().take().unwrap().val();
    let shape = prefix.dims();
    let base: Vec<f64> = prefix.into_data().convert::<f64>().into_vec().unwrap();
    let mut at = |k: usize, step: f64| {
        let mut values = base.clone();
        values[k] += step;
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let t = Tensor::<B, 4>::from_data(TensorData::new(values, shape), device);
        *model.prefix_mut() = Some(burn::module::Param::from_tensor(t));
        scalar(loss_of(&model, device))
    };
    (0..base.len())
        .map(|k| central_difference(|step| at(k, step), h))
        .collect()
}

/// The fourth-order central difference at 0 of `loss` (a function of one element's shift):
/// `(8(L(h) − L(−h)) − (L(2h) − L(−2h))) / 12h`.
fn central_difference(mut loss: impl FnMut(f64) -> f64, h: f64) -> f64 {
    let near = loss(h) - loss(-h);
    let far = loss(2.0 * h) - loss(-2.0 * h);
    (8.0 * near - far) / (12.0 * h)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// Tolerance of a backend's autodiff gradient against the central differences, relative to
/// the largest gradient element (2.9e-2 here). The backends compute in f32 (burn-ndarray's
/// `NdArray<f64>` was tried: the weights load as f32 tensors whatever the backend's default
/// element, so its differences carried f32 noise too). The loss (≈ 5) is evaluated to a few
/// f32 ulps, ~1e-6, so a difference quotient with step h = 1e-2 carries ~1e-4 absolute noise,
/// ~4e-3 relative; the fourth-order stencil's truncation error (h⁴·L⁽⁵⁾/30) is far below that.
/// 2e-2 is above that noise floor; a wrong permutation, mask or missing gradient path gives
/// relative errors of order 1.
const GRADIENT_TOLERANCE: f64 = 2e-2;

/// The prefix gradient check of ChatGLM-6B (`false`) or ChatGLM2/3 (`true`).
struct GradientCheck<'a>(&'a [f64], bool);

impl GradientCheck<'_> {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = crate::finetune::kind_of::<B>(&device);
        let got = if self.1 {
            prefix_gradient(&with_prefix_v2::<Autodiff<B>>(&device, PRE), &device)
        } else {
            prefix_gradient(&with_prefix::<Autodiff<B>>(&device, PRE), &device)
        };
        let scale = max_abs(self.0);
        let err = max_diff(&got, self.0) / scale;
        let layout = if self.1 { "ChatGLM2" } else { "ChatGLM-6B" };
        eprintln!(
            "[{kind}] {layout} prefix gradient vs central differences: max relative {err:.2e}"
        );
        assert!(
            err < GRADIENT_TOLERANCE,
            "[{kind}] prefix gradient differs from central differences by {err:.3e} (relative)"
        );
    }
}

/// The prefix gradient check of ChatGLM-6B (`v2` false) or ChatGLM2/3: central differences
/// on a CPU backend (`size` elements), then every backend's autodiff gradient against them.
fn prefix_gradient_check(v2: bool, size: usize) {
    let fd = zoo_backends::with_backend!(crate::common::cpu_backend(), |B, device| {
        if v2 {
            finite_differences(with_prefix_v2::<B>(&device, PRE), &device, 1e-2)
        } else {
            finite_differences(with_prefix::<B>(&device, PRE), &device, 1e-2)
        }
    })
    .unwrap();
    assert_eq!(fd.len(), size, "[layers * 2, kv_heads, pre, head_dim]");
    let scale = max_abs(&fd);
    assert!(scale > 1e-3, "the loss depends on the prefix ({scale})");
    eprintln!("central differences: max |g| {scale:.3e}");
    on_every_backend!(|_kind| GradientCheck(&fd, v2));
}

/// The prefix gradient of the causal-LM loss (autodiff, every backend) equals its central
/// differences (computed on a CPU backend), to [`GRADIENT_TOLERANCE`].
#[test]
fn ptuning_prefix_gradient_matches_finite_differences() {
    // 2 layers × 2, 2 heads, PRE positions, head_dim 8.
    prefix_gradient_check(false, 2 * 2 * 2 * PRE * 8);
}

/// The same for ChatGLM2/3's `chatglm` layout: the prefix holds keys and values for the
/// multi-query groups only (`[layers * 2, groups, pre, kv_channels]`), RoPE on half of each
/// head, SwiGLU.
#[test]
fn chatglm2_ptuning_prefix_gradient_matches_finite_differences() {
    // 2 layers × 2, 1 key/value group, PRE positions, kv_channels 8.
    prefix_gradient_check(true, 2 * 2 * PRE * 8);
}

/// `zoo finetune --method ptuning-v2` on ChatGLM2's layout: the loss goes down, the folder is
/// ChatGLM's P-Tuning checkpoint (`config.json` with `pre_seq_len`, the one prefix tensor
/// `[pre, layers * 2 * groups * kv_channels]` in `pytorch_model.bin` and `model.safetensors`),
/// `--resume` from step 2 repeats the losses, and `zoo forward --adapter` gives the library's
/// logits with the prefix applied.
#[test]
fn cli_ptuning_on_chatglm2_trains_resumes_and_applies() {
    let dir = fixtures().join("finetune/chatglm2_tiny");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pt2");
    let extra = [
        "--pre-seq-len",
        "3",
        "--schedule",
        "constant",
        "--checkpoint-every",
        "2",
    ];
    let first = losses(&stdout_json(&finetune_run(
        &dir,
        "ptuning-v2",
        2,
        4,
        &path_str(out.clone()),
        &extra,
    )));
    assert_eq!(first.len(), 4);
    // 4 records, 2 a step: steps 3 and 4 see the batches of steps 1 and 2 again.
    assert!(first[2] < first[0] && first[3] < first[1], "{first:?}");
    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["pre_seq_len"], 3);
    for file in [ptuning::PREFIX_BIN, ptuning::PREFIX_FILE] {
        let w = burn_zoo::nn::Weights::open(&out.join(file)).unwrap();
        assert_eq!(w.names().collect::<Vec<_>>(), vec![ptuning::PREFIX_KEY]);
        assert_eq!(w.shape(ptuning::PREFIX_KEY).unwrap(), vec![3, 2 * 2 * 8]);
    }
    assert_resume_repeats(&dir, "ptuning-v2", &out, &extra, &first);
    let ids = PROBE;
    let with = forward_logits(&dir, Some(&out));
    type F = burn_zoo::backends::Flex;
    let dev = Default::default();
    let (_, mut model) = burn_zoo::glm::v2::load::<F>(&dir, &dev).unwrap();
    ptuning::apply_prefix(&mut model, &out).unwrap();
    let want = tensor_rows(
        model
            .batch_logits(burn_zoo::nn::ids_tensor(&ids, &dev))
            .unwrap(),
    );
    let diff = max_abs_diff(&with, &want);
    assert!(diff < 1e-4, "zoo forward --adapter vs the library: {diff}");
    assert!(
        max_abs_diff(&with, &forward_logits(&dir, None)) > 1e-3,
        "the prefix changes the logits"
    );
    // The checkpoint read the way ChatGLM2's own code reads one: the base config with the
    // checkpoint's `pre_seq_len`, the prefix encoder's weights laid over the base's, through
    // the loader's `prefix_encoder` path (the one the glm3 P-Tuning golden file checks).
    let mut config: burn_zoo::glm::ChatGlmV2Config =
        serde_json::from_value(json(&dir.join("config.json"))).unwrap();
    config.pre_seq_len = Some(3);
    config.prefix_projection = false;
    let mut weights = burn_zoo::nn::Weights::open(&dir).unwrap();
    weights.overlay(burn_zoo::nn::Weights::open(&out).unwrap());
    let loaded = burn_zoo::glm::v2::from_weights::<F>(&config, &mut weights, None, &dev).unwrap();
    let by_loader = tensor_rows(
        loaded
            .batch_logits(burn_zoo::nn::ids_tensor(&ids, &dev))
            .unwrap(),
    );
    let diff = max_abs_diff(&by_loader, &want);
    assert!(
        diff < 1e-5,
        "apply_prefix vs the loader's prefix encoder: {diff}"
    );
}

struct TrainAndReload;

impl TrainAndReload {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = crate::finetune::kind_of::<B>(&device);
        let model = with_prefix::<Autodiff<B>>(&device, 4);
        // Only the prefix trains: [pre, layers * 2 * hidden] = 4 × 64.
        assert_eq!(trainable_parameters(&model), 4 * 64);
        let frozen_before = tensor_rows(
            model
                .valid()
                .lm_head
                .as_ref()
                .unwrap()
                .weight
                .val()
                .unsqueeze::<3>(),
        );
        let ex = examples();
        let before = eval_loss(&model.valid(), &ex, 4, 3, &device).unwrap();
        let config = TrainConfig {
            optimizer: OptimizerKind::AdamW,
            lr: 0.05,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            schedule: Schedule::Constant,
            warmup_steps: 0,
            batch_size: 2,
            grad_accum: 2,
            steps: 10,
            seed: 0,
            shuffle: false,
            max_grad_norm: Some(1.0),
            pad_id: 3,
        };
        let mut trainer = Trainer::new(model, ex.clone(), config, &device).unwrap();
        let first = trainer.step().unwrap().loss;
        assert!(
            (first - before).abs() < 1e-4,
            "[{kind}] the first step's loss {first} is the loss over all records {before}"
        );
        for _ in 1..10 {
            trainer.step().unwrap();
        }
        let trained = trainer.into_model().valid();
        let after = eval_loss(&trained, &ex, 4, 3, &device).unwrap();
        eprintln!("[{kind}] P-Tuning v2: loss {before:.4} → {after:.4} after 10 AdamW steps");
        assert!(
            after < before - 0.1,
            "[{kind}] 10 steps lower the loss: {before} → {after}"
        );
        let frozen_after = tensor_rows(
            trained
                .lm_head
                .as_ref()
                .unwrap()
                .weight
                .val()
                .unsqueeze::<3>(),
        );
        assert_eq!(frozen_before, frozen_after, "the LM head stayed frozen");
        // Written as a P-Tuning checkpoint and run through the ChatGLM-6B loader.
        let tmp = tempfile::tempdir().unwrap();
        ptuning::write_prefix(tmp.path(), &trained, &base_dir().join("config.json")).unwrap();
        let cfg = json(&tmp.path().join("config.json"));
        assert_eq!(cfg["pre_seq_len"], 4);
        assert_eq!(cfg["prefix_projection"], false);
        let w = burn_zoo::nn::Weights::open(tmp.path()).unwrap();
        assert_eq!(w.names().collect::<Vec<_>>(), vec![ptuning::PREFIX_KEY]);
        assert_eq!(w.shape(ptuning::PREFIX_KEY).unwrap(), vec![4, 64]);
        let (config, reloaded) =
            ptuning::load_with_prefix::<B>(&base_dir(), tmp.path(), &device).unwrap();
        assert_eq!(config.pre_seq_len, Some(4));
        let probe = [4u32, 5, 19, 20, 7, 8];
        let a = crate::common::full_logits::<B, _>(&trained, &probe, &device);
        let b = crate::common::full_logits::<B, _>(&reloaded, &probe, &device);
        let diff = max_abs_diff(&a, &b);
        assert!(
            diff < 1e-5,
            "[{kind}] reloaded P-Tuning checkpoint's logits differ by {diff}"
        );
        let no_prefix = burn_zoo::glm::v1::load::<B>(&base_dir(), &device)
            .unwrap()
            .1;
        let c = crate::common::full_logits::<B, _>(&no_prefix, &probe, &device);
        assert!(max_abs_diff(&a, &c) > 1e-2, "the prefix changes the logits");
    }
}

/// A few AdamW steps on the prefix alone lower the loss; the written checkpoint reloads with
/// the trained model's logits.
#[test]
fn ptuning_trains_the_prefix_and_reloads() {
    on_every_backend!(|_kind| TrainAndReload);
}

fn path_str(p: PathBuf) -> String {
    p.to_str().unwrap().to_string()
}

/// `zoo --json finetune MODEL --method METHOD` on the ChatGLM records (lr 0.05, batches in file
/// order) on the CPU backend, with `extra` flags.
fn finetune_run(
    model: &std::path::Path,
    method: &str,
    batch: usize,
    steps: usize,
    out: &str,
    extra: &[&str],
) -> std::process::Output {
    let (model, data, batch, steps) = (
        path_str(model.to_path_buf()),
        path_str(data_path()),
        batch.to_string(),
        steps.to_string(),
    );
    let mut args = vec![
        "--backend",
        crate::common::cpu_backend().name(),
        "--json",
        "finetune",
        &model,
        "--method",
        method,
        "--data",
        &data,
        "--lr",
        "0.05",
        "--batch-size",
        &batch,
        "--steps",
        &steps,
        "--no-shuffle",
        "--out",
        out,
    ];
    args.extend(extra);
    zoo(&args)
}

fn run_args(out: &str, extra: &[&str]) -> std::process::Output {
    let mut flags = vec!["--schedule", "constant"];
    flags.extend(extra);
    finetune_run(&base_dir(), "ptuning-v2", 2, 4, out, &flags)
}

fn losses(v: &serde_json::Value) -> Vec<f64> {
    v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The ids [`forward_logits`] runs.
const PROBE: [u32; 7] = [5, 6, 7, 19, 20, 8, 9];

/// `zoo --json forward MODEL --ids PROBE [--adapter DIR]` on flex: the logits rows.
fn forward_logits(model: &std::path::Path, adapter: Option<&std::path::Path>) -> Vec<Vec<f32>> {
    let ids = PROBE.map(|i| i.to_string()).join(",");
    let (model, adapter) = (
        path_str(model.to_path_buf()),
        adapter.map(|a| path_str(a.to_path_buf())),
    );
    let mut args = vec![
        "--backend",
        "flex",
        "--json",
        "forward",
        &model,
        "--ids",
        &ids,
    ];
    if let Some(a) = &adapter {
        args.extend(["--adapter", a]);
    }
    rows(&stdout_json(&zoo(&args))["logits"])
}

/// `finetune_run` again with `--resume` (2 records a step, 4 steps): its losses repeat `first`.
fn assert_resume_repeats(
    model: &std::path::Path,
    method: &str,
    out: &std::path::Path,
    extra: &[&str],
    first: &[f64],
) {
    let mut again = extra.to_vec();
    again.push("--resume");
    let resumed = losses(&stdout_json(&finetune_run(
        model,
        method,
        2,
        4,
        &path_str(out.to_path_buf()),
        &again,
    )));
    assert_eq!(resumed.len(), first.len());
    for (a, b) in resumed.iter().zip(first) {
        assert!(
            (a - b).abs() < 1e-6,
            "{}: {resumed:?} vs {first:?}",
            model.display()
        );
    }
}

/// `zoo finetune --method ptuning-v2` writes ChatGLM's P-Tuning files, checkpoints, resumes
/// with the same losses, refuses to overwrite; P-Tuning on a LLaMA model is an error.
#[test]
fn cli_ptuning_trains_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let out_s = path_str(out.clone());
    let first = losses(&stdout_json(&run_args(
        &out_s,
        &["--pre-seq-len", "4", "--checkpoint-every", "2"],
    )));
    assert_eq!(first.len(), 4);
    assert!(first[3] < first[0], "{first:?}");
    assert!(out.join("model.safetensors").is_file());
    assert_eq!(json(&out.join("config.json"))["pre_seq_len"], 4);
    // ChatGLM's own file: `pytorch_model.bin` in torch.save's format, the same tensor under
    // the same name (tests/fixtures/ptuning_bin_check.py checks that torch.load reads it), and
    // the zoo's loader reads a folder holding only it and config.json.
    let key = burn_zoo::finetune::ptuning::PREFIX_KEY;
    let mut st = burn_zoo::nn::Weights::open(&out.join("model.safetensors")).unwrap();
    let mut bin = burn_zoo::nn::Weights::open(&out.join("pytorch_model.bin")).unwrap();
    assert_eq!(bin.names().collect::<Vec<_>>(), vec![key]);
    let shape = st.shape(key).unwrap();
    assert_eq!(shape, [4, 2 * 2 * 16]);
    let want = st.take_f32(key, &shape).unwrap();
    assert_eq!(bin.take_f32(key, &shape).unwrap(), want);
    let only_bin = tmp.path().join("only_bin");
    std::fs::create_dir(&only_bin).unwrap();
    for f in ["config.json", "pytorch_model.bin"] {
        std::fs::copy(out.join(f), only_bin.join(f)).unwrap();
    }
    type F = burn_zoo::backends::Flex;
    let dev = Default::default();
    let (_, from_bin) =
        burn_zoo::finetune::ptuning::load_with_prefix::<F>(&base_dir(), &only_bin, &dev).unwrap();
    let (_, from_st) =
        burn_zoo::finetune::ptuning::load_with_prefix::<F>(&base_dir(), &out, &dev).unwrap();
    assert_eq!(
        burn_zoo::finetune::ptuning::prefix_embedding(&from_bin),
        burn_zoo::finetune::ptuning::prefix_embedding(&from_st)
    );
    assert_eq!(
        burn_zoo::finetune::ptuning::prefix_embedding(&from_bin)
            .unwrap()
            .1,
        want
    );
    assert!(out.join("checkpoint-2/optimizer.bin").is_file());
    let again = run_args(&out_s, &["--pre-seq-len", "4"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let resumed = losses(&stdout_json(&run_args(&out_s, &["--resume"])));
    assert_eq!(resumed.len(), 4);
    for (a, b) in resumed.iter().zip(&first) {
        assert!((a - b).abs() < 1e-6, "{resumed:?} vs {first:?}");
    }
    let llama = zoo(&[
        "--backend",
        "flex",
        "finetune",
        &path_str(fixtures().join("llama/gqa")),
        "--method",
        "ptuning-v2",
        "--pre-seq-len",
        "4",
        "--data",
        &path_str(data_path()),
        "--steps",
        "1",
        "--out",
        &path_str(tmp.path().join("llama")),
    ]);
    assert!(!llama.status.success());
    assert!(
        String::from_utf8_lossy(&llama.stderr).contains("ChatGLM-6B"),
        "{}",
        String::from_utf8_lossy(&llama.stderr)
    );
}

/// Rank of the adapters in the LoRA gradient checks.
const LORA_RANK: usize = 2;

/// A GLM generation whose LoRA gradient is checked: its tiny checkpoint and the layers that
/// get adapters (an attention projection of the first block, an MLP projection of the second).
#[derive(Clone, Copy)]
enum LoraCase {
    /// ChatGLM-6B: 2D positions, the prefix-LM mask, `query_key_value` interleaved per head.
    V1,
    /// ChatGLM2's `chatglm` layout: multi-query groups, half-rotary RoPE, SwiGLU.
    V2,
}

impl LoraCase {
    fn layers(self) -> [&'static str; 2] {
        match self {
            LoraCase::V1 => [
                "transformer.layers.0.attention.query_key_value",
                "transformer.layers.1.mlp.dense_4h_to_h",
            ],
            LoraCase::V2 => [
                "transformer.encoder.layers.0.self_attention.query_key_value",
                "transformer.encoder.layers.1.mlp.dense_h_to_4h",
            ],
        }
    }

    fn dir(self) -> PathBuf {
        match self {
            LoraCase::V1 => base_dir(),
            LoraCase::V2 => fixtures().join("finetune/chatglm2_tiny"),
        }
    }
}

/// Seeded, nonzero starting values of `n` adapter elements, so the gradient reaches both A
/// and B.
fn lora_start(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.6
        })
        .collect()
}

/// `base` with adapters on `layers` holding `values` (A `[r, in]` then B `[out, r]`, layer by
/// layer in the model's order, row-major).
fn with_lora<B: Backend, M: Trainable<B> + Clone>(
    base: &M,
    layers: &[&str],
    values: &[f32],
    device: &B::Device,
) -> M {
    let mut model = base.clone();
    let mut at = 0;
    for (path, dense) in model.dense_layers_mut() {
        if layers.contains(&path.as_str()) {
            let (d_in, d_out) = (dense.d_in(), dense.d_out());
            let mut take = |shape: [usize; 2]| {
                let n = shape[0] * shape[1];
                let v = values[at..at + n].to_vec();
                at += n;
                Tensor::<B, 2>::from_data(TensorData::new(v, shape), device)
            };
            let a = take([LORA_RANK, d_in]);
            let b = take([d_out, LORA_RANK]);
            dense.lora = Some(burn_zoo::nn::Lora::new(&path, a, b, 4.0, 0.0));
        }
    }
    assert_eq!(at, values.len(), "every value went into an adapter");
    model
}

/// How many adapter elements `layers` of `model` hold at rank [`LORA_RANK`].
fn lora_size<B: Backend, M: Trainable<B>>(model: &M, layers: &[&str]) -> usize {
    model
        .dense_layers()
        .iter()
        .filter(|(p, _)| layers.contains(&p.as_str()))
        .map(|(_, d)| LORA_RANK * (d.d_in() + d.d_out()))
        .sum()
}

/// The gradient of the mean loss with respect to every adapter element.
fn lora_gradient<B: AutodiffBackend, M: Trainable<B> + Clone>(
    base: &M,
    layers: &[&str],
    device: &B::Device,
) -> Vec<f64> {
    let values = lora_start(lora_size(base, layers));
    let model = with_lora(base, layers, &values, device);
    let grads = loss_of(&model, device).backward();
    let mut out = Vec::new();
    for (path, dense) in model.dense_layers() {
        if let Some(lora) = &dense.lora {
            for p in [&lora.a, &lora.b] {
                let g = p
                    .val()
                    .grad(&grads)
                    .unwrap_or_else(|| panic!("{path}: an adapter without a gradient"));
                out.extend(g.into_data().convert::<f64>().into_vec::<f64>().unwrap());
            }
        }
    }
    out
}

/// [`lora_gradient`] by fourth-order central differences.
fn lora_finite_differences<B: Backend, M: Trainable<B> + Clone>(
    base: &M,
    layers: &[&str],
    device: &B::Device,
    h: f64,
) -> Vec<f64> {
    let start = lora_start(lora_size(base, layers));
    (0..start.len())
        .map(|k| {
            let at = |step: f64| {
                let mut values = start.clone();
                values[k] += step as f32;
                scalar(loss_of(&with_lora(base, layers, &values, device), device))
            };
            central_difference(at, h)
        })
        .collect()
}

/// The case's base model on backend `B` (every parameter trainable until `no_grad`), given
/// to `f`.
macro_rules! with_glm {
    ($case:expr, $B:ty, $device:expr, |$m:ident| $body:expr) => {
        match $case {
            LoraCase::V1 => {
                let (_, $m) = burn_zoo::glm::v1::load::<$B>(&$case.dir(), $device).unwrap();
                $body
            }
            LoraCase::V2 => {
                let (_, $m) = burn_zoo::glm::v2::load::<$B>(&$case.dir(), $device).unwrap();
                $body
            }
        }
    };
}

struct LoraGradientCheck<'a>(LoraCase, &'a [f64]);

impl LoraGradientCheck<'_> {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = crate::finetune::kind_of::<B>(&device);
        let case = self.0;
        let got = with_glm!(case, Autodiff<B>, &device, |m| lora_gradient(
            &m.no_grad(),
            &case.layers(),
            &device
        ));
        let err = max_diff(&got, self.1) / max_abs(self.1);
        eprintln!("[{kind}] LoRA gradient vs central differences: max relative {err:.2e}");
        assert!(
            err < GRADIENT_TOLERANCE,
            "[{kind}] LoRA gradient differs from central differences by {err:.3e} (relative)"
        );
    }
}

fn lora_gradient_check(case: LoraCase, size: usize) {
    let fd = zoo_backends::with_backend!(crate::common::cpu_backend(), |B, device| {
        with_glm!(case, B, &device, |m| lora_finite_differences(
            &m.no_grad(),
            &case.layers(),
            &device,
            1e-2
        ))
    })
    .unwrap();
    assert_eq!(fd.len(), size);
    let scale = max_abs(&fd);
    assert!(scale > 1e-3, "the loss depends on the adapters ({scale})");
    on_every_backend!(|_kind| LoraGradientCheck(case, &fd));
}

/// LoRA on ChatGLM-6B (2D positions, the prefix-LM mask, the fused per-head `[q, k, v]`
/// projection): the gradient of the causal-LM loss with respect to every element of two
/// adapters (autodiff, every backend) equals its central differences (on a CPU backend). There
/// is no PyTorch reference for this layout: ChatGLM's modelling code does not run in
/// transformers 5; its forward pass is checked against that code by the golden files.
#[test]
fn chatglm6b_lora_gradient_matches_finite_differences() {
    // query_key_value 16 → 48, dense_4h_to_h 32 → 16, rank 2.
    lora_gradient_check(LoraCase::V1, 2 * (16 + 48) + 2 * (32 + 16));
}

/// The same for ChatGLM2/3 and GLM-4 in the `chatglm` layout (multi-query groups, RoPE on half
/// of each head, SwiGLU's fused `[gate, up]`).
#[test]
fn chatglm2_lora_gradient_matches_finite_differences() {
    // query_key_value 16 → 32 (2 query heads + 1 key/value group of 8), dense_h_to_4h 16 → 48.
    lora_gradient_check(LoraCase::V2, 2 * (16 + 32) + 2 * (16 + 48));
}

/// `zoo finetune --method lora` on ChatGLM-6B: PEFT's default targets for `chatglm`
/// (`query_key_value`), PEFT's tensor names, the loss going down; `zoo forward --adapter`
/// applies the result as the library does.
#[test]
fn cli_lora_on_chatglm6b_trains_and_applies() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lora");
    let first = losses(&stdout_json(&finetune_run(
        &base_dir(),
        "lora",
        3,
        6,
        &path_str(out.clone()),
        &["--rank", "2"],
    )));
    assert_eq!(first.len(), 6);
    assert!(first[4] < first[0], "{first:?}");
    let config = json(&out.join("adapter_config.json"));
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["query_key_value"])
    );
    assert_eq!(config["r"], 2);
    let mut w = burn_zoo::nn::Weights::open(&out.join("adapter_model.safetensors")).unwrap();
    let mut names: Vec<String> = w.names().map(str::to_string).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "base_model.model.transformer.layers.0.attention.query_key_value.lora_A.weight",
            "base_model.model.transformer.layers.0.attention.query_key_value.lora_B.weight",
            "base_model.model.transformer.layers.1.attention.query_key_value.lora_A.weight",
            "base_model.model.transformer.layers.1.attention.query_key_value.lora_B.weight",
        ]
    );
    assert_eq!(
        w.shape("base_model.model.transformer.layers.0.attention.query_key_value.lora_B.weight")
            .unwrap(),
        [48, 2]
    );
    // The adapter trained: B left PEFT's zero start.
    let b = w
        .take_f32(
            "base_model.model.transformer.layers.1.attention.query_key_value.lora_B.weight",
            &[48, 2],
        )
        .unwrap();
    assert!(b.iter().any(|v| v.abs() > 1e-4));
    // `zoo forward --adapter` = the library's model with the adapter loaded.
    let ids = PROBE;
    let with = forward_logits(&base_dir(), Some(&out));
    let without = forward_logits(&base_dir(), None);
    type F = burn_zoo::backends::Flex;
    let dev = Default::default();
    let (_, mut model) = burn_zoo::glm::v1::load::<F>(&base_dir(), &dev).unwrap();
    burn_zoo::finetune::peft::load_adapter(&mut model, &out).unwrap();
    let want = tensor_rows(
        model
            .batch_logits(burn_zoo::nn::ids_tensor(&ids, &dev))
            .unwrap(),
    );
    let diff = max_abs_diff(&with, &want);
    assert!(diff < 1e-4, "zoo forward --adapter vs the library: {diff}");
    assert!(
        max_abs_diff(&with, &without) > 1e-3,
        "the adapter changes the logits"
    );
    // The other GLM layouts train under their own checkpoints' names and PEFT's defaults.
    for (dir, first) in [
        (
            fixtures().join("finetune/chatglm2_tiny"),
            "base_model.model.transformer.encoder.layers.0.self_attention.query_key_value.lora_A.weight",
        ),
        (
            fixtures().join("glm/hf_tiny"),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        ),
    ] {
        let out = tmp.path().join(dir.file_name().unwrap());
        let run = finetune_run(&dir, "lora", 3, 2, &path_str(out.clone()), &["--rank", "2"]);
        assert_eq!(losses(&stdout_json(&run)).len(), 2);
        let w = burn_zoo::nn::Weights::open(&out.join("adapter_model.safetensors")).unwrap();
        let mut names: Vec<String> = w.names().map(str::to_string).collect();
        names.sort();
        assert_eq!(names[0], first, "{}", dir.display());
    }
}

/// Full fine-tuning's gradient on the GLM layouts without a PyTorch reference: for a few
/// elements of every parameter (chosen by a seeded generator, the same on every backend), the
/// autodiff gradient of the mean loss against central differences on a CPU backend.
struct FullGradient {
    /// Module path of the parameter (`layers.0.query_key_value.weight`).
    path: String,
    index: usize,
    value: f64,
}

/// Module paths of the parameters, for the visitor and the mapper below.
struct ParamPath(Vec<String>);

impl ParamPath {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn joined(&self) -> String {
        self.0.join(".")
    }
}

/// Three seeded element indices of a parameter of `n` elements.
fn sample_indices(path: &str, n: usize) -> Vec<usize> {
    let mut state = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut out: Vec<usize> = (0..3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

struct GradientVisitor<'a, B: AutodiffBackend> {
    path: ParamPath,
    grads: &'a B::Gradients,
    out: Vec<FullGradient>,
}

impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for GradientVisitor<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let path = self.path.joined();
        let values: Vec<f64> = match param.val().grad(self.grads) {
            Some(g) => g.into_data().convert::<f64>().into_vec().unwrap(),
            None => panic!("{path}: a parameter without a gradient"),
        };
        for index in sample_indices(&path, values.len()) {
            self.out.push(FullGradient {
                path: path.clone(),
                index,
                value: values[index],
            });
        }
    }
}

/// Adds `step` to element `index` of the parameter at `path`.
struct Nudge<'a> {
    path: ParamPath,
    target: &'a str,
    index: usize,
    step: f32,
}

impl<B: Backend> burn::module::ModuleMapper<B> for Nudge<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        if self.path.joined() != self.target {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let device = tensor.device();
        let shape = tensor.shape();
        let mut values: Vec<f32> = tensor.into_data().convert::<f32>().into_vec().unwrap();
        values[self.index] += self.step;
        let nudged = Tensor::from_data(TensorData::new(values, shape), &device);
        burn::module::Param::from_mapped_value(id, nudged, mapper)
    }
}

/// The sampled elements of every parameter's gradient (autodiff).
fn full_gradient<B: AutodiffBackend, M: Trainable<B>>(
    model: &M,
    device: &B::Device,
) -> Vec<FullGradient> {
    let grads = loss_of(model, device).backward();
    let mut visitor = GradientVisitor::<B> {
        path: ParamPath(Vec::new()),
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    visitor.out
}

/// The same elements by fourth-order central differences.
fn full_finite_differences<B: Backend, M: Trainable<B> + Clone>(
    model: &M,
    at: &[FullGradient],
    device: &B::Device,
    h: f64,
) -> Vec<f64> {
    at.iter()
        .map(|g| {
            let loss = |step: f64| {
                let nudged = model.clone().map(&mut Nudge {
                    path: ParamPath(Vec::new()),
                    target: &g.path,
                    index: g.index,
                    step: step as f32,
                });
                scalar(loss_of(&nudged, device))
            };
            central_difference(loss, h)
        })
        .collect()
}

struct FullGradientCheck<'a>(LoraCase, &'a [(String, usize)], &'a [f64]);

impl FullGradientCheck<'_> {
    fn run<B: Backend>(self, device: B::Device) {
        let kind = crate::finetune::kind_of::<B>(&device);
        let case = self.0;
        let got = with_glm!(case, Autodiff<B>, &device, |m| full_gradient(&m, &device));
        let at: Vec<(String, usize)> = got.iter().map(|g| (g.path.clone(), g.index)).collect();
        assert_eq!(at, self.1, "the same sampled elements");
        let got: Vec<f64> = got.iter().map(|g| g.value).collect();
        let scale = max_abs(self.2);
        let (worst, k) = got
            .iter()
            .zip(self.2)
            .map(|(a, b)| (a - b).abs() / scale)
            .enumerate()
            .map(|(k, e)| (e, k))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a });
        eprintln!(
            "[{kind}] full gradient vs central differences ({} elements of every parameter): max relative {worst:.2e} at {}[{}]",
            got.len(),
            self.1[k].0,
            self.1[k].1
        );
        assert!(
            worst < GRADIENT_TOLERANCE,
            "[{kind}] full gradient differs from central differences by {worst:.3e} (relative) at {}[{}]",
            self.1[k].0,
            self.1[k].1
        );
    }
}

fn full_gradient_check(case: LoraCase, parameters: usize) {
    let (at, fd) = zoo_backends::with_backend!(crate::common::cpu_backend(), |B, device| {
        let at = with_glm!(case, Autodiff<B>, &device, |m| full_gradient(&m, &device));
        let fd = with_glm!(case, B, &device, |m| full_finite_differences(
            &m, &at, &device, 1e-2
        ));
        (at, fd)
    })
    .unwrap();
    let mut names: Vec<&str> = at.iter().map(|g| g.path.as_str()).collect();
    names.dedup();
    assert_eq!(
        names.len(),
        parameters,
        "every parameter sampled: {names:?}"
    );
    let scale = max_abs(&fd);
    assert!(scale > 1e-3, "the loss depends on the weights ({scale})");
    let at: Vec<(String, usize)> = at.into_iter().map(|g| (g.path, g.index)).collect();
    on_every_backend!(|_kind| FullGradientCheck(case, &at, &fd));
}

/// Full fine-tuning of ChatGLM-6B: the gradient with respect to every parameter (three
/// sampled elements each: embeddings, LayerNorms, the fused per-head `[q, k, v]` and its bias,
/// the MLP, the untied head) equals its central differences.
#[test]
fn chatglm6b_full_gradient_matches_finite_differences() {
    // word_embeddings, 2 × (2 norms × 2 + 4 linears × 2), final norm × 2, lm_head.
    full_gradient_check(LoraCase::V1, 1 + 2 * 12 + 2 + 1);
}

/// The same for ChatGLM2/3's `chatglm` layout (RMSNorm, multi-query `[q, k, v]` with bias, no
/// other bias, SwiGLU, the `output_layer` head).
#[test]
fn chatglm2_full_gradient_matches_finite_differences() {
    // word_embeddings, 2 × (2 norms + query_key_value w, b + 3 linears), final norm, head.
    full_gradient_check(LoraCase::V2, 1 + 2 * 7 + 1 + 1);
}

/// `zoo finetune --method full` on each GLM layout (ChatGLM-6B, ChatGLM2/3, GLM-4's
/// `GlmForCausalLM`): the loss goes down, the folder holds every tensor of the base under the
/// same names and shapes beside its config, and `--resume` from the checkpoint written at step
/// 2 (a folder the zoo reopens as the model) gives the same losses and the same final weights,
/// which holds only if the written folder is the trained model.
#[test]
fn cli_full_finetune_on_glm_layouts_writes_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [
        base_dir(),
        fixtures().join("finetune/chatglm2_tiny"),
        fixtures().join("glm/hf_tiny"),
    ] {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(&name);
        let extra = ["--optimizer", "adamw", "--checkpoint-every", "2"];
        let first = losses(&stdout_json(&finetune_run(
            &dir,
            "full",
            2,
            4,
            &path_str(out.clone()),
            &extra,
        )));
        assert_eq!(first.len(), 4, "{name}");
        // 4 records, 2 a step: steps 3 and 4 see the batches of steps 1 and 2 again.
        assert!(
            first[2] < first[0] && first[3] < first[1],
            "{name}: {first:?}"
        );
        let written = burn_zoo::nn::Weights::open(&out).unwrap();
        let base = burn_zoo::nn::Weights::open(&dir).unwrap();
        let shapes = |w: &burn_zoo::nn::Weights| {
            let mut v: Vec<(String, Vec<usize>)> = w
                .names()
                .map(|n| (n.to_string(), w.shape(n).unwrap()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(shapes(&written), shapes(&base), "{name}: the tensors");
        assert!(out.join("config.json").is_file(), "{name}: config.json");
        assert!(out.join("checkpoint-2/model.safetensors").is_file());
        let uninterrupted = forward_logits(&out, None);
        assert!(
            max_abs_diff(&uninterrupted, &forward_logits(&dir, None)) > 1e-3,
            "{name}: training changed the model"
        );
        assert_resume_repeats(&dir, "full", &out, &extra, &first);
        let diff = max_abs_diff(&forward_logits(&out, None), &uninterrupted);
        assert!(
            diff < 1e-5,
            "{name}: resumed weights differ: logits by {diff}"
        );
    }
}
