//! Rotary position embeddings in Hugging Face's rotate-half layout: the inverse frequencies
//! (with the `linear` and `llama3` scalings of transformers), the cos/sin tables, and their
//! application to query/key heads.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

/// How the base frequencies are rescaled for longer contexts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's band-wise rescaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// RoPE settings from the config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// `inv_freq[i] = 1 / theta^(2i/d)` for `i < d/2`, then scaled exactly as transformers'
    /// `_compute_linear_scaling_rope_parameters` / `_compute_llama3_parameters` do. Both
    /// scalings keep transformers' attention factor of 1, so only the frequencies change.
    pub(crate) fn inverse_frequencies(&self, head_dim: usize) -> Vec<f64> {
        let d = head_dim as f64;
        let base = (0..head_dim / 2).map(|i| 1.0 / self.theta.powf((2 * i) as f64 / d));
        match self.scaling {
            RopeScaling::None => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_len,
            } => {
                let low_freq_wavelen = old_len / low_freq_factor;
                let high_freq_wavelen = old_len / high_freq_factor;
                base.map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    // Long wavelengths are interpolated, short ones kept, the band between
                    // blended smoothly (transformers' two `torch.where`s).
                    let scaled = if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        f
                    };
                    let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if is_medium {
                        let smooth = (old_len / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect()
            }
        }
    }
}

/// The cos and sin tables for positions `0..len`, `[len, head_dim]` each, row-major. Angles and
/// trigonometry are done in f64 so the only rounding is the final one to f32.
pub(crate) fn rope_table_values(
    rope: &RopeConfig,
    head_dim: usize,
    len: usize,
) -> (Vec<f32>, Vec<f32>) {
    let inv_freq = rope.inverse_frequencies(head_dim);
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for pos in 0..len {
        let row_start = cos.len();
        for &f in &inv_freq {
            let angle = pos as f64 * f;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
        cos.extend_from_within(row_start..row_start + half);
        sin.extend_from_within(row_start..row_start + half);
    }
    (cos, sin)
}

/// cos/sin for positions `0..len`, each row `[cos(p*f_0..f_{d/2}), cos(p*f_0..f_{d/2})]` as
/// rotate-half expects.
#[derive(Debug, Clone)]
pub(crate) struct RopeTable<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> RopeTable<B> {
    /// Builds the table on `device` at `dtype`. Angles and trigonometry are done in f64 so the
    /// only rounding is the final cast to the run dtype.
    pub(crate) fn new(
        rope: &RopeConfig,
        head_dim: usize,
        len: usize,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        let (cos, sin) = rope_table_values(rope, head_dim, len);
        let make = |v: Vec<f32>| {
            Tensor::<B, 2>::from_data(TensorData::new(v, [len, head_dim]), (device, dtype))
        };
        Self {
            cos: make(cos),
            sin: make(sin),
        }
    }

    /// Rows for the given positions, shaped to broadcast over heads.
    ///
    /// # Shapes
    /// - `positions`: `[batch * seq]`, every value below the table's length
    /// - returns `(cos, sin)`, each `[batch, 1, seq, head_dim]`
    pub(crate) fn gather(
        &self,
        positions: Tensor<B, 1, Int>,
        batch: usize,
        seq: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [_, head_dim] = self.cos.dims();
        let pick = |table: &Tensor<B, 2>| {
            table
                .clone()
                .select(0, positions.clone())
                .reshape([batch, 1, seq, head_dim])
        };
        (pick(&self.cos), pick(&self.sin))
    }
}

/// `x * cos + rotate_half(x) * sin`, where `rotate_half([a, b]) = [-b, a]` on the last axis.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - `cos`, `sin`: `[batch, 1, seq, head_dim]`
pub(crate) fn apply_rope<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let first = x.clone().slice([0..b, 0..h, 0..t, 0..half]);
    let second = x.clone().slice([0..b, 0..h, 0..t, half..d]);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x * cos.clone() + rotated * sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::{Flex, FlexDevice};

    /// transformers' `_compute_llama3_parameters` formula (as in the fixture's
    /// `scripts/hf_numpy_ref.py`) evaluated in Python float64 for head_dim 16, theta 500000,
    /// factor 32, low 1, high 4, original 8192: all three bands (kept, blended, divided) occur.
    const HF_LLAMA3_INV_FREQ: [f64; 8] = [
        1.0,
        0.19392274474868576,
        0.03760603093086393,
        0.0072926647372171085,
        0.00042955679655936815,
        8.570255489881478e-06,
        1.661967467795309e-06,
        3.2229329303788936e-07,
    ];

    #[test]
    fn default_frequencies() {
        let rope = RopeConfig {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        };
        let f = rope.inverse_frequencies(8);
        let expected = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in f.iter().zip(expected) {
            assert!((a - b).abs() < 1e-15, "{a} vs {b}");
        }
    }

    #[test]
    fn linear_scaling_divides() {
        let rope = RopeConfig {
            theta: 10_000.0,
            scaling: RopeScaling::Linear { factor: 4.0 },
        };
        assert_eq!(rope.inverse_frequencies(4), vec![0.25, 0.0025]);
    }

    #[test]
    fn llama3_scaling_matches_transformers() {
        let rope = RopeConfig {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        };
        // Relative tolerance 1e-12: both sides are float64 evaluations of the same formula.
        for (a, b) in rope.inverse_frequencies(16).iter().zip(HF_LLAMA3_INV_FREQ) {
            assert!(((a - b) / b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn rope_rotates_pairs() {
        let device = FlexDevice;
        let rope = RopeConfig {
            theta: 10_000.0,
            scaling: RopeScaling::None,
        };
        let table = RopeTable::<Flex>::new(&rope, 4, 3, &device, DType::F32);
        let positions =
            Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![2i32], [1]), &device);
        let (cos, sin) = table.gather(positions, 1, 1);
        let x = Tensor::<Flex, 4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 1, 4]),
            &device,
        );
        let out: Vec<f32> = apply_rope(x, &cos, &sin).into_data().to_vec().unwrap();
        // Pair (x0, x2) rotates by angle 2 * 1, pair (x1, x3) by 2 * 0.01.
        let (a0, a1) = (2.0f64, 0.02f64);
        let expected = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        // f32 arithmetic on O(1) values: 1e-6 absolute.
        for (o, e) in out.iter().zip(expected) {
            assert!((*o as f64 - e).abs() < 1e-6, "{o} vs {e}");
        }
    }
}
