//! Evaluation as gensim does it: `evaluate_word_analogies` (Google's questions-words.txt) and
//! `evaluate_word_pairs` (WordSim-353, SimLex-999).

use std::collections::HashMap;
use std::path::Path;

use crate::error::{format_err, io_err, Result, Word2VecError};
use crate::simd::{self, Kernel, Portable};
use crate::vectors::KeyedVectors;

/// Settings shared by both evaluations (gensim's defaults).
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Only the first this many words take part (questions with other words count as OOV).
    pub restrict_vocab: usize,
    /// Compare words upper-cased, first occurrence winning (gensim's default: true).
    pub case_insensitive: bool,
    /// Count questions / pairs with unknown words as wrong / zero similarity instead of skipping them.
    pub dummy4unknown: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            restrict_vocab: 300_000,
            case_insensitive: true,
            dummy4unknown: false,
        }
    }
}

/// Right and wrong answers of one analogy section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionScore {
    /// Section name (`capital-common-countries`, … or `Total accuracy`).
    pub section: String,
    /// Questions answered right.
    pub correct: usize,
    /// Questions answered wrong.
    pub incorrect: usize,
}

impl SectionScore {
    /// correct / (correct + incorrect), 0 for an empty section.
    pub fn accuracy(&self) -> f64 {
        let n = self.correct + self.incorrect;
        if n == 0 {
            0.0
        } else {
            self.correct as f64 / n as f64
        }
    }
}

/// The result of an analogy evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalogyEval {
    /// Per-section scores in file order.
    pub sections: Vec<SectionScore>,
    /// All sections together (gensim's `Total accuracy`).
    pub total: SectionScore,
    /// Questions with a word outside the restricted vocabulary.
    pub oov: usize,
    /// Well-formed questions read.
    pub questions: usize,
}

impl AnalogyEval {
    /// Percentage of questions with out-of-vocabulary words.
    pub fn oov_ratio(&self) -> f64 {
        if self.questions == 0 {
            0.0
        } else {
            100.0 * self.oov as f64 / self.questions as f64
        }
    }
}

/// The result of a word-pair similarity evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairsEval {
    /// Pearson correlation of model cosines with the human scores.
    pub pearson: f64,
    /// Spearman rank correlation.
    pub spearman: f64,
    /// Percentage of pairs with an unknown word.
    pub oov_ratio: f64,
    /// Pairs compared.
    pub pairs: usize,
}

fn ok_vocab(kv: &KeyedVectors, opts: &EvalOptions) -> HashMap<String, usize> {
    let n = opts.restrict_vocab.min(kv.len());
    let mut map = HashMap::with_capacity(n);
    for i in (0..n).rev() {
        let w = &kv.words()[i];
        let key = if opts.case_insensitive {
            w.to_uppercase()
        } else {
            w.clone()
        };
        map.insert(key, i);
    }
    map
}

