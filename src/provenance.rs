//! What a run was measured with, beyond its configuration: the build (commit, profile,
//! compiler) and the machine (CPU model and flags, kernel, host). Written into every row so a
//! run can be reproduced, or its difference from another explained, from the table alone.

use std::path::Path;
use std::sync::OnceLock;

use backends::meters::estimate::CpuInfo;

/// The build and machine facts of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// Git commit the binary was built from (`None` when built outside a git checkout).
    pub git_commit: Option<String>,
    /// Whether tracked files differed from the commit when it was built.
    pub git_dirty: Option<bool>,
    /// Cargo profile: `release`, `debug`.
    pub build_profile: String,
    /// `rustc --version` of the compiler that built it.
    pub rustc_version: Option<String>,
    /// CPU model name (`/proc/cpuinfo`).
    pub cpu_model: Option<String>,
    /// CPU feature flags (`/proc/cpuinfo`), space-separated as the kernel lists them.
    pub cpu_flags: Option<String>,
    /// Kernel name and release (`Linux 6.1.0-…`).
    pub kernel: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn read_trimmed(path: &Path) -> Option<String> {
    non_empty(&std::fs::read_to_string(path).ok()?)
}

/// The `flags` (x86) or `Features` (ARM) line of a `/proc/cpuinfo` text.
fn cpu_flags(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key.trim(), "flags" | "Features").then(|| non_empty(value))?
    })
}

impl Provenance {
    /// Reads the machine's facts under `proc_root` (normally `/proc`) and the build's from
    /// the environment `build.rs` set.
    pub fn read(proc_root: &Path) -> Provenance {
        let cpuinfo = std::fs::read_to_string(proc_root.join("cpuinfo")).unwrap_or_default();
        let release = read_trimmed(&proc_root.join("sys/kernel/osrelease"));
        Provenance {
            git_commit: non_empty(env!("LLMEFF_GIT_COMMIT")),
            git_dirty: match env!("LLMEFF_GIT_DIRTY") {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            build_profile: env!("LLMEFF_BUILD_PROFILE").to_string(),
            rustc_version: non_empty(env!("LLMEFF_RUSTC_VERSION")),
            cpu_model: CpuInfo::parse(&cpuinfo).model,
            cpu_flags: cpu_flags(&cpuinfo),
            kernel: release.map(|r| {
                let os = read_trimmed(&proc_root.join("sys/kernel/ostype"));
                format!("{} {r}", os.as_deref().unwrap_or(std::env::consts::OS))
            }),
            hostname: read_trimmed(&proc_root.join("sys/kernel/hostname")),
        }
    }

    /// This process's provenance, read once.
    pub fn current() -> &'static Provenance {
        static CURRENT: OnceLock<Provenance> = OnceLock::new();
        CURRENT.get_or_init(|| Provenance::read(Path::new("/proc")))
    }
}

/// `seconds` since the Unix epoch as ISO 8601 UTC with milliseconds
/// (`2026-12-06T02:29:18.123Z`).
pub fn iso8601_utc(unix_s: f64) -> String {
    let millis = (unix_s * 1000.0).round() as i64;
    let (secs, ms) = (millis.div_euclid(1000), millis.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a proleptic Gregorian date (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_utc() {
        assert_eq!(iso8601_utc(0.0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796531358 +%FT%T` → 2026-12-06T04:29:18.
        assert_eq!(iso8601_utc(1_796_531_358.25), "2026-12-06T04:29:18.250Z");
        // A leap day and the turn of a century divisible by 400.
        assert_eq!(iso8601_utc(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601_utc(1_709_164_799.999), "2024-02-28T23:59:59.999Z");
    }

    #[test]
    fn machine_facts_come_from_proc() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/kernel")).unwrap();
        std::fs::write(
            root.join("cpuinfo"),
            "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f\n",
        )
        .unwrap();
        std::fs::write(root.join("sys/kernel/osrelease"), "6.1.0-40-cloud-amd64\n").unwrap();
        std::fs::write(root.join("sys/kernel/ostype"), "Linux\n").unwrap();
        std::fs::write(root.join("sys/kernel/hostname"), "node-7\n").unwrap();
        let p = Provenance::read(root);
        assert_eq!(p.cpu_model.as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(p.cpu_flags.as_deref(), Some("fpu avx2 avx512f"));
        assert_eq!(p.kernel.as_deref(), Some("Linux 6.1.0-40-cloud-amd64"));
        assert_eq!(p.hostname.as_deref(), Some("node-7"));
        assert!(!p.build_profile.is_empty());
        // An empty /proc: unknown, not invented.
        let empty = tempfile::tempdir().unwrap();
        let p = Provenance::read(empty.path());
        assert_eq!((p.cpu_model, p.cpu_flags, p.hostname), (None, None, None));
    }
}
