//! NVIDIA GPUs through NVML: energy (the total-energy counter, or polled power integrated by
//! the trapezoidal rule where the GPU has no counter), utilisation and memory.
//!
//! NVML is reached through the small [`GpuApi`] trait so tests can inject a fake; the real
//! implementation ([`NvmlApi`]) loads `libnvidia-ml.so.1` at run time, so builds need no driver.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use api::meter::{Domain, EnergyCounter, MeterError, Probe, Sample, Source, integrate_power_j};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use super::TimeSource;

/// Why an NVML query failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The GPU does not support the query (e.g. the energy counter before Volta).
    #[error("not supported by this GPU")]
    NotSupported,
    /// NVML could not be used or the query failed.
    #[error("{0}")]
    Failed(String),
}

impl From<NvmlError> for GpuError {
    fn from(e: NvmlError) -> Self {
        match e {
            NvmlError::NotSupported => GpuError::NotSupported,
            NvmlError::LibloadingError(_) => {
                GpuError::Failed("no NVIDIA driver (libnvidia-ml.so.1 not found)".to_string())
            }
            NvmlError::DriverNotLoaded => {
                GpuError::Failed("the NVIDIA driver is not loaded".to_string())
            }
            NvmlError::NoPermission => {
                GpuError::Failed("no permission to talk to the NVIDIA driver".to_string())
            }
            other => GpuError::Failed(other.to_string()),
        }
    }
}

/// Why a run's CUDA device names no NVML GPU, or the GPU could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaDeviceError {
    /// Without `CUDA_VISIBLE_DEVICES`, `cuda:N` is NVML index N, and there is none.
    #[error("cuda:{ordinal}: NVML sees {seen} GPU(s)")]
    NoSuchIndex {
        /// The CUDA ordinal asked for.
        ordinal: usize,
        /// GPUs NVML lists.
        seen: usize,
    },
    /// `CUDA_VISIBLE_DEVICES` has fewer entries than the ordinal needs.
    #[error("cuda:{ordinal}: CUDA_VISIBLE_DEVICES={visible:?} lists {listed} device(s)")]
    NotListed {
        /// The CUDA ordinal asked for.
        ordinal: usize,
        /// `CUDA_VISIBLE_DEVICES` as the run sees it.
        visible: String,
        /// Entries it lists.
        listed: usize,
    },
    /// The entry is a MIG instance, which NVML does not meter on its own.
    #[error("cuda:{ordinal}: {entry} is a MIG instance; NVML meters whole GPUs only")]
    Mig {
        /// The CUDA ordinal asked for.
        ordinal: usize,
        /// The `CUDA_VISIBLE_DEVICES` entry.
        entry: String,
    },
    /// The entry is a UUID prefix of several GPUs.
    #[error("cuda:{ordinal}: {entry} is a prefix of {count} GPU UUIDs")]
    AmbiguousUuid {
        /// The CUDA ordinal asked for.
        ordinal: usize,
        /// The `CUDA_VISIBLE_DEVICES` entry.
        entry: String,
        /// GPUs whose UUID starts with it.
        count: usize,
    },
    /// The entry is neither an NVML index nor a UUID (prefix) of a GPU NVML lists.
    #[error("cuda:{ordinal}: CUDA_VISIBLE_DEVICES entry {entry:?} matches no NVML GPU")]
    NoMatch {
        /// The CUDA ordinal asked for.
        ordinal: usize,
        /// The `CUDA_VISIBLE_DEVICES` entry.
        entry: String,
    },
    /// NVML itself failed (no driver, a failed query).
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// A GPU as NVML lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// NVML index (PCI bus order).
    pub index: u32,
    /// `GPU-…` UUID, the identity of the physical device.
    pub uuid: String,
    /// Product name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.index, self.name, self.uuid)
    }
}

