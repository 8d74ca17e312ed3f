//! End-to-end tests of the study lock under concurrent `llmeff run`s (the real binary on
//! tiny-stories): a second writer is refused with the holder named, shard layouts cannot
//! collide, and every row is stored exactly once; and a corrupt manifest is moved aside.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use results::Cell;
use results::schema::RUN_COLUMNS;

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("llmeff")
}

/// A study `s` of `cycles` executions of one tiny run: 1 prompt, 1 new token.
fn write_script(dir: &Path, cycles: usize) -> PathBuf {
    let script = dir.join("s.rhai");
    std::fs::write(
        &script,
        format!(
            "study(#{{ name: \"s\", cycles: {cycles} }});\ninfer(load(\"tiny-stories\"), batch(prompts([\"Once\"])), #{{ max_new_tokens: 1, warmup: 0 }});\n"
        ),
    )
    .unwrap();
    script
}

/// `llmeff run` of `script` into `out`, with `extra` arguments, started in the background.
fn start(script: &Path, out: &Path, extra: &[&str], pause_ms: Option<u64>) -> Child {
    let mut cmd = Command::new(bin());
    cmd.arg("run")
        .arg(script)
        .args(["--plain", "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ms) = pause_ms {
        cmd.env("LLMEFF_TEST_PAUSE_AFTER_LOCK_MS", ms.to_string());
    }
    cmd.spawn().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Waits until the lock file `path` names `pid` (the holder writes itself after locking).
fn wait_for_holder(path: &Path, pid: u32) {
    let wanted = format!("pid {pid} on ");
    for _ in 0..6000 {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(&wanted)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} never named pid {pid}", path.display());
}

fn rows(out: &Path) -> Vec<results::Row> {
    results::parquet_io::read_rows(&out.join("s/runs.parquet"), RUN_COLUMNS).unwrap()
}

#[test]
fn a_second_run_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), 1);
    let out = dir.path().join("runs");
    let lock = out.join("s/lock");

    // A plain run holds the study: a plain run and a shard are refused, naming it.
    let first = start(&script, &out, &[], Some(4000));
    wait_for_holder(&lock, first.id());
    for extra in [&[][..], &["--shard", "0/2"][..]] {
        let second = start(&script, &out, extra, None)
            .wait_with_output()
            .unwrap();
        assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
        let text = stderr(&second);
        assert!(
            text.contains(&format!("study locked by pid {} on ", first.id())),
            "{text}"
        );
    }
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!lock.exists());

    // A shard holds it: a plain run and a shard of another count are refused.
    let shard = start(&script, &out, &["--shard", "0/2", "--force"], Some(4000));
    wait_for_holder(&out.join("s/lock.shard-0-of-2"), shard.id());
    let plain = start(&script, &out, &[], None).wait_with_output().unwrap();
    let text = stderr(&plain);
    assert!(
        text.contains(&format!("locked by shard 0/2: pid {}", shard.id())),
        "{text}"
    );
    let other = start(&script, &out, &["--shard", "1/3"], None)
        .wait_with_output()
        .unwrap();
    let text = stderr(&other);
    assert!(text.contains("being run as shard 0/2"), "{text}");
    let shard = shard.wait_with_output().unwrap();
    assert!(shard.status.success(), "{}", stderr(&shard));
    assert_eq!(rows(&out).len(), 1);
}

/// How many stress iterations: each starts three processes.
const ITERATIONS: usize = 50;

