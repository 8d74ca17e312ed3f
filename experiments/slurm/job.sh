#!/usr/bin/env bash
# A llmeff study as a Slurm job array: every array task runs one shard of the same plan and
# stores its runs in one study folder, on a filesystem every node mounts, where they merge.
#
#   llmeff plan STUDY.rhai --shards 6        # what each of 6 tasks will run
#   sbatch --array=0-5 experiments/slurm/job.sh STUDY.rhai /shared/runs [llmeff run options]
#
# Task I of an array of N runs shard I/N: llmeff reads SLURM_ARRAY_TASK_ID and
# SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MIN/STEP, so --array=1-11:2 works too). The
# results go to /shared/runs/<study>/; every task compacts what is there when it ends, so
# runs.parquet holds the whole study once the last task is done. Each task's log (below)
# starts with the shard it runs and lists every run it stored, with its hash.
#
# A task stopped early (scancel, the time limit, a node lost) keeps every run it stored.
# Resubmit it alone, naming its shard: an array of one task has SLURM_ARRAY_TASK_COUNT=1,
# and llmeff refuses such a task, since the study's manifest.json records 6 shards (without
# that check it would run the whole study). It runs only what the task left:
#
#   sbatch --array=4 experiments/slurm/job.sh STUDY.rhai /shared/runs --shard 4/6
#
# Resubmitting the whole array works too: finished tasks find nothing left to do.
# `--force` after the arguments lays the study out in a new number of shards.
#
# Environment: LLMEFF, the llmeff binary (default: `llmeff` on PATH). sbatch passes the
# submitting shell's environment on, so LLMEFF_MODELS_DIR, HF_HOME and the like reach the
# tasks as they were set there.
#
# Tested on a one-node Slurm 22.05 cluster by tests/slurm.rs (CI starts it with
# .ci/slurm.sh): an array, a task cancelled mid-run and resubmitted, the refusal above.
#
#SBATCH --job-name=llmeff
#SBATCH --output=llmeff-%A_%a.log
# One task per node: RAPL package and DRAM energy are machine-wide, so a task sharing its
# node would be charged its neighbour's energy and compete for its memory bandwidth.
#SBATCH --exclusive
# Slurm stops a job with SIGTERM (scancel, the time limit), then SIGKILL after KillWait:
# on SIGTERM llmeff abandons the run in progress, writes the table and exits 143.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: sbatch --array=0-<N-1> $0 STUDY.rhai OUT_DIR [llmeff run options]" >&2
  exit 2
fi
script=$1
out=$2
shift 2

echo "llmeff array task ${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-?}}_${SLURM_ARRAY_TASK_ID:-} on $(hostname -s)"
# exec: llmeff is the job's process, so Slurm's signals reach it and its exit status is the
# task's (2 bad input, 1 a failed run, 143 stopped by SIGTERM).
exec "${LLMEFF:-llmeff}" run "$script" --out "$out" --plain --verbose "$@"
