//! The forward-pass trait every Llama implementation offers, and what both passes share.
//!
//! Two passes compute the same model: [`super::model::BurnPass`] (burn tensor ops, any backend,
//! dtype or quantization) and [`super::host_model::HostPass`] (f32 on llmeff's CPU kernels).
//! Each owns its weights, its per-generation state and its logits' form; generation, logits
//! and loading are generic over [`ForwardPass`], so which pass runs is decided once, when the
//! model is loaded, and never matched per step.

use api::runtime::RuntimeError;

use super::batch::HostStep;
use super::config::LlamaConfig;
use crate::error::BackendError;
use crate::sampler::Warpers;

/// Which rows of the final hidden states go through the output projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogitRows {
    /// Only each sequence's last column (what generation needs; saves `T - 1` vocab-sized
    /// products per sequence).
    Last,
    /// Every column, pads included.
    All,
}

/// A Llama forward pass: its weights, the state a generation keeps, and one step of it.
pub(crate) trait ForwardPass: Send + Sync {
    /// A generation's RoPE rows and KV cache in this pass's form.
    type State: PassState + Send;
    /// A step's logits where this pass leaves them.
    type Logits: StepLogits;

    /// The model's configuration.
    fn config(&self) -> &LlamaConfig;

    /// What computes the model, as `ModelInfo::compute` reports it (`burn-<device>`,
    /// `llmeff-kernels/<isa>`).
    fn compute(&self) -> String;

    /// FLOPs of the matrix products executed since the pass was built, counted from the
    /// operands' shapes (the same way in both passes).
    fn executed_flops(&self) -> u64;

    /// Bytes the KV cache of `sequences` × `capacity` positions takes in this pass's layout.
    fn kv_cache_bytes(&self, sequences: usize, capacity: usize) -> Result<u64, RuntimeError>;

    /// An empty KV cache of `slots` slots with room for `capacity` positions each (a slot per
    /// sequence), and RoPE rows for positions `0..rope_len`.
    fn new_state(&self, slots: usize, capacity: usize, rope_len: usize) -> Self::State;

    /// Runs one step (`step`: a prompt pass or chunk, or one decode position per sequence),
    /// each sequence writing its keys and values into its own slot of `state`'s cache from its
    /// own start, which must be the positions that slot holds.
    ///
    /// # Shapes
    /// - `step`: `batch` sequences of `seq` tokens, mask `[batch, seq, step.keys()]`
    /// - returns `[batch, vocab]` for [`LogitRows::Last`], `[batch * seq, vocab]` (row-major
    ///   over `(sequence, column)`) for [`LogitRows::All`]
    fn step(
        &self,
        step: HostStep,
        state: &mut Self::State,
        rows: LogitRows,
    ) -> Result<Self::Logits, BackendError>;
}

/// A generation's (or serving batch's) state in a pass's form: what its owner reads of it and
/// does to it.
pub(crate) trait PassState {
    /// Positions cached so far in the fullest slot (every slot, in an ordinary batch).
    fn len(&self) -> usize;
    /// Bytes of keys and values cached so far.
    fn kv_bytes(&self) -> u64;
    /// Bytes the cache holds reserved for keys and values, written or not.
    fn reserved_bytes(&self) -> u64;
    /// Empties `slot` for the next sequence: it holds no positions, and the next step writing
    /// it starts at 0 (nothing is cleared or reallocated). A slot the cache lacks is ignored.
    fn release(&mut self, slot: usize);
}

