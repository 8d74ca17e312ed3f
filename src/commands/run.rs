//! `llmeff run`: plan a script, execute it, store and print the results.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use crate::Failure;
use crate::cli::RunArgs;
use crate::table::{ProgressDisplay, StudyConsole, Verbosity};
use api::runtime::Runtime;
use engine::plan::Plan;
use engine::schedule::parse_shard;
use study::{
    BuildInfo, Provenance, ScriptOrigin, StudyError, StudyOptions, StudyResult, StudySession,
    TaskShard, shard_from_env,
};

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

/// What built this binary, as `build.rs` recorded it.
fn build_info() -> BuildInfo {
    BuildInfo::from_build_env(
        env!("CARGO_PKG_VERSION"),
        env!("LLMEFF_GIT_COMMIT"),
        env!("LLMEFF_GIT_DIRTY"),
        env!("LLMEFF_BUILD_PROFILE"),
        env!("LLMEFF_RUSTC_VERSION"),
    )
}

/// A study error as the command's failure: bad input exits 2, failed work 1.
fn failure(error: StudyError) -> Failure {
    if error.is_input() {
        Failure::input(error.to_string())
    } else {
        Failure::work(error.to_string())
    }
}

/// Executes a plan into `<out>/<study>/` through the study session (`llmeff run` and the
/// REPL's `:run` both come here), rendering its progress on the terminal.
pub fn execute_plan(
    plan: &Plan,
    origin: &ScriptOrigin<'_>,
    out: &Path,
    shard: Option<TaskShard>,
    force: bool,
    console: Console<'_>,
) -> Result<StudyResult, Failure> {
    let runtime = backends::BurnRuntime::new();
    // The CPU peak's microbenchmark pauses the first run for a few seconds: say so, unless
    // asked to be quiet.
    let mut meters = meters::MachineMeters::detect();
    if console.verbosity != Verbosity::Quiet {
        meters = meters.with_peak_listener(|n| note!("{n}"));
    }
    let provenance = Provenance::read(
        Path::new("/proc"),
        build_info(),
        rayon::current_num_threads(),
    );
    let environment = crate::environment::describe(&runtime.devices());
    let session = StudySession {
        runtime: &runtime,
        meters: &meters,
        provenance: &provenance,
        environment: &environment,
    };
    // Fault injection for the lock tests: hold the lock a while (debug builds only).
    let pause_after_lock = cfg!(debug_assertions)
        .then(|| std::env::var("LLMEFF_TEST_PAUSE_AFTER_LOCK_MS").ok())
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let options = StudyOptions {
        shard,
        force,
        cancel: console.cancel,
        pause_after_lock,
    };
    let interactive = !console.plain && std::io::stderr().is_terminal();
    let mut observer = StudyConsole {
        display: ProgressDisplay::new(interactive, console.verbosity),
    };
    session
        .execute(plan, *origin, out, options, &mut observer)
        .map_err(failure)
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
    let shard = match &args.shard {
        Some(text) => Some(TaskShard::flag(parse_shard(text).ok_or_else(|| {
            Failure::input(format!(
                "invalid shard `{text}`: expected I/N with 0 <= I < N <= {}",
                engine::schedule::MAX_SHARDS
            ))
        })?)),
        None => shard_from_env(|name| std::env::var(name).ok())
            .map_err(|e| Failure::input(e.to_string()))?,
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
