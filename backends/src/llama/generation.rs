//! One batched generation on a Llama model: the prefill step over the left-padded prompts, then
//! one decode step per token with the KV cache, per-sequence stopping, and token selection.
//! How a sequence ends ([`Ending`], [`SequenceState`]) and how its tokens are picked
//! ([`choose`], [`sampler`]) are shared with continuous batching ([`super::serving`]).

use api::runtime::{Decoding, GenerateOptions, Generation, RuntimeError, StepOutput};

use super::batch::PaddedBatch;
use super::forward::{ForwardPass, LogitRows, PassState, StepLogits};
use crate::error::{BackendError, InputError};
use crate::guard::catch_backend_panic;
use crate::sampler::{Sampler, Warpers};

/// When a sequence ends: the rules its generated tokens are checked against.
#[derive(Debug, Clone)]
pub(crate) struct Ending {
    /// The model's end-of-sequence ids.
    pub eos: Vec<u32>,
    /// EOS is suppressed until a sequence has this many new tokens.
    pub min_new_tokens: usize,
    /// Whether EOS ends a sequence (else it runs to its `max_new_tokens`).
    pub stop_at_eos: bool,
}

/// Per-sequence progress.
#[derive(Debug, Clone)]
pub(crate) struct SequenceState {
    /// Tokens generated so far.
    pub generated: usize,
    /// Whether it has ended.
    pub finished: bool,
    /// The token to feed on the next decode step.
    pub last: u32,
}

impl SequenceState {
    /// A sequence yet to generate, whose prompt ends with `last`.
    pub(crate) fn new(last: u32) -> Self {
        Self {
            generated: 0,
            finished: false,
            last,
        }
    }

    /// Whether its EOS logits go to −inf before its next token is picked: it is live and short
    /// of `min_new_tokens`, as transformers' `MinNewTokensLengthLogitsProcessor` does (applied
    /// whether or not generation stops at EOS, again as there).
    pub(crate) fn holds_eos(&self, ending: &Ending) -> bool {
        !self.finished && self.generated < ending.min_new_tokens
    }

    /// Records `token` as its next one and returns whether the sequence has now ended: at EOS
    /// (where `ending` stops there) or at its `max_new_tokens`.
    pub(crate) fn accept(&mut self, token: u32, ending: &Ending, max_new_tokens: usize) -> bool {
        self.generated += 1;
        self.last = token;
        // EOS was suppressed before min_new_tokens; the count check only guards a degenerate
        // all −inf row, where the suppressed id could still come out.
        let at_eos = ending.stop_at_eos
            && self.generated > ending.min_new_tokens
            && ending.eos.contains(&token);
        self.finished = at_eos || self.generated >= max_new_tokens;
        self.finished
    }
}

/// The sampler `decoding` asks for, its seed passed through `seed` (a serving batch derives
/// one per request), or `None` for greedy decoding (temperature 0 included). Fails on
/// settings the sampler refuses.
pub(crate) fn sampler(
    decoding: &Decoding,
    seed: impl FnOnce(u64) -> u64,
) -> Result<Option<Sampler>, InputError> {
    match *decoding {
        Decoding::Greedy
        | Decoding::Sample {
            temperature: 0.0, ..
        } => Ok(None),
        Decoding::Sample {
            temperature,
            top_k,
            top_p,
            seed: base,
        } => Sampler::new(temperature, top_k, top_p, seed(base)).map(Some),
    }
}

/// How a step's tokens are drawn from its logits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Draws<'u> {
    /// Each row's argmax where the logits are: on a device, only the ids cross to the host.
    Greedy,
    /// One draw per row through `warpers` at the row's uniform; a row without one (a finished
    /// sequence) consumes none and gets id 0, for its caller to discard.
    Sample {
        /// Temperature, top-k and top-p, the same for every row.
        warpers: Warpers,
        /// `[rows]`: each row's uniform in `[0, 1)`.
        uniforms: &'u [Option<f64>],
    },
}

/// Token ids from `[rows, vocab]` logits: EOS (`eos`) set to −inf first in the rows flagged in
/// `suppress` ([`SequenceState::holds_eos`]), then one id per row as `draws` says. Greedy ties
/// go to the lowest id, as in torch.
pub(crate) fn choose<L: StepLogits>(
    logits: L,
    suppress: &[bool],
    eos: &[u32],
    draws: Draws<'_>,
) -> Result<Vec<u32>, BackendError> {
    let logits = if suppress.contains(&true) && !eos.is_empty() {
        logits.suppress(suppress, eos)
    } else {
        logits
    };
    let (warpers, uniforms) = match draws {
        Draws::Greedy => return logits.argmax(),
        Draws::Sample { warpers, uniforms } => (warpers, uniforms),
    };
    if warpers.truncates() {
        // Top-k and top-p need each row sorted, which burn 0.21's cubecl backends do by
        // reading the tensor to the host anyway: the rows cross once, here.
        let vocab = logits.vocab();
        let values = logits.into_host()?;
        Ok(values
            .chunks_exact(vocab.max(1))
            .zip(uniforms)
            .map(|(row, u)| u.map_or(0, |u| warpers.sample_at(row, u)))
            .collect())
    } else {
        let draws: Vec<f64> = uniforms.iter().map(|u| u.unwrap_or(0.0)).collect();
        logits.sample_softmax(warpers.temperature(), &draws)
    }
}

