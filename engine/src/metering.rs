//! Metering one run: energy counters read at phase boundaries, probes sampled on a background
//! thread, and the arithmetic that turns readings into the run's energy figures.
//!
//! The timed window opens after warm-up and after the optional idle baseline, so neither is
//! counted; the sampler thread costs one wake-up per interval, which the overhead benchmark
//! measures.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stage::MeasureStage;
use api::meter::{Domain, EnergyCounter, MeterProvider, Probe, Sample, Source};

/// Joules over `intervals` (seconds after the window opened) from the samples' total power:
/// each sample's power is its domains' mean over the interval since the previous sample (the
/// first's since the window opened), charged for the part of that interval inside
/// `intervals`. `None` when no sample has a power figure.
pub fn energy_over(samples: &[Sample], intervals: &[(f64, f64)]) -> Option<f64> {
    let mut any = false;
    let mut joules = 0.0;
    let mut from = 0.0;
    for s in samples {
        let powers: Vec<f64> = Domain::ALL.iter().filter_map(|d| s.power_w(*d)).collect();
        if !powers.is_empty() {
            any = true;
            let watts: f64 = powers.iter().sum();
            let inside: f64 = intervals
                .iter()
                .map(|&(a, b)| (b.min(s.t_s) - a.max(from)).max(0.0))
                .sum();
            joules += watts * inside;
        }
        from = s.t_s;
    }
    any.then_some(joules)
}

/// Cumulative joules per domain at one instant (`None`: no counter, or it failed).
pub type EnergyReading = [Option<f64>; 3];

fn index(domain: Domain) -> usize {
    match domain {
        Domain::Cpu => 0,
        Domain::Gpu => 1,
        Domain::Ram => 2,
    }
}

/// Where a domain's energy figure came from, as written in its `*_source` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergySource {
    /// Read or estimated by this source.
    From(Source),
    /// A machine-wide domain (CPU package, DRAM) read by this source while other runs ran at
    /// the same time (`placement: "per-device"`): the figure is the run's time-share of the
    /// window's energy.
    Shared(Source),
    /// No meter covers the domain on this machine (the figure is null).
    Unavailable,
    /// The study did not ask for energy (the figure is null).
    Off,
}

impl EnergySource {
    /// Column value: `nvml`, `rapl`, `estimate`, `shared`, `unavailable` or `off`.
    pub fn name(self) -> &'static str {
        match self {
            EnergySource::From(s) => s.name(),
            EnergySource::Shared(_) => "shared",
            EnergySource::Unavailable => "unavailable",
            EnergySource::Off => "off",
        }
    }

    /// The meter behind a figure (a shared one's too); `None` where there is no figure.
    pub fn source(self) -> Option<Source> {
        match self {
            EnergySource::From(s) | EnergySource::Shared(s) => Some(s),
            EnergySource::Unavailable | EnergySource::Off => None,
        }
    }
}

/// Energy of one domain over the timed window.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEnergy {
    /// The domain.
    pub domain: Domain,
    /// Joules over the timed window; `None` where not measured.
    pub joules: Option<f64>,
    /// Where the joules come from.
    pub source: EnergySource,
    /// What was read (`rapl package-0`), for provenance.
    pub meter: Option<String>,
}

/// How prefill and decode energy were separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnergySplit {
    /// Counters were read at each prefill/decode boundary.
    Measured,
    /// At least one domain is an estimate, so its energy was apportioned by each phase's
    /// share of the window's length (idle time keeps its share, as `other_j`).
    Apportioned,
}

impl EnergySplit {
    /// Column value.
    pub fn name(self) -> &'static str {
        match self {
            EnergySplit::Measured => "measured",
            EnergySplit::Apportioned => "apportioned",
        }
    }
}

/// Everything the meters produced for one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeterReport {
    /// Per-domain energy, in [`Domain::ALL`] order (empty when energy was not requested).
    pub energy: Vec<DomainEnergy>,
    /// Energy of the prompt passes, joules (all domains measured).
    pub prefill_j: Option<f64>,
    /// Energy of the decode steps, joules.
    pub decode_j: Option<f64>,
    /// Energy of the window outside both phases (waits for arrivals, batch hand-overs),
    /// joules: `prefill_j + decode_j + other_j` is the window's total.
    pub other_j: Option<f64>,
    /// How `prefill_j`/`decode_j` were obtained.
    pub split: Option<EnergySplit>,
    /// Mean power over the idle baseline window, watts (all measured domains).
    pub idle_power_w: Option<f64>,
    /// The background samples.
    pub samples: Vec<Sample>,
    /// OS high-water mark of resident memory during the run, bytes.
    pub rss_high_water_bytes: Option<u64>,
    /// Problems met while metering (a counter that failed mid-run, ...).
    pub notes: Vec<String>,
    /// Logical CPUs this process may run on, to compare its CPU time (percent of one core)
    /// with the machine's (percent of all).
    pub cpu_count: Option<usize>,
}

