//! The shard a batch-system task runs, named by the variables Slurm job arrays and Kubernetes
//! Indexed Jobs set.

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
}

/// The `I/N` shard a Slurm array task or a Kubernetes Indexed Job pod runs, from the
/// variables `var` reads (`None` when neither batch system set any). A task index without its
/// task count is an error: running the whole study in every task would do every run N times.
pub fn shard_from_env(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ShardEnvError> {
    let number = |name: &'static str| -> Result<Option<i64>, ShardEnvError> {
        var(name)
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map_err(|_| ShardEnvError::NotANumber { name, value: v })
            })
            .transpose()
    };
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
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
        return Ok(Some(format!("{}/{count}", (id - min) / step)));
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("LLMEFF_SHARDS")?.ok_or(ShardEnvError::MissingCount {
            index: "JOB_COMPLETION_INDEX",
            count: "LLMEFF_SHARDS",
            fix: "set it to the Job's completions",
        })?;
        return Ok(Some(format!("{index}/{count}")));
    }
    Ok(None)
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

    #[test]
    fn slurm_and_kubernetes_tasks_name_their_shard() {
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(shard_from_env(slurm), Ok(Some("3/8".into())));
        // --array=1-15:2 → tasks 1, 3, …, 15 are shards 0 to 7.
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert_eq!(shard_from_env(stepped), Ok(Some("2/8".into())));
        let pod = env(&[("JOB_COMPLETION_INDEX", "0"), ("LLMEFF_SHARDS", "4")]);
        assert_eq!(shard_from_env(pod), Ok(Some("0/4".into())));
        assert_eq!(shard_from_env(env(&[])), Ok(None));
    }

    #[test]
    fn a_task_index_without_its_count_is_an_error() {
        // Regression (issue B): every task ran the whole study.
        let err = shard_from_env(env(&[("SLURM_ARRAY_TASK_ID", "3")])).unwrap_err();
        assert!(
            err.to_string().contains("SLURM_ARRAY_TASK_COUNT is not"),
            "{err}"
        );
        let err = shard_from_env(env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err();
        assert!(err.to_string().contains("LLMEFF_SHARDS is not"), "{err}");
    }

    #[test]
    fn task_ids_off_the_array_and_non_numbers_are_errors() {
        let off = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert_eq!(
            shard_from_env(off),
            Err(ShardEnvError::NotInArray {
                id: 4,
                min: 1,
                step: 2
            })
        );
        let word = env(&[("JOB_COMPLETION_INDEX", "two")]);
        assert_eq!(
            shard_from_env(word).unwrap_err().to_string(),
            "JOB_COMPLETION_INDEX=two is not a whole number"
        );
    }

    #[test]
    fn a_shard_count_that_would_wrap_experiment_ids_is_refused() {
        assert!(parse_shard("0/18446744073709551615").is_none());
        assert!(parse_shard("0/1000001").is_none());
        assert!(parse_shard("999999/1000000").is_some());
    }
}
