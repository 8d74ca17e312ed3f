//! The continuous-batching scheduler ([`engine::serving`]) on a scripted clock against a fake
//! running batch that checks every call: admission first come, first served under the slot
//! and token limits, whole and chunked prefill, slot reuse, and the timings the request table
//! is built from.

use std::cell::RefCell;
use std::sync::Mutex;

use api::runtime::RuntimeError;
use api::serving::{ServeRequest, ServingBatch, SlotToken};
use engine::execute::Clock;
use engine::serving::{ServeOutcome, ServeWork, serve};
use engine::stage::{PrefillMode, ServeSpec};

/// A clock that moves only when told.
#[derive(Default)]
struct ScriptedClock(Mutex<f64>);

impl ScriptedClock {
    fn advance(&self, s: f64) {
        *self.0.lock().unwrap() += s;
    }
}

impl Clock for ScriptedClock {
    fn now_s(&self) -> f64 {
        *self.0.lock().unwrap()
    }
    fn sleep_s(&self, seconds: f64) {
        self.advance(seconds.max(0.0));
    }
}

/// One slot of the fake batch.
#[derive(Debug, Clone)]
struct Slot {
    request: u64,
    prompt: usize,
    run: usize,
    generated: usize,
    max_new: usize,
}

/// A running batch whose calls take scripted time: 1 ms per prompt token prefilled and
/// 10 ms per decode call. Token `k` of request `r` is `100 r + k`. It records, per call,
/// the tokens processed, and fails the test if the scheduler breaks a rule.
struct FakeBatch<'c> {
    clock: &'c ScriptedClock,
    slots: Vec<Option<Slot>>,
    budget: usize,
    /// Per iteration-phase call: (prefill tokens, decode tokens).
    calls: RefCell<Vec<(usize, usize)>>,
    admitted_slots: Vec<usize>,
    /// Tokens of the current iteration's prefill call (an iteration makes at most one,
    /// before its decode call).
    pending_prefill: usize,
    /// Whether the last call was a prefill (so a second one starts a new iteration).
    last_was_prefill: bool,
}

impl<'c> FakeBatch<'c> {
    fn new(clock: &'c ScriptedClock, capacity: usize, budget: usize) -> Self {
        FakeBatch {
            clock,
            slots: vec![None; capacity],
            budget,
            calls: RefCell::new(Vec::new()),
            admitted_slots: Vec::new(),
            pending_prefill: 0,
            last_was_prefill: false,
        }
    }
}

