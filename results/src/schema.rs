//! The one place the results tables' columns are defined: names (with units), types, docs.
//!
//! Units are part of column names (`_s` seconds, `_bytes`, `_per_s`); counts are Int64,
//! times Float64, names Utf8.

use arrow_schema::{DataType, Field, Schema};
use std::collections::HashMap;
use std::sync::Arc;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 64-bit signed integer (counts, bytes).
    Int,
    /// 64-bit float (seconds, rates).
    Float,
}

impl ColumnType {
    fn arrow(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Float => DataType::Float64,
        }
    }
}

/// One column of a results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Name, with its unit as a suffix.
    pub name: &'static str,
    /// Type.
    pub ty: ColumnType,
    /// Whether it may be null.
    pub nullable: bool,
    /// What it means and where the number comes from.
    pub doc: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        doc,
    }
}

use ColumnType::{Float, Int, Text};

/// The study an execution belongs to; a key of `runs.parquet` and `replicas.parquet`.
const STUDY: Column = col("study", Text, false, "study name");
/// The run's identity; joins `replicas.parquet` to `runs.parquet`.
const RUN_HASH: Column = col(
    "run_hash",
    Text,
    false,
    "content hash of the run's configuration",
);
/// The execution's cycle; with `run_hash`, an execution's key.
const CYCLE_ID: Column = col("cycle_id", Int, false, "0-based repetition of the run");

