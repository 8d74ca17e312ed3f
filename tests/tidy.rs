//! Tidy checks over the repository's Rust sources: no `dbg!`, `todo!`, `unimplemented!` or
//! ignored tests; every module opens with a `//!` header; no numbered file names.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "runs" | "snapshots") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn sources_are_tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "engine", "backends", "results", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let mut problems = Vec::new();
    // Built from pieces so this file does not flag itself.
    let banned = [
        ["dbg", "!("].concat(),
        ["todo", "!("].concat(),
        ["unimplemented", "!("].concat(),
        ["#[", "ignore"].concat(),
    ];
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        for b in &banned {
            if text.contains(b.as_str()) {
                problems.push(format!("{rel}: contains `{b}`"));
            }
        }
        let is_test_support = rel.contains("/tests/") || rel.starts_with("tests/");
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !is_test_support && !first.starts_with("//!") {
            problems.push(format!("{rel}: no `//!` module header"));
        }
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        // `a_config.rs`, `b_loader.rs`, `01_main.rs`: order belongs in the DAG, not file names.
        let bytes = stem.as_bytes();
        let numbered = bytes.first().is_some_and(u8::is_ascii_digit)
            || (bytes.len() > 2 && bytes[1] == b'_' && bytes[0].is_ascii_lowercase());
        if numbered {
            problems.push(format!("{rel}: numbered file name"));
        }
    }
    assert!(
        problems.is_empty(),
        "tidy problems:\n{}",
        problems.join("\n")
    );
}

/// The part of a source file before its unit-test module, where test-only code starts.
fn library_part(text: &str) -> &str {
    // A file that is a test module throughout says so in an inner attribute.
    if text.contains("\n#![cfg(test)]\n") {
        return "";
    }
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// Library and binary sources (not tests, benches or build scripts), relative to the root.
fn product_sources(root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for dir in ["src", "engine", "backends", "results"] {
        rust_files(&root.join(dir), &mut files);
    }
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&file).unwrap())
        })
        .filter(|(rel, _)| {
            !rel.contains("/tests/") && !rel.contains("/benches/") && !rel.ends_with("build.rs")
        })
        .collect()
}

#[test]
fn every_crate_takes_the_workspace_lints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest
        .split("members = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap();
    let mut missing = Vec::new();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let text = std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
        if !text.contains("[lints]\nworkspace = true") {
            missing.push(member.to_string());
        }
    }
    if !manifest.contains("[lints]\nworkspace = true") {
        missing.push("(root package)".into());
    }
    assert!(
        missing.is_empty(),
        "crates without `[lints] workspace = true`: {missing:?}"
    );
}

#[test]
fn library_code_returns_typed_errors() {
    // Clippy cannot see an error type: a `String` error loses the structure callers match on.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let offenders: Vec<String> = product_sources(root)
        .into_iter()
        .filter(|(rel, _)| !rel.starts_with("src/"))
        .flat_map(|(rel, text)| {
            library_part(&text)
                .lines()
                .enumerate()
                .filter(|(_, line)| line.contains(", String>") && line.contains("Result<"))
                .map(|(i, line)| format!("{rel}:{}: {}", i + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "`Result<_, String>` in library code:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn nothing_shipped_reads_the_source_tree() {
    // An installed binary must not depend on where it was built.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let needle = ["env!(\"CARGO_", "MANIFEST_DIR\")"].concat();
    let offenders: Vec<String> = product_sources(root)
        .into_iter()
        .filter(|(_, text)| library_part(text).contains(&needle))
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        offenders.is_empty(),
        "build-time source paths in shipped code: {offenders:?}"
    );
}

#[test]
fn every_environment_variable_is_documented() {
    // A hidden switch that changes what is measured must at least be written down.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = String::new();
    for doc in ["README.md", "ARCHITECTURE.md", "docs/scripting.md"] {
        docs.push_str(&std::fs::read_to_string(root.join(doc)).unwrap_or_default());
    }
    let mut undocumented = std::collections::BTreeSet::new();
    for (rel, text) in product_sources(root) {
        let text = library_part(&text);
        for (at, _) in text.match_indices("\"LLMEFF_") {
            let name: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.len() > "LLMEFF_".len() && !docs.contains(&name) {
                undocumented.insert(format!("{name} ({rel})"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "environment variables no document names: {undocumented:?}"
    );
}

#[test]
fn measurement_logs_live_in_docs_perf() {
    // Figures measured on one machine on one day date quickly; code keeps the decision, and
    // `docs/perf/` keeps the dated measurements it rests on.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let units = ["GB/s", "GF/s", "GFLOP/s", "tok/s", "tokens/s"];
    let mut offenders = Vec::new();
    for (rel, text) in product_sources(root) {
        for (i, line) in library_part(&text).lines().enumerate() {
            let comment = match line.find("//") {
                Some(at) => &line[at..],
                None => continue,
            };
            let measured = units.iter().any(|unit| {
                comment.match_indices(unit).any(|(at, _)| {
                    comment[..at]
                        .trim_end()
                        .chars()
                        .last()
                        .is_some_and(|c| c.is_ascii_digit())
                })
            });
            if measured {
                offenders.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "measured figures in code comments (move them to docs/perf/):\n{}",
        offenders.join("\n")
    );
}
