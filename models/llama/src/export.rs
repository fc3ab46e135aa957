//! A Hugging Face LLaMA folder written as a GGUF file llama.cpp runs: `llama.*` metadata,
//! llama.cpp's tensor names, the q/k rows permuted the way its converter permutes them (so
//! that llama.cpp's adjacent-pair RoPE reproduces HF's half-split one), the tokenizer and the
//! chat template.
//!
//! | HF | GGUF | type |
//! | --- | --- | --- |
//! | `model.embed_tokens.weight` | `token_embd.weight` | Q8_0 for 4-bit targets, else the target |
//! | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` | `blk.{i}.attn_{q,k,v,output}.weight` | the target (q/k rows permuted) |
//! | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` | `blk.{i}.ffn_{gate,up,down}.weight` | the target |
//! | `model.layers.{i}.{input,post_attention}_layernorm.weight` | `blk.{i}.{attn,ffn}_norm.weight` | f32 |
//! | `model.norm.weight` | `output_norm.weight` | f32 |
//! | `lm_head.weight` (untied only) | `output.weight` | as `token_embd` |

use std::path::Path;

use zoo_gguf::{add_tokenizer, GgmlType, GgufWriter, TensorOut, TokenizerExport, Value};
use zoo_nn::quant::{QMatrix, QType};
use zoo_nn::weights::Weights;
use zoo_nn::TextTokenizer;

use crate::config::{LlamaConfig, RopeScaling};
use crate::load::{read_config, LlamaError};

/// The GGUF types `--to` takes.
pub const EXPORT_TYPES: [QType; 5] = [
    QType::F32,
    QType::F16,
    QType::Q8_0,
    QType::Q4_0,
    QType::Q4_1,
];

fn bad(reason: String) -> LlamaError {
    LlamaError::Export(reason)
}

/// A tensor in GGUF form: `values` (row-major `[rows, cols]`) in `qtype`.
fn tensor(
    name: &str,
    rows: usize,
    cols: usize,
    values: &[f32],
    qtype: QType,
) -> Result<TensorOut, LlamaError> {
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
    let shape = if rows == 1 {
        vec![cols]
    } else {
        vec![rows, cols]
    };
    Ok(TensorOut {
        name: name.to_string(),
        shape,
        dtype,
        data: m.bytes().to_vec(),
    })
}

fn add(w: &mut GgufWriter, t: TensorOut) -> Result<(), LlamaError> {
    w.add_tensor(t).map(|_| ()).map_err(|e| bad(e.to_string()))
}

