//! CodeCarbon's fallback when a machine has no CPU or DRAM energy sensor: modelled, not
//! measured, and labelled [`Source::Estimate`] everywhere. The rules are those of
//! **CodeCarbon 3.3.2** ([`CODECARBON`]), read in its wheel (`codecarbon-3.3.2-py3-none-any.whl`):
//!
//! **CPU power ceiling** (`codecarbon/core/cpu.py`, `TDP._main` and `_get_matching_cpu`;
//! `codecarbon/core/resource_tracker.py`, `set_CPU_tracking`):
//! - a model name found in CodeCarbon's table (`backends/data/cpu_tdp.csv`, its
//!   `cpu_power.csv` copied whole) gives that TDP per socket;
//! - a model name not in the table gives `DEFAULT_POWER_PER_CORE` = 4 W per logical CPU
//!   (`psutil.cpu_count()`, threads, not cores): 8 W on a 2-vCPU VM;
//! - no model name at all gives `POWER_CONSTANT` = 85 W (`codecarbon/external/hardware.py`,
//!   `CPU.from_utils` with no TDP).
//!
//! The first two are multiplied by the socket count (`lscpu` `Socket(s)`; here the distinct
//! `physical id`s of `/proc/cpuinfo`), as `set_CPU_tracking` does (`tdp.tdp * cpu_number`):
//! for an unknown model that counts the sockets twice (the threads already span them), and
//! llmeff keeps CodeCarbon's figure so the two agree.
//!
//! **CPU power from load** (`codecarbon/external/hardware.py`, `CPU._get_power_from_cpu_load`,
//! `MODE_CPU_LOAD`, the mode used when RAPL is unreadable and psutil is present):
//!
//! ```text
//! machine:  power_W = TDP × (0.1 + 0.9 × load³)   load = busy share of all CPUs in [0, 1]
//! process:  power_W = TDP × (process CPU s / wall s) / logical CPUs     (no 10 % floor)
//! ```
//!
//! Machine mode's load is `SystemCPULoadMeter`'s: busy and total `/proc/stat` jiffies between
//! two reads (iowait idle, guest time already inside user time). **Deviation:** CodeCarbon
//! (psutil) counts hypervisor steal as busy, which bills a VM for its neighbours' work (a VM
//! whose CPUs are two-thirds stolen reads two-thirds busy while idle); llmeff counts it neither
//! busy nor idle and reports it on its own (`cpu_steal_mean_pct`). Process mode's CPU time is
//! `utime + stime` of `/proc/self/stat` (CodeCarbon adds the live children's, and llmeff runs
//! none). CodeCarbon multiplies each sample's power by the time since the previous one, every
//! `measure_power_secs`; llmeff does the same between its counter reads (run start and end,
//! every phase boundary and background tick).
//!
//! **RAM** (`codecarbon/external/ram.py`, `RAM._estimate_dimm_count` and
//! `_calculate_ram_power`): the memory (GiB: bytes / 1024³) is mapped to a guessed DIMM count
//! (≤ 2 GiB: 1; ≤ 16: 2; ≤ 32: 4; ≤ 64: 4; ≤ 128: 8; above, the largest common DIMM size
//! (4–128 GiB) of at most an eighth of the memory, capped at 32 DIMMs), at 5 W per DIMM on
//! x86 (1.5 W on ARM), the 5th to 8th DIMM at 90 %, the 9th to 16th at 80 %, the rest at 70 %,
//! with a floor of two DIMMs (10 W) on x86 and 3 W on ARM. Machine mode uses `MemTotal` of
//! `/proc/meminfo` (psutil's `virtual_memory().total`), constant over time; process mode this
//! process's resident memory (`VmRSS`) at each read, so it too gets the 10 W floor. Under
//! Slurm CodeCarbon asks `scontrol` for the job's memory and CPUs; llmeff does not.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use api::meter::{Domain, EnergyCounter, EstimateMode, MeterError, Source};

