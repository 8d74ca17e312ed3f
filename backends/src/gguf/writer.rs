//! Writes GGUF v3 files (test-only): [`GgufWriter`] for any metadata and tensors, and
//! [`convert_hf_folder`], which turns a Hugging Face model folder (`config.json`,
//! `model.safetensors`, `tokenizer.model`, `tokenizer_config.json`) into the GGUF llama.cpp's
//! `convert_hf_to_gguf.py` would write, so tests can round-trip every bundled model.
//!
//! What the converter does and this reproduces: tensor names (`gguf-py`'s tensor map), the q/k
//! row permutation for architecture `llama`, Gemma's norms stored as `1 + w` and its `lm_head`
//! dropped, Llama 3's `rope_freqs.weight`, the metadata keys each architecture's
//! `set_gguf_parameters` writes, the SentencePiece vocabulary (`_create_vocab_sentencepiece`,
//! Phi-3's own `set_vocab`), and tensor types: 1-D tensors and norms F32, others the type
//! asked for, F16 where a quantized type's blocks do not divide a row (`QuantError`'s
//! fallback). Q8_0 and Q4_0 use ggml's reference quantizers.
//!
//! Where it departs from the converter, and why:
//! - `tokenizer.ggml.add_space_prefix` is the SentencePiece model's `add_dummy_prefix`; the
//!   converter hard-codes false for Gemma (true of Google's models, not of the bundled Gemma
//!   fixture, whose tokenizer prepends a space).
//! - A Mistral `sliding_window` is written as `llama.attention.sliding_window` (the converter
//!   drops it; see [`super::config`]).
//! - Gemma 2's `query_pre_attn_scalar` is written as `gemma2.attention.scale = 1/√scalar` when
//!   it differs from what llama.cpp infers (the converter never writes it; llama.cpp guesses
//!   from the layer count), and `gemma2.rope.freq_base` when the base is not 10000.
//! - Q4_0 is written directly (the converter stops at Q8_0; `llama-quantize` makes Q4_0 with
//!   the same reference quantizer).

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::format::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GgmlType, MAGIC, MetadataValue};
use super::names::{self, Architecture, Conversion};
use super::quant::{self, BLOCK_LEN};
use super::sentencepiece::{self, ModelError};

