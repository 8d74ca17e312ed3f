//! The boundary between the engine and whatever runs models.
//!
//! API Boundary: `backends` implements these traits; the engine only ever holds
//! `Box<dyn ...>` values, so it never names a burn type.

use std::fmt;

/// Numeric precision of a model's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// Every dtype, in the order they are listed to users.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// The lower-case name used in scripts, tables and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Bytes one element occupies.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Parses a dtype name as written in scripts (`f32`, `f16`, `bf16`).
    pub fn parse(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a model's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightsKind {
    /// The checkpoint's trained weights.
    Pretrained,
    /// Seeded random weights shaped by the model's config (no download of weights).
    Random,
}

impl WeightsKind {
    /// The name used in scripts and tables.
    pub fn name(self) -> &'static str {
        match self {
            WeightsKind::Pretrained => "pretrained",
            WeightsKind::Random => "random",
        }
    }
}

/// Everything needed to load one model onto one device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    /// A bundled alias (`tiny-stories`), a local folder, or a Hub id.
    pub source: String,
    /// Hub revision, when `source` is a Hub id.
    pub revision: Option<String>,
    /// Precision to run in.
    pub dtype: DType,
    /// Trained or random weights.
    pub weights: WeightsKind,
    /// Device name such as `cpu` or `cuda:0`.
    pub device: String,
    /// Seed for random weights.
    pub seed: u64,
    /// Weight-only quantization applied after loading, if any.
    pub quantization: Option<Quantization>,
    /// Which forward pass runs the model (`load(#{ compute })`): part of the run's identity,
    /// so runs on the two passes are different runs.
    pub compute: Compute,
}

/// The forward pass a model runs on (`load(#{ compute: ... })`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// llmeff's host kernels where they apply (an unquantized f32 model on the CPU), burn's
    /// tensor ops everywhere else.
    #[default]
    Auto,
    /// llmeff's host kernels; only an unquantized f32 model on the CPU can take them.
    Host,
    /// burn's tensor ops (burn-flex on the CPU), whatever the dtype; kept to compare the two.
    Burn,
}

impl Compute {
    /// Every value's name, as scripts spell it.
    pub const NAMES: [&'static str; 3] = ["auto", "host", "burn"];

    /// Name used in scripts and tables (`auto`, `host`, `burn`).
    pub fn name(self) -> &'static str {
        match self {
            Compute::Auto => "auto",
            Compute::Host => "host",
            Compute::Burn => "burn",
        }
    }

    /// The value a script names, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "auto" => Some(Compute::Auto),
            "host" => Some(Compute::Host),
            "burn" => Some(Compute::Burn),
            _ => None,
        }
    }

    /// True for the default (kept out of stage hashes, so runs planned before the option
    /// existed hash the same).
    pub fn is_auto(&self) -> bool {
        *self == Compute::Auto
    }

    /// Whether a model of `dtype` with `quantization` on the CPU (`on_cpu`) runs on llmeff's
    /// host kernels: `auto` and `host` where the kernels apply (every dtype and method, block
    /// sizes a multiple of [`HOST_BLOCK_MULTIPLE`]), `burn` never.
    pub fn uses_host_kernels(
        self,
        on_cpu: bool,
        _dtype: DType,
        quantization: Option<Quantization>,
    ) -> bool {
        self != Compute::Burn
            && on_cpu
            && quantization.is_none_or(|q| {
                q.block_size > 0 && q.block_size.is_multiple_of(HOST_BLOCK_MULTIPLE)
            })
    }
}

/// Quantization block sizes the host kernels take are multiples of this (they unpack weights in
/// groups of 32, llama.cpp's block).
pub const HOST_BLOCK_MULTIPLE: usize = 32;

/// Weight-only quantization schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuantMethod {
    /// Symmetric 8-bit integers with one scale per block.
    Int8,
    /// Symmetric 4-bit integers with one scale per block.
    Int4,
    /// 4-bit NormalFloat (QLoRA's code book) with one absmax scale per block.
    Nf4,
    /// 8-bit float E4M3 (the OCP format of published fp8 checkpoints) with one scale per
    /// block: the block's absmax maps to E4M3's largest value, 448.
    Fp8,
}

impl QuantMethod {
    /// Every method, in the order listed to users.
    pub const ALL: [QuantMethod; 4] = [
        QuantMethod::Int8,
        QuantMethod::Int4,
        QuantMethod::Nf4,
        QuantMethod::Fp8,
    ];

