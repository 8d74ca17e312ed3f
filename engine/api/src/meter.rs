//! The meter interfaces backends implement: energy counters, background probes, device peaks.
//!
//! The engine decides *when* to read (run start and end, phase boundaries, a background tick);
//! backends decide *how* (NVML, RAPL/powercap, /proc, a TDP estimate). Every figure carries a
//! [`Source`], so a table never mixes a measured joule with an estimated one unlabelled.

use std::fmt;

/// Where a figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// NVIDIA Management Library (total-energy counter or integrated power readings).
    Nvml,
    /// AMD GPUs through the amdgpu driver's hwmon files (`energy1_input`, or
    /// `power1_average`/`power1_input` integrated by the trapezoidal rule).
    Amdgpu,
    /// Intel/AMD RAPL counters read through Linux powercap.
    Rapl,
    /// Modelled, not measured (CodeCarbon's TDP × load method, RAM by size).
    Estimate,
}

impl Source {
    /// Name used in tables (`nvml`, `amdgpu`, `rapl`, `estimate`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Nvml => "nvml",
            Source::Amdgpu => "amdgpu",
            Source::Rapl => "rapl",
            Source::Estimate => "estimate",
        }
    }

    /// True when the figure comes from a hardware sensor.
    pub fn is_measured(self) -> bool {
        !matches!(self, Source::Estimate)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of the machine an energy figure covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// CPU packages (cores and uncore).
    Cpu,
    /// GPUs used by the run, each physical device once.
    Gpu,
    /// DRAM.
    Ram,
}

impl Domain {
    /// Every domain, in column order.
    pub const ALL: [Domain; 3] = [Domain::Cpu, Domain::Gpu, Domain::Ram];

    /// Name used in column names (`cpu`, `gpu`, `ram`).
    pub fn name(self) -> &'static str {
        match self {
            Domain::Cpu => "cpu",
            Domain::Gpu => "gpu",
            Domain::Ram => "ram",
        }
    }
}

/// Why a meter could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{meter}: {reason}")]
pub struct MeterError {
    /// Which meter.
    pub meter: String,
    /// What went wrong.
    pub reason: String,
}

/// A cumulative energy counter for one domain.
///
/// `read_j` returns joules since an arbitrary origin and never decreases: implementations
/// unwrap hardware counter wrap-around, which is why the engine also reads every counter on
/// each background tick (often enough that a counter cannot wrap twice between reads).
pub trait EnergyCounter: Send {
    /// The domain it covers.
    fn domain(&self) -> Domain;
    /// Where its joules come from.
    fn source(&self) -> Source;
    /// What exactly is read, for `llmeff env` and error messages (`rapl package-0`).
    fn describe(&self) -> String;
    /// Joules since this counter's origin.
    fn read_j(&mut self) -> Result<f64, MeterError>;
}

/// One background sample of a run; `None` where no probe measures the figure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the run's timed window opened.
    pub t_s: f64,
    /// Resident set size of this process, bytes.
    pub rss_bytes: Option<u64>,
    /// CPU time of this process over the last interval, percent of one core (200 = two cores).
    pub process_cpu_pct: Option<f64>,
    /// Busy share of all CPUs of the machine over the last interval, percent (its own work:
    /// time stolen by a hypervisor is not counted).
    pub system_cpu_pct: Option<f64>,
    /// Share of all CPUs' time a hypervisor gave to other guests over the last interval,
    /// percent (`/proc/stat` steal): time the run waited for CPUs it appeared to have.
    pub cpu_steal_pct: Option<f64>,
    /// GPU busy share over the last interval (NVML), percent; mean over the run's GPUs.
    pub gpu_util_pct: Option<f64>,
    /// GPU memory in use on the run's GPUs, bytes (all processes: NVML sees devices).
    pub gpu_mem_bytes: Option<u64>,
    /// Mean CPU power over the last interval, watts (from the CPU energy counter).
    pub power_cpu_w: Option<f64>,
    /// Mean GPU power over the last interval, watts.
    pub power_gpu_w: Option<f64>,
    /// Mean DRAM power over the last interval, watts.
    pub power_ram_w: Option<f64>,
}

