//! Continuous batching (`LoadedModel::serve`, issue 29 "Serving under load"): requests joining
//! and leaving a running batch of KV slots generate exactly what each generates alone, on both
//! CPU passes and with sliding windows; the slots' cache is reserved once and reused; misuse
//! and requests that cannot fit are errors naming the figures; a sampled request's tokens do
//! not depend on its neighbours.

mod common;

use std::collections::VecDeque;

use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, LoadedModel, RuntimeError, WeightsKind,
};
use api::serving::{ServeOptions, ServeRequest, ServingBatch};
use common::*;

/// One request of a scripted workload: what it asks for and how the script runs it.
#[derive(Debug, Clone)]
struct Scripted {
    request: ServeRequest,
    /// The scheduling iteration it arrives at.
    arrives: usize,
    /// Prompt tokens per prefill call (the prompt runs in `ceil(len / chunk)` chunks).
    chunk: usize,
}

/// What a scripted run did, for the test to check it covered what it claims to.
#[derive(Debug, Default)]
struct Trace {
    /// Generated ids per request, in script order.
    tokens: Vec<Vec<u32>>,
    /// Slot each request was given, in script order.
    slots: Vec<usize>,
    /// Prefill calls made while another slot was mid-decode.
    prefills_beside_decodes: usize,
    /// Requests whose prompt ran in more than one chunk.
    chunked: usize,
    /// Largest number of slots decoded in one call.
    widest_decode: usize,
}

/// Runs `script` as an iteration-level scheduler would: every iteration releases the slots
/// whose request ended, admits arrived requests into free slots, runs one prompt chunk of each
/// slot still prefilling, then decodes every other live slot in one call. KV bytes must stay
/// constant throughout.
fn run_script(batch: &mut dyn ServingBatch, script: &[Scripted]) -> Trace {
    let mut trace = Trace {
        tokens: vec![Vec::new(); script.len()],
        slots: vec![usize::MAX; script.len()],
        ..Trace::default()
    };
    let kv = batch.kv_cache_bytes();
    let mut queue: VecDeque<usize> = VecDeque::new();
    // Per slot: the script index of its request and whether it has ended.
    let mut held: Vec<Option<(usize, bool)>> = vec![None; batch.capacity()];
    let mut next = 0;
    let mut chunks = vec![0usize; script.len()];
    for iteration in 0..10_000 {
        for (slot, entry) in held.iter_mut().enumerate() {
            if let Some((_, true)) = entry {
                batch.release(slot);
                *entry = None;
            }
        }
        while next < script.len() && script[next].arrives <= iteration {
            queue.push_back(next);
            next += 1;
        }
        while batch.occupied() < batch.capacity() {
            let Some(i) = queue.pop_front() else { break };
            let slot = batch.admit(script[i].request.clone()).unwrap();
            assert!(held[slot].is_none(), "slot {slot} given twice");
            held[slot] = Some((i, false));
            trace.slots[i] = slot;
        }
        let decoding: Vec<usize> = (0..held.len())
            .filter(|&s| matches!(held[s], Some((_, false))) && batch.pending_prompt(s) == 0)
            .collect();
        let chunks_now: Vec<(usize, usize)> = (0..held.len())
            .filter(|&s| batch.pending_prompt(s) > 0)
            .map(|s| {
                let (i, _) = held[s].unwrap();
                (s, script[i].chunk.min(batch.pending_prompt(s)))
            })
            .collect();
        if !chunks_now.is_empty() {
            if !decoding.is_empty() {
                trace.prefills_beside_decodes += 1;
            }
            for &(slot, _) in &chunks_now {
                chunks[held[slot].unwrap().0] += 1;
            }
            for token in batch.prefill(&chunks_now).unwrap() {
                let entry = held[token.slot].as_mut().unwrap();
                trace.tokens[entry.0].push(token.token);
                entry.1 = token.finished;
            }
        }
        if !decoding.is_empty() {
            trace.widest_decode = trace.widest_decode.max(decoding.len());
            let tokens = batch.decode(&decoding).unwrap();
            assert_eq!(tokens.iter().map(|t| t.slot).collect::<Vec<_>>(), decoding);
            for token in tokens {
                let entry = held[token.slot].as_mut().unwrap();
                trace.tokens[entry.0].push(token.token);
                entry.1 = token.finished;
            }
        }
        assert_eq!(batch.kv_cache_bytes(), kv, "the slots' cache changed size");
        if next == script.len() && queue.is_empty() && held.iter().all(Option::is_none) {
            trace.chunked = chunks.iter().filter(|&&c| c > 1).count();
            return trace;
        }
    }
    panic!("the script did not finish");
}

