//! AMD GPUs through the amdgpu driver's hwmon files: energy (the cumulative `energy1_input`
//! counter where the kernel exposes one, otherwise `power1_average` or `power1_input` polled on
//! each read and integrated by the trapezoidal rule), utilisation and VRAM in use.
//!
//! An AMD GPU is a DRM card `class/drm/cardN` whose `device/vendor` is `0x1002`; its sensors are
//! in `device/hwmon/hwmonM/`, the hwmon whose `name` is `amdgpu` (Linux
//! `Documentation/gpu/amdgpu/thermal.rst`; units from `Documentation/hwmon/sysfs-interface`:
//! microjoules, microwatts). Everything is read under a sysfs root (`/sys`) that tests replace
//! with a fake tree.
//!
//! A run names AMD GPUs `wgpu:N`: the Nth AMD GPU in card order (card numbers sorted
//! numerically, each physical GPU once by PCI address). wgpu does not promise that order, so the
//! counter's description names the card and PCI address it reads. `cuda:N` stays on NVML, and a
//! card of any other vendor is never metered: its runs' GPU energy stays unavailable.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use api::meter::{Domain, EnergyCounter, MeterError, Probe, Sample, Source, integrate_power_j};

use super::TimeSource;

/// The sysfs root of a stock Linux system.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";

/// AMD's PCI vendor id, as sysfs writes it in `device/vendor`.
pub const AMD_VENDOR: &str = "0x1002";

/// The hwmon `name` of the amdgpu driver.
pub const HWMON_NAME: &str = "amdgpu";

/// The [`Source`] amdgpu energy carries (`amdgpu` in the tables).
pub const SOURCE: Source = Source::Amdgpu;

/// Why an AMD GPU cannot be found, metered or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmdGpuError {
    /// The DRM class folder is missing (no DRM driver loaded, a container, not Linux).
    #[error("{} does not exist (no DRM driver, or not Linux)", dir.display())]
    NoDrm {
        /// The folder searched (`/sys/class/drm`).
        dir: PathBuf,
    },
    /// No DRM card is an AMD GPU.
    #[error("no AMD GPU (vendor 0x1002) under {}{}", dir.display(), list_others(others))]
    NoAmdGpu {
        /// The folder searched (`/sys/class/drm`).
        dir: PathBuf,
        /// The cards of other vendors found there.
        others: Vec<OtherCard>,
    },
    /// An AMD card has no hwmon named `amdgpu` (an old kernel, or the driver failed to probe
    /// its sensors).
    #[error("{gpu}: no hwmon named amdgpu under {}", dir.display())]
    NoHwmon {
        /// The card (`card0 (0000:03:00.0)`).
        gpu: String,
        /// The card's `device/hwmon` folder.
        dir: PathBuf,
    },
    /// The amdgpu hwmon has neither an energy counter nor a power file.
    #[error("{gpu}: no energy1_input, power1_average or power1_input in {}", hwmon.display())]
    NoPowerFile {
        /// The card (`card0 (0000:03:00.0)`).
        gpu: String,
        /// The hwmon folder.
        hwmon: PathBuf,
    },
    /// A sysfs file cannot be read.
    #[error("{} is not readable: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why, with the fix where there is one.
        reason: String,
    },
    /// A sysfs file holds something other than a whole number.
    #[error("{} holds {content:?}, not a whole number", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds (trimmed).
        content: String,
    },
    /// `wgpu:N` names an AMD GPU sysfs does not list.
    #[error("wgpu:{ordinal}: sysfs lists {seen} AMD GPU(s)")]
    NoSuchGpu {
        /// The wgpu ordinal asked for.
        ordinal: usize,
        /// AMD GPUs found.
        seen: usize,
    },
    /// The cumulative energy counter went back: the GPU or its driver was reset, so the energy
    /// since the counter opened can no longer be known.
    #[error(
        "{}: the energy counter went back from {from_uj} to {to_uj} µJ (GPU or driver reset?); \
         GPU energy since the counter opened is unknown",
        path.display()
    )]
    WentBack {
        /// The `energy1_input` file.
        path: PathBuf,
        /// The last value read, microjoules.
        from_uj: u64,
        /// The value read now, microjoules.
        to_uj: u64,
    },
    /// A counter was asked for over no GPU.
    #[error("no AMD GPU to meter")]
    NoGpu,
}