use super::TimeSource;
use super::procfs::{USER_HZ, process_ticks, status_kb_field};

/// The CodeCarbon release whose rules the estimate follows (named in every `describe()`).
pub const CODECARBON: &str = "CodeCarbon 3.3.2";

/// CodeCarbon's CPU power per logical CPU for a model missing from its table, watts
/// (`DEFAULT_POWER_PER_CORE` in `codecarbon/core/cpu.py`).
pub const DEFAULT_POWER_PER_THREAD_W: f64 = 4.0;

/// CodeCarbon's CPU power when no model name can be read, watts (`POWER_CONSTANT` in
/// `codecarbon/external/hardware.py`).
pub const UNKNOWN_CPU_TDP_W: f64 = 85.0;

/// CodeCarbon's power of one x86 memory module, watts (`RAM_SLOT_POWER_X86`).
pub const RAM_SLOT_POWER_X86_W: f64 = 5.0;

/// CodeCarbon's power of one ARM memory module, watts (low-power memory).
pub const RAM_SLOT_POWER_ARM_W: f64 = 1.5;

/// CodeCarbon's least RAM power on ARM, watts (x86's is two modules, 10 W).
pub const RAM_MIN_POWER_ARM_W: f64 = 3.0;

/// The bundled TDP table (CodeCarbon 3.3.2's, with its source and licence in the header).
const BUNDLED_TDP_CSV: &str = include_str!("../data/cpu_tdp.csv");

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

/// One row of the TDP table.
#[derive(Debug, Clone, PartialEq)]
struct TdpRow {
    /// The name as in the table.
    name: String,
    /// Its lower-case form, for CodeCarbon's exact comparison.
    lower: String,
    /// Its words after rapidfuzz's `default_process`, for the token-set comparison.
    tokens: BTreeSet<String>,
    /// TDP per socket, watts; `None` where the table's figure is not a positive number
    /// (CodeCarbon then treats the CPU as unknown or fails, and llmeff treats it as unknown).
    tdp_w: Option<f64>,
}

/// The model-name → TDP table.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTdpTable {
    rows: Vec<TdpRow>,
}

impl CpuTdpTable {
    /// The table shipped with llmeff (`backends/data/cpu_tdp.csv`).
    pub fn bundled() -> CpuTdpTable {
        // The bundled file is checked by a unit test, so an error here is a packaging bug;
        // an empty table still degrades to CodeCarbon's per-thread default, never a panic.
        CpuTdpTable::parse(BUNDLED_TDP_CSV).unwrap_or(CpuTdpTable { rows: Vec::new() })
    }

    /// Parses `Name,TDP` CSV text (names may be double-quoted and hold commas); `#` lines
    /// are comments.
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
            let name = name.trim();
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .unwrap_or(name)
                .trim();
            if name.is_empty() {
                return Err(malformed(i + 1, "empty name".to_string()));
            }
            // CodeCarbon's table has a 0 W row and two unparseable ones; it treats a zero TDP
            // as unknown (`if power:`) and fails on the others, so both give no TDP here.
            let tdp_w = tdp
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0 && t.is_finite());
            rows.push(TdpRow {
                name: name.to_string(),
                lower: name.to_lowercase(),
                tokens: default_process_tokens(name),
                tdp_w,
            });
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

    /// The table row CodeCarbon 3.3.2 matches a `/proc/cpuinfo` model name to, and its TDP per
    /// socket (`None` when CodeCarbon would find no usable row).
    ///
    /// `TDP._get_matching_cpu`, non-greedy: the name equal to the model name ignoring case;
    /// else equal to it once `(R)`, ` CPU @ …`, ` CPU` and a ` @ N.NNGHz` clock are removed;
    /// else the one row whose words (lower case, punctuation as spaces) are a subset or a
    /// superset of the model's (rapidfuzz `token_set_ratio` of 100). Two or more such rows
    /// are ambiguous: no match.
    pub fn lookup(&self, model: &str) -> Option<(&str, f64)> {
        let row = self.matching_row(model)?;
        Some((row.name.as_str(), row.tdp_w?))
    }

    fn matching_row(&self, model: &str) -> Option<&TdpRow> {
        let exact = |m: &str| {
            let m = m.to_lowercase();
            self.rows.iter().find(|r| r.lower == m)
        };
        if let Some(row) = exact(model) {
            return Some(row);
        }
        let cleaned = codecarbon_clean_model(model);
        if let Some(row) = exact(&cleaned) {
            return Some(row);
        }
        let words = default_process_tokens(&cleaned);
        if words.is_empty() {
            return None;
        }
        let mut matches = self.rows.iter().filter(|r| {
            !r.tokens.is_disjoint(&words)
                && (r.tokens.is_subset(&words) || words.is_subset(&r.tokens))
        });
        let first = matches.next()?;
        matches.next().is_none().then_some(first)
    }
}