/// Why a GGUF file could not be written or a folder converted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    /// Reading or writing a file failed.
    #[error("cannot read or write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file is malformed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// `model.safetensors` is malformed.
    #[error("{path}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What safetensors said.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// `tokenizer.model` is malformed.
    #[error(transparent)]
    SentencePiece(#[from] ModelError),
    /// A `config.json` key is missing or of the wrong type.
    #[error("config.json: `{key}` is missing or not {expected}")]
    ConfigKey {
        /// The key.
        key: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A family llama.cpp's converter handles otherwise.
    #[error("model_type `{model_type}` has no conversion here")]
    ModelType {
        /// The config's `model_type`.
        model_type: String,
    },
    /// A setting the converter does not carry into GGUF.
    #[error("{what} is not converted")]
    Unsupported {
        /// The setting.
        what: String,
    },
    /// A tensor with no GGUF name in its architecture.
    #[error("tensor `{name}` has no GGUF name in architecture {arch}")]
    TensorName {
        /// Its Hugging Face name.
        name: String,
        /// The architecture.
        arch: &'static str,
    },
    /// A tensor stored in a dtype the converter here does not read.
    #[error("tensor `{name}` is stored as {dtype}; F32, F16 and BF16 are read")]
    Dtype {
        /// Its Hugging Face name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// A tensor that cannot be permuted or quantized as asked.
    #[error("tensor `{name}` of shape {shape:?}: {reason}")]
    Shape {
        /// Its Hugging Face name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A tensor waiting to be written.
struct PendingTensor {
    name: String,
    /// GGUF dimensions, innermost first.
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
pub(crate) struct GgufWriter {
    alignment: u64,
    metadata: Vec<(String, MetadataValue)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    /// An empty file with the default alignment (32).
    pub(crate) fn new() -> Self {
        Self {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Aligns tensor data to `alignment` bytes, stated in `general.alignment` when not 32.
    pub(crate) fn with_alignment(mut self, alignment: u64) -> Self {
        self.alignment = alignment;
        self
    }

    /// Adds a metadata pair.
    pub(crate) fn metadata(&mut self, key: &str, value: MetadataValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor of Hugging Face shape `shape` (outermost first), its `data` already
    /// encoded as `ggml_type`.
    pub(crate) fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        data: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type,
            data,
        });
        self
    }

    /// Adds f32 `values` of shape `shape`, encoded as `ggml_type`.
    pub(crate) fn tensor_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: GgmlType,
        values: &[f32],
    ) -> &mut Self {
        let data = encode(ggml_type, values);
        self.tensor(name, shape, ggml_type, data)
    }

    /// The file's bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut metadata = self.metadata.clone();
        if self.alignment != DEFAULT_ALIGNMENT && !metadata.iter().any(|(k, _)| k == ALIGNMENT_KEY)
        {
            metadata.push((
                ALIGNMENT_KEY.into(),
                MetadataValue::U32(self.alignment as u32),
            ));
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in &metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&type_code(value).to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.code().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(self.alignment);
        }
        let data_start = (out.len() as u64).next_multiple_of(self.alignment);
        out.resize(data_start as usize, 0);
        for (t, at) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + at) as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Writes the file to `path`.
    pub(crate) fn write(&self, path: &Path) -> Result<(), WriteError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| WriteError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `values` encoded as `ggml_type` (F32, F16, BF16, Q8_0 or Q4_0; a block type needs a
/// multiple of 32 values).
pub(crate) fn encode(ggml_type: GgmlType, values: &[f32]) -> Vec<u8> {
    match ggml_type {
        GgmlType::Q8_0 => quant::quantize_q8_0(values),
        GgmlType::Q4_0 => quant::quantize_q4_0(values),
        other => quant::encode_float(other, values).unwrap_or_default(),
    }
}

/// A GGUF string: u64 length, then the bytes.
fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's code for a value's type.
fn type_code(value: &MetadataValue) -> u32 {
    match value {
        MetadataValue::U8(_) => 0,
        MetadataValue::I8(_) => 1,
        MetadataValue::U16(_) => 2,
        MetadataValue::I16(_) => 3,
        MetadataValue::U32(_) => 4,
        MetadataValue::I32(_) => 5,
        MetadataValue::F32(_) => 6,
        MetadataValue::Bool(_) => 7,
        MetadataValue::String(_) => 8,
        MetadataValue::Array(_) => 9,
        MetadataValue::U64(_) => 10,
        MetadataValue::I64(_) => 11,
        MetadataValue::F64(_) => 12,
    }
}

/// A metadata value's bytes (its type code is written before it).
fn put_value(out: &mut Vec<u8>, value: &MetadataValue) {
    match value {
        MetadataValue::U8(v) => out.push(*v),
        MetadataValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Bool(v) => out.push(u8::from(*v)),
        MetadataValue::String(s) => put_string(out, s),
        MetadataValue::Array(items) => {
            // An empty array's element type is arbitrary; gguf-py writes its first element's.
            let element = items.first().map_or(4, type_code);
            out.extend_from_slice(&element.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        MetadataValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// How [`convert_hf_folder`] stores tensors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvertOptions {
    /// The type of every tensor of two or more dimensions (the converter's `--outtype`);
    /// 1-D tensors and norms stay F32.
    pub matrix_type: GgmlType,
    /// Tensor data alignment.
    pub alignment: u64,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            matrix_type: GgmlType::F32,
            alignment: DEFAULT_ALIGNMENT,
        }
    }
}

/// llama.cpp's `LlamaFileType` for a file whose matrices are `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q8_0 => 7,
        GgmlType::Bf16 => 32,
        GgmlType::Other(_) => 0,
    }
}

/// A whole file.
fn read(path: &Path) -> Result<Vec<u8>, WriteError> {
    std::fs::read(path).map_err(|source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A JSON file.
fn read_json(path: &Path) -> Result<Value, WriteError> {
    serde_json::from_slice(&read(path)?).map_err(|source| WriteError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The `config.json` values the conversion reads.
struct HfConfig<'a> {
    json: &'a Value,
}

impl HfConfig<'_> {
    /// A key, `None` when absent or null.
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    fn u64(&self, key: &str) -> Result<u64, WriteError> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| WriteError::ConfigKey {
                key: key.into(),
                expected: "a non-negative integer",
            })
    }

    /// A required number.
    fn f64(&self, key: &str) -> Result<f64, WriteError> {
        self.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| WriteError::ConfigKey {
                key: key.into(),
                expected: "a number",
            })
    }

    /// RoPE parameters from transformers 5's `rope_parameters`, else transformers 4's
    /// `rope_theta` and `rope_scaling`.
    fn rope(&self) -> (f64, Option<&Value>, Option<f64>) {
        let params = self.get("rope_parameters");
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or_else(|| self.get("rope_theta").and_then(Value::as_f64))
            .unwrap_or(10_000.0);
        let scaling = params.or_else(|| self.get("rope_scaling")).filter(|s| {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str);
            kind.is_some_and(|k| k != "default")
        });
        let partial = params
            .and_then(|p| p.get("partial_rotary_factor"))
            .and_then(Value::as_f64)
            .or_else(|| self.get("partial_rotary_factor").and_then(Value::as_f64));
        (theta, scaling, partial)
    }
}

/// Converts the Hugging Face model in `dir` to a GGUF file at `out` (see the module docs).
pub(crate) fn convert_hf_folder(
    dir: &Path,
    out: &Path,
    options: ConvertOptions,
) -> Result<(), WriteError> {
    let json = read_json(&dir.join("config.json"))?;
    let config = HfConfig { json: &json };
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let arch = match model_type {
        "llama" | "mistral" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        "phi3" => Architecture::Phi3,
        "gemma2" => Architecture::Gemma2,
        other => {
            return Err(WriteError::ModelType {
                model_type: other.to_string(),
            });
        }
    };
    let mut writer = GgufWriter::new().with_alignment(options.alignment);
    let key = |suffix: &str| format!("{}.{suffix}", arch.gguf_name());
    let u32v = |v: u64| MetadataValue::U32(v as u32);

    let hidden = config.u64("hidden_size")?;
    let heads = config.u64("num_attention_heads")?;
    let kv_heads = config
        .get("num_key_value_heads")
        .and_then(Value::as_u64)
        .unwrap_or(heads);
    let stated_head_dim = config.get("head_dim").and_then(Value::as_u64);
    let head_dim = stated_head_dim.unwrap_or(hidden / heads.max(1));
    let layers = config.u64("num_hidden_layers")?;
    let (theta, scaling, partial) = config.rope();

    writer.metadata(
        "general.architecture",
        MetadataValue::String(arch.gguf_name().into()),
    );
    let name = dir
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    writer.metadata("general.name", MetadataValue::String(name));
    writer.metadata(
        "general.file_type",
        MetadataValue::U32(file_type(options.matrix_type)),
    );
    if matches!(options.matrix_type, GgmlType::Q8_0 | GgmlType::Q4_0) {
        writer.metadata("general.quantization_version", MetadataValue::U32(2));
    }
    writer.metadata(
        &key("context_length"),
        u32v(config.u64("max_position_embeddings")?),
    );
    writer.metadata(&key("embedding_length"), u32v(hidden));
    writer.metadata(&key("block_count"), u32v(layers));
    writer.metadata(
        &key("feed_forward_length"),
        u32v(config.u64("intermediate_size")?),
    );
    writer.metadata(&key("attention.head_count"), u32v(heads));
    writer.metadata(&key("attention.head_count_kv"), u32v(kv_heads));
    writer.metadata(
        &key("attention.layer_norm_rms_epsilon"),
        MetadataValue::F32(config.f64("rms_norm_eps")? as f32),
    );
    // Gemma 2's converter writes no base (llama.cpp's default is 10000); the others do.
    if arch != Architecture::Gemma2 || theta != 10_000.0 {
        writer.metadata(&key("rope.freq_base"), MetadataValue::F32(theta as f32));
    }
    if stated_head_dim.is_some() || arch == Architecture::Gemma2 {
        writer.metadata(&key("attention.key_length"), u32v(head_dim));
        writer.metadata(&key("attention.value_length"), u32v(head_dim));
    }
    let mut rope_freqs = None;
    if let Some(scaling) = scaling {
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let factor = scaling.get("factor").and_then(Value::as_f64);
        match (kind, factor) {
            ("linear", Some(factor)) => {
                writer.metadata(
                    &key("rope.scaling.type"),
                    MetadataValue::String("linear".into()),
                );
                writer.metadata(
                    &key("rope.scaling.factor"),
                    MetadataValue::F32(factor as f32),
                );
            }
            ("llama3", Some(factor)) if arch == Architecture::Llama => {
                rope_freqs = Some(llama3_rope_freqs(scaling, theta, head_dim, factor));
            }
            _ => {
                return Err(WriteError::Unsupported {
                    what: format!("RoPE scaling {scaling}"),
                });
            }
        }
    }
    match arch {
        Architecture::Llama => {
            writer.metadata(&key("vocab_size"), u32v(config.u64("vocab_size")?));
            writer.metadata(&key("rope.dimension_count"), u32v(head_dim));
            if model_type == "mistral"
                && let Some(window) = config.get("sliding_window").and_then(Value::as_u64)
            {
                writer.metadata(&key("attention.sliding_window"), u32v(window));
            }
        }
        Architecture::Phi3 => {
            // `rope_dims = int(rot_pct * n_embd) // n_head` in Phi3MiniModel.
            let rope_dims = (partial.unwrap_or(1.0) * hidden as f64) as u64 / heads.max(1);
            writer.metadata(&key("rope.dimension_count"), u32v(rope_dims));
            if let Some(original) = config
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
            {
                writer.metadata(&key("rope.scaling.original_context_length"), u32v(original));
            }
            let window = config
                .get("sliding_window")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            writer.metadata(&key("attention.sliding_window"), u32v(window));
        }
        Architecture::Gemma2 => {
            for cap in ["attn_logit_softcapping", "final_logit_softcapping"] {
                if let Some(v) = config.get(cap).and_then(Value::as_f64) {
                    writer.metadata(&key(cap), MetadataValue::F32(v as f32));
                }
            }
            if let Some(window) = config.get("sliding_window").and_then(Value::as_u64) {
                writer.metadata(&key("attention.sliding_window"), u32v(window));
            }
            let scalar = config
                .get("query_pre_attn_scalar")
                .and_then(Value::as_f64)
                .unwrap_or(256.0);
            let inferred = if layers == 46 {
                (hidden / heads) as f64
            } else {
                head_dim as f64
            };
            if scalar != inferred {
                writer.metadata(
                    &key("attention.scale"),
                    MetadataValue::F32((1.0 / scalar.sqrt()) as f32),
                );
            }
        }
        Architecture::Qwen2 | Architecture::Qwen3 => {}
    }
    write_vocabulary(&mut writer, dir, &config, arch)?;

    if let Some(freqs) = rope_freqs {
        writer.tensor_f32(names::ROPE_FREQS, &[freqs.len()], GgmlType::F32, &freqs);
    }
    let path = dir.join("model.safetensors");
    let bytes = read(&path)?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|source| WriteError::Safetensors { path, source })?;
    let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        // Gemma2Model.filter_tensors: "lm_head is not used in llama.cpp".
        if arch == Architecture::Gemma2 && name == "lm_head.weight" {
            continue;
        }
        let view = tensors
            .tensor(&name)
            .map_err(|source| WriteError::Safetensors {
                path: dir.join("model.safetensors"),
                source,
            })?;
        let shape = view.shape().to_vec();
        let values = f32_values(&name, view.dtype(), view.data())?;
        let gguf = names::to_gguf(arch, &name).ok_or_else(|| WriteError::TensorName {
            name: name.clone(),
            arch: arch.gguf_name(),
        })?;
        let values = match names::conversion(arch, &name, heads as usize, kv_heads as usize) {
            Conversion::None => values,
            Conversion::PlusOne => values.iter().map(|v| v + 1.0).collect(),
            Conversion::RopeRows { heads } => permute_rows(&name, &shape, heads, &values)?,
        };
        let is_norm = gguf.ends_with("_norm.weight");
        let mut ty = if shape.len() <= 1 || is_norm {
            GgmlType::F32
        } else {
            options.matrix_type
        };
        let row_len = shape.last().copied().unwrap_or(1);
        if matches!(ty, GgmlType::Q8_0 | GgmlType::Q4_0) && !row_len.is_multiple_of(BLOCK_LEN) {
            ty = GgmlType::F16;
        }
        writer.tensor_f32(&gguf, &shape, ty, &values);
    }
    writer.write(out)
}

