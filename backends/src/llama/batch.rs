//! Left-padded batches of prompts of different lengths: pad counts, token and position ids,
//! and the additive attention masks that make every sequence compute exactly what it would
//! alone.
//!
//! Prompts are right-aligned to a common width `T`, so every sequence's newest token sits in
//! the last column and one decode step appends one column for all. Positions count only real
//! tokens (`index - pad`), which is what transformers' `generate` derives from the attention
//! mask, so RoPE sees the same positions as for the unpadded prompt.
//!
//! A serving batch's steps ([`HostStep::slot_chunk`], [`HostStep::slot_decode`]) have no pads:
//! each request sits in its own cache slot from position 0, so its columns are its positions,
//! and a step's mask is as wide as its longest sequence, the rest of each row hidden.

use crate::error::BackendError;

/// Token id written into pad slots; any valid id works because pads are never attended to.
const PAD_TOKEN: i64 = 0;

/// Host-side inputs of one forward call, ready to upload.
///
/// Each sequence of the step reads and writes one slot of the KV cache and writes its `seq` new
/// positions from its own column: an ordinary batch's sequence `b` is slot `b`, all writing
/// after the same `past` columns; a serving batch's step runs the slots of the requests it
/// names, each at its own length.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostStep {
    /// `[batch * seq]`, row-major.
    pub tokens: Vec<i64>,
    /// `[batch * seq]`, row-major.
    pub positions: Vec<i64>,
    /// Additive mask `[batch, seq, keys]` ([`HostStep::keys`]): a row's key columns are its
    /// slot's positions.
    pub mask: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
    /// `[batch]`: the cache slot each sequence reads and writes.
    pub slots: Vec<usize>,
    /// `[batch]`: the column each sequence's first new position is written at; the columns
    /// before it are what its slot holds already.
    pub starts: Vec<usize>,
}

impl HostStep {
    /// Key columns every mask row spans: up to the furthest new position of any sequence.
    pub(crate) fn keys(&self) -> usize {
        self.starts.iter().max().map_or(0, |start| start + self.seq)
    }

    /// Checks the step's placement against a cache whose slots hold `lens` positions each, of
    /// `capacity`: every sequence names a slot of it, no two the same, starts where that slot's
    /// positions end, and fits the slot with its new positions.
    pub(crate) fn check_slots(&self, lens: &[usize], capacity: usize) -> Result<(), BackendError> {
        let (batch, seq) = (self.batch, self.seq);
        for (input, found) in [
            ("cache slots", self.slots.len()),
            ("write starts", self.starts.len()),
        ] {
            if found != batch {
                return Err(BackendError::StepInputLength {
                    input,
                    shape: vec![batch],
                    found,
                });
            }
        }
        for (i, (&slot, &start)) in self.slots.iter().zip(&self.starts).enumerate() {
            let held = lens.get(slot).copied();
            if held != Some(start) || self.slots[..i].contains(&slot) {
                return Err(BackendError::StepMismatch {
                    batch,
                    seq,
                    slot,
                    start,
                    cache_slots: lens.len(),
                    cache_len: held.unwrap_or(0),
                });
            }
            if start + seq > capacity {
                return Err(BackendError::KvCacheFull {
                    capacity,
                    needed: start + seq,
                });
            }
        }
        Ok(())
    }

    /// The next `tokens` of one slot's prompt, written from column `start` after the `start`
    /// prompt tokens the slot holds (a slot holds one sequence from position 0, with no pads,
    /// so columns are positions).
    pub(crate) fn slot_chunk(slot: usize, start: usize, tokens: &[u32]) -> Self {
        let seq = tokens.len();
        let keys = start + seq;
        // Causal: the new position `start + t` sees every column up to itself.
        let mut mask = vec![f32::NEG_INFINITY; seq * keys];
        for (t, row) in mask.chunks_exact_mut(keys.max(1)).enumerate() {
            row[..=start + t].fill(0.0);
        }
        Self {
            tokens: tokens.iter().map(|&t| i64::from(t)).collect(),
            positions: (start..keys).map(|p| p as i64).collect(),
            mask,
            batch: 1,
            seq,
            slots: vec![slot],
            starts: vec![start],
        }
    }