/// Columns of `runs.parquet`: one row per execution (run × cycle).
pub const RUN_COLUMNS: &[Column] = &[
    STUDY,
    RUN_HASH,
    CYCLE_ID,
    col(
        "experiment_id",
        Int,
        false,
        "study-level execution counter, monotonic across restarts",
    ),
    col("status", Text, false, "`ok` or `failed`"),
    col("error", Text, true, "why the run failed"),
    col(
        "started_at_unix_s",
        Float,
        false,
        "wall-clock start, seconds since the Unix epoch",
    ),
    col(
        "started_at",
        Text,
        true,
        "wall-clock start, ISO 8601 UTC (`2026-12-06T04:29:18.250Z`)",
    ),
    col("model", Text, false, "model alias, folder or Hub id"),
    col("revision", Text, true, "Hub revision"),
    col("dtype", Text, false, "precision: f32, f16, bf16"),
    col("weights", Text, false, "`pretrained` or `random`"),
    col(
        "quantization",
        Text,
        false,
        "weight quantization: `none` or method/block size, e.g. `int8/b32`",
    ),
    col("device", Text, false, "device name"),
    col("prompts", Text, false, "prompt source"),
    col("num_prompts", Int, false, "prompts in the run"),
    col("max_input_tokens", Int, true, "prompt truncation length"),
    col("batch_size", Int, false, "prompts per batch at most"),
    col(
        "token_budget",
        Int,
        true,
        "adaptive batching: padded tokens per batch at most",
    ),
    col(
        "arrival",
        Text,
        false,
        "request arrival pattern: closed_loop (a request arrives when its batch is handed to the engine), constant, poisson, bursty, gamma, trace",
    ),
    col(
        "arrival_rate_per_s",
        Float,
        true,
        "poisson, gamma: mean arrivals per second",
    ),
    col(
        "arrival_burstiness",
        Float,
        true,
        "gamma: shape of the gaps (vLLM's burstiness; 1 is Poisson, the gaps' CV is 1/sqrt of it)",
    ),
    col(
        "arrival_trace",
        Text,
        true,
        "trace: the replayed file, as the script names it",
    ),
    col(
        "arrival_time_scale",
        Float,
        true,
        "trace: factor on the trace's gaps (0.5 replays twice as fast)",
    ),
    col(
        "offered_rate_per_s",
        Float,
        true,
        "mean request rate the arrival pattern offers (null: closed loop, all at once)",
    ),
    col(
        "serve_max_batch",
        Int,
        true,
        "continuous batching (`serve`): sequences the running batch holds at most; null for fixed batches",
    ),
    col(
        "serve_max_batch_tokens",
        Int,
        true,
        "continuous batching: tokens one iteration processes at most (decodes plus prompt tokens)",
    ),
    col(
        "serve_prefill",
        Text,
        true,
        "continuous batching: whole (a prompt in one pass) or chunked",
    ),
    col(
        "slo_ttft_s",
        Float,
        true,
        "SLO: arrival to first token at most (null: no target)",
    ),
    col(
        "slo_tpot_s",
        Float,
        true,
        "SLO: mean time per output token after the first at most (null: no target)",
    ),
    col(
        "arrival_interval_s",
        Float,
        true,
        "constant: seconds between arrivals",
    ),
    col(
        "arrival_burst",
        Int,
        true,
        "bursty: requests arriving together",
    ),
    col(
        "arrival_off_s",
        Float,
        true,
        "bursty: seconds between bursts",
    ),
    col(
        "arrival_seed",
        Int,
        true,
        "poisson, gamma: seed of the arrival times",
    ),
    col("max_new_tokens", Int, false, "generation cap per prompt"),
    col(
        "min_new_tokens",
        Int,
        false,
        "EOS ignored before this many tokens",
    ),
    col("stop_at_eos", Text, false, "`true` or `false`"),
    col("decoding", Text, false, "`greedy` or `sample`"),
    col("temperature", Float, true, "sampling temperature"),
    col("top_k", Int, true, "sampling top-k (0 = off)"),
    col("top_p", Float, true, "sampling top-p (1 = off)"),
    col("warmup_runs", Int, false, "untimed warm-up generations"),
    col("meters", Text, false, "meters requested, `+`-separated"),
    col(
        "energy_estimate",
        Text,
        false,
        "how an estimated CPU/RAM energy charges the run: `machine` (the whole machine's load and memory) or `process` (llmeff's CPU time and resident memory only)",
    ),
    col("architecture", Text, true, "model family"),
    col(
        "compute",
        Text,
        true,
        "what ran the forward pass: `llmeff-kernels/<isa>` (f32 on the CPU) or the burn backend",
    ),
    col(
        "adapter",
        Text,
        true,
        "the accelerator as its driver names it (a wgpu adapter: name, kind, graphics API); null on the CPU and where the backend does not say",
    ),
    col(
        "adapter_driver",
        Text,
        true,
        "the accelerator's driver and version (wgpu's driver and driver_info)",
    ),
    col(
        "model_parameters",
        Int,
        true,
        "parameter count, analytic from the loaded tensors",
    ),
    col(
        "model_bytes",
        Int,
        true,
        "bytes of weights at the run's dtype, analytic",
    ),
    col("num_requests", Int, true, "requests measured"),
    col("num_batches", Int, true, "batches measured"),
    col("input_tokens", Int, true, "prompt tokens, no padding"),
    col(
        "output_tokens",
        Int,
        true,
        "generated tokens, no padding; an EOS the model emitted counts (it was computed and streamed), as in vLLM",
    ),
    col(
        "wall_s",
        Float,
        true,
        "timed wall time from the window's opening (after warm-up and idle baseline) to the last token, waits for arrivals included; monotonic clock",
    ),
    col(
        "prefill_s",
        Float,
        true,
        "time in prompt passes (batch start to first token, summed over batches); monotonic clock",
    ),
    col(
        "decode_s",
        Float,
        true,
        "time in decode steps (first to last token, summed over batches); monotonic clock",
    ),
    col(
        "warmup_s",
        Float,
        true,
        "time spent warming up (not in wall_s)",
    ),
    col("output_tokens_per_s", Float, true, "output_tokens / wall_s"),
    col(
        "total_tokens_per_s",
        Float,
        true,
        "(input_tokens + output_tokens) / wall_s",
    ),
    col("requests_per_s", Float, true, "num_requests / wall_s"),
    col(
        "goodput_requests_per_s",
        Float,
        true,
        "requests meeting both SLO targets (slo_ttft_s, slo_tpot_s) per second of wall_s (vLLM's goodput); null without an SLO",
    ),
    col(
        "slo_attainment_ratio",
        Float,
        true,
        "share of the requests meeting both SLO targets; null without an SLO",
    ),
    col(
        "serve_iterations",
        Int,
        true,
        "continuous batching: scheduler iterations (each prefills what it admitted and decodes every running sequence once)",
    ),
    col(
        "serve_running_mean",
        Float,
        true,
        "continuous batching: mean sequences in the running batch over time (first to last iteration)",
    ),
    col(
        "serve_schedule_s",
        Float,
        true,
        "continuous batching: seconds the scheduler itself took, outside the model's calls",
    ),
    col(
        "idle_s",
        Float,
        true,
        "continuous batching: seconds of the window with no request in flight (none running or queued)",
    ),
    col(
        "ttft_mean_s",
        Float,
        true,
        "mean time to first token from the request's arrival (MLPerf/vLLM: queueing included); closed loop: from the hand-over of its batch",
    ),
    col(
        "ttft_p50_s",
        Float,
        true,
        "median time to first token from arrival",
    ),
    col(
        "ttft_p90_s",
        Float,
        true,
        "90th percentile time to first token from arrival",
    ),
    col(
        "ttft_p99_s",
        Float,
        true,
        "99th percentile time to first token from arrival",
    ),
    col(
        "ttft_service_mean_s",
        Float,
        true,
        "mean batch start to first token (TTFT without queueing)",
    ),
    col(
        "ttft_service_p50_s",
        Float,
        true,
        "median batch start to first token",
    ),
    col(
        "ttft_service_p90_s",
        Float,
        true,
        "90th percentile batch start to first token",
    ),
    col(
        "ttft_service_p99_s",
        Float,
        true,
        "99th percentile batch start to first token",
    ),
    col(
        "queue_mean_s",
        Float,
        true,
        "mean arrival to batch start (0 in a closed loop)",
    ),
    col("queue_p50_s", Float, true, "median arrival to batch start"),
    col(
        "queue_p90_s",
        Float,
        true,
        "90th percentile arrival to batch start",
    ),
    col(
        "queue_p99_s",
        Float,
        true,
        "99th percentile arrival to batch start",
    ),
    col(
        "tpot_mean_s",
        Float,
        true,
        "mean over requests of (e2e - ttft) / (output_tokens - 1), requests with 2+ tokens (vLLM TPOT)",
    ),
    col("tpot_p50_s", Float, true, "median time per output token"),
    col(
        "tpot_p90_s",
        Float,
        true,
        "90th percentile time per output token",
    ),
    col(
        "tpot_p99_s",
        Float,
        true,
        "99th percentile time per output token",
    ),
    col(
        "itl_mean_s",
        Float,
        true,
        "mean inter-token latency over every gap between consecutive tokens of every request (vLLM ITL)",
    ),
    col(
        "itl_p50_s",
        Float,
        true,
        "median inter-token latency, all gaps",
    ),
    col(
        "itl_p90_s",
        Float,
        true,
        "90th percentile inter-token latency, all gaps",
    ),
    col(
        "itl_p99_s",
        Float,
        true,
        "99th percentile inter-token latency, all gaps",
    ),
    col(
        "e2e_mean_s",
        Float,
        true,
        "mean request latency, arrival to last token",
    ),
    col(
        "e2e_p50_s",
        Float,
        true,
        "median request latency from arrival",
    ),
    col(
        "e2e_p90_s",
        Float,
        true,
        "90th percentile request latency from arrival",
    ),
    col(
        "e2e_p99_s",
        Float,
        true,
        "99th percentile request latency from arrival",
    ),
    col(
        "kv_cache_peak_bytes",
        Int,
        true,
        "largest KV cache of a batch seen, analytic from its shape: positions written so far x batch rows, left padding to the batch's longest prompt included (the reserved capacity is larger)",
    ),
    col(
        "flops_prefill",
        Int,
        true,
        "FLOPs of the prompt passes, analytic from the architecture (no padding); attention counted over the full prompt_len x prompt_len square a masked dense attention computes, not only its causal half",
    ),
    col(
        "flops_decode",
        Int,
        true,
        "FLOPs of the decode steps, analytic with the real KV length",
    ),
    col(
        "flops_per_s",
        Float,
        true,
        "(flops_prefill + flops_decode) / wall_s; analytic over measured time (idle waits included: see mfu for the compute rate)",
    ),
    col(
        "energy_cpu_j",
        Float,
        true,
        "CPU package energy over the timed window; source in energy_cpu_source",
    ),
    col(
        "energy_cpu_source",
        Text,
        true,
        "`rapl` (powercap counters), `estimate` (CodeCarbon 3.3.2's rule: TDP x load, 4 W per thread for an unknown CPU), `shared` (`placement: \"per-device\"`: other runs ran beside this one, so the figure is its time-share, the window's energy divided by the mean number of runs in flight; meter_notes says so), `unavailable` (null figure) or `off` (not requested)",
    ),
    col(
        "energy_gpu_j",
        Float,
        true,
        "energy of the run's GPUs, each physical device once (by UUID)",
    ),
    col(
        "energy_gpu_source",
        Text,
        true,
        "`nvml` (total-energy counter or integrated power), `unavailable` or `off`",
    ),
    col(
        "energy_ram_j",
        Float,
        true,
        "DRAM energy over the timed window",
    ),
    col(
        "energy_ram_source",
        Text,
        true,
        "`rapl` (dram domain), `estimate` (CodeCarbon 3.3.2's rule by DIMM), `shared` (a time-share, as energy_cpu_source), `unavailable` or `off`",
    ),
    col(
        "energy_total_j",
        Float,
        true,
        "sum of the domains that have a figure",
    ),
    col(
        "energy_total_source",
        Text,
        true,
        "sources of the total, `+`-joined (`rapl+estimate`; `shared` last where a domain is a time-share: `nvml+shared`), or `unavailable`/`off`",
    ),
    col(
        "energy_prefill_j",
        Float,
        true,
        "energy of the prompt passes; how it was split is in energy_split",
    ),
    col("energy_decode_j", Float, true, "energy of the decode steps"),
    col(
        "energy_other_j",
        Float,
        true,
        "energy of the window outside prompt passes and decode steps (waits for arrivals, hand-overs): energy_prefill_j + energy_decode_j + energy_other_j = energy_total_j",
    ),
    col(
        "energy_split",
        Text,
        true,
        "`measured` (counters read at each phase boundary) or `apportioned` (estimated domains split by each phase's share of wall_s; idle time keeps its share in energy_other_j); null with the phase figures where replicas overlapped or a domain is `shared`",
    ),
    col(
        "idle_power_w",
        Float,
        true,
        "mean power over the idle baseline window before the run (idle_baseline_s > 0)",
    ),
    col(
        "energy_net_j",
        Float,
        true,
        "energy_total_j - idle_power_w * wall_s; null where a domain is `shared` (the baseline ran beside other runs)",
    ),
    col(
        "j_per_output_token",
        Float,
        true,
        "energy_total_j / output_tokens",
    ),
    col(
        "energy_per_request_j",
        Float,
        true,
        "energy_total_j / num_requests",
    ),
    col(
        "energy_idle_j",
        Float,
        true,
        "continuous batching: energy over the intervals with no request in flight (the samples' total power over those intervals; source energy_total_source)",
    ),
    col(
        "energy_idle_ratio",
        Float,
        true,
        "energy_idle_j / energy_total_j: the share of energy spent with no request in flight",
    ),
    col(
        "carbon_intensity_g_per_kwh",
        Float,
        true,
        "grid intensity used for co2e_g, gCO2e per kWh",
    ),
    col(
        "carbon_intensity_source",
        Text,
        true,
        "`table: <country[/region]> <year>` (engine/data/carbon_intensity.csv) or `study override`",
    ),
    col(
        "pue",
        Float,
        true,
        "facility power usage effectiveness applied",
    ),
    col(
        "co2e_g",
        Float,
        true,
        "energy_total_j in kWh x carbon_intensity_g_per_kwh x pue",
    ),
    col(
        "energy_meters",
        Text,
        true,
        "what each domain's figure was read from, `; `-separated",
    ),
    col(
        "peak_flops_per_s",
        Float,
        true,
        "device peak FLOP/s at the run's dtype; source in peak_source",
    ),
    col(
        "peak_bytes_per_s",
        Float,
        true,
        "device peak memory bandwidth, bytes/s (on a CPU a streaming read, what decoding does)",
    ),
    col(
        "peak_source",
        Text,
        true,
        "`table: <GPU>` (vendor datasheet) or `microbenchmark` (measured on a quiet machine at the run's thread count, cached per thread count)",
    ),
    col(
        "peak_measured_at",
        Text,
        true,
        "when a measured peak was measured, ISO 8601 UTC (null for a datasheet figure)",
    ),
    col(
        "peak_threads",
        Int,
        true,
        "threads the peak microbenchmark ran on",
    ),
    col(
        "peak_conditions",
        Text,
        true,
        "the machine's load while the peak was measured (CPU steal, other processes' load) and whether it was cached",
    ),
    col(
        "mfu",
        Float,
        true,
        "model FLOPs utilisation over the compute phases: (flops_prefill + flops_decode) / (prefill_s + decode_s) / peak_flops_per_s",
    ),
    col(
        "decode_bytes",
        Int,
        true,
        "bytes read by decode steps, analytic: every weight once per step (bar an untied input embedding, gathered a row per token) plus each sequence's KV cache",
    ),
    col("decode_bytes_per_s", Float, true, "decode_bytes / decode_s"),
    col(
        "mbu",
        Float,
        true,
        "model bandwidth utilisation of decode: decode_bytes_per_s / peak_bytes_per_s",
    ),
    col(
        "peak_rss_bytes",
        Int,
        true,
        "largest resident set size sampled during the run (/proc)",
    ),
    col(
        "rss_hwm_bytes",
        Int,
        true,
        "OS high-water mark of resident memory (VmHWM), reset when the timed window opens",
    ),
    col(
        "gpu_mem_peak_bytes",
        Int,
        true,
        "largest GPU memory in use sampled during the run (NVML, whole device)",
    ),
    col(
        "device_memory_peak_bytes",
        Int,
        true,
        "largest bytes the device's allocator held in live tensors at a batch end (cubecl's memory_usage on wgpu and CUDA: weights, KV cache, activations, not the driver's whole view, for which see gpu_mem_peak_bytes); null on the CPU",
    ),
    col(
        "process_cpu_mean_pct",
        Float,
        true,
        "mean CPU time of llmeff over the samples, percent of one core",
    ),
    col(
        "process_cpu_peak_pct",
        Float,
        true,
        "largest sampled CPU time of llmeff, percent of one core",
    ),
    col(
        "system_cpu_mean_pct",
        Float,
        true,
        "mean busy share of all CPUs, percent (own work; stolen time excluded)",
    ),
    col(
        "cpu_steal_mean_pct",
        Float,
        true,
        "mean share of all CPUs' time a hypervisor gave to other guests, percent (/proc/stat steal; timings of a run with much steal are slower than the hardware)",
    ),
    col(
        "gpu_util_mean_pct",
        Float,
        true,
        "mean sampled GPU utilisation (NVML)",
    ),
    col(
        "gpu_util_peak_pct",
        Float,
        true,
        "largest sampled GPU utilisation",
    ),
    col(
        "num_samples",
        Int,
        true,
        "background samples taken; the series is samples/<run_hash>-c<cycle>.parquet",
    ),
    col(
        "meter_notes",
        Text,
        true,
        "what a reader must know about the run's figures, `; `-separated: a counter that failed mid-run, CPU steal, mbu > 1 (weights served from cache), an estimate charging other tenants' load, too few samples for utilisation, a busy idle baseline, why quality was not measured or on which prompts",
    ),
    col(
        "quality_ref",
        Text,
        true,
        "the reference quality is measured against: the same model (source, revision, weights, seed, device, compute path) at f32, unquantized, e.g. `tiny-stories f32 cpu`; an f32 unquantized run is its own reference. Null when quality was off (`study(#{ quality: false })`) or failed (meter_notes says why). Every quality_* figure is computed after the run, outside its timed window and meters, one prompt at a time, on whole prompts in order up to 1024 positions",
    ),
    col(
        "quality_kl_mean_nats",
        Float,
        true,
        "mean over the compared prompt positions of KL(P_ref ‖ P_run), natural log, of the next-token distributions (softmax of the teacher-forced logits, both models fed the same ids), as llama.cpp's --kl-divergence; 0 for the reference itself",
    ),
    col(
        "quality_top1_agreement_ratio",
        Float,
        true,
        "share of the compared prompt positions where the run's most likely next token equals the reference's",
    ),
    col(
        "quality_perplexity_run",
        Float,
        true,
        "perplexity of the prompt text under the run's model: exp of the mean negative log-likelihood of each prompt token after the first given the ones before it (transformers' loss with labels = input_ids), pooled over all predicted tokens of all compared prompts (token-weighted)",
    ),
    col(
        "quality_perplexity_ref",
        Float,
        true,
        "the same perplexity of the prompt text under the reference",
    ),
    col(
        "quality_greedy_agreement_ratio",
        Float,
        true,
        "share of the run's greedy continuation tokens (each compared prompt alone, max_new_tokens, min_new_tokens and stop_at_eos of the run) equal to the reference's at the same position, compared up to the shorter continuation of each prompt and pooled; null for a run that samples (temperature > 0), whose tokens are not meant to match",
    ),
    col(
        "quality_positions",
        Int,
        true,
        "prompt positions compared for quality_kl_mean_nats and quality_top1_agreement_ratio",
    ),
    col(
        "config_json",
        Text,
        false,
        "the run's full resolved configuration",
    ),
    col(
        "llmeff_version",
        Text,
        false,
        "version of llmeff that measured the run",
    ),
    col(
        "git_commit",
        Text,
        true,
        "git commit llmeff was built from (null when built outside a checkout)",
    ),
    col(
        "git_dirty",
        Text,
        true,
        "`true` when tracked files differed from git_commit at build time",
    ),
    col(
        "build_profile",
        Text,
        true,
        "cargo profile: `release` or `debug`",
    ),
    col("rustc_version", Text, true, "compiler that built llmeff"),
    col(
        "threads",
        Int,
        true,
        "CPU worker threads the run's forward pass used (rayon pool size)",
    ),
    col("cpu_model", Text, true, "CPU model name (/proc/cpuinfo)"),
    col(
        "cpu_flags",
        Text,
        true,
        "CPU feature flags (/proc/cpuinfo), space-separated",
    ),
    col("kernel", Text, true, "operating system kernel and release"),
    col("hostname", Text, true, "machine that measured the run"),
];

