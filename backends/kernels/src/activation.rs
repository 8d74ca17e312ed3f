//! The gated activations of Llama-family MLPs.

use super::simd::{exp, isa_specialised};

isa_specialised! {
    /// SwiGLU's gate: `out[r][j] = silu(gate_up[r][j]) · gate_up[r][ff + j]` for rows of
    /// `gate_up` laid out `[gate (ff) | up (ff)]` (the fused gate and up projections), where
    /// `ff = out row length` and `silu(g) = g · σ(g)` (torch's `F.silu`).
    pub fn silu_mul(gate_up: &[f32], ff: usize, out: &mut [f32]) {
        if ff == 0 {
            return;
        }
        for (gu, o) in gate_up.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
            let (gate, up) = gu.split_at(ff);
            for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + exp(-g)) * u;
            }
        }
    }
}

/// `√(2/π)`, the tanh approximation's inner scale.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// Gemma's gate: `out[r][j] = gelu_tanh(gate_up[r][j]) · gate_up[r][ff + j]`, with the rows
/// laid out as for [`silu_mul`] and `gelu_tanh(g) = 0.5 · g · (1 + tanh(√(2/π) · (g +
/// 0.044715 · g³)))` (torch's `gelu(approximate="tanh")`, transformers' `gelu_pytorch_tanh`).
pub fn gelu_tanh_mul(gate_up: &[f32], ff: usize, out: &mut [f32]) {
    if ff == 0 {
        return;
    }
    for (gu, o) in gate_up.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
        let (gate, up) = gu.split_at(ff);
        for ((o, &g), u) in o.iter_mut().zip(gate).zip(up) {
            let inner = SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
            *o = 0.5 * g * (1.0 + inner.tanh()) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_tanh_matches_torchs_formula() {
        let ff = 7;
        let gate_up: Vec<f32> = (0..2 * ff).map(|i| (i as f32 - 6.0) * 0.9).collect();
        let mut out = vec![0.0; ff];
        gelu_tanh_mul(&gate_up, ff, &mut out);
        for j in 0..ff {
            let g = f64::from(gate_up[j]);
            let u = f64::from(gate_up[ff + j]);
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g.powi(3));
            let want = 0.5 * g * (1.0 + inner.tanh()) * u;
            let got = f64::from(out[j]);
            assert!(
                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn matches_silu_times_up() {
        let ff = 19;
        let gate_up: Vec<f32> = (0..2 * 2 * ff).map(|i| (i as f32 - 40.0) * 0.37).collect();
        let mut out = vec![0.0; 2 * ff];
        silu_mul(&gate_up, ff, &mut out);
        for r in 0..2 {
            for j in 0..ff {
                let g = f64::from(gate_up[r * 2 * ff + j]);
                let u = f64::from(gate_up[r * 2 * ff + ff + j]);
                let want = g / (1.0 + (-g).exp()) * u;
                let got = f64::from(out[r * ff + j]);
                assert!(
                    (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }
}
