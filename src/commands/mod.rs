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

/// Reads and plans a script; errors are bad input (exit 2).
pub fn load_plan(script: &Path, study_override: Option<&str>) -> Result<Plan, Failure> {
    let source = std::fs::read_to_string(script)
        .map_err(|e| Failure::input(format!("cannot read script {}: {e}", script.display())))?;
    let default_name = script
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "study".to_string());
    let mut plan = engine::script::plan_script(script, &source, &default_name)
        .map_err(|e| Failure::input(e.to_string()))?;
    if let Some(name) = study_override {
        plan.study.name = name.to_string();
    }
    Ok(plan)
}
