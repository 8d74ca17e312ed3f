//! Machine meters on fake sysfs/proc trees, a fake GPU and a manual clock, so every joule is
//! checked exactly; plus the real `/proc/self` high-water reset and this machine's inventory.
//!
//! The NVML path runs on the real driver where one sees a GPU and on the fake NVML elsewhere;
//! `LLMEFF_REQUIRE_NVML=1` makes a missing driver or GPU a failure instead
//! (`nvml_path_end_to_end`).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::meter::{
    Domain, EnergyCounter, EstimateMode, MeterProvider, Probe, Sample, Source, integrate_power_j,
};
use meters::estimate::{
    CpuEstimateCounter, CpuInfo, CpuPowerModel, CpuTdpTable, CpuTimes, RamPowerModel,
};
use meters::nvml::{
    CudaDeviceError, FakeGpus, GpuApi, GpuError, GpuInfo, NvmlEnergyCounter, NvmlProbe,
    resolve_cuda_device, run_gpus,
};
use meters::peak::{
    CpuPeak, CpuPeakCache, CpuPeakEntry, LoadConditions, LoadSnapshot, PeakBench, PeakError,
    PeakNotice, measure_read_bandwidth,
};
use meters::procfs::{ProcessProbe, ProcfsError};
use meters::rapl::Rapl;
use meters::{MachineMeters, ManualClock, MeterParts};

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn zone(dir: &Path, name: &str, energy_uj: u64, max_uj: u64) {
    write(&dir.join("name"), &format!("{name}\n"));
    write(&dir.join("energy_uj"), &format!("{energy_uj}\n"));
    write(&dir.join("max_energy_range_uj"), &format!("{max_uj}\n"));
}

fn set_energy(dir: &Path, energy_uj: u64) {
    write(&dir.join("energy_uj"), &format!("{energy_uj}\n"));
}

/// The flat layout of `/sys/class/powercap`: two packages, a DRAM and a core subzone, a psys
/// zone and an MMIO duplicate of package 0, none of which but packages and DRAM may count.
fn fake_powercap(root: &Path) {
    zone(
        &root.join("intel-rapl:0"),
        "package-0",
        1_000_000,
        262_143_328_850,
    );
    zone(&root.join("intel-rapl:0:0"), "core", 5, 262_143_328_850);
    zone(
        &root.join("intel-rapl:0:1"),
        "dram",
        2_000_000,
        65_712_999_613,
    );
    zone(&root.join("intel-rapl:1"), "package-1", 999_990, 1_000_000);
    zone(&root.join("intel-rapl:2"), "psys", 7, 262_143_328_850);
    zone(
        &root.join("intel-rapl-mmio:0"),
        "package-0",
        1,
        262_143_328_850,
    );
    fs::create_dir_all(root.join("intel-rapl")).unwrap();
}

/// A fake /proc: cpuinfo, stat, meminfo and self/{status,stat,clear_refs}.
fn fake_proc(root: &Path, model: &str, sockets: u32) {
    let mut cpuinfo = String::new();
    for s in 0..sockets {
        for p in 0..2 {
            cpuinfo.push_str(&format!(
                "processor\t: {}\nmodel name\t: {model}\nphysical id\t: {s}\n\n",
                s * 2 + p
            ));
        }
    }
    write(&root.join("cpuinfo"), &cpuinfo);
    set_stat(root, 0, 1000);
    write(
        &root.join("meminfo"),
        "MemTotal:       16777216 kB\nMemFree:         1000 kB\n",
    );
    set_self(root, 1024, 4096, 0);
    write(&root.join("self/clear_refs"), "");
}

/// `/proc/stat` with `busy` user jiffies and `idle` idle jiffies.
fn set_stat(root: &Path, busy: u64, idle: u64) {
    set_stat_stolen(root, busy, idle, 0);
}

/// `/proc/stat` with `busy` user, `idle` idle and `steal` stolen jiffies.
fn set_stat_stolen(root: &Path, busy: u64, idle: u64, steal: u64) {
    write(
        &root.join("stat"),
        &format!("cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n"),
    );
}

fn set_self(root: &Path, rss_kb: u64, hwm_kb: u64, ticks: u64) {
    write(
        &root.join("self/status"),
        &format!("Name:\tllmeff\nVmHWM:\t{hwm_kb} kB\nVmRSS:\t{rss_kb} kB\n"),
    );
    write(
        &root.join("self/stat"),
        &format!("42 (llm eff) R 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0 20 0 1 0\n"),
    );
}

struct Fixture {
    _tmp: tempfile::TempDir,
    powercap: PathBuf,
    proc: PathBuf,
    /// A sysfs root with no `class/drm`: these tests see no AMD GPU, whatever the machine has.
    sys: PathBuf,
    cache: PathBuf,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let powercap = tmp.path().join("powercap");
    let proc = tmp.path().join("proc");
    let cache = tmp.path().join("cache");
    let sys = tmp.path().join("sys");
    fs::create_dir_all(&powercap).unwrap();
    fake_proc(&proc, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", 2);
    Fixture {
        _tmp: tmp,
        powercap,
        proc,
        sys,
        cache,
        clock: ManualClock::new(),
    }
}

impl Fixture {
    fn parts(&self, gpu: Result<Arc<dyn GpuApi>, GpuError>, visible: Option<&str>) -> MeterParts {
        MeterParts {
            powercap_root: self.powercap.clone(),
            proc_root: self.proc.clone(),
            sysfs_root: self.sys.clone(),
            gpu,
            cuda_visible_devices: visible.map(str::to_string),
            cache_dir: Some(self.cache.clone()),
            tdp_table: CpuTdpTable::bundled(),
            ram_model: RamPowerModel { arm: false },
            cpu_threads: Some(2),
            clock: self.clock.source(),
        }
    }
}

fn by_domain(
    counters: &mut [Box<dyn EnergyCounter>],
    domain: Domain,
) -> &mut Box<dyn EnergyCounter> {
    counters
        .iter_mut()
        .find(|c| c.domain() == domain)
        .unwrap_or_else(|| panic!("no {domain:?} counter"))
}

#[test]
fn rapl_sums_packages_and_dram_and_unwraps_wrap_around() {
    let f = fixture();
    fake_powercap(&f.powercap);
    let rapl = Rapl::discover(&f.powercap).unwrap();
    let names: Vec<&str> = rapl.zones().iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["package-0", "core", "dram", "package-1", "psys"]);

