//! The script vocabulary (engine/src/vocabulary.rs) against the planner: every declared key is
//! read, and every declared example is a valid value of its key.

use engine::plan::Plan;
use engine::script::plan_script;
use engine::vocabulary::{self, TOPICS, TopicKind};
use std::path::Path;

/// A script that passes `opts` (the inside of a map) to `topic`'s options, planning one run.
fn script(topic: &str, opts: &str) -> String {
    let run = |load: &str, prompts: &str, batch: &str, infer: &str| {
        format!(
            "infer(load(\"tiny-stories\"{load}), batch(prompts(\"builtin:stories\"{prompts}){batch}){infer})"
        )
    };
    let map = format!(", #{{ {opts} }}");
    match topic {
        "study" => format!("study(#{{ {opts} }});\n{};", run("", "", "", "")),
        "load" => format!("{};", run(&map, "", "", "")),
        "quantize" => {
            format!("infer(quantize(load(\"tiny-stories\"){map}), prompts(\"builtin:stories\"));")
        }
        "prompts" => format!("{};", run("", &map, "", "")),
        "batch" => format!("{};", run("", "", &map, "")),
        "infer" => format!("{};", run("", "", "", &map)),
        "decoding" | "arrival" | "serve" | "slo" => {
            format!(
                "{};",
                run("", "", "", &format!(", #{{ {topic}: #{{ {opts} }} }}"))
            )
        }
        "measure" => format!("measure({}{map});", run("", "", "", "")),
        "carbon" => format!(
            "measure({}, #{{ carbon: #{{ {opts} }} }});",
            run("", "", "", "")
        ),
        "aggregate" => format!("{};\naggregate(#{{ {opts} }});", run("", "", "", "")),
        other => panic!("no script for `{other}`: add it here"),
    }
}

/// What a key can change: the study settings and every node (its content hash).
fn fingerprint(plan: &Plan) -> String {
    let mut ids: Vec<String> = plan.nodes().map(|n| n.id.hex()).collect();
    ids.sort();
    format!("{:?} {}", plan.study, ids.join(","))
}

fn plan(topic: &str, opts: &str) -> Plan {
    let source = script(topic, opts);
    plan_script(Path::new("keys.rhai"), &source, "keys")
        .unwrap_or_else(|e| panic!("`{topic}` with `{opts}` does not plan:\n{source}\n{e}"))
}

/// The options without `key` (or with another value where the key is required) and with
/// `key: example`, each with what the key needs beside it to be valid.
fn cases(topic: &str, key: &str, example: &str) -> (String, String) {
    let set = format!("{key}: {example}");
    let (context, other) = match (topic, key) {
        ("quantize", "method") => ("", Some("\"int8\"")),
        ("quantize", _) => ("method: \"int8\"", None),
        ("decoding", "method") => ("", None),
        ("decoding", _) => ("method: \"sample\"", None),
        // The example pattern (poisson) needs its rate; the default pattern takes none.
        ("arrival", "pattern") => return (String::new(), format!("{set}, rate_per_s: 5.0")),
        ("arrival", "interval_s") => ("pattern: \"constant\"", Some("1.0")),
        ("arrival", "rate_per_s") => ("pattern: \"poisson\"", Some("1.0")),
        ("arrival", "seed") => ("pattern: \"poisson\", rate_per_s: 1.0", None),
        ("arrival", "burst") => ("pattern: \"bursty\", off_s: 1.0", Some("1")),
        ("arrival", "off_s") => ("pattern: \"bursty\", burst: 2", Some("1.0")),
        ("arrival", "burstiness") => ("pattern: \"gamma\", rate_per_s: 1.0", None),
        ("arrival", "path") => return trace_cases(&set, "\"other.csv\""),
        ("arrival", "time_scale") => return trace_cases(&set, "1.0"),
        // The defaults' neighbours: with 16 slots the budget is 2048 unless set.
        ("serve", "max_batch_tokens") => ("", Some("1024")),
        ("slo", "ttft_s") => ("tpot_s: 0.05", None),
        ("slo", "tpot_s") => ("ttft_s: 0.5", None),
        ("carbon", "region") => ("country: \"SWE\"", None),
        _ => ("", None),
    };
    let join = |pair: Option<String>| {
        [Some(context.to_string()).filter(|c| !c.is_empty()), pair]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
    };
    (join(other.map(|v| format!("{key}: {v}"))), join(Some(set)))
}

/// A trace pattern with `set` (`path: ...` or `time_scale: ...`) against the same with `other`
/// for that key.
fn trace_cases(set: &str, other: &str) -> (String, String) {
    let key = set.split(':').next().unwrap_or_default();
    let base = |kv: String| {
        let path = if key == "path" {
            String::new()
        } else {
            "path: \"t.csv\", ".to_string()
        };
        format!("pattern: \"trace\", {path}{kv}")
    };
    (base(format!("{key}: {other}")), base(set.to_string()))
}

/// Sets each declared key to its example, beside the same script without it (or with another
/// value where the key is required): the plans must differ, so no key is accepted and then
/// dropped (as study's `retries` once was).
#[test]
fn every_declared_key_is_read_by_the_planner() {
    let mut checked = 0;
    for topic in TOPICS
        .iter()
        .filter(|t| matches!(t.kind, TopicKind::Stage | TopicKind::OptionMap))
    {
        for key in topic.options {
            let (without, with) = cases(topic.name, key.name, key.example);
            let baseline = plan(topic.name, &without);
            let changed = plan(topic.name, &with);
            assert_ne!(
                fingerprint(&baseline),
                fingerprint(&changed),
                "`{}: {}` of {}() changes nothing in the plan",
                key.name,
                key.example,
                topic.name
            );
            checked += 1;
        }
    }
    let declared: usize = TOPICS.iter().map(|t| t.options.len()).sum();
    assert_eq!(checked, declared);
}

