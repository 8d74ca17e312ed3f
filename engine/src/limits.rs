//! The budgets a plan is checked against while a script runs, in one place.
//!
//! Each bound exists so a typo or a hostile script (`count: 1_000_000_000_000_000_000`,
//! `interval_s: 1e20`) fails while planning with a located error naming the limit, instead of
//! panicking, exhausting memory or hanging later, on every re-run. The values are generous for
//! real studies; the scripting reference lists them (a test keeps it in sync).

/// Prompts one `prompts()` stage may yield (`count`, or the length of an inline array).
pub const MAX_PROMPTS: usize = 100_000;
/// Prompts per batch (`batch(…, #{ size })`, and the default size with only a token budget).
pub const MAX_BATCH_SIZE: usize = 4_096;
/// Tokens per prompt (`max_input_tokens`) and new tokens per prompt (`max_new_tokens`).
pub const MAX_TOKENS: usize = 1 << 20;
/// Padded tokens per batch (`token_budget`).
pub const MAX_TOKEN_BUDGET: usize = 1 << 30;
/// Untimed warm-up generations per run (`warmup`).
pub const MAX_WARMUP: usize = 1_000;
/// Repetitions of the whole study (`cycles`).
pub const MAX_CYCLES: usize = 10_000;
/// Executions of a study: runs × cycles.
pub const MAX_EXECUTIONS: usize = 100_000;
/// Stages (plan nodes) of one plan.
pub const MAX_STAGES: usize = 1_000_000;
/// Extra attempts of a failed run (`retries`).
pub const MAX_RETRIES: usize = 100;
/// Seconds any duration option may take (`interval_s`, `off_s`, `idle_baseline_s`,
/// `retry_delay_s`, and `1 / rate_per_s`): one day.
pub const MAX_SECONDS: f64 = 86_400.0;
/// Meter sampling interval in milliseconds (`interval_ms`): one minute.
pub const MAX_INTERVAL_MS: usize = 60_000;
/// Arrivals per second of a Poisson pattern (`rate_per_s`).
pub const MAX_RATE_PER_S: f64 = 1_000_000.0;

/// Operations a script may perform (Rhai's operation counter).
pub const MAX_OPERATIONS: u64 = 5_000_000;
/// Elements of one script array. Kept well below a million because Rhai re-measures an array
/// on every push, so filling one to the limit costs time quadratic in it.
pub const MAX_ARRAY_SIZE: usize = 20_000;
/// Bytes of one script string.
pub const MAX_STRING_SIZE: usize = 1 << 20;
/// Entries of one script map (re-measured on every insert, like arrays).
pub const MAX_MAP_SIZE: usize = 20_000;
/// Nested function calls in a script.
pub const MAX_CALL_LEVELS: usize = 64;

/// The budgets as `(what, limit)` lines, for the scripting reference.
pub fn describe() -> Vec<(&'static str, String)> {
    vec![
        ("prompts per prompts() (`count`)", MAX_PROMPTS.to_string()),
        ("prompts per batch (`size`)", MAX_BATCH_SIZE.to_string()),
        (
            "`max_input_tokens`, `max_new_tokens`",
            MAX_TOKENS.to_string(),
        ),
        ("`token_budget`", MAX_TOKEN_BUDGET.to_string()),
        ("`warmup`", MAX_WARMUP.to_string()),
        ("`cycles`", MAX_CYCLES.to_string()),
        ("runs x cycles", MAX_EXECUTIONS.to_string()),
        ("stages per plan", MAX_STAGES.to_string()),
        ("`retries`", MAX_RETRIES.to_string()),
        (
            "seconds (`interval_s`, `off_s`, `idle_baseline_s`, `retry_delay_s`, 1/`rate_per_s`)",
            MAX_SECONDS.to_string(),
        ),
        ("`interval_ms`", MAX_INTERVAL_MS.to_string()),
        ("`rate_per_s`", MAX_RATE_PER_S.to_string()),
        ("script operations", MAX_OPERATIONS.to_string()),
        ("array elements", MAX_ARRAY_SIZE.to_string()),
        ("string bytes", MAX_STRING_SIZE.to_string()),
        ("map entries", MAX_MAP_SIZE.to_string()),
        ("call depth", MAX_CALL_LEVELS.to_string()),
    ]
}
