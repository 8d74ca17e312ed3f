//! `llmeff report`: a study folder's results as tables, charts (SVG and PNG) and one
//! self-contained HTML page under `<study>/report/`.
//!
//! Tables are read by column name ([`view::TableView`]) rather than through the schema, so a
//! report works on folders written by any llmeff version, including columns this code has never
//! heard of being absent or all null. A figure that was not measured is said so, never drawn as
//! zero. A request-rate sweep adds a serving section ([`serving`]): curves against the offered
//! rate and each configuration's saturation point.

pub mod analysis;
pub mod format;
pub mod html;
pub mod plot;
pub mod requests;
pub mod serving;
pub mod view;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::StoreError;
use crate::parquet_io::write_bytes;
use analysis::{
    Configuration, ENERGY_PER_TOKEN, OPTIONAL_DEVICE_METRICS, OPTIONAL_ENERGY_METRICS,
    OPTIONAL_QUALITY_METRICS, PERFORMANCE_METRICS, QUALITY_KL, Study, analyse, measured,
    pareto_front, pareto_front_lower,
};
use plot::{
    CategoryChart, CategoryKind, CategoryRow, Chart, ErrorBar, Figure, Series, SeriesKind, XScale,
};
use requests::{DISTRIBUTIONS, Requests, five_numbers};
use view::TableView;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The study folder does not exist or is not a folder.
    #[error("study folder {} does not exist; run `llmeff run <script>` first, or pass runs/<study>", path.display())]
    MissingFolder {
        /// The path given.
        path: PathBuf,
    },
    /// The folder has no compacted runs table.
    #[error("{} not found: is {} a study folder? `llmeff run <script>` writes it when a study ends", path.display(), path.parent().unwrap_or(Path::new(".")).display())]
    NoRuns {
        /// Where `runs.parquet` was expected.
        path: PathBuf,
    },
    /// A Parquet file could not be decoded.
    #[error("{}: cannot read parquet: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the parquet library said.
        message: String,
    },
    /// Filesystem failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error(transparent)]
    Write(#[from] StoreError),
    /// A chart could not be drawn.
    #[error("chart `{name}`: {message}")]
    Plot {
        /// The chart's title.
        name: String,
        /// What went wrong.
        message: String,
    },
}

impl ReportError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn read(path: &Path, e: impl std::fmt::Display) -> Self {
        ReportError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    /// Whether the error is the caller's input (a wrong or unfinished folder) rather than a
    /// failure while reading or writing.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            ReportError::MissingFolder { .. } | ReportError::NoRuns { .. }
        )
    }
}

/// A table ready to print: every cell already formatted.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    /// Heading.
    pub title: String,
    /// Column headers, with units.
    pub header: Vec<String>,
    /// Rows, as long as `header`.
    pub rows: Vec<Vec<String>>,
    /// Leading columns that identify a row; a page too narrow for the whole table repeats
    /// them in each part it splits the table into.
    pub key_columns: usize,
}

/// One line of the environment block: a property of the machines and builds that measured
/// the study, with every distinct value seen (a study may span machines).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentEntry {
    /// What it is (`CPU`, `threads`, ...).
    pub label: String,
    /// Distinct values in first-seen order, each with its run count when they differ.
    pub values: Vec<String>,
}

/// A chart written as SVG and PNG.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotFile {
    /// Heading.
    pub title: String,
    /// What the chart shows and how to read it.
    pub caption: String,
    /// The SVG file.
    pub svg_path: PathBuf,
    /// The PNG file.
    pub png_path: PathBuf,
    svg: String,
}

/// A report, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Study name.
    pub study: String,
    /// When the report was made (UTC).
    pub generated_at: String,
    /// Rows in `runs.parquet`.
    pub runs: usize,
    /// Where the study ran: machines, builds, meters.
    pub environment: Vec<EnvironmentEntry>,
    /// Tables, in display order.
    pub tables: Vec<TextTable>,
    /// What was not measured or could not be shown.
    pub notes: Vec<String>,
    /// Charts written.
    pub plots: Vec<PlotFile>,
    /// Every file written, the HTML page last.
    pub files: Vec<PathBuf>,
}

/// Text of a figure the study did not measure.
pub const NOT_MEASURED: &str = "not measured";

/// Charts by file stem; a chart not drawn this time has its old files removed, so the folder
/// never shows a chart of an earlier state of the study.
const CHART_STEMS: &[&str] = &[
    "latency_throughput",
    "throughput_batch",
    "throughput_config",
    "energy_batch",
    "energy_config",
    "energy_throughput",
    "quality_energy",
    "ttft_distribution",
    "tpot_distribution",
    "power_time",
    "serving_ttft_p50",
    "serving_ttft_p99",
    "serving_tpot_p50",
    "serving_tpot_p99",
    "serving_requests",
    "serving_goodput",
    "serving_throughput",
    "serving_energy",
];

