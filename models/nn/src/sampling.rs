//! Choosing the next token from logits: greedy, or sampling with temperature, top-k, top-p and
//! a repetition penalty, seeded and reproducible.
//!
//! The order follows Hugging Face's `generate`: repetition penalty first (it also applies to
//! greedy decoding), then temperature, top-k, top-p, and a draw from the softmax.

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Always take the most likely token (ties: the lowest id, as `torch.argmax`).
    pub greedy: bool,
    /// Divides the logits; must be > 0 when sampling.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0 or `None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (nucleus).
    pub top_p: Option<f32>,
    /// Logits of tokens already in the sequence are divided (if > 0) or multiplied (if < 0)
    /// by this; 1.0 disables it.
    pub repeat_penalty: f32,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            greedy: false,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repeat_penalty: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            greedy: true,
            ..Self::default()
        }
    }

    /// Checks the settings; the message says which one is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !self.greedy
            && (self.temperature.is_nan()
                || self.temperature <= 0.0
                || self.temperature.is_infinite())
        {
            return Err(format!(
                "temperature must be a positive number, got {}",
                self.temperature
            ));
        }
        if let Some(p) = self.top_p {
            if p.is_nan() || p <= 0.0 || p > 1.0 {
                return Err(format!("top-p must be in (0, 1], got {p}"));
            }
        }
        if self.repeat_penalty.is_nan()
            || self.repeat_penalty <= 0.0
            || self.repeat_penalty.is_infinite()
        {
            return Err(format!(
                "repetition penalty must be a positive number, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A seeded sampler: the same settings, seed and logits give the same tokens.
#[derive(Debug, Clone)]
pub struct Sampler {
    settings: Sampling,
    rng: SplitMix64,
}

impl Sampler {
    /// A sampler with these settings.
    pub fn new(settings: Sampling) -> Self {
        let rng = SplitMix64(settings.seed);
        Self { settings, rng }
    }

    /// The settings.
    pub fn settings(&self) -> &Sampling {
        &self.settings
    }

    /// Picks the next token from `logits` (one row, vocabulary-sized); `history` is every
    /// token of the sequence so far (the prompt included), for the repetition penalty.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        let s = &self.settings;
        if s.repeat_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &id in &seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / s.repeat_penalty
                    } else {
                        *l * s.repeat_penalty
                    };
                }
            }
        }
        if s.greedy {
            return argmax(&logits);
        }
        for l in logits.iter_mut() {
            *l /= s.temperature;
        }
        // Candidates sorted by logit, highest first (stable: lower id first on ties).
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if let Some(k) = s.top_k.filter(|&k| k > 0) {
            order.truncate(k.max(1));
        }
        let max = logits[order[0]];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((logits[i] - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        for p in probs.iter_mut() {
            *p /= total;
        }
        if let Some(top_p) = s.top_p {
            // Keep tokens until the cumulative probability reaches top_p (at least one).
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p;
                if cumulative >= top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
            let total: f64 = probs.iter().sum();
            for p in probs.iter_mut() {
                *p /= total;
            }
        }
        let r = self.rng.next_f64();
        let mut cumulative = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cumulative += p;
            if r < cumulative {
                return order[i] as u32;
            }
        }
        order[probs.len() - 1] as u32
    }
}

/// The index of the largest value (the first one on ties); NaN never wins.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

/// SplitMix64: a small, well-mixed generator whose output is fixed by its seed forever.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_maximum() {
        let mut s = Sampler::new(Sampling::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let settings = Sampling {
            repeat_penalty: 2.0,
            ..Sampling::greedy()
        };
        let mut s = Sampler::new(settings);
        // token 0 (logit 3) seen -> 1.5 < token 1's 2.0
        assert_eq!(s.sample(&[3.0, 2.0, -1.0], &[0]), 1);
        // negative logits get more negative
        assert_eq!(s.sample(&[-1.0, -1.5, -3.0], &[0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let settings = Sampling {
            top_k: Some(1),
            seed: 7,
            ..Sampling::default()
        };
        let mut s = Sampler::new(settings);
        for _ in 0..20 {
            assert_eq!(s.sample(&[0.0, 1.0, 5.0, 4.9], &[]), 2);
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        // probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps ids 0 and 1 only.
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let settings = Sampling {
            top_p: Some(0.8),
            seed: 3,
            ..Sampling::default()
        };
        let mut s = Sampler::new(settings);
        let mut counts = [0usize; 4];
        for _ in 0..2000 {
            counts[s.sample(&logits, &[]) as usize] += 1;
        }
        assert_eq!(counts[2] + counts[3], 0, "{counts:?}");
        // renormalised: 0.64 / 0.88 = 0.727
        let frac = counts[0] as f64 / 2000.0;
        assert!((frac - 0.727).abs() < 0.04, "{frac}");
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(Sampling {
                seed,
                temperature: 0.8,
                ..Sampling::default()
            });
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn invalid_settings_are_reported() {
        let bad = Sampling {
            temperature: 0.0,
            ..Sampling::default()
        };
        assert!(bad.validate().unwrap_err().contains("temperature"));
        let bad = Sampling {
            top_p: Some(1.5),
            ..Sampling::default()
        };
        assert!(bad.validate().unwrap_err().contains("top-p"));
    }
}
