//! Scale-out on a real Slurm cluster: the README's job array (`experiments/slurm/job.sh`) runs
//! a study with more tasks than load groups, every run exactly once; a task cancelled mid-run
//! resumes exactly when resubmitted with its shard; a task of another array count is refused.
//! CI starts a one-node cluster (`.ci/slurm.sh`) and sets `LLMEFF_REQUIRE_SLURM=1`, so there
//! these cannot skip; elsewhere they skip, saying why, without `sbatch` or a controller. What
//! `llmeff` gives a Slurm user without a cluster (`plan --shards`, the layout check on the
//! variables an array task sees) is tested here too, always.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use results::Row;
use results::schema::RUN_COLUMNS;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_llmeff"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn job_script() -> PathBuf {
    repo().join("experiments/slurm/job.sh")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The runs table of `<out>/<study>`.
fn rows(out: &Path, study: &str) -> Vec<Row> {
    results::parquet_io::read_rows(&out.join(study).join("runs.parquet"), RUN_COLUMNS)
        .unwrap_or_else(|e| panic!("{}/{study}: {e}", out.display()))
}

fn cell(row: &Row, column: &str) -> String {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column}"))
        .display()
}

/// Each row's execution: (run hash, cycle).
fn executions(rows: &[Row]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| (cell(r, "run_hash"), cell(r, "cycle_id")))
        .collect()
}

/// Checks every execution and every experiment id is stored once and every run is ok, and
/// returns the executions.
fn assert_once(rows: &[Row]) -> BTreeSet<(String, String)> {
    let all = executions(rows);
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "an execution is stored twice: {all:?}"
    );
    let ids: BTreeSet<String> = rows.iter().map(|r| cell(r, "experiment_id")).collect();
    assert_eq!(ids.len(), rows.len(), "experiment ids repeat: {ids:?}");
    for row in rows {
        assert_eq!(cell(row, "status"), "ok", "{}", cell(row, "error"));
    }
    unique
}

