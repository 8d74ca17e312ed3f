//! Serving end to end: the real binary runs tiny-stories under continuous batching, replaying
//! a trace in the Azure LLM inference traces' columns, and the tables say what happened.

use assert_cmd::Command;
use results::Cell;
use results::parquet_io::read_rows;
use results::schema::{REQUEST_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS, TOKEN_COLUMNS};
use std::path::{Path, PathBuf};

fn llmeff() -> Command {
    Command::cargo_bin("llmeff").expect("the llmeff binary is built for integration tests")
}

fn float(row: &results::Row, key: &str) -> f64 {
    match row.get(key) {
        Some(Cell::Float(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

fn int(row: &results::Row, key: &str) -> i64 {
    match row.get(key) {
        Some(Cell::Int(v)) => *v,
        other => panic!("{key}: {other:?}"),
    }
}

/// Every part file of a per-execution folder (`requests/`, `tokens/`, `samples/`).
fn rows_in(dir: &Path, columns: &'static [results::schema::Column]) -> Vec<results::Row> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| read_rows(f, columns).unwrap())
        .collect()
}

#[test]
fn a_trace_replays_under_continuous_batching_with_its_arrivals_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    // Six requests over 0.3 s, prompts of 3 to 40 tokens, 1 to 12 output tokens.
    let trace = dir.path().join("azure.csv");
    std::fs::write(
        &trace,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n\
         2023-11-16 18:15:46.000,40,12\n\
         2023-11-16 18:15:46.050,3,1\n\
         2023-11-16 18:15:46.100,17,9\n\
         2023-11-16 18:15:46.120,25,4\n\
         2023-11-16 18:15:46.200,8,12\n\
         2023-11-16 18:15:46.300,31,6\n",
    )
    .unwrap();
    let script = dir.path().join("serve.rhai");
    std::fs::write(
        &script,
        format!(
            "study(#{{ name: \"serve\" }});\n\
             let m = load(\"tiny-stories\");\n\
             let p = prompts(\"builtin:stories\", #{{ count: 4 }});\n\
             let r = infer(m, p, #{{ max_new_tokens: 16, stop_at_eos: false, warmup: 0,\n\
                 arrival: #{{ pattern: \"trace\", path: \"{}\" }},\n\
                 serve: #{{ max_batch: 2, max_batch_tokens: 24, prefill: \"chunked\" }},\n\
                 slo: #{{ ttft_s: 10.0 }} }});\n\
             measure(r, #{{ meters: [\"latency\", \"memory\"], interval_ms: 5 }});\n\
             infer(m, batch(p, #{{ size: 2 }}), #{{ max_new_tokens: 16, stop_at_eos: false,\n\
                 warmup: 0, arrival: #{{ pattern: \"trace\", path: \"{}\" }} }});\n",
            trace.display(),
            trace.display()
        ),
    )
    .unwrap();
    let out = llmeff()
        .arg("run")
        .arg(&script)
        .args(["--plain", "--out"])
        .arg(dir.path().join("runs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let study = dir.path().join("runs/serve");
    let runs = read_rows(&study.join("runs.parquet"), RUN_COLUMNS).unwrap();
    assert_eq!(runs.len(), 2);
    let served = |r: &&results::Row| r.get("serve_max_batch") != Some(&Cell::Null);
    let run = runs.iter().find(served).expect("the served run");
    let fixed = runs
        .iter()
        .find(|r| !served(r))
        .expect("the fixed-batch run");
    let hash = |r: &results::Row| match r.get("run_hash") {
        Some(Cell::Text(h)) => h.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(run.get("status"), Some(&Cell::Text("ok".into())));
    assert_eq!(int(run, "num_requests"), 6);
    assert_eq!(int(run, "serve_max_batch"), 2);
    assert_eq!(
        run.get("serve_prefill"),
        Some(&Cell::Text("chunked".into()))
    );
    assert_eq!(run.get("arrival"), Some(&Cell::Text("trace".into())));
    // A 10 s TTFT target holds for all: goodput is the request rate.
    assert_eq!(float(run, "slo_attainment_ratio"), 1.0);
    let wall = float(run, "wall_s");
    assert!((float(run, "goodput_requests_per_s") - 6.0 / wall).abs() < 1e-9);
    assert!(int(run, "serve_iterations") > 0);

    // The requests: the trace's arrivals, prompt and output lengths (stop_at_eos false).
    let all_requests = rows_in(&study.join("requests"), REQUEST_COLUMNS);
    let of_run = |run: &results::Row| {
        let mut rows: Vec<results::Row> = all_requests
            .iter()
            .filter(|r| hash(r) == hash(run))
            .cloned()
            .collect();
        rows.sort_by_key(|r| int(r, "request_index"));
        rows
    };
    let requests = of_run(run);
    // Fixed batches of the same trace: each request keeps its own output length, while its
    // batch ran until the batch's longest ended.
    let fixed_requests = of_run(fixed);
    assert_eq!(fixed_requests.len(), 6);
    let expected = [
        (0.0, 40, 12),
        (0.05, 3, 1),
        (0.1, 17, 9),
        (0.12, 25, 4),
        (0.2, 8, 12),
        (0.3, 31, 6),
    ];
    for (r, (_, input, output)) in fixed_requests.iter().zip(expected) {
        assert_eq!(
            (int(r, "input_tokens"), int(r, "output_tokens")),
            (input, output)
        );
    }
    for (r, (arrival, input, output)) in requests.iter().zip(expected) {
        assert!((float(r, "arrival_s") - arrival).abs() < 1e-6, "{r:?}");
        assert_eq!(int(r, "input_tokens"), input);
        assert_eq!(int(r, "output_tokens"), output);
        // arrival <= admission <= first token <= last token, and the latencies agree.
        let (a, adm, first, last) = (
            float(r, "arrival_s"),
            float(r, "admitted_s"),
            float(r, "first_token_s"),
            float(r, "last_token_s"),
        );
        assert!(a <= adm + 1e-9 && adm <= first && first <= last, "{r:?}");
        assert!((float(r, "ttft_s") - (first - a)).abs() < 1e-9);
        assert!((float(r, "e2e_s") - (last - a)).abs() < 1e-9);
        assert!((float(r, "queue_s") - (adm - a)).abs() < 1e-9);
    }

    // One token row per generated token, gaps summing to first → last.
    let tokens: Vec<results::Row> = rows_in(&study.join("tokens"), TOKEN_COLUMNS)
        .into_iter()
        .filter(|t| hash(t) == hash(run))
        .collect();
    assert_eq!(tokens.len(), 12 + 1 + 9 + 4 + 12 + 6);
    for r in &requests {
        let index = int(r, "request_index");
        let mine: Vec<&results::Row> = tokens
            .iter()
            .filter(|t| int(t, "request_index") == index)
            .collect();
        assert_eq!(mine.len() as i64, int(r, "output_tokens"));
        let gaps: f64 = mine
            .iter()
            .filter_map(|t| match t.get("itl_s") {
                Some(Cell::Float(g)) => Some(*g),
                _ => None,
            })
            .sum();
        let span = float(r, "last_token_s") - float(r, "first_token_s");
        assert!(
            (gaps - span).abs() < 1e-9,
            "request {index}: {gaps} vs {span}"
        );
    }

    // The samples carry the running batch, never above max_batch.
    let samples: Vec<results::Row> = rows_in(&study.join("samples"), SAMPLE_COLUMNS)
        .into_iter()
        .filter(|s| hash(s) == hash(run))
        .collect();
    assert!(!samples.is_empty());
    assert!(samples.iter().all(|s| int(s, "running_requests") <= 2));
}

#[test]
fn bad_trace_and_serving_options_are_located() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        (
            "infer(load(\"tiny-stories\"), prompts(\"builtin:chat\"), #{ arrival: #{ pattern: \"trace\" } });",
            "path",
        ),
        (
            "infer(load(\"tiny-stories\"), prompts(\"builtin:chat\"), #{ serve: #{ max_batch: 8, max_batch_tokens: 4 } });",
            "max_batch_tokens",
        ),
        (
            "infer(load(\"tiny-stories\"), prompts(\"builtin:chat\"), #{ serve: #{ prefil: \"whole\" } });",
            "prefill",
        ),
    ] {
        let script = dir.path().join("bad.rhai");
        std::fs::write(&script, body).unwrap();
        let out = llmeff().arg("plan").arg(&script).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{body}");
        assert!(
            err.contains("bad.rhai:1:") && err.contains(needle),
            "{body}: {err}"
        );
    }
}