/// The model name as `TDP._get_matching_cpu` cleans it before its second comparison:
/// `(R)` removed, cut at ` CPU @ `, ` CPU` removed, a ` @ 2.40GHz` clock removed.
fn codecarbon_clean_model(model: &str) -> String {
    let mut m = model.replace("(R)", "");
    if let Some(i) = m.find(" CPU @ ")
        && i > 0
    {
        m.truncate(i);
    }
    let m = m.replace(" CPU", "");
    remove_clock(&m)
}

/// Removes every ` @ N.NGHz` (Python `re.sub(r" @\s*\d+\.\d+GHz", "", m)`).
fn remove_clock(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    let mut rest = m;
    while let Some(i) = rest.find(" @") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match clock_len(after) {
            Some(n) => rest = &after[n..],
            None => {
                out.push_str(" @");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Length of `\s*\d+\.\d+GHz` at the start of `s`, if it is there.
fn clock_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let digits = |mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > start).then_some(i)
    };
    i = digits(i)?;
    if b.get(i) != Some(&b'.') {
        return None;
    }
    i = digits(i + 1)?;
    s[i..].starts_with("GHz").then_some(i + 3)
}

/// Words of `s` after rapidfuzz's `default_process`: lower case, every character that is not
/// a letter or digit a space.
fn default_process_tokens(s: &str) -> BTreeSet<String> {
    s.chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .map(str::to_string)
        .collect()
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
                "model name" if model.is_none() => {
                    let v = value.trim();
                    if !v.is_empty() {
                        model = Some(v.to_string());
                    }
                }
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

/// The CPU power ceiling of the estimate (CodeCarbon's `max_power`) and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPowerModel {
    /// Power of the whole machine at full load, watts.
    pub tdp_w: f64,
    /// Logical CPUs, the denominator of process mode's share.
    pub logical_cpus: u32,
    /// How it was found, for `describe()` and `llmeff env`.
    pub basis: String,
}

impl CpuPowerModel {
    /// CodeCarbon 3.3.2's ceiling for this CPU: the table's TDP × sockets, else 4 W per
    /// logical CPU × sockets, else (no model name) 85 W.
    pub fn for_cpu(info: &CpuInfo, table: &CpuTdpTable) -> CpuPowerModel {
        let threads = info.logical_cpus.max(1);
        let sockets = info.sockets.max(1);
        let times_sockets = if sockets > 1 {
            format!(" x {sockets} sockets")
        } else {
            String::new()
        };
        let (tdp_w, basis) = match info.model.as_deref() {
            None => (
                UNKNOWN_CPU_TDP_W,
                format!(
                    "{} W (no CPU model name: CodeCarbon's POWER_CONSTANT)",
                    fmt_w(UNKNOWN_CPU_TDP_W)
                ),
            ),
            Some(model) => match table.lookup(model) {
                Some((name, tdp)) => {
                    let total = tdp * f64::from(sockets);
                    (
                        total,
                        format!(
                            "TDP {} W{} = {} W ({model}: {name} in CodeCarbon's table)",
                            fmt_w(tdp),
                            times_sockets,
                            fmt_w(total)
                        ),
                    )
                }
                None => {
                    let total = DEFAULT_POWER_PER_THREAD_W * f64::from(threads * sockets);
                    (
                        total,
                        format!(
                            "{} W x {threads} threads{} = {} W ({model:?} is not in CodeCarbon's table)",
                            fmt_w(DEFAULT_POWER_PER_THREAD_W),
                            times_sockets,
                            fmt_w(total)
                        ),
                    )
                }
            },
        };
        CpuPowerModel {
            tdp_w,
            logical_cpus: threads,
            basis,
        }
    }