    let mut cpu = rapl.counter(Domain::Cpu).unwrap();
    let mut ram = rapl.counter(Domain::Ram).unwrap();
    assert_eq!(cpu.source(), Source::Rapl);
    assert!(
        cpu.describe().contains("package-0 + package-1"),
        "{}",
        cpu.describe()
    );
    assert_eq!(cpu.read_j().unwrap(), 0.0);

    // Package 0 gains 3 J; package 1 wraps at 1 J: 10 µJ to the top, 20 µJ after it.
    set_energy(&f.powercap.join("intel-rapl:0"), 4_000_000);
    set_energy(&f.powercap.join("intel-rapl:1"), 20);
    set_energy(&f.powercap.join("intel-rapl:0:0"), 999_999_999);
    set_energy(&f.powercap.join("intel-rapl:2"), 999_999_999);
    assert_eq!(cpu.read_j().unwrap(), 3.000_030);
    // Then package 1 gains 0.5 J more.
    set_energy(&f.powercap.join("intel-rapl:1"), 500_020);
    assert_eq!(cpu.read_j().unwrap(), 3.500_030);

    set_energy(&f.powercap.join("intel-rapl:0:1"), 2_250_000);
    assert_eq!(ram.read_j().unwrap(), 0.25);
    assert_eq!(ram.domain(), Domain::Ram);
}

#[test]
fn a_rapl_counter_outside_its_range_is_an_error_not_a_panic() {
    let f = fixture();
    zone(&f.powercap.join("intel-rapl:0"), "package-0", 5_000, 1_000);
    let mut cpu = Rapl::discover(&f.powercap)
        .unwrap()
        .counter(Domain::Cpu)
        .unwrap();
    set_energy(&f.powercap.join("intel-rapl:0"), 10);
    let err = cpu.read_j().unwrap_err();
    assert!(err.reason.contains("outside its range"), "{err}");
    write(&f.powercap.join("intel-rapl:0/energy_uj"), "garbage\n");
    let err = cpu.read_j().unwrap_err();
    assert!(err.reason.contains("not a number"), "{err}");
    // A zero range cannot be unwrapped: the zone is refused when the counter opens.
    zone(&f.powercap.join("intel-rapl:1"), "package-1", 0, 0);
    assert!(
        Rapl::discover(&f.powercap)
            .unwrap()
            .counter(Domain::Cpu)
            .is_err()
    );
}

#[test]
fn rapl_understands_the_nested_layout() {
    let f = fixture();
    let top = f.powercap.join("intel-rapl");
    zone(&top.join("intel-rapl:0"), "package-0", 0, 1000);
    zone(&top.join("intel-rapl:0/intel-rapl:0:0"), "dram", 0, 1000);
    let rapl = Rapl::discover(&f.powercap).unwrap();
    assert_eq!(rapl.zones_for(Domain::Cpu).len(), 1);
    assert_eq!(rapl.zones_for(Domain::Ram).len(), 1);
}

#[test]
fn unreadable_rapl_is_reported_and_the_estimate_takes_over() {
    let f = fixture();
    fake_powercap(&f.powercap);
    // Tests run as root here, so a mode of 000 would not stop a read: a folder in place of
    // the file fails the same way for the reader.
    let energy = f.powercap.join("intel-rapl:1/energy_uj");
    fs::remove_file(&energy).unwrap();
    fs::create_dir(&energy).unwrap();

    let meters =
        MachineMeters::with_parts(f.parts(Err(GpuError::Failed("no driver".into())), None));
    let inventory = meters.inventory();
    let rapl = inventory.iter().find(|m| m.name == "rapl").unwrap();
    assert!(rapl.available, "dram is still readable: {rapl:?}");
    assert!(
        rapl.detail
            .contains("intel-rapl:1/energy_uj is not readable"),
        "{}",
        rapl.detail
    );
    let mut counters = meters.energy_counters("cpu");
    assert_eq!(
        by_domain(&mut counters, Domain::Cpu).source(),
        Source::Estimate
    );
    assert_eq!(by_domain(&mut counters, Domain::Ram).source(), Source::Rapl);
    assert!(counters.iter().all(|c| c.domain() != Domain::Gpu));
}

