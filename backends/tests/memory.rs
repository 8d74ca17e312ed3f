//! Model memory is estimated from the config and refused before it is allocated: absurd config
//! sizes are named, weights and KV caches beyond the available memory (or the runtime's cap)
//! are typed `OutOfMemory` errors with the figures, and the KV cache is sized by the run, not by
//! the model's maximum positions.

mod common;

use std::path::{Path, PathBuf};

use api::runtime::{Compute, DType, Runtime, RuntimeError, WeightsKind};
use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A copy of tiny-stories' folder whose `config.json` is edited by `edit`; with `weights`
/// false only config and tokenizer are copied (enough for random weights).
fn edited_tiny_stories(
    weights: bool,
    edit: impl FnOnce(&mut Value),
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("edited");
    std::fs::create_dir(&dir).unwrap();
    let from = models_dir().join("tiny-stories");
    let mut files = vec!["tokenizer.json", "generation_config.json"];
    if weights {
        files.push("model.safetensors");
    }
    for file in files {
        std::fs::copy(from.join(file), dir.join(file)).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    (tmp, dir)
}

fn path_str(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn a_billion_token_vocabulary_is_refused_naming_the_field() {
    let (_tmp, dir) = edited_tiny_stories(false, |c| c["vocab_size"] = 1_000_000_000u64.into());
    let spec = spec(path_str(&dir), DType::F32, WeightsKind::Random, 0);
    // Before: 1e9 × 64 × 2 tables of f32 (512 GB) were allocated and the process aborted.
    match load_err(&spec) {
        RuntimeError::InvalidModelFile { reason, .. } => {
            assert!(
                reason.contains("vocab_size") && reason.contains("sanity limit"),
                "{reason}"
            )
        }
        other => panic!("expected InvalidModelFile, got {other:?}"),
    }
    // The estimate refuses it the same way, without loading.
    assert!(matches!(
        runtime().memory_estimate(&spec, 1, 16),
        Err(RuntimeError::InvalidModelFile { .. })
    ));
}

#[test]
fn weights_beyond_the_memory_limit_are_refused_with_the_figures() {
    // 16 Mi tokens × 64 × 2 tables × 4 bytes = 8 GiB: within the sanity limits, far beyond the
    // 256 MiB cap.
    let (_tmp, dir) = edited_tiny_stories(false, |c| c["vocab_size"] = (1u64 << 24).into());
    let spec = spec(path_str(&dir), DType::F32, WeightsKind::Random, 0);
    let runtime = runtime().with_memory_limit(Some(256 * MIB));
    let estimate = runtime.memory_estimate(&spec, 1, 16).unwrap();
    assert!(estimate.load_peak_bytes >= 2 * (1 << 24) * 64 * 4);
    assert!(estimate.exceeds_available());
    match runtime.load_model(&spec).err() {
        Some(RuntimeError::OutOfMemory {
            needed_bytes,
            available_bytes,
            what,
        }) => {
            assert_eq!(needed_bytes, estimate.load_peak_bytes);
            assert!(available_bytes <= 256 * MIB);
            assert!(
                what.contains("weights") && what.contains("edited"),
                "{what}"
            );
        }
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

#[test]
fn a_model_larger_than_the_machine_is_refused_without_a_cap() {
    // A head wider than the sanity limit is named ...
    let (_tmp, bad_head) = edited_tiny_stories(false, |c| c["head_dim"] = (1u64 << 15).into());
    assert!(matches!(
        load_err(&spec(path_str(&bad_head), DType::F32, WeightsKind::Random, 0)),
        RuntimeError::InvalidModelFile { reason, .. } if reason.contains("head_dim")
    ));
    // ... and 4096 layers of width 2^18, each size within its limit, take petabytes: refused
    // against MemAvailable alone.
    let (_tmp2, dir_ok) = edited_tiny_stories(false, |c| {
        c["hidden_size"] = (1u64 << 18).into();
        c["head_dim"] = (1u64 << 14).into();
        c["num_hidden_layers"] = 4096.into();
        c["intermediate_size"] = (1u64 << 20).into();
    });
    match load_err(&spec(
        path_str(&dir_ok),
        DType::BF16,
        WeightsKind::Random,
        0,
    )) {
        RuntimeError::OutOfMemory {
            needed_bytes,
            available_bytes,
            ..
        } => assert!(needed_bytes > available_bytes),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

#[test]
fn a_kv_cache_beyond_the_limit_is_refused_at_start() {
    let spec = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    let estimate = runtime().memory_estimate(&spec, 64, 512).unwrap();
    // Room for the weights and a little more, not for 64 sequences of 512 positions.
    let cap = estimate.weight_bytes + estimate.kv_cache_bytes / 2;
    let runtime = runtime().with_memory_limit(Some(cap));
    let model = runtime.load(&spec).unwrap();
    assert_eq!(model.info().weight_bytes, estimate.weight_bytes);
    let prompts = vec![vec![1u32; 12]; 64];
    match model.start(&prompts, &greedy(500)).err() {
        Some(RuntimeError::OutOfMemory {
            needed_bytes,
            available_bytes,
            what,
        }) => {
            assert_eq!(available_bytes, cap);
            assert_eq!(needed_bytes, estimate.total_bytes());
            assert!(what.contains("KV cache"), "{what}");
        }
        other => panic!("expected OutOfMemory, got {:?}", other.map(|_| ())),
    }
    // A small request on the same model fits and runs.
    let (tokens, _) = generate(&*model, &[vec![1, 2, 3]], &greedy(4));
    assert_eq!(tokens[0].len(), 4);
}

#[test]
fn a_billion_positions_do_not_size_the_kv_cache() {
    let (_tmp, dir) = edited_tiny_stories(true, |c| {
        c["max_position_embeddings"] = 1_000_000_000u64.into()
    });
    for dtype in [DType::F32, DType::BF16] {
        let spec = spec(path_str(&dir), dtype, WeightsKind::Pretrained, 0);
        // 64 MiB holds the 1 MiB model and a short generation, nowhere near a cache for 1e9
        // positions (5 layers × 4 heads × 8 dims × 2 × 4 bytes = 1.3 KB each: 1.3 TB).
        let runtime = runtime().with_memory_limit(Some(64 * MIB));
        let estimate = runtime.memory_estimate(&spec, 2, 8).unwrap();
        assert!(!estimate.exceeds_available(), "{estimate:?}");
        let model = runtime.load(&spec).unwrap();
        assert_eq!(model.info().max_position_embeddings, 1_000_000_000);
        let (tokens, kv) = generate(&*model, &[vec![1, 2, 3], vec![1, 4]], &greedy(5));
        assert_eq!(tokens.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
        assert!(*kv.last().unwrap() < MIB);
    }
}

#[test]
fn quantized_estimates_are_packed() {
    for compute in [Compute::Burn, Compute::Host] {
        let mut spec = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
        spec.compute = compute;
        let dense = runtime().memory_estimate(&spec, 1, 16).unwrap();
        spec.quantization = Some(api::runtime::Quantization {
            method: api::runtime::QuantMethod::Int4,
            block_size: 32,
        });
        let packed = runtime().memory_estimate(&spec, 1, 16).unwrap();
        assert!(packed.weight_bytes < dense.weight_bytes, "{compute:?}");
        match compute {
            // burn builds the dense layers, then replaces them with packed ones.
            Compute::Burn => assert_eq!(packed.load_peak_bytes, dense.weight_bytes),
            // The host pass encodes each matrix as it is read: the peak is the packed weights
            // plus one matrix in flight, the same transient as the dense load's.
            _ => assert_eq!(
                packed.load_peak_bytes - packed.weight_bytes,
                dense.load_peak_bytes - dense.weight_bytes
            ),
        }
        // The loaded model reports the same resident size.
        let model = runtime().load(&spec).unwrap();
        assert_eq!(
            model.info().weight_bytes,
            packed.weight_bytes,
            "{compute:?}"
        );
    }
}
