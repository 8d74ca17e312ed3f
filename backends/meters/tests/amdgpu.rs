//! AMD GPUs on fake sysfs trees laid out as the amdgpu driver lays them out
//! (`class/drm/cardN/device` → a PCI device folder with `vendor`, `uevent`, `gpu_busy_percent`,
//! `mem_info_vram_used` and `hwmon/hwmonM/{name,energy1_input,power1_average,power1_input}`),
//! with a manual clock, so every joule is checked exactly.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::meter::{Domain, EnergyCounter, MeterProvider, Probe, Sample, integrate_power_j};
use meters::amdgpu::{
    AmdGpuError, AmdGpus, AmdgpuEnergyCounter, AmdgpuProbe, OtherCard, SOURCE, Sensor,
};
use meters::estimate::{CpuTdpTable, RamPowerModel};
use meters::nvml::{FakeGpus, GpuApi, GpuError};
use meters::{MachineMeters, ManualClock, MeterParts};

const AMD: &str = "0x1002";
const NVIDIA: &str = "0x10de";

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

struct Sys {
    tmp: tempfile::TempDir,
    root: PathBuf,
    clock: ManualClock,
}

fn sys() -> Sys {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("sys");
    fs::create_dir_all(root.join("class/drm")).unwrap();
    Sys {
        tmp,
        root,
        clock: ManualClock::new(),
    }
}

impl Sys {
    /// A PCI device folder of `vendor` at `pci` (as under `/sys/devices/pci0000:00/`), with the
    /// amdgpu utilisation and VRAM files.
    fn pci_device(&self, pci: &str, vendor: &str) -> PathBuf {
        let dir = self.root.join("devices/pci0000:00").join(pci);
        write(&dir.join("vendor"), &format!("{vendor}\n"));
        write(
            &dir.join("uevent"),
            &format!("DRIVER=amdgpu\nPCI_SLOT_NAME={pci}\n"),
        );
        write(&dir.join("gpu_busy_percent"), "0\n");
        write(&dir.join("mem_info_vram_used"), "0\n");
        dir
    }

    /// `class/drm/card<n>`, its `device` a link to `device` (as the kernel makes it).
    fn card(&self, n: u32, device: &Path) {
        let card = self.root.join(format!("class/drm/card{n}"));
        fs::create_dir_all(&card).unwrap();
        symlink(device, card.join("device")).unwrap();
    }

    /// An AMD GPU at `pci` as `card<n>` whose amdgpu hwmon holds `files` (name, value).
    fn amd_card(&self, n: u32, pci: &str, files: &[(&str, u64)]) -> PathBuf {
        let device = self.pci_device(pci, AMD);
        let hwmon = hwmon(&device, n + 2, "amdgpu", files);
        self.card(n, &device);
        hwmon
    }

    fn parts(&self, gpu: Result<Arc<dyn GpuApi>, GpuError>) -> MeterParts {
        MeterParts {
            powercap_root: self.tmp.path().join("no-powercap"),
            proc_root: self.tmp.path().join("no-proc"),
            sysfs_root: self.root.clone(),
            gpu,
            cuda_visible_devices: None,
            cache_dir: None,
            tdp_table: CpuTdpTable::bundled(),
            ram_model: RamPowerModel { arm: false },
            cpu_threads: Some(1),
            clock: self.clock.source(),
        }
    }

    fn meters(&self) -> MachineMeters {
        MachineMeters::with_parts(self.parts(Err(GpuError::Failed("no driver".into()))))
    }

    fn counter(&self, device: &str) -> AmdgpuEnergyCounter {
        let gpus = AmdGpus::discover(&self.root)
            .unwrap()
            .run_gpus(device)
            .unwrap()
            .unwrap();
        AmdgpuEnergyCounter::new(gpus, self.clock.source()).unwrap()
    }
}

/// `device/hwmon/hwmon<n>` named `name`, holding `files` (name, value).
fn hwmon(device: &Path, n: u32, name: &str, files: &[(&str, u64)]) -> PathBuf {
    let dir = device.join(format!("hwmon/hwmon{n}"));
    write(&dir.join("name"), &format!("{name}\n"));
    write(&dir.join("temp1_input"), "45000\n");
    for (file, value) in files {
        write(&dir.join(file), &format!("{value}\n"));
    }
    dir
}