#[test]
fn no_powercap_means_estimates_for_cpu_and_ram() {
    let f = fixture();
    fs::remove_dir(&f.powercap).unwrap();
    let meters =
        MachineMeters::with_parts(f.parts(Err(GpuError::Failed("no driver".into())), None));
    let rapl = meters
        .inventory()
        .into_iter()
        .find(|m| m.name == "rapl")
        .unwrap();
    assert!(!rapl.available);
    assert!(rapl.detail.contains("does not exist"), "{}", rapl.detail);

    let mut counters = meters.energy_counters("cpu");
    assert_eq!(counters.len(), 2);
    let cpu = by_domain(&mut counters, Domain::Cpu);
    assert_eq!(cpu.source(), Source::Estimate);
    let text = cpu.describe();
    assert!(
        text.starts_with("estimate, machine mode (CodeCarbon 3.3.2 rule: TDP 210 W x 2 sockets = 420 W (Intel(R) Xeon(R) Platinum 8259CL"),
        "{text}"
    );
}

#[test]
fn cpu_estimate_integrates_the_load_curve_exactly() {
    let f = fixture();
    let info = CpuInfo::read(&f.proc).unwrap();
    assert_eq!(info.sockets, 2);
    assert_eq!(info.logical_cpus, 4);
    let model = CpuPowerModel::for_cpu(&info, &CpuTdpTable::bundled());
    assert_eq!(model.tdp_w, 420.0);
    let mut counter = CpuEstimateCounter::new(
        model.clone(),
        &f.proc,
        f.clock.source(),
        EstimateMode::Machine,
    )
    .unwrap();
    assert_eq!(counter.read_j().unwrap(), 0.0);

    // 2 s at 50 % busy, then 1 s fully busy.
    f.clock.advance(Duration::from_secs(2));
    set_stat(&f.proc, 100, 1100);
    let first = model.power_w(0.5) * 2.0;
    assert_eq!(counter.read_j().unwrap(), first);
    assert_eq!(model.power_w(0.5), 420.0 * (0.1 + 0.9 * 0.125));
    f.clock.advance(Duration::from_secs(1));
    set_stat(&f.proc, 300, 1100);
    assert_eq!(counter.read_j().unwrap(), first + 420.0);
    assert!(
        counter.describe().contains("x (0.1 + 0.9 x load^3)"),
        "{}",
        counter.describe()
    );
}

/// The 2-vCPU VM of issue A: `Intel(R) Xeon(R) Processor` (in no CodeCarbon row alone),
/// 23.5 GiB, one socket. CodeCarbon 3.3.2 reported CPU 5.3–7.9 W busy and RAM 20 W there.
fn the_vm(f: &Fixture) {
    fake_proc(&f.proc, "Intel(R) Xeon(R) Processor", 1);
    write(
        &f.proc.join("meminfo"),
        "MemTotal:       24683792 kB\nMemFree:         1000 kB\n",
    );
    fs::remove_dir(&f.powercap).unwrap();
}

#[test]
fn unknown_cpus_get_4_w_per_thread_and_ram_the_dimm_rule() {
    let f = fixture();
    the_vm(&f);
    let meters =
        MachineMeters::with_parts(f.parts(Err(GpuError::Failed("no driver".into())), None));
    let mut counters = meters.energy_counters("cpu");
    let cpu = by_domain(&mut counters, Domain::Cpu);
    assert!(
        cpu.describe()
            .contains("CodeCarbon 3.3.2 rule: 4 W x 2 threads = 8 W"),
        "{}",
        cpu.describe()
    );
    f.clock.advance(Duration::from_secs(1));
    // No jiffy elapsed: the load stays at its last value (0), i.e. the 10 % floor of 8 W.
    assert_eq!(cpu.read_j().unwrap(), 0.8);
    // 1 s fully busy: the whole 8 W (the old rule said 85 W).
    f.clock.advance(Duration::from_secs(1));
    set_stat(&f.proc, 200, 1000);
    assert_eq!(cpu.read_j().unwrap(), 0.8 + 8.0);

    let ram = by_domain(&mut counters, Domain::Ram);
    assert_eq!(ram.source(), Source::Estimate);
    f.clock.advance(Duration::from_secs(1));
    // 23.5 GiB → 4 DIMMs × 5 W = 20 W, for the 3 s since the counter opened.
    assert_eq!(ram.read_j().unwrap(), 60.0);
    let text = ram.describe();
    assert!(
        text.contains("CodeCarbon 3.3.2 rule: 23.5 GiB MemTotal")
            && text.contains("-> 4 DIMMs, 5 W per DIMM (x86), 2 DIMMs least = 20 W"),
        "{text}"
    );
}

#[test]
fn process_mode_charges_only_this_process() {
    let f = fixture();
    the_vm(&f);
    let meters =
        MachineMeters::with_parts(f.parts(Err(GpuError::Failed("no driver".into())), None));
    let mut counters = meters.energy_counters_for("cpu", EstimateMode::Process);
    let cpu = by_domain(&mut counters, Domain::Cpu);
    assert_eq!(cpu.source(), Source::Estimate);
    assert!(
        cpu.describe().starts_with(
            "estimate, process mode (CodeCarbon 3.3.2 rule: 4 W x 2 threads = 8 W (\"Intel(R) Xeon(R) Processor\" is not in CodeCarbon's table) x process CPU s / wall s / 2 CPUs"
        ),
        "{}",
        cpu.describe()
    );
    // Over 2 s the machine is fully busy (another tenant) but this process used 0.5 CPU s:
    // machine mode would charge 16 J, process mode 8 W × 0.5 / 2 s / 2 CPUs × 2 s = 2 J.
    f.clock.advance(Duration::from_secs(2));
    set_stat(&f.proc, 400, 1000);
    set_self(&f.proc, 1024, 4096, 50);
    assert_eq!(cpu.read_j().unwrap(), 2.0);
    // Idle process: nothing more, no 10 % floor.
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(cpu.read_j().unwrap(), 2.0);

    // RAM: the DIMM rule on the resident set (1 MiB → 1 DIMM → the 10 W floor), per read.
    let ram = by_domain(&mut counters, Domain::Ram);
    assert!(
        ram.describe()
            .starts_with("estimate, process mode (CodeCarbon 3.3.2 rule: this process's VmRSS"),
        "{}",
        ram.describe()
    );
    assert_eq!(ram.read_j().unwrap(), 30.0);
    // 20 GiB resident → 4 DIMMs → 20 W for the next second.
    set_self(&f.proc, 20 << 20, 20 << 20, 50);
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(ram.read_j().unwrap(), 50.0);

    // The default provider call stays machine mode.
    let mut machine = meters.energy_counters("cpu");
    assert!(
        by_domain(&mut machine, Domain::Cpu)
            .describe()
            .starts_with("estimate, machine mode"),
    );
}

