//! Serving under load: a request-rate sweep's figures against the offered rate, one curve per
//! configuration, and where each configuration saturates.
//!
//! A curve is a configuration with what sets its request rate taken out: runs are grouped by
//! the report's configuration columns (as [`analysis`](super::analysis) groups runs without a
//! hash) except [`RATE_COLUMNS`], so continuous batching and fixed batches swept over the same
//! rates are two curves. Each point is one offered rate (`offered_rate_per_s`): the mean over
//! the successful cycles at that rate, their spread as error bars, as the rest of the report
//! averages cycles. A configuration run at a single rate has no curve; a study without a
//! configuration run at two rates has no serving section at all.

use std::collections::{BTreeMap, BTreeSet};

use super::analysis::{ALWAYS_SHOWN, CONFIG_COLUMNS, ENERGY_PER_TOKEN, Metric, Stats, is_ok};
use super::plot::{Chart, ErrorBar, Figure, Series, SeriesKind, XScale};
use super::view::TableView;
use super::{NOT_MEASURED, SPREAD_NOTE, TextTable, format};
use crate::row::Cell;

/// A configuration saturates at the lowest offered rate whose achieved request rate is below
/// this share of it: up to there it keeps up with its traffic, from there its queue grows.
/// A finite run's achieved rate also counts the tail after the last arrival (n requests over
/// their arrival span plus the last one's latency), so a short run at a high rate can fall
/// below the share before its queue grows; the requests chart's caption says so.
pub const SATURATION_SHARE: f64 = 0.9;

/// The offered request rate, the curves' x.
pub const OFFERED: &str = "offered_rate_per_s";

/// Columns that set a run's request rate, or only draw its arrivals (the seed): the curve's x,
/// never part of its configuration. Pattern and shape (`arrival`, `arrival_burstiness`,
/// `arrival_trace`) stay in it: Poisson and bursty traffic are two curves.
pub const RATE_COLUMNS: &[&str] = &[
    OFFERED,
    "arrival_rate_per_s",
    "arrival_interval_s",
    "arrival_burst",
    "arrival_off_s",
    "arrival_time_scale",
    "arrival_seed",
];

/// Configuration columns shown together as one `batching` column.
const BATCHING_COLUMNS: &[&str] = &[
    "batch_size",
    "token_budget",
    "serve_max_batch",
    "serve_max_batch_tokens",
    "serve_prefill",
];

/// Achieved request rate: what saturation is judged on.
pub const ACHIEVED: Metric = Metric {
    column: "requests_per_s",
    header: "achieved (requests/s)",
};

/// Requests meeting the SLO per second.
pub const GOODPUT: Metric = Metric {
    column: "goodput_requests_per_s",
    header: "goodput (requests/s)",
};

const THROUGHPUT: Metric = Metric {
    column: "output_tokens_per_s",
    header: "output tokens/s",
};

const TTFT_P50: Metric = Metric {
    column: "ttft_p50_s",
    header: "TTFT p50 (s)",
};

const TTFT_P99: Metric = Metric {
    column: "ttft_p99_s",
    header: "TTFT p99 (s)",
};

const TPOT_P50: Metric = Metric {
    column: "tpot_p50_s",
    header: "TPOT p50 (s)",
};

const TPOT_P99: Metric = Metric {
    column: "tpot_p99_s",
    header: "TPOT p99 (s)",
};

/// Energy figures of the curve table shown only when some point has them.
const OPTIONAL_ENERGY: &[Metric] = &[
    Metric {
        column: "energy_per_request_j",
        header: "energy (J/request)",
    },
    Metric {
        column: "energy_idle_ratio",
        header: "idle energy share",
    },
];

/// Columns averaged per point.
fn averaged_columns() -> impl Iterator<Item = &'static str> {
    [
        ACHIEVED,
        GOODPUT,
        THROUGHPUT,
        TTFT_P50,
        TTFT_P99,
        TPOT_P50,
        TPOT_P99,
        ENERGY_PER_TOKEN,
    ]
    .into_iter()
    .chain(OPTIONAL_ENERGY.iter().copied())
    .map(|m| m.column)
}

/// One offered rate of a curve and the means over its successful cycles.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// Offered request rate (requests/s).
    pub offered_rate_per_s: f64,
    /// Successful cycles at this rate.
    pub cycles: usize,
    stats: BTreeMap<&'static str, Stats>,
}

impl CurvePoint {
    /// The mean of a column over the cycles that have a value.
    pub fn mean(&self, column: &str) -> Option<f64> {
        self.stats.get(column).map(|s| s.mean)
    }

    /// Lowest and highest value of a column, when at least two cycles have one.
    pub fn spread(&self, column: &str) -> Option<(f64, f64)> {
        self.stats
            .get(column)
            .filter(|s| s.n >= 2)
            .map(|s| (s.min, s.max))
    }
}

/// Where a configuration stops keeping up with its traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Saturation {
    /// The lowest offered rate whose achieved request rate is below [`SATURATION_SHARE`] of it.
    At {
        /// Offered rate (requests/s).
        offered: f64,
        /// Achieved rate there (requests/s).
        achieved: f64,
    },
    /// Every rate with an achieved figure kept up, the highest being `highest`.
    NotReached {
        /// Highest offered rate measured (requests/s).
        highest: f64,
    },
    /// No point has an achieved request rate.
    Unknown,
}

