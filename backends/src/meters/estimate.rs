//! CodeCarbon's fallback when a machine has no CPU or DRAM energy sensor: modelled, not
//! measured, and labelled [`Source::Estimate`] everywhere.
//!
//! **CPU** (CodeCarbon 3, `codecarbon/external/hardware.py`, `CPU._get_power_from_cpu_load`,
//! machine tracking mode, the mode used when RAPL is unavailable and psutil is present):
//!
//! ```text
//! power_W = TDP × (0.1 + 0.9 × load³)      load = system-wide CPU busy share in [0, 1]
//! ```
//!
//! CodeCarbon samples `psutil.cpu_percent()`, which is the busy share of all CPUs from
//! `/proc/stat` deltas; llmeff reads the same deltas between two counter reads, and multiplies
//! the interval's power by its length. TDP is looked up by CPU model name in CodeCarbon's table
//! (a subset ships as `backends/data/cpu_tdp.csv`) and multiplied by the number of sockets, as
//! `ResourceTracker.set_CPU_tracking` does (`tdp × cpu_physical_count`). An unknown model
//! gets CodeCarbon's `POWER_CONSTANT` of 85 W for the whole machine (not per socket, again as
//! CodeCarbon does). CodeCarbon matches names fuzzily (rapidfuzz); llmeff normalises names and
//! requires the table name's words to appear in the model name, refusing an ambiguous match.
//!
//! **RAM**: CodeCarbon's documented version-2 rule, 3 W per 8 GB of installed memory
//! (0.375 W/GiB; CodeCarbon divides bytes by 1024³) from `/proc/meminfo` `MemTotal`, constant
//! over time. CodeCarbon 3 replaced it with a per-DIMM heuristic (5 W per module, module count
//! guessed from the size) because power follows module count, not capacity; the per-GB rule
//! overestimates large servers (1 TiB → 384 W).

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::meter::{Domain, EnergyCounter, MeterError, Source};

use super::TimeSource;

/// CodeCarbon's CPU power for a model missing from its table, watts (`POWER_CONSTANT`).
pub const UNKNOWN_CPU_TDP_W: f64 = 85.0;

/// CodeCarbon 2's RAM power per GiB of installed memory, watts (3 W per 8 GB).
pub const RAM_W_PER_GIB: f64 = 3.0 / 8.0;

/// The bundled TDP table (a subset of CodeCarbon's, with its source and licence in the header).
const BUNDLED_TDP_CSV: &str = include_str!("../../data/cpu_tdp.csv");

/// Why an estimate cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EstimateError {
    /// A /proc file could not be read.
    #[error("{path} is not readable: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A /proc file or the TDP table has an unexpected format.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file (or `cpu_tdp.csv`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The model-name → TDP table.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTdpTable {
    /// (name as in the table, normalised words, TDP per socket in watts).
    rows: Vec<(String, Vec<String>, f64)>,
}

impl CpuTdpTable {
    /// The table shipped with llmeff (`backends/data/cpu_tdp.csv`).
    pub fn bundled() -> CpuTdpTable {
        // The bundled file is checked by a unit test, so an error here is a packaging bug;
        // an empty table still degrades to CodeCarbon's default rather than panicking.
        CpuTdpTable::parse(BUNDLED_TDP_CSV).unwrap_or(CpuTdpTable { rows: Vec::new() })
    }