    /// Machine mode: power at a busy share `load` of all CPUs in [0, 1], CodeCarbon's cubic
    /// curve with a floor of 10 % of the ceiling.
    pub fn power_w(&self, load: f64) -> f64 {
        let load = load.clamp(0.0, 1.0);
        self.tdp_w * (0.1 + 0.9 * load.powi(3))
    }

    /// Process mode: power when the process used `cpu_s` CPU seconds over `wall_s` seconds,
    /// the ceiling × its share of all logical CPUs (linear, no floor, as CodeCarbon).
    pub fn process_power_w(&self, cpu_s: f64, wall_s: f64) -> f64 {
        if wall_s <= 0.0 {
            return 0.0;
        }
        self.tdp_w * (cpu_s / wall_s) / f64::from(self.logical_cpus.max(1))
    }
}

fn fmt_w(w: f64) -> String {
    if w.fract() == 0.0 {
        format!("{w:.0}")
    } else {
        format!("{w:.1}")
    }
}

/// CodeCarbon 3.3.2's RAM power model (`codecarbon/external/ram.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamPowerModel {
    /// ARM memory (1.5 W per module, 3 W least) rather than x86 (5 W, two modules least).
    pub arm: bool,
}

impl RamPowerModel {
    /// The model for the architecture this binary runs on (CodeCarbon reads
    /// `platform.machine()`, which a native binary's target architecture equals).
    pub fn native() -> RamPowerModel {
        RamPowerModel {
            arm: matches!(std::env::consts::ARCH, "arm" | "aarch64"),
        }
    }

    /// CodeCarbon's guess of the module count for `gib` GiB (`_estimate_dimm_count`).
    pub fn dimm_count(gib: f64) -> u32 {
        if gib <= 2.0 {
            return 1;
        }
        if gib <= 16.0 {
            return 2;
        }
        if gib <= 64.0 {
            return 4;
        }
        if gib <= 128.0 {
            return 8;
        }
        for size in [128.0, 64.0, 32.0, 16.0, 8.0, 4.0] {
            if size <= gib / 8.0 {
                return ((gib / size).ceil() as u32).min(32);
            }
        }
        8
    }

    /// Power of `gib` GiB of memory, watts (`_calculate_ram_power`).
    pub fn power_w(&self, gib: f64) -> f64 {
        let n = f64::from(Self::dimm_count(gib));
        let (per, min) = if self.arm {
            (RAM_SLOT_POWER_ARM_W, RAM_MIN_POWER_ARM_W)
        } else {
            (RAM_SLOT_POWER_X86_W, 2.0 * RAM_SLOT_POWER_X86_W)
        };
        // Each module past the 4th, 8th and 16th costs less (90 %, 80 %, 70 %).
        let total = per * n.min(4.0)
            + per * 0.9 * (n.min(8.0) - 4.0).max(0.0)
            + per * 0.8 * (n.min(16.0) - 8.0).max(0.0)
            + per * 0.7 * (n - 16.0).max(0.0);
        total.max(min)
    }

