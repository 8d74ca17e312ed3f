//! The public handle of a loaded model: the engine's `LoadedModel` plus direct access to logits
//! (for golden tests and quality measurement), with the burn backend type erased.

use api::runtime::{GenerateOptions, Generation, LoadedModel, ModelInfo, RuntimeError};
use api::serving::{ServeOptions, ServingBatch};

use crate::cores::{self, AffinityError, CoreSet};

/// Logits per prompt: one row per returned position, each `vocab_size` long, in f32.
pub type Logits = Vec<Vec<Vec<f32>>>;

/// Which prompt positions [`BurnModel::logits`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitPositions {
    /// The last position of each prompt (the next-token distribution).
    Last,
    /// Every position of each prompt, first to last.
    All,
}

/// What every backend-specific model offers; `BurnModel` holds one behind a box. `Sync`,
/// [`ErasedModel::start_send`] and [`ErasedModel::serve_send`] let a pinned model hand its
/// work to its own pool's threads.
pub(crate) trait ErasedModel: LoadedModel + Sync {
    /// Logits of the prompts' positions (see [`BurnModel::logits`]).
    fn logits(
        &self,
        prompts: &[Vec<u32>],
        positions: LogitPositions,
    ) -> Result<Logits, RuntimeError>;
    /// FLOPs of the products executed since loading (see [`BurnModel::executed_flops`]).
    fn executed_flops(&self) -> u64;
    /// [`LoadedModel::start`], with a generation that may be stepped from another thread.
    fn start_send<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + Send + 'a>, RuntimeError>;
    /// [`LoadedModel::serve`], with a serving batch that may be driven from another thread.
    fn serve_send<'a>(
        &'a self,
        options: &ServeOptions,
    ) -> Result<Box<dyn ServingBatch + Send + 'a>, RuntimeError>;
    /// The core set the model's steps are pinned to, if any.
    fn cores(&self) -> Option<&CoreSet> {
        None
    }
    /// The cores the thread that runs this model's steps may run on.
    fn step_thread_cores(&self) -> Result<CoreSet, AffinityError> {
        cores::current_affinity()
    }
}

/// How [`ModelInfo::compute`] starts for a model on llmeff's host kernels (`/<isa>` follows).
pub(crate) const HOST_COMPUTE: &str = "llmeff-kernels";

/// Reads a device allocator's bytes in use (cubecl's `memory_usage` on wgpu and CUDA).
pub(crate) type DeviceMemoryProbe = Box<dyn Fn() -> Option<u64> + Send + Sync>;

/// A model loaded by [`crate::BurnRuntime`] on some device.
pub struct BurnModel {
    inner: Box<dyn ErasedModel>,
    device_memory: Option<DeviceMemoryProbe>,
}

impl BurnModel {
    pub(crate) fn new(inner: Box<dyn ErasedModel>) -> Self {
        Self {
            inner,
            device_memory: None,
        }
    }

    /// The model with a probe of its device's allocator.
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    pub(crate) fn with_device_memory(mut self, probe: DeviceMemoryProbe) -> Self {
        self.device_memory = Some(probe);
        self
    }

    /// The backend-specific model inside (to wrap it, as a pinned model does).
    pub(crate) fn into_inner(self) -> Box<dyn ErasedModel> {
        self.inner
    }

    /// Runs the prompts (token ids, unpadded, as one left-padded batch) through the model and
    /// returns f32 logits for the requested positions of each prompt.
    pub fn logits(
        &self,
        prompts: &[Vec<u32>],
        positions: LogitPositions,
    ) -> Result<Logits, RuntimeError> {
        self.inner.logits(prompts, positions)
    }

    /// Whether the model runs on llmeff's host kernels (f32 on the CPU) rather than burn's ops.
    pub fn on_host_kernels(&self) -> bool {
        self.info()
            .compute
            .strip_prefix(HOST_COMPUTE)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// FLOPs of the matrix products this model has executed since it was loaded, counted from
    /// the operands' shapes (checks the engine's analytic count).
    pub fn executed_flops(&self) -> u64 {
        self.inner.executed_flops()
    }

    /// The core set this model's steps run on (a `cpu:<cores>` device), or `None` for one
    /// running wherever its caller and rayon's global pool run.
    pub fn cores(&self) -> Option<&CoreSet> {
        self.inner.cores()
    }

    /// The cores the thread running this model's steps may run on, read there
    /// (`sched_getaffinity`): its set for a pinned model, the caller's for any other (a check
    /// that pinning holds).
    pub fn step_thread_cores(&self) -> Result<CoreSet, RuntimeError> {
        self.inner
            .step_thread_cores()
            .map_err(|e| RuntimeError::BackendFailure(Box::new(e)))
    }
}

impl LoadedModel for BurnModel {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.inner.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        self.inner.decode(ids)
    }

    fn start<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + 'a>, RuntimeError> {
        self.inner.start(prompts, options)
    }

    fn prompt_logits(&self, prompts: &[Vec<u32>]) -> Result<Logits, RuntimeError> {
        self.inner.logits(prompts, LogitPositions::All)
    }

    fn serve<'a>(
        &'a self,
        options: &ServeOptions,
    ) -> Result<Box<dyn ServingBatch + 'a>, RuntimeError> {
        self.inner.serve(options)
    }

    fn device_memory_bytes(&self) -> Option<u64> {
        self.device_memory.as_ref().and_then(|probe| probe())
    }
}
