//! One batched generation on a Llama model: the prefill step over the left-padded prompts, then
//! one decode step per token with the KV cache, per-sequence stopping, and token selection.

use api::runtime::{Decoding, GenerateOptions, Generation, RuntimeError, StepOutput};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use super::batch::PaddedBatch;
use super::model::{LlamaModel, LogitRows, StepLogits, StepState};
use crate::guard::catch_backend_panic;
use crate::host::to_host;
use crate::sampler::Sampler;

/// How tokens are chosen from a step's logits.
enum Picker {
    /// Argmax where the logits are: on a device, only `batch` ids cross to the host each step.
    Greedy,
    Sample(Box<Sampler>),
}

/// Per-sequence progress.
#[derive(Debug, Clone)]
struct SequenceState {
    generated: usize,
    finished: bool,
    /// The token to feed on the next decode step.
    last: u32,
}

/// A generation in progress; borrows the model it runs on.
pub(crate) struct LlamaGeneration<'a, B: Backend> {
    model: &'a LlamaModel<B>,
    /// Needed for the prefill only, emptied after it.
    prompts: Vec<Vec<u32>>,
    batch: PaddedBatch,
    state: StepState<B>,
    picker: Picker,
    eos: Vec<u32>,
    options: GenerateOptions,
    states: Vec<SequenceState>,
    steps: usize,
    /// Set when a step failed part-way; the cache is then inconsistent.
    failed: bool,
}

/// Checks prompts against the model: non-empty, ids in the vocabulary, and (with `extra` more
/// positions) within the model's context.
pub(crate) fn validate_prompts(
    prompts: &[Vec<u32>],
    vocab_size: usize,
    max_positions: usize,
    extra: usize,
) -> Result<(), RuntimeError> {
    if prompts.is_empty() {
        return Err(RuntimeError::InvalidInput("no prompts given".into()));
    }
    for (i, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(RuntimeError::InvalidInput(format!("prompt {i} is empty")));
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(RuntimeError::InvalidInput(format!(
                "prompt {i} contains token id {bad}, outside the vocabulary of {vocab_size}"
            )));
        }
        if prompt.len().saturating_add(extra) > max_positions {
            return Err(RuntimeError::InvalidInput(format!(
                "prompt {i} has {} tokens; with {extra} new tokens that exceeds the model's {max_positions} positions",
                prompt.len()
            )));
        }
    }
    Ok(())
}