/// Environment columns of the runs table, with their labels; any may be absent (older files).
const ENVIRONMENT: &[(&str, &str)] = &[
    ("hostname", "host"),
    ("cpu_model", "CPU"),
    ("threads", "threads"),
    ("compute", "compute"),
    ("energy_meters", "energy meters"),
    ("git_commit", "commit"),
    ("build_profile", "build"),
    ("llmeff_version", "llmeff version"),
    ("kernel", "kernel"),
];

/// How the error bars of cycle means are drawn, for captions.
const SPREAD_NOTE: &str = "Error bars span the lowest to the highest value over the configuration's successful cycles (where it has two or more).";

/// Power columns of a samples file, with their legend names.
const POWER_COLUMNS: &[(&str, &str)] = &[
    ("power_total_w", "total"),
    ("power_cpu_w", "CPU"),
    ("power_gpu_w", "GPU"),
    ("power_ram_w", "RAM"),
];

/// Reads `dir` (a study folder) and writes `dir/report/`: charts as SVG and PNG and
/// `report.html`.
pub fn write_report(dir: &Path) -> Result<Report, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::MissingFolder {
            path: dir.to_path_buf(),
        });
    }
    let runs_path = dir.join("runs.parquet");
    if !runs_path.is_file() {
        return Err(ReportError::NoRuns { path: runs_path });
    }
    let runs = TableView::read(&runs_path)?;
    let study_name = runs
        .text(0, "study")
        .map(str::to_string)
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_else(|| "study".to_string());
    let study = analyse(&runs);
    let mut notes = Vec::new();
    let ok_runs = study
        .configurations
        .iter()
        .map(|c| c.ok_cycles)
        .sum::<usize>();
    if runs.is_empty() {
        notes.push("runs.parquet holds no runs".to_string());
    } else if ok_runs == 0 {
        notes.push("no run succeeded, so there is nothing to average or plot".to_string());
    }
    let energy = measured(&runs, ENERGY_PER_TOKEN.column);
    if !energy {
        notes.push(format!(
            "energy {NOT_MEASURED} in this study (no {} values)",
            ENERGY_PER_TOKEN.column
        ));
    }

    let mut tables = vec![configuration_table(&study, &runs)];
    if !study.failures.is_empty() {
        tables.push(failure_table(&study));
    }
    let summary_path = dir.join("summary.parquet");
    if summary_path.is_file() {
        match TableView::read(&summary_path) {
            Ok(summary) => tables.push(generic_table("Summary (summary.parquet)", &summary)),
            Err(e) => notes.push(format!("summary not shown: {e}")),
        }
    }

    let out = dir.join("report");
    std::fs::create_dir_all(&out).map_err(|e| ReportError::io(&out, e))?;
    let estimates = estimated_domains(&runs);
    let estimate_note = (!estimates.is_empty()).then(|| {
        format!(
            " Includes estimated energy ({}): CodeCarbon 3.3.2's model (CPU TDP x load curve, RAM by DIMM; see energy_meters), not a sensor reading.",
            estimates.join(", ")
        )
    });
    let estimate_title = |title: &str| {
        if estimates.is_empty() {
            title.to_string()
        } else {
            format!("{title} (includes estimates)")
        }
    };
    let mut charts: Vec<(&str, Figure, String)> = Vec::new();
    if let Some(c) = latency_throughput(&study) {
        let mut caption = format!(
            "Each point is one configuration (mean over its successful cycles){}. {SPREAD_NOTE}",
            if study.batch_varies {
                ", labelled with its batch size"
            } else {
                ""
            }
        );
        if c.series.iter().any(|s| s.kind == SeriesKind::Front) {
            caption.push_str(" The dashed line is the Pareto front: the configurations that no other beats on both throughput and latency.");
        }
        charts.push(("latency_throughput", Figure::Xy(c), caption));
    }
    let throughput = "throughput (output tokens/s)";
    if study.batch_varies {
        if let Some(c) = over_batch(
            &study,
            "output_tokens_per_s",
            "Throughput by batch size",
            throughput,
        ) {
            charts.push((
                "throughput_batch",
                Figure::Xy(c),
                format!("Mean output tokens per second over successful cycles; one line per configuration of the other settings. {SPREAD_NOTE}"),
            ));
        }
    } else if let Some(c) = per_configuration(
        &study,
        "output_tokens_per_s",
        "Throughput by configuration",
        throughput,
    ) {
        charts.push((
            "throughput_config",
            Figure::Categories(c),
            format!("Mean output tokens per second over successful cycles, one bar per configuration (batch size does not vary in this study). {SPREAD_NOTE}"),
        ));
    }
    let energy_label = "energy per output token (J)";
    let mut energy_caption =
        "Mean energy per output token over successful cycles; lower is better.".to_string();
    if let Some(note) = &estimate_note {
        energy_caption.push_str(note);
    }
    if energy && study.batch_varies {
        if let Some(c) = over_batch(
            &study,
            ENERGY_PER_TOKEN.column,
            &estimate_title("Energy per output token by batch size"),
            energy_label,
        ) {
            charts.push((
                "energy_batch",
                Figure::Xy(c),
                format!("{energy_caption} {SPREAD_NOTE}"),
            ));
        }
    } else if energy
        && let Some(c) = per_configuration(
            &study,
            ENERGY_PER_TOKEN.column,
            &estimate_title("Energy per output token by configuration"),
            energy_label,
        )
    {
        charts.push((
            "energy_config",
            Figure::Categories(c),
            format!("{energy_caption} {SPREAD_NOTE}"),
        ));
    }
    match energy_throughput(&study, &runs) {
        Some(mut c) => {
            c.title = estimate_title(&c.title);
            let mut caption = format!(
                "Each point is one configuration (means over its successful cycles): the further right and lower, the more tokens per second for less energy. {SPREAD_NOTE}"
            );
            if c.series.iter().any(|s| s.kind == SeriesKind::Front) {
                caption.push_str(" The dashed line is the Pareto front.");
            }
            if let Some(note) = &estimate_note {
                caption.push_str(note);
            }
            charts.push(("energy_throughput", Figure::Xy(c), caption));
        }
        None => notes.push(format!(
            "energy vs throughput chart left out: energy {NOT_MEASURED} in this study"
        )),
    }
    match quality_energy(&study, &runs) {
        Ok(mut c) => {
            c.title = estimate_title(&c.title);
            let mut caption = format!(
                "Each point is one configuration (means over its successful cycles), labelled with its weight format: across, the mean KL divergence of its next-token distributions from the same model at f32, unquantized (quality_ref; an f32 run is its own reference, at 0); up, the energy per output token. Lower left is better. KL is measured against each model's own f32, so it compares formats within a model, not models. {SPREAD_NOTE}"
            );
            if c.series.iter().any(|s| s.kind == SeriesKind::Front) {
                caption.push_str(" Each dashed line is a model's Pareto front: its configurations that no other configuration of the same model matches on both axes while beating on one.");
            }
            if let Some(note) = &estimate_note {
                caption.push_str(note);
            }
            charts.push(("quality_energy", Figure::Xy(c), caption));
        }
        Err(why) => notes.push(format!("quality per joule chart left out: {why}")),
    }
    // Serving under load: only for a request-rate sweep, so a study without one shows
    // nothing of it, not even a note.
    if let Some(sweep) = serving::rate_sweep(&runs) {
        tables.push(serving::saturation_table(&sweep));
        tables.push(serving::curve_table(&sweep));
        let (serving_charts, serving_notes) = serving::charts(&sweep, estimate_note.as_deref());
        charts.extend(serving_charts);
        notes.extend(serving_notes);
    }
    let requests = requests::read(dir, &runs)?;
    for e in &requests.unreadable {
        notes.push(format!("requests not shown: {e}"));
    }
    for (column, name) in DISTRIBUTIONS {
        match distribution(&study, &requests, column, name) {
            Some((c, caption)) => charts.push((
                if *column == "ttft_s" {
                    "ttft_distribution"
                } else {
                    "tpot_distribution"
                },
                Figure::Categories(c),
                caption,
            )),
            None => notes.push(format!(
                "{name} distribution not drawn: no per-request {column} of successful runs under requests/"
            )),
        }
    }
    match power_over_time(dir, &runs, &study, &mut notes) {
        Some((c, caption)) => charts.push(("power_time", Figure::Xy(c), caption)),
        None => notes.push(format!(
            "power {NOT_MEASURED} in this study (no power samples under samples/)"
        )),
    }

    let mut plots = Vec::new();
    let mut files = Vec::new();
    for (stem, chart, caption) in charts {
        let svg_path = out.join(format!("{stem}.svg"));
        let png_path = out.join(format!("{stem}.png"));
        let drawn = chart.to_svg().and_then(|svg| Ok((svg, chart.to_png()?)));
        match drawn {
            Ok((svg, png)) => {
                write_bytes(&svg_path, svg.as_bytes())?;
                write_bytes(&png_path, &png)?;
                files.push(svg_path.clone());
                files.push(png_path.clone());
                plots.push(PlotFile {
                    title: chart.title().to_string(),
                    caption,
                    svg_path,
                    png_path,
                    svg,
                });
            }
            Err(e) => notes.push(format!("chart not drawn: {e}")),
        }
    }
    remove_stale_charts(&out, &plots)?;

    let html_path = out.join("report.html");
    files.push(html_path.clone());
    let report = Report {
        study: study_name,
        generated_at: utc_timestamp(SystemTime::now()),
        runs: runs.len(),
        environment: environment(&runs),
        tables,
        notes,
        plots,
        files,
    };
    write_bytes(&html_path, html::render(&report).as_bytes())?;
    Ok(report)
}

