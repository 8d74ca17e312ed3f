//! The backends' own errors, with structured payloads: what a generation request got wrong
//! ([`InputError`]) and what failed while loading or computing ([`BackendError`]). They become
//! an `api::runtime::RuntimeError` at the trait boundary (`From`), where bad input stays
//! `InvalidInput`, tokenizer failures stay `Tokenizer`, and everything else is a
//! `BackendFailure` carrying the [`BackendError`] as its source.

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
}

/// A failure while loading or computing, beyond what the request got wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
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
    #[error("an earlier step of this generation failed; start a new one")]
    GenerationFailed,
    /// Device argmax returned an id that is not a token id.
    #[error("argmax returned {0}")]
    ArgmaxOutOfRange(i64),
    /// A tensor's shape is not the one the model computes with.
    #[error("internal: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Which tensor or buffer.
        tensor: String,
        /// The shape the pass needs.
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// A step's inputs do not match the generation state it runs on.
    #[error(
        "internal: step for {batch}×{seq} after {past} positions does not fit a cache of {cache_batch} sequences at {cache_len}"
    )]
    StepMismatch {
        /// Sequences in the step.
        batch: usize,
        /// Positions per sequence in the step.
        seq: usize,
        /// Cached positions the step assumes.
        past: usize,
        /// Sequences the cache holds.
        cache_batch: usize,
        /// Positions the cache holds.
        cache_len: usize,
    },
    /// A broken invariant inside the backend (a bug, not a user error).
    #[error("internal: {0}")]
    Internal(String),
}

impl From<BackendError> for RuntimeError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Input(e) => RuntimeError::InvalidInput(e.to_string()),
            BackendError::Tokenizer(e) => RuntimeError::Tokenizer(e.to_string()),
            other => RuntimeError::BackendFailure(Box::new(other)),
        }
    }
}

impl From<InputError> for RuntimeError {
    fn from(e: InputError) -> Self {
        BackendError::Input(e).into()
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
    fn bad_input_and_tokenizer_failures_keep_their_runtime_variants() {
        let input = RuntimeError::from(InputError::EmptyPrompt { prompt: 1 });
        assert!(matches!(&input, RuntimeError::InvalidInput(m) if m == "prompt 1 is empty"));
        let tokenizer = RuntimeError::from(BackendError::Tokenizer("bad merge".into()));
        assert!(matches!(&tokenizer, RuntimeError::Tokenizer(m) if m == "bad merge"));
    }
}
