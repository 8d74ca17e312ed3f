//! The engine's analytic FLOPs against the matrix products the model actually executes.

mod common;

use api::runtime::{DType, LoadedModel, QuantMethod, Quantization, WeightsKind};
use common::*;

/// Generates from each prompt alone (no padding) and compares executed with analytic FLOPs.
fn check(model: &backends::BurnModel, prompts: &[Vec<u32>], new_tokens: usize) {
    for prompt in prompts {
        let before = model.executed_flops();
        let (out, _) = generate(model, std::slice::from_ref(prompt), &greedy(new_tokens));
        let executed = model.executed_flops() - before;
        let (prefill, decode) =
            engine::flops::generation(model.info(), prompt.len() as u64, out[0].len() as u64);
        assert_eq!(
            executed,
            prefill + decode,
            "{}: prompt of {} tokens, {} new",
            model.info().name,
            prompt.len(),
            out[0].len()
        );
    }
}

/// Every bundled model, one per family (a sliding window counts the keys it hides, as padding
/// does: the products run over them).
#[test]
fn analytic_flops_equal_the_executed_matmuls_on_every_bundled_model() {
    for name in BUNDLED_MODELS {
        for (forward, model) in load_f32_each_forward(name) {
            let prompts = vec![vec![1, 2, 3, 4, 5, 6, 7], vec![1, 9]];
            eprintln!("{name} on {forward:?}");
            check(&model, &prompts, 6);
        }
    }
}

#[test]
fn quantization_and_half_precision_execute_the_same_flops() {
    let runtime = runtime();
    let mut spec = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    spec.quantization = Some(Quantization {
        method: QuantMethod::Int4,
        block_size: 32,
    });
    let quantized = runtime.load_model(&spec).unwrap();
    check(&quantized, &[vec![1, 2, 3, 4]], 5);
    let half = load("tiny-stories", DType::BF16);
    check(&half, &[vec![1, 2, 3, 4]], 5);
}

#[test]
fn a_batch_without_padding_executes_the_sum_of_its_sequences() {
    let model = load("tiny-llama3-gqa", DType::F32);
    let prompts = vec![vec![1, 2, 3], vec![4, 5, 6]];
    let before = model.executed_flops();
    let (out, _) = generate(&model, &prompts, &greedy(4));
    let executed = model.executed_flops() - before;
    let analytic: u64 = prompts
        .iter()
        .zip(&out)
        .map(|(p, o)| {
            let (a, b) = engine::flops::generation(model.info(), p.len() as u64, o.len() as u64);
            a + b
        })
        .sum();
    assert_eq!(executed, analytic);
}
