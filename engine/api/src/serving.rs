//! The contract of continuous (iteration-level) batching: a running batch of KV slots that
//! requests join and leave one at a time, as vLLM, TGI and llama.cpp's server schedule them.
//! The engine decides what each iteration does (which requests are admitted, how many prompt
//! tokens each prefills, who decodes, who retires); the backend only executes it
//! ([`ServingBatch`]).
//!
//! Every call returns only after the device has finished its work (results are on the host),
//! so the caller may time it with a wall clock, as with [`crate::runtime::Generation`].

use crate::runtime::{Decoding, RuntimeError};

/// How a model is set up to serve a continuously batched workload.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// KV slots: sequences the running batch holds at most.
    pub max_batch: usize,
    /// Positions each slot holds: a request's prompt plus its new tokens must fit. A backend
    /// may reserve fewer where no request could use more (past the model's positions).
    pub slot_capacity: usize,
    /// EOS is ignored until a sequence has this many new tokens.
    pub min_new_tokens: usize,
    /// A sequence ends at EOS (false: it always generates its `max_new_tokens`).
    pub stop_at_eos: bool,
    /// Token selection; a sampled request draws from its own generator, seeded by the
    /// decoding's seed and the request's id, so its tokens do not depend on its neighbours.
    pub decoding: Decoding,
}

/// A request joining the running batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeRequest {
    /// The engine's id for it (seeds its sampler).
    pub id: u64,
    /// Prompt token ids, unpadded.
    pub prompt: Vec<u32>,
    /// Tokens it generates at most.
    pub max_new_tokens: usize,
}

/// One token a sequence produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotToken {
    /// The slot that produced it.
    pub slot: usize,
    /// The token.
    pub token: u32,
    /// True when the sequence has ended with it (EOS or its `max_new_tokens`); the slot
    /// decodes no more and waits for [`ServingBatch::release`].
    pub finished: bool,
}

/// A running batch of KV slots on one model.
///
/// A slot's life: [`admit`](Self::admit) reserves it for a request; [`prefill`](Self::prefill)
/// runs its prompt, whole or in chunks, the last chunk yielding its first token;
/// [`decode`](Self::decode) extends it one token per call, batched with the other slots named;
/// [`release`](Self::release) frees it (its KV positions are reused by the next request).
///
/// A call the batch refuses (a request that cannot fit, a slot in the wrong state) returns
/// [`RuntimeError::InvalidInput`] before anything runs, leaving the batch as it was. A
/// computation that fails part-way leaves the cache inconsistent: every later call errors.
pub trait ServingBatch {
    /// Slots in all ([`ServeOptions::max_batch`]).
    fn capacity(&self) -> usize;
    /// Slots held by requests now.
    fn occupied(&self) -> usize;
    /// Reserves a free slot for `request` and returns it; its prompt is validated (not empty,
    /// ids in the vocabulary, at least one new token, prompt plus new tokens within the slot).
    /// Errors when no slot is free.
    fn admit(&mut self, request: ServeRequest) -> Result<usize, RuntimeError>;
    /// Prompt tokens of `slot` not yet run (0 for a free slot).
    fn pending_prompt(&self, slot: usize) -> usize;
    /// Runs the next `tokens` prompt tokens of each `(slot, tokens)`: each slot held and named
    /// once, `tokens` from 1 to its pending ones (else the call is refused whole). A slot
    /// whose prompt is then complete yields its first token, in the order named; the others
    /// yield nothing.
    fn prefill(&mut self, chunks: &[(usize, usize)]) -> Result<Vec<SlotToken>, RuntimeError>;
    /// One decode step for each slot in `slots` (held, prefilled, not finished, named once),
    /// batched; one token per slot, in the order named.
    fn decode(&mut self, slots: &[usize]) -> Result<Vec<SlotToken>, RuntimeError>;
    /// Frees `slot` for the next request (a free slot, or one the batch lacks, is left as it
    /// is).
    fn release(&mut self, slot: usize);
    /// Bytes the KV cache holds reserved (all slots; constant while serving).
    fn kv_cache_bytes(&self) -> u64;
}