    /// Parses `Name,TDP` CSV text; `#` lines are comments.
    pub fn parse(text: &str) -> Result<CpuTdpTable, EstimateError> {
        let malformed = |line: usize, reason: String| EstimateError::Malformed {
            path: PathBuf::from("cpu_tdp.csv"),
            reason: format!("line {line}: {reason}"),
        };
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line == "Name,TDP" {
                continue;
            }
            let (name, tdp) = line
                .rsplit_once(',')
                .ok_or_else(|| malformed(i + 1, format!("{line:?} is not `Name,TDP`")))?;
            let tdp: f64 = tdp
                .trim()
                .parse()
                .map_err(|_| malformed(i + 1, format!("TDP {tdp:?} is not a number")))?;
            if !(tdp > 0.0 && tdp.is_finite()) {
                return Err(malformed(i + 1, format!("TDP {tdp} is not positive")));
            }
            rows.push((name.trim().to_string(), normalise_cpu_name(name), tdp));
        }
        Ok(CpuTdpTable { rows })
    }

    /// Number of models in the table.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table row for a `/proc/cpuinfo` model name: (table name, TDP per socket).
    ///
    /// An exact match of the normalised names wins; otherwise the row with the most words,
    /// all of them in the model name. Two such rows with different TDPs are ambiguous: no match.
    pub fn lookup(&self, model: &str) -> Option<(&str, f64)> {
        let words = normalise_cpu_name(model);
        if words.is_empty() {
            return None;
        }
        if let Some((name, _, tdp)) = self.rows.iter().find(|(_, w, _)| *w == words) {
            return Some((name, *tdp));
        }
        let set: BTreeSet<&str> = words.iter().map(String::as_str).collect();
        let candidates: Vec<&(String, Vec<String>, f64)> = self
            .rows
            .iter()
            .filter(|(_, w, _)| w.len() >= 2 && w.iter().all(|x| set.contains(x.as_str())))
            .collect();
        let best = candidates.iter().map(|(_, w, _)| w.len()).max()?;
        let top: Vec<_> = candidates
            .into_iter()
            .filter(|(_, w, _)| w.len() == best)
            .collect();
        let tdp = top[0].2;
        if top.iter().any(|(_, _, t)| *t != tdp) {
            return None;
        }
        Some((top[0].0.as_str(), tdp))
    }
}

/// Lower-case words of a CPU name without vendor marks, `CPU`, `Processor`, `N-Core` and the
/// clock, so `Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz` and `Intel Xeon Platinum 8259CL`
/// compare equal.
pub fn normalise_cpu_name(name: &str) -> Vec<String> {
    let cleaned = name
        .replace("(R)", " ")
        .replace("(r)", " ")
        .replace("(TM)", " ")
        .replace("(tm)", " ");
    let before_clock = cleaned.split('@').next().unwrap_or("");
    before_clock
        .split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| !is_noise_word(w))
        .collect()
}

/// Words that say nothing about the model: `cpu`, `processor`, `64-core`.
fn is_noise_word(w: &str) -> bool {
    if matches!(w, "cpu" | "processor") {
        return true;
    }
    w.strip_suffix("-core")
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

/// What `/proc/cpuinfo` says about the CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// The first `model name` line, if any (ARM kernels often have none).
    pub model: Option<String>,
    /// Distinct `physical id` values (sockets); 1 when the file has none.
    pub sockets: u32,
    /// Logical CPUs (`processor` lines).
    pub logical_cpus: u32,
}

impl CpuInfo {
    /// Reads `<proc_root>/cpuinfo`.
    pub fn read(proc_root: &Path) -> Result<CpuInfo, EstimateError> {
        let path = proc_root.join("cpuinfo");
        let text = read(&path)?;
        Ok(CpuInfo::parse(&text))
    }

    /// Parses the text of `/proc/cpuinfo`.
    pub fn parse(text: &str) -> CpuInfo {
        let mut model = None;
        let mut sockets = BTreeSet::new();
        let mut logical = 0;
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim() {
                "model name" if model.is_none() => model = Some(value.trim().to_string()),
                "physical id" => {
                    sockets.insert(value.trim().to_string());
                }
                "processor" => logical += 1,
                _ => {}
            }
        }
        CpuInfo {
            model,
            sockets: (sockets.len() as u32).max(1),
            logical_cpus: logical,
        }
    }
}

/// Where the TDP of the CPU estimate comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPowerModel {
    /// TDP of the whole machine (per-socket TDP × sockets), watts.
    pub tdp_w: f64,
    /// How it was found, for `describe()` and `llmeff env`.
    pub basis: String,
}