#[test]
fn process_mode_needs_the_process_files() {
    let f = fixture();
    the_vm(&f);
    fs::remove_file(f.proc.join("self/stat")).unwrap();
    fs::remove_file(f.proc.join("self/status")).unwrap();
    let meters =
        MachineMeters::with_parts(f.parts(Err(GpuError::Failed("no driver".into())), None));
    // Neither estimate can open; machine mode still can.
    assert!(
        meters
            .energy_counters_for("cpu", EstimateMode::Process)
            .is_empty()
    );
    assert_eq!(meters.energy_counters("cpu").len(), 2);
}

fn two_gpus() -> Arc<FakeGpus> {
    Arc::new(FakeGpus::new(&[
        ("GPU-aaaa-1111", "NVIDIA H200"),
        ("GPU-bbbb-2222", "Tesla T4"),
    ]))
}

fn info(fake: &FakeGpus, index: usize) -> GpuInfo {
    fake.devices().unwrap()[index].clone()
}

#[test]
fn gpu_energy_uses_the_total_energy_counter() {
    let f = fixture();
    let fake = two_gpus();
    fake.set_energy_mj(0, Some(1_000_000));
    let mut counter =
        NvmlEnergyCounter::new(fake.clone(), vec![info(&fake, 0)], f.clock.source()).unwrap();
    assert_eq!(counter.source(), Source::Nvml);
    assert!(counter.describe().contains("total-energy counter"));
    fake.set_energy_mj(0, Some(1_250_500));
    assert_eq!(counter.read_j().unwrap(), 250.5);
    // A counter that goes back is an error, never a negative joule.
    fake.set_energy_mj(0, Some(10));
    assert!(counter.read_j().is_err());
}

#[test]
fn gpu_power_is_integrated_by_the_trapezoidal_rule() {
    let f = fixture();
    let fake = two_gpus();
    fake.set_energy_mj(1, None);
    fake.set_power_mw(1, 70_000);
    let mut counter =
        NvmlEnergyCounter::new(fake.clone(), vec![info(&fake, 1)], f.clock.source()).unwrap();
    assert!(
        counter.describe().contains("trapezoidal"),
        "{}",
        counter.describe()
    );
    let trace = [(0.0, 70.0), (0.5, 30.0), (2.5, 30.0), (4.0, 60.5)];
    let mut t_prev = 0.0;
    let mut last = 0.0;
    for &(t, w) in &trace[1..] {
        f.clock.advance(Duration::from_secs_f64(t - t_prev));
        t_prev = t;
        fake.set_power_mw(1, (w * 1000.0) as u32);
        last = counter.read_j().unwrap();
    }
    assert_eq!(last, integrate_power_j(&trace));
    assert_eq!(last, 25.0 + 60.0 + 67.875);
}

#[test]
fn cuda_visible_devices_maps_ordinals_to_nvml_devices() {
    let fake = two_gpus();
    let devices = fake.devices().unwrap();
    let index = |o, v| resolve_cuda_device(o, v, &devices).map(|g| g.index);
    assert_eq!(index(1, None), Ok(1));
    assert_eq!(index(0, Some("1,0")), Ok(1));
    assert_eq!(index(1, Some("1, 0")), Ok(0));
    assert_eq!(index(0, Some("GPU-bbbb")), Ok(1), "a unique UUID prefix");
    assert_eq!(index(0, Some("GPU-aaaa-1111")), Ok(0));
    assert_eq!(
        index(0, Some("GPU-")),
        Err(CudaDeviceError::AmbiguousUuid {
            ordinal: 0,
            entry: "GPU-".to_string(),
            count: 2
        })
    );
    let not_listed = index(1, Some("0")).unwrap_err();
    assert!(matches!(
        not_listed,
        CudaDeviceError::NotListed { listed: 1, .. }
    ));
    assert!(not_listed.to_string().contains("lists 1 device"));
    assert!(index(0, Some("")).is_err(), "an empty list hides every GPU");
    assert!(matches!(
        index(0, Some("MIG-xyz")),
        Err(CudaDeviceError::Mig { .. })
    ));
    assert_eq!(
        index(2, None),
        Err(CudaDeviceError::NoSuchIndex {
            ordinal: 2,
            seen: 2
        })
    );
    let no_match = index(0, Some("7")).unwrap_err();
    assert!(no_match.to_string().contains("matches no NVML GPU"));
}

