//! Continuous (iteration-level) batching on a Llama model: the engine's `ServingBatch` over one
//! KV cache of `max_batch` slots, allocated once. A request holds a slot from admission to
//! release; its prompt runs in chunks at its slot's own positions (from 0: a slot holds one
//! sequence, with no pads), and each decode step runs every slot named in one batched forward
//! call, each at its own length and attending only to its own slot. A released slot's
//! positions are overwritten by the next request, never cleared or reallocated.
//!
//! Token picking and ending are the ordinary generation's ([`super::generation`]): EOS held
//! back until `min_new_tokens`, the end at EOS or `max_new_tokens`; a sampled request draws
//! from a generator of its own, seeded from the decoding's seed and its id, so its tokens do
//! not depend on the requests beside it.

use api::runtime::{Decoding, RuntimeError};
use api::serving::{ServeOptions, ServeRequest, ServingBatch, SlotToken};

use super::batch::HostStep;
use super::forward::{ForwardPass, LogitRows, PassState};
use super::generation::{Draws, Ending, SequenceState, choose, outside_vocabulary, sampler};
use crate::error::{BackendError, ServeError};
use crate::guard::catch_backend_panic;
use crate::sampler::{Sampler, Warpers};

/// Mixes a request's id into the decoding's seed: the odd constant (2⁶⁴/φ, SplitMix64's
/// increment) spreads consecutive ids over the whole seed space, so no two requests of a
/// run share a generator and a request's seed does not depend on which slot it lands in.
const REQUEST_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The sampler seed of request `id` under a decoding seeded with `seed`.
fn request_seed(seed: u64, id: u64) -> u64 {
    seed ^ id.wrapping_mul(REQUEST_SEED_MIX)
}

/// A request in its slot.
struct Request {
    /// Its prompt, kept until it has all run (then emptied).
    prompt: Vec<u32>,
    /// The prompt's length.
    prompt_len: usize,
    /// Prompt tokens run so far (the slot's first positions).
    run: usize,
    /// Tokens it generates at most.
    max_new_tokens: usize,
    /// Its generated tokens' progress.
    sequence: SequenceState,
    /// Its own generator; `None` for greedy decoding.
    sampler: Option<Sampler>,
}

impl Request {
    /// Prompt tokens not yet run.
    fn pending(&self) -> usize {
        self.prompt_len - self.run
    }

    /// Positions its slot holds: the prompt run so far, then every generated token but the
    /// newest, which is fed (and cached) by the next decode step.
    fn cached(&self) -> usize {
        self.run + self.sequence.generated.saturating_sub(1)
    }
}

/// A running batch of KV slots on forward pass `P`; borrows the pass.
pub(crate) struct LlamaServing<'a, P: ForwardPass> {
    model: &'a P,
    state: P::State,
    /// One entry per slot: the request holding it, if any.
    slots: Vec<Option<Request>>,
    /// Positions each slot holds, as asked.
    slot_capacity: usize,
    /// The model's positions: no request goes past them.
    max_positions: usize,
    ending: Ending,
    /// The decoding's warpers, shared by every request; `None` for greedy decoding.
    warpers: Option<Warpers>,
    decoding: Decoding,
    /// Set when a forward call failed part-way; the cache is then inconsistent.
    failed: bool,
}

impl<'a, P: ForwardPass> LlamaServing<'a, P> {
    /// Checks `options` against the model and reserves the KV cache of `max_batch` slots ×
    /// `slot_capacity` positions (at most the model's positions: no request can use more).
    /// `reserve` hears the cache's size (slots, positions each) once the options are valid and
    /// before anything is allocated, and may refuse it.
    pub(crate) fn new(
        model: &'a P,
        eos: &[u32],
        options: &ServeOptions,
        reserve: impl FnOnce(usize, usize) -> Result<(), RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let max_positions = model.config().max_position_embeddings;
        if options.max_batch == 0 {
            return Err(ServeError::NoSlots.into());
        }
        if options.slot_capacity == 0 {
            return Err(ServeError::NoSlotCapacity.into());
        }
        // Checked here once, so an admission never fails on the batch's own settings.
        let warpers = sampler(&options.decoding, |seed| seed)?.map(|s| s.warpers());
        // A caller sizing slots for its longest prompt plus its largest cap may ask for more
        // than any one request can take; those positions would never be written.
        let held = options.slot_capacity.min(max_positions);
        reserve(options.max_batch, held)?;
        let state = catch_backend_panic("allocating the serving batch", || {
            // RoPE rows for every position a slot holds.
            Ok::<_, BackendError>(model.new_state(options.max_batch, held, held))
        })?;
        Ok(Self {
            model,
            state,
            slots: (0..options.max_batch).map(|_| None).collect(),
            slot_capacity: options.slot_capacity,
            max_positions,
            ending: Ending {
                eos: eos.to_vec(),
                min_new_tokens: options.min_new_tokens,
                stop_at_eos: options.stop_at_eos,
            },
            warpers,
            decoding: options.decoding.clone(),
            failed: false,
        })
    }