fn list_others(others: &[OtherCard]) -> String {
    if others.is_empty() {
        return String::new();
    }
    let cards: Vec<String> = others.iter().map(OtherCard::to_string).collect();
    format!(" ({})", cards.join(", "))
}

/// A DRM card that is not an AMD GPU, listed so `llmeff env` can say what it skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherCard {
    /// DRM card name (`card0`).
    pub card: String,
    /// Its PCI vendor id (`0x10de`), `None` where it has no readable `device/vendor`.
    pub vendor: Option<String>,
}

impl fmt::Display for OtherCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.vendor {
            Some(v) => write!(f, "{}: vendor {v}", self.card),
            None => write!(f, "{}: no readable vendor", self.card),
        }
    }
}

/// An energy or power file of an amdgpu hwmon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sensor {
    /// `energy1_input`: cumulative energy, microjoules.
    Energy,
    /// `power1_average`: power averaged by the firmware, microwatts.
    PowerAverage,
    /// `power1_input`: instantaneous power, microwatts (newer GPUs, which lack the average).
    PowerInput,
}

impl Sensor {
    /// Every sensor, preferred first: a counter integrates every joule between reads, while
    /// polled power only sees the instants it is read; the firmware's average smooths the
    /// spikes an instantaneous reading would catch or miss.
    pub const PREFERENCE: [Sensor; 3] = [Sensor::Energy, Sensor::PowerAverage, Sensor::PowerInput];

    /// The file name in the hwmon folder.
    pub fn file_name(self) -> &'static str {
        match self {
            Sensor::Energy => "energy1_input",
            Sensor::PowerAverage => "power1_average",
            Sensor::PowerInput => "power1_input",
        }
    }

    fn how(self) -> &'static str {
        match self {
            Sensor::Energy => "energy counter",
            Sensor::PowerAverage | Sensor::PowerInput => "power polling",
        }
    }
}

/// The amdgpu hwmon of a card and the sensor files it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hwmon {
    /// The hwmon folder (`…/device/hwmon/hwmon3`).
    pub dir: PathBuf,
    /// The energy and power files present, preferred first (never empty).
    pub sensors: Vec<Sensor>,
}

/// An AMD GPU as sysfs lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdGpu {
    /// DRM card name (`card1`).
    pub card: String,
    /// PCI address (`0000:03:00.0`), the identity of the physical device, where sysfs gives one.
    pub pci_address: Option<String>,
    /// The card's `device` folder (utilisation and VRAM files).
    pub device_dir: PathBuf,
    /// Its amdgpu hwmon, or why it has none usable.
    pub hwmon: Result<Hwmon, AmdGpuError>,
}

impl fmt::Display for AmdGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&gpu_label(&self.card, self.pci_address.as_deref()))
    }
}

/// `card0 (0000:03:00.0)`: how errors and descriptions name a GPU.
fn gpu_label(card: &str, pci_address: Option<&str>) -> String {
    match pci_address {
        Some(pci) => format!("{card} ({pci})"),
        None => format!("{card} (PCI address unknown)"),
    }
}

/// The AMD GPUs of a machine, found once; counters and probes are opened from it per run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmdGpus {
    drm_dir: PathBuf,
    gpus: Vec<AmdGpu>,
    others: Vec<OtherCard>,
}