impl Sample {
    /// Power of a domain.
    pub fn power_w(&self, domain: Domain) -> Option<f64> {
        match domain {
            Domain::Cpu => self.power_cpu_w,
            Domain::Gpu => self.power_gpu_w,
            Domain::Ram => self.power_ram_w,
        }
    }

    /// Sets the power of a domain.
    pub fn set_power_w(&mut self, domain: Domain, watts: f64) {
        match domain {
            Domain::Cpu => self.power_cpu_w = Some(watts),
            Domain::Gpu => self.power_gpu_w = Some(watts),
            Domain::Ram => self.power_ram_w = Some(watts),
        }
    }
}

/// A background probe: memory and utilisation, read on the sampler thread.
pub trait Probe: Send {
    /// Called once when the timed window opens (e.g. resets the OS high-water mark, so the
    /// run's peak is its own and not the model load's; never reset just before reading).
    fn start(&mut self) {}
    /// Fills the figures it measures into `sample`.
    fn sample(&mut self, sample: &mut Sample);
    /// The OS high-water mark of resident memory since `start`, bytes, where it has one.
    fn rss_high_water_bytes(&mut self) -> Option<u64> {
        None
    }
}

/// The peak compute and memory bandwidth of a device, for MFU and MBU.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DevicePeak {
    /// Peak dense FLOP/s at the run's dtype.
    pub flops_per_s: f64,
    /// Peak memory bandwidth, bytes/s (on a CPU: a streaming read, what a decode step does).
    pub bytes_per_s: f64,
    /// Where the peaks come from (`table: NVIDIA H100 80GB HBM3`, `microbenchmark`).
    pub source: String,
    /// When a measured peak was measured, seconds since the Unix epoch (`None`: datasheet).
    pub measured_at_unix_s: Option<f64>,
    /// Threads a measured peak used (`None`: datasheet).
    pub threads: Option<usize>,
    /// The machine's state while it was measured (`steal 0.4 %, other load 3 %`), and whether
    /// it was too noisy to cache (`None`: datasheet, or not measurable here).
    pub conditions: Option<String>,
    /// True when the figures were read from a cache written by an earlier run, false when
    /// measured for this run or taken from a datasheet.
    pub cached: bool,
}

/// How an estimated (not measured) CPU/RAM energy charges a run: CodeCarbon's
/// `tracking_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateMode {
    /// The whole machine's load and installed memory (CodeCarbon's default).
    #[default]
    Machine,
    /// Only this process's CPU time and resident memory, so other tenants' load is not
    /// charged to the run.
    Process,
}

impl EstimateMode {
    /// Every mode's name, as scripts spell it.
    pub const NAMES: [&'static str; 2] = ["machine", "process"];

    /// Name used in scripts and tables (`machine`, `process`).
    pub fn name(self) -> &'static str {
        match self {
            EstimateMode::Machine => "machine",
            EstimateMode::Process => "process",
        }
    }

    /// The mode a script names, if any.
    pub fn parse(name: &str) -> Option<EstimateMode> {
        match name {
            "machine" => Some(EstimateMode::Machine),
            "process" => Some(EstimateMode::Process),
            _ => None,
        }
    }

    /// True for the default mode (kept out of stage hashes, so older runs hash the same).
    pub fn is_machine(&self) -> bool {
        *self == EstimateMode::Machine
    }
}

/// What a machine can measure, for `llmeff env`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterStatus {
    /// Meter name (`nvml`, `amdgpu`, `rapl`, `estimate`, `procfs`).
    pub name: String,
    /// Whether it can be used here.
    pub available: bool,
    /// What it covers, or why it is missing.
    pub detail: String,
}