impl MeterReport {
    /// Sum over domains that have a figure.
    pub fn total_j(&self) -> Option<f64> {
        let known: Vec<f64> = self.energy.iter().filter_map(|d| d.joules).collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }

    /// Sources of the total, `+`-joined in a fixed order (`rapl+estimate`, `nvml+shared`:
    /// `shared` last, for time-shares of machine-wide domains), or `unavailable`/`off`.
    pub fn total_source(&self) -> String {
        if self.energy.is_empty() {
            return EnergySource::Off.name().to_string();
        }
        let known = || self.energy.iter().filter(|d| d.joules.is_some());
        let mut sources: Vec<Source> = known()
            .filter_map(|d| match d.source {
                EnergySource::From(s) => Some(s),
                _ => None,
            })
            .collect();
        sources.sort();
        sources.dedup();
        let mut names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
        if known().any(|d| matches!(d.source, EnergySource::Shared(_))) {
            names.push(EnergySource::Shared(Source::Rapl).name());
        }
        if names.is_empty() {
            EnergySource::Unavailable.name().to_string()
        } else {
            names.join("+")
        }
    }

    /// Energy of one domain.
    pub fn domain(&self, domain: Domain) -> Option<&DomainEnergy> {
        self.energy.iter().find(|d| d.domain == domain)
    }

    /// Largest sampled value of a figure.
    pub fn peak<T: PartialOrd + Copy>(&self, f: impl Fn(&Sample) -> Option<T>) -> Option<T> {
        self.samples
            .iter()
            .filter_map(f)
            .fold(None, |acc, v| match acc {
                Some(a) if a >= v => Some(a),
                _ => Some(v),
            })
    }

    /// Mean of a sampled figure over the samples that have it.
    pub fn mean(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let values: Vec<f64> = self.samples.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Mean of a utilisation share (CPU, steal, GPU), from at least [`MIN_UTILISATION_SAMPLES`]
    /// samples; fewer say too little about the window to be its utilisation.
    pub fn utilisation_mean(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        self.utilisation_known(&f).then(|| self.mean(f)).flatten()
    }

    /// Largest sampled utilisation share, from at least [`MIN_UTILISATION_SAMPLES`] samples.
    pub fn utilisation_peak(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        self.utilisation_known(&f).then(|| self.peak(f)).flatten()
    }

    fn utilisation_known(&self, f: &impl Fn(&Sample) -> Option<f64>) -> bool {
        self.samples.iter().filter(|s| f(s).is_some()).count() >= MIN_UTILISATION_SAMPLES
    }
}

struct Shared {
    counters: Vec<(Box<dyn EnergyCounter>, Option<f64>)>,
    probes: Vec<Box<dyn Probe>>,
    samples: Vec<Sample>,
    notes: Vec<String>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic on the sampler thread poisons the lock; the data (readings so far) is still
    // sound, so keep using it rather than losing the run.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn read(&mut self) -> EnergyReading {
        let mut reading: EnergyReading = [None; 3];
        for (counter, last) in &mut self.counters {
            match counter.read_j() {
                Ok(j) => {
                    *last = Some(j);
                    reading[index(counter.domain())] = Some(j);
                }
                Err(e) => {
                    let note = e.to_string();
                    if !self.notes.contains(&note) {
                        self.notes.push(note);
                    }
                }
            }
        }
        reading
    }

    /// Takes one sample at `t_s` seconds after the window opened; `previous` is the last
    /// sample's time and energy reading (`None` for the first, whose interval starts at the
    /// window's opening, where the probes were started).
    fn sample(&mut self, t_s: f64, previous: &mut Option<(f64, EnergyReading)>) {
        let mut sample = Sample {
            t_s,
            ..Sample::default()
        };
        for probe in &mut self.probes {
            probe.sample(&mut sample);
        }
        let interval = t_s - previous.as_ref().map_or(0.0, |(t0, _)| *t0);
        if interval < MIN_UTILISATION_INTERVAL_S {
            // Too few clock ticks to be a share of time (a 3 ms interval with one tick reads
            // 333 %): the figure is unknown, not 0 % or several cores.
            sample.process_cpu_pct = None;
            sample.system_cpu_pct = None;
            sample.cpu_steal_pct = None;
            sample.gpu_util_pct = None;
        }
        let reading = self.read();
        if let Some((t0, before)) = previous.as_ref() {
            let dt = t_s - t0;
            if dt > 0.0 {
                for domain in Domain::ALL {
                    let i = index(domain);
                    if let (Some(a), Some(b)) = (before[i], reading[i]) {
                        sample.set_power_w(domain, (b - a) / dt);
                    }
                }
            }
        }
        *previous = Some((t_s, reading));
        self.samples.push(sample);
    }
}

