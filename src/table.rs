//! Terminal rendering: the progress display and the short results table.

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use engine::execute::Progress;
use engine::record::RunStatus;
use indicatif::{ProgressBar, ProgressStyle};
use results::Row;
use std::time::Instant;

/// Shows study progress: a bar on a terminal, plain log lines otherwise.
pub struct ProgressDisplay {
    bar: Option<ProgressBar>,
    interactive: bool,
    started: Instant,
}

impl ProgressDisplay {
    /// A display; `interactive` selects the bar.
    pub fn new(interactive: bool) -> Self {
        ProgressDisplay {
            bar: None,
            interactive,
            started: Instant::now(),
        }
    }

    /// Reacts to one executor event.
    pub fn handle(&mut self, event: Progress) {
        match event {
            Progress::StudyStarted {
                pending,
                already_done,
            } => {
                if already_done > 0 {
                    eprintln!("resuming: {already_done} runs already stored, {pending} to go");
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
                    eprintln!("study: {pending} runs to execute");
                }
            }
            Progress::Loading { model } => self.log(format!("loading {model}")),
            Progress::RunStarted {
                index,
                total,
                label,
            } => match &self.bar {
                Some(bar) => bar.set_message(label),
                None => eprintln!("[{index}/{total}] {label}"),
            },
            Progress::Retrying {
                index,
                attempt,
                error,
            } => {
                let line = format!("run {index} failed ({error}); retry {attempt}");
                match &self.bar {
                    Some(bar) => bar.println(line),
                    None => eprintln!("{line}"),
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
                    None => eprintln!(
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
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Columns shown in the short table after a run.
const SHOWN: &[&str] = &[
    "model",
    "dtype",
    "batch_size",
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

/// Prints the runs table to stdout.
pub fn print_runs(rows: &[Row]) {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(SHOWN.to_vec());
    for row in rows {
        table.add_row(
            SHOWN
                .iter()
                .map(|c| row.get(c).map(|v| v.display()).unwrap_or_default())
                .collect::<Vec<_>>(),
        );
    }
    println!("{table}");
}

/// Prints the meter inventory: each meter, whether it is usable here, and why not.
pub fn print_meters(inventory: &[engine::meter::MeterStatus]) {
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
