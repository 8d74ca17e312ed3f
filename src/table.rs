//! Terminal rendering: the progress display and the short results table.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use engine::execute::Progress;
use engine::record::RunStatus;
use indicatif::{ProgressBar, ProgressStyle};
use results::report::analysis::analyse;
use results::report::view::TableView;
use results::{Cell, Row};
use std::collections::BTreeSet;
use std::time::Instant;

/// How much `llmeff run` says while a study runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Only errors and the final summary line.
    Quiet,
    /// Progress, the results table and the summaries.
    Normal,
    /// Also each run's details as it is stored.
    Verbose,
}

/// Shows study progress: a bar on a terminal, plain log lines otherwise.
pub struct ProgressDisplay {
    bar: Option<ProgressBar>,
    interactive: bool,
    verbosity: Verbosity,
    started: Instant,
}

impl ProgressDisplay {
    /// A display; `interactive` selects the bar (never shown when quiet).
    pub fn new(interactive: bool, verbosity: Verbosity) -> Self {
        ProgressDisplay {
            bar: None,
            interactive: interactive && verbosity != Verbosity::Quiet,
            verbosity,
            started: Instant::now(),
        }
    }

    /// Reacts to one executor event.
    pub fn handle(&mut self, event: Progress) {
        if self.verbosity == Verbosity::Quiet {
            // Errors only: a failed run's line (retries may still succeed).
            if let Progress::RunFinished {
                index,
                status: RunStatus::Failed,
                summary,
            } = event
            {
                note!("run {index} FAILED: {summary}");
            }
            return;
        }
        match event {
            Progress::StudyStarted {
                pending,
                already_done,
            } => {
                if already_done > 0 {
                    note!("resuming: {already_done} runs already stored, {pending} to go");
                }
                if self.interactive {
                    let bar = ProgressBar::new(pending as u64);
                    // The template is a constant known to parse.
                    let style = ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs, ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    bar.set_style(style);
                    self.bar = Some(bar);
                } else {
                    note!(
                        "study: {pending} runs to execute on {} CPU threads",
                        rayon::current_num_threads()
                    );
                }
            }
            Progress::Loading { model } => self.log(format!("loading {model}")),
            Progress::RunStarted {
                index,
                total,
                label,
            } => match &self.bar {
                Some(bar) => bar.set_message(label),
                None => note!("[{index}/{total}] {label}"),
            },
            Progress::Retrying {
                index,
                attempt,
                error,
            } => {
                let line = format!("run {index} failed ({error}); retry {attempt}");
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => note!("{line}"),
                }
            }
            Progress::RunFinished {
                index,
                status,
                summary,
            } => {
                let line = match status {
                    RunStatus::Ok => format!("run {index} ok: {summary}"),
                    RunStatus::Failed => format!("run {index} FAILED: {summary}"),
                };
                match &self.bar {
                    Some(bar) => {
                        if status == RunStatus::Failed {
                            bar.println(line);
                        }
                        bar.inc(1);
                    }
                    None => note!(
                        "{line} ({:.1} s elapsed)",
                        self.started.elapsed().as_secs_f64()
                    ),
                }
            }
        }
    }

    fn log(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => note!("{line}"),
        }
    }

    /// Prints a line above the bar, or plainly.
    fn println(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => note!("{line}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Renders a study session on the terminal: progress, notes and, when verbose, each run's
/// details as it is stored (which run, what computed it, where its energy figures came from
/// and the meters' notes).
pub struct StudyConsole {
    /// The progress bar or log lines.
    pub display: ProgressDisplay,
}

impl study::StudyObserver for StudyConsole {
    fn note(&mut self, note: &study::StudyNote) {
        if self.display.verbosity == Verbosity::Quiet && note.is_detail() {
            return;
        }
        note!("{note}");
    }

    fn progress(&mut self, event: Progress) {
        self.display.handle(event);
    }

    fn stored(&mut self, row: &Row) {
        if self.display.verbosity == Verbosity::Verbose {
            self.display.println(detail_line(row));
        }
    }

    fn executed(&mut self) {
        self.display.finish();
    }
}

/// The `--verbose` lines of one stored run.
fn detail_line(row: &Row) -> String {
    let text = |column: &str| {
        row.get(column)
            .filter(|c| **c != Cell::Null)
            .map(Cell::display)
            .unwrap_or_else(|| "-".into())
    };
    let hash = text("run_hash");
    format!(
        "  run {} cycle {}: compute {}, energy {}\n    meters: {}\n    notes: {}",
        hash.get(..12).unwrap_or(&hash),
        text("cycle_id"),
        text("compute"),
        text("energy_total_source"),
        text("energy_meters"),
        text("meter_notes"),
    )
}

/// Measurement columns shown in the short table after a run, after the configuration.
const MEASURED: &[&str] = &[
    "cycle_id",
    "status",
    "input_tokens",
    "output_tokens",
    "wall_s",
    "ttft_p50_s",
    "tpot_p50_s",
    "output_tokens_per_s",
    "j_per_output_token",
    "energy_total_source",
];

/// Configuration columns of the short table: the report's (model, dtype, quantization and
/// batch size, plus every configuration axis that varies between the rows), and `compute` when
/// the runs differ in what computed them, so no two configurations print as identical rows.
fn config_columns(rows: &[Row]) -> Vec<String> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let names: Vec<String> = first.columns().iter().map(|c| c.name.to_string()).collect();
    let cells = rows
        .iter()
        .map(|r| {
            names
                .iter()
                .map(|n| r.get(n).cloned().unwrap_or(Cell::Null))
                .collect()
        })
        .collect();
    let view = TableView::new(names, cells);
    let mut columns: Vec<String> = analyse(&view)
        .config_columns
        .into_iter()
        .map(String::from)
        .collect();
    let computes: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.get("compute"))
        .map(Cell::display)
        .collect();
    if computes.len() > 1 {
        columns.push("compute".into());
    }
    columns
}

