//! The engine's `Runtime` implemented with burn: resolving a spec's model source (alias, folder,
//! Hub id or preset) and device, and loading the model on the matching backend (burn-flex on the
//! CPU, burn-cuda on CUDA).

use engine::runtime::{LoadedModel, ModelSpec, Runtime, RuntimeError};

use crate::device::{self, DeviceKind};
use crate::handle::BurnModel;
use crate::hub::HubCache;
use crate::llama::LoadedLlama;
use crate::source::{self, ResolvedSource};

/// Loads Llama-family models on burn backends.
///
/// It holds only where Hub models are cached; models own their devices' resources.
#[derive(Debug, Clone)]
pub struct BurnRuntime {
    hub: HubCache,
}

impl Default for BurnRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl BurnRuntime {
    /// A runtime using the Hub cache and offline setting of the environment
    /// ([`HubCache::from_env`]).
    pub fn new() -> Self {
        Self::with_hub_cache(HubCache::from_env())
    }

    /// A runtime finding Hub ids in `hub` (tests use this to avoid global environment).
    pub fn with_hub_cache(hub: HubCache) -> Self {
        Self { hub }
    }

    /// Where Hub ids are looked for.
    pub fn hub_cache(&self) -> &HubCache {
        &self.hub
    }

    /// Like [`Runtime::load`], returning the concrete handle (which also exposes logits).
    pub fn load_model(&self, spec: &ModelSpec) -> Result<BurnModel, RuntimeError> {
        let kind = device::parse(&spec.device)?;
        let source = source::resolve(
            &spec.source,
            spec.revision.as_deref(),
            spec.weights,
            &self.hub,
        )?;
        match kind {
            DeviceKind::Cpu => {
                load_on::<burn_flex::Flex>(&source, spec, burn_flex::FlexDevice, host_kernels())
            }
            DeviceKind::Cuda(index) => load_cuda(&source, spec, index),
        }
    }
}

/// Whether f32 linear layers on the CPU use llmeff's kernels (`crate::kernels`) rather than
/// burn-flex's matmul; `LLMEFF_CPU_MATMUL=burn` selects burn's, to compare the two.
fn host_kernels() -> bool {
    std::env::var("LLMEFF_CPU_MATMUL").map_or(true, |v| v != "burn")
}

fn load_on<B: burn::tensor::backend::Backend>(
    source: &ResolvedSource,
    spec: &ModelSpec,
    device: B::Device,
    host_kernels: bool,
) -> Result<BurnModel, RuntimeError> {
    let model = LoadedLlama::<B>::load(source, spec, device, host_kernels)?;
    Ok(BurnModel::new(Box::new(model)))
}

#[cfg(feature = "cuda")]
fn load_cuda(
    source: &ResolvedSource,
    spec: &ModelSpec,
    index: usize,
) -> Result<BurnModel, RuntimeError> {
    load_on::<burn_cuda::Cuda>(source, spec, burn_cuda::CudaDevice::new(index), false)
}

#[cfg(not(feature = "cuda"))]
fn load_cuda(
    _source: &ResolvedSource,
    spec: &ModelSpec,
    _index: usize,
) -> Result<BurnModel, RuntimeError> {
    // `device::parse` already refuses CUDA names in this build; kept total for the match.
    Err(RuntimeError::DeviceUnavailable {
        device: spec.device.clone(),
        reason: "this binary was built without the `cuda` feature".into(),
    })
}

impl Runtime for BurnRuntime {
    fn load(&self, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        Ok(Box::new(self.load_model(spec)?))
    }

    fn devices(&self) -> Vec<String> {
        device::available()
    }
}