fn set(dir: &Path, file: &str, value: u64) {
    write(&dir.join(file), &format!("{value}\n"));
}

fn gpu_counter(counters: &mut [Box<dyn EnergyCounter>]) -> Option<&mut Box<dyn EnergyCounter>> {
    counters.iter_mut().find(|c| c.domain() == Domain::Gpu)
}

fn amdgpu_status(meters: &MachineMeters) -> api::meter::MeterStatus {
    meters
        .inventory()
        .into_iter()
        .find(|m| m.name == "amdgpu")
        .expect("an amdgpu entry")
}

#[test]
fn an_energy_counter_is_read_as_exact_deltas() {
    let s = sys();
    // The counter is preferred over the power file beside it.
    let hw = s.amd_card(
        0,
        "0000:03:00.0",
        &[("energy1_input", 5_000_000), ("power1_average", 1)],
    );
    let mut counter = s.counter("wgpu:0");
    assert_eq!(counter.domain(), Domain::Gpu);
    assert_eq!(counter.source(), SOURCE);
    assert_eq!(
        counter.describe(),
        "amdgpu energy1_input counter: card0 (0000:03:00.0)"
    );
    assert_eq!(counter.read_j().unwrap(), 0.0);
    set(&hw, "energy1_input", 255_500_000);
    assert_eq!(counter.read_j().unwrap(), 250.5);
    // Time does not enter a counter's joules.
    s.clock.advance(Duration::from_secs(3600));
    set(&hw, "energy1_input", 255_500_001);
    assert_eq!(counter.read_j().unwrap(), 250.500_001);
    assert_eq!(counter.read_j().unwrap(), 250.500_001);
}

#[test]
fn polled_power_is_integrated_by_the_trapezoidal_rule() {
    let s = sys();
    let hw = s.amd_card(0, "0000:03:00.0", &[("power1_average", 70_000_000)]);
    let mut counter = s.counter("wgpu:0");
    assert_eq!(
        counter.describe(),
        "amdgpu power1_average × time (trapezoidal, polled on each read): card0 (0000:03:00.0)"
    );
    let trace = [(0.0, 70.0), (0.5, 30.0), (2.5, 30.0), (4.0, 60.5)];
    let mut t_prev = 0.0;
    let mut last = 0.0;
    for &(t, w) in &trace[1..] {
        s.clock.advance(Duration::from_secs_f64(t - t_prev));
        t_prev = t;
        set(&hw, "power1_average", (w * 1e6) as u64);
        last = counter.read_j().unwrap();
    }
    assert_eq!(last, integrate_power_j(&trace));
    assert_eq!(last, 25.0 + 60.0 + 67.875);
}

#[test]
fn instantaneous_power_serves_where_there_is_no_average() {
    let s = sys();
    let hw = s.amd_card(0, "0000:03:00.0", &[("power1_input", 100_000_000)]);
    let gpus = AmdGpus::discover(&s.root).unwrap();
    assert_eq!(
        gpus.gpus()[0].hwmon.as_ref().unwrap().sensors,
        [Sensor::PowerInput]
    );
    let mut counter = s.counter("wgpu");
    assert!(counter.describe().starts_with("amdgpu power1_input"));
    s.clock.advance(Duration::from_secs(2));
    set(&hw, "power1_input", 200_000_000);
    assert_eq!(counter.read_j().unwrap(), 300.0);
}