/// Columns of `requests/<run_hash>-c<cycle>.parquet`: one row per request of an execution.
pub const REQUEST_COLUMNS: &[Column] = &[
    col("run_hash", Text, false, "content hash of the run"),
    col("cycle_id", Int, false, "0-based repetition"),
    col("request_index", Int, false, "prompt index within the run"),
    col("batch_index", Int, false, "batch index within the run"),
    col("input_tokens", Int, false, "prompt tokens, no padding"),
    col(
        "output_tokens",
        Int,
        false,
        "generated tokens, no padding; an emitted EOS counts",
    ),
    col(
        "arrival_s",
        Float,
        false,
        "arrival, seconds after the run's timed window opened (closed loop: its batch's start)",
    ),
    col(
        "queue_s",
        Float,
        false,
        "arrival to batch start (continuous batching: to admission into the running batch)",
    ),
    col(
        "admitted_s",
        Float,
        false,
        "when its batch started or (continuous batching) it was admitted, seconds after the window opened",
    ),
    col(
        "first_token_s",
        Float,
        true,
        "when its first token reached the host, seconds after the window opened",
    ),
    col(
        "last_token_s",
        Float,
        true,
        "when its last token reached the host, seconds after the window opened",
    ),
    col(
        "ttft_s",
        Float,
        false,
        "arrival to first token (MLPerf/vLLM TTFT)",
    ),
    col(
        "ttft_service_s",
        Float,
        false,
        "batch start to first token (TTFT without queueing)",
    ),
    col(
        "tpot_s",
        Float,
        true,
        "(e2e_s - ttft_s) / (output_tokens - 1)",
    ),
    col("e2e_s", Float, false, "arrival to last token"),
    col(
        "itl_p50_s",
        Float,
        true,
        "median gap between the request's consecutive tokens",
    ),
    col("itl_max_s", Float, true, "largest inter-token gap"),
    col(
        "replica",
        Int,
        false,
        "replica that served the request (`replica` of replicas.parquet, in the order load's `devices` named them); 0 for a run on one device",
    ),
];