/// The meters of one run, from opening to the report.
pub struct RunMeters {
    shared: Arc<Mutex<Shared>>,
    energy_on: bool,
    interval: Duration,
    sampler: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    window_start: Option<EnergyReading>,
    idle_power_w: Option<f64>,
    baseline_probes: Vec<Box<dyn Probe>>,
    phase: PhaseEnergy,
    /// Mean number of runs in flight over the window, when runs ran at the same time: the
    /// machine-wide domains are divided by it.
    in_flight: Option<f64>,
}

/// How a run's timed window divided into phases, seconds; the rest of `wall_s` is neither
/// (waits for arrivals, hand-overs between batches).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PhaseTimes {
    /// Time in prompt passes.
    pub prefill_s: f64,
    /// Time in decode steps.
    pub decode_s: f64,
    /// The whole timed window.
    pub wall_s: f64,
    /// Phases of several replicas overlapped in time, so machine-wide energy cannot be split
    /// between them: prefill, decode and other energy are left null.
    pub phases_overlap: bool,
}

/// Sampled utilisation over an interval shorter than this is dropped: `/proc` CPU times tick
/// at 100 Hz, so over 10 ms one tick more or less reads as 0 % or 100 % of a core.
pub const MIN_UTILISATION_INTERVAL_S: f64 = 0.05;

/// Samples of a utilisation share a run needs before its mean or peak is reported.
pub const MIN_UTILISATION_SAMPLES: usize = 2;

/// System CPU busy share, percent, above which an idle baseline is said to be noisy.
pub const BUSY_BASELINE_PCT: f64 = 10.0;

/// Energy accumulated per phase from readings taken at the phase boundaries.
#[derive(Debug, Default, Clone, Copy)]
struct PhaseEnergy {
    prefill: [f64; 3],
    decode: [f64; 3],
}

fn delta(a: &EnergyReading, b: &EnergyReading) -> [f64; 3] {
    let mut d = [0.0; 3];
    for i in 0..3 {
        if let (Some(x), Some(y)) = (a[i], b[i]) {
            d[i] = y - x;
        }
    }
    d
}

impl RunMeters {
    /// Opens the meters a measure stage asks for, from a machine's provider.
    pub fn open(provider: &dyn MeterProvider, device: &str, measure: &MeasureStage) -> RunMeters {
        let wants = |name: &str| measure.meters.iter().any(|m| m == name);
        let energy_on = wants("energy");
        let counters = if energy_on {
            provider.energy_counters_for(device, measure.estimate)
        } else {
            Vec::new()
        };
        let probes = if wants("memory") || wants("utilisation") {
            provider.probes(device)
        } else {
            Vec::new()
        };
        // The idle baseline watches the machine's load on probes of its own, so a busy
        // baseline is noticed whether or not the study samples utilisation.
        let baseline_probes = if energy_on && measure.idle_baseline_s > 0.0 {
            provider.probes(device)
        } else {
            Vec::new()
        };
        RunMeters {
            shared: Arc::new(Mutex::new(Shared {
                counters: counters.into_iter().map(|c| (c, None)).collect(),
                probes,
                samples: Vec::new(),
                notes: Vec::new(),
            })),
            energy_on,
            interval: Duration::from_millis(measure.interval_ms.max(1)),
            sampler: None,
            window_start: None,
            idle_power_w: None,
            baseline_probes,
            phase: PhaseEnergy::default(),
            in_flight: None,
        }
    }

    /// The run ran beside others (`placement: "per-device"`), `mean_in_flight` runs on
    /// average over its window (at least 1): its CPU package and DRAM energy become its
    /// time-share, the window's energy divided by that mean, labelled `shared`, and its energy
    /// is not split into phases (machine-wide readings at its phase boundaries hold the
    /// other runs' phases too).
    pub fn share_machine(&mut self, mean_in_flight: f64) {
        self.in_flight = Some(mean_in_flight.max(1.0));
    }

    /// True when nothing would be read (no counters, no probes): the run skips the thread.
    fn is_empty(&self) -> bool {
        let shared = lock(&self.shared);
        shared.counters.is_empty() && shared.probes.is_empty()
    }

    /// Reads every energy counter now.
    pub fn read_energy(&self) -> EnergyReading {
        if !self.energy_on {
            return [None; 3];
        }
        lock(&self.shared).read()
    }