#[test]
fn concurrent_runs_and_shard_layouts_store_every_row_exactly_once() {
    const CYCLES: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), CYCLES);
    let layouts: [(&[&str], &[&str]); 4] = [
        (&[], &["--shard", "0/2"]),
        (&["--shard", "0/2"], &["--shard", "1/2"]),
        (&["--shard", "0/2"], &["--shard", "1/3"]),
        (&[], &[]),
    ];
    for i in 0..ITERATIONS {
        let out = dir.path().join(format!("runs-{i}"));
        let (a, b) = layouts[i % layouts.len()];
        let first = start(&script, &out, a, None);
        let second = start(&script, &out, b, None);
        for child in [first, second] {
            let done = child.wait_with_output().unwrap();
            // Each either ran its work or was refused because the other held the study.
            let text = stderr(&done);
            assert!(
                done.status.success()
                    || text.contains("locked by")
                    || text.contains("being run as"),
                "iteration {i}: {text}"
            );
        }
        // A final plain run does whatever a refused one left.
        let last = start(&script, &out, &[], None).wait_with_output().unwrap();
        assert!(last.status.success(), "iteration {i}: {}", stderr(&last));
        let rows = rows(&out);
        let executions: HashSet<(String, i64)> = rows
            .iter()
            .map(|r| match (r.get("run_hash"), r.get("cycle_id")) {
                (Some(Cell::Text(h)), Some(Cell::Int(c))) => (h.clone(), *c),
                other => panic!("{other:?}"),
            })
            .collect();
        let ids: HashSet<i64> = rows
            .iter()
            .map(|r| match r.get("experiment_id") {
                Some(Cell::Int(id)) => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(rows.len(), CYCLES, "iteration {i}");
        assert_eq!(executions.len(), CYCLES, "iteration {i}");
        assert_eq!(ids.len(), CYCLES, "iteration {i}");
        let names: Vec<String> = std::fs::read_dir(out.join("s"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("lock") || n.ends_with(".tmp"))
            .collect();
        assert!(names.is_empty(), "iteration {i}: {names:?}");
    }
}

#[test]
fn a_corrupt_manifest_is_moved_aside_by_force() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), 1);
    let out = dir.path().join("runs");
    let done = start(&script, &out, &[], None).wait_with_output().unwrap();
    assert!(done.status.success(), "{}", stderr(&done));
    std::fs::write(out.join("s/manifest.json"), b"{ truncated").unwrap();
    let refused = start(&script, &out, &[], None).wait_with_output().unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("--force to move it aside"),
        "{}",
        stderr(&refused)
    );
    let forced = start(&script, &out, &["--force"], None)
        .wait_with_output()
        .unwrap();
    let text = stderr(&forced);
    assert!(forced.status.success(), "{text}");
    assert!(
        text.contains("was corrupt") && text.contains("moved aside"),
        "{text}"
    );
    let aside: Vec<_> = std::fs::read_dir(out.join("s"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("manifest.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(results::Manifest::load(&out.join("s")).unwrap().is_some());
}

#[test]
fn a_writer_killed_between_a_success_and_removing_its_failure_resumes_to_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(repo.join("models/tiny-stories").join(f), model.join(f)).unwrap();
    }
    let weights = std::fs::read(repo.join("models/tiny-stories/model.safetensors")).unwrap();
    std::fs::write(
        model.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let script = dir.path().join("s.rhai");
    std::fs::write(
        &script,
        format!(
            "study(#{{ name: \"s\" }});\ninfer(load(\"{}\"), batch(prompts([\"Once\"])), #{{ max_new_tokens: 1, warmup: 0 }});\n",
            model.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("runs");
    let failed = start(&script, &out, &[], None).wait_with_output().unwrap();
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));

    // The model repaired, the retry "crashes" right after writing its success part.
    std::fs::write(model.join("model.safetensors"), &weights).unwrap();
    let mut cmd = Command::new(bin());
    let crashed = cmd
        .arg("run")
        .arg(&script)
        .args(["--plain", "--quiet", "--out"])
        .arg(&out)
        .env("LLMEFF_TEST_EXIT_AFTER_PART", "1")
        .output()
        .unwrap();
    assert_eq!(crashed.status.code(), Some(86), "{}", stderr(&crashed));
    let parts: Vec<String> = std::fs::read_dir(out.join("s/parts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");

    let resumed = start(&script, &out, &[], None).wait_with_output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let rows = rows(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), Some(&Cell::Text("ok".into())));
}