#[test]
fn a_value_of_the_wrong_type_names_the_declared_type() {
    for topic in TOPICS
        .iter()
        .filter(|t| matches!(t.kind, TopicKind::Stage | TopicKind::OptionMap))
    {
        for key in topic.options {
            // A value of no declared type: a character.
            let source = script(topic.name, &format!("{}: 'x'", key.name));
            let err = plan_script(Path::new("t.rhai"), &source, "t").unwrap_err();
            let expected = format!(
                "option `{}` of {}() expects {}, got",
                key.name,
                topic.name,
                key.ty.expected()
            );
            assert!(err.message.starts_with(&expected), "{}", err.message);
        }
    }
}

#[test]
fn completion_offers_every_function_and_key() {
    let words = vocabulary::completion_words();
    for name in [
        "quantize",
        "load",
        "infer",
        "measure",
        "aggregate",
        "builtin_prompt_sets",
    ] {
        assert!(words.contains(&name), "{name} is not completed");
    }
    for topic in TOPICS {
        for key in topic.options {
            assert!(words.contains(&key.name), "{} is not completed", key.name);
        }
    }
}

#[test]
fn a_misspelt_group_by_column_fails_while_planning() {
    let err = plan_script(
        Path::new("agg.rhai"),
        &script("aggregate", "by: [\"model\", \"batch_sise\"]"),
        "agg",
    )
    .unwrap_err();
    assert_eq!(err.line, 2);
    assert!(
        err.message.starts_with(
            "option `by` of aggregate(): `batch_sise` is not a column of runs.parquet; did you mean `batch_size`? columns: study, run_hash,"
        ),
        "{}",
        err.message
    );
    // Every column may be grouped by.
    let all = vocabulary::GROUP_BY_COLUMNS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    plan("aggregate", &format!("by: [{all}]"));
}

#[test]
fn compute_host_is_refused_where_the_host_kernels_cannot_run() {
    for (opts, message) in [
        (
            "compute: \"host\", device: \"cuda:0\"",
            "option `compute` of load(): \"host\" runs on the cpu only, not on cuda:0; use \"burn\" or \"auto\"",
        ),
        (
            "compute: \"hots\"",
            "option `compute` of load(): `hots` is not one of: auto, host, burn",
        ),
    ] {
        let err = plan_script(Path::new("c.rhai"), &script("load", opts), "c").unwrap_err();
        assert_eq!(err.message, message, "{opts}");
    }
    // Every dtype and a quantized model with 32-multiple blocks run on the host kernels.
    plan("load", "compute: \"host\", dtype: \"bf16\"");
    plan_script(
        Path::new("q.rhai"),
        "infer(quantize(load(\"tiny-stories\", #{ compute: \"host\" }), #{ method: \"int4\", block_size: 64 }), prompts(\"builtin:chat\"));",
        "q",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = plan_script(
        Path::new("q.rhai"),
        "infer(quantize(load(\"tiny-stories\", #{ compute: \"host\" }), #{ method: \"int8\", block_size: 16 }), prompts(\"builtin:chat\"));",
        "q",
    )
    .unwrap_err();
    assert!(
        err.message
            .starts_with("option `block_size` of quantize(): must be a multiple of 32 for a model loaded with compute \"host\""),
        "{}",
        err.message
    );
    // The chosen pass reaches the runtime's model spec.
    let run = plan("load", "compute: \"burn\"").runs().remove(0);
    assert_eq!(run.model_spec().compute, api::runtime::Compute::Burn);
    let run = plan("load", "").runs().remove(0);
    assert_eq!(run.model_spec().compute, api::runtime::Compute::Auto);
}

/// The valid values the reference lists for a choice are the names the planner accepts.
#[test]
fn documented_choices_are_the_accepted_names() {
    use api::meter::EstimateMode;
    use api::runtime::{Compute, DType, QuantMethod};
    let names = |v: &[&str]| v.join(", ");
    let choices: Vec<(&str, &str, String)> = vec![
        ("load", "dtype", names(&DType::ALL.map(|d| d.name()))),
        ("load", "compute", names(&Compute::NAMES)),
        (
            "quantize",
            "method",
            names(&QuantMethod::ALL.map(|m| m.name())),
        ),
        ("measure", "meters", names(vocabulary::METERS)),
        ("measure", "estimate", names(&EstimateMode::NAMES)),
        ("aggregate", "stats", names(vocabulary::STATS)),
        (
            "study",
            "placement",
            names(&engine::placement::Placement::NAMES),
        ),
    ];
    for (topic, key, accepted) in choices {
        let declared = vocabulary::options_of(topic)
            .iter()
            .find(|k| k.name == key)
            .unwrap_or_else(|| panic!("{topic}.{key} is not declared"));
        assert_eq!(declared.values, accepted, "{topic}.{key}");
        // And each is accepted.
        for name in accepted.split(", ") {
            let value = if declared.ty == vocabulary::KeyType::Strings {
                format!("[\"{name}\"]")
            } else {
                format!("\"{name}\"")
            };
            let source = script(topic, &format!("{key}: {value}"));
            if let Err(e) = plan_script(Path::new("c.rhai"), &source, "c") {
                panic!("{topic}.{key}: `{name}` is refused: {e}");
            }
        }
    }
}