    /// The name used in scripts and tables.
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::Int8 => "int8",
            QuantMethod::Int4 => "int4",
            QuantMethod::Nf4 => "nf4",
            QuantMethod::Fp8 => "fp8",
        }
    }

    /// Bits per stored weight (scales not included).
    pub fn bits(self) -> u32 {
        match self {
            QuantMethod::Int8 | QuantMethod::Fp8 => 8,
            QuantMethod::Int4 | QuantMethod::Nf4 => 4,
        }
    }

    /// Parses a script name.
    pub fn parse(name: &str) -> Option<QuantMethod> {
        QuantMethod::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A quantization request: method and block size (weights per scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quantization {
    /// Scheme.
    pub method: QuantMethod,
    /// Consecutive weights (along the input dimension) sharing one scale.
    pub block_size: usize,
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/b{}", self.method.name(), self.block_size)
    }
}

/// Facts about a loaded model that measurement and reporting need.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Display name (alias or Hub id or folder name).
    pub name: String,
    /// Architecture family, e.g. `llama`.
    pub architecture: String,
    /// What computes the forward pass, e.g. `llmeff-kernels/avx512` or a burn backend's name:
    /// speed depends on it as much as on the device.
    pub compute: String,
    /// Total parameter count.
    pub parameters: u64,
    /// Bytes the weights occupy in memory at the loaded dtype.
    pub weight_bytes: u64,
    /// Bytes of weights one forward step reads: all of them but an untied input embedding
    /// table, from which a step gathers only its tokens' rows (those few rows are left out).
    pub step_weight_bytes: u64,
    /// Hidden size.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads.
    pub num_kv_heads: usize,
    /// Per-head dimension.
    pub head_dim: usize,
    /// Feed-forward inner size.
    pub intermediate_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the model accepts.
    pub max_position_embeddings: usize,
    /// Beginning-of-sequence token id, if any.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (generation stops at any of them).
    pub eos_token_ids: Vec<u32>,
    /// The accelerator as its driver names it (a wgpu adapter: `llvmpipe (LLVM 15.0.6, 256
    /// bits) (Cpu, vulkan)`); `None` on the CPU and where the backend does not say.
    pub adapter: Option<String>,
    /// The accelerator's driver and version; `None` where unknown.
    pub adapter_driver: Option<String>,
}

/// How the next token is picked from the logits.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoding {
    /// Always the most likely token.
    Greedy,
    /// Sampling from the softmax at a temperature, optionally restricted to top-k / top-p.
    Sample {
        /// Softmax temperature; 0 means greedy.
        temperature: f64,
        /// Keep only the k most likely tokens (0 = off).
        top_k: usize,
        /// Keep the smallest set whose probability reaches p (1.0 = off).
        top_p: f64,
        /// RNG seed, so runs are reproducible.
        seed: u64,
    },
}

/// Options for one batched generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Tokens generated per sequence at most.
    pub max_new_tokens: usize,
    /// EOS is ignored until a sequence has this many new tokens.
    pub min_new_tokens: usize,
    /// Stop a sequence at EOS (false: always generate `max_new_tokens`).
    pub stop_at_eos: bool,
    /// Token selection.
    pub decoding: Decoding,
}

/// What one step of a generation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// One entry per sequence: the token it produced this step, or `None` if it had already
    /// finished. Tokens are real outputs only, never padding.
    pub tokens: Vec<Option<u32>>,
    /// True when every sequence has finished.
    pub finished: bool,
}

/// A batched generation in progress. The first `step` runs the prompt pass (prefill) and
/// yields the first token of each sequence; later steps decode one token each.
///
/// Every `step` returns only after the device has finished the work (results are on the host),
/// so the caller may time it with a wall clock.
pub trait Generation {
    /// Runs the next step.
    fn step(&mut self) -> Result<StepOutput, RuntimeError>;
    /// Bytes currently held by the KV cache.
    fn kv_cache_bytes(&self) -> u64;
}

/// A model loaded on a device, ready to generate.
pub trait LoadedModel: Send {
    /// Static facts about the model.
    fn info(&self) -> &ModelInfo;
    /// Text to token ids, with the model's usual special tokens (BOS) added.
    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError>;
    /// Token ids to text, skipping special tokens.
    fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError>;
    /// Starts generating continuations for a batch of prompts (token ids, unpadded).
    fn start<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + 'a>, RuntimeError>;
    /// Teacher-forced logits: for each prompt (token ids, unpadded), one row of `vocab_size`
    /// f32 logits per prompt position, row `i` being the next-token distribution after ids
    /// `0..=i`. Untimed and unmetered (quality measurement); a model that cannot give them
    /// returns [`RuntimeError::Unsupported`].
    fn prompt_logits(&self, prompts: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>, RuntimeError> {
        let _ = prompts;
        Err(RuntimeError::Unsupported {
            what: "teacher-forced prompt logits".into(),
            model: self.info().name.clone(),
        })
    }
    /// Sets the model up to serve continuously batched requests ([`crate::serving`]): the KV
    /// cache of `options.max_batch` slots is reserved here. A model that cannot returns
    /// [`RuntimeError::Unsupported`].
    fn serve<'a>(
        &'a self,
        options: &crate::serving::ServeOptions,
    ) -> Result<Box<dyn crate::serving::ServingBatch + 'a>, RuntimeError> {
        let _ = options;
        Err(RuntimeError::Unsupported {
            what: "continuous batching".into(),
            model: self.info().name.clone(),
        })
    }
    /// Bytes the model's device allocator holds in live tensors now (weights, KV cache,
    /// activations), as the runtime's allocator counts them; `None` on the CPU, where the
    /// process's resident memory says it, and where the backend does not tell.
    fn device_memory_bytes(&self) -> Option<u64> {
        None
    }
}