/// The meters of one machine, provided by the backend the binary wires in.
pub trait MeterProvider: Send + Sync {
    /// Energy counters for a run on `device`: at most one per domain, the best source first
    /// (sensor over estimate). Domains with no counter are reported as unavailable.
    fn energy_counters(&self, device: &str) -> Vec<Box<dyn EnergyCounter>>;
    /// [`MeterProvider::energy_counters`] with estimates charging the run by `mode`; a
    /// provider without estimates ignores the mode.
    fn energy_counters_for(&self, device: &str, mode: EstimateMode) -> Vec<Box<dyn EnergyCounter>> {
        let _ = mode;
        self.energy_counters(device)
    }
    /// Memory and utilisation probes for a run on `device`.
    fn probes(&self, device: &str) -> Vec<Box<dyn Probe>>;
    /// Peak FLOP/s and bandwidth of `device` at `dtype` (`f32`, `f16`, `bf16`), if known.
    fn peak(&self, device: &str, dtype: &str) -> Option<DevicePeak>;
    /// Every meter llmeff knows and whether this machine has it.
    fn inventory(&self) -> Vec<MeterStatus>;
}

/// A provider with no meters: every energy figure is unavailable (tests, `--no-meters`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMeters;

impl MeterProvider for NoMeters {
    fn energy_counters(&self, _device: &str) -> Vec<Box<dyn EnergyCounter>> {
        Vec::new()
    }
    fn probes(&self, _device: &str) -> Vec<Box<dyn Probe>> {
        Vec::new()
    }
    fn peak(&self, _device: &str, _dtype: &str) -> Option<DevicePeak> {
        None
    }
    fn inventory(&self) -> Vec<MeterStatus> {
        Vec::new()
    }
}

/// Exact energy of a power trace by the trapezoidal rule (power polled at known times).
///
/// NVML GPUs without a total-energy counter and synthetic test traces use it; for a trace
/// that is piecewise linear between samples the result is exact.
pub fn integrate_power_j(trace: &[(f64, f64)]) -> f64 {
    trace
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum()
}

/// Unwraps a counter that counts in `[0, max)` and wraps to zero (RAPL's
/// `max_energy_range_uj`, the convention of the Linux powercap documentation).
///
/// Assumes at most one wrap between `previous` and `current`, which holds when the counter is
/// read more often than it can wrap (tens of seconds at full power for RAPL).
pub fn wrapping_delta(previous: u64, current: u64, max: u64) -> u64 {
    if current >= previous {
        current - previous
    } else {
        (max - previous) + current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trapezoid_is_exact_on_linear_ramps() {
        // 0 → 10 W over 2 s is 10 J, then 10 W flat for 1 s.
        let trace = [(0.0, 0.0), (2.0, 10.0), (3.0, 10.0)];
        assert_eq!(integrate_power_j(&trace), 20.0);
        assert_eq!(integrate_power_j(&[(1.0, 5.0)]), 0.0);
    }

    #[test]
    fn wrap_around_adds_the_range() {
        assert_eq!(wrapping_delta(100, 250, 1000), 150);
        // 990 → wraps at 1000 → 10: 10 µJ to the top, 10 after.
        assert_eq!(wrapping_delta(990, 10, 1000), 20);
        assert_eq!(wrapping_delta(5, 5, 1000), 0);
    }

    #[test]
    fn estimate_modes_round_trip_their_names() {
        for name in EstimateMode::NAMES {
            assert_eq!(
                EstimateMode::parse(name).map(EstimateMode::name),
                Some(name)
            );
        }
        assert_eq!(EstimateMode::parse("Machine"), None);
        assert!(EstimateMode::default().is_machine());
        assert!(!EstimateMode::Process.is_machine());
    }

    #[test]
    fn sources_say_whether_they_measure() {
        assert!(Source::Rapl.is_measured());
        assert!(Source::Nvml.is_measured());
        assert!(!Source::Estimate.is_measured());
        assert_eq!(Domain::Ram.name(), "ram");
    }
}
