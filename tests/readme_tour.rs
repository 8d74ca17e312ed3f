//! The README's "A short tour" runs top to bottom as written: every shell command of the
//! section's `sh` blocks runs, in order, against the built binary (`cargo run --release --`
//! becomes the test's `llmeff`) in a scratch folder holding a copy of `experiments/` and
//! `models/`, so its
//! `runs/` and `plan.svg` land there.
//!
//! Commands that need Graphviz's `dot` or `python3` with pyarrow are skipped where those are
//! missing, unless `LLMEFF_REQUIRE_TOUR_TOOLS=1` (CI sets it), which makes a missing tool a
//! failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CARGO_RUN: &str = "cargo run --release --";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shell commands of the `sh` blocks under `## A short tour`, comments dropped and
/// backslash-continued lines joined.
fn tour_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_section = false;
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("## ") {
            in_section = line.trim() == "## A short tour";
            continue;
        }
        if !in_section {
            continue;
        }
        let trimmed = line.trim();
        if !in_block {
            in_block = trimmed == "```sh";
            continue;
        }
        if trimmed == "```" {
            in_block = false;
            continue;
        }
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tool a command needs beyond the binary and a shell, if it is missing here.
fn missing_tool(command: &str) -> Option<&'static str> {
    if command.contains("| dot ") && !succeeds("dot", &["-V"]) {
        return Some("Graphviz `dot` (apt-get install graphviz)");
    }
    if command.starts_with("python3 ") && !succeeds("python3", &["-c", "import pyarrow"]) {
        return Some("python3 with pyarrow (pip install pyarrow)");
    }
    None
}

#[test]
fn the_tour_is_the_binary_and_the_tools_the_readme_names() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let commands = tour_commands(&readme);
    assert!(commands.len() >= 8, "{commands:?}");
    for c in &commands {
        assert!(
            c.starts_with(&format!("{CARGO_RUN} ")) || c.starts_with("python3 "),
            "a tour command this test cannot run: {c}"
        );
    }
    // The tools the tour needs are named, with how to install them.
    assert!(readme.contains("apt-get install graphviz"));
    assert!(readme.contains("pip install pyarrow"));
}

#[test]
fn the_readme_tour_runs_top_to_bottom() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let require_tools = std::env::var("LLMEFF_REQUIRE_TOUR_TOOLS").as_deref() == Ok("1");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("experiments"), &dir.path().join("experiments"));
    // The tour names a bundled model by its folder, `models/<alias>`, as from the repository.
    copy_dir(&repo().join("models"), &dir.path().join("models"));
    let binary = shell_quote(env!("CARGO_BIN_EXE_llmeff"));
    let mut ran = Vec::new();
    for command in tour_commands(&readme) {
        if let Some(tool) = missing_tool(&command) {
            assert!(
                !require_tools,
                "LLMEFF_REQUIRE_TOUR_TOOLS=1 but this tour command needs {tool}: {command}"
            );
            eprintln!("skipped (needs {tool}; LLMEFF_REQUIRE_TOUR_TOOLS=1 requires it): {command}");
            continue;
        }
        let line = command.replace(CARGO_RUN, &binary);
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("set -eo pipefail; {line}"))
            .current_dir(dir.path())
            .env("LLMEFF_HISTORY", dir.path().join("history"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The REPL reads its commands from standard input; everything else gets none.
        let input = if command.contains(" repl") {
            ":quit\n"
        } else {
            ""
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tour command failed ({}): {command}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran.push(command);
    }
    let ran_with = |needle: &str| ran.iter().any(|c| c.contains(needle));
    assert!(ran_with(" help load"), "{ran:?}");
    assert!(ran_with(" repl"), "{ran:?}");
    assert!(ran_with(" run experiments/single.rhai"), "{ran:?}");
    assert!(ran_with("generate --model models/tiny-gemma2"), "{ran:?}");
    assert!(dir.path().join("runs/models/runs.parquet").is_file());
    assert!(dir.path().join("runs/single/runs.parquet").is_file());
    assert!(dir.path().join("runs/single/requests").is_dir());
    if ran_with("| dot ") {
        let svg = std::fs::read_to_string(dir.path().join("plan.svg")).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
    }
}
