//! The GGUF container (llama.cpp's `gguf.cpp` and the GGUF specification in
//! `ggml/docs/gguf.md`): a little-endian header (`GGUF`, version, tensor count, metadata count),
//! typed metadata key-value pairs, tensor infos (name, dimensions innermost first, ggml type,
//! offset), padding to `general.alignment` (default 32), then the tensor data.
//!
//! [`parse`] validates every field before anything is derived from it: counts and array lengths
//! are bounded by the bytes left in the file (so a corrupt count cannot make it allocate), every
//! tensor's bytes lie inside the file at an aligned offset, and nothing it reads can panic.

use std::collections::HashSet;

use super::error::GgufError;

/// The first four bytes of every GGUF file.
pub(crate) const MAGIC: [u8; 4] = *b"GGUF";
/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";
/// Tensor data alignment when `general.alignment` is absent.
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
/// The tensor types [`super::quant`] reads, as error messages list them.
pub(crate) const SUPPORTED_TENSOR_TYPES: &str = "F32, F16, BF16, Q8_0, Q4_0";

/// More tensors than any published model has (the largest mixture-of-experts checkpoints hold
/// under 100 Ki): a count beyond it is corruption, refused before it sizes anything.
const MAX_TENSORS: u64 = 1 << 20;
/// More metadata pairs than any converter writes.
const MAX_KEYS: u64 = 1 << 20;
/// Array nesting llmeff follows (GGUF allows arrays of arrays; converters write at most one
/// level). Bounds the recursion on hostile input.
const MAX_NESTING: usize = 4;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// The largest alignment accepted: far above the 32 every converter writes, small enough that
/// padding to it cannot overflow.
const MAX_ALIGNMENT: u64 = 1 << 20;

/// A ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// Blocks of 32: an f16 scale `d`, then 32 signed bytes `q`; value `d·q`.
    Q8_0,
    /// Blocks of 32: an f16 scale `d`, then 16 bytes of nibbles `q`; value `d·(q − 8)`.
    Q4_0,
    /// A type ggml defines that llmeff does not read (its code).
    Other(u32),
}

/// Every type code ggml defines, with its name, values per block and bytes per block (gguf-py's
/// `GGML_QUANT_SIZES`). Sizes of types llmeff does not read are kept so their tensors are still
/// bounds-checked and a file holding one opens; reading one is an error naming it.
const GGML_TYPES: [(u32, &str, u64, u64); 32] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
];

impl GgmlType {
    /// The type of a code ggml defines; `None` for an undefined code.
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::F16,
            30 => Self::Bf16,
            8 => Self::Q8_0,
            2 => Self::Q4_0,
            other if GGML_TYPES.iter().any(|t| t.0 == other) => Self::Other(other),
            _ => return None,
        })
    }

    /// ggml's code for the type.
    pub fn code(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Bf16 => 30,
            Self::Q8_0 => 8,
            Self::Q4_0 => 2,
            Self::Other(code) => code,
        }
    }

    /// ggml's name for the type (`Q8_0`).
    pub fn name(self) -> &'static str {
        self.entry().map_or("unknown", |t| t.1)
    }

    /// Values per block (1 for plain floats).
    pub(crate) fn block_len(self) -> u64 {
        self.entry().map_or(1, |t| t.2)
    }

    /// Bytes per block.
    pub(crate) fn block_bytes(self) -> u64 {
        self.entry().map_or(1, |t| t.3)
    }

    /// Whether [`super::quant`] reads this type.
    pub fn is_supported(self) -> bool {
        !matches!(self, Self::Other(_))
    }

    /// The type's row of [`GGML_TYPES`].
    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        let code = self.code();
        GGML_TYPES.iter().find(|t| t.0 == code)
    }
}

/// A metadata value, typed as GGUF types it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (UTF-8).
    String(String),
    /// `ARRAY`: values of one type.
    Array(Vec<MetadataValue>),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl MetadataValue {
    /// The GGUF name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "a uint8",
            Self::I8(_) => "an int8",
            Self::U16(_) => "a uint16",
            Self::I16(_) => "an int16",
            Self::U32(_) => "a uint32",
            Self::I32(_) => "an int32",
            Self::F32(_) => "a float32",
            Self::Bool(_) => "a bool",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::U64(_) => "a uint64",
            Self::I64(_) => "an int64",
            Self::F64(_) => "a float64",
        }
    }

    /// Any integer type holding a non-negative value. Converters write counts as `UINT32` but
    /// some tools write `INT32` or `UINT64`; all mean the same number.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(u64::from(v)),
            Self::U16(v) => Some(u64::from(v)),
            Self::U32(v) => Some(u64::from(v)),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type, as i64 (a `UINT64` beyond `i64::MAX` is `None`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(i64::from(v)),
            Self::I16(v) => Some(i64::from(v)),
            Self::I32(v) => Some(i64::from(v)),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float, widened to f64 through its shortest decimal form: GGUF stores as f32 values
    /// Hugging Face configs wrote in decimal (`1e-05`), and the shortest decimal that rounds to
    /// the stored f32 is that decimal, so the config reads back as written rather than as
    /// `9.999999747378752e-06`. Integers are accepted too.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(decimal_f64(v)),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(values) => Some(values),
            _ => None,
        }
    }
}