/// A step's logits, `[rows, vocab]`, where the forward pass left them, and what token
/// selection does with them there (a device's logits cross to the host only when needed).
pub(crate) trait StepLogits: Sized {
    /// Entries per row.
    fn vocab(&self) -> usize;
    /// The logits with `tokens` set to −inf in the rows flagged in `rows` (ids outside the
    /// vocabulary are skipped: they can never be produced anyway).
    fn suppress(self, rows: &[bool], tokens: &[u32]) -> Self;
    /// The id of each row's first largest value, as torch's argmax picks it.
    fn argmax(self) -> Result<Vec<u32>, BackendError>;
    /// The values as f32 on the host, row-major.
    fn into_host(self) -> Result<Vec<f32>, BackendError>;
    /// One draw per row from the softmax of the row divided by `temperature`, untruncated:
    /// the first id whose cumulative probability exceeds `uniforms[row]` of the row's total
    /// ([`Warpers::sample_at`] without top-k or top-p). A device pass overrides this so that
    /// only the ids cross to the host.
    fn sample_softmax(self, temperature: f64, uniforms: &[f64]) -> Result<Vec<u32>, BackendError> {
        let vocab = self.vocab().max(1);
        let warpers = Warpers::softmax(temperature);
        Ok(self
            .into_host()?
            .chunks_exact(vocab)
            .zip(uniforms)
            .map(|(row, &u)| warpers.sample_at(row, u))
            .collect())
    }
}

/// The id of the first largest value of `row` (0 when none compares larger than the first,
/// e.g. a row of NaN or −inf).
pub(crate) fn argmax_row(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate().skip(1) {
        if *v > row[best] {
            best = i;
        }
    }
    // A vocabulary's ids fit in u32: the model's token ids are u32.
    best as u32
}

#[cfg(test)]
mod tests {
    use burn_flex::{Flex, FlexDevice};

    use super::*;
    use crate::llama::batch::PaddedBatch;
    use crate::llama::host_model::HostPass;
    use crate::llama::host_weights::{HostFormats, HostWeights};
    use crate::llama::model::BurnPass;
    use crate::llama::rope::{RopeConfig, RopeScaling};
    use crate::llama::weights::{LlamaWeights, WeightSource};

