//! Weight formats narrower than f32, kept at their own width in memory and widened to f32 in
//! registers by the kernels: the storage ([`CodedMatrix`]), how values become codes
//! ([`CodedMatrix::encode`]) and the scalar reference of what a code means
//! ([`CodedMatrix::dequantize_row`]), which the SIMD kernels are tested against.
//!
//! Every row is padded with zero codes to a whole number of [`GROUP`] columns, so the kernels
//! read whole groups and never a ragged weight tail (the input rows are padded to match).
//! Blockwise formats hold one f32 scale per block of `block` columns of a row (blocks are a
//! multiple of [`GROUP`]); the scale is stored already multiplied by the code's unit (`1/127`
//! for int8, `1/7` for int4, `2^120/448` for fp8's widened bits), so a kernel's only extra work
//! per weight vector is one multiply.

mod fp8;

pub use fp8::{E4M3_MAX, E4M3_WIDEN_SCALE, e4m3_from_f32, e4m3_to_f32};

use std::fmt;

use crate::huge_pages::WeightBuffer;

/// Columns every row is padded to a multiple of, and the unit 4-bit codes are packed in: a group
/// of 32 weights takes 16 bytes, weight `j` in the low nibble of byte `j` and weight `16 + j` in
/// its high nibble (llama.cpp's `Q4_0` order, which lets a vector unpack one half with a mask
/// and the other with a shift).
pub const GROUP: usize = 32;

/// QLoRA's NormalFloat-4 code book (quantiles of N(0, 1) scaled to [-1, 1]).
pub const NF4_CODES: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// How a matrix's weights are stored. Blockwise formats share one absmax scale per `block`
/// consecutive weights of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// IEEE half precision, no scale.
    F16,
    /// bfloat16, no scale.
    Bf16,
    /// Symmetric 8-bit integers (`round(127·w/absmax)`).
    Int8 {
        /// Weights per scale.
        block: usize,
    },
    /// Symmetric 4-bit integers (`round(7·w/absmax)`, clamped to -8..7).
    Int4 {
        /// Weights per scale.
        block: usize,
    },
    /// NormalFloat-4: the nearest of [`NF4_CODES`] to `w/absmax`.
    Nf4 {
        /// Weights per scale.
        block: usize,
    },
    /// 8-bit float E4M3 of `448·w/absmax`.
    Fp8 {
        /// Weights per scale.
        block: usize,
    },
}

impl WeightFormat {
    /// Bits per stored weight (scales not included).
    pub fn bits(self) -> usize {
        match self {
            WeightFormat::F16 | WeightFormat::Bf16 => 16,
            WeightFormat::Int8 { .. } | WeightFormat::Fp8 { .. } => 8,
            WeightFormat::Int4 { .. } | WeightFormat::Nf4 { .. } => 4,
        }
    }

    /// Weights per scale, `None` for the unscaled 16-bit formats.
    pub fn block(self) -> Option<usize> {
        match self {
            WeightFormat::F16 | WeightFormat::Bf16 => None,
            WeightFormat::Int8 { block }
            | WeightFormat::Int4 { block }
            | WeightFormat::Nf4 { block }
            | WeightFormat::Fp8 { block } => Some(block),
        }
    }

    /// What the scale is multiplied by before it is stored: the value of one code step.
    fn code_unit(self) -> f32 {
        match self {
            WeightFormat::F16 | WeightFormat::Bf16 | WeightFormat::Nf4 { .. } => 1.0,
            WeightFormat::Int8 { .. } => 1.0 / 127.0,
            WeightFormat::Int4 { .. } => 1.0 / 7.0,
            WeightFormat::Fp8 { .. } => E4M3_WIDEN_SCALE / E4M3_MAX,
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightFormat::F16 => f.write_str("f16"),
            WeightFormat::Bf16 => f.write_str("bf16"),
            WeightFormat::Int8 { block } => write!(f, "int8/b{block}"),
            WeightFormat::Int4 { block } => write!(f, "int4/b{block}"),
            WeightFormat::Nf4 { block } => write!(f, "nf4/b{block}"),
            WeightFormat::Fp8 { block } => write!(f, "fp8-e4m3/b{block}"),
        }
    }
}

