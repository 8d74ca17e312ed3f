//! The shard a batch-system task runs, named by the variables Slurm job arrays and Kubernetes
//! Indexed Jobs set, and whether it fits the shard layout a study folder records.

use std::fmt;
use std::path::PathBuf;

use engine::schedule::{MAX_SHARDS, Shard};

/// Why the batch system's variables name no shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardEnvError {
    /// A variable that must hold a whole number does not.
    #[error("{name}={value} is not a whole number")]
    NotANumber {
        /// The variable.
        name: &'static str,
        /// What it holds.
        value: String,
    },
    /// A task index without its task count: running the whole study in every task would do
    /// every run N times.
    #[error("{index} is set but {count} is not: {fix}")]
    MissingCount {
        /// The index variable that is set.
        index: &'static str,
        /// The count variable that is missing.
        count: &'static str,
        /// What to do instead.
        fix: &'static str,
    },
    /// A Slurm task id outside the array's `min` + k × `step`.
    #[error("SLURM_ARRAY_TASK_ID={id} is not in the array (min {min}, step {step})")]
    NotInArray {
        /// `SLURM_ARRAY_TASK_ID`.
        id: i64,
        /// `SLURM_ARRAY_TASK_MIN`.
        min: i64,
        /// `SLURM_ARRAY_TASK_STEP`.
        step: i64,
    },
    /// The variables name an index and count that are no shard: a count of 0 or over
    /// [`MAX_SHARDS`], or an index outside `0..count`.
    #[error("{variables} name shard {index}/{count}: expected I/N with 0 <= I < N <= {MAX_SHARDS}")]
    OutOfRange {
        /// The variables read, `NAME=value, ...`.
        variables: String,
        /// The shard index they give.
        index: i64,
        /// The shard count they give.
        count: i64,
    },
}

/// The shard one `llmeff run` executes, and what named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskShard {
    /// The slice of the schedule it runs.
    pub shard: Shard,
    /// What named the shard.
    pub source: ShardSource,
}

/// What named a task's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// `--shard I/N`: the caller chose the layout.
    Flag,
    /// A batch system's variables (a Slurm array task, a Kubernetes Indexed Job pod).
    BatchSystem {
        /// The variables read, `NAME=value` joined by `, `.
        variables: String,
        /// The task's number as the batch system gave it (`SLURM_ARRAY_TASK_ID`,
        /// `JOB_COMPLETION_INDEX`): a task resubmitted alone keeps it, while its shard
        /// index and count become 0 and 1.
        task_id: i64,
    },
}

impl TaskShard {
    /// A shard named by `--shard I/N`.
    pub fn flag(shard: Shard) -> TaskShard {
        TaskShard {
            shard,
            source: ShardSource::Flag,
        }
    }

    /// Whether this task may run in a study folder whose manifest records `recorded` shards.
    ///
    /// A batch system's count must match: resubmitted alone (`sbatch --array=2`), a Slurm
    /// task is an array of one, so it would run the whole study (or, resubmitted within
    /// another array, another slice) instead of the slice it left unfinished. `--shard`
    /// states its count on purpose, so it may lay the study out anew.
    pub fn fits_layout(&self, recorded: usize) -> bool {
        match self.source {
            ShardSource::Flag => true,
            ShardSource::BatchSystem { .. } => self.shard.count == recorded,
        }
    }
}

impl fmt::Display for TaskShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}/{}", self.shard.index, self.shard.count)?;
        match &self.source {
            ShardSource::Flag => write!(f, " (--shard)"),
            ShardSource::BatchSystem { variables, .. } => write!(f, " ({variables})"),
        }
    }
}

/// A batch-system task whose shard count differs from the layout its study folder records
/// (see [`TaskShard::fits_layout`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.explain())]
pub struct ShardLayoutError {
    /// The study's name.
    pub study: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The shard count its manifest records.
    pub recorded: usize,
    /// The task that does not fit.
    pub task: TaskShard,
}

