//! The device `llmeff bench --device` measures on, checked against what this build can run
//! before any model loads: the CPU (llmeff's kernels, with the CPU-only checks: copy bandwidth,
//! steal, MBU against the measured read bandwidth) or a GPU through burn (`cuda:N`, `wgpu`,
//! `wgpu:N`), whose rows leave those checks null.

use api::device::{DeviceName, DeviceNameError};
use api::runtime::Compute;

/// The GPU backends compiled into this build (the binary's `cuda` and `wgpu` features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuiltBackends {
    /// burn-cuda (`--features cuda`).
    pub cuda: bool,
    /// burn-wgpu (`--features wgpu`).
    pub wgpu: bool,
}

/// Why the benchmark cannot run on a device, or not with the forward pass asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// Not a device name.
    #[error("{source}; devices here: {}", valid.join(", "))]
    Unknown {
        /// Why the name does not parse.
        source: DeviceNameError,
        /// The devices this build can use on this machine.
        valid: Vec<String>,
    },
    /// A GPU whose backend this build does not have.
    #[error(
        "`{device}` needs a build with the `{feature}` feature (cargo build --release --features {feature}); this build's devices: {}",
        valid.join(", ")
    )]
    NotBuilt {
        /// The device asked for.
        device: String,
        /// The cargo feature that adds its backend.
        feature: &'static str,
        /// The devices this build can use on this machine.
        valid: Vec<String>,
    },
    /// A CPU core set: the benchmark's copy check and MBU denominator use the whole pool.
    #[error(
        "`{device}` is a core set; the benchmark measures `cpu`, every core the process may use (--threads sizes its pool); run it under `taskset -c {cores}` to measure those cores"
    )]
    CoreSet {
        /// The device asked for.
        device: String,
        /// Its cores, as written.
        cores: String,
    },
    /// `--forward host` on a GPU: llmeff's kernels compute on host memory only.
    #[error(
        "forward pass `host` runs on the CPU only (llmeff's kernels read host memory); `{device}` runs on burn: drop --forward or pass --forward burn"
    )]
    HostOffCpu {
        /// The device asked for.
        device: String,
    },
}

/// The device `name` denotes, if this build can measure on it; `valid` lists the devices
/// this build can use here (asked only for an error message: listing GPUs probes drivers).
/// A GPU this build has a backend for but the machine lacks is the runtime's to refuse, with
/// the driver's reason, when the first model loads.
pub fn parse_device(
    name: &str,
    built: BuiltBackends,
    valid: &dyn Fn() -> Vec<String>,
) -> Result<DeviceName, DeviceError> {
    let device = DeviceName::parse(name).map_err(|source| DeviceError::Unknown {
        source,
        valid: with_preferred_wgpu(valid()),
    })?;
    let feature = match &device {
        DeviceName::Cpu => return Ok(device),
        DeviceName::CpuCores(_) => {
            return Err(DeviceError::CoreSet {
                device: name.to_string(),
                cores: name.trim_start_matches("cpu:").to_string(),
            });
        }
        DeviceName::Cuda(_) if !built.cuda => "cuda",
        DeviceName::Wgpu(_) if !built.wgpu => "wgpu",
        DeviceName::Cuda(_) | DeviceName::Wgpu(_) => return Ok(device),
    };
    Err(DeviceError::NotBuilt {
        device: name.to_string(),
        feature,
        valid: with_preferred_wgpu(valid()),
    })
}

/// `valid` with `wgpu` (the adapter wgpu prefers) before the first listed `wgpu:N`.
fn with_preferred_wgpu(mut valid: Vec<String>) -> Vec<String> {
    if let Some(at) = valid.iter().position(|d| d.starts_with("wgpu:")) {
        valid.insert(at, "wgpu".into());
    }
    valid
}

/// The forward pass measured on `device`: `forward` where it can run there, else llmeff's
/// kernels on the CPU and burn elsewhere (the only pass a GPU has).
pub fn forward_for(device: &DeviceName, forward: Option<Compute>) -> Result<Compute, DeviceError> {
    match (forward, device.is_cpu()) {
        (Some(Compute::Host), false) => Err(DeviceError::HostOffCpu {
            device: device.to_string(),
        }),
        (Some(compute), _) => Ok(compute),
        (None, true) => Ok(Compute::Host),
        (None, false) => Ok(Compute::Burn),
    }
}

/// The burn backend a device's rows run on (`burn-cuda`, `burn-wgpu`), or `None` on the CPU,
/// where the forward pass decides.
pub fn gpu_backend(device: &DeviceName) -> Option<&'static str> {
    match device {
        DeviceName::Cpu | DeviceName::CpuCores(_) => None,
        DeviceName::Cuda(_) => Some("burn-cuda"),
        DeviceName::Wgpu(_) => Some("burn-wgpu"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> Vec<String> {
        vec!["cpu".into(), "wgpu:0".into()]
    }

    #[test]
    fn a_gpu_without_its_backend_is_refused_with_the_feature_and_the_devices() {
        let none = BuiltBackends::default();
        let err = parse_device("wgpu", none, &|| vec!["cpu".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`wgpu` needs a build with the `wgpu` feature (cargo build --release --features wgpu); this build's devices: cpu"
        );
        let err = parse_device("cuda:0", none, &here).unwrap_err();
        assert!(
            err.to_string().contains("`cuda` feature")
                && err.to_string().ends_with("cpu, wgpu, wgpu:0"),
            "{err}"
        );
        let built = BuiltBackends {
            cuda: true,
            wgpu: true,
        };
        assert_eq!(
            parse_device("wgpu:1", built, &here),
            Ok(DeviceName::Wgpu(Some(1)))
        );
        assert_eq!(parse_device("cuda", built, &here), Ok(DeviceName::Cuda(0)));
        assert_eq!(parse_device("cpu", none, &here), Ok(DeviceName::Cpu));
    }

    #[test]
    fn a_name_that_is_no_device_lists_the_devices_here() {
        let text = parse_device("gpu", BuiltBackends::default(), &here)
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("`gpu` is not a device"), "{text}");
        assert!(
            text.ends_with("; devices here: cpu, wgpu, wgpu:0"),
            "{text}"
        );
        let text = parse_device("cpu:0-1", BuiltBackends::default(), &here)
            .unwrap_err()
            .to_string();
        assert!(text.contains("taskset -c 0-1"), "{text}");
    }

    #[test]
    fn gpus_run_on_burn_and_refuse_the_host_kernels() {
        let cuda = DeviceName::Cuda(0);
        assert_eq!(forward_for(&cuda, None), Ok(Compute::Burn));
        assert_eq!(forward_for(&cuda, Some(Compute::Burn)), Ok(Compute::Burn));
        assert!(
            forward_for(&cuda, Some(Compute::Host))
                .unwrap_err()
                .to_string()
                .contains("`cuda:0` runs on burn")
        );
        assert_eq!(forward_for(&DeviceName::Cpu, None), Ok(Compute::Host));
        assert_eq!(
            forward_for(&DeviceName::Cpu, Some(Compute::Burn)),
            Ok(Compute::Burn)
        );
        assert_eq!(gpu_backend(&DeviceName::Wgpu(None)), Some("burn-wgpu"));
        assert_eq!(gpu_backend(&cuda), Some("burn-cuda"));
        assert_eq!(gpu_backend(&DeviceName::Cpu), None);
    }
}