    /// One new position per slot: `tokens[i]` at position `lens[i]` of slot `slots[i]`, which
    /// sees its own columns `0..=lens[i]`; the mask is as wide as the longest, the rest of each
    /// row hidden (those columns are another request's or unwritten).
    pub(crate) fn slot_decode(slots: &[usize], lens: &[usize], tokens: &[u32]) -> Self {
        let batch = slots.len();
        let keys = lens.iter().max().map_or(0, |len| len + 1);
        let mut mask = vec![f32::NEG_INFINITY; batch * keys];
        for (row, &len) in mask.chunks_exact_mut(keys.max(1)).zip(lens) {
            row[..=len].fill(0.0);
        }
        Self {
            tokens: tokens.iter().map(|&t| i64::from(t)).collect(),
            positions: lens.iter().map(|&len| len as i64).collect(),
            mask,
            batch,
            seq: 1,
            slots: slots.to_vec(),
            starts: lens.to_vec(),
        }
    }

    /// The step's mask for a sliding-window layer: a query at column `start + t` also hides
    /// every key `window` or more columns before it. Columns are positions (shifted by the
    /// sequence's pads in a padded batch), so this is transformers' rule
    /// (`query - key < window`) for every sequence, padded or not, whatever its start.
    pub(crate) fn windowed_mask(&self, window: usize) -> Vec<f32> {
        let keys = self.keys();
        let seq = self.seq.max(1);
        let mut out = self.mask.clone();
        for (r, row) in out.chunks_exact_mut(keys.max(1)).enumerate() {
            let start = self.starts.get(r / seq).copied().unwrap_or(0);
            let query = start + r % seq;
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
            slots: (0..self.batch()).collect(),
            starts: vec![0; self.batch()],
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
            slots: (0..self.batch()).collect(),
            starts: vec![past; self.batch()],
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
        assert_eq!((&step.tokens, step.seq, step.keys()), (&vec![11, 12], 1, 5));
        assert_eq!((step.slots, step.starts), (vec![0, 1], vec![4, 4]));
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

    #[test]
    fn a_slot_chunk_is_causal_from_its_start() {
        let step = HostStep::slot_chunk(3, 2, &[7, 8]);
        assert_eq!(step.keys(), 4);
        assert_eq!((step.slots, step.starts), (vec![3], vec![2]));
        assert_eq!(step.positions, vec![2, 3]);
        #[rustfmt::skip]
        let expected = vec![
            0.0, 0.0, 0.0, NEG,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(step.mask, expected);
    }

    #[test]
    fn slots_decode_at_their_own_lengths_and_windows_follow_them() {
        // Slot 4 holds 3 positions, slot 1 holds 1: each sees its own, the mask is 4 wide.
        let step = HostStep::slot_decode(&[4, 1], &[3, 1], &[9, 10]);
        assert_eq!((step.batch, step.seq, step.keys()), (2, 1, 4));
        assert_eq!(step.positions, vec![3, 1]);
        assert_eq!(step.starts, vec![3, 1]);
        assert_eq!(step.mask, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, NEG, NEG]);
        // Window 2: the query at position 3 sees 2..=3, the one at position 1 sees 0..=1.
        assert_eq!(
            step.windowed_mask(2),
            vec![NEG, NEG, 0.0, 0.0, 0.0, 0.0, NEG, NEG]
        );
        // A chunk's rows slide from its start: position 3 sees 2..=3, position 4 sees 3..=4.
        assert_eq!(
            HostStep::slot_chunk(0, 3, &[5, 6]).windowed_mask(2),
            vec![NEG, NEG, 0.0, 0.0, NEG, NEG, NEG, NEG, 0.0, 0.0]
        );
    }
}
