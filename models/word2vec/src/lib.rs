//! word2vec, CBOW and skip-gram (Mikolov et al., 2013).
//!
//! - [`model`]: the Burn modules [`SkipGram`] and [`Cbow`] — the model's definition, trainable on
//!   any backend with autodiff (large-batch SGD, the GPU path).
//! - [`train`]: the fast CPU trainer of the original C tool (Hogwild threads, sub-sampling,
//!   shrunk windows, unigram^0.75 negatives, hierarchical softmax), filling the same weight layout.
//! - [`io`]: word2vec text/binary files (C tool and gensim), GloVe text, the GloVe 6B package.
//! - [`vectors`]: [`KeyedVectors`] with gensim's `most_similar` (3CosAdd) and
//!   `most_similar_cosmul` (3CosMul).
//! - [`eval`]: gensim's `evaluate_word_analogies` and `evaluate_word_pairs`.

pub mod error;
pub mod eval;
pub mod io;
pub mod model;
mod parquet;
mod simd;
pub mod train;
pub mod vectors;
pub mod vocab;

pub use error::{Result, Word2VecError};
pub use eval::{
    evaluate_word_analogies, evaluate_word_pairs, AnalogyEval, EvalOptions, PairsEval, SectionScore,
};
pub use io::{
    load_vectors, read_glove_npy, read_glove_package, read_glove_text, read_word2vec,
    write_word2vec, write_word2vec_file, Word2VecFormat,
};
pub use model::{Cbow, SkipGram, Word2VecConfig};
pub use train::{train, Architecture, Loss, Progress, TrainConfig, Trained};
pub use vectors::{AnalogyMethod, KeyedVectors, Neighbor};
pub use vocab::Vocab;

static ALLOW_NON_FINITE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets vectors holding NaN or infinity load (they are an error by default: every cosine with
/// them is NaN). For the whole process; the `zoo` binary sets it from `--allow-nan`.
pub fn allow_non_finite(allow: bool) {
    ALLOW_NON_FINITE.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`allow_non_finite`] is on.
pub fn non_finite_allowed() -> bool {
    ALLOW_NON_FINITE.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads the one string column of a small parquet file (as the GloVe 6B package's word list).
pub fn read_parquet_strings(path: impl AsRef<std::path::Path>) -> Result<Vec<String>> {
    parquet::read_string_column(path)
}
