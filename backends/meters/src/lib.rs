//! The meters of a real machine: [`MachineMeters`], an `api::meter::MeterProvider` built from
//! pluggable parts — RAPL through powercap ([`rapl`]), NVIDIA GPUs through NVML ([`nvml`]), AMD
//! GPUs through the amdgpu hwmon files ([`amdgpu`]), CodeCarbon's TDP/RAM estimate where no
//! sensor exists ([`estimate`]), this process through `/proc` ([`procfs`]) and device peaks for
//! MFU/MBU ([`peak`]).
//!
//! Every part's location (sysfs and proc roots, the NVML API, `CUDA_VISIBLE_DEVICES`, the cache
//! folder, the clock) is injected through [`MeterParts`], so tests run on fake trees and a fake
//! GPU with exact time.

pub mod amdgpu;
pub mod estimate;
pub mod nvml;
pub mod peak;
pub mod procfs;
pub mod rapl;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::meter::{DevicePeak, EnergyCounter, EstimateMode, MeterProvider, MeterStatus, Probe};

use amdgpu::{AmdGpuError, AmdGpus, AmdgpuEnergyCounter, AmdgpuProbe};
use estimate::{
    CpuEstimateCounter, CpuInfo, CpuPowerModel, CpuTdpTable, EstimateError, RamEstimateCounter,
    RamPowerModel,
};
use nvml::{CudaDeviceError, GpuApi, GpuError, NvmlApi, NvmlEnergyCounter, NvmlProbe, run_gpus};
use peak::{CpuPeak, CpuPeakEntry, PeakNotice};
use procfs::ProcessProbe;
use rapl::{Rapl, RaplError};

/// A monotonic clock: counters that integrate power over time read it, tests replace it.
pub type TimeSource = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The real monotonic clock.
pub fn monotonic() -> TimeSource {
    Arc::new(Instant::now)
}