/// The NVML queries llmeff needs, by NVML index.
pub trait GpuApi: Send + Sync {
    /// Every GPU NVML sees.
    fn devices(&self) -> Result<Vec<GpuInfo>, GpuError>;
    /// Energy since the driver was loaded, millijoules (Volta and newer).
    fn total_energy_mj(&self, index: u32) -> Result<u64, GpuError>;
    /// Current board power, milliwatts.
    fn power_mw(&self, index: u32) -> Result<u32, GpuError>;
    /// Share of the last sample period in which a kernel ran, percent.
    fn utilization_pct(&self, index: u32) -> Result<u32, GpuError>;
    /// Device memory in use by all processes, bytes.
    fn memory_used_bytes(&self, index: u32) -> Result<u64, GpuError>;
    /// Memory free on device `index` now, bytes (what a model load can still take).
    fn memory_free_bytes(&self, index: u32) -> Result<u64, GpuError>;
}

/// [`GpuApi`] over the real NVML library.
pub struct NvmlApi {
    nvml: Nvml,
}

impl NvmlApi {
    /// Loads NVML; an error (never a panic) when there is no driver.
    pub fn init() -> Result<NvmlApi, GpuError> {
        Ok(NvmlApi {
            nvml: Nvml::init()?,
        })
    }
}

impl fmt::Debug for NvmlApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NvmlApi")
    }
}

impl GpuApi for NvmlApi {
    fn devices(&self) -> Result<Vec<GpuInfo>, GpuError> {
        let count = self.nvml.device_count()?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = self.nvml.device_by_index(index)?;
            out.push(GpuInfo {
                index,
                uuid: device.uuid()?,
                name: device.name()?,
            });
        }
        Ok(out)
    }

    fn total_energy_mj(&self, index: u32) -> Result<u64, GpuError> {
        Ok(self
            .nvml
            .device_by_index(index)?
            .total_energy_consumption()?)
    }

    fn power_mw(&self, index: u32) -> Result<u32, GpuError> {
        Ok(self.nvml.device_by_index(index)?.power_usage()?)
    }

    fn utilization_pct(&self, index: u32) -> Result<u32, GpuError> {
        Ok(self.nvml.device_by_index(index)?.utilization_rates()?.gpu)
    }

    fn memory_used_bytes(&self, index: u32) -> Result<u64, GpuError> {
        Ok(self.nvml.device_by_index(index)?.memory_info()?.used)
    }

    fn memory_free_bytes(&self, index: u32) -> Result<u64, GpuError> {
        Ok(self.nvml.device_by_index(index)?.memory_info()?.free)
    }
}

/// Memory free now on the GPU that CUDA ordinal `ordinal` names (through
/// `CUDA_VISIBLE_DEVICES` as a run's meters map it), bytes; the reason when it cannot be read.
pub fn cuda_free_bytes(
    api: &dyn GpuApi,
    ordinal: usize,
    cuda_visible: Option<&str>,
) -> Result<u64, CudaDeviceError> {
    let devices = api.devices()?;
    let gpu = resolve_cuda_device(ordinal, cuda_visible, &devices)?;
    Ok(api.memory_free_bytes(gpu.index)?)
}

/// Parses a run's device into CUDA ordinals: `cuda` and `cuda:N`, several joined by `,` for a
/// run spread over GPUs. `None` when the device is not a CUDA device (`cpu`).
pub fn cuda_ordinals(device: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in device.split(',').map(str::trim) {
        let ordinal = match part.strip_prefix("cuda")? {
            "" => 0,
            rest => rest.strip_prefix(':')?.parse().ok()?,
        };
        out.push(ordinal);
    }
    (!out.is_empty()).then_some(out)
}

