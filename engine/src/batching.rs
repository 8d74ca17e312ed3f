//! Grouping a run's prompts into batches: a fixed size, optionally capped by a token budget.
//!
//! The budget counts padded tokens, because that is what a batch costs: every sequence is padded
//! to the longest prompt and each generates up to `max_new_tokens`.

use std::ops::Range;

/// Consecutive prompt ranges, each at most `size` prompts and, with a budget, at most
/// `token_budget` padded tokens (a single prompt over budget still gets a batch of its own).
pub fn form_batches(
    lengths: &[usize],
    size: usize,
    token_budget: Option<usize>,
    max_new_tokens: usize,
) -> Vec<Range<usize>> {
    let size = size.max(1);
    let mut batches = Vec::new();
    let mut start = 0;
    while start < lengths.len() {
        let mut end = start + 1;
        let mut longest = lengths[start];
        while end < lengths.len() && end - start < size {
            let candidate = longest.max(lengths[end]);
            let cost = (end - start + 1) * (candidate + max_new_tokens);
            if token_budget.is_some_and(|budget| cost > budget) {
                break;
            }
            longest = candidate;
            end += 1;
        }
        batches.push(start..end);
        start = end;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_size_leaves_a_smaller_last_batch() {
        assert_eq!(form_batches(&[3; 5], 2, None, 8), vec![0..2, 2..4, 4..5]);
    }

    #[test]
    fn budget_counts_padding_and_new_tokens() {
        // Costs: [4]+8=12 per sequence; two fit in 24, a 10-token prompt pads both to 18.
        assert_eq!(
            form_batches(&[4, 4, 10, 4], 8, Some(24), 8),
            vec![0..2, 2..3, 3..4]
        );
        assert_eq!(
            form_batches(&[4, 4, 4, 4], 8, Some(36), 8),
            vec![0..3, 3..4]
        );
    }

    #[test]
    fn an_oversized_prompt_still_runs_alone() {
        assert_eq!(form_batches(&[100, 1], 4, Some(10), 8), vec![0..1, 1..2]);
    }
}