impl ShardLayoutError {
    fn explain(&self) -> String {
        let count = self.task.shard.count;
        let recorded = self.recorded;
        let runs = if count == 1 {
            "it would run every shard's work in this one task".to_string()
        } else {
            format!("it would run another slice than any task of {recorded} shards")
        };
        // The task's own number names the shard a task resubmitted alone meant to resume.
        let (index, array) = match &self.task.source {
            ShardSource::BatchSystem { task_id, .. }
                if usize::try_from(*task_id).is_ok_and(|id| id < recorded) =>
            {
                (task_id.to_string(), task_id.to_string())
            }
            _ => ("I".to_string(), "I".to_string()),
        };
        format!(
            "{} does not fit study `{}` in {}, laid out in {recorded} shards (its manifest.json): {runs}. \
             To resume a task of that layout, name its shard: --shard {index}/{recorded} \
             (sbatch --array={array} experiments/slurm/job.sh SCRIPT OUT --shard {index}/{recorded}); \
             to lay the study out in {} from now on, rerun with --force",
            self.task,
            self.study,
            self.dir.display(),
            shards(count),
        )
    }
}

/// `1 shard`, `4 shards`.
fn shards(count: usize) -> String {
    if count == 1 {
        "1 shard".to_string()
    } else {
        format!("{count} shards")
    }
}

