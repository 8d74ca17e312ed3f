//! Peak compute and memory bandwidth of a device, the denominators of MFU and MBU.
//!
//! GPUs: a table of datasheet figures keyed by the exact NVML product name. CPUs: nothing
//! comparable is published per SKU, so a short microbenchmark (a multi-threaded streaming read,
//! the MBU denominator because a decode step reads its weights; a copy beside it for
//! `llmeff bench`; a matmul on the code the runs use: llmeff's GEMM for f32, burn-flex for
//! f16/bf16) is measured per CPU model, thread count and dtype and cached as JSON with when,
//! with how many threads and under what load it was measured. A VM's neighbours or another
//! process can halve such figures (docs/perf/2026-12-kernels.md), so the steal and other
//! processes' CPU time are read from `/proc` around the measurement, and only a quiet figure
//! is cached; a noisy one serves the run that measured it and says so.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use api::meter::DevicePeak;
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexDevice};
use kernels::{Matrix, MatrixMut};
use serde::{Deserialize, Serialize};

use super::estimate::{CpuTimes, MIN_STEAL_JIFFIES};
use super::procfs::process_ticks;

/// Datasheet peaks of one GPU model. FLOP/s are dense (NVIDIA quotes tensor figures "with
/// sparsity" too; those are twice the dense ones and never reached by dense LLM inference).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    /// Exact NVML product names of this model.
    pub nvml_names: &'static [&'static str],
    /// FP32 on CUDA cores (not TF32), FLOP/s.
    pub f32_flops: f64,
    /// FP16 tensor cores, FP32 accumulate, dense, FLOP/s.
    pub f16_flops: f64,
    /// BF16 tensor cores, dense, FLOP/s; `None` where the GPU has no BF16 (Turing, Volta).
    pub bf16_flops: Option<f64>,
    /// Memory bandwidth, bytes/s.
    pub bytes_per_s: f64,
}

const T: f64 = 1e12;
const GB: f64 = 1e9;

/// Known GPUs. Sources, NVIDIA datasheets: H100 Tensor Core GPU datasheet (SXM5, PCIe, NVL),
/// H200 Tensor Core GPU product brief (SXM, NVL), A100 Tensor Core GPU datasheet (40/80 GB,
/// SXM4 and PCIe), L4, L40S, A10, T4 and V100 datasheets; GeForce RTX 4090 figures from the
/// NVIDIA Ada GPU architecture whitepaper (Appendix A) and RTX 3090 from the NVIDIA Ampere
/// GA102 GPU architecture whitepaper (FP16/BF16 tensor with FP32 accumulate, which GeForce
/// cards run at half the FP16-accumulate rate).
pub const GPU_SPECS: &[GpuSpec] = &[
    GpuSpec {
        nvml_names: &["NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5 80GB"],
        f32_flops: 67.0 * T,
        f16_flops: 989.4 * T,
        bf16_flops: Some(989.4 * T),
        bytes_per_s: 3350.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA H100 PCIe"],
        f32_flops: 51.0 * T,
        f16_flops: 756.5 * T,
        bf16_flops: Some(756.5 * T),
        bytes_per_s: 2000.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA H100 NVL"],
        f32_flops: 60.0 * T,
        f16_flops: 835.5 * T,
        bf16_flops: Some(835.5 * T),
        bytes_per_s: 3900.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA H200", "NVIDIA H200 SXM 141GB"],
        f32_flops: 67.0 * T,
        f16_flops: 989.4 * T,
        bf16_flops: Some(989.4 * T),
        bytes_per_s: 4800.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA H200 NVL"],
        f32_flops: 60.0 * T,
        f16_flops: 835.5 * T,
        bf16_flops: Some(835.5 * T),
        bytes_per_s: 4800.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"],
        f32_flops: 19.5 * T,
        f16_flops: 312.0 * T,
        bf16_flops: Some(312.0 * T),
        bytes_per_s: 1555.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA A100-SXM4-80GB"],
        f32_flops: 19.5 * T,
        f16_flops: 312.0 * T,
        bf16_flops: Some(312.0 * T),
        bytes_per_s: 2039.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"],
        f32_flops: 19.5 * T,
        f16_flops: 312.0 * T,
        bf16_flops: Some(312.0 * T),
        bytes_per_s: 1935.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA L4"],
        f32_flops: 30.3 * T,
        f16_flops: 121.0 * T,
        bf16_flops: Some(121.0 * T),
        bytes_per_s: 300.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA L40S"],
        f32_flops: 91.6 * T,
        f16_flops: 362.05 * T,
        bf16_flops: Some(362.05 * T),
        bytes_per_s: 864.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA A10"],
        f32_flops: 31.2 * T,
        f16_flops: 125.0 * T,
        bf16_flops: Some(125.0 * T),
        bytes_per_s: 600.0 * GB,
    },
    GpuSpec {
        nvml_names: &["Tesla T4"],
        f32_flops: 8.1 * T,
        f16_flops: 65.0 * T,
        bf16_flops: None,
        bytes_per_s: 320.0 * GB,
    },
    GpuSpec {
        nvml_names: &["Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB"],
        f32_flops: 15.7 * T,
        f16_flops: 125.0 * T,
        bf16_flops: None,
        bytes_per_s: 900.0 * GB,
    },
    GpuSpec {
        nvml_names: &["Tesla V100-PCIE-16GB", "Tesla V100-PCIE-32GB"],
        f32_flops: 14.0 * T,
        f16_flops: 112.0 * T,
        bf16_flops: None,
        bytes_per_s: 900.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA GeForce RTX 4090"],
        f32_flops: 82.6 * T,
        f16_flops: 165.2 * T,
        bf16_flops: Some(165.2 * T),
        bytes_per_s: 1008.0 * GB,
    },
    GpuSpec {
        nvml_names: &["NVIDIA GeForce RTX 3090"],
        f32_flops: 35.6 * T,
        f16_flops: 71.0 * T,
        bf16_flops: Some(71.0 * T),
        bytes_per_s: 936.0 * GB,
    },
];