impl ServingBatch for FakeBatch<'_> {
    fn capacity(&self) -> usize {
        self.slots.len()
    }
    fn occupied(&self) -> usize {
        self.slots.iter().flatten().count()
    }
    fn admit(&mut self, request: ServeRequest) -> Result<usize, RuntimeError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| RuntimeError::InvalidInput("no free slot".into()))?;
        self.slots[slot] = Some(Slot {
            request: request.id,
            prompt: request.prompt.len(),
            run: 0,
            generated: 0,
            max_new: request.max_new_tokens,
        });
        self.admitted_slots.push(slot);
        Ok(slot)
    }
    fn pending_prompt(&self, slot: usize) -> usize {
        self.slots[slot].as_ref().map_or(0, |s| s.prompt - s.run)
    }
    fn prefill(&mut self, chunks: &[(usize, usize)]) -> Result<Vec<SlotToken>, RuntimeError> {
        let mut out = Vec::new();
        let mut tokens = 0;
        for &(slot, n) in chunks {
            let s = self.slots[slot].as_mut().expect("prefill of an empty slot");
            assert!(
                n > 0 && s.run + n <= s.prompt,
                "chunk {n} past the prompt {s:?}"
            );
            s.run += n;
            tokens += n;
            if s.run == s.prompt {
                s.generated = 1;
                out.push(SlotToken {
                    slot,
                    token: (s.request * 100) as u32,
                    finished: s.generated == s.max_new,
                });
            }
        }
        self.clock.advance(0.001 * tokens as f64);
        assert!(tokens <= self.budget, "prefill of {tokens} over the budget");
        self.pending_prefill = tokens;
        self.last_was_prefill = true;
        self.calls.borrow_mut().push((tokens, 0));
        Ok(out)
    }
    fn decode(&mut self, slots: &[usize]) -> Result<Vec<SlotToken>, RuntimeError> {
        let prefilled = if self.last_was_prefill {
            std::mem::take(&mut self.pending_prefill)
        } else {
            0
        };
        self.last_was_prefill = false;
        assert!(
            prefilled + slots.len() <= self.budget,
            "iteration over budget: {prefilled} prefill + {} decode > {}",
            slots.len(),
            self.budget
        );
        let mut out = Vec::new();
        for &slot in slots {
            let s = self.slots[slot].as_mut().expect("decode of an empty slot");
            assert!(
                s.run == s.prompt && s.generated < s.max_new,
                "bad decode {s:?}"
            );
            out.push(SlotToken {
                slot,
                token: (s.request * 100 + s.generated as u64) as u32,
                finished: s.generated + 1 == s.max_new,
            });
            s.generated += 1;
        }
        self.clock.advance(0.010);
        self.calls.borrow_mut().push((0, slots.len()));
        Ok(out)
    }
    fn release(&mut self, slot: usize) {
        let s = self.slots[slot].take().expect("release of an empty slot");
        assert_eq!(s.generated, s.max_new, "released before its end: {s:?}");
    }
    fn kv_cache_bytes(&self) -> u64 {
        1024
    }
}

fn run(
    prompts: &[usize],
    max_new: &[usize],
    arrivals: &[f64],
    spec: ServeSpec,
    capacity_check: usize,
) -> (ServeOutcome, Vec<usize>) {
    let clock = ScriptedClock::default();
    let mut batch = FakeBatch::new(&clock, spec.max_batch, spec.max_batch_tokens);
    let prompts: Vec<Vec<u32>> = prompts.iter().map(|&n| vec![1; n]).collect();
    let out = serve::<()>(
        &mut batch,
        &ServeWork {
            prompts: &prompts,
            max_new_tokens: max_new,
            arrivals,
            window_start_s: 0.0,
            spec: &spec,
        },
        &clock,
        &|| Ok(()),
        &|s| {
            clock.advance(s);
            Ok(())
        },
    )
    .unwrap();
    assert!(out.occupancy.iter().all(|o| o.running <= capacity_check));
    assert_eq!(batch.occupied(), 0, "every slot released at the end");
    (out, batch.admitted_slots)
}

fn spec(max_batch: usize, max_batch_tokens: usize, prefill: PrefillMode) -> ServeSpec {
    ServeSpec {
        max_batch,
        max_batch_tokens,
        prefill,
    }
}

#[test]
fn admission_is_first_come_first_served_within_slots_and_budget_and_slots_are_reused() {
    // Two slots, 8 tokens an iteration, whole prefill; four requests waiting at once.
    let (out, slots) = run(
        &[5, 5, 3, 3],
        &[2, 4, 1, 1],
        &[0.0; 4],
        spec(2, 8, PrefillMode::Whole),
        2,
    );
    // Iteration 0: r0 (5 tokens) fits, r1 (5 more) does not. Iteration 1: r0 decodes (1),
    // r1 fits in the 7 left. r0 ends at iteration 1; r2 and r3 need its slot.
    let iterations: Vec<usize> = out.requests.iter().map(|r| r.iteration).collect();
    assert_eq!(iterations[..2], [0, 1]);
    assert!(iterations[2] > 1 && iterations[3] >= iterations[2]);
    // Four requests through two slots: slots were reused.
    assert_eq!(slots.len(), 4);
    assert!(slots.iter().all(|&s| s < 2));
    // Every request got exactly its tokens, in order.
    for (r, (req, &n)) in out.requests.iter().zip(&[2usize, 4, 1, 1]).enumerate() {
        let want: Vec<u32> = (0..n).map(|k| (r * 100 + k) as u32).collect();
        assert_eq!(req.output_ids, want, "request {r}");
    }
}

