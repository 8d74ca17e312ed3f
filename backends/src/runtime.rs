//! The engine's `Runtime` implemented with burn: resolving a spec's model source (alias, folder,
//! Hub id or preset) and device, and loading the model on the matching backend (burn-flex on the
//! CPU, burn-cuda on CUDA); a model on a core set (`cpu:0-3`) computes on its own pinned pool.

use api::runtime::{Compute, LoadedModel, MemoryEstimate, ModelSpec, Runtime, RuntimeError};

use crate::cores::{self, CoreSet};
use crate::device::{self, DeviceKind};
use crate::handle::BurnModel;
use crate::hub::HubCache;
use crate::llama::memory::{self, MemoryBudget};
use crate::llama::{BurnQuantFormats, ModelFiles, PassChoice, load_llama};
use crate::pinned::PinnedModel;
use crate::source::{self, ResolvedSource};

/// Loads Llama-family models on burn backends.
///
/// It holds where Hub models are cached; each spec names its forward pass
/// ([`ModelSpec::compute`]); models own their devices' resources.
#[derive(Debug, Clone)]
pub struct BurnRuntime {
    hub: HubCache,
    /// A ceiling on the memory models may take, on top of what the machine has available.
    memory_limit: Option<u64>,
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
        Self {
            hub,
            memory_limit: None,
        }
    }

    /// The same runtime refusing models whose weights or KV cache would exceed `bytes` (as
    /// well as the machine's available memory, always checked on the CPU).
    pub fn with_memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// What loads and generations are checked against on a device.
    fn budget(&self, kind: &DeviceKind) -> MemoryBudget {
        MemoryBudget {
            host: kind.is_cpu(),
            device_free: match *kind {
                DeviceKind::Cuda(ordinal) => gpu_free_bytes(ordinal),
                _ => None,
            },
            cap: self.memory_limit,
        }
    }

    /// Like [`Runtime::estimate_memory`], always with an estimate: the memory loading `spec`
    /// and generating `batch` sequences of up to `max_len` positions (longest prompt + new
    /// tokens) takes, from the model's config alone. A Hub id not in the cache is resolved as
    /// a load would (which may download its config).
    pub fn memory_estimate(
        &self,
        spec: &ModelSpec,
        batch: usize,
        max_len: usize,
    ) -> Result<MemoryEstimate, RuntimeError> {
        let (kind, source) = self.locate(spec)?;
        let config = ModelFiles::read(&source)?.config;
        let host = uses_host_kernels(spec, &kind)?;
        let (weight_bytes, load_peak_bytes) =
            memory::weight_bytes(&config, spec.dtype, spec.quantization, host)?;
        let kv_cache_bytes =
            memory::kv_cache_bytes(&config, spec.dtype, host, batch, max_len, max_len)?;
        Ok(MemoryEstimate {
            weight_bytes,
            load_peak_bytes,
            kv_cache_bytes,
            available_bytes: self.budget(&kind).available(),
        })
    }

    /// The device a spec names and where its model's files are.
    fn locate(
        &self,
        spec: &ModelSpec,
    ) -> Result<(DeviceKind, source::ResolvedSource), RuntimeError> {
        let kind = device::parse(&spec.device)?;
        let source = source::resolve(
            &spec.source,
            spec.revision.as_deref(),
            spec.weights,
            &self.hub,
        )?;
        Ok((kind, source))
    }

    /// Where Hub ids are looked for.
    pub fn hub_cache(&self) -> &HubCache {
        &self.hub
    }

    /// Like [`Runtime::load`], returning the concrete handle (which also exposes logits).
    pub fn load_model(&self, spec: &ModelSpec) -> Result<BurnModel, RuntimeError> {
        let (kind, source) = self.locate(spec)?;
        let budget = self.budget(&kind);
        let load_cpu = || {
            load_on::<burn_flex::Flex>(
                &source,
                spec,
                burn_flex::FlexDevice,
                if uses_host_kernels(spec, &kind)? {
                    PassChoice::Host
                } else {
                    PassChoice::Burn(BurnQuantFormats::FLEX)
                },
                budget,
            )
        };
        match &kind {
            DeviceKind::Cpu => load_cpu(),
            DeviceKind::CpuCores(set) => {
                // The pool first: a set that cannot be pinned fails before the weights load.
                // The weights load on it too: the pinned threads touch their pages first, so
                // on a machine with several memory nodes they lie on the node of the cores
                // that read them every step (a load is never timed, however slow one core is).
                let pool = pinned_pool(spec, set)?;
                let model = pool.install(load_cpu)?;
                Ok(BurnModel::new(Box::new(PinnedModel::new(
                    model.into_inner(),
                    set.clone(),
                    pool,
                ))))
            }
            DeviceKind::Cuda(index) => load_cuda(&source, spec, *index, budget),
            DeviceKind::Wgpu(ordinal) => load_wgpu(&source, spec, *ordinal, budget),
        }
    }
}

/// Whether `spec` runs on llmeff's host kernels on a `kind` device; `compute: "host"` where
/// they cannot run is an error rather than a silent run on burn.
fn uses_host_kernels(spec: &ModelSpec, kind: &DeviceKind) -> Result<bool, RuntimeError> {
    let on_cpu = kind.is_cpu();
    let host = spec
        .compute
        .uses_host_kernels(on_cpu, spec.dtype, spec.quantization);
    if spec.compute == Compute::Host && !host {
        return Err(RuntimeError::InvalidInput(
            match (on_cpu, spec.quantization) {
                (false, _) => format!(
                    "compute \"host\" runs on the CPU only; {} runs on \"burn\" or \"auto\"",
                    spec.device
                ),
                (true, q) => format!(
                    "compute \"host\" needs quantization block sizes that are a multiple of {}; {} runs on \"burn\" or \"auto\"",
                    api::runtime::HOST_BLOCK_MULTIPLE,
                    q.map_or_else(|| "this model".to_string(), |q| q.to_string()),
                ),
            },
        ));
    }
    Ok(host)
}

