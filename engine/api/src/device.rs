//! Device names as scripts write them, parsed once for the engine (plan-time checks) and the
//! runtime (loading): `cpu` (every core this process may use), `cpu:<cores>` (a core set:
//! `cpu:0-3`, `cpu:4,6`, `cpu:0-1,4`), `cuda` and `cuda:N`, `wgpu` (the adapter wgpu prefers)
//! and `wgpu:N` (the Nth adapter wgpu lists).
//!
//! A run on several devices (data-parallel replicas) is written in plans and tables as the
//! devices joined by [`REPLICA_SEPARATOR`] (`cpu:0+cpu:1`): `,` already separates cores.

use std::fmt;

/// Joins the devices of a replicated run in its `device` column (`cuda:0+cuda:1`).
pub const REPLICA_SEPARATOR: char = '+';

/// The largest core number a core set may name (a typo such as `cpu:00-99999` is refused
/// before it allocates anything).
pub const MAX_CORE: usize = 4095;

/// A parsed device name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceName {
    /// Every core this process may run on.
    Cpu,
    /// A set of cores, sorted, each once.
    CpuCores(Vec<usize>),
    /// A CUDA device by ordinal.
    Cuda(usize),
    /// A wgpu adapter: `None` the one wgpu prefers for performance, else by its place in
    /// wgpu's list.
    Wgpu(Option<usize>),
}

/// Why a device name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceNameError {
    /// Not `cpu`, `cpu:<cores>`, `cuda`, `cuda:N`, `wgpu` or `wgpu:N`.
    #[error(
        "`{name}` is not a device; use `cpu`, `cpu:<cores>` (`cpu:0-3`, `cpu:4,6`), `cuda:N` or `wgpu:N`"
    )]
    Unknown {
        /// The name as written.
        name: String,
    },
    /// A core set item that is not a core number or an `a-b` range.
    #[error("`{name}`: `{item}` is not a core number or a range `a-b`")]
    BadCore {
        /// The name as written.
        name: String,
        /// The offending item.
        item: String,
    },
    /// An empty item between commas (or no cores at all).
    #[error("`{name}` has an empty item (a stray comma?); write cores as `0-3`, `4,6` or `0-1,4`")]
    EmptyItem {
        /// The name as written.
        name: String,
    },
    /// A range whose end is below its start.
    #[error("`{name}`: the range `{item}` ends before it starts")]
    ReversedRange {
        /// The name as written.
        name: String,
        /// The offending range.
        item: String,
    },
    /// A core named twice within one set.
    #[error("`{name}`: core {core} is named twice")]
    RepeatedCore {
        /// The name as written.
        name: String,
        /// The core.
        core: usize,
    },
    /// A core number above [`MAX_CORE`].
    #[error("`{name}`: core {core} is above {MAX_CORE}")]
    CoreTooLarge {
        /// The name as written.
        name: String,
        /// The core.
        core: usize,
    },
}

impl DeviceName {
    /// Parses one device name.
    pub fn parse(name: &str) -> Result<DeviceName, DeviceNameError> {
        let unknown = || DeviceNameError::Unknown {
            name: name.to_string(),
        };
        if name == "cpu" {
            return Ok(DeviceName::Cpu);
        }
        if let Some(set) = name.strip_prefix("cpu:") {
            return parse_cores(name, set).map(DeviceName::CpuCores);
        }
        let ordinal = |rest: &str| {
            rest.strip_prefix(':')
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(unknown)
        };
        if name == "wgpu" {
            return Ok(DeviceName::Wgpu(None));
        }
        if let Some(rest) = name.strip_prefix("wgpu") {
            return ordinal(rest).map(|n| DeviceName::Wgpu(Some(n)));
        }
        match name.strip_prefix("cuda") {
            Some("") => Ok(DeviceName::Cuda(0)),
            Some(rest) => ordinal(rest).map(DeviceName::Cuda),
            None => Err(unknown()),
        }
    }

    /// The kind of hardware (`cpu`, `cuda`, `wgpu`): replicas are all of one kind.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceName::Cpu | DeviceName::CpuCores(_) => "cpu",
            DeviceName::Cuda(_) => "cuda",
            DeviceName::Wgpu(_) => "wgpu",
        }
    }

    /// True for `cpu` and core sets.
    pub fn is_cpu(&self) -> bool {
        matches!(self, DeviceName::Cpu | DeviceName::CpuCores(_))
    }

    /// Whether two devices share hardware: the same GPU, or cores in common (`cpu` shares
    /// every core).
    pub fn overlaps(&self, other: &DeviceName) -> bool {
        match (self, other) {
            (DeviceName::Cuda(a), DeviceName::Cuda(b)) => a == b,
            // `wgpu` is one of the listed adapters: it may be any `wgpu:N`.
            (DeviceName::Wgpu(a), DeviceName::Wgpu(b)) => a.is_none() || b.is_none() || a == b,
            (DeviceName::Cpu, d) | (d, DeviceName::Cpu) => d.is_cpu(),
            (DeviceName::CpuCores(a), DeviceName::CpuCores(b)) => a.iter().any(|c| b.contains(c)),
            _ => false,
        }
    }

    /// The cores of a core set (`None` for `cpu` and GPUs).
    pub fn cores(&self) -> Option<&[usize]> {
        match self {
            DeviceName::CpuCores(c) => Some(c),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceName::Cpu => f.write_str("cpu"),
            DeviceName::CpuCores(cores) => write!(f, "cpu:{}", format_cores(cores)),
            DeviceName::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceName::Wgpu(None) => f.write_str("wgpu"),
            DeviceName::Wgpu(Some(n)) => write!(f, "wgpu:{n}"),
        }
    }
}

