//! A Hugging Face GPT-2 folder written as a GGUF file llama.cpp runs (architecture `gpt2`):
//! `Conv1D` weights (`[in, out]`) are transposed to llama.cpp's `[out, in]` rows.
//!
//! | HF | GGUF | type |
//! | --- | --- | --- |
//! | `wte.weight` | `token_embd.weight` | Q8_0 for 4-bit targets, else the target |
//! | `wpe.weight` | `position_embd.weight` | f32 |
//! | `h.{i}.ln_{1,2}.{weight,bias}` | `blk.{i}.{attn,ffn}_norm.{weight,bias}` | f32 |
//! | `h.{i}.attn.c_attn.{weight,bias}` | `blk.{i}.attn_qkv.{weight,bias}` | the target, bias f32 |
//! | `h.{i}.attn.c_proj.*` | `blk.{i}.attn_output.*` | the target, bias f32 |
//! | `h.{i}.mlp.c_fc.*` / `c_proj.*` | `blk.{i}.ffn_up.*` / `ffn_down.*` | the target, bias f32 |
//! | `ln_f.{weight,bias}` | `output_norm.{weight,bias}` | f32 |
//! | `lm_head.weight` (untied only) | `output.weight` | as `token_embd` |

use std::path::Path;

use zoo_gguf::{add_tokenizer, GgmlType, GgufWriter, TensorOut, TokenizerExport, Value};
use zoo_nn::quant::{QMatrix, QType};
use zoo_nn::weights::Weights;
use zoo_nn::TextTokenizer;

use crate::load::{read_config, Gpt2Error};

fn bad(reason: String) -> Gpt2Error {
    Gpt2Error::Export(reason)
}

