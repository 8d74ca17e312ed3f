//! What a finished (or failed) run produces, and the sink that receives it.
//!
//! The engine hands records to a [`RecordSink`]; the binary wires that to the results store,
//! so the engine never names an Arrow type.

use std::collections::HashSet;

use crate::carbon::Intensity;
use crate::latency::RequestTiming;
use crate::metering::{EnergySource, MeterReport};
use crate::plan::RunSpec;
use crate::quality::QualityMetrics;
use crate::serving::Occupancy;
use crate::stage::ServeSpec;
use api::meter::DevicePeak;
use api::runtime::ModelInfo;

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
    /// Largest bytes the device allocator held at a batch end (`None`: not told, the CPU).
    pub device_memory_peak_bytes: Option<u64>,
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
    /// Quality against the f32 unquantized reference, when measured (`quality_*` columns).
    pub quality: Option<QualityMetrics>,
    /// What the continuous-batching scheduler did, for a served run.
    pub serving: Option<ServingMetrics>,
}

/// What a served run's scheduler did ([`crate::serving`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ServingMetrics {
    /// The scheduler's limits.
    pub spec: ServeSpec,
    /// The mean rate the arrival pattern offered, requests per second (`None`: all at once).
    pub offered_rate_per_s: Option<f64>,
    /// Iterations run.
    pub iterations: usize,
    /// Seconds the scheduler itself took (outside the backend's calls).
    pub schedule_s: f64,
    /// Intervals with no request in flight, seconds after the window opened.
    pub idle: Vec<(f64, f64)>,
    /// The running batch after each iteration that changed it.
    pub occupancy: Vec<Occupancy>,
}

impl ServingMetrics {
    /// Seconds with no request in flight.
    pub fn idle_s(&self) -> f64 {
        self.idle.iter().fold(0.0, |sum, (a, b)| sum + (b - a))
    }

    /// Mean sequences in the running batch over time, from the first change to the last
    /// (the series is a step function; idle intervals hold none).
    pub fn mean_running(&self) -> Option<f64> {
        let (first, last) = (self.occupancy.first()?, self.occupancy.last()?);
        let span = last.t_s - first.t_s;
        if span <= 0.0 {
            return Some(first.running as f64);
        }
        let area: f64 = self
            .occupancy
            .windows(2)
            .map(|w| w[0].running as f64 * (w[1].t_s - w[0].t_s))
            .sum();
        Some(area / span)
    }

    /// The running batch and queue at `t_s` (seconds after the window opened): as left by
    /// the last iteration that ended by then; empty before the first and while idle.
    pub fn occupancy_at(&self, t_s: f64) -> (usize, usize) {
        let idle = self.idle.iter().any(|&(a, b)| a <= t_s && t_s < b);
        match self.occupancy.iter().rev().find(|o| o.t_s <= t_s) {
            Some(o) if !idle => (o.running, o.queued),
            _ => (0, 0),
        }
    }
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