impl CpuPowerModel {
    /// Looks the CPU up in `table`, falling back on CodeCarbon's default.
    pub fn for_cpu(info: &CpuInfo, table: &CpuTdpTable) -> CpuPowerModel {
        let model = info.model.as_deref().unwrap_or("unknown CPU");
        match table.lookup(model) {
            Some((name, tdp)) => CpuPowerModel {
                tdp_w: tdp * f64::from(info.sockets),
                basis: if info.sockets > 1 {
                    format!(
                        "TDP {} W × {} sockets = {} W ({model}; {name}, CodeCarbon table)",
                        fmt_w(tdp),
                        info.sockets,
                        fmt_w(tdp * f64::from(info.sockets))
                    )
                } else {
                    format!("TDP {} W ({model}; {name}, CodeCarbon table)", fmt_w(tdp))
                },
            },
            None => CpuPowerModel {
                tdp_w: UNKNOWN_CPU_TDP_W,
                basis: format!(
                    "TDP {} W (CodeCarbon's default: {model:?} is not in the table)",
                    fmt_w(UNKNOWN_CPU_TDP_W)
                ),
            },
        }
    }

    /// CodeCarbon's load curve: power at a busy share `load` in [0, 1].
    pub fn power_w(&self, load: f64) -> f64 {
        let load = load.clamp(0.0, 1.0);
        self.tdp_w * (0.1 + 0.9 * load.powi(3))
    }
}

fn fmt_w(w: f64) -> String {
    if w.fract() == 0.0 {
        format!("{w:.0}")
    } else {
        format!("{w:.1}")
    }
}

/// Busy, stolen and total jiffies of all CPUs, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Jiffies this machine's own work ran: not idle, not waiting for IO, not stolen.
    pub busy: u64,
    /// Jiffies the hypervisor gave to other guests while this (virtual) machine's CPUs wanted
    /// to run (`steal`, the 8th field; 0 on bare metal and on kernels without it).
    pub steal: u64,
    /// All jiffies (guest time is already inside user time, so it is not added again).
    pub total: u64,
}

impl CpuTimes {
    /// Reads `<proc_root>/stat`.
    pub fn read(proc_root: &Path) -> Result<CpuTimes, EstimateError> {
        let path = proc_root.join("stat");
        let text = read(&path)?;
        CpuTimes::parse(&text).ok_or_else(|| EstimateError::Malformed {
            path,
            reason: "no `cpu` line with at least 4 numbers".to_string(),
        })
    }

    /// Parses the text of `/proc/stat`.
    pub fn parse(text: &str) -> Option<CpuTimes> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if fields.len() < 4 {
            return None;
        }
        let total: u64 = fields.iter().sum();
        // psutil counts iowait as idle on Linux; CodeCarbon inherits that.
        let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
        // psutil also counts steal as busy, which bills a virtual machine for its neighbours'
        // work (a VM whose CPUs are two-thirds stolen reads two-thirds busy while idle); here
        // it is neither this machine's load nor idle, and is reported on its own.
        let steal = fields.get(7).copied().unwrap_or(0);
        Some(CpuTimes {
            busy: total.saturating_sub(idle).saturating_sub(steal),
            steal,
            total,
        })
    }

    /// Busy share of all CPUs between `earlier` and `self`, in [0, 1]; `None` when no jiffy
    /// elapsed.
    pub fn load_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.saturating_sub(earlier.busy);
        (total > 0).then(|| (busy as f64 / total as f64).min(1.0))
    }

    /// Stolen share of all CPUs' time between `earlier` and `self`, in [0, 1]; `None` when no
    /// jiffy elapsed.
    pub fn steal_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.saturating_sub(earlier.steal);
        (total > 0).then(|| (steal as f64 / total as f64).min(1.0))
    }

    /// [`CpuTimes::steal_since`], or `None` for a window shorter than [`MIN_STEAL_JIFFIES`],
    /// where one tick more or less would swing the share by tens of percent.
    pub fn steal_since_measurable(&self, earlier: &CpuTimes) -> Option<f64> {
        (self.total.saturating_sub(earlier.total) >= MIN_STEAL_JIFFIES)
            .then(|| self.steal_since(earlier))
            .flatten()
    }
}

