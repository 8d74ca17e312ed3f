//! `llmeff plan`: print what a script would run, and with `--shards N` what each of N batch
//! tasks would run.

use std::process::ExitCode;

use crate::Failure;
use crate::cli::{PlanArgs, PlanFormat};
use api::runtime::Runtime;
use engine::schedule::{Schedule, Shard};

/// Prints the plan in the requested format.
pub fn run(args: PlanArgs) -> Result<ExitCode, Failure> {
    let plan = super::load_plan(&args.script, None)?;
    match args.format {
        PlanFormat::Text => {
            print!("{plan}");
            let schedule = Schedule::from_plan(&plan);
            print!("{schedule}");
            if let Some(count) = args.shards {
                print!("{}", schedule.shard_listing(count));
            }
            print!("{}", memory_lines(&plan));
        }
        PlanFormat::Dot if args.shards.is_some() => {
            return Err(Failure::input(
                "--shards lists each task's runs in text or json, not dot: drop --shards or use --format text",
            ));
        }
        PlanFormat::Dot => print!("{}", plan.to_dot()),
        PlanFormat::Json => {
            let mut json = plan.to_json();
            if let (Some(count), Some(object)) = (args.shards, json.as_object_mut()) {
                let schedule = Schedule::from_plan(&plan);
                object.insert("shards".into(), shards_json(&schedule, count));
            }
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| Failure::work(format!("cannot render plan: {e}")))?;
            println!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--shards N` in the JSON plan: per shard its index, count, loads and executions (full run
/// hashes, as the `run_hash` column holds them, and cycles).
fn shards_json(schedule: &Schedule, count: usize) -> serde_json::Value {
    let total = schedule.items.len();
    let shards: Vec<serde_json::Value> = (0..count)
        .map(|index| {
            // Shards past the executions are empty: not cut, so a large count stays cheap.
            let part = if index < total {
                schedule.clone().shard(Shard { index, count })
            } else {
                Schedule {
                    items: Vec::new(),
                    ..schedule.clone()
                }
            };
            let executions: Vec<serde_json::Value> = part
                .items
                .iter()
                .map(|i| serde_json::json!({ "run": i.run.id.hex(), "cycle": i.cycle }))
                .collect();
            serde_json::json!({
                "index": index,
                "count": count,
                "loads": part.loads(),
                "executions": executions,
            })
        })
        .collect();
    serde_json::Value::Array(shards)
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