/// Loads models onto devices. The binary decides which implementation is wired in.
pub trait Runtime: Send + Sync {
    /// Loads (or creates, for random weights) the model a spec describes.
    fn load(&self, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, RuntimeError>;
    /// Names of the devices this runtime can use (`cpu`, `cuda:0`, ...).
    fn devices(&self) -> Vec<String>;
    /// Memory loading `spec` and generating `batch` sequences of up to `max_len` positions
    /// (longest prompt + new tokens) would take, computed from the config alone (nothing is
    /// allocated). `None` when this runtime cannot tell.
    fn estimate_memory(
        &self,
        _spec: &ModelSpec,
        _batch: usize,
        _max_len: usize,
    ) -> Result<Option<MemoryEstimate>, RuntimeError> {
        Ok(None)
    }
}

/// What a load and one generation need in memory, from the config alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Bytes the weights occupy once loaded (packed size for quantized linear layers).
    pub weight_bytes: u64,
    /// Bytes held at the peak of loading: quantized models are built at the run dtype first.
    pub load_peak_bytes: u64,
    /// Bytes the KV cache (and RoPE table) reserves for the batch and length asked.
    pub kv_cache_bytes: u64,
    /// Memory the device has free now (`MemAvailable` on the CPU), when known.
    pub available_bytes: Option<u64>,
}

impl MemoryEstimate {
    /// Resident bytes while generating: weights plus KV cache (saturating).
    pub fn total_bytes(&self) -> u64 {
        self.weight_bytes.saturating_add(self.kv_cache_bytes)
    }

    /// True when the peak need is known to exceed the memory available.
    pub fn exceeds_available(&self) -> bool {
        self.available_bytes
            .is_some_and(|a| self.total_bytes().max(self.load_peak_bytes) > a)
    }
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model name is neither a bundled alias, a folder nor a cached Hub id.
    #[error("model `{name}` not found: {reason}")]
    ModelNotFound {
        /// What the user asked for.
        name: String,
        /// Where it was looked for and how to fix it.
        reason: String,
    },
    /// A model file exists but cannot be used.
    #[error("invalid model file {path}: {reason}")]
    InvalidModelFile {
        /// The offending file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config asks for something this implementation does not support.
    #[error("unsupported model config in {path}: {reason}")]
    UnsupportedConfig {
        /// The config file.
        path: String,
        /// The unsupported value, named.
        reason: String,
    },
    /// The device named is unknown or unusable.
    #[error("device `{device}` is not available: {reason}")]
    DeviceUnavailable {
        /// Device name.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// This dtype cannot run on this device/backend.
    #[error("dtype {dtype} is not supported on device `{device}`")]
    UnsupportedDType {
        /// The dtype asked for.
        dtype: DType,
        /// The device asked for.
        device: String,
    },
    /// Tokenizer failure.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// Invalid generation input (empty prompt, too long, ...).
    #[error("invalid generation input: {0}")]
    InvalidInput(String),
    /// The backend failed while computing.
    #[error("backend error: {0}")]
    Backend(String),
    /// The backend failed while computing, with its own structured error kept as the source
    /// (reach it with `std::error::Error::source` and downcast). Treated like
    /// [`RuntimeError::Backend`]: possibly transient, so worth a retry.
    #[error("backend error: {0}")]
    BackendFailure(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The model's implementation does not offer an operation.
    #[error("{what} is not supported by model `{model}`")]
    Unsupported {
        /// The operation asked for.
        what: String,
        /// The model's display name.
        model: String,
    },
    /// Loading or generating would need more memory than the device has available; refused
    /// before anything is allocated.
    #[error(
        "not enough memory for {what}: {needed_bytes} bytes needed, {available_bytes} bytes available"
    )]
    OutOfMemory {
        /// Bytes the allocation would take.
        needed_bytes: u64,
        /// Bytes the device has available.
        available_bytes: u64,
        /// What was to be allocated (weights, KV cache), with the model and device.
        what: String,
    },
}