/// The shortest window whose steal share is worth reporting, in `/proc/stat` ticks of all CPUs
/// together (1 s of one CPU): the counters tick every 10 ms, so over the few milliseconds of a
/// tiny-stories bench row a single tick reads as tens of percent. The peer scripts
/// (`benches/cpu_steal.py`, `benches/candle-shapes`) use the same minimum.
pub const MIN_STEAL_JIFFIES: u64 = 100;

/// Installed memory from `/proc/meminfo` `MemTotal`, bytes.
pub fn mem_total_bytes(proc_root: &Path) -> Result<u64, EstimateError> {
    let path = proc_root.join("meminfo");
    let text = read(&path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .and_then(|kb| kb.checked_mul(1024))
        .ok_or_else(|| EstimateError::Malformed {
            path,
            reason: "no `MemTotal: N kB` line".to_string(),
        })
}

fn read(path: &Path) -> Result<String, EstimateError> {
    fs::read_to_string(path).map_err(|e| EstimateError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// CPU energy estimated by CodeCarbon's TDP × load curve, load from `/proc/stat`.
pub struct CpuEstimateCounter {
    model: CpuPowerModel,
    proc_root: PathBuf,
    clock: TimeSource,
    last_t: Instant,
    last_times: CpuTimes,
    last_load: f64,
    total_j: f64,
}

impl CpuEstimateCounter {
    /// Opens the counter, reading `/proc/stat` once as its origin.
    pub fn new(
        model: CpuPowerModel,
        proc_root: &Path,
        clock: TimeSource,
    ) -> Result<CpuEstimateCounter, EstimateError> {
        let last_times = CpuTimes::read(proc_root)?;
        let last_t = clock();
        Ok(CpuEstimateCounter {
            model,
            proc_root: proc_root.to_path_buf(),
            clock,
            last_t,
            last_times,
            last_load: 0.0,
            total_j: 0.0,
        })
    }
}

impl fmt::Debug for CpuEstimateCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuEstimateCounter")
            .field("model", &self.model)
            .field("total_j", &self.total_j)
            .finish()
    }
}

impl EnergyCounter for CpuEstimateCounter {
    fn domain(&self) -> Domain {
        Domain::Cpu
    }

    fn source(&self) -> Source {
        Source::Estimate
    }

    fn describe(&self) -> String {
        format!(
            "estimate: {} × (0.1 + 0.9 × load³), load from {} (CodeCarbon CPU-load mode)",
            self.model.basis,
            self.proc_root.join("stat").display()
        )
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        let times = CpuTimes::read(&self.proc_root).map_err(|e| MeterError {
            meter: "estimate".to_string(),
            reason: e.to_string(),
        })?;
        let now = (self.clock)();
        // Between two reads less than a jiffy apart the load is unknown; the last one stands.
        let load = times.load_since(&self.last_times).unwrap_or(self.last_load);
        let dt = now.saturating_duration_since(self.last_t).as_secs_f64();
        self.total_j += self.model.power_w(load) * dt;
        self.last_t = now;
        self.last_times = times;
        self.last_load = load;
        Ok(self.total_j)
    }
}

/// RAM energy estimated as CodeCarbon 2's 3 W per 8 GB, constant over time.
pub struct RamEstimateCounter {
    mem_bytes: u64,
    source_path: PathBuf,
    clock: TimeSource,
    origin: Instant,
}

impl RamEstimateCounter {
    /// Opens the counter, reading `/proc/meminfo` for the installed memory.
    pub fn new(proc_root: &Path, clock: TimeSource) -> Result<RamEstimateCounter, EstimateError> {
        let mem_bytes = mem_total_bytes(proc_root)?;
        let origin = clock();
        Ok(RamEstimateCounter {
            mem_bytes,
            source_path: proc_root.join("meminfo"),
            clock,
            origin,
        })
    }

    /// The modelled power, watts.
    pub fn power_w(&self) -> f64 {
        RAM_W_PER_GIB * self.mem_bytes as f64 / (1u64 << 30) as f64
    }
}

impl fmt::Debug for RamEstimateCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamEstimateCounter")
            .field("mem_bytes", &self.mem_bytes)
            .finish()
    }
}

