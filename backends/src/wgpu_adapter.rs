//! wgpu adapters as devices (`wgpu`, `wgpu:N`): which adapter a name selects, what it is
//! (name, driver, kind), and the burn device that runs on it.
//!
//! `wgpu:N` is the Nth adapter wgpu lists for the graphics API burn uses (Vulkan on Linux,
//! Metal on macOS); `wgpu` is the one wgpu prefers for performance. burn's `WgpuDevice` names
//! adapters by type and index within the type, so the adapter's place among those of its type
//! is what is handed to burn: both enumerate in the same order.

use api::runtime::RuntimeError;
use burn_wgpu::WgpuDevice;
use burn_wgpu::graphics::{AutoGraphicsApi, GraphicsApi};

/// One adapter, as wgpu describes it, with the burn device that selects it.
#[derive(Debug, Clone)]
pub(crate) struct WgpuAdapter {
    /// burn's name for the adapter.
    pub device: WgpuDevice,
    /// The adapter's name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA GeForce RTX 4090`).
    pub name: String,
    /// The driver and its version (`llvmpipe, Mesa 22.3.6 (LLVM 15.0.6)`).
    pub driver: String,
    /// Discrete, integrated, virtual, CPU or other.
    pub kind: String,
    /// The graphics API (`vulkan`, `metal`).
    pub backend: String,
    /// Whether shaders can compute in f16 (`shader-f16`).
    pub shader_f16: bool,
}

impl WgpuAdapter {
    /// How runs record it: `name (kind, backend)`.
    pub(crate) fn describe(&self) -> String {
        format!("{} ({}, {})", self.name, self.kind, self.backend)
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: AutoGraphicsApi::backend().into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// The adapter for `ordinal` (`None`: the one wgpu prefers for performance), or why there is
/// none; the error lists the adapters there are. wgpu's adapter futures resolve at once on
/// native backends, so futures-lite's `block_on` drives them.
pub(crate) fn select(device: &str, ordinal: Option<usize>) -> Result<WgpuAdapter, RuntimeError> {
    let instance = instance();
    let listed = futures_lite::future::block_on(
        instance.enumerate_adapters(AutoGraphicsApi::backend().into()),
    );
    let unavailable = |reason: String| RuntimeError::DeviceUnavailable {
        device: device.to_string(),
        reason,
    };
    if listed.is_empty() {
        return Err(unavailable(format!(
            "wgpu lists no {:?} adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1 for lavapipe)",
            AutoGraphicsApi::backend()
        )));
    }
    let index = match ordinal {
        Some(n) if n < listed.len() => n,
        Some(n) => {
            return Err(unavailable(format!(
                "wgpu:{n} does not exist; the adapters are: {}",
                list(&listed)
            )));
        }
        None => {
            let preferred = futures_lite::future::block_on(instance.request_adapter(
                &wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                },
            ))
            .map(|a| a.get_info())
            .ok();
            preferred
                .and_then(|info| listed.iter().position(|a| a.get_info() == info))
                .unwrap_or(0)
        }
    };
    let info = listed[index].get_info();
    let same_type = listed[..index]
        .iter()
        .filter(|a| a.get_info().device_type == info.device_type)
        .count();
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(same_type),
        wgpu::DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(same_type),
        wgpu::DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(same_type),
        // burn selects the first CPU adapter only.
        wgpu::DeviceType::Cpu if same_type == 0 => WgpuDevice::Cpu,
        other => {
            return Err(unavailable(format!(
                "adapter {} is of type {other:?}, which burn cannot select; the adapters are: {}",
                info.name,
                list(&listed)
            )));
        }
    };
    Ok(WgpuAdapter {
        device,
        name: info.name.clone(),
        driver: format!("{}, {}", info.driver, info.driver_info),
        kind: format!("{:?}", info.device_type),
        backend: format!("{:?}", info.backend).to_lowercase(),
        shader_f16: listed[index]
            .features()
            .contains(wgpu::Features::SHADER_F16),
    })
}

/// Every adapter wgpu lists, as `wgpu:N` names (empty where there is none).
pub(crate) fn names() -> Vec<String> {
    let listed = futures_lite::future::block_on(
        instance().enumerate_adapters(AutoGraphicsApi::backend().into()),
    );
    (0..listed.len()).map(|i| format!("wgpu:{i}")).collect()
}

fn list(adapters: &[wgpu::Adapter]) -> String {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            format!("wgpu:{i} {} ({:?})", info.name, info.device_type)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
