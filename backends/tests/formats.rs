//! Every weight format on llmeff's host kernels against its definition, on both bundled models:
//! the quantized formats against dequantize-then-f32 (burn's pass computes exactly that: the
//! same codes and scales, in burn's Q8S tensor or llmeff's matrix, dequantized per product), f16 and bf16 against f32, with the
//! greedy continuation and the bytes held checked too.

mod common;

use api::runtime::{
    Compute, DType, LoadedModel, ModelSpec, QuantMethod, Quantization, WeightsKind,
};
use backends::{BurnModel, LogitPositions};
use common::*;

const MODELS: [&str; 7] = BUNDLED_MODELS;

fn quantized(source: &str, method: QuantMethod, compute: Compute) -> ModelSpec {
    let mut spec = spec(source, DType::F32, WeightsKind::Pretrained, 0);
    spec.quantization = Some(Quantization {
        method,
        block_size: 32,
    });
    spec.compute = compute;
    spec
}

fn loaded(spec: &ModelSpec) -> BurnModel {
    runtime()
        .load_model(spec)
        .unwrap_or_else(|e| panic!("loading {spec:?}: {e}"))
}

fn prompts(source: &str) -> Vec<Vec<u32>> {
    golden(source)["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids(&c["input_ids"]))
        .collect()
}

/// Logits at every prompt position, prompts after one another.
fn all_logits(model: &BurnModel, prompts: &[Vec<u32>]) -> Vec<f32> {
    model
        .logits(prompts, LogitPositions::All)
        .unwrap()
        .into_iter()
        .flatten()
        .flatten()
        .collect()
}

/// Mean over positions of KL(p || q) in nats, each position `vocab` logits.
fn mean_kl(p: &[f32], q: &[f32], vocab: usize) -> f64 {
    let log_softmax = |z: &[f32]| -> Vec<f64> {
        let max = z.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
        let sum: f64 = z.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        z.iter().map(|&v| f64::from(v) - max - sum.ln()).collect()
    };
    let positions = p.len() / vocab;
    let total: f64 = p
        .chunks_exact(vocab)
        .zip(q.chunks_exact(vocab))
        .map(|(a, b)| {
            let (la, lb) = (log_softmax(a), log_softmax(b));
            la.iter()
                .zip(&lb)
                .map(|(x, y)| x.exp() * (x - y))
                .sum::<f64>()
        })
        .sum();
    total / positions as f64
}

#[test]
fn quantized_formats_on_the_host_kernels_equal_dequantize_then_f32() {
    for source in MODELS {
        let prompts = prompts(source);
        for method in QuantMethod::ALL {
            let host = loaded(&quantized(source, method, Compute::Host));
            let reference = loaded(&quantized(source, method, Compute::Burn));
            assert!(host.on_host_kernels() && !reference.on_host_kernels());
            let compute = &host.info().compute;
            assert!(
                compute.contains(&format!("w-{}", method.name())),
                "{compute}"
            );
            // burn-flex holds int8 as its own Q8S tensor where blocks of 32 divide the rows
            // (the Llama fixtures' MLP width, 172, does not: their down projection stays in
            // llmeff's matrix, and the label says so); the other methods stay in llmeff's
            // matrix.
            let burn_compute = &reference.info().compute;
            assert!(
                burn_compute.starts_with(&format!("burn-flex.w-{}", method.name())),
                "{burn_compute}"
            );
            let burn_held = burn_compute.contains("/b32.burn-q8s");
            assert_eq!(burn_held, method == QuantMethod::Int8, "{burn_compute}");
            let mlp_width = golden(source)["config_json"]["intermediate_size"]
                .as_u64()
                .unwrap();
            if method != QuantMethod::Int8 || !mlp_width.is_multiple_of(32) {
                assert!(burn_compute.contains("/b32.dequantized"), "{burn_compute}");
            }
            let (h, r) = (
                all_logits(&host, &prompts),
                all_logits(&reference, &prompts),
            );
            let err = max_abs_diff(&h, &r);
            eprintln!(
                "{source} {}: host ({compute}) vs dequantize-then-f32 max abs {err}",
                method.name()
            );
            let tolerance = if compute.ends_with(".a-q8/b32") {
                // Activations rounded to int8 per 32 columns (int8 and int4 on AVX-512 VNNI):
                // each moves by at most 1/254 of its group's largest (the kernels' unit tests
                // hold every product to that bound). Through the layers the logits moved by
                // 0.04 to 0.65 at most on the seven fixtures while the next-token
                // distributions stayed within 0.0032 nats (mean KL); the bounds leave about
                // 1.5x and 3x.
                let kl = mean_kl(&r, &h, 512);
                eprintln!("  mean KL(dequantize-then-f32 || host) {kl}");
                assert!(kl < 0.01, "{source} {}: KL {kl}", method.name());
                1.0
            } else {
                // The same products summed in another order: f32 rounding only.
                assert!(compute.ends_with(".a-f32"), "{compute}");
                1e-3
            };
            assert!(err < tolerance, "{source} {}: {err}", method.name());
        }
    }
}

#[test]
fn half_precision_on_the_host_kernels_is_close_to_f32() {
    for source in MODELS {
        let prompts = prompts(source);
        let f32_logits = all_logits(
            &loaded(&spec(source, DType::F32, WeightsKind::Pretrained, 0)),
            &prompts,
        );
        // Weights rounded to 11 (f16) or 8 (bf16) significant bits, products in f32: the
        // errors measured on the seven fixtures were 0.004 to 0.035 (f16) and 0.03 to 0.23
        // (bf16); the bounds leave about 2x.
        for (dtype, tolerance) in [(DType::F16, 0.07), (DType::BF16, 0.5)] {
            let mut s = spec(source, dtype, WeightsKind::Pretrained, 0);
            s.compute = Compute::Host;
            let model = loaded(&s);
            assert!(model.info().compute.contains(&format!("w-{dtype}.a-f32")));
            let err = max_abs_diff(&f32_logits, &all_logits(&model, &prompts));
            eprintln!("{source} {dtype}: host vs f32 max abs {err}");
            assert!(err < tolerance, "{source} {dtype}: {err}");
        }
    }
}

#[test]
fn eight_bit_and_half_formats_keep_the_golden_greedy_start() {
    // The golden continuation from transformers (f32). Its smallest top-1/top-2 logit margin is
    // about 0.13 on both models, so only formats whose logit error stays well below that are
    // held to it: int8 and f16 on both, fp8 and bf16 on the trained model only (on the random
    // one their error reaches the margin and the argmax may flip). The other families' random
    // fixtures have margins too small to hold any format to (int8 flips tiny-qwen3's first
    // token); their formats are checked against dequantize-then-f32 above.
    for source in ["tiny-stories", "tiny-llama3-gqa"] {
        let golden = golden(source);
        let case = &golden["prompts"][0];
        let prompt = vec![ids(&case["input_ids"])];
        let expected = ids(&case["greedy_new_ids"]);
        let trained = source == "tiny-stories";
        let mut specs = vec![quantized(source, QuantMethod::Int8, Compute::Host)];
        if trained {
            specs.push(quantized(source, QuantMethod::Fp8, Compute::Host));
        }
        let dtypes: &[DType] = if trained {
            &[DType::F16, DType::BF16]
        } else {
            &[DType::F16]
        };
        for &dtype in dtypes {
            let mut s = spec(source, dtype, WeightsKind::Pretrained, 0);
            s.compute = Compute::Host;
            specs.push(s);
        }
        for s in specs {
            let (out, _) = generate(&loaded(&s), &prompt, &greedy(4));
            assert_eq!(out[0][..4], expected[..4], "{source} {s:?}");
        }
    }
}

#[test]
fn host_formats_hold_their_width_in_memory() {
    // tiny-stories: hidden 64, 5 layers, q/k/v 64+32+32 rows, MLP 172 wide (padded to 192 in
    // the codes of down_proj), vocab 512, embeddings and LM head f32.
    let f32_bytes = loaded(&spec(
        "tiny-stories",
        DType::F32,
        WeightsKind::Pretrained,
        0,
    ))
    .info()
    .weight_bytes;
    let layer_linear = |bits: u64, per_block: Option<u64>| -> u64 {
        // (rows, padded columns) of qkv, o, gate_up, down.
        let shapes: [(u64, u64); 4] = [(128, 64), (64, 64), (344, 64), (64, 192)];
        shapes
            .iter()
            .map(|(r, c)| r * c * bits / 8 + per_block.map_or(0, |b| r * c.div_ceil(b) * 4))
            .sum()
    };
    let dense_layer = layer_linear(32, None) - 64 * 20 * 4; // down_proj unpadded in f32
    for method in QuantMethod::ALL {
        let model = loaded(&quantized("tiny-stories", method, Compute::Host));
        let expected =
            f32_bytes - 5 * dense_layer + 5 * layer_linear(u64::from(method.bits()), Some(32));
        assert_eq!(model.info().weight_bytes, expected, "{}", method.name());
    }
}

/// A block at least as long as the rows is one scale per row (per-channel fp8, as published
/// checkpoints store it): it loads on the host kernels and stays close to f32.
#[test]
fn one_scale_per_row_is_a_block_as_long_as_the_rows() {
    let source = "tiny-stories";
    let prompts = prompts(source);
    let f32_logits = all_logits(
        &loaded(&spec(source, DType::F32, WeightsKind::Pretrained, 0)),
        &prompts,
    );
    let mut per_row = quantized(source, QuantMethod::Fp8, Compute::Host);
    per_row.quantization = Some(Quantization {
        method: QuantMethod::Fp8,
        block_size: 1024,
    });
    let model = loaded(&per_row);
    assert!(
        model.info().compute.contains("w-fp8-e4m3/b1024"),
        "{}",
        model.info().compute
    );
    let kl = mean_kl(&f32_logits, &all_logits(&model, &prompts), 512);
    // Per-block (32) fp8 measured about 0.008 nats here; one scale per row of 64 to 192
    // weights is coarser but E4M3's exponent keeps the relative error of each weight.
    eprintln!("per-row fp8 vs f32: mean KL {kl}");
    assert!(kl < 0.05, "{kl}");
}
