//! BLIP-2 with a LLaMA language model (MiniGPT-4's graph) against transformers, with the tiny
//! random checkpoint and images of tests/fixtures/blip2_fixtures.py: pixel values of BLIP's PIL
//! image processor (PNG downscaled, 4:4:4 JPEG downscaled, RGBA PNG upscaled), the vision
//! encoder's last hidden state, the Q-Former output, the projected query embeddings, the logits
//! with the query embeddings at the placeholder ids, exact greedy tokens through the library
//! and through `zoo generate --image … --json`, MiniGPT-4's chat prompt through `zoo chat`,
//! and bad images refused with clear errors.

use std::path::{Path, PathBuf};

use crate::common::*;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use zoo_backends::BackendKind;
use zoo_blip2::image::{self, ImageError};
use zoo_nn::{CausalLm, GenerationConfig, Logits};

const IMAGES: [&str; 3] = ["a.png", "b.jpg", "c.png"];

fn dir() -> PathBuf {
    fixtures().join("blip2")
}

fn model_dir() -> PathBuf {
    dir().join("tiny")
}

fn reference() -> serde_json::Value {
    json(&model_dir().join("reference.json"))
}

fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Pixel values against `BlipImageProcessorPil`: the PNGs (RGB downscaled, RGBA composited
/// onto white and upscaled) to float rounding — the 8-bit bicubic resize is PIL's, pixel for
/// pixel; the JPEG within three 8-bit levels, since its decoder (zune-jpeg) and PIL's
/// (libjpeg-turbo) round the IDCT and colour conversion differently.
#[test]
fn pixel_values_match_blip_image_processor() {
    let reference = reference();
    let config = zoo_blip2::load::read_config(&model_dir()).unwrap();
    let pre = zoo_blip2::load::read_preprocessor(&model_dir(), &config).unwrap();
    for name in IMAGES {
        let want = floats(&reference["images"][name]["pixel_values"]);
        let got = image::load_pixel_values(&dir().join(name), &pre).unwrap();
        let diff = max_diff(&got, &want);
        // One 8-bit level is 1 / 255 / std ≈ 0.0146 after normalisation.
        let levels = diff * 255.0 * 0.2613;
        eprintln!("  {name}: pixel values max |diff| = {diff:e} ({levels:.3} levels)");
        let tol = if name.ends_with(".jpg") { 0.045 } else { 1e-5 };
        assert!(diff <= tol, "{name}: pixel values differ by {diff}");
    }
}

struct Parity {
    kind: BackendKind,
}

impl Parity {
    fn run<B: Backend>(self, device: B::Device) {
        let tol = zoo_backends::tolerance(self.kind);
        let reference = reference();
        let gen = zoo_blip2::open::<B>(&model_dir(), &device).unwrap();
        let lm = &gen.model;
        let s = lm.config.vision.image_size;
        let input_ids = ids(&reference["input_ids"]);
        let mut greedy_seen = Vec::new();
        for name in IMAGES {
            let label = format!("{name} on {}", self.kind.name());
            let r = &reference["images"][name];
            // The modules on transformers' own pixel values.
            let pixels = Tensor::<B, 4>::from_data(
                TensorData::new(floats(&r["pixel_values"]), [1, 3, s, s]),
                &device,
            );
            let features = lm.model.image_features(pixels);
            let diff = max_abs_diff(
                &tensor_rows(features.clone()),
                &rows(&r["vision_last_hidden"]),
            );
            eprintln!("  {label}: vision last hidden max |diff| = {diff:e}");
            assert!(diff < tol, "{label}: vision features differ by {diff}");
            let query = lm.model.query_output(features);
            let diff = max_abs_diff(&tensor_rows(query.clone()), &rows(&r["qformer_output"]));
            eprintln!("  {label}: Q-Former output max |diff| = {diff:e}");
            assert!(diff < tol, "{label}: Q-Former output differs by {diff}");
            let embeds = lm.model.language_projection.forward(query);
            let diff = max_abs_diff(&tensor_rows(embeds), &rows(&r["query_embeds"]));
            eprintln!("  {label}: query embeddings max |diff| = {diff:e}");
            assert!(diff < tol, "{label}: query embeddings differ by {diff}");

            // From the file on: our pixel values, the spliced prompt, logits and greedy tokens
            // (the PNGs: the JPEG's decoded pixels are not libjpeg-turbo's exactly).
            if name.ends_with(".jpg") {
                continue;
            }
            lm.set_image(&dir().join(name)).unwrap();
            let logits = gen.forward_rows(&input_ids, Logits::All).unwrap();
            let diff = max_abs_diff(&logits, &rows(&r["logits"]));
            eprintln!("  {label}: logits max |diff| = {diff:e}");
            assert!(diff < 2.0 * tol, "{label}: logits differ by {diff}");
            let config = GenerationConfig {
                stop_ids: Some(Vec::new()),
                ..GenerationConfig::greedy(ids(&r["greedy"]).len())
            };
            let out = gen.generate(&input_ids, &config, |_| true).unwrap();
            assert_eq!(out.ids, ids(&r["greedy"]), "{label}: greedy tokens");
            greedy_seen.push(out.ids);
        }
        assert_ne!(
            greedy_seen[0], greedy_seen[1],
            "a different image, the same answer"
        );

        // Placeholders without an image, and an image without placeholders, are errors.
        lm.set_image_embeds(None);
        let err = gen.forward_rows(&input_ids, Logits::All).unwrap_err();
        assert!(err.to_string().contains("no image was given"), "{err}");
        lm.set_image(&dir().join("a.png")).unwrap();
        let err = gen.forward_rows(&input_ids[4..], Logits::All).unwrap_err();
        assert!(err.to_string().contains("0 image placeholders"), "{err}");
        let _ = lm.max_positions();
    }
}

#[test]
fn tiny_blip2_matches_transformers_on_every_backend() {
    on_every_backend!(|kind| Parity { kind });
}

#[test]
fn zoo_generate_with_an_image_matches_transformers() {
    let reference = reference();
    let model = model_dir().display().to_string();
    let input_ids = id_list(&ids(&reference["input_ids"]));
    for backend in backend_names() {
        for name in ["a.png", "c.png"] {
            let r = &reference["images"][name];
            let greedy = ids(&r["greedy"]);
            let image = dir().join(name).display().to_string();
            let out = zoo(&[
                "generate",
                &model,
                "--image",
                &image,
                "--ids",
                &input_ids,
                "--greedy",
                "--ignore-eos",
                "--max-new-tokens",
                &greedy.len().to_string(),
                "--backend",
                &backend,
                "--json",
            ]);
            let value = stdout_json(&out);
            assert_eq!(ids(&value["ids"]), greedy, "{name} on {backend}");
            assert_eq!(value["image_tokens"], 4);
        }
        // `zoo forward --image`: the logits of the spliced prompt.
        let r = &reference["images"]["a.png"];
        let image = dir().join("a.png").display().to_string();
        let out = zoo(&[
            "forward",
            &model,
            "--image",
            &image,
            "--ids",
            &input_ids,
            "--backend",
            &backend,
            "--json",
        ]);
        let value = stdout_json(&out);
        let diff = max_abs_diff(&rows(&value["logits"]), &rows(&r["logits"]));
        assert!(diff < 2e-3, "forward on {backend}: logits differ by {diff}");
    }
}

/// `zoo chat MODEL --image FILE`: MiniGPT-4's prompt, the image spliced in at `<ImageHere>`,
/// the greedy reply transformers gives for the same embeddings.
#[test]
fn zoo_chat_with_an_image_gives_minigpt4_reply() {
    let reference = reference();
    let chat = &reference["chat"];
    let model = model_dir().display().to_string();
    let tokenizer = zoo_nn::TextTokenizer::from_dir(&model_dir())
        .unwrap()
        .unwrap();
    for name in ["a.png", "c.png"] {
        let r = &reference["images"][name];
        let greedy = ids(&r["chat_greedy"]);
        // MiniGPT-4 stops at `###` (and eos, 2); the reply is the text before it, trimmed.
        let stop = [tokenizer.token_id("###").unwrap(), 2];
        let end = greedy
            .iter()
            .position(|id| stop.contains(id))
            .unwrap_or(greedy.len());
        let want = tokenizer.decode(&greedy[..end], true).unwrap();
        let image = dir().join(name).display().to_string();
        let out = zoo(&[
            "chat",
            &model,
            "--image",
            &image,
            "--message",
            chat["message"].as_str().unwrap(),
            "--max-new-tokens",
            &greedy.len().to_string(),
            "--backend",
            &backend_names()[0],
            "--json",
        ]);
        let value = stdout_json(&out);
        assert_eq!(value["reply"].as_str().unwrap(), want.trim(), "{name}");
        let segments = chat["segments"].as_array().unwrap();
        let prompt_len = ids(&segments[0]).len() + 4 + ids(&segments[1]).len();
        assert_eq!(value["prompt_tokens"], prompt_len, "{name}");
    }
}

/// The MiniGPT-4 prompt ids: the segments transformers' tokenizer gives, the placeholders
/// between them.
#[test]
fn minigpt4_prompt_ids_split_at_image_here() {
    use zoo_nn::chat::{ChatFormat, Message};
    let reference = reference();
    let chat = &reference["chat"];
    let tokenizer = zoo_nn::TextTokenizer::from_dir(&model_dir())
        .unwrap()
        .unwrap();
    let format = zoo_blip2::MiniGpt4Format::new(3, 4);
    let messages = [Message::new("user", chat["message"].as_str().unwrap())];
    assert_eq!(
        zoo_blip2::chat::render(&messages).unwrap(),
        chat["text"].as_str().unwrap()
    );
    let segments = chat["segments"].as_array().unwrap();
    let mut want = ids(&segments[0]);
    want.extend([3; 4]);
    want.extend(ids(&segments[1]));
    assert_eq!(format.prompt_ids(&messages, &tokenizer).unwrap(), want);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A PNG header (signature + IHDR) claiming `width` x `height`, with no image data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend(b"IHDR");
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(13u32.to_be_bytes());
    out.extend(&ihdr);
    out.extend(crc.to_be_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Not an image, a truncated PNG / JPEG, 0x0 and huge dimensions: clear errors, before any
/// large allocation; through the library and through `zoo generate --image`.
#[test]
fn bad_images_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let png = std::fs::read(dir().join("a.png")).unwrap();
    let jpg = std::fs::read(dir().join("b.jpg")).unwrap();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            write(tmp.path(), "text.png", b"hello, not an image"),
            "not a PNG or JPEG",
        ),
        (
            write(tmp.path(), "cut.png", &png[..png.len() / 2]),
            "cut.png",
        ),
        (
            write(tmp.path(), "cut.jpg", &jpg[..jpg.len() / 3]),
            "cut.jpg",
        ),
        (write(tmp.path(), "empty.png", &png_header(0, 0)), "cut"),
        (
            write(tmp.path(), "huge.png", &png_header(100_000, 100_000)),
            "more than 16384 pixels a side",
        ),
        (
            write(
                tmp.path(),
                "gif.gif",
                b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
            ),
            "only PNG and JPEG",
        ),
        (tmp.path().join("missing.png"), "cannot read image"),
    ];
    let pre = zoo_blip2::PreprocessorConfig::for_image_size(32);
    for (path, needle) in &cases {
        let err = image::load_pixel_values(path, &pre).unwrap_err();
        let text = err.to_string();
        eprintln!("  {}: {text}", path.display());
        if path.ends_with("empty.png") {
            assert!(
                matches!(
                    err,
                    ImageError::Dimensions {
                        width: 0,
                        height: 0,
                        ..
                    }
                ) || matches!(err, ImageError::Decode { .. }),
                "{text}"
            );
        } else if *needle != "cut" {
            assert!(text.contains(needle), "expected `{needle}` in: {text}");
        }
    }
    let model = model_dir().display().to_string();
    for (path, _) in &cases[..2] {
        let out = zoo(&[
            "generate",
            &model,
            "--image",
            &path.display().to_string(),
            "--ids",
            "3,3,3,3,1",
            "--max-new-tokens",
            "2",
            "--backend",
            &backend_names()[0],
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    }
    // --image on a model without a vision encoder.
    let llama = fixtures().join("llama/gqa").display().to_string();
    let out = zoo(&[
        "generate",
        &llama,
        "--image",
        &dir().join("a.png").display().to_string(),
        "--ids",
        "1,2",
        "--max-new-tokens",
        "1",
        "--backend",
        &backend_names()[0],
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no vision encoder"),
        "{stderr}"
    );
}

// MiniGPT-4's own release layout (tests/fixtures/blip2/minigpt4: the tiny model's weights under
// LAVIS's names, see zoo_blip2::release) against the HF folder and transformers.

fn release_dir() -> PathBuf {
    dir().join("minigpt4")
}

struct ReleaseParity {
    kind: BackendKind,
}

impl ReleaseParity {
    fn run<B: Backend>(self, device: B::Device) {
        let reference = reference();
        let hf = zoo_blip2::open::<B>(&model_dir(), &device).unwrap();
        let release = zoo_blip2::open::<B>(&release_dir(), &device).unwrap();
        assert_eq!(release.model.config, hf.model.config);
        let input_ids = ids(&reference["input_ids"]);
        for name in ["a.png", "c.png"] {
            let label = format!("{name} on {}", self.kind.name());
            let r = &reference["images"][name];
            hf.model.set_image(&dir().join(name)).unwrap();
            release.model.set_image(&dir().join(name)).unwrap();
            let want = hf.forward_rows(&input_ids, Logits::All).unwrap();
            let got = release.forward_rows(&input_ids, Logits::All).unwrap();
            let diff = max_abs_diff(&got, &want);
            eprintln!("  {label}: release vs HF folder logits max |diff| = {diff:e}");
            // The HF fixture's qkv bias has a (random) k third that LAVIS's q_bias / v_bias
            // cannot hold; softmax cancels it, so the logits agree to rounding.
            assert!(
                diff < 1e-4,
                "{label}: the release's logits differ by {diff}"
            );
            let config = GenerationConfig {
                stop_ids: Some(Vec::new()),
                ..GenerationConfig::greedy(ids(&r["greedy"]).len())
            };
            let out = release.generate(&input_ids, &config, |_| true).unwrap();
            assert_eq!(out.ids, ids(&r["greedy"]), "{label}: greedy tokens");
        }
    }
}

/// The release layout gives the HF folder's logits (to rounding: see ReleaseParity) and
/// exactly transformers' greedy tokens.
#[test]
fn minigpt4_release_matches_hf_folder_on_every_backend() {
    on_every_backend!(|kind| ReleaseParity { kind });
}

/// The verification interface, chat, info and bench on the release folder.
#[test]
fn zoo_commands_on_the_minigpt4_release() {
    let reference = reference();
    let release = release_dir().display().to_string();
    let hf = model_dir().display().to_string();
    let input_ids = id_list(&ids(&reference["input_ids"]));
    let image = dir().join("a.png").display().to_string();
    let r = &reference["images"]["a.png"];
    for backend in backend_names() {
        let greedy = ids(&r["greedy"]);
        let out = zoo(&[
            "generate",
            &release,
            "--image",
            &image,
            "--ids",
            &input_ids,
            "--greedy",
            "--ignore-eos",
            "--max-new-tokens",
            &greedy.len().to_string(),
            "--backend",
            &backend,
            "--json",
        ]);
        let value = stdout_json(&out);
        assert_eq!(ids(&value["ids"]), greedy, "generate on {backend}");
        let forward = |model: &str| {
            let out = zoo(&[
                "forward",
                model,
                "--image",
                &image,
                "--ids",
                &input_ids,
                "--backend",
                &backend,
                "--json",
            ]);
            rows(&stdout_json(&out)["logits"])
        };
        let got = forward(&release);
        let diff = max_abs_diff(&got, &forward(&hf));
        assert!(
            diff < 1e-4,
            "forward on {backend}: release vs HF folder differ by {diff}"
        );
        let diff = max_abs_diff(&got, &rows(&r["logits"]));
        assert!(diff < 2e-3, "forward on {backend}: logits differ by {diff}");
    }
    let backend = &backend_names()[0];
    let chat = |model: &str| {
        let out = zoo(&[
            "chat",
            model,
            "--image",
            &image,
            "--message",
            reference["chat"]["message"].as_str().unwrap(),
            "--max-new-tokens",
            "10",
            "--backend",
            backend,
            "--json",
        ]);
        let value = stdout_json(&out);
        (value["reply"].clone(), value["prompt_tokens"].clone())
    };
    assert_eq!(chat(&release), chat(&hf), "chat: release vs HF folder");

    let info = |model: &str| stdout_json(&zoo(&["info", model, "--json"]));
    let (a, b) = (info(&release), info(&hf));
    for key in [
        "qformer_parameters",
        "language_model_parameters",
        "image_tokens",
        "layers",
        "hidden",
        "vocab",
    ] {
        assert_eq!(a[key], b[key], "info {key}: release vs HF folder");
    }
    // transformers 5 stores a qkv bias with a k third (zeros in a converted checkpoint); LAVIS
    // only q_bias and v_bias: one hidden-size vector fewer per vision layer (2 layers of 32).
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(
        n(&a, "vision_parameters") + 2 * 32,
        n(&b, "vision_parameters")
    );
    assert_eq!(n(&a, "parameters") + 2 * 32, n(&b, "parameters"));
}

/// `zoo bench` reports the image-encoding time of a BLIP-2 model apart from the text rates.
#[test]
fn zoo_bench_reports_image_encode_time() {
    for model in [model_dir(), release_dir()] {
        let model = model.display().to_string();
        let out = zoo(&[
            "bench",
            &model,
            "--prompt-len",
            "8",
            "--gen-len",
            "4",
            "--runs",
            "3",
            "--backend",
            &backend_names()[0],
            "--json",
        ]);
        let value = stdout_json(&out);
        let image = &value["image_encode_secs"];
        let median = image["median"].as_f64().unwrap();
        eprintln!("  {model}: image encode median {median:e} s");
        assert!(median > 0.0 && median < 60.0, "{image}");
        assert_eq!(image["runs"].as_array().unwrap().len(), 3);
        assert!(image["min"].as_f64().unwrap() > 0.0);
        assert_eq!(value["image_tokens"], 4);
        assert!(value["prefill_tok_s"]["median"].as_f64().unwrap() > 0.0);
        // The text report has the line too.
        let out = zoo(&[
            "bench",
            &model,
            "--prompt-len",
            "8",
            "--gen-len",
            "4",
            "--runs",
            "1",
            "--backend",
            &backend_names()[0],
        ]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("to encode one 32x32 image into 4 query tokens"),
            "{text}"
        );
    }
}

/// A copy of the release folder (with its vicuna/ subfolder), to damage.
fn copy_release() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.path().is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    };
    copy(&release_dir(), tmp.path());
    std::fs::create_dir(tmp.path().join("vicuna")).unwrap();
    copy(&release_dir().join("vicuna"), &tmp.path().join("vicuna"));
    tmp
}

struct LoadError {
    dir: PathBuf,
}

impl LoadError {
    fn run<B: Backend>(self, device: B::Device) -> String {
        zoo_blip2::load::<B>(&self.dir, &device)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }
}

fn release_error(dir: &Path) -> String {
    zoo_backends::with_backend!(cpu_backend(), |B, device| {
        (LoadError {
            dir: dir.to_path_buf(),
        })
        .run::<B>(device)
    })
    .unwrap()
}

/// Missing, misshapen and unused tensors are errors naming the tensor as the release's files
/// name it; a missing or doubled file is an error saying what the layout expects; through the
/// library and through the `zoo` binary.
#[test]
fn minigpt4_release_errors_are_clear() {
    let expect = |dir: &Path, needles: &[&str]| {
        let err = release_error(dir);
        eprintln!("  {err}");
        for needle in needles {
            assert!(err.contains(needle), "expected `{needle}` in: {err}");
        }
    };
    // No projection: the BLIP-2 checkpoint alone.
    let tmp = copy_release();
    std::fs::remove_file(tmp.path().join("pretrained_minigpt4.pth")).unwrap();
    expect(tmp.path(), &["no pretrained_minigpt4.pth", "vicuna/"]);
    // Two projections.
    let tmp = copy_release();
    std::fs::copy(
        tmp.path().join("pretrained_minigpt4.pth"),
        tmp.path().join("prerained_minigpt4_7b.pth"),
    )
    .unwrap();
    expect(
        tmp.path(),
        &["several candidates", "prerained_minigpt4_7b.pth"],
    );
    // No vision encoder.
    let tmp = copy_release();
    std::fs::remove_file(tmp.path().join("eva_vit_g.pth")).unwrap();
    expect(tmp.path(), &["no vision encoder", "eva_vit_g.pth"]);
    // No language model.
    let tmp = copy_release();
    std::fs::remove_dir_all(tmp.path().join("vicuna")).unwrap();
    expect(tmp.path(), &["vicuna/config.json"]);
    // The projection file replaced by the BLIP-2 checkpoint: llama_proj is missing.
    let tmp = copy_release();
    std::fs::copy(
        tmp.path().join("blip2_pretrained_flant5xxl.pth"),
        tmp.path().join("pretrained_minigpt4.pth"),
    )
    .unwrap();
    expect(tmp.path(), &["`llama_proj.", "is missing"]);
    // Sizes that do not fit the tensors: the misshapen one is named.
    let tmp = copy_release();
    let path = tmp.path().join("minigpt4.json");
    let mut config = json(&path);
    config["vision_config"]["intermediate_size"] = 40.into();
    std::fs::write(&path, config.to_string()).unwrap();
    expect(
        tmp.path(),
        &["`visual_encoder.blocks.0.mlp.fc1.", "has shape [64"],
    );
    // One Q-Former layer fewer than the checkpoint has: its tensors are unused.
    let tmp = copy_release();
    let mut config = json(&tmp.path().join("minigpt4.json"));
    config["qformer_config"]["num_hidden_layers"] = 1.into();
    std::fs::write(tmp.path().join("minigpt4.json"), config.to_string()).unwrap();
    expect(
        tmp.path(),
        &[
            "not used",
            "Qformer.bert.encoder.layer.1.attention.self.query.weight",
        ],
    );
    // An unknown field in minigpt4.json.
    let tmp = copy_release();
    std::fs::write(tmp.path().join("minigpt4.json"), r#"{"vision": {}}"#).unwrap();
    expect(tmp.path(), &["minigpt4.json", "unknown field `vision`"]);
    // Through the binary: a clear message, no panic.
    let tmp = copy_release();
    std::fs::remove_file(tmp.path().join("eva_vit_g.pth")).unwrap();
    let out = zoo(&[
        "generate",
        &tmp.path().display().to_string(),
        "--image",
        &dir().join("a.png").display().to_string(),
        "--ids",
        "3,3,3,3,1",
        "--max-new-tokens",
        "1",
        "--backend",
        &backend_names()[0],
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("no vision encoder"), "{stderr}");
}
