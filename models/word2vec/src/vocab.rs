//! The vocabulary, the corpus as word ids, and the Huffman tree of hierarchical softmax.

use std::collections::HashMap;

use crate::error::{Result, Word2VecError};

/// Words kept for training (count ≥ min_count), most frequent first, ties in order of first appearance.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    words: Vec<String>,
    counts: Vec<u64>,
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Counts the whitespace-separated words of `text` and keeps those seen at least `min_count` times.
    pub fn build(text: &str, min_count: u64) -> Result<Self> {
        let mut first: HashMap<&str, (u64, usize)> = HashMap::new();
        for w in text.split_whitespace() {
            let n = first.len();
            first.entry(w).or_insert((0, n)).0 += 1;
        }
        let mut kept: Vec<(&str, u64, usize)> = first
            .into_iter()
            .filter(|(_, (c, _))| *c >= min_count.max(1))
            .map(|(w, (c, o))| (w, c, o))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        if kept.is_empty() {
            return Err(Word2VecError::InvalidArgument(format!(
                "no word occurs at least {min_count} times in the corpus"
            )));
        }
        Ok(Self::from_counts(
            kept.into_iter()
                .map(|(w, c, _)| (w.to_string(), c))
                .collect(),
        ))
    }

    /// A vocabulary from (word, count) pairs, kept in the given order.
    pub fn from_counts(pairs: Vec<(String, u64)>) -> Self {
        let mut v = Self::default();
        for (w, c) in pairs {
            v.index.insert(w.clone(), v.words.len() as u32);
            v.words.push(w);
            v.counts.push(c);
        }
        v
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words, id order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// The corpus count of every word, id order.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The id of a word.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// Sum of all counts (the corpus size in vocabulary words).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A corpus as vocabulary ids: sentences are lines, split further every `max_len` words;
/// out-of-vocabulary words are dropped.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    /// All ids, sentence after sentence.
    pub ids: Vec<u32>,
    /// End offset (exclusive) of every sentence in `ids`.
    pub ends: Vec<usize>,
}

impl Corpus {
    /// Encodes `text` line by line with `vocab`.
    pub fn encode(text: &str, vocab: &Vocab, max_len: usize) -> Self {
        let max_len = max_len.max(1);
        let mut c = Corpus::default();
        for line in text.lines() {
            let mut n = 0;
            for w in line.split_whitespace() {
                if let Some(id) = vocab.id(w) {
                    c.ids.push(id);
                    n += 1;
                    if n == max_len {
                        c.ends.push(c.ids.len());
                        n = 0;
                    }
                }
            }
            if n > 0 {
                c.ends.push(c.ids.len());
            }
        }
        c
    }

    /// The sentences as slices.
    pub fn sentences(&self) -> impl Iterator<Item = &[u32]> {
        let mut start = 0;
        self.ends.iter().map(move |&e| {
            let s = &self.ids[start..e];
            start = e;
            s
        })
    }
}

/// The Huffman tree over word counts, as the C tool builds it: for word w, `codes(w)` are the
/// branch bits from the root and `points(w)` the inner nodes (rows of `syn1`) on the way.
#[derive(Debug, Clone)]
pub struct Huffman {
    offsets: Vec<usize>,
    codes: Vec<u8>,
    points: Vec<u32>,
}

impl Huffman {
    /// Builds the tree from counts sorted by descending frequency.
    pub fn new(counts: &[u64]) -> Self {
        let v = counts.len();
        let mut count: Vec<u64> = counts.to_vec();
        count.extend(std::iter::repeat_n(u64::MAX / 4, v));
        let mut parent = vec![0usize; 2 * v];
        let mut binary = vec![0u8; 2 * v];
        let (mut pos1, mut pos2) = (v as isize - 1, v);
        let mut pick = |count: &Vec<u64>| {
            if pos1 >= 0 && count[pos1 as usize] < count[pos2] {
                pos1 -= 1;
                (pos1 + 1) as usize
            } else {
                pos2 += 1;
                pos2 - 1
            }
        };
        for a in 0..v.saturating_sub(1) {
            let m1 = pick(&count);
            let m2 = pick(&count);
            count[v + a] = count[m1] + count[m2];
            parent[m1] = v + a;
            parent[m2] = v + a;
            binary[m2] = 1;
        }
        let root = (2 * v).saturating_sub(2);
        let mut offsets = vec![0];
        let (mut codes, mut points) = (Vec::new(), Vec::new());
        for a in 0..v {
            let (mut code, mut point) = (Vec::new(), Vec::new());
            let mut b = a;
            while b != root {
                code.push(binary[b]);
                point.push(b);
                b = parent[b];
            }
            // Root first: the inner node ids are parent ids minus v; the root is v − 2.
            let len = code.len();
            for d in 0..len {
                codes.push(code[len - 1 - d]);
                points.push(if d == 0 {
                    (v - 2) as u32
                } else {
                    (point[len - d] - v) as u32
                });
            }
            offsets.push(codes.len());
        }
        Self {
            offsets,
            codes,
            points,
        }
    }

    /// The branch bits of a word, root first.
    pub fn codes(&self, w: usize) -> &[u8] {
        &self.codes[self.offsets[w]..self.offsets[w + 1]]
    }

    /// The inner nodes on a word's path, root first (as many as its codes).
    pub fn points(&self, w: usize) -> &[u32] {
        &self.points[self.offsets[w]..self.offsets[w + 1]]
    }

    /// The longest code.
    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_sorts_by_count_then_first_appearance() {
        let v = Vocab::build("b a c a b d a\nc e", 2).unwrap();
        assert_eq!(v.words(), ["a", "b", "c"]);
        assert_eq!(v.counts(), [3, 2, 2]);
        let c = Corpus::encode("b a c a b d a\nc e\nzz", &v, 4);
        assert_eq!(c.ids, [1, 0, 2, 0, 1, 0, 2]);
        assert_eq!(c.ends, [4, 6, 7]);
    }

    #[test]
    fn huffman_matches_a_hand_built_tree() {
        // counts 5,3,2,1: merge (1,2)->3 [node0], (3,3)->6 [node1], (5,6)->11 [node2 = root].
        let h = Huffman::new(&[5, 3, 2, 1]);
        assert_eq!(h.codes(0), [0]);
        assert_eq!(h.points(0), [2]);
        assert_eq!(h.codes(1), [1, 1]);
        assert_eq!(h.points(1), [2, 1]);
        assert_eq!(h.codes(2), [1, 0, 1]);
        assert_eq!(h.points(2), [2, 1, 0]);
        assert_eq!(h.codes(3), [1, 0, 0]);
        assert_eq!(h.points(3), [2, 1, 0]);
        assert_eq!(h.max_len(), 3);
    }
}