impl AmdGpus {
    /// Finds the AMD GPUs under `sysfs_root` (normally [`DEFAULT_SYSFS_ROOT`]): every
    /// `class/drm/cardN` with vendor `0x1002`, in card-number order, each PCI device once.
    ///
    /// An AMD card without a usable hwmon is kept (it still takes its `wgpu:N` place) with the
    /// reason in [`AmdGpu::hwmon`]; only a machine with no AMD card at all is an error.
    pub fn discover(sysfs_root: &Path) -> Result<AmdGpus, AmdGpuError> {
        let drm_dir = sysfs_root.join("class").join("drm");
        let entries = fs::read_dir(&drm_dir).map_err(|_| AmdGpuError::NoDrm {
            dir: drm_dir.clone(),
        })?;
        let mut cards: Vec<(u32, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                card_number(&name).map(|n| (n, name))
            })
            .collect();
        // Numerically, so card10 follows card9 (read_dir's order is the file system's).
        cards.sort();
        let mut gpus = Vec::new();
        let mut others = Vec::new();
        let mut seen = HashSet::new();
        for (_, card) in cards {
            let device_dir = drm_dir.join(&card).join("device");
            let vendor = fs::read_to_string(device_dir.join("vendor"))
                .ok()
                .map(|v| v.trim().to_ascii_lowercase());
            if vendor.as_deref() != Some(AMD_VENDOR) {
                others.push(OtherCard { card, vendor });
                continue;
            }
            let pci_address = pci_address(&device_dir);
            // Two DRM nodes of one PCI device are one GPU: metering both would count its
            // joules twice.
            if let Some(pci) = &pci_address
                && !seen.insert(pci.clone())
            {
                continue;
            }
            let label = gpu_label(&card, pci_address.as_deref());
            let hwmon = find_hwmon(&label, &device_dir);
            gpus.push(AmdGpu {
                card,
                pci_address,
                device_dir,
                hwmon,
            });
        }
        if gpus.is_empty() {
            return Err(AmdGpuError::NoAmdGpu {
                dir: drm_dir,
                others,
            });
        }
        Ok(AmdGpus {
            drm_dir,
            gpus,
            others,
        })
    }

    /// The DRM class folder searched.
    pub fn drm_dir(&self) -> &Path {
        &self.drm_dir
    }

    /// Every AMD GPU found, in `wgpu:N` order.
    pub fn gpus(&self) -> &[AmdGpu] {
        &self.gpus
    }

    /// The cards of other vendors, which are never metered here.
    pub fn others(&self) -> &[OtherCard] {
        &self.others
    }

    /// The AMD GPUs a run on `device` uses, each once; `Ok(None)` for a device that is not
    /// `wgpu` (`cpu`, `cuda:N`: those are metered elsewhere or not at all).
    pub fn run_gpus(&self, device: &str) -> Result<Option<Vec<AmdGpu>>, AmdGpuError> {
        let Some(ordinals) = wgpu_ordinals(device) else {
            return Ok(None);
        };
        let mut out: Vec<AmdGpu> = Vec::new();
        for ordinal in ordinals {
            let gpu = self.gpus.get(ordinal).ok_or(AmdGpuError::NoSuchGpu {
                ordinal,
                seen: self.gpus.len(),
            })?;
            if !out.iter().any(|g| g.card == gpu.card) {
                out.push(gpu.clone());
            }
        }
        Ok(Some(out))
    }

    /// One line for `llmeff env`: how each GPU is metered or why it cannot be, and whether any
    /// can.
    pub fn summary(&self) -> (bool, String) {
        let mut available = false;
        let mut parts: Vec<String> = self
            .gpus
            .iter()
            .enumerate()
            .map(|(n, gpu)| match open_sensor(gpu) {
                Ok((sensor, _)) => {
                    available = true;
                    format!(
                        "wgpu:{n} = {gpu}: {} ({})",
                        sensor.how(),
                        sensor.file_name()
                    )
                }
                // These two name the GPU themselves.
                Err(e @ (AmdGpuError::NoHwmon { .. } | AmdGpuError::NoPowerFile { .. })) => {
                    format!("wgpu:{n} = {e}")
                }
                Err(e) => format!("wgpu:{n} = {gpu}: {e}"),
            })
            .collect();
        if !self.others.is_empty() {
            let others: Vec<String> = self.others.iter().map(OtherCard::to_string).collect();
            parts.push(format!("not AMD, not metered here: {}", others.join(", ")));
        }
        (available, parts.join("; "))
    }
}