fn remove_stale_charts(out: &Path, plots: &[PlotFile]) -> Result<(), ReportError> {
    let written: BTreeSet<&Path> = plots
        .iter()
        .flat_map(|p| [p.svg_path.as_path(), p.png_path.as_path()])
        .collect();
    for stem in CHART_STEMS {
        for ext in ["svg", "png"] {
            let path = out.join(format!("{stem}.{ext}"));
            if !written.contains(path.as_path()) && path.exists() {
                std::fs::remove_file(&path).map_err(|e| ReportError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// The energy domains some successful run estimated rather than measured.
fn estimated_domains(runs: &TableView) -> Vec<String> {
    let ok = |r: usize| runs.text(r, "status").is_none_or(|s| s == "ok");
    let estimated = |column: &str| {
        (0..runs.len())
            .any(|r| ok(r) && runs.text(r, column).is_some_and(|s| s.contains("estimate")))
    };
    let mut domains: Vec<String> = ["cpu", "gpu", "ram"]
        .iter()
        .filter(|d| estimated(&format!("energy_{d}_source")))
        .map(|d| d.to_uppercase())
        .collect();
    // Older tables may carry only the total's source.
    if domains.is_empty() && estimated("energy_total_source") {
        domains.push("some domains".into());
    }
    domains
}

/// Distinct values of each environment column over every run of the study.
fn environment(runs: &TableView) -> Vec<EnvironmentEntry> {
    let mut entries = Vec::new();
    for (column, label) in ENVIRONMENT {
        if *column == "git_commit" && !runs.has_column(column) {
            continue;
        }
        let mut seen: Vec<(String, usize)> = Vec::new();
        for r in 0..runs.len() {
            let cell = runs.get(r, column);
            if *cell == crate::row::Cell::Null {
                continue;
            }
            let mut value = format::cell(cell);
            if *column == "git_commit" {
                value = value.chars().take(12).collect();
                if runs.get(r, "git_dirty").display() == "true" {
                    value.push_str(" (dirty)");
                }
            }
            match seen.iter_mut().find(|(v, _)| *v == value) {
                Some((_, n)) => *n += 1,
                None => seen.push((value, 1)),
            }
        }
        if seen.is_empty() {
            continue;
        }
        let counted = seen.len() > 1;
        entries.push(EnvironmentEntry {
            label: (*label).to_string(),
            values: seen
                .into_iter()
                .map(|(v, n)| {
                    if counted {
                        format!("{v} ({n} run{})", if n == 1 { "" } else { "s" })
                    } else {
                        v
                    }
                })
                .collect(),
        });
    }
    entries
}

fn configuration_table(study: &Study, runs: &TableView) -> TextTable {
    let optional: Vec<_> = OPTIONAL_ENERGY_METRICS
        .iter()
        .chain(OPTIONAL_QUALITY_METRICS)
        .chain(OPTIONAL_DEVICE_METRICS)
        .filter(|m| measured(runs, m.column))
        .collect();
    let sources = study
        .configurations
        .iter()
        .any(|c| !c.energy_sources.is_empty());
    let mut header: Vec<String> = study.config_headers.iter().map(|h| h.to_string()).collect();
    header.push("cycles ok/all".into());
    header.extend(PERFORMANCE_METRICS.iter().map(|m| m.header.to_string()));
    header.push(ENERGY_PER_TOKEN.header.to_string());
    header.extend(optional.iter().map(|m| m.header.to_string()));
    if sources {
        header.push("energy source".into());
    }
    let rows = study
        .configurations
        .iter()
        .map(|c| {
            let mut row = c.values.clone();
            row.push(format!("{}/{}", c.ok_cycles, c.ok_cycles + c.failed_cycles));
            row.extend(
                PERFORMANCE_METRICS
                    .iter()
                    .map(|m| format::optional(c.mean(m.column))),
            );
            // A configuration that never succeeded measured nothing at all: "-" like the rest.
            row.push(match c.mean(ENERGY_PER_TOKEN.column) {
                Some(v) => format::number(v),
                None if c.ok_cycles == 0 => "-".to_string(),
                None => NOT_MEASURED.to_string(),
            });
            row.extend(optional.iter().map(|m| format::optional(c.mean(m.column))));
            if sources {
                row.push(if c.energy_sources.is_empty() {
                    "-".into()
                } else {
                    c.energy_sources.join(", ")
                });
            }
            row
        })
        .collect();
    TextTable {
        title: "Configurations (means over successful cycles)".into(),
        key_columns: study.config_headers.len(),
        header,
        rows,
    }
}

fn failure_table(study: &Study) -> TextTable {
    TextTable {
        title: "Failed runs".into(),
        header: vec!["configuration".into(), "cycle".into(), "error".into()],
        key_columns: 1,
        rows: study
            .failures
            .iter()
            .map(|f| {
                vec![
                    f.configuration.clone(),
                    f.cycle.map_or_else(|| "-".into(), |c| c.to_string()),
                    f.error.clone(),
                ]
            })
            .collect(),
    }
}

fn generic_table(title: &str, t: &TableView) -> TextTable {
    TextTable {
        title: title.into(),
        header: t.columns().to_vec(),
        rows: (0..t.len())
            .map(|r| {
                t.columns()
                    .iter()
                    .map(|c| format::cell(t.get(r, c)))
                    .collect()
            })
            .collect(),
        // A summary's group columns come before its count `n`.
        key_columns: t
            .columns()
            .iter()
            .position(|c| c == "n")
            .map_or(1, |n| n + 1),
    }
}

/// Series names in first-seen order.
fn series_names(study: &Study) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in &study.configurations {
        if !names.contains(&c.series) {
            names.push(c.series.clone());
        }
    }
    names
}

/// The label written beside a configuration's point in a scatter: its batch size when batch
/// size varies (the legend names the rest), else what sets it apart.
fn point_label(study: &Study, c: &Configuration) -> String {
    if study.batch_varies {
        c.batch_size.map_or_else(String::new, |b| format!("b={b}"))
    } else {
        c.label.clone()
    }
}

/// A scatter of one point per configuration, one series per line of [`series_names`], error
/// bars from the cycles' spread on both axes, and the Pareto front (higher x, lower y better).
fn scatter(
    study: &Study,
    x_column: &str,
    y_column: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Option<Chart> {
    let mut series = Vec::new();
    let mut all = Vec::new();
    for name in series_names(study) {
        let mut points = Vec::new();
        let mut labels = Vec::new();
        let mut errors = Vec::new();
        for c in study.configurations.iter().filter(|c| c.series == name) {
            if let (Some(x), Some(y)) = (c.mean(x_column), c.mean(y_column)) {
                points.push((x, y));
                labels.push(point_label(study, c));
                errors.push(ErrorBar {
                    x: c.spread(x_column),
                    y: c.spread(y_column),
                });
            }
        }
        if !points.is_empty() {
            all.extend(points.iter().copied());
            series.push(Series {
                name,
                points,
                labels,
                errors,
                kind: SeriesKind::Markers,
            });
        }
    }
    if all.is_empty() {
        return None;
    }
    let front = pareto_front(&all);
    if front.len() >= 2 {
        series.push(Series {
            name: "Pareto front".into(),
            points: front,
            labels: Vec::new(),
            errors: Vec::new(),
            kind: SeriesKind::Front,
        });
    }
    Some(Chart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: y_label.into(),
        x_scale: XScale::Linear,
        series,
    })
}

fn latency_throughput(study: &Study) -> Option<Chart> {
    scatter(
        study,
        "output_tokens_per_s",
        "e2e_p50_s",
        "Latency vs throughput",
        "throughput (output tokens/s)",
        "median end-to-end latency (s)",
    )
}

/// Energy against throughput, per output token where the study has it, else per run.
fn energy_throughput(study: &Study, runs: &TableView) -> Option<Chart> {
    let (column, label) = if measured(runs, ENERGY_PER_TOKEN.column) {
        (ENERGY_PER_TOKEN.column, "energy per output token (J)")
    } else if measured(runs, "energy_total_j") {
        ("energy_total_j", "energy per run (J)")
    } else {
        return None;
    };
    scatter(
        study,
        "output_tokens_per_s",
        column,
        "Energy vs throughput",
        "throughput (output tokens/s)",
        label,
    )
}

/// The value of a shown configuration column, if the study shows it.
fn shown_value<'c>(study: &Study, c: &'c Configuration, column: &str) -> Option<&'c str> {
    let i = study.config_columns.iter().position(|&col| col == column)?;
    c.values.get(i).map(String::as_str)
}

/// A configuration's label within its model: its weight format (dtype, quantization) and
/// whatever else varies in the study, the model itself left out (the legend names it).
fn label_within_model(study: &Study, c: &Configuration) -> String {
    let mut parts = Vec::new();
    for (column, value) in study.config_columns.iter().zip(&c.values) {
        match *column {
            "model" => {}
            "batch_size" if !study.batch_varies => {}
            "batch_size" => parts.push(format!("b={value}")),
            "quantization" if value == "none" || value == "-" => {}
            // A null setting (a greedy run's temperature) says nothing about the point.
            _ if value == "-" => {}
            "dtype" | "quantization" => parts.push(value.clone()),
            other => parts.push(format!("{other}={value}")),
        }
    }
    parts.join(" ")
}

/// Why the quality-per-joule chart is left out of a report (said in its notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum QualityChartGap {
    /// No run has a KL figure.
    #[error("quality {} in this study (no {} values: `study(#{{ quality: false }})`, or a study from before quality was measured)", NOT_MEASURED, QUALITY_KL.column)]
    NoQuality,
    /// No run has an energy per token.
    #[error("energy {} in this study", NOT_MEASURED)]
    NoEnergy,
    /// Quality and energy were measured, but never for the same configuration.
    #[error("no configuration has both a KL divergence and an energy per token")]
    NoPoints,
    /// Every configuration is its own f32 reference: nothing is traded.
    #[error(
        "every configuration is at KL 0 (f32, unquantized: its own reference), so there is no quality to trade"
    )]
    AllReferences,
}

