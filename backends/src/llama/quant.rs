//! llmeff's weight-only quantization of the transformer's linear layers (int8, int4, NF4, fp8
//! E4M3) for the burn pass, where burn does not hold the format itself (`burn_quant.rs`).
//!
//! Weights are stored compactly on the host — one byte per int8 weight, two 4-bit codes per
//! byte for int4 and NF4 — with one f32 absmax scale per block of `block_size` weights along the
//! input dimension. Each product dequantizes the matrix to the run dtype and multiplies, so
//! there quantization saves resident memory, not time; the cost of dequantizing is part of
//! what llmeff then measures. Embeddings, norms and the LM head stay in full precision, as
//! transformers' bitsandbytes integration keeps them by default.

use api::runtime::{QuantMethod, Quantization};

use crate::error::InputError;
use kernels::NF4_CODES;

/// A `[in, out]` matrix quantized in blocks along `in`.
#[derive(Debug, Clone)]
pub(crate) struct QuantizedMatrix {
    method: QuantMethod,
    block_size: usize,
    rows: usize,
    cols: usize,
    /// Codes in row-major order; int8 as `i8` bits, 4-bit codes packed low nibble first.
    codes: Vec<u8>,
    /// `[rows / block_size, cols]` scales.
    scales: Vec<f32>,
}

fn code_of(method: QuantMethod, x: f32) -> u8 {
    match method {
        QuantMethod::Int8 => (x * 127.0).round().clamp(-127.0, 127.0) as i8 as u8,
        QuantMethod::Int4 => ((x * 7.0).round().clamp(-8.0, 7.0) as i8 + 8) as u8,
        QuantMethod::Nf4 => kernels::nearest_nf4(x),
        QuantMethod::Fp8 => kernels::e4m3_from_f32(x * kernels::E4M3_MAX),
    }
}

fn value_of(method: QuantMethod, code: u8) -> f32 {
    match method {
        QuantMethod::Int8 => code as i8 as f32 / 127.0,
        QuantMethod::Int4 => (code as i8 - 8) as f32 / 7.0,
        QuantMethod::Nf4 => NF4_CODES[(code & 0x0f) as usize],
        QuantMethod::Fp8 => kernels::e4m3_to_f32(code) / kernels::E4M3_MAX,
    }
}

impl QuantizedMatrix {
    /// Quantizes row-major `[rows, cols]` values.
    pub(crate) fn quantize(
        name: &str,
        values: &[f32],
        rows: usize,
        cols: usize,
        q: Quantization,
    ) -> Result<Self, InputError> {
        if q.block_size == 0 {
            return Err(InputError::ZeroBlockSize {
                tensor: name.to_string(),
            });
        }
        // A last, shorter block covers input dimensions the block size does not divide (the
        // MLP width of small models often is not a power of two).
        let blocks = rows.div_ceil(q.block_size);
        let mut scales = vec![0f32; blocks * cols];
        for b in 0..blocks {
            for r in b * q.block_size..((b + 1) * q.block_size).min(rows) {
                for c in 0..cols {
                    let s = &mut scales[b * cols + c];
                    *s = s.max(values[r * cols + c].abs());
                }
            }
        }
        let n = rows * cols;
        let packed = q.method.bits() == 4;
        let mut codes = vec![0u8; if packed { n.div_ceil(2) } else { n }];
        for r in 0..rows {
            for c in 0..cols {
                let scale = scales[(r / q.block_size) * cols + c];
                let x = if scale > 0.0 {
                    values[r * cols + c] / scale
                } else {
                    0.0
                };
                let code = code_of(q.method, x);
                let i = r * cols + c;
                if packed {
                    codes[i / 2] |= (code & 0x0f) << (4 * (i % 2));
                } else {
                    codes[i] = code;
                }
            }
        }
        Ok(QuantizedMatrix {
            method: q.method,
            block_size: q.block_size,
            rows,
            cols,
            codes,
            scales,
        })
    }

    /// Bytes held: codes plus scales.
    /// Rows (`in`) of the dense matrix.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (`out`) of the dense matrix.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    pub(crate) fn bytes(&self) -> u64 {
        (self.codes.len() + 4 * self.scales.len()) as u64
    }

    /// The dequantized values, row-major.
    pub(crate) fn dequantize(&self) -> Vec<f32> {
        let packed = self.method.bits() == 4;
        (0..self.rows * self.cols)
            .map(|i| {
                let code = if packed {
                    (self.codes[i / 2] >> (4 * (i % 2))) & 0x0f
                } else {
                    self.codes[i]
                };
                let (r, c) = (i / self.cols, i % self.cols);
                value_of(self.method, code) * self.scales[(r / self.block_size) * self.cols + c]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize) -> Vec<f32> {
        let mut s = 12345u64;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn q(method: QuantMethod) -> Quantization {
        Quantization {
            method,
            block_size: 32,
        }
    }

    #[test]
    fn int8_error_is_at_most_half_a_step_per_block() {
        let (rows, cols) = (64, 16);
        let w = random(rows * cols);
        let m = QuantizedMatrix::quantize("w", &w, rows, cols, q(QuantMethod::Int8)).unwrap();
        let back = m.dequantize();
        for i in 0..w.len() {
            let scale = m.scales[(i / cols / 32) * cols + i % cols];
            assert!((w[i] - back[i]).abs() <= scale / 127.0 / 2.0 + 1e-6);
        }
        assert_eq!(m.bytes(), (64 * 16 + 4 * 2 * 16) as u64);
    }

    #[test]
    fn four_bit_codes_pack_two_per_byte_and_nf4_picks_the_nearest_code() {
        let (rows, cols) = (32, 3);
        let w = random(rows * cols);
        for method in [QuantMethod::Int4, QuantMethod::Nf4] {
            let m = QuantizedMatrix::quantize("w", &w, rows, cols, q(method)).unwrap();
            assert_eq!(m.codes.len(), (rows * cols).div_ceil(2));
            let back = m.dequantize();
            for i in 0..w.len() {
                let scale = m.scales[(i / cols / 32) * cols + i % cols];
                let err = (w[i] - back[i]).abs() / scale;
                let bound = match method {
                    QuantMethod::Int4 => 0.5 / 7.0 + 1e-6,
                    // Half the widest gap between neighbouring NF4 codes.
                    _ => (NF4_CODES[1] - NF4_CODES[0]) / 2.0 + 1e-6,
                };
                assert!(err <= bound, "{method:?} {err}");
            }
        }
        assert_eq!(code_of(QuantMethod::Nf4, 0.07), 8);
        assert_eq!(code_of(QuantMethod::Nf4, -0.99), 0);
    }

    #[test]
    fn a_shorter_last_block_gets_its_own_scale() {
        // 40 rows in blocks of 32: rows 32..40 form a block whose absmax is 4.
        let mut w = vec![1.0f32; 40];
        w[35] = 4.0;
        let m = QuantizedMatrix::quantize("w", &w, 40, 1, q(QuantMethod::Int8)).unwrap();
        assert_eq!(m.scales, vec![1.0, 4.0]);
        assert_eq!(m.dequantize()[35], 4.0);
        let zero = Quantization {
            method: QuantMethod::Int8,
            block_size: 0,
        };
        assert!(QuantizedMatrix::quantize("w", &w, 40, 1, zero).is_err());
    }
}
