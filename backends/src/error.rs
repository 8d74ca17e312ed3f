//! The backends' own errors, with structured payloads: what a generation request got wrong
//! ([`InputError`]) and what failed while loading or computing ([`BackendError`]). They become
//! an `api::runtime::RuntimeError` at the trait boundary (`From`), where bad input stays
//! `InvalidInput`, tokenizer failures stay `Tokenizer`, and everything else is a
//! `BackendFailure` carrying the [`BackendError`] as its source.

use std::path::PathBuf;

use api::runtime::RuntimeError;

/// A generation or logits request the model cannot serve as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum InputError {
    /// The request holds no prompt.
    #[error("no prompts given")]
    NoPrompts,
    /// A prompt holds no token.
    #[error("prompt {prompt} is empty")]
    EmptyPrompt {
        /// Its index in the request.
        prompt: usize,
    },
    /// A prompt holds an id the vocabulary does not.
    #[error("prompt {prompt} contains token id {token}, outside the vocabulary of {vocab}")]
    TokenOutsideVocabulary {
        /// Its index in the request.
        prompt: usize,
        /// The offending id.
        token: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A step's token id is negative or past the embedding table.
    #[error("token id {token} is outside the vocabulary")]
    StepTokenOutsideVocabulary {
        /// The offending id.
        token: i64,
    },
    /// A prompt plus the new tokens would not fit the model's positions.
    #[error(
        "prompt {prompt} has {tokens} tokens; with {new_tokens} new tokens that exceeds the model's {max_positions} positions"
    )]
    PromptTooLong {
        /// Its index in the request.
        prompt: usize,
        /// Its length.
        tokens: usize,
        /// Tokens to generate after it.
        new_tokens: usize,
        /// The model's `max_position_embeddings`.
        max_positions: usize,
    },
    /// `max_new_tokens` is 0.
    #[error("max_new_tokens must be at least 1")]
    NoNewTokens,
    /// A forward step over no sequence or no position.
    #[error("a step needs at least one sequence and one position")]
    EmptyStep,
    /// A size derived from the config and the request does not fit in 64 bits.
    #[error("the size of {what} overflows 64 bits; the model config or the request is absurd")]
    SizeOverflow {
        /// What was being sized.
        what: &'static str,
    },
    /// A quantization block size of 0.
    #[error("quantization block size 0 for {tensor}: it must be at least 1")]
    ZeroBlockSize {
        /// The tensor being quantized.
        tensor: String,
    },
    /// A Hub revision that is not a branch, tag or commit hash (or could escape the cache).
    #[error("`{revision}` is not a valid Hub revision (a branch, tag or commit hash)")]
    InvalidRevision {
        /// The revision given.
        revision: String,
    },
    /// A revision given for a model that is not a Hub id.
    #[error("revision `{revision}` applies only to Hub ids; `{model}` is a local model")]
    RevisionOfLocalModel {
        /// The revision given.
        revision: String,
        /// The local model named.
        model: String,
    },
    /// A sampling temperature that is not a positive number.
    #[error("temperature must be a positive number, got {0}")]
    Temperature(f64),
    /// A nucleus bound outside `[0, 1]`.
    #[error("top_p must be in [0, 1], got {0}")]
    TopP(f64),
    /// A continuously batched workload asked for what its serving batch cannot do.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// What a serving batch (continuous batching, `api::serving`) was asked that it cannot do: a
