//! Hub ids: a model in a real Hugging Face cache layout (refs, snapshots, blobs) loads offline and
//! matches the golden outputs; missing models fail fast with the cache folder and the fix in the
//! error; built-in presets need no files for random weights.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::runtime::{DType, LoadedModel, ModelSpec, RuntimeError, WeightsKind};
use backends::{BurnRuntime, HubCache, preset_ids};
use common::*;

const COMMIT: &str = "4b3a1f0c9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
const ID: &str = "test-org/tiny";

/// A Hub cache holding tiny-stories as `test-org/tiny` at [`COMMIT`], with `refs/main` pointing
/// to it. Like the real cache, snapshot files are symlinks into `blobs/` (on Unix).
fn cache_with_tiny(files: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--test-org--tiny");
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for (i, file) in files.iter().enumerate() {
        let source = models_dir().join("tiny-stories").join(file);
        link_or_copy(
            &source,
            &repo.join("blobs").join(format!("blob{i}")),
            &snapshot.join(file),
        );
    }
    tmp
}

#[cfg(unix)]
fn link_or_copy(source: &Path, blob: &Path, pointer: &Path) {
    std::fs::copy(source, blob).unwrap();
    let relative = PathBuf::from("../..")
        .join("blobs")
        .join(blob.file_name().unwrap());
    std::os::unix::fs::symlink(relative, pointer).unwrap();
}

#[cfg(not(unix))]
fn link_or_copy(source: &Path, _blob: &Path, pointer: &Path) {
    std::fs::copy(source, pointer).unwrap();
}

const ALL_FILES: [&str; 4] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "model.safetensors",
];

fn offline(cache: &Path) -> BurnRuntime {
    BurnRuntime::with_hub_cache(HubCache::new(cache).offline(true))
}

fn hub_spec(id: &str, revision: Option<&str>, weights: WeightsKind) -> ModelSpec {
    let mut s = spec(id, DType::F32, weights, 0);
    s.revision = revision.map(str::to_string);
    s
}

fn not_found(result: Result<backends::BurnModel, RuntimeError>) -> String {
    match result {
        Err(RuntimeError::ModelNotFound { reason, .. }) => reason,
        Err(other) => panic!("expected ModelNotFound, got {other}"),
        Ok(_) => panic!("expected ModelNotFound, the model loaded"),
    }
}

