//! The tensor encodings llmeff reads from GGUF, as ggml defines them (`ggml-quants.c`,
//! gguf-py's `quants.py`): F32, F16 and BF16 widen exactly to f32; Q8_0 and Q4_0 are blocks
//! of 32 values along a row, each an f16 scale `d` followed by the codes:
//!
//! - Q8_0, 34 bytes: `d`, then 32 signed bytes `q`; value `d · q`.
//! - Q4_0, 18 bytes: `d`, then 16 bytes; value `j` of the block is the low nibble of byte `j`,
//!   value `16 + j` its high nibble, each `q` in 0..=15 meaning `d · (q − 8)`.
//!
//! [`dequantize`] is ggml's reference dequantization, bit for bit (an f16 widened to f32, times
//! an exactly representable small integer, rounded once). The quantizers ggml's reference
//! implementation uses (for the test writer) are [`quantize_q8_0`] and [`quantize_q4_0`].

use super::format::GgmlType;

/// Values per Q8_0 or Q4_0 block (ggml's `QK8_0`, `QK4_0`).
pub const BLOCK_LEN: usize = 32;
/// Bytes of one Q8_0 block: an f16 scale and 32 codes.
pub(crate) const Q8_0_BLOCK_BYTES: usize = 2 + BLOCK_LEN;
/// Bytes of one Q4_0 block: an f16 scale and 16 bytes of nibbles.
pub(crate) const Q4_0_BLOCK_BYTES: usize = 2 + BLOCK_LEN / 2;

/// A block's f16 scale, widened.
pub(crate) fn block_scale(block: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32()
}

/// Dequantizes `bytes` of type `ty` into `out`, one value per element, in file order. `bytes`
/// must hold exactly `out.len()` values (the parser checked each tensor's length); an
/// unsupported type writes nothing and returns `false`.
pub(crate) fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> bool {
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        GgmlType::Bf16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, block) in out
                .chunks_exact_mut(BLOCK_LEN)
                .zip(bytes.chunks_exact(Q8_0_BLOCK_BYTES))
            {
                let d = block_scale(block);
                for (v, &q) in o.iter_mut().zip(&block[2..]) {
                    *v = f32::from(q as i8) * d;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (o, block) in out
                .chunks_exact_mut(BLOCK_LEN)
                .zip(bytes.chunks_exact(Q4_0_BLOCK_BYTES))
            {
                let d = block_scale(block);
                let (low, high) = o.split_at_mut(BLOCK_LEN / 2);
                for ((lo, hi), &q) in low.iter_mut().zip(high.iter_mut()).zip(&block[2..]) {
                    *lo = f32::from((q & 0x0f) as i8 - 8) * d;
                    *hi = f32::from((q >> 4) as i8 - 8) * d;
                }
            }
        }
        GgmlType::Other(_) => return false,
    }
    true
}

/// ggml's `quantize_row_q8_0_ref`: per block `d = max|x| / 127`, codes `round(x / d)` (halves
/// away from zero, computed with `1/d` in f32 as ggml does), `d` stored as f16. `values.len()`
/// must be a multiple of [`BLOCK_LEN`].
#[cfg(test)]
pub(crate) fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / BLOCK_LEN * Q8_0_BLOCK_BYTES);
    for block in values.chunks_exact(BLOCK_LEN) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// ggml's `quantize_row_q4_0_ref`: per block the value of largest magnitude `max` (the first
/// one on a tie, keeping its sign), `d = max / −8`, codes `min(15, trunc(x/d + 8.5))`, `d`
/// stored as f16. `values.len()` must be a multiple of [`BLOCK_LEN`].
#[cfg(test)]
pub(crate) fn quantize_q4_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / BLOCK_LEN * Q4_0_BLOCK_BYTES);
    for block in values.chunks_exact(BLOCK_LEN) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in block {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        // `(int8_t)(x + 8.5f)` truncates toward zero; x·id lies in [-8, 8], so the sum is
        // positive and truncation is `floor`.
        let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        let (low, high) = block.split_at(BLOCK_LEN / 2);
        out.extend(
            low.iter()
                .zip(high)
                .map(|(&a, &b)| code(a) | (code(b) << 4)),
        );
    }
    out
}

