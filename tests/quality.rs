//! Quality against f32: llmeff's figures (engine/src/quality.rs on the host kernels' logits)
//! against transformers' on the bundled tiny-stories, and the `quality_*` columns end to end
//! through the real binary, with the reference cached in the study folder.

use std::path::{Path, PathBuf};

use api::runtime::{Compute, DType, LoadedModel, ModelSpec, WeightsKind};
use assert_cmd::Command;
use backends::{BurnModel, BurnRuntime, HubCache};
use engine::quality::{QualityTally, kl_divergence_nats, log_softmax};
use results::Cell;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(dtype: DType) -> BurnModel {
    // An empty Hub cache in offline mode: the model comes from the repository's folder only.
    let runtime = BurnRuntime::with_hub_cache(
        HubCache::new(repo().join("tests/no-hub-cache-here")).offline(true),
    );
    let spec = ModelSpec {
        source: repo()
            .join("models/tiny-stories")
            .to_string_lossy()
            .into_owned(),
        revision: None,
        dtype,
        weights: WeightsKind::Pretrained,
        device: "cpu".into(),
        seed: 0,
        quantization: None,
        compute: Compute::Auto,
    };
    runtime
        .load_model(&spec)
        .unwrap_or_else(|e| panic!("loading tiny-stories at {dtype:?}: {e}"))
}

fn number(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number"))
}

/// KL within 2 % of transformers' plus 2e-7 nats; perplexity within 1e-5 relative.
///
/// Why these bounds: both implementations compute f32 logits that differ only in summation
/// order (golden.rs allows 1e-4 per logit against transformers, the bound for every instruction
/// set's kernels; measured on this model about 1e-6), and both take the figures in f64 from
/// those logits. Perplexity is the exp of a mean log-probability, which moves by about the
/// logit error relative (1e-6), so 1e-5 leaves ten times that. KL is second order in the logit
/// difference: bf16 rounding moves the logits by about 0.01, giving KL about 4e-5 nats, and an
/// independent error ε per logit moves KL by about 2ε/0.01 of itself: 2 % at golden.rs's
/// ε = 1e-4 (measured: 0.002 %). The absolute term (2e-7, 0.5 % of the figure) covers rounding
/// in the f64 sums and stays far below the golden KL, so an f32 run mistaken for bf16 (KL 0)
/// fails.
const KL_REL: f64 = 0.02;
const KL_ABS: f64 = 2e-7;
const PERPLEXITY_REL: f64 = 1e-5;