#[test]
fn cached_hub_model_loads_offline_and_matches_golden() {
    let cache = cache_with_tiny(&ALL_FILES);
    let golden = golden("tiny-stories");
    let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
    let case = &golden["prompts"][0];
    for revision in [None, Some("main"), Some(COMMIT)] {
        let model = offline(cache.path())
            .load_model(&hub_spec(ID, revision, WeightsKind::Pretrained))
            .unwrap_or_else(|e| panic!("revision {revision:?}: {e}"));
        assert_eq!(model.info().name, ID);
        let prompt = model.encode(case["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(prompt, ids(&case["input_ids"]));
        let (out, _) = generate(&model, &[prompt], &greedy(steps));
        assert_eq!(
            out[0],
            ids(&case["greedy_new_ids"]),
            "revision {revision:?}"
        );
    }
}

#[test]
fn random_weights_need_only_config_and_tokenizer() {
    let cache = cache_with_tiny(&["config.json", "tokenizer.json"]);
    let runtime = offline(cache.path());
    let model = runtime
        .load_model(&hub_spec(ID, None, WeightsKind::Random))
        .unwrap();
    assert_eq!(model.info().hidden_size, 64);
    // Trained weights are not in the cache, and offline nothing is fetched.
    let reason = not_found(runtime.load_model(&hub_spec(ID, None, WeightsKind::Pretrained)));
    assert!(reason.contains("model.safetensors"), "{reason}");
}

#[test]
fn missing_models_say_where_they_were_looked_for_and_how_to_fix_it() {
    let cache = cache_with_tiny(&ALL_FILES);
    let runtime = offline(cache.path());
    let started = Instant::now();
    let reason =
        not_found(runtime.load_model(&hub_spec("test-org/absent", None, WeightsKind::Pretrained)));
    assert!(started.elapsed() < Duration::from_secs(2));
    let cache_dir = cache.path().display().to_string();
    assert!(reason.contains(&cache_dir), "{reason}");
    assert!(reason.contains("models--test-org--absent"), "{reason}");
    assert!(reason.contains("HF_HUB_OFFLINE"), "{reason}");
    assert!(
        reason.contains("huggingface-cli download test-org/absent"),
        "{reason}"
    );
    assert!(reason.contains("HF_HUB_CACHE"), "{reason}");

    // A revision the cache has no ref for.
    let reason = not_found(runtime.load_model(&hub_spec(ID, Some("dev"), WeightsKind::Pretrained)));
    assert!(
        reason.contains("refs") && reason.contains("dev"),
        "{reason}"
    );
}

#[test]
fn an_unreachable_hub_fails_fast() {
    // Nothing listens on port 1 of the loopback address: the connection is refused at once,
    // standing in for "no network" without depending on the machine's real network.
    let empty = tempfile::tempdir().unwrap();
    let hub = HubCache::new(empty.path()).with_endpoint("http://127.0.0.1:1");
    let started = Instant::now();
    let reason = not_found(BurnRuntime::with_hub_cache(hub).load_model(&hub_spec(
        "test-org/absent",
        None,
        WeightsKind::Pretrained,
    )));
    // Refused connections fail in milliseconds; the bound leaves room for a proxy from the
    // environment, which the probe's 15 s limit still cuts short.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        reason.contains(&empty.path().display().to_string()),
        "{reason}"
    );
    assert!(reason.contains("could not be reached"), "{reason}");
    assert!(reason.contains("huggingface-cli download"), "{reason}");
}

#[test]
fn bad_revisions_are_refused() {
    let cache = cache_with_tiny(&ALL_FILES);
    match offline(cache.path()).load_model(&hub_spec(ID, Some("../../x"), WeightsKind::Pretrained))
    {
        Err(RuntimeError::InvalidInput(m)) => assert!(m.contains("../../x"), "{m}"),
        Err(other) => panic!("expected InvalidInput, got {other}"),
        Ok(_) => panic!("loaded"),
    }
}

#[test]
fn preset_ids_are_listed() {
    let ids: Vec<&str> = preset_ids().collect();
    for id in [
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "meta-llama/Llama-3.2-1B",
        "meta-llama/Llama-3.2-3B",
        "meta-llama/Llama-3.1-8B",
        "HuggingFaceTB/SmolLM-135M",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
}

/// A cached config for a preset id wins over the built-in one; with no tokenizer cached, the
/// byte-level fallback encodes and decodes. Shapes come from tiny-stories, so this is fast.
#[test]
fn cached_config_of_a_preset_id_with_the_fallback_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("models--HuggingFaceTB--SmolLM-135M");
    let snapshot = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    std::fs::copy(
        models_dir().join("tiny-stories/config.json"),
        snapshot.join("config.json"),
    )
    .unwrap();
    let model = offline(tmp.path())
        .load_model(&hub_spec(
            "HuggingFaceTB/SmolLM-135M",
            None,
            WeightsKind::Random,
        ))
        .unwrap();
    assert_eq!(model.info().hidden_size, 64);
    let ids = model.encode("Hi").unwrap();
    assert_eq!(ids, vec![1, 3 + u32::from(b'H'), 3 + u32::from(b'i')]);
    assert_eq!(model.decode(&ids).unwrap(), "Hi");
    let (out, _) = generate(&model, &[ids], &greedy(3));
    assert_eq!(out[0].len(), 3);
}

/// The smallest preset end to end with nothing cached (about 0.5 GB of f32 weights, a few
/// seconds).
#[test]
fn smollm_preset_runs_with_random_weights_and_no_files() {
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let model = offline(empty.path())
        .load_model(&hub_spec(
            "HuggingFaceTB/SmolLM-135M",
            None,
            WeightsKind::Random,
        ))
        .unwrap();
    eprintln!("SmolLM-135M random f32 init: {:?}", started.elapsed());
    let info = model.info();
    assert_eq!(info.parameters, 134_515_008);
    assert_eq!(info.weight_bytes, 4 * 134_515_008);
    let prompt = model.encode("Once upon a time").unwrap();
    assert_eq!(prompt[0], 0);
    let (out, _) = generate(&model, &[prompt], &greedy(4));
    assert_eq!(out[0].len(), 4);
    eprintln!("decoded: {}", model.decode(&out[0]).unwrap());
}

/// How the loopback Hub of [`loopback_hub`] answers file requests.
#[derive(Clone, Copy)]
enum Serve {
    /// The whole file.
    Complete,
    /// Headers announcing the whole file and its first 10 bytes, then nothing until the client
    /// hangs up (at most 30 s, which bounds the test if the client never gives up).
    Stall,
    /// Headers announcing the whole file and its first 10 bytes, then the connection closes.
    Truncate,
}

/// An HTTP server on 127.0.0.1 answering the repository probe with a listing of tiny-stories'
/// `config.json` and `tokenizer.json` at [`COMMIT`], and file requests as `serve` says. Returns
/// its endpoint; it serves until the test process ends.
fn loopback_hub(serve: Serve) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                let (body, file) = if path.starts_with("/api/") {
                    let listing = format!(
                        r#"{{"sha":"{COMMIT}","siblings":[{{"rfilename":"config.json"}},{{"rfilename":"tokenizer.json"}}]}}"#
                    );
                    (listing.into_bytes(), false)
                } else {
                    let name = path.rsplit('/').next().unwrap_or("");
                    match std::fs::read(models_dir().join("tiny-stories").join(name)) {
                        Ok(bytes) => (bytes, true),
                        Err(_) => {
                            let _ = stream.write_all(
                                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                            );
                            return;
                        }
                    }
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                match (file, serve) {
                    (false, _) | (true, Serve::Complete) => {
                        let _ = stream.write_all(&body);
                    }
                    (true, Serve::Truncate) => {
                        let _ = stream.write_all(&body[..10]);
                    }
                    (true, Serve::Stall) => {
                        let _ = stream.write_all(&body[..10]);
                        let _ = stream.flush();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(30)))
                            .unwrap();
                        let _ = stream.read(&mut [0u8; 1]);
                    }
                }
            });
        }
    });
    endpoint
}

