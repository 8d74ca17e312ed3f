//! Left-padded batches of prompts of different lengths: pad counts, token and position ids,
//! and the additive attention masks that make every sequence compute exactly what it would
//! alone.
//!
//! Prompts are right-aligned to a common width `T`, so every sequence's newest token sits in
//! the last column and one decode step appends one column for all. Positions count only real
//! tokens (`index - pad`), which is what transformers' `generate` derives from the attention
//! mask, so RoPE sees the same positions as for the unpadded prompt.

/// Token id written into pad slots; any valid id works because pads are never attended to.
const PAD_TOKEN: i64 = 0;

/// Host-side inputs of one forward call, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostStep {
    /// `[batch * seq]`, row-major.
    pub tokens: Vec<i64>,
    /// `[batch * seq]`, row-major.
    pub positions: Vec<i64>,
    /// Additive mask `[batch, seq, past + seq]`.
    pub mask: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
    /// Positions already in the KV cache.
    pub past: usize,
}

impl HostStep {
    /// The step's mask for a sliding-window layer: a query at column `past + t` also hides
    /// every key `window` or more columns before it. Columns are positions shifted by the
    /// sequence's pads, so this is transformers' rule (`query - key < window`) for every
    /// sequence, padded or not.
    pub(crate) fn windowed_mask(&self, window: usize) -> Vec<f32> {
        let keys = self.past + self.seq;
        let mut out = self.mask.clone();
        for (r, row) in out.chunks_exact_mut(keys.max(1)).enumerate() {
            let query = self.past + r % self.seq.max(1);
            // Keys at columns ..=query-window are out of the window.
            let hidden = (query + 1).saturating_sub(window);
            row[..hidden.min(keys)].fill(f32::NEG_INFINITY);
        }
        out
    }

    /// The distinct windows of `windows` with their masks, for the layers that slide.
    pub(crate) fn window_masks(&self, windows: &[Option<usize>]) -> Vec<(usize, Vec<f32>)> {
        let mut masks: Vec<(usize, Vec<f32>)> = Vec::new();
        for window in windows.iter().flatten() {
            if !masks.iter().any(|(w, _)| w == window) {
                masks.push((*window, self.windowed_mask(*window)));
            }
        }
        masks
    }
}

/// The layout of a left-padded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaddedBatch {
    lens: Vec<usize>,
    width: usize,
}

impl PaddedBatch {
    /// Layout for these prompt lengths (each at least 1).
    pub(crate) fn new(lens: Vec<usize>) -> Self {
        let width = lens.iter().copied().max().unwrap_or(0);
        Self { lens, width }
    }

    /// Number of sequences.
    pub(crate) fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Padded prompt width `T`.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// Prompt length of sequence `b`.
    pub(crate) fn len(&self, b: usize) -> usize {
        self.lens[b]
    }

    fn pad(&self, b: usize) -> usize {
        self.width - self.lens[b]
    }

    /// The prompt pass over the whole padded batch.
    pub(crate) fn prefill(&self, prompts: &[Vec<u32>]) -> HostStep {
        HostStep {
            tokens: self.prefill_tokens(prompts),
            positions: self.prefill_positions(),
            mask: self.prefill_mask(),
            batch: self.batch(),
            seq: self.width,
            past: 0,
        }
    }

    /// Decode step `step` (1-based; step 0 is the prefill) feeding each sequence's previous
    /// token after `past` cached positions.
    pub(crate) fn decode(&self, step: usize, tokens: &[u32], past: usize) -> HostStep {
        HostStep {
            tokens: tokens.iter().map(|&t| i64::from(t)).collect(),
            positions: self.decode_positions(step),
            mask: self.decode_mask(past),
            batch: self.batch(),
            seq: 1,
            past,
        }
    }