    /// Measures mean idle power over `seconds` (before the timed window), using `sleep`.
    pub fn idle_baseline(&mut self, seconds: f64, now: &dyn Fn() -> f64, sleep: &dyn Fn(f64)) {
        if seconds <= 0.0 || !self.energy_on {
            return;
        }
        let t0 = now();
        for probe in &mut self.baseline_probes {
            probe.start();
        }
        let before = self.read_energy();
        sleep(seconds);
        let after = self.read_energy();
        let elapsed = now() - t0;
        let mut load = Sample::default();
        for probe in &mut self.baseline_probes {
            probe.sample(&mut load);
        }
        if let Some(busy) = load.system_cpu_pct
            && busy > BUSY_BASELINE_PCT
        {
            lock(&self.shared).notes.push(format!(
                "idle baseline taken while the machine was {busy:.0} % busy: idle_power_w includes that load, so energy_net_j is understated"
            ));
        }
        let measured: Vec<f64> = (0..3)
            .filter_map(|i| Some(after[i]? - before[i]?))
            .collect();
        if elapsed > 0.0 && !measured.is_empty() {
            self.idle_power_w = Some(measured.iter().sum::<f64>() / elapsed);
        }
    }

    /// Opens the timed window: probes start, the sampler thread runs, counters are read.
    pub fn start(&mut self) {
        {
            let mut shared = lock(&self.shared);
            for probe in &mut shared.probes {
                probe.start();
            }
        }
        if !self.is_empty() {
            let (stop, stopped) = mpsc::channel::<()>();
            let shared = Arc::clone(&self.shared);
            let interval = self.interval;
            // Sample times count from the window's opening, where the probes started, not
            // from whenever the thread got going.
            let origin = Instant::now();
            let handle = std::thread::Builder::new()
                .name("llmeff-meters".into())
                .spawn(move || {
                    let mut previous = None;
                    loop {
                        lock(&shared).sample(origin.elapsed().as_secs_f64(), &mut previous);
                        match stopped.recv_timeout(interval) {
                            Err(RecvTimeoutError::Timeout) => continue,
                            // Stop requested (or the run is gone): one last sample, so the
                            // series covers the whole window.
                            _ => {
                                lock(&shared).sample(origin.elapsed().as_secs_f64(), &mut previous);
                                break;
                            }
                        }
                    }
                });
            match handle {
                Ok(handle) => self.sampler = Some((stop, handle)),
                Err(e) => lock(&self.shared)
                    .notes
                    .push(format!("sampler thread could not start: {e}")),
            }
        }
        self.window_start = Some(self.read_energy());
    }

    /// Adds the energy between two readings to the prefill phase.
    pub fn add_prefill(&mut self, from: &EnergyReading, to: &EnergyReading) {
        let d = delta(from, to);
        for (acc, v) in self.phase.prefill.iter_mut().zip(d) {
            *acc += v;
        }
    }

    /// Adds the energy between two readings to the decode phase.
    pub fn add_decode(&mut self, from: &EnergyReading, to: &EnergyReading) {
        let d = delta(from, to);
        for (acc, v) in self.phase.decode.iter_mut().zip(d) {
            *acc += v;
        }
    }