#[test]
fn chunked_prefill_cuts_a_long_prompt_to_the_remaining_budget() {
    // One long prompt (10) while a short one decodes: budget 4 per iteration.
    let (out, _) = run(
        &[2, 10],
        &[6, 1],
        &[0.0, 0.0],
        spec(2, 4, PrefillMode::Chunked),
        2,
    );
    // Iteration 0: r0's 2 tokens, then 2 of r1's; later iterations: r0 decodes (1) and r1
    // gets 3 more each: 2 + 3 + 3 + 2 = 10, its first token at iteration 3.
    assert_eq!(out.requests[1].iteration, 0);
    assert_eq!(out.requests[1].output_ids, vec![100]);
    assert!(out.requests[0].token_s.len() == 6);
    // Whole prefill refuses the same workload: a 10-token prompt never fits a 4-token budget.
    let clock = ScriptedClock::default();
    let mut batch = FakeBatch::new(&clock, 2, 4);
    let prompts = vec![vec![1; 2], vec![1; 10]];
    let whole = spec(2, 4, PrefillMode::Whole);
    let err = serve::<()>(
        &mut batch,
        &ServeWork {
            prompts: &prompts,
            max_new_tokens: &[6, 1],
            arrivals: &[0.0, 0.0],
            window_start_s: 0.0,
            spec: &whole,
        },
        &clock,
        &|| Ok(()),
        &|_| Ok(()),
    )
    .expect_err("refused");
    assert!(format!("{err:?}").contains("max_batch_tokens"), "{err:?}");
}

#[test]
fn timings_follow_the_clock_and_idle_gaps_are_recorded() {
    // One slot; r0 arrives at 0, r1 at 1.0 s (long after r0 ended): the batch is idle between.
    let (out, _) = run(
        &[4, 2],
        &[3, 2],
        &[0.0, 1.0],
        spec(1, 16, PrefillMode::Whole),
        1,
    );
    let r0 = &out.requests[0];
    // Prefill 4 tokens: 4 ms; then two decode calls of 10 ms.
    assert_eq!(r0.admitted_s, 0.0);
    let t: Vec<f64> = r0.token_s.iter().map(|t| (t * 1e6).round() / 1e6).collect();
    assert_eq!(t, vec![0.004, 0.014, 0.024]);
    let r1 = &out.requests[1];
    assert_eq!(r1.arrival_s, 1.0);
    assert!((r1.admitted_s - 1.0).abs() < 1e-12);
    assert!((r1.token_s[0] - 1.002).abs() < 1e-9);
    assert_eq!(out.idle.len(), 1);
    let (a, b) = out.idle[0];
    assert!(
        (a - 0.024).abs() < 1e-9 && (b - 1.0).abs() < 1e-9,
        "{:?}",
        out.idle
    );
    assert!((out.prefill_s - 0.006).abs() < 1e-9);
    assert!((out.decode_s - 0.030).abs() < 1e-9);
}

#[test]
fn a_request_arriving_mid_decode_joins_the_running_batch() {
    // r1 arrives while r0 decodes: it is admitted at the next iteration, not after r0 ends.
    let (out, _) = run(
        &[2, 2],
        &[10, 2],
        &[0.0, 0.015],
        spec(2, 16, PrefillMode::Whole),
        2,
    );
    let r0_end = *out.requests[0].token_s.last().unwrap();
    assert!(out.requests[1].admitted_s < r0_end);
    assert!(*out.requests[1].token_s.last().unwrap() < r0_end);
    // Both ran in one batch for a while.
    assert!(out.occupancy.iter().any(|o| o.running == 2));
}
