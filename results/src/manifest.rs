//! `manifest.json`: what a study folder was planned to hold, so a resume can tell whether the
//! script still describes the same study.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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
    /// Every run's hash and its full configuration.
    pub runs: BTreeMap<String, serde_json::Value>,
    /// Machine and software facts at planning time.
    pub environment: serde_json::Value,
    /// The CPU forward pass the runs are measured on (`host` kernels or `burn`-flex): the run
    /// hashes cover only the plan, so a resume on the other pass would mix the two in one
    /// table. `None` in manifests written before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_forward: Option<String>,
    /// When the manifest was first written, seconds since the Unix epoch.
    pub created_unix_s: f64,
}

impl Manifest {
    /// File name inside a study folder.
    pub const FILE: &'static str = "manifest.json";

    /// Reads the manifest of a study folder, if it has one.
    pub fn load(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Schema(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Writes the manifest atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Schema(e.to_string()))?;
        write_bytes(&dir.join(Self::FILE), &bytes)
    }

    /// `None` when `newer` plans the same runs and cycles; otherwise what changed.
    pub fn difference(&self, newer: &Manifest) -> Option<String> {
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
        let mut changes = Vec::new();
        if added > 0 {
            changes.push(format!("{added} runs added"));
        }
        if removed > 0 {
            changes.push(format!("{removed} runs removed"));
        }
        if self.cycles != newer.cycles {
            changes.push(format!("cycles {} -> {}", self.cycles, newer.cycles));
        }
        if self.forward_changed(newer) {
            changes.push(format!(
                "CPU forward pass {} -> {} (LLMEFF_CPU_FORWARD)",
                self.cpu_forward.as_deref().unwrap_or("?"),
                newer.cpu_forward.as_deref().unwrap_or("?")
            ));
        }
        (!changes.is_empty()).then(|| changes.join(", "))
    }

    /// Whether both manifests name a CPU forward pass and they differ: then every stored run
    /// was measured on the other pass, not only the added or removed ones.
    pub fn forward_changed(&self, newer: &Manifest) -> bool {
        matches!((&self.cpu_forward, &newer.cpu_forward), (Some(a), Some(b)) if a != b)
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
            runs: runs
                .iter()
                .map(|r| (r.to_string(), serde_json::json!({})))
                .collect(),
            environment: serde_json::json!({}),
            cpu_forward: Some("host".into()),
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
    fn a_changed_cpu_forward_pass_is_a_change_of_every_run() {
        let a = manifest(&["1", "2"], 1);
        let burn = Manifest {
            cpu_forward: Some("burn".into()),
            ..a.clone()
        };
        assert!(a.forward_changed(&burn));
        assert_eq!(
            a.difference(&burn).as_deref(),
            Some("CPU forward pass host -> burn (LLMEFF_CPU_FORWARD)")
        );
        // A manifest from before the field: nothing to compare, so no change is claimed.
        let old = Manifest {
            cpu_forward: None,
            ..a.clone()
        };
        assert!(!old.forward_changed(&a));
        assert_eq!(old.difference(&a), None);
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("cpu_forward"), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), old);
    }

    #[test]
    fn round_trips_through_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let m = manifest(&["1"], 2);
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
    }
}
