//! llama.cpp's GGUF files read as Hugging Face models: the metadata as the `config.json` it
//! implies ([`GgufFile::hf_config`]), the tokenizer metadata as a `tokenizers::Tokenizer`
//! ([`GgufFile::tokenizer`]), and every tensor under its Hugging Face name in Hugging Face's
//! layout, with what llama.cpp's converter changed undone ([`GgufFile::read_f32`]); Q8_0 and
//! Q4_0 tensors also as llmeff's int8/int4 block-32 codes without an f32 copy
//! ([`GgufFile::blocks`]).
//!
//! Architectures: `llama` (Hugging Face's Llama and Mistral), `qwen2`, `qwen3`, `phi3`,
//! `gemma2`. Tensor types: F32, F16, BF16, Q8_0, Q4_0. Anything else is an error naming itself
//! and listing what is supported.
//!
//! The file is memory-mapped; [`GgufFile::open`] validates the whole header first (see
//! [`format`]), so no later read can go out of bounds, and nothing here panics on corrupt
//! input. It deliberately does not load a model: the loader builds one from what this module
//! returns. `writer` (tests only) writes GGUF files, and converts a Hugging Face folder as
//! llama.cpp's converter would, so the tests can round-trip every bundled model.

mod blocks;
mod config;
mod error;
mod format;
mod names;
mod quant;
#[cfg(test)]
mod sentencepiece;
mod tokenizer;
#[cfg(test)]
pub(crate) mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use blocks::{BlockKind, QuantizedMatrix};
pub use error::GgufError;
pub use format::{GgmlType, MetadataValue, TensorInfo};
pub use names::Architecture;
#[cfg(test)]
pub use quant::BLOCK_LEN;

use format::{Layout, MAGIC};
use names::{Conversion, ROPE_FREQS};

/// A tensor reachable by its Hugging Face name.
#[derive(Debug, Clone)]
struct HfTensor {
    /// The Hugging Face name.
    name: String,
    /// Its index in the layout's tensors.
    index: usize,
    /// What the converter did to its values.
    conversion: Conversion,
    /// Hugging Face shape, outermost first (GGUF's dimensions reversed).
    shape: Vec<usize>,
}