/// Columns of `tokens/<hash>-c<cycle>.parquet`: one row per generated token of a run, so
/// inter-token latency percentiles are over tokens, as vLLM reports them.
pub const TOKEN_COLUMNS: &[Column] = &[
    col("run_hash", Text, false, "content hash of the run"),
    col("cycle_id", Int, false, "0-based repetition"),
    col("request_index", Int, false, "prompt index within the run"),
    col(
        "token_index",
        Int,
        false,
        "0-based position among the request's generated tokens",
    ),
    col(
        "t_s",
        Float,
        false,
        "when the token reached the host, seconds after the window opened",
    ),
    col(
        "itl_s",
        Float,
        true,
        "gap since the request's previous token (inter-token latency); null for its first",
    ),
];

/// Columns of `samples/<hash>-c<cycle>.parquet`: the background meter series of a run.
pub const SAMPLE_COLUMNS: &[Column] = &[
    col("run_hash", Text, false, "content hash of the run"),
    col("cycle_id", Int, false, "0-based repetition"),
    col("t_s", Float, false, "seconds since the timed window opened"),
    col(
        "running_requests",
        Int,
        true,
        "continuous batching: sequences in the running batch at t_s (as the last iteration before left it)",
    ),
    col(
        "queued_requests",
        Int,
        true,
        "continuous batching: requests arrived and waiting for a slot at t_s",
    ),
    col(
        "rss_bytes",
        Int,
        true,
        "resident set size of llmeff (/proc)",
    ),
    col(
        "process_cpu_pct",
        Float,
        true,
        "CPU time of llmeff over the last interval, percent of one core",
    ),
    col(
        "system_cpu_pct",
        Float,
        true,
        "busy share of all CPUs over the last interval, percent (own work; stolen time excluded)",
    ),
    col(
        "cpu_steal_pct",
        Float,
        true,
        "share of all CPUs' time a hypervisor gave to other guests over the last interval, percent",
    ),
    col(
        "gpu_util_pct",
        Float,
        true,
        "GPU utilisation over the last interval (NVML)",
    ),
    col(
        "gpu_mem_bytes",
        Int,
        true,
        "GPU memory in use (NVML, whole device)",
    ),
    col(
        "power_cpu_w",
        Float,
        true,
        "mean CPU power over the last interval (energy counter delta / time)",
    ),
    col(
        "power_gpu_w",
        Float,
        true,
        "mean GPU power over the last interval",
    ),
    col(
        "power_ram_w",
        Float,
        true,
        "mean DRAM power over the last interval",
    ),
    col(
        "power_total_w",
        Float,
        true,
        "sum of the domain powers present in this sample",
    ),
];

