//! Raw forward passes of any family (the verification interface behind `zoo forward`),
//! perplexity of causal LMs and pseudo-perplexity of BERT masked LMs.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use zoo_backends::{with_backend, BackendKind};

use crate::bert::{self, SentenceEncoder};
use crate::nn::pipeline::rows;
use crate::nn::{ids_tensor, CausalLm, Logits, PipelineError, WeightFormat};
use crate::resolve::{Family, ModelRef};
use crate::Error;

/// What `forward` returns and the BERT-only inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardOptions {
    /// The final hidden states (after the last norm, as transformers' `last_hidden_state`)
    /// instead of the logits.
    pub hidden: bool,
    /// BERT: token type (segment) ids, one per id.
    pub token_type_ids: Option<Vec<u32>>,
    /// BERT: attention mask, one 0 or 1 per id (default: all 1).
    pub attention_mask: Option<Vec<u32>>,
    /// The formats the weights are kept in.
    pub format: WeightFormat,
    /// Encoder-decoders (T5): the decoder's input ids, starting with its start token; `ids`
    /// are then the encoder's.
    pub decoder_ids: Option<Vec<u32>>,
}

/// One forward pass over `ids` of the model at `model`: a row of logits per position (masked-LM
/// logits for BERT), or the final hidden states.
pub fn forward<B: Backend>(
    model: &ModelRef,
    ids: &[u32],
    options: &ForwardOptions,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>, Error> {
    if model.family == Family::Bert {
        return bert_forward::<B>(model, ids, options, device);
    }
    if model.family == Family::T5 {
        let Some(decoder_ids) = &options.decoder_ids else {
            return Err(Error::Input(
                "T5 is an encoder-decoder: give the decoder's input ids too (--decoder-ids, starting with the decoder start token, 0)".into(),
            ));
        };
        if options.hidden || options.token_type_ids.is_some() || options.attention_mask.is_some() {
            return Err(Error::Input(
                "T5 gives decoder logits: --hidden, token type ids and attention masks are not for it".into(),
            ));
        }
        let t5 = crate::t5::open_with::<B>(&model.path, device, options.format)?;
        return Ok(t5.forward_rows(ids, decoder_ids)?);
    }
    if options.decoder_ids.is_some() {
        return Err(Error::Input(format!(
            "decoder ids are for encoder-decoders (T5); {} is a {} model",
            model.path.display(),
            model.family.name()
        )));
    }
    if options.token_type_ids.is_some() || options.attention_mask.is_some() {
        return Err(Error::Input(
            "token type ids and attention masks are for BERT models".into(),
        ));
    }
    let lm = crate::open_with::<B>(&model.path, device, options.format)?;
    let what = if options.hidden {
        Logits::Hidden
    } else {
        Logits::All
    };
    Ok(lm.forward_rows(ids, what)?)
}

fn bert_forward<B: Backend>(
    model: &ModelRef,
    ids: &[u32],
    options: &ForwardOptions,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>, Error> {
    let (config, bert) = bert::load_with::<B>(&model.path, device, options.format)?;
    let types = options.token_type_ids.as_ref().map(|t| vec![t.clone()]);
    let batch = bert::Batch::new(
        std::slice::from_ref(&ids.to_vec()),
        types.as_deref(),
        config.pad_token_id,
        bert.vocab_size(),
        bert.type_vocab_size(),
    )
    .map_err(bert::BertError::from)?;
    let (ids_t, types, mut mask) = batch.tensors::<B>(device);
    if let Some(m) = &options.attention_mask {
        if m.len() != ids.len() || m.iter().any(|&v| v > 1) {
            return Err(Error::Input(format!(
                "the attention mask needs one 0 or 1 per id ({} ids)",
                ids.len()
            )));
        }
        let data: Vec<i64> = m.iter().map(|&v| v as i64).collect();
        mask = Tensor::from_data(TensorData::new(data, [1, m.len()]), device);
    }
    let hidden = bert
        .forward(ids_t, Some(types), Some(mask))
        .map_err(bert::BertError::from)?;
    if options.hidden {
        return Ok(rows(hidden)?);
    }
    match bert.mlm_logits(hidden) {
        Some(logits) => Ok(rows(logits)?),
        None => Err(Error::Input(format!(
            "{} has no masked-LM head: ask for the hidden states",
            model.path.display()
        ))),
    }
}

/// Negative log-likelihood of a text under a causal LM, summed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nll {
    /// Sum of the negative log-likelihoods of the scored tokens (nats).
    pub total: f64,
    /// Tokens scored.
    pub scored: usize,
    /// Windows run (causal LMs) or sequences (masked LMs).
    pub windows: usize,
}

impl Nll {
    /// `exp(mean negative log-likelihood)`.
    pub fn perplexity(&self) -> f64 {
        (self.total / self.scored.max(1) as f64).exp()
    }

    /// The mean negative log-likelihood.
    pub fn mean(&self) -> f64 {
        self.total / self.scored.max(1) as f64
    }
}

/// Next-token negative log-likelihood over `ids` by the strided-window method of the Hugging
/// Face perplexity guide: windows of `window` tokens moved by `stride`, each token scored once,
/// in the first window that contains it after the part already scored.
pub fn causal_nll<B: Backend, M: CausalLm<B>>(
    model: &M,
    ids: &[u32],
    window: usize,
    stride: usize,
) -> Result<Nll, Error> {
    if window < 2 || stride == 0 || stride > window {
        return Err(Error::Input(format!(
            "perplexity needs a window of at least 2 tokens and a stride in 1..=window (window {window}, stride {stride})"
        )));
    }
    let device = model.device();
    let n = ids.len();
    let mut nll = Nll {
        total: 0.0,
        scored: 0,
        windows: 0,
    };
    let (mut begin, mut done) = (0usize, 0usize);
    loop {
        let end = (begin + window).min(n);
        // Targets not scored yet that have at least one token of context in this window.
        let first = done.max(begin + 1);
        if first < end {
            let mut cache = model.new_cache(1, end - begin);
            let logits = model
                .forward_cached(
                    ids_tensor::<B>(&ids[begin..end], &device),
                    &mut cache,
                    Logits::All,
                )
                .map_err(|e| PipelineError::Model(e.to_string()))?;
            let vocab = logits.dims()[2];
            let m = end - first;
            // The logits at position p predict the token at p + 1.
            let rows = logits.slice([0..1, first - 1 - begin..end - 1 - begin, 0..vocab]);
            let targets: Vec<i64> = ids[first..end].iter().map(|&i| i as i64).collect();
            let targets =
                Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [1, m, 1]), &device);
            let logp = log_softmax(rows, 2).gather(2, targets);
            nll.total -= to_f64(logp)?.into_iter().sum::<f64>();
            nll.scored += m;
            nll.windows += 1;
        }
        done = end;
        if end == n {
            break;
        }
        begin += stride;
    }
    Ok(nll)
}

