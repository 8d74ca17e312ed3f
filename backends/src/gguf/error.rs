//! What can go wrong reading a GGUF file, with structured payloads: the container itself
//! (truncated, corrupt or from an unsupported version), its metadata (a key missing or of the
//! wrong type), a tensor (a type llmeff cannot read, a shape the architecture does not allow),
//! and what the file describes (an architecture or tokenizer llmeff does not implement).
//! Unsupported things name themselves and list what is supported.

use std::path::PathBuf;

use super::format::SUPPORTED_TENSOR_TYPES;
use super::names::SUPPORTED_ARCHITECTURES;
use super::tokenizer::{SUPPORTED_PRE_TOKENIZERS, SUPPORTED_TOKENIZER_MODELS};

/// Why a GGUF file could not be read or mapped onto a Hugging Face model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, measured or memory-mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{path} is not a GGUF file: it starts with {found:02x?}, not the bytes of `GGUF`")]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// Its first bytes (fewer than four when the file is shorter).
        found: Vec<u8>,
    },
    /// A GGUF version llmeff does not read.
    #[error("GGUF version {version} is not supported (supported: 2, 3)")]
    Version {
        /// The version the header states.
        version: u32,
    },
    /// A big-endian GGUF file (the version field reads byte-swapped).
    #[error("the GGUF file is big-endian; only little-endian files are supported")]
    BigEndian,
    /// The file ends before something its header promises.
    #[error("the GGUF file ends at byte {file_len} while reading {what} at byte {offset}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// A count in the header beyond any real model's.
    #[error("{what} ({count}) exceeds llmeff's limit of {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count the file states.
        count: u64,
        /// The largest count accepted.
        limit: u64,
    },
    /// A metadata value type code the GGUF specification does not define.
    #[error("metadata key `{key}` has value type {code}, which GGUF does not define")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type code found.
        code: u32,
    },
    /// Arrays nested deeper than llmeff follows.
    #[error("metadata key `{key}` nests arrays deeper than {limit} levels")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The deepest nesting accepted.
        limit: usize,
    },
    /// A string that is not UTF-8.
    #[error("{what} at byte {offset} is not valid UTF-8")]
    Utf8 {
        /// Which string.
        what: String,
        /// Where it starts.
        offset: u64,
    },
    /// A boolean stored as a byte other than 0 or 1.
    #[error("metadata key `{key}` holds the boolean byte {byte}, neither 0 nor 1")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte found.
        byte: u8,
    },
    /// The same metadata key twice.
    #[error("metadata key `{key}` appears more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// The same tensor name twice.
    #[error("tensor `{name}` appears more than once")]
    DuplicateTensor {
        /// The tensor's GGUF name.
        name: String,
    },
    /// `general.alignment` that is not a power of two or is absurdly large.
    #[error("general.alignment ({alignment}) must be a power of two no larger than {limit}")]
    Alignment {
        /// The alignment the file states.
        alignment: u64,
        /// The largest alignment accepted.
        limit: u64,
    },
    /// A tensor with no dimension or more than ggml's four.
    #[error("tensor `{name}` has {dims} dimensions; GGUF allows 1 to 4")]
    Dimensions {
        /// The tensor's GGUF name.
        name: String,
        /// The dimension count found.
        dims: u32,
    },
    /// A tensor whose element or byte count does not fit in 64 bits.
    #[error("tensor `{name}` with dimensions {dims:?} is too large to address")]
    SizeOverflow {
        /// The tensor's GGUF name.
        name: String,
        /// Its dimensions, innermost first as GGUF stores them.
        dims: Vec<u64>,
    },
    /// A tensor type code ggml does not define.
    #[error("tensor `{name}` has type code {code}, which ggml does not define")]
    UnknownTensorType {
        /// The tensor's GGUF name.
        name: String,
        /// The type code found.
        code: u32,
    },
    /// A tensor whose rows do not split into whole blocks of its type.
    #[error(
        "tensor `{name}` has rows of {row_len} values, not a multiple of {block}, the block of its type {type_name}"
    )]
    RaggedBlocks {
        /// The tensor's GGUF name.
        name: String,
        /// Values per row (the innermost dimension).
        row_len: u64,
        /// Values per block of its type.
        block: u64,
        /// The type's ggml name.
        type_name: &'static str,
    },
    /// A tensor whose offset is not a multiple of the file's alignment.
    #[error(
        "tensor `{name}` starts at offset {offset} of the data section, not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        /// The tensor's GGUF name.
        name: String,
        /// Its offset from the start of the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor whose bytes lie past the end of the file.
    #[error("tensor `{name}` spans bytes {start}..{end} of the file, past its end at {file_len}")]
    OutOfBounds {
        /// The tensor's GGUF name.
        name: String,
        /// Its first byte in the file.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// An architecture llmeff has no mapping for.
    #[error(
        "GGUF architecture `{architecture}` is not supported (supported: {SUPPORTED_ARCHITECTURES})"
    )]
    UnsupportedArchitecture {
        /// `general.architecture` as stored.
        architecture: String,
    },
    /// A tensor type llmeff cannot read.
    #[error(
        "tensor `{name}` is stored as {type_name}, which llmeff cannot read (supported: {SUPPORTED_TENSOR_TYPES}); requantize it with llama.cpp's `llama-quantize`"
    )]
    UnsupportedTensorType {
        /// The tensor's Hugging Face name.
        name: String,
        /// The ggml type's name.
        type_name: &'static str,
    },
    /// A required metadata key is absent.
    #[error("metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of the wrong type.
    #[error("metadata key `{key}` is {found}, expected {expected}")]
    KeyType {
        /// The key.
        key: String,
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A metadata value of the right type but one llmeff cannot use.
    #[error("metadata key `{key}` = {value}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value, as text.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting the file describes that has no Hugging Face equivalent llmeff knows.
    #[error("{what} `{value}` is not supported (supported: {supported})")]
    UnsupportedValue {
        /// What the setting is.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is supported instead.
        supported: &'static str,
    },
    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing from the GGUF file")]
    MissingTensor {
        /// The tensor's GGUF name.
        name: String,
    },
    /// No tensor of this Hugging Face name.
    #[error("no tensor named `{name}` (a Hugging Face name) in the GGUF file")]
    NoTensor {
        /// The Hugging Face name asked for.
        name: String,
    },
    /// A tensor whose shape the architecture's conversion cannot undo.
    #[error("tensor `{name}` has shape {shape:?}: {reason}")]
    Shape {
        /// The tensor's Hugging Face name.
        name: String,
        /// Its Hugging Face shape (outermost first).
        shape: Vec<u64>,
        /// What is wrong with it.
        reason: String,
    },
    /// `rope_freqs.weight` that no Llama 3 scaling reproduces.
    #[error("rope_freqs.weight is not a Llama 3 RoPE scaling: {reason}")]
    RopeFactors {
        /// What did not fit.
        reason: String,
    },
    /// A caller's buffer of the wrong length.
    #[error("the {what} buffer holds {got} elements, expected {expected}")]
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// The length the matrix needs.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A tokenizer model llmeff does not build.
    #[error("tokenizer model `{model}` is not supported (supported: {SUPPORTED_TOKENIZER_MODELS})")]
    UnsupportedTokenizer {
        /// `tokenizer.ggml.model` as stored.
        model: String,
    },
    /// A BPE pre-tokenizer llmeff does not know the regular expressions of.
    #[error("pre-tokenizer `{pre}` is not supported (supported: {SUPPORTED_PRE_TOKENIZERS})")]
    UnsupportedPreTokenizer {
        /// `tokenizer.ggml.pre` as stored.
        pre: String,
    },
    /// The tokenizer metadata is inconsistent (lengths differ, an id is out of range).
    #[error("tokenizer metadata: {reason}")]
    TokenizerMetadata {
        /// What is inconsistent.
        reason: String,
    },
    /// The `tokenizers` library refused the tokenizer built from the metadata.
    #[error("building the tokenizer from the GGUF metadata failed: {0}")]
    Tokenizer(#[source] tokenizers::Error),
}