    /// Closes the window and computes the report. An estimated domain's energy is apportioned
    /// by each phase's share of the whole window (`phases.wall_s`), so idle time keeps its
    /// share; measured domains are split at the readings taken at the phase boundaries. The
    /// rest of each domain's energy is `other_j`.
    pub fn finish(mut self, phases: PhaseTimes) -> MeterReport {
        let PhaseTimes {
            prefill_s,
            decode_s,
            wall_s,
            phases_overlap,
        } = phases;
        let end = self.read_energy();
        if let Some((stop, handle)) = self.sampler.take() {
            let _ = stop.send(());
            if handle.join().is_err() {
                lock(&self.shared)
                    .notes
                    .push("the sampler thread panicked; samples may be incomplete".into());
            }
        }
        let start = self.window_start.unwrap_or([None; 3]);
        let mut shared = lock(&self.shared);
        let rss_high_water_bytes = shared
            .probes
            .iter_mut()
            .find_map(|p| p.rss_high_water_bytes());
        let mut report = MeterReport {
            cpu_count: std::thread::available_parallelism().ok().map(|n| n.get()),
            samples: std::mem::take(&mut shared.samples),
            rss_high_water_bytes,
            idle_power_w: self.idle_power_w,
            ..MeterReport::default()
        };
        if self.energy_on {
            let mut any_estimate = false;
            let mut prefill = 0.0;
            let mut decode = 0.0;
            let mut total = 0.0;
            let mut any = false;
            let mut shared_domains: Vec<&str> = Vec::new();
            for domain in Domain::ALL {
                let i = index(domain);
                let counter = shared.counters.iter().find(|(c, _)| c.domain() == domain);
                let mut joules = match (start[i], end[i]) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                let (mut source, meter) = match counter {
                    Some((c, _)) if joules.is_some() => {
                        (EnergySource::From(c.source()), Some(c.describe()))
                    }
                    Some((c, _)) => (EnergySource::Unavailable, Some(c.describe())),
                    None => (EnergySource::Unavailable, None),
                };
                if let (Some(n), Some(j), EnergySource::From(s), Domain::Cpu | Domain::Ram) =
                    (self.in_flight, joules, source, domain)
                {
                    joules = Some(j / n);
                    source = EnergySource::Shared(s);
                    shared_domains.push(domain.name());
                    any = true;
                    total += j / n;
                } else if let (Some(j), EnergySource::From(s)) = (joules, source) {
                    any = true;
                    total += j;
                    if s.is_measured() {
                        prefill += self.phase.prefill[i];
                        decode += self.phase.decode[i];
                    } else {
                        any_estimate = true;
                        // Regression (issue A.2): apportioning over prefill + decode time only
                        // charged every idle second of a Poisson run to its phases.
                        let window = wall_s.max(prefill_s + decode_s);
                        if window > 0.0 {
                            prefill += j * prefill_s / window;
                            decode += j * decode_s / window;
                        }
                    }
                }
                report.energy.push(DomainEnergy {
                    domain,
                    joules,
                    source,
                    meter,
                });
            }
            if let Some(n) = self.in_flight
                && !shared_domains.is_empty()
            {
                shared.notes.push(format!(
                    "{} energy is machine-wide and other runs ran beside this one (placement per-device): the figures are its time-share, the window's energy divided by the {n:.2} runs in flight on average; loads, warm-ups and quality passes of other lanes during the window are charged to the runs in flight{}",
                    shared_domains.join(" and "),
                    if self.idle_power_w.is_some() {
                        "; energy_net_j is null, as an idle baseline beside other lanes is not idle"
                    } else {
                        ""
                    }
                ));
            }
            if any && phases_overlap {
                shared.notes.push(
                    "replicas ran prefill and decode at the same time: the window's energy is not split by phase".into(),
                );
            } else if any && !shared_domains.is_empty() {
                shared.notes.push(
                    "machine-wide energy is a time-share of runs in flight: the window's energy is not split by phase".into(),
                );
            } else if any {
                report.prefill_j = Some(prefill);
                report.decode_j = Some(decode);
                // Counter reads jitter by microjoules; a window with no gaps has no other
                // energy, not a rounding residue of either sign.
                let other = total - prefill - decode;
                report.other_j = Some(if other.abs() <= 1e-9 * total.abs() {
                    0.0
                } else {
                    other
                });
                report.split = Some(if any_estimate {
                    EnergySplit::Apportioned
                } else {
                    EnergySplit::Measured
                });
            }
        }
        report.notes = std::mem::take(&mut shared.notes);
        let probed = !shared.probes.is_empty();
        drop(shared);
        let cpu_samples = report
            .samples
            .iter()
            .filter(|s| s.process_cpu_pct.is_some() || s.system_cpu_pct.is_some())
            .count();
        if probed && cpu_samples < MIN_UTILISATION_SAMPLES {
            report.notes.push(format!(
                "utilisation left null: {cpu_samples} sample(s) of at least {:.0} ms in a {wall_s:.3} s window (lower interval_ms or lengthen the run)",
                MIN_UTILISATION_INTERVAL_S * 1000.0
            ));
        }
        if let Some(steal) = report.utilisation_mean(|s| s.cpu_steal_pct)
            && steal >= STEAL_NOTE_PCT
        {
            report.notes.push(format!(
                "cpu steal {steal:.0} %: a hypervisor ran other guests on this machine's CPUs, so the run's timings are slower than the hardware"
            ));
        }
        report
    }
}

/// CPU steal, percent, from which a run's report (and `llmeff bench`) says its timings are not
/// the machine's. On a 2-vCPU VM, bench rows at 25–38 % steal ran at a third to two-thirds of
/// their speed at 0 % (a stolen vCPU also stalls the other at every parallel join, and the
/// neighbours share memory bandwidth, which steal does not show).
pub const STEAL_NOTE_PCT: f64 = 5.0;

#[cfg(test)]
mod tests {
    use super::*;