/// `values` in the plain float types, little-endian, rounded to nearest even as ggml's
/// `GGML_FP32_TO_FP16`/`GGML_FP32_TO_BF16` do; `None` for a block type.
#[cfg(test)]
pub(crate) fn encode_float(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    Some(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        GgmlType::Bf16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
            .collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dequantized(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        assert!(dequantize(ty, bytes, &mut out));
        out
    }

    #[test]
    fn q8_0_matches_ggml_on_a_hand_checked_block() {
        // max|x| = 127 gives d = 1 exactly: codes are the values rounded, halves away from 0.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -2.5;
        x[2] = 2.5;
        x[3] = 0.49;
        x[4] = -127.0;
        let bytes = quantize_q8_0(&x);
        assert_eq!(bytes.len(), Q8_0_BLOCK_BYTES);
        assert_eq!(
            u16::from_le_bytes([bytes[0], bytes[1]]),
            0x3c00,
            "d = 1.0 in f16"
        );
        assert_eq!(&bytes[2..7], &[127u8, (-3i8) as u8, 3, 0, (-127i8) as u8]);
        let back = dequantized(GgmlType::Q8_0, &bytes, 32);
        assert_eq!(&back[..5], &[127.0, -3.0, 3.0, 0.0, -127.0]);
    }

    #[test]
    fn q4_0_keeps_the_sign_of_the_largest_value() {
        // The largest magnitude is negative: d = -16/-8 = 2, and it maps to code 0 (value -8·2).
        let mut x = [0f32; 32];
        x[0] = -16.0;
        x[1] = 14.0; // 14/2 + 8.5 = 15.5 → 15 (value +14)
        x[16] = 16.0; // also |16|, but the first maximum wins: 8 + 8.5 → 16 → clamped to 15
        x[17] = -3.0; // -1.5 + 8.5 = 7 → 7 (value -2)
        let bytes = quantize_q4_0(&x);
        assert_eq!(bytes.len(), Q4_0_BLOCK_BYTES);
        assert_eq!(
            half::f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
            2.0
        );
        assert_eq!(
            bytes[2],
            15 << 4,
            "x0 (code 0) low nibble, x16 (code 15) high nibble"
        );
        assert_eq!(bytes[3], 15 | (7 << 4));
        assert_eq!(bytes[4], 8 | (8 << 4), "zeros are code 8");
        let back = dequantized(GgmlType::Q4_0, &bytes, 32);
        assert_eq!(
            (back[0], back[1], back[16], back[17]),
            (-16.0, 14.0, 14.0, -2.0)
        );
    }

    #[test]
    fn zero_blocks_stay_zero() {
        let x = [0f32; 64];
        for bytes in [quantize_q8_0(&x), quantize_q4_0(&x)] {
            let ty = if bytes.len() == 2 * Q8_0_BLOCK_BYTES {
                GgmlType::Q8_0
            } else {
                GgmlType::Q4_0
            };
            assert!(dequantized(ty, &bytes, 64).iter().all(|v| *v == 0.0));
        }
    }

    #[test]
    fn quantization_error_is_within_half_a_step() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (ty, bytes) in [
            (GgmlType::Q8_0, quantize_q8_0(&x)),
            (GgmlType::Q4_0, quantize_q4_0(&x)),
        ] {
            let back = dequantized(ty, &bytes, x.len());
            for (block, got) in x.chunks(32).zip(back.chunks(32)) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Half a code step, plus the f16 rounding of d times the largest code. Q4_0's
                // codes reach −8·d but only +7·d, so a value opposite the block's extreme can be
                // a whole step off.
                let bound = if ty == GgmlType::Q8_0 {
                    amax / 127.0 * 0.5
                } else {
                    amax / 8.0
                };
                for (a, b) in block.iter().zip(got) {
                    assert!(
                        (a - b).abs() <= bound + amax * 2e-3 + 1e-6,
                        "{ty:?}: {a} → {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn floats_round_trip() {
        let x = [1.0f32, -0.1, 65504.0, 1e-8, 3.0e38];
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Bf16] {
            let bytes = encode_float(ty, &x).unwrap();
            let back = dequantized(ty, &bytes, x.len());
            for (a, b) in x.iter().zip(&back) {
                let expect = match ty {
                    GgmlType::F16 => half::f16::from_f32(*a).to_f32(),
                    GgmlType::Bf16 => half::bf16::from_f32(*a).to_f32(),
                    _ => *a,
                };
                assert_eq!(expect.to_bits(), b.to_bits(), "{ty:?}");
            }
        }
        assert!(!dequantize(GgmlType::Other(14), &[], &mut []));
    }
}
