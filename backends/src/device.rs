//! Device names (`cpu`, `cuda:N`): parsing them, listing the usable ones, and, with the `cuda`
//! feature, probing for the CUDA driver before burn touches it (burn panics without one).

use api::runtime::RuntimeError;

/// A parsed device name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// The host CPU through burn-flex.
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(usize),
}

/// Names of the devices this build can use right now.
pub(crate) fn available() -> Vec<String> {
    let mut names = vec!["cpu".to_string()];
    names.extend((0..cuda_device_count().unwrap_or(0)).map(|i| format!("cuda:{i}")));
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
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => Some(0),
        Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()),
        None => None,
    };
    let Some(ordinal) = ordinal else {
        return Err(unavailable(format!(
            "unknown device name; valid devices: {} (cuda:N needs the `cuda` feature)",
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
    }

    #[test]
    fn unknown_names_list_valid_devices() {
        for bad in ["gpu", "cuda:x", "cuda0", ""] {
            match parse(bad) {
                Err(RuntimeError::DeviceUnavailable { device, reason }) => {
                    assert_eq!(device, bad);
                    assert!(reason.contains("cpu"), "{reason}");
                }
                other => panic!("{bad}: unexpected {other:?}"),
            }
        }
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