    /// Idle energy on scripted samples: each sample's power counts over its own interval,
    /// clipped to the idle intervals.
    #[test]
    fn energy_over_intervals_charges_each_samples_power_over_its_overlap() {
        let sample = |t_s: f64, cpu: f64, ram: Option<f64>| Sample {
            t_s,
            power_cpu_w: Some(cpu),
            power_ram_w: ram,
            ..Sample::default()
        };
        // 0–1 s at 10 W, 1–2 s at 20 W (+5 W RAM), 2–3 s at 30 W.
        let samples = [
            sample(1.0, 10.0, None),
            sample(2.0, 20.0, Some(5.0)),
            sample(3.0, 30.0, None),
        ];
        // Idle 0.5–1.5 s and 2.5–3.0 s: 0.5·10 + 0.5·25 + 0.5·30 = 32.5 J.
        let joules = energy_over(&samples, &[(0.5, 1.5), (2.5, 3.0)]).unwrap();
        assert!((joules - 32.5).abs() < 1e-12, "{joules}");
        assert_eq!(energy_over(&samples, &[]), Some(0.0));
        assert_eq!(energy_over(&[Sample::default()], &[(0.0, 1.0)]), None);
    }
    use api::meter::{DevicePeak, MeterError, MeterStatus, NoMeters};

    /// A counter whose joules are scripted: each read returns the next value.
    struct Scripted {
        domain: Domain,
        source: Source,
        values: Vec<f64>,
        at: usize,
    }

    impl EnergyCounter for Scripted {
        fn domain(&self) -> Domain {
            self.domain
        }
        fn source(&self) -> Source {
            self.source
        }
        fn describe(&self) -> String {
            format!("scripted {}", self.domain.name())
        }
        fn read_j(&mut self) -> Result<f64, MeterError> {
            let v = self.values.get(self.at).copied().ok_or(MeterError {
                meter: "scripted".into(),
                reason: "exhausted".into(),
            });
            self.at += 1;
            v
        }
    }

    struct Provider(Mutex<Vec<Box<dyn EnergyCounter>>>);

    impl MeterProvider for Provider {
        fn energy_counters(&self, _device: &str) -> Vec<Box<dyn EnergyCounter>> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
        fn probes(&self, _device: &str) -> Vec<Box<dyn Probe>> {
            Vec::new()
        }
        fn peak(&self, _: &str, _: &str) -> Option<DevicePeak> {
            None
        }
        fn inventory(&self) -> Vec<MeterStatus> {
            Vec::new()
        }
    }

    fn measure(meters: &[&str]) -> MeasureStage {
        MeasureStage {
            meters: meters.iter().map(|s| s.to_string()).collect(),
            ..MeasureStage::default_for_run()
        }
    }

    fn phases(prefill_s: f64, decode_s: f64, wall_s: f64) -> PhaseTimes {
        PhaseTimes {
            prefill_s,
            decode_s,
            wall_s,
            phases_overlap: false,
        }
    }

    fn reading(cpu: f64, ram: f64) -> EnergyReading {
        [Some(cpu), None, Some(ram)]
    }

    #[test]
    fn phases_are_measured_where_counters_resolve_them() {
        let mut m = RunMeters::open(&NoMeters, "cpu", &measure(&["energy"]));
        m.energy_on = true;
        m.window_start = Some(reading(100.0, 10.0));
        m.add_prefill(&reading(100.0, 10.0), &reading(103.0, 11.0));
        m.add_decode(&reading(103.0, 11.0), &reading(110.0, 12.0));
        // No counters at all: every domain unavailable, nothing invented.
        let report = m.finish(phases(1.0, 2.0, 3.0));
        assert_eq!(report.total_j(), None);
        assert_eq!(report.total_source(), "unavailable");
        assert!(
            report
                .energy
                .iter()
                .all(|d| d.source == EnergySource::Unavailable)
        );
        assert_eq!(report.prefill_j, None);
    }

    #[test]
    fn measured_and_estimated_domains_add_up_with_their_sources() {
        // CPU (rapl): read at start and end → 10 J. RAM (estimate): 2 J.
        let provider = Provider(Mutex::new(vec![
            Box::new(Scripted {
                domain: Domain::Cpu,
                source: Source::Rapl,
                values: vec![100.0, 110.0],
                at: 0,
            }),
            Box::new(Scripted {
                domain: Domain::Ram,
                source: Source::Estimate,
                values: vec![5.0, 7.0],
                at: 0,
            }),
        ]));
        let mut m = RunMeters::open(&provider, "cpu", &measure(&["energy"]));
        // `start` is not called, so no sampler thread consumes the scripted readings.
        m.window_start = Some(m.read_energy());
        m.phase.prefill = [4.0, 0.0, 0.0];
        m.phase.decode = [6.0, 0.0, 0.0];
        let report = m.finish(phases(1.0, 3.0, 4.0));
        assert_eq!(report.total_j(), Some(12.0));
        assert_eq!(report.total_source(), "rapl+estimate");
        let ram = report.domain(Domain::Ram).unwrap();
        assert_eq!(ram.source, EnergySource::From(Source::Estimate));
        // Prefill: 4 J measured CPU + RAM's 2 J × 1/4 of the busy time.
        assert_eq!(report.prefill_j, Some(4.5));
        assert_eq!(report.decode_j, Some(7.5));
        assert_eq!(report.split, Some(EnergySplit::Apportioned));
        assert_eq!(report.other_j, Some(0.0));
        assert_eq!(
            report.domain(Domain::Gpu).unwrap().source,
            EnergySource::Unavailable
        );
    }

