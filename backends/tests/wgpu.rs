//! The accelerator path on wgpu (Mesa's lavapipe in CI, a Vulkan driver on the CPU): the
//! bundled models reproduce transformers' logits and greedy tokens on the device, quantized
//! weights run as burn's own quantized tensors there, f16 runs where the adapter has
//! shader-f16 and is refused with the reason where it has not, and the run names its adapter.
//! Skipped (with a note) where wgpu lists no adapter; `LLMEFF_REQUIRE_WGPU=1` makes that a
//! failure.
#![cfg(feature = "wgpu")]

mod common;

use api::runtime::{DType, LoadedModel, ModelSpec, QuantMethod, Quantization, WeightsKind};
use backends::{BurnModel, LogitPositions};
use common::*;

/// f32 on a GPU sums in another order than transformers' CPU f32 (tiled matmuls, parallel
/// reductions): the logits agree to a few ulps of their size.
const LOGIT_TOLERANCE: f32 = 1e-4;

const MODELS: [&str; 7] = BUNDLED_MODELS;

/// The models whose greedy continuation is also checked on wgpu.
const GENERATE: [&str; 4] = [
    "tiny-stories",
    "tiny-llama3-gqa",
    "tiny-mistral",
    "tiny-gemma2",
];

fn on_wgpu(source: &str, dtype: DType) -> ModelSpec {
    let mut s = spec(source, dtype, WeightsKind::Pretrained, 0);
    s.device = "wgpu".into();
    s
}

/// The model on wgpu, or `None` (with a note) where there is no adapter.
fn load_wgpu(spec: &ModelSpec) -> Option<BurnModel> {
    match runtime().load_model(spec) {
        Ok(m) => Some(m),
        Err(api::runtime::RuntimeError::DeviceUnavailable { reason, .. })
            if std::env::var("LLMEFF_REQUIRE_WGPU").as_deref() != Ok("1") =>
        {
            eprintln!("skipped: no wgpu adapter: {reason}");
            None
        }
        Err(e) => panic!("loading {spec:?}: {e}"),
    }
}

#[test]
fn golden_logits_and_greedy_tokens_on_wgpu() {
    for name in MODELS {
        let Some(model) = load_wgpu(&on_wgpu(name, DType::F32)) else {
            return;
        };
        let info = model.info();
        assert!(info.compute.starts_with("burn-"), "{}", info.compute);
        let adapter = info.adapter.clone().expect("a wgpu run names its adapter");
        assert!(info.adapter_driver.is_some());
        // The allocator holds at least the weights once they are on the device.
        let held = model
            .device_memory_bytes()
            .expect("wgpu reports its allocator");
        assert!(
            held >= info.weight_bytes / 2,
            "{held} < {}",
            info.weight_bytes
        );
        let golden = golden(name);
        let cases = golden["prompts"].as_array().unwrap();
        let mut worst = 0.0f32;
        for case in cases {
            let prompt = ids(&case["input_ids"]);
            let all = model
                .logits(std::slice::from_ref(&prompt), LogitPositions::All)
                .unwrap();
            for (row, exp) in all[0]
                .iter()
                .zip(case["logits_all_positions"].as_array().unwrap())
            {
                worst = worst.max(max_abs_diff(row, &floats(exp)));
            }
        }
        eprintln!("{name} on wgpu ({adapter}): max abs logit error vs transformers = {worst:e}");
        assert!(worst <= LOGIT_TOLERANCE, "{name}: {worst}");
        // Each decode step is a new key length, so new kernels for lavapipe to compile: the
        // greedy continuation runs on the Llama fixtures and the families whose sliding
        // windows only act during generation; the others' blocks are all in the logits above.
        if !GENERATE.contains(&name) {
            continue;
        }
        let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
        let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["input_ids"])).collect();
        let expected: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["greedy_new_ids"])).collect();
        let (batched, _) = generate(&model, &prompts, &greedy(steps));
        assert_eq!(
            batched, expected,
            "{name}: greedy tokens on wgpu, one batch"
        );
    }
}