    fn describe_rule(&self) -> String {
        if self.arm {
            "1.5 W per DIMM (ARM), 3 W least".to_string()
        } else {
            "5 W per DIMM (x86), 2 DIMMs least".to_string()
        }
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
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

/// This process's CPU time, seconds (`utime + stime` of `<proc_root>/self/stat`).
pub fn process_cpu_s(proc_root: &Path) -> Result<f64, EstimateError> {
    let path = proc_root.join("self/stat");
    let text = read(&path)?;
    process_ticks(&text)
        .map(|t| t as f64 / USER_HZ)
        .ok_or_else(|| EstimateError::Malformed {
            path,
            reason: "no utime and stime fields".to_string(),
        })
}

/// This process's resident memory (`VmRSS` of `<proc_root>/self/status`), bytes.
pub fn process_rss_bytes(proc_root: &Path) -> Result<u64, EstimateError> {
    let path = proc_root.join("self/status");
    let text = read(&path)?;
    status_kb_field(&text, "VmRSS:").ok_or_else(|| EstimateError::Malformed {
        path,
        reason: "no `VmRSS: N kB` line".to_string(),
    })
}

/// What the CPU estimate last read: the machine's jiffies or this process's CPU seconds.
#[derive(Debug, Clone, Copy)]
enum CpuReading {
    Machine(CpuTimes),
    Process(f64),
}

/// CPU energy estimated by CodeCarbon 3.3.2's load rule: the machine's busy share on the cubic
/// curve, or this process's CPU share, linear (see the module docs).
pub struct CpuEstimateCounter {
    model: CpuPowerModel,
    mode: EstimateMode,
    proc_root: PathBuf,
    clock: TimeSource,
    last_t: Instant,
    last: CpuReading,
    last_load: f64,
    total_j: f64,
}

impl CpuEstimateCounter {
    /// Opens the counter, reading `/proc/stat` (machine mode) or `/proc/self/stat` (process
    /// mode) once as its origin.
    pub fn new(
        model: CpuPowerModel,
        proc_root: &Path,
        clock: TimeSource,
        mode: EstimateMode,
    ) -> Result<CpuEstimateCounter, EstimateError> {
        let last = Self::reading(proc_root, mode)?;
        let last_t = clock();
        Ok(CpuEstimateCounter {
            model,
            mode,
            proc_root: proc_root.to_path_buf(),
            clock,
            last_t,
            last,
            last_load: 0.0,
            total_j: 0.0,
        })
    }

    fn reading(proc_root: &Path, mode: EstimateMode) -> Result<CpuReading, EstimateError> {
        Ok(match mode {
            EstimateMode::Machine => CpuReading::Machine(CpuTimes::read(proc_root)?),
            EstimateMode::Process => CpuReading::Process(process_cpu_s(proc_root)?),
        })
    }

    /// The power model in use.
    pub fn model(&self) -> &CpuPowerModel {
        &self.model
    }
}

impl fmt::Debug for CpuEstimateCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuEstimateCounter")
            .field("model", &self.model)
            .field("mode", &self.mode)
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
        match self.mode {
            EstimateMode::Machine => format!(
                "estimate, machine mode ({CODECARBON} rule: {} x (0.1 + 0.9 x load^3), load = \
                 busy share of all CPUs from {}, steal not counted busy)",
                self.model.basis,
                self.proc_root.join("stat").display()
            ),
            EstimateMode::Process => format!(
                "estimate, process mode ({CODECARBON} rule: {} x process CPU s / wall s / {} \
                 CPUs, CPU time from {})",
                self.model.basis,
                self.model.logical_cpus.max(1),
                self.proc_root.join("self/stat").display()
            ),
        }
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        let now_reading = Self::reading(&self.proc_root, self.mode).map_err(|e| MeterError {
            meter: "estimate".to_string(),
            reason: e.to_string(),
        })?;
        let now = (self.clock)();
        let dt = now.saturating_duration_since(self.last_t).as_secs_f64();
        let power = match (self.last, now_reading) {
            (CpuReading::Machine(before), CpuReading::Machine(after)) => {
                // Between two reads less than a jiffy apart the load is unknown; the last
                // one stands.
                let load = after.load_since(&before).unwrap_or(self.last_load);
                self.last_load = load;
                self.model.power_w(load)
            }
            (CpuReading::Process(before), CpuReading::Process(after)) => {
                self.model.process_power_w((after - before).max(0.0), dt)
            }
            // The mode never changes after `new`.
            _ => 0.0,
        };
        self.total_j += power * dt;
        self.last_t = now;
        self.last = now_reading;
        Ok(self.total_j)
    }
}

