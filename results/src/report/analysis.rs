//! Configurations of a study and the mean of each metric over their successful cycles.
//!
//! A configuration is one run hash (the content hash of its resolved options); its cycles are
//! repetitions, so the report averages them. Failed cycles are listed, never averaged.

use std::collections::{BTreeMap, BTreeSet};

use super::view::TableView;
use crate::row::Cell;

/// Configuration columns, in display order, with their short headers.
pub(super) const CONFIG_COLUMNS: &[(&str, &str)] = &[
    ("model", "model"),
    ("revision", "revision"),
    ("dtype", "dtype"),
    ("weights", "weights"),
    ("quantization", "quantization"),
    ("device", "device"),
    ("prompts", "prompts"),
    ("num_prompts", "prompts (n)"),
    ("max_input_tokens", "max input tokens"),
    ("batch_size", "batch size"),
    ("token_budget", "token budget"),
    ("serve_max_batch", "serve max batch"),
    ("serve_max_batch_tokens", "serve max batch tokens"),
    ("serve_prefill", "serve prefill"),
    ("arrival", "arrival"),
    ("arrival_rate_per_s", "arrival rate (/s)"),
    ("arrival_interval_s", "arrival interval (s)"),
    ("arrival_burst", "arrival burst"),
    ("arrival_off_s", "arrival off (s)"),
    ("arrival_burstiness", "arrival burstiness"),
    ("arrival_trace", "arrival trace"),
    ("arrival_time_scale", "arrival time scale"),
    ("slo_ttft_s", "SLO TTFT (s)"),
    ("slo_tpot_s", "SLO TPOT (s)"),
    ("max_new_tokens", "max new tokens"),
    ("min_new_tokens", "min new tokens"),
    ("stop_at_eos", "stop at EOS"),
    ("decoding", "decoding"),
    ("temperature", "temperature"),
    ("top_k", "top-k"),
    ("top_p", "top-p"),
    ("warmup_runs", "warm-up runs"),
    ("energy_estimate", "energy estimate"),
];

/// Shown even when constant, since every reader asks for them first.
pub(super) const ALWAYS_SHOWN: &[&str] = &["model", "dtype", "quantization", "batch_size"];

/// A metric averaged per configuration: column name and table header (with unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Column of `runs.parquet`.
    pub column: &'static str,
    /// Header with its unit.
    pub header: &'static str,
}

/// Throughput and latency metrics, always shown.
pub const PERFORMANCE_METRICS: &[Metric] = &[
    Metric {
        column: "output_tokens_per_s",
        header: "output tokens/s",
    },
    Metric {
        column: "total_tokens_per_s",
        header: "total tokens/s",
    },
    Metric {
        column: "e2e_p50_s",
        header: "e2e p50 (s)",
    },
    Metric {
        column: "ttft_p50_s",
        header: "TTFT p50 (s)",
    },
    Metric {
        column: "tpot_p50_s",
        header: "TPOT p50 (s)",
    },
];

/// Energy per output token: shown always, as "not measured" when null.
pub const ENERGY_PER_TOKEN: Metric = Metric {
    column: "j_per_output_token",
    header: "energy (J/output token)",
};

/// Energy figures shown only when the study measured them.
pub const OPTIONAL_ENERGY_METRICS: &[Metric] = &[
    Metric {
        column: "energy_total_j",
        header: "energy (J)",
    },
    Metric {
        column: "co2e_g",
        header: "CO2e (g)",
    },
];

/// Device memory where the device's allocator reports it (wgpu, CUDA): shown when measured.
pub const OPTIONAL_DEVICE_METRICS: &[Metric] = &[Metric {
    column: "device_memory_peak_bytes",
    header: "device memory peak (bytes)",
}];

/// Mean KL divergence from the same model at f32, unquantized (`quality_ref`): the quality
/// axis of the quality-per-joule chart.
pub const QUALITY_KL: Metric = Metric {
    column: "quality_kl_mean_nats",
    header: "KL vs f32 (nats)",
};

/// Quality figures shown only when the study measured them.
pub const OPTIONAL_QUALITY_METRICS: &[Metric] = &[
    QUALITY_KL,
    Metric {
        column: "quality_top1_agreement_ratio",
        header: "top-1 agreement vs f32",
    },
    Metric {
        column: "quality_perplexity_run",
        header: "prompt perplexity",
    },
];

