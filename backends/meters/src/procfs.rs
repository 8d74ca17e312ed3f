//! This process's memory and CPU use, and the machine's CPU use, from Linux `/proc`.
//!
//! RSS comes from `/proc/self/status` (`VmRSS`, in kB, so no page size is needed); the run's
//! peak from `VmHWM` after the high-water mark is reset at the window's start by writing `5` to
//! `/proc/self/clear_refs` (Linux ≥ 4.0). Process CPU time is `utime + stime` of
//! `/proc/self/stat` in clock ticks of 100 Hz: `USER_HZ` is fixed at 100 by the Linux ABI
//! whatever the kernel's internal `HZ`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use api::meter::{Probe, Sample};

use super::TimeSource;
use super::estimate::CpuTimes;

/// The `/proc` of a stock Linux system.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// Clock ticks per second of `/proc/<pid>/stat` times (Linux `USER_HZ`).
pub const USER_HZ: f64 = 100.0;

/// A `VmRSS:`/`VmHWM:` style line of `/proc/self/status`, bytes.
pub(crate) fn status_kb_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .and_then(|kb| kb.checked_mul(1024))
}

/// `utime + stime` of `/proc/self/stat`, clock ticks.
///
/// The command name (field 2) is in parentheses and may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub(crate) fn process_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based), i.e. 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Why this machine's `/proc` lacks what [`ProcessProbe`] reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcfsError {
    /// A file could not be read.
    #[error("{} is not readable: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A file lacks a line the probe needs.
    #[error("{} has no {field} line", path.display())]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The line's key.
        field: &'static str,
    },
}

/// Memory and CPU of this process, and the machine's CPU use, from `/proc`.
pub struct ProcessProbe {
    root: PathBuf,
    clock: TimeSource,
    last: Option<(Instant, Option<u64>, Option<CpuTimes>)>,
    hwm_reset: bool,
}

impl ProcessProbe {
    /// A probe over `<root>/self/…` and `<root>/stat` (`root` is normally `/proc`).
    pub fn new(root: &Path, clock: TimeSource) -> ProcessProbe {
        ProcessProbe {
            root: root.to_path_buf(),
            clock,
            last: None,
            hwm_reset: false,
        }
    }

    /// Whether this machine's `/proc` has what the probe reads; the reason when not.
    pub fn check(root: &Path) -> Result<String, ProcfsError> {
        let status = root.join("self/status");
        let text = fs::read_to_string(&status).map_err(|e| ProcfsError::Unreadable {
            path: status.clone(),
            reason: e.to_string(),
        })?;
        if status_kb_field(&text, "VmRSS:").is_none() {
            return Err(ProcfsError::MissingField {
                path: status,
                field: "VmRSS",
            });
        }
        let mut parts = vec!["rss, peak rss (VmHWM)".to_string()];
        if fs::read_to_string(root.join("self/stat"))
            .ok()
            .as_deref()
            .and_then(process_ticks)
            .is_some()
        {
            parts.push("process cpu".to_string());
        }
        if CpuTimes::read(root).is_ok() {
            parts.push("system cpu, cpu steal".to_string());
        }
        Ok(format!("{} from {}", parts.join(", "), root.display()))
    }

    fn read_status_field(&self, key: &str) -> Option<u64> {
        let text = fs::read_to_string(self.root.join("self/status")).ok()?;
        status_kb_field(&text, key)
    }

    fn read_ticks(&self) -> Option<u64> {
        let text = fs::read_to_string(self.root.join("self/stat")).ok()?;
        process_ticks(&text)
    }

    fn baseline(&mut self) {
        let now = (self.clock)();
        let ticks = self.read_ticks();
        let times = CpuTimes::read(&self.root).ok();
        self.last = Some((now, ticks, times));
    }
}

impl fmt::Debug for ProcessProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessProbe")
            .field("root", &self.root)
            .field("hwm_reset", &self.hwm_reset)
            .finish()
    }
}

impl Probe for ProcessProbe {
    fn start(&mut self) {
        // Without the reset VmHWM would be the process's lifetime peak (the model load
        // included), so a failed reset must make the run's peak unknown, not wrong.
        self.hwm_reset = fs::write(self.root.join("self/clear_refs"), "5").is_ok();
        self.baseline();
    }

    fn sample(&mut self, sample: &mut Sample) {
        sample.rss_bytes = self.read_status_field("VmRSS:");
        let now = (self.clock)();
        let ticks = self.read_ticks();
        let times = CpuTimes::read(&self.root).ok();
        if let Some((last_t, last_ticks, last_times)) = self.last {
            let dt = now.saturating_duration_since(last_t).as_secs_f64();
            if let (Some(a), Some(b)) = (last_ticks, ticks)
                && dt > 0.0
                && b >= a
            {
                sample.process_cpu_pct = Some((b - a) as f64 / USER_HZ / dt * 100.0);
            }
            if let (Some(a), Some(b)) = (last_times, times) {
                sample.system_cpu_pct = b.load_since(&a).map(|l| l * 100.0);
                sample.cpu_steal_pct = b.steal_since(&a).map(|l| l * 100.0);
            }
        }
        self.last = Some((now, ticks, times));
    }

    fn rss_high_water_bytes(&mut self) -> Option<u64> {
        if !self.hwm_reset {
            return None;
        }
        self.read_status_field("VmHWM:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(process_ticks(stat), Some(300));
        assert_eq!(process_ticks("garbage"), None);
    }

    #[test]
    fn status_fields_are_bytes() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_kb_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(status_kb_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(status_kb_field(status, "VmSwap:"), None);
    }
}
