//! `manifest.json`: what a study folder was planned to hold, so a resume can tell whether the
//! script still describes the same study, and every machine the study ran on.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::parquet_io::write_bytes;

/// The plan a study folder belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Study name.
    pub study: String,
    /// SHA-256 of the script text.
    pub script_sha256: String,
    /// Script path as given.
    pub script: String,
    /// Repetitions of every run.
    pub cycles: usize,
    /// How the plan placed its runs in time (`one-at-a-time`, `per-device`: runs on devices
    /// that share no hardware at the same time, their CPU and RAM energy a time-share). Not
    /// part of any run's identity, so it never counts as a change of plan; `None` in
    /// manifests written before placements existed, whose runs ran one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    /// Every run's hash and its full configuration.
    pub runs: BTreeMap<String, serde_json::Value>,
    /// The shard count the study's last sharded run split it into (`--shard I/N`, a Slurm
    /// array, an Indexed Job): a batch-system task of another count is refused, since it
    /// would run another slice than the one a task of this layout left unfinished. `None`
    /// when never sharded, and in manifests written before layouts were kept. Not part of the
    /// plan: never a change of plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// Every machine the study ran on, in the order they were first seen (manifests written
    /// before machines were kept hold a single object: it reads as a one-machine list).
    #[serde(deserialize_with = "one_or_many_machines")]
    pub environment: Vec<Machine>,
    /// The CPU forward pass that manifests written before `load(#{ compute })` recorded
    /// (`host`, or `burn` under the retired `LLMEFF_CPU_FORWARD=burn`): kept as read, never set
    /// anew. Runs of that time hash as `compute: "auto"`, so a `burn` here means every stored
    /// run was measured on another pass than its hash now names.
    #[serde(
        rename = "cpu_forward",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_cpu_forward: Option<String>,
    /// When the manifest was first written, seconds since the Unix epoch.
    pub created_unix_s: f64,
}

/// One machine a study ran on: its machine and software facts, and when it was first seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// When the study first ran on this machine, seconds since the Unix epoch; `None` for the
    /// machine of a manifest written before machines were kept (its first run is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_unix_s: Option<f64>,
    /// The facts (`hostname`, `cpu_model`, `devices`, cores, memory, OS, versions, ...).
    #[serde(flatten)]
    pub facts: Map<String, Value>,
}

impl Machine {
    /// The facts that tell machines apart; timestamps and software versions are left out
    /// so a rerun on the same machine is not a new machine.
    pub const IDENTITY: [&'static str; 3] = ["hostname", "cpu_model", "devices"];

    /// A machine first seen at `first_seen_unix_s`, from a JSON description (an object's keys
    /// become its facts; anything else is kept under `description`).
    pub fn new(description: Value, first_seen_unix_s: f64) -> Machine {
        let facts = match description {
            Value::Object(map) => map,
            other => Map::from_iter([("description".to_string(), other)]),
        };
        Machine {
            first_seen_unix_s: Some(first_seen_unix_s),
            facts,
        }
    }

    /// Whether both describe the same machine: equal hostname, CPU model and devices (a fact
    /// missing from both counts as equal).
    pub fn same_machine(&self, other: &Machine) -> bool {
        Self::IDENTITY
            .iter()
            .all(|key| self.facts.get(*key) == other.facts.get(*key))
    }
}

/// Reads `environment` as a list of machines, or as the single object older manifests hold.
fn one_or_many_machines<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Machine>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Machine>),
        One(Machine),
        Missing(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(machines) => machines,
        OneOrMany::One(machine) => vec![machine],
        OneOrMany::Missing(()) => Vec::new(),
    })
}

/// How a newer plan differs from the stored one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanChange {
    /// Runs the newer plan has and the stored one lacks.
    pub added: usize,
    /// Stored runs the newer plan lacks (a changed run counts as one removed and one added).
    pub removed: usize,
    /// Cycles (stored, newer), when they differ.
    pub cycles: Option<(usize, usize)>,
    /// The stored runs were measured on burn-flex under the retired `LLMEFF_CPU_FORWARD`,
    /// while their hashes name the default pass: every one of them is changed.
    pub legacy_burn_runs: bool,
}

impl PlanChange {
    /// Nothing changed.
    pub fn is_none(&self) -> bool {
        *self == PlanChange::default()
    }

    /// Only runs were added: every stored run is still planned, with the same cycles and
    /// forward pass, so the stored results stay valid and only the new runs need to run.
    pub fn is_pure_addition(&self) -> bool {
        self.added > 0 && self.removed == 0 && self.cycles.is_none() && !self.legacy_burn_runs
    }
}