/// Prompts of several lengths from a fixture's golden prompts and continuations: the golden
/// prompts, a prompt past every fixture's sliding window (8 for Mistral, 6 for Gemma 2), and
/// short ones.
fn prompts(model: &str) -> Vec<Vec<u32>> {
    let golden = golden(model);
    let cases = golden["prompts"].as_array().unwrap();
    let prompt = |i: usize| ids(&cases[i]["input_ids"]);
    let continued = |i: usize, n: usize| {
        let mut p = prompt(i);
        p.extend(&ids(&cases[i]["greedy_new_ids"])[..n]);
        p
    };
    vec![
        prompt(0),
        continued(1, 9),
        vec![1],
        prompt(2),
        continued(0, 15),
        vec![1, 317],
        prompt(1),
    ]
}

/// The scripted workload on `model`'s prompts: seven requests through three slots, arriving
/// while others decode, with different prompt lengths, caps and chunk sizes (whole prompts,
/// two chunks and three), so slots are freed early and reused.
fn script(model: &str) -> Vec<Scripted> {
    // (arrives, max_new_tokens, chunk) per prompt of `prompts`.
    let plan = [
        (0, 16, 5),
        (2, 3, 7),
        (3, 1, 1),
        (3, 16, 2),
        (6, 12, 7),
        (9, 5, 2),
        (10, 6, 3),
    ];
    prompts(model)
        .into_iter()
        .zip(plan)
        .enumerate()
        .map(
            |(id, (prompt, (arrives, max_new_tokens, chunk)))| Scripted {
                request: ServeRequest {
                    id: id as u64,
                    prompt,
                    max_new_tokens,
                },
                arrives,
                chunk,
            },
        )
        .collect()
}

fn serve_options(min_new_tokens: usize, stop_at_eos: bool) -> ServeOptions {
    ServeOptions {
        max_batch: 3,
        slot_capacity: 48,
        min_new_tokens,
        stop_at_eos,
        decoding: Decoding::Greedy,
    }
}

/// Every request of the script generates what `start` generates for it alone.
fn check_against_solo_runs(model: &str, min_new_tokens: usize) -> Vec<(Compute, Trace)> {
    let options = serve_options(min_new_tokens, true);
    let script = script(model);
    let mut traces = Vec::new();
    for (compute, loaded) in load_f32_each_forward(model) {
        let mut batch = loaded.serve(&options).unwrap();
        let trace = run_script(batch.as_mut(), &script);
        drop(batch);
        for (i, s) in script.iter().enumerate() {
            let solo = GenerateOptions {
                max_new_tokens: s.request.max_new_tokens,
                min_new_tokens,
                stop_at_eos: true,
                decoding: Decoding::Greedy,
            };
            let (alone, _) = generate(&loaded, std::slice::from_ref(&s.request.prompt), &solo);
            assert_eq!(
                trace.tokens[i],
                alone[0],
                "{model} on {compute:?}: request {i} (prompt of {}, slot {})",
                s.request.prompt.len(),
                trace.slots[i]
            );
        }
        // The script did what it claims: requests joined mid-decode, prompts ran in chunks,
        // slots were reused and decoded together.
        assert!(trace.prefills_beside_decodes >= 3, "{trace:?}");
        assert!(trace.chunked >= 4, "{trace:?}");
        assert_eq!(trace.widest_decode, 3, "{trace:?}");
        let mut reused = trace.slots.clone();
        reused.sort_unstable();
        reused.dedup();
        assert!(reused.len() < trace.slots.len(), "{trace:?}");
        traces.push((compute, trace));
    }
    traces
}

#[test]
fn requests_joining_and_leaving_generate_what_they_generate_alone_on_tiny_stories() {
    check_against_solo_runs("tiny-stories", 0);
}