/// What each of `count` shards of `script` runs, from `llmeff plan --shards --format json`:
/// (run hash, cycle) in the order the shard runs them.
fn planned_shards(script: &Path, count: usize) -> Vec<Vec<(String, String)>> {
    let out = Command::new(bin())
        .current_dir(repo())
        .arg("plan")
        .arg(script)
        .args(["--shards", &count.to_string(), "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shards = json["shards"].as_array().expect("a shards array");
    assert_eq!(shards.len(), count);
    shards
        .iter()
        .map(|s| {
            s["executions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["run"].as_str().unwrap().to_string(),
                        e["cycle"].as_u64().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The executions a task's log (`--verbose`) says it stored: `run <12 hex> cycle <c>:` lines.
fn logged_runs(log: &str) -> BTreeSet<(String, String)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("run ")?;
            let (hash, rest) = rest.split_once(" cycle ")?;
            let (cycle, _) = rest.split_once(':')?;
            (hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| (hash.to_string(), cycle.to_string()))
        })
        .collect()
}

/// Executions as a log names them: hashes cut to 12 hex digits.
fn short(executions: &[(String, String)]) -> BTreeSet<(String, String)> {
    executions
        .iter()
        .map(|(h, c)| (h[..12].to_string(), c.clone()))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- Without a cluster -------------------------------------------------------------------

/// Two load groups of two runs each, 4 executions; the second tiny-stories run takes at
/// least 6 s (a request every 2 s), so a task can be stopped inside it.
fn write_resume_study(dir: &Path) -> PathBuf {
    let script = dir.join("resume.rhai");
    std::fs::write(
        &script,
        r#"study(#{ name: "resume" });
let p = prompts(["Once upon a time", "The cat sat", "A dog ran", "In the park"]);
let fast = #{ max_new_tokens: 4, warmup: 0 };
let stories = load("tiny-stories");
infer(stories, batch(p, #{ size: 2 }), fast);
infer(stories, batch(p, #{ size: 1 }),
      #{ max_new_tokens: 4, warmup: 0, arrival: #{ pattern: "constant", interval_s: 2.0 } });
let llama = load("tiny-llama3-gqa", #{ weights: "random" });
infer(llama, batch(p, #{ size: 1 }), fast);
infer(llama, batch(p, #{ size: 2 }), fast);
"#,
    )
    .unwrap();
    script
}

#[test]
fn plan_shards_shows_what_each_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_resume_study(dir.path());
    let out = Command::new(bin())
        .arg("plan")
        .arg(&script)
        .args(["--shards", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "Shards: 4 executions in 3 tasks (sbatch --array=0-2, or llmeff run --shard I/3)"
        ) && text.contains("  shard 0/3: 2 executions, 1 loads")
            && text.contains("  shard 2/3: 1 executions, 1 loads"),
        "{text}"
    );
    // The listing is the tasks' own cut: shard 0 holds both tiny-stories runs, the slow one
    // second (the resume test relies on it).
    let shards = planned_shards(&script, 3);
    assert_eq!(shards.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1, 1]);
    // DOT has no place for it: refused as bad input; a count out of range too.
    for (args, says) in [
        (&["--shards", "2", "--format", "dot"][..], "not dot"),
        (&["--shards", "0"][..], "--shards"),
    ] {
        let out = Command::new(bin())
            .arg("plan")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// `llmeff run` of `script` into `out` as Slurm array task `id` of `count` starting at `min`.
fn run_as_array_task(script: &Path, out: &Path, id: usize, count: usize, min: usize) -> Output {
    Command::new(bin())
        .arg("run")
        .arg(script)
        .args(["--plain", "--quiet", "--out"])
        .arg(out)
        .env("SLURM_ARRAY_TASK_ID", id.to_string())
        .env("SLURM_ARRAY_TASK_COUNT", count.to_string())
        .env("SLURM_ARRAY_TASK_MIN", min.to_string())
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap()
}

#[test]
fn an_array_task_of_another_count_than_the_study_layout_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("two.rhai");
    std::fs::write(
        &script,
        "study(#{ name: \"two\" });\nlet m = load(\"tiny-llama3-gqa\", #{ weights: \"random\" });\nfor size in [1, 2] { infer(m, batch(prompts([\"Once\"]), #{ size: size }), #{ max_new_tokens: 1, warmup: 0 }); }\n",
    )
    .unwrap();
    let out = dir.path().join("runs");
    // Task 0 of an array of 2 runs and records the layout.
    let first = run_as_array_task(&script, &out, 0, 2, 0);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(rows(&out, "two").len(), 1);
    // Task 1 resubmitted alone (`sbatch --array=1`) is an array of one: it would run the
    // whole study, and is refused as bad input, saying why and what to run instead.
    let alone = run_as_array_task(&script, &out, 1, 1, 1);
    let text = stderr(&alone);
    assert_eq!(alone.status.code(), Some(2), "{text}");
    for says in [
        "shard 0/1 (SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=1, SLURM_ARRAY_TASK_MIN=1)",
        "laid out in 2 shards",
        "every shard's work",
        "--shard 1/2",
        "--force",
    ] {
        assert!(text.contains(says), "missing `{says}`: {text}");
    }
    assert_eq!(rows(&out, "two").len(), 1, "the refused task ran nothing");
    // Named with --shard, as job.sh passes it on, it runs just its slice.
    let named = Command::new(bin())
        .arg("run")
        .arg(&script)
        .args(["--plain", "--quiet", "--shard", "1/2", "--out"])
        .arg(&out)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "1")
        .env("SLURM_ARRAY_TASK_MIN", "1")
        .output()
        .unwrap();
    assert!(named.status.success(), "{}", stderr(&named));
    assert_once(&rows(&out, "two"));
    assert_eq!(rows(&out, "two").len(), 2);
}

// ---- On a cluster ------------------------------------------------------------------------

/// One Slurm test at a time: each array holds the one node (`--exclusive`), and the resume
/// test times its cancel by the node.
static CLUSTER: Mutex<()> = Mutex::new(());

/// Whether a Slurm cluster on this machine takes jobs. Without one the test skips, saying
/// why, unless `LLMEFF_REQUIRE_SLURM=1` (CI), where it fails. A controller elsewhere (a site
/// cluster's login node) is skipped too: its nodes would not see the test's temporary folders.
fn cluster_is_up() -> bool {
    let here = Command::new("hostname")
        .arg("-s")
        .output()
        .map(|o| stdout(&o).trim().to_string())
        .unwrap_or_default();
    let problem = match Command::new("scontrol").arg("ping").output() {
        Err(e) => Some(format!("no scontrol ({e}): install slurm-wlm")),
        Ok(out) if !stdout(&out).contains("is UP") => Some(format!(
            "no Slurm controller answers `scontrol ping`: {}{}",
            stdout(&out).trim(),
            stderr(&out).trim()
        )),
        // `Slurmctld(primary) at <host> is UP`
        Ok(out) if !stdout(&out).contains(&format!(" at {here} is UP")) => Some(format!(
            "the Slurm controller is not this machine ({here}): {}",
            stdout(&out).trim()
        )),
        Ok(_) => match Command::new("sbatch").arg("--version").output() {
            Ok(out) if out.status.success() => None,
            _ => Some("no sbatch".to_string()),
        },
    };
    match problem {
        None => true,
        Some(problem) if std::env::var("LLMEFF_REQUIRE_SLURM").as_deref() == Ok("1") => {
            panic!("LLMEFF_REQUIRE_SLURM=1 but {problem} (.ci/slurm.sh start sets one up)")
        }
        Some(problem) => {
            eprintln!("skipped: {problem} (.ci/slurm.sh start sets one up)");
            false
        }
    }
}

/// The jobs a test submitted, cancelled when it ends however it ends, so a failing test
/// leaves no job holding the node.
#[derive(Default)]
struct Jobs(Vec<String>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for job in &self.0 {
            let _ = Command::new("scancel").arg(job).output();
        }
    }
}

/// How long any one wait on the cluster may take.
const WAIT: Duration = Duration::from_secs(240);

impl Jobs {
    /// `sbatch` with `args` (after its own options: the test's log files and a time limit),
    /// from the repository root with `LLMEFF` naming the binary under test; the job id.
    fn submit(&mut self, logs: &Path, args: &[String]) -> String {
        let out = Command::new("sbatch")
            .current_dir(repo())
            .arg("--parsable")
            .arg(format!("--output={}", logs.display()))
            .arg("--time=10")
            .args(args)
            .env("LLMEFF", bin())
            .output()
            .unwrap();
        assert!(out.status.success(), "sbatch {args:?}: {}", stderr(&out));
        // `--parsable` prints `id` or `id;cluster`.
        let job = stdout(&out).trim().split(';').next().unwrap().to_string();
        assert!(!job.is_empty(), "sbatch printed no job id");
        self.0.push(job.clone());
        job
    }

    /// Waits until `job` (every task of it) has left the queue.
    fn wait(&self, job: &str) {
        let start = Instant::now();
        loop {
            let out = Command::new("squeue")
                .args(["-h", "-o", "%i %T", "-j", job])
                .output()
                .unwrap();
            if out.status.success() && stdout(&out).trim().is_empty() {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "job {job} still queued after {WAIT:?}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Each task of a finished `job`: array task id → (state, exit code), as `scontrol` keeps
/// them for a while after the end (accounting need not be set up).
fn task_states(job: &str) -> BTreeMap<String, (String, String)> {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o", job])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|line| {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name))
                    .unwrap_or("")
                    .to_string()
            };
            (
                field("ArrayTaskId="),
                (field("JobState="), field("ExitCode=")),
            )
        })
        .collect()
}

/// Waits until `path` exists.
fn wait_for_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < WAIT,
            "{} did not appear in {WAIT:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shell commands of the README's `## Studies on many machines` `sh` block, comments and
/// blank lines dropped, each split into words.
fn readme_scale_out_commands() -> Vec<Vec<String>> {
    let readme = read(&repo().join("README.md"));
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Studies on many machines"))
        .expect("README has a `## Studies on many machines` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the section has an sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The README command whose words start with `prefix` (and hold `with`, when given).
fn readme_command(commands: &[Vec<String>], prefix: &[&str], with: Option<&str>) -> Vec<String> {
    commands
        .iter()
        .find(|c| {
            c.iter().zip(prefix).all(|(a, b)| a.starts_with(b))
                && with.is_none_or(|w| c.iter().any(|a| a == w))
        })
        .unwrap_or_else(|| panic!("README's scale-out block has no `{prefix:?}` command"))
        .clone()
}

#[test]
fn the_readme_job_array_runs_the_study_once_and_each_task_logs_its_shard() {
    if !cluster_is_up() {
        return;
    }
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("runs");
    // The README's commands as written, the shared folder swapped for a temporary one.
    let commands = readme_scale_out_commands();
    let local = |words: &[String]| -> Vec<String> {
        words
            .iter()
            .map(|w| match w.as_str() {
                "/shared/runs" => out.display().to_string(),
                other => other.to_string(),
            })
            .collect()
    };
    let plan = readme_command(&commands, &["llmeff", "plan"], None);
    let array = readme_command(&commands, &["sbatch", "--array=0-"], None);
    let resubmit = readme_command(&commands, &["sbatch", "--array="], Some("--shard"));
    let tasks: usize = array[1]["--array=0-".len()..].parse::<usize>().unwrap() + 1;
    let script = repo().join(&plan[2]);
    assert_eq!(plan[3..], ["--shards".to_string(), tasks.to_string()]);
    assert!(array.contains(&plan[2]), "{array:?} runs another study");

    // `llmeff plan --shards N` as the README shows it, and its listing as JSON.
    let shown = Command::new(bin())
        .current_dir(repo())
        .args(&plan[1..])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains(&format!("shard {}/{tasks}:", tasks - 1)),
        "{}",
        stdout(&shown)
    );
    let shards = planned_shards(&script, tasks);
    let json: serde_json::Value = serde_json::from_slice(
        &Command::new(bin())
            .current_dir(repo())
            .args(["plan", &plan[2], "--format", "json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let loads = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "load")
        .count();
    assert!(tasks > loads, "{tasks} tasks for {loads} load groups");
    assert!(shards.iter().all(|s| !s.is_empty()), "a task has no work");

    let mut jobs = Jobs::default();
    let started = Instant::now();
    let job = jobs.submit(&dir.path().join("task-%a.log"), &local(&array)[1..]);
    jobs.wait(&job);
    let states = task_states(&job);
    assert_eq!(states.len(), tasks, "{states:?}");
    for (task, (state, exit)) in &states {
        let log = read(&dir.path().join(format!("task-{task}.log")));
        assert_eq!(
            (state.as_str(), exit.as_str()),
            ("COMPLETED", "0:0"),
            "{log}"
        );
    }
    eprintln!("{tasks} array tasks in {:?}", started.elapsed());

    // Every run exactly once, with unique ids, and each task's log names its shard and the
    // runs it stored: its slice of the plan, the slices together the whole table.
    let table = rows(&out, "grid");
    let stored = assert_once(&table);
    let mut logged = BTreeSet::new();
    for (index, shard) in shards.iter().enumerate() {
        let log = read(&dir.path().join(format!("task-{index}.log")));
        assert!(
            log.contains(&format!(
                "shard {index}/{tasks} (SLURM_ARRAY_TASK_ID={index}, SLURM_ARRAY_TASK_COUNT={tasks}): {} of the study's",
                shard.len()
            )),
            "{log}"
        );
        assert_eq!(logged_runs(&log), short(shard), "task {index}: {log}");
        logged.extend(short(shard));
    }
    let all: Vec<_> = stored.iter().cloned().collect();
    assert_eq!(logged, short(&all));
    assert_eq!(
        stored,
        shards.concat().into_iter().collect::<BTreeSet<_>>(),
        "the table is not the plan"
    );

    // The merged table holds the configurations a single-machine run of the script stores.
    let single = dir.path().join("single");
    let alone = Command::new(bin())
        .current_dir(repo())
        .args(["run", &plan[2], "--plain", "--quiet", "--out"])
        .arg(&single)
        .output()
        .unwrap();
    assert!(alone.status.success(), "{}", stderr(&alone));
    let configurations = |rows: &[Row]| -> BTreeSet<Vec<String>> {
        rows.iter()
            .map(|r| {
                [
                    "run_hash",
                    "cycle_id",
                    "config_json",
                    "model",
                    "dtype",
                    "batch_size",
                ]
                .iter()
                .map(|c| cell(r, c))
                .collect()
            })
            .collect()
    };
    assert_eq!(
        configurations(&table),
        configurations(&rows(&single, "grid"))
    );

    // The README's resubmission of one task, here of a finished one: it finds its runs
    // stored and measures nothing again.
    let again = jobs.submit(&dir.path().join("again-%a.log"), &local(&resubmit)[1..]);
    jobs.wait(&again);
    let states = task_states(&again);
    let (state, exit) = states.values().next().expect("one task");
    let log = read(
        &dir.path()
            .join(format!("again-{}.log", states.keys().next().unwrap())),
    );
    assert_eq!(
        (state.as_str(), exit.as_str()),
        ("COMPLETED", "0:0"),
        "{log}"
    );
    assert!(log.contains("0 ok, 0 failed, 1 already done"), "{log}");
    assert_eq!(executions(&rows(&out, "grid")), executions(&table));
}

#[test]
fn a_task_cancelled_mid_run_resumes_exactly_when_resubmitted_with_its_shard() {
    if !cluster_is_up() {
        return;
    }
    let _one = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let script = write_resume_study(dir.path());
    let out = dir.path().join("runs");
    let shards = planned_shards(&script, 3);
    let (first, slow) = (&shards[0][0], &shards[0][1]);
    let part = |(hash, cycle): &(String, String)| {
        out.join("resume/parts")
            .join(format!("{hash}-c{cycle}.parquet"))
    };
    let job_sh = job_script().display().to_string();
    let study = script.display().to_string();
    let outs = out.display().to_string();
    let words = |extra: &[&str]| -> Vec<String> {
        [&job_sh, &study, &outs]
            .into_iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };

    let mut jobs = Jobs::default();
    let mut array = vec!["--array=0-2".to_string()];
    array.extend(words(&[]));
    let job = jobs.submit(&dir.path().join("task-%a.log"), &array);
    // Task 0 stored its first run and is inside its slow second one: cancel it there.
    wait_for_file(&part(first));
    assert!(!part(slow).exists(), "the slow run ended before the cancel");
    let cancel = Command::new("scancel")
        .arg(format!("{job}_0"))
        .output()
        .unwrap();
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    jobs.wait(&job);
    let states = task_states(&job);
    let log = read(&dir.path().join("task-0.log"));
    assert_eq!(states["0"].0, "CANCELLED", "{states:?}: {log}");
    for task in ["1", "2"] {
        assert_eq!(states[task].0, "COMPLETED", "{states:?}");
    }
    // Its log says what it ran: the first run stored, the second abandoned by SIGTERM.
    assert_eq!(logged_runs(&log), short(&shards[0][..1]), "{log}");
    assert!(log.contains("stopped by SIGTERM"), "{log}");
    let before = rows(&out, "resume");
    assert_eq!(before.len(), 3, "{log}");
    assert!(!executions(&before).contains(slow));
    let first_row = |rows: &[Row]| -> Vec<String> {
        let row = rows
            .iter()
            .find(|r| (cell(r, "run_hash"), cell(r, "cycle_id")) == *first)
            .expect("the first run is stored");
        ["experiment_id", "started_at_unix_s", "wall_s"]
            .iter()
            .map(|c| cell(row, c))
            .collect()
    };
    let stored_first = first_row(&before);

    // Resubmitted alone without its shard it is an array of one task: refused, saying why.
    let refused = jobs.submit(
        &dir.path().join("refused-%a.log"),
        &[vec!["--array=0".to_string()], words(&[])].concat(),
    );
    jobs.wait(&refused);
    let log = read(&dir.path().join("refused-0.log"));
    assert_eq!(
        task_states(&refused)["0"],
        ("FAILED".into(), "2:0".into()),
        "{log}"
    );
    assert!(
        log.contains("laid out in 3 shards") && log.contains("--shard 0/3"),
        "{log}"
    );
    assert_eq!(rows(&out, "resume").len(), 3);

    // Resubmitted with its shard, it runs what the cancel left, and only that.
    let resumed = jobs.submit(
        &dir.path().join("resumed-%a.log"),
        &[vec!["--array=0".to_string()], words(&["--shard", "0/3"])].concat(),
    );
    jobs.wait(&resumed);
    let log = read(&dir.path().join("resumed-0.log"));
    assert_eq!(
        task_states(&resumed)["0"],
        ("COMPLETED".into(), "0:0".into()),
        "{log}"
    );
    assert!(log.contains("1 ok, 0 failed, 1 already done"), "{log}");
    assert_eq!(
        logged_runs(&log),
        short(std::slice::from_ref(slow)),
        "{log}"
    );
    let after = rows(&out, "resume");
    let stored = assert_once(&after);
    assert_eq!(
        stored,
        shards.concat().into_iter().collect::<BTreeSet<_>>(),
        "the table is not the plan"
    );
    assert_eq!(
        first_row(&after),
        stored_first,
        "the stored run was measured again"
    );
}
