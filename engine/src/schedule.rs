//! The physical schedule: which run executes when, with cycles and model-load grouping.
//!
//! Runs that share a model load run back to back, so each (model, dtype, device) is loaded
//! once per cycle and dropped when its group ends. With several cycles, both the group order
//! and the order within each group are shuffled per cycle from the study seed, so slow drifts
//! (heat, background load) do not line up with one setting. `--shard i/n` cuts the executions,
//! laid out load group by load group, into n contiguous near-equal slices.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::placement::Placement;
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
    /// Measure each run's quality against its reference (`study(#{ quality })`).
    pub quality: bool,
    /// One run at a time, or lanes of runs on devices that share no hardware at the same time
    /// (`study(#{ placement })`).
    pub placement: Placement,
    /// Everything to execute, in order.
    pub items: Vec<ScheduledRun>,
}

/// A `--shard i/n` selection: the i-th of n deterministic slices of the schedule (see
/// [`Schedule::shard`]).
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
            quality: plan.study.quality,
            placement: plan.study.placement,
            items,
        }
    }

    /// Keeps only this shard's executions, in this schedule's order.
    ///
    /// The executions are laid out load group by load group, each run's cycles together (see
    /// [`Schedule::shard_order`]), and that list is cut into `count` contiguous slices whose
    /// sizes differ by at most one. So every shard gets work while there are at least as many
    /// executions as shards, each cut splits at most one load group (a model is loaded on as
    /// few shards as the balance allows) and at most one run's cycles (a run's repetitions are
    /// measured on one machine where possible). The split depends only on the schedule, which
    /// is the same on every machine, so the shards of one plan partition it exactly.
    pub fn shard(self, shard: Shard) -> Schedule {
        let order = self.shard_order();
        let range = shard.range(order.len());
        let mine: HashSet<(StageId, usize)> = order[range].iter().copied().collect();
        let items = self
            .items
            .into_iter()
            .filter(|item| mine.contains(&(item.run.id, item.cycle)))
            .collect();
        Schedule { items, ..self }
    }

    /// Every execution as (run, cycle) in the order shards are cut from: load groups in the
    /// order the schedule first reaches them, each group's runs likewise, each run's cycles
    /// ascending. With one cycle this is the plan's order, grouped by model load.
    pub fn shard_order(&self) -> Vec<(StageId, usize)> {
        let mut group_rank: HashMap<StageId, usize> = HashMap::new();
        let mut run_rank: HashMap<StageId, usize> = HashMap::new();
        for item in &self.items {
            let next = group_rank.len();
            group_rank.entry(item.run.load_id).or_insert(next);
            let next = run_rank.len();
            run_rank.entry(item.run.id).or_insert(next);
        }
        let mut order: Vec<(usize, usize, usize, StageId)> = self
            .items
            .iter()
            .map(|i| {
                let group = group_rank[&i.run.load_id];
                (group, run_rank[&i.run.id], i.cycle, i.run.id)
            })
            .collect();
        order.sort_unstable();
        order
            .into_iter()
            .map(|(_, _, cycle, run)| (run, cycle))
            .collect()
    }

    /// A warning when `count` shards cannot all get work: there are fewer executions (runs ×
    /// cycles) than shards, so the last shards get nothing.
    pub fn shard_warning(&self, count: usize) -> Option<ShardWarning> {
        (count > self.items.len()).then_some(ShardWarning {
            count,
            executions: self.items.len(),
        })
    }

    /// What each of `count` shards runs, to show before submitting `count` tasks
    /// (`llmeff plan --shards`): cut by [`Schedule::shard`], as the tasks cut it.
    pub fn shard_listing(&self, count: usize) -> ShardListing<'_> {
        ShardListing {
            schedule: self,
            count,
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
                let devices = api::device::replica_devices(&item.run.load.device);
                let on = if devices.len() > 1 {
                    format!(
                        "{} replicas, loaded in parallel, prompts split between them: {}",
                        devices.len(),
                        devices.join(", ")
                    )
                } else {
                    item.run.load.device.clone()
                };
                writeln!(
                    f,
                    "  cycle {} load {} {} {} on {on}",
                    item.cycle, item.run.load_id, item.run.load.model, item.run.load.dtype,
                )?;
            }
            previous = Some(key);
            writeln!(f, "    {:>4} run {}", i + 1, item.run.id)?;
        }
        Ok(())
    }
}

