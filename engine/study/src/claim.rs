//! The supersede policy: whether a plan may write into a study folder that already holds
//! results, and what happens to stored runs the plan no longer has.

use std::collections::HashSet;

use engine::plan::Plan;
use results::{Machine, Manifest, Store, StoreError};

use crate::error::StudyError;
use crate::observer::StudyNote;
use crate::shard::{ShardLayoutError, TaskShard};

/// Where a plan came from, for the study manifest.
#[derive(Debug, Clone, Copy)]
pub struct ScriptOrigin<'a> {
    /// Script path (or `<repl>`).
    pub path: &'a str,
    /// Script text.
    pub text: &'a str,
}

/// What a plan claims a study folder with.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Where the plan came from.
    pub origin: ScriptOrigin<'a>,
    /// Supersede stored results the plan does not have instead of refusing.
    pub force: bool,
    /// This machine, added to the machines the study ran on.
    pub machine: Machine,
    /// The shard this invocation runs, recorded as the study's layout; `None` for the whole
    /// study, which keeps the layout recorded.
    pub shard: Option<TaskShard>,
    /// Now, seconds since the Unix epoch: the manifest's creation time and the
    /// `superseded/<label>/` folder's name.
    pub now_unix_s: f64,
}

/// Checks the study folder belongs to this plan (or takes it over with `force`) and records
/// the plan in `manifest.json`, with this machine added to the machines the study ran on.
///
/// A plan that only adds runs to the stored one needs no `force`: the stored results stay
/// and the new runs are run beside them. With `force`, stored runs the plan does not hold
/// move to `superseded/<label>/`; runs stored on burn-flex under the retired
/// `LLMEFF_CPU_FORWARD` move too, even where the plan still holds them, since their hashes name
/// the default pass they were not measured on.
///
/// A shard named by a batch system whose count differs from the shard layout the manifest
/// records is refused ([`TaskShard::fits_layout`]) unless the plan changed or `force` is set;
/// a sharded run records its count as the layout.
pub fn claim_study(
    store: &Store,
    plan: &Plan,
    claim: Claim<'_>,
    note: &mut dyn FnMut(StudyNote),
) -> Result<(), StudyError> {
    let runs = plan
        .runs()
        .iter()
        .map(|r| (r.id.hex(), r.config_json()))
        .collect();
    let mut manifest = Manifest {
        study: plan.study.name.clone(),
        script_sha256: engine::plan::sha256_hex(claim.origin.text),
        script: claim.origin.path.to_string(),
        cycles: plan.study.cycles,
        placement: Some(plan.study.placement.name().to_string()),
        shards: claim.shard.as_ref().map(|t| t.shard.count),
        runs,
        environment: Vec::new(),
        legacy_cpu_forward: None,
        created_unix_s: claim.now_unix_s,
    };
    let label = format!("{}", claim.now_unix_s as u64);
    let stored = match Manifest::load(store.dir()) {
        Err(StoreError::CorruptManifest { path, reason }) if claim.force => {
            let to = Manifest::move_aside(store.dir())?;
            note(StudyNote::ManifestMovedAside { path, reason, to });
            None
        }
        other => other?,
    };
    if let Some(old) = stored {
        let change = old.compare(&manifest);
        // The machines the stored results were measured on stay listed whatever changed:
        // superseded results keep them in the record too.
        manifest.environment = old.environment.clone();
        if change.is_none() {
            if let (Some(task), Some(recorded)) = (&claim.shard, old.shards)
                && !claim.force
                && !task.fits_layout(recorded)
            {
                return Err(StudyError::ShardLayout(ShardLayoutError {
                    study: plan.study.name.clone(),
                    dir: store.dir().to_path_buf(),
                    recorded,
                    task: task.clone(),
                }));
            }
            // A run of the whole study keeps the layout its tasks left; a changed plan is
            // laid out afresh by whoever shards it next.
            manifest.shards = manifest.shards.or(old.shards);
        }
        if change.is_none() || change.is_pure_addition() {
            manifest.created_unix_s = old.created_unix_s;
            if change.is_pure_addition() {
                note(StudyNote::RunsAdded {
                    study: plan.study.name.clone(),
                    added: change.added,
                    planned: old.runs.len(),
                });
            }
        } else if !claim.force {
            return Err(StudyError::PlannedDifferently {
                study: plan.study.name.clone(),
                dir: store.dir().to_path_buf(),
                change: change.to_string(),
            });
        } else {
            let keep: HashSet<String> = if old.measured_on_legacy_burn() {
                HashSet::new()
            } else {
                manifest.runs.keys().cloned().collect()
            };
            let moved = store.supersede_except(&keep, &label)?;
            note(StudyNote::Superseded {
                change: change.to_string(),
                moved,
                label,
            });
        }
    } else {
        // No manifest, yet parts on disk (it was deleted): runs the plan does not hold are
        // another plan's, and would be compacted into this one's table.
        let foreign = store
            .completed()?
            .iter()
            .filter(|(hash, _)| !manifest.runs.contains_key(hash))
            .count();
        if foreign > 0 && !claim.force {
            return Err(StudyError::ForeignRuns {
                study: plan.study.name.clone(),
                dir: store.dir().to_path_buf(),
                foreign,
            });
        } else if foreign > 0 {
            let keep: HashSet<String> = manifest.runs.keys().cloned().collect();
            let moved = store.supersede_except(&keep, &label)?;
            note(StudyNote::ForeignSuperseded { moved, label });
        }
    }
    manifest.add_machine(claim.machine);
    manifest.save(store.dir())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(tokens: &[usize]) -> Plan {
        let source: String = tokens
            .iter()
            .map(|n| {
                format!(
                    "infer(load(\"tiny-stories\"), batch(prompts([\"Once\"])), #{{ max_new_tokens: {n} }});\n"
                )
            })
            .collect();
        engine::script::plan_script(Path::new("s.rhai"), &source, "s").unwrap()
    }

    fn claim(force: bool) -> Claim<'static> {
        Claim {
            origin: ScriptOrigin {
                path: "s.rhai",
                text: "",
            },
            force,
            machine: Machine::new(serde_json::json!({ "hostname": "node-1" }), 1.0),
            shard: None,
            now_unix_s: 1_700_000_000.0,
        }
    }

    fn claim_notes(store: &Store, plan: &Plan, force: bool) -> Result<Vec<StudyNote>, StudyError> {
        let mut notes = Vec::new();
        claim_study(store, plan, claim(force), &mut |n| notes.push(n))?;
        Ok(notes)
    }

    #[test]
    fn an_added_run_needs_no_force_and_a_changed_plan_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        assert_eq!(claim_notes(&store, &plan(&[1]), false).unwrap(), []);
        let manifest = Manifest::load(store.dir()).unwrap().unwrap();
        assert_eq!(manifest.runs.len(), 1);
        assert_eq!(manifest.environment.len(), 1, "this machine is listed");
        // The same plan again, then one run more: both welcome without --force.
        assert_eq!(claim_notes(&store, &plan(&[1]), false).unwrap(), []);
        let added = claim_notes(&store, &plan(&[1, 2]), false).unwrap();
        assert!(
            matches!(
                &added[..],
                [StudyNote::RunsAdded {
                    added: 1,
                    planned: 1,
                    ..
                }]
            ),
            "{added:?}"
        );
        // A run taken away is a different plan: refused, as bad input, unless forced.
        let err = claim_notes(&store, &plan(&[2]), false).unwrap_err();
        assert!(
            matches!(err, StudyError::PlannedDifferently { .. }) && err.is_input(),
            "{err}"
        );
        assert!(err.to_string().contains("--force"), "{err}");
        let forced = claim_notes(&store, &plan(&[2]), true).unwrap();
        assert!(
            matches!(&forced[..], [StudyNote::Superseded { label, .. }] if label == "1700000000"),
            "{forced:?}"
        );
        assert_eq!(Manifest::load(store.dir()).unwrap().unwrap().runs.len(), 1);
    }

    #[test]
    fn the_manifest_records_the_placement_and_a_new_one_is_no_change_of_plan() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let placement = || Manifest::load(store.dir()).unwrap().unwrap().placement;
        claim_notes(&store, &plan(&[1]), false).unwrap();
        assert_eq!(placement().as_deref(), Some("one-at-a-time"));
        // The same runs placed per device hash the same: welcome, and recorded.
        let mut per_device = plan(&[1]);
        per_device.study.placement = engine::placement::Placement::PerDevice;
        assert_eq!(claim_notes(&store, &per_device, false).unwrap(), []);
        assert_eq!(placement().as_deref(), Some("per-device"));
        assert_eq!(
            per_device.runs()[0].id,
            plan(&[1]).runs()[0].id,
            "placement is not part of a run's identity"
        );
    }

    /// Task `id` of a Slurm array of `count` tasks starting at `min`.
    fn array_task(id: usize, count: usize, min: usize) -> TaskShard {
        let vars = [
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
            ("SLURM_ARRAY_TASK_MIN", min.to_string()),
        ];
        crate::shard::shard_from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
        .unwrap()
        .unwrap()
    }

    fn claim_shard(
        store: &Store,
        plan: &Plan,
        shard: Option<TaskShard>,
        force: bool,
    ) -> Result<Vec<StudyNote>, StudyError> {
        let mut notes = Vec::new();
        let claim = Claim {
            shard,
            ..claim(force)
        };
        claim_study(store, plan, claim, &mut |n| notes.push(n))?;
        Ok(notes)
    }

    #[test]
    fn an_array_task_of_another_count_than_the_recorded_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let layout = || Manifest::load(store.dir()).unwrap().unwrap().shards;
        let two = plan(&[1, 2]);
        claim_shard(&store, &two, Some(array_task(1, 4, 0)), false).unwrap();
        assert_eq!(layout(), Some(4));
        // A whole-study run keeps the layout; another task of it is welcome.
        claim_shard(&store, &two, None, false).unwrap();
        assert_eq!(layout(), Some(4));
        claim_shard(&store, &two, Some(array_task(3, 4, 0)), false).unwrap();
        // Task 2 resubmitted alone (`sbatch --array=2`) is an array of one: refused, as bad
        // input, naming the shard that resumes it.
        let err = claim_shard(&store, &two, Some(array_task(2, 1, 2)), false).unwrap_err();
        assert!(
            matches!(&err, StudyError::ShardLayout(e) if e.recorded == 4) && err.is_input(),
            "{err}"
        );
        assert!(err.to_string().contains("--shard 2/4"), "{err}");
        assert_eq!(layout(), Some(4), "a refused task records nothing");
        // Named with --shard, or forced, a count lays the study out anew.
        let flag = TaskShard::flag(engine::schedule::parse_shard("2/4").unwrap());
        claim_shard(&store, &two, Some(flag), false).unwrap();
        claim_shard(&store, &two, Some(array_task(2, 1, 2)), true).unwrap();
        assert_eq!(layout(), Some(1));
        // A plan that adds runs may be laid out in another count without --force.
        claim_shard(&store, &plan(&[1, 2, 3]), Some(array_task(0, 8, 0)), false).unwrap();
        assert_eq!(layout(), Some(8));
    }

    #[test]
    fn a_corrupt_manifest_is_moved_aside_only_when_forced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        std::fs::write(store.dir().join("manifest.json"), "{ not json").unwrap();
        assert!(matches!(
            claim_notes(&store, &plan(&[1]), false),
            Err(StudyError::Store(StoreError::CorruptManifest { .. }))
        ));
        let notes = claim_notes(&store, &plan(&[1]), true).unwrap();
        assert!(
            matches!(&notes[..], [StudyNote::ManifestMovedAside { .. }]),
            "{notes:?}"
        );
        assert!(Manifest::load(store.dir()).unwrap().is_some());
    }
}
