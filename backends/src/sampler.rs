//! Picking the next token from a logits row by sampling: temperature, then top-k, then top-p
//! (the order transformers applies its warpers in), then a draw from the renormalised softmax
//! with a seeded generator owned by one generation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::InputError;

/// Seeded temperature / top-k / top-p sampling.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    warpers: Warpers,
    rng: ChaCha8Rng,
}

/// What turns a logits row into the distribution a token is drawn from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Warpers {
    temperature: f64,
    top_k: usize,
    top_p: f64,
}

impl Sampler {
    /// Checks the settings; `temperature` must be positive (0 means greedy and is handled by
    /// the caller), `top_k` 0 disables top-k, `top_p` is in `[0, 1]` with 1 disabling it.
    pub(crate) fn new(
        temperature: f64,
        top_k: usize,
        top_p: f64,
        seed: u64,
    ) -> Result<Self, InputError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(InputError::Temperature(temperature));
        }
        if !(0.0..=1.0).contains(&top_p) {
            return Err(InputError::TopP(top_p));
        }
        Ok(Self {
            warpers: Warpers {
                temperature,
                top_k,
                top_p,
            },
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Draws one token id from `logits` (one vocabulary row). NaN logits are never picked; an
    /// all-NaN row yields token 0.
    #[cfg(test)]
    pub(crate) fn sample(&mut self, logits: &[f32]) -> u32 {
        let u = self.uniform();
        self.warpers.sample_at(logits, u)
    }

    /// The next uniform draw in `[0, 1)`: one per live sequence and step, whether the row is
    /// then sampled here or on a device.
    pub(crate) fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// The warpers this sampler applies.
    pub(crate) fn warpers(&self) -> Warpers {
        self.warpers
    }
}

impl Warpers {
    /// Temperature alone: the whole vocabulary stays drawable.
    pub(crate) fn softmax(temperature: f64) -> Self {
        Self {
            temperature,
            top_k: 0,
            top_p: 1.0,
        }
    }

    /// Softmax temperature.
    pub(crate) fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Whether top-k or top-p removes tokens before the draw (which needs the row sorted).
    pub(crate) fn truncates(&self) -> bool {
        self.top_k != 0 || self.top_p < 1.0
    }

    /// The token whose cumulative probability first exceeds `u` (in `[0, 1)`) of the
    /// candidates' total: inverse-CDF sampling in the candidates' order.
    pub(crate) fn sample_at(&self, logits: &[f32], u: f64) -> u32 {
        let candidates = self.candidates(logits);
        let total: f64 = candidates.iter().map(|&(_, p)| p).sum();
        if !(total.is_finite() && total > 0.0) {
            return candidates.first().map_or(0, |&(id, _)| id);
        }
        let mut u = u * total;
        for &(id, p) in &candidates {
            if u < p {
                return id;
            }
            u -= p;
        }
        // Rounding can leave `u` a hair above the last weight.
        candidates.last().map_or(0, |&(id, _)| id)
    }

    /// The tokens that may be drawn, with unnormalised probabilities.
    fn candidates(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let mut scaled: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, f64::from(l) / self.temperature))
            .collect();
        let k = if self.top_k == 0 {
            scaled.len()
        } else {
            self.top_k.min(scaled.len())
        };
        let truncate = k < scaled.len() || self.top_p < 1.0;
        if truncate {
            // Highest first; equal logits keep the lower id first, like a stable torch sort.
            let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if k < scaled.len() {
                scaled.select_nth_unstable_by(k - 1, order);
                scaled.truncate(k);
            }
            scaled.sort_unstable_by(order);
        }
        let max = scaled
            .iter()
            .map(|&(_, l)| l)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut probs: Vec<(u32, f64)> = scaled
            .into_iter()
            .map(|(id, l)| (id, (l - max).exp()))
            .collect();
        if self.top_p < 1.0 {
            // Keep the shortest prefix whose mass reaches top_p (at least one token): the
            // tokens transformers' TopPLogitsWarper keeps.
            let total: f64 = probs.iter().map(|&(_, p)| p).sum();
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, &(_, p)) in probs.iter().enumerate() {
                cumulative += p / total;
                if cumulative >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        probs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 6] = [2.0, 1.0, 0.5, 0.0, -1.0, 1.5];

    fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
        let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits
            .iter()
            .map(|&l| ((l as f64 - m) / temperature).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|x| x / s).collect()
    }

    fn counts(sampler: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[sampler.sample(logits) as usize] += 1;
        }
        c
    }

    /// Pearson's chi-square statistic over the cells with nonzero expected probability.
    fn chi_square(counts: &[usize], probs: &[f64], n: usize) -> f64 {
        counts
            .iter()
            .zip(probs)
            .filter(|(_, p)| **p > 0.0)
            .map(|(&c, &p)| {
                let e = p * n as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn frequencies_match_softmax() {
        // 6 cells → 5 degrees of freedom; the 0.999 quantile of chi²(5) is 20.52, so a correct
        // sampler fails this fixed-seed check with probability 0.001.
        let n = 60_000;
        for temperature in [1.0, 0.7] {
            let mut s = Sampler::new(temperature, 0, 1.0, 42).unwrap();
            let c = counts(&mut s, &LOGITS, n);
            let stat = chi_square(&c, &softmax(&LOGITS, temperature), n);
            assert!(
                stat < 20.52,
                "temperature {temperature}: chi² = {stat}, counts {c:?}"
            );
        }
    }

    #[test]
    fn top_k_never_leaves_the_set_and_is_renormalised() {
        let n = 30_000;
        let mut s = Sampler::new(1.0, 3, 1.0, 7).unwrap();
        let c = counts(&mut s, &LOGITS, n);
        // Top-3 are ids 0 (2.0), 5 (1.5), 1 (1.0).
        for (id, &count) in c.iter().enumerate() {
            if ![0, 1, 5].contains(&id) {
                assert_eq!(count, 0, "id {id} is outside the top-k set");
            }
        }
        let mut masked = LOGITS;
        for id in [2, 3, 4] {
            masked[id] = f32::NEG_INFINITY;
        }
        // 2 degrees of freedom: chi²(2) 0.999 quantile is 13.82.
        let stat = chi_square(&c, &softmax(&masked, 1.0), n);
        assert!(stat < 13.82, "chi² = {stat}, counts {c:?}");
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        let p = softmax(&LOGITS, 1.0);
        // Sorted: 0 (p0), 5, 1, 2, 3, 4. Choose top_p between p0+p5 and p0+p5+p1.
        let top_p = p[0] + p[5] + 0.5 * p[1];
        let n = 30_000;
        let mut s = Sampler::new(1.0, 0, top_p, 9).unwrap();
        let c = counts(&mut s, &LOGITS, n);
        for id in [2, 3, 4] {
            assert_eq!(c[id], 0, "id {id} is outside the top-p set");
        }
        let mut masked = LOGITS;
        for id in [2, 3, 4] {
            masked[id] = f32::NEG_INFINITY;
        }
        let stat = chi_square(&c, &softmax(&masked, 1.0), n);
        assert!(stat < 13.82, "chi² = {stat}, counts {c:?}");

        // top_p 0 still keeps the single most likely token.
        let mut s = Sampler::new(1.0, 0, 0.0, 9).unwrap();
        assert!((0..100).all(|_| s.sample(&LOGITS) == 0));
    }

    #[test]
    fn top_k_and_top_p_combine() {
        let mut s = Sampler::new(1.0, 4, 0.5, 3).unwrap();
        let c = counts(&mut s, &LOGITS, 5_000);
        // Within the top-4 {0,5,1,2} renormalised, id 0 alone has mass < 0.5, 0+5 reaches it.
        assert!(
            c.iter()
                .enumerate()
                .all(|(id, &n)| n == 0 || id == 0 || id == 5)
        );
    }

    #[test]
    fn same_seed_same_draws() {
        let draw = |seed| {
            let mut s = Sampler::new(0.9, 0, 0.95, seed).unwrap();
            (0..50).map(|_| s.sample(&LOGITS)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(Sampler::new(0.0, 0, 1.0, 0).is_err());
        assert!(Sampler::new(-1.0, 0, 1.0, 0).is_err());
        assert!(Sampler::new(f64::NAN, 0, 1.0, 0).is_err());
        assert!(Sampler::new(1.0, 0, 1.5, 0).is_err());
    }
}
