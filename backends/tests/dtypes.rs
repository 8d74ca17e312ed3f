//! Half-precision runs of tiny-stories against its float32 run.

mod common;

use api::runtime::{DType, LoadedModel};
use backends::LogitPositions;
use common::*;

fn logits(dtype: DType, prompts: &[Vec<u32>]) -> Vec<Vec<f32>> {
    load("tiny-stories", dtype)
        .logits(prompts, LogitPositions::Last)
        .unwrap()
        .into_iter()
        .map(|mut rows| rows.remove(0))
        .collect()
}

fn prompts() -> Vec<Vec<u32>> {
    let golden = golden("tiny-stories");
    golden["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids(&c["input_ids"]))
        .collect()
}

/// Max abs error of a dtype's logits against f32 over the golden prompts.
fn error(dtype: DType) -> f32 {
    let prompts = prompts();
    let reference = logits(DType::F32, &prompts);
    let got = logits(dtype, &prompts);
    reference
        .iter()
        .zip(&got)
        .map(|(r, g)| max_abs_diff(r, g))
        .fold(0.0, f32::max)
}

#[test]
fn f16_logits_are_close_to_f32() {
    // Logits reach ~18; f16 keeps 11 significant bits (relative step 4.9e-4), compounded over
    // 5 layers. 0.1 absolute is ~0.5% of the logit range.
    let err = error(DType::F16);
    eprintln!("tiny-stories f16 vs f32: max abs logit error {err}");
    assert!(err < 0.1, "f16 max abs error {err}");
}

#[test]
fn bf16_logits_are_close_to_f32() {
    // bf16 keeps 8 significant bits (relative step 3.9e-3), eight times coarser than f16.
    let err = error(DType::BF16);
    eprintln!("tiny-stories bf16 vs f32: max abs logit error {err}");
    assert!(err < 0.5, "bf16 max abs error {err}");
}

#[test]
fn half_precision_generation_runs() {
    for dtype in [DType::F16, DType::BF16] {
        let model = load("tiny-stories", dtype);
        // Every matrix at 2 bytes; on the host kernels the norm scales stay f32 and down_proj's
        // 172 columns are padded to 192 (whole groups of 32).
        let (bytes, parameters) = (model.info().weight_bytes, model.info().parameters);
        let norms = 64 * (2 * 5 + 1);
        let padding = 5 * 64 * 20;
        assert_eq!(bytes, 2 * (parameters + norms + padding), "{dtype}");
        let (out, _) = generate(&model, &prompts(), &greedy(8));
        assert!(out.iter().all(|seq| seq.len() == 8), "{dtype}");
    }
}