/// Cores written compactly, runs as ranges: `0-3,6`.
pub fn format_cores(cores: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", cores[i], cores[j])
        } else {
            cores[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

fn parse_cores(name: &str, set: &str) -> Result<Vec<usize>, DeviceNameError> {
    let bad = |item: &str| DeviceNameError::BadCore {
        name: name.to_string(),
        item: item.to_string(),
    };
    let number = |item: &str, text: &str| -> Result<usize, DeviceNameError> {
        if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(item));
        }
        let core: usize = text.parse().map_err(|_| bad(item))?;
        if core > MAX_CORE {
            return Err(DeviceNameError::CoreTooLarge {
                name: name.to_string(),
                core,
            });
        }
        Ok(core)
    };
    let mut cores = Vec::new();
    for item in set.split(',') {
        if item.is_empty() {
            return Err(DeviceNameError::EmptyItem {
                name: name.to_string(),
            });
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (number(item, a)?, number(item, b)?),
            None => {
                let c = number(item, item)?;
                (c, c)
            }
        };
        if last < first {
            return Err(DeviceNameError::ReversedRange {
                name: name.to_string(),
                item: item.to_string(),
            });
        }
        for core in first..=last {
            if cores.contains(&core) {
                return Err(DeviceNameError::RepeatedCore {
                    name: name.to_string(),
                    core,
                });
            }
            cores.push(core);
        }
    }
    cores.sort_unstable();
    Ok(cores)
}

/// The devices of a run's `device` value: one, or several joined by [`REPLICA_SEPARATOR`].
pub fn replica_devices(device: &str) -> Vec<&str> {
    device.split(REPLICA_SEPARATOR).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_devices_and_print_back() {
        assert_eq!(DeviceName::parse("cpu"), Ok(DeviceName::Cpu));
        assert_eq!(DeviceName::parse("cuda"), Ok(DeviceName::Cuda(0)));
        assert_eq!(DeviceName::parse("cuda:3"), Ok(DeviceName::Cuda(3)));
        assert_eq!(DeviceName::parse("wgpu"), Ok(DeviceName::Wgpu(None)));
        assert_eq!(DeviceName::parse("wgpu:1"), Ok(DeviceName::Wgpu(Some(1))));
        assert_eq!(DeviceName::parse("wgpu:1").unwrap().to_string(), "wgpu:1");
        assert!(DeviceName::parse("wgpu1").is_err() && DeviceName::parse("wgpu:").is_err());
        let set = DeviceName::parse("cpu:4,0-2,6").unwrap();
        assert_eq!(set, DeviceName::CpuCores(vec![0, 1, 2, 4, 6]));
        assert_eq!(set.to_string(), "cpu:0-2,4,6");
        assert_eq!(DeviceName::parse("cpu:1").unwrap().to_string(), "cpu:1");
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let err = |s: &str| DeviceName::parse(s).unwrap_err().to_string();
        assert!(err("gpu").contains("`gpu` is not a device; use `cpu`"));
        assert!(err("cuda:x").contains("is not a device"));
        assert!(err("cuda:-1").contains("is not a device"));
        assert!(err("cpu:").contains("has an empty item"));
        assert!(err("cpu:0,,1").contains("has an empty item"));
        assert!(err("cpu:a").contains("`a` is not a core number"));
        assert!(err("cpu:3-1").contains("`3-1` ends before it starts"));
        assert!(err("cpu:0-2,1").contains("core 1 is named twice"));
        assert!(err("cpu:99999").contains("core 99999 is above 4095"));
    }

    #[test]
    fn overlap_is_shared_hardware() {
        let d = |s: &str| DeviceName::parse(s).unwrap();
        assert!(d("cpu").overlaps(&d("cpu:3")));
        assert!(d("cpu:0-1").overlaps(&d("cpu:1,5")));
        assert!(!d("cpu:0").overlaps(&d("cpu:1")));
        assert!(d("cuda:1").overlaps(&d("cuda:1")));
        assert!(!d("cuda:0").overlaps(&d("cuda:1")));
        assert!(!d("cpu").overlaps(&d("cuda:0")));
        assert!(d("wgpu").overlaps(&d("wgpu:1")) && !d("wgpu:0").overlaps(&d("wgpu:1")));
        assert!(!d("wgpu:0").overlaps(&d("cuda:0")));
    }

    #[test]
    fn replicated_devices_split_on_the_separator_only() {
        assert_eq!(replica_devices("cpu:0,2+cpu:1"), vec!["cpu:0,2", "cpu:1"]);
        assert_eq!(replica_devices("cuda:0"), vec!["cuda:0"]);
    }
}