impl<'a, B: Backend> LlamaGeneration<'a, B> {
    /// Validates the request and reserves the KV cache for the whole generation. `admit`
    /// hears the cache's size (sequences, positions each) once the request is valid and before
    /// anything is allocated, and may refuse it.
    pub(crate) fn start(
        model: &'a LlamaModel<B>,
        eos: &[u32],
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
        admit: impl FnOnce(usize, usize) -> Result<(), RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let config = model.config();
        if options.max_new_tokens == 0 {
            return Err(RuntimeError::InvalidInput(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        validate_prompts(
            prompts,
            config.vocab_size,
            config.max_position_embeddings,
            options.max_new_tokens,
        )?;
        // The cache is sized by the run (longest prompt + new tokens), never by the model's
        // maximum positions.
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        admit(
            prompts.len(),
            longest.saturating_add(options.max_new_tokens),
        )?;
        let picker = match options.decoding {
            Decoding::Greedy => Picker::Greedy,
            Decoding::Sample {
                temperature: 0.0, ..
            } => Picker::Greedy,
            Decoding::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            } => Picker::Sample(Box::new(
                Sampler::new(temperature, top_k, top_p, seed)
                    .map_err(RuntimeError::InvalidInput)?,
            )),
        };
        let batch = PaddedBatch::new(prompts.iter().map(Vec::len).collect());
        // The last generated token is never fed back, hence the `- 1`s.
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let state = catch_backend_panic("allocating the generation", || {
            Ok(model.new_state(
                batch.batch(),
                batch.width() + options.max_new_tokens - 1,
                longest + options.max_new_tokens - 1,
            ))
        })?;
        let states = prompts
            .iter()
            .map(|p| SequenceState {
                generated: 0,
                finished: false,
                last: p[p.len() - 1],
            })
            .collect();
        Ok(Self {
            model,
            prompts: prompts.to_vec(),
            batch,
            state,
            picker,
            eos: eos.to_vec(),
            options: options.clone(),
            states,
            steps: 0,
            failed: false,
        })
    }

    /// Runs the model for this step and picks one token per sequence (finished sequences get
    /// a token too; it is discarded).
    fn compute(&mut self) -> Result<Vec<u32>, RuntimeError> {
        let host = if self.steps == 0 {
            self.batch.prefill(&std::mem::take(&mut self.prompts))
        } else {
            let last: Vec<u32> = self.states.iter().map(|s| s.last).collect();
            self.batch.decode(self.steps, &last, self.state.len())
        };
        // Live sequences short of min_new_tokens may not end yet: their EOS logits go to −inf
        // before picking, as transformers' MinNewTokensLengthLogitsProcessor does (applied
        // whether or not generation stops at EOS, again as there).
        let min_new_tokens = self.options.min_new_tokens;
        let suppress: Vec<bool> = self
            .states
            .iter()
            .map(|s| !s.finished && s.generated < min_new_tokens)
            .collect();
        let model = self.model;
        let (state, picker, states, eos) =
            (&mut self.state, &mut self.picker, &self.states, &self.eos);
        catch_backend_panic("generation step", || {
            let mut logits = model.step(host, state, LogitRows::Last)?;
            if suppress.contains(&true) && !eos.is_empty() {
                logits = suppress_tokens(logits, &suppress, eos);
            }
            pick(picker, logits, states)
        })
    }
}

/// Sets the logits of `tokens` to −inf in the rows flagged in `rows`, so those tokens cannot be
/// picked there, greedy or sampled.
fn suppress_tokens<B: Backend>(
    logits: StepLogits<B>,
    rows: &[bool],
    tokens: &[u32],
) -> StepLogits<B> {
    match logits {
        StepLogits::Device(t) => StepLogits::Device(suppress_on_device(t, rows, tokens)),
        StepLogits::Host { mut values, vocab } => {
            for (row, _) in values
                .chunks_exact_mut(vocab.max(1))
                .zip(rows)
                .filter(|(_, flagged)| **flagged)
            {
                for &token in tokens {
                    // An EOS id outside the vocabulary can never be produced anyway.
                    if let Some(v) = row.get_mut(token as usize) {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
            StepLogits::Host { values, vocab }
        }
    }
}

/// [`suppress_tokens`] on a device tensor. Only the few affected columns are touched: a full
/// `[batch, vocab]` mask would be uploaded every step.
fn suppress_on_device<B: Backend>(
    logits: Tensor<B, 2>,
    rows: &[bool],
    tokens: &[u32],
) -> Tensor<B, 2> {
    let [batch, vocab] = logits.dims();
    let mask = Tensor::<B, 2, Bool>::from_data(
        TensorData::new(rows.to_vec(), [batch, 1]),
        &logits.device(),
    );
    let mut logits = logits;
    for &token in tokens {
        let t = token as usize;
        // An EOS id outside the vocabulary can never be produced anyway.
        if t >= vocab {
            continue;
        }
        let column = logits
            .clone()
            .slice([0..batch, t..t + 1])
            .mask_fill(mask.clone(), f32::NEG_INFINITY);
        logits = logits.slice_assign([0..batch, t..t + 1], column);
    }
    logits
}

/// Token ids from `[batch, vocab]` logits. Greedy ties go to the lowest id, as in torch
/// (burn-flex's argmax keeps the first maximum, and so does [`argmax_row`]).
fn pick<B: Backend>(
    picker: &mut Picker,
    logits: StepLogits<B>,
    states: &[SequenceState],
) -> Result<Vec<u32>, RuntimeError> {
    if let (Picker::Greedy, StepLogits::Device(t)) = (&picker, &logits) {
        // Argmax on the device: only `batch` ids cross to the host.
        let ids = to_host(t.clone().argmax(1))?;
        return ids
            .iter::<i64>()
            .map(|id| {
                u32::try_from(id)
                    .map_err(|_| RuntimeError::Backend(format!("argmax returned {id}")))
            })
            .collect();
    }
    let vocab = match &logits {
        StepLogits::Device(t) => t.dims()[1],
        StepLogits::Host { vocab, .. } => *vocab,
    };
    let values = logits.into_host()?;
    let rows = values.chunks_exact(vocab.max(1));
    Ok(match picker {
        Picker::Greedy => rows.map(argmax_row).collect(),
        Picker::Sample(sampler) => rows
            .zip(states)
            .map(|(row, state)| {
                if state.finished {
                    // Finished rows consume no random draws; their token is discarded.
                    state.last
                } else {
                    sampler.sample(row)
                }
            })
            .collect(),
    })
}

/// The id of the first largest value of `row` (0 when none compares larger than the first,
/// e.g. a row of NaN or −inf).
fn argmax_row(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate().skip(1) {
        if *v > row[best] {
            best = i;
        }
    }
    // A vocabulary's ids fit in u32: the model's token ids are u32.
    best as u32
}

impl<B: Backend> Generation for LlamaGeneration<'_, B> {
    fn step(&mut self) -> Result<StepOutput, RuntimeError> {
        if self.failed {
            return Err(RuntimeError::Backend(
                "an earlier step of this generation failed; start a new one".into(),
            ));
        }
        if self.states.iter().all(|s| s.finished) {
            return Ok(StepOutput {
                tokens: vec![None; self.states.len()],
                finished: true,
            });
        }
        let picked = match self.compute() {
            Ok(p) => p,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.steps += 1;
        let opts = &self.options;
        let tokens = self
            .states
            .iter_mut()
            .zip(picked)
            .map(|(state, token)| {
                if state.finished {
                    return None;
                }
                state.generated += 1;
                state.last = token;
                // EOS was suppressed before min_new_tokens; the count check only guards a
                // degenerate all −inf row, where the suppressed id could still come out.
                let at_eos = opts.stop_at_eos
                    && state.generated > opts.min_new_tokens
                    && self.eos.contains(&token);
                if at_eos || state.generated >= opts.max_new_tokens {
                    state.finished = true;
                }
                Some(token)
            })
            .collect();
        Ok(StepOutput {
            tokens,
            finished: self.states.iter().all(|s| s.finished),
        })
    }

    fn kv_cache_bytes(&self) -> u64 {
        self.state.kv_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::{Flex, FlexDevice};

    #[test]
    fn greedy_ties_pick_the_lowest_id() {
        let live = SequenceState {
            generated: 0,
            finished: false,
            last: 0,
        };
        // Rows long enough for flex's SIMD argmax path as well as short ones.
        for vocab in [8usize, 4096] {
            let mut values = vec![0.0f32; 2 * vocab];
            values[3] = 5.0;
            values[vocab - 2] = 5.0;
            values[vocab + vocab - 1] = 1.0;
            values[vocab + 1] = 1.0;
            let states = vec![live.clone(), live.clone()];
            for logits in [
                StepLogits::Device(Tensor::<Flex, 2>::from_data(
                    TensorData::new(values.clone(), [2, vocab]),
                    &FlexDevice,
                )),
                StepLogits::Host {
                    values: values.clone(),
                    vocab,
                },
            ] {
                let ids = pick(&mut Picker::Greedy, logits, &states).unwrap();
                assert_eq!(ids, vec![3, 1], "vocab {vocab}");
            }
        }
    }

    #[test]
    fn suppressed_tokens_are_never_picked_in_flagged_rows() {
        let live = SequenceState {
            generated: 0,
            finished: false,
            last: 0,
        };
        let vocab = 6;
        // Token 2 is the clear favourite in both rows, token 4 second.
        let row = [0.0f32, 1.0, 9.0, 0.5, 3.0, 8.5];
        let values: Vec<f32> = row.iter().chain(row.iter()).copied().collect();
        let states = vec![live.clone(), live.clone()];
        for on_host in [false, true] {
            let logits = || {
                if on_host {
                    StepLogits::Host {
                        values: values.clone(),
                        vocab,
                    }
                } else {
                    StepLogits::Device(Tensor::<Flex, 2>::from_data(
                        TensorData::new(values.clone(), [2, vocab]),
                        &FlexDevice,
                    ))
                }
            };
            let suppress = || suppress_tokens(logits(), &[true, false], &[2, 5, 99]);
            let ids = pick(&mut Picker::Greedy, suppress(), &states).unwrap();
            assert_eq!(ids, vec![4, 2], "on host: {on_host}");
            let host = suppress().into_host().unwrap();
            assert_eq!(host[2], f32::NEG_INFINITY);
            assert_eq!(host[5], f32::NEG_INFINITY);
            assert_eq!(host[vocab..], row);

            // Sampling at a high temperature still never draws them.
            let sampler = Sampler::new(100.0, 0, 1.0, 1).unwrap();
            let mut picker = Picker::Sample(Box::new(sampler));
            for _ in 0..200 {
                let suppressed = suppress_tokens(logits(), &[true, true], &[2, 5]);
                let ids = pick(&mut picker, suppressed, &states).unwrap();
                assert!(ids.iter().all(|&id| id != 2 && id != 5), "{ids:?}");
            }
        }
    }

    #[test]
    fn host_argmax_keeps_the_first_maximum_and_survives_degenerate_rows() {
        assert_eq!(argmax_row(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax_row(&[f32::NEG_INFINITY; 4]), 0);
        assert_eq!(argmax_row(&[f32::NAN, 2.0]), 0);
        assert_eq!(argmax_row(&[0.5, f32::NAN, 2.0]), 2);
    }
}