/// A safetensors tensor's values as f32.
fn f32_values(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>, WriteError> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
        other => {
            return Err(WriteError::Dtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

/// `LlamaModel.permute`: each head's rows from rotate-half order into interleaved pairs.
fn permute_rows(
    name: &str,
    shape: &[usize],
    heads: usize,
    values: &[f32],
) -> Result<Vec<f32>, WriteError> {
    let rows = shape.first().copied().unwrap_or(0);
    if heads == 0 || rows == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(WriteError::Shape {
            name: name.to_string(),
            shape: shape.to_vec(),
            reason: "its rows do not split into heads of an even size",
        });
    }
    let cols = values.len() / rows;
    let mut out = vec![0f32; values.len()];
    for (row, src) in values.chunks_exact(cols).enumerate() {
        let stored = names::rope_stored_row(row, rows / heads);
        out[stored * cols..(stored + 1) * cols].copy_from_slice(src);
    }
    Ok(out)
}

/// `LlamaModel.generate_extra_tensors`: Llama 3's per-frequency divisors, computed in f32 as
/// the converter's torch code does.
fn llama3_rope_freqs(scaling: &Value, theta: f64, head_dim: u64, factor: f64) -> Vec<f32> {
    let get =
        |k: &str, default: f64| scaling.get(k).and_then(Value::as_f64).unwrap_or(default) as f32;
    let (factor, low, high) = (
        factor as f32,
        get("low_freq_factor", 1.0),
        get("high_freq_factor", 4.0),
    );
    let old_len = get("original_max_position_embeddings", 8192.0);
    let (low_wavelen, high_wavelen) = (old_len / low, old_len / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_len / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// SentencePiece's normal-token type.
const NORMAL: i32 = 1;
/// SentencePiece's unknown-token type.
const UNKNOWN: i32 = 2;
/// SentencePiece's control-token type.
const CONTROL: i32 = 3;
/// SentencePiece's user-defined type.
const USER_DEFINED: i32 = 4;
/// SentencePiece's unused type (the converter's `[PADn]` fillers).
const UNUSED: i32 = 5;

/// The vocabulary as `_create_vocab_sentencepiece` (and Phi-3's `set_vocab`) writes it, with
/// `gguf.SpecialVocab`'s special ids and BOS/EOS flags.
fn write_vocabulary(
    writer: &mut GgufWriter,
    dir: &Path,
    config: &HfConfig<'_>,
    arch: Architecture,
) -> Result<(), WriteError> {
    let model = sentencepiece::parse(&read(&dir.join("tokenizer.model"))?)?;
    let vocab_size = config
        .get("vocab_size")
        .and_then(Value::as_u64)
        .map_or(model.pieces.len(), |v| v as usize);
    let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10_000f32; vocab_size];
    let mut types = vec![UNUSED; vocab_size];
    for (id, piece) in model.pieces.iter().enumerate().take(vocab_size) {
        tokens[id] = piece.text.clone();
        scores[id] = piece.score;
        types[id] = if (1..=6).contains(&piece.kind) {
            piece.kind
        } else {
            NORMAL
        };
    }
    let tokenizer_config_path = dir.join("tokenizer_config.json");
    let tokenizer_config = if tokenizer_config_path.is_file() {
        read_json(&tokenizer_config_path)?
    } else {
        Value::Null
    };
    let mut added: Vec<(usize, String, bool)> = Vec::new();
    if let Some(decoder) = tokenizer_config
        .get("added_tokens_decoder")
        .and_then(Value::as_object)
    {
        for (id, data) in decoder {
            if let (Ok(id), Some(content)) = (
                id.parse::<usize>(),
                data.get("content").and_then(Value::as_str),
            ) {
                let special = data
                    .get("special")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                added.push((id, content.to_string(), special));
            }
        }
    }
    if arch == Architecture::Phi3 {
        // Phi3MiniModel.set_vocab also takes tokenizer.json's added tokens.
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        for data in tokenizer
            .get("added_tokens")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(content)) = (
                data.get("id").and_then(Value::as_u64),
                data.get("content").and_then(Value::as_str),
            ) {
                let special = data
                    .get("special")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                added.push((id as usize, content.to_string(), special));
            }
        }
    }
    for (id, content, special) in added {
        if id >= vocab_size {
            continue;
        }
        let looks_special = content.starts_with("<|") && content.ends_with("|>");
        if special || (arch != Architecture::Phi3 && looks_special) {
            types[id] = CONTROL;
            tokens[id] = content;
        } else {
            types[id] = USER_DEFINED;
            // "pre-normalize user-defined spaces" (Phi-3's converter keeps them).
            tokens[id] = if arch == Architecture::Phi3 {
                content
            } else {
                content.replace('▁', " ")
            };
        }
        scores[id] = -1000.0;
    }
    let unk = types.iter().position(|&t| t == UNKNOWN);

    writer.metadata(
        "tokenizer.ggml.model",
        MetadataValue::String("llama".into()),
    );
    writer.metadata(
        "tokenizer.ggml.pre",
        MetadataValue::String("default".into()),
    );
    writer.metadata(
        "tokenizer.ggml.tokens",
        MetadataValue::Array(tokens.into_iter().map(MetadataValue::String).collect()),
    );
    writer.metadata(
        "tokenizer.ggml.scores",
        MetadataValue::Array(scores.into_iter().map(MetadataValue::F32).collect()),
    );
    writer.metadata(
        "tokenizer.ggml.token_type",
        MetadataValue::Array(types.into_iter().map(MetadataValue::I32).collect()),
    );
    for (key, value) in [
        (
            "tokenizer.ggml.bos_token_id",
            config.get("bos_token_id").and_then(Value::as_u64),
        ),
        (
            "tokenizer.ggml.eos_token_id",
            config.get("eos_token_id").and_then(Value::as_u64),
        ),
        ("tokenizer.ggml.unknown_token_id", unk.map(|u| u as u64)),
        (
            "tokenizer.ggml.padding_token_id",
            config.get("pad_token_id").and_then(Value::as_u64),
        ),
    ] {
        if let Some(id) = value {
            writer.metadata(key, MetadataValue::U32(id as u32));
        }
    }
    for (key, flag) in [
        ("tokenizer.ggml.add_bos_token", "add_bos_token"),
        ("tokenizer.ggml.add_eos_token", "add_eos_token"),
    ] {
        if let Some(add) = tokenizer_config.get(flag).and_then(Value::as_bool) {
            writer.metadata(key, MetadataValue::Bool(add));
        }
    }
    writer.metadata(
        "tokenizer.ggml.add_space_prefix",
        MetadataValue::Bool(model.add_dummy_prefix),
    );
    Ok(())
}