#[test]
fn one_physical_gpu_is_counted_once() {
    let fake = two_gpus();
    // cuda:0 and cuda:1 are both NVML GPU 1, once by index and once by UUID.
    let gpus = run_gpus(fake.as_ref(), "cuda:0,cuda:1", Some("1,GPU-bbbb-2222"))
        .unwrap()
        .unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].uuid, "GPU-bbbb-2222");
    assert_eq!(run_gpus(fake.as_ref(), "cpu", None).unwrap(), None);
}

#[test]
fn machine_meters_meter_cuda_runs_with_nvml() {
    let f = fixture();
    fs::remove_dir(&f.powercap).unwrap();
    let fake = two_gpus();
    fake.set_energy_mj(1, Some(5_000));
    fake.set_load(0, 40, 1 << 30);
    fake.set_load(1, 80, 3 << 30);
    let meters = MachineMeters::with_parts(f.parts(Ok(fake.clone()), Some("1")));

    let mut counters = meters.energy_counters("cuda:0");
    let domains: Vec<Domain> = counters.iter().map(|c| c.domain()).collect();
    assert_eq!(domains, [Domain::Cpu, Domain::Gpu, Domain::Ram]);
    let gpu = by_domain(&mut counters, Domain::Gpu);
    assert!(gpu.describe().contains("Tesla T4"), "{}", gpu.describe());
    fake.set_energy_mj(1, Some(7_000));
    assert_eq!(gpu.read_j().unwrap(), 2.0);

    let mut probes = meters.probes("cuda:0");
    assert_eq!(probes.len(), 2);
    let mut sample = Sample::default();
    for p in &mut probes {
        p.sample(&mut sample);
    }
    assert_eq!(sample.gpu_util_pct, Some(80.0));
    assert_eq!(sample.gpu_mem_bytes, Some(3 << 30));
    assert_eq!(sample.rss_bytes, Some(1024 * 1024));

    assert_eq!(meters.probes("cpu").len(), 1);
    assert!(
        meters
            .energy_counters("cpu")
            .iter()
            .all(|c| c.domain() != Domain::Gpu)
    );

    let nvml = meters
        .inventory()
        .into_iter()
        .find(|m| m.name == "nvml")
        .unwrap();
    assert!(nvml.available);
    assert!(
        nvml.detail
            .contains("1 Tesla T4 (GPU-bbbb-2222): energy counter"),
        "{}",
        nvml.detail
    );
}

#[test]
fn gpu_probe_averages_utilisation_over_the_runs_gpus() {
    let fake = two_gpus();
    fake.set_load(0, 40, 1 << 30);
    fake.set_load(1, 80, 3 << 30);
    let mut probe = NvmlProbe::new(fake.clone(), fake.devices().unwrap());
    let mut sample = Sample::default();
    probe.sample(&mut sample);
    assert_eq!(sample.gpu_util_pct, Some(60.0));
    assert_eq!(sample.gpu_mem_bytes, Some(4 << 30));
}

#[test]
fn gpu_peaks_come_from_the_table() {
    let f = fixture();
    let fake = two_gpus();
    let meters = MachineMeters::with_parts(f.parts(Ok(fake), None));
    let h200 = meters.peak("cuda:0", "bf16").unwrap();
    assert_eq!(h200.source, "table: NVIDIA H200");
    assert_eq!(h200.bytes_per_s, 4.8e12);
    assert_eq!(meters.peak("cuda:1", "bf16"), None, "T4 has no bf16");
    assert_eq!(meters.peak("cuda:1", "f16").unwrap().flops_per_s, 65e12);
}

#[test]
fn process_probe_reads_rss_cpu_shares_and_the_reset_high_water_mark() {
    let f = fixture();
    let mut probe = ProcessProbe::new(&f.proc, f.clock.source());
    assert_eq!(probe.rss_high_water_bytes(), None, "not reset yet");
    probe.start();
    assert_eq!(
        fs::read_to_string(f.proc.join("self/clear_refs")).unwrap(),
        "5"
    );

    f.clock.advance(Duration::from_secs(2));
    set_self(&f.proc, 2048, 8192, 300);
    set_stat(&f.proc, 250, 1750);
    let mut sample = Sample::default();
    probe.sample(&mut sample);
    assert_eq!(sample.rss_bytes, Some(2048 * 1024));
    // 300 ticks of 10 ms in 2 s: 1.5 cores.
    assert_eq!(sample.process_cpu_pct, Some(150.0));
    assert_eq!(sample.system_cpu_pct, Some(25.0));
    assert_eq!(sample.cpu_steal_pct, Some(0.0));
    assert_eq!(probe.rss_high_water_bytes(), Some(8192 * 1024));

    // A virtual machine whose hypervisor then took half of the next 1000 jiffies: stolen time
    // is reported on its own and is not this machine's load.
    f.clock.advance(Duration::from_secs(2));
    set_stat_stolen(&f.proc, 350, 2150, 500);
    let mut sample = Sample::default();
    probe.sample(&mut sample);
    assert_eq!(sample.system_cpu_pct, Some(10.0));
    assert_eq!(sample.cpu_steal_pct, Some(50.0));
}

#[test]
fn a_high_water_mark_that_could_not_be_reset_is_unknown() {
    let f = fixture();
    let clear_refs = f.proc.join("self/clear_refs");
    fs::remove_file(&clear_refs).unwrap();
    fs::create_dir(&clear_refs).unwrap();
    let mut probe = ProcessProbe::new(&f.proc, f.clock.source());
    probe.start();
    assert_eq!(probe.rss_high_water_bytes(), None);
}

