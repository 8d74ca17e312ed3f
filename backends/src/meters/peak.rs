//! Peak compute and memory bandwidth of a device, the denominators of MFU and MBU.
//!
//! GPUs: a table of datasheet figures keyed by the exact NVML product name. CPUs: nothing
//! comparable is published per SKU, so a short microbenchmark (a multi-threaded memory copy and
//! a matmul on the code the runs use: llmeff's GEMM for f32, burn-flex for f16/bf16) is
//! measured once per machine, CPU model and thread count, and cached as JSON.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexDevice};
use engine::meter::DevicePeak;
use serde::{Deserialize, Serialize};

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
    /// The measurement produced no usable number.
    #[error("the {0} benchmark measured no time")]
    NoTime(&'static str),
}

/// The cache file's contents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPeakCache {
    /// One entry per (CPU model, thread count) measured on this machine.
    pub entries: Vec<CpuPeakEntry>,
}

/// Measured peaks of one CPU model at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuPeakEntry {
    /// `/proc/cpuinfo` model name.
    pub cpu_model: String,
    /// Threads the benchmark used.
    pub threads: usize,
    /// How the figures were measured ([`PEAK_METHOD`]); entries from an older method are
    /// measured again (files written before the field existed read as 0).
    #[serde(default)]
    pub method: u32,
    /// Best memory copy bandwidth, bytes read + written per second.
    pub bytes_per_s: f64,
    /// Best matmul FLOP/s by dtype name.
    pub flops_per_s: BTreeMap<String, f64>,
}

/// The default cache folder: `$XDG_CACHE_HOME/llmeff`, else `$HOME/.cache/llmeff`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("llmeff"))
}

/// The CPU microbenchmark with its cache.
#[derive(Debug, Clone)]
pub struct CpuPeak {
    cache_path: Option<PathBuf>,
    cpu_model: String,
    threads: usize,
}

/// The current measuring method. 2: f32 FLOP/s on llmeff's own GEMM (`crate::kernels`), which
/// is what f32 runs on the CPU use; method 1 timed burn-flex's matmul, about half as fast on
/// AVX-512 CPUs (`cargo bench -p llmeff-backends --bench kernels`), so MFU could read above 1.
pub const PEAK_METHOD: u32 = 2;

/// Buffer of the memory copy: far larger than any CPU cache, so DRAM is what is measured.
pub const COPY_BYTES: usize = 256 << 20;
/// Side of the square matmul.
const MATMUL_N: usize = 1024;

impl CpuPeak {
    /// A benchmark keyed by `cpu_model` and `threads`, cached in `cache_dir/cpu_peak.json`
    /// (`None`: measured on every call, nothing written).
    pub fn new(cache_dir: Option<&Path>, cpu_model: &str, threads: usize) -> CpuPeak {
        CpuPeak {
            cache_path: cache_dir.map(|d| d.join("cpu_peak.json")),
            cpu_model: cpu_model.to_string(),
            threads: threads.max(1),
        }
    }

    /// Where the cache lives, if anywhere.
    pub fn cache_path(&self) -> Option<&Path> {
        self.cache_path.as_deref()
    }

    /// Reads the cache file; a missing or unreadable file is an empty cache (it is only a
    /// cache: the figures are measured again).
    pub fn load_cache(&self) -> CpuPeakCache {
        self.cache_path
            .as_deref()
            .and_then(|p| fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// This machine's entry in the cache, if measured.
    pub fn cached(&self) -> Option<CpuPeakEntry> {
        self.load_cache()
            .entries
            .into_iter()
            .find(|e| self.is_mine(e))
    }

    fn is_mine(&self, e: &CpuPeakEntry) -> bool {
        e.cpu_model == self.cpu_model && e.threads == self.threads && e.method == PEAK_METHOD
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

    /// The peak at `dtype`, from the cache or measured now (about 1–2 s) and cached.
    ///
    /// Call it outside timed windows: the benchmark loads every core.
    pub fn peak(&self, dtype: &str) -> Result<DevicePeak, PeakError> {
        let burn_dtype = burn_dtype(dtype)?;
        let mut cache = self.load_cache();
        // Figures from an older method for this CPU are replaced, not kept beside new ones.
        cache.entries.retain(|e| {
            e.method == PEAK_METHOD || e.cpu_model != self.cpu_model || e.threads != self.threads
        });
        let idx = cache.entries.iter().position(|e| self.is_mine(e));
        let entry = match idx {
            Some(i) if cache.entries[i].flops_per_s.contains_key(dtype) => {
                return Ok(self.to_peak(&cache.entries[i], dtype));
            }
            Some(i) => &mut cache.entries[i],
            None => {
                cache.entries.push(CpuPeakEntry {
                    cpu_model: self.cpu_model.clone(),
                    threads: self.threads,
                    method: PEAK_METHOD,
                    bytes_per_s: measure_copy_bandwidth(COPY_BYTES, self.threads, 4)?,
                    flops_per_s: BTreeMap::new(),
                });
                // Just pushed, so the vector is not empty.
                let last = cache.entries.len() - 1;
                &mut cache.entries[last]
            }
        };
        let flops = measure_matmul_flops(MATMUL_N, burn_dtype, 5)?;
        entry.flops_per_s.insert(dtype.to_string(), flops);
        let entry = entry.clone();
        // A cache that cannot be written costs a re-measurement next time, nothing more.
        let _ = self.store_cache(&cache);
        Ok(self.to_peak(&entry, dtype))
    }

    fn to_peak(&self, entry: &CpuPeakEntry, dtype: &str) -> DevicePeak {
        let source = match &self.cache_path {
            Some(p) => format!("microbenchmark (cached {})", p.display()),
            None => "microbenchmark (not cached)".to_string(),
        };
        DevicePeak {
            flops_per_s: entry.flops_per_s.get(dtype).copied().unwrap_or(0.0),
            bytes_per_s: entry.bytes_per_s,
            source,
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
/// f32 on llmeff's own kernel (`crate::kernels::linear_f32`, what f32 CPU runs use), f16 and
/// bf16 on burn-flex (what those runs use).
pub fn measure_matmul_flops(n: usize, dtype: DType, reps: usize) -> Result<f64, PeakError> {
    let values = matrix_values(n);
    if dtype == DType::F32 {
        let mut y = vec![0.0f32; n * n];
        let flops = best_flops_per_s(n, reps, || {
            crate::kernels::linear_f32(&values, n, n, &values, n, &mut y);
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