/// `cardN` → N; connectors (`card0-DP-1`) and render nodes (`renderD128`) are not cards.
fn card_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("card")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A PCI address `DDDD:BB:DD.F` (hex domain, bus, device; function 0-7).
fn is_pci_address(text: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let Some((head, function)) = text.rsplit_once('.') else {
        return false;
    };
    let fields: Vec<&str> = head.split(':').collect();
    matches!(function.as_bytes(), [b'0'..=b'7'])
        && fields.len() == 3
        && fields[0].len() >= 4
        && fields[0].bytes().all(|b| b.is_ascii_hexdigit())
        && hex(fields[1], 2)
        && hex(fields[2], 2)
}

/// The PCI address of a card's `device`: the name its symlink points at, else `uevent`'s
/// `PCI_SLOT_NAME`.
fn pci_address(device_dir: &Path) -> Option<String> {
    let from_link = fs::read_link(device_dir)
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|name| is_pci_address(name));
    from_link.or_else(|| {
        fs::read_to_string(device_dir.join("uevent"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("PCI_SLOT_NAME="))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| is_pci_address(s))
    })
}

/// The card's hwmon named `amdgpu` and the energy/power files in it.
fn find_hwmon(label: &str, device_dir: &Path) -> Result<Hwmon, AmdGpuError> {
    let root = device_dir.join("hwmon");
    let no_hwmon = || AmdGpuError::NoHwmon {
        gpu: label.to_string(),
        dir: root.clone(),
    };
    let mut dirs: Vec<(u32, PathBuf)> = fs::read_dir(&root)
        .map_err(|_| no_hwmon())?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("hwmon")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    dirs.sort();
    let dir = dirs
        .into_iter()
        .map(|(_, dir)| dir)
        .find(|dir| {
            fs::read_to_string(dir.join("name")).is_ok_and(|name| name.trim() == HWMON_NAME)
        })
        .ok_or_else(no_hwmon)?;
    let sensors: Vec<Sensor> = Sensor::PREFERENCE
        .into_iter()
        .filter(|s| dir.join(s.file_name()).is_file())
        .collect();
    if sensors.is_empty() {
        return Err(AmdGpuError::NoPowerFile {
            gpu: label.to_string(),
            hwmon: dir,
        });
    }
    Ok(Hwmon { dir, sensors })
}

/// The first of the GPU's sensors that reads, and its value: a file can exist and still fail
/// (firmware that does not answer the query), and then the next one serves.
fn open_sensor(gpu: &AmdGpu) -> Result<(Sensor, u64), AmdGpuError> {
    let hwmon = gpu.hwmon.as_ref().map_err(Clone::clone)?;
    let mut first_error = None;
    for &sensor in &hwmon.sensors {
        match read_u64(&hwmon.dir.join(sensor.file_name())) {
            Ok(value) => return Ok((sensor, value)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| AmdGpuError::NoPowerFile {
        gpu: gpu.to_string(),
        hwmon: hwmon.dir.clone(),
    }))
}

/// Parses a run's device into wgpu ordinals: `wgpu` and `wgpu:N`, several joined by `,` for a
/// run spread over GPUs. `None` when any part is not a wgpu device.
pub fn wgpu_ordinals(device: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in device.split(',').map(str::trim) {
        let ordinal = match part.strip_prefix("wgpu")? {
            "" => 0,
            rest => rest.strip_prefix(':')?.parse().ok()?,
        };
        out.push(ordinal);
    }
    (!out.is_empty()).then_some(out)
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "permission denied; run as root or `chmod o+r` the file".to_string()
        }
        io::ErrorKind::NotFound => "it does not exist".to_string(),
        _ => e.to_string(),
    }
}

fn read_u64(path: &Path) -> Result<u64, AmdGpuError> {
    let text = fs::read_to_string(path).map_err(|e| AmdGpuError::Unreadable {
        path: path.to_path_buf(),
        reason: describe_io(&e),
    })?;
    text.trim().parse().map_err(|_| AmdGpuError::Malformed {
        path: path.to_path_buf(),
        content: text.trim().to_string(),
    })
}

fn meter_error(e: &AmdGpuError) -> MeterError {
    MeterError {
        meter: "amdgpu".to_string(),
        reason: e.to_string(),
    }
}

