//! `--shard i/n`: every shard gets work, the shards partition the schedule, a model's runs stay
//! on as few shards as the balance allows, and too many shards are warned about.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use engine::plan::Plan;
use engine::schedule::{Schedule, Shard};
use engine::stage::StageId;

fn experiments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments")
}

fn plan_of(name: &str) -> Plan {
    let path = experiments().join(format!("{name}.rhai"));
    let source = std::fs::read_to_string(&path).unwrap();
    engine::script::plan_script(&path, &source, name).unwrap_or_else(|e| panic!("{e}"))
}

fn plan_from(source: &str) -> Plan {
    engine::script::plan_script(Path::new("small.rhai"), source, "small")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn shards(schedule: &Schedule, count: usize) -> Vec<Schedule> {
    (0..count)
        .map(|index| schedule.clone().shard(Shard { index, count }))
        .collect()
}

/// Checks that the shards hold every execution of `full` exactly once, each in `full`'s order.
fn assert_partition(full: &Schedule, parts: &[Schedule]) {
    let mut seen = Vec::new();
    for part in parts {
        let positions: Vec<usize> = part
            .items
            .iter()
            .map(|i| full.items.iter().position(|f| f == i).unwrap())
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a shard must keep the schedule's order: {positions:?}"
        );
        seen.extend(part.items.iter().map(|i| (i.run.id, i.cycle)));
    }
    let unique: BTreeSet<_> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "an execution is on two shards");
    let all: BTreeSet<_> = full.items.iter().map(|i| (i.run.id, i.cycle)).collect();
    assert_eq!(unique, all);
}

#[test]
fn grid_on_eight_shards_gives_every_shard_work() {
    let full = Schedule::from_plan(&plan_of("grid"));
    assert_eq!(full.items.len(), 8);
    let parts = shards(&full, 8);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part.items.len(), 1, "shard {i}/8");
    }
    assert_partition(&full, &parts);
    assert_eq!(full.shard_warning(8), None);
}

#[test]
fn shards_partition_schedules_of_every_size_and_cycle_count() {
    let full = Schedule::from_plan(&uneven_groups());
    assert!(full.cycles > 1, "shuffled cycles are part of the case");
    for count in 1..=full.items.len() + 2 {
        let parts = shards(&full, count);
        assert_partition(&full, &parts);
        let sizes: Vec<usize> = parts.iter().map(|p| p.items.len()).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "{count} shards unbalanced: {sizes:?}");
    }
}

/// Four load groups of 1, 2, 3 and 1 runs, over 3 shuffled cycles.
fn uneven_groups() -> Plan {
    plan_from(
        r#"
study(#{ name: "uneven", cycles: 3, seed: 11 });
let p = prompts("builtin:stories", #{ count: 2 });
let sizes = #{ "f32": [1, 2], "bf16": [1, 2, 4] };
infer(load("tiny-stories", #{ weights: "random" }), batch(p), #{ max_new_tokens: 2 });
for dtype in ["f32", "bf16"] {
    let m = load("tiny-llama3-gqa", #{ weights: "random", dtype: dtype });
    for size in sizes[dtype] {
        infer(m, batch(p, #{ size: size }), #{ max_new_tokens: 2 });
    }
}
infer(load("tiny-stories", #{ weights: "random", dtype: "bf16" }), batch(p), #{ max_new_tokens: 2 });
"#,
    )
}

#[test]
fn each_cut_splits_at_most_one_load_group() {
    let full = Schedule::from_plan(&uneven_groups());
    assert_eq!(full.items.len(), 21);
    let groups: BTreeSet<StageId> = full.items.iter().map(|i| i.run.load_id).collect();
    assert_eq!(groups.len(), 4);
    for count in 1..=full.items.len() {
        let parts = shards(&full, count);
        let mut spans: HashMap<StageId, usize> = HashMap::new();
        for part in &parts {
            let here: BTreeSet<StageId> = part.items.iter().map(|i| i.run.load_id).collect();
            for g in here {
                *spans.entry(g).or_default() += 1;
            }
        }
        // A group is cut only where a slice ends inside it: n shards make n - 1 cuts.
        let extra: usize = spans.values().map(|s| s - 1).sum();
        assert_eq!(spans.len(), groups.len());
        assert!(
            extra < count,
            "{count} shards: groups span {spans:?} shards"
        );
    }
}

#[test]
fn a_small_plan_lands_on_shards_as_snapshotted() {
    let plan = plan_from(
        r#"
study(#{ name: "small", cycles: 2, seed: 7 });
let p = prompts("builtin:stories", #{ count: 2 });
for model in ["tiny-stories", "tiny-llama3-gqa"] {
    let m = load(model, #{ weights: "random" });
    for size in [1, 2, 4] {
        infer(m, batch(p, #{ size: size }), #{ max_new_tokens: 2 });
    }
}
"#,
    );
    let full = Schedule::from_plan(&plan);
    assert_eq!(full.items.len(), 12);
    let mut text = String::new();
    for (index, part) in shards(&full, 5).iter().enumerate() {
        writeln!(text, "shard {index}/5: {} loads", part.loads()).unwrap();
        for item in &part.items {
            writeln!(
                text,
                "  cycle {} {} batch {}",
                item.cycle, item.run.load.model, item.run.batch.size
            )
            .unwrap();
        }
    }
    insta::assert_snapshot!("small_plan_on_five_shards", text);
}

#[test]
fn more_shards_than_executions_is_warned_about() {
    let full = Schedule::from_plan(&plan_of("grid"));
    assert_eq!(full.shard_warning(8), None);
    let warning = full.shard_warning(10).expect("10 shards for 8 executions");
    assert_eq!((warning.count, warning.executions), (10, 8));
    let text = warning.to_string();
    assert!(text.contains("shards 8 to 9 (of 10)"), "{text}");
    assert!(text.contains("use at most 8 shards"), "{text}");
    assert!(
        full.shard_warning(9)
            .unwrap()
            .to_string()
            .contains("shard 8/9 gets nothing"),
    );
    // The idle shards are the ones the warning names.
    let parts = shards(&full, 10);
    let empty: Vec<usize> = (0..10).filter(|&i| parts[i].items.is_empty()).collect();
    assert_eq!(empty, [8, 9]);
}

#[test]
fn the_shard_listing_shows_what_each_task_runs() {
    // `llmeff plan experiments/grid.rhai --shards 6`, the README's Slurm example: more tasks
    // than load groups, each task's loads and runs numbered as the schedule numbers them.
    let grid = Schedule::from_plan(&plan_of("grid"));
    let single = Schedule::from_plan(&plan_of("single"));
    let text = format!("{}{}", grid.shard_listing(6), single.shard_listing(3));
    insta::assert_snapshot!("shard_listing", text);
}