#[test]
fn two_nodes_of_one_pci_device_are_one_gpu() {
    let s = sys();
    let first = s.amd_card(0, "0000:03:00.0", &[("energy1_input", 0)]);
    // card1 is the same PCI device seen through a plain folder: only `uevent` names it.
    let plain = s.root.join("class/drm/card1/device");
    write(&plain.join("vendor"), "0x1002\n");
    write(&plain.join("uevent"), "PCI_SLOT_NAME=0000:03:00.0\n");
    hwmon(&plain, 9, "amdgpu", &[("energy1_input", 0)]);
    let second = s.amd_card(2, "0000:04:00.0", &[("energy1_input", 0)]);
    // card10 sorts after card2 (by number, not by name), and connectors and render nodes of a
    // card are not cards.
    let tenth = s.amd_card(10, "0000:05:00.0", &[("energy1_input", 0)]);
    fs::create_dir_all(s.root.join("class/drm/card0-DP-1")).unwrap();
    let render = s.root.join("class/drm/renderD128");
    fs::create_dir_all(&render).unwrap();
    symlink(
        s.root.join("devices/pci0000:00/0000:04:00.0"),
        render.join("device"),
    )
    .unwrap();

    let amd = AmdGpus::discover(&s.root).unwrap();
    let found: Vec<String> = amd.gpus().iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "card0 (0000:03:00.0)",
            "card2 (0000:04:00.0)",
            "card10 (0000:05:00.0)"
        ]
    );
    let run = amd.run_gpus("wgpu:1,wgpu:2").unwrap().unwrap();
    assert_eq!(run.len(), 2);
    assert_eq!(run[0].card, "card2");

    // One GPU named twice is metered once.
    let mut counter = s.counter("wgpu:0,wgpu:0");
    set(&first, "energy1_input", 2_000_000);
    set(&second, "energy1_input", 7_000_000);
    set(&tenth, "energy1_input", 9_000_000);
    assert_eq!(counter.read_j().unwrap(), 2.0);
    // Two GPUs add up.
    let mut both = s.counter("wgpu:0,wgpu:1");
    set(&first, "energy1_input", 3_000_000);
    set(&second, "energy1_input", 10_000_000);
    assert_eq!(both.read_j().unwrap(), 4.0);
    assert!(both.describe().contains("card0 (0000:03:00.0); amdgpu"));

    assert_eq!(
        amd.run_gpus("wgpu:3").unwrap_err(),
        AmdGpuError::NoSuchGpu {
            ordinal: 3,
            seen: 3
        }
    );
    assert_eq!(amd.run_gpus("cuda:0").unwrap(), None);
    assert_eq!(amd.run_gpus("cpu").unwrap(), None);
}

#[test]
fn cards_of_other_vendors_are_never_metered() {
    let s = sys();
    let nvidia = s.pci_device("0000:01:00.0", NVIDIA);
    hwmon(&nvidia, 1, "nouveau", &[("power1_input", 1)]);
    s.card(0, &nvidia);
    s.amd_card(1, "0000:03:00.0", &[("power1_average", 1)]);

    let amd = AmdGpus::discover(&s.root).unwrap();
    assert_eq!(amd.gpus().len(), 1);
    assert_eq!(
        amd.others(),
        [OtherCard {
            card: "card0".into(),
            vendor: Some(NVIDIA.into()),
        }]
    );
    // wgpu:0 is the first AMD GPU, not the first card.
    assert_eq!(amd.run_gpus("wgpu:0").unwrap().unwrap()[0].card, "card1");
    let status = amdgpu_status(&s.meters());
    assert!(status.available);
    assert_eq!(
        status.detail,
        "wgpu:0 = card1 (0000:03:00.0): power polling (power1_average); not AMD, not metered \
         here: card0: vendor 0x10de"
    );

    // A machine whose only card is NVIDIA's: no AMD GPU, and a wgpu run's GPU energy is
    // unavailable rather than read from the wrong device.
    fs::remove_dir_all(s.root.join("class/drm/card1")).unwrap();
    let meters = s.meters();
    let status = amdgpu_status(&meters);
    assert!(!status.available);
    assert!(
        status.detail.ends_with("class/drm (card0: vendor 0x10de)")
            && status
                .detail
                .starts_with("no AMD GPU (vendor 0x1002) under "),
        "{}",
        status.detail
    );
    let mut counters = meters.energy_counters("wgpu:0");
    assert!(gpu_counter(&mut counters).is_none());
    assert_eq!(meters.probes("wgpu:0").len(), 1, "only the process probe");
}