/// Quality per joule: energy per output token against KL divergence from the model's f32
/// reference, one series per model, each model's Pareto front (lower is better on both) as a
/// dashed line; or why the chart says nothing for this study.
fn quality_energy(study: &Study, runs: &TableView) -> Result<Chart, QualityChartGap> {
    if !measured(runs, QUALITY_KL.column) {
        return Err(QualityChartGap::NoQuality);
    }
    if !measured(runs, ENERGY_PER_TOKEN.column) {
        return Err(QualityChartGap::NoEnergy);
    }
    let mut models: Vec<String> = Vec::new();
    for c in &study.configurations {
        let model = shown_value(study, c, "model")
            .unwrap_or("all runs")
            .to_string();
        if !models.contains(&model) {
            models.push(model);
        }
    }
    let mut series = Vec::new();
    let mut fronts = Vec::new();
    let mut any_off_reference = false;
    for model in &models {
        let mut points = Vec::new();
        let mut labels = Vec::new();
        let mut errors = Vec::new();
        for c in study
            .configurations
            .iter()
            .filter(|c| shown_value(study, c, "model").unwrap_or("all runs") == model)
        {
            if let (Some(kl), Some(energy)) =
                (c.mean(QUALITY_KL.column), c.mean(ENERGY_PER_TOKEN.column))
            {
                any_off_reference |= kl != 0.0;
                points.push((kl, energy));
                labels.push(label_within_model(study, c));
                errors.push(ErrorBar {
                    x: c.spread(QUALITY_KL.column),
                    y: c.spread(ENERGY_PER_TOKEN.column),
                });
            }
        }
        if points.is_empty() {
            continue;
        }
        let front = pareto_front_lower(&points);
        if front.len() >= 2 {
            fronts.push((model.clone(), front));
        }
        series.push(Series {
            name: model.clone(),
            points,
            labels,
            errors,
            kind: SeriesKind::Markers,
        });
    }
    if series.is_empty() {
        return Err(QualityChartGap::NoPoints);
    }
    if !any_off_reference {
        return Err(QualityChartGap::AllReferences);
    }
    let one_model = series.len() == 1;
    for (model, points) in fronts {
        series.push(Series {
            name: if one_model {
                "Pareto front".into()
            } else {
                format!("Pareto front of {model}")
            },
            points,
            labels: Vec::new(),
            errors: Vec::new(),
            kind: SeriesKind::Front,
        });
    }
    Ok(Chart {
        title: "Quality per joule: energy per token vs KL from f32".into(),
        x_label: "KL divergence from f32, mean per prompt position (nats)".into(),
        y_label: "energy per output token (J)".into(),
        x_scale: XScale::Linear,
        series,
    })
}

