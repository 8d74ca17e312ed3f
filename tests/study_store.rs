//! End-to-end tests of the study folder: adding runs to a stored study, shards that share the
//! work, and the manifest's list of machines (the real `llmeff` binary on tiny-stories).

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn llmeff() -> Command {
    Command::cargo_bin("llmeff").expect("the llmeff binary is built for integration tests")
}

/// A study `s` of tiny-stories runs, one per batch size, a few tokens each.
fn write_script(script: &Path, sizes: &[usize]) {
    let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    std::fs::write(
        script,
        format!(
            "study(#{{ name: \"s\" }});\nlet p = prompts([\"Once upon a time\", \"A cat\"]);\nlet m = load(\"tiny-stories\");\nfor bs in [{}] {{\n    infer(m, batch(p, #{{ size: bs }}), #{{ max_new_tokens: 3, warmup: 0 }});\n}}\n",
            sizes.join(", ")
        ),
    )
    .unwrap();
}

struct Study {
    dir: tempfile::TempDir,
}

impl Study {
    fn new(sizes: &[usize]) -> Study {
        let study = Study {
            dir: tempfile::tempdir().unwrap(),
        };
        study.plan(sizes);
        study
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("s.rhai")
    }

    fn folder(&self) -> PathBuf {
        self.dir.path().join("runs/s")
    }

    fn plan(&self, sizes: &[usize]) {
        write_script(&self.script(), sizes);
    }

    /// Runs the study; returns (exit code, stderr).
    fn run(&self, extra: &[&str]) -> (Option<i32>, String) {
        let out = llmeff()
            .arg("run")
            .arg(self.script())
            .args(["--plain", "--out"])
            .arg(self.dir.path().join("runs"))
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn rows(&self) -> Vec<results::Row> {
        results::parquet_io::read_rows(
            &self.folder().join("runs.parquet"),
            results::schema::RUN_COLUMNS,
        )
        .unwrap()
    }

    fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.folder().join("manifest.json")).unwrap())
            .unwrap()
    }
}

fn int(row: &results::Row, column: &str) -> i64 {
    match row.get(column) {
        Some(results::Cell::Int(i)) => *i,
        other => panic!("{column}: {other:?}"),
    }
}

/// (batch size, experiment id) of every stored row, sorted.
fn sizes_and_ids(rows: &[results::Row]) -> Vec<(i64, i64)> {
    let mut v: Vec<_> = rows
        .iter()
        .map(|r| (int(r, "batch_size"), int(r, "experiment_id")))
        .collect();
    v.sort();
    v
}

#[test]
fn adding_a_configuration_runs_only_the_new_runs_and_removing_one_needs_force() {
    let study = Study::new(&[1]);
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sizes_and_ids(&study.rows()), [(1, 1)]);

    // One configuration more: no --force, the stored run is kept and only the new one runs.
    study.plan(&[1, 2]);
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("1 runs added"), "{stderr}");
    assert!(
        stderr.contains("1 ok, 0 failed, 1 already done"),
        "{stderr}"
    );
    assert!(!stderr.contains("supersede"), "{stderr}");
    assert!(!study.folder().join("superseded").exists());
    // The first run's row is the one stored before (id 1), beside the new run.
    assert_eq!(sizes_and_ids(&study.rows()), [(1, 1), (2, 2)]);
    assert_eq!(study.manifest()["runs"].as_object().unwrap().len(), 2);

    // Rerunning the grown plan is a plain resume.
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("0 ok, 0 failed, 2 already done"),
        "{stderr}"
    );
    assert!(!stderr.contains("runs added"), "{stderr}");

    // Removing one is refused without --force, and nothing is moved.
    study.plan(&[2]);
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("1 runs removed") && stderr.contains("--force to supersede"),
        "{stderr}"
    );
    assert_eq!(study.rows().len(), 2);
    let (code, stderr) = study.run(&["--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sizes_and_ids(&study.rows()), [(2, 2)]);
}

#[test]
fn a_changed_configuration_still_needs_force() {
    let study = Study::new(&[1]);
    assert_eq!(study.run(&[]).0, Some(0));
    // Batch size 1 -> 4 is one run removed and one added, not an addition.
    study.plan(&[4]);
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("1 runs added, 1 runs removed") && stderr.contains("supersede"),
        "{stderr}"
    );
}

