//! Broken model folders, unknown sources and devices, and invalid generation requests all come
//! back as typed errors (never panics).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, LoadedModel, QuantMethod, Quantization, Runtime,
    RuntimeError, WeightsKind,
};
use backends::LogitPositions;
use common::*;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

/// A writable copy of the bundled tiny-stories folder.
fn copy_of_tiny_stories() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(models_dir().join("tiny-stories")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

/// Rewrites `model.safetensors` in `dir` after `edit` changes the list of
/// (name, dtype, shape, bytes).
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    write_tensors(&path, &tensors);
}

fn write_tensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn load_dir(dir: &Path) -> RuntimeError {
    load_err(&spec(
        dir.to_str().unwrap(),
        DType::F32,
        WeightsKind::Pretrained,
        0,
    ))
}

fn invalid_file(err: RuntimeError) -> (String, String) {
    match err {
        RuntimeError::InvalidModelFile { path, reason } => (path, reason),
        other => panic!("expected InvalidModelFile, got {other:?}"),
    }
}

#[test]
fn truncated_safetensors_is_an_invalid_file() {
    let (_tmp, dir) = copy_of_tiny_stories();
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let (file, reason) = invalid_file(load_dir(&dir));
    assert!(file.ends_with("model.safetensors"), "{file}");
    assert!(reason.contains("safetensors"), "{reason}");
}

#[test]
fn corrupt_header_is_an_invalid_file() {
    let (_tmp, dir) = copy_of_tiny_stories();
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..40].fill(b'#');
    std::fs::write(&path, &bytes).unwrap();
    let (file, _) = invalid_file(load_dir(&dir));
    assert!(file.ends_with("model.safetensors"), "{file}");

    std::fs::write(&path, b"").unwrap();
    invalid_file(load_dir(&dir));
}

#[test]
fn wrong_shape_names_the_tensor() {
    let (_tmp, dir) = copy_of_tiny_stories();
    let name = "model.layers.0.self_attn.k_proj.weight";
    rewrite_weights(&dir, |t| {
        let k = t.iter_mut().find(|x| x.0 == name).unwrap();
        k.2 = vec![64, 32]; // same bytes, transposed shape
    });
    let (_, reason) = invalid_file(load_dir(&dir));
    assert!(
        reason.contains(name) && reason.contains("shape"),
        "{reason}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = copy_of_tiny_stories();
    rewrite_weights(&dir, |t| t.retain(|x| x.0 != "model.norm.weight"));
    let (_, reason) = invalid_file(load_dir(&dir));
    assert!(reason.contains("model.norm.weight"), "{reason}");
}

#[test]
fn unexpected_tensor_is_named() {
    let (_tmp, dir) = copy_of_tiny_stories();
    let name = "model.layers.0.self_attn.q_proj.bias";
    rewrite_weights(&dir, |t| {
        t.push((name.into(), Dtype::F32, vec![64], vec![0; 256]));
    });
    let (_, reason) = invalid_file(load_dir(&dir));
    assert!(reason.contains(name), "{reason}");
}

#[test]
fn unsupported_stored_dtype_is_named() {
    let (_tmp, dir) = copy_of_tiny_stories();
    rewrite_weights(&dir, |t| {
        let norm = t.iter_mut().find(|x| x.0 == "model.norm.weight").unwrap();
        norm.1 = Dtype::I32; // same byte count, integer type
    });
    let (_, reason) = invalid_file(load_dir(&dir));
    assert!(reason.contains("model.norm.weight"), "{reason}");
}

#[test]
fn missing_tokenizer_is_an_invalid_file() {
    let (_tmp, dir) = copy_of_tiny_stories();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let (file, reason) = invalid_file(load_dir(&dir));
    assert!(file.ends_with("tokenizer.json"), "{file}");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn missing_weights_file_is_an_invalid_file() {
    let (_tmp, dir) = copy_of_tiny_stories();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    invalid_file(load_dir(&dir));
    // Random weights need no checkpoint at all.
    let random = spec(dir.to_str().unwrap(), DType::F32, WeightsKind::Random, 1);
    runtime().load_model(&random).unwrap();
}

#[test]
fn unsupported_config_is_named_at_load() {
    let (_tmp, dir) = copy_of_tiny_stories();
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"silu\"", "\"gelu\"")).unwrap();
    match load_dir(&dir) {
        RuntimeError::UnsupportedConfig { path, reason } => {
            assert!(path.ends_with("config.json"));
            assert!(
                reason.contains("hidden_act") && reason.contains("gelu"),
                "{reason}"
            );
        }
        other => panic!("expected UnsupportedConfig, got {other:?}"),
    }
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let (_tmp, dir) = copy_of_tiny_stories();
    let single = dir.join("model.safetensors");
    let bytes = std::fs::read(&single).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let half = tensors.len() / 2;
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut weight_map = HashMap::new();
    for (shard, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        write_tensors(&dir.join(names[shard]), part);
        for t in part {
            weight_map.insert(t.0.clone(), names[shard]);
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::remove_file(&single).unwrap();

    let sharded = runtime()
        .load_model(&spec(
            dir.to_str().unwrap(),
            DType::F32,
            WeightsKind::Pretrained,
            0,
        ))
        .unwrap();
    let reference = load("tiny-stories", DType::F32);
    let prompt = vec![vec![1, 403, 407, 261, 378]];
    assert_eq!(
        sharded.logits(&prompt, LogitPositions::Last).unwrap(),
        reference.logits(&prompt, LogitPositions::Last).unwrap()
    );

    // A shard the index names but that is gone.
    std::fs::remove_file(dir.join(names[1])).unwrap();
    let (file, _) = invalid_file(load_dir(&dir));
    assert!(file.ends_with(names[1]), "{file}");
}

#[test]
fn unknown_sources_are_not_found() {
    match load_err(&spec("not-a-model", DType::F32, WeightsKind::Pretrained, 0)) {
        RuntimeError::ModelNotFound { name, reason } => {
            assert_eq!(name, "not-a-model");
            assert!(reason.contains("tiny-stories"), "{reason}");
        }
        other => panic!("expected ModelNotFound, got {other:?}"),
    }
    // Hub ids are looked for in the (here empty, offline) Hub cache.
    match load_err(&spec(
        "org/not-a-model",
        DType::F32,
        WeightsKind::Pretrained,
        0,
    )) {
        RuntimeError::ModelNotFound { name, reason } => {
            assert_eq!(name, "org/not-a-model");
            assert!(reason.contains("no-hub-cache-here"), "{reason}");
        }
        other => panic!("expected ModelNotFound, got {other:?}"),
    }
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_err(&spec(
            tmp.path().to_str().unwrap(),
            DType::F32,
            WeightsKind::Pretrained,
            0
        )),
        RuntimeError::ModelNotFound { .. }
    ));
    let mut with_revision = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    with_revision.revision = Some("main".into());
    assert!(matches!(
        load_err(&with_revision),
        RuntimeError::InvalidInput(_)
    ));
}

