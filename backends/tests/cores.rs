//! Models on core sets (`cpu:0`, `cpu:0-1`): they load, generate exactly what the same model
//! on `cpu` generates, and compute on threads pinned to their cores; bad or unusable sets are
//! refused as the device's fault.

mod common;

use api::runtime::{Compute, DType, LoadedModel, ModelSpec, Runtime, RuntimeError, WeightsKind};
use backends::BurnModel;
use backends::cores::{CoreSet, allowed_cores, current_affinity};
use common::*;

/// tiny-stories in f32 on `device`, on the forward pass `compute`.
fn tiny_stories_spec(device: &str, compute: Compute) -> ModelSpec {
    let mut spec = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    spec.device = device.to_string();
    spec.compute = compute;
    spec
}

fn load_on(device: &str, compute: Compute) -> BurnModel {
    runtime()
        .load_model(&tiny_stories_spec(device, compute))
        .unwrap_or_else(|e| panic!("loading tiny-stories on {device}: {e}"))
}

/// The first `n` cores this process may run on, or `None` (said) when it has fewer.
fn first_allowed(n: usize) -> Option<CoreSet> {
    let allowed = allowed_cores().expect("this process's cores");
    if allowed.len() < n {
        eprintln!("skipped: this process may run on {allowed}, fewer than {n} cores");
        return None;
    }
    Some(CoreSet::from_cores(allowed.cores()[..n].iter().copied()).expect("a core set"))
}

/// The golden prompts' greedy continuations, each alone and all as one batch.
fn golden_greedy(model: &dyn LoadedModel) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let golden = golden("tiny-stories");
    let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
    let prompts: Vec<Vec<u32>> = golden["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids(&c["input_ids"]))
        .collect();
    let alone = prompts
        .iter()
        .map(|p| generate(model, std::slice::from_ref(p), &greedy(steps)).0[0].clone())
        .collect();
    let (batched, _) = generate(model, &prompts, &greedy(steps));
    (alone, batched)
}

#[test]
fn a_model_on_a_core_set_generates_what_it_does_on_cpu_on_its_cores_only() {
    let golden = golden("tiny-stories");
    let expected: Vec<Vec<u32>> = golden["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ids(&c["greedy_new_ids"]))
        .collect();
    for compute in [Compute::Host, Compute::Burn] {
        let everywhere = load_on("cpu", compute);
        assert_eq!(everywhere.cores(), None);
        let reference = golden_greedy(&everywhere);
        assert_eq!(reference.0, expected, "cpu on {compute:?}");
        assert_eq!(reference.1, expected, "cpu on {compute:?}, batched");
        for n in [1, 2] {
            let Some(cores) = first_allowed(n) else {
                continue;
            };
            let device = format!("cpu:{cores}");
            let model = load_on(&device, compute);
            assert_eq!(model.cores(), Some(&cores), "{device}");
            // Pinning does not change what computes the model.
            assert_eq!(model.info(), everywhere.info(), "{device} on {compute:?}");
            assert_eq!(
                golden_greedy(&model),
                reference,
                "{device} on {compute:?}: token ids differ from cpu's"
            );
            // Read where the model's steps run, through the same path a step takes.
            assert_eq!(model.step_thread_cores().unwrap(), cores, "{device}");
            // Teacher-forced logits (quality measurement) run there too and agree with cpu's.
            let prompt = vec![ids(&golden["prompts"][0]["input_ids"])];
            let pinned = model.prompt_logits(&prompt).unwrap();
            let free = everywhere.prompt_logits(&prompt).unwrap();
            for (a, b) in pinned[0].iter().zip(&free[0]) {
                assert!(max_abs_diff(a, b) < 1e-4, "{device} on {compute:?}");
            }
        }
    }
    // The caller's own thread was never pinned.
    assert_eq!(current_affinity().unwrap(), allowed_cores().unwrap());
}

#[test]
fn the_runtime_trait_loads_core_sets_too() {
    let Some(cores) = first_allowed(1) else {
        return;
    };
    let rt = runtime();
    let spec = tiny_stories_spec(&format!("cpu:{cores}"), Compute::Auto);
    let boxed = rt.load(&spec).unwrap();
    let plain = rt.load(&tiny_stories_spec("cpu", Compute::Auto)).unwrap();
    assert_eq!(golden_greedy(boxed.as_ref()), golden_greedy(plain.as_ref()));
    // `cpu` is listed; core sets are not enumerated.
    assert!(rt.devices().contains(&"cpu".to_string()));
    // A core set's memory is the host's, as for `cpu`.
    let on_set = rt.memory_estimate(&spec, 4, 64).unwrap();
    let on_cpu = rt
        .memory_estimate(&tiny_stories_spec("cpu", Compute::Auto), 4, 64)
        .unwrap();
    assert_eq!(
        (
            on_set.weight_bytes,
            on_set.load_peak_bytes,
            on_set.kv_cache_bytes
        ),
        (
            on_cpu.weight_bytes,
            on_cpu.load_peak_bytes,
            on_cpu.kv_cache_bytes
        )
    );
    assert!(on_set.available_bytes.is_some());
}

#[test]
fn unusable_core_sets_are_refused_as_the_devices_fault() {
    for (device, says) in [
        ("cpu:4095", "core 4095 is not one this process may run on ("),
        ("cpu:1-0", "ends before it starts"),
        ("cpu:0,0", "named twice"),
        ("cpu:0,", "has an empty item"),
        ("cpu:two", "`two` is not a core number"),
    ] {
        match load_err(&tiny_stories_spec(device, Compute::Auto)) {
            RuntimeError::DeviceUnavailable { device: d, reason } => {
                assert_eq!(d, device);
                assert!(reason.contains(says), "{device}: {reason}");
            }
            other => panic!("{device}: unexpected {other:?}"),
        }
    }
}