fn read_text(path: &Path) -> Result<String> {
    let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
    String::from_utf8(data).map_err(|e| {
        format_err(
            path,
            format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// gensim `evaluate_word_analogies` on a questions file (3CosAdd, top 5, query words ignored).
pub fn evaluate_word_analogies(
    kv: &KeyedVectors,
    path: impl AsRef<Path>,
    opts: &EvalOptions,
) -> Result<AnalogyEval> {
    let path = path.as_ref();
    let text = read_text(path)?;
    evaluate_word_analogies_text(kv, &text, opts).map_err(|e| match e {
        Word2VecError::InvalidArgument(m) => format_err(path, m),
        e => e,
    })
}

struct Question {
    section: usize,
    ids: [usize; 3],
    words: [String; 3],
    expected: String,
}

/// As [`evaluate_word_analogies`], on the file's text.
pub fn evaluate_word_analogies_text(
    kv: &KeyedVectors,
    text: &str,
    opts: &EvalOptions,
) -> Result<AnalogyEval> {
    let vocab = ok_vocab(kv, opts);
    let mut sections: Vec<SectionScore> = Vec::new();
    let mut questions: Vec<Question> = Vec::new();
    let (mut oov, mut total_q) = (0usize, 0usize);
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        if line.starts_with(": ") {
            let name = line.trim_start_matches([':', ' ']).trim();
            sections.push(SectionScore {
                section: name.to_string(),
                correct: 0,
                incorrect: 0,
            });
            continue;
        }
        let Some(section) = sections.len().checked_sub(1) else {
            return Err(Word2VecError::InvalidArgument(format!(
                "missing section header before line {}",
                line_no + 1
            )));
        };
        let toks: Vec<String> = line
            .split_whitespace()
            .map(|w| {
                if opts.case_insensitive {
                    w.to_uppercase()
                } else {
                    w.to_string()
                }
            })
            .collect();
        let Ok([a, b, c, expected]) = <[String; 4]>::try_from(toks) else {
            continue; // malformed line: gensim skips it
        };
        total_q += 1;
        let ids = [&a, &b, &c, &expected].map(|w| vocab.get(w.as_str()).copied());
        let [Some(ia), Some(ib), Some(ic), Some(_)] = ids else {
            oov += 1;
            if opts.dummy4unknown {
                sections[section].incorrect += 1;
            }
            continue;
        };
        questions.push(Question {
            section,
            ids: [ia, ib, ic],
            words: [a, b, c],
            expected,
        });
    }

    let limit = opts.restrict_vocab.min(kv.len());
    let answers = nearest_for_queries(kv, limit, &questions);
    for (q, cands) in questions.iter().zip(answers) {
        let mut predicted: Option<String> = None;
        for (i, _) in cands {
            let w = &kv.words()[i];
            let p = if opts.case_insensitive {
                w.to_uppercase()
            } else {
                w.clone()
            };
            let ok = vocab.contains_key(&p) && !q.words.contains(&p);
            predicted = Some(p);
            if ok {
                break;
            }
        }
        if predicted.as_deref() == Some(q.expected.as_str()) {
            sections[q.section].correct += 1;
        } else {
            sections[q.section].incorrect += 1;
        }
    }
    let total = SectionScore {
        section: "Total accuracy".into(),
        correct: sections.iter().map(|s| s.correct).sum(),
        incorrect: sections.iter().map(|s| s.incorrect).sum(),
    };
    Ok(AnalogyEval {
        sections,
        total,
        oov,
        questions: total_q,
    })
}

const TOP: usize = 5;
const BLOCK: usize = 32;

/// For every question, the 5 best rows among the first `limit` by cosine to unit(b + c − a),
/// the question's own rows excluded; blocks of questions share one pass over the matrix.
fn nearest_for_queries(kv: &KeyedVectors, limit: usize, qs: &[Question]) -> Vec<Vec<(usize, f32)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(1);
    let blocks: Vec<&[Question]> = qs.chunks(BLOCK).collect();
    let mut results: Vec<Vec<Vec<(usize, f32)>>> = vec![Vec::new(); blocks.len()];
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Slot<'a> = std::sync::Mutex<&'a mut Vec<Vec<(usize, f32)>>>;
    let slots: Vec<Slot> = results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(blocks.len()) {
            s.spawn(|| loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(block) = blocks.get(b) else { break };
                let queries: Vec<Vec<f32>> = block
                    .iter()
                    .map(|q| kv.mean_unit(&[q.ids[1], q.ids[2]], &[q.ids[0]]))
                    .collect();
                let excl: Vec<[usize; 3]> = block.iter().map(|q| q.ids).collect();
                let r = scan(kv.normed_matrix(), kv.dim(), limit, &queries, &excl);
                if let Ok(mut slot) = slots[b].lock() {
                    **slot = r;
                }
            });
        }
    });
    results.into_iter().flatten().collect()
}