    /// Token ids `[batch * T]`, row-major, pads first.
    fn prefill_tokens(&self, prompts: &[Vec<u32>]) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.batch() * self.width);
        for (b, prompt) in prompts.iter().enumerate() {
            out.extend(std::iter::repeat_n(PAD_TOKEN, self.pad(b)));
            out.extend(prompt.iter().map(|&t| i64::from(t)));
        }
        out
    }

    /// Position ids `[batch * T]`: `index - pad` for real tokens. Pad slots get 0; their
    /// value is irrelevant because nothing real attends to them.
    fn prefill_positions(&self) -> Vec<i64> {
        let mut out = Vec::with_capacity(self.batch() * self.width);
        for b in 0..self.batch() {
            let pad = self.pad(b);
            out.extend((0..self.width).map(|t| t.saturating_sub(pad) as i64));
        }
        out
    }

    /// Additive mask `[batch, T, T]` (0 = visible, -inf = hidden): query `i` sees key `j` when
    /// `j <= i` and `j` is not a pad. A pad query sees only itself, so no softmax row is empty
    /// (an all `-inf` row would yield NaN, and NaN in a pad's values would leak into real rows
    /// through `0 * NaN` in the next layer's `probs @ V`).
    fn prefill_mask(&self) -> Vec<f32> {
        let t = self.width;
        let mut out = vec![f32::NEG_INFINITY; self.batch() * t * t];
        for b in 0..self.batch() {
            let pad = self.pad(b);
            for i in 0..t {
                let row = &mut out[(b * t + i) * t..(b * t + i + 1) * t];
                if i < pad {
                    row[i] = 0.0;
                } else {
                    row[pad..=i].fill(0.0);
                }
            }
        }
        out
    }

    /// Position ids `[batch]` for decode step `step`.
    fn decode_positions(&self, step: usize) -> Vec<i64> {
        self.lens
            .iter()
            .map(|&len| (len + step - 1) as i64)
            .collect()
    }

    /// Additive mask `[batch, 1, past + 1]` for one new token per sequence after `past`
    /// cached positions: everything but the prompt's pads is visible.
    fn decode_mask(&self, past: usize) -> Vec<f32> {
        let s = past + 1;
        let mut out = vec![0.0; self.batch() * s];
        for b in 0..self.batch() {
            out[b * s..b * s + self.pad(b)].fill(f32::NEG_INFINITY);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn left_padding_layout() {
        let batch = PaddedBatch::new(vec![3, 1]);
        assert_eq!(batch.width(), 3);
        assert_eq!(
            batch.prefill_tokens(&[vec![5, 6, 7], vec![9]]),
            vec![5, 6, 7, 0, 0, 9]
        );
        // transformers: position_ids = cumsum(mask) - 1 on real tokens.
        assert_eq!(batch.prefill_positions(), vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(batch.decode_positions(1), vec![3, 1]);
        assert_eq!(batch.decode_positions(2), vec![4, 2]);
        let step = batch.decode(2, &[11, 12], 4);
        assert_eq!((step.tokens, step.seq, step.past), (vec![11, 12], 1, 4));
    }

    #[test]
    fn masks_hide_pads_and_future() {
        let batch = PaddedBatch::new(vec![3, 2]);
        #[rustfmt::skip]
        let expected = vec![
            // sequence 0: plain causal
            0.0, NEG, NEG,
            0.0, 0.0, NEG,
            0.0, 0.0, 0.0,
            // sequence 1: one pad; the pad row sees itself only
            0.0, NEG, NEG,
            NEG, 0.0, NEG,
            NEG, 0.0, 0.0,
        ];
        assert_eq!(batch.prefill_mask(), expected);
        assert_eq!(
            batch.decode_mask(3),
            vec![0.0, 0.0, 0.0, 0.0, NEG, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn a_window_hides_keys_as_far_back_as_its_length() {
        let batch = PaddedBatch::new(vec![4, 2]);
        #[rustfmt::skip]
        let expected = vec![
            // window 2: each real query sees itself and the one before
            0.0, NEG, NEG, NEG,
            0.0, 0.0, NEG, NEG,
            NEG, 0.0, 0.0, NEG,
            NEG, NEG, 0.0, 0.0,
            // two pads: the pad rows keep seeing themselves only
            0.0, NEG, NEG, NEG,
            NEG, 0.0, NEG, NEG,
            NEG, NEG, 0.0, NEG,
            NEG, NEG, 0.0, 0.0,
        ];
        assert_eq!(
            batch.prefill(&[vec![5; 4], vec![6; 2]]).windowed_mask(2),
            expected
        );
        // Decode after 4 cached positions, window 3: the query at column 4 sees columns 2..=4.
        let step = batch.decode(1, &[7, 8], 4);
        assert_eq!(
            step.windowed_mask(3),
            vec![NEG, NEG, 0.0, 0.0, 0.0, NEG, NEG, 0.0, 0.0, 0.0]
        );
    }
}