/// The first id of `prompt` outside a vocabulary of `vocab_size`, if any.
pub(crate) fn outside_vocabulary(prompt: &[u32], vocab_size: usize) -> Option<u32> {
    prompt.iter().copied().find(|&t| t as usize >= vocab_size)
}

/// A generation in progress; borrows the forward pass it runs on.
pub(crate) struct LlamaGeneration<'a, P: ForwardPass> {
    model: &'a P,
    /// Needed for the prefill only, emptied after it.
    prompts: Vec<Vec<u32>>,
    batch: PaddedBatch,
    state: P::State,
    /// One generator for the whole batch; `None` for greedy decoding.
    sampler: Option<Box<Sampler>>,
    ending: Ending,
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
        if let Some(bad) = outside_vocabulary(prompt, vocab_size) {
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
        let sampler = sampler(&options.decoding, |seed| seed)?.map(Box::new);
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
            .map(|p| SequenceState::new(p[p.len() - 1]))
            .collect();
        Ok(Self {
            model,
            prompts: prompts.to_vec(),
            batch,
            state,
            sampler,
            ending: Ending {
                eos: eos.to_vec(),
                min_new_tokens: options.min_new_tokens,
                stop_at_eos: options.stop_at_eos,
            },
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
        let suppress: Vec<bool> = self
            .states
            .iter()
            .map(|s| s.holds_eos(&self.ending))
            .collect();
        let model = self.model;
        let (state, sampler, states, eos) = (
            &mut self.state,
            self.sampler.as_deref_mut(),
            &self.states,
            &self.ending.eos,
        );
        catch_backend_panic("generation step", || {
            let logits = model.step(host, state, LogitRows::Last)?;
            pick(sampler, logits, &suppress, eos, states)
        })
    }
}

/// Token ids for a generation's step from `[batch, vocab]` logits, drawn from the batch's one
/// generator (`None`: greedy); a finished sequence keeps its last token (it is discarded).
fn pick<L: StepLogits>(
    sampler: Option<&mut Sampler>,
    logits: L,
    suppress: &[bool],
    eos: &[u32],
    states: &[SequenceState],
) -> Result<Vec<u32>, BackendError> {
    let ids = match sampler {
        None => choose(logits, suppress, eos, Draws::Greedy)?,
        Some(sampler) => {
            // One draw per live row, in row order, wherever the row is then sampled: the same
            // seed gives the same draws on every pass. Finished rows consume none.
            let uniforms: Vec<Option<f64>> = states
                .iter()
                .map(|state| (!state.finished).then(|| sampler.uniform()))
                .collect();
            let warpers = sampler.warpers();
            let draws = Draws::Sample {
                warpers,
                uniforms: &uniforms,
            };
            choose(logits, suppress, eos, draws)?
        }
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
        let max_new_tokens = self.options.max_new_tokens;
        let tokens = self
            .states
            .iter_mut()
            .zip(picked)
            .map(|(state, token)| {
                if state.finished {
                    return None;
                }
                state.accept(token, &self.ending, max_new_tokens);
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
        let live = SequenceState::new(0);
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
            None,
            logits(),
            &[true, false],
            &[2, 5, 99],
            &[live.clone(), live.clone()],
        )
        .unwrap();
        assert_eq!(ids, vec![4, 2]);
        // Sampling at a high temperature still never draws them.
        let mut sampler = Sampler::new(100.0, 0, 1.0, 1).unwrap();
        for _ in 0..200 {
            let states = [live.clone(), done.clone()];
            let ids = pick(
                Some(&mut sampler),
                logits(),
                &[true, true],
                &[2, 5],
                &states,
            )
            .unwrap();
            assert!(ids[0] != 2 && ids[0] != 5, "{ids:?}");
            assert_eq!(ids[1], 9, "a finished row keeps its last token");
        }
    }

    #[test]
    fn a_sequence_ends_at_eos_only_past_min_new_tokens_or_at_its_cap() {
        let ending = Ending {
            eos: vec![2],
            min_new_tokens: 1,
            stop_at_eos: true,
        };
        let mut s = SequenceState::new(7);
        assert!(s.holds_eos(&ending));
        // An EOS that slipped through before min_new_tokens does not end it.
        assert!(!s.accept(2, &ending, 4));
        assert!(!s.holds_eos(&ending));
        assert!(s.accept(2, &ending, 4));
        let mut capped = SequenceState::new(7);
        assert!(!capped.accept(5, &ending, 2));
        assert!(capped.accept(5, &ending, 2));
        let running = Ending {
            stop_at_eos: false,
            ..ending
        };
        let mut s = SequenceState::new(7);
        s.accept(3, &running, 9);
        assert!(
            !s.accept(2, &running, 9),
            "EOS ends nothing without stop_at_eos"
        );
    }

    #[test]
    fn temperature_zero_is_greedy_and_bad_settings_are_refused() {
        let sample = |temperature| Decoding::Sample {
            temperature,
            top_k: 0,
            top_p: 1.0,
            seed: 3,
        };
        assert!(sampler(&Decoding::Greedy, |s| s).unwrap().is_none());
        assert!(sampler(&sample(0.0), |s| s).unwrap().is_none());
        assert!(sampler(&sample(0.8), |s| s).unwrap().is_some());
        assert_eq!(
            sampler(&sample(-1.0), |s| s).unwrap_err(),
            InputError::Temperature(-1.0)
        );
    }
}
