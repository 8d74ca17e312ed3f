//! The engine's `Runtime` implemented with burn: resolving a spec's model source and device and
//! loading the model on the matching backend (burn-flex on the CPU, burn-cuda on CUDA).

use engine::runtime::{LoadedModel, ModelSpec, Runtime, RuntimeError};

use crate::device::{self, DeviceKind};
use crate::handle::BurnModel;
use crate::llama::LoadedLlama;
use crate::source::{self, ResolvedSource};

/// Loads Llama-family models on burn backends.
#[derive(Debug, Clone, Copy, Default)]
pub struct BurnRuntime;

impl BurnRuntime {
    /// A runtime; it holds no state, models own their devices' resources.
    pub fn new() -> Self {
        Self
    }

    /// Like [`Runtime::load`], returning the concrete handle (which also exposes logits).
    pub fn load_model(&self, spec: &ModelSpec) -> Result<BurnModel, RuntimeError> {
        // Until quantized weights are implemented, refuse rather than run full precision under
        // a quantized label.
        if let Some(q) = &spec.quantization {
            return Err(RuntimeError::UnsupportedConfig {
                path: spec.source.clone(),
                reason: format!("quantization {q} is not supported by this backend yet"),
            });
        }
        let kind = device::parse(&spec.device)?;
        let source = source::resolve(&spec.source)?;
        if let Some(revision) = &spec.revision {
            return Err(RuntimeError::InvalidInput(format!(
                "revision `{revision}` applies only to Hub ids; `{}` is a local model",
                spec.source
            )));
        }
        match kind {
            DeviceKind::Cpu => load_on::<burn_flex::Flex>(&source, spec, burn_flex::FlexDevice),
            DeviceKind::Cuda(index) => load_cuda(&source, spec, index),
        }
    }
}

fn load_on<B: burn::tensor::backend::Backend>(
    source: &ResolvedSource,
    spec: &ModelSpec,
    device: B::Device,
) -> Result<BurnModel, RuntimeError> {
    let model = LoadedLlama::<B>::load(source, spec, device)?;
    Ok(BurnModel::new(Box::new(model)))
}

#[cfg(feature = "cuda")]
fn load_cuda(
    source: &ResolvedSource,
    spec: &ModelSpec,
    index: usize,
) -> Result<BurnModel, RuntimeError> {
    load_on::<burn_cuda::Cuda>(source, spec, burn_cuda::CudaDevice::new(index))
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