#[test]
fn requests_joining_and_leaving_generate_what_they_generate_alone_on_tiny_llama3_gqa() {
    let golden = golden("tiny-llama3-gqa");
    let eos_at = golden["prompts"][2]["greedy_first_eos_index"]
        .as_u64()
        .unwrap() as usize;
    for (compute, trace) in check_against_solo_runs("tiny-llama3-gqa", 0) {
        // Request 3 (golden prompt 2, up to 16 tokens) retires at its EOS.
        assert_eq!(trace.tokens[3].len(), eos_at + 1, "{compute:?}");
        assert_eq!(trace.tokens[3][eos_at], 2, "{compute:?}");
    }
    // EOS held back until 14 new tokens: the request runs past it, as alone.
    for (compute, trace) in check_against_solo_runs("tiny-llama3-gqa", 14) {
        assert!(trace.tokens[3].len() > eos_at + 1, "{compute:?}");
        assert!(!trace.tokens[3][..14].contains(&2), "{compute:?}");
    }
}

/// Mistral's and Gemma 2's sliding windows hide keys by position inside each slot, in chunks
/// that start mid-prompt and in decode steps whose slots have different lengths.
#[test]
fn sliding_windows_hold_in_each_slot_on_tiny_mistral_and_tiny_gemma2() {
    for model in ["tiny-mistral", "tiny-gemma2"] {
        check_against_solo_runs(model, 0);
    }
}

/// The other families' blocks (q/k/v biases, per-head q/k norms, partial rotary, fused
/// projections) run per row, whatever slot the row reads.
#[test]
fn every_other_family_serves_what_it_generates_alone() {
    for model in ["tiny-qwen2", "tiny-qwen3", "tiny-phi3"] {
        check_against_solo_runs(model, 0);
    }
}

#[test]
fn the_slots_cache_is_reserved_once_and_reused() {
    for (compute, model) in load_f32_each_forward("tiny-stories") {
        let options = ServeOptions {
            max_batch: 2,
            slot_capacity: 16,
            ..serve_options(0, false)
        };
        let mut batch = model.serve(&options).unwrap();
        assert_eq!((batch.capacity(), batch.occupied()), (2, 0));
        let kv = batch.kv_cache_bytes();
        // 5 layers × K and V × 2 slots × 4 KV heads × 8 values × 4 bytes per position; the
        // host kernels round each slot up to whole 16-key blocks (16 already).
        assert_eq!(kv, 5 * 2 * 2 * 4 * 8 * 4 * 16, "{compute:?}");
        let request = |id, prompt: Vec<u32>, max_new_tokens| ServeRequest {
            id,
            prompt,
            max_new_tokens,
        };
        let a = batch.admit(request(1, vec![1, 403, 407], 4)).unwrap();
        let b = batch.admit(request(2, vec![1, 291], 4)).unwrap();
        assert_ne!(a, b);
        let full = batch.admit(request(3, vec![1], 4)).unwrap_err();
        assert!(
            matches!(&full, RuntimeError::InvalidInput(m)
                if m == "all 2 slots are held; release one before admitting request 3"),
            "{full:?}"
        );
        batch.prefill(&[(a, 3), (b, 2)]).unwrap();
        batch.decode(&[a, b]).unwrap();
        batch.release(a);
        assert_eq!(batch.occupied(), 1);
        // The freed slot takes the next request, whose prompt starts at its position 0.
        let c = batch.admit(request(3, vec![1, 317, 391], 4)).unwrap();
        assert_eq!(c, a);
        let first = batch.prefill(&[(c, 3)]).unwrap();
        let (alone, _) = generate(&model, &[vec![1, 317, 391]], &greedy(4));
        assert_eq!(first[0].token, alone[0][0], "{compute:?}");
        assert_eq!(batch.kv_cache_bytes(), kv);
        // Releasing a free slot, or one the batch lacks, changes nothing.
        batch.release(a);
        batch.release(a);
        batch.release(99);
        assert_eq!(batch.occupied(), 1);
        assert_eq!(batch.kv_cache_bytes(), kv);
    }
}