/// Columns of `replicas.parquet`: one row per replica per execution of a run on several
/// devices (data parallel), compacted from `replicas/<run_hash>-c<cycle>.parquet`. A run on one
/// device has no rows; runs.parquet holds every run's totals.
pub const REPLICA_COLUMNS: &[Column] = &[
    STUDY,
    RUN_HASH,
    CYCLE_ID,
    col(
        "replica",
        Int,
        false,
        "0-based replica, in the order load's `devices` named them; the `replica` of its requests in requests/",
    ),
    col(
        "device",
        Text,
        false,
        "the replica's device (`cuda:1`, `cpu:0-3`)",
    ),
    col(
        "cores",
        Text,
        true,
        "CPU cores the replica's threads were pinned to (`0-3`), for a core set; null otherwise",
    ),
    col(
        "num_requests",
        Int,
        false,
        "requests in the replica's share of the run's prompts",
    ),
    col("num_batches", Int, false, "batches the replica ran"),
    col(
        "input_tokens",
        Int,
        false,
        "prompt tokens of the replica's share, no padding",
    ),
    col(
        "output_tokens",
        Int,
        false,
        "tokens the replica generated, no padding; an emitted EOS counts",
    ),
    col(
        "start_s",
        Float,
        true,
        "start of the replica's first batch, seconds after the run's timed window opened; null when it got no share; monotonic clock",
    ),
    col(
        "wall_s",
        Float,
        false,
        "the replica's own window: its first batch's start to its last step's end (0 with no share); monotonic clock. runs.wall_s spans every replica",
    ),
    col(
        "prefill_s",
        Float,
        false,
        "time in the replica's prompt passes, summed over its batches; monotonic clock",
    ),
    col(
        "decode_s",
        Float,
        false,
        "time in the replica's decode steps, summed over its batches; monotonic clock",
    ),
    col(
        "output_tokens_per_s",
        Float,
        true,
        "output_tokens / wall_s of the replica's own window (null for an empty window)",
    ),
    col(
        "busy_ratio",
        Float,
        true,
        "(prefill_s + decode_s) / wall_s: share of the replica's own window spent computing rather than waiting for arrivals or hand-overs",
    ),
    col(
        "gpu_energy_j",
        Float,
        true,
        "energy of the replica's GPU over the replica's own window (NVML); null on a CPU or where unread. runs.energy_gpu_j counts each physical GPU once over the run's window",
    ),
    col(
        "gpu_energy_source",
        Text,
        false,
        "`nvml` (total-energy counter or integrated power), `unavailable` (a GPU that could not be read: null figure) or `none` (a CPU replica)",
    ),
    col(
        "cpu_energy_source",
        Text,
        false,
        "always `run`: CPU package energy is machine-wide (RAPL and the estimate cannot tell replicas apart), so it is counted once per execution in runs.energy_cpu_j, never per replica",
    ),
    col(
        "ram_energy_source",
        Text,
        false,
        "always `run`: DRAM energy is machine-wide, so it is counted once per execution in runs.energy_ram_j, never per replica",
    ),
    col(
        "kv_cache_peak_bytes",
        Int,
        false,
        "largest KV cache of the replica's batches, analytic from their shape as runs.kv_cache_peak_bytes",
    ),
    col(
        "weight_bytes",
        Int,
        false,
        "bytes of weights the replica held, analytic; each replica holds its own copy",
    ),
    col(
        "gpu_memory_peak_bytes",
        Int,
        true,
        "largest GPU memory in use on the replica's GPU, read at its batch ends (NVML, whole device); null on a CPU",
    ),
    col(
        "gpu_util_mean_pct",
        Float,
        true,
        "mean GPU utilisation of the replica's GPU, read at its batch ends (NVML); null on a CPU",
    ),
];

