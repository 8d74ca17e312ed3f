//! RMSNorm over rows, as transformers' `LlamaRMSNorm` computes it in f32:
//! `weight · (x / √(mean(x²) + ε))`.

use super::simd::{isa_specialised, sum_of_squares};

isa_specialised! {
    /// `out[r] = weight ⊙ x[r] · (mean(x[r]²) + eps)^-½` for every row of `x` (`[rows, len]`,
    /// `len = weight.len()`); rows past the shorter of `x` and `out` are left alone.
    pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let len = weight.len();
        if len == 0 {
            return;
        }
        for (xr, or) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
            let mean = sum_of_squares(xr) / len as f32;
            // transformers multiplies by rsqrt; 1/sqrt rounds the same way to within an ulp.
            let inv = 1.0 / (mean + eps).sqrt();
            for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
                *o = w * (v * inv);
            }
        }
    }
}

isa_specialised! {
    /// [`rms_norm`] of every `weight.len()`-wide row of `x`, written back into `x` (the same
    /// arithmetic, so the numerics agree): for norms on a block's output and per-head q/k
    /// norms, which have no separate buffer to write to.
    pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
        let len = weight.len();
        if len == 0 {
            return;
        }
        for row in x.chunks_exact_mut(len) {
            let mean = sum_of_squares(row) / len as f32;
            let inv = 1.0 / (mean + eps).sqrt();
            for (v, w) in row.iter_mut().zip(weight) {
                *v = w * (*v * inv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_equals_the_out_of_place_norm() {
        let x: Vec<f32> = (0..48).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let w: Vec<f32> = (0..16).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut out = vec![0.0; 48];
        rms_norm(&x, &w, 1e-6, &mut out);
        let mut y = x.clone();
        rms_norm_in_place(&mut y, &w, 1e-6);
        assert_eq!(y, out);
    }

    #[test]
    fn matches_the_definition() {
        let x = [1.0f32, -2.0, 3.0, 0.5, 0.0, 4.0];
        let w = [0.5f32, 1.0, 2.0];
        let mut out = [0.0; 6];
        rms_norm(&x, &w, 1e-5, &mut out);
        for r in 0..2 {
            let row = &x[r * 3..r * 3 + 3];
            let ms: f64 = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 3.0;
            for c in 0..3 {
                let want = f64::from(w[c]) * f64::from(row[c]) / (ms + 1e-5).sqrt();
                assert!((f64::from(out[r * 3 + c]) - want).abs() < 1e-6);
            }
        }
    }
}
