//! `llmeff run`: plan a script, execute it, store and print the results.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::Failure;
use crate::cli::RunArgs;
use crate::sink::StoreSink;
use engine::execute::{Executor, MonotonicClock, Outcome, Progress};
use engine::plan::Plan;
use engine::schedule::{Schedule, Shard, parse_shard};
use results::{Row, Store};

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

/// Executes a plan into `<out>/<study>/` and compacts the study's tables.
pub fn execute_plan(
    plan: &Plan,
    out: &Path,
    shard: Option<Shard>,
    plain: bool,
) -> Result<StudyResult, Failure> {
    let mut schedule = Schedule::from_plan(plan);
    if schedule.items.is_empty() {
        return Err(Failure::input(
            "the study defines no runs: call infer(load(...), batch(prompts(...)))",
        ));
    }
    if let Some(shard) = shard {
        schedule = schedule.shard(shard);
    }
    let dir = out.join(&plan.study.name);
    let store = Store::open(&dir).map_err(|e| Failure::work(e.to_string()))?;
    let mut sink = StoreSink::new(store.clone()).map_err(|e| Failure::work(e.to_string()))?;

    let runtime = backends::BurnRuntime::new();
    let clock = MonotonicClock::default();
    let executor = Executor::new(&runtime, &clock);
    let interactive = !plain && std::io::stderr().is_terminal();
    let mut progress = crate::table::ProgressDisplay::new(interactive);
    let outcome = executor
        .execute(&schedule, &mut sink, &mut |event: Progress| {
            progress.handle(event)
        })
        .map_err(|e| Failure::work(e.to_string()))?;
    progress.finish();
    let rows = store.compact().map_err(|e| Failure::work(e.to_string()))?;
    eprintln!(
        "{} ok, {} failed, {} already done; results in {}",
        outcome.ok,
        outcome.failed,
        outcome.skipped,
        dir.join("runs.parquet").display()
    );
    Ok(StudyResult { outcome, rows })
}

/// Runs a study end to end.
pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let plan = super::load_plan(&args.script, args.study.as_deref())?;
    let shard = match args.shard.clone().or_else(shard_from_env) {
        Some(text) => Some(parse_shard(&text).ok_or_else(|| {
            Failure::input(format!(
                "invalid shard `{text}`: expected I/N with 0 <= I < N"
            ))
        })?),
        None => None,
    };
    let result = execute_plan(&plan, &args.out, shard, args.plain)?;
    crate::table::print_runs(&result.rows);
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