/// What `cpu_energy_source` and `ram_energy_source` of replicas.parquet always hold: those
/// domains are measured once per execution, in runs.parquet.
pub const PER_RUN_ENERGY_SOURCE: &str = "run";

/// The unit a column's name ends in, spelled out (`_s` → `s`); `None` for counts and text.
pub fn unit(name: &str) -> Option<&'static str> {
    const SUFFIXES: &[(&str, &str)] = &[
        ("_per_s", "1/s"),
        ("_tokens_per_s", "tokens/s"),
        ("_bytes_per_s", "bytes/s"),
        ("_flops_per_s", "FLOP/s"),
        ("_g_per_kwh", "gCO2e/kWh"),
        ("_unix_s", "s since the Unix epoch"),
        ("_s", "s"),
        ("_j", "J"),
        ("_w", "W"),
        ("_g", "g"),
        ("_bytes", "bytes"),
        ("_pct", "%"),
        ("_nats", "nats"),
        ("_ratio", "ratio"),
    ];
    match name {
        "flops_prefill" | "flops_decode" => return Some("FLOP"),
        "flops_per_s" => return Some("FLOP/s"),
        "requests_per_s" => return Some("requests/s"),
        "j_per_output_token" => return Some("J/token"),
        "decode_bytes" => return Some("bytes"),
        "mfu" | "mbu" | "pue" => return Some("ratio"),
        _ => {}
    }
    // The longest matching suffix names the unit (`_bytes_per_s` before `_per_s`).
    SUFFIXES
        .iter()
        .filter(|(suffix, _)| name.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
        .map(|(_, unit)| *unit)
}

