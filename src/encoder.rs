//! BERT / sentence-transformers tasks on the backend chosen at run time: sentence embeddings
//! and masked-token prediction (the generic pipeline is `zoo_bert::SentenceEncoder`).

use std::path::Path;
use std::time::Instant;

use zoo_backends::{with_backend, BackendKind};

use crate::bert::{Candidate, Embedded, SentenceEncoder};
use crate::nn::WeightFormat;
use crate::Error;

/// Embeddings of `texts` with the encoder at `path` (with the PEFT LoRA adapter folder
/// `adapter` applied when given), `batch` texts per forward pass (`truncate`: cut texts longer
/// than the model's maximum instead of failing), and the seconds the embedding took.
pub fn embed_on(
    kind: BackendKind,
    path: &Path,
    texts: &[&str],
    batch: usize,
    truncate: bool,
    format: WeightFormat,
    adapter: Option<&Path>,
) -> Result<(Embedded, f64), Error> {
    if batch == 0 {
        return Err(Error::Input("the batch size must be at least 1".into()));
    }
    with_backend!(kind, |B, device| {
        let mut encoder = SentenceEncoder::<B>::load_with(path, &device, format)?;
        if let Some(dir) = adapter {
            apply(&mut encoder, dir)?;
        }
        let start = Instant::now();
        let out = encoder.embed_detailed(texts, batch, truncate)?;
        (out, start.elapsed().as_secs_f64())
    })
    .map_err(|e| Error::Input(e.to_string()))
}

/// A LoRA adapter folder applied to an encoder, its failure as this module's error.
fn apply<B: burn::tensor::backend::Backend>(
    encoder: &mut SentenceEncoder<B>,
    dir: &Path,
) -> Result<(), Error> {
    crate::finetune::apply_bert_adapter(&mut encoder.model, dir)
        .map_err(|e| Error::Input(e.to_string()))
}

/// The `top` most likely tokens for each `[MASK]` of `text` (with the PEFT LoRA adapter folder
/// `adapter` applied when given).
pub fn fill_mask_on(
    kind: BackendKind,
    path: &Path,
    text: &str,
    top: usize,
    adapter: Option<&Path>,
) -> Result<Vec<Vec<Candidate>>, Error> {
    if top == 0 {
        return Err(Error::Input("ask for at least 1 candidate".into()));
    }
    with_backend!(kind, |B, device| {
        let mut encoder = SentenceEncoder::<B>::load(path, &device)?;
        if let Some(dir) = adapter {
            apply(&mut encoder, dir)?;
        }
        encoder.fill_masks(text, top)?
    })
    .map_err(|e| Error::Input(e.to_string()))
}