/// Maps CUDA ordinal `ordinal` to the NVML device it names.
///
/// With `CUDA_VISIBLE_DEVICES` set (`cuda_visible`), CUDA numbers the listed devices from 0, so
/// `cuda:N` is the Nth entry: an NVML index or a `GPU-<uuid>` (a unique prefix is enough, as for
/// CUDA). Without it, `cuda:N` is NVML index N. Both assume CUDA enumerates in PCI bus order
/// like NVML (`CUDA_DEVICE_ORDER=PCI_BUS_ID`, or identical GPUs); CUDA's default "fastest first"
/// order can differ on a machine with mixed GPU models.
pub fn resolve_cuda_device(
    ordinal: usize,
    cuda_visible: Option<&str>,
    devices: &[GpuInfo],
) -> Result<GpuInfo, CudaDeviceError> {
    let Some(visible) = cuda_visible else {
        return devices
            .iter()
            .find(|d| d.index as usize == ordinal)
            .cloned()
            .ok_or(CudaDeviceError::NoSuchIndex {
                ordinal,
                seen: devices.len(),
            });
    };
    let entries: Vec<&str> = visible
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let entry = entries
        .get(ordinal)
        .ok_or_else(|| CudaDeviceError::NotListed {
            ordinal,
            visible: visible.to_string(),
            listed: entries.len(),
        })?;
    if entry.starts_with("MIG-") {
        return Err(CudaDeviceError::Mig {
            ordinal,
            entry: entry.to_string(),
        });
    }
    let found = if let Ok(index) = entry.parse::<u32>() {
        devices.iter().find(|d| d.index == index)
    } else {
        let matches: Vec<&GpuInfo> = devices
            .iter()
            .filter(|d| d.uuid.starts_with(entry))
            .collect();
        if matches.len() > 1 {
            return Err(CudaDeviceError::AmbiguousUuid {
                ordinal,
                entry: entry.to_string(),
                count: matches.len(),
            });
        }
        matches.first().copied()
    };
    found.cloned().ok_or_else(|| CudaDeviceError::NoMatch {
        ordinal,
        entry: entry.to_string(),
    })
}

/// The physical GPUs a run on `device` uses, each once (two ordinals naming one UUID are one
/// GPU: its energy must not be counted twice). `Ok(None)` for a non-CUDA device.
pub fn run_gpus(
    api: &dyn GpuApi,
    device: &str,
    cuda_visible: Option<&str>,
) -> Result<Option<Vec<GpuInfo>>, CudaDeviceError> {
    let Some(ordinals) = cuda_ordinals(device) else {
        return Ok(None);
    };
    let devices = api.devices()?;
    let mut out: Vec<GpuInfo> = Vec::new();
    for ordinal in ordinals {
        let gpu = resolve_cuda_device(ordinal, cuda_visible, &devices)?;
        if !out.iter().any(|g| g.uuid == gpu.uuid) {
            out.push(gpu);
        }
    }
    Ok(Some(out))
}

#[derive(Debug)]
enum GpuEnergy {
    /// The driver's cumulative counter, millijoules.
    Counter { origin_mj: u64, last_mj: u64 },
    /// Power polled on each read, integrated by the trapezoidal rule.
    Power {
        last_t: Instant,
        last_w: f64,
        total_j: f64,
    },
}

/// GPU energy of a run's GPUs (each physical GPU once), from NVML.
pub struct NvmlEnergyCounter {
    api: Arc<dyn GpuApi>,
    gpus: Vec<(GpuInfo, GpuEnergy)>,
    clock: TimeSource,
}

impl NvmlEnergyCounter {
    /// Opens a counter over `gpus`, reading each once as its origin: the energy counter where
    /// the GPU has one, otherwise its power.
    pub fn new(
        api: Arc<dyn GpuApi>,
        gpus: Vec<GpuInfo>,
        clock: TimeSource,
    ) -> Result<NvmlEnergyCounter, GpuError> {
        if gpus.is_empty() {
            return Err(GpuError::Failed("no GPU to meter".to_string()));
        }
        let mut state = Vec::with_capacity(gpus.len());
        for gpu in gpus {
            let energy = match api.total_energy_mj(gpu.index) {
                Ok(mj) => GpuEnergy::Counter {
                    origin_mj: mj,
                    last_mj: mj,
                },
                Err(GpuError::NotSupported) => GpuEnergy::Power {
                    last_t: clock(),
                    last_w: f64::from(api.power_mw(gpu.index)?) / 1000.0,
                    total_j: 0.0,
                },
                Err(e) => return Err(e),
            };
            state.push((gpu, energy));
        }
        Ok(NvmlEnergyCounter {
            api,
            gpus: state,
            clock,
        })
    }
}

impl fmt::Debug for NvmlEnergyCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlEnergyCounter")
            .field("gpus", &self.gpus)
            .finish()
    }
}

