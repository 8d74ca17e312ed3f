//! Budgets checked while planning: every oversized count, size or duration, and every script
//! that tries to exhaust memory or read the clock, fails with a located error naming the limit
//! instead of panicking, allocating without bound or hanging.

use engine::limits;
use engine::script::{ScriptError, plan_script, plan_script_with_output};
use std::path::Path;
use std::sync::{Arc, Mutex};

const HEAD: &str =
    "let m = load(\"tiny-stories\");\nlet p = prompts(\"builtin:stories\", #{ count: 4 });\n";

fn plan_err(body: &str) -> ScriptError {
    let source = format!("{HEAD}{body}");
    match plan_script(Path::new("t.rhai"), &source, "t") {
        Ok(_) => panic!("planned although over a limit:\n{body}"),
        Err(e) => e,
    }
}

/// The error is on the script's third line (the body's first), and names `needle`.
fn assert_located(body: &str, needle: &str) {
    let e = plan_err(body);
    assert_eq!((e.file.as_str(), e.line), ("t.rhai", 3), "{e}");
    assert!(e.column > 0, "{e}");
    assert!(e.message.contains(needle), "`{needle}` not in: {e}");
}

#[test]
fn a_huge_prompt_count_is_refused_before_batches_are_built() {
    assert_located(
        "infer(m, batch(prompts(\"builtin:chat\", #{ count: 1_000_000_000_000_000_000 }), #{ token_budget: 64 }));",
        &format!("over the limit of {}", limits::MAX_PROMPTS),
    );
}

#[test]
fn the_default_batch_size_of_a_token_budget_is_capped() {
    let source = format!(
        "{HEAD}infer(m, batch(prompts(\"builtin:chat\", #{{ count: {} }}), #{{ token_budget: 64 }}));",
        limits::MAX_PROMPTS
    );
    let plan = plan_script(Path::new("t.rhai"), &source, "t").unwrap();
    assert_eq!(plan.runs()[0].batch.size, limits::MAX_BATCH_SIZE);
}

#[test]
fn token_counts_and_batch_sizes_are_capped() {
    let over = limits::MAX_TOKENS + 1;
    assert_located(
        &format!("infer(m, p, #{{ max_new_tokens: {over} }});"),
        "max_new_tokens",
    );
    assert_located(
        &format!("prompts(\"builtin:chat\", #{{ max_input_tokens: {over} }});"),
        "max_input_tokens",
    );
    assert_located(
        "batch(p, #{ token_budget: 1_000_000_000_000 });",
        "token_budget",
    );
    assert_located(
        &format!("batch(p, #{{ size: {} }});", limits::MAX_BATCH_SIZE + 1),
        &format!("over the limit of {}", limits::MAX_BATCH_SIZE),
    );
}

#[test]
fn a_huge_warmup_is_refused() {
    assert_located(
        "infer(m, p, #{ warmup: 1_000_000_000_000_000_000 });",
        &format!("over the limit of {}", limits::MAX_WARMUP),
    );
}

#[test]
fn cycles_and_runs_times_cycles_are_capped() {
    assert_located(
        "study(#{ cycles: 1_000_000_000 });",
        &format!("over the limit of {}", limits::MAX_CYCLES),
    );
    // Cycles first, then enough runs to go over: the run that crosses the limit is refused.
    let runs = limits::MAX_EXECUTIONS / limits::MAX_CYCLES + 1;
    let e = plan_err(&format!(
        "study(#{{ cycles: {} }});\nfor n in 1..={runs} {{ infer(m, p, #{{ max_new_tokens: n }}); }}",
        limits::MAX_CYCLES
    ));
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("executions"), "{e}");
    // Runs first, then cycles.
    let e = plan_err(&format!(
        "for n in 1..={runs} {{ infer(m, p, #{{ max_new_tokens: n }}); }}\nstudy(#{{ cycles: {} }});",
        limits::MAX_CYCLES
    ));
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("executions"), "{e}");
}

#[test]
fn a_grid_of_millions_of_combinations_is_refused_before_it_is_built() {
    let e = plan_err(
        "import \"sweep\" as sweep; let g = sweep::grid(#{ a: [1,2,3,4,5,6,7,8,9,10], b: [1,2,3,4,5,6,7,8,9,10], c: [1,2,3,4,5,6,7,8,9,10], d: [1,2,3,4,5,6,7,8,9,10], e: [1,2,3,4,5,6,7,8,9,10], f: [1,2,3,4,5,6,7,8,9,10], g: [1,2,3,4,5,6,7,8,9,10] });",
    );
    assert!(
        e.message
            .contains(&format!("over the limit of {}", limits::MAX_ARRAY_SIZE)),
        "{e}"
    );
}

#[test]
fn durations_must_be_finite_non_negative_and_at_most_a_day() {
    for body in [
        "infer(m, p, #{ arrival: #{ pattern: \"constant\", interval_s: 1e20 } });",
        "infer(m, p, #{ arrival: #{ pattern: \"bursty\", burst: 2, off_s: 1e20 } });",
        "infer(m, p, #{ arrival: #{ pattern: \"poisson\", rate_per_s: 1e-300 } });",
        "measure(infer(m, p), #{ idle_baseline_s: 1e20 });",
        "study(#{ retry_delay_s: 1e20 });",
    ] {
        let e = plan_err(body);
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.message.contains("86400") || e.message.contains("per second"),
            "{e}"
        );
    }
    assert_located(
        "measure(infer(m, p), #{ idle_baseline_s: -1.0 });",
        "finite number of seconds >= 0",
    );
}

#[test]
fn growing_an_array_without_end_fails_at_the_array_limit() {
    let e = plan_err("let a = []; loop { a.push(1); }");
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.to_lowercase().contains("array"), "{e}");
    assert!(
        e.message
            .contains(&format!("limit of {} elements", limits::MAX_ARRAY_SIZE)),
        "{e}"
    );
}

#[test]
fn growing_a_map_or_string_without_end_fails_at_a_limit() {
    let e = plan_err("let x = #{}; let i = 0; loop { x[`k${i}`] = i; i += 1; }");
    assert_eq!(e.line, 3, "{e}");
    let e = plan_err("let s = \"\"; loop { s += \"0123456789\"; }");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn an_endless_loop_runs_out_of_operations() {
    let e = plan_err("let i = 0; loop { i += 1; }");
    assert_eq!(e.line, 3, "{e}");
    assert!(
        e.message
            .contains(&format!("limit of {} operations", limits::MAX_OPERATIONS)),
        "{e}"
    );
}

#[test]
fn scripts_cannot_read_the_clock() {
    assert_located("let t = timestamp();", "scripts cannot read the clock");
}

#[test]
fn scripts_cannot_sleep() {
    assert_located("sleep(1e20);", "planning never waits");
    assert_located("sleep(1_000_000_000_000_000_000);", "planning never waits");
}

#[test]
fn print_and_debug_reach_the_output_as_they_happen_even_when_the_script_fails() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let source = "print(\"planning\");\ndebug(42);\nload(\"\");";
    let result = plan_script_with_output(
        Path::new("t.rhai"),
        source,
        "t",
        Arc::new(move |line: &str| sink.lock().unwrap().push(line.to_string())),
    );
    assert!(result.is_err());
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "planning");
    assert!(lines[1].ends_with("42"), "{lines:?}");
}