impl EnergyCounter for RamEstimateCounter {
    fn domain(&self) -> Domain {
        Domain::Ram
    }

    fn source(&self) -> Source {
        Source::Estimate
    }

    fn describe(&self) -> String {
        format!(
            "estimate: 0.375 W/GiB × {:.1} GiB ({} MemTotal) = {:.2} W (CodeCarbon 2 RAM rule)",
            self.mem_bytes as f64 / (1u64 << 30) as f64,
            self.source_path.display(),
            self.power_w()
        )
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        let dt = (self.clock)()
            .saturating_duration_since(self.origin)
            .as_secs_f64();
        Ok(self.power_w() * dt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_table_parses() {
        let table = CpuTdpTable::parse(BUNDLED_TDP_CSV).unwrap();
        assert!(table.len() > 100);
        assert_eq!(CpuTdpTable::bundled(), table);
    }

    #[test]
    fn cpuinfo_names_match_table_names() {
        let table = CpuTdpTable::bundled();
        let cases = [
            (
                "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
                Some(210.0),
            ),
            ("AMD EPYC 7763 64-Core Processor", Some(280.0)),
            ("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz", Some(120.0)),
            ("Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz", Some(95.0)),
            ("AMD Ryzen 9 5950X 16-Core Processor", Some(105.0)),
            ("Intel(R) Xeon(R) Processor", None),
            ("", None),
        ];
        for (model, tdp) in cases {
            assert_eq!(table.lookup(model).map(|(_, t)| t), tdp, "{model}");
        }
    }

    #[test]
    fn ambiguous_matches_are_refused() {
        let table = CpuTdpTable::parse("Name,TDP\nAcme Chip 1,10\nAcme Chip 1b,20\n").unwrap();
        assert_eq!(table.lookup("Acme Chip 1").map(|(_, t)| t), Some(10.0));
        let table = CpuTdpTable::parse("X Y,10\nX Z,20\n").unwrap();
        assert_eq!(table.lookup("X Y Z"), None);
    }

    #[test]
    fn the_load_curve_is_codecarbons() {
        let m = CpuPowerModel {
            tdp_w: 100.0,
            basis: String::new(),
        };
        assert_eq!(m.power_w(0.0), 10.0);
        assert_eq!(m.power_w(1.0), 100.0);
        assert_eq!(m.power_w(0.5), 100.0 * (0.1 + 0.9 * 0.125));
        assert_eq!(m.power_w(2.0), 100.0);
    }

    #[test]
    fn proc_stat_counts_iowait_as_idle() {
        let t = CpuTimes::parse("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            t,
            CpuTimes {
                busy: 15,
                steal: 0,
                total: 100
            }
        );
        assert!(CpuTimes::parse("intr 1 2 3\n").is_none());
        // A kernel old enough to print only user, nice, system and idle.
        let old = CpuTimes::parse("cpu  10 0 5 85\n").unwrap();
        assert_eq!((old.busy, old.steal, old.total), (15, 0, 100));
    }

    #[test]
    fn stolen_time_is_neither_load_nor_idle() {
        // user 20, idle 20, steal 60: the machine ran its own work a fifth of the time.
        let before = CpuTimes::parse("cpu  0 0 0 0 0 0 0 0 0 0\n").unwrap();
        let after = CpuTimes::parse("cpu  20 0 0 20 0 0 0 60 0 0\n").unwrap();
        assert_eq!(after.load_since(&before), Some(0.2));
        assert_eq!(after.steal_since(&before), Some(0.6));
        assert_eq!(before.steal_since(&before), None, "no time elapsed");
        assert_eq!(after.steal_since_measurable(&before), Some(0.6));
        let short = CpuTimes::parse("cpu  1 0 0 0 0 0 0 1 0 0\n").unwrap();
        assert_eq!(short.steal_since(&before), Some(0.5));
        assert_eq!(
            short.steal_since_measurable(&before),
            None,
            "2 ticks: too short"
        );
    }
}