impl EnergyCounter for NvmlEnergyCounter {
    fn domain(&self) -> Domain {
        Domain::Gpu
    }

    fn source(&self) -> Source {
        Source::Nvml
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .gpus
            .iter()
            .map(|(gpu, energy)| match energy {
                GpuEnergy::Counter { .. } => format!("nvml total-energy counter: {gpu}"),
                GpuEnergy::Power { .. } => {
                    format!("nvml power × time (trapezoidal, polled on each read): {gpu}")
                }
            })
            .collect();
        parts.join("; ")
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        let err = |reason: String| MeterError {
            meter: "nvml".to_string(),
            reason,
        };
        let mut total = 0.0;
        for (gpu, energy) in &mut self.gpus {
            match energy {
                GpuEnergy::Counter { origin_mj, last_mj } => {
                    let mj = self
                        .api
                        .total_energy_mj(gpu.index)
                        .map_err(|e| err(format!("GPU {gpu}: {e}")))?;
                    if mj < *last_mj {
                        return Err(err(format!(
                            "GPU {gpu}: the energy counter went back from {last_mj} to {mj} mJ \
                             (driver reloaded?)"
                        )));
                    }
                    *last_mj = mj;
                    total += (mj - *origin_mj) as f64 / 1000.0;
                }
                GpuEnergy::Power {
                    last_t,
                    last_w,
                    total_j,
                } => {
                    let mw = self
                        .api
                        .power_mw(gpu.index)
                        .map_err(|e| err(format!("GPU {gpu}: {e}")))?;
                    let now = (self.clock)();
                    let w = f64::from(mw) / 1000.0;
                    let dt = now.saturating_duration_since(*last_t).as_secs_f64();
                    *total_j += integrate_power_j(&[(0.0, *last_w), (dt, w)]);
                    *last_t = now;
                    *last_w = w;
                    total += *total_j;
                }
            }
        }
        Ok(total)
    }
}

/// Utilisation and memory of a run's GPUs, from NVML.
pub struct NvmlProbe {
    api: Arc<dyn GpuApi>,
    gpus: Vec<GpuInfo>,
}

impl NvmlProbe {
    /// A probe over `gpus` (each physical GPU once).
    pub fn new(api: Arc<dyn GpuApi>, gpus: Vec<GpuInfo>) -> NvmlProbe {
        NvmlProbe { api, gpus }
    }
}

impl fmt::Debug for NvmlProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmlProbe")
            .field("gpus", &self.gpus)
            .finish()
    }
}

impl Probe for NvmlProbe {
    fn sample(&mut self, sample: &mut Sample) {
        if self.gpus.is_empty() {
            return;
        }
        // A figure is only filled when every GPU answered: a mean or sum over some of the
        // run's GPUs would be a different quantity under the same name.
        let util: Result<Vec<u32>, _> = self
            .gpus
            .iter()
            .map(|g| self.api.utilization_pct(g.index))
            .collect();
        if let Ok(util) = util {
            let sum: f64 = util.iter().map(|&u| f64::from(u)).sum();
            sample.gpu_util_pct = Some(sum / util.len() as f64);
        }
        let mem: Result<Vec<u64>, _> = self
            .gpus
            .iter()
            .map(|g| self.api.memory_used_bytes(g.index))
            .collect();
        if let Ok(mem) = mem {
            sample.gpu_mem_bytes = Some(mem.iter().sum());
        }
    }
}

/// A scripted [`GpuApi`] for tests: fixed devices, energy and power values set by the test.
#[derive(Debug, Default)]
pub struct FakeGpus {
    state: std::sync::Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    devices: Vec<GpuInfo>,
    energy_mj: Vec<Option<u64>>,
    power_mw: Vec<u32>,
    util_pct: Vec<u32>,
    mem_bytes: Vec<u64>,
}

/// Memory of every fake GPU, bytes (an 80 GB card).
pub const FAKE_GPU_MEMORY_BYTES: u64 = 80 << 30;

