//! End-to-end tests of `llmeff help` (the scripting reference) and of how script typos are
//! reported by the real binary.

use assert_cmd::Command;
use std::path::PathBuf;

fn llmeff() -> Command {
    Command::cargo_bin("llmeff").expect("the llmeff binary is built for integration tests")
}

fn stdout_of(args: &[&str]) -> String {
    let out = llmeff().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_lists_every_stage_and_stdlib_module() {
    let text = stdout_of(&["help"]);
    for topic in [
        "study",
        "load",
        "quantize",
        "prompts",
        "batch",
        "infer",
        "measure",
        "aggregate",
        "decoding",
        "arrival",
        "carbon",
        "sweep",
        "scenarios",
        "models",
    ] {
        assert!(text.contains(&format!("\n  {topic} ")), "{topic}:\n{text}");
    }
    assert!(text.contains("Commands: run, plan,"), "{text}");
}

#[test]
fn help_on_a_stage_prints_its_options_with_defaults_and_an_example() {
    let text = stdout_of(&["help", "load"]);
    assert!(
        text.starts_with("load(model)\nload(model, #{ options })\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  dtype     string            \"f32\""),
        "no dtype row with its default:\n{text}"
    );
    assert!(text.contains("f32, f16, bf16"), "{text}");
    assert!(
        text.contains("\nExample:\n  let m = load(\"tiny-stories\""),
        "{text}"
    );
    // A command name shows that command's help.
    let run = stdout_of(&["help", "run"]);
    assert!(run.contains("Usage: llmeff run"), "{run}");
}

#[test]
fn help_on_an_unknown_topic_lists_the_topics_and_exits_2() {
    let out = llmeff().args(["help", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: no help topic `nosuch`; topics: study, load, quantize,"),
        "{stderr}"
    );
    let out = llmeff().args(["help", "mesure"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `measure`?"), "{stderr}");
}

#[test]
fn help_markdown_is_the_checked_in_docs_page() {
    let docs = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/scripting.md"),
    )
    .unwrap();
    assert!(
        stdout_of(&["help", "--markdown"]) == docs,
        "docs/scripting.md is stale: cargo run -q -- help --markdown > docs/scripting.md"
    );
}

#[test]
fn a_misspelt_stage_in_a_script_says_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("typo.rhai");
    std::fs::write(
        &script,
        "study(#{ name: \"t\" });\nlet m = laod(\"tiny-stories\");\n",
    )
    .unwrap();
    let out = llmeff().arg("plan").arg(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {}:2:9: unknown function `laod`: did you mean `load`?\n  |\n2 | let m = laod(\"tiny-stories\");\n  |         ^\n",
            script.display()
        )
    );
}

#[test]
fn plan_shows_the_study_retries() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("retries.rhai");
    std::fs::write(
        &script,
        "study(#{ retries: 0, retry_delay_s: 0.5 });\ninfer(load(\"tiny-stories\"), prompts(\"builtin:stories\"));\n",
    )
    .unwrap();
    let text = stdout_of(&["plan", script.to_str().unwrap()]);
    assert!(
        text.contains("\n  Retries 0 after a backend error, 0.5 s apart\n"),
        "{text}"
    );
}

#[test]
fn help_definitions_prints_the_editor_definitions_file() {
    let text = stdout_of(&["help", "--definitions"]);
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/llmeff.d.rhai"),
    )
    .unwrap();
    assert_eq!(text, committed);
    assert!(text.contains("\nfn quantize(model: Node, options: Map) -> Node;\n"));
}

/// `aggregate(#{ by })` is checked while planning against the engine's list of columns
/// (the engine does not depend on the results crate): that list is the runs table's columns.
#[test]
fn the_engines_group_by_columns_are_the_runs_table_columns() {
    let schema: Vec<&str> = results::schema::RUN_COLUMNS
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(engine::vocabulary::GROUP_BY_COLUMNS, schema.as_slice());
}

#[test]
fn a_misspelt_aggregate_column_fails_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agg.rhai");
    std::fs::write(
        &script,
        "infer(load(\"tiny-stories\"), prompts(\"builtin:stories\", #{ count: 1 }), #{ max_new_tokens: 2 });\naggregate(#{ by: [\"modle\"] });\n",
    )
    .unwrap();
    let out = llmeff()
        .arg("run")
        .arg(&script)
        .args(["--plain", "--out"])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`modle` is not a column of runs.parquet; did you mean `model`?"),
        "{stderr}"
    );
    // Nothing ran: no study folder with results.
    assert!(!dir.path().join("runs/agg/runs.parquet").exists());
}

/// The scripting reference names every model that loads with random weights without a
/// download, and every bundled alias (the text is the engine's, which cannot see backends).
#[test]
fn help_on_load_names_every_preset_and_bundled_alias() {
    // `llmeff help` wraps nothing, but a name may sit across a line break in the source text:
    // compare with whitespace removed.
    let text: String = stdout_of(&["help", "load"]).split_whitespace().collect();
    for id in backends::preset_ids().chain(backends::bundled_aliases()) {
        assert!(text.contains(id), "`llmeff help load` does not name {id}");
    }
}