/// An open, validated GGUF file of a supported architecture.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    layout: Layout,
    /// Metadata key → index in `layout.metadata`.
    keys: HashMap<String, usize>,
    /// GGUF tensor name → index in `layout.tensors`.
    gguf_names: HashMap<String, usize>,
    architecture: Architecture,
    /// Mapped tensors in file order.
    hf: Vec<HfTensor>,
    /// Hugging Face name → index in `hf`.
    hf_names: HashMap<String, usize>,
    /// Indices of tensors with no Hugging Face name (other than `rope_freqs.weight`, which
    /// [`GgufFile::hf_config`] reads).
    unmapped: Vec<usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.layout.version)
            .field("architecture", &self.architecture)
            .field("tensors", &self.layout.tensors.len())
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Maps and validates `path`: magic, version 2 or 3, bounded counts, every metadata value,
    /// every tensor's type, shape and bytes inside the file at an aligned offset; then the
    /// architecture, and that every tensor llama.cpp permuted splits into its heads.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; like every memory-mapped
        // model loader, it relies on the file not being truncated or rewritten while open
        // (the same contract llama.cpp and safetensors' loaders make).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        if map.len() < MAGIC.len() || map[..MAGIC.len()] != MAGIC {
            return Err(GgufError::NotGguf {
                path,
                found: map[..map.len().min(MAGIC.len())].to_vec(),
            });
        }
        let layout = format::parse(&map)?;
        Self::from_layout(path, map, layout)
    }

    /// Indexes a parsed layout and resolves its architecture and tensor names.
    fn from_layout(path: PathBuf, map: Mmap, layout: Layout) -> Result<Self, GgufError> {
        let keys = layout
            .metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let gguf_names = layout
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let mut file = Self {
            path,
            map,
            layout,
            keys,
            gguf_names,
            architecture: Architecture::Llama,
            hf: Vec::new(),
            hf_names: HashMap::new(),
            unmapped: Vec::new(),
        };
        let name = file.required_str("general.architecture")?;
        file.architecture =
            Architecture::from_gguf(name).ok_or_else(|| GgufError::UnsupportedArchitecture {
                architecture: name.to_string(),
            })?;
        file.map_tensors()?;
        Ok(file)
    }

    /// Gives each tensor its Hugging Face name and conversion, checking that permuted rows
    /// split into their heads.
    fn map_tensors(&mut self) -> Result<(), GgufError> {
        let arch = self.architecture;
        // Only llama's q/k permutation needs the head counts; other files need not state them
        // here (`hf_config` requires them).
        let heads = self.optional_count(&self.arch_key("attention.head_count"))?;
        let kv_heads = self
            .optional_count(&self.arch_key("attention.head_count_kv"))?
            .or(heads);
        let mut hf = Vec::new();
        let mut unmapped = Vec::new();
        for (index, tensor) in self.layout.tensors.iter().enumerate() {
            let Some(name) = names::to_hf(arch, &tensor.name) else {
                if tensor.name != ROPE_FREQS {
                    unmapped.push(index);
                }
                continue;
            };
            let shape = tensor
                .dims
                .iter()
                .rev()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| GgufError::SizeOverflow {
                    name: tensor.name.clone(),
                    dims: tensor.dims.clone(),
                })?;
            let conversion = names::conversion(
                arch,
                &name,
                heads.unwrap_or(0) as usize,
                kv_heads.unwrap_or(0) as usize,
            );
            if let Conversion::RopeRows { heads: per_tensor } = conversion {
                if heads.is_none() {
                    return Err(GgufError::MissingKey {
                        key: self.arch_key("attention.head_count"),
                    });
                }
                // The permutation moves rows; a row must be a matrix row of whole blocks.
                if shape.len() > 2 || (shape.len() == 1 && tensor.ggml_type.block_len() > 1) {
                    return Err(GgufError::Shape {
                        name,
                        shape: tensor.dims.iter().rev().copied().collect(),
                        reason: format!(
                            "llama.cpp permutes the rows of q/k projections, which must be matrices or unquantized vectors (stored as {})",
                            tensor.ggml_type.name()
                        ),
                    });
                }
                rows_per_head(&name, &shape, per_tensor)?;
            }
            hf.push(HfTensor {
                name,
                index,
                conversion,
                shape,
            });
        }
        self.hf_names = hf
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        self.hf = hf;
        self.unmapped = unmapped;
        Ok(())
    }

    #[cfg(test)]
    /// The tensor data's alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.layout.alignment
    }

    /// `general.architecture` (`llama` for Llama and Mistral alike; [`Self::hf_config`]'s
    /// `model_type` tells them apart).
    pub fn architecture(&self) -> &str {
        self.architecture.gguf_name()
    }

    /// The architecture as llmeff maps it.
    pub(crate) fn arch(&self) -> Architecture {
        self.architecture
    }

    /// The Hugging Face `config.json` the metadata implies (see [`config`] for each key's
    /// source): `model_type`, sizes, RoPE as transformers 5's `rope_parameters`, norms, tied
    /// embeddings, special token ids and each family's own keys.
    pub fn hf_config(&self) -> Result<serde_json::Value, GgufError> {
        config::hf_config(self)
    }

    /// The tokenizer the metadata describes (see [`tokenizer`]), encoding as the model's
    /// Hugging Face `tokenizer.json` does.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, GgufError> {
        tokenizer::build(self)
    }

    /// One metadata value.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.keys.get(key).map(|&i| &self.layout.metadata[i].1)
    }

    #[cfg(test)]
    /// Every tensor as the file stores it (GGUF names and dimensions).
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.layout.tensors
    }

    /// A tensor by its GGUF name.
    pub(crate) fn gguf_tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.gguf_names.get(name).map(|&i| &self.layout.tensors[i])
    }

    /// The Hugging Face names of the tensors, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.hf.iter().map(|t| t.name.as_str())
    }

    /// GGUF names of tensors that have no Hugging Face equivalent for this architecture (a
    /// loader should refuse a file with any: their computation would be missing).
    pub fn unmapped_tensors(&self) -> impl Iterator<Item = &str> {
        self.unmapped
            .iter()
            .map(|&i| self.layout.tensors[i].name.as_str())
    }

    /// A tensor by Hugging Face name, or the error naming it.
    fn hf_tensor(&self, name: &str) -> Result<&HfTensor, GgufError> {
        self.hf_names
            .get(name)
            .map(|&i| &self.hf[i])
            .ok_or_else(|| GgufError::NoTensor {
                name: name.to_string(),
            })
    }

    /// A tensor's Hugging Face shape (outermost first: `[out, in]` for a linear weight).
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.hf_names
            .get(name)
            .map(|&i| self.hf[i].shape.as_slice())
    }

    #[cfg(test)]
    /// A tensor's stored type.
    pub fn tensor_type(&self, name: &str) -> Option<GgmlType> {
        self.hf_names
            .get(name)
            .map(|&i| self.layout.tensors[self.hf[i].index].ggml_type)
    }

    /// The stored bytes of a tensor (bounds checked at open).
    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        // `parse` checked start + len <= file length, and both fit in usize once mapped.
        &self.map[info.start as usize..(info.start + info.len) as usize]
    }

    /// A tensor's values as f32 in Hugging Face's layout, dequantized exactly as ggml does,
    /// with the converter's changes undone: llama's q/k rows put back in rotate-half order,
    /// Gemma's norms stored as `1 + w` read as `w` (the subtraction is exact for stored values
    /// in [0.5, 2], Sterbenz; so `1 + w` recomputed from it is the stored value again).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let tensor = self.hf_tensor(name)?;
        let info = &self.layout.tensors[tensor.index];
        if !info.ggml_type.is_supported() {
            return Err(GgufError::UnsupportedTensorType {
                name: name.to_string(),
                type_name: info.ggml_type.name(),
            });
        }
        let bytes = self.bytes(info);
        let elements = tensor.shape.iter().product::<usize>();
        let mut out = vec![0f32; elements];
        if elements == 0 {
            return Ok(out);
        }
        let per_head = match tensor.conversion {
            Conversion::RopeRows { heads } => Some(rows_per_head(name, &tensor.shape, heads)?),
            _ => None,
        };
        match per_head {
            None => {
                quant::dequantize(info.ggml_type, bytes, &mut out);
            }
            Some(per_head) => {
                let rows = tensor.shape[0];
                let cols = elements / rows;
                let row_bytes = bytes.len() / rows;
                for (row, dest) in out.chunks_exact_mut(cols).enumerate() {
                    let stored = names::rope_stored_row(row, per_head);
                    let src = &bytes[stored * row_bytes..(stored + 1) * row_bytes];
                    quant::dequantize(info.ggml_type, src, dest);
                }
            }
        }
        if tensor.conversion == Conversion::PlusOne {
            out.iter_mut().for_each(|v| *v -= 1.0);
        }
        Ok(out)
    }

    /// A Q8_0 or Q4_0 tensor as llmeff's int8/int4 block-32 codes and scales, in Hugging
    /// Face's layout, borrowing the file (see [`blocks`] for the exact mapping). `Ok(None)` when
    /// the tensor is stored otherwise, or when its values were changed by more than a row
    /// order (Gemma's `1 + w` norms): read those with [`Self::read_f32`].
    pub fn blocks(&self, name: &str) -> Result<Option<QuantizedMatrix<'_>>, GgufError> {
        let tensor = self.hf_tensor(name)?;
        let info = &self.layout.tensors[tensor.index];
        let kind = match info.ggml_type {
            GgmlType::Q8_0 => BlockKind::Q8_0,
            GgmlType::Q4_0 => BlockKind::Q4_0,
            _ => return Ok(None),
        };
        let per_head = match tensor.conversion {
            Conversion::None => None,
            Conversion::RopeRows { heads } => Some(rows_per_head(name, &tensor.shape, heads)?),
            Conversion::PlusOne => return Ok(None),
        };
        let cols = tensor.shape.last().copied().unwrap_or(1);
        let rows = tensor.shape.iter().product::<usize>() / cols.max(1);
        Ok(Some(QuantizedMatrix::new(
            kind,
            rows,
            cols,
            self.bytes(info),
            per_head,
        )))
    }

    /// `<architecture>.<suffix>`, the key of an architecture's own metadata.
    pub(crate) fn arch_key(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.architecture.gguf_name())
    }

    /// The error for a metadata value of the wrong type.
    fn key_type(key: &str, expected: &'static str, found: &MetadataValue) -> GgufError {
        GgufError::KeyType {
            key: key.to_string(),
            expected,
            found: found.type_name(),
        }
    }

    /// A string value, required.
    pub(crate) fn required_str(&self, key: &str) -> Result<&str, GgufError> {
        self.optional_str(key)?
            .ok_or_else(|| GgufError::MissingKey {
                key: key.to_string(),
            })
    }

    /// A string value, if present.
    pub(crate) fn optional_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.metadata(key)
            .map(|v| v.as_str().ok_or_else(|| Self::key_type(key, "a string", v)))
            .transpose()
    }

    /// A boolean value, if present.
    pub(crate) fn optional_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.metadata(key)
            .map(|v| v.as_bool().ok_or_else(|| Self::key_type(key, "a bool", v)))
            .transpose()
    }

    /// A non-negative integer, if present.
    pub(crate) fn optional_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.metadata(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::key_type(key, "a non-negative integer", v))
            })
            .transpose()
    }

    /// A count stated once or per layer: llama.cpp accepts an array for some (`head_count`,
    /// `feed_forward_length`); Hugging Face's families have one value, so an array must hold
    /// a single value repeated.
    pub(crate) fn optional_count(&self, key: &str) -> Result<Option<u64>, GgufError> {
        let Some(value) = self.metadata(key) else {
            return Ok(None);
        };
        if let Some(items) = value.as_array() {
            let counts = items
                .iter()
                .map(MetadataValue::as_u64)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Self::key_type(key, "an array of non-negative integers", value))?;
            return match counts.split_first() {
                Some((&first, rest)) if rest.iter().all(|&c| c == first) => Ok(Some(first)),
                _ => Err(GgufError::UnsupportedValue {
                    what: "a per-layer count",
                    value: format!("{key} = {counts:?}"),
                    supported: "the same value for every layer",
                }),
            };
        }
        self.optional_u64(key)
    }

    /// A count, required.
    pub(crate) fn required_count(&self, key: &str) -> Result<u64, GgufError> {
        self.optional_count(key)?
            .ok_or_else(|| GgufError::MissingKey {
                key: key.to_string(),
            })
    }

    /// A number (float or integer), if present.
    pub(crate) fn optional_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.metadata(key)
            .map(|v| v.as_f64().ok_or_else(|| Self::key_type(key, "a number", v)))
            .transpose()
    }

    /// A number, required.
    pub(crate) fn required_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.optional_f64(key)?
            .ok_or_else(|| GgufError::MissingKey {
                key: key.to_string(),
            })
    }

    /// The values of an F32 tensor given by GGUF name (metadata-like tensors such as
    /// `rope_freqs.weight`), dequantized if stored otherwise.
    pub(crate) fn gguf_tensor_f32(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self
            .gguf_tensor(name)
            .ok_or_else(|| GgufError::MissingTensor {
                name: name.to_string(),
            })?;
        let mut out = vec![0f32; usize::try_from(info.elements()).unwrap_or(0)];
        if !quant::dequantize(info.ggml_type, self.bytes(info), &mut out) {
            return Err(GgufError::UnsupportedTensorType {
                name: name.to_string(),
                type_name: info.ggml_type.name(),
            });
        }
        Ok(out)
    }
}

