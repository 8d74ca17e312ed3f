//! What a precision or quantization costs in model quality, defined once: KL divergence,
//! top-1 agreement, perplexity and greedy agreement against a reference, from teacher-forced
//! logits (the same ids fed to both models).
//!
//! Definitions follow the quantization literature and llama.cpp's `--kl-divergence`:
//! KL(P_ref ‖ P_run) per position, averaged over positions; perplexity is transformers'
//! `exp(loss)` with `labels = input_ids` (shifted labels, mean over predicted tokens).
//! Everything is computed in f64 from log-softmax, so no probability underflows.

/// Why quality figures could not be computed from the logits given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QualityError {
    /// Two things that must have the same length do not.
    #[error("{what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// What was compared (e.g. `positions of prompt 2`).
        what: String,
        /// The length required.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// A logit row holds NaN or an infinity, so no distribution is defined.
    #[error("non-finite logit in {which} model's row {position} of prompt {prompt}")]
    NonFinite {
        /// `run` or `reference`.
        which: &'static str,
        /// 0-based prompt index.
        prompt: usize,
        /// 0-based position in the prompt.
        position: usize,
    },
    /// A logit row is empty (a zero-sized vocabulary).
    #[error("empty logit row")]
    EmptyRow,
    /// A prompt token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The token id.
        id: u32,
        /// Vocabulary size (the logit row's length).
        vocab: usize,
    },
}

/// The log-probabilities of a logit row, `x - logsumexp(x)`, computed stably in f64.
pub fn log_softmax(logits: &[f32]) -> Result<Vec<f64>, QualityError> {
    let max = logits
        .iter()
        .map(|&x| f64::from(x))
        .fold(f64::NEG_INFINITY, f64::max);
    if logits.is_empty() {
        return Err(QualityError::EmptyRow);
    }
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    let lse = max + sum.ln();
    Ok(logits.iter().map(|&x| f64::from(x) - lse).collect())
}

/// KL(P ‖ Q) in nats from the log-probabilities of P (`reference`) and Q (`run`):
/// Σ p (log p − log q), which is what `F.kl_div(log_q, log_p, log_target=True,
/// reduction="sum")` computes.
pub fn kl_divergence_nats(reference: &[f64], run: &[f64]) -> f64 {
    reference
        .iter()
        .zip(run)
        .map(|(&p, &q)| {
            if p == f64::NEG_INFINITY {
                0.0
            } else {
                p.exp() * (p - q)
            }
        })
        .sum()
}

/// Index of the largest logit; the first of equal maxima (as `torch.argmax` returns).
pub fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// The quality of a run against its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityMetrics {
    /// The reference, named (`tiny-stories f32 cpu`).
    pub reference: String,
    /// Mean over compared positions of KL(P_ref ‖ P_run), nats.
    pub kl_mean_nats: f64,
    /// Share of compared positions whose argmax agrees.
    pub top1_agreement: f64,
    /// Perplexity of the prompt text under the run's model, token-weighted over prompts;
    /// `None` when no prompt has a second token to predict.
    pub perplexity_run: Option<f64>,
    /// The same under the reference.
    pub perplexity_ref: Option<f64>,
    /// Share of greedy tokens equal to the reference's, position by position up to the
    /// shorter continuation; `None` when the run samples or nothing was generated.
    pub greedy_agreement: Option<f64>,
    /// Prompt positions compared (KL and top-1).
    pub positions: usize,
}

/// Sums over prompts from which [`QualityMetrics`] are taken; add prompts one at a time so
/// only one prompt's logits need be held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QualityTally {
    kl_sum_nats: f64,
    top1_matches: usize,
    positions: usize,
    nll_run_sum: f64,
    nll_ref_sum: f64,
    predicted_tokens: usize,
    greedy_matches: usize,
    greedy_compared: usize,
    prompts: usize,
}

