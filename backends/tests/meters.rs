//! Machine meters on fake sysfs/proc trees, a fake GPU and a manual clock, so every joule is
//! checked exactly; plus the real `/proc/self` high-water reset and this machine's inventory.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backends::meters::estimate::{CpuEstimateCounter, CpuInfo, CpuPowerModel, CpuTdpTable};
use backends::meters::nvml::{
    FakeGpus, GpuApi, GpuInfo, NvmlEnergyCounter, NvmlProbe, resolve_cuda_device, run_gpus,
};
use backends::meters::peak::{CpuPeak, CpuPeakCache, CpuPeakEntry};
use backends::meters::procfs::ProcessProbe;
use backends::meters::rapl::Rapl;
use backends::meters::{MachineMeters, ManualClock, MeterParts};
use engine::meter::{
    Domain, EnergyCounter, MeterProvider, Probe, Sample, Source, integrate_power_j,
};

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
    cache: PathBuf,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let powercap = tmp.path().join("powercap");
    let proc = tmp.path().join("proc");
    let cache = tmp.path().join("cache");
    fs::create_dir_all(&powercap).unwrap();
    fake_proc(&proc, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", 2);
    Fixture {
        _tmp: tmp,
        powercap,
        proc,
        cache,
        clock: ManualClock::new(),
    }
}

impl Fixture {
    fn parts(&self, gpu: Result<Arc<dyn GpuApi>, String>, visible: Option<&str>) -> MeterParts {
        MeterParts {
            powercap_root: self.powercap.clone(),
            proc_root: self.proc.clone(),
            gpu,
            cuda_visible_devices: visible.map(str::to_string),
            cache_dir: Some(self.cache.clone()),
            tdp_table: CpuTdpTable::bundled(),
            cpu_threads: 2,
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

    let meters = MachineMeters::with_parts(f.parts(Err("no driver".into()), None));
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
    let meters = MachineMeters::with_parts(f.parts(Err("no driver".into()), None));
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
    assert!(
        cpu.describe()
            .contains("TDP 210 W × 2 sockets = 420 W (Intel(R) Xeon(R) Platinum 8259CL"),
        "{}",
        cpu.describe()
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
    let mut counter = CpuEstimateCounter::new(model.clone(), &f.proc, f.clock.source()).unwrap();
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
        counter.describe().contains("load³"),
        "{}",
        counter.describe()
    );
}

#[test]
fn unknown_cpus_get_codecarbons_default_and_ram_its_per_gib_rule() {
    let f = fixture();
    fake_proc(&f.proc, "Mystery CPU 9000", 1);
    fs::remove_dir(&f.powercap).unwrap();
    let meters = MachineMeters::with_parts(f.parts(Err("no driver".into()), None));
    let mut counters = meters.energy_counters("cpu");
    let cpu = by_domain(&mut counters, Domain::Cpu);
    assert!(
        cpu.describe().contains("TDP 85 W (CodeCarbon's default"),
        "{}",
        cpu.describe()
    );
    f.clock.advance(Duration::from_secs(1));
    // No jiffy elapsed: the load stays at its last value (0), i.e. the 10 % floor.
    assert_eq!(cpu.read_j().unwrap(), 8.5);

    let ram = by_domain(&mut counters, Domain::Ram);
    assert_eq!(ram.source(), Source::Estimate);
    f.clock.advance(Duration::from_secs(2));
    // 16 GiB × 0.375 W/GiB = 6 W, for the 3 s since the counter opened.
    assert_eq!(ram.read_j().unwrap(), 18.0);
    assert!(ram.describe().contains("16.0 GiB"), "{}", ram.describe());
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
    assert!(index(0, Some("GPU-")).unwrap_err().contains("prefix of 2"));
    assert!(index(1, Some("0")).unwrap_err().contains("lists 1 device"));
    assert!(index(0, Some("")).is_err(), "an empty list hides every GPU");
    assert!(index(0, Some("MIG-xyz")).unwrap_err().contains("MIG"));
    assert!(index(2, None).is_err());
    assert!(
        index(0, Some("7"))
            .unwrap_err()
            .contains("matches no NVML GPU")
    );
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
    let mut probe = ProcessProbe::new(Path::new("/proc"), backends::meters::monotonic());
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

#[test]
fn the_cpu_peak_cache_round_trips() {
    let f = fixture();
    let peak = CpuPeak::new(Some(&f.cache), "Acme CPU", 8);
    assert_eq!(peak.cached(), None);
    let entry = CpuPeakEntry {
        cpu_model: "Acme CPU".to_string(),
        threads: 8,
        method: backends::meters::peak::PEAK_METHOD,
        bytes_per_s: 20e9,
        flops_per_s: [("f32".to_string(), 1e11)].into_iter().collect(),
    };
    peak.store_cache(&CpuPeakCache {
        entries: vec![entry.clone()],
    })
    .unwrap();
    assert_eq!(peak.cached(), Some(entry.clone()));
    let p = peak.peak("f32").unwrap();
    assert_eq!((p.flops_per_s, p.bytes_per_s), (1e11, 20e9));
    let path = f.cache.join("cpu_peak.json");
    assert_eq!(
        p.source,
        format!("microbenchmark (cached {})", path.display())
    );
    // Another thread count is another entry.
    assert_eq!(CpuPeak::new(Some(&f.cache), "Acme CPU", 4).cached(), None);
    // Figures from an older measuring method are not used.
    let old = CpuPeakEntry {
        method: 1,
        ..entry.clone()
    };
    peak.store_cache(&CpuPeakCache { entries: vec![old] })
        .unwrap();
    assert_eq!(peak.cached(), None);
    // A corrupt cache is an empty one.
    fs::write(&path, "{not json").unwrap();
    assert_eq!(peak.cached(), None);
    // Files from before the method field read as method 0, an old one.
    fs::write(
        &path,
        r#"{"entries":[{"cpu_model":"Acme CPU","threads":8,"bytes_per_s":1.0,"flops_per_s":{}}]}"#,
    )
    .unwrap();
    assert_eq!(peak.cached(), None);
}

#[test]
fn the_cpu_microbenchmark_measures_and_caches() {
    let f = fixture();
    let meters = MachineMeters::with_parts(f.parts(Err("no driver".into()), None));
    let p = meters.peak("cpu", "f32").unwrap();
    assert!(p.flops_per_s > 0.0 && p.bytes_per_s > 0.0, "{p:?}");
    assert!(
        p.source.starts_with("microbenchmark (cached "),
        "{}",
        p.source
    );
    eprintln!(
        "cpu peak: {:.1} GFLOP/s f32, {:.1} GB/s copy",
        p.flops_per_s / 1e9,
        p.bytes_per_s / 1e9
    );
    let cached = CpuPeak::new(
        Some(&f.cache),
        "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
        2,
    )
    .cached()
    .unwrap();
    // serde_json's default float parser may land one ulp off the written value.
    let read_back = cached.flops_per_s["f32"];
    assert!(
        (read_back - p.flops_per_s).abs() <= p.flops_per_s * 1e-12,
        "{read_back} vs {}",
        p.flops_per_s
    );
    assert_eq!(meters.peak("cpu", "int3"), None);
}

#[test]
fn this_machines_inventory_explains_every_meter() {
    let meters = MachineMeters::detect();
    let inventory = meters.inventory();
    let names: Vec<&str> = inventory.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["nvml", "rapl", "estimate", "procfs", "peak"]);
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
            inventory[1].detail.contains("does not exist"),
            "{:?}",
            inventory[1]
        );
    }
    let counters = meters.energy_counters("cpu");
    for c in &counters {
        eprintln!("{:?} {}: {}", c.domain(), c.source(), c.describe());
    }
    assert!(counters.iter().any(|c| c.domain() == Domain::Cpu));
}