/// One configuration over the offered rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Values of [`RateSweep::columns`], then the batching (see [`batching`]).
    pub values: Vec<String>,
    /// Legend name: what sets the curve apart from the others.
    pub label: String,
    /// The SLO the runs set (TTFT and TPOT targets in seconds, either possibly absent);
    /// `None` without one, so goodput has no meaning.
    pub slo: Option<(Option<f64>, Option<f64>)>,
    /// Points by ascending offered rate.
    pub points: Vec<CurvePoint>,
}

impl Curve {
    /// The saturation point: the first offered rate, ascending, whose mean achieved request
    /// rate is below [`SATURATION_SHARE`] of it.
    pub fn saturation(&self) -> Saturation {
        let mut highest = None;
        for p in &self.points {
            let Some(achieved) = p.mean(ACHIEVED.column) else {
                continue;
            };
            if achieved < SATURATION_SHARE * p.offered_rate_per_s {
                return Saturation::At {
                    offered: p.offered_rate_per_s,
                    achieved,
                };
            }
            highest = Some(p.offered_rate_per_s);
        }
        highest.map_or(Saturation::Unknown, |highest| Saturation::NotReached {
            highest,
        })
    }

    /// The highest mean goodput and the offered rate it was reached at (the lowest such rate
    /// on a tie).
    pub fn max_goodput(&self) -> Option<(f64, f64)> {
        self.points
            .iter()
            .filter_map(|p| Some((p.mean(GOODPUT.column)?, p.offered_rate_per_s)))
            .fold(None, |best, (g, rate)| match best {
                Some((b, _)) if b >= g => best,
                _ => Some((g, rate)),
            })
    }

    /// The point at an offered rate.
    fn at(&self, offered: f64) -> Option<&CurvePoint> {
        self.points.iter().find(|p| p.offered_rate_per_s == offered)
    }
}

/// The curves of a study's request-rate sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSweep {
    /// Configuration columns shown per curve: the always-shown ones and those that differ
    /// between curves, rate and batching columns left out.
    pub columns: Vec<&'static str>,
    /// Headers of `columns`, then `batching`.
    pub headers: Vec<String>,
    /// Curves in the runs table's order.
    pub curves: Vec<Curve>,
    /// Configurations run at a single offered rate, which have no curve.
    pub single_rate: usize,
}

/// How a run batches its requests: `continuous max_batch=8 max_batch_tokens=512
/// prefill=whole` (the `serve` settings), or `fixed batch_size=8` (with its token budget).
pub fn batching(runs: &TableView, row: usize) -> String {
    let mut out = match runs.int(row, "serve_max_batch") {
        Some(n) => format!("continuous max_batch={n}"),
        None => match runs.int(row, "batch_size") {
            Some(b) => format!("fixed batch_size={b}"),
            None => "fixed".to_string(),
        },
    };
    let extra: &[(&str, &str)] = if runs.int(row, "serve_max_batch").is_some() {
        &[
            ("serve_max_batch_tokens", "max_batch_tokens"),
            ("serve_prefill", "prefill"),
        ]
    } else {
        &[("token_budget", "token_budget")]
    };
    for (column, name) in extra {
        let value = runs.get(row, column);
        if *value != Cell::Null {
            out.push_str(&format!(" {name}={}", format::cell(value)));
        }
    }
    out
}