#[test]
fn a_missing_hwmon_or_power_file_is_explained() {
    let s = sys();
    // card0: an AMD GPU with no hwmon at all; card1: an hwmon of another driver only, and an
    // amdgpu hwmon with temperatures but no power.
    let bare = s.pci_device("0000:03:00.0", AMD);
    s.card(0, &bare);
    let other = s.pci_device("0000:04:00.0", AMD);
    hwmon(&other, 1, "nvme", &[("power1_input", 1)]);
    s.card(1, &other);
    let temps = s.pci_device("0000:05:00.0", AMD);
    hwmon(&temps, 2, "amdgpu", &[]);
    s.card(2, &temps);

    let meters = s.meters();
    let status = amdgpu_status(&meters);
    assert!(!status.available, "{status:?}");
    let parts: Vec<&str> = status.detail.split("; ").collect();
    assert!(
        parts[0].starts_with("wgpu:0 = card0 (0000:03:00.0): no hwmon named amdgpu under ")
            && parts[0].ends_with("class/drm/card0/device/hwmon"),
        "{}",
        parts[0]
    );
    assert!(
        parts[1].contains("card1 (0000:04:00.0): no hwmon named amdgpu"),
        "{}",
        parts[1]
    );
    assert!(
        parts[2].contains("no energy1_input, power1_average or power1_input in ")
            && parts[2].ends_with("hwmon/hwmon2"),
        "{}",
        parts[2]
    );
    for device in ["wgpu:0", "wgpu:1", "wgpu:2"] {
        let mut counters = meters.energy_counters(device);
        assert!(gpu_counter(&mut counters).is_none(), "{device}");
    }
    let amd = AmdGpus::discover(&s.root).unwrap();
    let gpus = amd.run_gpus("wgpu:0").unwrap().unwrap();
    assert!(matches!(
        AmdgpuEnergyCounter::new(gpus, s.clock.source()),
        Err(AmdGpuError::NoHwmon { .. })
    ));

    // No DRM folder at all.
    fs::remove_dir_all(s.root.join("class/drm")).unwrap();
    let status = amdgpu_status(&s.meters());
    assert!(!status.available);
    assert!(
        status
            .detail
            .ends_with("class/drm does not exist (no DRM driver, or not Linux)"),
        "{}",
        status.detail
    );
}

#[test]
fn an_energy_counter_that_goes_back_is_an_error_not_negative_joules() {
    let s = sys();
    let hw = s.amd_card(0, "0000:03:00.0", &[("energy1_input", 1_000_000)]);
    let mut counter = s.counter("wgpu:0");
    set(&hw, "energy1_input", 3_000_000);
    assert_eq!(counter.read_j().unwrap(), 2.0);
    // A GPU reset restarts the counter near zero.
    set(&hw, "energy1_input", 500);
    let err = counter.read_j().unwrap_err();
    assert_eq!(err.meter, "amdgpu");
    assert!(
        err.reason.ends_with(
            "energy1_input: the energy counter went back from 3000000 to 500 µJ (GPU or driver \
             reset?); GPU energy since the counter opened is unknown"
        ),
        "{err}"
    );
    // Once it has gone back, the joules since the origin are unknown for good: a later figure
    // would leave out the energy before the reset.
    set(&hw, "energy1_input", 9_000_000);
    assert_eq!(counter.read_j().unwrap_err(), err);
}

#[test]
fn bad_sysfs_content_is_an_error_not_a_panic() {
    let s = sys();
    let hw = s.amd_card(0, "0000:03:00.0", &[]);
    write(&hw.join("power1_average"), "N/A\n");
    let meters = s.meters();
    let status = amdgpu_status(&meters);
    assert!(!status.available);
    assert!(
        status
            .detail
            .ends_with("power1_average holds \"N/A\", not a whole number"),
        "{}",
        status.detail
    );
    let mut counters = meters.energy_counters("wgpu:0");
    assert!(gpu_counter(&mut counters).is_none());

    // A counter that opened, then read garbage once: an error, and the next good read still
    // covers the whole interval.
    set(&hw, "power1_average", 10_000_000);
    let mut counter = s.counter("wgpu:0");
    s.clock.advance(Duration::from_secs(1));
    write(&hw.join("power1_average"), "-5\n");
    let err = counter.read_j().unwrap_err();
    assert!(err.reason.contains("not a whole number"), "{err}");
    s.clock.advance(Duration::from_secs(1));
    set(&hw, "power1_average", 30_000_000);
    assert_eq!(counter.read_j().unwrap(), 40.0);

    // A file that exists but fails is skipped for the next sensor.
    write(&hw.join("energy1_input"), "\n");
    let mut counter = s.counter("wgpu:0");
    assert!(counter.describe().starts_with("amdgpu power1_average"));
    assert_eq!(counter.read_j().unwrap(), 0.0);

    // A card whose vendor is garbage is not an AMD GPU.
    let odd = s.pci_device("0000:09:00.0", "garbage");
    s.card(1, &odd);
    let amd = AmdGpus::discover(&s.root).unwrap();
    assert_eq!(amd.gpus().len(), 1);
    assert_eq!(amd.others()[0].vendor.as_deref(), Some("garbage"));
}

