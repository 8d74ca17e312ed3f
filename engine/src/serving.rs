//! The iteration-level scheduler of `infer(..., #{ serve: #{...} })`: continuous batching as
//! vLLM, TGI and llama.cpp's server do it. Requests queue as they arrive; every iteration the
//! running batch admits queued requests first come, first served while it has a free KV slot
//! and the iteration's token budget allows, prefills them (whole or in chunks), decodes every
//! running sequence one token, and retires the sequences that ended, whose slots the next
//! requests reuse. The backend only executes what is decided here
//! ([`api::serving::ServingBatch`]).
//!
//! Timestamps are read after each backend call, which returns once the device has finished,
//! so a token's time is when it exists on the host.

use std::collections::VecDeque;

use crate::execute::Clock;
use crate::stage::{PrefillMode, ServeSpec};
use api::runtime::RuntimeError;
use api::serving::{ServeRequest, ServingBatch, SlotToken};

/// What the scheduler serves: the requests, and when each arrives.
#[derive(Debug, Clone, Copy)]
pub struct ServeWork<'w> {
    /// Prompt token ids, one per request.
    pub prompts: &'w [Vec<u32>],
    /// New tokens each request generates at most.
    pub max_new_tokens: &'w [usize],
    /// Arrival of each request, seconds after the window opened, non-decreasing.
    pub arrivals: &'w [f64],
    /// When the timed window opened, on the clock.
    pub window_start_s: f64,
    /// The scheduler's limits.
    pub spec: &'w ServeSpec,
}

/// One request's life in the running batch, on the clock (absolute seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedRequest {
    /// When it arrived.
    pub arrival_s: f64,
    /// When the scheduler admitted it to a slot (the start of that iteration).
    pub admitted_s: f64,
    /// The iteration that admitted it.
    pub iteration: usize,
    /// When each of its tokens reached the host.
    pub token_s: Vec<f64>,
    /// Its tokens.
    pub output_ids: Vec<u32>,
}

/// The running batch after an iteration, for the samples table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Occupancy {
    /// Seconds after the window opened.
    pub t_s: f64,
    /// Sequences in the running batch (slots held).
    pub running: usize,
    /// Requests arrived and waiting for a slot.
    pub queued: usize,
}

/// What serving a workload produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServeOutcome {
    /// Per request, in request order.
    pub requests: Vec<ServedRequest>,
    /// After every iteration that changed it (a step function: each holds until the next).
    pub occupancy: Vec<Occupancy>,
    /// Iterations run.
    pub iterations: usize,
    /// Seconds inside prefill calls.
    pub prefill_s: f64,
    /// Seconds inside decode calls.
    pub decode_s: f64,
    /// Seconds the scheduler spent deciding (admission, budgets, bookkeeping), outside the
    /// backend's calls.
    pub schedule_s: f64,
    /// Intervals with no request in flight (nothing running or queued), seconds after the
    /// window opened.
    pub idle: Vec<(f64, f64)>,
    /// When the last token reached the host (absolute), if any did.
    pub end_s: Option<f64>,
}

/// Why serving stopped early: a backend error, or what the caller's `check`/`wait` said.
#[derive(Debug)]
pub enum ServeStop<F> {
    /// The backend failed.
    Runtime(RuntimeError),
    /// The caller stopped it (a cancel).
    Caller(F),
}

impl<F> From<RuntimeError> for ServeStop<F> {
    fn from(e: RuntimeError) -> Self {
        ServeStop::Runtime(e)
    }
}

