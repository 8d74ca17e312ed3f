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