/// `compute: "host"` where the host kernels cannot run is an error, never a silent run on burn.
#[test]
fn the_host_pass_is_refused_where_it_cannot_run() {
    // Every dtype runs on the host kernels now; a block size they cannot unpack does not.
    let mut bf16 = spec("tiny-stories", DType::BF16, WeightsKind::Pretrained, 0);
    bf16.compute = Compute::Host;
    assert!(runtime().load_model(&bf16).unwrap().on_host_kernels());
    let mut quantized = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    quantized.compute = Compute::Host;
    quantized.quantization = Some(Quantization {
        method: QuantMethod::Int8,
        block_size: 16,
    });
    match load_err(&quantized) {
        RuntimeError::InvalidInput(m) => {
            assert!(m.contains("multiple of 32"), "{m}");
            assert!(m.contains("int8"), "{m}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    // `auto` takes burn for the same model.
    quantized.compute = Compute::Auto;
    assert!(!runtime().load_model(&quantized).unwrap().on_host_kernels());
}

#[test]
fn devices_are_checked() {
    let runtime = runtime();
    assert_eq!(runtime.devices()[0], "cpu");
    let mut s = spec("tiny-stories", DType::F32, WeightsKind::Pretrained, 0);
    s.device = "tpu:0".into();
    match load_err(&s) {
        RuntimeError::DeviceUnavailable { device, reason } => {
            assert_eq!(device, "tpu:0");
            assert!(reason.contains("cpu"), "{reason}");
        }
        other => panic!("expected DeviceUnavailable, got {other:?}"),
    }
    if cfg!(not(feature = "cuda")) {
        s.device = "cuda:0".into();
        match load_err(&s) {
            RuntimeError::DeviceUnavailable { reason, .. } => {
                assert!(reason.contains("`cuda` feature"), "{reason}")
            }
            other => panic!("expected DeviceUnavailable, got {other:?}"),
        }
    }
}

fn start_err(model: &dyn LoadedModel, prompts: &[Vec<u32>], options: &GenerateOptions) -> String {
    match model.start(prompts, options) {
        Err(RuntimeError::InvalidInput(m)) => m,
        Err(other) => panic!("expected InvalidInput, got {other:?}"),
        Ok(_) => panic!("start unexpectedly succeeded"),
    }
}

#[test]
fn invalid_generation_inputs_are_rejected() {
    let model = load("tiny-stories", DType::F32);
    let ok = greedy(4);
    start_err(&model, &[], &ok);
    assert!(start_err(&model, &[vec![1], vec![]], &ok).contains("prompt 1"));
    assert!(start_err(&model, &[vec![1, 512]], &ok).contains("512"));
    // tiny-stories has 512 positions.
    assert!(start_err(&model, &[vec![1; 500]], &greedy(13)).contains("512"));
    model.start(&[vec![1; 500]], &greedy(12)).unwrap();
    start_err(&model, &[vec![1]], &greedy(0));
    for (temperature, top_p) in [(-1.0, 1.0), (f64::NAN, 1.0), (1.0, 1.5)] {
        let options = GenerateOptions {
            decoding: Decoding::Sample {
                temperature,
                top_k: 0,
                top_p,
                seed: 0,
            },
            ..ok.clone()
        };
        start_err(&model, &[vec![1]], &options);
    }
    assert!(matches!(
        model.logits(&[vec![]], LogitPositions::Last),
        Err(RuntimeError::InvalidInput(_))
    ));
}