#[test]
fn requests_that_cannot_fit_and_misplaced_calls_are_refused_naming_the_figures() {
    let model = load("tiny-stories", DType::F32);
    let options = ServeOptions {
        max_batch: 2,
        slot_capacity: 16,
        ..serve_options(0, false)
    };
    let mut batch = model.serve(&options).unwrap();
    let message = |e: RuntimeError| match e {
        RuntimeError::InvalidInput(m) => m,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    let request = |id, prompt: Vec<u32>, max_new_tokens| ServeRequest {
        id,
        prompt,
        max_new_tokens,
    };
    let cases = [
        (
            request(7, vec![1; 10], 8),
            "request 7 has 10 prompt tokens; with 8 new tokens that exceeds a slot's 16 positions",
        ),
        (request(8, Vec::new(), 8), "request 8 has an empty prompt"),
        (
            request(9, vec![1], 0),
            "request 9 asks for no new tokens (max_new_tokens is 0)",
        ),
        (
            request(10, vec![1, 512], 2),
            "request 10's prompt contains token id 512, outside the vocabulary of 512",
        ),
    ];
    for (bad, expected) in cases {
        assert_eq!(message(batch.admit(bad).unwrap_err()), expected);
    }
    assert_eq!(batch.occupied(), 0, "a refused request holds no slot");
    // The request sits in slot 1, slot 0 left free.
    let filler = batch.admit(request(2, vec![1], 12)).unwrap();
    let slot = batch.admit(request(1, vec![1, 403, 407, 261], 12)).unwrap();
    assert_eq!((filler, slot), (0, 1));
    batch.release(filler);
    type Call = Box<dyn Fn(&mut dyn ServingBatch) -> RuntimeError>;
    let calls: [(&str, Call); 6] = [
        (
            "slot 1 cannot decode: 4 of its prompt tokens have not run",
            Box::new(|b| b.decode(&[1]).unwrap_err()),
        ),
        (
            "a prefill chunk of 5 tokens for slot 1, which has 4 prompt tokens pending",
            Box::new(|b| b.prefill(&[(1, 5)]).unwrap_err()),
        ),
        (
            "a prefill chunk of 0 tokens for slot 1, which has 4 prompt tokens pending",
            Box::new(|b| b.prefill(&[(1, 0)]).unwrap_err()),
        ),
        (
            "slot 1 is named twice in one call",
            Box::new(|b| b.prefill(&[(1, 1), (1, 1)]).unwrap_err()),
        ),
        (
            "slot 0 holds no request",
            Box::new(|b| b.decode(&[0]).unwrap_err()),
        ),
        (
            "slot 2 is not one of the batch's 2 slots",
            Box::new(|b| b.prefill(&[(2, 1)]).unwrap_err()),
        ),
    ];
    for (expected, call) in &calls {
        assert_eq!(message(call(batch.as_mut())), *expected);
    }
    // Refused calls leave the batch as it was: the request still runs, and ends at its cap.
    batch.prefill(&[(slot, 4)]).unwrap();
    let mut tokens = 1;
    while !batch.decode(&[slot]).unwrap()[0].finished {
        tokens += 1;
    }
    assert_eq!(tokens + 1, 12);
    assert_eq!(
        message(batch.decode(&[slot]).unwrap_err()),
        "slot 1 has finished its request; release it"
    );
    // A batch with no slot, or slots of no position, is refused up front.
    for (max_batch, slot_capacity, expected) in [
        (
            0,
            16,
            "a serving batch needs at least one slot (max_batch is 0)",
        ),
        (
            1,
            0,
            "a slot needs room for at least one position (slot_capacity is 0)",
        ),
    ] {
        let options = ServeOptions {
            max_batch,
            slot_capacity,
            ..serve_options(0, false)
        };
        assert_eq!(message(model.serve(&options).err().unwrap()), expected);
    }
}

/// Slots asked longer than the model's positions hold only those (no request can use more),
/// and a request past them is refused naming the model's limit.
#[test]
fn slots_hold_at_most_the_models_positions() {
    let model = load("tiny-stories", DType::F32);
    let options = |slot_capacity| ServeOptions {
        max_batch: 1,
        slot_capacity,
        ..serve_options(0, false)
    };
    let capped = model.serve(&options(2048)).unwrap();
    let exact = model.serve(&options(512)).unwrap();
    assert_eq!(capped.kv_cache_bytes(), exact.kv_cache_bytes());
    drop((capped, exact));
    let mut batch = model.serve(&options(2048)).unwrap();
    let err = batch
        .admit(ServeRequest {
            id: 4,
            prompt: vec![1; 500],
            max_new_tokens: 13,
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid generation input: request 4 has 500 prompt tokens; with 13 new tokens that exceeds the model's 512 positions"
    );
    let fits = batch.admit(ServeRequest {
        id: 5,
        prompt: vec![1; 500],
        max_new_tokens: 12,
    });
    assert_eq!(fits.unwrap(), 0);
}

#[test]
fn a_slots_cache_beyond_the_memory_limit_is_refused_before_it_is_allocated() {
    let spec = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    let model = runtime()
        .with_memory_limit(Some(64 << 20))
        .load_model(&spec)
        .unwrap();
    let options = ServeOptions {
        max_batch: 4096,
        slot_capacity: 512,
        ..serve_options(0, false)
    };
    match model.serve(&options).err() {
        Some(RuntimeError::OutOfMemory { what, .. }) => assert_eq!(
            what,
            "the KV cache of tiny-stories (4096 sequences × 512 positions)"
        ),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

/// Sampled tokens of each request of `mix` (ids and prompts, admitted in order, prefilled
/// together in chunks of at most `chunk` tokens, decoded together until all end).
fn sampled(
    model: &dyn LoadedModel,
    decoding: &Decoding,
    mix: &[(u64, Vec<u32>)],
    chunk: usize,
) -> Vec<Vec<u32>> {
    let options = ServeOptions {
        max_batch: 4,
        slot_capacity: 32,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: decoding.clone(),
    };
    let mut batch = model.serve(&options).unwrap();
    let slots: Vec<usize> = mix
        .iter()
        .map(|(id, prompt)| {
            batch
                .admit(ServeRequest {
                    id: *id,
                    prompt: prompt.clone(),
                    max_new_tokens: 12,
                })
                .unwrap()
        })
        .collect();
    let mut out = vec![Vec::new(); mix.len()];
    loop {
        let chunks: Vec<(usize, usize)> = slots
            .iter()
            .map(|&s| (s, batch.pending_prompt(s).min(chunk)))
            .filter(|&(_, n)| n > 0)
            .collect();
        if chunks.is_empty() {
            break;
        }
        for token in batch.prefill(&chunks).unwrap() {
            out[slots.iter().position(|&s| s == token.slot).unwrap()].push(token.token);
        }
    }
    for _ in 1..12 {
        for token in batch.decode(&slots).unwrap() {
            out[slots.iter().position(|&s| s == token.slot).unwrap()].push(token.token);
        }
    }
    out
}

#[test]
fn a_sampled_requests_tokens_do_not_depend_on_its_neighbours() {
    let prompts = prompts("tiny-stories");
    let mine = prompts[0].clone();
    // Untruncated sampling (drawn where the logits are) and top-k/top-p (on the host).
    for (top_k, top_p) in [(0, 1.0), (40, 0.95)] {
        let decoding = Decoding::Sample {
            temperature: 1.5,
            top_k,
            top_p,
            seed: 11,
        };
        for (compute, model) in load_f32_each_forward("tiny-stories") {
            let alone = sampled(&model, &decoding, &[(5, mine.clone())], usize::MAX);
            // In a mix of three it sits in slot 1, among other prompts, its prompt run in
            // chunks of two.
            let mix = sampled(
                &model,
                &decoding,
                &[
                    (9, prompts[1].clone()),
                    (5, mine.clone()),
                    (3, prompts[4].clone()),
                ],
                2,
            );
            assert_eq!(mix[1], alone[0], "{compute:?} top_k {top_k}");
            // Another id draws otherwise: the seed is the request's, not the batch's.
            let other = sampled(&model, &decoding, &[(6, mine.clone())], usize::MAX);
            assert_ne!(other[0], alone[0], "{compute:?} top_k {top_k}");
        }
    }
}
