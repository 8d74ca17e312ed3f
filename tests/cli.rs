//! End-to-end tests: the real `llmeff` binary on the bundled tiny-stories model.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn llmeff() -> Command {
    Command::cargo_bin("llmeff").expect("the llmeff binary is built for integration tests")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden(model: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo().join("models").join(model).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn generate_reproduces_the_golden_greedy_continuation() {
    let golden = golden("tiny-stories");
    let case = &golden["prompts"][0];
    let max_new = golden["generation"]["max_new_tokens"].as_u64().unwrap();
    let out = llmeff()
        .args(["generate", "--model", "tiny-stories", "--prompt"])
        .arg(case["prompt"].as_str().unwrap())
        .args([
            "--max-new-tokens",
            &max_new.to_string(),
            "--ignore-eos",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["input_ids"], case["input_ids"]);
    assert_eq!(json["output_ids"], case["greedy_new_ids"]);
    assert_eq!(json["text"], case["greedy_new_text"]);
    assert_eq!(json["prompt"], case["prompt"]);
}

#[test]
fn generate_prints_prompt_and_continuation() {
    llmeff()
        .args([
            "generate",
            "--model",
            "tiny-stories",
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "12",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "Once upon a time, there was a little girl named Lily",
        ));
}

/// `llmeff generate` of tiny-stories as an installed binary runs it: from a folder outside the
/// repository, without `LLMEFF_MODELS_DIR` (which `.cargo/config.toml` sets for tests), with
/// `home` as its home and `xdg_data_home` as its data folder.
fn generate_outside_the_repository(
    cwd: &Path,
    home: &Path,
    xdg_data_home: Option<&Path>,
) -> std::process::Output {
    let mut cmd = llmeff();
    cmd.current_dir(cwd)
        .env_remove("LLMEFF_MODELS_DIR")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", home)
        .args([
            "generate",
            "--model",
            "tiny-stories",
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "12",
        ]);
    if let Some(data) = xdg_data_home {
        cmd.env("XDG_DATA_HOME", data);
    }
    cmd.output().unwrap()
}

#[test]
fn an_installed_binary_unpacks_its_bundled_model_into_the_data_folder_once() {
    // Regression (issue C): the bundled models were found only through the source tree the
    // binary was built in.
    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let first = generate_outside_the_repository(cwd.path(), home.path(), None);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&first.stdout)
            .starts_with("Once upon a time, there was a little girl named Lily"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let unpacked = home.path().join(".local/share/llmeff/models/tiny-stories");
    assert!(
        stderr.contains("unpacked the bundled model `tiny-stories`")
            && stderr.contains(&unpacked.display().to_string()),
        "{stderr}"
    );
    assert!(unpacked.join("model.safetensors").is_file());
    assert!(unpacked.join("README.md").is_file(), "its README comes too");
    // The second time it is found there: no note.
    let second = generate_outside_the_repository(cwd.path(), home.path(), None);
    assert!(second.status.success());
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("unpacked"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // XDG_DATA_HOME names the data folder when set.
    let data = tempfile::tempdir().unwrap();
    let xdg = generate_outside_the_repository(cwd.path(), home.path(), Some(data.path()));
    assert!(xdg.status.success());
    assert!(
        data.path()
            .join("llmeff/models/tiny-stories/config.json")
            .is_file()
    );
}

#[test]
fn missing_model_is_a_one_line_error_with_exit_code_2() {
    let out = llmeff()
        .args(["generate", "--model", "no-such-model", "--prompt", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no-such-model"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn missing_script_is_a_one_line_error_with_exit_code_2() {
    let out = llmeff()
        .args(["run", "does/not/exist.rhai"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("does/not/exist.rhai"), "{stderr}");
}

#[test]
fn unknown_flag_exits_2() {
    llmeff()
        .args(["run", "--no-such-flag", "x.rhai"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--no-such-flag"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        vec![],
        vec!["run"],
        vec!["plan"],
        vec!["generate"],
        vec!["repl"],
        vec!["report"],
        vec!["env"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        llmeff()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: llmeff"));
    }
}

#[test]
fn env_lists_every_meter_with_a_reason() {
    let out = llmeff().args(["env", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let meters = json["meters"].as_array().unwrap();
    let names: Vec<&str> = meters.iter().filter_map(|m| m["name"].as_str()).collect();
    for name in ["nvml", "amdgpu", "rapl", "estimate", "procfs", "peak"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for m in meters {
        assert!(
            !m["detail"].as_str().unwrap_or_default().is_empty(),
            "{m}: no detail"
        );
    }
    // The estimate needs only /proc, so every Linux machine has it.
    let estimate = meters.iter().find(|m| m["name"] == "estimate").unwrap();
    assert_eq!(estimate["available"], true);
    assert!(json["environment"]["logical_cores"].as_u64().unwrap() >= 1);
    llmeff()
        .arg("env")
        .assert()
        .success()
        .stdout(predicate::str::contains("meters:"));
}

#[test]
fn script_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.rhai");
    std::fs::write(
        &script,
        "let m = load(\"tiny-stories\");\nlet r = infer(m, m);\n",
    )
    .unwrap();
    let out = llmeff().arg("plan").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.rhai:2:9"), "{stderr}");
    assert!(stderr.contains("infer() expects batches"), "{stderr}");
    assert!(stderr.contains("^"), "{stderr}");
}

fn run_single(out_dir: &Path) -> std::process::Output {
    llmeff()
        .current_dir(repo())
        .args(["run", "experiments/single.rhai", "--plain", "--out"])
        .arg(out_dir)
        .output()
        .unwrap()
}

fn float(row: &results::Row, column: &str) -> Option<f64> {
    match row.get(column) {
        Some(results::Cell::Float(v)) => Some(*v),
        Some(results::Cell::Null) => None,
        other => panic!("{column}: expected a float or null, got {other:?}"),
    }
}

#[track_caller]
fn text(row: &results::Row, column: &str) -> String {
    match row.get(column) {
        Some(results::Cell::Text(v)) => v.clone(),
        other => panic!("{column}: expected text, got {other:?}"),
    }
}

/// What built llmeff and what ran the study is in the row (issue A.5).
fn check_provenance(row: &results::Row) {
    // Tests run the debug build; the commit is known in a git checkout.
    assert_eq!(text(row, "build_profile"), "debug");
    assert!(text(row, "rustc_version").starts_with("rustc "));
    if std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".git")
        .exists()
    {
        assert_eq!(text(row, "git_commit").len(), 40);
        assert!(["true", "false"].contains(&text(row, "git_dirty").as_str()));
    }
    let Some(results::Cell::Int(threads)) = row.get("threads") else {
        panic!("threads missing")
    };
    assert!(*threads >= 1);
    let started = text(row, "started_at");
    assert!(started.len() == 24 && started.ends_with('Z'), "{started}");
    assert!(!text(row, "hostname").is_empty());
    assert!(text(row, "kernel").starts_with("Linux "));
    // Closed loop: no arrival parameters.
    assert_eq!(row.get("arrival_rate_per_s"), Some(&results::Cell::Null));
}

/// Every meter's figure is present with its source, or null and labelled unavailable.
fn check_meters(study: &Path, row: &results::Row, output_tokens: i64) {
    let mut sum = 0.0;
    let mut sources = Vec::new();
    for domain in ["cpu", "gpu", "ram"] {
        let source = text(row, &format!("energy_{domain}_source"));
        let joules = float(row, &format!("energy_{domain}_j"));
        match source.as_str() {
            "nvml" | "amdgpu" | "rapl" | "estimate" => {
                let j = joules.unwrap_or_else(|| panic!("{domain}: {source} without joules"));
                assert!(j >= 0.0, "{domain}: {j} J");
                sum += j;
                sources.push(source);
            }
            "unavailable" => assert_eq!(joules, None, "{domain}: a figure without a source"),
            other => panic!("{domain}: unexpected source {other}"),
        }
    }
    // No NVIDIA GPU serves a CPU run.
    assert_eq!(text(row, "energy_gpu_source"), "unavailable");
    // Every machine has at least the CPU estimate, so the total exists and adds up.
    let total = float(row, "energy_total_j").expect("energy_total_j");
    assert!((total - sum).abs() < 1e-9 * total.max(1.0));
    sources.sort();
    sources.dedup();
    assert_eq!(text(row, "energy_total_source"), sources.join("+"));
    let per_token = float(row, "j_per_output_token").unwrap();
    assert!((per_token - total / output_tokens as f64).abs() < 1e-9 * per_token);
    // World average, no PUE: 475 g per kWh.
    assert_eq!(text(row, "carbon_intensity_source"), "table: world 2019");
    let co2 = float(row, "co2e_g").unwrap();
    assert!((co2 - total / 3.6e6 * 475.0).abs() < 1e-9 * co2.max(1e-12));
    let prefill = float(row, "energy_prefill_j").unwrap();
    let decode = float(row, "energy_decode_j").unwrap();
    assert!(prefill > 0.0 && decode > 0.0 && prefill + decode <= total * (1.0 + 1e-9));
    // Memory and utilisation were sampled, and the series is stored beside the runs.
    let Some(results::Cell::Int(samples)) = row.get("num_samples") else {
        panic!("num_samples missing")
    };
    assert!(*samples >= 2, "{samples} samples");
    let hash = text(row, "run_hash");
    let series = results::parquet_io::read_rows(
        &study.join("samples").join(format!("{hash}-c0.parquet")),
        results::schema::SAMPLE_COLUMNS,
    )
    .unwrap();
    assert_eq!(series.len() as i64, *samples);
    let Some(results::Cell::Int(rss)) = row.get("peak_rss_bytes") else {
        panic!("peak_rss_bytes missing")
    };
    assert!(*rss > 1 << 20, "{rss}");
    // CPU steal is a share of the machine's time, read from /proc/stat beside the load (0 on
    // bare metal; a virtual machine's neighbours can make it anything up to 100).
    // A run too short for two samples of a few clock ticks each has no utilisation figure,
    // and says why, rather than 0 % or 430 % (issue A.6).
    for column in ["cpu_steal_mean_pct", "system_cpu_mean_pct"] {
        match float(row, column) {
            Some(v) => assert!((0.0..=100.0).contains(&v), "{column} = {v}"),
            None => assert!(
                text(row, "meter_notes").contains("utilisation left null"),
                "{column} null without a note"
            ),
        }
    }
    // MFU and MBU against the machine's measured CPU peak: positive. tiny-stories' weights fit
    // in the CPU caches, so decoding can read faster than the memory benchmark: an MBU above 1
    // must then be explained in meter_notes (issue A.3).
    let mfu = float(row, "mfu").unwrap();
    assert!(mfu > 0.0 && mfu < 1.0, "mfu = {mfu}");
    let mbu = float(row, "mbu").unwrap();
    assert!(mbu > 0.0, "mbu = {mbu}");
    if mbu > 1.0 {
        assert!(
            text(row, "meter_notes").contains("> 1"),
            "mbu = {mbu} unexplained"
        );
    }
    assert!(text(row, "peak_source").starts_with("microbenchmark"));
    // f32 on the CPU runs on llmeff's kernels, and the row says so.
    assert!(text(row, "compute").starts_with("llmeff-kernels/"));
}

#[test]
fn single_study_runs_end_to_end_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_single(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tiny-stories"), "{stdout}");
    assert!(stdout.contains("output_tokens_per_s"), "{stdout}");

    let study = dir.path().join("single");
    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get("status"), Some(&results::Cell::Text("ok".into())));
    assert_eq!(
        row.get("model"),
        Some(&results::Cell::Text("tiny-stories".into()))
    );
    assert_eq!(row.get("batch_size"), Some(&results::Cell::Int(4)));
    assert_eq!(row.get("num_requests"), Some(&results::Cell::Int(8)));
    let Some(results::Cell::Int(output_tokens)) = row.get("output_tokens") else {
        panic!("output_tokens missing")
    };
    assert!(*output_tokens > 0 && *output_tokens <= 8 * 32);
    let Some(results::Cell::Float(wall)) = row.get("wall_s") else {
        panic!("wall_s missing")
    };
    let Some(results::Cell::Float(rate)) = row.get("output_tokens_per_s") else {
        panic!("output_tokens_per_s missing")
    };
    assert!((rate - *output_tokens as f64 / wall).abs() < 1e-6 * rate);
    assert!(study.join("runs.csv").is_file() && study.join("runs.json").is_file());
    check_meters(&study, row, *output_tokens);
    check_provenance(row);

    // A second run finds everything stored and adds no row.
    let again = run_single(dir.path());
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("1 already done"));
    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn plan_prints_loads_and_runs_without_running() {
    llmeff()
        .current_dir(repo())
        .args(["plan", "experiments/single.rhai"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 runs x 1 cycles, 1 loads"))
        .stdout(predicate::str::contains("batch_size=4"));
    let out = llmeff()
        .current_dir(repo())
        .args(["plan", "experiments/single.rhai", "--format", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 1);
    assert!(
        json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "load")
    );
}

#[test]
fn grid_study_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = llmeff()
        .current_dir(repo())
        .args(["run", "experiments/grid.rhai", "--plain", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("loading ").count(), 4, "{stderr}");
    let rows = results::parquet_io::read_rows(
        &dir.path().join("grid/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    assert_eq!(rows.len(), 8);
    // Fixed output length: 8 prompts x 16 tokens in every run.
    for row in &rows {
        assert_eq!(row.get("output_tokens"), Some(&results::Cell::Int(8 * 16)));
    }
    // aggregate(#{ by: [model, dtype, batch_size] }) -> one summary row per run here.
    let summary = std::fs::read_to_string(dir.path().join("grid/summary.csv")).unwrap();
    assert!(
        summary
            .starts_with("model,dtype,batch_size,n,wall_s_mean,wall_s_p50,wall_s_p99,wall_s_std"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 9);
    assert!(dir.path().join("grid/summary.parquet").is_file());
}

#[test]
fn repl_extends_one_plan_and_survives_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = "\
let m = load(\"tiny-stories\");
let p = prompts(\"builtin:stories\", #{ count: 2 });
let r = infer(m, batch(p, #{ size: 2 }), #{
    max_new_tokens: 4,
});
load(\"tiny-stories\", #{ dtyp: \"f32\" });
:plan
:run
:results
:bogus
:quit
";
    let out = llmeff()
        .current_dir(dir.path())
        .env("LLMEFF_HISTORY", dir.path().join("history"))
        .args(["repl", "--study", "repl-test"])
        .write_stdin(input)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown option `dtyp` for load()"),
        "{stderr}"
    );
    assert!(stdout.contains("1 runs x 1 cycles, 1 loads"), "{stdout}");
    assert!(stdout.matches("tiny-stories").count() >= 2, "{stdout}");
    assert!(stderr.contains("unknown command `:bogus`"), "{stderr}");
    assert!(dir.path().join("runs/repl-test/runs.parquet").is_file());
}

#[test]
fn imports_resolve_relative_then_llmeff_path_and_report_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("shared");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("extra.rhai"), "fn size() { 3 }").unwrap();
    std::fs::write(dir.path().join("a.rhai"), "import \"b\" as b;").unwrap();
    std::fs::write(dir.path().join("b.rhai"), "import \"a\" as a;").unwrap();
    std::fs::write(
        dir.path().join("study.rhai"),
        "import \"extra\" as extra;\nlet p = prompts([\"x\"]);\ninfer(load(\"tiny-stories\"), batch(p, #{ size: extra::size() }));\n",
    )
    .unwrap();
    llmeff()
        .env("LLMEFF_PATH", &lib)
        .arg("plan")
        .arg(dir.path().join("study.rhai"))
        .assert()
        .success()
        .stdout(predicate::str::contains("batch_size=3"));
    llmeff()
        .env_remove("LLMEFF_PATH")
        .arg("plan")
        .arg(dir.path().join("study.rhai"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("module `extra` not found"));
    llmeff()
        .arg("plan")
        .arg(dir.path().join("a.rhai"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("import cycle"))
        .stderr(predicate::str::contains("a.rhai -> "));
}

#[test]
fn a_locked_study_is_refused_and_a_changed_plan_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.rhai");
    // `load`: the options of the model's load().
    let write_with = |bs: usize, load: &str| {
        std::fs::write(
            &script,
            format!(
                "study(#{{ name: \"s\" }});\nlet p = prompts([\"Once upon a time\"]);\ninfer(load(\"tiny-stories\"{load}), batch(p, #{{ size: {bs} }}), #{{ max_new_tokens: 4, warmup: 0 }});\n"
            ),
        )
        .unwrap()
    };
    let write = |bs: usize| write_with(bs, "");
    let run = |extra: &[&str]| {
        llmeff()
            .arg("run")
            .arg(&script)
            .args(["--plain", "--out"])
            .arg(dir.path().join("runs"))
            .args(extra)
            .output()
            .unwrap()
    };
    let study_rows = || {
        results::parquet_io::read_rows(
            &dir.path().join("runs/s/runs.parquet"),
            results::schema::RUN_COLUMNS,
        )
        .unwrap()
    };
    write(1);
    assert!(run(&[]).status.success());
    assert!(dir.path().join("runs/s/manifest.json").is_file());

    // A lock file left naming a live but unrelated pid (pid 1 always exists: pid reuse)
    // does not block: the kernel lock, not the file, is what excludes (tests/concurrency.rs
    // has live holders).
    std::fs::write(dir.path().join("runs/s/lock"), "pid 1 on here since then\n").unwrap();
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("runs/s/lock").exists());

    // A changed plan is refused, then superseded with --force.
    write(2);
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 runs added, 1 runs removed") && stderr.contains("--force"),
        "{stderr}"
    );
    let out = run(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = study_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("batch_size"), Some(&results::Cell::Int(2)));
    // The experiment counter continued from the first run.
    assert_eq!(rows[0].get("experiment_id"), Some(&results::Cell::Int(2)));
    assert!(dir.path().join("runs/s/superseded").is_dir());

    // The same plan on the other CPU forward pass is another run (the pass is part of the
    // run's hash): the stored run is not resumed as if it were this one; --force measures it.
    write_with(2, ", #{ compute: \"burn\" }");
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 runs added, 1 runs removed") && stderr.contains("--force"),
        "{stderr}"
    );
    let out = run(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = study_rows();
    assert_eq!(
        rows.len(),
        1,
        "the host-kernel row was superseded, not kept"
    );
    let compute = text(&rows[0], "compute");
    assert!(!compute.starts_with("llmeff-kernels"), "{compute}");
}

/// Kill -9 in the middle of a study, run again: every planned run appears exactly once and no
/// part is corrupt.
#[test]
fn a_killed_study_resumes_without_losing_or_duplicating_runs() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("long.rhai");
    std::fs::write(
        &script,
        "study(#{ name: \"long\" });\nlet p = prompts(\"builtin:stories\", #{ count: 6 });\nfor bs in [1, 2, 3, 6] { for n in [60, 61, 62] {\n  infer(load(\"tiny-stories\"), batch(p, #{ size: bs }), #{ max_new_tokens: n, min_new_tokens: n, stop_at_eos: false, warmup: 0 });\n} }\n",
    )
    .unwrap();
    let out = dir.path().join("runs");
    let bin = assert_cmd::cargo::cargo_bin("llmeff");
    let mut child = std::process::Command::new(&bin)
        .arg("run")
        .arg(&script)
        .args(["--plain", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let parts = out.join("long/parts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let stored = std::fs::read_dir(&parts).map(|d| d.count()).unwrap_or(0);
        if stored >= 2 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = std::fs::read_dir(&parts).unwrap().count();
    assert!(before < 12, "the study finished before it could be killed");

    let again = llmeff()
        .arg("run")
        .arg(&script)
        .args(["--plain", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("already done"), "{stderr}");
    let rows = results::parquet_io::read_rows(
        &out.join("long/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    assert_eq!(rows.len(), 12);
    let mut hashes: Vec<String> = rows
        .iter()
        .map(|r| r.get("run_hash").unwrap().display())
        .collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 12);
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r.get("experiment_id").unwrap().display())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "experiment ids repeat");
}

#[test]
fn a_broken_model_fails_alone_and_the_study_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken-model");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(repo().join("models/tiny-stories").join(f), broken.join(f)).unwrap();
    }
    let weights = std::fs::read(repo().join("models/tiny-stories/model.safetensors")).unwrap();
    std::fs::write(
        broken.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let script = dir.path().join("mixed.rhai");
    std::fs::write(
        &script,
        format!(
            "study(#{{ name: \"mixed\" }});\nlet p = batch(prompts([\"Once upon a time\"]));\nfor m in [\"tiny-stories\", \"{}\"] {{ infer(load(m), p, #{{ max_new_tokens: 4, warmup: 0 }}); }}\n",
            broken.display()
        ),
    )
    .unwrap();
    let out = llmeff()
        .arg("run")
        .arg(&script)
        .args(["--plain", "--out"])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = results::parquet_io::read_rows(
        &dir.path().join("runs/mixed/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.get("status") == Some(&results::Cell::Text("failed".into())))
        .collect();
    assert_eq!(failed.len(), 1);
    let error = failed[0].get("error").unwrap().display();
    assert!(error.contains("model.safetensors"), "{error}");
    assert!(
        rows.iter()
            .any(|r| r.get("status") == Some(&results::Cell::Text("ok".into())))
    );
}

#[test]
fn shards_run_disjoint_slices_that_merge_into_the_whole_study() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    for shard in ["0/2", "1/2"] {
        let o = llmeff()
            .current_dir(repo())
            .args([
                "run",
                "experiments/grid.rhai",
                "--plain",
                "--shard",
                shard,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let rows = results::parquet_io::read_rows(
        &out.join("grid/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    assert_eq!(rows.len(), 8);
    let mut hashes: Vec<String> = rows
        .iter()
        .map(|r| r.get("run_hash").unwrap().display())
        .collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 8);
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r.get("experiment_id").unwrap().display())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "experiment ids repeat across shards");
}

#[test]
fn models_study_runs_full_precision_int8_and_every_family_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let out = llmeff()
        .current_dir(repo())
        .args(["run", "experiments/models.rhai", "--plain", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = results::parquet_io::read_rows(
        &dir.path().join("models/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    // tiny-stories at f32 and int8, and one fixture per family.
    assert_eq!(rows.len(), 8);
    let mut families: Vec<String> = rows
        .iter()
        .filter_map(|r| match r.get("architecture") {
            Some(results::Cell::Text(a)) => Some(a.clone()),
            _ => None,
        })
        .collect();
    families.sort();
    families.dedup();
    assert_eq!(
        families,
        ["gemma2", "llama", "mistral", "phi3", "qwen2", "qwen3"]
    );
    let bytes = |q: &str| {
        rows.iter()
            .find(|r| {
                r.get("quantization") == Some(&results::Cell::Text(q.into()))
                    && r.get("model") == Some(&results::Cell::Text("tiny-stories".into()))
            })
            .and_then(|r| match r.get("model_bytes") {
                Some(results::Cell::Int(b)) => Some(*b),
                _ => None,
            })
            .unwrap()
    };
    assert!(
        bytes("int8/b32") < bytes("none"),
        "int8 must hold fewer weight bytes"
    );
}

/// `generate` on a Hub id served from a (test) Hugging Face cache, fully offline.
#[test]
fn generate_loads_a_hub_id_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = cache.path().join("models--test-org--tiny");
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        std::fs::copy(repo().join("models/tiny-stories").join(f), snapshot.join(f)).unwrap();
    }
    let golden = golden("tiny-stories");
    let case = &golden["prompts"][0];
    let out = llmeff()
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "generate",
            "--model",
            "test-org/tiny",
            "--max-new-tokens",
            "32",
            "--ignore-eos",
            "--json",
            "--prompt",
        ])
        .arg(case["prompt"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["output_ids"], case["greedy_new_ids"]);

    // A folder works too.
    let folder = llmeff()
        .args([
            "generate",
            "--max-new-tokens",
            "4",
            "--json",
            "--prompt",
            "Once upon a time",
            "--model",
        ])
        .arg(&snapshot)
        .output()
        .unwrap();
    assert!(
        folder.status.success(),
        "{}",
        String::from_utf8_lossy(&folder.stderr)
    );

    // An id that is not cached fails fast, naming the id and the cache folder.
    let missing = llmeff()
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .args(["generate", "--model", "test-org/absent", "--prompt", "hi"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("test-org/absent") && stderr.contains(&cache.path().display().to_string()),
        "{stderr}"
    );
}

#[test]
fn bench_measures_the_tiny_model_and_the_memory_it_ran_beside() {
    // One new token has no decode phase to time: refused, not reported as millions of tokens/s.
    llmeff()
        .args(["bench", "--models", "tiny-stories", "--new-tokens", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--new-tokens must be at least 2"));
    let bench = "bench --models tiny-stories --batches 1 --new-tokens 4 --repeats 1 \
                 --growth-tokens 0 --json";
    let out = llmeff().args(bench.split_whitespace()).assert().success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one model, one batch size");
    let row = &rows[0];
    assert_eq!(row["model"], "tiny-stories");
    assert_eq!(row["new_tokens"], 4);
    for column in [
        "prefill_tokens_per_s",
        "decode_tokens_per_s",
        "decode_bytes_per_s",
    ] {
        let v = row[column].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{column} = {v}");
    }
    // The per-row copy check runs the same benchmark as the MBU denominator: a DRAM copy is
    // somewhere between a floppy disk and a whole server's bandwidth.
    let copy = row["copy_now_bytes_per_s"].as_f64().unwrap();
    assert!((1e8..1e13).contains(&copy), "copy now {copy}");
    if let Some(steal) = row["cpu_steal_pct"].as_f64() {
        assert!((0.0..=100.0).contains(&steal), "steal {steal}");
    }
}

#[test]
fn a_reader_that_stops_early_ends_llmeff_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `llmeff plan ... | true`: the reader is gone before llmeff writes a byte.
    for format in ["text", "dot", "json"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmeff"))
            .current_dir(repo())
            .args(["plan", "experiments/single.rhai", "--format", format])
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{format}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{format}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{format}: {stderr}");
        // Ended by SIGPIPE, as `cat` or `grep` are.
        assert_eq!(out.status.signal(), Some(13), "{format}: {:?}", out.status);
    }
}

#[test]
fn generate_refuses_top_k_and_top_p_without_a_temperature() {
    for (flag, value) in [("--top-p", "0.9"), ("--top-k", "5")] {
        let out = llmeff()
            .args(["generate", "--prompt", "Once", "--max-new-tokens", "2"])
            .args([flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        // The words a script's `decoding: #{ top_p: ... }` without method "sample" gets.
        assert!(
            stderr.contains(&format!("`{flag}`: only applies to method \"sample\"")),
            "{stderr}"
        );
        assert!(stderr.contains("--temperature"), "{stderr}");
    }
    llmeff()
        .args(["generate", "--prompt", "Once", "--max-new-tokens", "2"])
        .args(["--temperature", "0.8", "--top-p", "0.9", "--top-k", "5"])
        .assert()
        .success();
}

#[test]
fn generate_reports_ttft_and_tokens_per_s_on_the_threads_asked_for() {
    let out = llmeff()
        .args([
            "generate",
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
        ])
        .args(["6", "--ignore-eos", "--threads", "3", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["output_tokens"], 6);
    assert_eq!(json["output_ids"].as_array().unwrap().len(), 6);
    assert_eq!(json["threads"], 3, "the pool --threads sized");
    let ttft = json["ttft_s"].as_f64().unwrap();
    let total = json["total_s"].as_f64().unwrap();
    assert!(ttft > 0.0 && ttft <= total, "ttft {ttft}, total {total}");
    for key in ["decode_tokens_per_s", "output_tokens_per_s"] {
        let v = json[key].as_f64().unwrap();
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }
    // 6 tokens in `total` seconds.
    let overall = json["output_tokens_per_s"].as_f64().unwrap();
    assert!((overall * total - 6.0).abs() < 1e-6, "{overall} x {total}");

    // As text: the continuation alone on stdout, the speed after it on stderr.
    let out = llmeff()
        .args([
            "generate",
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
        ])
        .args(["4", "--ignore-eos"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("Once upon a time"), "{stdout}");
    assert!(!stdout.contains("TTFT"), "{stdout}");
    assert!(stderr.contains("TTFT "), "{stderr}");
    assert!(stderr.contains(" tokens/s"), "{stderr}");
    assert!(stderr.contains("4 tokens in "), "{stderr}");
}

/// A study small enough to run in a few seconds: 2 prompts, 4 new tokens.
const SMALL_STUDY: &str = r#"
study(#{ name: "small" });
let m = load("tiny-stories");
let r = infer(m, batch(prompts("builtin:stories", #{ count: 2 }), #{ size: 2 }), #{
    max_new_tokens: 4,
});
measure(r, #{ meters: ["latency", "energy"] });
"#;

#[test]
fn run_quiet_prints_only_the_summary_and_verbose_each_runs_details() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("small.rhai");
    std::fs::write(&script, SMALL_STUDY).unwrap();
    let out = llmeff()
        .arg("run")
        .arg(&script)
        .args(["--plain", "-q", "--threads", "3", "--out"])
        .arg(dir.path().join("quiet"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no table when quiet");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("1 ok, 0 failed, 0 already done"),
        "{stderr}"
    );

    let out = llmeff()
        .arg("run")
        .arg(&script)
        .args(["--plain", "--verbose", "--threads", "3", "--out"])
        .arg(dir.path().join("verbose"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("on 3 CPU threads"), "{stderr}");
    let detail = stderr
        .lines()
        .find(|l| l.starts_with("  run ") && l.contains(" cycle 0: compute "))
        .unwrap_or_else(|| panic!("a detail line per run: {stderr}"));
    assert!(detail.contains(", energy "), "{detail}");
    assert!(stderr.contains("\n    meters: "), "{stderr}");
    assert!(stderr.contains("\n    notes: "), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("tiny-stories"));
    // The pool --threads sized is the one the run used.
    let rows = results::parquet_io::read_rows(
        &dir.path().join("verbose/small/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    assert_eq!(rows[0].get("threads"), Some(&results::Cell::Int(3)));

    let help = llmeff().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["-q, --quiet", "-v, --verbose", "--threads"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn bench_json_carries_its_warnings_and_the_memory_line_follows_models() {
    // The smallest settings: nothing here is a measurement worth reading.
    let quick = "bench --batches 1 --prompt-tokens 4 --new-tokens 2 --repeats 1";
    let out = llmeff()
        .args(quick.split_whitespace())
        .args(["--models", "tiny-stories", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The caveats the table prints under it (which ones depends on the machine).
    let warnings = json["warnings"].as_array().expect("a warnings list");
    assert!(
        warnings
            .iter()
            .all(|w| w.as_str().is_some_and(|w| !w.is_empty())),
        "{json}"
    );
    assert!(
        json["rss_growth_bytes"].is_null(),
        "tiny-llama3-gqa was not asked for"
    );
    assert!(json["growth_model"].is_null());
    let rows = json["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["model"] == "tiny-stories"), "{json}");

    let out = llmeff()
        .args(quick.split_whitespace())
        .args(["--models", "tiny-stories"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("memory over"), "{stdout}");
    assert!(!stdout.contains("tiny-llama3-gqa"), "{stdout}");

    // Naming the memory model measures its memory and nothing else.
    let out = llmeff()
        .args(quick.split_whitespace())
        .args(["--models", "gqa", "--growth-tokens", "20", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 0, "{json}");
    assert_eq!(json["growth_model"], "tiny-llama3-gqa");
    assert!(json["rss_growth_bytes"].is_i64(), "{json}");
}

#[test]
fn bench_measures_every_format_asked_for_and_sets_each_against_its_llama_cpp_type() {
    // An unknown format is refused with the valid ones, before anything is measured.
    llmeff()
        .args(["bench", "--models", "tiny-stories", "--dtypes", "f32,q8_0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "unknown format \"q8_0\"; valid formats: f32, f16, bf16, fp8, int8, int4, nf4",
        ));
    // The smallest settings: nothing here is a measurement worth reading.
    let quick = "bench --models tiny-stories --batches 1 --prompt-tokens 4 --new-tokens 2 \
                 --repeats 1 --growth-tokens 0 --json --dtypes f32,int8";
    let out = llmeff().args(quick.split_whitespace()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["formats"], serde_json::json!(["f32", "int8"]));
    let rows = json["rows"].as_array().unwrap();
    let formats: Vec<_> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(formats, ["f32", "int8"], "one row per format: {json}");
    for row in rows {
        assert_eq!(row["model"], "tiny-stories");
        assert!(
            row["compute"].as_str().is_some_and(|c| !c.is_empty()),
            "{row}"
        );
        let decode = row["decode_tokens_per_s"].as_f64().unwrap();
        assert!(decode.is_finite() && decode > 0.0, "{row}");
    }

    // A llama.cpp baseline's rows are matched by format; nf4 has no llama.cpp type.
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("llamacpp.jsonl");
    std::fs::write(
        &baseline,
        concat!(
            "{\"tool\": \"llama.cpp test\"}\n",
            "tiny-stories-dir {\"format\": \"f32\", \"llama_cpp_type\": \"f32\", \"batch1\": {\"prefill_s\": 0.032, \"decode_tokens_per_s\": 1000.0}}\n",
            "tiny-stories-dir {\"format\": \"int8\", \"llama_cpp_type\": \"q8_0\", \"batch1\": {\"prefill_s\": 0.016, \"decode_tokens_per_s\": 2000.0}}\n",
        ),
    )
    .unwrap();
    let out = llmeff()
        .args(["bench", "--models", "tiny-stories", "--batches", "1"])
        .args([
            "--repeats",
            "1",
            "--growth-tokens",
            "0",
            "--dtypes",
            "f32,int8,nf4",
        ])
        .arg("--baseline")
        .arg(&baseline)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("llmeff bench: f32, int8, nf4 on the CPU"),
        "{stdout}"
    );
    for figures in ["1000 / 1000.0", "2000 / 2000.0", "no llama.cpp nf4"] {
        assert!(stdout.contains(figures), "{figures}: {stdout}");
    }
    assert!(
        stdout.contains("llama.cpp figures by format: f32 against F32, int8 against Q8_0; nf4 has no llama.cpp counterpart"),
        "{stdout}"
    );
}

#[test]
fn ctrl_c_during_repl_run_stops_the_study_and_returns_to_the_prompt() {
    use std::io::{BufRead, Write};
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    // A short run, then one long enough (256 x 400 tokens, about 25 s on one core of the development VM)
    // to still be going when Ctrl-C comes.
    let statements = "\
let m = load(\"tiny-stories\");
let quick = infer(m, batch(prompts(\"builtin:stories\", #{ count: 2 }), #{ size: 2 }), #{ max_new_tokens: 2 });
let slow = infer(m, batch(prompts(\"builtin:stories\", #{ count: 256, max_input_tokens: 64 }), #{ size: 1 }), #{ max_new_tokens: 400, min_new_tokens: 400 });
:run
";
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_llmeff"));
    // SIGINT at its default action, as in a terminal: the tests may run as a background job of
    // a non-interactive shell, whose ignored SIGINT llmeff rightly keeps.
    // SAFETY: only `signal`, async-signal-safe, between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command
        .current_dir(dir.path())
        .env("LLMEFF_HISTORY", &history)
        .args(["repl", "--study", "sigint", "--threads", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(statements.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let (lines, received) = mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |wanted: &dyn Fn(&str) -> bool, child: &mut std::process::Child| loop {
        match received.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let found = wanted(&line);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the line never came (llmeff ended, or 120 s passed); stderr:\n{}",
                    seen.join("\n")
                );
            }
        }
    };
    // The second run has started: the first is stored.
    wait_for(&|l: &str| l.starts_with("[2/2]"), &mut child);
    // SAFETY: sends a signal to the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    wait_for(&|l: &str| l.starts_with("interrupted"), &mut child);
    // Back at the prompt, with the plan still there.
    stdin.write_all(b":plan\n:quit\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let stderr = seen.join("\n");
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stdout.contains("2 runs x 1 cycles"), "{stdout}");
    // What finished before Ctrl-C stays; the abandoned run wrote nothing.
    let rows = results::parquet_io::read_rows(
        &dir.path().join("runs/sigint/runs.parquet"),
        results::schema::RUN_COLUMNS,
    )
    .unwrap();
    assert_eq!(rows.len(), 1, "{stderr}");
    assert_eq!(rows[0].get("max_new_tokens"), Some(&results::Cell::Int(2)));
    // Every line entered is in the history file, written as it was entered.
    let history = std::fs::read_to_string(&history).unwrap();
    for line in ["let quick = infer(", "let slow = infer(", ":run", ":plan"] {
        assert!(history.contains(line), "{line}: {history}");
    }
}

#[test]
fn queued_requests_count_their_wait_in_ttft_and_idle_energy_in_other() {
    // Requests every 0.3 s in batches of 2: the first of each batch waits 0.3 s for the
    // second. Regression (issue A.1, A.2): TTFT was taken from the batch start (no queue), and
    // the estimated energy of the waits was charged to prefill and decode.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("queue.rhai");
    std::fs::write(
        &script,
        r#"
        study(#{ name: "queue" });
        let p = prompts("builtin:stories", #{ count: 4, max_input_tokens: 16 });
        let r = infer(load("tiny-stories"), batch(p, #{ size: 2 }),
                      #{ max_new_tokens: 4, warmup: 0,
                         arrival: #{ pattern: "constant", interval_s: 0.3 } });
        measure(r, #{ meters: ["latency", "energy"] });
        "#,
    )
    .unwrap();
    let out = llmeff()
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
    let study = dir.path().join("queue");
    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    let row = &rows[0];
    // Requests 0 and 2 queue 0.3 s; 1 and 3 none: the p50 sits between, the p99 near 0.3.
    let queue_p99 = float(row, "queue_p99_s").unwrap();
    assert!(
        (0.29..0.5).contains(&queue_p99),
        "queue_p99_s = {queue_p99}"
    );
    let ttft_p99 = float(row, "ttft_p99_s").unwrap();
    let service_p99 = float(row, "ttft_service_p99_s").unwrap();
    assert!(
        ttft_p99 >= queue_p99 && ttft_p99 > service_p99,
        "{ttft_p99} {service_p99}"
    );
    assert_eq!(text(row, "arrival"), "constant");
    assert_eq!(float(row, "arrival_interval_s"), Some(0.3));
    // The window is mostly waiting: its energy is outside both phases, and the parts add up.
    let total = float(row, "energy_total_j").unwrap();
    let parts = ["energy_prefill_j", "energy_decode_j", "energy_other_j"]
        .map(|c| float(row, c).unwrap_or_else(|| panic!("{c} missing")));
    assert!(
        (parts.iter().sum::<f64>() - total).abs() <= 1e-9 * total,
        "{parts:?} {total}"
    );
    assert!(parts[2] > parts[0] + parts[1], "{parts:?}");
    // Each request's row has its own arrival and queue.
    let hash = text(row, "run_hash");
    let requests = results::parquet_io::read_rows(
        &study.join("requests").join(format!("{hash}-c0.parquet")),
        results::schema::REQUEST_COLUMNS,
    )
    .unwrap();
    let arrivals: Vec<f64> = requests
        .iter()
        .map(|r| float(r, "arrival_s").unwrap())
        .collect();
    for (got, want) in arrivals.iter().zip([0.0, 0.3, 0.6, 0.9]) {
        assert!((got - want).abs() < 1e-9, "{arrivals:?}");
    }
}

#[test]
fn a_study_name_that_would_write_outside_out_is_refused() {
    // Regression (issue B): `--study /tmp/x` or `../x` wrote outside --out.
    let dir = tempfile::tempdir().unwrap();
    for name in ["/tmp/escape", "../escape", ".hidden", "a/b"] {
        let out = llmeff()
            .current_dir(repo())
            .args([
                "run",
                "experiments/single.rhai",
                "--plain",
                "--study",
                name,
                "--out",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid study name"), "{name}: {stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn a_script_print_reaches_stderr_while_planning() {
    // Regression (issue B): print output was buffered and never shown.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("talk.rhai");
    std::fs::write(
        &script,
        r#"print("planning the talk study"); infer(load("tiny-stories"), batch(prompts(["x"])));"#,
    )
    .unwrap();
    let out = llmeff().arg("plan").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("planning the talk study"), "{stderr}");
}

#[test]
fn plan_shows_each_loads_memory_estimate() {
    // Issue B: the memory a run needs is estimated from the config before anything is loaded.
    let out = llmeff()
        .current_dir(repo())
        .args(["plan", "experiments/single.rhai"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("tiny-stories f32 bs=4"))
        .unwrap_or_else(|| panic!("no memory line: {stdout}"));
    assert!(
        line.contains("weights ") && line.contains("KV cache") && line.contains("available"),
        "{line}"
    );
    assert!(!line.contains("will not fit"), "{line}");
}