/// The Arrow schema of a column list. Each field carries its meaning (`description`) and,
/// where it has one, its `unit` as field metadata, so pyarrow, pandas or polars users see
/// them without reading this file.
pub fn arrow_schema(columns: &[Column]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let mut metadata = HashMap::from([("description".to_string(), c.doc.to_string())]);
                if let Some(unit) = unit(c.name) {
                    metadata.insert("unit".to_string(), unit.to_string());
                }
                Field::new(c.name, c.ty.arrow(), c.nullable).with_metadata(metadata)
            })
            .collect::<Vec<_>>(),
    ))
}

/// A Markdown table documenting a column list (used in docs and a snapshot test).
pub fn markdown(columns: &[Column]) -> String {
    let mut out = String::from("| column | type | nullable | meaning |\n|---|---|---|---|\n");
    for c in columns {
        let ty = match c.ty {
            ColumnType::Text => "string",
            ColumnType::Int => "int64",
            ColumnType::Float => "float64",
        };
        out.push_str(&format!(
            "| `{}` | {ty} | {} | {} |\n",
            c.name,
            if c.nullable { "yes" } else { "no" },
            c.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_the_name_suffix() {
        assert_eq!(unit("ttft_p50_s"), Some("s"));
        assert_eq!(unit("started_at_unix_s"), Some("s since the Unix epoch"));
        assert_eq!(unit("decode_bytes_per_s"), Some("bytes/s"));
        assert_eq!(unit("output_tokens_per_s"), Some("tokens/s"));
        assert_eq!(unit("peak_flops_per_s"), Some("FLOP/s"));
        assert_eq!(unit("energy_other_j"), Some("J"));
        assert_eq!(unit("carbon_intensity_g_per_kwh"), Some("gCO2e/kWh"));
        assert_eq!(unit("model"), None);
        assert_eq!(unit("output_tokens"), None);
    }

    #[test]
    fn every_field_carries_its_description() {
        let schema = arrow_schema(RUN_COLUMNS);
        for (field, column) in schema.fields().iter().zip(RUN_COLUMNS) {
            assert_eq!(
                field.metadata().get("description").map(String::as_str),
                Some(column.doc)
            );
        }
        let ttft = schema.field_with_name("ttft_p50_s").unwrap();
        assert_eq!(ttft.metadata().get("unit").map(String::as_str), Some("s"));
    }

    #[test]
    fn replica_rows_join_runs_on_the_same_key_columns() {
        // A join of replicas.parquet to runs.parquet must read the key the same way.
        for name in ["study", "run_hash", "cycle_id"] {
            let run = RUN_COLUMNS.iter().find(|c| c.name == name);
            let replica = REPLICA_COLUMNS.iter().find(|c| c.name == name);
            assert_eq!(run, replica, "{name}");
        }
        assert_eq!(unit("busy_ratio"), Some("ratio"));
        assert_eq!(unit("gpu_memory_peak_bytes"), Some("bytes"));
        assert_eq!(unit("start_s"), Some("s"));
        let request_replica = REQUEST_COLUMNS.iter().find(|c| c.name == "replica");
        let replica = REPLICA_COLUMNS.iter().find(|c| c.name == "replica");
        assert_eq!(request_replica.map(|c| c.ty), replica.map(|c| c.ty));
    }

    #[test]
    fn column_names_are_unique() {
        for columns in [
            RUN_COLUMNS,
            REQUEST_COLUMNS,
            SAMPLE_COLUMNS,
            REPLICA_COLUMNS,
            TOKEN_COLUMNS,
        ] {
            let mut names: Vec<&str> = columns.iter().map(|c| c.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len());
        }
    }
}
