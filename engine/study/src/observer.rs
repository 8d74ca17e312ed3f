//! What a study session tells its caller while it runs: executor progress, each stored run row,
//! and notes about the study folder. The session prints nothing; the binary renders these.

use std::fmt;
use std::path::PathBuf;

use engine::execute::{Outcome, Progress};
use engine::schedule::ShardWarning;
use results::Row;

use crate::shard::TaskShard;

/// Receives a study session's events, in order.
pub trait StudyObserver {
    /// A note about the study folder or the study's end.
    fn note(&mut self, note: &StudyNote);
    /// One executor event (study started, loading, a run started or finished, a retry).
    fn progress(&mut self, event: Progress);
    /// A run's row, just stored.
    fn stored(&mut self, _row: &Row) {}
    /// The executor finished (a progress bar can go) and summaries follow.
    fn executed(&mut self) {}
}

/// A note a study session gives; its `Display` is the line to show.
#[derive(Debug, Clone, PartialEq)]
pub enum StudyNote {
    /// This invocation runs one shard: which, what named it, and its share of the study.
    ShardSelected {
        /// The shard and what named it.
        task: TaskShard,
        /// Executions in this shard.
        executions: usize,
        /// Executions in the whole study.
        total: usize,
    },
    /// Sharding cannot split this schedule as asked.
    ShardWarning(ShardWarning),
    /// Temporary files an interrupted run left were removed when the lock was taken.
    TemporariesRemoved(usize),
    /// An unreadable part was moved aside; its run is measured again.
    PartQuarantined(PathBuf),
    /// A corrupt manifest was moved aside (the study was superseded).
    ManifestMovedAside {
        /// The manifest.
        path: PathBuf,
        /// Why it did not parse.
        reason: String,
        /// Where it went.
        to: PathBuf,
    },
    /// The plan only adds runs to the stored one: the new ones run beside the stored results.
    RunsAdded {
        /// The study's name.
        study: String,
        /// Runs the plan adds.
        added: usize,
        /// Runs the stored plan had.
        planned: usize,
    },
    /// A changed plan superseded the stored runs it no longer has.
    Superseded {
        /// What changed.
        change: String,
        /// Files moved.
        moved: usize,
        /// The `superseded/<label>/` folder they went to.
        label: String,
    },
    /// With no manifest, stored runs outside the plan were superseded.
    ForeignSuperseded {
        /// Files moved.
        moved: usize,
        /// The `superseded/<label>/` folder they went to.
        label: String,
    },
    /// A summary table was written.
    SummaryWritten {
        /// `summary`, `summary-2`, ...
        name: String,
        /// Its groups.
        groups: usize,
        /// The columns it groups by.
        by: Vec<String>,
        /// The Parquet file.
        path: PathBuf,
    },
    /// The study ended (completed or stopped).
    Finished {
        /// Counts of ok, failed and skipped executions.
        outcome: Outcome,
        /// The compacted runs table.
        table: PathBuf,
    },
}

impl StudyNote {
    /// True for notes a quiet caller may leave out (the shard run, the summaries written); the
    /// others are warnings or the final line.
    pub fn is_detail(&self) -> bool {
        matches!(
            self,
            StudyNote::ShardSelected { .. } | StudyNote::SummaryWritten { .. }
        )
    }
}

impl fmt::Display for StudyNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StudyNote::ShardSelected {
                task,
                executions,
                total,
            } => write!(f, "{task}: {executions} of the study's {total} executions"),
            StudyNote::ShardWarning(warning) => write!(f, "warning: {warning}"),
            StudyNote::TemporariesRemoved(n) => write!(
                f,
                "note: removed {n} temporary files left by an interrupted run"
            ),
            StudyNote::PartQuarantined(part) => write!(
                f,
                "warning: an unreadable part was moved to {}; its run will be measured again",
                part.display()
            ),
            StudyNote::ManifestMovedAside { path, reason, to } => write!(
                f,
                "note: {} was corrupt ({reason}); moved aside to {}",
                path.display(),
                to.display()
            ),
            StudyNote::RunsAdded {
                study,
                added,
                planned,
            } => write!(
                f,
                "study `{study}`: {added} runs added to the {planned} already planned; running the new ones"
            ),
            StudyNote::Superseded {
                change,
                moved,
                label,
            } => write!(
                f,
                "plan changed ({change}); {moved} files of unplanned runs moved to superseded/{label}/"
            ),
            StudyNote::ForeignSuperseded { moved, label } => write!(
                f,
                "no manifest: {moved} files of runs outside this plan moved to superseded/{label}/"
            ),
            StudyNote::SummaryWritten {
                name,
                groups,
                by,
                path,
            } => write!(
                f,
                "{name}: {groups} groups by {} -> {}",
                by.join(", "),
                path.display()
            ),
            StudyNote::Finished { outcome, table } => write!(
                f,
                "{} ok, {} failed, {} already done{}; results in {}",
                outcome.ok,
                outcome.failed,
                outcome.skipped,
                if outcome.cancelled {
                    ", stopped before the end"
                } else {
                    ""
                },
                table.display()
            ),
        }
    }
}