/// request that cannot fit, or a call its scheduler should not have made. Refused before
/// anything runs, so the batch stays usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ServeError {
    /// `max_batch` is 0.
    #[error("a serving batch needs at least one slot (max_batch is 0)")]
    NoSlots,
    /// `slot_capacity` is 0: no request could ever fit.
    #[error("a slot needs room for at least one position (slot_capacity is 0)")]
    NoSlotCapacity,
    /// Every slot is held by a request.
    #[error("all {slots} slots are held; release one before admitting request {request}")]
    SlotsFull {
        /// Slots in all.
        slots: usize,
        /// The request refused.
        request: u64,
    },
    /// A request with no prompt token.
    #[error("request {request} has an empty prompt")]
    EmptyPrompt {
        /// The request's id.
        request: u64,
    },
    /// A request asking for no new token.
    #[error("request {request} asks for no new tokens (max_new_tokens is 0)")]
    NoNewTokens {
        /// The request's id.
        request: u64,
    },
    /// A request's prompt holds an id the vocabulary does not.
    #[error(
        "request {request}'s prompt contains token id {token}, outside the vocabulary of {vocab}"
    )]
    TokenOutsideVocabulary {
        /// The request's id.
        request: u64,
        /// The offending id.
        token: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// A request whose prompt and new tokens exceed the model's positions.
    #[error(
        "request {request} has {tokens} prompt tokens; with {new_tokens} new tokens that exceeds the model's {max_positions} positions"
    )]
    TooLongForModel {
        /// The request's id.
        request: u64,
        /// Its prompt's length.
        tokens: usize,
        /// Its `max_new_tokens`.
        new_tokens: usize,
        /// The model's `max_position_embeddings`.
        max_positions: usize,
    },
    /// A request whose prompt and new tokens do not fit a slot.
    #[error(
        "request {request} has {tokens} prompt tokens; with {new_tokens} new tokens that exceeds a slot's {capacity} positions"
    )]
    TooLongForSlot {
        /// The request's id.
        request: u64,
        /// Its prompt's length.
        tokens: usize,
        /// Its `max_new_tokens`.
        new_tokens: usize,
        /// Positions a slot holds.
        capacity: usize,
    },
    /// A slot number past the batch's slots.
    #[error("slot {slot} is not one of the batch's {slots} slots")]
    NoSuchSlot {
        /// The slot named.
        slot: usize,
        /// Slots in all.
        slots: usize,
    },
    /// A slot that holds no request (never admitted, or released).
    #[error("slot {slot} holds no request")]
    FreeSlot {
        /// The slot named.
        slot: usize,
    },
    /// One call naming a slot twice.
    #[error("slot {slot} is named twice in one call")]
    RepeatedSlot {
        /// The slot named.
        slot: usize,
    },
    /// A prefill chunk that is empty or longer than what is left of the slot's prompt.
    #[error(
        "a prefill chunk of {tokens} tokens for slot {slot}, which has {pending} prompt tokens pending"
    )]
    Chunk {
        /// The slot named.
        slot: usize,
        /// Tokens asked for.
        tokens: usize,
        /// Prompt tokens not yet run.
        pending: usize,
    },
    /// A decode step for a slot whose prompt has not all run.
    #[error("slot {slot} cannot decode: {pending} of its prompt tokens have not run")]
    NotPrefilled {
        /// The slot named.
        slot: usize,
        /// Prompt tokens not yet run.
        pending: usize,
    },
    /// A decode step for a slot whose request has ended.
    #[error("slot {slot} has finished its request; release it")]
    Finished {
        /// The slot named.
        slot: usize,
    },
}