impl fmt::Display for PlanChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut changes = Vec::new();
        if self.added > 0 {
            changes.push(format!("{} runs added", self.added));
        }
        if self.removed > 0 {
            changes.push(format!("{} runs removed", self.removed));
        }
        if let Some((old, new)) = self.cycles {
            changes.push(format!("cycles {old} -> {new}"));
        }
        if self.legacy_burn_runs {
            changes.push(
                "stored runs measured on burn-flex through the retired LLMEFF_CPU_FORWARD (now load(#{ compute: \"burn\" }))"
                    .to_string(),
            );
        }
        f.write_str(&changes.join(", "))
    }
}

impl Manifest {
    /// File name inside a study folder.
    pub const FILE: &'static str = "manifest.json";

    /// Reads the manifest of a study folder, if it has one.
    pub fn load(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::CorruptManifest {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Moves a corrupt manifest of `dir` aside, to `manifest.json.corrupt-<unix time>`, so
    /// `--force` can start the study afresh; returns the new path.
    pub fn move_aside(dir: &Path) -> Result<PathBuf, StoreError> {
        let path = dir.join(Self::FILE);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = dir.join(format!("{}.corrupt-{now}", Self::FILE));
        std::fs::rename(&path, &to).map_err(|e| StoreError::io(&path, e))?;
        Ok(to)
    }

    /// Writes the manifest atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Schema(e.to_string()))?;
        write_bytes(&dir.join(Self::FILE), &bytes)
    }

    /// How `newer` differs from this (stored) manifest.
    pub fn compare(&self, newer: &Manifest) -> PlanChange {
        let added = newer
            .runs
            .keys()
            .filter(|k| !self.runs.contains_key(*k))
            .count();
        let removed = self
            .runs
            .keys()
            .filter(|k| !newer.runs.contains_key(*k))
            .count();
        let cycles = (self.cycles != newer.cycles).then_some((self.cycles, newer.cycles));
        PlanChange {
            added,
            removed,
            cycles,
            legacy_burn_runs: self.measured_on_legacy_burn(),
        }
    }

    /// `None` when `newer` plans the same runs and cycles; otherwise what changed.
    pub fn difference(&self, newer: &Manifest) -> Option<String> {
        let change = self.compare(newer);
        (!change.is_none()).then(|| change.to_string())
    }

    /// Adds `machine` unless a machine with the same identity ([`Machine::same_machine`]) is
    /// already listed; returns whether it was added.
    pub fn add_machine(&mut self, machine: Machine) -> bool {
        if self.environment.iter().any(|m| m.same_machine(&machine)) {
            return false;
        }
        self.environment.push(machine);
        true
    }

    /// Whether the stored runs were measured on burn-flex through the retired
    /// `LLMEFF_CPU_FORWARD=burn`: then every stored run is changed, not only the added or
    /// removed ones.
    pub fn measured_on_legacy_burn(&self) -> bool {
        self.legacy_cpu_forward.as_deref() == Some("burn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(runs: &[&str], cycles: usize) -> Manifest {
        Manifest {
            study: "s".into(),
            script_sha256: "x".into(),
            script: "s.rhai".into(),
            cycles,
            placement: None,
            shards: None,
            runs: runs
                .iter()
                .map(|r| (r.to_string(), serde_json::json!({})))
                .collect(),
            environment: Vec::new(),
            legacy_cpu_forward: None,
            created_unix_s: 0.0,
        }
    }

    #[test]
    fn difference_names_added_removed_and_cycles() {
        let a = manifest(&["1", "2"], 1);
        assert_eq!(a.difference(&manifest(&["2", "1"], 1)), None);
        assert_eq!(
            a.difference(&manifest(&["1", "3", "4"], 3)).as_deref(),
            Some("2 runs added, 1 runs removed, cycles 1 -> 3")
        );
    }

    #[test]
    fn runs_stored_on_the_retired_burn_switch_are_all_changed() {
        let a = manifest(&["1", "2"], 1);
        let text = serde_json::to_string(&a).unwrap();
        // The pass is part of each run's hash now, so new manifests do not record it.
        assert!(!text.contains("cpu_forward"), "{text}");
        let legacy = |pass: &str| -> Manifest {
            serde_json::from_str(&text.replace(
                r#""created_unix_s""#,
                &format!(r#""cpu_forward":"{pass}","created_unix_s""#),
            ))
            .unwrap()
        };
        // Manifests written before placements existed read as `None` (one at a time).
        assert!(!text.contains("placement"), "{text}");
        assert_eq!(legacy("host").placement, None);
        let burn = legacy("burn");
        assert!(burn.measured_on_legacy_burn());
        assert_eq!(
            burn.difference(&a).as_deref(),
            Some(
                "stored runs measured on burn-flex through the retired LLMEFF_CPU_FORWARD (now load(#{ compute: \"burn\" }))"
            )
        );
        // A `host` manifest's runs are what `auto` measures: nothing changed.
        let host = legacy("host");
        assert!(!host.measured_on_legacy_burn());
        assert_eq!(host.difference(&a), None);
    }

    #[test]
    fn only_an_addition_of_runs_is_a_pure_addition() {
        let a = manifest(&["1", "2"], 1);
        let added = a.compare(&manifest(&["1", "2", "3"], 1));
        assert_eq!(added.added, 1);
        assert!(added.is_pure_addition());
        assert!(!a.compare(&a).is_pure_addition());
        assert!(a.compare(&a).is_none());
        // Removing or changing a run (one removed, one added) is not.
        assert!(!a.compare(&manifest(&["1"], 1)).is_pure_addition());
        assert!(!a.compare(&manifest(&["1", "3"], 1)).is_pure_addition());
        // Nor is an addition with other cycles or to runs stored on the retired burn switch.
        assert!(!a.compare(&manifest(&["1", "2", "3"], 2)).is_pure_addition());
        let burn = Manifest {
            legacy_cpu_forward: Some("burn".into()),
            ..a.clone()
        };
        assert!(
            !burn
                .compare(&manifest(&["1", "2", "3"], 1))
                .is_pure_addition()
        );
    }

    fn machine(host: &str, cpu: &str, memory: u64, seen: f64) -> Machine {
        Machine::new(
            serde_json::json!({
                "hostname": host,
                "cpu_model": cpu,
                "devices": ["cpu"],
                "memory_bytes": memory,
                "llmeff_version": "0.1.0",
            }),
            seen,
        )
    }

    #[test]
    fn a_machine_is_added_once_by_hostname_cpu_and_devices() {
        let mut m = manifest(&["1"], 1);
        assert!(m.add_machine(machine("a", "EPYC", 1 << 30, 10.0)));
        // Same identity, other memory figure and time: the same machine, first seen at 10.
        assert!(!m.add_machine(machine("a", "EPYC", 2 << 30, 20.0)));
        assert!(m.add_machine(machine("b", "EPYC", 1 << 30, 30.0)));
        assert!(m.add_machine(machine("a", "Xeon", 1 << 30, 40.0)));
        let mut gpu = machine("a", "EPYC", 1 << 30, 50.0);
        gpu.facts
            .insert("devices".into(), serde_json::json!(["cpu", "cuda:0"]));
        assert!(m.add_machine(gpu));
        let seen: Vec<_> = m.environment.iter().map(|x| x.first_seen_unix_s).collect();
        assert_eq!(seen, [Some(10.0), Some(30.0), Some(40.0), Some(50.0)]);
        // The list round-trips, each machine's facts beside its first-seen time.
        let text = serde_json::to_string(&m).unwrap();
        assert!(
            text.contains(r#""environment":[{"first_seen_unix_s":10.0,"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }

    #[test]
    fn an_old_manifest_with_one_environment_object_still_reads() {
        let old = r#"{
            "study": "s", "script_sha256": "x", "script": "s.rhai", "cycles": 1,
            "runs": {"1": {}},
            "environment": {"cpu_model": "EPYC", "devices": ["cpu"], "memory_bytes": 8},
            "cpu_forward": "host",
            "created_unix_s": 5.0
        }"#;
        let mut m: Manifest = serde_json::from_str(old).unwrap();
        assert_eq!(m.environment.len(), 1);
        assert_eq!(m.environment[0].first_seen_unix_s, None);
        assert_eq!(m.environment[0].facts["cpu_model"], "EPYC");
        // An old record has no hostname, so a machine that names one is listed beside it.
        assert!(m.add_machine(machine("a", "EPYC", 8, 9.0)));
        assert_eq!(m.environment.len(), 2);
        // Written back in the new form, it reads again unchanged.
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        let null = old.replace(
            r#"{"cpu_model": "EPYC", "devices": ["cpu"], "memory_bytes": 8}"#,
            "null",
        );
        assert!(
            serde_json::from_str::<Manifest>(&null)
                .unwrap()
                .environment
                .is_empty()
        );
    }

    #[test]
    fn round_trips_through_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let mut m = manifest(&["1"], 2);
        m.add_machine(machine("a", "EPYC", 8, 1.0));
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
    }
}
