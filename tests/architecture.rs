//! Architecture invariants, stated as absences and checked on `cargo metadata`'s resolved graph:
//! which crates each workspace crate must not reach through its normal (non-dev) dependencies,
//! with every feature on (so the CUDA backend's tree counts too).
//!
//! A rule names a crate by prefix (`burn` covers `burn-cuda`, `burn-flex`, ...). The test fails
//! on a workspace crate the table does not know, so a new crate is placed deliberately.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// What each workspace crate must not depend on, directly or through another crate.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The seams: interfaces and value types only.
    (
        "llmeff-api",
        &[
            "llmeff-", "rhai", "burn", "cubecl", "cudarc", "arrow", "parquet", "petgraph", "nvml",
            "clap",
        ],
    ),
    // Scripts, plans and scheduling know nothing of burn, CUDA, storage or the command line.
    (
        "llmeff-engine",
        &[
            "llmeff-backends",
            "llmeff-kernels",
            "llmeff-meters",
            "llmeff-results",
            "burn",
            "cubecl",
            "cudarc",
            "arrow",
            "parquet",
            "nvml",
            "clap",
        ],
    ),
    // Storage and reports know nothing of scripts, plans or models.
    (
        "llmeff-results",
        &[
            "llmeff-", "rhai", "petgraph", "burn", "cubecl", "cudarc", "nvml", "clap",
        ],
    ),
    // The kernels are plain Rust over host slices: no burn, no scripts, no storage.
    (
        "llmeff-kernels",
        &[
            "llmeff-", "rhai", "burn", "cubecl", "cudarc", "arrow", "parquet", "nvml", "clap",
        ],
    ),
    // The meters read machines; they neither script nor store.
    (
        "llmeff-meters",
        &[
            "llmeff-engine",
            "llmeff-results",
            "llmeff-backends",
            "rhai",
            "arrow",
            "parquet",
            "clap",
        ],
    ),
    // The model family runs models; it neither scripts nor stores (petgraph arrives with burn).
    (
        "llmeff-backends",
        &[
            "llmeff-engine",
            "llmeff-results",
            "rhai",
            "arrow",
            "parquet",
            "clap",
        ],
    ),
    // The study session drives the engine into the store behind the api traits, on any backend.
    (
        "llmeff-study",
        &[
            "llmeff-backends",
            "llmeff-kernels",
            "burn",
            "cubecl",
            "cudarc",
            "clap",
        ],
    ),
    // The bench harness times any runtime through the api traits; it stores nothing.
    (
        "llmeff-bench",
        &[
            "llmeff-backends",
            "llmeff-results",
            "llmeff-study",
            "arrow",
            "parquet",
            "clap",
        ],
    ),
    // Only the binary parses a command line.
    ("llmeff", &[]),
];

/// `cargo metadata` of this workspace with every feature enabled.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--locked",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// Package id → package name, and package id → its normal dependencies' ids.
fn graph(meta: &Value) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let names = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let edges = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let normal = node["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|dep| {
                    dep["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|kind| kind["kind"].is_null())
                })
                .map(|dep| dep["pkg"].as_str().unwrap().to_string())
                .collect();
            (node["id"].as_str().unwrap().to_string(), normal)
        })
        .collect();
    (names, edges)
}

/// Names of every crate `root` reaches through normal dependencies, itself excluded.
fn reachable(
    root: &str,
    edges: &BTreeMap<String, Vec<String>>,
    names: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.to_string()];
    while let Some(id) = stack.pop() {
        for dep in edges.get(&id).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    seen.iter().map(|id| names[id].clone()).collect()
}

#[test]
fn workspace_crates_keep_their_dependency_absences() {
    let meta = metadata();
    let (names, edges) = graph(&meta);
    let members: Vec<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert!(members.len() >= 6, "workspace members: {members:?}");
    let mut problems = Vec::new();
    let mut clap_users = Vec::new();
    for id in &members {
        let name = &names[id];
        let Some((_, forbidden)) = FORBIDDEN.iter().find(|(crate_name, _)| crate_name == name)
        else {
            problems.push(format!(
                "{name}: a workspace crate with no rule in FORBIDDEN"
            ));
            continue;
        };
        let reached = reachable(id, &edges, &names);
        if reached.contains("clap") {
            clap_users.push(name.clone());
        }
        for dep in &reached {
            if forbidden.iter().any(|prefix| dep.starts_with(prefix)) {
                problems.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "architecture invariants broken:\n{}",
        problems.join("\n")
    );
    assert_eq!(
        clap_users,
        ["llmeff"],
        "only the binary parses a command line"
    );
}

#[test]
fn the_rules_catch_a_forbidden_dependency() {
    // The check itself, on a made-up graph: engine → helper → burn-flex.
    let names: BTreeMap<String, String> =
        [("e", "llmeff-engine"), ("h", "helper"), ("b", "burn-flex")]
            .iter()
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect();
    let edges: BTreeMap<String, Vec<String>> = [("e", vec!["h"]), ("h", vec!["b"]), ("b", vec![])]
        .into_iter()
        .map(|(id, deps)| (id.to_string(), deps.into_iter().map(String::from).collect()))
        .collect();
    let reached = reachable("e", &edges, &names);
    let forbidden = FORBIDDEN
        .iter()
        .find(|(n, _)| *n == "llmeff-engine")
        .unwrap()
        .1;
    assert!(
        reached
            .iter()
            .any(|dep| forbidden.iter().any(|p| dep.starts_with(p)))
    );
}