fn over_batch(study: &Study, column: &str, title: &str, y_label: &str) -> Option<Chart> {
    let mut series = Vec::new();
    let mut batches = Vec::new();
    for name in series_names(study) {
        let (points, errors): (Vec<(f64, f64)>, Vec<ErrorBar>) = study
            .configurations
            .iter()
            .filter(|c| c.series == name)
            .filter_map(|c| {
                Some((
                    (c.batch_size? as f64, c.mean(column)?),
                    ErrorBar {
                        x: None,
                        y: c.spread(column),
                    },
                ))
            })
            .unzip();
        if !points.is_empty() {
            batches.extend(points.iter().map(|p| p.0));
            series.push(Series {
                name,
                points,
                labels: Vec::new(),
                errors,
                kind: SeriesKind::LineMarkers,
            });
        }
    }
    let lo = batches.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = batches.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if series.is_empty() {
        return None;
    }
    // Batch sizes are usually swept in powers of two; a log axis keeps them evenly spaced.
    let x_scale = if lo >= 1.0 && hi / lo >= 8.0 {
        XScale::Log2
    } else {
        XScale::Integer
    };
    Some(Chart {
        title: title.into(),
        x_label: if x_scale == XScale::Log2 {
            "batch size (prompts, log scale)".into()
        } else {
            "batch size (prompts)".into()
        },
        y_label: y_label.into(),
        x_scale,
        series,
    })
}