/// RAM energy estimated by CodeCarbon 3.3.2's DIMM rule: installed memory (machine mode,
/// constant power) or this process's resident memory at each read (process mode).
pub struct RamEstimateCounter {
    model: RamPowerModel,
    mode: EstimateMode,
    mem_total_bytes: u64,
    proc_root: PathBuf,
    clock: TimeSource,
    last_t: Instant,
    total_j: f64,
}

impl RamEstimateCounter {
    /// Opens the counter, reading `/proc/meminfo` (machine mode) or `/proc/self/status`
    /// (process mode) once, so an unreadable file fails here rather than mid-run.
    pub fn new(
        proc_root: &Path,
        clock: TimeSource,
        model: RamPowerModel,
        mode: EstimateMode,
    ) -> Result<RamEstimateCounter, EstimateError> {
        let mem_total_bytes = mem_total_bytes(proc_root)?;
        if mode == EstimateMode::Process {
            process_rss_bytes(proc_root)?;
        }
        let last_t = clock();
        Ok(RamEstimateCounter {
            model,
            mode,
            mem_total_bytes,
            proc_root: proc_root.to_path_buf(),
            clock,
            last_t,
            total_j: 0.0,
        })
    }

    /// The modelled power of the installed memory (machine mode), watts.
    pub fn power_w(&self) -> f64 {
        self.model.power_w(gib(self.mem_total_bytes))
    }
}

