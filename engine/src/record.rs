//! What a finished (or failed) run produces, and the sink that receives it.
//!
//! The engine hands records to a [`RecordSink`]; the binary wires that to the results store,
//! so the engine never names an Arrow type.

use std::collections::HashSet;

use crate::carbon::Intensity;
use crate::latency::RequestTiming;
use crate::meter::DevicePeak;
use crate::metering::MeterReport;
use crate::plan::RunSpec;
use crate::runtime::ModelInfo;

/// Whether a run produced measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Finished and measured.
    Ok,
    /// Failed; the record's `error` says why.
    Failed,
}

impl RunStatus {
    /// Name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Failed => "failed",
        }
    }
}

/// Run-level measurements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunMetrics {
    /// Prompts processed.
    pub num_requests: usize,
    /// Batches processed.
    pub num_batches: usize,
    /// Prompt tokens, no padding.
    pub input_tokens: usize,
    /// Generated tokens, no padding.
    pub output_tokens: usize,
    /// Timed wall time of the run (warm-up excluded), seconds.
    pub wall_s: f64,
    /// Sum over batches of the prompt pass (first step), seconds.
    pub prefill_s: f64,
    /// Sum over batches of the decode steps, seconds.
    pub decode_s: f64,
    /// Untimed warm-up, seconds (reported, not counted).
    pub warmup_s: f64,
    /// Peak KV-cache size seen, bytes.
    pub kv_cache_peak_bytes: u64,
    /// Analytic FLOPs of the prompt passes (unpadded prompts).
    pub flops_prefill: u64,
    /// Analytic FLOPs of the decode steps (real KV lengths, no padding).
    pub flops_decode: u64,
    /// Analytic bytes read by the decode steps: the weights once per step plus each
    /// sequence's KV cache.
    pub decode_bytes: u64,
    /// The device's peak compute and bandwidth, for MFU and MBU.
    pub peak: Option<DevicePeak>,
    /// Energy, samples and memory from the meters.
    pub meters: MeterReport,
    /// The grid intensity the run is accounted with (when energy was measured).
    pub intensity: Option<Intensity>,
}

impl RunMetrics {
    /// Output tokens per second of wall time.
    pub fn output_tokens_per_s(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.output_tokens as f64 / self.wall_s)
    }

    /// Input plus output tokens per second of wall time.
    pub fn total_tokens_per_s(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| (self.input_tokens + self.output_tokens) as f64 / self.wall_s)
    }

    /// Analytic FLOPs per second of wall time.
    pub fn flops_per_s(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| (self.flops_prefill + self.flops_decode) as f64 / self.wall_s)
    }

    /// Total energy minus idle power × wall time, joules (needs an idle baseline).
    pub fn energy_net_j(&self) -> Option<f64> {
        Some(self.meters.total_j()? - self.meters.idle_power_w? * self.wall_s)
    }

    /// Total energy per generated token, joules.
    pub fn j_per_output_token(&self) -> Option<f64> {
        let total = self.meters.total_j()?;
        (self.output_tokens > 0).then(|| total / self.output_tokens as f64)
    }

    /// Grams of CO2e of the total energy.
    pub fn co2e_g(&self) -> Option<f64> {
        Some(self.intensity.as_ref()?.co2e_g(self.meters.total_j()?))
    }

    /// Model FLOPs utilisation: achieved FLOP/s over the device's peak.
    pub fn mfu(&self) -> Option<f64> {
        Some(self.flops_per_s()? / self.peak.as_ref()?.flops_per_s)
    }

    /// Bytes read per second of decode time (weights and KV cache).
    pub fn decode_bytes_per_s(&self) -> Option<f64> {
        (self.decode_s > 0.0).then(|| self.decode_bytes as f64 / self.decode_s)
    }

    /// Model bandwidth utilisation of the decode steps: achieved over peak bandwidth.
    pub fn mbu(&self) -> Option<f64> {
        Some(self.decode_bytes_per_s()? / self.peak.as_ref()?.bytes_per_s)
    }

    /// Requests per second of wall time.
    pub fn requests_per_s(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.num_requests as f64 / self.wall_s)
    }
}

/// One execution of one run, successful or not.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Study name.
    pub study: String,
    /// The run's content hash (hex).
    pub run_hash: String,
    /// 0-based cycle.
    pub cycle: usize,
    /// The run's configuration.
    pub spec: RunSpec,
    /// Ok or failed.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Model facts, when the model loaded.
    pub model: Option<ModelInfo>,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_at_unix_s: f64,
    /// Measurements, for finished runs.
    pub metrics: Option<RunMetrics>,
    /// Per-request timings, for finished runs.
    pub requests: Vec<RequestTiming>,
}

/// The error a sink reports when it cannot store a record.
#[derive(Debug, thiserror::Error)]
#[error("cannot store results of run {run_hash}: {source}")]
pub struct SinkError {
    /// Which run.
    pub run_hash: String,
    /// The underlying failure.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Receives finished runs; the binary connects it to the results store.
pub trait RecordSink {
    /// Stores one record durably before returning.
    fn record(&mut self, record: &RunRecord) -> Result<(), SinkError>;
    /// (run hash, cycle) pairs already stored, so an interrupted study resumes.
    fn completed(&self) -> HashSet<(String, usize)>;
}

/// A sink that keeps records in memory (tests, the REPL).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Records received, in order.
    pub records: Vec<RunRecord>,
}

impl RecordSink for MemorySink {
    fn record(&mut self, record: &RunRecord) -> Result<(), SinkError> {
        self.records.push(record.clone());
        Ok(())
    }

    fn completed(&self) -> HashSet<(String, usize)> {
        self.records
            .iter()
            .filter(|r| r.status == RunStatus::Ok)
            .map(|r| (r.run_hash.clone(), r.cycle))
            .collect()
    }
}
