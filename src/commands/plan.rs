//! `llmeff plan`: print what a script would run.

use std::process::ExitCode;

use crate::Failure;
use crate::cli::{PlanArgs, PlanFormat};
use engine::schedule::Schedule;

/// Prints the plan in the requested format.
pub fn run(args: PlanArgs) -> Result<ExitCode, Failure> {
    let plan = super::load_plan(&args.script, None)?;
    match args.format {
        PlanFormat::Text => {
            print!("{plan}");
            print!("{}", Schedule::from_plan(&plan));
        }
        PlanFormat::Dot => print!("{}", plan.to_dot()),
        PlanFormat::Json => {
            let text = serde_json::to_string_pretty(&plan.to_json())
                .map_err(|e| Failure::work(format!("cannot render plan: {e}")))?;
            println!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