impl Shard {
    /// The slice of `total` executions (in [`Schedule::shard_order`]) this shard runs: the
    /// first `total % count` shards take one more than the rest.
    pub fn range(&self, total: usize) -> std::ops::Range<usize> {
        let count = self.count.max(1);
        let (size, extra) = (total / count, total % count);
        let start = |i: usize| i * size + i.min(extra);
        let index = self.index.min(count);
        start(index)..start((index + 1).min(count))
    }
}

/// Each of `count` shards of a schedule with its loads and runs (see
/// [`Schedule::shard_listing`]). Executions are numbered by their place in the whole schedule,
/// as its `Display` numbers them, so each line points back to the schedule's.
#[derive(Debug, Clone, Copy)]
pub struct ShardListing<'a> {
    schedule: &'a Schedule,
    count: usize,
}

impl fmt::Display for ShardListing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.count.max(1);
        writeln!(
            f,
            "Shards: {} executions in {count} tasks (sbatch --array=0-{}, or llmeff run --shard I/{count})",
            self.schedule.items.len(),
            count - 1
        )?;
        if let Some(warning) = self.schedule.shard_warning(count) {
            writeln!(f, "  warning: {warning}")?;
        }
        let position: HashMap<(StageId, usize), usize> = self
            .schedule
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| ((item.run.id, item.cycle), i + 1))
            .collect();
        // With more shards than executions the last ones get nothing: one line for them all,
        // however many were asked for.
        let total = self.schedule.items.len();
        for index in 0..count.min(total) {
            let part = self.schedule.clone().shard(Shard { index, count });
            writeln!(
                f,
                "  shard {index}/{count}: {} executions, {} loads",
                part.items.len(),
                part.loads()
            )?;
            let mut previous = None;
            for item in &part.items {
                let key = (item.cycle, item.run.load_id);
                if previous != Some(key) {
                    writeln!(
                        f,
                        "    cycle {} load {} {} {} on {}",
                        item.cycle,
                        item.run.load_id,
                        item.run.load.model,
                        item.run.load.dtype,
                        item.run.load.device
                    )?;
                }
                previous = Some(key);
                let at = position
                    .get(&(item.run.id, item.cycle))
                    .copied()
                    .unwrap_or_default();
                writeln!(f, "      {at:>4} run {}", item.run.id)?;
            }
        }
        match count - count.min(total) {
            0 => {}
            1 => writeln!(f, "  shard {total}/{count}: nothing to run")?,
            _ => writeln!(
                f,
                "  shards {total} to {} (of {count}): nothing to run",
                count - 1
            )?,
        }
        Ok(())
    }
}

/// More shards than executions: some shards have nothing to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardWarning {
    /// Number of shards asked for.
    pub count: usize,
    /// Executions in the whole schedule (runs × cycles).
    pub executions: usize,
}

impl fmt::Display for ShardWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = if self.count - self.executions == 1 {
            format!("shard {}/{} gets", self.executions, self.count)
        } else {
            format!(
                "shards {} to {} (of {}) get",
                self.executions,
                self.count - 1,
                self.count
            )
        };
        write!(
            f,
            "{} shards for {} executions (runs x cycles): {idle} nothing to run; use at most {} shards",
            self.count, self.executions, self.executions
        )
    }
}

/// Parses `i/n` (0-based i) as written on the command line.
pub fn parse_shard(text: &str) -> Option<Shard> {
    let (i, n) = text.split_once('/')?;
    let index: usize = i.trim().parse().ok()?;
    let count: usize = n.trim().parse().ok()?;
    (count > 0 && count <= MAX_SHARDS && index < count).then_some(Shard { index, count })
}

/// The most shards a study may be split into. Experiment ids step by the shard count, so an
/// unbounded count (`0/18446744073709551615`) would wrap them; a million tasks is beyond any
/// Slurm array or Indexed Job.
pub const MAX_SHARDS: usize = 1_000_000;