#[test]
fn the_real_high_water_mark_resets_and_grows() {
    let mut probe = ProcessProbe::new(Path::new("/proc"), meters::monotonic());
    probe.start();
    let block = vec![1u8; 64 << 20];
    std::hint::black_box(&block);
    drop(block);
    let mut sample = Sample::default();
    probe.sample(&mut sample);
    assert!(sample.rss_bytes.unwrap() > 0);
    match probe.rss_high_water_bytes() {
        Some(hwm) => assert!(hwm >= 64 << 20, "VmHWM {hwm} after touching 64 MiB"),
        None => eprintln!("clear_refs is not writable here; the peak is reported unknown"),
    }
}

/// A peak benchmark with set figures that moves the fake `/proc` as a measurement would:
/// each call adds `per_call` (busy, idle, steal) jiffies of all CPUs and `own` ticks of this
/// process, so the conditions are known exactly without timing anything.
struct FakeBench {
    proc: PathBuf,
    per_call: (u64, u64, u64),
    own: u64,
    jiffies: (u64, u64, u64),
    ticks: u64,
    calls: usize,
}

impl FakeBench {
    fn new(proc: &Path, per_call: (u64, u64, u64), own: u64) -> FakeBench {
        FakeBench {
            proc: proc.to_path_buf(),
            per_call,
            own,
            jiffies: (0, 1000, 0),
            ticks: 0,
            calls: 0,
        }
    }

    fn tick(&mut self) {
        self.calls += 1;
        self.jiffies.0 += self.per_call.0;
        self.jiffies.1 += self.per_call.1;
        self.jiffies.2 += self.per_call.2;
        self.ticks += self.own;
        set_stat_stolen(&self.proc, self.jiffies.0, self.jiffies.1, self.jiffies.2);
        set_self(&self.proc, 1024, 4096, self.ticks);
    }
}

impl PeakBench for FakeBench {
    fn read_bandwidth(&mut self, threads: usize) -> Result<f64, PeakError> {
        self.tick();
        Ok(10e9 * threads as f64)
    }
    fn copy_bandwidth(&mut self, _threads: usize) -> Result<f64, PeakError> {
        self.tick();
        Ok(15e9)
    }
    fn matmul_flops(&mut self, dtype: &str) -> Result<f64, PeakError> {
        self.tick();
        Ok(if dtype == "f32" { 1e11 } else { 5e10 })
    }
}

fn notices() -> (Arc<Mutex<Vec<PeakNotice>>>, impl Fn(&PeakNotice)) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |n: &PeakNotice| {
        sink.lock().unwrap().push(n.clone())
    })
}

#[test]
fn load_conditions_count_steal_and_other_processes() {
    let snap = |busy, idle, steal, own| LoadSnapshot {
        cpu: CpuTimes::parse(&format!("cpu  {busy} 0 0 {idle} 0 0 0 {steal} 0 0\n")),
        own_ticks: Some(own),
        loadavg_1m: Some(1.5),
    };
    // 200 jiffies: 150 busy of which this process 140, 40 idle, 10 stolen.
    let c = LoadConditions::between(&snap(0, 0, 0, 0), &snap(150, 40, 10, 140));
    assert_eq!(c.steal_pct, Some(5.0));
    assert_eq!(c.other_load_pct, Some(5.0));
    assert_eq!(c.loadavg_1m, Some(1.5));
    assert!(!c.is_quiet(), "5 % steal is over the 2 % limit");
    assert_eq!(
        c.describe(),
        "steal 5.0 %, other load 5.0 %, load average 1.50"
    );
    let quiet = LoadConditions::between(&snap(0, 0, 0, 0), &snap(190, 8, 2, 186));
    assert_eq!(
        (quiet.steal_pct, quiet.other_load_pct),
        (Some(1.0), Some(2.0))
    );
    assert!(quiet.is_quiet());
    // Fewer than 100 jiffies: unknown, and unknown is never quiet.
    let short = LoadConditions::between(&snap(0, 0, 0, 0), &snap(50, 0, 0, 50));
    assert_eq!((short.steal_pct, short.other_load_pct), (None, None));
    assert!(!short.is_quiet());
    assert_eq!(
        LoadSnapshot::read(Path::new("/nonexistent")),
        LoadSnapshot::default()
    );
}

