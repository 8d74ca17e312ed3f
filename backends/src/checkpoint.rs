//! Checkpoints: opening a single `model.safetensors`, a sharded set listed in
//! `model.safetensors.index.json`, or a llama.cpp GGUF file ([`crate::gguf`], its tensors under
//! their Hugging Face names), validating headers, and turning one stored tensor into a host
//! buffer at the run dtype.
//!
//! Files are memory-mapped so a tensor is copied once (stored dtype to run dtype) rather than
//! read into memory whole first.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use serde::Deserialize;

use crate::error::{BackendError, FileProblem};
use crate::gguf::{GgufFile, QuantizedMatrix};
use crate::host::RunFloat;

/// Name of a single-file checkpoint.
pub(crate) const SINGLE_FILE: &str = "model.safetensors";
/// Name of the index of a sharded checkpoint.
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// Side of the square tiles the transpose copies; small enough that a source and a destination
/// tile stay in L1 together.
const TRANSPOSE_TILE: usize = 32;

/// One mapped `.safetensors` file with its parsed header.
struct Shard {
    path: PathBuf,
    map: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// An opened checkpoint.
pub(crate) struct Checkpoint {
    /// The file named in errors about the checkpoint as a whole.
    origin: PathBuf,
    storage: Storage,
}

/// Where a checkpoint's tensors are stored.
enum Storage {
    /// Safetensors files: every tensor name mapped to the shard holding it.
    Safetensors {
        shards: Vec<Shard>,
        location: HashMap<String, usize>,
    },
    /// A GGUF file, read under Hugging Face names.
    Gguf(Box<GgufFile>),
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn invalid(path: &Path, problem: FileProblem) -> BackendError {
    BackendError::ModelFile {
        path: path.to_path_buf(),
        problem,
    }
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`, preferring a single file over an index.
    pub(crate) fn open(dir: &Path) -> Result<Self, BackendError> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            let shard = Shard::open(&single)?;
            let location = shard
                .metadata
                .tensors()
                .into_keys()
                .map(|n| (n, 0))
                .collect();
            return Ok(Self {
                origin: single,
                storage: Storage::Safetensors {
                    shards: vec![shard],
                    location,
                },
            });
        }
        if index.is_file() {
            return Self::open_sharded(dir, &index);
        }
        let (single_name, index_name) = (SINGLE_FILE, INDEX_FILE);
        let problem = if dir.join("pytorch_model.bin").is_file() {
            FileProblem::OnlyPytorchBin {
                single: single_name,
                index: index_name,
            }
        } else {
            FileProblem::NoSafetensors {
                single: single_name,
                index: index_name,
            }
        };
        Err(invalid(&single, problem))
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Self, BackendError> {
        let text = std::fs::read_to_string(index_path)
            .map_err(|e| invalid(index_path, FileProblem::Read(e)))?;
        let index: ShardIndex =
            serde_json::from_str(&text).map_err(|e| invalid(index_path, FileProblem::Json(e)))?;
        let mut shards = Vec::new();
        let mut shard_of_file: HashMap<&str, usize> = HashMap::new();
        let mut location = HashMap::new();
        for (name, file) in &index.weight_map {
            // Shard names come from a file we do not control; keep them inside the folder.
            if Path::new(file).components().count() != 1 || file.contains("..") {
                return Err(invalid(
                    index_path,
                    FileProblem::ShardName {
                        shard: file.clone(),
                        tensor: name.clone(),
                    },
                ));
            }
            let shard = match shard_of_file.get(file.as_str()) {
                Some(&i) => i,
                None => {
                    shards.push(Shard::open(&dir.join(file))?);
                    shard_of_file.insert(file, shards.len() - 1);
                    shards.len() - 1
                }
            };
            if shards[shard].metadata.info(name).is_none() {
                return Err(invalid(
                    &shards[shard].path,
                    FileProblem::NotInShard {
                        tensor: name.clone(),
                        index: INDEX_FILE,
                    },
                ));
            }
            location.insert(name.clone(), shard);
        }
        Ok(Self {
            origin: index_path.to_path_buf(),
            storage: Storage::Safetensors { shards, location },
        })
    }

    /// Opens a GGUF file. A tensor with no Hugging Face name (an architecture's extra the
    /// forward pass would ignore) makes it an error here, before anything is loaded.
    pub(crate) fn open_gguf(path: &Path) -> Result<Self, BackendError> {
        let gguf = GgufFile::open(path).map_err(|e| invalid(path, FileProblem::Gguf(e)))?;
        if let Some(name) = gguf.unmapped_tensors().next() {
            return Err(invalid(
                path,
                FileProblem::UnmappedGgufTensor {
                    tensor: name.to_string(),
                    architecture: gguf.architecture().to_string(),
                },
            ));
        }
        Ok(Self {
            origin: path.to_path_buf(),
            storage: Storage::Gguf(Box::new(gguf)),
        })
    }

    /// Every tensor name in the checkpoint (Hugging Face names, for a GGUF file too).
    pub(crate) fn names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.storage {
            Storage::Safetensors { location, .. } => Box::new(location.keys().map(String::as_str)),
            Storage::Gguf(gguf) => Box::new(gguf.names()),
        }
    }

    /// Tensor `name`'s codes and scales where the file stores it as llama.cpp's Q8_0 or
    /// Q4_0 (llmeff's int8 or int4 at block 32); `None` for every other storage.
    pub(crate) fn blocks(&self, name: &str) -> Result<Option<QuantizedMatrix<'_>>, BackendError> {
        match &self.storage {
            Storage::Safetensors { .. } => Ok(None),
            Storage::Gguf(gguf) => gguf
                .blocks(name)
                .map_err(|e| invalid(&self.origin, FileProblem::Gguf(e))),
        }
    }

    /// The checkpoint file (or index) as a whole, for error messages.
    pub(crate) fn origin(&self) -> &Path {
        &self.origin
    }

    /// Reads tensor `name`, checks it has `shape` (as stored), and converts it to `E`. With
    /// `transpose`, a 2-D `[rows, cols]` tensor comes back as `[cols, rows]`, row-major.
    pub(crate) fn read<E: RunFloat>(
        &self,
        name: &str,
        shape: &[usize],
        transpose: bool,
    ) -> Result<Vec<E>, BackendError> {
        let tensor = || name.to_string();
        let missing = |path: &Path| {
            invalid(
                path,
                FileProblem::MissingTensor {
                    tensor: name.to_string(),
                },
            )
        };
        let (path, values) = match &self.storage {
            Storage::Safetensors { shards, location } => {
                let Some(&shard_idx) = location.get(name) else {
                    return Err(missing(&self.origin));
                };
                let shard = &shards[shard_idx];
                let info = shard
                    .metadata
                    .info(name)
                    .ok_or_else(|| missing(&shard.path))?;
                if info.shape != shape {
                    return Err(invalid(
                        &shard.path,
                        FileProblem::TensorShape {
                            tensor: tensor(),
                            expected: shape.to_vec(),
                            found: info.shape.clone(),
                        },
                    ));
                }
                let bytes = shard.data(info).ok_or_else(|| {
                    invalid(
                        &shard.path,
                        FileProblem::TensorOutsideFile { tensor: tensor() },
                    )
                })?;
                let values =
                    decode::<E>(info.dtype, bytes).map_err(|UnsupportedStorage(dtype)| {
                        invalid(
                            &shard.path,
                            FileProblem::TensorStorage {
                                tensor: tensor(),
                                dtype,
                            },
                        )
                    })?;
                (shard.path.as_path(), values)
            }
            Storage::Gguf(gguf) => {
                let found = gguf.shape(name).ok_or_else(|| missing(&self.origin))?;
                if found != shape {
                    return Err(invalid(
                        &self.origin,
                        FileProblem::TensorShape {
                            tensor: tensor(),
                            expected: shape.to_vec(),
                            found: found.to_vec(),
                        },
                    ));
                }
                // Every GGUF type goes through f32 (exact for F16 and BF16, ggml's own
                // dequantization for Q8_0/Q4_0), so the only rounding is the one to `E`.
                let values = gguf
                    .read_f32(name)
                    .map_err(|e| invalid(&self.origin, FileProblem::Gguf(e)))?;
                (
                    self.origin.as_path(),
                    values.into_iter().map(E::from_f32).collect(),
                )
            }
        };
        if transpose {
            match *shape {
                [rows, cols] => Ok(transposed(&values, rows, cols)),
                _ => Err(invalid(
                    path,
                    FileProblem::NotAMatrix {
                        tensor: tensor(),
                        shape: shape.to_vec(),
                    },
                )),
            }
        } else {
            Ok(values)
        }
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Self, BackendError> {
        let file = File::open(path).map_err(|e| invalid(path, FileProblem::Open(e)))?;
        // SAFETY: the map is read-only and private to this process. Like every mmap-based
        // loader we assume the file is not truncated by someone else while loading; the header
        // is validated against the mapped length below.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| invalid(path, FileProblem::Map(e)))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| invalid(path, FileProblem::Safetensors(e)))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            header_len,
            metadata,
        })
    }

    /// The raw bytes of one tensor (offsets are relative to the end of the header).
    fn data(&self, info: &TensorInfo) -> Option<&[u8]> {
        let start = 8usize.checked_add(self.header_len)?;
        let (from, to) = info.data_offsets;
        self.map
            .get(start.checked_add(from)?..start.checked_add(to)?)
    }
}

/// Little-endian stored values to the run type. Every source type goes through f32, which is
/// exact for f16 and bf16, so the only rounding is the one to the run type.
fn decode<E: RunFloat>(dtype: Dtype, bytes: &[u8]) -> Result<Vec<E>, UnsupportedStorage> {
    let out = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| E::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| E::from_f32(f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| E::from_f32(bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()))
            .collect(),
        other => return Err(UnsupportedStorage(other)),
    };
    Ok(out)
}

/// A tensor stored in a dtype the loader does not decode.
#[derive(Debug, thiserror::Error)]
#[error("stored as {0:?}; only F32, F16 and BF16 checkpoints are supported")]
struct UnsupportedStorage(Dtype);

/// Row-major `[rows, cols]` to row-major `[cols, rows]`, tile by tile, bands of output rows in
/// parallel (loading a billion-parameter model transposes gigabytes).
pub(crate) fn transposed<E: Copy + Default + Send + Sync>(
    src: &[E],
    rows: usize,
    cols: usize,
) -> Vec<E> {
    let mut dst = vec![E::default(); src.len()];
    if rows == 0 || cols == 0 || src.len() != rows * cols {
        return dst;
    }
    dst.par_chunks_mut(TRANSPOSE_TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * TRANSPOSE_TILE;
            let c1 = (c0 + TRANSPOSE_TILE).min(cols);
            for r0 in (0..rows).step_by(TRANSPOSE_TILE) {
                for c in c0..c1 {
                    for r in r0..(r0 + TRANSPOSE_TILE).min(rows) {
                        out[(c - c0) * rows + r] = src[r * cols + c];
                    }
                }
            }
        });
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_definition() {
        let (rows, cols) = (37, 70);
        let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let dst = transposed(&src, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[c * rows + r], src[r * cols + c]);
            }
        }
    }

    #[test]
    fn decode_converts_types() {
        let bytes: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(decode::<f32>(Dtype::F32, &bytes).unwrap(), vec![1.5, -2.0]);
        let as_half: Vec<f16> = decode(Dtype::F32, &bytes).unwrap();
        assert_eq!(as_half, vec![f16::from_f32(1.5), f16::from_f32(-2.0)]);
        let bf: Vec<u8> = bf16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
        assert_eq!(decode::<f32>(Dtype::BF16, &bf).unwrap(), vec![0.5]);
        assert!(matches!(
            decode::<f32>(Dtype::I64, &[0; 8]),
            Err(UnsupportedStorage(Dtype::I64))
        ));
    }
}