fn same_name(a: &str, b: &str) -> bool {
    let words = |s: &str| {
        s.split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
    };
    words(a) == words(b)
}

/// The datasheet row of a GPU by its NVML name (exact, ignoring case and spacing: `RTX 3090`
/// must not match `RTX 3090 Ti`).
pub fn gpu_spec(nvml_name: &str) -> Option<&'static GpuSpec> {
    GPU_SPECS
        .iter()
        .find(|s| s.nvml_names.iter().any(|n| same_name(n, nvml_name)))
}

/// The peak of a GPU at `dtype` (`f32`, `f16`, `bf16`), if the GPU is in the table.
pub fn gpu_peak(nvml_name: &str, dtype: &str) -> Option<DevicePeak> {
    let spec = gpu_spec(nvml_name)?;
    let flops = match dtype {
        "f32" => spec.f32_flops,
        "f16" => spec.f16_flops,
        "bf16" => spec.bf16_flops?,
        _ => return None,
    };
    Some(DevicePeak {
        flops_per_s: flops,
        bytes_per_s: spec.bytes_per_s,
        source: format!("table: {}", nvml_name.trim()),
        ..DevicePeak::default()
    })
}

/// Why the CPU peak could not be measured or cached.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeakError {
    /// The dtype is not one llmeff runs (`f32`, `f16`, `bf16`).
    #[error("unknown dtype {0:?}")]
    UnknownDtype(String),
    /// burn panicked or failed during the matmul benchmark.
    #[error("matmul benchmark failed: {0}")]
    Benchmark(String),
    /// The f32 kernel refused the benchmark's operands.
    #[error("the f32 matmul's operands: {0}")]
    Shape(#[from] kernels::ShapeError),
    /// The measurement produced no usable number.
    #[error("the {0} benchmark measured no time")]
    NoTime(&'static str),
}

/// The cache file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPeakCache {
    /// One entry per (CPU model, thread count, dtype) measured quietly on this machine.
    pub entries: Vec<CpuPeakEntry>,
}