#[test]
fn a_quiet_peak_is_cached_with_when_threads_and_load() {
    let f = fixture();
    write(&f.proc.join("loadavg"), "0.25 0.30 0.40 1/100 4242\n");
    let peak = CpuPeak::new(Some(&f.cache), &f.proc, "Acme CPU", 2);
    assert_eq!(peak.cached("f32"), None);
    // Every call: 100 busy jiffies, all this process's; no steal.
    let mut bench = FakeBench::new(&f.proc, (100, 0, 0), 100);
    let (seen, notify) = notices();
    let p = peak.peak_with("f32", &mut bench, &notify).unwrap();
    assert_eq!(bench.calls, 3, "one attempt: read, copy, matmul");
    assert_eq!(
        (p.flops_per_s, p.bytes_per_s),
        (1e11, 20e9),
        "read bandwidth"
    );
    assert_eq!(p.threads, Some(2));
    assert!(p.measured_at_unix_s.is_some_and(|t| t > 1.7e9));
    assert!(!p.cached, "measured for this run");
    assert_eq!(
        p.conditions.as_deref(),
        Some("steal 0.0 %, other load 0.0 %, load average 0.25")
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].to_string(),
        "measuring this machine's peak (2 threads) ..."
    );
    assert_eq!(
        seen[1],
        PeakNotice::Measured {
            peak: p.clone(),
            stored: true
        }
    );

    let entry = peak.cached("f32").unwrap();
    assert_eq!(entry.copy_bytes_per_s, 15e9);
    assert_eq!(entry.conditions.steal_pct, Some(0.0));
    assert_eq!(entry.method, meters::peak::PEAK_METHOD);
    // The next run reads it: no measurement, no notice, marked cached.
    let (seen, notify) = notices();
    let again = peak.peak_with("f32", &mut bench, &notify).unwrap();
    assert_eq!(bench.calls, 3);
    assert!(seen.lock().unwrap().is_empty());
    assert!(again.cached);
    assert_eq!(again.bytes_per_s, 20e9);
    let path = f.cache.join("cpu_peak.json");
    assert_eq!(
        again.source,
        format!(
            "microbenchmark, read bandwidth (cached in {})",
            path.display()
        )
    );
    // Another thread count or dtype is another entry; both stay beside this one.
    assert_eq!(
        CpuPeak::new(Some(&f.cache), &f.proc, "Acme CPU", 4).cached("f32"),
        None
    );
    peak.peak_with("bf16", &mut bench, &|_| {}).unwrap();
    assert!(peak.cached("f32").is_some() && peak.cached("bf16").is_some());
    // A cache from an older method (its flops_per_s was a map) is an empty one.
    fs::write(
        &path,
        r#"{"entries":[{"cpu_model":"Acme CPU","threads":2,"method":2,"bytes_per_s":1.0,"flops_per_s":{"f32":1.0}}]}"#,
    )
    .unwrap();
    assert_eq!(peak.cached("f32"), None);
    fs::write(&path, "{not json").unwrap();
    assert_eq!(peak.cached("f32"), None);
}

#[test]
fn a_noisy_peak_serves_this_run_only_and_says_so() {
    let f = fixture();
    let peak = CpuPeak::new(Some(&f.cache), &f.proc, "Acme CPU", 2);
    // Every call: 100 jiffies, 60 busy of which this process 40, 40 stolen.
    let mut bench = FakeBench::new(&f.proc, (60, 0, 40), 40);
    let (seen, notify) = notices();
    let p = peak.peak_with("f32", &mut bench, &notify).unwrap();
    assert_eq!(bench.calls, 6, "tried twice");
    assert!(!p.cached);
    let conditions = p.conditions.clone().unwrap();
    assert!(
        conditions.starts_with("steal 40.0 %, other load 20.0 %; too noisy to cache"),
        "{conditions}"
    );
    assert!(
        p.source
            .ends_with("(measured for this run, too noisy to cache)"),
        "{}",
        p.source
    );
    assert_eq!(peak.cached("f32"), None, "never cached");
    assert!(!f.cache.join("cpu_peak.json").exists());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.last(),
        Some(&PeakNotice::Measured {
            peak: p.clone(),
            stored: false
        })
    );
    // Without /proc the load is unknown: used, not cached.
    let blind = CpuPeak::new(Some(&f.cache), Path::new("/nonexistent"), "Acme CPU", 2);
    let p = blind
        .peak_with("f32", &mut FakeBench::new(&f.proc, (1, 0, 0), 1), &|_| {})
        .unwrap();
    assert!(
        p.conditions
            .unwrap()
            .starts_with("steal unknown, other load unknown; too noisy")
    );
    assert_eq!(blind.cached("f32"), None);
    assert!(matches!(
        peak.peak_with("int3", &mut bench, &|_| {}),
        Err(PeakError::UnknownDtype(_))
    ));
}

#[test]
fn machine_meters_key_the_peak_by_the_threads_and_tell_the_listener() {
    let f = fixture();
    let model = "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz";
    // A quiet entry for 2 threads is already cached, so no benchmark runs here.
    let entry = CpuPeakEntry {
        cpu_model: model.to_string(),
        threads: 2,
        method: meters::peak::PEAK_METHOD,
        dtype: "f32".to_string(),
        read_bytes_per_s: 21e9,
        copy_bytes_per_s: 30e9,
        flops_per_s: 2e11,
        measured_at_unix_s: 1.8e9,
        conditions: LoadConditions {
            steal_pct: Some(0.5),
            other_load_pct: Some(1.0),
            loadavg_1m: None,
        },
    };
    CpuPeak::new(Some(&f.cache), &f.proc, model, 2)
        .store_cache(&CpuPeakCache {
            entries: vec![entry],
        })
        .unwrap();
    let (seen, notify) = notices();
    let meters =
        MachineMeters::with_parts(f.parts(Err(GpuError::Failed("no driver".into())), None))
            .with_peak_listener(notify);
    let p = meters.peak("cpu", "f32").unwrap();
    assert_eq!(p.bytes_per_s, 21e9);
    assert_eq!(p.measured_at_unix_s, Some(1.8e9));
    assert_eq!(p.threads, Some(2));
    assert_eq!(
        p.conditions.as_deref(),
        Some("steal 0.5 %, other load 1.0 %")
    );
    assert!(p.cached);
    assert!(seen.lock().unwrap().is_empty(), "nothing was measured");
    assert_eq!(meters.cpu_copy_bytes_per_s("f32"), Some(30e9));
    assert_eq!(meters.peak("cpu", "int3"), None);
    let inventory = meters.inventory();
    let peak = inventory.iter().find(|m| m.name == "peak").unwrap();
    assert!(
        peak.detail
            .contains("21.0 GB/s read, 200.0 GFLOP/s f32, 2 threads"),
        "{}",
        peak.detail
    );
}