impl QualityTally {
    /// Adds one prompt: its token ids and both models' logits at each of its positions
    /// (row `i` predicts token `i + 1`).
    pub fn add_prompt(
        &mut self,
        ids: &[u32],
        reference: &[Vec<f32>],
        run: &[Vec<f32>],
    ) -> Result<(), QualityError> {
        let prompt = self.prompts;
        for (what, rows) in [("reference", reference), ("run", run)] {
            if rows.len() != ids.len() {
                return Err(QualityError::ShapeMismatch {
                    what: format!("{what} logit rows of prompt {prompt}"),
                    expected: ids.len(),
                    found: rows.len(),
                });
            }
        }
        let mut tally = QualityTally::default();
        for (position, (ref_row, run_row)) in reference.iter().zip(run).enumerate() {
            if ref_row.len() != run_row.len() {
                return Err(QualityError::ShapeMismatch {
                    what: format!("vocabulary of prompt {prompt} position {position}"),
                    expected: ref_row.len(),
                    found: run_row.len(),
                });
            }
            for (which, row) in [("reference", ref_row), ("run", run_row)] {
                if row.iter().any(|x| !x.is_finite()) {
                    return Err(QualityError::NonFinite {
                        which,
                        prompt,
                        position,
                    });
                }
            }
            let ref_logp = log_softmax(ref_row)?;
            let run_logp = log_softmax(run_row)?;
            tally.kl_sum_nats += kl_divergence_nats(&ref_logp, &run_logp);
            if argmax(ref_row) == argmax(run_row) {
                tally.top1_matches += 1;
            }
            tally.positions += 1;
            if let Some(&next) = ids.get(position + 1) {
                let vocab = ref_row.len();
                let next = usize::try_from(next)
                    .ok()
                    .filter(|&n| n < vocab)
                    .ok_or(QualityError::TokenOutOfRange { id: next, vocab })?;
                tally.nll_ref_sum -= ref_logp[next];
                tally.nll_run_sum -= run_logp[next];
                tally.predicted_tokens += 1;
            }
        }
        // Only a prompt that passed every check counts.
        self.kl_sum_nats += tally.kl_sum_nats;
        self.top1_matches += tally.top1_matches;
        self.positions += tally.positions;
        self.nll_ref_sum += tally.nll_ref_sum;
        self.nll_run_sum += tally.nll_run_sum;
        self.predicted_tokens += tally.predicted_tokens;
        self.prompts += 1;
        Ok(())
    }

    /// Adds one prompt's greedy continuations, compared position by position up to the
    /// shorter (one model may stop at EOS earlier).
    pub fn add_greedy(&mut self, reference: &[u32], run: &[u32]) {
        self.greedy_compared += reference.len().min(run.len());
        self.greedy_matches += reference.iter().zip(run).filter(|(a, b)| a == b).count();
    }