    /// A small GQA config with head_dim 16 and a tied head, so both passes' special cases run.
    fn config() -> LlamaConfig {
        LlamaConfig {
            hidden_size: 64,
            intermediate_size: 96,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope: RopeConfig {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
            tie_word_embeddings: true,
            vocab_size: 97,
            max_position_embeddings: 64,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            initializer_range: 0.2,
            arch: crate::llama::families::Architecture::llama(2),
        }
    }

    const SOURCE: WeightSource<'static> = WeightSource::Random { seed: 7 };

    fn burn_pass() -> BurnPass<Flex> {
        burn_pass_of(config())
    }

    fn burn_pass_of(c: LlamaConfig) -> BurnPass<Flex> {
        let weights =
            LlamaWeights::build(&c, &SOURCE, &FlexDevice, api::runtime::DType::F32).unwrap();
        BurnPass::new(c, weights, FlexDevice, api::runtime::DType::F32)
    }

    fn host_pass() -> HostPass {
        host_pass_of(config())
    }

    fn host_pass_of(c: LlamaConfig) -> HostPass {
        let weights = HostWeights::build(&c, &SOURCE, HostFormats::f32()).unwrap();
        HostPass::new(c, weights)
    }

    /// A prefill over two prompts (every row's logits) and one decode step, as f32.
    fn prefill_and_decode<P: ForwardPass>(pass: &P) -> Vec<f32> {
        let prompts = vec![vec![3, 5, 8, 13, 21], vec![34, 55]];
        let batch = PaddedBatch::new(prompts.iter().map(Vec::len).collect());
        let mut state = pass.new_state(2, 7, 7);
        let mut out = pass
            .step(batch.prefill(&prompts), &mut state, LogitRows::All)
            .unwrap()
            .into_host()
            .unwrap();
        let next = pass
            .step(
                batch.decode(1, &[4, 6], state.len()),
                &mut state,
                LogitRows::Last,
            )
            .unwrap();
        assert_eq!(next.vocab(), 97);
        out.extend(next.into_host().unwrap());
        assert_eq!(state.len(), 6);
        assert_eq!(state.kv_bytes(), 2 * 2 * 2 * 2 * 16 * 4 * 6);
        out
    }

    #[test]
    fn host_and_burn_passes_compute_the_same_random_model() {
        let (burn, host) = (burn_pass(), host_pass());
        let logits = [prefill_and_decode(&burn), prefill_and_decode(&host)];
        assert_eq!(logits[0].len(), (2 * 5 + 2) * 97);
        let worst = logits[0]
            .iter()
            .zip(&logits[1])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // Both are f32 with different summation orders.
        assert!(worst < 1e-4, "max abs difference {worst}");
        assert_eq!(burn.executed_flops(), host.executed_flops());
        assert!(burn.compute().starts_with("burn-"), "{}", burn.compute());
        assert!(
            host.compute().starts_with("llmeff-kernels/"),
            "{}",
            host.compute()
        );
    }

    #[test]
    fn a_full_host_cache_or_a_stale_step_is_an_error() {
        let host = host_pass();
        let batch = PaddedBatch::new(vec![2]);
        let mut state = host.new_state(1, 3, 3);
        host.step(batch.prefill(&[vec![3, 4]]), &mut state, LogitRows::Last)
            .unwrap();
        // A step that claims the wrong number of cached positions.
        let stale = batch.decode(1, &[5], 0);
        assert!(matches!(
            host.step(stale, &mut state, LogitRows::Last),
            Err(BackendError::StepMismatch {
                start: 0,
                cache_len: 2,
                ..
            })
        ));
        // A step naming a slot the cache lacks.
        let mut elsewhere = batch.decode(1, &[5], 2);
        elsewhere.slots = vec![1];
        assert!(matches!(
            host.step(elsewhere, &mut state, LogitRows::Last),
            Err(BackendError::StepMismatch {
                slot: 1,
                cache_slots: 1,
                ..
            })
        ));
        // A mask one value short of `[batch, seq, past + seq]`.
        let mut short_mask = batch.decode(1, &[5], 2);
        short_mask.mask.pop();
        assert!(matches!(
            host.step(short_mask, &mut state, LogitRows::Last),
            Err(BackendError::StepInputLength {
                input: "attention mask",
                found: 2,
                ..
            })
        ));
        host.step(batch.decode(1, &[5], 2), &mut state, LogitRows::Last)
            .unwrap();
        let err = host
            .step(batch.decode(2, &[6], 3), &mut state, LogitRows::Last)
            .expect_err("a full cache");
        assert!(err.to_string().contains("KV cache holds 3"), "{err}");
    }

    /// The last prompt position's logits and the next position's (fed `next`) for `prompt` run
    /// alone, the ordinary way.
    fn alone<P: ForwardPass>(pass: &P, prompt: &[u32], next: u32) -> Vec<f32> {
        let batch = PaddedBatch::new(vec![prompt.len()]);
        let mut state = pass.new_state(1, prompt.len() + 1, prompt.len() + 1);
        let mut out = pass
            .step(
                batch.prefill(&[prompt.to_vec()]),
                &mut state,
                LogitRows::Last,
            )
            .unwrap()
            .into_host()
            .unwrap();
        let decode = batch.decode(1, &[next], prompt.len());
        out.extend(
            pass.step(decode, &mut state, LogitRows::Last)
                .unwrap()
                .into_host()
                .unwrap(),
        );
        out
    }

    /// The same for two prompts in a serving batch's slots: `a` in slot 2 in two chunks, `b`
    /// in slot 0 between them, then both decoded in one step at their different lengths.
    fn in_slots<P: ForwardPass>(pass: &P, a: &[u32], b: &[u32], next: [u32; 2]) -> [Vec<f32>; 2] {
        let mut state = pass.new_state(3, 8, 8);
        let mut run = |step: HostStep| {
            pass.step(step, &mut state, LogitRows::Last)
                .unwrap()
                .into_host()
                .unwrap()
        };
        run(HostStep::slot_chunk(2, 0, &a[..3]));
        let mut b_out = run(HostStep::slot_chunk(0, 0, b));
        let mut a_out = run(HostStep::slot_chunk(2, 3, &a[3..]));
        let lens = [a.len(), b.len()];
        let decoded = run(HostStep::slot_decode(&[2, 0], &lens, &next));
        let (a_next, b_next) = decoded.split_at(decoded.len() / 2);
        a_out.extend(a_next);
        b_out.extend(b_next);
        assert_eq!(state.len(), a.len() + 1);
        [a_out, b_out]
    }

    /// A serving batch's steps compute what each sequence computes alone, on both passes,
    /// with and without a sliding window shorter than the prompts.
    #[test]
    fn slot_steps_compute_what_each_sequence_computes_alone() {
        let (a, b) = ([3, 5, 8, 13, 21, 4], [34, 55, 89]);
        for window in [None, Some(3)] {
            let mut c = config();
            c.arch.layer_windows = vec![window, None];
            fn check<P: ForwardPass>(pass: &P, a: &[u32], b: &[u32]) {
                let slots = in_slots(pass, a, b, [7, 9]);
                for (got, want) in slots.iter().zip([alone(pass, a, 7), alone(pass, b, 9)]) {
                    assert_eq!(got.len(), want.len());
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0f32, f32::max);
                    // f32 products over other row counts: rounding only.
                    assert!(
                        worst < 1e-4,
                        "{}: max abs difference {worst}",
                        pass.compute()
                    );
                }
            }
            check(&host_pass_of(c.clone()), &a, &b);
            check(&burn_pass_of(c), &a, &b);
        }
    }