#[test]
fn the_read_bandwidth_benchmark_reads() {
    // A small buffer, once: only that the real benchmark returns a finite positive figure.
    let bw = measure_read_bandwidth(8 << 20, 2, 1).unwrap();
    assert!(bw.is_finite() && bw > 0.0, "{bw}");
}

#[test]
fn this_machines_inventory_explains_every_meter() {
    let meters = MachineMeters::detect();
    let inventory = meters.inventory();
    let names: Vec<&str> = inventory.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["nvml", "amdgpu", "rapl", "estimate", "procfs", "peak"]
    );
    for m in &inventory {
        eprintln!(
            "{:9} {:5} {}",
            m.name,
            if m.available { "yes" } else { "no" },
            m.detail
        );
        assert!(!m.detail.is_empty(), "{m:?}");
    }
    if !Path::new("/sys/class/powercap").exists() {
        assert!(
            inventory[2].detail.contains("does not exist"),
            "{:?}",
            inventory[2]
        );
    }
    let counters = meters.energy_counters("cpu");
    for c in &counters {
        eprintln!("{:?} {}: {}", c.domain(), c.source(), c.describe());
    }
    assert!(counters.iter().any(|c| c.domain() == Domain::Cpu));
}

/// The NVML path end to end (GPU listing, the CUDA device mapping, the energy counter, the
/// probe and the datasheet lookup): on the real driver where one sees a GPU, else on the fake
/// NVML, so the test never passes without exercising it. `LLMEFF_REQUIRE_NVML=1` turns a
/// missing driver or GPU into a failure, for machines known to have one (a GPU CI runner).
#[test]
fn nvml_path_end_to_end() {
    let required = std::env::var("LLMEFF_REQUIRE_NVML").is_ok_and(|v| v == "1");
    let real = meters::nvml::NvmlApi::init()
        .map_err(|e| e.to_string())
        .and_then(|api| match api.devices() {
            Ok(devices) if devices.is_empty() => Err("NVML sees no GPU".to_string()),
            Ok(_) => Ok(Arc::new(api)),
            Err(e) => Err(format!("listing GPUs failed: {e}")),
        });
    match real {
        Ok(api) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            let gpus = exercise_nvml(api, visible.as_deref(), meters::monotonic(), || {
                std::thread::sleep(Duration::from_millis(1500));
            });
            eprintln!(
                "real NVML: cuda:0 = {}, peak bf16: {:?}",
                gpus[0],
                meters::peak::gpu_peak(&gpus[0].name, "bf16")
            );
        }
        Err(why) => {
            assert!(
                !required,
                "LLMEFF_REQUIRE_NVML=1, but there is no real NVML: {why}"
            );
            eprintln!("no real NVML ({why}): exercising the fake");
            let fake = two_gpus();
            fake.set_energy_mj(1, Some(2_000));
            fake.set_load(1, 60, 2 << 30);
            let clock = ManualClock::new();
            let gpus = exercise_nvml(fake.clone(), Some("1"), clock.source(), || {
                clock.advance(Duration::from_millis(1500));
                fake.set_energy_mj(1, Some(2_000 + 45_000));
            });
            assert_eq!(gpus[0].uuid, "GPU-bbbb-2222");
            assert!(meters::peak::gpu_peak(&gpus[0].name, "f16").is_some());
        }
    }
}

/// Runs `cuda:0` through `api`: maps it, opens its energy counter, lets `idle` pass, and checks
/// that energy was drawn and the probe reads memory and utilisation. Returns the run's GPUs.
fn exercise_nvml(
    api: Arc<dyn GpuApi>,
    visible: Option<&str>,
    clock: meters::TimeSource,
    idle: impl FnOnce(),
) -> Vec<GpuInfo> {
    let gpus = run_gpus(api.as_ref(), "cuda:0", visible)
        .expect("cuda:0 maps to an NVML GPU")
        .expect("cuda:0 is a CUDA device");
    let mut counter = NvmlEnergyCounter::new(api.clone(), gpus.clone(), clock).unwrap();
    eprintln!("{}", counter.describe());
    idle();
    let joules = counter.read_j().unwrap();
    eprintln!("{joules} J in 1.5 s idle");
    assert!(joules > 0.0, "an idle GPU still draws power");
    let mut sample = Sample::default();
    NvmlProbe::new(api, gpus.clone()).sample(&mut sample);
    assert!(sample.gpu_mem_bytes.is_some() && sample.gpu_util_pct.is_some());
    gpus
}

#[test]
fn a_proc_tree_without_what_the_probe_reads_is_a_structured_error() {
    let tmp = tempfile::tempdir().unwrap();
    let status = tmp.path().join("self/status");
    assert!(matches!(
        ProcessProbe::check(tmp.path()),
        Err(ProcfsError::Unreadable { path, .. }) if path == status
    ));
    write(&status, "Name:\tllmeff\nVmHWM:\t 100 kB\n");
    assert_eq!(
        ProcessProbe::check(tmp.path()),
        Err(ProcfsError::MissingField {
            path: status.clone(),
            field: "VmRSS"
        })
    );
    write(&status, "Name:\tllmeff\nVmRSS:\t 80 kB\n");
    assert!(ProcessProbe::check(tmp.path()).is_ok());
}
