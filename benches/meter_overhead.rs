//! What the meters cost: the same study with every meter on and with none, plus the direct
//! cost of one sampler tick and of the counter reads at phase boundaries.
//!
//! Goal (ARCHITECTURE.md, issue "Measurement"): under 1 % of wall time. Run with
//! `cargo bench --bench meter_overhead`; figures are ratios, since absolute times are noise.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::Path;
use std::time::Instant;

use api::meter::{MeterProvider, Sample};
use backends::BurnRuntime;
use engine::execute::{Executor, MonotonicClock};
use engine::record::MemorySink;
use engine::schedule::Schedule;
use meters::MachineMeters;

const STUDY: &str = r#"
    let m = load("tiny-stories");
    let r = infer(m, batch(prompts("builtin:stories", #{ count: 8 }), #{ size: 4 }),
                  #{ max_new_tokens: 96, warmup: 1 });
    measure(r, #{ meters: METERS, interval_ms: 100 });
"#;

fn wall_s(runtime: &BurnRuntime, meters: &dyn MeterProvider, which: &str) -> f64 {
    let src = STUDY.replace("METERS", which);
    let plan = engine::script::plan_script(Path::new("bench.rhai"), &src, "bench")
        .expect("the benchmark study plans");
    let clock = MonotonicClock::default();
    let executor = Executor::new(runtime, &clock).with_meters(meters);
    let mut sink = MemorySink::default();
    executor
        .execute(&Schedule::from_plan(&plan), &mut sink, &mut |_| {})
        .expect("memory sink never fails");
    let record = &sink.records[0];
    record
        .metrics
        .as_ref()
        .unwrap_or_else(|| panic!("run failed: {:?}", record.error))
        .wall_s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let runtime = BurnRuntime::new();
    let meters = MachineMeters::detect();
    let all = r#"["latency", "energy", "flops", "memory", "utilisation"]"#;
    let none = r#"["latency"]"#;

    // Direct cost: one tick reads every probe and counter; a batch reads the counters 3 times.
    let mut probes = meters.probes("cpu");
    let mut counters = meters.energy_counters("cpu");
    let reps = 2000;
    let start = Instant::now();
    for _ in 0..reps {
        let mut sample = Sample::default();
        for p in &mut probes {
            p.sample(&mut sample);
        }
        for c in &mut counters {
            let _ = c.read_j();
        }
    }
    let tick_s = start.elapsed().as_secs_f64() / reps as f64;
    let start = Instant::now();
    for _ in 0..reps {
        for c in &mut counters {
            let _ = c.read_j();
        }
    }
    let read_s = start.elapsed().as_secs_f64() / reps as f64;

    // A/B on the same study, alternating so drift hits both sides alike.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..9 {
        if i % 2 == 0 {
            off.push(wall_s(&runtime, &meters, none));
            on.push(wall_s(&runtime, &meters, all));
        } else {
            on.push(wall_s(&runtime, &meters, all));
            off.push(wall_s(&runtime, &meters, none));
        }
    }
    let (on, off) = (median(on), median(off));
    println!("meter overhead on tiny-stories, 8 prompts x 96 tokens, batch 4, 100 ms interval");
    println!(
        "  one sampler tick: {:.1} us = {:.4} % of a 100 ms interval",
        tick_s * 1e6,
        tick_s / 0.1 * 100.0
    );
    println!(
        "  counter reads at a phase boundary: {:.1} us (3 per batch)",
        read_s * 1e6
    );
    println!(
        "  median wall, meters off {:.4} s, on {:.4} s: on/off = {:.4} ({:+.2} %)",
        off,
        on,
        on / off,
        (on / off - 1.0) * 100.0
    );
}