/// Peaks of one CPU model at one thread count and dtype, measured on a quiet machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuPeakEntry {
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// Threads the benchmark used (the rayon pool the runs use).
    pub threads: usize,
    /// How the figures were measured ([`PEAK_METHOD`]); entries from an older method are
    /// measured again.
    pub method: u32,
    /// The matmul's dtype (`f32`, `f16`, `bf16`).
    pub dtype: String,
    /// Best streaming read bandwidth (a sum over a buffer far larger than cache), bytes/s:
    /// the MBU denominator, since a decode step reads its weights and writes little.
    pub read_bytes_per_s: f64,
    /// Best memory copy bandwidth, bytes read + written per second (`llmeff bench` compares
    /// its per-row copy against it).
    pub copy_bytes_per_s: f64,
    /// Best matmul FLOP/s at `dtype`.
    pub flops_per_s: f64,
    /// When it was measured, seconds since the Unix epoch.
    pub measured_at_unix_s: f64,
    /// The machine's state while it was measured.
    pub conditions: LoadConditions,
}

/// The default cache folder: `$XDG_CACHE_HOME/llmeff`, else `$HOME/.cache/llmeff`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("llmeff"))
}

/// The most CPU steal, percent of all CPUs' time, under which a peak is cached.
pub const QUIET_MAX_STEAL_PCT: f64 = 2.0;

/// The most CPU time other processes may take, percent of all CPUs' time, while a peak that
/// is cached is measured: they would share the cores and the memory bus with the benchmark.
pub const QUIET_MAX_OTHER_LOAD_PCT: f64 = 5.0;

/// Measurements tried before a noisy figure is used for the run (and not cached).
pub const PEAK_ATTEMPTS: usize = 2;

/// What `/proc` says at one instant: all CPUs' jiffies, this process's CPU ticks, the
/// 1-minute load average.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSnapshot {
    /// The `cpu` line of `/proc/stat`.
    pub cpu: Option<CpuTimes>,
    /// `utime + stime` of `/proc/self/stat`, ticks of [`super::procfs::USER_HZ`].
    pub own_ticks: Option<u64>,
    /// First field of `/proc/loadavg`.
    pub loadavg_1m: Option<f64>,
}

impl LoadSnapshot {
    /// Reads `<proc_root>/stat`, `self/stat` and `loadavg`; what is unreadable is `None`.
    pub fn read(proc_root: &Path) -> LoadSnapshot {
        LoadSnapshot {
            cpu: CpuTimes::read(proc_root).ok(),
            own_ticks: fs::read_to_string(proc_root.join("self/stat"))
                .ok()
                .as_deref()
                .and_then(process_ticks),
            loadavg_1m: fs::read_to_string(proc_root.join("loadavg"))
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse().ok()),
        }
    }
}

/// The machine's state over a measurement: hypervisor steal and the CPU time of every other
/// process, in percent of all CPUs' time, and the load average at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadConditions {
    /// Share of all CPUs' time the hypervisor gave to other guests, percent.
    pub steal_pct: Option<f64>,
    /// Share of all CPUs' time other processes ran (busy minus this process), percent.
    pub other_load_pct: Option<f64>,
    /// `/proc/loadavg`'s 1-minute figure at the end (this process's threads included).
    pub loadavg_1m: Option<f64>,
}

impl LoadConditions {
    /// The conditions between two snapshots; shares are `None` over fewer than
    /// [`MIN_STEAL_JIFFIES`] (one tick more or less would swing them by tens of percent).
    pub fn between(before: &LoadSnapshot, after: &LoadSnapshot) -> LoadConditions {
        let (steal_pct, other_load_pct) = match (before.cpu, after.cpu) {
            (Some(a), Some(b)) if b.total.saturating_sub(a.total) >= MIN_STEAL_JIFFIES => {
                let total = (b.total - a.total) as f64;
                let steal = b.steal.saturating_sub(a.steal) as f64;
                let busy = b.busy.saturating_sub(a.busy);
                // Both counters tick in USER_HZ, so this process's ticks come off the busy
                // ones directly.
                let other = match (before.own_ticks, after.own_ticks) {
                    (Some(x), Some(y)) => Some(busy.saturating_sub(y.saturating_sub(x))),
                    _ => None,
                };
                (
                    Some(100.0 * steal / total),
                    other.map(|o| 100.0 * o as f64 / total),
                )
            }
            _ => (None, None),
        };
        LoadConditions {
            steal_pct,
            other_load_pct,
            loadavg_1m: after.loadavg_1m,
        }
    }

    /// True when steal and other processes' load were both measured and under
    /// [`QUIET_MAX_STEAL_PCT`] and [`QUIET_MAX_OTHER_LOAD_PCT`].
    pub fn is_quiet(&self) -> bool {
        self.steal_pct.is_some_and(|s| s <= QUIET_MAX_STEAL_PCT)
            && self
                .other_load_pct
                .is_some_and(|o| o <= QUIET_MAX_OTHER_LOAD_PCT)
    }