#[test]
fn bf16_quality_matches_transformers() {
    let text = std::fs::read_to_string(repo().join("models/tiny-stories/quality_golden.json"))
        .expect("models/tiny-stories/quality_golden.json (scripts/make_quality_golden.py)");
    let golden: Value = serde_json::from_str(&text).unwrap();
    let reference = load(DType::F32);
    let run = load(DType::BF16);
    // The comparison is only meaningful if the run really holds bf16 weights (f32 activations,
    // as transformers with rounded f32 weights has).
    assert!(
        run.info().compute.contains("w-bf16") && run.info().compute.ends_with(".a-f32"),
        "{}",
        run.info().compute
    );

    let mut tally = QualityTally::default();
    let mut worst_position_kl = 0.0f64;
    for sequence in golden["sequences"].as_array().unwrap() {
        let ids: Vec<u32> = sequence["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
            .collect();
        let ref_logits = reference
            .prompt_logits(std::slice::from_ref(&ids))
            .unwrap()
            .remove(0);
        let run_logits = run
            .prompt_logits(std::slice::from_ref(&ids))
            .unwrap()
            .remove(0);
        // Position by position too, so an error that cancels out in the mean still shows.
        let expected = sequence["kl_per_position_nats"].as_array().unwrap();
        assert_eq!(expected.len(), ids.len());
        for ((r, q), e) in ref_logits.iter().zip(&run_logits).zip(expected) {
            let kl = kl_divergence_nats(&log_softmax(r).unwrap(), &log_softmax(q).unwrap());
            let e = e.as_f64().unwrap();
            worst_position_kl = worst_position_kl.max((kl - e).abs() / (e + KL_ABS));
        }
        tally.add_prompt(&ids, &ref_logits, &run_logits).unwrap();
    }
    let m = tally.finish("f32", false).unwrap();
    let kl = number(&golden, "kl_mean_nats");
    let ppl_ref = number(&golden, "perplexity_ref");
    let ppl_run = number(&golden, "perplexity_run");
    let (got_ref, got_run) = (m.perplexity_ref.unwrap(), m.perplexity_run.unwrap());
    eprintln!(
        "bf16 vs f32: KL {} (transformers {kl}, rel diff {:.2e}); top-1 {} (transformers {}); \
         perplexity ref {got_ref} (transformers {ppl_ref}, rel diff {:.2e}), run {got_run} \
         (transformers {ppl_run}, rel diff {:.2e}); worst per-position KL rel diff {worst_position_kl:.2e}",
        m.kl_mean_nats,
        (m.kl_mean_nats - kl).abs() / kl,
        m.top1_agreement,
        number(&golden, "top1_agreement"),
        (got_ref - ppl_ref).abs() / ppl_ref,
        (got_run - ppl_run).abs() / ppl_run,
    );
    assert_eq!(m.positions as u64, golden["positions"].as_u64().unwrap());
    assert!(
        (m.kl_mean_nats - kl).abs() <= KL_REL * kl + KL_ABS,
        "KL {} vs transformers {kl}",
        m.kl_mean_nats
    );
    // Per position the bound is looser (a single position's KL can be near 0, where the logit
    // error weighs more); 10 % still catches another log base or a shifted position.
    assert!(
        worst_position_kl <= 0.1,
        "a position's KL is {worst_position_kl:.3} off (relative)"
    );
    // Top-1 agreement is a count: exact.
    assert_eq!(m.top1_agreement, number(&golden, "top1_agreement"));
    assert!((got_ref - ppl_ref).abs() <= PERPLEXITY_REL * ppl_ref);
    assert!((got_run - ppl_run).abs() <= PERPLEXITY_REL * ppl_run);
    // The rounding moved perplexity at all, so the check above compared two models, not one.
    assert_ne!(ppl_ref, ppl_run);
}

fn llmeff() -> Command {
    Command::cargo_bin("llmeff").expect("the llmeff binary is built for integration tests")
}

/// f32 and int8 (block 32) of tiny-stories on 8 story openings; `extra` adds runs.
fn study_script(extra: &str) -> String {
    format!(
        r#"study(#{{ name: "quality" }});
let stories = prompts("builtin:stories", #{{ count: 8, max_input_tokens: 64 }});
let f32m = load("tiny-stories", #{{ dtype: "f32", device: "cpu" }});
let int8 = quantize(f32m, #{{ method: "int8", block_size: 32 }});
measure(infer(f32m, batch(stories, #{{ size: 4 }}), #{{ max_new_tokens: 16 }}), #{{ meters: ["latency"] }});
measure(infer(int8, batch(stories, #{{ size: 4 }}), #{{ max_new_tokens: 16 }}), #{{ meters: ["latency"] }});
{extra}"#
    )
}

fn run_study(out: &Path, script: &str) {
    let path = out.join("quality.rhai");
    std::fs::write(&path, script).unwrap();
    let output = llmeff()
        .current_dir(repo())
        .args(["run", "--plain", "--quiet", "--out"])
        .arg(out)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn float(row: &results::Row, column: &str) -> Option<f64> {
    match row.get(column) {
        Some(Cell::Float(v)) => Some(*v),
        _ => None,
    }
}

fn text<'r>(row: &'r results::Row, column: &str) -> Option<&'r str> {
    match row.get(column) {
        Some(Cell::Text(v)) => Some(v),
        _ => None,
    }
}

/// The cache file of the study's one reference, with its modification time and inode.
fn cache_file(study: &Path) -> (PathBuf, std::time::SystemTime, u64) {
    use std::os::unix::fs::MetadataExt;
    let files: Vec<PathBuf> = std::fs::read_dir(study.join("quality"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one reference (tiny-stories f32 cpu): {files:?}"
    );
    let meta = std::fs::metadata(&files[0]).unwrap();
    (files[0].clone(), meta.modified().unwrap(), meta.ino())
}

#[test]
fn quality_columns_are_filled_and_the_reference_is_cached_in_the_study() {
    let tmp = tempfile::tempdir().unwrap();
    run_study(tmp.path(), &study_script(""));
    let study = tmp.path().join("quality");
    let (cached, modified, inode) = cache_file(&study);
    assert_eq!(cached.extension().and_then(|e| e.to_str()), Some("bin"));

    // A second invocation adding a run of the same model and prompts (another batch size) in
    // the same folder measures it against the cached reference: the file is neither recomputed
    // nor rewritten (a write replaces it through a rename, so a new inode and time).
    run_study(
        tmp.path(),
        &study_script(
            r#"measure(infer(int8, batch(stories, #{ size: 2 }), #{ max_new_tokens: 16 }), #{ meters: ["latency"] });"#,
        ),
    );
    assert_eq!(cache_file(&study), (cached, modified, inode));

    let rows =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    assert_eq!(rows.len(), 3);
    let of = |quant: &str, batch: i64| {
        rows.iter()
            .find(|r| {
                text(r, "quantization") == Some(quant)
                    && r.get("batch_size") == Some(&Cell::Int(batch))
            })
            .unwrap_or_else(|| panic!("no {quant} run at batch {batch}"))
    };
    let (f32_run, int8_run, int8_b2) = (of("none", 4), of("int8/b32", 4), of("int8/b32", 2));
    for row in [f32_run, int8_run, int8_b2] {
        assert_eq!(text(row, "status"), Some("ok"));
        assert_eq!(text(row, "quality_ref"), Some("tiny-stories f32 cpu"));
        assert!(
            row.get("quality_positions")
                .is_some_and(|c| *c != Cell::Null)
        );
    }
    // The f32 run is its own reference: KL 0 and full agreement by definition.
    assert_eq!(float(f32_run, "quality_kl_mean_nats"), Some(0.0));
    assert_eq!(float(f32_run, "quality_top1_agreement_ratio"), Some(1.0));
    assert_eq!(float(f32_run, "quality_greedy_agreement_ratio"), Some(1.0));
    assert_eq!(
        float(f32_run, "quality_perplexity_run"),
        float(f32_run, "quality_perplexity_ref")
    );

    let kl = float(int8_run, "quality_kl_mean_nats").unwrap();
    let top1 = float(int8_run, "quality_top1_agreement_ratio").unwrap();
    let ppl_run = float(int8_run, "quality_perplexity_run").unwrap();
    let ppl_ref = float(int8_run, "quality_perplexity_ref").unwrap();
    let greedy = float(int8_run, "quality_greedy_agreement_ratio").unwrap();
    eprintln!(
        "int8/b32 vs f32 on tiny-stories: KL {kl} nats, top-1 {top1}, perplexity {ppl_run} \
         (f32 {ppl_ref}), greedy agreement {greedy}"
    );
    // Issue D's target for int8: KL at most 0.01 nats and top-1 agreement at least 0.97.
    assert!(kl > 0.0 && kl <= 0.01, "int8 KL {kl} nats");
    assert!(top1 >= 0.97, "int8 top-1 agreement {top1}");
    // Same reference for both: the same prompt perplexity under it.
    assert_eq!(Some(ppl_ref), float(f32_run, "quality_perplexity_ref"));
    // Quality does not depend on the batch the run was timed at: the batch-2 run, measured
    // against the cached reference, gets the same figures as the batch-4 run that made it.
    for column in [
        "quality_kl_mean_nats",
        "quality_top1_agreement_ratio",
        "quality_perplexity_run",
        "quality_greedy_agreement_ratio",
    ] {
        assert_eq!(float(int8_b2, column), float(int8_run, column), "{column}");
    }
}
