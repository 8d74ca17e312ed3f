//! The physical schedule: which run executes when, with cycles and model-load grouping.
//!
//! Runs that share a model load run back to back, so each (model, dtype, device) is loaded
//! once per cycle and dropped when its group ends. With several cycles, both the group order
//! and the order within each group are shuffled per cycle from the study seed, so slow drifts
//! (heat, background load) do not line up with one setting.

use std::fmt;
use std::sync::Arc;

use crate::plan::{Plan, RunSpec};
use crate::shuffle::shuffle;
use crate::stage::StageId;

/// One execution of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRun {
    /// The run's resolved configuration.
    pub run: Arc<RunSpec>,
    /// 0-based cycle.
    pub cycle: usize,
}

/// Runs in execution order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Study name.
    pub study: String,
    /// Number of cycles.
    pub cycles: usize,
    /// Extra attempts after a backend error.
    pub retries: usize,
    /// Seconds between attempts.
    pub retry_delay_s: f64,
    /// Everything to execute, in order.
    pub items: Vec<ScheduledRun>,
}

/// A `--shard i/n` selection: the i-th of n deterministic slices of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Schedule {
    /// Lowers a plan into an execution order.
    pub fn from_plan(plan: &Plan) -> Schedule {
        let runs: Vec<Arc<RunSpec>> = plan.runs().into_iter().map(Arc::new).collect();
        let mut groups: Vec<(StageId, Vec<Arc<RunSpec>>)> = Vec::new();
        for run in runs {
            match groups.iter_mut().find(|(id, _)| *id == run.load_id) {
                Some((_, members)) => members.push(run),
                None => groups.push((run.load_id, vec![run])),
            }
        }
        let cycles = plan.study.cycles.max(1);
        let mut items = Vec::new();
        for cycle in 0..cycles {
            let mut order: Vec<usize> = (0..groups.len()).collect();
            if cycles > 1 {
                shuffle(&mut order, seed_for(plan.study.seed, cycle, u64::MAX));
            }
            for g in order {
                let mut members: Vec<usize> = (0..groups[g].1.len()).collect();
                if cycles > 1 {
                    shuffle(&mut members, seed_for(plan.study.seed, cycle, g as u64));
                }
                for m in members {
                    items.push(ScheduledRun {
                        run: groups[g].1[m].clone(),
                        cycle,
                    });
                }
            }
        }
        Schedule {
            study: plan.study.name.clone(),
            cycles,
            retries: plan.study.retries,
            retry_delay_s: plan.study.retry_delay_s,
            items,
        }
    }

    /// Keeps only this shard's runs. Whole load groups of a cycle stay together so a shard
    /// loads each of its models once per cycle.
    pub fn shard(self, shard: Shard) -> Schedule {
        let mut group = 0usize;
        let mut previous: Option<(usize, StageId)> = None;
        let mut kept = Vec::new();
        for item in self.items {
            let key = (item.cycle, item.run.load_id);
            if previous.is_some_and(|p| p != key) {
                group += 1;
            }
            previous = Some(key);
            if group % shard.count == shard.index {
                kept.push(item);
            }
        }
        Schedule {
            items: kept,
            ..self
        }
    }

    /// Number of model loads this schedule performs.
    pub fn loads(&self) -> usize {
        let mut loads = 0;
        let mut previous = None;
        for item in &self.items {
            let key = (item.cycle, item.run.load_id);
            if previous != Some(key) {
                loads += 1;
            }
            previous = Some(key);
        }
        loads
    }
}

fn seed_for(study_seed: u64, cycle: usize, salt: u64) -> u64 {
    study_seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(cycle as u64)
        .rotate_left(17)
        ^ salt
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Schedule {:?}: {} executions, {} loads, {} cycles",
            self.study,
            self.items.len(),
            self.loads(),
            self.cycles
        )?;
        let mut previous = None;
        for (i, item) in self.items.iter().enumerate() {
            let key = (item.cycle, item.run.load_id);
            if previous != Some(key) {
                writeln!(
                    f,
                    "  cycle {} load {} {} {} on {}",
                    item.cycle,
                    item.run.load_id,
                    item.run.load.model,
                    item.run.load.dtype,
                    item.run.load.device
                )?;
            }
            previous = Some(key);
            writeln!(f, "    {:>4} run {}", i + 1, item.run.id)?;
        }
        Ok(())
    }
}

/// Parses `i/n` (0-based i) as written on the command line.
pub fn parse_shard(text: &str) -> Option<Shard> {
    let (i, n) = text.split_once('/')?;
    let index: usize = i.trim().parse().ok()?;
    let count: usize = n.trim().parse().ok()?;
    (count > 0 && index < count).then_some(Shard { index, count })
}
