//! Seeded random weights: normal values generated straight into a run-dtype buffer, in
//! parallel, reproducibly for a given seed whatever the thread count.
//!
//! Each tensor is cut into fixed-size chunks and every chunk draws from its own ChaCha8 stream
//! (`seed`, stream = tensor index and chunk index), so the values depend only on the seed, the
//! tensor's position in the model and its length.

use std::num::NonZeroUsize;
use std::thread;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::host::RunFloat;

/// Elements per RNG stream; large enough to amortise thread hand-off, small enough to spread a
/// single big tensor over every core.
const CHUNK: usize = 1 << 18;

/// `len` samples of N(0, std²) as `E`, for the tensor at `tensor_index` in load order.
pub(crate) fn normal<E: RunFloat>(seed: u64, tensor_index: u32, len: usize, std: f64) -> Vec<E> {
    // A single allocation filled in place keeps peak memory at the tensor's own size.
    let mut out = vec![E::default(); len];
    let threads = thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1);
    let std = std as f32;
    let fill = |chunk_index: usize, chunk: &mut [E]| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream((u64::from(tensor_index) << 32) | chunk_index as u64);
        for v in chunk.iter_mut() {
            let z: f32 = StandardNormal.sample(&mut rng);
            *v = E::from_f32(z * std);
        }
    };
    let chunks: Vec<(usize, &mut [E])> = out.chunks_mut(CHUNK).enumerate().collect();
    if threads <= 1 || chunks.len() <= 1 {
        for (i, c) in chunks {
            fill(i, c);
        }
        return out;
    }
    let mut lanes: Vec<Vec<(usize, &mut [E])>> = (0..threads).map(|_| Vec::new()).collect();
    for (n, item) in chunks.into_iter().enumerate() {
        lanes[n % threads].push(item);
    }
    thread::scope(|scope| {
        for lane in lanes {
            scope.spawn(|| {
                for (i, c) in lane {
                    fill(i, c);
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_seed_dependent() {
        let a: Vec<f32> = normal(7, 3, CHUNK * 2 + 5, 0.02);
        let b: Vec<f32> = normal(7, 3, CHUNK * 2 + 5, 0.02);
        let c: Vec<f32> = normal(8, 3, CHUNK * 2 + 5, 0.02);
        let d: Vec<f32> = normal(7, 4, CHUNK * 2 + 5, 0.02);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn moments_match_the_distribution() {
        let n = 1 << 20;
        let v: Vec<f32> = normal(1, 0, n, 0.5);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors for n = 2^20: mean 0.5/1024 ≈ 5e-4, variance ≈ 3.5e-4; allow ~6σ.
        assert!(mean.abs() < 3e-3, "mean {mean}");
        assert!((var - 0.25).abs() < 2e-3, "variance {var}");
    }

    #[test]
    fn half_types_are_generated_directly() {
        let v: Vec<burn::tensor::bf16> = normal(1, 0, 1000, 1.0);
        assert!(v.iter().any(|x| x.to_f32() != 0.0));
    }
}
