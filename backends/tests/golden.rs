//! Logits, greedy continuations and token ids against transformers' float32 outputs stored in
//! each bundled model's `golden.json`.

mod common;

use api::runtime::{Compute, DType, LoadedModel};
use backends::{BurnModel, LogitPositions};
use common::*;

/// Max abs logit error allowed against transformers float32 (both are f32 computations that
/// differ only in summation order).
const LOGIT_TOLERANCE: f32 = 1e-4;

const MODELS: [&str; 7] = BUNDLED_MODELS;

/// Every bundled model in f32 on each CPU forward pass: both must reproduce transformers.
fn each_model_and_forward() -> Vec<(&'static str, Compute, BurnModel)> {
    MODELS
        .into_iter()
        .flat_map(|name| {
            load_f32_each_forward(name)
                .into_iter()
                .map(move |(forward, model)| (name, forward, model))
        })
        .collect()
}

#[test]
fn last_and_all_position_logits_match_golden() {
    for (name, forward, model) in each_model_and_forward() {
        let golden = golden(name);
        let mut worst = 0.0f32;
        for case in golden["prompts"].as_array().unwrap() {
            let prompt = ids(&case["input_ids"]);
            let last = model
                .logits(std::slice::from_ref(&prompt), LogitPositions::Last)
                .unwrap();
            let err = max_abs_diff(&last[0][0], &floats(&case["last_logits"]));
            worst = worst.max(err);
            let all = model
                .logits(std::slice::from_ref(&prompt), LogitPositions::All)
                .unwrap();
            let expected = case["logits_all_positions"].as_array().unwrap();
            assert_eq!(all[0].len(), expected.len());
            for (row, exp) in all[0].iter().zip(expected) {
                worst = worst.max(max_abs_diff(row, &floats(exp)));
            }
        }
        eprintln!("{name} on {forward:?}: max abs logit error vs transformers = {worst:e}");
        assert!(
            worst <= LOGIT_TOLERANCE,
            "{name} on {forward:?}: max abs error {worst}"
        );
    }
}

/// Prefixes of the golden prompts, of different lengths, in one left-padded batch: each prefix's
/// logits must equal transformers' logits at that position of the full prompt.
#[test]
fn mixed_length_batch_logits_match_golden() {
    for (name, forward, model) in each_model_and_forward() {
        let golden = golden(name);
        let cases = golden["prompts"].as_array().unwrap();
        let mut prompts = Vec::new();
        let mut expected = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let full = ids(&case["input_ids"]);
            let len = full.len() - i.min(full.len() - 1); // 5, 4, 3 tokens
            prompts.push(full[..len].to_vec());
            expected.push(&case["logits_all_positions"].as_array().unwrap()[..len]);
        }
        prompts.push(vec![1]); // BOS alone: the widest padding
        expected.push(&cases[0]["logits_all_positions"].as_array().unwrap()[..1]);
        let all = model.logits(&prompts, LogitPositions::All).unwrap();
        let mut worst = 0.0f32;
        for (rows, exp) in all.iter().zip(&expected) {
            assert_eq!(rows.len(), exp.len());
            for (row, e) in rows.iter().zip(exp.iter()) {
                worst = worst.max(max_abs_diff(row, &floats(e)));
            }
        }
        eprintln!("{name} on {forward:?}: mixed batch max abs logit error = {worst:e}");
        assert!(
            worst <= LOGIT_TOLERANCE,
            "{name} on {forward:?}: max abs error {worst}"
        );
    }
}

#[test]
fn greedy_continuations_match_golden_alone_and_batched() {
    for (name, forward, model) in each_model_and_forward() {
        let golden = golden(name);
        let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
        let cases = golden["prompts"].as_array().unwrap();
        let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["input_ids"])).collect();
        let expected: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["greedy_new_ids"])).collect();
        for (prompt, exp) in prompts.iter().zip(&expected) {
            let (got, _) = generate(&model, std::slice::from_ref(prompt), &greedy(steps));
            assert_eq!(
                &got[0], exp,
                "{name} on {forward:?}: prompt {prompt:?} alone"
            );
        }
        let (batched, _) = generate(&model, &prompts, &greedy(steps));
        assert_eq!(
            batched, expected,
            "{name} on {forward:?}: all prompts as one batch"
        );
    }
}

/// Golden prompts mixed with longer and shorter ones in one batch: the golden ones still give
/// transformers' tokens and the others give what they give alone.
#[test]
fn mixed_length_greedy_batch_matches_single_runs() {
    for (name, forward, model) in each_model_and_forward() {
        let golden = golden(name);
        let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
        let cases = golden["prompts"].as_array().unwrap();
        let long = model.encode("It was 3:45pm. \"Yes,\" she said.").unwrap();
        let prompts = vec![
            ids(&cases[0]["input_ids"]),
            long.clone(),
            vec![1],
            ids(&cases[2]["input_ids"]),
        ];
        let (batched, _) = generate(&model, &prompts, &greedy(steps));
        assert_eq!(
            batched[0],
            ids(&cases[0]["greedy_new_ids"]),
            "{name} on {forward:?}"
        );
        assert_eq!(
            batched[3],
            ids(&cases[2]["greedy_new_ids"]),
            "{name} on {forward:?}"
        );
        for i in [1, 2] {
            let (alone, _) = generate(&model, &prompts[i..=i], &greedy(steps));
            assert_eq!(batched[i], alone[0], "{name} on {forward:?}: prompt {i}");
        }
    }
}

#[test]
fn tokenizer_matches_golden() {
    for name in MODELS {
        let model = load(name, DType::F32);
        let golden = golden(name);
        for case in golden["tokenizer_cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let expected = ids(&case["ids"]);
            assert_eq!(model.encode(text).unwrap(), expected, "{name}: {text:?}");
            assert_eq!(
                model.decode(&expected).unwrap(),
                case["decoded"].as_str().unwrap(),
                "{name}: decode {text:?}"
            );
        }
    }
}
