//! `llmeff run`: plan a script, execute it, store and print the results.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::Failure;
use crate::cli::RunArgs;
use crate::provenance::Provenance;
use crate::sink::StoreSink;
use crate::table::{DetailSink, ProgressDisplay, Verbosity};
use api::runtime::Runtime;
use engine::execute::{Executor, MonotonicClock, Outcome, Progress};
use engine::plan::Plan;
use engine::schedule::{Schedule, Shard, parse_shard};
use results::{Manifest, Row, Store, StudyLock};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `I/N` shard a Slurm array task or a Kubernetes Indexed Job pod runs, from the
/// variables `var` reads. A task index without its task count is an error: running the whole
/// study in every task would do every run N times.
fn shard_from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let number = |name: &str| -> Result<Option<i64>, String> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{name}={v} is not a whole number"))
            })
            .transpose()
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --shard I/N",
        )?;
        // Arrays need not start at 0 or step by 1 (`--array=1-15:2`).
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            return Err(format!(
                "SLURM_ARRAY_TASK_ID={id} is not in the array (min {min}, step {step})"
            ));
        }
        return Ok(Some(format!("{}/{count}", (id - min) / step)));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("LLMEFF_SHARDS")?.ok_or(
            "JOB_COMPLETION_INDEX is set but LLMEFF_SHARDS is not: set it to the Job's completions",
        )?;
        return Ok(Some(format!("{index}/{count}")));
    }
    Ok(None)
}

/// How a study execution ended, with its compacted rows.
pub struct StudyResult {
    /// Counts of ok, failed and skipped executions.
    pub outcome: Outcome,
    /// Every stored row of the study, after compaction.
    pub rows: Vec<Row>,
    /// Executions this invocation's schedule holds (its shard's, when sharded).
    pub total: usize,
}

/// Where a plan came from, for the study manifest.
pub struct ScriptOrigin<'a> {
    /// Script path (or `<repl>`).
    pub path: &'a str,
    /// Script text.
    pub text: &'a str,
}

/// This machine as the manifest lists it, first seen `now`.
fn this_machine(runtime: &backends::BurnRuntime, now: f64) -> results::Machine {
    let mut machine = results::Machine::new(crate::environment::describe(&runtime.devices()), now);
    if !machine.facts.contains_key("hostname") {
        machine.facts.insert(
            "hostname".into(),
            serde_json::json!(Provenance::current().hostname),
        );
    }
    machine
}

/// Checks the study folder belongs to this plan (or takes it over with `force`) and records
/// the plan in `manifest.json`, with this machine added to the machines the study ran on.
///
/// A plan that only adds runs to the stored one needs no `force`: the stored results stay
/// and the new runs are run beside them.
fn claim_study(
    store: &Store,
    plan: &Plan,
    origin: &ScriptOrigin<'_>,
    force: bool,
    runtime: &backends::BurnRuntime,
) -> Result<(), Failure> {
    let runs = plan
        .runs()
        .iter()
        .map(|r| (r.id.hex(), r.config_json()))
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut manifest = Manifest {
        study: plan.study.name.clone(),
        script_sha256: engine::plan::sha256_hex(origin.text),
        script: origin.path.to_string(),
        cycles: plan.study.cycles,
        runs,
        environment: Vec::new(),
        cpu_forward: Some(runtime.cpu_forward().name().to_string()),
        created_unix_s: now,
    };
    let stored = match Manifest::load(store.dir()) {
        Err(results::StoreError::CorruptManifest { path, reason }) if force => {
            let to = Manifest::move_aside(store.dir()).map_err(|e| Failure::work(e.to_string()))?;
            eprintln!(
                "note: {} was corrupt ({reason}); moved aside to {}",
                path.display(),
                to.display()
            );
            None
        }
        other => other.map_err(|e| Failure::work(e.to_string()))?,
    };
    if let Some(old) = stored {
        let change = old.compare(&manifest);
        // The machines the stored results were measured on stay listed whatever changed:
        // superseded results keep them in the record too.
        manifest.environment = old.environment.clone();
        if change.is_none() || change.is_pure_addition() {
            manifest.created_unix_s = old.created_unix_s;
            if change.is_pure_addition() {
                eprintln!(
                    "study `{}`: {} runs added to the {} already planned; running the new ones",
                    plan.study.name,
                    change.added,
                    old.runs.len()
                );
            }
        } else if !force {
            return Err(Failure::input(format!(
                "study `{}` in {} was planned differently ({change}); rerun with --force to supersede its old results, or choose another name with --study",
                plan.study.name,
                store.dir().display()
            )));
        } else {
            // Runs measured on the other forward pass are superseded even where the plan
            // still holds them: they would sit beside the new ones as duplicates.
            let keep: HashSet<String> = if old.forward_changed(&manifest) {
                HashSet::new()
            } else {
                manifest.runs.keys().cloned().collect()
            };
            let label = format!("{}", manifest.created_unix_s as u64);
            let moved = store
                .supersede_except(&keep, &label)
                .map_err(|e| Failure::work(e.to_string()))?;
            eprintln!(
                "plan changed ({change}); {moved} files of unplanned runs moved to superseded/{label}/"
            );
        }
    } else {
        // No manifest, yet parts on disk (it was deleted): runs the plan does not hold are
        // another plan's, and would be compacted into this one's table.
        let stored_runs = store
            .completed()
            .map_err(|e| Failure::work(e.to_string()))?;
        let foreign = stored_runs
            .iter()
            .filter(|(hash, _)| !manifest.runs.contains_key(hash))
            .count();
        if foreign > 0 && !force {
            return Err(Failure::input(format!(
                "study `{}` in {} has no manifest.json but holds {foreign} stored executions this plan does not have; rerun with --force to supersede them, or choose another name with --study",
                plan.study.name,
                store.dir().display()
            )));
        } else if foreign > 0 {
            let keep: HashSet<String> = manifest.runs.keys().cloned().collect();
            let label = format!("{}", manifest.created_unix_s as u64);
            let moved = store
                .supersede_except(&keep, &label)
                .map_err(|e| Failure::work(e.to_string()))?;
            eprintln!(
                "no manifest: {moved} files of runs outside this plan moved to superseded/{label}/"
            );
        }
    }
    manifest.add_machine(this_machine(runtime, now));
    manifest
        .save(store.dir())
        .map_err(|e| Failure::work(e.to_string()))
}

