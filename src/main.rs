//! The `llmeff` command line: parses arguments, wires the engine to a runtime and the results
//! store, renders progress and errors. Logic lives in the library crates.

#![allow(clippy::print_stdout)] // the binary is where output is written

/// `eprintln!` that ignores a failed write: once a terminal hangs up (SIGHUP) writes to it
/// fail with EIO, and a study stopping cleanly must not panic over a line no one can read.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod commands;
mod environment;
mod signals;
mod table;

use clap::Parser;
use std::process::ExitCode;

/// An error that ends the command, with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// 1 = the work failed, 2 = bad input (arguments, script, missing file or model).
    pub code: u8,
    /// Message printed after `error: `.
    pub message: String,
}

impl Failure {
    /// Bad input: exit code 2.
    pub fn input(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The work failed: exit code 1.
    pub fn work(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// Restores the default action of SIGPIPE, which Rust's runtime sets to ignore: with it, a
/// reader that stops early (`llmeff plan s.rhai | head -1`) ends llmeff quietly as it ends any
/// Unix tool, where ignoring it made every `println!` after that panic with "Broken pipe".
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: runs first thing in `main`, before any other thread exists, and installs the
    // system's default action, which needs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = cli::Cli::parse();
    // A bundled model unpacked into the data folder on first use is said once, on stderr.
    backends::bundled::set_unpack_listener(|notice| note!("{notice}"));
    let result = match cli.command {
        cli::Command::Run(args) => commands::run::run(args),
        cli::Command::Plan(args) => commands::plan::run(args),
        cli::Command::Generate(args) => commands::generate::run(args),
        cli::Command::Repl(args) => commands::repl::run(args),
        cli::Command::Report(args) => commands::report::run(args),
        cli::Command::Env(args) => commands::env::run(args.json),
        cli::Command::Bench(args) => commands::bench::run(args),
        cli::Command::Help(args) => commands::help::run(args),
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