    /// How noisy, for picking the quietest of several attempts (unknown is the noisiest).
    fn noise(&self) -> f64 {
        match (self.steal_pct, self.other_load_pct) {
            (Some(s), Some(o)) => s + o,
            _ => f64::INFINITY,
        }
    }

    /// `steal 0.4 %, other load 3.0 %, load average 1.52`.
    pub fn describe(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("unknown".to_string(), |v| format!("{v:.1} %"));
        let mut s = format!(
            "steal {}, other load {}",
            pct(self.steal_pct),
            pct(self.other_load_pct)
        );
        if let Some(l) = self.loadavg_1m {
            s.push_str(&format!(", load average {l:.2}"));
        }
        s
    }
}

/// What the binary may tell the user about the CPU peak (the library prints nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum PeakNotice {
    /// The peak is about to be measured (a few seconds, every core busy).
    Measuring {
        /// Threads the benchmark uses.
        threads: usize,
        /// The matmul's dtype.
        dtype: String,
    },
    /// The peak was measured.
    Measured {
        /// The figures and their conditions.
        peak: DevicePeak,
        /// Whether they were quiet enough to be cached.
        stored: bool,
    },
}

impl fmt::Display for PeakNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeakNotice::Measuring { threads, .. } => {
                let s = if *threads == 1 { "" } else { "s" };
                write!(f, "measuring this machine's peak ({threads} thread{s}) ...")
            }
            PeakNotice::Measured { peak, stored } => {
                write!(
                    f,
                    "peak: {:.1} GB/s read, {:.1} GFLOP/s ({})",
                    peak.bytes_per_s / 1e9,
                    peak.flops_per_s / 1e9,
                    peak.conditions.as_deref().unwrap_or("conditions unknown")
                )?;
                if *stored {
                    f.write_str("; cached")
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// The microbenchmarks behind a CPU peak; tests substitute figures (and fake load).
pub trait PeakBench {
    /// Streaming read bandwidth over `threads` threads, bytes/s.
    fn read_bandwidth(&mut self, threads: usize) -> Result<f64, PeakError>;
    /// Copy bandwidth over `threads` threads, bytes read + written per second.
    fn copy_bandwidth(&mut self, threads: usize) -> Result<f64, PeakError>;
    /// Matmul FLOP/s at `dtype` on the pool the runs use.
    fn matmul_flops(&mut self, dtype: &str) -> Result<f64, PeakError>;
}

/// The real microbenchmarks: [`measure_read_bandwidth`], [`measure_copy_bandwidth`] and
/// [`measure_matmul_flops`] at their standard sizes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Microbenchmark;

impl PeakBench for Microbenchmark {
    fn read_bandwidth(&mut self, threads: usize) -> Result<f64, PeakError> {
        measure_read_bandwidth(COPY_BYTES, threads, 4)
    }
    fn copy_bandwidth(&mut self, threads: usize) -> Result<f64, PeakError> {
        measure_copy_bandwidth(COPY_BYTES, threads, 4)
    }
    fn matmul_flops(&mut self, dtype: &str) -> Result<f64, PeakError> {
        measure_matmul_flops(MATMUL_N, burn_dtype(dtype)?, 5)
    }
}

/// The CPU microbenchmark with its cache.
#[derive(Debug, Clone)]
pub struct CpuPeak {
    cache_path: Option<PathBuf>,
    proc_root: PathBuf,
    cpu_model: String,
    threads: usize,
}

/// The current measuring method. 3: bandwidth is a streaming read (MBU's denominator; copy
/// kept beside it), the figures are cached only when measured on a quiet machine, with when,
/// how many threads and under what load. 2 timed a copy, and cached whatever load it saw.
pub const PEAK_METHOD: u32 = 3;

/// Buffer of the bandwidth benchmarks: far larger than any CPU cache, so DRAM is measured.
pub const COPY_BYTES: usize = 256 << 20;
/// Side of the square matmul.
const MATMUL_N: usize = 1024;

impl CpuPeak {
    /// A benchmark keyed by `cpu_model` and `threads`, cached in `cache_dir/cpu_peak.json`
    /// (`None`: measured on every call, nothing written), watching the load in `proc_root`.
    pub fn new(
        cache_dir: Option<&Path>,
        proc_root: &Path,
        cpu_model: &str,
        threads: usize,
    ) -> CpuPeak {
        CpuPeak {
            cache_path: cache_dir.map(|d| d.join("cpu_peak.json")),
            proc_root: proc_root.to_path_buf(),
            cpu_model: cpu_model.to_string(),
            threads: threads.max(1),
        }
    }

    /// Where the cache lives, if anywhere.
    pub fn cache_path(&self) -> Option<&Path> {
        self.cache_path.as_deref()
    }

    /// Threads the benchmark uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Reads the cache file; a missing, unreadable or older-format file is an empty cache
    /// (it is only a cache: the figures are measured again).
    pub fn load_cache(&self) -> CpuPeakCache {
        self.cache_path
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// This machine's cached entry at `dtype`, if measured.
    pub fn cached(&self, dtype: &str) -> Option<CpuPeakEntry> {
        self.load_cache()
            .entries
            .into_iter()
            .find(|e| self.is_mine(e, dtype))
    }

    fn is_mine(&self, e: &CpuPeakEntry, dtype: &str) -> bool {
        e.cpu_model == self.cpu_model
            && e.threads == self.threads
            && e.method == PEAK_METHOD
            && e.dtype == dtype
    }

    /// Writes `cache` atomically (temp file, rename), so a concurrent reader never sees half
    /// a file. Failure is returned, not fatal: the peak is still known for this process.
    pub fn store_cache(&self, cache: &CpuPeakCache) -> std::io::Result<()> {
        let Some(path) = &self.cache_path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?;
        fs::write(&tmp, json)?;
        fs::rename(&tmp, path)
    }

    /// The peak at `dtype` from the real microbenchmarks, with its entry; see
    /// [`CpuPeak::peak_with`].
    pub fn peak(
        &self,
        dtype: &str,
        notify: &dyn Fn(&PeakNotice),
    ) -> Result<(DevicePeak, CpuPeakEntry), PeakError> {
        self.peak_entry_with(dtype, &mut Microbenchmark, notify)
    }

    /// The peak at `dtype`: from the cache, else measured now (a few seconds, every core
    /// busy: call it outside timed windows) while watching steal and other processes' load.
    /// A quiet measurement is cached; after [`PEAK_ATTEMPTS`] noisy ones the quietest is used
    /// for this run only, and its conditions say so. `notify` hears when a measurement starts
    /// and what it found.
    pub fn peak_with(
        &self,
        dtype: &str,
        bench: &mut dyn PeakBench,
        notify: &dyn Fn(&PeakNotice),
    ) -> Result<DevicePeak, PeakError> {
        self.peak_entry_with(dtype, bench, notify).map(|(p, _)| p)
    }

    /// [`CpuPeak::peak_with`], with the entry behind it (the copy bandwidth, raw conditions).
    pub fn peak_entry_with(
        &self,
        dtype: &str,
        bench: &mut dyn PeakBench,
        notify: &dyn Fn(&PeakNotice),
    ) -> Result<(DevicePeak, CpuPeakEntry), PeakError> {
        burn_dtype(dtype)?;
        let mut cache = self.load_cache();
        if let Some(entry) = cache.entries.iter().find(|e| self.is_mine(e, dtype)) {
            return Ok((self.to_peak(entry, true, true), entry.clone()));
        }
        notify(&PeakNotice::Measuring {
            threads: self.threads,
            dtype: dtype.to_string(),
        });
        let mut best: Option<CpuPeakEntry> = None;
        for _ in 0..PEAK_ATTEMPTS.max(1) {
            let entry = self.measure(dtype, bench)?;
            let quiet = entry.conditions.is_quiet();
            if best
                .as_ref()
                .is_none_or(|b| entry.conditions.noise() < b.conditions.noise())
            {
                best = Some(entry);
            }
            if quiet {
                break;
            }
        }
        // The loop ran at least once.
        let Some(entry) = best else {
            return Err(PeakError::NoTime("peak"));
        };
        let stored = entry.conditions.is_quiet() && self.cache_path.is_some();
        if stored {
            // Figures from an older method for this CPU are replaced, not kept beside new ones.
            cache.entries.retain(|e| {
                !(e.cpu_model == self.cpu_model && e.threads == self.threads)
                    || (e.method == PEAK_METHOD && e.dtype != dtype)
            });
            cache.entries.push(entry.clone());
            // A cache that cannot be written costs a re-measurement next time, nothing more.
            let _ = self.store_cache(&cache);
        }
        let peak = self.to_peak(&entry, false, entry.conditions.is_quiet());
        notify(&PeakNotice::Measured {
            peak: peak.clone(),
            stored,
        });
        Ok((peak, entry))
    }

    fn measure(&self, dtype: &str, bench: &mut dyn PeakBench) -> Result<CpuPeakEntry, PeakError> {
        let before = LoadSnapshot::read(&self.proc_root);
        let read_bytes_per_s = bench.read_bandwidth(self.threads)?;
        let copy_bytes_per_s = bench.copy_bandwidth(self.threads)?;
        let flops_per_s = bench.matmul_flops(dtype)?;
        let after = LoadSnapshot::read(&self.proc_root);
        Ok(CpuPeakEntry {
            cpu_model: self.cpu_model.clone(),
            threads: self.threads,
            method: PEAK_METHOD,
            dtype: dtype.to_string(),
            read_bytes_per_s,
            copy_bytes_per_s,
            flops_per_s,
            measured_at_unix_s: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            conditions: LoadConditions::between(&before, &after),
        })
    }

    fn to_peak(&self, entry: &CpuPeakEntry, from_cache: bool, quiet: bool) -> DevicePeak {
        let source = match (&self.cache_path, from_cache, quiet) {
            (Some(p), true, _) => {
                format!("microbenchmark, read bandwidth (cached in {})", p.display())
            }
            (Some(p), false, true) => format!(
                "microbenchmark, read bandwidth (measured for this run, cached in {})",
                p.display()
            ),
            (_, false, false) => {
                "microbenchmark, read bandwidth (measured for this run, too noisy to cache)"
                    .to_string()
            }
            (None, _, _) => {
                "microbenchmark, read bandwidth (measured for this run, no cache folder)"
                    .to_string()
            }
        };
        let mut conditions = entry.conditions.describe();
        if !quiet {
            conditions.push_str(&format!(
                "; too noisy to cache (quiet: steal <= {QUIET_MAX_STEAL_PCT} %, other load <= \
                 {QUIET_MAX_OTHER_LOAD_PCT} %), used for this run only"
            ));
        }
        DevicePeak {
            flops_per_s: entry.flops_per_s,
            bytes_per_s: entry.read_bytes_per_s,
            source,
            measured_at_unix_s: Some(entry.measured_at_unix_s),
            threads: Some(entry.threads),
            conditions: Some(conditions),
            cached: from_cache,
        }
    }
}

fn burn_dtype(dtype: &str) -> Result<DType, PeakError> {
    match dtype {
        "f32" => Ok(DType::F32),
        "f16" => Ok(DType::F16),
        "bf16" => Ok(DType::BF16),
        other => Err(PeakError::UnknownDtype(other.to_string())),
    }
}

/// Best of `reps` parallel streaming reads (a wrapping sum) of a `bytes`-sized buffer over
/// `threads` threads, bytes read per second: what a decode step does to its weights.
pub fn measure_read_bandwidth(bytes: usize, threads: usize, reps: usize) -> Result<f64, PeakError> {
    let threads = threads.max(1);
    // Distinct values, every page touched before timing, so page faults are not timed and
    // no page is the shared zero page.
    let words = (bytes / 8).max(1);
    let src: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads).max(1);
    let mut best = f64::INFINITY;
    let mut total = 0u64;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let sum = std::thread::scope(|s| {
            let handles: Vec<_> = src
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, u64::wrapping_add)
        });
        best = best.min(start.elapsed().as_secs_f64());
        total = total.wrapping_add(sum);
    }
    // Keep the sums observable so the reads cannot be optimised away.
    std::hint::black_box(total);
    if best > 0.0 && best.is_finite() {
        Ok((words * 8) as f64 / best)
    } else {
        Err(PeakError::NoTime("memory read"))
    }
}