/// llama.cpp's converter permutation of q/k rows: within each head, half-split order to
/// adjacent pairs (row `j·hd/2 + i` goes to `2i + j`).
fn permute(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The GGUF file of the LLaMA folder `dir` with its matrices in `to` (see the module table).
pub fn to_gguf(dir: &Path, to: QType) -> Result<GgufWriter, LlamaError> {
    if !EXPORT_TYPES.contains(&to) {
        return Err(bad(format!(
            "GGUF export writes f32, f16, q8_0, q4_0 or q4_1, not {}",
            to.name()
        )));
    }
    let config = read_config(dir)?;
    match config.rope().map_err(bad)? {
        RopeScaling::Default => {}
        RopeScaling::Linear { .. } => {}
        other => {
            return Err(bad(format!(
                "RoPE scaling {other:?} is not written to GGUF yet (default and linear are)"
            )))
        }
    }
    let mut weights = Weights::open(dir)?;
    let tokenizer = TextTokenizer::from_dir(dir)?.ok_or_else(|| {
        bad(format!(
            "{} has no tokenizer: llama.cpp needs one in the file",
            dir.display()
        ))
    })?;
    let mut w = GgufWriter::new();
    metadata(&mut w, &config, dir, to);
    let (d, vocab, inner) = (
        config.hidden_size,
        config.vocab_size,
        config.intermediate_size,
    );
    let (h, kv, hd) = (
        config.num_attention_heads,
        config.kv_heads(),
        config.head_dim(),
    );
    if config.attention_bias || config.mlp_bias {
        return Err(bad(
            "biases on the projections are not written to GGUF yet".into()
        ));
    }
    let p = if weights.contains("model.embed_tokens.weight") {
        "model."
    } else {
        ""
    };
    let outer = if matches!(to, QType::Q4_0 | QType::Q4_1) {
        QType::Q8_0
    } else {
        to
    };
    let emb = weights.take_f32(&format!("{p}embed_tokens.weight"), &[vocab, d])?;
    add(&mut w, tensor("token_embd.weight", vocab, d, &emb, outer)?)?;
    for i in 0..config.num_hidden_layers {
        let l = format!("{p}layers.{i}");
        let mut mat = |hf: &str, gguf: &str, rows: usize, cols: usize, heads: Option<usize>| {
            let values = weights.take_f32(&format!("{l}.{hf}.weight"), &[rows, cols])?;
            let values = match heads {
                Some(n) => permute(&values, rows, cols, n),
                None => values,
            };
            add(
                &mut w,
                tensor(&format!("blk.{i}.{gguf}.weight"), rows, cols, &values, to)?,
            )?;
            Ok::<(), LlamaError>(())
        };
        mat("self_attn.q_proj", "attn_q", h * hd, d, Some(h))?;
        mat("self_attn.k_proj", "attn_k", kv * hd, d, Some(kv))?;
        mat("self_attn.v_proj", "attn_v", kv * hd, d, None)?;
        mat("self_attn.o_proj", "attn_output", d, h * hd, None)?;
        mat("mlp.gate_proj", "ffn_gate", inner, d, None)?;
        mat("mlp.up_proj", "ffn_up", inner, d, None)?;
        mat("mlp.down_proj", "ffn_down", d, inner, None)?;
        for (hf, gguf) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
        ] {
            let v = weights.take_f32(&format!("{l}.{hf}.weight"), &[d])?;
            add(
                &mut w,
                tensor(&format!("blk.{i}.{gguf}.weight"), 1, d, &v, QType::F32)?,
            )?;
        }
    }
    let norm = weights.take_f32(&format!("{p}norm.weight"), &[d])?;
    add(
        &mut w,
        tensor("output_norm.weight", 1, d, &norm, QType::F32)?,
    )?;
    if config.tie_word_embeddings {
        weights.take_tied(
            "lm_head.weight",
            &format!("{p}embed_tokens.weight"),
            &[vocab, d],
        )?;
    } else {
        let head = weights.take_f32("lm_head.weight", &[vocab, d])?;
        add(&mut w, tensor("output.weight", vocab, d, &head, outer)?)?;
    }
    weights.finish(|name| name.ends_with("rotary_emb.inv_freq"))?;
    let json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| bad(format!("serializing the tokenizer: {e}")))?;
    let template = chat_template(dir);
    let add_bos = tokenizer
        .encode("a", true)
        .ok()
        .zip(config.bos_token_id)
        .is_some_and(|(ids, bos)| ids.first() == Some(&bos));
    add_tokenizer(
        &mut w,
        &json,
        &TokenizerExport {
            bos: config.bos_token_id,
            eos: config.eos_ids().first().copied(),
            add_bos,
            chat_template: template,
            vocab_rows: vocab,
        },
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(w)
}

/// The chat template of `tokenizer_config.json`, if there is one.
fn chat_template(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let tc: serde_json::Value = serde_json::from_str(&text).ok()?;
    match tc.get("chat_template")? {
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn metadata(w: &mut GgufWriter, c: &LlamaConfig, dir: &Path, to: QType) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "llama".into());
    let u = |v: usize| Value::U32(v as u32);
    w.set("general.architecture", Value::String("llama".into()))
        .set("general.name", Value::String(name))
        .set("general.file_type", Value::U32(file_type(to)))
        .set("general.quantization_version", Value::U32(2))
        .set("llama.context_length", u(c.max_position_embeddings))
        .set("llama.embedding_length", u(c.hidden_size))
        .set("llama.block_count", u(c.num_hidden_layers))
        .set("llama.feed_forward_length", u(c.intermediate_size))
        .set("llama.rope.dimension_count", u(c.head_dim()))
        .set("llama.attention.head_count", u(c.num_attention_heads))
        .set("llama.attention.head_count_kv", u(c.kv_heads()))
        .set("llama.attention.key_length", u(c.head_dim()))
        .set("llama.attention.value_length", u(c.head_dim()))
        .set(
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(c.rms_norm_eps as f32),
        )
        .set("llama.rope.freq_base", Value::F32(c.rope_theta() as f32))
        .set("llama.vocab_size", u(c.vocab_size));
    if let Ok(RopeScaling::Linear { factor }) = c.rope() {
        w.set("llama.rope.scaling.type", Value::String("linear".into()))
            .set("llama.rope.scaling.factor", Value::F32(factor as f32));
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a whole-file target type.
pub fn file_type(t: QType) -> u32 {
    match t {
        QType::F32 => 0,
        QType::F16 => 1,
        QType::Q4_0 => 2,
        QType::Q4_1 => 3,
        QType::Q8_0 => 7,
        QType::BF16 => 32,
        QType::Q4_K => 15,
        QType::Q5_K => 17,
        QType::Q6_K => 18,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_is_the_inverse_of_the_loaders_unpermute() {
        let values: Vec<f32> = (0..16).map(|x| x as f32).collect();
        // 2 heads of 4 rows, 2 columns: llama.cpp order per head is rows [0, 2, 1, 3].
        let p = permute(&values, 8, 2, 2);
        assert_eq!(
            p,
            vec![0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.]
        );
    }
}
