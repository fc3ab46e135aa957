//! Word vectors and the queries on them: nearest neighbours and analogies, as gensim's
//! `KeyedVectors` answers them.

use std::collections::HashMap;

use crate::error::{Result, Word2VecError};
use crate::simd;

/// A word and its score (a cosine for 3CosAdd, the Levy–Goldberg product for 3CosMul).
pub type Neighbor = (String, f32);

/// How an analogy query combines its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalogyMethod {
    /// 3CosAdd: cosine to the normalised mean of ±unit vectors (gensim `most_similar`).
    CosAdd,
    /// 3CosMul: Π(1+cos)/2 of positives over Π(1+cos)/2 of negatives + 1e-6 (gensim `most_similar_cosmul`).
    CosMul,
}

/// A vocabulary with one vector per word, in file order (usually most frequent first).
#[derive(Debug, Clone)]
pub struct KeyedVectors {
    words: Vec<String>,
    index: HashMap<String, usize>,
    dim: usize,
    vectors: Vec<f32>,
    norms: Vec<f32>,
    normed: Vec<f32>,
}

impl KeyedVectors {
    /// Builds vectors from words and a row-major `[words.len(), dim]` matrix; a repeated word keeps
    /// its first row (as gensim does).
    pub fn new(words: Vec<String>, dim: usize, vectors: Vec<f32>) -> Result<Self> {
        if dim == 0 {
            return Err(Word2VecError::InvalidArgument(
                "vector dimension must be positive".into(),
            ));
        }
        if vectors.len() != words.len() * dim {
            return Err(Word2VecError::Shape(format!(
                "{} words × {dim} dimensions need {} floats, got {}",
                words.len(),
                words.len() * dim,
                vectors.len()
            )));
        }
        if !crate::non_finite_allowed() {
            if let Some(i) = vectors.iter().position(|x| !x.is_finite()) {
                return Err(Word2VecError::NonFinite {
                    word: words[i / dim].clone(),
                    entry: i / dim,
                    value: vectors[i],
                });
            }
        }
        let mut index = HashMap::with_capacity(words.len());
        let mut kept_words = Vec::with_capacity(words.len());
        let mut kept = Vec::with_capacity(vectors.len());
        let mut duplicates = false;
        for (w, row) in words.into_iter().zip(vectors.chunks_exact(dim)) {
            if index.contains_key(&w) {
                duplicates = true;
                continue;
            }
            index.insert(w.clone(), kept_words.len());
            kept_words.push(w);
            kept.extend_from_slice(row);
        }
        let vectors = if duplicates { kept } else { vectors };
        let mut norms = Vec::with_capacity(kept_words.len());
        let mut normed = vectors.clone();
        for row in normed.chunks_exact_mut(dim) {
            let n = simd::dot(row, row).sqrt();
            norms.push(n);
            if n > 0.0 {
                row.iter_mut().for_each(|x| *x /= n);
            }
        }
        Ok(Self {
            words: kept_words,
            index,
            dim,
            vectors,
            norms,
            normed,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The words in row order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The row of a word.
    pub fn index_of(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// The raw vector of a word.
    pub fn vector(&self, word: &str) -> Option<&[f32]> {
        self.index_of(word).map(|i| self.row(i))
    }

    /// The raw vector of row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// The unit-length vector of row `i` (all zeros for a zero vector).
    pub fn unit_row(&self, i: usize) -> &[f32] {
        &self.normed[i * self.dim..(i + 1) * self.dim]
    }

    /// The raw row-major `[len, dim]` matrix.
    pub fn matrix(&self) -> &[f32] {
        &self.vectors
    }

    /// The L2 norm of every row.
    pub fn norms(&self) -> &[f32] {
        &self.norms
    }

    pub(crate) fn normed_matrix(&self) -> &[f32] {
        &self.normed
    }

    fn lookup(&self, words: &[&str]) -> Result<Vec<usize>> {
        let mut unknown = Vec::new();
        let mut ids = Vec::with_capacity(words.len());
        for w in words {
            match self.index_of(w) {
                Some(i) => ids.push(i),
                None => unknown.push((*w).to_string()),
            }
        }
        if unknown.is_empty() {
            Ok(ids)
        } else {
            Err(Word2VecError::UnknownWords(unknown))
        }
    }

    /// Cosine similarity of two words (gensim `similarity`).
    pub fn similarity(&self, a: &str, b: &str) -> Result<f32> {
        let ids = self.lookup(&[a, b])?;
        Ok(self.cosine_rows(ids[0], ids[1]))
    }

    pub(crate) fn cosine_rows(&self, a: usize, b: usize) -> f32 {
        simd::dot(self.unit_row(a), self.unit_row(b))
    }

    /// The `top` nearest words to `word` by cosine, the word itself excluded.
    pub fn similar(&self, word: &str, top: usize) -> Result<Vec<Neighbor>> {
        self.most_similar(&[word], &[], top, None)
    }

    /// 3CosAdd or 3CosMul analogy: the `top` words closest to positive − negative, query words excluded.
    pub fn analogy(
        &self,
        positive: &[&str],
        negative: &[&str],
        top: usize,
        method: AnalogyMethod,
    ) -> Result<Vec<Neighbor>> {
        match method {
            AnalogyMethod::CosAdd => self.most_similar(positive, negative, top, None),
            AnalogyMethod::CosMul => self.most_similar_cosmul(positive, negative, top),
        }
    }

    /// gensim `most_similar`: cosine to the unit mean of the positive and negated negative unit
    /// vectors over the first `restrict_vocab` rows (all when `None`), query words excluded.
    pub fn most_similar(
        &self,
        positive: &[&str],
        negative: &[&str],
        top: usize,
        restrict_vocab: Option<usize>,
    ) -> Result<Vec<Neighbor>> {
        if positive.is_empty() && negative.is_empty() {
            return Err(Word2VecError::InvalidArgument(
                "a query needs at least one word".into(),
            ));
        }
        let mut all: Vec<&str> = positive.to_vec();
        all.extend_from_slice(negative);
        let ids = self.lookup(&all)?;
        let (pos, neg) = ids.split_at(positive.len());
        let limit = restrict_vocab.unwrap_or(self.len()).min(self.len());
        let query = self.mean_unit(pos, neg);
        let mut scores = vec![0.0f32; limit];
        simd::matvec(
            &self.normed[..limit * self.dim],
            self.dim,
            &query,
            &mut scores,
        );
        Ok(top_k(&scores, top, &ids)
            .into_iter()
            .map(|(i, s)| (self.words[i].clone(), s))
            .collect())
    }

    /// gensim `most_similar_cosmul` (Levy & Goldberg's 3CosMul, cosines shifted to [0, 1]).
    pub fn most_similar_cosmul(
        &self,
        positive: &[&str],
        negative: &[&str],
        top: usize,
    ) -> Result<Vec<Neighbor>> {
        if positive.is_empty() {
            return Err(Word2VecError::InvalidArgument(
                "3CosMul needs at least one positive word".into(),
            ));
        }
        let mut all: Vec<&str> = positive.to_vec();
        all.extend_from_slice(negative);
        let ids = self.lookup(&all)?;
        let (pos, neg) = ids.split_at(positive.len());
        let n = self.len();
        let mut num = vec![1.0f32; n];
        let mut den = vec![1.0f32; n];
        let mut cos = vec![0.0f32; n];
        for (group, acc) in [(pos, &mut num), (neg, &mut den)] {
            for &i in group {
                simd::matvec(&self.normed, self.dim, self.unit_row(i), &mut cos);
                for (a, c) in acc.iter_mut().zip(&cos) {
                    *a *= (1.0 + c) / 2.0;
                }
            }
        }
        let scores: Vec<f32> = if neg.is_empty() {
            num.iter().map(|p| p / (1.0 + 1e-6)).collect()
        } else {
            num.iter().zip(&den).map(|(p, q)| p / (q + 1e-6)).collect()
        };
        Ok(top_k(&scores, top, &ids)
            .into_iter()
            .map(|(i, s)| (self.words[i].clone(), s))
            .collect())
    }

    /// The unit vector of the mean of +unit(pos) and −unit(neg) (zero if they cancel).
    pub(crate) fn mean_unit(&self, pos: &[usize], neg: &[usize]) -> Vec<f32> {
        let mut mean = vec![0.0f32; self.dim];
        for &i in pos {
            mean.iter_mut()
                .zip(self.unit_row(i))
                .for_each(|(m, x)| *m += x);
        }
        for &i in neg {
            mean.iter_mut()
                .zip(self.unit_row(i))
                .for_each(|(m, x)| *m -= x);
        }
        let n = simd::dot(&mean, &mean).sqrt();
        if n > 0.0 {
            mean.iter_mut().for_each(|m| *m /= n);
        }
        mean
    }
}

/// The `k` best (index, score) pairs by descending score, skipping `exclude`; ties go to the
/// lower index and NaN ranks last.
pub(crate) fn top_k(scores: &[f32], k: usize, exclude: &[usize]) -> Vec<(usize, f32)> {
    // Never more than the scores there are, whatever `k` asks.
    let k = k.min(scores.len());
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    let better = |a: f32, b: f32| a > b || (b.is_nan() && !a.is_nan());
    for (i, &s) in scores.iter().enumerate() {
        if best.len() == k {
            let worst = best[k - 1].1;
            if !better(s, worst) {
                continue;
            }
        }
        if exclude.contains(&i) {
            continue;
        }
        let pos = best.partition_point(|&(_, t)| !better(s, t));
        best.insert(pos, (i, s));
        if best.len() > k {
            best.pop();
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> KeyedVectors {
        let words = ["a", "b", "c", "d", "a"].map(String::from).to_vec();
        let v = vec![
            1.0, 0.0, 0.0, 1.0, 0.9, 0.1, -1.0, 0.0, 5.0, 5.0, //
        ];
        KeyedVectors::new(words, 2, v).unwrap()
    }

    #[test]
    fn duplicate_words_keep_the_first_row() {
        let kv = toy();
        assert_eq!(kv.len(), 4);
        assert_eq!(kv.vector("a"), Some(&[1.0f32, 0.0][..]));
    }

    #[test]
    fn similar_excludes_the_query_and_orders_by_cosine() {
        let kv = toy();
        let r = kv.similar("a", 3).unwrap();
        let names: Vec<&str> = r.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(names, ["c", "b", "d"]);
        let c = 0.9f32 / (0.81f32 + 0.01).sqrt();
        assert!((r[0].1 - c).abs() < 1e-6);
        assert!((r[2].1 + 1.0).abs() < 1e-6);
    }

    #[test]
    fn unknown_words_are_named() {
        let kv = toy();
        let e = kv
            .analogy(&["a", "zz"], &["yy"], 3, AnalogyMethod::CosAdd)
            .unwrap_err();
        assert_eq!(e.to_string(), "word(s) not in vocabulary: zz, yy");
        let e = kv
            .analogy(&["qq"], &[], 3, AnalogyMethod::CosMul)
            .unwrap_err();
        assert_eq!(e.to_string(), "word(s) not in vocabulary: qq");
    }

    #[test]
    fn top_k_breaks_ties_by_index_and_skips_excluded() {
        let s = [0.5, 0.9, 0.9, f32::NAN, 0.1, 0.95];
        assert_eq!(top_k(&s, 3, &[5]), vec![(1, 0.9), (2, 0.9), (0, 0.5)]);
        assert_eq!(top_k(&s, 0, &[]), vec![]);
        // An absurd `k` is capped by the number of scores (no allocation sized by `k`).
        assert_eq!(top_k(&s, usize::MAX, &[]).len(), s.len());
    }
}