/// `v` as the f64 of its shortest round-tripping decimal (see [`MetadataValue::as_f64`]).
pub(crate) fn decimal_f64(v: f32) -> f64 {
    // Rust prints the shortest decimal that parses back to the same f32.
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// One tensor's entry in the file, validated against the file's length.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions innermost first, as ggml's `ne`: a Hugging Face `[out, in]` weight is
    /// `[in, out]` here.
    pub dims: Vec<u64>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// The first byte of its data in the file.
    pub start: u64,
    /// Its data's length in bytes.
    pub len: u64,
}

impl TensorInfo {
    /// Values in the tensor.
    pub fn elements(&self) -> u64 {
        // Checked when parsed: the product fits.
        self.dims.iter().product()
    }
}

/// A parsed, validated GGUF file: everything but the tensor data, which stays in the map.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata in file order; keys are unique.
    pub metadata: Vec<(String, MetadataValue)>,
    /// Tensors in file order; names are unique.
    pub tensors: Vec<TensorInfo>,
    /// The data section's alignment (read by the tests, which check the layout).
    #[cfg_attr(not(test), allow(dead_code))]
    pub alignment: u64,
    /// Where the data section starts (read by the tests, which cut files there).
    #[cfg_attr(not(test), allow(dead_code))]
    pub data_start: u64,
}

