//! Q8_0 and Q4_0 tensors in llmeff's own blockwise int8 and int4 conventions, read from the
//! mapped file without widening anything to f32.
//!
//! The mapping is exact, code for code and scale for scale:
//!
//! - **Q8_0 → `WeightFormat::Int8 { block: 32 }`.** ggml's value is `d · q` with `q` a signed
//!   byte; llmeff's int8 value is `code · scale` with `code` the byte read as `i8` and `scale`
//!   stored already times the code unit. So `code = q` (the same byte) and `scale = d` widened
//!   from f16 (exact). ggml's reference quantizer writes `q` in −127..=127; a file may hold −128,
//!   which llmeff's kernels also read exactly (its VNNI kernel flips the sign bit, an exact
//!   offset of 128, and its widening kernel converts the `i8`).
//! - **Q4_0 → `WeightFormat::Int4 { block: 32 }`.** ggml's value is `d · (q − 8)` with `q` a
//!   nibble in 0..=15; llmeff's int4 value is `(nibble − 8) · scale`, so the code range is the
//!   same −8..=7 and `nibble = q`, `scale = d`. Both pack a block of 32 into 16 bytes with value
//!   `j` in the low nibble of byte `j` and value `16 + j` in its high nibble, so a block's 16 code
//!   bytes are copied unchanged. (llmeff's own quantizer uses only −7..=7, `round(7·w/absmax)`;
//!   its kernels read all sixteen codes.)
//!
//! A block never straddles rows (GGUF rows hold whole blocks), so llama.cpp's q/k row
//! permutation moves whole blocks and is undone by reading rows in another order.

use kernels::WeightFormat;

use super::error::GgufError;
use super::names::rope_stored_row;
use super::quant::{BLOCK_LEN, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, block_scale};

/// Which block format a quantized tensor is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// ggml's Q8_0: llmeff's int8, block 32.
    Q8_0,
    /// ggml's Q4_0: llmeff's int4, block 32.
    Q4_0,
}

impl BlockKind {
    /// llmeff's format holding the same values.
    pub fn weight_format(self) -> WeightFormat {
        match self {
            Self::Q8_0 => WeightFormat::Int8 { block: BLOCK_LEN },
            Self::Q4_0 => WeightFormat::Int4 { block: BLOCK_LEN },
        }
    }

    /// Bytes of one block in the file.
    fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => Q8_0_BLOCK_BYTES,
            Self::Q4_0 => Q4_0_BLOCK_BYTES,
        }
    }

    /// Bytes of codes per block (what llmeff stores per block, scale apart).
    fn code_bytes(self) -> usize {
        self.block_bytes() - 2
    }
}

/// A Q8_0 or Q4_0 tensor as a `[rows, cols]` matrix in Hugging Face's layout (`[out, in]` for a
/// linear weight), borrowing the mapped file.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedMatrix<'a> {
    kind: BlockKind,
    rows: usize,
    cols: usize,
    /// The tensor's bytes as stored, row after row in stored order.
    data: &'a [u8],
    /// `Some(rows per head)` when rows are stored in llama.cpp's q/k permutation.
    rope_rows_per_head: Option<usize>,
}

impl<'a> QuantizedMatrix<'a> {
    /// A view over `data`, which holds exactly `rows · cols / 32` blocks of `kind` (the caller
    /// checked the tensor's length and that `cols` is a multiple of 32).
    pub(crate) fn new(
        kind: BlockKind,
        rows: usize,
        cols: usize,
        data: &'a [u8],
        rope_rows_per_head: Option<usize>,
    ) -> Self {
        Self {
            kind,
            rows,
            cols,
            data,
            rope_rows_per_head,
        }
    }

    #[cfg(test)]
    /// The block format.
    pub fn kind(&self) -> BlockKind {
        self.kind
    }

    /// llmeff's format holding the same values.
    pub fn weight_format(&self) -> WeightFormat {
        self.kind.weight_format()
    }

