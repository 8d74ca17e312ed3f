//! `llmeff plan`: print what a script would run.

use std::process::ExitCode;

use crate::Failure;
use crate::cli::{PlanArgs, PlanFormat};
use api::runtime::Runtime;
use engine::schedule::Schedule;

/// Prints the plan in the requested format.
pub fn run(args: PlanArgs) -> Result<ExitCode, Failure> {
    let plan = super::load_plan(&args.script, None)?;
    match args.format {
        PlanFormat::Text => {
            print!("{plan}");
            print!("{}", Schedule::from_plan(&plan));
            print!("{}", memory_lines(&plan));
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

/// Prompt length assumed when a run does not cap it: prompts are only tokenised when run.
const ASSUMED_PROMPT_TOKENS: usize = 512;

/// One line per distinct (load, batch, length): the memory the run will need, estimated from
/// the model's config before anything is allocated, beside what the machine has free. Planning
/// stays offline: a Hub model that is not cached has no estimate.
fn memory_lines(plan: &engine::plan::Plan) -> String {
    let runtime =
        backends::BurnRuntime::with_hub_cache(backends::HubCache::from_env().offline(true));
    let mut seen = std::collections::HashSet::new();
    let mut out = String::from("Memory (estimated from each model's config)\n");
    for run in plan.runs() {
        let prompt = run
            .prompts
            .max_input_tokens
            .unwrap_or(ASSUMED_PROMPT_TOKENS);
        let max_len = prompt + run.infer.max_new_tokens;
        if !seen.insert((run.load_id, run.batch.size, max_len)) {
            continue;
        }
        let what = format!(
            "{} {} bs={} len={max_len}",
            run.load.model, run.load.dtype, run.batch.size
        );
        // Each replica holds its own weights and batches its share at the run's batch size;
        // replicas on CPU cores share the machine's memory.
        let devices = api::device::replica_devices(&run.load.device);
        let spec = run.model_spec_on(devices[0]);
        let line = match runtime.estimate_memory(&spec, run.batch.size, max_len) {
            Ok(Some(e)) if devices.len() > 1 && spec.device.starts_with("cpu") => {
                let total = e.total_bytes() * devices.len() as u64;
                format!(
                    "per replica weights {} + KV cache {} = {}; {} replicas in this machine's memory: {}; available {}{}",
                    mib(e.weight_bytes),
                    mib(e.kv_cache_bytes),
                    mib(e.total_bytes()),
                    devices.len(),
                    mib(total),
                    e.available_bytes.map_or("unknown".to_string(), mib),
                    if e.available_bytes.is_some_and(|a| total > a) {
                        " (will not fit: the run will fail)"
                    } else {
                        ""
                    }
                )
            }
            Ok(Some(e)) => format!(
                "{}weights {} (load peak {}) + KV cache {} = {}; available {}{}",
                if devices.len() > 1 {
                    format!("per replica ({} GPUs): ", devices.len())
                } else {
                    String::new()
                },
                mib(e.weight_bytes),
                mib(e.load_peak_bytes),
                mib(e.kv_cache_bytes),
                mib(e.total_bytes()),
                e.available_bytes.map_or("unknown".to_string(), mib),
                if e.exceeds_available() {
                    " (will not fit: the run will fail)"
                } else {
                    ""
                }
            ),
            Ok(None) => "no estimate".to_string(),
            Err(e) => format!("no estimate: {e}"),
        };
        out.push_str(&format!("  {what}: {line}\n"));
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