/// One configuration of the study and its per-cycle means.
#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    /// The run hash, or the joined configuration values when a file has no hash.
    pub key: String,
    /// Values of the shown configuration columns, in [`Study::config_columns`] order.
    pub values: Vec<String>,
    /// Label of the line this configuration belongs to in plots over batch size: every shown
    /// configuration value except the batch size.
    pub series: String,
    /// What sets this configuration apart: the values of the configuration columns that vary
    /// in the study (`decoding=sample b=4`), or the series label when nothing varies.
    pub label: String,
    /// Batch size, when known.
    pub batch_size: Option<i64>,
    /// Successful cycles.
    pub ok_cycles: usize,
    /// Failed cycles.
    pub failed_cycles: usize,
    /// Energy sources reported by the successful cycles (`nvml`, `rapl+estimate`, ...).
    pub energy_sources: Vec<String>,
    stats: BTreeMap<String, Stats>,
}

/// A column's values over a configuration's successful cycles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Lowest value.
    pub min: f64,
    /// Highest value.
    pub max: f64,
    /// Cycles with a value.
    pub n: usize,
}

impl Stats {
    /// Statistics of `values`; `None` for none.
    pub fn of(values: &[f64]) -> Option<Stats> {
        Some(Stats {
            mean: mean(values)?,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: values.len(),
        })
    }
}

impl Configuration {
    /// The mean of a column over the successful cycles that have a value; `None` when none has.
    pub fn mean(&self, column: &str) -> Option<f64> {
        self.stats.get(column).map(|s| s.mean)
    }

    /// Lowest and highest value of a column over the successful cycles, when at least two
    /// cycles have one (a single cycle has no spread to show).
    pub fn spread(&self, column: &str) -> Option<(f64, f64)> {
        self.stats
            .get(column)
            .filter(|s| s.n >= 2)
            .map(|s| (s.min, s.max))
    }
}

/// A failed execution, for the failure list.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRun {
    /// Configuration label (the shown configuration values).
    pub configuration: String,
    /// Repetition of the run.
    pub cycle: Option<i64>,
    /// Why it failed.
    pub error: String,
}

/// A study's configurations and failures.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    /// Configuration columns shown: the always-shown ones present in the file, plus any that
    /// vary between configurations.
    pub config_columns: Vec<&'static str>,
    /// Headers of `config_columns`.
    pub config_headers: Vec<&'static str>,
    /// Configurations, ordered by series then batch size.
    pub configurations: Vec<Configuration>,
    /// Failed executions in file order.
    pub failures: Vec<FailedRun>,
    /// Whether configurations differ in batch size (else plots over batch size say nothing).
    pub batch_varies: bool,
}

/// Columns whose mean is kept per configuration.
fn averaged_columns() -> impl Iterator<Item = &'static str> {
    PERFORMANCE_METRICS
        .iter()
        .chain(std::iter::once(&ENERGY_PER_TOKEN))
        .chain(OPTIONAL_ENERGY_METRICS)
        .chain(OPTIONAL_QUALITY_METRICS)
        .chain(OPTIONAL_DEVICE_METRICS)
        .map(|m| m.column)
}

/// Whether a configuration column has more than one value over the configurations.
fn varies(runs: &TableView, firsts: &[usize], column: &str) -> bool {
    let distinct: BTreeSet<String> = firsts
        .iter()
        .map(|&r| runs.get(r, column).display())
        .collect();
    distinct.len() > 1
}

/// Whether a row is a successful execution; a file without `status` holds only successes,
/// since failures are recorded with a status.
pub(super) fn is_ok(runs: &TableView, row: usize) -> bool {
    match runs.text(row, "status") {
        Some(s) => s == "ok",
        None => !runs.has_column("status"),
    }
}

