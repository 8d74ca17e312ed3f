//! Helpers shared by the integration tests: model paths, specs, golden files, generation.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, LoadedModel, ModelSpec, RuntimeError, WeightsKind,
};
use backends::{BurnModel, BurnRuntime, HubCache};
use serde_json::Value;

/// Every bundled fixture: the trained tiny-stories, then one per model family.
pub const BUNDLED_MODELS: [&str; 7] = [
    "tiny-stories",
    "tiny-llama3-gqa",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "tiny-phi3",
    "tiny-gemma2",
];

/// The repository's bundled models.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("models")
}

/// A runtime whose Hub cache is an empty folder in offline mode, so no test depends on the
/// machine's real cache or touches the network.
pub fn runtime() -> BurnRuntime {
    let nowhere = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/no-hub-cache-here");
    BurnRuntime::with_hub_cache(HubCache::new(nowhere).offline(true))
}

pub fn spec(source: &str, dtype: DType, weights: WeightsKind, seed: u64) -> ModelSpec {
    ModelSpec {
        source: source.to_string(),
        revision: None,
        dtype,
        weights,
        device: "cpu".to_string(),
        seed,
        quantization: None,
        compute: Compute::Auto,
    }
}

pub fn load(source: &str, dtype: DType) -> BurnModel {
    runtime()
        .load_model(&spec(source, dtype, WeightsKind::Pretrained, 0))
        .unwrap_or_else(|e| panic!("loading {source}: {e}"))
}

/// The model loaded in f32 on each CPU forward pass (llmeff's host kernels and burn-flex, as
/// `load(#{ compute })` names them), so a test checks both; panics if a model does not run on
/// the pass asked for.
pub fn load_f32_each_forward(source: &str) -> Vec<(Compute, BurnModel)> {
    [Compute::Host, Compute::Burn]
        .into_iter()
        .map(|forward| {
            let mut spec = spec(source, DType::F32, WeightsKind::Pretrained, 0);
            spec.compute = forward;
            let model = runtime()
                .load_model(&spec)
                .unwrap_or_else(|e| panic!("loading {source} on {forward:?}: {e}"));
            assert_eq!(model.on_host_kernels(), forward == Compute::Host);
            let compute = &model.info().compute;
            let expected = match forward {
                Compute::Host => "llmeff-kernels/",
                _ => "burn-",
            };
            assert!(
                compute.starts_with(expected),
                "{forward:?} ran on {compute}"
            );
            (forward, model)
        })
        .collect()
}

pub fn load_err(spec: &ModelSpec) -> RuntimeError {
    match runtime().load_model(spec) {
        Ok(_) => panic!("loading {} unexpectedly succeeded", spec.source),
        Err(e) => e,
    }
}

pub fn golden(model: &str) -> Value {
    let path = models_dir().join(model).join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: Decoding::Greedy,
    }
}

/// Runs a generation to the end; returns each sequence's tokens and the KV bytes after each step.
pub fn generate(
    model: &dyn LoadedModel,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
) -> (Vec<Vec<u32>>, Vec<u64>) {
    let mut generation = model.start(prompts, options).unwrap();
    let mut out = vec![Vec::new(); prompts.len()];
    let mut kv = Vec::new();
    // A generation finishes within max_new_tokens steps; the bound turns a hang into a failure.
    for _ in 0..=options.max_new_tokens {
        let step = generation.step().unwrap();
        assert_eq!(step.tokens.len(), prompts.len());
        for (seq, token) in out.iter_mut().zip(&step.tokens) {
            if let Some(t) = token {
                seq.push(*t);
            }
        }
        kv.push(generation.kv_cache_bytes());
        if step.finished {
            return (out, kv);
        }
    }
    panic!("generation did not finish within max_new_tokens steps");
}
