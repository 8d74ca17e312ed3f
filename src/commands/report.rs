//! `llmeff report`: a study's tables on the terminal, its charts and HTML page in the folder.

use std::process::ExitCode;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::Failure;
use crate::cli::ReportArgs;

/// Writes `<dir>/report/` and prints the tables, notes and written files.
pub fn run(args: ReportArgs) -> Result<ExitCode, Failure> {
    let report = results::write_report(&args.dir).map_err(|e| {
        if e.is_input() {
            Failure::input(e.to_string())
        } else {
            Failure::work(e.to_string())
        }
    })?;
    println!(
        "study {}: {} run{} (report generated {})",
        report.study,
        report.runs,
        if report.runs == 1 { "" } else { "s" },
        report.generated_at
    );
    if !report.environment.is_empty() {
        println!("\nEnvironment");
        for e in &report.environment {
            println!("  {}: {}", e.label, e.values.join("; "));
        }
    }
    for t in &report.tables {
        println!("\n{}", t.title);
        if t.rows.is_empty() {
            println!("none");
            continue;
        }
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY);
        table.set_header(t.header.clone());
        for row in &t.rows {
            table.add_row(row.clone());
        }
        println!("{table}");
    }
    if !report.notes.is_empty() {
        println!();
        for note in &report.notes {
            println!("note: {note}");
        }
    }
    println!("\nwritten:");
    for file in &report.files {
        println!("  {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}