    #[test]
    fn idle_time_keeps_its_share_of_the_energy() {
        // Regression (issue A.2): a 10 s window with 1 s of prefill and 1 s of decode (the rest
        // waiting for arrivals). The CPU counter (measured) used 20 J in its phases of 30 J;
        // the estimated RAM drew 50 J over the window, 5 W. Apportioning RAM over the busy
        // 2 s only would have charged 25 J to each phase.
        let provider = Provider(Mutex::new(vec![
            Box::new(Scripted {
                domain: Domain::Cpu,
                source: Source::Rapl,
                values: vec![0.0, 30.0],
                at: 0,
            }),
            Box::new(Scripted {
                domain: Domain::Ram,
                source: Source::Estimate,
                values: vec![0.0, 50.0],
                at: 0,
            }),
        ]));
        let mut m = RunMeters::open(&provider, "cpu", &measure(&["energy"]));
        m.window_start = Some(m.read_energy());
        m.phase.prefill = [12.0, 0.0, 0.0];
        m.phase.decode = [8.0, 0.0, 0.0];
        let report = m.finish(phases(1.0, 1.0, 10.0));
        assert_eq!(report.total_j(), Some(80.0));
        assert_eq!(report.prefill_j, Some(12.0 + 5.0));
        assert_eq!(report.decode_j, Some(8.0 + 5.0));
        assert_eq!(report.other_j, Some(10.0 + 40.0));
    }

    #[test]
    fn a_run_beside_others_holds_its_time_share_of_machine_wide_energy() {
        let counter = |domain, source, j: f64| -> Box<dyn EnergyCounter> {
            Box::new(Scripted {
                domain,
                source,
                values: vec![0.0, j],
                at: 0,
            })
        };
        let provider = Provider(Mutex::new(vec![
            counter(Domain::Cpu, Source::Rapl, 30.0),
            counter(Domain::Gpu, Source::Nvml, 12.0),
            counter(Domain::Ram, Source::Estimate, 6.0),
        ]));
        let mut m = RunMeters::open(&provider, "cuda:0", &measure(&["energy"]));
        m.window_start = Some(m.read_energy());
        m.phase.prefill = [10.0, 4.0, 0.0];
        m.phase.decode = [20.0, 8.0, 0.0];
        // 1.5 runs in flight on average over the window.
        m.share_machine(1.5);
        let report = m.finish(phases(1.0, 2.0, 3.0));
        let cpu = report.domain(Domain::Cpu).unwrap();
        assert_eq!(
            (cpu.joules, cpu.source),
            (Some(20.0), EnergySource::Shared(Source::Rapl))
        );
        assert_eq!(cpu.source.name(), "shared");
        assert_eq!(cpu.source.source(), Some(Source::Rapl));
        // The GPU is the run's own: its counter, whole.
        let gpu = report.domain(Domain::Gpu).unwrap();
        assert_eq!(
            (gpu.joules, gpu.source),
            (Some(12.0), EnergySource::From(Source::Nvml))
        );
        let ram = report.domain(Domain::Ram).unwrap();
        assert_eq!(
            (ram.joules, ram.source),
            (Some(4.0), EnergySource::Shared(Source::Estimate))
        );
        assert_eq!(report.total_j(), Some(36.0));
        assert_eq!(report.total_source(), "nvml+shared");
        // Machine-wide readings at the phase boundaries hold the other runs' phases too.
        assert_eq!(
            (
                report.prefill_j,
                report.decode_j,
                report.other_j,
                report.split
            ),
            (None, None, None, None)
        );
        let notes = report.notes.join("; ");
        assert!(
            notes.contains("cpu and ram energy is machine-wide"),
            "{notes}"
        );
        assert!(notes.contains("1.50 runs in flight"), "{notes}");
        assert!(notes.contains("not split by phase"), "{notes}");
    }

    #[test]
    fn a_shared_run_without_machine_wide_meters_keeps_its_phase_split() {
        // Only the GPU has a counter: nothing is shared, and its phases are its own.
        let provider = Provider(Mutex::new(vec![Box::new(Scripted {
            domain: Domain::Gpu,
            source: Source::Nvml,
            values: vec![0.0, 12.0],
            at: 0,
        })]));
        let mut m = RunMeters::open(&provider, "cuda:0", &measure(&["energy"]));
        m.window_start = Some(m.read_energy());
        m.phase.prefill = [0.0, 4.0, 0.0];
        m.phase.decode = [0.0, 8.0, 0.0];
        m.share_machine(2.0);
        let report = m.finish(phases(1.0, 2.0, 3.0));
        assert_eq!(report.total_source(), "nvml");
        assert_eq!((report.prefill_j, report.decode_j), (Some(4.0), Some(8.0)));
        assert_eq!(
            report.domain(Domain::Cpu).unwrap().source,
            EnergySource::Unavailable
        );
    }