/// A pool pinned to `set` for a model of `spec`; a failure is the device's.
fn pinned_pool(spec: &ModelSpec, set: &CoreSet) -> Result<rayon::ThreadPool, RuntimeError> {
    cores::pinned_pool(set).map_err(|e| RuntimeError::DeviceUnavailable {
        device: spec.device.clone(),
        reason: e.to_string(),
    })
}

fn load_on<B: burn::tensor::backend::Backend>(
    source: &ResolvedSource,
    spec: &ModelSpec,
    device: B::Device,
    pass: PassChoice,
    budget: MemoryBudget,
) -> Result<BurnModel, RuntimeError> {
    let model = load_llama::<B>(source, spec, device, pass, budget, None)?;
    Ok(BurnModel::new(model))
}

#[cfg(feature = "wgpu")]
fn load_wgpu(
    source: &ResolvedSource,
    spec: &ModelSpec,
    ordinal: Option<usize>,
    budget: MemoryBudget,
) -> Result<BurnModel, RuntimeError> {
    let adapter = crate::wgpu_adapter::select(&spec.device, ordinal)?;
    if spec.dtype == api::runtime::DType::F16 && !adapter.shader_f16 {
        return Err(RuntimeError::UnsupportedDType {
            dtype: spec.dtype,
            device: format!("{} ({}: no shader-f16)", spec.device, adapter.name),
        });
    }
    let info = crate::llama::AdapterInfo {
        name: adapter.describe(),
        driver: adapter.driver.clone(),
    };
    let model = load_llama::<burn_wgpu::Wgpu>(
        source,
        spec,
        adapter.device.clone(),
        PassChoice::Burn(BurnQuantFormats::CUBECL),
        budget,
        Some(info),
    )?;
    let device = adapter.device.clone();
    Ok(BurnModel::new(model).with_device_memory(Box::new(move || {
        use cubecl::Runtime;
        burn_wgpu::WgpuRuntime::client(&device)
            .memory_usage()
            .ok()
            .map(|usage| usage.bytes_in_use)
    })))
}

#[cfg(not(feature = "wgpu"))]
fn load_wgpu(
    _source: &ResolvedSource,
    spec: &ModelSpec,
    _ordinal: Option<usize>,
    _budget: MemoryBudget,
) -> Result<BurnModel, RuntimeError> {
    // `device::parse` already refuses wgpu names in this build; kept total for the match.
    Err(RuntimeError::DeviceUnavailable {
        device: spec.device.clone(),
        reason: "this binary was built without the `wgpu` feature".into(),
    })
}

#[cfg(feature = "cuda")]
fn load_cuda(
    source: &ResolvedSource,
    spec: &ModelSpec,
    index: usize,
    budget: MemoryBudget,
) -> Result<BurnModel, RuntimeError> {
    // The GPU as NVML names it, when NVML answers (the run still loads without it).
    let adapter = cuda_gpu_info(index).map(|gpu| crate::llama::AdapterInfo {
        name: format!("{} ({})", gpu.name, gpu.uuid),
        driver: "NVIDIA (NVML)".into(),
    });
    let model = load_llama::<burn_cuda::Cuda>(
        source,
        spec,
        burn_cuda::CudaDevice::new(index),
        PassChoice::Burn(BurnQuantFormats::CUBECL),
        budget,
        adapter,
    )?;
    Ok(BurnModel::new(model).with_device_memory(Box::new(move || {
        use cubecl::Runtime;
        cubecl::cuda::CudaRuntime::client(&burn_cuda::CudaDevice::new(index))
            .memory_usage()
            .ok()
            .map(|usage| usage.bytes_in_use)
    })))
}

/// The NVML description of CUDA ordinal `ordinal`, honouring `CUDA_VISIBLE_DEVICES`.
#[cfg(feature = "cuda")]
fn cuda_gpu_info(ordinal: usize) -> Option<meters::nvml::GpuInfo> {
    use meters::nvml::GpuApi;
    let api = meters::nvml::NvmlApi::init().ok()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let devices = api.devices().ok()?;
    meters::nvml::resolve_cuda_device(ordinal, visible.as_deref(), &devices).ok()
}

#[cfg(not(feature = "cuda"))]
fn load_cuda(
    _source: &ResolvedSource,
    spec: &ModelSpec,
    _index: usize,
    _budget: MemoryBudget,
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

    fn estimate_memory(
        &self,
        spec: &ModelSpec,
        batch: usize,
        max_len: usize,
    ) -> Result<Option<MemoryEstimate>, RuntimeError> {
        self.memory_estimate(spec, batch, max_len).map(Some)
    }
}

/// Memory free on the GPU of CUDA ordinal `ordinal`, from NVML; `None` (only a cap then
/// applies) when NVML cannot tell.
fn gpu_free_bytes(ordinal: usize) -> Option<u64> {
    let api = meters::nvml::NvmlApi::init().ok()?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    meters::nvml::cuda_free_bytes(&api, ordinal, visible.as_deref()).ok()
}
