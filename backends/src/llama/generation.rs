//! One batched generation on a Llama model: the prefill step over the left-padded prompts, then
//! one decode step per token with the KV cache, per-sequence stopping, and token selection.

use api::runtime::{Decoding, GenerateOptions, Generation, RuntimeError, StepOutput};

use super::batch::PaddedBatch;
use super::forward::{ForwardPass, LogitRows, PassState, StepLogits};
use crate::error::{BackendError, InputError};
use crate::guard::catch_backend_panic;
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

/// A generation in progress; borrows the forward pass it runs on.
pub(crate) struct LlamaGeneration<'a, P: ForwardPass> {
    model: &'a P,
    /// Needed for the prefill only, emptied after it.
    prompts: Vec<Vec<u32>>,
    batch: PaddedBatch,
    state: P::State,
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
) -> Result<(), InputError> {
    if prompts.is_empty() {
        return Err(InputError::NoPrompts);
    }
    for (i, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(InputError::EmptyPrompt { prompt: i });
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(InputError::TokenOutsideVocabulary {
                prompt: i,
                token: bad,
                vocab: vocab_size,
            });
        }
        if prompt.len().saturating_add(extra) > max_positions {
            return Err(InputError::PromptTooLong {
                prompt: i,
                tokens: prompt.len(),
                new_tokens: extra,
                max_positions,
            });
        }
    }
    Ok(())
}

impl<'a, P: ForwardPass> LlamaGeneration<'a, P> {
    /// Validates the request and reserves the KV cache for the whole generation. `admit`
    /// hears the cache's size (sequences, positions each) once the request is valid and before
    /// anything is allocated, and may refuse it.
    pub(crate) fn start(
        model: &'a P,
        eos: &[u32],
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
        admit: impl FnOnce(usize, usize) -> Result<(), RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let config = model.config();
        if options.max_new_tokens == 0 {
            return Err(InputError::NoNewTokens.into());
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
            } => Picker::Sample(Box::new(Sampler::new(temperature, top_k, top_p, seed)?)),
        };
        let batch = PaddedBatch::new(prompts.iter().map(Vec::len).collect());
        // The last generated token is never fed back, hence the `- 1`s.
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let state = catch_backend_panic("allocating the generation", || {
            Ok::<_, BackendError>(model.new_state(
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
    fn compute(&mut self) -> Result<Vec<u32>, BackendError> {
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
                logits = logits.suppress(&suppress, eos);
            }
            pick(picker, logits, states)
        })
    }
}

/// Token ids from `[batch, vocab]` logits. Greedy ties go to the lowest id, as in torch.
fn pick<L: StepLogits>(
    picker: &mut Picker,
    logits: L,
    states: &[SequenceState],
) -> Result<Vec<u32>, BackendError> {
    let sampler = match picker {
        // Where the logits are: on a device, only `batch` ids cross to the host each step.
        Picker::Greedy => return logits.argmax(),
        Picker::Sample(sampler) => sampler,
    };
    // One draw per live row, in row order, wherever the row is then sampled: the same seed
    // gives the same draws on every pass. Finished rows consume none; their token is
    // discarded.
    let uniforms: Vec<Option<f64>> = states
        .iter()
        .map(|state| (!state.finished).then(|| sampler.uniform()))
        .collect();
    let warpers = sampler.warpers();
    let ids = if warpers.truncates() {
        // Top-k and top-p need each row sorted, which burn 0.21's cubecl backends do by
        // reading the tensor to the host anyway: the rows cross once, here.
        let vocab = logits.vocab();
        let values = logits.into_host()?;
        values
            .chunks_exact(vocab.max(1))
            .zip(&uniforms)
            .map(|(row, u)| u.map_or(0, |u| warpers.sample_at(row, u)))
            .collect()
    } else {
        let draws: Vec<f64> = uniforms.iter().map(|u| u.unwrap_or(0.0)).collect();
        logits.sample_softmax(warpers.temperature(), &draws)?
    };
    Ok(ids
        .into_iter()
        .zip(states)
        .map(|(id, state)| if state.finished { state.last } else { id })
        .collect())
}

impl<P: ForwardPass> Generation for LlamaGeneration<'_, P> {
    fn step(&mut self) -> Result<StepOutput, RuntimeError> {
        if self.failed {
            return Err(BackendError::GenerationFailed.into());
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
                return Err(e.into());
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
    use crate::llama::host_model::HostLogits;

    #[test]
    fn sampling_never_draws_suppressed_tokens_and_skips_finished_rows() {
        let live = SequenceState {
            generated: 0,
            finished: false,
            last: 0,
        };
        let done = SequenceState {
            generated: 3,
            finished: true,
            last: 9,
        };
        let vocab = 6;
        // Token 2 is the clear favourite in both rows, token 4 second.
        let row = [0.0f32, 1.0, 9.0, 0.5, 3.0, 8.5];
        let values: Vec<f32> = row.iter().chain(row.iter()).copied().collect();
        let logits = || HostLogits::new(values.clone(), vocab);
        let ids = pick(
            &mut Picker::Greedy,
            logits().suppress(&[true, false], &[2, 5, 99]),
            &[live.clone(), live.clone()],
        )
        .unwrap();
        assert_eq!(ids, vec![4, 2]);
        // Sampling at a high temperature still never draws them.
        let sampler = Sampler::new(100.0, 0, 1.0, 1).unwrap();
        let mut picker = Picker::Sample(Box::new(sampler));
        for _ in 0..200 {
            let suppressed = logits().suppress(&[true, true], &[2, 5]);
            let ids = pick(&mut picker, suppressed, &[live.clone(), done.clone()]).unwrap();
            assert!(ids[0] != 2 && ids[0] != 5, "{ids:?}");
            assert_eq!(ids[1], 9, "a finished row keeps its last token");
        }
    }
}