    #[test]
    fn utilisation_over_a_few_clock_ticks_is_unknown() {
        struct Busy;
        impl Probe for Busy {
            fn start(&mut self) {}
            fn sample(&mut self, sample: &mut Sample) {
                sample.rss_bytes = Some(1);
                sample.process_cpu_pct = Some(430.0);
                sample.system_cpu_pct = Some(100.0);
            }
            fn rss_high_water_bytes(&mut self) -> Option<u64> {
                None
            }
        }
        let mut shared = Shared {
            counters: Vec::new(),
            probes: vec![Box::new(Busy)],
            samples: Vec::new(),
            notes: Vec::new(),
        };
        let mut previous = None;
        // 3 ms after the window opened, then a full interval, then 4 ms (the closing sample).
        shared.sample(0.003, &mut previous);
        shared.sample(0.103, &mut previous);
        shared.sample(0.107, &mut previous);
        let cpu: Vec<Option<f64>> = shared.samples.iter().map(|s| s.process_cpu_pct).collect();
        assert_eq!(cpu, vec![None, Some(430.0), None]);
        // Memory is an instant, not a share of an interval: always kept.
        assert!(shared.samples.iter().all(|s| s.rss_bytes == Some(1)));
    }

    #[test]
    fn energy_off_reads_nothing() {
        let provider = Provider(Mutex::new(vec![Box::new(Scripted {
            domain: Domain::Cpu,
            source: Source::Rapl,
            values: vec![],
            at: 0,
        })]));
        let m = RunMeters::open(&provider, "cpu", &measure(&["latency"]));
        assert_eq!(m.read_energy(), [None; 3]);
        let report = m.finish(phases(1.0, 1.0, 2.0));
        assert!(report.energy.is_empty());
        assert_eq!(report.total_source(), "off");
    }

    #[test]
    fn a_failing_counter_is_a_note_and_a_null() {
        let provider = Provider(Mutex::new(vec![Box::new(Scripted {
            domain: Domain::Cpu,
            source: Source::Rapl,
            values: vec![1.0],
            at: 0,
        })]));
        let mut m = RunMeters::open(&provider, "cpu", &measure(&["energy"]));
        m.window_start = Some(m.read_energy());
        let report = m.finish(phases(1.0, 1.0, 2.0));
        let cpu = report.domain(Domain::Cpu).unwrap();
        assert_eq!(cpu.joules, None);
        assert_eq!(cpu.source, EnergySource::Unavailable);
        assert_eq!(report.notes, vec!["scripted: exhausted".to_string()]);
    }

    #[test]
    fn a_run_slowed_by_cpu_steal_says_so() {
        for (steal, noted) in [
            (vec![Some(2.0), Some(4.0)], false),
            (vec![Some(30.0), Some(30.0), None], true),
            // One sample is not a run's steal.
            (vec![Some(30.0), None], false),
        ] {
            let m = RunMeters::open(&NoMeters, "cpu", &measure(&["latency"]));
            lock(&m.shared).samples = steal
                .into_iter()
                .map(|cpu_steal_pct| Sample {
                    cpu_steal_pct,
                    ..Sample::default()
                })
                .collect();
            let report = m.finish(phases(1.0, 1.0, 2.0));
            let notes = report.notes.join("; ");
            assert_eq!(notes.contains("cpu steal"), noted, "{notes:?}");
            if noted {
                assert!(notes.starts_with("cpu steal 30 %"), "{notes}");
            }
        }
    }

    #[test]
    fn samples_carry_power_from_counter_deltas() {
        let mut shared = Shared {
            counters: vec![(
                Box::new(Scripted {
                    domain: Domain::Cpu,
                    source: Source::Rapl,
                    values: vec![0.0, 5.0, 15.0],
                    at: 0,
                }) as Box<dyn EnergyCounter>,
                None,
            )],
            probes: Vec::new(),
            samples: Vec::new(),
            notes: Vec::new(),
        };
        let mut previous = None;
        shared.sample(0.0, &mut previous);
        shared.sample(0.5, &mut previous);
        shared.sample(1.5, &mut previous);
        let power: Vec<Option<f64>> = shared.samples.iter().map(|s| s.power_cpu_w).collect();
        assert_eq!(power, vec![None, Some(10.0), Some(10.0)]);
    }
}
