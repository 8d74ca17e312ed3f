//! Planning cost at scale: a 10,000-run grid must plan in under 2 s and 200 MB.
//!
//! Run with `cargo bench -p llmeff-engine --bench plan_scale`. Prints wall time, peak RSS
//! (VmHWM, Linux) and per-run costs; exits non-zero if a target is missed.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::Path;
use std::time::Instant;

use engine::schedule::Schedule;

const SCRIPT: &str = r#"
import "sweep" as sweep;
let p = prompts("builtin:stories", #{ count: 8 });
for cfg in sweep::grid(#{
    model: ["tiny-stories", "a/b", "c/d", "e/f"],
    dtype: ["f32", "f16"],
    batch_size: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    max_new_tokens: [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 136, 144, 152, 160, 168, 176, 184, 192, 200, 208, 216, 224, 232, 240, 248, 256, 264, 272, 280, 288, 296, 304, 312, 320, 328, 336, 344, 352, 360, 368, 376, 384, 392, 400, 408, 416, 424, 432, 440, 448, 456, 464, 472, 480, 488, 496, 504, 512, 520, 528, 536, 544, 552, 560, 568, 576, 584, 592, 600, 608, 616, 624, 632, 640, 648, 656, 664, 672, 680, 688, 696, 704, 712, 720, 728, 736, 744, 752, 760, 768, 776, 784, 792, 800, 808, 816, 824, 832, 840, 848, 856, 864, 872, 880, 888, 896, 904, 912, 920, 928, 936, 944, 952, 960, 968, 976, 984, 992, 1000],
}) {
    let m = load(cfg.model, #{ dtype: cfg.dtype, weights: "random" });
    measure(infer(m, batch(p, #{ size: cfg.batch_size }), #{ max_new_tokens: cfg.max_new_tokens }));
}
"#;

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let start = Instant::now();
    let plan = engine::script::plan_script(Path::new("bench.rhai"), SCRIPT, "bench")
        .expect("bench script plans");
    let planned = start.elapsed().as_secs_f64();
    let schedule = Schedule::from_plan(&plan);
    let total = start.elapsed().as_secs_f64();
    let runs = schedule.items.len();
    let rss = peak_rss_mb();
    println!("runs planned:        {runs}");
    println!("stages in the DAG:   {}", plan.len());
    println!("loads:               {}", schedule.loads());
    println!(
        "script → plan:       {planned:.3} s ({:.1} µs per run)",
        planned / runs as f64 * 1e6
    );
    println!("plan → schedule:     {:.3} s", total - planned);
    println!(
        "peak RSS:            {}",
        rss.map_or("unavailable (no /proc)".to_string(), |r| format!(
            "{r:.1} MB"
        ))
    );
    assert_eq!(runs, 4 * 2 * 10 * 125);
    let ok_time = total < 2.0;
    let ok_memory = rss.is_none_or(|r| r < 200.0);
    println!(
        "targets: < 2 s {} ; < 200 MB {}",
        if ok_time { "met" } else { "MISSED" },
        if ok_memory { "met" } else { "MISSED" }
    );
    if !(ok_time && ok_memory) {
        std::process::exit(1);
    }
}