/// What is wrong with one model file (a checkpoint, its index, the tokenizer): the `reason`
/// of `RuntimeError::InvalidModelFile`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileProblem {
    /// The file (or the checkpoint it should be) is not there.
    #[error("missing: the model folder has no {file}")]
    Missing {
        /// The file name expected.
        file: &'static str,
    },
    /// The folder has no safetensors weights.
    #[error("no {single} or {index} in the model folder")]
    NoSafetensors {
        /// The single-file name looked for.
        single: &'static str,
        /// The index name looked for.
        index: &'static str,
    },
    /// The folder has only PyTorch pickled weights.
    #[error(
        "no {single} or {index}; only pytorch_model.bin, which is not supported (convert it to safetensors)"
    )]
    OnlyPytorchBin {
        /// The single-file name looked for.
        single: &'static str,
        /// The index name looked for.
        index: &'static str,
    },
    /// Opening failed.
    #[error("cannot open: {0}")]
    Open(#[source] std::io::Error),
    /// Memory-mapping failed.
    #[error("cannot map: {0}")]
    Map(#[source] std::io::Error),
    /// Reading failed.
    #[error("cannot read: {0}")]
    Read(#[source] std::io::Error),
    /// The JSON does not parse or lacks what is needed.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
    /// The safetensors header does not parse or does not fit the file.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(#[source] safetensors::SafeTensorError),
    /// The tokenizer library refused the file.
    #[error("{0}")]
    Tokenizer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A sharded checkpoint's index names a shard outside the folder.
    #[error("shard name `{shard}` for tensor `{tensor}` is not a plain file name")]
    ShardName {
        /// The shard file named.
        shard: String,
        /// The tensor it was named for.
        tensor: String,
    },
    /// The index places a tensor in a shard that lacks it.
    #[error("tensor `{tensor}` listed in {index} is not in this shard")]
    NotInShard {
        /// The tensor.
        tensor: String,
        /// The index file's name.
        index: &'static str,
    },
    /// A GGUF file that does not parse, or a tensor in it that cannot be read.
    #[error("{0}")]
    Gguf(#[source] crate::gguf::GgufError),
    /// A GGUF tensor with no counterpart in the Hugging Face model its architecture maps to.
    #[error(
        "tensor `{tensor}` of this `{architecture}` GGUF has no Hugging Face counterpart the forward pass computes"
    )]
    UnmappedGgufTensor {
        /// The GGUF tensor's name.
        tensor: String,
        /// `general.architecture`.
        architecture: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor `{tensor}`")]
    MissingTensor {
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor's stored shape is not the one the config implies.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor's name.
        tensor: String,
        /// The shape the config implies (as stored).
        expected: Vec<usize>,
        /// The shape stored.
        found: Vec<usize>,
    },
    /// A tensor's offsets point past the end of the file.
    #[error("tensor `{tensor}` points outside the file")]
    TensorOutsideFile {
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor is stored in a dtype the loader does not decode.
    #[error(
        "tensor `{tensor}`: stored as {dtype:?}; only F32, F16 and BF16 checkpoints are supported"
    )]
    TensorStorage {
        /// The tensor's name.
        tensor: String,
        /// The dtype stored.
        dtype: safetensors::Dtype,
    },
    /// A tensor read as a matrix is not 2-D.
    #[error("tensor `{tensor}` must be 2-D, has shape {shape:?}")]
    NotAMatrix {
        /// The tensor's name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

/// A failure while loading or computing, beyond what the request got wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// A model file exists (or should) but cannot be used.
    #[error("invalid model file {}: {problem}", path.display())]
    ModelFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: FileProblem,
    },
    /// The config names an architecture this implementation does not compute.
    #[error(
        "unsupported model config in {path}: {key} `{found}` is not supported (supported: {supported})"
    )]
    UnsupportedArchitecture {
        /// The config file (or preset label).
        path: String,
        /// The config key (`model_type`, `architectures` entry).
        key: &'static str,
        /// The value found.
        found: String,
        /// The supported values, comma-separated.
        supported: String,
    },
    /// The request itself is invalid.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The tokenizer could not encode or decode.
    #[error("{0}")]
    Tokenizer(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// burn panicked (device out of memory, a kernel failure).
    #[error("{during} failed: {message}")]
    Panic {
        /// What was running.
        during: String,
        /// The panic's message.
        message: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading {what} from the device: {message}")]
    DeviceRead {
        /// Which values.
        what: String,
        /// burn's description of the failure.
        message: String,
    },
    /// A step needs more positions than its KV cache reserved.
    #[error("KV cache holds {capacity} positions, {needed} needed")]
    KvCacheFull {
        /// Positions reserved.
        capacity: usize,
        /// Positions the step needs.
        needed: usize,
    },
    /// An earlier step failed part-way, leaving the KV cache inconsistent.
    #[error("an earlier step of this generation (or serving batch) failed; start a new one")]
    GenerationFailed,
    /// Token selection on the device returned an id that is not a token id.
    #[error("token selection on the device returned {0}, not a token id")]
    TokenIdOutOfRange(i64),
    /// A step's input buffer does not hold as many values as the step's shape implies.
    #[error(
        "internal: the step's {input} holds {found} values, its shape {shape:?} needs {}",
        shape.iter().product::<usize>()
    )]
    StepInputLength {
        /// Which input (`attention mask`, `position ids`).
        input: &'static str,
        /// The shape the step implies.
        shape: Vec<usize>,
        /// Values it holds.
        found: usize,
    },
    /// A step's inputs do not match the generation state it runs on: a sequence names a slot
    /// the cache lacks, or one another sequence of the step names too, or starts elsewhere than
    /// where its slot's positions end.
    #[error(
        "internal: a step of {batch}×{seq} writes slot {slot} from position {start}, but the cache has {cache_slots} slots and that one holds {cache_len} positions (or another sequence of the step writes it too)"
    )]
    StepMismatch {
        /// Sequences in the step.
        batch: usize,
        /// Positions per sequence in the step.
        seq: usize,
        /// The slot the offending sequence names.
        slot: usize,
        /// Where the step writes it from: the positions it assumes the slot holds.
        start: usize,
        /// Slots the cache holds.
        cache_slots: usize,
        /// Positions that slot holds (0 for a slot the cache lacks).
        cache_len: usize,
    },
    /// A broken invariant inside the backend (a bug, not a user error).
    #[error("internal: {0}")]
    Internal(String),
    /// A kernel's operands do not have the shapes it was called with (a bug, not a user
    /// error): refused by the kernel's checked views instead of computing garbage.
    #[error("internal: a kernel's operands disagree: {0}")]
    KernelShape(#[from] kernels::ShapeError),
    /// A matrix cannot be stored in the host kernels' format asked for (a block size the
    /// kernels do not take; runs are checked before they load, so this is a bug).
    #[error("internal: weight format: {0}")]
    WeightFormat(#[from] kernels::FormatError),
}

impl From<BackendError> for RuntimeError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Input(e) => RuntimeError::InvalidInput(e.to_string()),
            BackendError::WeightFormat(e) => RuntimeError::InvalidInput(e.to_string()),
            BackendError::Tokenizer(e) => RuntimeError::Tokenizer(e.to_string()),
            BackendError::ModelFile { path, problem } => RuntimeError::InvalidModelFile {
                path: path.display().to_string(),
                reason: problem.to_string(),
            },
            BackendError::UnsupportedArchitecture {
                path,
                key,
                found,
                supported,
            } => RuntimeError::UnsupportedConfig {
                path,
                reason: format!("{key} `{found}` is not supported (supported: {supported})"),
            },
            other => RuntimeError::BackendFailure(Box::new(other)),
        }
    }
}

