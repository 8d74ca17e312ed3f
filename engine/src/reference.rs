//! The scripting reference rendered from [`crate::vocabulary`]: `llmeff help` text, the
//! Markdown of `docs/scripting.md` ([`markdown`]) and the editors' definitions file
//! `docs/llmeff.d.rhai` ([`definitions`]).
//!
//! Tests check that the stdlib functions are the ones the modules define and that every
//! example plans.

use crate::vocabulary::{TOPICS, Topic, TopicKind};
/// Introduction of `docs/scripting.md`.
const INTRO: &str = "\
A study is a [Rhai](https://rhai.rs) script. Evaluating it only *builds a plan*: each stage \
function adds a node to a DAG (`load -> prompts -> batch -> infer -> measure`, plus \
`aggregate`) and returns a handle to it; nothing is loaded or run until `llmeff run`. Equal calls \
return the same node, so a model shared by many runs is loaded once per cycle. \
`llmeff plan script.rhai` shows what a script would run.

Options are maps, `#{ key: value }`. Every key is checked: an unknown key is an error that \
suggests the closest valid one and lists them all, and a wrong type or a value out of range \
names what is allowed. A left-out key takes the default shown below. Integers are written \
without a point (`4`); a number accepts `4` or `0.5`.

Handles (the values stage functions return) have two properties: `.id`, the node's short \
content hash, and `.kind`, the stage's name.

Scripts may `import` modules: the standard library below (`import \"sweep\" as sweep;`), a \
file relative to the importing script (`import \"./lib/common\" as common;`), or a file in a \
folder listed in `LLMEFF_PATH` (separated like `PATH`). The sandbox has no `eval` and no \
clock or sleep (`timestamp()` and `sleep()` are errors: a plan depends on its script only and \
planning never waits), and limits operations, \
call depth and sizes. `print(x)` and `debug(x)` write a line to the terminal (stderr) as the \
script runs.

Budgets are checked while the script runs, before anything is loaded or allocated: a value \
over one is an error at its line naming the limit. The limits are listed under Limits below.";

