//! GGUF files loaded end to end: each bundled fixture converted as llama.cpp's converter would
//! (the test-only writer in [`crate::gguf`]), then loaded by path like any model.

#![cfg(test)]

use std::path::{Path, PathBuf};

use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, LoadedModel, ModelSpec, QuantMethod, Quantization,
    RuntimeError, WeightsKind,
};
use serde_json::Value;

use crate::gguf::GgmlType;
use crate::gguf::writer::{ConvertOptions, convert_hf_folder};
use crate::handle::{BurnModel, LogitPositions};
use crate::hub::HubCache;
use crate::runtime::BurnRuntime;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
}

fn golden(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name).join("golden.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `name` written as a GGUF with its matrices in `matrix_type`.
fn convert(name: &str, matrix_type: GgmlType, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{name}-{}.gguf", matrix_type.name()));
    let options = ConvertOptions {
        matrix_type,
        ..ConvertOptions::default()
    };
    convert_hf_folder(&fixture(name), &out, options).unwrap();
    out
}

fn spec(source: &Path, compute: Compute, quantization: Option<Quantization>) -> ModelSpec {
    ModelSpec {
        source: source.display().to_string(),
        revision: None,
        dtype: DType::F32,
        weights: WeightsKind::Pretrained,
        device: "cpu".into(),
        seed: 0,
        quantization,
        compute,
    }
}

fn runtime() -> BurnRuntime {
    let nowhere = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/no-hub-cache-here");
    BurnRuntime::with_hub_cache(HubCache::new(nowhere).offline(true))
}

fn load(spec: &ModelSpec) -> Result<BurnModel, RuntimeError> {
    runtime().load_model(spec)
}

fn greedy_ids(model: &BurnModel, prompt: &[u32], steps: usize) -> Vec<u32> {
    let options = GenerateOptions {
        max_new_tokens: steps,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: Decoding::Greedy,
    };
    let mut generation = model.start(&[prompt.to_vec()], &options).unwrap();
    let mut out = Vec::new();
    loop {
        let step = generation.step().unwrap();
        out.extend(step.tokens[0]);
        if step.finished {
            return out;
        }
    }
}

fn last_logits(model: &BurnModel, prompt: &[u32]) -> Vec<f32> {
    model
        .logits(&[prompt.to_vec()], LogitPositions::Last)
        .unwrap()
        .remove(0)
        .remove(0)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// An F32 GGUF of every family reproduces transformers on both CPU passes: the text encodes to
/// the golden ids through the file's own tokenizer, and the logits and greedy ids are golden.
#[test]
fn every_family_from_an_f32_gguf_is_golden_on_both_passes() {
    let dir = tempfile::tempdir().unwrap();
    for name in crate::bundled::aliases() {
        let path = convert(name, GgmlType::F32, dir.path());
        let golden = golden(name);
        let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
        for compute in [Compute::Host, Compute::Burn] {
            let model = load(&spec(&path, compute, None))
                .unwrap_or_else(|e| panic!("{name} on {compute:?}: {e}"));
            assert_eq!(
                model.info().architecture,
                golden["config_json"]["model_type"]
            );
            for case in golden["prompts"].as_array().unwrap() {
                let prompt = ids(&case["input_ids"]);
                let text = case["prompt"].as_str().unwrap();
                assert_eq!(model.encode(text).unwrap(), prompt, "{name}: {text}");
                let err = max_abs_diff(&last_logits(&model, &prompt), &golden_floats(case));
                assert!(err <= 1e-4, "{name} on {compute:?}: logits off by {err}");
                assert_eq!(
                    greedy_ids(&model, &prompt, steps),
                    ids(&case["greedy_new_ids"]),
                    "{name} on {compute:?}"
                );
            }
        }
    }
}

fn golden_floats(case: &Value) -> Vec<f32> {
    case["last_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Mean over rows of KL(p ‖ q) in nats between two rows of logits.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let log_softmax = |z: &[f32]| -> Vec<f64> {
        let max = z.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
        let sum: f64 = z.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        z.iter().map(|&v| f64::from(v) - max - sum.ln()).collect()
    };
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

/// A Q8_0 GGUF runs as int8 at block 32 on the host kernels from the file's own codes, and
/// computes the model the burn pass computes from the file's values (which re-quantizing to
/// int8/b32 gives back exactly): the two differ only as the host's int8 activations do (see
/// `tests/formats.rs`). A Q4_0 file runs as int4/b32 on the host; the burn pass refuses it
/// rather than quantize it twice.
#[test]
fn q8_0_and_q4_0_ggufs_run_as_int8_and_int4_from_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let int = |method| {
        Some(Quantization {
            method,
            block_size: 32,
        })
    };
    for name in ["tiny-stories", "tiny-qwen2", "tiny-gemma2"] {
        let prompt = ids(&golden(name)["prompts"][0]["input_ids"]);
        let q8 = convert(name, GgmlType::Q8_0, dir.path());
        let host = load(&spec(&q8, Compute::Host, int(QuantMethod::Int8))).unwrap();
        let compute = host.info().compute.clone();
        assert!(compute.contains("w-int8/b32"), "{compute}");
        let burn = load(&spec(&q8, Compute::Burn, int(QuantMethod::Int8))).unwrap();
        let (h, b) = (last_logits(&host, &prompt), last_logits(&burn, &prompt));
        let (err, divergence) = (max_abs_diff(&h, &b), kl(&b, &h));
        eprintln!("{name}: Q8_0 on the host ({compute}) vs burn: max abs {err}, KL {divergence}");
        let tolerance = if compute.ends_with(".a-q8/b32") {
            1.0
        } else {
            1e-3
        };
        assert!(
            err < tolerance && divergence < 0.01,
            "{name}: {err}, KL {divergence}"
        );

        let q4 = convert(name, GgmlType::Q4_0, dir.path());
        let model = load(&spec(&q4, Compute::Host, int(QuantMethod::Int4))).unwrap();
        assert!(model.info().compute.contains("w-int4/b32"));
        assert!(last_logits(&model, &prompt).iter().all(|v| v.is_finite()));
        let refused = load(&spec(&q4, Compute::Burn, int(QuantMethod::Int4)));
        let text = refused.err().expect("burn refuses Q4_0").to_string();
        assert!(text.contains("host"), "{text}");
    }
}

/// A quantized file loaded without the matching `quantize` is refused, saying what to write.
#[test]
fn a_quantized_gguf_needs_its_own_quantization_declared() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = convert("tiny-stories", GgmlType::Q8_0, dir.path());
    for asked in [
        None,
        Some(Quantization {
            method: QuantMethod::Int4,
            block_size: 32,
        }),
        Some(Quantization {
            method: QuantMethod::Int8,
            block_size: 64,
        }),
    ] {
        let err = load(&spec(&q8, Compute::Host, asked))
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("method: \"int8\", block_size: 32"),
            "{asked:?}: {text}"
        );
    }
}

/// Not a GGUF, a truncated one, and a file that is not `.gguf` are clear errors.
#[test]
fn broken_and_foreign_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = convert("tiny-stories", GgmlType::F32, dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = load(&spec(&truncated, Compute::Host, None))
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("truncated.gguf"), "{text}");
    let other = dir.path().join("weights.bin");
    std::fs::write(&other, b"x").unwrap();
    let text = load(&spec(&other, Compute::Host, None))
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains(".gguf"), "{text}");
}