/// Serves `work` on `batch`. `check` is called before every iteration and `wait` waits for
/// the next arrival when nothing is in flight; either may stop serving.
pub fn serve<F>(
    batch: &mut dyn ServingBatch,
    work: &ServeWork<'_>,
    clock: &dyn Clock,
    check: &dyn Fn() -> Result<(), F>,
    wait: &dyn Fn(f64) -> Result<(), F>,
) -> Result<ServeOutcome, ServeStop<F>> {
    let n = work.prompts.len();
    let spec = work.spec;
    if spec.prefill == PrefillMode::Whole
        && let Some((i, p)) = work
            .prompts
            .iter()
            .enumerate()
            .find(|(_, p)| p.len() > spec.max_batch_tokens)
    {
        return Err(ServeStop::Runtime(RuntimeError::InvalidInput(format!(
            "request {i}'s prompt has {} tokens, more than serve's max_batch_tokens ({}): with prefill \"whole\" it could never be admitted (raise max_batch_tokens, or use prefill: \"chunked\")",
            p.len(),
            spec.max_batch_tokens
        ))));
    }
    let mut out = ServeOutcome {
        requests: (0..n)
            .map(|i| ServedRequest {
                arrival_s: work.window_start_s + work.arrivals[i],
                admitted_s: f64::NAN,
                iteration: 0,
                token_s: Vec::new(),
                output_ids: Vec::new(),
            })
            .collect(),
        ..ServeOutcome::default()
    };
    let mut request_of_slot: Vec<Option<usize>> = vec![None; batch.capacity()];
    let mut queue: VecDeque<usize> = VecDeque::new();
    let mut next = 0;
    // Slots whose prompt is still being prefilled, and slots decoding, both in admission
    // order (first come, first served).
    let mut prefilling: Vec<usize> = Vec::new();
    let mut decoding: Vec<usize> = Vec::new();
    loop {
        check().map_err(ServeStop::Caller)?;
        let now = clock.now_s();
        let started = now;
        while next < n && out.requests[next].arrival_s <= now {
            queue.push_back(next);
            next += 1;
        }
        if queue.is_empty() && prefilling.is_empty() && decoding.is_empty() {
            if next == n {
                break;
            }
            let until = out.requests[next].arrival_s;
            out.idle
                .push((now - work.window_start_s, until - work.window_start_s));
            wait(until - now).map_err(ServeStop::Caller)?;
            continue;
        }
        // One token per decoding sequence first; prompts share what is left.
        let decode_now = decoding.clone();
        let mut budget = spec.max_batch_tokens.saturating_sub(decode_now.len());
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        for &slot in &prefilling {
            let take = batch.pending_prompt(slot).min(budget);
            if take > 0 {
                chunks.push((slot, take));
                budget -= take;
            }
        }
        while let Some(&r) = queue.front() {
            let len = work.prompts[r].len();
            let fits = match spec.prefill {
                PrefillMode::Whole => len <= budget,
                PrefillMode::Chunked => budget > 0,
            };
            if batch.occupied() >= batch.capacity() || !fits {
                break;
            }
            queue.pop_front();
            let slot = batch.admit(ServeRequest {
                id: r as u64,
                prompt: work.prompts[r].clone(),
                max_new_tokens: work.max_new_tokens[r],
            })?;
            if let Some(cell) = request_of_slot.get_mut(slot) {
                *cell = Some(r);
            }
            out.requests[r].admitted_s = started;
            out.requests[r].iteration = out.iterations;
            let take = len.min(budget);
            chunks.push((slot, take));
            budget -= take;
            prefilling.push(slot);
        }
        out.schedule_s += clock.now_s() - started;

        let mut produced: Vec<(SlotToken, f64)> = Vec::new();
        if !chunks.is_empty() {
            let t0 = clock.now_s();
            let tokens = batch.prefill(&chunks)?;
            let t1 = clock.now_s();
            out.prefill_s += t1 - t0;
            produced.extend(tokens.into_iter().map(|t| (t, t1)));
        }
        if !decode_now.is_empty() {
            let t0 = clock.now_s();
            let tokens = batch.decode(&decode_now)?;
            let t1 = clock.now_s();
            out.decode_s += t1 - t0;
            produced.extend(tokens.into_iter().map(|t| (t, t1)));
        }
        let bookkeeping = clock.now_s();
        for (token, at) in produced {
            let Some(r) = request_of_slot.get(token.slot).copied().flatten() else {
                return Err(ServeStop::Runtime(RuntimeError::InvalidInput(format!(
                    "the backend returned a token for slot {}, which holds no request",
                    token.slot
                ))));
            };
            let request = &mut out.requests[r];
            request.token_s.push(at);
            request.output_ids.push(token.token);
            out.end_s = Some(out.end_s.map_or(at, |e: f64| e.max(at)));
            prefilling.retain(|&s| s != token.slot);
            if token.finished {
                decoding.retain(|&s| s != token.slot);
                batch.release(token.slot);
                request_of_slot[token.slot] = None;
            } else if !decoding.contains(&token.slot) {
                decoding.push(token.slot);
            }
        }
        out.iterations += 1;
        // Only changes are kept: the series is a step function, and a long run at a steady
        // occupancy would otherwise hold one record per iteration.
        let (running, queued) = (batch.occupied(), queue.len());
        if out
            .occupancy
            .last()
            .is_none_or(|o| (o.running, o.queued) != (running, queued))
        {
            out.occupancy.push(Occupancy {
                t_s: clock.now_s() - work.window_start_s,
                running,
                queued,
            });
        }
        out.schedule_s += clock.now_s() - bookkeeping;
    }
    Ok(out)
}