fn add(
    w: &mut GgufWriter,
    name: &str,
    shape: &[usize],
    values: &[f32],
    qtype: QType,
) -> Result<(), Gpt2Error> {
    let (rows, cols) = match shape {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        _ => return Err(bad(format!("{name}: shape {shape:?}"))),
    };
    // Rows that are not whole blocks fall back to f16, as llama.cpp's quantizer does.
    let qtype = if qtype.row_bytes(cols).is_none() {
        QType::F16
    } else {
        qtype
    };
    let m =
        QMatrix::quantize(qtype, rows, cols, values).map_err(|e| bad(format!("{name}: {e}")))?;
    let dtype = GgmlType::from_id(qtype.ggml_id())
        .ok_or_else(|| bad(format!("{name}: {} has no GGUF type", qtype.name())))?;
    w.add_tensor(TensorOut {
        name: name.to_string(),
        shape: shape.to_vec(),
        dtype,
        data: m.bytes().to_vec(),
    })
    .map(|_| ())
    .map_err(|e| bad(e.to_string()))
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The GGUF file of the GPT-2 folder `dir` with its matrices in `to` (f32, f16, q8_0, q4_0,
/// q4_1; see the module table).
pub fn to_gguf(dir: &Path, to: QType) -> Result<GgufWriter, Gpt2Error> {
    if !matches!(
        to,
        QType::F32 | QType::F16 | QType::Q8_0 | QType::Q4_0 | QType::Q4_1
    ) {
        return Err(bad(format!(
            "GGUF export writes f32, f16, q8_0, q4_0 or q4_1, not {}",
            to.name()
        )));
    }
    let c = read_config(dir)?;
    if c.activation_function != "gelu_new" && c.activation_function != "gelu_pytorch_tanh" {
        return Err(bad(format!(
            "llama.cpp's gpt2 uses the tanh GELU; this checkpoint uses {}",
            c.activation_function
        )));
    }
    if c.scale_attn_by_inverse_layer_idx || c.reorder_and_upcast_attn || !c.scale_attn_weights {
        return Err(bad(
            "llama.cpp's gpt2 has no layer-index scaling or unscaled attention".into(),
        ));
    }
    let tokenizer = TextTokenizer::from_dir(dir)?.ok_or_else(|| {
        bad(format!(
            "{} has no tokenizer: llama.cpp needs one in the file",
            dir.display()
        ))
    })?;
    let mut weights = Weights::open(dir)?;
    let p = if weights.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let (d, vocab, inner) = (c.n_embd, c.vocab_size, c.inner_size());
    let outer = if matches!(to, QType::Q4_0 | QType::Q4_1) {
        QType::Q8_0
    } else {
        to
    };
    let mut w = GgufWriter::new();
    let u = |v: usize| Value::U32(v as u32);
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gpt2".into());
    w.set("general.architecture", Value::String("gpt2".into()))
        .set("general.name", Value::String(name))
        .set("general.quantization_version", Value::U32(2))
        .set("gpt2.context_length", u(c.n_positions))
        .set("gpt2.embedding_length", u(d))
        .set("gpt2.feed_forward_length", u(inner))
        .set("gpt2.block_count", u(c.n_layer))
        .set("gpt2.attention.head_count", u(c.n_head))
        .set(
            "gpt2.attention.layer_norm_epsilon",
            Value::F32(c.layer_norm_epsilon as f32),
        );
    let wte = weights.take_f32(&format!("{p}wte.weight"), &[vocab, d])?;
    add(&mut w, "token_embd.weight", &[vocab, d], &wte, outer)?;
    let wpe = weights.take_f32(&format!("{p}wpe.weight"), &[c.n_positions, d])?;
    add(
        &mut w,
        "position_embd.weight",
        &[c.n_positions, d],
        &wpe,
        QType::F32,
    )?;
    for i in 0..c.n_layer {
        let b = format!("{p}h.{i}");
        for (hf, gguf) in [("ln_1", "attn_norm"), ("ln_2", "ffn_norm")] {
            for part in ["weight", "bias"] {
                let v = weights.take_f32(&format!("{b}.{hf}.{part}"), &[d])?;
                add(
                    &mut w,
                    &format!("blk.{i}.{gguf}.{part}"),
                    &[d],
                    &v,
                    QType::F32,
                )?;
            }
        }
        for (hf, gguf, din, dout) in [
            ("attn.c_attn", "attn_qkv", d, 3 * d),
            ("attn.c_proj", "attn_output", d, d),
            ("mlp.c_fc", "ffn_up", d, inner),
            ("mlp.c_proj", "ffn_down", inner, d),
        ] {
            let v = weights.take_f32(&format!("{b}.{hf}.weight"), &[din, dout])?;
            let rows = transpose(&v, din, dout);
            add(
                &mut w,
                &format!("blk.{i}.{gguf}.weight"),
                &[dout, din],
                &rows,
                to,
            )?;
            let bias = weights.take_f32(&format!("{b}.{hf}.bias"), &[dout])?;
            add(
                &mut w,
                &format!("blk.{i}.{gguf}.bias"),
                &[dout],
                &bias,
                QType::F32,
            )?;
        }
        weights.skip(&format!("{b}.attn.bias"));
        weights.skip(&format!("{b}.attn.masked_bias"));
    }
    for part in ["weight", "bias"] {
        let v = weights.take_f32(&format!("{p}ln_f.{part}"), &[d])?;
        add(&mut w, &format!("output_norm.{part}"), &[d], &v, QType::F32)?;
    }
    if c.tie_word_embeddings {
        weights.take_tied("lm_head.weight", &format!("{p}wte.weight"), &[vocab, d])?;
    } else {
        let head = weights.take_f32("lm_head.weight", &[vocab, d])?;
        add(&mut w, "output.weight", &[vocab, d], &head, outer)?;
    }
    weights.finish(|_| false)?;
    let json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| bad(format!("serializing the tokenizer: {e}")))?;
    add_tokenizer(
        &mut w,
        &json,
        &TokenizerExport {
            bos: c.bos_token_id,
            eos: c.eos_token_id,
            add_bos: false,
            chat_template: None,
            vocab_rows: vocab,
        },
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(w)
}