/// How a study execution reports to the terminal, and what can stop it.
#[derive(Clone, Copy)]
pub struct Console<'a> {
    /// Plain log lines instead of a progress bar.
    pub plain: bool,
    /// How much to say.
    pub verbosity: Verbosity,
    /// Raised to stop the study (the REPL's Ctrl-C); runs finished before stay stored.
    pub cancel: Option<&'a AtomicBool>,
}

/// Executes a plan into `<out>/<study>/` and compacts the study's tables.
pub fn execute_plan(
    plan: &Plan,
    origin: &ScriptOrigin<'_>,
    out: &Path,
    shard: Option<Shard>,
    force: bool,
    console: Console<'_>,
) -> Result<StudyResult, Failure> {
    let mut schedule = Schedule::from_plan(plan);
    if schedule.items.is_empty() {
        return Err(Failure::input(
            "the study defines no runs: call infer(load(...), batch(prompts(...)))",
        ));
    }
    if let Some(shard) = shard {
        if let Some(warning) = schedule.shard_warning(shard.count) {
            eprintln!("warning: {warning}");
        }
        schedule = schedule.shard(shard);
    }
    let dir = out.join(&plan.study.name);
    let _lock = match shard {
        Some(s) => StudyLock::acquire_shard(&dir, s.index, s.count),
        None => StudyLock::acquire(&dir),
    }
    .map_err(|e| Failure::work(e.to_string()))?;
    // Fault injection for the lock tests: hold the lock a while (debug builds only).
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("LLMEFF_TEST_PAUSE_AFTER_LOCK_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let store = Store::open(&dir).map_err(|e| Failure::work(e.to_string()))?;
    if _lock.removed_temporaries() > 0 {
        eprintln!(
            "note: removed {} temporary files left by an interrupted run",
            _lock.removed_temporaries()
        );
    }
    for part in store
        .quarantine_corrupt_parts()
        .map_err(|e| Failure::work(e.to_string()))?
    {
        eprintln!(
            "warning: an unreadable part was moved to {}; its run will be measured again",
            part.display()
        );
    }
    let runtime = backends::BurnRuntime::new();
    claim_study(&store, plan, origin, force, &runtime)?;
    let mut sink = StoreSink::new(store.clone(), shard.map(|s| (s.index, s.count)))
        .map_err(|e| Failure::work(e.to_string()))?;

    let clock = MonotonicClock::default();
    let Console {
        plain,
        verbosity,
        cancel,
    } = console;
    // The CPU peak's microbenchmark pauses the first run for a few seconds: say so, unless
    // asked to be quiet.
    let mut meters = meters::MachineMeters::detect();
    if verbosity != crate::table::Verbosity::Quiet {
        meters = meters.with_peak_listener(|n| note!("{n}"));
    }
    let mut executor = Executor::new(&runtime, &clock).with_meters(&meters);
    if let Some(cancel) = cancel {
        executor = executor.with_cancel(cancel);
    }
    let interactive = !plain && std::io::stderr().is_terminal();
    let progress = RefCell::new(ProgressDisplay::new(interactive, verbosity));
    let mut details = DetailSink {
        inner: &mut sink,
        display: &progress,
    };
    let outcome = executor
        .execute(&schedule, &mut details, &mut |event: Progress| {
            progress.borrow_mut().handle(event)
        })
        .map_err(|e| Failure::work(e.to_string()))?;
    progress.borrow_mut().finish();
    let rows = store.compact().map_err(|e| Failure::work(e.to_string()))?;
    for (i, spec) in plan.aggregates().iter().enumerate() {
        let name = if i == 0 {
            "summary".to_string()
        } else {
            format!("summary-{}", i + 1)
        };
        let summary = results::aggregate::aggregate(&rows, &spec.by, &spec.stats)
            .map_err(|e| Failure::input(e.to_string()))?;
        summary
            .write(
                &dir.join(format!("{name}.parquet")),
                &dir.join(format!("{name}.csv")),
            )
            .map_err(|e| Failure::work(e.to_string()))?;
        if verbosity == Verbosity::Quiet {
            continue;
        }
        note!(
            "{name}: {} groups by {} -> {}",
            summary.rows.len(),
            spec.by.join(", "),
            dir.join(format!("{name}.parquet")).display()
        );
    }
    note!(
        "{} ok, {} failed, {} already done{}; results in {}",
        outcome.ok,
        outcome.failed,
        outcome.skipped,
        if outcome.cancelled {
            ", stopped before the end"
        } else {
            ""
        },
        dir.join("runs.parquet").display()
    );
    Ok(StudyResult {
        outcome,
        rows,
        total: schedule.items.len(),
    })
}

/// Runs a study end to end.
pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    // Installed before planning, so a stop that comes early starts no run at all; a batch
    // system's SIGTERM and a closed terminal's SIGHUP stop as cleanly as Ctrl-C.
    let stop = crate::signals::StopGuard::install(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    super::init_threads(args.threads)?;
    let plan = super::load_plan(&args.script, args.study.as_deref())?;
    let text = std::fs::read_to_string(&args.script).map_err(|e| {
        Failure::input(format!("cannot read script {}: {e}", args.script.display()))
    })?;
    let path = args.script.display().to_string();
    let origin = ScriptOrigin {
        path: &path,
        text: &text,
    };
    let from_env = || shard_from_env(|name| std::env::var(name).ok());
    let shard_text = match args.shard.clone() {
        Some(text) => Some(text),
        None => from_env().map_err(Failure::input)?,
    };
    let shard = match shard_text {
        Some(text) => Some(parse_shard(&text).ok_or_else(|| {
            Failure::input(format!(
                "invalid shard `{text}`: expected I/N with 0 <= I < N <= {}",
                engine::schedule::MAX_SHARDS
            ))
        })?),
        None => None,
    };
    let verbosity = match (args.quiet, args.verbose) {
        (true, _) => Verbosity::Quiet,
        (false, true) => Verbosity::Verbose,
        (false, false) => Verbosity::Normal,
    };
    let result = execute_plan(
        &plan,
        &origin,
        &args.out,
        shard,
        args.force,
        Console {
            plain: args.plain,
            verbosity,
            cancel: stop.as_ref().map(|g| g.flag()),
        },
    )?;
    // The lock is released (execute_plan dropped it) and the table compacted from the parts
    // present: say what was kept and end with the status a shell expects of the signal.
    if let Some(signal) = stop.as_ref().and_then(|g| g.caught()) {
        if std::env::var_os("LLMEFF_TEST_HOLD_AFTER_STOP").is_some() {
            // Test hook: holds the stopping process until stdin closes, so a test can send a
            // second signal at a known moment, after the first was taken.
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        }
        let stored = result.outcome.ok + result.outcome.failed + result.outcome.skipped;
        let table = args.out.join(&plan.study.name);
        note!(
            "stopped by {}: {stored} of {} runs stored in {}; {}",
            crate::signals::name(signal),
            result.total,
            table.display(),
            if stored < result.total {
                "run the same command again to resume"
            } else {
                "the study is complete"
            }
        );
        return Ok(ExitCode::from(crate::signals::exit_code(signal)));
    }
    if verbosity != Verbosity::Quiet {
        crate::table::print_runs(&result.rows);
    }
    let failed_rows = result
        .rows
        .iter()
        .filter(|r| r.get("status") != Some(&results::Cell::Text("ok".into())))
        .count();
    if result.outcome.failed > 0 || failed_rows > 0 {
        note!("some runs failed: see the `error` column");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn slurm_and_kubernetes_tasks_name_their_shard() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(shard_from_env(slurm), Ok(Some("3/8".into())));
        // --array=1-15:2 → tasks 1, 3, …, 15 are shards 0 to 7.
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert_eq!(shard_from_env(stepped), Ok(Some("2/8".into())));
        let pod = env(&[("JOB_COMPLETION_INDEX", "0"), ("LLMEFF_SHARDS", "4")]);
        assert_eq!(shard_from_env(pod), Ok(Some("0/4".into())));
        assert_eq!(shard_from_env(env(&[])), Ok(None));
    }

    #[test]
    fn a_task_index_without_its_count_is_an_error() {
        // Regression (issue B): every task ran the whole study.
        let err = shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "3")])).unwrap_err();
        assert!(err.contains("SLURM_ARRAY_TASK_COUNT is not"), "{err}");
        let err = shard_from_env(env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err();
        assert!(err.contains("LLMEFF_SHARDS is not"), "{err}");
    }

    #[test]
    fn a_shard_count_that_would_wrap_experiment_ids_is_refused() {
        assert!(parse_shard("0/18446744073709551615").is_none());
        assert!(parse_shard("0/1000001").is_none());
        assert!(parse_shard("999999/1000000").is_some());
    }
}
