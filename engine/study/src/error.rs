//! Why a study session stopped before its results were stored and summarised.

use std::path::PathBuf;

use engine::record::SinkError;
use results::StoreError;

use crate::shard::ShardLayoutError;

/// Why a study could not run, or its results could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The plan schedules nothing.
    #[error("the study defines no runs: call infer(load(...), batch(prompts(...)))")]
    NoRuns,
    /// The study folder holds another plan's manifest, and superseding was not asked for.
    #[error(
        "study `{study}` in {} was planned differently ({change}); rerun with --force to supersede its old results, or choose another name with --study",
        dir.display()
    )]
    PlannedDifferently {
        /// The study's name.
        study: String,
        /// Its folder.
        dir: PathBuf,
        /// What changed between the stored plan and this one.
        change: String,
    },
    /// The study folder has no manifest but stores runs this plan does not have.
    #[error(
        "study `{study}` in {} has no manifest.json but holds {foreign} stored executions this plan does not have; rerun with --force to supersede them, or choose another name with --study",
        dir.display()
    )]
    ForeignRuns {
        /// The study's name.
        study: String,
        /// Its folder.
        dir: PathBuf,
        /// Stored executions outside the plan.
        foreign: usize,
    },
    /// A batch-system task's shard count differs from the layout the study folder records.
    #[error(transparent)]
    ShardLayout(#[from] ShardLayoutError),
    /// A summary's grouping or statistics do not fit the runs table.
    #[error("{0}")]
    Aggregate(#[source] StoreError),
    /// The study folder, its lock, manifest or tables.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A finished run could not be stored.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl StudyError {
    /// True when the input (the plan, the options, the folder chosen) is at fault rather than
    /// the work: the binary's exit code 2.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            StudyError::NoRuns
                | StudyError::PlannedDifferently { .. }
                | StudyError::ForeignRuns { .. }
                | StudyError::ShardLayout(_)
                | StudyError::Aggregate(_)
        )
    }
}