/// A clock that only moves when told to, for exact tests of time integrals.
#[derive(Debug, Clone)]
pub struct ManualClock {
    origin: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock at its origin.
    pub fn new() -> ManualClock {
        ManualClock {
            origin: Instant::now(),
            offset: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        // A poisoned lock only means another test thread panicked; the offset is still valid.
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// The clock as a [`TimeSource`] (all copies move together).
    pub fn source(&self) -> TimeSource {
        let origin = self.origin;
        let offset = self.offset.clone();
        Arc::new(move || origin + *offset.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

/// Where each part of [`MachineMeters`] reads from.
#[derive(Clone)]
pub struct MeterParts {
    /// Powercap root (`/sys/class/powercap`).
    pub powercap_root: PathBuf,
    /// Proc root (`/proc`): `cpuinfo`, `stat`, `meminfo`, `self/…`.
    pub proc_root: PathBuf,
    /// Sysfs root (`/sys`): AMD GPUs under `class/drm`.
    pub sysfs_root: PathBuf,
    /// The GPU API, or why there is none (`no NVIDIA driver …`).
    pub gpu: Result<Arc<dyn GpuApi>, GpuError>,
    /// `CUDA_VISIBLE_DEVICES` as the run sees it.
    pub cuda_visible_devices: Option<String>,
    /// Folder of `cpu_peak.json`; `None` measures every time and writes nothing.
    pub cache_dir: Option<PathBuf>,
    /// CPU model → TDP table of the estimate.
    pub tdp_table: CpuTdpTable,
    /// RAM power rule of the estimate (x86 or ARM memory).
    pub ram_model: RamPowerModel,
    /// Threads the CPU runs use (keys the CPU peak cache); `None`: the size of the rayon pool
    /// the peak is asked from, read then, so a pool the binary sizes later still counts.
    pub cpu_threads: Option<usize>,
    /// Clock of power integrals and CPU shares.
    pub clock: TimeSource,
}

impl MeterParts {
    /// The parts of this machine: real paths, NVML if a driver loads, the process environment.
    pub fn detect() -> MeterParts {
        MeterParts {
            powercap_root: PathBuf::from(rapl::DEFAULT_POWERCAP_ROOT),
            proc_root: PathBuf::from(procfs::DEFAULT_PROC_ROOT),
            sysfs_root: PathBuf::from(amdgpu::DEFAULT_SYSFS_ROOT),
            gpu: NvmlApi::init().map(|api| Arc::new(api) as Arc<dyn GpuApi>),
            cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            cache_dir: peak::default_cache_dir(),
            tdp_table: CpuTdpTable::bundled(),
            ram_model: RamPowerModel::native(),
            cpu_threads: None,
            clock: monotonic(),
        }
    }
}

impl fmt::Debug for MeterParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeterParts")
            .field("powercap_root", &self.powercap_root)
            .field("proc_root", &self.proc_root)
            .field("sysfs_root", &self.sysfs_root)
            .field("gpu", &self.gpu.as_ref().map(|_| "GpuApi"))
            .field("cuda_visible_devices", &self.cuda_visible_devices)
            .field("cache_dir", &self.cache_dir)
            .field("cpu_threads", &self.cpu_threads)
            .finish()
    }
}

/// Hears what the CPU peak measurement does, so the binary can tell the user.
pub type PeakListener = Arc<dyn Fn(&PeakNotice) + Send + Sync>;

/// The meters of this machine, as an `api::meter::MeterProvider`.
///
/// Per domain the best source wins: RAPL over the CPU/RAM estimate, NVML for CUDA devices, the
/// amdgpu hwmon files for `wgpu:N` (the Nth AMD GPU); a GPU of any other vendor is unmetered.
/// `peak("cpu", …)` runs a few-second microbenchmark until a quiet measurement is cached, so callers should ask for it outside timed windows.
pub struct MachineMeters {
    parts: MeterParts,
    rapl: Result<Rapl, RaplError>,
    amdgpu: Result<AmdGpus, AmdGpuError>,
    cpu_info: Result<CpuInfo, EstimateError>,
    cpu_model: CpuPowerModel,
    peaks: Mutex<HashMap<(String, String), Option<DevicePeak>>>,
    cpu_peak_entries: Mutex<HashMap<String, CpuPeakEntry>>,
    peak_listener: Option<PeakListener>,
}

impl MachineMeters {
    /// Meters of the machine this process runs on.
    pub fn detect() -> MachineMeters {
        MachineMeters::with_parts(MeterParts::detect())
    }

    /// Meters from explicit parts (tests: fake trees, a fake GPU, a manual clock).
    pub fn with_parts(parts: MeterParts) -> MachineMeters {
        let rapl = Rapl::discover(&parts.powercap_root);
        let amdgpu = AmdGpus::discover(&parts.sysfs_root);
        let cpu_info = CpuInfo::read(&parts.proc_root);
        let fallback = CpuInfo {
            model: None,
            sockets: 1,
            logical_cpus: 0,
        };
        let cpu_model =
            CpuPowerModel::for_cpu(cpu_info.as_ref().unwrap_or(&fallback), &parts.tdp_table);
        MachineMeters {
            parts,
            rapl,
            amdgpu,
            cpu_info,
            cpu_model,
            peaks: Mutex::new(HashMap::new()),
            cpu_peak_entries: Mutex::new(HashMap::new()),
            peak_listener: None,
        }
    }

    /// The CPU copy bandwidth measured beside the read bandwidth of `peak("cpu", dtype)`,
    /// bytes read + written per second (`llmeff bench` compares each row's copy with it).
    pub fn cpu_copy_bytes_per_s(&self, dtype: &str) -> Option<f64> {
        self.peak("cpu", dtype)?;
        self.cpu_peak_entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dtype)
            .map(|e| e.copy_bytes_per_s)
    }

    /// Calls `listener` when the CPU peak is measured (before, and with what it found), so
    /// the binary can say why a run pauses for a few seconds.
    pub fn with_peak_listener(
        mut self,
        listener: impl Fn(&PeakNotice) + Send + Sync + 'static,
    ) -> MachineMeters {
        self.peak_listener = Some(Arc::new(listener));
        self
    }

    /// The parts in use.
    pub fn parts(&self) -> &MeterParts {
        &self.parts
    }

    fn cpu_counter(&self, mode: EstimateMode) -> Option<Box<dyn EnergyCounter>> {
        if let Ok(rapl) = &self.rapl
            && let Ok(c) = rapl.counter(api::meter::Domain::Cpu)
        {
            return Some(Box::new(c));
        }
        CpuEstimateCounter::new(
            self.cpu_model.clone(),
            &self.parts.proc_root,
            self.parts.clock.clone(),
            mode,
        )
        .ok()
        .map(|c| Box::new(c) as Box<dyn EnergyCounter>)
    }

    fn ram_counter(&self, mode: EstimateMode) -> Option<Box<dyn EnergyCounter>> {
        if let Ok(rapl) = &self.rapl
            && let Ok(c) = rapl.counter(api::meter::Domain::Ram)
        {
            return Some(Box::new(c));
        }
        RamEstimateCounter::new(
            &self.parts.proc_root,
            self.parts.clock.clone(),
            self.parts.ram_model,
            mode,
        )
        .ok()
        .map(|c| Box::new(c) as Box<dyn EnergyCounter>)
    }

    /// The GPU counter of a run on `device`: NVML for `cuda` devices, else an AMD GPU for `wgpu`
    /// ones; `None` (energy unavailable) for any other device or a GPU neither can read.
    fn gpu_counter(&self, device: &str) -> Option<Box<dyn EnergyCounter>> {
        if let Ok(Some(c)) = self.nvml_counter(device) {
            return Some(c);
        }
        self.amdgpu_counter(device).ok().flatten()
    }

    fn amdgpu_counter(&self, device: &str) -> Result<Option<Box<dyn EnergyCounter>>, AmdGpuError> {
        let Some(gpus) = self
            .amdgpu
            .as_ref()
            .map_err(Clone::clone)?
            .run_gpus(device)?
        else {
            return Ok(None);
        };
        let counter = AmdgpuEnergyCounter::new(gpus, self.parts.clock.clone())?;
        Ok(Some(Box::new(counter)))
    }

    fn nvml_counter(
        &self,
        device: &str,
    ) -> Result<Option<Box<dyn EnergyCounter>>, CudaDeviceError> {
        let api = self.parts.gpu.clone()?;
        let Some(gpus) = run_gpus(
            api.as_ref(),
            device,
            self.parts.cuda_visible_devices.as_deref(),
        )?
        else {
            return Ok(None);
        };
        let counter = NvmlEnergyCounter::new(api, gpus, self.parts.clock.clone())?;
        Ok(Some(Box::new(counter)))
    }

    fn cpu_peak(&self) -> CpuPeak {
        let model = self
            .cpu_info
            .as_ref()
            .ok()
            .and_then(|i| i.model.clone())
            .unwrap_or_else(|| "unknown CPU".to_string());
        CpuPeak::new(
            self.parts.cache_dir.as_deref(),
            &self.parts.proc_root,
            &model,
            self.parts
                .cpu_threads
                .unwrap_or_else(rayon::current_num_threads),
        )
    }

    fn measure_peak(&self, device: &str, dtype: &str) -> Option<DevicePeak> {
        if device == "cpu" {
            let listener = self.peak_listener.clone();
            let notify = move |n: &PeakNotice| {
                if let Some(l) = &listener {
                    l(n);
                }
            };
            let (peak, entry) = self.cpu_peak().peak(dtype, &notify).ok()?;
            self.cpu_peak_entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dtype.to_string(), entry);
            return Some(peak);
        }
        let api = self.parts.gpu.as_ref().ok()?;
        let gpus = run_gpus(
            api.as_ref(),
            device,
            self.parts.cuda_visible_devices.as_deref(),
        )
        .ok()??;
        // A run over several GPUs peaks at their sum, and only if every one is known.
        let mut total: Option<DevicePeak> = None;
        for gpu in &gpus {
            let p = peak::gpu_peak(&gpu.name, dtype)?;
            total = Some(match total {
                None => p,
                Some(t) => DevicePeak {
                    flops_per_s: t.flops_per_s + p.flops_per_s,
                    bytes_per_s: t.bytes_per_s + p.bytes_per_s,
                    source: format!("{} + {}", t.source, gpu.name),
                    ..DevicePeak::default()
                },
            });
        }
        total
    }

    fn nvml_status(&self) -> MeterStatus {
        let (available, detail) = match &self.parts.gpu {
            Err(reason) => (false, reason.to_string()),
            Ok(api) => match api.devices() {
                Err(e) => (false, format!("listing GPUs failed: {e}")),
                Ok(devices) if devices.is_empty() => (false, "no NVIDIA GPU".to_string()),
                Ok(devices) => {
                    let parts: Vec<String> = devices
                        .iter()
                        .map(|d| {
                            let energy = match api.total_energy_mj(d.index) {
                                Ok(_) => "energy counter",
                                Err(nvml::GpuError::NotSupported) => "power polling",
                                Err(_) => "energy unreadable",
                            };
                            format!("{d}: {energy}")
                        })
                        .collect();
                    let visible = match &self.parts.cuda_visible_devices {
                        Some(v) => format!("; CUDA_VISIBLE_DEVICES={v}"),
                        None => String::new(),
                    };
                    (true, format!("{}{visible}", parts.join(", ")))
                }
            },
        };
        MeterStatus {
            name: "nvml".to_string(),
            available,
            detail,
        }
    }

    fn amdgpu_status(&self) -> MeterStatus {
        let (available, detail) = match &self.amdgpu {
            Err(reason) => (false, reason.to_string()),
            Ok(amd) => amd.summary(),
        };
        MeterStatus {
            name: "amdgpu".to_string(),
            available,
            detail,
        }
    }

    fn rapl_status(&self) -> MeterStatus {
        let (available, detail) = match &self.rapl {
            Err(reason) => (false, reason.to_string()),
            Ok(rapl) => rapl.summary(),
        };
        MeterStatus {
            name: "rapl".to_string(),
            available,
            detail,
        }
    }

    fn estimate_status(&self) -> MeterStatus {
        let rapl_covers = |d| {
            self.rapl
                .as_ref()
                .is_ok_and(|r: &Rapl| r.counter(d).is_ok())
        };
        let mut parts = Vec::new();
        let mut available = false;
        match estimate::CpuTimes::read(&self.parts.proc_root) {
            Ok(_) => {
                available = true;
                let used = if rapl_covers(api::meter::Domain::Cpu) {
                    "unused, rapl measures it"
                } else {
                    "used"
                };
                parts.push(format!(
                    "cpu ({used}): {} rule, {} x (0.1 + 0.9 x load^3) in machine mode, x \
                     process CPU share in process mode",
                    estimate::CODECARBON,
                    self.cpu_model.basis
                ));
            }
            Err(e) => parts.push(format!("cpu: {e}")),
        }
        match estimate::mem_total_bytes(&self.parts.proc_root) {
            Ok(bytes) => {
                available = true;
                let used = if rapl_covers(api::meter::Domain::Ram) {
                    "unused, rapl measures it"
                } else {
                    "used"
                };
                let gib = bytes as f64 / (1u64 << 30) as f64;
                parts.push(format!(
                    "ram ({used}): {} rule, {gib:.1} GiB -> {} DIMMs = {} W in machine mode",
                    estimate::CODECARBON,
                    RamPowerModel::dimm_count(gib),
                    self.parts.ram_model.power_w(gib)
                ));
            }
            Err(e) => parts.push(format!("ram: {e}")),
        }
        MeterStatus {
            name: "estimate".to_string(),
            available,
            detail: parts.join("; "),
        }
    }

    fn procfs_status(&self) -> MeterStatus {
        let (available, detail) = match ProcessProbe::check(&self.parts.proc_root) {
            Ok(d) => (true, d),
            Err(e) => (false, e.to_string()),
        };
        MeterStatus {
            name: "procfs".to_string(),
            available,
            detail,
        }
    }

    fn peak_status(&self) -> MeterStatus {
        let cpu = self.cpu_peak();
        let cpu_part = match (cpu.cached("f32"), cpu.cache_path()) {
            (Some(e), Some(p)) => format!(
                "cpu: microbenchmark cached in {} ({:.1} GB/s read, {:.1} GFLOP/s f32, {} \
                 threads, {})",
                p.display(),
                e.read_bytes_per_s / 1e9,
                e.flops_per_s / 1e9,
                e.threads,
                e.conditions.describe()
            ),
            (None, Some(p)) => format!(
                "cpu: microbenchmark on first use ({} threads, a few seconds), cached in {} \
                 when the machine is quiet",
                cpu.threads(),
                p.display()
            ),
            (_, None) => "cpu: microbenchmark on every use (no cache folder)".to_string(),
        };
        let gpu_part = match &self.parts.gpu {
            Ok(api) => match api.devices() {
                Ok(devices) if !devices.is_empty() => {
                    let names: Vec<String> = devices
                        .iter()
                        .map(|d| {
                            let known = if peak::gpu_spec(&d.name).is_some() {
                                "table"
                            } else {
                                "not in table"
                            };
                            format!("{} ({known})", d.name)
                        })
                        .collect();
                    format!("gpu: {}", names.join(", "))
                }
                _ => format!("gpu: table of {} models", peak::GPU_SPECS.len()),
            },
            Err(_) => format!("gpu: table of {} models", peak::GPU_SPECS.len()),
        };
        MeterStatus {
            name: "peak".to_string(),
            available: true,
            detail: format!("{cpu_part}; {gpu_part}"),
        }
    }
}

impl fmt::Debug for MachineMeters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachineMeters")
            .field("parts", &self.parts)
            .field("rapl", &self.rapl)
            .field("amdgpu", &self.amdgpu)
            .field("cpu_model", &self.cpu_model)
            .finish()
    }
}