/// Best of `reps` parallel copies of a `bytes`-sized buffer over `threads` threads, counting
/// the bytes read and written (2 × `bytes` per copy), bytes/s.
pub fn measure_copy_bandwidth(bytes: usize, threads: usize, reps: usize) -> Result<f64, PeakError> {
    let threads = threads.max(1);
    // Touch every page first, so page faults are not timed.
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(threads).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    // Keep the copy observable so it cannot be optimised away.
    std::hint::black_box(&dst);
    if best > 0.0 && best.is_finite() {
        Ok(2.0 * bytes as f64 / best)
    } else {
        Err(PeakError::NoTime("memory copy"))
    }
}

/// Best of `reps` `n`×`n`×`n` matmuls at `dtype` after one warm-up, 2·n³ FLOP each, FLOP/s:
/// f32 on llmeff's own kernel (`kernels::linear_f32`, what f32 CPU runs use), f16 and
/// bf16 on burn-flex (what those runs use).
pub fn measure_matmul_flops(n: usize, dtype: DType, reps: usize) -> Result<f64, PeakError> {
    let values = matrix_values(n);
    if dtype == DType::F32 {
        let mut y = vec![0.0f32; n * n];
        let flops = best_flops_per_s(n, reps, || {
            let square = Matrix::new(&values, n, n)?;
            kernels::linear_f32(square, square, MatrixMut::new(&mut y, n, n)?)?;
            Ok(())
        });
        std::hint::black_box(&y);
        return flops;
    }
    let run = || -> Result<f64, PeakError> {
        let device = FlexDevice;
        let a = Tensor::<Flex, 2>::from_data(TensorData::new(values.clone(), [n, n]), &device)
            .cast(dtype);
        let b = Tensor::<Flex, 2>::from_data(TensorData::new(values.clone(), [n, n]), &device)
            .cast(dtype);
        best_flops_per_s(n, reps, || {
            // Reading the result back is what makes the product complete.
            a.clone()
                .matmul(b.clone())
                .try_into_data()
                .map(drop)
                .map_err(|e| PeakError::Benchmark(e.to_string()))
        })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        Err(PeakError::Benchmark(msg))
    })
}