#[test]
fn the_probe_averages_busy_shares_and_sums_vram() {
    let s = sys();
    s.amd_card(0, "0000:03:00.0", &[("power1_average", 1)]);
    s.amd_card(1, "0000:04:00.0", &[("power1_average", 1)]);
    let dev = |pci: &str| s.root.join("devices/pci0000:00").join(pci);
    set(&dev("0000:03:00.0"), "gpu_busy_percent", 40);
    set(&dev("0000:03:00.0"), "mem_info_vram_used", 1 << 30);
    set(&dev("0000:04:00.0"), "gpu_busy_percent", 80);
    set(&dev("0000:04:00.0"), "mem_info_vram_used", 3 << 30);
    let amd = AmdGpus::discover(&s.root).unwrap();
    let mut probe = AmdgpuProbe::new(amd.gpus().to_vec());
    let mut sample = Sample::default();
    probe.sample(&mut sample);
    assert_eq!(sample.gpu_util_pct, Some(60.0));
    assert_eq!(sample.gpu_mem_bytes, Some(4 << 30));

    // One GPU not answering leaves the figure unknown, not a mean over the other.
    write(&dev("0000:04:00.0").join("gpu_busy_percent"), "busy\n");
    let mut sample = Sample::default();
    probe.sample(&mut sample);
    assert_eq!(sample.gpu_util_pct, None);
    assert_eq!(sample.gpu_mem_bytes, Some(4 << 30));
}

#[test]
fn machine_meters_meter_wgpu_runs_on_amd_gpus_and_cuda_runs_on_nvml() {
    let s = sys();
    let hw = s.amd_card(0, "0000:03:00.0", &[("energy1_input", 0)]);
    set(
        &s.root.join("devices/pci0000:00/0000:03:00.0"),
        "gpu_busy_percent",
        75,
    );
    let fake = Arc::new(FakeGpus::new(&[("GPU-aaaa", "NVIDIA H100 80GB HBM3")]));
    let meters = MachineMeters::with_parts(s.parts(Ok(fake.clone())));

    let mut counters = meters.energy_counters("wgpu:0");
    let gpu = gpu_counter(&mut counters).expect("a GPU counter for wgpu:0");
    assert_eq!(gpu.source(), SOURCE);
    assert!(
        gpu.describe()
            .starts_with("amdgpu energy1_input counter: card0")
    );
    set(&hw, "energy1_input", 1_500_000);
    assert_eq!(gpu.read_j().unwrap(), 1.5);

    // cuda:0 stays on NVML, even with an AMD GPU beside it.
    let mut counters = meters.energy_counters("cuda:0");
    let gpu = gpu_counter(&mut counters).expect("a GPU counter for cuda:0");
    assert!(gpu.describe().starts_with("nvml"), "{}", gpu.describe());

    let mut probes = meters.probes("wgpu:0");
    let mut sample = Sample::default();
    for p in &mut probes {
        p.sample(&mut sample);
    }
    assert_eq!(sample.gpu_util_pct, Some(75.0));
    assert_eq!(sample.gpu_mem_bytes, Some(0));

    // Without NVML, cuda:0 is unmetered, never read from the AMD GPU.
    let meters = s.meters();
    let mut counters = meters.energy_counters("cuda:0");
    assert!(gpu_counter(&mut counters).is_none());
    let mut counters = meters.energy_counters("wgpu:1");
    assert!(gpu_counter(&mut counters).is_none(), "no second AMD GPU");
    let mut counters = meters.energy_counters("cpu");
    assert!(gpu_counter(&mut counters).is_none());
    assert_eq!(meters.probes("cpu").len(), 1);

    let names: Vec<String> = meters.inventory().into_iter().map(|m| m.name).collect();
    assert_eq!(names[..3], ["nvml", "amdgpu", "rapl"]);
    let status = amdgpu_status(&meters);
    assert!(status.available);
    assert_eq!(
        status.detail,
        "wgpu:0 = card0 (0000:03:00.0): energy counter (energy1_input)"
    );
}
