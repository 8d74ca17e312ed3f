//! Intel/AMD RAPL energy counters read through Linux powercap (`/sys/class/powercap`).
//!
//! Zones are `intel-rapl:N` (one per CPU package, `name` = `package-N`) and their subzones
//! `intel-rapl:N:M` (`core`, `uncore`, `dram`). AMD CPUs appear under the same `intel-rapl`
//! names on recent kernels; `amd-rapl` folders are accepted too. The CPU domain is the sum of
//! the package zones (their `core`/`uncore` subzones are parts of the package, so adding them
//! would count twice, and `psys` covers the whole platform); the RAM domain is the sum of the
//! `dram` zones.
//!
//! Since CVE-2020-8694 `energy_uj` is readable by root only on most distributions, so an
//! unreadable counter is an expected condition, reported with what to do about it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use api::meter::{Domain, EnergyCounter, MeterError, Source, wrapping_delta};

/// The powercap folder of a stock Linux system.
pub const DEFAULT_POWERCAP_ROOT: &str = "/sys/class/powercap";

/// Why RAPL cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RaplError {
    /// The powercap folder itself is missing (no powercap driver, a container, not Linux).
    #[error("{root} does not exist (no powercap driver, or not Linux)")]
    NoPowercap {
        /// The powercap root that was searched.
        root: PathBuf,
    },
    /// Powercap exists but exposes no RAPL zone.
    #[error("{root} has no intel-rapl zones")]
    NoZones {
        /// The powercap root that was searched.
        root: PathBuf,
    },
    /// A zone exists but its files cannot be read.
    #[error("{path} is not readable: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why, with the fix where there is one.
        reason: String,
    },
    /// A zone file holds something other than a number.
    #[error("{path} holds {content:?}, not a number of microjoules")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// The zones needed for a domain are missing.
    #[error("no RAPL {what} zone under {root}")]
    NoDomain {
        /// `package` or `dram`.
        what: &'static str,
        /// The powercap root that was searched.
        root: PathBuf,
    },
}

/// One RAPL zone found under the powercap root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaplZone {
    /// Zone id (`intel-rapl:0`, `intel-rapl:0:1`).
    pub id: String,
    /// Its folder.
    pub dir: PathBuf,
    /// The zone's `name` file (`package-0`, `dram`, `core`, `psys`).
    pub name: String,
}

impl RaplZone {
    fn energy_path(&self) -> PathBuf {
        self.dir.join("energy_uj")
    }

    fn range_path(&self) -> PathBuf {
        self.dir.join("max_energy_range_uj")
    }

    /// The domain this zone is summed into, if any.
    pub fn domain(&self) -> Option<Domain> {
        if self.name.starts_with("package") {
            Some(Domain::Cpu)
        } else if self.name == "dram" {
            Some(Domain::Ram)
        } else {
            None
        }
    }
}

/// The RAPL zones of a machine, found once; counters are opened from it per run.
#[derive(Debug, Clone, PartialEq)]
pub struct Rapl {
    root: PathBuf,
    zones: Vec<RaplZone>,
}

impl Rapl {
    /// Finds the RAPL zones under `root` (normally [`DEFAULT_POWERCAP_ROOT`]).
    ///
    /// Both layouts are understood: the flat one of `/sys/class/powercap` (every zone a link
    /// in the root) and the nested one of `/sys/devices/virtual/powercap/intel-rapl`.
    pub fn discover(root: &Path) -> Result<Rapl, RaplError> {
        if !root.is_dir() {
            return Err(RaplError::NoPowercap {
                root: root.to_path_buf(),
            });
        }
        // Keyed by zone id, so a zone reached both as a root link and as a nested folder
        // is kept once.
        let mut found = BTreeMap::new();
        collect_zones(root, 0, &mut found);
        let mut zones = Vec::new();
        for (id, dir) in found {
            let name_path = dir.join("name");
            let name = fs::read_to_string(&name_path)
                .map_err(|e| RaplError::Unreadable {
                    path: name_path.clone(),
                    reason: describe_io(&e),
                })?
                .trim()
                .to_string();
            zones.push(RaplZone { id, dir, name });
        }
        if zones.is_empty() {
            return Err(RaplError::NoZones {
                root: root.to_path_buf(),
            });
        }
        Ok(Rapl {
            root: root.to_path_buf(),
            zones,
        })
    }

    /// The powercap root searched.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every zone found, in id order.
    pub fn zones(&self) -> &[RaplZone] {
        &self.zones
    }

    /// Zones summed into `domain`.
    pub fn zones_for(&self, domain: Domain) -> Vec<&RaplZone> {
        self.zones
            .iter()
            .filter(|z| z.domain() == Some(domain))
            .collect()
    }

    /// Opens a counter for `domain` (CPU or RAM), reading every zone once as its origin.
    ///
    /// Fails when a zone of the domain is unreadable: a sum over only some packages would
    /// silently undercount.
    pub fn counter(&self, domain: Domain) -> Result<RaplCounter, RaplError> {
        let zones = self.zones_for(domain);
        if zones.is_empty() {
            return Err(RaplError::NoDomain {
                what: if domain == Domain::Ram {
                    "dram"
                } else {
                    "package"
                },
                root: self.root.clone(),
            });
        }
        let mut readers = Vec::with_capacity(zones.len());
        for zone in zones {
            let max_uj = read_u64(&zone.range_path())?;
            if max_uj == 0 {
                return Err(RaplError::Malformed {
                    path: zone.range_path(),
                    content: "0".to_string(),
                });
            }
            let last_uj = read_u64(&zone.energy_path())?;
            readers.push(ZoneReader {
                name: zone.name.clone(),
                energy_path: zone.energy_path(),
                max_uj,
                last_uj,
            });
        }
        Ok(RaplCounter {
            domain,
            root: self.root.clone(),
            zones: readers,
            total_uj: 0,
        })
    }