#[derive(Debug)]
enum GpuEnergy {
    /// `energy1_input`, microjoules: the joules since the counter opened are exact sums of
    /// integer deltas.
    Counter { last_uj: u64, total_uj: u128 },
    /// Power polled on each read (microwatts), integrated by the trapezoidal rule.
    Power {
        last_t: Instant,
        last_w: f64,
        total_j: f64,
    },
}

#[derive(Debug)]
struct Metered {
    gpu: AmdGpu,
    sensor: Sensor,
    path: PathBuf,
    energy: GpuEnergy,
}

/// GPU energy of a run's AMD GPUs (each physical GPU once), from their amdgpu hwmon files.
pub struct AmdgpuEnergyCounter {
    gpus: Vec<Metered>,
    clock: TimeSource,
    /// Set once an energy counter went back: every later read fails with it, since any figure
    /// after a reset would silently leave out the energy before it.
    broken: Option<AmdGpuError>,
}

impl AmdgpuEnergyCounter {
    /// Opens a counter over `gpus`, reading each once as its origin: the energy counter where
    /// the GPU has one, otherwise its power.
    pub fn new(gpus: Vec<AmdGpu>, clock: TimeSource) -> Result<AmdgpuEnergyCounter, AmdGpuError> {
        if gpus.is_empty() {
            return Err(AmdGpuError::NoGpu);
        }
        let mut metered = Vec::with_capacity(gpus.len());
        for gpu in gpus {
            let (sensor, value) = open_sensor(&gpu)?;
            let path = match &gpu.hwmon {
                Ok(h) => h.dir.join(sensor.file_name()),
                Err(e) => return Err(e.clone()),
            };
            let energy = match sensor {
                Sensor::Energy => GpuEnergy::Counter {
                    last_uj: value,
                    total_uj: 0,
                },
                Sensor::PowerAverage | Sensor::PowerInput => GpuEnergy::Power {
                    last_t: clock(),
                    last_w: value as f64 / 1e6,
                    total_j: 0.0,
                },
            };
            metered.push(Metered {
                gpu,
                sensor,
                path,
                energy,
            });
        }
        Ok(AmdgpuEnergyCounter {
            gpus: metered,
            clock,
            broken: None,
        })
    }
}

impl fmt::Debug for AmdgpuEnergyCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmdgpuEnergyCounter")
            .field("gpus", &self.gpus)
            .field("broken", &self.broken)
            .finish()
    }
}

impl EnergyCounter for AmdgpuEnergyCounter {
    fn domain(&self) -> Domain {
        Domain::Gpu
    }

    fn source(&self) -> Source {
        SOURCE
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .gpus
            .iter()
            .map(|m| match m.energy {
                GpuEnergy::Counter { .. } => {
                    format!("amdgpu {} counter: {}", m.sensor.file_name(), m.gpu)
                }
                GpuEnergy::Power { .. } => format!(
                    "amdgpu {} × time (trapezoidal, polled on each read): {}",
                    m.sensor.file_name(),
                    m.gpu
                ),
            })
            .collect();
        parts.join("; ")
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        if let Some(e) = &self.broken {
            return Err(meter_error(e));
        }
        // Read every file before updating any, so a failed read leaves the state consistent
        // and the next successful read still covers the whole interval.
        let mut now = Vec::with_capacity(self.gpus.len());
        for m in &self.gpus {
            now.push(read_u64(&m.path).map_err(|e| meter_error(&e))?);
        }
        for (m, &value) in self.gpus.iter().zip(&now) {
            if let GpuEnergy::Counter { last_uj, .. } = m.energy
                && value < last_uj
            {
                let e = AmdGpuError::WentBack {
                    path: m.path.clone(),
                    from_uj: last_uj,
                    to_uj: value,
                };
                let err = meter_error(&e);
                self.broken = Some(e);
                return Err(err);
            }
        }
        let t = (self.clock)();
        let mut total_uj: u128 = 0;
        let mut total_j = 0.0;
        for (m, value) in self.gpus.iter_mut().zip(now) {
            match &mut m.energy {
                GpuEnergy::Counter {
                    last_uj,
                    total_uj: gpu_uj,
                } => {
                    *gpu_uj += u128::from(value - *last_uj);
                    *last_uj = value;
                    total_uj += *gpu_uj;
                }
                GpuEnergy::Power {
                    last_t,
                    last_w,
                    total_j: gpu_j,
                } => {
                    let w = value as f64 / 1e6;
                    let dt = t.saturating_duration_since(*last_t).as_secs_f64();
                    *gpu_j += integrate_power_j(&[(0.0, *last_w), (dt, w)]);
                    *last_t = t;
                    *last_w = w;
                    total_j += *gpu_j;
                }
            }
        }
        Ok(total_uj as f64 / 1e6 + total_j)
    }
}

