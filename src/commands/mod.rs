//! One module per subcommand.

pub mod bench;
pub mod env;
pub mod generate;
pub mod help;
pub mod plan;
pub mod repl;
pub mod report;
pub mod run;

use std::path::Path;

use crate::Failure;
use engine::plan::Plan;

/// Sizes rayon's global pool, which burn's CPU backend and llmeff's kernels run on, to
/// `--threads`; it must run before anything uses the pool, since the first use fixes its size
/// (and the sink records `rayon::current_num_threads()` per run).
pub fn init_threads(threads: Option<usize>) -> Result<(), Failure> {
    let Some(threads) = threads else {
        return Ok(());
    };
    if threads == 0 {
        return Err(Failure::input("--threads must be at least 1"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| Failure::work(format!("cannot size the thread pool: {e}")))
}

/// A `--study` name becomes a folder under `--out`: an absolute path or `..` would write
/// outside it, so it is held to the rule scripts' `study(#{ name })` follows.
pub fn check_study_name(name: &str) -> Result<(), Failure> {
    if engine::plan::is_valid_study_name(name) {
        Ok(())
    } else {
        Err(Failure::input(format!(
            "invalid study name `{name}`: use letters, digits, '-', '_' and '.' only, not starting with '.'"
        )))
    }
}

/// Reads and plans a script; errors are bad input (exit 2).
pub fn load_plan(script: &Path, study_override: Option<&str>) -> Result<Plan, Failure> {
    let source = std::fs::read_to_string(script)
        .map_err(|e| Failure::input(format!("cannot read script {}: {e}", script.display())))?;
    let default_name = script
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "study".to_string());
    // Scripts' print and debug lines reach stderr as they happen.
    let output: engine::script::ScriptOutput =
        std::sync::Arc::new(|line: &str| eprintln!("{line}"));
    let mut plan = engine::script::plan_script_with_output(script, &source, &default_name, output)
        .map_err(|e| Failure::input(e.to_string()))?;
    if let Some(name) = study_override {
        check_study_name(name)?;
        plan.study.name = name.to_string();
    }
    Ok(plan)
}