impl From<InputError> for RuntimeError {
    fn from(e: InputError) -> Self {
        BackendError::Input(e).into()
    }
}

impl From<ServeError> for RuntimeError {
    fn from(e: ServeError) -> Self {
        InputError::Serve(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_failures_keep_their_message_and_structure() {
        let err = RuntimeError::from(BackendError::KvCacheFull {
            capacity: 3,
            needed: 4,
        });
        assert_eq!(
            err.to_string(),
            "backend error: KV cache holds 3 positions, 4 needed"
        );
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<BackendError>())
            .expect("the backend error is the source");
        assert!(matches!(
            source,
            BackendError::KvCacheFull {
                capacity: 3,
                needed: 4
            }
        ));
    }

    #[test]
    fn model_file_problems_keep_the_path_and_a_clear_reason() {
        let err = RuntimeError::from(BackendError::ModelFile {
            path: PathBuf::from("/m/model.safetensors"),
            problem: FileProblem::TensorShape {
                tensor: "model.norm.weight".into(),
                expected: vec![64],
                found: vec![32],
            },
        });
        assert!(matches!(
            &err,
            RuntimeError::InvalidModelFile { path, reason }
                if path == "/m/model.safetensors"
                    && reason == "tensor `model.norm.weight` has shape [32], expected [64]"
        ));
    }

    #[test]
    fn bad_input_and_tokenizer_failures_keep_their_runtime_variants() {
        let input = RuntimeError::from(InputError::EmptyPrompt { prompt: 1 });
        assert!(matches!(&input, RuntimeError::InvalidInput(m) if m == "prompt 1 is empty"));
        let tokenizer = RuntimeError::from(BackendError::Tokenizer("bad merge".into()));
        assert!(matches!(&tokenizer, RuntimeError::Tokenizer(m) if m == "bad merge"));
    }
}