/// Joins a paragraph written over several source lines into single spaces.
fn flow(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Wraps `text` at `width` columns, each line starting with `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The list of topics `llmeff help` prints.
pub fn index_text() -> String {
    let width = TOPICS.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut out = String::from(
        "Study scripts are Rhai; these are the functions they can call.\n\
         `llmeff help TOPIC` describes one; docs/scripting.md has them all.\n",
    );
    for kind in TopicKind::ALL {
        out.push_str(&format!("\n{}:\n", kind.heading()));
        for t in TOPICS.iter().filter(|t| t.kind == kind) {
            out.push_str(&format!("  {:width$}  {}\n", t.name, t.summary));
        }
    }
    out.push_str("\nLimits (checked while planning):\n");
    for (what, limit) in crate::limits::describe() {
        out.push_str(&format!("  {limit:>10}  {what}\n"));
    }
    out
}

/// One topic as `llmeff help NAME` prints it.
pub fn topic_text(t: &Topic) -> String {
    let mut out = String::new();
    for s in t.signatures {
        out.push_str(s);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&wrap(t.summary, "", 96));
    out.push('\n');
    out.push_str(&wrap(&flow(t.description), "", 96));
    if !t.returns.is_empty() {
        out.push_str(&format!("\nReturns {}.\n", t.returns));
    }
    if !t.options.is_empty() {
        let header = ["option", "type", "default", "unit", "values"];
        let rows: Vec<[String; 5]> = t
            .options
            .iter()
            .map(|o| {
                [
                    o.name.to_string(),
                    o.ty.name().to_string(),
                    o.default.to_string(),
                    if o.unit.is_empty() { "-" } else { o.unit }.to_string(),
                    o.values.to_string(),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..5)
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: [&str; 5]| {
            let mut l = String::from("  ");
            for (i, c) in cells.iter().enumerate() {
                if i == 4 {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:w$}  ", w = widths[i]));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str("\nOptions:\n");
        out.push_str(&line(header));
        for (o, r) in t.options.iter().zip(&rows) {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
            out.push_str(&wrap(&flow(o.meaning), "      ", 96));
            out.push_str(&format!("      e.g. {}: {}\n", o.name, o.example));
        }
    }
    if !t.functions.is_empty() {
        out.push_str("\nFunctions:\n");
        for f in t.functions {
            out.push_str(&format!("  {}\n", f.signature));
            out.push_str(&wrap(&flow(f.meaning), "      ", 96));
        }
    }
    out.push_str("\nExample:\n");
    for l in t.example.lines() {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

fn cell(text: &str) -> String {
    flow(text).replace('|', "\\|")
}

/// The whole reference as Markdown: the text of `docs/scripting.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "<!-- Generated by `llmeff help --markdown` from engine/src/vocabulary.rs; do not edit. -->\n\n\
         # Study scripts: reference\n\n",
    );
    for para in INTRO.split("\n\n") {
        out.push_str(&flow(para));
        out.push_str("\n\n");
    }
    out.push_str(
        "The same text is in the terminal: `llmeff help` lists the topics, `llmeff help load` \
         shows one.\n\n",
    );
    out.push_str("## Limits\n\n| What | At most |\n|---|---|\n");
    for (what, limit) in crate::limits::describe() {
        out.push_str(&format!("| {what} | {limit} |\n"));
    }
    out.push('\n');
    for kind in TopicKind::ALL {
        out.push_str(&format!("## {}\n\n", kind.heading()));
        for t in TOPICS.iter().filter(|t| t.kind == kind) {
            out.push_str(&format!("- [`{}`](#{}): {}\n", t.name, t.name, t.summary));
        }
        out.push('\n');
        for t in TOPICS.iter().filter(|t| t.kind == kind) {
            out.push_str(&format!("### {}\n\n", t.name));
            out.push_str("```rhai\n");
            for s in t.signatures {
                out.push_str(s);
                out.push('\n');
            }
            out.push_str("```\n\n");
            out.push_str(&format!("{} {}\n\n", t.summary, flow(t.description)));
            if !t.returns.is_empty() {
                out.push_str(&format!("Returns {}.\n\n", t.returns));
            }
            if !t.options.is_empty() {
                out.push_str(
                    "| Option | Type | Default | Unit | Valid values | Meaning | Example |\n",
                );
                out.push_str("|---|---|---|---|---|---|---|\n");
                for o in t.options {
                    out.push_str(&format!(
                        "| `{}` | {} | {} | {} | {} | {} | `{}` |\n",
                        o.name,
                        o.ty.name(),
                        cell(o.default),
                        if o.unit.is_empty() { "" } else { o.unit },
                        cell(o.values),
                        cell(o.meaning),
                        cell(o.example)
                    ));
                }
                out.push('\n');
            }
            if !t.functions.is_empty() {
                out.push_str("| Function | Meaning |\n|---|---|\n");
                for f in t.functions {
                    out.push_str(&format!("| `{}` | {} |\n", f.signature, cell(f.meaning)));
                }
                out.push('\n');
            }
            out.push_str("```rhai\n");
            out.push_str(t.example);
            out.push_str("```\n\n");
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// Rhai definitions of the stage and helper functions for editors: the text of
/// `docs/llmeff.d.rhai`, in the format Rhai's own `Engine::definitions` writes (`module
/// static;`, then one `fn` per call form with its doc comment), each stage's options
/// listed in its doc with their types, defaults and examples.
pub fn definitions() -> String {
    let mut out = String::from(
        "// Generated by `llmeff help --definitions` from engine/src/vocabulary.rs; do not edit.\n\
         // Rhai definitions of llmeff's study-script functions, for editors and language servers.\n\n\
         // `Node` is a handle to a plan node: `.id` is its short content hash, `.kind` its\n\
         // stage's name.\n\n\
         module static;\n",
    );
    let option_maps: Vec<&Topic> = TOPICS
        .iter()
        .filter(|t| t.kind == TopicKind::OptionMap)
        .collect();
    for t in TOPICS
        .iter()
        .filter(|t| matches!(t.kind, TopicKind::Stage | TopicKind::Helper))
    {
        let mut doc = vec![t.summary.to_string(), String::new(), flow(t.description)];
        if !t.options.is_empty() {
            doc.push(String::new());
            doc.push("Options:".to_string());
            for o in t.options {
                doc.push(option_line(o));
            }
            // Nested option maps are documented under the stage that takes them.
            for nested in t
                .options
                .iter()
                .filter_map(|o| option_maps.iter().find(|m| m.name == o.name))
            {
                doc.push(String::new());
                doc.push(format!("Options of `{}`:", nested.name));
                for o in nested.options {
                    doc.push(option_line(o));
                }
            }
        }
        for signature in t.signatures {
            out.push('\n');
            for line in &doc {
                out.push_str(if line.is_empty() { "///" } else { "/// " });
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!(
                "fn {}({}) -> {};\n",
                t.name,
                parameters(t.name, signature),
                returns(t.name)
            ));
        }
    }
    out
}

/// One option as a doc-comment line: `- \`key\`: type, default D (unit): meaning e.g. \`V\``.
fn option_line(o: &crate::vocabulary::OptionKey) -> String {
    let unit = if o.unit.is_empty() {
        String::new()
    } else {
        format!(", in {}", o.unit)
    };
    format!(
        "- `{}`: {}, default {}{unit}; {}. {} e.g. `{}: {}`",
        o.name,
        o.ty.name(),
        flow(o.default),
        flow(o.values),
        flow(o.meaning),
        o.name,
        o.example
    )
}

/// The typed parameter list of a call form such as `infer(model, batches, #{ options })`.
fn parameters(function: &str, signature: &str) -> String {
    let inner = signature
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or("", |(inner, _)| inner);
    inner
        .split(", ")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, ty) = match (function, p) {
                (_, "#{ options }") => ("options", "Map"),
                ("load", "model") => ("model", "String"),
                // A `builtin:NAME` string or an array of prompt strings.
                ("prompts", "source") => ("source", "?"),
                (_, name) => (name, "Node"),
            };
            format!("{name}: {ty}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a function returns, as a Rhai definition type.
fn returns(function: &str) -> &'static str {
    match function {
        "study" => "()",
        "builtin_prompt_sets" => "Array",
        _ => "Node",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocabulary::{topic, topic_names};
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn every_stage_and_helper_function_has_a_topic() {
        let stages: Vec<&str> = TOPICS
            .iter()
            .filter(|t| t.kind == TopicKind::Stage)
            .map(|t| t.name)
            .collect();
        assert_eq!(stages, crate::vocabulary::stage_functions());
        let helpers: Vec<&str> = TOPICS
            .iter()
            .filter(|t| t.kind == TopicKind::Helper)
            .map(|t| t.name)
            .collect();
        assert_eq!(helpers, crate::vocabulary::helper_functions());
        // Every function the engine registers is documented (getters and printing aside).
        let plan = std::sync::Arc::new(std::sync::Mutex::new(crate::plan::Plan::new(
            crate::plan::StudySettings::named("t"),
        )));
        let engine = crate::script::build_engine(
            &plan,
            crate::resolver::ModuleResolver::new(Default::default(), Vec::new()),
            std::sync::Arc::new(|_: &str| {}),
        );
        let registered: BTreeSet<String> = engine
            .gen_fn_signatures(false)
            .iter()
            .filter_map(|s| s.split(['(', ' ']).next().map(str::to_string))
            .filter(|n| !n.starts_with("get$") && n != "to_string" && n != "to_debug")
            .filter(|n| !crate::script::DISABLED_FUNCTIONS.contains(&n.as_str()))
            .collect();
        let documented: BTreeSet<String> = stages
            .iter()
            .chain(&helpers)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(registered, documented);
    }

    #[test]
    fn documented_ranges_state_the_limits_the_planner_checks() {
        use crate::limits::*;
        let checks: &[(&str, &str, String)] = &[
            ("study", "cycles", MAX_CYCLES.to_string()),
            ("study", "cycles", MAX_EXECUTIONS.to_string()),
            ("study", "retries", MAX_RETRIES.to_string()),
            ("study", "retry_delay_s", MAX_SECONDS.to_string()),
            ("prompts", "count", MAX_PROMPTS.to_string()),
            ("prompts", "max_input_tokens", MAX_TOKENS.to_string()),
            ("batch", "size", MAX_BATCH_SIZE.to_string()),
            ("batch", "token_budget", MAX_TOKEN_BUDGET.to_string()),
            ("infer", "max_new_tokens", MAX_TOKENS.to_string()),
            ("infer", "warmup", MAX_WARMUP.to_string()),
            ("arrival", "interval_s", MAX_SECONDS.to_string()),
            ("arrival", "off_s", MAX_SECONDS.to_string()),
            ("arrival", "rate_per_s", MAX_RATE_PER_S.to_string()),
            ("arrival", "burst", MAX_PROMPTS.to_string()),
            ("measure", "interval_ms", MAX_INTERVAL_MS.to_string()),
            ("measure", "idle_baseline_s", MAX_SECONDS.to_string()),
        ];
        for (topic_name, option, limit) in checks {
            let doc = topic(topic_name)
                .and_then(|t| t.options.iter().find(|o| o.name == *option))
                .unwrap_or_else(|| panic!("{topic_name}.{option} is not documented"));
            assert!(
                doc.values.contains(limit.as_str()),
                "{topic_name}.{option}: `{}` does not state the limit {limit}",
                doc.values
            );
        }
        let md = markdown();
        for (what, limit) in describe() {
            assert!(md.contains(&format!("| {what} | {limit} |")), "{what}");
        }
    }

    #[test]
    fn stdlib_topics_list_exactly_the_functions_the_modules_define() {
        let engine = rhai::Engine::new();
        for (module, source) in crate::resolver::STDLIB {
            let ast = engine.compile(source).unwrap();
            let mut defined: Vec<&str> = ast.iter_functions().map(|f| f.name).collect();
            if *module == "sweep" {
                // Implemented natively (resolver.rs) for speed.
                defined.push("grid");
            }
            defined.sort();
            let mut documented: Vec<&str> = topic(module)
                .unwrap()
                .functions
                .iter()
                .map(|f| f.name)
                .collect();
            documented.sort();
            assert_eq!(documented, defined, "stdlib module `{module}`");
        }
        let modules: Vec<&str> = TOPICS
            .iter()
            .filter(|t| t.kind == TopicKind::Module)
            .map(|t| t.name)
            .collect();
        let mut stdlib: Vec<&str> = crate::resolver::STDLIB.iter().map(|(n, _)| *n).collect();
        stdlib.sort();
        let mut modules_sorted = modules.clone();
        modules_sorted.sort();
        assert_eq!(modules_sorted, stdlib);
    }

    #[test]
    fn every_example_plans_and_uses_its_topic() {
        for t in TOPICS {
            let plan = crate::script::plan_script(Path::new("example.rhai"), t.example, "example")
                .unwrap_or_else(|e| panic!("example of `{}` does not plan:\n{e}", t.name));
            assert!(
                t.example.contains(t.name),
                "example of `{}` does not use it",
                t.name
            );
            assert!(
                !plan.runs().is_empty(),
                "example of `{}` has no run",
                t.name
            );
        }
    }

    #[test]
    fn docs_scripting_md_is_generated_from_this_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scripting.md");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == markdown(),
            "docs/scripting.md differs from engine/src/vocabulary.rs; regenerate it with\n  \
             cargo run -q -- help --markdown > docs/scripting.md"
        );
    }

    #[test]
    fn docs_llmeff_d_rhai_is_generated_from_the_vocabulary() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/llmeff.d.rhai");
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == definitions(),
            "docs/llmeff.d.rhai differs from engine/src/vocabulary.rs; regenerate it with\n  \
             cargo run -q -- help --definitions > docs/llmeff.d.rhai"
        );
    }

    #[test]
    fn definitions_declare_every_call_form_with_typed_parameters() {
        let text = definitions();
        assert!(text.contains("\nmodule static;\n"), "{text}");
        for line in [
            "fn study(options: Map) -> ();",
            "fn load(model: String) -> Node;",
            "fn load(model: String, options: Map) -> Node;",
            "fn quantize(model: Node, options: Map) -> Node;",
            "fn prompts(source: ?, options: Map) -> Node;",
            "fn infer(model: Node, batches: Node, options: Map) -> Node;",
            "fn aggregate(options: Map) -> Node;",
            "fn builtin_prompt_sets() -> Array;",
        ] {
            assert!(
                text.contains(&format!("\n{line}\n")),
                "{line} not in\n{text}"
            );
        }
        let forms: usize = TOPICS
            .iter()
            .filter(|t| matches!(t.kind, TopicKind::Stage | TopicKind::Helper))
            .map(|t| t.signatures.len())
            .sum();
        assert_eq!(text.matches("\nfn ").count(), forms);
        // Every option of a stage, nested maps' included, is documented under it.
        assert!(text.contains("/// - `compute`: string, default \"auto\"; auto, host, burn."));
        assert!(text.contains("/// Options of `decoding`:\n/// - `method`: string"));
    }

    #[test]
    fn a_topic_prints_its_signature_option_table_and_example() {
        let text = topic_text(topic("study").unwrap());
        assert!(text.starts_with("study(#{ options })\n"), "{text}");
        assert!(
            text.contains("\n  retry_delay_s  number   5                       s         finite, 0 to 86400\n      Seconds to wait before each retry.\n      e.g. retry_delay_s: 0.5\n"),
            "{text}"
        );
        assert!(
            text.contains("Example:\n  study(#{ name: \"batch-sweep\""),
            "{text}"
        );
        let index = index_text();
        for name in topic_names() {
            assert!(
                index.contains(&format!("\n  {name} ")),
                "{name} not in\n{index}"
            );
        }
    }
}
