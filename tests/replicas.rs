//! End to end: the real binary runs tiny-stories as two replicas on CPU core groups
//! (`devices: ["cpu:0", "cpu:1"]`) beside the same run on one device.

use assert_cmd::Command;
use results::Cell;
use results::parquet_io::read_rows;
use results::schema::{REPLICA_COLUMNS, REQUEST_COLUMNS, RUN_COLUMNS};
use std::path::{Path, PathBuf};

const STUDY: &str = r#"
study(#{ name: "replicas" });
let one = load("tiny-stories");
let two = load("tiny-stories", #{ devices: ["cpu:0", "cpu:1"] });
let stories = prompts("builtin:stories", #{ count: 5, max_input_tokens: 24 });
for m in [one, two] {
  measure(infer(m, batch(stories, #{ size: 2 }), #{ max_new_tokens: 8, warmup: 0 }),
          #{ meters: ["latency", "energy"] });
}
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn int(row: &results::Row, name: &str) -> i64 {
    match row.get(name) {
        Some(Cell::Int(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn text(row: &results::Row, name: &str) -> String {
    match row.get(name) {
        Some(Cell::Text(v)) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn requests(study: &Path, run_hash: &str) -> Vec<results::Row> {
    let mut rows = read_rows(
        &study
            .join("requests")
            .join(format!("{run_hash}-c0.parquet")),
        REQUEST_COLUMNS,
    )
    .unwrap();
    rows.sort_by_key(|r| int(r, "request_index"));
    rows
}

/// Whether this process may run on cores 0 and 1 (CI has two cores; a taskset may allow
/// fewer).
fn two_cores_allowed() -> bool {
    backends::cores::allowed_cores().is_ok_and(|c| c.contains(0) && c.contains(1))
}

#[test]
fn two_replicas_on_core_groups_split_the_prompts_and_match_one_device() {
    if !two_cores_allowed() {
        eprintln!("skipped: cores 0 and 1 are not both allowed to this process");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("replicas.rhai");
    std::fs::write(&script, STUDY).unwrap();
    let out = Command::cargo_bin("llmeff")
        .unwrap()
        .current_dir(repo())
        .args(["run", "--plain", "--out"])
        .arg(dir.path())
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let study = dir.path().join("replicas");
    let runs = read_rows(&study.join("runs.parquet"), RUN_COLUMNS).unwrap();
    assert_eq!(runs.len(), 2);
    let by_device = |device: &str| {
        runs.iter()
            .find(|r| text(r, "device") == device)
            .unwrap_or_else(|| panic!("no run on {device}"))
    };
    let single = by_device("cpu");
    let replicated = by_device("cpu:0+cpu:1");
    for run in [single, replicated] {
        assert_eq!(text(run, "status"), "ok");
        assert_eq!(int(run, "num_requests"), 5);
    }

    // One row per replica, with Accelerate's split: 3 then 2 prompts.
    let replicas = read_rows(&study.join("replicas.parquet"), REPLICA_COLUMNS).unwrap();
    assert_eq!(replicas.len(), 2);
    let hash = text(replicated, "run_hash");
    for (i, (cores, requests)) in [("0", 3), ("1", 2)].into_iter().enumerate() {
        let row = &replicas[i];
        assert_eq!(text(row, "run_hash"), hash);
        assert_eq!(int(row, "replica"), i as i64);
        assert_eq!(text(row, "device"), format!("cpu:{cores}"));
        assert_eq!(text(row, "cores"), cores);
        assert_eq!(int(row, "num_requests"), requests);
        // Machine-wide energy stays with the run, counted once.
        assert_eq!(text(row, "cpu_energy_source"), "run");
        assert_eq!(text(row, "gpu_energy_source"), "none");
    }
    let replica_tokens: i64 = replicas.iter().map(|r| int(r, "output_tokens")).sum();
    assert_eq!(replica_tokens, int(replicated, "output_tokens"));

    // Every request exactly once, served by the replica its index falls to, with the same
    // token counts as on one device (greedy; the ids themselves are compared on the same
    // model by backends/tests/cores.rs).
    let one = requests(&study, &text(single, "run_hash"));
    let two = requests(&study, &hash);
    let indices: Vec<i64> = two.iter().map(|r| int(r, "request_index")).collect();
    assert_eq!(indices, vec![0, 1, 2, 3, 4]);
    let served: Vec<i64> = two.iter().map(|r| int(r, "replica")).collect();
    assert_eq!(served, vec![0, 0, 0, 1, 1]);
    assert!(one.iter().all(|r| int(r, "replica") == 0));
    let tokens = |rows: &[results::Row]| -> Vec<(i64, i64)> {
        rows.iter()
            .map(|r| (int(r, "input_tokens"), int(r, "output_tokens")))
            .collect()
    };
    assert_eq!(tokens(&one), tokens(&two));
    assert_eq!(
        int(single, "output_tokens"),
        int(replicated, "output_tokens")
    );
}