/// Loads `test-org/served` with random weights from `endpoint` into a fresh cache, with a
/// 1-second stall limit; returns the cache and the outcome.
fn load_served(endpoint: &str) -> (tempfile::TempDir, Result<backends::BurnModel, RuntimeError>) {
    let cache = tempfile::tempdir().unwrap();
    let hub = HubCache::new(cache.path())
        .with_endpoint(endpoint)
        .with_stall_limit(Duration::from_secs(1));
    let result = BurnRuntime::with_hub_cache(hub).load_model(&hub_spec(
        "test-org/served",
        None,
        WeightsKind::Random,
    ));
    (cache, result)
}

/// The files in the served model's snapshot folder, temporary ones included.
fn snapshot_files(cache: &Path) -> Vec<String> {
    let dir = cache.join(format!("models--test-org--served/snapshots/{COMMIT}"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn downloads_complete_into_the_cache() {
    let (cache, result) = load_served(&loopback_hub(Serve::Complete));
    let model = result.unwrap();
    assert_eq!(model.info().vocab_size, 512);
    assert_eq!(
        snapshot_files(cache.path()),
        ["config.json", "tokenizer.json"]
    );
    let main = std::fs::read_to_string(cache.path().join("models--test-org--served/refs/main"));
    assert_eq!(main.unwrap(), COMMIT);
}

#[test]
fn a_stalled_download_fails_and_leaves_no_file() {
    // Before, hf-hub's client waited forever on the silent connection.
    let (cache, result) = load_served(&loopback_hub(Serve::Stall));
    let reason = not_found(result);
    assert!(
        reason.contains("stalled") && reason.contains("config.json"),
        "{reason}"
    );
    assert_eq!(snapshot_files(cache.path()), Vec::<String>::new());
}

#[test]
fn a_truncated_download_is_never_taken_for_the_file() {
    let (cache, result) = load_served(&loopback_hub(Serve::Truncate));
    let reason = not_found(result);
    assert!(reason.contains("config.json"), "{reason}");
    assert_eq!(snapshot_files(cache.path()), Vec::<String>::new());
}