impl MeterProvider for MachineMeters {
    fn energy_counters(&self, device: &str) -> Vec<Box<dyn EnergyCounter>> {
        self.energy_counters_for(device, EstimateMode::Machine)
    }

    fn energy_counters_for(&self, device: &str, mode: EstimateMode) -> Vec<Box<dyn EnergyCounter>> {
        // A domain whose counter cannot be opened is left out; `inventory` says why.
        let mut out = Vec::new();
        out.extend(self.cpu_counter(mode));
        out.extend(self.gpu_counter(device));
        out.extend(self.ram_counter(mode));
        out
    }

    fn probes(&self, device: &str) -> Vec<Box<dyn Probe>> {
        let mut out: Vec<Box<dyn Probe>> = vec![Box::new(ProcessProbe::new(
            &self.parts.proc_root,
            self.parts.clock.clone(),
        ))];
        if let Ok(api) = &self.parts.gpu
            && let Ok(Some(gpus)) = run_gpus(
                api.as_ref(),
                device,
                self.parts.cuda_visible_devices.as_deref(),
            )
        {
            out.push(Box::new(NvmlProbe::new(api.clone(), gpus)));
        } else if let Ok(amd) = &self.amdgpu
            && let Ok(Some(gpus)) = amd.run_gpus(device)
        {
            out.push(Box::new(AmdgpuProbe::new(gpus)));
        }
        out
    }

    fn peak(&self, device: &str, dtype: &str) -> Option<DevicePeak> {
        let key = (device.to_string(), dtype.to_string());
        // A poisoned lock only means a panic elsewhere; the memo is still consistent.
        if let Some(p) = self
            .peaks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return p.clone();
        }
        let p = self.measure_peak(device, dtype);
        self.peaks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, p.clone());
        p
    }

    fn inventory(&self) -> Vec<MeterStatus> {
        vec![
            self.nvml_status(),
            self.amdgpu_status(),
            self.rapl_status(),
            self.estimate_status(),
            self.procfs_status(),
            self.peak_status(),
        ]
    }
}
