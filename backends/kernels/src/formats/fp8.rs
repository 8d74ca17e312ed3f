//! The OCP 8-bit float E4M3 (`float8_e4m3fn` in PyTorch, the format of published fp8
//! checkpoints): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no infinities, one NaN
//! pattern per sign (`S.1111.111`), largest finite value 448.

/// The largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;

/// Scales a widened code (see [`widened_bits`]) by this to get its value: the exponent bias
/// difference between f32 (127) and E4M3 (7), `2^120`.
pub const E4M3_WIDEN_SCALE: f32 = 1.329_228e36;

/// The E4M3 code nearest to `x` (ties to even), saturating at ±448 as PyTorch's conversion does
/// for finite inputs; NaN maps to the NaN code.
pub fn e4m3_from_f32(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    if x.is_nan() {
        return 0x7f | sign;
    }
    let a = x.abs();
    if a >= E4M3_MAX {
        return sign | 0x7e;
    }
    // Subnormal E4M3 values are multiples of 2^-9 below 2^-6; rounding |x| to a multiple of the
    // step at its binade gives the code directly.
    let exponent = if a < f32::MIN_POSITIVE {
        -127
    } else {
        ((a.to_bits() >> 23) as i32) - 127
    };
    let binade = exponent.max(-6);
    // Three mantissa bits: a step of 2^(binade - 3).
    let step = f32::from_bits(((binade - 3 + 127) as u32) << 23);
    let steps = round_ties_even(a / step);
    let value = steps * step;
    if value >= E4M3_MAX {
        return sign | 0x7e;
    }
    sign | magnitude_code(value)
}

/// The code of a non-negative value that E4M3 represents exactly (below 448).
fn magnitude_code(value: f32) -> u8 {
    if value == 0.0 {
        return 0;
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 23) as i32) - 127;
    if exponent < -6 {
        // Subnormal: value = m · 2^-9.
        return (value * 512.0) as u8;
    }
    let mantissa = ((bits >> 20) & 0x7) as u8;
    (((exponent + 7) as u8) << 3) | mantissa
}

/// `x` rounded to the nearest integer, ties to even (exact for the magnitudes used here).
fn round_ties_even(x: f32) -> f32 {
    let r = x.round();
    if (r - x).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The value of an E4M3 code.
pub fn e4m3_to_f32(code: u8) -> f32 {
    f32::from_bits(widened_bits(code)) * E4M3_WIDEN_SCALE
}

/// The code's bits placed in an f32 so that, read as f32 and multiplied by
/// [`E4M3_WIDEN_SCALE`], they give its value: exponent and mantissa shifted up 20 bits, the sign
/// to bit 31. Normal codes become normal f32s with exponent `e - 127`, subnormal ones f32
/// subnormals, so the SIMD kernels widen with two integer instructions and fold `2^120` into the
/// block's scale. The NaN codes widen to a finite value; quantizing never writes them.
pub const fn widened_bits(code: u8) -> u32 {
    (((code & 0x80) as u32) << 24) | (((code & 0x7f) as u32) << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_code_round_trips() {
        for code in 0..=255u8 {
            if code & 0x7f == 0x7f {
                continue;
            }
            let v = e4m3_to_f32(code);
            assert!(v.is_finite(), "{code:#x}");
            let back = e4m3_from_f32(v);
            // ±0 both encode as their own sign.
            assert_eq!(back, code, "{code:#x} = {v}");
        }
    }

    #[test]
    fn known_values_and_rounding() {
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
        // 1.0625 lies halfway between 1.0 (even mantissa) and 1.125: ties to even.
        assert_eq!(e4m3_from_f32(1.0625), 0x38);
        // 1.1875 lies halfway between 1.125 (odd) and 1.25 (even).
        assert_eq!(e4m3_to_f32(e4m3_from_f32(1.1875)), 1.25);
        assert_eq!(e4m3_from_f32(1000.0), 0x7e);
        assert_eq!(e4m3_from_f32(-1000.0), 0xfe);
        assert_eq!(e4m3_from_f32(1e-6), 0);
        assert_eq!(e4m3_from_f32(f32::NAN) & 0x7f, 0x7f);
    }

    #[test]
    fn nearest_code_is_chosen() {
        let codes: Vec<f32> = (0..0x7fu8).map(e4m3_to_f32).collect();
        let mut x = 0.0001f32;
        while x < 440.0 {
            let got = e4m3_to_f32(e4m3_from_f32(x));
            let best = codes
                .iter()
                .map(|c| (c - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert!(
                (got - x).abs() <= best,
                "{x}: {got}, nearest is {best} away"
            );
            x *= 1.013;
        }
    }

    #[test]
    fn widening_scale_is_two_to_the_120() {
        assert_eq!(E4M3_WIDEN_SCALE, 2f32.powi(120));
    }
}