    /// Total energy minus idle power × wall time, joules (needs an idle baseline). Null for a
    /// run that shared the machine with other runs: its baseline ran beside their work.
    pub fn energy_net_j(&self) -> Option<f64> {
        if self
            .meters
            .energy
            .iter()
            .any(|d| matches!(d.source, EnergySource::Shared(_)))
        {
            return None;
        }
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

    /// Seconds the device computed: prompt passes plus decode steps (the window less its waits
    /// for arrivals and hand-overs between batches).
    pub fn compute_s(&self) -> f64 {
        self.prefill_s + self.decode_s
    }

    /// Analytic FLOPs per second of compute time (prefill + decode), the rate MFU compares.
    pub fn compute_flops_per_s(&self) -> Option<f64> {
        let compute_s = self.compute_s();
        (compute_s > 0.0).then(|| (self.flops_prefill + self.flops_decode) as f64 / compute_s)
    }

    /// Model FLOPs utilisation over the compute phases: FLOPs per second of prefill + decode
    /// time over the device's peak. Like MBU it leaves idle wall time out; a run that waits
    /// for arrivals does not look less efficient at computing.
    pub fn mfu(&self) -> Option<f64> {
        Some(self.compute_flops_per_s()? / self.peak.as_ref()?.flops_per_s)
    }

    /// What a reader must know to interpret the run's figures (`meter_notes`).
    pub fn interpretation_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(mbu) = self.mbu()
            && mbu > 1.0
        {
            notes.push(format!(
                "mbu {mbu:.2} > 1: decode read weights faster than the measured memory bandwidth, so they were (partly) served from cache; MBU does not bound this run"
            ));
        }
        let estimated = self
            .meters
            .energy
            .iter()
            .any(|d| d.source.source().is_some_and(|s| !s.is_measured()));
        let process = self.meters.utilisation_mean(|s| s.process_cpu_pct);
        let system = self.meters.utilisation_mean(|s| s.system_cpu_pct);
        if estimated
            && let (Some(process), Some(system)) = (process, system)
            && let Some(cores) = self.meters.cpu_count
        {
            // process is % of one core; system is % of all cores.
            let process_share = process / cores as f64;
            if system > 2.0 * process_share && system - process_share > 10.0 {
                notes.push(format!(
                    "llmeff used {process_share:.0} % of the CPUs while the machine was {system:.0} % busy: a machine-mode estimate charges the other load to this run (measure estimate: \"process\" charges only llmeff's share)"
                ));
            }
        }
        notes
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
    /// Per-replica figures of a run on several devices (empty for one device).
    pub replicas: Vec<ReplicaRecord>,
}

/// What one replica of a data-parallel run did (`replicas.parquet`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaRecord {
    /// 0-based replica, in the order the devices were named.
    pub replica: usize,
    /// Its device (`cuda:1`, `cpu:0-3`).
    pub device: String,
    /// The cores it was pinned to (`0-3`), for a core set; `None` otherwise.
    pub cores: Option<String>,
    /// Requests in its share.
    pub num_requests: usize,
    /// Batches it ran.
    pub num_batches: usize,
    /// Prompt tokens of its share, no padding.
    pub input_tokens: usize,
    /// Tokens it generated, no padding.
    pub output_tokens: usize,
    /// When its first batch started, seconds after the run's window opened (`None`: no share).
    pub start_s: Option<f64>,
    /// Its first batch's start to its last step's end, seconds (0 with no share).
    pub wall_s: f64,
    /// Time in its prompt passes, seconds.
    pub prefill_s: f64,
    /// Time in its decode steps, seconds.
    pub decode_s: f64,
    /// Its GPU's energy over its own wall window, joules (`None` on a CPU or where unread).
    pub gpu_energy_j: Option<f64>,
    /// Where `gpu_energy_j` comes from: `nvml`, `unavailable`, or `none` for a CPU replica.
    pub gpu_energy_source: String,
    /// Largest KV cache it held, bytes.
    pub kv_cache_peak_bytes: u64,
    /// Weights it held, bytes (each replica holds its own copy).
    pub weight_bytes: u64,
    /// Largest GPU memory in use on its GPU at a batch end, bytes (NVML; `None` on a CPU).
    pub gpu_memory_peak_bytes: Option<u64>,
    /// Mean GPU utilisation read at its batch ends, percent (NVML; `None` on a CPU).
    pub gpu_util_mean_pct: Option<f64>,
}