/// The arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// Groups runs by configuration and averages each metric over successful cycles.
pub fn analyse(runs: &TableView) -> Study {
    let present: Vec<(&'static str, &'static str)> = CONFIG_COLUMNS
        .iter()
        .copied()
        .filter(|(c, _)| runs.has_column(c))
        .collect();
    let key_of = |row: usize| -> String {
        match runs.text(row, "run_hash") {
            Some(h) => h.to_string(),
            None => present
                .iter()
                .map(|(c, _)| runs.get(row, c).display())
                .collect::<Vec<_>>()
                .join("\u{1f}"),
        }
    };
    // Rows of each configuration, in first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut rows_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for row in 0..runs.len() {
        let key = key_of(row);
        if !rows_of.contains_key(&key) {
            order.push(key.clone());
        }
        rows_of.entry(key).or_default().push(row);
    }
    let firsts: Vec<usize> = order
        .iter()
        .filter_map(|k| rows_of.get(k).and_then(|r| r.first().copied()))
        .collect();
    let varying: Vec<(&'static str, &'static str)> = present
        .iter()
        .copied()
        .filter(|(c, _)| varies(runs, &firsts, c))
        .collect();
    let shown: Vec<(&'static str, &'static str)> = present
        .iter()
        .copied()
        .filter(|col| ALWAYS_SHOWN.contains(&col.0) || varying.contains(col))
        .collect();

    let mut configurations = Vec::new();
    for key in &order {
        // Every key in `order` has at least one row; the guards only avoid index panics.
        let Some(rows) = rows_of.get(key) else {
            continue;
        };
        let Some(&first) = rows.first() else {
            continue;
        };
        let values: Vec<String> = shown
            .iter()
            .map(|(c, _)| super::format::cell(runs.get(first, c)))
            .collect();
        let series = series_label(&shown, &values);
        let label = configuration_label(runs, first, &varying).unwrap_or_else(|| series.clone());
        let ok_rows: Vec<usize> = rows.iter().copied().filter(|&r| is_ok(runs, r)).collect();
        let mut stats = BTreeMap::new();
        for column in averaged_columns() {
            let values: Vec<f64> = ok_rows
                .iter()
                .filter_map(|&r| runs.float(r, column))
                .collect();
            if let Some(s) = Stats::of(&values) {
                stats.insert(column.to_string(), s);
            }
        }
        let energy_sources: BTreeSet<String> = ok_rows
            .iter()
            .filter_map(|&r| runs.text(r, "energy_total_source"))
            // `off`: no energy meter was asked for, which the missing figures already say.
            .filter(|s| *s != "off")
            .map(str::to_string)
            .collect();
        configurations.push(Configuration {
            key: key.clone(),
            values,
            series,
            label,
            batch_size: runs.int(first, "batch_size"),
            ok_cycles: ok_rows.len(),
            failed_cycles: rows.len() - ok_rows.len(),
            energy_sources: energy_sources.into_iter().collect(),
            stats,
        });
    }
    // Series in first-seen order, batch sizes ascending within a series.
    let series_rank: BTreeMap<String, usize> = {
        let mut rank = BTreeMap::new();
        for c in &configurations {
            let next = rank.len();
            rank.entry(c.series.clone()).or_insert(next);
        }
        rank
    };
    configurations.sort_by_key(|c| {
        (
            series_rank.get(&c.series).copied().unwrap_or(usize::MAX),
            c.batch_size,
        )
    });

    let failures = (0..runs.len())
        .filter(|&r| !is_ok(runs, r))
        .map(|r| FailedRun {
            configuration: shown
                .iter()
                .map(|(c, _)| runs.get(r, c).display())
                .collect::<Vec<_>>()
                .join(" "),
            cycle: runs.int(r, "cycle_id"),
            error: runs
                .text(r, "error")
                .unwrap_or("(no error recorded)")
                .to_string(),
        })
        .collect();

    Study {
        config_columns: shown.iter().map(|(c, _)| *c).collect(),
        config_headers: shown.iter().map(|(_, h)| *h).collect(),
        configurations,
        failures,
        batch_varies: varying.iter().any(|(c, _)| *c == "batch_size"),
    }
}

