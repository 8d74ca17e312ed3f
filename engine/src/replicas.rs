//! Data-parallel replicas: how a run's prompts are split between its devices, and what each
//! replica's own device reads (its GPU's energy, memory and utilisation).
//!
//! Machine-wide meters (CPU package, DRAM) are read once per run by `metering.rs`, never per
//! replica; a GPU is read per replica here and, once per physical GPU, for the run's total.

use std::ops::Range;

use api::device::{DeviceName, format_cores, replica_devices};
use api::meter::{Domain, EnergyCounter, MeterProvider, Probe, Sample};

use crate::stage::MeasureStage;

/// Splits `n` requests between `k` replicas as Hugging Face Accelerate's
/// `split_between_processes` does: contiguous shares of `n / k`, the first `n % k` replicas
/// one request more (so a replica may get none when `n < k`).
pub fn split_between(n: usize, k: usize) -> Vec<Range<usize>> {
    let k = k.max(1);
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let share = start..start + len;
            start += len;
            share
        })
        .collect()
}

/// The device string the run-level meters are opened on: GPU replicas joined by `,` (the
/// meters read each physical GPU once), and `cpu` for any CPU device (CPU package and DRAM
/// are machine-wide, whichever cores a replica is pinned to).
pub fn meter_device(device: &str) -> String {
    let devices = replica_devices(device);
    if devices.iter().all(|d| d.starts_with("cpu")) {
        "cpu".to_string()
    } else {
        devices.join(",")
    }
}

/// The cores of a core-set device (`0-3`), for the replica table.
pub fn cores_of(device: &str) -> Option<String> {
    DeviceName::parse(device).ok()?.cores().map(format_cores)
}

/// A replica's own GPU readings over its window: energy from the start of its first batch to
/// the end of its last, and memory and utilisation read at each batch end.
pub struct ReplicaGpu {
    counter: Option<Box<dyn EnergyCounter>>,
    probes: Vec<Box<dyn Probe>>,
    start_j: Option<f64>,
    energy_j: Option<f64>,
    util_pct: Vec<f64>,
    memory_peak_bytes: Option<u64>,
    notes: Vec<String>,
}

/// What [`ReplicaGpu`] read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplicaGpuReport {
    /// Joules over the replica's window.
    pub energy_j: Option<f64>,
    /// `nvml`, `estimate`, `unavailable`, or `none` on a CPU replica.
    pub source: String,
    /// Largest GPU memory in use at a batch end, bytes.
    pub memory_peak_bytes: Option<u64>,
    /// Mean GPU utilisation at its batch ends, percent.
    pub util_mean_pct: Option<f64>,
    /// Problems met (a counter that failed).
    pub notes: Vec<String>,
}

impl ReplicaGpu {
    /// Opens the GPU meters of a replica on `device`; `None` for a CPU replica.
    pub fn open(
        provider: &dyn MeterProvider,
        device: &str,
        measure: &MeasureStage,
    ) -> Option<ReplicaGpu> {
        if device.starts_with("cpu") {
            return None;
        }
        let wants = |name: &str| measure.meters.iter().any(|m| m == name);
        let counter = if wants("energy") {
            provider
                .energy_counters_for(device, measure.estimate)
                .into_iter()
                .find(|c| c.domain() == Domain::Gpu)
        } else {
            None
        };
        let probes = if wants("memory") || wants("utilisation") {
            provider.probes(device)
        } else {
            Vec::new()
        };
        Some(ReplicaGpu {
            counter,
            probes,
            start_j: None,
            energy_j: None,
            util_pct: Vec::new(),
            memory_peak_bytes: None,
            notes: Vec::new(),
        })
    }

    fn read(&mut self) -> Option<f64> {
        let counter = self.counter.as_mut()?;
        match counter.read_j() {
            Ok(j) => Some(j),
            Err(e) => {
                let note = format!("replica GPU energy: {e}");
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                None
            }
        }
    }

    /// The replica's window opens (its first batch starts).
    pub fn start(&mut self) {
        for probe in &mut self.probes {
            probe.start();
        }
        self.start_j = self.read();
    }

    /// A batch ended: memory and utilisation now.
    pub fn sample(&mut self) {
        let mut sample = Sample::default();
        for probe in &mut self.probes {
            probe.sample(&mut sample);
        }
        if let Some(u) = sample.gpu_util_pct {
            self.util_pct.push(u);
        }
        if let Some(m) = sample.gpu_mem_bytes {
            self.memory_peak_bytes = Some(self.memory_peak_bytes.map_or(m, |p| p.max(m)));
        }
    }

    /// The replica's window closes (its last step ended).
    pub fn stop(&mut self) {
        if let (Some(a), Some(b)) = (self.start_j, self.read()) {
            self.energy_j = Some(b - a);
        }
    }

    /// What was read.
    pub fn report(self) -> ReplicaGpuReport {
        let source = match (&self.counter, self.energy_j) {
            (Some(c), Some(_)) => c.source().name().to_string(),
            _ => "unavailable".to_string(),
        };
        ReplicaGpuReport {
            energy_j: self.energy_j,
            source,
            memory_peak_bytes: self.memory_peak_bytes,
            util_mean_pct: (!self.util_pct.is_empty())
                .then(|| self.util_pct.iter().sum::<f64>() / self.util_pct.len() as f64),
            notes: self.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_contiguous_and_the_first_replicas_take_the_remainder() {
        assert_eq!(split_between(7, 3), vec![0..3, 3..5, 5..7]);
        assert_eq!(split_between(4, 2), vec![0..2, 2..4]);
        assert_eq!(split_between(1, 2), vec![0..1, 1..1]);
        assert_eq!(split_between(5, 1), vec![0..5]);
        // Every request exactly once, in order.
        for n in 0..20 {
            for k in 1..6 {
                let flat: Vec<usize> = split_between(n, k).into_iter().flatten().collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn the_run_meters_see_each_gpu_and_the_machine_once() {
        assert_eq!(meter_device("cpu:0+cpu:1"), "cpu");
        assert_eq!(meter_device("cpu:0-3"), "cpu");
        assert_eq!(meter_device("cpu"), "cpu");
        assert_eq!(meter_device("cuda:0+cuda:1"), "cuda:0,cuda:1");
        assert_eq!(meter_device("cuda:2"), "cuda:2");
        assert_eq!(cores_of("cpu:3,0-1").as_deref(), Some("0-1,3"));
        assert_eq!(cores_of("cuda:0"), None);
    }
}