    /// One line for `llmeff env`: what each domain covers, or why it cannot be read.
    pub fn summary(&self) -> (bool, String) {
        let mut parts = Vec::new();
        let mut any = false;
        for domain in [Domain::Cpu, Domain::Ram] {
            let names: Vec<&str> = self
                .zones_for(domain)
                .iter()
                .map(|z| z.name.as_str())
                .collect();
            if names.is_empty() {
                parts.push(format!("{}: no zone", domain.name()));
                continue;
            }
            match self.counter(domain) {
                Ok(_) => {
                    any = true;
                    parts.push(format!("{}: {}", domain.name(), names.join(" + ")));
                }
                Err(e) => parts.push(format!("{}: {e}", domain.name())),
            }
        }
        (any, parts.join("; "))
    }
}

/// Walks the powercap tree for RAPL zone folders, descending only into zone folders (sysfs
/// folders also hold links such as `subsystem` that lead back up, i.e. cycles).
fn collect_zones(dir: &Path, depth: usize, found: &mut BTreeMap<String, PathBuf>) {
    if depth > 3 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if is_zone_id(&name) {
            found.entry(name).or_insert_with(|| path.clone());
            collect_zones(&path, depth + 1, found);
        } else if name == "intel-rapl" || name == "amd-rapl" {
            collect_zones(&path, depth + 1, found);
        }
    }
}

/// `intel-rapl:N` or `intel-rapl:N:M` (and the `amd-rapl` equivalents).
fn is_zone_id(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("intel-rapl:")
        .or_else(|| name.strip_prefix("amd-rapl:"))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split(':').collect();
    (1..=2).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "permission denied; run as root or `chmod o+r` the file (root-only since CVE-2020-8694)"
                .to_string()
        }
        io::ErrorKind::NotFound => "it does not exist".to_string(),
        _ => e.to_string(),
    }
}

fn read_u64(path: &Path) -> Result<u64, RaplError> {
    let text = fs::read_to_string(path).map_err(|e| RaplError::Unreadable {
        path: path.to_path_buf(),
        reason: describe_io(&e),
    })?;
    text.trim().parse().map_err(|_| RaplError::Malformed {
        path: path.to_path_buf(),
        content: text.trim().to_string(),
    })
}

#[derive(Debug)]
struct ZoneReader {
    name: String,
    energy_path: PathBuf,
    max_uj: u64,
    last_uj: u64,
}

/// A RAPL energy counter: the sum of a domain's zones, wrap-around unwrapped per zone.
#[derive(Debug)]
pub struct RaplCounter {
    domain: Domain,
    root: PathBuf,
    zones: Vec<ZoneReader>,
    total_uj: u128,
}

impl EnergyCounter for RaplCounter {
    fn domain(&self) -> Domain {
        self.domain
    }

    fn source(&self) -> Source {
        Source::Rapl
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
        format!("rapl {} ({})", names.join(" + "), self.root.display())
    }

    fn read_j(&mut self) -> Result<f64, MeterError> {
        // Read every zone before updating any, so a failed read leaves the state consistent
        // and the next successful read still covers the whole interval.
        let mut now = Vec::with_capacity(self.zones.len());
        for zone in &self.zones {
            let uj = read_u64(&zone.energy_path).map_err(|e| MeterError {
                meter: "rapl".to_string(),
                reason: e.to_string(),
            })?;
            now.push(uj);
        }
        if let Some((zone, uj)) = self
            .zones
            .iter()
            .zip(&now)
            .find(|(z, uj)| **uj < z.last_uj && z.last_uj > z.max_uj)
        {
            // Below its last value yet above the range it wraps at: not a wrap, a broken or
            // reset counter; unwrapping it would invent joules.
            return Err(MeterError {
                meter: "rapl".to_string(),
                reason: format!(
                    "{}: counter went from {} to {uj} µJ, outside its range of {} µJ",
                    zone.energy_path.display(),
                    zone.last_uj,
                    zone.max_uj
                ),
            });
        }
        for (zone, uj) in self.zones.iter_mut().zip(now) {
            self.total_uj += u128::from(wrapping_delta(zone.last_uj, uj, zone.max_uj));
            zone.last_uj = uj;
        }
        Ok(self.total_uj as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_are_recognised() {
        assert!(is_zone_id("intel-rapl:0"));
        assert!(is_zone_id("intel-rapl:1:0"));
        assert!(is_zone_id("amd-rapl:0"));
        assert!(!is_zone_id("intel-rapl"));
        assert!(!is_zone_id("intel-rapl:"));
        assert!(!is_zone_id("intel-rapl:0:1:2"));
        assert!(!is_zone_id("intel-rapl-mmio:0"));
    }

    #[test]
    fn permission_denied_says_what_to_do() {
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        let msg = RaplError::Unreadable {
            path: PathBuf::from("/sys/class/powercap/intel-rapl:0/energy_uj"),
            reason: describe_io(&e),
        }
        .to_string();
        assert!(
            msg.starts_with(
                "/sys/class/powercap/intel-rapl:0/energy_uj is not readable: permission denied; \
                 run as root or `chmod o+r`"
            ),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_root_is_reported() {
        let err = Rapl::discover(Path::new("/nonexistent/powercap")).unwrap_err();
        assert!(matches!(err, RaplError::NoPowercap { .. }), "{err}");
    }
}