    /// Refuses every call once a forward call has failed part-way.
    fn usable(&self) -> Result<(), BackendError> {
        if self.failed {
            Err(BackendError::GenerationFailed)
        } else {
            Ok(())
        }
    }

    /// The request in `slot`, or why there is none.
    fn held(&self, slot: usize) -> Result<&Request, ServeError> {
        match self.slots.get(slot) {
            None => Err(ServeError::NoSuchSlot {
                slot,
                slots: self.slots.len(),
            }),
            Some(None) => Err(ServeError::FreeSlot { slot }),
            Some(Some(request)) => Ok(request),
        }
    }

    /// Checks that `items` name held slots (`slot_of`), none twice, each passing `check`:
    /// a call is refused whole, before anything runs.
    fn check_slots<T: Copy>(
        &self,
        items: &[T],
        slot_of: impl Fn(T) -> usize,
        check: impl Fn(T, &Request) -> Result<(), ServeError>,
    ) -> Result<(), ServeError> {
        for (i, &item) in items.iter().enumerate() {
            let slot = slot_of(item);
            if items[..i].iter().any(|&earlier| slot_of(earlier) == slot) {
                return Err(ServeError::RepeatedSlot { slot });
            }
            check(item, self.held(slot)?)?;
        }
        Ok(())
    }

    /// Runs `step` and, where `picking` names the slots of its sequences (in step order), picks
    /// a token for each from its row of logits ([`LogitRows::Last`]); `None` for a prompt chunk
    /// that leaves prompt pending, whose logits predict a prompt token and are dropped. A
    /// failure leaves the batch unusable.
    fn run(&mut self, step: HostStep, picking: Option<&[usize]>) -> Result<Vec<u32>, BackendError> {
        let slots = picking.unwrap_or_default();
        let request = |s: usize| self.slots.get(s).and_then(Option::as_ref);
        let suppress: Vec<bool> = slots
            .iter()
            .map(|&s| request(s).is_some_and(|r| r.sequence.holds_eos(&self.ending)))
            .collect();
        let uniforms: Vec<Option<f64>>;
        let draws = match self.warpers {
            Some(warpers) if picking.is_some() => {
                // One draw per token a request generates, from its own generator: what it
                // draws depends neither on the rows beside it nor on how its prompt was split.
                uniforms = slots
                    .iter()
                    .map(|&s| {
                        let held = self.slots.get_mut(s).and_then(Option::as_mut);
                        held.and_then(|r| r.sampler.as_mut()).map(Sampler::uniform)
                    })
                    .collect();
                Draws::Sample {
                    warpers,
                    uniforms: &uniforms,
                }
            }
            _ => Draws::Greedy,
        };
        let (model, state, eos) = (self.model, &mut self.state, &self.ending.eos);
        let picked = catch_backend_panic("serving step", || {
            let logits = model.step(step, state, LogitRows::Last)?;
            match picking {
                Some(_) => choose(logits, &suppress, eos, draws),
                None => Ok(Vec::new()),
            }
        });
        if picked.is_err() {
            self.failed = true;
        }
        picked
    }

    /// Records `token` as the next of the request in `slot`.
    fn accept(&mut self, slot: usize, token: u32) -> SlotToken {
        let finished = match &mut self.slots[slot] {
            Some(r) => r.sequence.accept(token, &self.ending, r.max_new_tokens),
            // Every slot run was checked to be held.
            None => true,
        };
        SlotToken {
            slot,
            token,
            finished,
        }
    }
}

