//! What a run was measured with, beyond its configuration: the build (commit, profile,
//! compiler) and the machine (CPU model and flags, kernel, host). Written into every row so a
//! run can be reproduced, or its difference from another explained, from the table alone.

use std::path::Path;
use std::sync::OnceLock;

use meters::estimate::CpuInfo;

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
    results::time::UtcTime::from_unix_s(unix_s).iso8601()
}

#[cfg(test)]
mod tests {
    use super::*;

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