/// The shard a Slurm array task or a Kubernetes Indexed Job pod runs, from the variables
/// `var` reads (`None` when neither batch system set any). A task index without its task
/// count is an error: running the whole study in every task would do every run N times.
pub fn shard_from_env(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<TaskShard>, ShardEnvError> {
    let number = |name: &'static str| -> Result<Option<i64>, ShardEnvError> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ShardEnvError::NotANumber { name, value: v })
            })
            .transpose()
    };
    let (task_id, index, count, variables) = if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let count = number("SLURM_ARRAY_TASK_COUNT")?.ok_or(ShardEnvError::MissingCount {
            index: "SLURM_ARRAY_TASK_ID",
            count: "SLURM_ARRAY_TASK_COUNT",
            fix: "pass --shard I/N",
        })?;
        // Arrays need not start at 0 or step by 1 (`--array=1-15:2`).
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = number("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            return Err(ShardEnvError::NotInArray { id, min, step });
        }
        let mut variables = format!("SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_COUNT={count}");
        // The array's start and step only where they move the index off the task id: a
        // task resubmitted alone (`--array=2`) shows its minimum.
        if min != 0 {
            variables.push_str(&format!(", SLURM_ARRAY_TASK_MIN={min}"));
        }
        if step != 1 {
            variables.push_str(&format!(", SLURM_ARRAY_TASK_STEP={step}"));
        }
        (id, (id - min) / step, count, variables)
    } else if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("LLMEFF_SHARDS")?.ok_or(ShardEnvError::MissingCount {
            index: "JOB_COMPLETION_INDEX",
            count: "LLMEFF_SHARDS",
            fix: "set it to the Job's completions",
        })?;
        let variables = format!("JOB_COMPLETION_INDEX={index}, LLMEFF_SHARDS={count}");
        (index, index, count, variables)
    } else {
        return Ok(None);
    };
    let shard = usize::try_from(index)
        .ok()
        .zip(usize::try_from(count).ok())
        .filter(|&(i, n)| n > 0 && n <= MAX_SHARDS && i < n)
        .map(|(index, count)| Shard { index, count });
    match shard {
        Some(shard) => Ok(Some(TaskShard {
            shard,
            source: ShardSource::BatchSystem { variables, task_id },
        })),
        None => Err(ShardEnvError::OutOfRange {
            variables,
            index,
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::schedule::parse_shard;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    /// The `I/N` a task's variables name.
    fn named(vars: &[(&str, &str)]) -> Result<Option<String>, ShardEnvError> {
        shard_from_env(env(vars)).map(|t| t.map(|t| format!("{}/{}", t.shard.index, t.shard.count)))
    }

    #[test]
    fn slurm_and_kubernetes_tasks_name_their_shard() {
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ];
        assert_eq!(named(&slurm), Ok(Some("3/8".into())));
        // --array=1-15:2 → tasks 1, 3, …, 15 are shards 0 to 7.
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(named(&stepped), Ok(Some("2/8".into())));
        let pod = [("JOB_COMPLETION_INDEX", "0"), ("LLMEFF_SHARDS", "4")];
        assert_eq!(named(&pod), Ok(Some("0/4".into())));
        assert_eq!(named(&[]), Ok(None));
    }

    #[test]
    fn a_task_says_which_variables_named_its_shard() {
        let task = shard_from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            task.to_string(),
            "shard 2/8 (SLURM_ARRAY_TASK_ID=5, SLURM_ARRAY_TASK_COUNT=8, SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_STEP=2)"
        );
        let flag = TaskShard::flag(parse_shard("1/2").unwrap());
        assert_eq!(flag.to_string(), "shard 1/2 (--shard)");
    }

    #[test]
    fn a_task_index_without_its_count_is_an_error() {
        // Regression (issue B): every task ran the whole study.
        let err = named(&[("SLURM_ARRAY_TASK_ID", "3")]).unwrap_err();
        assert!(
            err.to_string().contains("SLURM_ARRAY_TASK_COUNT is not"),
            "{err}"
        );
        let err = named(&[("JOB_COMPLETION_INDEX", "1")]).unwrap_err();
        assert!(err.to_string().contains("LLMEFF_SHARDS is not"), "{err}");
    }

    #[test]
    fn task_ids_off_the_array_and_non_numbers_are_errors() {
        let off = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert_eq!(
            named(&off),
            Err(ShardEnvError::NotInArray {
                id: 4,
                min: 1,
                step: 2
            })
        );
        let word = [("JOB_COMPLETION_INDEX", "two")];
        assert_eq!(
            named(&word).unwrap_err().to_string(),
            "JOB_COMPLETION_INDEX=two is not a whole number"
        );
    }

    #[test]
    fn variables_that_name_no_shard_are_errors() {
        for (vars, text) in [
            (
                [("JOB_COMPLETION_INDEX", "4"), ("LLMEFF_SHARDS", "4")],
                "JOB_COMPLETION_INDEX=4, LLMEFF_SHARDS=4 name shard 4/4",
            ),
            (
                [("JOB_COMPLETION_INDEX", "-1"), ("LLMEFF_SHARDS", "4")],
                "name shard -1/4",
            ),
            (
                [
                    ("SLURM_ARRAY_TASK_ID", "0"),
                    ("SLURM_ARRAY_TASK_COUNT", "0"),
                ],
                "name shard 0/0",
            ),
            (
                [
                    ("SLURM_ARRAY_TASK_ID", "0"),
                    ("SLURM_ARRAY_TASK_COUNT", "1000001"),
                ],
                "expected I/N with 0 <= I < N <= 1000000",
            ),
        ] {
            let err = named(&vars).unwrap_err();
            assert!(matches!(err, ShardEnvError::OutOfRange { .. }), "{err}");
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn a_batch_task_must_fit_the_recorded_layout_and_a_flag_need_not() {
        // `sbatch --array=2 job.sh` after an array of 4: an array of one task.
        let alone = shard_from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
            ("SLURM_ARRAY_TASK_MIN", "2"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(alone.shard, parse_shard("0/1").unwrap());
        assert!(!alone.fits_layout(4));
        assert!(alone.fits_layout(1));
        let in_array = shard_from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]))
        .unwrap()
        .unwrap();
        assert!(in_array.fits_layout(4));
        assert!(!in_array.fits_layout(8));
        // --shard states its count on purpose: it may lay the study out anew.
        assert!(TaskShard::flag(parse_shard("2/4").unwrap()).fits_layout(8));

        let err = ShardLayoutError {
            study: "g".into(),
            dir: PathBuf::from("/shared/runs/g"),
            recorded: 4,
            task: alone,
        };
        assert_eq!(
            err.to_string(),
            "shard 0/1 (SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_COUNT=1, SLURM_ARRAY_TASK_MIN=2) \
             does not fit study `g` in /shared/runs/g, laid out in 4 shards (its manifest.json): \
             it would run every shard's work in this one task. To resume a task of that layout, \
             name its shard: --shard 2/4 (sbatch --array=2 experiments/slurm/job.sh SCRIPT OUT --shard 2/4); \
             to lay the study out in 1 shard from now on, rerun with --force"
        );
        // A task number the layout does not have names no shard to resume.
        let err = ShardLayoutError {
            recorded: 2,
            task: in_array,
            ..err
        };
        let text = err.to_string();
        assert!(
            text.contains("another slice than any task of 2 shards")
                && text.contains("--shard I/2"),
            "{text}"
        );
    }

    #[test]
    fn a_shard_count_that_would_wrap_experiment_ids_is_refused() {
        assert!(parse_shard("0/18446744073709551615").is_none());
        assert!(parse_shard("0/1000001").is_none());
        assert!(parse_shard("999999/1000000").is_some());
    }
}