/// Parses and validates the whole header of a GGUF file held in `bytes`.
pub(crate) fn parse(bytes: &[u8]) -> Result<Layout, GgufError> {
    let mut cursor = Cursor { bytes, pos: 0 };
    // The magic is checked by the caller, which knows the path to name.
    cursor.take(MAGIC.len(), || "the magic".into())?;
    let version = cursor.u32(|| "the version".into())?;
    match version {
        2 | 3 => {}
        v if matches!(v.swap_bytes(), 2 | 3) => return Err(GgufError::BigEndian),
        v => return Err(GgufError::Version { version: v }),
    }
    let tensor_count = cursor.u64(|| "the tensor count".into())?;
    let key_count = cursor.u64(|| "the metadata count".into())?;
    bounded("tensors", tensor_count, MAX_TENSORS)?;
    bounded("metadata pairs", key_count, MAX_KEYS)?;

    let mut metadata = Vec::new();
    let mut keys = HashSet::new();
    for index in 0..key_count {
        let key = cursor.string(|| format!("the key of metadata pair {index}"))?;
        let code = cursor.u32(|| format!("the value type of `{key}`"))?;
        let value = cursor.value(&key, code, 0)?;
        if !keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => DEFAULT_ALIGNMENT,
        Some((key, value)) => {
            let alignment = value.as_u64().ok_or_else(|| GgufError::KeyType {
                key: key.clone(),
                expected: "an unsigned integer",
                found: value.type_name(),
            })?;
            if alignment == 0 || !alignment.is_power_of_two() || alignment > MAX_ALIGNMENT {
                return Err(GgufError::Alignment {
                    alignment,
                    limit: MAX_ALIGNMENT,
                });
            }
            alignment
        }
    };

    // Offsets are checked once the data section's start (after every info) is known.
    let mut raw = Vec::new();
    let mut names = HashSet::new();
    for index in 0..tensor_count {
        let name = cursor.string(|| format!("the name of tensor {index}"))?;
        let n_dims = cursor.u32(|| format!("the dimension count of `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Dimensions { name, dims: n_dims });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(cursor.u64(|| format!("the dimensions of `{name}`"))?);
        }
        let code = cursor.u32(|| format!("the type of `{name}`"))?;
        let offset = cursor.u64(|| format!("the offset of `{name}`"))?;
        let ggml_type = GgmlType::from_code(code).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            code,
        })?;
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name });
        }
        raw.push((name, dims, ggml_type, offset));
    }
    let data_start = (cursor.pos as u64).next_multiple_of(alignment);
    let file_len = bytes.len() as u64;
    let tensors = raw
        .into_iter()
        .map(|(name, dims, ggml_type, offset)| {
            let len = tensor_bytes(&name, &dims, ggml_type)?;
            if !offset.is_multiple_of(alignment) {
                return Err(GgufError::Misaligned {
                    name,
                    offset,
                    alignment,
                });
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => Ok(TensorInfo {
                    name,
                    dims,
                    ggml_type,
                    start,
                    len,
                }),
                _ => Err(GgufError::OutOfBounds {
                    name,
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Layout {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// A tensor's byte length, with its rows checked to hold whole blocks.
fn tensor_bytes(name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<u64, GgufError> {
    let overflow = || GgufError::SizeOverflow {
        name: name.to_string(),
        dims: dims.to_vec(),
    };
    let elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let block = ggml_type.block_len();
    let row_len = dims.first().copied().unwrap_or(1);
    if !row_len.is_multiple_of(block) {
        return Err(GgufError::RaggedBlocks {
            name: name.to_string(),
            row_len,
            block,
            type_name: ggml_type.name(),
        });
    }
    (elements / block)
        .checked_mul(ggml_type.block_bytes())
        .ok_or_else(overflow)
}

/// Refuses a header count above `limit`.
fn bounded(what: &'static str, count: u64, limit: u64) -> Result<(), GgufError> {
    if count > limit {
        return Err(GgufError::TooMany { what, count, limit });
    }
    Ok(())
}

/// Reads little-endian fields from the file, never past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The error for `what` not fitting in the bytes left.
    fn truncated(&self, what: String) -> GgufError {
        GgufError::Truncated {
            what,
            offset: self.pos as u64,
            file_len: self.bytes.len() as u64,
        }
    }

    /// Bytes not read yet.
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes; `what` names them in the error when fewer are left.
    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what()));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    fn fixed<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A little-endian u32.
    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.fixed(what).map(u32::from_le_bytes)
    }

    /// A little-endian u64.
    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.fixed(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: a u64 byte length, then UTF-8 bytes.
    fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&what)?;
        let start = self.pos as u64;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| self.truncated(what()))?;
        let bytes = self.take(len, &what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8 {
            what: what(),
            offset: start,
        })
    }

    /// One value of type `code` under `key`, arrays read element by element up to
    /// [`MAX_NESTING`] levels deep.
    fn value(&mut self, key: &str, code: u32, depth: usize) -> Result<MetadataValue, GgufError> {
        let what = || format!("the value of `{key}`");
        Ok(match code {
            0 => MetadataValue::U8(u8::from_le_bytes(self.fixed(what)?)),
            1 => MetadataValue::I8(i8::from_le_bytes(self.fixed(what)?)),
            2 => MetadataValue::U16(u16::from_le_bytes(self.fixed(what)?)),
            3 => MetadataValue::I16(i16::from_le_bytes(self.fixed(what)?)),
            4 => MetadataValue::U32(u32::from_le_bytes(self.fixed(what)?)),
            5 => MetadataValue::I32(i32::from_le_bytes(self.fixed(what)?)),
            6 => MetadataValue::F32(f32::from_le_bytes(self.fixed(what)?)),
            7 => match self.fixed::<1>(what)?[0] {
                0 => MetadataValue::Bool(false),
                1 => MetadataValue::Bool(true),
                byte => {
                    return Err(GgufError::InvalidBool {
                        key: key.to_string(),
                        byte,
                    });
                }
            },
            8 => MetadataValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(GgufError::NestingTooDeep {
                        key: key.to_string(),
                        limit: MAX_NESTING,
                    });
                }
                let element = self.u32(what)?;
                let count = self.u64(what)?;
                let smallest =
                    smallest_encoding(element).ok_or_else(|| GgufError::UnknownValueType {
                        key: key.to_string(),
                        code: element,
                    })?;
                // Each element takes at least `smallest` bytes, so a count the rest of the file
                // cannot hold is corrupt, and is refused before it sizes an allocation.
                let count = usize::try_from(count)
                    .ok()
                    .filter(|&c| c <= self.remaining() / smallest)
                    .ok_or_else(|| self.truncated(what()))?;
                let mut values = Vec::with_capacity(count);
                for _ in 0..count {
                    values.push(self.value(key, element, depth + 1)?);
                }
                MetadataValue::Array(values)
            }
            10 => MetadataValue::U64(u64::from_le_bytes(self.fixed(what)?)),
            11 => MetadataValue::I64(i64::from_le_bytes(self.fixed(what)?)),
            12 => MetadataValue::F64(f64::from_le_bytes(self.fixed(what)?)),
            code => {
                return Err(GgufError::UnknownValueType {
                    key: key.to_string(),
                    code,
                });
            }
        })
    }
}