fn to_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f64>, Error> {
    let values: Vec<f32> = t
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| PipelineError::Readback(format!("{e:?}")))?;
    Ok(values.into_iter().map(f64::from).collect())
}

/// Masked copies of a sentence per forward pass when computing pseudo-perplexity.
const MLM_BATCH: usize = 16;

/// Pseudo-log-likelihood of a BERT masked LM on `text` (Salazar et al. 2020): every non-empty
/// line is one sequence `[CLS] line [SEP]` (longer lines cut into pieces), each token masked in
/// turn. `None` when the checkpoint has no masked-LM head.
pub fn masked_nll<B: Backend>(enc: &SentenceEncoder<B>, text: &str) -> Result<Option<Nll>, Error> {
    if enc.model.cls.is_none() {
        return Ok(None);
    }
    let tok = enc.tokenizer();
    let id = |t: &str| {
        tok.token_id(t)
            .ok_or_else(|| Error::Input(format!("the tokenizer has no {t} token")))
    };
    let (cls, sep, mask) = (id("[CLS]")?, id("[SEP]")?, id("[MASK]")?);
    let piece = enc.max_len.saturating_sub(2).max(1);
    let device = enc.model.device();
    let mut nll = Nll {
        total: 0.0,
        scored: 0,
        windows: 0,
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let ids = tok.encode(line, false).map_err(PipelineError::from)?;
        for chunk in ids.chunks(piece) {
            let mut seq = Vec::with_capacity(chunk.len() + 2);
            seq.push(cls);
            seq.extend_from_slice(chunk);
            seq.push(sep);
            nll.windows += 1;
            let positions: Vec<usize> = (1..=chunk.len()).collect();
            for group in positions.chunks(MLM_BATCH) {
                let copies: Vec<Vec<u32>> = group
                    .iter()
                    .map(|&p| {
                        let mut c = seq.clone();
                        c[p] = mask;
                        c
                    })
                    .collect();
                let batch = bert::Batch::new(
                    &copies,
                    None,
                    enc.config.pad_token_id,
                    enc.model.vocab_size(),
                    enc.model.type_vocab_size(),
                )
                .map_err(bert::BertError::from)?;
                let (ids_t, types, attn) = batch.tensors::<B>(&device);
                let hidden = enc
                    .model
                    .forward(ids_t, Some(types), Some(attn))
                    .map_err(bert::BertError::from)?;
                let [b, len, d] = hidden.dims();
                // The hidden state of each copy at its masked position, then the MLM head.
                let rows: Vec<i64> = group
                    .iter()
                    .enumerate()
                    .map(|(j, &p)| (j * len + p) as i64)
                    .collect();
                let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [b]), &device);
                let picked = hidden
                    .reshape([b * len, d])
                    .select(0, rows)
                    .reshape([b, 1, d]);
                let logits = enc
                    .model
                    .mlm_logits(picked)
                    .ok_or_else(|| Error::Input("the checkpoint has no masked-LM head".into()))?;
                let targets: Vec<i64> = group.iter().map(|&p| seq[p] as i64).collect();
                let targets =
                    Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [b, 1, 1]), &device);
                let logp = log_softmax(logits, 2).gather(2, targets);
                nll.total -= to_f64(logp)?.into_iter().sum::<f64>();
                nll.scored += b;
            }
        }
    }
    if nll.scored == 0 {
        return Err(Error::Input(
            "the text encodes to no tokens with the model's tokenizer".into(),
        ));
    }
    Ok(Some(nll))
}

/// [`forward`] on the backend `kind` chosen at run time.
pub fn forward_on(
    kind: BackendKind,
    model: &ModelRef,
    ids: &[u32],
    options: &ForwardOptions,
) -> Result<Vec<Vec<f32>>, Error> {
    with_backend!(kind, |B, device| {
        forward::<B>(model, ids, options, &device)?
    })
    .map_err(|e| Error::Input(e.to_string()))
}
