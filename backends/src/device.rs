//! Device names (`cpu`, `cpu:<cores>`, `cuda:N`): parsing them, listing the usable ones, and,
//! with the `cuda` feature, probing for the CUDA driver before burn touches it (burn panics
//! without one).

use api::runtime::RuntimeError;

use crate::cores::{self, CoreSet};

/// A parsed device name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// The host CPU, every core this process may use (rayon's global pool).
    Cpu,
    /// The host CPU, on a pool pinned to these cores (`cpu:0-3`, `cpu:4,6`).
    CpuCores(CoreSet),
    /// A CUDA device by ordinal.
    Cuda(usize),
    /// A wgpu adapter (`None`: the one wgpu prefers).
    Wgpu(Option<usize>),
}

impl DeviceKind {
    /// Whether the model lives in host memory and computes on the CPU.
    pub(crate) fn is_cpu(&self) -> bool {
        matches!(self, DeviceKind::Cpu | DeviceKind::CpuCores(_))
    }
}

/// Names of the devices this build can use right now.
pub(crate) fn available() -> Vec<String> {
    let mut names = vec!["cpu".to_string()];
    names.extend((0..cuda_device_count().unwrap_or(0)).map(|i| format!("cuda:{i}")));
    #[cfg(feature = "wgpu")]
    names.extend(crate::wgpu_adapter::names());
    names
}

/// Parses a device name and checks the device can be used by this build.
pub(crate) fn parse(name: &str) -> Result<DeviceKind, RuntimeError> {
    let unavailable = |reason: String| RuntimeError::DeviceUnavailable {
        device: name.to_string(),
        reason,
    };
    if name == "cpu" {
        return Ok(DeviceKind::Cpu);
    }
    if let Some(list) = name.strip_prefix("cpu:") {
        let set = CoreSet::parse(list).map_err(|e| unavailable(e.to_string()))?;
        let allowed = cores::allowed_cores().map_err(|e| unavailable(e.to_string()))?;
        set.check_within(&allowed)
            .map_err(|e| unavailable(e.to_string()))?;
        return Ok(DeviceKind::CpuCores(set));
    }
    if name == "wgpu" || name.starts_with("wgpu:") {
        return match api::device::DeviceName::parse(name) {
            Ok(api::device::DeviceName::Wgpu(ordinal)) if cfg!(feature = "wgpu") => {
                Ok(DeviceKind::Wgpu(ordinal))
            }
            Ok(_) => Err(unavailable(
                "this binary was built without the `wgpu` feature (rebuild with `--features wgpu`)"
                    .into(),
            )),
            Err(e) => Err(unavailable(e.to_string())),
        };
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => Some(0),
        Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()),
        None => None,
    };
    let Some(ordinal) = ordinal else {
        return Err(unavailable(format!(
            "unknown device name; valid devices: {}, cpu:<cores> (a core set such as `cpu:0-3` or `cpu:4,6`) (cuda:N needs the `cuda` feature, wgpu:N the `wgpu` feature)",
            available().join(", ")
        )));
    };
    match cuda_device_count() {
        Ok(count) if ordinal < count => Ok(DeviceKind::Cuda(ordinal)),
        Ok(count) => Err(unavailable(format!(
            "only {count} CUDA device(s) found; valid devices: {}",
            available().join(", ")
        ))),
        Err(reason) => Err(unavailable(reason.to_string())),
    }
}

/// Why CUDA devices cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
enum CudaUnavailable {
    /// This build has no CUDA backend.
    #[cfg(not(feature = "cuda"))]
    #[error("this binary was built without the `cuda` feature (rebuild with `--features cuda`)")]
    NotBuilt,
    /// libcuda is not installed.
    #[cfg(feature = "cuda")]
    #[error("no CUDA driver: libcuda could not be loaded")]
    NoDriver,
    /// `cuInit` failed (the driver's error, as it describes itself).
    #[cfg(feature = "cuda")]
    #[error("no usable CUDA driver: cuInit failed: {0}")]
    InitFailed(String),
    /// Counting devices failed (the driver's error).
    #[cfg(feature = "cuda")]
    #[error("cannot count CUDA devices: {0}")]
    CountFailed(String),
}

/// Number of CUDA devices, or why CUDA cannot be used.
#[cfg(feature = "cuda")]
fn cuda_device_count() -> Result<usize, CudaUnavailable> {
    use std::sync::OnceLock;
    // The driver is process-global; probe it once.
    static PROBE: OnceLock<Result<usize, CudaUnavailable>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // SAFETY: only tries to dlopen libcuda; no symbol is called.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err(CudaUnavailable::NoDriver);
            }
            cudarc::driver::result::init()
                .map_err(|e| CudaUnavailable::InitFailed(format!("{e:?}")))?;
            let count = cudarc::driver::result::device::get_count()
                .map_err(|e| CudaUnavailable::CountFailed(format!("{e:?}")))?;
            Ok(usize::try_from(count).unwrap_or(0))
        })
        .clone()
}

#[cfg(not(feature = "cuda"))]
fn cuda_device_count() -> Result<usize, CudaUnavailable> {
    Err(CudaUnavailable::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available() {
        assert_eq!(parse("cpu").unwrap(), DeviceKind::Cpu);
        assert_eq!(available()[0], "cpu");
        // Core sets are not listed one by one.
        assert!(!available().iter().any(|d| d.starts_with("cpu:")));
    }

    #[test]
    fn unknown_names_list_valid_devices() {
        for bad in ["gpu", "cuda:x", "cuda0", "", "cpu0", "cpus:0"] {
            match parse(bad) {
                Err(RuntimeError::DeviceUnavailable { device, reason }) => {
                    assert_eq!(device, bad);
                    assert!(reason.contains("cpu"), "{reason}");
                    assert!(reason.contains("cpu:<cores>"), "{reason}");
                }
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
    }

    /// The reason `name` is refused, which must be a `DeviceUnavailable` about `name`.
    fn refusal(name: &str) -> String {
        match parse(name) {
            Err(RuntimeError::DeviceUnavailable { device, reason }) => {
                assert_eq!(device, name);
                reason
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
    }

    #[test]
    fn core_sets_name_cpu_devices() {
        let allowed = cores::allowed_cores().unwrap();
        let first = allowed.cores()[0];
        let kind = parse(&format!("cpu:{first}")).unwrap();
        assert_eq!(
            kind,
            DeviceKind::CpuCores(CoreSet::from_cores([first]).unwrap())
        );
        assert!(kind.is_cpu() && DeviceKind::Cpu.is_cpu() && !DeviceKind::Cuda(0).is_cpu());
        assert_eq!(
            parse(&format!("cpu:{allowed}")).unwrap(),
            DeviceKind::CpuCores(allowed)
        );
    }

    #[test]
    fn bad_core_sets_say_what_is_wrong() {
        assert!(refusal("cpu:").contains("names no cores"));
        assert!(refusal("cpu:0,,1").contains("has an empty item"));
        assert!(refusal("cpu:a").contains("`a` is not a core number"));
        assert!(refusal("cpu:3-1").contains("ends before it starts"));
        assert!(refusal("cpu:0,0").contains("core 0 is named twice"));
        assert!(refusal("cpu:4096").contains("above 4095"));
        let reason = refusal("cpu:4095");
        assert!(
            reason.starts_with("core 4095 is not one this process may run on ("),
            "{reason}"
        );
        assert!(reason.contains(&cores::allowed_cores().unwrap().to_string()));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_says_so() {
        match parse("cuda:0") {
            Err(RuntimeError::DeviceUnavailable { reason, .. }) => {
                assert!(reason.contains("`cuda` feature"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