/// The fewest bytes one value of type `code` takes (a string's or array's length prefix).
fn smallest_encoding(code: u32) -> Option<usize> {
    Some(match code {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid file: one `general.architecture` string and one 2×32 F32 tensor.
    fn small_file() -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        let key = b"general.architecture";
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&5u64.to_le_bytes());
        out.extend_from_slice(b"llama");
        let name = b"t";
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&32u64.to_le_bytes());
        out.extend_from_slice(&2u64.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend((0..64).flat_map(|i| (i as f32).to_le_bytes()));
        out
    }

    #[test]
    fn a_small_file_parses() {
        let layout = parse(&small_file()).unwrap();
        assert_eq!(layout.version, 3);
        assert_eq!(layout.alignment, 32);
        assert_eq!(layout.metadata[0].1.as_str(), Some("llama"));
        let t = &layout.tensors[0];
        assert_eq!(
            (t.dims.as_slice(), t.ggml_type, t.len),
            (&[32, 2][..], GgmlType::F32, 256)
        );
        assert_eq!(t.start, layout.data_start);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let file = small_file();
        for len in 0..file.len() {
            // The magic is the caller's to check; from byte 4 on, a cut is always an error.
            let result = parse(&file[..len]);
            assert!(result.is_err(), "a file cut at {len} bytes parsed");
        }
    }

    #[test]
    fn every_corrupted_byte_is_an_error_or_a_valid_layout() {
        // Flipping bits anywhere must never panic; whatever parses must stay in bounds.
        let file = small_file();
        for at in 0..file.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = file.clone();
                bad[at] ^= flip;
                if let Ok(layout) = parse(&bad) {
                    for t in &layout.tensors {
                        assert!(t.start + t.len <= bad.len() as u64);
                    }
                }
            }
        }
    }

    #[test]
    fn huge_counts_are_refused_before_allocating() {
        let mut file = small_file();
        file[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse(&file),
            Err(GgufError::TooMany {
                what: "tensors",
                ..
            })
        ));
        let mut file = small_file();
        // The string length of the first key.
        file[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(matches!(parse(&file), Err(GgufError::Truncated { .. })));
    }

    #[test]
    fn versions_and_byte_order_are_checked() {
        let mut file = small_file();
        file[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            parse(&file),
            Err(GgufError::Version { version: 1 })
        ));
        file[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(matches!(parse(&file), Err(GgufError::BigEndian)));
    }

    #[test]
    fn tensors_past_the_end_or_misaligned_are_refused() {
        let mut file = small_file();
        let len = file.len();
        file.truncate(len - 4);
        assert!(matches!(parse(&file), Err(GgufError::OutOfBounds { .. })));
        let mut file = small_file();
        // The tensor's offset field is the 8 bytes before the padding; find it from the end of
        // the infos: magic..key..value..name(8+1) dims(4+16) type(4) offset(8).
        let offset_at = 4 + 4 + 8 + 8 + (8 + 20) + 4 + (8 + 5) + (8 + 1) + 4 + 16 + 4;
        file[offset_at..offset_at + 8].copy_from_slice(&4u64.to_le_bytes());
        assert!(matches!(
            parse(&file),
            Err(GgufError::Misaligned { offset: 4, .. })
        ));
    }

    #[test]
    fn types_name_themselves() {
        assert_eq!(GgmlType::from_code(14).map(GgmlType::name), Some("Q6_K"));
        assert!(GgmlType::from_code(14).is_some_and(|t| !t.is_supported()));
        assert_eq!(GgmlType::from_code(4), None);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Bf16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
        ] {
            assert_eq!(GgmlType::from_code(ty.code()), Some(ty));
            assert!(SUPPORTED_TENSOR_TYPES.contains(ty.name()));
        }
    }

    #[test]
    fn floats_read_back_as_their_decimal() {
        assert_eq!(MetadataValue::F32(1e-5).as_f64(), Some(1e-5));
        assert_eq!(MetadataValue::F32(500_000.0).as_f64(), Some(500_000.0));
        assert_eq!(MetadataValue::I32(-1).as_u64(), None);
        assert_eq!(MetadataValue::U32(7).as_f64(), Some(7.0));
    }
}
