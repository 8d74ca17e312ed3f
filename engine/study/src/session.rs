//! One study session over one study folder: take the lock, claim the folder for the plan,
//! execute the schedule into the store, compact the tables and write the summaries.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::meter::MeterProvider;
use api::runtime::Runtime;
use engine::execute::{Executor, MonotonicClock, Outcome, Progress};
use engine::plan::Plan;
use engine::schedule::Schedule;
use results::{Machine, Row, Store, StudyLock};

use crate::claim::{Claim, ScriptOrigin, claim_study};
use crate::error::StudyError;
use crate::observer::{StudyNote, StudyObserver};
use crate::provenance::Provenance;
use crate::quality_cache::StudyReferenceCache;
use crate::shard::TaskShard;
use crate::sink::StoreSink;

/// What runs and measures a study's runs, and what is recorded about them.
#[derive(Clone, Copy)]
pub struct StudySession<'a> {
    /// Loads the models.
    pub runtime: &'a dyn Runtime,
    /// The machine's meters.
    pub meters: &'a dyn MeterProvider,
    /// Build and machine facts written into every run row.
    pub provenance: &'a Provenance,
    /// This machine as the manifest lists it (CPU, memory, OS, versions, devices).
    pub environment: &'a serde_json::Value,
}

/// How one execution of a plan goes.
#[derive(Clone, Default)]
pub struct StudyOptions<'a> {
    /// Run only this shard of the schedule (and what named it, which the study's recorded
    /// shard layout is checked against).
    pub shard: Option<TaskShard>,
    /// Supersede stored results of a different plan instead of refusing.
    pub force: bool,
    /// Raised to stop the study; runs finished before stay stored.
    pub cancel: Option<&'a AtomicBool>,
    /// Hold the lock this long before anything else (fault injection for the lock tests).
    pub pause_after_lock: Option<Duration>,
}

/// How a study execution ended, with its compacted rows.
#[derive(Debug)]
pub struct StudyResult {
    /// Counts of ok, failed and skipped executions.
    pub outcome: Outcome,
    /// Every stored row of the study, after compaction.
    pub rows: Vec<Row>,
    /// Executions this invocation's schedule holds (its shard's, when sharded).
    pub total: usize,
}

impl StudySession<'_> {
    /// Executes `plan` into `<out>/<study>/` and compacts the study's tables; the study lock
    /// is released when this returns.
    pub fn execute(
        &self,
        plan: &Plan,
        origin: ScriptOrigin<'_>,
        out: &Path,
        options: StudyOptions<'_>,
        observer: &mut dyn StudyObserver,
    ) -> Result<StudyResult, StudyError> {
        let mut schedule = Schedule::from_plan(plan);
        if schedule.items.is_empty() {
            return Err(StudyError::NoRuns);
        }
        let shard = options.shard.as_ref().map(|t| t.shard);
        if let Some(task) = &options.shard {
            if let Some(warning) = schedule.shard_warning(task.shard.count) {
                observer.note(&StudyNote::ShardWarning(warning));
            }
            let total = schedule.items.len();
            schedule = schedule.shard(task.shard);
            // A batch task's log starts with what it runs, so each log says which slice it was.
            observer.note(&StudyNote::ShardSelected {
                task: task.clone(),
                executions: schedule.items.len(),
                total,
            });
        }
        let dir = out.join(&plan.study.name);
        let lock = match shard {
            Some(s) => StudyLock::acquire_shard(&dir, s.index, s.count),
            None => StudyLock::acquire(&dir),
        }?;
        if let Some(pause) = options.pause_after_lock {
            std::thread::sleep(pause);
        }
        let store = Store::open(&dir)?;
        if lock.removed_temporaries() > 0 {
            observer.note(&StudyNote::TemporariesRemoved(lock.removed_temporaries()));
        }
        for part in store.quarantine_corrupt_parts()? {
            observer.note(&StudyNote::PartQuarantined(part));
        }
        let now_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let claim = Claim {
            origin,
            force: options.force,
            machine: self.machine(now_unix_s),
            shard: options.shard.clone(),
            now_unix_s,
        };
        claim_study(&store, plan, claim, &mut |n| observer.note(&n))?;

        // The sink and the progress callback both report to the observer, one at a time.
        let observer = RefCell::new(observer);
        let mut on_stored = |row: &Row| observer.borrow_mut().stored(row);
        let mut sink = StoreSink::new(
            store.clone(),
            shard.map(|s| (s.index, s.count)),
            self.provenance,
        )?
        .with_on_stored(&mut on_stored);
        let clock = MonotonicClock::default();
        let references = StudyReferenceCache::new(&dir);
        let mut executor = Executor::new(self.runtime, &clock)
            .with_meters(self.meters)
            .with_quality(&references);
        if let Some(cancel) = options.cancel {
            executor = executor.with_cancel(cancel);
        }
        let outcome = executor.execute(&schedule, &mut sink, &mut |event: Progress| {
            observer.borrow_mut().progress(event)
        })?;
        drop(sink);
        let observer = observer.into_inner();
        observer.executed();
        let rows = store.compact()?;
        for (i, spec) in plan.aggregates().iter().enumerate() {
            let name = if i == 0 {
                "summary".to_string()
            } else {
                format!("summary-{}", i + 1)
            };
            let summary = results::aggregate::aggregate(&rows, &spec.by, &spec.stats)
                .map_err(StudyError::Aggregate)?;
            let path = dir.join(format!("{name}.parquet"));
            summary.write(&path, &dir.join(format!("{name}.csv")))?;
            observer.note(&StudyNote::SummaryWritten {
                name,
                groups: summary.rows.len(),
                by: spec.by.clone(),
                path,
            });
        }
        observer.note(&StudyNote::Finished {
            outcome,
            table: dir.join("runs.parquet"),
        });
        drop(lock);
        Ok(StudyResult {
            outcome,
            rows,
            total: schedule.items.len(),
        })
    }

    /// This machine as the manifest lists it, first seen `now_unix_s`.
    fn machine(&self, now_unix_s: f64) -> Machine {
        let mut machine = Machine::new(self.environment.clone(), now_unix_s);
        if !machine.facts.contains_key("hostname") {
            machine.facts.insert(
                "hostname".into(),
                serde_json::json!(self.provenance.hostname),
            );
        }
        machine
    }
}