/// Rows per head of a tensor under llama.cpp's q/k permutation: its rows must split into
/// `heads` heads of an even number of rows.
fn rows_per_head(name: &str, shape: &[usize], heads: usize) -> Result<usize, GgufError> {
    let rows = shape.first().copied().unwrap_or(0);
    if heads == 0 || rows == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(GgufError::Shape {
            name: name.to_string(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            reason: format!(
                "llama.cpp permuted its rows per head, but they do not split into {heads} heads of an even size"
            ),
        });
    }
    Ok(rows / heads)
}

#[cfg(test)]
mod tests {
    //! Every bundled model converted to GGUF as llama.cpp would, at every supported type, and
    //! read back: config, tokenizer and tensors against the Hugging Face folder; then corrupt,
    //! unsupported and hand-made files.

    use std::path::{Path, PathBuf};

    use safetensors::SafeTensors;
    use serde_json::Value;

    use super::writer::{ConvertOptions, GgufWriter, convert_hf_folder};
    use super::*;

    /// A bundled fixture's folder in the repository's `models/`.
    fn fixture(name: &str) -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let candidates = [root.join("models").join(name)];
        candidates
            .iter()
            .find(|dir| dir.join("config.json").is_file())
            .cloned()
            .unwrap_or_else(|| panic!("fixture {name} not found in {candidates:?}"))
    }

    fn json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn convert(name: &str, matrix_type: GgmlType, dir: &Path) -> GgufFile {
        let out = dir.join(format!("{name}-{}.gguf", matrix_type.name()));
        let options = ConvertOptions {
            matrix_type,
            ..ConvertOptions::default()
        };
        convert_hf_folder(&fixture(name), &out, options).unwrap();
        GgufFile::open(&out).unwrap()
    }

    /// The values a tensor should read back as, given the Hugging Face values, the type it was
    /// stored as and the conversion llama.cpp applied.
    fn expected(values: &[f32], ty: GgmlType, plus_one: bool) -> Vec<f32> {
        match ty {
            // Stored as fl(w + 1), read back as fl(stored − 1): exactly this f32 arithmetic.
            GgmlType::F32 if plus_one => values.iter().map(|w| (w + 1.0) - 1.0).collect(),
            GgmlType::F32 => values.to_vec(),
            GgmlType::F16 => values
                .iter()
                .map(|w| half::f16::from_f32(*w).to_f32())
                .collect(),
            GgmlType::Bf16 => values
                .iter()
                .map(|w| half::bf16::from_f32(*w).to_f32())
                .collect(),
            GgmlType::Q8_0 | GgmlType::Q4_0 => {
                let bytes = writer::encode(ty, values);
                let mut out = vec![0f32; values.len()];
                assert!(quant::dequantize(ty, &bytes, &mut out));
                out
            }
            GgmlType::Other(_) => unreachable!("the writer writes no such type"),
        }
    }

    fn f32s(view: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn every_fixture_reads_back_at_every_type() {
        let dir = tempfile::tempdir().unwrap();
        for name in crate::bundled::aliases() {
            let folder = fixture(name);
            let bytes = std::fs::read(folder.join("model.safetensors")).unwrap();
            let tensors = SafeTensors::deserialize(&bytes).unwrap();
            for ty in [
                GgmlType::F32,
                GgmlType::F16,
                GgmlType::Bf16,
                GgmlType::Q8_0,
                GgmlType::Q4_0,
            ] {
                let file = convert(name, ty, dir.path());
                assert_eq!(file.unmapped_tensors().count(), 0, "{name}");
                let mut expected_names: Vec<String> = tensors
                    .names()
                    .into_iter()
                    .filter(|n| !(name == "tiny-gemma2" && *n == "lm_head.weight"))
                    .map(String::from)
                    .collect();
                expected_names.sort();
                let mut got: Vec<String> = file.names().map(String::from).collect();
                got.sort();
                assert_eq!(got, expected_names, "{name} {ty:?}");
                for hf in &expected_names {
                    let view = tensors.tensor(hf).unwrap();
                    assert_eq!(file.shape(hf), Some(view.shape()), "{name} {hf}");
                    let stored = file.tensor_type(hf).unwrap();
                    let is_vector = view.shape().len() == 1 || hf.ends_with("norm.weight");
                    let row_fits = view.shape().last().is_some_and(|c| c % BLOCK_LEN == 0);
                    let want_type = match ty {
                        _ if is_vector => GgmlType::F32,
                        GgmlType::Q8_0 | GgmlType::Q4_0 if !row_fits => GgmlType::F16,
                        other => other,
                    };
                    assert_eq!(stored, want_type, "{name} {hf}");
                    let plus_one = name == "tiny-gemma2" && hf.ends_with("norm.weight");
                    let want = expected(&f32s(&view), stored, plus_one);
                    let read = file.read_f32(hf).unwrap();
                    let same = want
                        .iter()
                        .zip(&read)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same && want.len() == read.len(),
                        "{name} {ty:?} {hf} differs"
                    );
                    match file.blocks(hf).unwrap() {
                        Some(m) => {
                            assert!(matches!(stored, GgmlType::Q8_0 | GgmlType::Q4_0));
                            let blocks = m.to_llmeff();
                            assert_eq!(blocks.format, m.kind().weight_format());
                            let cols = m.cols();
                            for (i, v) in read.iter().enumerate() {
                                assert_eq!(
                                    blocks.value(i / cols, i % cols).to_bits(),
                                    v.to_bits(),
                                    "{name} {hf} [{i}]"
                                );
                            }
                        }
                        None => assert!(!matches!(stored, GgmlType::Q8_0 | GgmlType::Q4_0)),
                    }
                }
                if ty == GgmlType::F32 {
                    config_agrees(
                        name,
                        &file.hf_config().unwrap(),
                        &json(&folder.join("config.json")),
                    );
                    tokenizer_agrees(name, &file, &folder);
                }
            }
        }
    }

    /// The end-to-end check: a GGUF converted from each fixture, its config, tokenizer and
    /// tensors written back out as a Hugging Face folder, loaded by llmeff's own loader and
    /// run: the golden prompts encode to the golden ids and generate the golden greedy ids.
    #[test]
    fn a_gguf_reread_as_a_folder_generates_the_golden_greedy_ids() {
        use api::runtime::{
            Compute, DType, Decoding, GenerateOptions, LoadedModel, ModelSpec, WeightsKind,
        };
        use safetensors::tensor::TensorView;

        let dir = tempfile::tempdir().unwrap();
        let runtime = crate::BurnRuntime::with_hub_cache(
            crate::HubCache::new(dir.path().join("no-hub-cache")).offline(true),
        );
        for name in crate::bundled::aliases() {
            let file = convert(name, GgmlType::F32, dir.path());
            let folder = dir.path().join(format!("{name}-from-gguf"));
            std::fs::create_dir(&folder).unwrap();
            let config = file.hf_config().unwrap();
            std::fs::write(folder.join("config.json"), config.to_string()).unwrap();
            let tokenizer = file.tokenizer().unwrap();
            std::fs::write(
                folder.join("tokenizer.json"),
                tokenizer.to_string(false).unwrap(),
            )
            .unwrap();
            let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = file
                .names()
                .map(|n| {
                    let bytes = file
                        .read_f32(n)
                        .unwrap()
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect();
                    (n.to_string(), bytes, file.shape(n).unwrap().to_vec())
                })
                .collect();
            let views = tensors.iter().map(|(n, bytes, shape)| {
                (
                    n.clone(),
                    TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap(),
                )
            });
            let bytes = safetensors::serialize(views, None).unwrap();
            std::fs::write(folder.join("model.safetensors"), bytes).unwrap();

            let spec = ModelSpec {
                source: folder.display().to_string(),
                revision: None,
                dtype: DType::F32,
                weights: WeightsKind::Pretrained,
                device: "cpu".into(),
                seed: 0,
                quantization: None,
                compute: Compute::Auto,
            };
            let model = runtime
                .load_model(&spec)
                .unwrap_or_else(|e| panic!("{name}: loading the GGUF's folder: {e}"));
            let golden = json(&fixture(name).join("golden.json"));
            let steps = golden["generation"]["max_new_tokens"].as_u64().unwrap() as usize;
            let options = GenerateOptions {
                max_new_tokens: steps,
                min_new_tokens: 0,
                stop_at_eos: false,
                decoding: Decoding::Greedy,
            };
            for case in golden["prompts"].as_array().unwrap() {
                let ids = |v: &Value| -> Vec<u32> {
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as u32)
                        .collect()
                };
                let prompt = tokenizer
                    .encode(case["prompt"].as_str().unwrap(), true)
                    .unwrap()
                    .get_ids()
                    .to_vec();
                assert_eq!(prompt, ids(&case["input_ids"]), "{name}");
                let mut generation = model
                    .start(std::slice::from_ref(&prompt), &options)
                    .unwrap();
                let mut got = Vec::new();
                for _ in 0..steps {
                    got.extend(generation.step().unwrap().tokens.into_iter().flatten());
                }
                assert_eq!(
                    got,
                    ids(&case["greedy_new_ids"]),
                    "{name}: {}",
                    case["prompt"]
                );
            }
        }
    }

    /// `ours` states what `theirs` (the fixture's `config.json`) does on every key llmeff reads.
    fn config_agrees(name: &str, ours: &Value, theirs: &Value) {
        let get = |v: &Value, key: &str| v.get(key).cloned().unwrap_or(Value::Null);
        let rope = |v: &Value, key: &str| {
            let params = get(v, "rope_parameters");
            let scaling = get(v, "rope_scaling");
            [params.get(key), scaling.get(key), v.get(key)]
                .into_iter()
                .flatten()
                .find(|x| !x.is_null())
                .cloned()
                .unwrap_or(Value::Null)
        };
        let same = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        };
        let heads = theirs["num_attention_heads"].as_u64().unwrap();
        let mut want = theirs.clone();
        if want.get("head_dim").is_none_or(Value::is_null) {
            want["head_dim"] = (theirs["hidden_size"].as_u64().unwrap() / heads).into();
        }
        for key in [
            "model_type",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "rms_norm_eps",
            "max_position_embeddings",
            "vocab_size",
            "tie_word_embeddings",
            "bos_token_id",
            "eos_token_id",
            "sliding_window",
            "attn_logit_softcapping",
            "final_logit_softcapping",
            "query_pre_attn_scalar",
            "layer_types",
            "original_max_position_embeddings",
        ] {
            assert!(
                same(&get(ours, key), &get(&want, key)),
                "{name}: {key}: {} vs {}",
                get(ours, key),
                get(&want, key)
            );
        }
        for key in [
            "rope_theta",
            "rope_type",
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
            "partial_rotary_factor",
        ] {
            let (a, b) = (rope(ours, key), rope(&want, key));
            let default = key == "rope_type" && b.is_null() && a == "default";
            assert!(default || same(&a, &b), "{name}: rope {key}: {a} vs {b}");
        }
    }

    /// The GGUF's tokenizer encodes the golden texts as the fixture's tokenizer.json does, and
    /// derives the same merges.
    fn tokenizer_agrees(name: &str, file: &GgufFile, folder: &Path) {
        let tokenizer = file.tokenizer().unwrap();
        let golden = json(&folder.join("golden.json"));
        let cases = golden["tokenizer_cases"].as_array().unwrap();
        let prompts = golden["prompts"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases.iter().chain(prompts) {
            let text = case
                .get("text")
                .or_else(|| case.get("prompt"))
                .and_then(Value::as_str)
                .unwrap();
            let want: Vec<u32> = case
                .get("ids")
                .or_else(|| case.get("input_ids"))
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let ids = tokenizer.encode(text, true).unwrap().get_ids().to_vec();
            assert_eq!(ids, want, "{name}: {text:?}");
            if let Some(decoded) = case.get("decoded").and_then(Value::as_str) {
                assert_eq!(
                    tokenizer.decode(&ids, true).unwrap(),
                    decoded,
                    "{name}: {text:?}"
                );
            }
        }
        let ours: Value = serde_json::from_str(&tokenizer.to_string(false).unwrap()).unwrap();
        let theirs = json(&folder.join("tokenizer.json"));
        let pairs = |v: &Value| -> Vec<String> {
            v["model"]["merges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| match m {
                    Value::String(s) => s.clone(),
                    other => other
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_str().unwrap())
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect()
        };
        assert_eq!(pairs(&ours), pairs(&theirs), "{name}: merges");
    }

    /// A small valid file: a llama with one layer's worth of tensors of each supported type and
    /// one Q6_K tensor.
    fn small_writer() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("llama".into()),
        )
        .metadata("llama.attention.head_count", MetadataValue::U32(2))
        .metadata("llama.attention.head_count_kv", MetadataValue::U32(1));
        let values: Vec<f32> = (0..8 * 64)
            .map(|i| ((i * 7919) % 255) as f32 / 64.0 - 2.0)
            .collect();
        w.tensor_f32("blk.0.attn_q.weight", &[8, 64], GgmlType::Q8_0, &values)
            .tensor_f32(
                "blk.0.attn_k.weight",
                &[4, 64],
                GgmlType::Q4_0,
                &values[..256],
            )
            .tensor_f32(
                "blk.0.attn_v.weight",
                &[4, 64],
                GgmlType::F16,
                &values[..256],
            )
            .tensor_f32(
                "blk.0.attn_norm.weight",
                &[64],
                GgmlType::F32,
                &values[..64],
            )
            .tensor_f32(
                "token_embd.weight",
                &[4, 64],
                GgmlType::Bf16,
                &values[..256],
            )
            .tensor(
                "output.weight",
                &[1, 256],
                GgmlType::Other(14),
                vec![0; 210],
            );
        w
    }

    fn write_and_open(writer: &GgufWriter) -> (tempfile::TempDir, Result<GgufFile, GgufError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        writer.write(&path).unwrap();
        let file = GgufFile::open(&path);
        (dir, file)
    }

    fn open_bytes(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, bytes).unwrap();
        GgufFile::open(&path)
    }

    #[test]
    fn permuted_quantized_rows_read_back_in_hugging_face_order() {
        let (_dir, file) = write_and_open(&small_writer());
        let file = file.unwrap();
        // attn_q is 8 rows over 2 heads: stored rows [0, 2, 1, 3, 4, 6, 5, 7] of the HF ones.
        let q = file
            .read_f32("model.layers.0.self_attn.q_proj.weight")
            .unwrap();
        let stored = file.gguf_tensor("blk.0.attn_q.weight").unwrap();
        let mut raw = vec![0f32; 8 * 64];
        quant::dequantize(GgmlType::Q8_0, file.bytes(stored), &mut raw);
        for (hf_row, stored_row) in [
            (0, 0),
            (1, 2),
            (2, 1),
            (3, 3),
            (4, 4),
            (5, 6),
            (6, 5),
            (7, 7),
        ] {
            assert_eq!(
                &q[hf_row * 64..(hf_row + 1) * 64],
                &raw[stored_row * 64..(stored_row + 1) * 64]
            );
        }
        let m = file
            .blocks("model.layers.0.self_attn.q_proj.weight")
            .unwrap()
            .unwrap();
        assert_eq!((m.rows(), m.cols(), m.blocks_per_row()), (8, 64, 2));
        let blocks = m.to_llmeff();
        assert!(
            q.iter()
                .enumerate()
                .all(|(i, v)| blocks.value(i / 64, i % 64) == *v)
        );
        let k = file
            .blocks("model.layers.0.self_attn.k_proj.weight")
            .unwrap()
            .unwrap();
        assert_eq!(k.weight_format(), kernels::WeightFormat::Int4 { block: 32 });
        assert_eq!(k.code_bytes_per_row(), 32);
        let mut short = vec![0u8; 3];
        assert!(matches!(
            k.copy_into(&mut short, &mut [0f32; 8]),
            Err(GgufError::BufferLength { what: "codes", .. })
        ));
        assert!(
            file.blocks("model.layers.0.self_attn.v_proj.weight")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn q8_0_code_minus_128_is_read_exactly() {
        // ggml's quantizer never writes −128, but a file may hold it; llmeff reads it as −128·d.
        let mut block = half::f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        block.extend((0..32).map(|i| if i == 0 { 0x80 } else { i as u8 }));
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("qwen2".into()),
        )
        .tensor("blk.0.attn_v.weight", &[1, 32], GgmlType::Q8_0, block);
        let (_dir, file) = write_and_open(&w);
        let file = file.unwrap();
        let name = "model.layers.0.self_attn.v_proj.weight";
        let values = file.read_f32(name).unwrap();
        assert_eq!((values[0], values[3]), (-64.0, 1.5));
        let blocks = file.blocks(name).unwrap().unwrap().to_llmeff();
        assert_eq!(blocks.codes[0] as i8, -128);
        assert_eq!((blocks.value(0, 0), blocks.scales[0]), (-64.0, 0.5));
    }

    #[test]
    fn unsupported_tensor_types_name_themselves() {
        let (_dir, file) = write_and_open(&small_writer());
        let file = file.unwrap();
        let err = file.read_f32("lm_head.weight").unwrap_err().to_string();
        assert!(
            err.contains("Q6_K") && err.contains("F32, F16, BF16, Q8_0, Q4_0"),
            "{err}"
        );
        assert!(file.blocks("lm_head.weight").unwrap().is_none());
        assert!(matches!(
            file.read_f32("model.layers.9.mlp.up_proj.weight"),
            Err(GgufError::NoTensor { .. })
        ));
    }

    #[test]
    fn unsupported_architectures_name_themselves() {
        let mut w = GgufWriter::new();
        w.metadata("general.architecture", MetadataValue::String("bert".into()));
        let (_dir, file) = write_and_open(&w);
        let err = file.unwrap_err().to_string();
        assert!(
            err.contains("`bert`") && err.contains("qwen3") && err.contains("gemma2"),
            "{err}"
        );
        let (_dir, file) = write_and_open(&GgufWriter::new());
        assert!(matches!(file, Err(GgufError::MissingKey { .. })));
    }

    #[test]
    fn corrupt_files_are_errors_never_panics() {
        let bytes = small_writer().to_bytes();
        assert!(open_bytes(&bytes).is_ok());
        assert!(matches!(
            open_bytes(b"GGML\x03\0\0\0"),
            Err(GgufError::NotGguf { .. })
        ));
        assert!(matches!(open_bytes(b""), Err(GgufError::NotGguf { .. })));
        // Every cut inside the header, and a few inside the data, is an error.
        let data_start = {
            let layout = format::parse(&bytes).unwrap();
            layout.data_start as usize
        };
        for len in (0..data_start).chain([data_start + 1, bytes.len() - 1]) {
            assert!(open_bytes(&bytes[..len]).is_err(), "cut at {len}");
        }
        // Flipped bytes in the header either fail or still describe an in-bounds file whose
        // every tensor reads without panicking.
        for at in (0..data_start).step_by(3) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x5a;
            if let Ok(file) = open_bytes(&bad) {
                let names: Vec<String> = file.names().map(String::from).collect();
                for name in names {
                    let _ = file.read_f32(&name);
                    if let Ok(Some(m)) = file.blocks(&name) {
                        let _ = m.to_llmeff();
                    }
                }
                let _ = file.hf_config();
                let _ = file.tokenizer();
            }
        }
    }

    #[test]
    fn alignment_follows_general_alignment() {
        let (_dir, file) = write_and_open(&small_writer().with_alignment(64));
        let file = file.unwrap();
        assert_eq!(file.alignment(), 64);
        assert!(file.tensor_infos().iter().all(|t| t.start % 64 == 0));
        assert!(
            file.read_f32("model.layers.0.input_layernorm.weight")
                .is_ok()
        );
        let mut bad = small_writer();
        bad.metadata("general.alignment", MetadataValue::U32(48));
        assert!(matches!(
            write_and_open(&bad).1,
            Err(GgufError::Alignment { alignment: 48, .. })
        ));
    }

    #[test]
    fn llama_q_and_k_must_split_into_heads() {
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("llama".into()),
        )
        .metadata("llama.attention.head_count", MetadataValue::U32(3))
        .tensor_f32("blk.0.attn_q.weight", &[8, 32], GgmlType::F32, &[0.0; 256]);
        assert!(matches!(write_and_open(&w).1, Err(GgufError::Shape { .. })));
    }

    #[test]
    fn empty_tensors_read_as_empty_and_permutations_need_head_counts() {
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("qwen2".into()),
        )
        .tensor("blk.0.attn_v.weight", &[0, 32], GgmlType::Q8_0, Vec::new());
        let (_dir, file) = write_and_open(&w);
        let file = file.unwrap();
        assert!(
            file.read_f32("model.layers.0.self_attn.v_proj.weight")
                .unwrap()
                .is_empty()
        );
        let m = file
            .blocks("model.layers.0.self_attn.v_proj.weight")
            .unwrap()
            .unwrap();
        assert!(m.to_llmeff().codes.is_empty());
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("llama".into()),
        )
        .tensor_f32("blk.0.attn_k.weight", &[2, 32], GgmlType::F32, &[0.0; 64]);
        let err = write_and_open(&w).1.unwrap_err();
        assert!(
            matches!(&err, GgufError::MissingKey { key } if key == "llama.attention.head_count"),
            "{err}"
        );
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("llama".into()),
        )
        .metadata("llama.attention.head_count", MetadataValue::U32(1))
        .tensor_f32("blk.0.attn_q.bias", &[32], GgmlType::Q8_0, &[0.0; 32]);
        assert!(matches!(write_and_open(&w).1, Err(GgufError::Shape { .. })));
    }

    /// A minimal model's metadata for `hf_config`: sizes, one embedding table, and `extra`.
    fn config_of(
        arch: &str,
        extra: &[(&str, MetadataValue)],
        output: bool,
    ) -> Result<Value, GgufError> {
        let mut w = GgufWriter::new();
        let u = MetadataValue::U32;
        w.metadata("general.architecture", MetadataValue::String(arch.into()));
        for (k, v) in [
            ("context_length", u(4096)),
            ("embedding_length", u(64)),
            ("block_count", u(46)),
            ("feed_forward_length", u(128)),
            ("attention.head_count", u(4)),
            ("attention.head_count_kv", u(2)),
            ("attention.key_length", u(32)),
            ("attention.layer_norm_rms_epsilon", MetadataValue::F32(1e-6)),
        ] {
            w.metadata(&format!("{arch}.{k}"), v);
        }
        for (k, v) in extra {
            w.metadata(k, v.clone());
        }
        w.tensor_f32("token_embd.weight", &[10, 64], GgmlType::F32, &[0.0; 640]);
        if output {
            w.tensor_f32("output.weight", &[10, 64], GgmlType::F32, &[0.0; 640]);
        }
        let (_dir, file) = write_and_open(&w);
        file?.hf_config()
    }

    #[test]
    fn configs_follow_llama_cpps_defaults_and_rules() {
        // Gemma 2 with no scale key: llama.cpp's 27B rule (46 layers) gives hidden/heads = 16;
        // with no caps, llama.cpp's defaults; no window, no sliding layers.
        let c = config_of("gemma2", &[], false).unwrap();
        assert_eq!(c["query_pre_attn_scalar"], 16.0);
        assert_eq!(
            (
                c["attn_logit_softcapping"].clone(),
                c["final_logit_softcapping"].clone()
            ),
            (50.0.into(), 30.0.into())
        );
        assert!(
            c["layer_types"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t == "full_attention")
        );
        assert_eq!(c["tie_word_embeddings"], true);
        let c = config_of(
            "gemma2",
            &[("gemma2.attention.scale", MetadataValue::F32(1.0 / 12.0))],
            true,
        )
        .unwrap();
        assert_eq!(
            (
                c["query_pre_attn_scalar"].clone(),
                c["tie_word_embeddings"].clone()
            ),
            (144.0.into(), false.into())
        );
        // llama with a window is Mistral; without, Llama.
        let c = config_of(
            "llama",
            &[("llama.attention.sliding_window", MetadataValue::U32(4096))],
            true,
        )
        .unwrap();
        assert_eq!(
            (c["model_type"].clone(), c["sliding_window"].clone()),
            ("mistral".into(), 4096.into())
        );
        let c = config_of(
            "llama",
            &[("llama.rope.freq_base", MetadataValue::F32(500000.0))],
            true,
        )
        .unwrap();
        assert_eq!(c["model_type"], "llama");
        assert_eq!(c["rope_parameters"]["rope_theta"], 500000.0);
        assert_eq!(c["rms_norm_eps"], 1e-6);
        // Linear scaling is carried; an unknown one is named.
        let scaled = [
            (
                "qwen2.rope.scaling.type",
                MetadataValue::String("linear".into()),
            ),
            ("qwen2.rope.scaling.factor", MetadataValue::F32(4.0)),
        ];
        let c = config_of("qwen2", &scaled, true).unwrap();
        assert_eq!(
            (
                c["rope_parameters"]["rope_type"].clone(),
                c["rope_parameters"]["factor"].clone()
            ),
            ("linear".into(), 4.0.into())
        );
        let err = config_of(
            "qwen2",
            &[(
                "qwen2.rope.scaling.type",
                MetadataValue::String("su".into()),
            )],
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`su`") && err.to_string().contains("linear"),
            "{err}"
        );
        // Phi-3's partial rotary factor comes from the rotated dimensions.
        let c = config_of(
            "phi3",
            &[("phi3.rope.dimension_count", MetadataValue::U32(24))],
            true,
        )
        .unwrap();
        assert_eq!(c["rope_parameters"]["partial_rotary_factor"], 0.75);
        // A missing size is named.
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("qwen3".into()),
        );
        let (_dir, file) = write_and_open(&w);
        let err = file.unwrap().hf_config().unwrap_err();
        assert!(
            matches!(&err, GgufError::MissingKey { key } if key.starts_with("qwen3.")),
            "{err}"
        );
    }

    /// GPT-2's byte-to-character map (`bytes_to_unicode`): printable bytes stand for themselves,
    /// the rest for characters from U+0100 on.
    fn byte_chars() -> Vec<char> {
        let mut next = 256u32;
        (0u32..256)
            .map(|b| {
                let printable =
                    (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
                if printable {
                    char::from_u32(b).unwrap()
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap()
                }
            })
            .collect()
    }

    fn byte_level_file(
        pre: &str,
        add_bos: Option<bool>,
    ) -> (tempfile::TempDir, Result<GgufFile, GgufError>) {
        // 256 byte tokens (id = byte), then "Ġt" (256), "he" (257), "Ġthe" (258), and two
        // control tokens.
        let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
        tokens.extend(["Ġt", "he", "Ġthe", "<|endoftext|>", "<|begin|>"].map(String::from));
        let mut types = vec![1i32; 259];
        types.extend([3, 3]);
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("qwen2".into()),
        )
        .metadata("tokenizer.ggml.model", MetadataValue::String("gpt2".into()))
        .metadata("tokenizer.ggml.pre", MetadataValue::String(pre.into()))
        .metadata(
            "tokenizer.ggml.tokens",
            MetadataValue::Array(tokens.into_iter().map(MetadataValue::String).collect()),
        )
        .metadata(
            "tokenizer.ggml.token_type",
            MetadataValue::Array(types.into_iter().map(MetadataValue::I32).collect()),
        )
        .metadata(
            "tokenizer.ggml.merges",
            MetadataValue::Array(
                ["Ġ t", "h e", "Ġt he"]
                    .map(|m| MetadataValue::String(m.into()))
                    .to_vec(),
            ),
        )
        .metadata("tokenizer.ggml.bos_token_id", MetadataValue::U32(260))
        .metadata("tokenizer.ggml.eos_token_id", MetadataValue::U32(259));
        if let Some(add) = add_bos {
            w.metadata("tokenizer.ggml.add_bos_token", MetadataValue::Bool(add));
        }
        write_and_open(&w)
    }

    #[test]
    fn byte_level_vocabularies_tokenize_as_their_pre_tokenizer_says() {
        for pre in ["qwen2", "llama-bpe", "default", "smollm"] {
            let (_dir, file) = byte_level_file(pre, None);
            let tokenizer = file.unwrap().tokenizer().unwrap();
            let ids = tokenizer
                .encode("the the<|endoftext|>", true)
                .unwrap()
                .get_ids()
                .to_vec();
            // "the" → t + he; " the" → Ġthe; the control token whole. Llama 3 style adds BOS.
            let mut want = vec![u32::from(b't'), 257, 258, 259];
            if pre == "llama-bpe" {
                want.insert(0, 260);
            }
            assert_eq!(ids, want, "{pre}");
            assert_eq!(tokenizer.decode(&ids, true).unwrap(), "the the", "{pre}");
            // Bytes outside printable ASCII go through the byte map: "é" is 0xC3 0xA9.
            let ids = tokenizer.encode("é", false).unwrap().get_ids().to_vec();
            assert_eq!(ids, vec![0xC3, 0xA9], "{pre}");
        }
        let (_dir, file) = byte_level_file("qwen2", Some(true));
        let ids = file
            .unwrap()
            .tokenizer()
            .unwrap()
            .encode("he", true)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, vec![260, 257]);
        let (_dir, file) = byte_level_file("tekken", None);
        let err = file.unwrap().tokenizer().unwrap_err().to_string();
        assert!(err.contains("`tekken`") && err.contains("qwen2"), "{err}");
    }

    #[test]
    fn unknown_tokenizer_models_name_themselves() {
        let mut w = GgufWriter::new();
        w.metadata(
            "general.architecture",
            MetadataValue::String("qwen2".into()),
        )
        .metadata("tokenizer.ggml.model", MetadataValue::String("bert".into()));
        let (_dir, file) = write_and_open(&w);
        let err = file.unwrap().tokenizer().unwrap_err().to_string();
        assert!(err.contains("`bert`") && err.contains("gpt2"), "{err}");
    }
}
