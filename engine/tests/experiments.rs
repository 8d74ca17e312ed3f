//! Every example study plans, and its plan is snapshotted (examples are tests).

use std::path::{Path, PathBuf};

use engine::schedule::Schedule;
use engine::stage::StageKind;

fn experiments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

fn plan_of(name: &str) -> engine::plan::Plan {
    let path = experiments().join(format!("{name}.rhai"));
    let source = std::fs::read_to_string(&path).unwrap();
    engine::script::plan_script(&path, &source, name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_experiment_plans_and_matches_its_snapshot() {
    let mut names: Vec<String> = std::fs::read_dir(experiments())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "arrivals",
            "controlled",
            "grid",
            "models",
            "parallel",
            "scenarios",
            "serving",
            "single",
            "suite",
            "wgpu"
        ]
    );
    for name in names {
        let plan = plan_of(&name);
        assert!(!plan.runs().is_empty(), "{name} has no runs");
        let text = format!("{plan}{}", Schedule::from_plan(&plan));
        insta::assert_snapshot!(format!("plan_{name}"), text);
    }
}

#[test]
fn grid_loads_each_model_dtype_once() {
    let plan = plan_of("grid");
    assert_eq!(plan.runs().len(), 8);
    assert_eq!(plan.count(StageKind::Load), 4);
    assert_eq!(Schedule::from_plan(&plan).loads(), 4);
}

#[test]
fn suite_repeats_every_run_per_cycle_in_shuffled_orders() {
    let plan = plan_of("suite");
    let schedule = Schedule::from_plan(&plan);
    let runs = plan.runs().len();
    assert_eq!(schedule.items.len(), runs * 3);
    let order = |cycle: usize| -> Vec<_> {
        schedule
            .items
            .iter()
            .filter(|i| i.cycle == cycle)
            .map(|i| i.run.id)
            .collect()
    };
    assert!(
        order(0) != order(1) || order(1) != order(2),
        "cycles should be shuffled"
    );
}

#[test]
fn shards_partition_the_schedule() {
    let plan = plan_of("grid");
    let full = Schedule::from_plan(&plan);
    let mut seen = Vec::new();
    for index in 0..3 {
        let part = full
            .clone()
            .shard(engine::schedule::Shard { index, count: 3 });
        seen.extend(part.items.iter().map(|i| (i.run.id, i.cycle)));
    }
    seen.sort();
    let mut all: Vec<_> = full.items.iter().map(|i| (i.run.id, i.cycle)).collect();
    all.sort();
    assert_eq!(seen, all);
}

/// The example in the design document plans exactly as written (regression guard for the
/// public vocabulary: stage names, option keys and values).
#[test]
fn the_design_document_example_plans_as_written() {
    let src = r#"
import "sweep" as sweep;                         // stdlib module

let prompts = prompts("builtin:stories", #{ count: 32, max_input_tokens: 64, seed: 1 });

for cfg in sweep::grid(#{ model: ["tiny-stories", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"],
                          dtype: ["f32", "bf16"], batch_size: [1, 4, 8] }) {
    let m = load(cfg.model, #{ dtype: cfg.dtype, weights: "random" });  // default "pretrained"
    let r = infer(m, batch(prompts, #{ size: cfg.batch_size }),
                  #{ max_new_tokens: 32, decoding: #{ method: "greedy" } });
    measure(r, #{ meters: ["latency", "energy", "flops", "memory"], carbon: #{ country: "GBR" } });
}
aggregate(#{ by: ["model", "dtype", "batch_size"], stats: ["mean", "std", "p50", "p99"] });
"#;
    let plan = engine::script::plan_script(Path::new("design.rhai"), src, "design")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.runs().len(), 12);
    assert_eq!(plan.count(StageKind::Load), 4);
    assert_eq!(plan.count(StageKind::Prompts), 1);
    assert_eq!(plan.aggregates().len(), 1);
    let run = &plan.runs()[0];
    assert_eq!(run.measure.carbon.country.as_deref(), Some("GBR"));
    assert_eq!(run.measure.meters, ["energy", "flops", "latency", "memory"]);
}

#[test]
fn quantized_models_are_their_own_load_groups() {
    let src = r#"
let m = load("tiny-stories");
let p = batch(prompts(["x"]));
infer(m, p);
for method in ["int8", "int4", "nf4"] {
    infer(quantize(m, #{ method: method, block_size: 32 }), p);
}
infer(quantize(m, #{ method: "int8" }), p);   // default block size 32: same node as above
"#;
    let plan = engine::script::plan_script(Path::new("q.rhai"), src, "q")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.count(StageKind::Load), 1);
    assert_eq!(plan.count(StageKind::Quantize), 3);
    assert_eq!(plan.runs().len(), 4);
    assert_eq!(Schedule::from_plan(&plan).loads(), 4);
    let q = plan.runs()[1].quantize.clone().unwrap();
    assert_eq!((q.method.as_str(), q.block_size), ("int8", 32));
}

#[test]
fn quantize_rejects_bad_methods_and_inputs() {
    let err = |src: &str| {
        engine::script::plan_script(Path::new("q.rhai"), src, "q")
            .unwrap_err()
            .message
    };
    assert_eq!(
        err(r#"quantize(load("m"), #{ method: "int3" })"#),
        "option `method` of quantize(): `int3` is not one of: int8, int4, nf4, fp8"
    );
    assert!(err(r#"quantize(load("m"))"#).contains("`method` of quantize(): is required"));
    assert!(
        err(r#"quantize(load("m"), #{ method: "int8", block_size: 12 })"#).contains("power of two")
    );
    assert_eq!(
        err(r#"quantize(quantize(load("m"), #{ method: "int8" }), #{ method: "int4" })"#),
        "quantize() expects a model (from load()) as argument 1, got a quantized model (from quantize())"
    );
}
