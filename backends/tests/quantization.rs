//! Weight-only quantization on the bundled tiny-stories model, on burn's pass (weights
//! dequantized per product; `formats.rs` tests the host kernels' own formats).

mod common;

use api::runtime::{Compute, DType, LoadedModel, QuantMethod, Quantization, WeightsKind};
use backends::{BurnRuntime, LogitPositions};

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn quantized_models_stay_close_to_f32_and_hold_fewer_bytes() {
    let runtime = BurnRuntime::new();
    let mut base_spec = common::spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    base_spec.compute = Compute::Burn;
    let base = runtime.load_model(&base_spec).unwrap();
    let prompt = vec![base.encode("Once upon a time").unwrap()];
    let reference = base.logits(&prompt, LogitPositions::Last).unwrap();
    // tiny-stories: 5 layers x (64*64 + 2*64*32 + 64*64 + 3*64*172) quantized weights.
    let quantized_weights: u64 = 5 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 172);
    // Measured on this model (logits span ~28): int8 0.149, int4 2.35, nf4 2.90; bounds add margin.
    for (method, tolerance) in [
        (QuantMethod::Int8, 0.3),
        (QuantMethod::Int4, 5.0),
        (QuantMethod::Nf4, 5.0),
        (QuantMethod::Fp8, 1.0),
    ] {
        let mut spec = base_spec.clone();
        spec.quantization = Some(Quantization {
            method,
            block_size: 32,
        });
        let model = runtime.load_model(&spec).unwrap();
        let logits = model.logits(&prompt, LogitPositions::Last).unwrap();
        let err = max_abs(&reference[0][0], &logits[0][0]);
        eprintln!("{method:?}: max abs logit error vs f32 = {err}");
        assert!(logits[0][0].iter().all(|v| v.is_finite()));
        assert!(err < tolerance, "{method:?}: {err}");
        // Bytes: the quantized weights become codes plus one f32 scale per 32 weights.
        let code_bytes = quantized_weights * method.bits() as u64 / 8;
        // Blocks of 32 along the input dimension; down_proj's 172 inputs need 6 (the last short).
        let scales_per_layer: u64 = 2 * (64 + 32 + 32 + 64 + 172 + 172) + 6 * 64;
        let scale_bytes = 5 * scales_per_layer * 4;
        let expected = base.info().weight_bytes - 4 * quantized_weights + code_bytes + scale_bytes;
        assert_eq!(model.info().weight_bytes, expected, "{method:?}");
        assert_eq!(model.info().parameters, base.info().parameters);
    }
}

#[test]
fn int8_keeps_the_greedy_continuation_start() {
    let runtime = BurnRuntime::new();
    let mut spec = common::spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    spec.compute = Compute::Burn;
    let prompt = vec![
        runtime
            .load_model(&spec)
            .unwrap()
            .encode("Once upon a time")
            .unwrap(),
    ];
    let greedy = |model: &dyn LoadedModel| -> Vec<u32> {
        let options = api::runtime::GenerateOptions {
            max_new_tokens: 8,
            min_new_tokens: 0,
            stop_at_eos: false,
            decoding: api::runtime::Decoding::Greedy,
        };
        let mut g = model.start(&prompt, &options).unwrap();
        let mut ids = Vec::new();
        loop {
            let s = g.step().unwrap();
            ids.extend(s.tokens.iter().flatten());
            if s.finished {
                break ids;
            }
        }
    };
    let f32_ids = greedy(&runtime.load_model(&spec).unwrap());
    spec.quantization = Some(Quantization {
        method: QuantMethod::Int8,
        block_size: 32,
    });
    let int8_ids = greedy(&runtime.load_model(&spec).unwrap());
    assert_eq!(f32_ids, int8_ids);
}