#[test]
fn int8_runs_as_burns_quantized_tensor_on_wgpu() {
    let mut spec = on_wgpu("tiny-llama3-gqa", DType::F32);
    spec.quantization = Some(Quantization {
        method: QuantMethod::Int8,
        block_size: 32,
    });
    let Some(model) = load_wgpu(&spec) else {
        return;
    };
    let compute = &model.info().compute;
    assert!(compute.contains("w-int8/b32.burn-q8s"), "{compute}");
    // The same codes and scales dequantized on the CPU: products agree to f32 rounding.
    let mut cpu = spec.clone();
    cpu.device = "cpu".into();
    cpu.compute = api::runtime::Compute::Burn;
    let reference = runtime().load_model(&cpu).unwrap();
    let prompt = ids(&golden("tiny-llama3-gqa")["prompts"][0]["input_ids"]);
    let a = model
        .logits(std::slice::from_ref(&prompt), LogitPositions::Last)
        .unwrap();
    let b = reference
        .logits(std::slice::from_ref(&prompt), LogitPositions::Last)
        .unwrap();
    let err = max_abs_diff(&a[0][0], &b[0][0]);
    eprintln!("int8 on wgpu ({compute}) vs burn-flex: max abs {err:e}");
    assert!(err < 1e-3, "{err}");
}

/// Continuous batching on the device: a request joining mid-decode (its prompt in two chunks
/// while the other decodes), then both decoded in one call from slots of different lengths,
/// generate transformers' greedy tokens, as each does alone (the test above). Few tokens:
/// every new key length is a kernel for lavapipe to compile.
#[test]
fn requests_joining_a_running_batch_keep_their_greedy_tokens_on_wgpu() {
    let Some(model) = load_wgpu(&on_wgpu("tiny-stories", DType::F32)) else {
        return;
    };
    let golden = golden("tiny-stories");
    let case = |i: usize| &golden["prompts"][i];
    let options = api::serving::ServeOptions {
        max_batch: 2,
        slot_capacity: 16,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: api::runtime::Decoding::Greedy,
    };
    let mut batch = model.serve(&options).unwrap();
    let request = |id, i: usize, max_new_tokens| api::serving::ServeRequest {
        id,
        prompt: ids(&case(i)["input_ids"]),
        max_new_tokens,
    };
    let mut tokens = vec![Vec::new(); 2];
    let a = batch.admit(request(0, 0, 5)).unwrap();
    tokens[0].extend(batch.prefill(&[(a, 5)]).unwrap().iter().map(|t| t.token));
    tokens[0].push(batch.decode(&[a]).unwrap()[0].token);
    let b = batch.admit(request(1, 2, 3)).unwrap();
    assert!(batch.prefill(&[(b, 3)]).unwrap().is_empty());
    tokens[0].push(batch.decode(&[a]).unwrap()[0].token);
    tokens[1].extend(batch.prefill(&[(b, 2)]).unwrap().iter().map(|t| t.token));
    for _ in 0..2 {
        for t in batch.decode(&[a, b]).unwrap() {
            tokens[usize::from(t.slot == b)].push(t.token);
        }
    }
    assert_eq!(tokens[0], ids(&case(0)["greedy_new_ids"])[..5]);
    assert_eq!(tokens[1], ids(&case(2)["greedy_new_ids"])[..3]);
}

#[test]
fn f16_runs_where_the_adapter_has_shader_f16_and_is_refused_with_the_reason_elsewhere() {
    match runtime().load_model(&on_wgpu("tiny-stories", DType::F16)) {
        Ok(model) => {
            // f16 weights and activations: within what half precision moves the logits.
            let golden = golden("tiny-stories");
            let case = &golden["prompts"][0];
            let last = model
                .logits(&[ids(&case["input_ids"])], LogitPositions::Last)
                .unwrap();
            let err = max_abs_diff(&last[0][0], &floats(&case["last_logits"]));
            eprintln!("tiny-stories f16 on wgpu: max abs logit error {err}");
            assert!(err < 0.1, "{err}");
        }
        Err(api::runtime::RuntimeError::UnsupportedDType { device, .. }) => {
            assert!(device.contains("no shader-f16"), "{device}");
        }
        Err(api::runtime::RuntimeError::DeviceUnavailable { reason, .. })
            if std::env::var("LLMEFF_REQUIRE_WGPU").as_deref() != Ok("1") =>
        {
            eprintln!("skipped: no wgpu adapter: {reason}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn an_adapter_that_does_not_exist_lists_the_ones_there_are() {
    let spec = on_wgpu("tiny-stories", DType::F32);
    let mut missing = spec.clone();
    missing.device = "wgpu:99".into();
    match runtime().load_model(&missing) {
        Err(api::runtime::RuntimeError::DeviceUnavailable { reason, .. }) => {
            assert!(
                reason.contains("wgpu:99 does not exist") || reason.contains("lists no"),
                "{reason}"
            );
        }
        other => panic!("expected DeviceUnavailable, got {:?}", other.map(|_| ())),
    }
}
