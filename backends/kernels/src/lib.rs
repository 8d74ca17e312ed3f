//! CPU kernels for LLM inference in f32: the linear layers (`y = x · wᵀ` with `w` stored the
//! way PyTorch and Hugging Face store a `Linear` weight, `[out, in]`, row-major), and the rest
//! of a decoder layer fused so each runs in one pass over host memory: attention over a KV
//! cache (`attention`), RMSNorm (`norm`), rotary embeddings (`rotary`) and the SwiGLU gate
//! (`activation`). The non-linear kernels are plain Rust compiled per instruction set
//! (`simd`).
//!
//! Decoding is bound by reading the weights, so small batches (module `gemv`) stream every
//! weight row from memory once, apply it to all input rows from registers, and split the output
//! rows across rayon's current pool. Prefill is bound by arithmetic, so larger batches go to a
//! packed, register-tiled AVX-512 GEMM (module `packed`) or, without AVX-512, to the `gemm`
//! crate (module `large`). [`choose`] picks the path from the batch size and the CPU.
//!
//! All matrices are host `f32` slices in row-major order. Their lengths are an invariant the
//! caller keeps (`x.len() == m·k`, `w.len() == n·k`, `y.len() == m·n`); a violation is a bug,
//! caught by a debug assertion and, in release builds, answered by leaving `y` untouched rather
//! than by reading or writing out of bounds.

mod activation;
mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod buffers;
mod dispatch;
mod gemv;
pub mod huge_pages;
mod large;
mod norm;
#[cfg(target_arch = "x86_64")]
mod packed;
mod portable;
mod rotary;
mod simd;