    /// The metrics, or `None` when no position was compared. `greedy` says whether greedy
    /// continuations were added (false for a sampling run).
    pub fn finish(&self, reference: &str, greedy: bool) -> Option<QualityMetrics> {
        if self.positions == 0 {
            return None;
        }
        let positions = self.positions as f64;
        let perplexity = |nll_sum: f64| {
            (self.predicted_tokens > 0).then(|| (nll_sum / self.predicted_tokens as f64).exp())
        };
        Some(QualityMetrics {
            reference: reference.to_string(),
            kl_mean_nats: self.kl_sum_nats / positions,
            top1_agreement: self.top1_matches as f64 / positions,
            perplexity_run: perplexity(self.nll_run_sum),
            perplexity_ref: perplexity(self.nll_ref_sum),
            greedy_agreement: (greedy && self.greedy_compared > 0)
                .then(|| self.greedy_matches as f64 / self.greedy_compared as f64),
            positions: self.positions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn log_softmax_of_equal_logits_is_uniform_and_stable_at_large_values() {
        let lp = log_softmax(&[1000.0, 1000.0]).unwrap();
        assert!(
            close(lp[0], -(2f64.ln())) && close(lp[1], -(2f64.ln())),
            "{lp:?}"
        );
        // ln(e^0 / (e^0 + e^ln3)) = -ln 4 for logits [0, ln 3].
        // (ln 3 rounded to f32 moves the answer in the 8th digit.)
        let lp = log_softmax(&[0.0, 3f32.ln()]).unwrap();
        assert!((lp[0] + 4f64.ln()).abs() < 1e-7, "{lp:?}");
        assert_eq!(log_softmax(&[]), Err(QualityError::EmptyRow));
    }

    #[test]
    fn kl_is_taken_reference_to_run_in_nats() {
        // P_ref = (1/2, 1/2) from logits (0, 0); P_run = (1/4, 3/4) from logits (0, ln 3).
        // KL(P_ref ‖ P_run) = 1/2 ln(2) + 1/2 ln(2/3) = ln 2 - 1/2 ln 3 (by hand);
        // the other direction, 1/4 ln(1/2) + 3/4 ln(3/2), differs, so the test pins it.
        let p = log_softmax(&[0.0, 0.0]).unwrap();
        let q = log_softmax(&[0.0, 3f32.ln()]).unwrap();
        let expected = 2f64.ln() - 0.5 * 3f64.ln();
        // ln 3 rounded to f32 moves the answer in the 8th digit.
        assert!((kl_divergence_nats(&p, &q) - expected).abs() < 1e-7);
        let reverse = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((kl_divergence_nats(&q, &p) - reverse).abs() < 1e-7);
        assert_eq!(kl_divergence_nats(&p, &p), 0.0);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn metrics_of_scripted_logits_match_hand_computation() {
        // One prompt of ids [0, 1] over a vocabulary of 2.
        // Position 0: ref (0, 0) → (1/2, 1/2); run (0, ln 3) → (1/4, 3/4). Predicts id 1.
        // Position 1: ref (ln 3, 0) → (3/4, 1/4); run (ln 3, 0), the same. Predicts nothing.
        let ln3 = 3f32.ln();
        let reference = vec![vec![0.0, 0.0], vec![ln3, 0.0]];
        let run = vec![vec![0.0, ln3], vec![ln3, 0.0]];
        let mut tally = QualityTally::default();
        tally.add_prompt(&[0, 1], &reference, &run).unwrap();
        tally.add_greedy(&[5, 6, 7], &[5, 9]);
        let m = tally.finish("ref", true).unwrap();
        assert_eq!(m.positions, 2);
        // KL: (ln 2 - 1/2 ln 3 + 0) / 2.
        assert!((m.kl_mean_nats - (2f64.ln() - 0.5 * 3f64.ln()) / 2.0).abs() < 1e-7);
        // Argmax: position 0 ref 0 (first of equals), run 1; position 1 both 0.
        assert_eq!(m.top1_agreement, 0.5);
        // Perplexity: one predicted token (id 1): ref p = 1/2 → 2; run p = 3/4 → 4/3.
        assert!((m.perplexity_ref.unwrap() - 2.0).abs() < 1e-7);
        assert!((m.perplexity_run.unwrap() - 4.0 / 3.0).abs() < 1e-7);
        // Greedy: 2 compared (the shorter), 1 equal.
        assert_eq!(m.greedy_agreement, Some(0.5));
        assert_eq!(tally.finish("ref", false).unwrap().greedy_agreement, None);
    }

    #[test]
    fn perplexity_is_pooled_over_predicted_tokens_not_averaged_per_prompt() {
        // Prompt A: ids [0, 0, 0], uniform over 2 → two tokens of NLL ln 2.
        // Prompt B: ids [0, 1], run gives id 1 probability 3/4 → one token of NLL ln 4/3.
        // Pooled: exp((2 ln 2 + ln 4/3) / 3) = (16/3)^(1/3); a per-prompt mean would differ.
        let ln3 = 3f32.ln();
        let uniform = vec![vec![0.0, 0.0]; 3];
        let mut tally = QualityTally::default();
        tally.add_prompt(&[0, 0, 0], &uniform, &uniform).unwrap();
        tally
            .add_prompt(
                &[0, 1],
                &[vec![0.0, ln3], vec![0.0, 0.0]],
                &[vec![0.0, ln3], vec![0.0, 0.0]],
            )
            .unwrap();
        let m = tally.finish("self", true).unwrap();
        assert!((m.perplexity_run.unwrap() - (16f64 / 3.0).cbrt()).abs() < 1e-7);
        assert_eq!(m.kl_mean_nats, 0.0);
        assert_eq!(m.top1_agreement, 1.0);
        assert_eq!(m.positions, 5);
        // No greedy continuation added: agreement unknown, not 1.
        assert_eq!(m.greedy_agreement, None);
    }

    #[test]
    fn bad_shapes_and_values_are_errors_and_leave_the_tally_untouched() {
        let mut tally = QualityTally::default();
        let err = tally.add_prompt(&[0, 1], &[vec![0.0, 0.0]], &[vec![0.0, 0.0]]);
        assert!(matches!(
            err,
            Err(QualityError::ShapeMismatch {
                expected: 2,
                found: 1,
                ..
            })
        ));
        let err = tally.add_prompt(&[0], &[vec![0.0, 0.0]], &[vec![0.0]]);
        assert!(matches!(err, Err(QualityError::ShapeMismatch { .. })));
        let err = tally.add_prompt(&[0], &[vec![0.0, 0.0]], &[vec![f32::NAN, 0.0]]);
        assert!(matches!(
            err,
            Err(QualityError::NonFinite { which: "run", .. })
        ));
        let err = tally.add_prompt(&[0, 7], &vec![vec![0.0; 2]; 2], &vec![vec![0.0; 2]; 2]);
        assert_eq!(err, Err(QualityError::TokenOutOfRange { id: 7, vocab: 2 }));
        assert_eq!(tally, QualityTally::default());
        assert_eq!(tally.finish("r", true), None);
    }
}