    /// Logits built from `values` (`[2, vocab]`) in each pass's form.
    fn both_forms(values: &[f32], vocab: usize) -> (impl StepLogits, impl StepLogits) {
        (
            crate::llama::model::DeviceLogits(burn::tensor::Tensor::<Flex, 2>::from_data(
                burn::tensor::TensorData::new(values.to_vec(), [2, vocab]),
                &FlexDevice,
            )),
            crate::llama::host_model::HostLogits::new(values.to_vec(), vocab),
        )
    }

    #[test]
    fn greedy_ties_pick_the_lowest_id_in_both_forms() {
        // Rows long enough for flex's SIMD argmax path as well as short ones.
        for vocab in [8usize, 4096] {
            let mut values = vec![0.0f32; 2 * vocab];
            values[3] = 5.0;
            values[vocab - 2] = 5.0;
            values[vocab + vocab - 1] = 1.0;
            values[vocab + 1] = 1.0;
            let (device, host) = both_forms(&values, vocab);
            assert_eq!(device.argmax().unwrap(), vec![3, 1], "vocab {vocab}");
            assert_eq!(host.argmax().unwrap(), vec![3, 1], "vocab {vocab}");
        }
    }

    #[test]
    fn suppressed_tokens_become_minus_infinity_in_flagged_rows_only() {
        let vocab = 6;
        // Token 2 is the clear favourite in both rows, token 4 second.
        let row = [0.0f32, 1.0, 9.0, 0.5, 3.0, 8.5];
        let values: Vec<f32> = row.iter().chain(row.iter()).copied().collect();
        fn check(logits: impl StepLogits, row: &[f32]) {
            let suppressed = logits.suppress(&[true, false], &[2, 5, 99]);
            let vocab = row.len();
            let host = suppressed.into_host().unwrap();
            assert_eq!(host[2], f32::NEG_INFINITY);
            assert_eq!(host[5], f32::NEG_INFINITY);
            assert_eq!(host[..vocab].iter().filter(|v| v.is_finite()).count(), 4);
            assert_eq!(host[vocab..], *row);
        }
        let (device, host) = both_forms(&values, vocab);
        check(device, &row);
        check(host, &row);
        let (device, host) = both_forms(&values, vocab);
        assert_eq!(
            device.suppress(&[true, false], &[2, 5]).argmax().unwrap(),
            vec![4, 2]
        );
        assert_eq!(
            host.suppress(&[true, false], &[2, 5]).argmax().unwrap(),
            vec![4, 2]
        );
    }

    #[test]
    fn host_argmax_keeps_the_first_maximum_and_survives_degenerate_rows() {
        assert_eq!(argmax_row(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax_row(&[f32::NEG_INFINITY; 4]), 0);
        assert_eq!(argmax_row(&[f32::NAN, 2.0]), 0);
        assert_eq!(argmax_row(&[0.5, f32::NAN, 2.0]), 2);
    }
}