/// Why a matrix cannot be stored in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The block size is not a positive multiple of [`GROUP`].
    #[error(
        "block size {block} is not supported by the CPU kernels: use a positive multiple of {GROUP} (32, 64, 128, ...)"
    )]
    Block {
        /// The block size asked for.
        block: usize,
    },
    /// Codes or scales given for a matrix do not have its layout's length.
    #[error("{what}: {got} given, a {rows} × {cols} matrix in this format holds {expected}")]
    PartLength {
        /// `codes` or `scales`.
        what: &'static str,
        /// Length the layout needs.
        expected: usize,
        /// Length given.
        got: usize,
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// The values do not fill `rows × cols`.
    #[error("{len} values cannot fill a {rows} × {cols} matrix")]
    Length {
        /// Values given.
        len: usize,
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
}

/// A `[rows, cols]` matrix (PyTorch's `[out, in]` layout for a linear weight) stored in a
/// narrow [`WeightFormat`], rows padded to whole [`GROUP`]s.
#[derive(Clone)]
pub struct CodedMatrix {
    format: WeightFormat,
    rows: usize,
    cols: usize,
    /// The codes, row after row, [`CodedMatrix::row_bytes`] each; on huge pages where large
    /// (every decode step streams them). Held as `f32`s only for the buffer's alignment.
    codes: WeightBuffer,
    /// `[rows, blocks per row]` scales, already multiplied by the format's code unit; empty for
    /// the unscaled formats.
    scales: Vec<f32>,
}

impl fmt::Debug for CodedMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodedMatrix")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl CodedMatrix {
    /// Encodes row-major `[rows, cols]` f32 values. Rounding: to nearest even for f16, bf16 and
    /// fp8, to nearest (halves away from zero) for int8 and int4, the nearest code for NF4.
    pub fn encode(
        format: WeightFormat,
        values: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<Self, FormatError> {
        if let Some(block) = format.block()
            && (block == 0 || !block.is_multiple_of(GROUP))
        {
            return Err(FormatError::Block { block });
        }
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(FormatError::Length {
                len: values.len(),
                rows,
                cols,
            });
        }
        let padded = padded_cols(cols);
        let row_bytes = padded * format.bits() / 8;
        let total = rows * row_bytes;
        let mut codes = WeightBuffer::zeroed(total.div_ceil(4));
        let blocks = format.block().map_or(0, |b| padded.div_ceil(b));
        let mut scales = vec![0f32; rows * blocks];
        {
            let bytes = as_bytes_mut(&mut codes);
            let mut row_values = vec![0f32; padded];
            for (r, (row, out)) in values
                .chunks_exact(cols.max(1))
                .zip(bytes.chunks_exact_mut(row_bytes.max(1)))
                .enumerate()
            {
                row_values[..cols].copy_from_slice(row);
                row_values[cols..].fill(0.0);
                let row_scales = &mut scales[r * blocks..(r + 1) * blocks];
                encode_row(format, &row_values, out, row_scales);
            }
        }
        Ok(Self {
            format,
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// A matrix from codes and scales already in `format`'s layout, as another quantizer
    /// wrote them (llama.cpp's Q8_0 and Q4_0 are llmeff's int8 and int4 at block 32): `codes`
    /// row after row, `cols · bits / 8` bytes each (whole [`GROUP`]s: `cols` a multiple of it,
    /// the rows need no padding), `scales` `[rows, cols / block]`, each the value of one code
    /// step. No value is widened: the codes are copied once, into the matrix's buffer.
    pub fn from_codes(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        codes: &[u8],
        scales: Vec<f32>,
    ) -> Result<Self, FormatError> {
        let Some(block) = format.block() else {
            return Err(FormatError::Block { block: 0 });
        };
        if block == 0 || !block.is_multiple_of(GROUP) || !cols.is_multiple_of(block) {
            return Err(FormatError::Block { block });
        }
        let row_bytes = cols * format.bits() / 8;
        for (what, expected, got) in [
            ("codes", rows * row_bytes, codes.len()),
            ("scales", rows * (cols / block), scales.len()),
        ] {
            if expected != got {
                return Err(FormatError::PartLength {
                    what,
                    expected,
                    got,
                    rows,
                    cols,
                });
            }
        }
        let mut buffer = WeightBuffer::zeroed(codes.len().div_ceil(4));
        as_bytes_mut(&mut buffer)[..codes.len()].copy_from_slice(codes);
        Ok(Self {
            format,
            rows,
            cols,
            codes: buffer,
            scales,
        })
    }

    /// The storage format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Rows (`out` features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (`in` features), before padding.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Columns each row is stored with: [`CodedMatrix::cols`] rounded up to a whole [`GROUP`].
    pub fn padded_cols(&self) -> usize {
        padded_cols(self.cols)
    }

    /// Bytes of codes per row.
    pub(crate) fn row_bytes(&self) -> usize {
        self.padded_cols() * self.format.bits() / 8
    }

    /// Scales per row (0 for unscaled formats).
    pub(crate) fn blocks_per_row(&self) -> usize {
        self.format
            .block()
            .map_or(0, |b| self.padded_cols().div_ceil(b))
    }

    /// The codes, row after row.
    pub(crate) fn codes(&self) -> &[u8] {
        &as_bytes(&self.codes)[..self.rows * self.row_bytes()]
    }

    /// The scales, `[rows, blocks per row]`, each times the format's code unit.
    pub(crate) fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// Bytes held in memory: codes (padding included) and scales.
    pub fn bytes(&self) -> u64 {
        (self.rows * self.row_bytes() + self.scales.len() * size_of::<f32>()) as u64
    }

    /// Row `r`'s values as f32 into `out` (`cols` long): the scalar reference of what the codes
    /// mean, used for embedding lookups and by the kernels' tests. Out-of-range rows or a short
    /// `out` write nothing.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        if r >= self.rows || out.len() < self.cols {
            return;
        }
        let row_bytes = self.row_bytes();
        let codes = &self.codes()[r * row_bytes..(r + 1) * row_bytes];
        let blocks = self.blocks_per_row();
        let scales = &self.scales[r * blocks..(r + 1) * blocks];
        for (c, v) in out[..self.cols].iter_mut().enumerate() {
            let scale = self.format.block().map_or(1.0, |b| scales[c / b]);
            *v = code_value(self.format, codes, c) * scale;
        }
    }

    /// Every value as f32, row-major `[rows, cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }
}

/// `cols` rounded up to a whole [`GROUP`].
pub(crate) fn padded_cols(cols: usize) -> usize {
    cols.next_multiple_of(GROUP)
}

/// The unscaled value of column `c`'s code in a row's codes: the widened value a kernel
/// multiplies by the stored scale.
pub(crate) fn code_value(format: WeightFormat, codes: &[u8], c: usize) -> f32 {
    match format {
        WeightFormat::F16 => {
            half::f16::from_bits(u16::from_le_bytes([codes[2 * c], codes[2 * c + 1]])).to_f32()
        }
        WeightFormat::Bf16 => {
            half::bf16::from_bits(u16::from_le_bytes([codes[2 * c], codes[2 * c + 1]])).to_f32()
        }
        WeightFormat::Int8 { .. } => f32::from(codes[c] as i8),
        WeightFormat::Int4 { .. } => f32::from(nibble(codes, c) as i8 - 8),
        WeightFormat::Nf4 { .. } => NF4_CODES[usize::from(nibble(codes, c))],
        WeightFormat::Fp8 { .. } => f32::from_bits(fp8::widened_bits(codes[c])),
    }
}

/// Column `c`'s 4-bit code in a row packed as [`GROUP`] describes.
fn nibble(codes: &[u8], c: usize) -> u8 {
    let (group, within) = (c / GROUP, c % GROUP);
    let byte = codes[group * GROUP / 2 + within % (GROUP / 2)];
    if within < GROUP / 2 {
        byte & 0x0f
    } else {
        byte >> 4
    }
}

/// Encodes one padded row into `out` (its codes) and `scales` (its blocks').
fn encode_row(format: WeightFormat, row: &[f32], out: &mut [u8], scales: &mut [f32]) {
    match format {
        WeightFormat::F16 => {
            for (v, o) in row.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        WeightFormat::Bf16 => {
            for (v, o) in row.iter().zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        WeightFormat::Int8 { block }
        | WeightFormat::Int4 { block }
        | WeightFormat::Nf4 { block }
        | WeightFormat::Fp8 { block } => {
            for (b, (values, scale)) in row.chunks(block).zip(scales.iter_mut()).enumerate() {
                let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                *scale = absmax * format.code_unit();
                for (j, v) in values.iter().enumerate() {
                    let x = if absmax > 0.0 { v / absmax } else { 0.0 };
                    let c = b * block + j;
                    match format {
                        WeightFormat::Int8 { .. } => {
                            out[c] = (x * 127.0).round().clamp(-127.0, 127.0) as i8 as u8;
                        }
                        WeightFormat::Fp8 { .. } => out[c] = e4m3_from_f32(x * E4M3_MAX),
                        _ => {
                            let code = if matches!(format, WeightFormat::Int4 { .. }) {
                                ((x * 7.0).round().clamp(-8.0, 7.0) as i8 + 8) as u8
                            } else {
                                nearest_nf4(x)
                            };
                            let (group, within) = (c / GROUP, c % GROUP);
                            let byte = &mut out[group * GROUP / 2 + within % (GROUP / 2)];
                            *byte |= if within < GROUP / 2 { code } else { code << 4 };
                        }
                    }
                }
            }
        }
    }
}

/// The index of the NF4 code nearest to `x` (the lower one on a tie).
pub fn nearest_nf4(x: f32) -> u8 {
    let mut best = 0;
    for (i, c) in NF4_CODES.iter().enumerate() {
        if (c - x).abs() < (NF4_CODES[best] - x).abs() {
            best = i;
        }
    }
    best as u8
}

/// The buffer's floats as bytes.
fn as_bytes(buffer: &[f32]) -> &[u8] {
    // SAFETY: any initialised f32 memory is valid as bytes, u8 has alignment 1, and the length
    // covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), size_of_val(buffer)) }
}

/// The buffer's floats as mutable bytes.
fn as_bytes_mut(buffer: &mut [f32]) -> &mut [u8] {
    // SAFETY: as for `as_bytes`; every byte pattern is a valid f32, so whatever is written
    // leaves the floats valid.
    unsafe { std::slice::from_raw_parts_mut(buffer.as_mut_ptr().cast::<u8>(), size_of_val(buffer)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Codes and scales taken out of an encoded matrix and put back with `from_codes` give the
    /// same matrix; lengths that disagree with the layout are refused.
    #[test]
    fn a_matrix_from_its_own_codes_and_scales_is_the_same_matrix() {
        let (rows, cols) = (5, 96);
        let v = values(rows * cols, 11);
        for format in [
            WeightFormat::Int8 { block: 32 },
            WeightFormat::Int4 { block: 32 },
        ] {
            let encoded = CodedMatrix::encode(format, &v, rows, cols).unwrap();
            let codes = &as_bytes(&encoded.codes)[..rows * encoded.row_bytes()];
            let rebuilt =
                CodedMatrix::from_codes(format, rows, cols, codes, encoded.scales.clone()).unwrap();
            let (mut a, mut b) = (vec![0.0; cols], vec![0.0; cols]);
            for r in 0..rows {
                encoded.dequantize_row(r, &mut a);
                rebuilt.dequantize_row(r, &mut b);
                assert_eq!(a, b, "{format:?} row {r}");
            }
            assert!(matches!(
                CodedMatrix::from_codes(format, rows, cols, &codes[1..], encoded.scales.clone()),
                Err(FormatError::PartLength { what: "codes", .. })
            ));
            assert!(matches!(
                CodedMatrix::from_codes(format, rows, cols, codes, vec![1.0; 3]),
                Err(FormatError::PartLength { what: "scales", .. })
            ));
        }
        assert!(CodedMatrix::from_codes(WeightFormat::F16, 1, 32, &[0; 64], vec![]).is_err());
    }

    const FORMATS: [WeightFormat; 6] = [
        WeightFormat::F16,
        WeightFormat::Bf16,
        WeightFormat::Int8 { block: 32 },
        WeightFormat::Int4 { block: 64 },
        WeightFormat::Nf4 { block: 32 },
        WeightFormat::Fp8 { block: 128 },
    ];

    #[test]
    fn every_format_round_trips_within_its_step() {
        // A ragged column count: the last group of each row is padding.
        let (rows, cols) = (5, 70);
        let w = values(rows * cols, 7);
        for format in FORMATS {
            let m = CodedMatrix::encode(format, &w, rows, cols).unwrap();
            let back = m.dequantize();
            for (r, (a, b)) in w.chunks(cols).zip(back.chunks(cols)).enumerate() {
                for (c, (x, y)) in a.iter().zip(b).enumerate() {
                    let absmax = format.block().map_or(1.0, |block| {
                        let start = c / block * block;
                        a[start..(start + block).min(cols)]
                            .iter()
                            .fold(0f32, |m, v| m.max(v.abs()))
                    });
                    let bound = match format {
                        WeightFormat::F16 => x.abs() / 2048.0,
                        WeightFormat::Bf16 => x.abs() / 256.0,
                        WeightFormat::Int8 { .. } => absmax / 254.0,
                        WeightFormat::Int4 { .. } => absmax / 14.0,
                        WeightFormat::Nf4 { .. } => absmax * (NF4_CODES[1] - NF4_CODES[0]) / 2.0,
                        // Three mantissa bits: half a step is 1/16 of the value's binade.
                        WeightFormat::Fp8 { .. } => x.abs() / 16.0 + absmax / 448.0 * 2f32.powi(-9),
                    };
                    assert!(
                        (x - y).abs() <= bound * (1.0 + 1e-5) + 1e-12,
                        "{format} ({r}, {c}): {x} → {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn storage_is_the_formats_width() {
        let (rows, cols) = (4, 64);
        let w = values(rows * cols, 3);
        let bytes = |f| CodedMatrix::encode(f, &w, rows, cols).unwrap().bytes();
        assert_eq!(bytes(WeightFormat::Bf16), 4 * 64 * 2);
        assert_eq!(bytes(WeightFormat::Int8 { block: 32 }), 4 * 64 + 4 * 2 * 4);
        assert_eq!(bytes(WeightFormat::Int4 { block: 32 }), 4 * 32 + 4 * 2 * 4);
        assert_eq!(bytes(WeightFormat::Fp8 { block: 64 }), 4 * 64 + 4 * 4);
    }

    #[test]
    fn four_bit_codes_are_in_llama_cpp_order() {
        // Row of 32: weight j in byte j's low nibble, weight 16 + j in its high nibble.
        let w: Vec<f32> = (0..32).map(|i| if i == 17 { 1.0 } else { 0.0 }).collect();
        let m = CodedMatrix::encode(WeightFormat::Int4 { block: 32 }, &w, 1, 32).unwrap();
        let codes = m.codes();
        assert_eq!(codes[1], 0x8 | (0xf << 4));
        assert_eq!(codes[0], 0x88);
    }

    #[test]
    fn bad_blocks_and_lengths_are_errors() {
        let w = [0.0f32; 64];
        for block in [0, 16, 48] {
            assert_eq!(
                CodedMatrix::encode(WeightFormat::Int8 { block }, &w, 1, 64).unwrap_err(),
                FormatError::Block { block }
            );
        }
        assert!(matches!(
            CodedMatrix::encode(WeightFormat::F16, &w, 3, 64),
            Err(FormatError::Length { .. })
        ));
    }

    #[test]
    fn a_zero_block_stays_zero() {
        let w = [0.0f32; 64];
        for format in FORMATS {
            let m = CodedMatrix::encode(format, &w, 1, 64).unwrap();
            assert!(m.dequantize().iter().all(|v| *v == 0.0), "{format}");
        }
    }
}
