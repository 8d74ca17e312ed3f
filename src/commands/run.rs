//! `llmeff run`: plan a script, execute it, store and print the results.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::Failure;
use crate::cli::RunArgs;
use crate::provenance::Provenance;
use crate::sink::StoreSink;
use crate::table::{DetailSink, ProgressDisplay, Verbosity};
use engine::execute::{Executor, MonotonicClock, Outcome, Progress};
use engine::plan::Plan;
use engine::runtime::Runtime;
use engine::schedule::{Schedule, Shard, parse_shard};
use results::{Manifest, Row, Store, StudyLock};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::time::{SystemTime, UNIX_EPOCH};

fn shard_from_env() -> Option<String> {
    let index = std::env::var("SLURM_ARRAY_TASK_ID")
        .or_else(|_| std::env::var("JOB_COMPLETION_INDEX"))
        .ok()?;
    let count = std::env::var("SLURM_ARRAY_TASK_COUNT")
        .or_else(|_| std::env::var("LLMEFF_SHARDS"))
        .ok()?;
    Some(format!("{index}/{count}"))
}

/// How a study execution ended, with its compacted rows.
pub struct StudyResult {
    /// Counts of ok, failed and skipped executions.
    pub outcome: Outcome,
    /// Every stored row of the study, after compaction.
    pub rows: Vec<Row>,
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
    let mut meters = backends::MachineMeters::detect();
    if verbosity != crate::table::Verbosity::Quiet {
        meters = meters.with_peak_listener(|n| eprintln!("{n}"));
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
        eprintln!(
            "{name}: {} groups by {} -> {}",
            summary.rows.len(),
            spec.by.join(", "),
            dir.join(format!("{name}.parquet")).display()
        );
    }
    eprintln!(
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
    Ok(StudyResult { outcome, rows })
}

/// Runs a study end to end.
pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
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
    let shard = match args.shard.clone().or_else(shard_from_env) {
        Some(text) => Some(parse_shard(&text).ok_or_else(|| {
            Failure::input(format!(
                "invalid shard `{text}`: expected I/N with 0 <= I < N"
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
            cancel: None,
        },
    )?;
    if verbosity != Verbosity::Quiet {
        crate::table::print_runs(&result.rows);
    }
    let failed_rows = result
        .rows
        .iter()
        .filter(|r| r.get("status") != Some(&results::Cell::Text("ok".into())))
        .count();
    if result.outcome.failed > 0 || failed_rows > 0 {
        eprintln!("some runs failed: see the `error` column");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