    /// Rows (`out` features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (`in` features), a multiple of 32.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Blocks (and scales) per row.
    pub fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK_LEN
    }

    /// Bytes of codes per row in llmeff's layout: `cols` for int8, `cols / 2` for int4 (no
    /// padding: the columns are whole groups of 32 already).
    pub fn code_bytes_per_row(&self) -> usize {
        self.blocks_per_row() * self.kind.code_bytes()
    }

    /// The stored bytes of Hugging Face row `row` (in bounds: callers iterate `0..rows`).
    fn stored_row(&self, row: usize) -> &'a [u8] {
        let stored = self
            .rope_rows_per_head
            .map_or(row, |per_head| rope_stored_row(row, per_head));
        let row_bytes = self.blocks_per_row() * self.kind.block_bytes();
        &self.data[stored * row_bytes..(stored + 1) * row_bytes]
    }

    /// Row `row`'s blocks: each block's scale `d` (widened from f16) and its code bytes as
    /// stored, which are llmeff's codes. Empty for a row out of range.
    pub fn row_blocks(&self, row: usize) -> impl Iterator<Item = (f32, &'a [u8])> + 'a {
        let bytes: &'a [u8] = if row < self.rows {
            self.stored_row(row)
        } else {
            &[]
        };
        bytes
            .chunks_exact(self.kind.block_bytes())
            .map(|block| (block_scale(block), &block[2..]))
    }

    /// Writes the codes and scales in llmeff's `CodedMatrix` layout into caller-provided
    /// buffers (for instance the huge-page buffer the matrix will live in): `codes` row after
    /// row, [`Self::code_bytes_per_row`] bytes each; `scales` `[rows, blocks_per_row]`, each
    /// the value of one code step.
    pub fn copy_into(&self, codes: &mut [u8], scales: &mut [f32]) -> Result<(), GgufError> {
        let code_row = self.code_bytes_per_row();
        let blocks = self.blocks_per_row();
        for (what, expected, got) in [
            ("codes", self.rows * code_row, codes.len()),
            ("scales", self.rows * blocks, scales.len()),
        ] {
            if expected != got {
                return Err(GgufError::BufferLength {
                    what,
                    expected,
                    got,
                });
            }
        }
        let code_bytes = self.kind.code_bytes();
        for row in 0..self.rows {
            let row_codes = &mut codes[row * code_row..(row + 1) * code_row];
            let row_scales = &mut scales[row * blocks..(row + 1) * blocks];
            for ((block_codes, scale), (d, stored)) in row_codes
                .chunks_exact_mut(code_bytes)
                .zip(row_scales.iter_mut())
                .zip(self.row_blocks(row))
            {
                block_codes.copy_from_slice(stored);
                *scale = d;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    /// The codes and scales in llmeff's layout, in new buffers (see [`Self::copy_into`]).
    pub fn to_llmeff(self) -> LlmeffBlocks {
        let mut codes = vec![0u8; self.rows * self.code_bytes_per_row()];
        let mut scales = vec![0f32; self.rows * self.blocks_per_row()];
        // The buffers are sized from the same fields `copy_into` checks.
        let copied = self.copy_into(&mut codes, &mut scales);
        debug_assert!(copied.is_ok());
        LlmeffBlocks {
            format: self.weight_format(),
            rows: self.rows,
            cols: self.cols,
            codes,
            scales,
        }
    }
}

#[cfg(test)]
/// A quantized matrix's codes and scales in llmeff's `CodedMatrix` layout (see the module
/// docs): what `kernels::CodedMatrix` holds for the same format and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmeffBlocks {
    /// `Int8 { block: 32 }` or `Int4 { block: 32 }`.
    pub format: WeightFormat,
    /// Rows (`out` features).
    pub rows: usize,
    /// Columns (`in` features), a multiple of 32.
    pub cols: usize,
    /// Row after row: `cols` signed bytes (int8) or `cols / 2` bytes of nibbles (int4, value
    /// `j` of each 32 in the low nibble of byte `j`, value `16 + j` in its high nibble).
    pub codes: Vec<u8>,
    /// `[rows, cols / 32]`: each block's value of one code step.
    pub scales: Vec<f32>,
}

#[cfg(test)]
impl LlmeffBlocks {
    /// The value at (`row`, `col`) as llmeff's kernels read it (`kernels::formats`'
    /// `code_value` times the block's scale); 0 outside the matrix.
    pub fn value(&self, row: usize, col: usize) -> f32 {
        if row >= self.rows || col >= self.cols {
            return 0.0;
        }
        let scale = self.scales[row * (self.cols / BLOCK_LEN) + col / BLOCK_LEN];
        let code = match self.format {
            WeightFormat::Int4 { .. } => {
                let row_codes = &self.codes[row * self.cols / 2..(row + 1) * self.cols / 2];
                let (group, within) = (col / BLOCK_LEN, col % BLOCK_LEN);
                let byte = row_codes[group * BLOCK_LEN / 2 + within % (BLOCK_LEN / 2)];
                let nibble = if within < BLOCK_LEN / 2 {
                    byte & 0x0f
                } else {
                    byte >> 4
                };
                nibble as i8 - 8
            }
            _ => self.codes[row * self.cols + col] as i8,
        };
        f32::from(code) * scale
    }
}