/// Utilisation (`gpu_busy_percent`) and VRAM in use (`mem_info_vram_used`) of a run's AMD GPUs.
#[derive(Debug)]
pub struct AmdgpuProbe {
    gpus: Vec<AmdGpu>,
}

impl AmdgpuProbe {
    /// A probe over `gpus` (each physical GPU once).
    pub fn new(gpus: Vec<AmdGpu>) -> AmdgpuProbe {
        AmdgpuProbe { gpus }
    }
}

impl Probe for AmdgpuProbe {
    fn sample(&mut self, sample: &mut Sample) {
        if self.gpus.is_empty() {
            return;
        }
        // A figure is only filled when every GPU answered: a mean or sum over some of the
        // run's GPUs would be a different quantity under the same name.
        let busy: Result<Vec<u64>, _> = self
            .gpus
            .iter()
            .map(|g| read_u64(&g.device_dir.join("gpu_busy_percent")))
            .collect();
        if let Ok(busy) = busy {
            let sum: f64 = busy.iter().map(|&b| b as f64).sum();
            sample.gpu_util_pct = Some(sum / busy.len() as f64);
        }
        let vram: Result<Vec<u64>, _> = self
            .gpus
            .iter()
            .map(|g| read_u64(&g.device_dir.join("mem_info_vram_used")))
            .collect();
        if let Ok(vram) = vram {
            sample.gpu_mem_bytes = vram.iter().try_fold(0u64, |a, &b| a.checked_add(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!(wgpu_ordinals("wgpu"), Some(vec![0]));
        assert_eq!(wgpu_ordinals("wgpu:2"), Some(vec![2]));
        assert_eq!(wgpu_ordinals("wgpu:0, wgpu:1"), Some(vec![0, 1]));
        assert_eq!(wgpu_ordinals("cuda:0"), None);
        assert_eq!(wgpu_ordinals("cpu"), None);
        assert_eq!(
            wgpu_ordinals("wgpu:0,cuda:1"),
            None,
            "a mixed run is not all AMD"
        );
        assert_eq!(wgpu_ordinals("wgpu:x"), None);
        assert_eq!(wgpu_ordinals("wgpux"), None);
    }

    #[test]
    fn only_card_nodes_are_cards() {
        assert_eq!(card_number("card0"), Some(0));
        assert_eq!(card_number("card12"), Some(12));
        assert_eq!(card_number("card0-DP-1"), None);
        assert_eq!(card_number("renderD128"), None);
        assert_eq!(card_number("card"), None);
        assert_eq!(card_number("card+1"), None);
    }

    #[test]
    fn pci_addresses_are_recognised() {
        assert!(is_pci_address("0000:03:00.0"));
        assert!(is_pci_address("10000:c1:1f.7"));
        assert!(!is_pci_address("0000:03:00.8"));
        assert!(!is_pci_address("03:00.0"));
        assert!(!is_pci_address("card0"));
        assert!(!is_pci_address("0000:03:00"));
        assert!(!is_pci_address("0000:3:00.0"));
    }

    #[test]
    fn the_error_lists_the_cards_it_skipped() {
        let e = AmdGpuError::NoAmdGpu {
            dir: PathBuf::from("/sys/class/drm"),
            others: vec![
                OtherCard {
                    card: "card0".into(),
                    vendor: Some("0x10de".into()),
                },
                OtherCard {
                    card: "card1".into(),
                    vendor: None,
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no AMD GPU (vendor 0x1002) under /sys/class/drm (card0: vendor 0x10de, card1: no \
             readable vendor)"
        );
    }
}