fn scan(
    m: &[f32],
    dim: usize,
    limit: usize,
    qs: &[Vec<f32>],
    excl: &[[usize; 3]],
) -> Vec<Vec<(usize, f32)>> {
    #[cfg(target_arch = "x86_64")]
    if simd::has_avx2() {
        // SAFETY: the CPU features were just detected.
        return unsafe { scan_avx2(m, dim, limit, qs, excl) };
    }
    scan_generic::<Portable>(m, dim, limit, qs, excl)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2(
    m: &[f32],
    dim: usize,
    limit: usize,
    qs: &[Vec<f32>],
    excl: &[[usize; 3]],
) -> Vec<Vec<(usize, f32)>> {
    scan_generic::<simd::Avx2>(m, dim, limit, qs, excl)
}

#[inline(always)]
fn scan_generic<K: Kernel>(
    m: &[f32],
    dim: usize,
    limit: usize,
    qs: &[Vec<f32>],
    excl: &[[usize; 3]],
) -> Vec<Vec<(usize, f32)>> {
    let mut best: Vec<Vec<(usize, f32)>> = vec![Vec::with_capacity(TOP + 1); qs.len()];
    let mut floor = vec![f32::NEG_INFINITY; qs.len()];
    for (r, row) in m[..limit * dim].chunks_exact(dim).enumerate() {
        for (qi, q) in qs.iter().enumerate() {
            let s = K::dot(row, q);
            // NaN never enters; ties keep the lower index (already inserted).
            if s > floor[qi] || (best[qi].len() < TOP && !s.is_nan()) {
                if excl[qi].contains(&r) {
                    continue;
                }
                let b = &mut best[qi];
                let pos = b.partition_point(|&(_, t)| t >= s);
                b.insert(pos, (r, s));
                if b.len() > TOP {
                    b.pop();
                }
                if b.len() == TOP {
                    floor[qi] = b[TOP - 1].1;
                }
            }
        }
    }
    best
}

/// gensim `evaluate_word_pairs` on a tab-separated `word1<TAB>word2<TAB>score` file (`#` comments).
pub fn evaluate_word_pairs(
    kv: &KeyedVectors,
    path: impl AsRef<Path>,
    opts: &EvalOptions,
) -> Result<PairsEval> {
    let path = path.as_ref();
    let text = read_text(path)?;
    evaluate_word_pairs_text(kv, &text, '\t', opts).map_err(|e| match e {
        Word2VecError::InvalidArgument(m) => format_err(path, m),
        e => e,
    })
}

/// As [`evaluate_word_pairs`], on the file's text with a chosen delimiter.
pub fn evaluate_word_pairs_text(
    kv: &KeyedVectors,
    text: &str,
    delimiter: char,
    opts: &EvalOptions,
) -> Result<PairsEval> {
    let vocab = ok_vocab(kv, opts);
    let (mut gold, mut model) = (Vec::new(), Vec::new());
    let mut oov = 0usize;
    for line in text.split_inclusive('\n') {
        let line = match line.strip_suffix("\r\n") {
            Some(l) => format!("{l}\n"),
            None => line.to_string(),
        };
        if line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split(delimiter).collect();
        let [a, b, sim] = parts[..] else { continue };
        let Ok(sim) = sim.trim().parse::<f64>() else {
            continue;
        };
        let (a, b) = if opts.case_insensitive {
            (a.to_uppercase(), b.to_uppercase())
        } else {
            (a.to_string(), b.to_string())
        };
        match (vocab.get(&a), vocab.get(&b)) {
            (Some(&ia), Some(&ib)) => {
                gold.push(sim);
                model.push(kv.cosine_rows(ia, ib) as f64);
            }
            _ => {
                oov += 1;
                if opts.dummy4unknown {
                    gold.push(sim);
                    model.push(0.0);
                }
            }
        }
    }
    if gold.is_empty() {
        return Err(Word2VecError::InvalidArgument(
            "no valid word pairs in the vocabulary".into(),
        ));
    }
    let oov_ratio = if opts.dummy4unknown {
        100.0 * oov as f64 / gold.len() as f64
    } else {
        100.0 * oov as f64 / (gold.len() + oov) as f64
    };
    Ok(PairsEval {
        pearson: pearson(&gold, &model),
        spearman: pearson(&ranks(&gold), &ranks(&model)),
        oov_ratio,
        pairs: gold.len(),
    })
}

/// Pearson correlation (NaN when a side is constant).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// Ranks from 1, ties sharing their average rank (scipy `rankdata`).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties_like_scipy() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        let r = pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.1, 6.0, 8.2]);
        assert!((r - 0.999_643_260_586_781_2).abs() < 1e-12, "{r}");
    }
}