impl fmt::Debug for RamEstimateCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamEstimateCounter")
            .field("mode", &self.mode)
            .field("mem_total_bytes", &self.mem_total_bytes)
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
        match self.mode {
            EstimateMode::Machine => {
                let g = gib(self.mem_total_bytes);
                format!(
                    "estimate, machine mode ({CODECARBON} rule: {:.1} GiB MemTotal from {} -> {} \
                     DIMMs, {} = {} W)",
                    g,
                    self.proc_root.join("meminfo").display(),
                    RamPowerModel::dimm_count(g),
                    self.model.describe_rule(),
                    fmt_w(self.model.power_w(g))
                )
            }
            EstimateMode::Process => format!(
                "estimate, process mode ({CODECARBON} rule: this process's VmRSS from {} -> \
                 DIMMs, {})",
                self.proc_root.join("self/status").display(),
                self.model.describe_rule()
            ),
        }
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        let bytes = match self.mode {
            EstimateMode::Machine => self.mem_total_bytes,
            EstimateMode::Process => {
                process_rss_bytes(&self.proc_root).map_err(|e| MeterError {
                    meter: "estimate".to_string(),
                    reason: e.to_string(),
                })?
            }
        };
        let now = (self.clock)();
        let dt = now.saturating_duration_since(self.last_t).as_secs_f64();
        // As CodeCarbon: the power at the reading, times the time since the previous one.
        self.total_j += self.model.power_w(gib(bytes)) * dt;
        self.last_t = now;
        Ok(self.total_j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_table_is_codecarbons_whole_table() {
        let table = CpuTdpTable::parse(BUNDLED_TDP_CSV).unwrap();
        assert_eq!(
            table.len(),
            4918,
            "CodeCarbon 3.3.2's cpu_power.csv has 4918 rows"
        );
        assert_eq!(CpuTdpTable::bundled(), table);
        // A quoted name with commas is one name.
        assert_eq!(
            table.lookup("Intel EP80579 Integrated, 1200 MHz"),
            Some(("Intel EP80579 Integrated, 1200 MHz", 19.0))
        );
    }

    #[test]
    fn cpuinfo_names_match_as_codecarbon_matches_them() {
        // Expected rows and TDPs from CodeCarbon 3.3.2 itself
        // (`TDP._get_matching_cpu` over its DataSource().get_cpu_power_data()).
        let table = CpuTdpTable::bundled();
        let cases = [
            (
                "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
                Some(("Intel Xeon Platinum 8259CL", 210.0)),
            ),
            (
                "AMD EPYC 7763 64-Core Processor",
                Some(("AMD EPYC 7763", 280.0)),
            ),
            (
                "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz",
                Some(("Intel Xeon E5-2680 v4", 120.0)),
            ),
            (
                "Intel(R) Core(TM) i7-8700K CPU @ 3.70GHz",
                Some(("Intel Core i7-8700K", 95.0)),
            ),
            (
                "AMD Ryzen 9 5950X 16-Core Processor",
                Some(("AMD Ryzen 9 5950X", 105.0)),
            ),
            (
                "AMD EPYC 9654 96-Core Processor",
                Some(("AMD EPYC 9654", 360.0)),
            ),
            (
                "Intel(R) Xeon(R) Platinum 8480+",
                Some(("Intel Xeon Platinum 8480+", 350.0)),
            ),
            (
                "Intel(R) Core(TM) i9-13900K",
                Some(("Intel Core i9-13900K", 125.0)),
            ),
            ("Apple M4 Ultra", Some(("Apple M4 Ultra", 110.0))),
            (
                "AMD Ryzen Threadripper PRO 5995WX 64-Cores",
                Some(("AMD Ryzen Threadripper PRO 5995WX", 280.0)),
            ),
            (
                "Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz",
                Some(("Intel Xeon Gold 6154", 200.0)),
            ),
            // This VM's CPU: its words are in many rows, so no match (8 W from 2 threads).
            ("Intel(R) Xeon(R) Processor", None),
            ("AMD EPYC", None),
            // In the table, but with CodeCarbon's unparseable TDP "27.29.5", or 0 W.
            ("Intel Celeron 1000A", None),
            ("Intel Quark Microcontroller D1000", None),
            ("", None),
        ];
        for (model, expected) in cases {
            assert_eq!(table.lookup(model), expected, "{model}");
        }
    }

    #[test]
    fn the_clock_and_cpu_words_are_cleaned_as_codecarbon_does() {
        assert_eq!(
            codecarbon_clean_model("Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"),
            "Intel Xeon E5-2680 v4"
        );
        assert_eq!(
            codecarbon_clean_model("Intel(R) Core(TM) i7 CPU @ 3.70GHz"),
            "Intel Core(TM) i7"
        );
        assert_eq!(remove_clock("Chip @ 2GHz @  3.10GHz x"), "Chip @ 2GHz x");
        assert_eq!(
            default_process_tokens("Core(TM) i7-8700K"),
            ["core", "i7", "8700k", "tm"]
                .into_iter()
                .map(String::from)
                .collect()
        );
    }

    #[test]
    fn ambiguous_matches_are_refused() {
        let table = CpuTdpTable::parse("Name,TDP\nAcme Chip 1,10\nAcme Chip 1b,20\n").unwrap();
        assert_eq!(
            table.lookup("Acme Chip 1").map(|(_, t)| t),
            Some(10.0),
            "exact"
        );
        // Both rows' words are subsets of the model's: two matches, none chosen.
        let table = CpuTdpTable::parse("X Y,10\nX Z,20\n").unwrap();
        assert_eq!(table.lookup("X Y Z"), None);
        // The model's words inside one row only: that row.
        let table = CpuTdpTable::parse("Acme Chip 9 Pro,30\nAcme Other,5\n").unwrap();
        assert_eq!(table.lookup("acme chip 9").map(|(_, t)| t), Some(30.0));
    }

    fn info(model: Option<&str>, sockets: u32, threads: u32) -> CpuInfo {
        CpuInfo {
            model: model.map(String::from),
            sockets,
            logical_cpus: threads,
        }
    }

    #[test]
    fn the_ceiling_follows_codecarbon() {
        let table = CpuTdpTable::bundled();
        // This VM: unknown model, 2 threads → 4 W × 2 = 8 W.
        let vm = CpuPowerModel::for_cpu(&info(Some("Intel(R) Xeon(R) Processor"), 1, 2), &table);
        assert_eq!(vm.tdp_w, 8.0);
        assert!(vm.basis.contains("4 W x 2 threads = 8 W"), "{}", vm.basis);
        // Unknown on two sockets: CodeCarbon multiplies by the sockets again.
        let two = CpuPowerModel::for_cpu(&info(Some("Acme 1"), 2, 64), &table);
        assert_eq!(two.tdp_w, 4.0 * 64.0 * 2.0);
        // Known: the table's TDP per socket.
        let epyc = CpuPowerModel::for_cpu(
            &info(Some("AMD EPYC 7763 64-Core Processor"), 2, 256),
            &table,
        );
        assert_eq!(epyc.tdp_w, 560.0);
        // No model name at all: POWER_CONSTANT.
        let none = CpuPowerModel::for_cpu(&info(None, 1, 4), &table);
        assert_eq!(none.tdp_w, UNKNOWN_CPU_TDP_W);
    }

    #[test]
    fn the_load_curves_are_codecarbons() {
        let m = CpuPowerModel {
            tdp_w: 100.0,
            logical_cpus: 4,
            basis: String::new(),
        };
        assert_eq!(m.power_w(0.0), 10.0);
        assert_eq!(m.power_w(1.0), 100.0);
        assert_eq!(m.power_w(0.5), 100.0 * (0.1 + 0.9 * 0.125));
        assert_eq!(m.power_w(2.0), 100.0);
        // Process mode: 2 CPU seconds over 1 s on 4 CPUs is half the ceiling; idle is 0.
        assert_eq!(m.process_power_w(2.0, 1.0), 50.0);
        assert_eq!(m.process_power_w(0.0, 1.0), 0.0);
        assert_eq!(m.process_power_w(1.0, 0.0), 0.0);
    }

    #[test]
    fn ram_power_follows_the_dimm_rule() {
        let x86 = RamPowerModel { arm: false };
        let arm = RamPowerModel { arm: true };
        // (GiB, DIMMs, x86 W, ARM W), worked out from codecarbon/external/ram.py by hand.
        let cases = [
            (1.0, 1, 10.0, 3.0),
            (8.0, 2, 10.0, 3.0),
            (16.0, 2, 10.0, 3.0),
            // This VM: 23.5 GiB → 4 DIMMs → 20 W (CodeCarbon reported 20 W here).
            (23.54, 4, 20.0, 6.0),
            (64.0, 4, 20.0, 6.0),
            (100.0, 8, 20.0 + 4.0 * 4.5, 6.0 + 4.0 * 1.35),
            // 256 GiB: 32 GiB DIMMs (≤ 256 / 8) → 8.
            (256.0, 8, 38.0, 11.4),
            // 1 TiB: 128 GiB DIMMs → 8.
            (1024.0, 8, 38.0, 11.4),
            // 129 GiB: 16 GiB DIMMs (≤ 16.1) → ceil(129 / 16) = 9.
            (129.0, 9, 38.0 + 4.0, 11.4 + 1.2),
        ];
        for (g, dimms, w_x86, w_arm) in cases {
            assert_eq!(RamPowerModel::dimm_count(g), dimms, "{g} GiB");
            assert!((x86.power_w(g) - w_x86).abs() < 1e-9, "{g} GiB x86");
            assert!((arm.power_w(g) - w_arm).abs() < 1e-9, "{g} GiB arm");
        }
        // Beyond 16 DIMMs at 70 %: 4 TiB → 32 × 128 GiB DIMMs.
        assert_eq!(RamPowerModel::dimm_count(4096.0), 32);
        let w = 5.0 * 4.0 + 4.5 * 4.0 + 4.0 * 8.0 + 3.5 * 16.0;
        assert!((x86.power_w(4096.0) - w).abs() < 1e-9);
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