impl ReplicaRecord {
    /// Output tokens per second of its own wall window.
    pub fn output_tokens_per_s(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| self.output_tokens as f64 / self.wall_s)
    }

    /// Share of its wall window spent computing (prompt passes and decode steps).
    pub fn busy_ratio(&self) -> Option<f64> {
        (self.wall_s > 0.0).then(|| (self.prefill_s + self.decode_s) / self.wall_s)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The occupancy series is a step function over time: its mean weights each level by how
    /// long it held, and a lookup inside an idle interval is empty.
    #[test]
    fn occupancy_is_a_step_function_over_time() {
        let at = |t_s, running, queued| Occupancy {
            t_s,
            running,
            queued,
        };
        let serving = ServingMetrics {
            spec: ServeSpec {
                max_batch: 4,
                max_batch_tokens: 64,
                prefill: crate::stage::PrefillMode::Whole,
            },
            offered_rate_per_s: Some(2.0),
            iterations: 10,
            schedule_s: 0.0,
            idle: vec![(3.0, 4.0)],
            occupancy: vec![at(0.0, 1, 0), at(1.0, 3, 2), at(3.0, 0, 0), at(4.0, 2, 0)],
        };
        // 1 for 1 s, 3 for 2 s, 0 for 1 s: 7 / 4.
        assert_eq!(serving.mean_running(), Some(1.75));
        assert_eq!(serving.occupancy_at(2.5), (3, 2));
        assert_eq!(serving.occupancy_at(3.5), (0, 0));
        assert_eq!(serving.occupancy_at(5.0), (2, 0));
        assert_eq!(serving.idle_s(), 1.0);
    }
    use crate::metering::{DomainEnergy, EnergySource};
    use api::meter::{Domain, Sample, Source};

    fn peak(flops_per_s: f64, bytes_per_s: f64) -> Option<DevicePeak> {
        Some(DevicePeak {
            flops_per_s,
            bytes_per_s,
            source: "test".into(),
            ..DevicePeak::default()
        })
    }

    #[test]
    fn mfu_is_taken_over_the_compute_phases_not_idle_wall() {
        // Regression (issue A.3): 2 s of compute in a 10 s window that mostly waited for
        // arrivals; over wall time MFU read 0.2.
        let m = RunMetrics {
            wall_s: 10.0,
            prefill_s: 0.5,
            decode_s: 1.5,
            flops_prefill: 1_000_000,
            flops_decode: 1_000_000,
            peak: peak(1e6, 1.0),
            ..RunMetrics::default()
        };
        assert_eq!(m.compute_flops_per_s(), Some(1e6));
        assert_eq!(m.mfu(), Some(1.0));
        assert_eq!(m.flops_per_s(), Some(2e5));
    }

    #[test]
    fn an_mbu_above_one_is_explained() {
        let mut m = RunMetrics {
            decode_s: 1.0,
            decode_bytes: 300,
            peak: peak(1.0, 200.0),
            ..RunMetrics::default()
        };
        let notes = m.interpretation_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("mbu 1.50 > 1"), "{notes:?}");
        m.decode_bytes = 100;
        assert!(m.interpretation_notes().is_empty());
    }

    fn estimated_run(process_pct: f64, system_pct: f64) -> RunMetrics {
        let sample = Sample {
            process_cpu_pct: Some(process_pct),
            system_cpu_pct: Some(system_pct),
            ..Sample::default()
        };
        RunMetrics {
            meters: MeterReport {
                energy: vec![DomainEnergy {
                    domain: Domain::Cpu,
                    joules: Some(10.0),
                    source: EnergySource::From(Source::Estimate),
                    meter: None,
                }],
                samples: vec![sample.clone(), sample],
                cpu_count: Some(2),
                ..MeterReport::default()
            },
            ..RunMetrics::default()
        }
    }

    #[test]
    fn an_estimate_charging_other_tenants_load_is_noted() {
        // llmeff at 50 % of one core = 25 % of 2 CPUs, the machine 80 % busy.
        let notes = estimated_run(50.0, 80.0).interpretation_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("llmeff used 25 % of the CPUs while the machine was 80 % busy")
        );
        // Its own load: 180 % of one core = 90 % of 2 CPUs.
        assert!(estimated_run(180.0, 92.0).interpretation_notes().is_empty());
    }
}