/// Exercises the real NVML path where a driver exists (skipped elsewhere): names, the energy
/// counter or power polling, the probe and the table lookup of the actual GPU.
#[test]
fn real_nvml_when_a_driver_is_present() {
    let api = match backends::meters::nvml::NvmlApi::init() {
        Ok(api) => Arc::new(api),
        Err(e) => {
            eprintln!("skipped: {e}");
            return;
        }
    };
    let devices = api.devices().unwrap();
    if devices.is_empty() {
        eprintln!("skipped: NVML sees no GPU");
        return;
    }
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let gpus = run_gpus(api.as_ref(), "cuda:0", visible.as_deref())
        .unwrap()
        .unwrap();
    eprintln!("cuda:0 = {}", gpus[0]);
    let mut counter =
        NvmlEnergyCounter::new(api.clone(), gpus.clone(), backends::meters::monotonic()).unwrap();
    eprintln!("{}", counter.describe());
    std::thread::sleep(Duration::from_millis(1500));
    let joules = counter.read_j().unwrap();
    eprintln!("{joules} J in 1.5 s idle");
    assert!(joules > 0.0, "an idle GPU still draws power");
    let mut sample = Sample::default();
    NvmlProbe::new(api.clone(), gpus.clone()).sample(&mut sample);
    assert!(sample.gpu_mem_bytes.is_some() && sample.gpu_util_pct.is_some());
    eprintln!(
        "peak bf16: {:?}",
        backends::meters::peak::gpu_peak(&gpus[0].name, "bf16")
    );
}
