//! What a run was measured with, beyond its configuration: the build (commit, profile,
//! compiler) and the machine (CPU model and flags, kernel, host). Written into every row so a
//! run can be reproduced, or its difference from another explained, from the table alone.

use std::path::Path;

/// What built the binary, as its build script recorded it: the binary passes these in, since
/// only the binary's own build knows its commit and profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The llmeff version (`CARGO_PKG_VERSION` of the binary).
    pub version: String,
    /// Git commit the binary was built from (`None` when built outside a git checkout).
    pub git_commit: Option<String>,
    /// Whether tracked files differed from the commit when it was built.
    pub git_dirty: Option<bool>,
    /// Cargo profile: `release`, `debug`.
    pub profile: String,
    /// `rustc --version` of the compiler that built it.
    pub rustc_version: Option<String>,
}

impl BuildInfo {
    /// Build facts from the texts a build script sets (empty for unknown; `dirty` is
    /// `"true"`, `"false"` or empty).
    pub fn from_build_env(
        version: &str,
        git_commit: &str,
        git_dirty: &str,
        profile: &str,
        rustc_version: &str,
    ) -> BuildInfo {
        BuildInfo {
            version: version.to_string(),
            git_commit: non_empty(git_commit),
            git_dirty: match git_dirty {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            profile: profile.to_string(),
            rustc_version: non_empty(rustc_version),
        }
    }
}

/// The build and machine facts of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The llmeff version.
    pub version: String,
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
    /// Threads of the pool the forward pass runs on (sized by `--threads` before any run).
    pub threads: usize,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn read_trimmed(path: &Path) -> Option<String> {
    non_empty(&std::fs::read_to_string(path).ok()?)
}

/// The first non-empty value of a `/proc/cpuinfo` line whose key is one of `keys`: the model
/// is `model name`; the flags are `flags` (x86) or `Features` (ARM).
fn cpuinfo_value(cpuinfo: &str, keys: &[&str]) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        keys.contains(&key.trim()).then(|| non_empty(value))?
    })
}

impl Provenance {
    /// Reads the machine's facts under `proc_root` (normally `/proc`), with the build's
    /// facts and the forward pass's thread count.
    pub fn read(proc_root: &Path, build: BuildInfo, threads: usize) -> Provenance {
        let cpuinfo = std::fs::read_to_string(proc_root.join("cpuinfo")).unwrap_or_default();
        let release = read_trimmed(&proc_root.join("sys/kernel/osrelease"));
        Provenance {
            version: build.version,
            git_commit: build.git_commit,
            git_dirty: build.git_dirty,
            build_profile: build.profile,
            rustc_version: build.rustc_version,
            cpu_model: cpuinfo_value(&cpuinfo, &["model name"]),
            cpu_flags: cpuinfo_value(&cpuinfo, &["flags", "Features"]),
            kernel: release.map(|r| {
                let os = read_trimmed(&proc_root.join("sys/kernel/ostype"));
                format!("{} {r}", os.as_deref().unwrap_or(std::env::consts::OS))
            }),
            hostname: read_trimmed(&proc_root.join("sys/kernel/hostname")),
            threads,
        }
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
        let build = BuildInfo::from_build_env("0.1.0", "abc123", "true", "debug", "");
        let p = Provenance::read(root, build.clone(), 4);
        assert_eq!(p.cpu_model.as_deref(), Some("AMD EPYC 9R14"));
        assert_eq!(p.cpu_flags.as_deref(), Some("fpu avx2 avx512f"));
        assert_eq!(p.kernel.as_deref(), Some("Linux 6.1.0-40-cloud-amd64"));
        assert_eq!(p.hostname.as_deref(), Some("node-7"));
        assert_eq!(p.git_commit.as_deref(), Some("abc123"));
        assert_eq!(p.git_dirty, Some(true));
        assert_eq!((p.build_profile.as_str(), p.threads), ("debug", 4));
        // An unknown compiler and an empty /proc: unknown, not invented.
        assert_eq!(p.rustc_version, None);
        let empty = tempfile::tempdir().unwrap();
        let p = Provenance::read(empty.path(), build, 1);
        assert_eq!((p.cpu_model, p.cpu_flags, p.hostname), (None, None, None));
    }
}