#[test]
fn two_shards_of_one_model_each_run_one_of_its_two_runs() {
    // Both runs share one model load: split by load group, shard 1 had nothing to do.
    let study = Study::new(&[1, 2]);
    for shard in ["0/2", "1/2"] {
        let (code, stderr) = study.run(&["--shard", shard]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stderr.contains("1 ok, 0 failed"), "shard {shard}: {stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
    }
    let mut sizes: Vec<i64> = study.rows().iter().map(|r| int(r, "batch_size")).collect();
    sizes.sort();
    assert_eq!(sizes, [1, 2]);
}

#[test]
fn more_shards_than_runs_is_warned_about_on_stderr() {
    let study = Study::new(&[1, 2]);
    let (code, stderr) = study.run(&["--shard", "2/3"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "warning: 3 shards for 2 executions (runs x cycles): shard 2/3 gets nothing to run"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("0 ok, 0 failed"), "{stderr}");
}

#[test]
fn the_manifest_lists_each_machine_once_and_reads_the_old_single_object() {
    let study = Study::new(&[1]);
    assert_eq!(study.run(&[]).0, Some(0));
    assert_eq!(study.run(&[]).0, Some(0));
    let manifest = study.manifest();
    let machines = manifest["environment"]
        .as_array()
        .expect("a list of machines");
    assert_eq!(machines.len(), 1, "the same machine twice is listed once");
    assert!(machines[0]["first_seen_unix_s"].as_f64().unwrap() > 0.0);
    assert!(machines[0].get("hostname").is_some(), "{manifest}");
    assert!(machines[0].get("cpu_model").is_some(), "{manifest}");

    // A manifest written before machines were kept: `environment` is one object from another
    // machine. It still reads, and this machine is listed after it.
    let mut old = manifest.clone();
    let mut other = machines[0].clone();
    other["hostname"] = "elsewhere".into();
    other.as_object_mut().unwrap().remove("first_seen_unix_s");
    old["environment"] = other;
    std::fs::write(
        study.folder().join("manifest.json"),
        serde_json::to_vec_pretty(&old).unwrap(),
    )
    .unwrap();
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    let machines = study.manifest()["environment"].as_array().unwrap().clone();
    assert_eq!(machines.len(), 2);
    assert_eq!(machines[0]["hostname"], "elsewhere");
    assert!(machines[0].get("first_seen_unix_s").is_none());
    assert_eq!(
        machines[1]["hostname"],
        manifest["environment"][0]["hostname"]
    );
}

#[test]
fn a_deleted_manifest_and_a_changed_script_do_not_mix_two_plans() {
    // Regression (issue B): with manifest.json gone, a changed script's runs were compacted
    // into one table beside the old plan's.
    let study = Study::new(&[1]);
    assert_eq!(study.run(&[]).0, Some(0));
    std::fs::remove_file(study.folder().join("manifest.json")).unwrap();
    study.plan(&[2]);
    let (code, stderr) = study.run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("has no manifest.json but holds 1 stored executions"),
        "{stderr}"
    );
    // With --force the old run is superseded and the table holds the new plan only.
    let (code, stderr) = study.run(&["--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows = study.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(int(&rows[0], "batch_size"), 2);
    // The same plan again, manifest deleted: nothing foreign, it simply resumes.
    std::fs::remove_file(study.folder().join("manifest.json")).unwrap();
    assert_eq!(study.run(&[]).0, Some(0));
    assert_eq!(study.rows().len(), 1);
}