pub use activation::silu_mul;
pub use attention::{AttentionShape, KEY_TAIL_BLOCK, attention};
pub use dispatch::{Isa, Path, choose};
pub use norm::rms_norm;
pub use rotary::rotate_half;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`, choosing the fastest path for the shape and this CPU.
///
/// `w` is a PyTorch/HF `Linear` weight (`[out, in]` = `[n, k]`, row-major). Lengths must be
/// `x.len() == m·k`, `w.len() == n·k` and `y.len() == m·n`; otherwise `y` is left as it was (and
/// debug builds panic).
pub fn linear_f32(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    if !shapes_agree(x, m, k, w, n, y) {
        return;
    }
    run(choose(Isa::detect(), m), x, m, k, w, n, y);
}

/// Runs `path`, falling back to the `gemm` crate where this build or CPU lacks it.
fn run(path: Path, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    match path {
        Path::Small(isa) => gemv::linear_small(isa, x, m, k, w, n, y),
        #[cfg(target_arch = "x86_64")]
        Path::Packed if packed::linear_packed(x, m, k, w, n, y) => {}
        Path::Packed | Path::Gemm => large::linear_gemm(x, m, k, w, n, y),
    }
}

/// Whether [`linear_f32`] hands an `m × k × n` product to rayon's current pool as more than one
/// task. A caller outside the pool pays a wake-up and a blocking hand-over for every such
/// product; one that makes many of them in a row (a forward pass) runs them from a pool thread
/// instead when this is true.
pub fn linear_splits(m: usize, k: usize, n: usize) -> bool {
    let threads = rayon::current_num_threads();
    if threads < 2 || m == 0 || k == 0 || n == 0 {
        return false;
    }
    match choose(Isa::detect(), m) {
        Path::Small(_) => n > dispatch::rows_per_task(m, k, n, threads),
        // Both split the output columns (and the packed path its x panels) whenever there is
        // more than a tile's worth.
        Path::Packed | Path::Gemm => true,
    }
}

/// [`linear_f32`] into a freshly allocated `[m, n]` output (empty on a length mismatch).
pub fn linear_f32_into_new(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let Some(len) = m.checked_mul(n) else {
        return Vec::new();
    };
    if !shapes_agree_inputs(x, m, k, w, n) {
        return Vec::new();
    }
    let mut y = vec![0.0; len];
    linear_f32(x, m, k, w, n, &mut y);
    y
}

/// [`linear_f32`] forced onto `path`, for tests and benchmarks; returns `false` (and leaves `y`
/// untouched) when this CPU or build cannot run it or the lengths disagree.
#[doc(hidden)]
pub fn linear_f32_with(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
) -> bool {
    if !path.is_supported() || !shapes_agree(x, m, k, w, n, y) {
        return false;
    }
    run(path, x, m, k, w, n, y);
    true
}

fn shapes_agree(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &[f32]) -> bool {
    let ok = shapes_agree_inputs(x, m, k, w, n) && m.checked_mul(n) == Some(y.len());
    debug_assert!(ok, "linear_f32: y.len() = {} is not m·n = {m}·{n}", y.len());
    ok
}

fn shapes_agree_inputs(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> bool {
    let ok = m.checked_mul(k) == Some(x.len()) && n.checked_mul(k) == Some(w.len());
    debug_assert!(
        ok,
        "linear_f32: x.len() = {} is not m·k = {m}·{k} or w.len() = {} is not n·k = {n}·{k}",
        x.len(),
        w.len()
    );
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_products_worth_several_tasks_split() {
        let pool = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a small test pool")
        };
        pool(2).install(|| {
            // SmolLM-135M's decode LM head and TinyLlama's gate/up: several tasks each.
            assert!(linear_splits(1, 576, 49152));
            assert!(linear_splits(8, 2048, 11264));
            // tiny-stories' decode products: one task, on the caller.
            assert!(!linear_splits(1, 64, 344));
            assert!(!linear_splits(1, 64, 512));
            assert!(!linear_splits(0, 576, 49152));
            // A prompt goes to a GEMM that splits its columns (or, without AVX-512, to gemm).
            assert!(linear_splits(256, 64, 344));
        });
        pool(1).install(|| assert!(!linear_splits(256, 2048, 11264)));
    }

    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                    .sum();
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    /// Deterministic values in [-1, 1) for the kernels' tests.
    pub(super) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn every_supported_path_matches_the_reference() {
        for path in Path::ALL {
            if !path.is_supported() {
                eprintln!("skipping {path:?}: not supported by this CPU or build");
                continue;
            }
            for (m, k, n) in [
                (1, 17, 5),
                // One row past several 64-column steps, a 16-column step and a ragged tail.
                (1, 150, 9),
                (1, 64, 3),
                // One row too long to read one at a time on AVX2.
                (1, 2100, 5),
                (3, 33, 9),
                (8, 40, 130),
                (11, 16, 70),
                (13, 300, 33),
                // Several rows whose x no longer fits L1, ragged k, rows past the last group.
                (8, 1000, 40),
                (5, 1300, 29),
            ] {
                let x = values(m * k, 1);
                let w = values(n * k, 2);
                let mut y = vec![f32::NAN; m * n];
                assert!(linear_f32_with(path, &x, m, k, &w, n, &mut y));
                let r = reference(&x, m, k, &w, n);
                for (a, b) in y.iter().zip(&r) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{path:?} {m}×{k}×{n}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn dispatcher_matches_the_reference() {
        for m in [1, 20, 70] {
            let (k, n) = (37, 45);
            let x = values(m * k, 3);
            let w = values(n * k, 4);
            let y = linear_f32_into_new(&x, m, k, &w, n);
            let r = reference(&x, m, k, &w, n);
            for (a, b) in y.iter().zip(&r) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "m = {m}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn empty_and_zero_depth_shapes_are_handled() {
        let mut y = vec![f32::NAN; 6];
        linear_f32(&[], 2, 0, &[], 3, &mut y);
        assert!(y.iter().all(|v| *v == 0.0));
        linear_f32(&[], 0, 4, &[0.0; 12], 3, &mut []);
        assert!(linear_f32_into_new(&[1.0; 4], 1, 4, &[], 0).is_empty());
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn mismatched_lengths_leave_y_untouched() {
        let mut y = vec![7.0; 4];
        linear_f32(&[1.0; 3], 2, 2, &[1.0; 4], 2, &mut y);
        assert_eq!(y, vec![7.0; 4]);
    }
}