impl<P: ForwardPass> ServingBatch for LlamaServing<'_, P> {
    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn occupied(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    fn admit(&mut self, request: ServeRequest) -> Result<usize, RuntimeError> {
        self.usable()?;
        let ServeRequest {
            id,
            prompt,
            max_new_tokens,
        } = request;
        let vocab = self.model.config().vocab_size;
        let Some(&last) = prompt.last() else {
            return Err(ServeError::EmptyPrompt { request: id }.into());
        };
        if max_new_tokens == 0 {
            return Err(ServeError::NoNewTokens { request: id }.into());
        }
        if let Some(token) = outside_vocabulary(&prompt, vocab) {
            return Err(ServeError::TokenOutsideVocabulary {
                request: id,
                token,
                vocab,
            }
            .into());
        }
        let positions = prompt.len().saturating_add(max_new_tokens);
        if positions > self.max_positions {
            return Err(ServeError::TooLongForModel {
                request: id,
                tokens: prompt.len(),
                new_tokens: max_new_tokens,
                max_positions: self.max_positions,
            }
            .into());
        }
        if positions > self.slot_capacity {
            return Err(ServeError::TooLongForSlot {
                request: id,
                tokens: prompt.len(),
                new_tokens: max_new_tokens,
                capacity: self.slot_capacity,
            }
            .into());
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            return Err(ServeError::SlotsFull {
                slots: self.slots.len(),
                request: id,
            }
            .into());
        };
        let sampler = sampler(&self.decoding, |seed| request_seed(seed, id))?;
        // Released slots are emptied at release; this one may never have been used.
        self.state.release(slot);
        self.slots[slot] = Some(Request {
            prompt_len: prompt.len(),
            prompt,
            run: 0,
            max_new_tokens,
            sequence: SequenceState::new(last),
            sampler,
        });
        Ok(slot)
    }

    fn pending_prompt(&self, slot: usize) -> usize {
        self.held(slot).map_or(0, Request::pending)
    }

    fn prefill(&mut self, chunks: &[(usize, usize)]) -> Result<Vec<SlotToken>, RuntimeError> {
        self.usable()?;
        self.check_slots(
            chunks,
            |(slot, _)| slot,
            |(slot, tokens), request| {
                let pending = request.pending();
                if tokens == 0 || tokens > pending {
                    return Err(ServeError::Chunk {
                        slot,
                        tokens,
                        pending,
                    });
                }
                Ok(())
            },
        )?;
        let mut out = Vec::new();
        // One forward call per chunk (batch 1): chunks differ in length, and a prefill's
        // products are already matrix-sized.
        for &(slot, tokens) in chunks {
            let (step, completes) = match &self.slots[slot] {
                Some(r) => (
                    HostStep::slot_chunk(slot, r.run, &r.prompt[r.run..r.run + tokens]),
                    r.run + tokens == r.prompt_len,
                ),
                None => continue,
            };
            let picked = self.run(step, completes.then_some(&[slot][..]))?;
            if let Some(r) = &mut self.slots[slot] {
                r.run += tokens;
                if completes {
                    // Its prompt is all cached; only the generated tokens are needed now.
                    r.prompt = Vec::new();
                }
            }
            // A chunk that leaves prompt pending yields nothing.
            if let Some(&token) = picked.first() {
                out.push(self.accept(slot, token));
            }
        }
        Ok(out)
    }

    fn decode(&mut self, slots: &[usize]) -> Result<Vec<SlotToken>, RuntimeError> {
        self.usable()?;
        self.check_slots(
            slots,
            |slot| slot,
            |slot, request| {
                if request.pending() > 0 {
                    return Err(ServeError::NotPrefilled {
                        slot,
                        pending: request.pending(),
                    });
                }
                if request.sequence.finished {
                    return Err(ServeError::Finished { slot });
                }
                Ok(())
            },
        )?;
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let requests = slots.iter().filter_map(|&s| self.slots[s].as_ref());
        let lens: Vec<usize> = requests.clone().map(Request::cached).collect();
        let last: Vec<u32> = requests.map(|r| r.sequence.last).collect();
        let step = HostStep::slot_decode(slots, &lens, &last);
        let picked = self.run(step, Some(slots))?;
        Ok(slots
            .iter()
            .zip(picked)
            .map(|(&slot, token)| self.accept(slot, token))
            .collect())
    }

    fn release(&mut self, slot: usize) {
        // Releasing a free or unknown slot changes nothing: there is nothing to free.
        if let Some(held) = self.slots.get_mut(slot)
            && held.take().is_some()
        {
            self.state.release(slot);
        }
    }

    fn kv_cache_bytes(&self) -> u64 {
        self.state.reserved_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_seeds_differ_per_id_and_keep_the_decodings_seed_at_id_zero() {
        assert_eq!(request_seed(42, 0), 42);
        let seeds: Vec<u64> = (0..1000).map(|id| request_seed(42, id)).collect();
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), seeds.len());
        assert_ne!(request_seed(42, 1), request_seed(43, 1));
    }
}