/// The curves of the runs' request-rate sweep; `None` when no configuration ran at two or
/// more offered rates.
pub fn rate_sweep(runs: &TableView) -> Option<RateSweep> {
    if !runs.has_column(OFFERED) {
        return None;
    }
    let identity: Vec<(&'static str, &'static str)> = CONFIG_COLUMNS
        .iter()
        .copied()
        .filter(|(c, _)| runs.has_column(c) && !RATE_COLUMNS.contains(c))
        .collect();
    let key_of = |row: usize| -> String {
        identity
            .iter()
            .map(|(c, _)| runs.get(row, c).display())
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    // Successful rows with an offered rate, per configuration, in first-seen order.
    let mut order: Vec<String> = Vec::new();
    let mut rows_of: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for row in 0..runs.len() {
        if !is_ok(runs, row) || runs.float(row, OFFERED).is_none() {
            continue;
        }
        let key = key_of(row);
        if !rows_of.contains_key(&key) {
            order.push(key.clone());
        }
        rows_of.entry(key).or_default().push(row);
    }
    let mut groups: Vec<(usize, Vec<CurvePoint>)> = Vec::new();
    let mut single_rate = 0;
    for key in &order {
        let Some(rows) = rows_of.get(key) else {
            continue;
        };
        let Some(&first) = rows.first() else {
            continue;
        };
        let points = points(runs, rows);
        if points.len() >= 2 {
            groups.push((first, points));
        } else {
            single_rate += 1;
        }
    }
    if groups.is_empty() {
        return None;
    }
    let firsts: Vec<usize> = groups.iter().map(|(first, _)| *first).collect();
    let varies = |column: &str| {
        firsts
            .iter()
            .map(|&r| runs.get(r, column).display())
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    };
    let shown: Vec<(&'static str, &'static str)> = identity
        .iter()
        .copied()
        .filter(|(c, _)| !BATCHING_COLUMNS.contains(c))
        .filter(|(c, _)| ALWAYS_SHOWN.contains(c) || varies(c))
        .collect();
    let batching_varies = firsts
        .iter()
        .map(|&r| batching(runs, r))
        .collect::<BTreeSet<_>>()
        .len()
        > 1;
    let curves = groups
        .into_iter()
        .map(|(first, points)| {
            let mut values: Vec<String> = shown
                .iter()
                .map(|(c, _)| format::cell(runs.get(first, c)))
                .collect();
            let batching = batching(runs, first);
            values.push(batching.clone());
            let mut parts: Vec<String> = shown
                .iter()
                .filter(|(c, _)| varies(c))
                .filter_map(|(c, _)| label_part(runs, first, c))
                .collect();
            if batching_varies || parts.is_empty() {
                parts.push(batching);
            }
            let (ttft, tpot) = (
                runs.float(first, "slo_ttft_s"),
                runs.float(first, "slo_tpot_s"),
            );
            Curve {
                values,
                label: parts.join(" "),
                slo: (ttft.is_some() || tpot.is_some()).then_some((ttft, tpot)),
                points,
            }
        })
        .collect();
    Some(RateSweep {
        columns: shown.iter().map(|(c, _)| *c).collect(),
        headers: shown
            .iter()
            .map(|(_, h)| (*h).to_string())
            .chain(std::iter::once("batching".to_string()))
            .collect(),
        curves,
        single_rate,
    })
}

/// A configuration value as a legend shows it (the report's labels: model, dtype and
/// quantization bare, the rest `column=value`); `None` for a null and a quantization of `none`.
fn label_part(runs: &TableView, row: usize, column: &str) -> Option<String> {
    let value = runs.get(row, column);
    if *value == Cell::Null {
        return None;
    }
    let value = format::cell(value);
    match column {
        "quantization" if value == "none" => None,
        "model" | "dtype" | "quantization" => Some(value),
        other => Some(format!("{other}={value}")),
    }
}

/// The points of one configuration's successful rows, by ascending offered rate.
fn points(runs: &TableView, rows: &[usize]) -> Vec<CurvePoint> {
    let mut by_rate: Vec<(f64, Vec<usize>)> = Vec::new();
    for &row in rows {
        let Some(rate) = runs.float(row, OFFERED) else {
            continue;
        };
        match by_rate.iter_mut().find(|(r, _)| *r == rate) {
            Some((_, rows)) => rows.push(row),
            None => by_rate.push((rate, vec![row])),
        }
    }
    by_rate.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_rate
        .into_iter()
        .map(|(rate, rows)| {
            let stats = averaged_columns()
                .filter_map(|column| {
                    let values: Vec<f64> =
                        rows.iter().filter_map(|&r| runs.float(r, column)).collect();
                    Some((column, Stats::of(&values)?))
                })
                .collect();
            CurvePoint {
                offered_rate_per_s: rate,
                cycles: rows.len(),
                stats,
            }
        })
        .collect()
}

/// What the saturation marker means, for titles and captions.
fn saturation_definition() -> String {
    format!(
        "the lowest offered rate at which the achieved request rate (requests_per_s) falls below {}% of the offered rate",
        format::number(SATURATION_SHARE * 100.0)
    )
}

/// The saturation table: per configuration, the swept rates, the saturation point and the
/// highest goodput.
pub fn saturation_table(sweep: &RateSweep) -> TextTable {
    let mut header = sweep.headers.clone();
    header.extend(
        [
            "offered rates (/s)",
            "saturation (offered requests/s)",
            "achieved there (requests/s)",
            "max goodput (requests/s)",
            "max goodput at (offered requests/s)",
        ]
        .map(String::from),
    );
    let rows = sweep
        .curves
        .iter()
        .map(|c| {
            let mut row = c.values.clone();
            row.push(
                c.points
                    .iter()
                    .map(|p| format::number(p.offered_rate_per_s))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            match c.saturation() {
                Saturation::At { offered, achieved } => {
                    row.push(format::number(offered));
                    row.push(format::number(achieved));
                }
                Saturation::NotReached { highest } => {
                    row.push(format!("not reached up to {}/s", format::number(highest)));
                    row.push("-".into());
                }
                Saturation::Unknown => {
                    row.push(format!("{NOT_MEASURED} (no requests_per_s)"));
                    row.push("-".into());
                }
            }
            match (c.max_goodput(), c.slo) {
                (Some((goodput, at)), _) => {
                    row.push(format::number(goodput));
                    row.push(format::number(at));
                }
                (None, None) => {
                    row.push("no SLO".into());
                    row.push("-".into());
                }
                (None, Some(_)) => {
                    row.push(NOT_MEASURED.into());
                    row.push("-".into());
                }
            }
            row
        })
        .collect();
    TextTable {
        title: format!(
            "Serving under load: saturation ({})",
            saturation_definition()
        ),
        key_columns: sweep.headers.len(),
        header,
        rows,
    }
}

/// The curves' numbers: per configuration and offered rate, the means over its successful
/// cycles.
pub fn curve_table(sweep: &RateSweep) -> TextTable {
    let has = |column: &str| {
        sweep
            .curves
            .iter()
            .flat_map(|c| &c.points)
            .any(|p| p.mean(column).is_some())
    };
    let optional: Vec<Metric> = OPTIONAL_ENERGY
        .iter()
        .copied()
        .filter(|m| has(m.column))
        .collect();
    let mut header = sweep.headers.clone();
    header.push("offered (requests/s)".into());
    header.push("cycles".into());
    header.extend(
        [
            ACHIEVED,
            THROUGHPUT,
            TTFT_P99,
            TPOT_P99,
            GOODPUT,
            ENERGY_PER_TOKEN,
        ]
        .iter()
        .chain(&optional)
        .map(|m| m.header.to_string()),
    );
    let mut rows = Vec::new();
    for c in &sweep.curves {
        for p in &c.points {
            let mut row = c.values.clone();
            row.push(format::number(p.offered_rate_per_s));
            row.push(p.cycles.to_string());
            row.extend(
                [ACHIEVED, THROUGHPUT, TTFT_P99, TPOT_P99]
                    .iter()
                    .map(|m| format::optional(p.mean(m.column))),
            );
            row.push(match (p.mean(GOODPUT.column), c.slo) {
                (Some(g), _) => format::number(g),
                (None, None) => "no SLO".into(),
                (None, Some(_)) => "-".into(),
            });
            row.push(
                p.mean(ENERGY_PER_TOKEN.column)
                    .map_or_else(|| NOT_MEASURED.to_string(), format::number),
            );
            row.extend(optional.iter().map(|m| format::optional(p.mean(m.column))));
            rows.push(row);
        }
    }
    TextTable {
        title: "Serving under load: figures by offered rate (means over successful cycles)".into(),
        key_columns: sweep.headers.len() + 1,
        header,
        rows,
    }
}

/// A chart of the section: its file stem, the figure and its caption.
pub type SectionChart = (&'static str, Figure, String);

/// The section's charts, and notes on those not drawn. `estimates` is the caption sentence
/// saying energy includes estimates, when it does.
pub fn charts(sweep: &RateSweep, estimates: Option<&str>) -> (Vec<SectionChart>, Vec<String>) {
    let rates: Vec<f64> = sweep
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.offered_rate_per_s))
        .collect();
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Rates are usually swept in multiples; a log axis keeps them evenly spaced.
    let x_scale = if lo > 0.0 && hi / lo >= 8.0 {
        XScale::Log2
    } else {
        XScale::Linear
    };
    let axes = Axes { x_scale, lo, hi };
    let common = format!(
        "One line per configuration over the offered rates{}; each point is the mean over the successful cycles at that rate. {SPREAD_NOTE} A black ring marks a configuration's saturation point: {}.",
        if x_scale == XScale::Log2 {
            ", on a log axis"
        } else {
            ""
        },
        saturation_definition()
    );
    let mut charts = Vec::new();
    let mut notes = Vec::new();
    let latencies = [
        (
            "serving_ttft_p50",
            TTFT_P50,
            "TTFT p50",
            "median time to first token, from arrival (queueing included)",
        ),
        (
            "serving_ttft_p99",
            TTFT_P99,
            "TTFT p99",
            "99th-percentile time to first token, from arrival (queueing included)",
        ),
        (
            "serving_tpot_p50",
            TPOT_P50,
            "TPOT p50",
            "median time per output token after the first",
        ),
        (
            "serving_tpot_p99",
            TPOT_P99,
            "TPOT p99",
            "99th-percentile time per output token after the first",
        ),
    ];
    for (stem, metric, name, what) in latencies {
        match axes.chart(
            sweep,
            metric.column,
            1000.0,
            &format!("{name} vs offered rate"),
            &format!("{name} (ms)"),
        ) {
            Some(c) => charts.push((
                stem,
                Figure::Xy(c),
                format!("The {what}, against the offered request rate. {common}"),
            )),
            None => notes.push(format!(
                "serving: {name} against offered rate not drawn: no {} at the swept rates",
                metric.column
            )),
        }
    }
    if let Some(mut c) = axes.chart(
        sweep,
        ACHIEVED.column,
        1.0,
        "Achieved vs offered request rate",
        "achieved request rate (requests/s)",
    ) {
        c.series.push(axes.line("ideal: achieved = offered", 1.0));
        c.series.push(axes.line(
            &format!(
                "saturation threshold: {}% of offered",
                format::number(SATURATION_SHARE * 100.0)
            ),
            SATURATION_SHARE,
        ));
        charts.push((
            "serving_requests",
            Figure::Xy(c),
            format!(
                "Requests completed per second (requests_per_s: requests / wall time) against the offered rate. The dashed line is the ideal, every request served as it is offered; the dotted line is {}% of it, the saturation threshold. A run's wall time also holds the tail after its last arrival, so a run of few requests at a high rate reads below the offered rate even when it keeps up. {common}",
                format::number(SATURATION_SHARE * 100.0)
            ),
        ));
    }
    if sweep.curves.iter().all(|c| c.slo.is_none()) {
        notes.push(
            "serving: goodput against offered rate not drawn: no run of the rate sweep set an SLO (`slo: #{ ttft_s, tpot_s }`)".to_string(),
        );
    } else if let Some(mut c) = axes.chart(
        sweep,
        GOODPUT.column,
        1.0,
        "Goodput vs offered rate",
        "goodput (requests/s meeting the SLO)",
    ) {
        c.series.push(axes.line("ideal: goodput = offered", 1.0));
        let slos: BTreeSet<String> = sweep
            .curves
            .iter()
            .filter_map(|c| c.slo)
            .map(|(ttft, tpot)| {
                let mut parts = Vec::new();
                if let Some(t) = ttft {
                    parts.push(format!("TTFT ≤ {} s", format::number(t)));
                }
                if let Some(t) = tpot {
                    parts.push(format!("TPOT ≤ {} s", format::number(t)));
                }
                parts.join(" and ")
            })
            .collect();
        charts.push((
            "serving_goodput",
            Figure::Xy(c),
            format!(
                "Requests per second meeting every SLO target (vLLM's goodput; SLO: {}), against the offered rate, for the configurations that set an SLO. Goodput never exceeds the offered rate: the dashed line. {common}",
                slos.into_iter().collect::<Vec<_>>().join("; ")
            ),
        ));
    }
    if let Some(c) = axes.chart(
        sweep,
        THROUGHPUT.column,
        1.0,
        "Throughput vs offered rate",
        "throughput (output tokens/s)",
    ) {
        charts.push((
            "serving_throughput",
            Figure::Xy(c),
            format!("Output tokens per second against the offered request rate. {common}"),
        ));
    }
    let estimated = estimates.is_some();
    match axes.chart(
        sweep,
        ENERGY_PER_TOKEN.column,
        1.0,
        if estimated {
            "Energy per output token vs offered rate (includes estimates)"
        } else {
            "Energy per output token vs offered rate"
        },
        "energy per output token (J)",
    ) {
        Some(c) => charts.push((
            "serving_energy",
            Figure::Xy(c),
            format!(
                "Mean energy per output token against the offered request rate; lower is better. The run's whole window counts, its gaps with no request in flight included, so at low rates the figure includes the machine waiting for requests.{} {common}",
                estimates.unwrap_or("")
            ),
        )),
        None => notes.push(format!(
            "serving: energy per output token against offered rate not drawn: energy {NOT_MEASURED} in this study (no {} values at the swept rates)",
            ENERGY_PER_TOKEN.column
        )),
    }
    if sweep.single_rate > 0 {
        notes.push(format!(
            "serving: {} configuration{} ran at a single offered rate and {} no curve",
            sweep.single_rate,
            if sweep.single_rate == 1 { "" } else { "s" },
            if sweep.single_rate == 1 {
                "has"
            } else {
                "have"
            }
        ));
    }
    (charts, notes)
}

/// The x axis shared by the section's charts.
struct Axes {
    x_scale: XScale,
    lo: f64,
    hi: f64,
}

impl Axes {
    /// `column` times `scale` against the offered rate, one series per curve (a curve without
    /// values keeps an empty series, so each configuration has the same colour in every
    /// chart), and the saturation points ringed; `None` when no curve has a value.
    fn chart(
        &self,
        sweep: &RateSweep,
        column: &str,
        scale: f64,
        title: &str,
        y_label: &str,
    ) -> Option<Chart> {
        let mut series: Vec<Series> = sweep
            .curves
            .iter()
            .map(|c| {
                let (points, errors) = c
                    .points
                    .iter()
                    .filter_map(|p| {
                        Some((
                            (p.offered_rate_per_s, p.mean(column)? * scale),
                            ErrorBar {
                                x: None,
                                y: p.spread(column).map(|(lo, hi)| (lo * scale, hi * scale)),
                            },
                        ))
                    })
                    .unzip();
                Series {
                    name: c.label.clone(),
                    points,
                    labels: Vec::new(),
                    errors,
                    kind: SeriesKind::LineMarkers,
                }
            })
            .collect();
        if series.iter().all(|s| s.points.is_empty()) {
            return None;
        }
        let ringed: Vec<(f64, f64)> = sweep
            .curves
            .iter()
            .filter_map(|c| match c.saturation() {
                Saturation::At { offered, .. } => {
                    Some((offered, c.at(offered)?.mean(column)? * scale))
                }
                _ => None,
            })
            .collect();
        if !ringed.is_empty() {
            series.push(Series {
                name: format!(
                    "saturation point (achieved below {}% of offered)",
                    format::number(SATURATION_SHARE * 100.0)
                ),
                points: ringed,
                labels: Vec::new(),
                errors: Vec::new(),
                kind: SeriesKind::Highlight,
            });
        }
        Some(Chart {
            title: title.into(),
            x_label: if self.x_scale == XScale::Log2 {
                "offered rate (requests/s, log scale)".into()
            } else {
                "offered rate (requests/s)".into()
            },
            y_label: y_label.into(),
            x_scale: self.x_scale,
            series,
        })
    }

    /// The reference line y = `share` × offered rate over the swept rates; points spaced
    /// evenly along the axis, so it is smooth on a log axis too.
    fn line(&self, name: &str, share: f64) -> Series {
        const STEPS: usize = 32;
        let points = (0..=STEPS)
            .map(|i| {
                let t = i as f64 / STEPS as f64;
                let x = match self.x_scale {
                    // The ends exactly, not as exp2(log2(x)) gives them back.
                    _ if i == 0 => self.lo,
                    _ if i == STEPS => self.hi,
                    XScale::Log2 => {
                        let (lo, hi) = (self.lo.log2(), self.hi.log2());
                        (lo + t * (hi - lo)).exp2()
                    }
                    XScale::Linear | XScale::Integer => self.lo + t * (self.hi - self.lo),
                };
                (x, share * x)
            })
            .collect();
        Series {
            name: name.into(),
            points,
            labels: Vec::new(),
            errors: Vec::new(),
            kind: SeriesKind::Reference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One execution of a sweep: continuous batching (`served`) or fixed batches of 8.
    #[derive(Clone, Copy)]
    struct Run {
        served: bool,
        rate: f64,
        cycle: i64,
        ok: bool,
        achieved: f64,
        goodput: f64,
        tokens_per_s: f64,
        ttft_p99_s: f64,
        j_per_token: Option<f64>,
    }

    const COLUMNS: &[&str] = &[
        "run_hash",
        "cycle_id",
        "status",
        "model",
        "dtype",
        "quantization",
        "batch_size",
        "serve_max_batch",
        "serve_max_batch_tokens",
        "serve_prefill",
        "arrival",
        "arrival_rate_per_s",
        "arrival_seed",
        "offered_rate_per_s",
        "slo_ttft_s",
        "slo_tpot_s",
        "requests_per_s",
        "goodput_requests_per_s",
        "output_tokens_per_s",
        "ttft_p50_s",
        "ttft_p99_s",
        "tpot_p50_s",
        "tpot_p99_s",
        "j_per_output_token",
    ];

    fn table(runs: &[Run]) -> TableView {
        let rows = runs
            .iter()
            .map(|r| {
                let hash = format!("{}{}", if r.served { "s" } else { "f" }, r.rate);
                vec![
                    Cell::from(hash.as_str()),
                    Cell::Int(r.cycle),
                    Cell::from(if r.ok { "ok" } else { "failed" }),
                    Cell::from("tiny-stories"),
                    Cell::from("f32"),
                    Cell::from("none"),
                    Cell::Int(if r.served { 1 } else { 8 }),
                    if r.served { Cell::Int(8) } else { Cell::Null },
                    if r.served { Cell::Int(512) } else { Cell::Null },
                    if r.served {
                        Cell::from("whole")
                    } else {
                        Cell::Null
                    },
                    Cell::from("poisson"),
                    Cell::Float(r.rate),
                    Cell::Int(7),
                    Cell::Float(r.rate),
                    Cell::Float(0.05),
                    Cell::Float(0.004),
                    Cell::Float(r.achieved),
                    Cell::Float(r.goodput),
                    Cell::Float(r.tokens_per_s),
                    Cell::Float(r.ttft_p99_s / 2.0),
                    Cell::Float(r.ttft_p99_s),
                    Cell::Float(0.002),
                    Cell::Float(0.003),
                    Cell::from(r.j_per_token),
                ]
            })
            .collect();
        TableView::new(COLUMNS.iter().map(|c| c.to_string()).collect(), rows)
    }

    fn run(served: bool, rate: f64, achieved: f64, goodput: f64, tokens_per_s: f64) -> Run {
        Run {
            served,
            rate,
            cycle: 0,
            ok: true,
            achieved,
            goodput,
            tokens_per_s,
            ttft_p99_s: 0.01 * rate.sqrt(),
            j_per_token: Some(10.0 / rate.sqrt()),
        }
    }

    /// Continuous batching keeps up at 50, 100, 200 and 400/s; fixed batches of 8 fall to
    /// 150 of 200/s (75%), so saturate at 200/s. Continuous at 100/s has two ok cycles and a
    /// failed one.
    fn sweep_runs() -> Vec<Run> {
        let mut runs = vec![
            run(true, 50.0, 49.0, 48.0, 1500.0),
            Run {
                cycle: 0,
                ..run(true, 100.0, 97.0, 95.0, 3000.0)
            },
            Run {
                cycle: 1,
                ..run(true, 100.0, 99.0, 93.0, 3200.0)
            },
            Run {
                cycle: 2,
                ok: false,
                ..run(true, 100.0, 1.0, 1.0, 1.0)
            },
            run(true, 200.0, 196.0, 180.0, 6000.0),
            run(true, 400.0, 380.0, 300.0, 11000.0),
        ];
        for (rate, achieved, goodput, tokens) in [
            (50.0, 49.5, 45.0, 1400.0),
            (100.0, 98.0, 80.0, 2900.0),
            (200.0, 150.0, 60.0, 4500.0),
            (400.0, 160.0, 20.0, 4800.0),
        ] {
            runs.push(run(false, rate, achieved, goodput, tokens));
        }
        runs
    }

    #[test]
    fn two_configurations_over_four_rates_make_two_curves() {
        let sweep = rate_sweep(&table(&sweep_runs())).unwrap();
        assert_eq!(sweep.single_rate, 0);
        assert_eq!(sweep.columns, vec!["model", "dtype", "quantization"]);
        assert_eq!(
            sweep.headers,
            vec!["model", "dtype", "quantization", "batching"]
        );
        let labels: Vec<&str> = sweep.curves.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "continuous max_batch=8 max_batch_tokens=512 prefill=whole",
                "fixed batch_size=8"
            ]
        );
        let served = &sweep.curves[0];
        assert_eq!(
            served.values,
            vec![
                "tiny-stories",
                "f32",
                "none",
                "continuous max_batch=8 max_batch_tokens=512 prefill=whole"
            ]
        );
        let rates: Vec<f64> = served.points.iter().map(|p| p.offered_rate_per_s).collect();
        assert_eq!(rates, vec![50.0, 100.0, 200.0, 400.0]);
        // Two ok cycles at 100/s averaged, the failed one left out.
        let at_100 = &served.points[1];
        assert_eq!(at_100.cycles, 2);
        assert_eq!(at_100.mean("output_tokens_per_s"), Some(3100.0));
        assert_eq!(at_100.mean("requests_per_s"), Some(98.0));
        assert_eq!(at_100.spread("goodput_requests_per_s"), Some((93.0, 95.0)));
        assert_eq!(served.points[0].spread("goodput_requests_per_s"), None);
        assert_eq!(served.points[3].mean("ttft_p99_s"), Some(0.2));
        assert_eq!(served.slo, Some((Some(0.05), Some(0.004))));
        let fixed = &sweep.curves[1];
        assert_eq!(fixed.points.len(), 4);
        assert_eq!(fixed.points[2].mean("output_tokens_per_s"), Some(4500.0));
    }

    #[test]
    fn saturation_is_the_lowest_rate_achieving_under_ninety_percent() {
        let sweep = rate_sweep(&table(&sweep_runs())).unwrap();
        // 380 of 400/s is 95%: continuous batching keeps up throughout.
        assert_eq!(
            sweep.curves[0].saturation(),
            Saturation::NotReached { highest: 400.0 }
        );
        // 150 of 200/s is 75%, below 90%; 400/s is worse, but 200/s comes first.
        assert_eq!(
            sweep.curves[1].saturation(),
            Saturation::At {
                offered: 200.0,
                achieved: 150.0
            }
        );
        assert_eq!(sweep.curves[0].max_goodput(), Some((300.0, 400.0)));
        assert_eq!(sweep.curves[1].max_goodput(), Some((80.0, 100.0)));
        // Exactly 90% still keeps up.
        let edge = table(&[
            run(false, 10.0, 9.0, 9.0, 1.0),
            run(false, 20.0, 17.99, 9.0, 1.0),
        ]);
        assert_eq!(
            rate_sweep(&edge).unwrap().curves[0].saturation(),
            Saturation::At {
                offered: 20.0,
                achieved: 17.99
            }
        );

        let t = saturation_table(&sweep);
        assert!(
            t.title.contains("below 90% of the offered rate"),
            "{}",
            t.title
        );
        assert_eq!(t.key_columns, 4);
        assert_eq!(
            t.rows[0][4..],
            [
                "50, 100, 200, 400",
                "not reached up to 400/s",
                "-",
                "300",
                "400"
            ]
        );
        assert_eq!(
            t.rows[1][4..],
            ["50, 100, 200, 400", "200", "150", "80", "100"]
        );
    }

    #[test]
    fn the_curve_table_lists_every_point() {
        let sweep = rate_sweep(&table(&sweep_runs())).unwrap();
        let t = curve_table(&sweep);
        assert_eq!(t.rows.len(), 8);
        assert_eq!(t.key_columns, 5);
        let col = |name: &str| t.header.iter().position(|h| h == name).unwrap();
        let row = &t.rows[1];
        assert_eq!(row[col("offered (requests/s)")], "100");
        assert_eq!(row[col("cycles")], "2");
        assert_eq!(row[col("output tokens/s")], "3100");
        assert_eq!(row[col("TTFT p99 (s)")], "0.1");
        assert_eq!(row[col("TPOT p99 (s)")], "0.003");
        assert_eq!(row[col("goodput (requests/s)")], "94");
        assert_eq!(row[col("energy (J/output token)")], "1");
        // Energy per request and idle share were not in the table: no columns for them.
        assert!(!t.header.iter().any(|h| h == "energy (J/request)"));
    }

    #[test]
    fn a_single_rate_has_no_section() {
        let runs = sweep_runs();
        let at_100: Vec<Run> = runs.iter().copied().filter(|r| r.rate == 100.0).collect();
        assert_eq!(rate_sweep(&table(&at_100)), None);
        // Two rates only in failed cycles are no sweep either.
        let mut failed = at_100.clone();
        failed.push(Run {
            ok: false,
            ..run(true, 400.0, 1.0, 1.0, 1.0)
        });
        assert_eq!(rate_sweep(&table(&failed)), None);
        // No offered rate column at all (a study from before serving).
        let t = TableView::new(
            vec!["run_hash".into(), "requests_per_s".into()],
            vec![vec![Cell::from("a"), Cell::Float(1.0)]],
        );
        assert_eq!(rate_sweep(&t), None);
        // One configuration swept, the other at one rate: one curve, and a note about the other.
        let mut mixed: Vec<Run> = runs.iter().copied().filter(|r| r.served).collect();
        mixed.push(run(false, 100.0, 98.0, 80.0, 2900.0));
        let sweep = rate_sweep(&table(&mixed)).unwrap();
        assert_eq!(sweep.curves.len(), 1);
        assert_eq!(sweep.single_rate, 1);
        let (_, notes) = charts(&sweep, None);
        assert!(
            notes
                .iter()
                .any(|n| n
                    == "serving: 1 configuration ran at a single offered rate and has no curve"),
            "{notes:?}"
        );
    }

    #[test]
    fn charts_mark_saturation_and_draw_the_ideal() {
        let sweep = rate_sweep(&table(&sweep_runs())).unwrap();
        let (charts, notes) = charts(&sweep, None);
        assert!(notes.is_empty(), "{notes:?}");
        let stems: Vec<&str> = charts.iter().map(|c| c.0).collect();
        assert_eq!(
            stems,
            vec![
                "serving_ttft_p50",
                "serving_ttft_p99",
                "serving_tpot_p50",
                "serving_tpot_p99",
                "serving_requests",
                "serving_goodput",
                "serving_throughput",
                "serving_energy"
            ]
        );
        let xy = |stem: &str| match charts.iter().find(|c| c.0 == stem) {
            Some((_, Figure::Xy(c), caption)) => (c.clone(), caption.clone()),
            _ => panic!("no {stem}"),
        };
        let (goodput, caption) = xy("serving_goodput");
        assert!(
            caption.contains("TTFT ≤ 0.05 s and TPOT ≤ 0.004 s"),
            "{caption}"
        );
        assert!(
            caption.contains("below 90% of the offered rate"),
            "{caption}"
        );
        // Rates 50..400: a log axis.
        assert_eq!(goodput.x_scale, XScale::Log2);
        let kinds: Vec<SeriesKind> = goodput.series.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            vec![
                SeriesKind::LineMarkers,
                SeriesKind::LineMarkers,
                SeriesKind::Highlight,
                SeriesKind::Reference
            ]
        );
        // The fixed batches' saturation point, ringed at their goodput there.
        assert_eq!(goodput.series[2].points, vec![(200.0, 60.0)]);
        let ideal = &goodput.series[3].points;
        assert_eq!(ideal.first(), Some(&(50.0, 50.0)));
        assert_eq!(ideal.last(), Some(&(400.0, 400.0)));
        assert!(ideal.iter().all(|(x, y)| x == y));
        // Latency in milliseconds.
        let (ttft, _) = xy("serving_ttft_p99");
        assert_eq!(
            ttft.series[1].points[2],
            (200.0, 0.01 * 200f64.sqrt() * 1000.0)
        );
        // Achieved against offered: the ideal and the 90% threshold.
        let (requests, _) = xy("serving_requests");
        let names: Vec<&str> = requests.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names[2..],
            [
                "saturation point (achieved below 90% of offered)",
                "ideal: achieved = offered",
                "saturation threshold: 90% of offered"
            ]
        );
        assert_eq!(requests.series[4].points[0], (50.0, 45.0));
        for (_, figure, _) in &charts {
            figure.to_svg().unwrap();
        }
    }

    #[test]
    fn missing_energy_and_slo_are_said_not_drawn() {
        let runs: Vec<Run> = sweep_runs()
            .into_iter()
            .map(|r| Run {
                j_per_token: None,
                ..r
            })
            .collect();
        let mut t = table(&runs);
        // No SLO: goodput and its targets null.
        let columns = t.columns().to_vec();
        let rows = (0..t.len())
            .map(|r| {
                columns
                    .iter()
                    .map(|c| match c.as_str() {
                        "slo_ttft_s" | "slo_tpot_s" | "goodput_requests_per_s" => Cell::Null,
                        other => t.get(r, other).clone(),
                    })
                    .collect()
            })
            .collect();
        t = TableView::new(columns, rows);
        let sweep = rate_sweep(&t).unwrap();
        let (charts, notes) = charts(&sweep, None);
        assert!(!charts.iter().any(|c| c.0 == "serving_energy"));
        assert!(!charts.iter().any(|c| c.0 == "serving_goodput"));
        assert!(
            notes.iter().any(|n| n.starts_with(
                "serving: energy per output token against offered rate not drawn: energy not measured"
            )),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("goodput") && n.contains("SLO")),
            "{notes:?}"
        );
        let table = curve_table(&sweep);
        let col = |name: &str| table.header.iter().position(|h| h == name).unwrap();
        assert_eq!(
            table.rows[0][col("energy (J/output token)")],
            "not measured"
        );
        assert_eq!(table.rows[0][col("goodput (requests/s)")], "no SLO");
        assert_eq!(saturation_table(&sweep).rows[0][7], "no SLO");
    }

    #[test]
    fn batching_names_the_scheduler_and_its_limits() {
        let t = TableView::new(
            vec![
                "batch_size".into(),
                "token_budget".into(),
                "serve_max_batch".into(),
                "serve_prefill".into(),
            ],
            vec![
                vec![Cell::Int(4), Cell::Int(256), Cell::Null, Cell::Null],
                vec![
                    Cell::Int(1),
                    Cell::Null,
                    Cell::Int(16),
                    Cell::from("chunked"),
                ],
                vec![Cell::Null, Cell::Null, Cell::Null, Cell::Null],
            ],
        );
        assert_eq!(batching(&t, 0), "fixed batch_size=4 token_budget=256");
        assert_eq!(batching(&t, 1), "continuous max_batch=16 prefill=chunked");
        assert_eq!(batching(&t, 2), "fixed");
    }
}