/// The runs table.
fn runs_table(rows: &[Row]) -> Table {
    let mut shown = config_columns(rows);
    shown.extend(MEASURED.iter().map(|c| c.to_string()));
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(shown.clone());
    for row in rows {
        table.add_row(
            shown
                .iter()
                .map(|c| row.get(c).map(|v| v.display()).unwrap_or_default())
                .collect::<Vec<_>>(),
        );
    }
    table
}

/// Prints the runs table to stdout.
pub fn print_runs(rows: &[Row]) {
    println!("{}", runs_table(rows));
}

/// Prints the meter inventory: each meter, whether it is usable here, and why not.
pub fn print_meters(inventory: &[api::meter::MeterStatus]) {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    table.set_header(vec!["meter", "available", "detail"]);
    for m in inventory {
        table.add_row(vec![
            m.name.clone(),
            if m.available { "yes" } else { "no" }.to_string(),
            m.detail.clone(),
        ]);
    }
    println!("{table}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::schema::RUN_COLUMNS;

    fn row(hash: &str, decoding: &str, arrival: &str, compute: &str) -> Row {
        let mut row = Row::new(RUN_COLUMNS);
        row.set("run_hash", hash).unwrap();
        row.set("model", "tiny-stories").unwrap();
        row.set("dtype", "f32").unwrap();
        row.set("quantization", "none").unwrap();
        row.set("batch_size", 4i64).unwrap();
        row.set("decoding", decoding).unwrap();
        row.set("arrival", arrival).unwrap();
        row.set("compute", compute).unwrap();
        row.set("max_new_tokens", 8i64).unwrap();
        row.set("cycle_id", 0i64).unwrap();
        row.set("status", "ok").unwrap();
        row.set("output_tokens", 32i64).unwrap();
        row
    }

    #[test]
    fn rows_differing_only_in_decoding_and_arrival_print_apart() {
        let k = "llmeff-kernels/avx2";
        let rows = [
            row("a1", "greedy", "closed_loop", k),
            row("b2", "sample", "closed_loop", k),
            row("c3", "greedy", "poisson", k),
        ];
        assert_eq!(
            config_columns(&rows),
            [
                "model",
                "dtype",
                "quantization",
                "batch_size",
                "arrival",
                "decoding"
            ]
        );
        let table = runs_table(&rows).to_string();
        let expected = [
            "┌──────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────┐",
            "│ model          dtype   quantization   batch_size   arrival       decoding   cycle_id   status   input_tokens   output_tokens   wall_s   ttft_p50_s   tpot_p50_s   output_tokens_per_s   j_per_output_token   energy_total_source │",
            "╞══════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════════╡",
            "│ tiny-stories   f32     none           4            closed_loop   greedy     0          ok       -              32              -        -            -            -                     -                    -                   │",
            "│ tiny-stories   f32     none           4            closed_loop   sample     0          ok       -              32              -        -            -            -                     -                    -                   │",
            "│ tiny-stories   f32     none           4            poisson       greedy     0          ok       -              32              -        -            -            -                     -                    -                   │",
            "└──────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────┘",
        ]
        .join("\n");
        assert_eq!(table, expected);
    }

    #[test]
    fn compute_is_shown_when_runs_differ_in_it() {
        let same = [
            row("a1", "greedy", "closed_loop", "llmeff-kernels/avx2"),
            row("a1", "greedy", "closed_loop", "llmeff-kernels/avx2"),
        ];
        assert_eq!(
            config_columns(&same),
            ["model", "dtype", "quantization", "batch_size"],
            "cycles of one configuration: nothing varies"
        );
        let differ = [
            row("a1", "greedy", "closed_loop", "llmeff-kernels/avx2"),
            row("a1", "greedy", "closed_loop", "burn-flex"),
        ];
        assert_eq!(
            config_columns(&differ),
            ["model", "dtype", "quantization", "batch_size", "compute"]
        );
        assert!(config_columns(&[]).is_empty());
    }
}