/// Deterministic, non-trivial `n`×`n` values; their magnitude keeps f16 finite.
fn matrix_values(n: usize) -> Vec<f32> {
    (0..n * n)
        .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
        .collect()
}

/// 2·n³ FLOP over the best of `reps` timed calls of `product` after one untimed warm-up.
fn best_flops_per_s(
    n: usize,
    reps: usize,
    mut product: impl FnMut() -> Result<(), PeakError>,
) -> Result<f64, PeakError> {
    let mut best = f64::INFINITY;
    for i in 0..=reps.max(1) {
        let start = Instant::now();
        product()?;
        let secs = start.elapsed().as_secs_f64();
        if i > 0 {
            best = best.min(secs);
        }
    }
    if best > 0.0 && best.is_finite() {
        Ok(2.0 * (n as f64).powi(3) / best)
    } else {
        Err(PeakError::NoTime("matmul"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_found_by_exact_nvml_name() {
        let h100 = gpu_peak("NVIDIA H100 80GB HBM3", "bf16").unwrap();
        assert_eq!(h100.flops_per_s, 989.4e12);
        assert_eq!(h100.bytes_per_s, 3350e9);
        assert_eq!(h100.source, "table: NVIDIA H100 80GB HBM3");
        assert!(gpu_peak("NVIDIA GeForce RTX 3090 Ti", "f32").is_none());
        assert!(gpu_peak("nvidia a10", "f16").is_some());
        assert_eq!(
            gpu_peak("NVIDIA A100-SXM4-80GB", "f32")
                .unwrap()
                .bytes_per_s,
            2039e9
        );
        assert!(gpu_peak("Tesla T4", "bf16").is_none(), "Turing has no BF16");
        assert!(gpu_peak("NVIDIA H200", "fp8").is_none());
    }

    #[test]
    fn every_table_row_is_sane() {
        for spec in GPU_SPECS {
            assert!(spec.f16_flops > spec.f32_flops, "{:?}", spec.nvml_names);
            assert!(spec.bytes_per_s > 100e9);
        }
    }

    #[test]
    fn the_cache_dir_follows_xdg() {
        // Only checks the suffix: the variables belong to the test process.
        if let Some(dir) = default_cache_dir() {
            assert!(dir.ends_with("llmeff"));
        }
    }
}