/// The values of the varying columns of a row, `None` when nothing varies. Null values are
/// left out (a greedy run has no temperature), and so is a quantization of `none`.
fn configuration_label(
    runs: &TableView,
    row: usize,
    varying: &[(&'static str, &'static str)],
) -> Option<String> {
    let parts: Vec<String> = varying
        .iter()
        .filter_map(|(column, _)| {
            let value = runs.get(row, column);
            if *value == Cell::Null {
                return None;
            }
            let value = super::format::cell(value);
            Some(match *column {
                "batch_size" => format!("b={value}"),
                "quantization" if value == "none" => return None,
                "model" | "dtype" | "quantization" => value,
                other => format!("{other}={value}"),
            })
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The label of a configuration without its batch size; a quantization of `none` is left out
/// because it is the common case and only clutters legends.
fn series_label(shown: &[(&'static str, &'static str)], values: &[String]) -> String {
    let mut parts = Vec::new();
    for ((column, _), value) in shown.iter().zip(values) {
        match *column {
            "batch_size" => {}
            "quantization" if value == "none" || value == "-" => {}
            // A null setting (a greedy run's temperature) says nothing about the line.
            _ if value == "-" => {}
            "model" | "dtype" | "quantization" => parts.push(value.clone()),
            other => parts.push(format!("{other}={value}")),
        }
    }
    if parts.is_empty() {
        "all runs".to_string()
    } else {
        parts.join(" ")
    }
}

/// The Pareto front of (throughput, latency) points: those no other point beats on one axis
/// without losing on the other (higher x and lower y are better). Sorted by x ascending;
/// non-finite points are ignored, duplicates kept once.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    // Highest throughput first; among equal throughput the lowest latency first, so one sweep
    // keeps each point whose latency beats every faster point's.
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    let mut best_latency = f64::INFINITY;
    for p in sorted {
        if p.1 < best_latency {
            best_latency = p.1;
            front.push(p);
        }
    }
    front.reverse();
    front
}

/// The Pareto front of points where lower is better on both axes (KL divergence and energy per
/// token): those no other point matches or beats on both axes while beating it on one. Sorted by
/// x ascending (so y descends); non-finite points are ignored, duplicates kept once. Of points
/// with equal x only the lowest y can be on the front, and of points with equal y only the
/// lowest x.
pub fn pareto_front_lower(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    // Lowest x first, and among equal x the lowest y first: a point is on the front exactly
    // when its y is strictly below that of every point before it.
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    let mut best_y = f64::INFINITY;
    for p in sorted {
        if p.1 < best_y {
            best_y = p.1;
            front.push(p);
        }
    }
    front
}

/// Whether any successful run has a value in `column`.
pub fn measured(runs: &TableView, column: &str) -> bool {
    (0..runs.len()).any(|r| is_ok(runs, r) && *runs.get(r, column) != Cell::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (run hash, model, batch size, cycle, status, output tokens/s, J/output token).
    type TestRun<'a> = (
        &'a str,
        &'a str,
        i64,
        i64,
        &'a str,
        Option<f64>,
        Option<f64>,
    );

    fn runs(rows: &[TestRun<'_>]) -> TableView {
        let columns = [
            "run_hash",
            "model",
            "batch_size",
            "cycle_id",
            "status",
            "output_tokens_per_s",
            "j_per_output_token",
            "dtype",
            "quantization",
            "error",
        ];
        TableView::new(
            columns.iter().map(|c| c.to_string()).collect(),
            rows.iter()
                .map(|(h, m, b, c, s, t, j)| {
                    vec![
                        Cell::from(*h),
                        Cell::from(*m),
                        Cell::Int(*b),
                        Cell::Int(*c),
                        Cell::from(*s),
                        Cell::from(*t),
                        Cell::from(*j),
                        Cell::from("f32"),
                        Cell::from("none"),
                        if *s == "ok" {
                            Cell::Null
                        } else {
                            Cell::from("out of memory")
                        },
                    ]
                })
                .collect(),
        )
    }

    #[test]
    fn pareto_front_keeps_undominated_points_sorted_by_throughput() {
        let points = [
            (10.0, 1.0),
            (20.0, 2.0),
            (15.0, 3.0), // dominated by (20, 2)
            (30.0, 2.0), // dominates (20, 2)
            (5.0, 0.5),
            (5.0, 0.7), // same throughput, slower
            (f64::NAN, 0.1),
        ];
        assert_eq!(
            pareto_front(&points),
            vec![(5.0, 0.5), (10.0, 1.0), (30.0, 2.0)]
        );
        assert!(pareto_front(&[]).is_empty());
        assert_eq!(pareto_front(&[(1.0, 1.0), (1.0, 1.0)]), vec![(1.0, 1.0)]);
    }

    #[test]
    fn lower_is_better_front_keeps_undominated_points_and_resolves_ties() {
        let points = [
            (0.0, 4.0),   // the f32 reference: KL 0, the most energy
            (0.001, 3.0), // bf16
            (0.001, 3.5), // same KL, more energy: dominated by (0.001, 3)
            (0.01, 3.0),  // same energy as (0.001, 3), worse KL: dominated
            (0.02, 1.0),  // int4: the cheapest
            (0.05, 2.0),  // worse on both than (0.02, 1)
            (0.02, 1.0),  // an exact duplicate: kept once
            (f64::INFINITY, 0.1),
            (0.5, f64::NAN),
        ];
        assert_eq!(
            pareto_front_lower(&points),
            vec![(0.0, 4.0), (0.001, 3.0), (0.02, 1.0)]
        );
        assert!(pareto_front_lower(&[]).is_empty());
        // One point dominating all others is the whole front.
        assert_eq!(
            pareto_front_lower(&[(1.0, 1.0), (2.0, 2.0), (1.0, 2.0), (2.0, 1.0)]),
            vec![(1.0, 1.0)]
        );
        // The opposite orientation of `pareto_front` (higher x better) gives another answer on
        // the same points, so the two cannot be swapped unnoticed.
        assert_eq!(
            pareto_front(&[(1.0, 1.0), (2.0, 2.0), (2.0, 1.0)]),
            vec![(2.0, 1.0)]
        );
        assert_eq!(
            pareto_front_lower(&[(1.0, 1.0), (2.0, 2.0), (2.0, 1.0)]),
            vec![(1.0, 1.0)]
        );
    }

    #[test]
    fn configurations_average_ok_cycles_and_list_failures() {
        let t = runs(&[
            ("aa", "m1", 1, 0, "ok", Some(10.0), None),
            ("bb", "m1", 4, 0, "ok", Some(30.0), None),
            ("aa", "m1", 1, 1, "ok", Some(20.0), None),
            ("bb", "m1", 4, 1, "failed", None, None),
            ("aa", "m1", 1, 2, "failed", Some(1000.0), None),
        ]);
        let study = analyse(&t);
        assert_eq!(
            study.config_columns,
            vec!["model", "dtype", "quantization", "batch_size"]
        );
        assert_eq!(study.configurations.len(), 2);
        let a = &study.configurations[0];
        assert_eq!(a.key, "aa");
        assert_eq!(a.mean("output_tokens_per_s"), Some(15.0));
        assert_eq!((a.ok_cycles, a.failed_cycles), (2, 1));
        assert_eq!(a.mean("j_per_output_token"), None);
        assert_eq!(a.series, "m1 f32");
        let b = &study.configurations[1];
        assert_eq!(b.mean("output_tokens_per_s"), Some(30.0));
        assert_eq!(b.batch_size, Some(4));
        assert_eq!(study.failures.len(), 2);
        assert_eq!(study.failures[0].cycle, Some(1));
        assert_eq!(study.failures[0].error, "out of memory");
        assert!(!measured(&t, "j_per_output_token"));
        assert!(measured(&t, "output_tokens_per_s"));
    }

    #[test]
    fn varying_columns_are_shown_and_split_series() {
        let t = runs(&[
            ("aa", "m1", 1, 0, "ok", Some(10.0), Some(0.5)),
            ("bb", "m2", 1, 0, "ok", Some(30.0), Some(0.25)),
        ]);
        let study = analyse(&t);
        let series: Vec<&str> = study
            .configurations
            .iter()
            .map(|c| c.series.as_str())
            .collect();
        assert_eq!(series, vec!["m1 f32", "m2 f32"]);
        assert_eq!(
            study.configurations[1].mean("j_per_output_token"),
            Some(0.25)
        );
        assert!(measured(&t, "j_per_output_token"));
    }

    #[test]
    fn spread_needs_two_cycles_and_ignores_failures() {
        let t = runs(&[
            ("aa", "m1", 1, 0, "ok", Some(10.0), None),
            ("aa", "m1", 1, 1, "ok", Some(30.0), None),
            ("aa", "m1", 1, 2, "failed", Some(1000.0), None),
            ("bb", "m1", 2, 0, "ok", Some(5.0), None),
        ]);
        let study = analyse(&t);
        let a = &study.configurations[0];
        assert_eq!(a.spread("output_tokens_per_s"), Some((10.0, 30.0)));
        assert_eq!(study.configurations[1].spread("output_tokens_per_s"), None);
        assert_eq!(a.spread("j_per_output_token"), None);
        assert!(study.batch_varies);
        // Only batch size varies: it is the label.
        assert_eq!(a.label, "b=1");
    }

    #[test]
    fn labels_name_what_varies_and_batch_may_be_constant() {
        let t = runs(&[
            ("aa", "m1", 4, 0, "ok", Some(10.0), None),
            ("bb", "m2", 4, 0, "ok", Some(30.0), None),
        ]);
        let study = analyse(&t);
        assert!(!study.batch_varies);
        let labels: Vec<&str> = study
            .configurations
            .iter()
            .map(|c| c.label.as_str())
            .collect();
        assert_eq!(labels, vec!["m1", "m2"]);
        // Nothing varies: the series label stands in.
        let t = runs(&[("aa", "m1", 4, 0, "ok", Some(10.0), None)]);
        assert_eq!(analyse(&t).configurations[0].label, "m1 f32");
    }

    #[test]
    fn a_table_without_hash_or_status_still_groups() {
        let t = TableView::new(
            vec!["model".into(), "output_tokens_per_s".into()],
            vec![
                vec![Cell::from("m"), Cell::Float(2.0)],
                vec![Cell::from("m"), Cell::Float(4.0)],
            ],
        );
        let study = analyse(&t);
        assert_eq!(study.configurations.len(), 1);
        assert_eq!(study.configurations[0].ok_cycles, 2);
        assert_eq!(
            study.configurations[0].mean("output_tokens_per_s"),
            Some(3.0)
        );
        assert!(study.failures.is_empty());
    }

    #[test]
    fn mean_of_nothing_is_none() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }
}