/// One bar per configuration: the mean of `column`, the cycles' spread as an error bar.
fn per_configuration(
    study: &Study,
    column: &str,
    title: &str,
    value_label: &str,
) -> Option<CategoryChart> {
    let rows: Vec<CategoryRow> = study
        .configurations
        .iter()
        .filter_map(|c| {
            let value = c.mean(column)?;
            Some(CategoryRow {
                label: c.label.clone(),
                value,
                range: c.spread(column),
                quartiles: None,
                note: format::number(value),
            })
        })
        .collect();
    (!rows.is_empty()).then(|| CategoryChart {
        title: title.into(),
        value_label: value_label.into(),
        kind: CategoryKind::Bars,
        rows,
    })
}

/// Box plots of a per-request latency, one per configuration, in milliseconds; and the
/// caption.
fn distribution(
    study: &Study,
    requests: &Requests,
    column: &str,
    name: &str,
) -> Option<(CategoryChart, String)> {
    let mut total = 0;
    let rows: Vec<CategoryRow> = study
        .configurations
        .iter()
        .filter_map(|c| {
            let values: Vec<f64> = requests
                .of(column, &c.key)
                .iter()
                .map(|v| v * 1000.0)
                .collect();
            let f = five_numbers(&values)?;
            total += values.len();
            Some(CategoryRow {
                label: c.label.clone(),
                value: f.median,
                range: Some((f.min, f.max)),
                quartiles: Some((f.q1, f.q3)),
                note: format!("p50 {} ms, n={}", format::number(f.median), values.len()),
            })
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let what = if column == "ttft_s" {
        "time to first token"
    } else {
        "time per output token after the first (requests of one token have none)"
    };
    let caption = format!(
        "{name} ({what}) of every request of the successful cycles, from requests/ ({total} requests): the box spans the 25th to the 75th percentile, the black line is the median, the whiskers reach the fastest and the slowest request."
    );
    Some((
        CategoryChart {
            title: format!("{name} distribution by configuration"),
            value_label: format!("{name} (ms)"),
            kind: CategoryKind::Boxes,
            rows,
        },
        caption,
    ))
}

/// The power chart of the first successful run with power samples, and its caption.
fn power_over_time(
    dir: &Path,
    runs: &TableView,
    study: &Study,
    notes: &mut Vec<String>,
) -> Option<(Chart, String)> {
    let samples = dir.join("samples");
    if !samples.is_dir() {
        return None;
    }
    for r in 0..runs.len() {
        if runs.text(r, "status").is_some_and(|s| s != "ok") {
            continue;
        }
        let (Some(hash), Some(cycle)) = (runs.text(r, "run_hash"), runs.int(r, "cycle_id")) else {
            continue;
        };
        let path = samples.join(format!("{hash}-c{cycle}.parquet"));
        if !path.is_file() {
            continue;
        }
        let table = match TableView::read(&path) {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!("samples not shown: {e}"));
                continue;
            }
        };
        let series: Vec<Series> = POWER_COLUMNS
            .iter()
            .filter_map(|(column, name)| {
                let points: Vec<(f64, f64)> = (0..table.len())
                    .filter_map(|i| Some((table.float(i, "t_s")?, table.float(i, column)?)))
                    .collect();
                (!points.is_empty()).then(|| Series {
                    name: (*name).to_string(),
                    kind: if points.len() <= 30 {
                        SeriesKind::LineMarkers
                    } else {
                        SeriesKind::Line
                    },
                    points,
                    labels: Vec::new(),
                    errors: Vec::new(),
                })
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let label = study
            .configurations
            .iter()
            .find(|c| c.key == hash)
            .map(|c| c.values.join(" "))
            .unwrap_or_default();
        let short: String = hash.chars().take(12).collect();
        // Say where each domain's watts come from, so an estimate never reads as a reading.
        let sources: Vec<String> = ["cpu", "gpu", "ram"]
            .iter()
            .filter_map(|d| {
                let source = runs.text(r, &format!("energy_{d}_source"))?;
                matches!(source, "rapl" | "nvml" | "estimate")
                    .then(|| format!("{} {source}", d.to_uppercase()))
            })
            .collect();
        let estimated = sources.iter().any(|s| s.ends_with("estimate"));
        let chart = Chart {
            title: if estimated {
                "Power over time (includes estimates)".into()
            } else {
                "Power over time".into()
            },
            x_label: "time since run start (s)".into(),
            y_label: "power (W)".into(),
            x_scale: XScale::Linear,
            series,
        };
        let mut caption = format!(
            "Sampled power of run {short}, cycle {cycle} ({label}): the first successful run with power samples."
        );
        if !sources.is_empty() {
            caption.push_str(&format!(" Sources: {}.", sources.join(", ")));
        }
        if estimated {
            caption.push_str(
                " Estimated domains follow CodeCarbon's model (CPU TDP x load curve, RAM by size), not a sensor.",
            );
        }
        return Some((chart, caption));
    }
    None
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a system time (the epoch for times before it).
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    crate::time::UtcTime::from_unix_s(secs as f64).readable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(utc_timestamp(t), "2000-02-29 01:01:01 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599);
        assert_eq!(utc_timestamp(t), "2024-12-31 23:59:59 UTC");
    }

    #[test]
    fn missing_folder_and_runs_are_input_errors_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let e = write_report(&missing).unwrap_err();
        assert!(e.is_input());
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(e.to_string().contains("llmeff run"), "{e}");
        let e = write_report(tmp.path()).unwrap_err();
        assert!(e.is_input());
        assert!(e.to_string().contains("runs.parquet"), "{e}");
        assert!(e.to_string().contains("llmeff run"), "{e}");
    }

    /// (run hash, model, dtype, quantization, KL, J/output token).
    type QualityRun<'a> = (&'a str, &'a str, &'a str, &'a str, Option<f64>, Option<f64>);

    /// Runs of [`QualityRun`]s, one ok cycle each.
    fn quality_runs(rows: &[QualityRun<'_>]) -> TableView {
        let columns = [
            "run_hash",
            "model",
            "dtype",
            "quantization",
            "batch_size",
            "status",
            "quality_kl_mean_nats",
            "j_per_output_token",
        ];
        TableView::new(
            columns.iter().map(|c| c.to_string()).collect(),
            rows.iter()
                .map(|&(hash, model, dtype, quant, kl, j)| {
                    vec![
                        Cell::from(hash),
                        Cell::from(model),
                        Cell::from(dtype),
                        Cell::from(quant),
                        Cell::Int(4),
                        Cell::from("ok"),
                        Cell::from(kl),
                        Cell::from(j),
                    ]
                })
                .collect(),
        )
    }

    use crate::row::Cell;

    #[test]
    fn quality_per_joule_has_a_series_and_a_front_per_model() {
        let runs = quality_runs(&[
            ("a1", "big", "f32", "none", Some(0.0), Some(4.0)),
            ("a2", "big", "bf16", "none", Some(0.001), Some(3.0)),
            ("a3", "big", "f32", "int8/b32", Some(0.002), Some(3.5)),
            ("a4", "big", "f32", "int4/b32", Some(0.03), Some(1.0)),
            ("b1", "small", "f32", "none", Some(0.0), Some(0.5)),
            ("b2", "small", "f32", "int4/b32", Some(0.05), Some(0.2)),
            // No energy: not drawn.
            ("b3", "small", "f16", "none", Some(0.001), None),
        ]);
        let study = analyse(&runs);
        let chart = quality_energy(&study, &runs).unwrap();
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "big",
                "small",
                "Pareto front of big",
                "Pareto front of small"
            ]
        );
        let big = &chart.series[0];
        assert_eq!(
            big.points,
            vec![(0.0, 4.0), (0.001, 3.0), (0.002, 3.5), (0.03, 1.0)]
        );
        assert_eq!(
            big.labels,
            vec!["f32", "bf16", "f32 int8/b32", "f32 int4/b32"]
        );
        assert_eq!(chart.series[1].points, vec![(0.0, 0.5), (0.05, 0.2)]);
        // int8 is dominated by bf16 (less KL and less energy): off the front.
        assert_eq!(
            chart.series[2].points,
            vec![(0.0, 4.0), (0.001, 3.0), (0.03, 1.0)]
        );
        assert_eq!(chart.series[2].kind, SeriesKind::Front);
        assert_eq!(chart.series[3].points, vec![(0.0, 0.5), (0.05, 0.2)]);
        chart.to_svg().unwrap();
    }

    #[test]
    fn quality_per_joule_is_left_out_with_a_reason() {
        // Only references: everything at KL 0.
        let runs = quality_runs(&[
            ("a1", "m", "f32", "none", Some(0.0), Some(4.0)),
            ("a2", "n", "f32", "none", Some(0.0), Some(3.0)),
        ]);
        let why = quality_energy(&analyse(&runs), &runs).unwrap_err();
        assert_eq!(why, QualityChartGap::AllReferences);
        assert!(why.to_string().contains("KL 0"), "{why}");
        let runs = quality_runs(&[("a1", "m", "bf16", "none", None, Some(4.0))]);
        let why = quality_energy(&analyse(&runs), &runs).unwrap_err();
        assert_eq!(why, QualityChartGap::NoQuality);
        assert!(why.to_string().starts_with("quality not measured"), "{why}");
        let runs = quality_runs(&[("a1", "m", "bf16", "none", Some(0.1), None)]);
        let why = quality_energy(&analyse(&runs), &runs).unwrap_err();
        assert_eq!(why, QualityChartGap::NoEnergy);
        // Quality and energy, but never on the same configuration.
        let runs = quality_runs(&[
            ("a1", "m", "bf16", "none", Some(0.1), None),
            ("a2", "m", "f32", "int8/b32", None, Some(1.0)),
        ]);
        let why = quality_energy(&analyse(&runs), &runs).unwrap_err();
        assert_eq!(why, QualityChartGap::NoPoints);
        // One model: its front is just "Pareto front".
        let runs = quality_runs(&[
            ("a1", "m", "f32", "none", Some(0.0), Some(4.0)),
            ("a2", "m", "bf16", "none", Some(0.01), Some(2.0)),
        ]);
        let chart = quality_energy(&analyse(&runs), &runs).unwrap();
        assert_eq!(chart.series[1].name, "Pareto front");
    }

    #[test]
    fn a_corrupt_runs_file_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("runs.parquet"), b"not parquet").unwrap();
        let e = write_report(tmp.path()).unwrap_err();
        assert!(!e.is_input());
        assert!(e.to_string().contains("runs.parquet"), "{e}");
    }
}