impl FakeGpus {
    /// GPUs with these (uuid, name) pairs at NVML indices 0, 1, …; energy counters at 0 mJ.
    pub fn new(devices: &[(&str, &str)]) -> FakeGpus {
        let n = devices.len();
        let state = FakeState {
            devices: devices
                .iter()
                .enumerate()
                .map(|(i, (uuid, name))| GpuInfo {
                    index: i as u32,
                    uuid: uuid.to_string(),
                    name: name.to_string(),
                })
                .collect(),
            energy_mj: vec![Some(0); n],
            power_mw: vec![0; n],
            util_pct: vec![0; n],
            mem_bytes: vec![0; n],
        };
        FakeGpus {
            state: std::sync::Mutex::new(state),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        // A poisoned lock means a test already panicked; its state is still usable.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Sets GPU `index`'s energy counter, or `None` for a GPU without one.
    pub fn set_energy_mj(&self, index: usize, mj: Option<u64>) {
        self.with(|s| s.energy_mj[index] = mj);
    }

    /// Sets GPU `index`'s power.
    pub fn set_power_mw(&self, index: usize, mw: u32) {
        self.with(|s| s.power_mw[index] = mw);
    }

    /// Sets GPU `index`'s utilisation and memory in use.
    pub fn set_load(&self, index: usize, util_pct: u32, mem_bytes: u64) {
        self.with(|s| {
            s.util_pct[index] = util_pct;
            s.mem_bytes[index] = mem_bytes;
        });
    }

    fn get<T: Copy>(
        &self,
        index: u32,
        pick: impl Fn(&FakeState) -> &Vec<T>,
    ) -> Result<T, GpuError> {
        self.with(|s| {
            pick(s)
                .get(index as usize)
                .copied()
                .ok_or_else(|| GpuError::Failed(format!("no GPU at index {index}")))
        })
    }
}

impl GpuApi for FakeGpus {
    fn devices(&self) -> Result<Vec<GpuInfo>, GpuError> {
        Ok(self.with(|s| s.devices.clone()))
    }

    fn total_energy_mj(&self, index: u32) -> Result<u64, GpuError> {
        self.get(index, |s| &s.energy_mj)?
            .ok_or(GpuError::NotSupported)
    }

    fn power_mw(&self, index: u32) -> Result<u32, GpuError> {
        self.get(index, |s| &s.power_mw)
    }

    fn utilization_pct(&self, index: u32) -> Result<u32, GpuError> {
        self.get(index, |s| &s.util_pct)
    }

    fn memory_used_bytes(&self, index: u32) -> Result<u64, GpuError> {
        self.get(index, |s| &s.mem_bytes)
    }

    fn memory_free_bytes(&self, index: u32) -> Result<u64, GpuError> {
        Ok(FAKE_GPU_MEMORY_BYTES.saturating_sub(self.get(index, |s| &s.mem_bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(cuda_ordinals("cuda"), Some(vec![0]));
        assert_eq!(cuda_ordinals("cuda:3"), Some(vec![3]));
        assert_eq!(cuda_ordinals("cuda:0,cuda:1"), Some(vec![0, 1]));
        assert_eq!(cuda_ordinals("cpu"), None);
        assert_eq!(cuda_ordinals("cuda:x"), None);
        assert_eq!(cuda_ordinals("cudax"), None);
    }

    #[test]
    fn free_memory_is_read_from_the_gpu_a_cuda_ordinal_names() {
        let gpus = FakeGpus::new(&[("GPU-aaaa", "H100"), ("GPU-bbbb", "H100")]);
        gpus.set_load(1, 50, 30 << 30);
        // CUDA_VISIBLE_DEVICES=1,0: cuda:0 is NVML index 1, with 30 GiB in use.
        assert_eq!(cuda_free_bytes(&gpus, 0, Some("1,0")), Ok(50 << 30));
        assert_eq!(cuda_free_bytes(&gpus, 1, Some("1,0")), Ok(80 << 30));
        assert!(cuda_free_bytes(&gpus, 2, None).is_err());
    }

    #[test]
    fn init_without_a_driver_is_an_error_not_a_panic() {
        // On a machine with a driver this succeeds; either way it must return.
        match NvmlApi::init() {
            Ok(api) => assert!(api.devices().is_ok()),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}
