//! CPU kernels for LLM inference in f32: the linear layers (`y = x · wᵀ` with `w` stored the
//! way PyTorch and Hugging Face store a `Linear` weight, `[out, in]`, row-major), and the rest
//! of a decoder layer fused so each runs in one pass over host memory: attention over a KV
//! cache (`attention`), RMSNorm (`norm`), rotary embeddings (`rotary`) and the SwiGLU gate
//! (`activation`). The non-linear kernels are plain Rust compiled per instruction set
//! (`simd`).
//!
//! Decoding is bound by reading the weights, so small batches (module `gemv`) stream every
//! weight row from memory once, apply it to all input rows from registers, and split the output
//! rows across rayon's current pool. The streaming kernel's body is written once
//! (`streaming`) over a small vector abstraction (`vector::Simd`) and compiled per instruction
//! set in `avx2` and `avx512` (`portable` is plain Rust for any target); the operand types they
//! share with `gemv` live in `layout`. Prefill is bound by arithmetic, so larger batches go to
//! a packed, register-tiled AVX-512 GEMM (module `packed`) or, without AVX-512, to the `gemm`
//! crate (module `large`). [`choose`] picks the path from the batch size and the CPU. What was
//! measured to make these choices is in `docs/perf/`.
//!
//! All matrices are host `f32` slices in row-major order, handed over as checked views
//! ([`Matrix`], [`MatrixMut`]): a slice whose length disagrees with its shape, or operands that
//! disagree with each other, are a [`ShapeError`] the caller sees, never a silent no-op.

mod activation;
mod attention;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod buffers;
mod dispatch;
mod formats;
mod gemv;
pub mod huge_pages;
mod large;
mod layout;
mod matrix;
mod narrow;
mod narrow_linear;
mod norm;
#[cfg(target_arch = "x86_64")]
mod packed;
mod portable;
mod q8;
mod rotary;
mod simd;
#[cfg(target_arch = "x86_64")]
mod streaming;
mod vector;
mod widen;

pub use activation::{gelu_tanh_mul, silu_mul};
pub use attention::{AttentionShape, CacheSlots, KEY_TAIL_BLOCK, Scores, attention};
pub use dispatch::{Isa, Path, choose};
pub use formats::{
    CodedMatrix, E4M3_MAX, E4M3_WIDEN_SCALE, FormatError, GROUP, NF4_CODES, WeightFormat,
    e4m3_from_f32, e4m3_to_f32, nearest_nf4,
};
pub use matrix::{Dimension, Matrix, MatrixMut, ShapeError};
pub use narrow_linear::{activation_format, linear_coded, linear_coded_on, linear_coded_splits};
pub use norm::{rms_norm, rms_norm_in_place};
pub use rotary::rotate_half;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`, choosing the fastest path for the shape and this CPU.
///
/// `w` is a PyTorch/HF `Linear` weight (`[out, in]` = `[n, k]`, row-major). The operands must
/// agree (`x`: `m × k`, `w`: `n × k`, `y`: `m × n`); otherwise nothing is computed and the
/// error names the dimension.
pub fn linear_f32(x: Matrix<'_>, w: Matrix<'_>, mut y: MatrixMut<'_>) -> Result<(), ShapeError> {
    let (m, k, n) = product_shape(&x, &w, &y)?;
    run(
        choose(Isa::detect(), m),
        x.data(),
        m,
        k,
        w.data(),
        n,
        y.data_mut(),
    );
    Ok(())
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

/// [`linear_f32`] into a freshly allocated `[m, n]` output.
pub fn linear_f32_into_new(x: Matrix<'_>, w: Matrix<'_>) -> Result<Vec<f32>, ShapeError> {
    matrix::agree(Dimension::Depth, x.cols(), w.cols())?;
    let (m, n) = (x.rows(), w.rows());
    let len = m
        .checked_mul(n)
        .ok_or(ShapeError::Overflow { rows: m, cols: n })?;
    let mut y = vec![0.0; len];
    linear_f32(x, w, MatrixMut::new(&mut y, m, n)?)?;
    Ok(y)
}

/// [`linear_f32`] forced onto `path`, for tests and benchmarks: `Ok(false)`, leaving `y`
/// untouched, when this CPU or build cannot run it.
#[doc(hidden)]
pub fn linear_f32_with(
    path: Path,
    x: Matrix<'_>,
    w: Matrix<'_>,
    mut y: MatrixMut<'_>,
) -> Result<bool, ShapeError> {
    let (m, k, n) = product_shape(&x, &w, &y)?;
    if !path.is_supported() {
        return Ok(false);
    }
    run(path, x.data(), m, k, w.data(), n, y.data_mut());
    Ok(true)
}

/// `(m, k, n)` of `y = x · wᵀ`, when the three agree.
fn product_shape(
    x: &Matrix<'_>,
    w: &Matrix<'_>,
    y: &MatrixMut<'_>,
) -> Result<(usize, usize, usize), ShapeError> {
    matrix::agree(Dimension::Depth, x.cols(), w.cols())?;
    matrix::agree(Dimension::OutputRows, x.rows(), y.rows())?;
    matrix::agree(Dimension::OutputCols, w.rows(), y.cols())?;
    Ok((x.rows(), x.cols(), w.rows()))
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

    fn mat(data: &[f32], rows: usize, cols: usize) -> Matrix<'_> {
        Matrix::new(data, rows, cols).expect("the test's shapes agree")
    }

    fn out(data: &mut [f32], rows: usize, cols: usize) -> MatrixMut<'_> {
        MatrixMut::new(data, rows, cols).expect("the test's shapes agree")
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
        let mut tested = Vec::new();
        for path in Path::ALL {
            if !path.is_supported() {
                // `tests/kernels.rs` holds skips to what CPUID and `LLMEFF_REQUIRE_ISAS` say.
                eprintln!("skipping {path:?}: not supported by this CPU or build");
                continue;
            }
            tested.push(path);
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
                let ran = linear_f32_with(path, mat(&x, m, k), mat(&w, n, k), out(&mut y, m, n));
                assert_eq!(ran, Ok(true));
                let r = reference(&x, m, k, &w, n);
                for (a, b) in y.iter().zip(&r) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{path:?} {m}×{k}×{n}: {a} vs {b}"
                    );
                }
            }
        }
        // A skip may pass over paths this machine never takes, never one it does.
        for m in [1, 8, 70] {
            let taken = choose(Isa::detect(), m);
            assert!(tested.contains(&taken), "{taken:?} (m = {m}) was skipped");
        }
    }

    #[test]
    fn dispatcher_matches_the_reference() {
        for m in [1, 20, 70] {
            let (k, n) = (37, 45);
            let x = values(m * k, 3);
            let w = values(n * k, 4);
            let y = linear_f32_into_new(mat(&x, m, k), mat(&w, n, k)).expect("shapes agree");
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
        assert_eq!(
            linear_f32(mat(&[], 2, 0), mat(&[], 3, 0), out(&mut y, 2, 3)),
            Ok(())
        );
        assert!(y.iter().all(|v| *v == 0.0));
        let none = linear_f32(mat(&[], 0, 4), mat(&[0.0; 12], 3, 4), out(&mut [], 0, 3));
        assert_eq!(none, Ok(()));
        let empty = linear_f32_into_new(mat(&[1.0; 4], 1, 4), mat(&[], 0, 4));
        assert_eq!(empty, Ok(Vec::new()));
    }

    /// Runs in every profile: a mismatch used to be a debug assertion and, in release builds, a
    /// silent no-op, so this test was compiled out under `cargo test`.
    #[test]
    fn mismatched_lengths_are_errors_and_leave_y_untouched() {
        assert_eq!(
            Matrix::new(&[1.0; 3], 2, 2).unwrap_err(),
            ShapeError::Length {
                rows: 2,
                cols: 2,
                expected: 4,
                actual: 3
            }
        );
        let mut y = vec![7.0; 4];
        // x (m × k), w (n × k), y (rows × cols): the dimension that disagrees, and how.
        let cases = [
            ((2, 2), (2, 3), (2, 2), Dimension::Depth, 2, 3),
            ((2, 2), (1, 2), (4, 1), Dimension::OutputRows, 2, 4),
            ((1, 2), (3, 2), (1, 4), Dimension::OutputCols, 3, 4),
        ];
        for ((m, k), (n, kw), (rows, cols), dimension, expected, actual) in cases {
            let (x, w) = (vec![1.0; m * k], vec![1.0; n * kw]);
            let want = ShapeError::Mismatch {
                dimension,
                expected,
                actual,
            };
            let got = linear_f32(mat(&x, m, k), mat(&w, n, kw), out(&mut y, rows, cols));
            assert_eq!(got, Err(want));
            for path in Path::ALL {
                let forced =
                    linear_f32_with(path, mat(&x, m, k), mat(&w, n, kw), out(&mut y, rows, cols));
                assert_eq!(forced, Err(want), "{path:?}");
            }
        }
        assert!(linear_f32_into_new(mat(&[1.0; 4], 2, 2), mat(&[1.0; 3], 1, 3)).is_err());
        assert_eq!(y, vec![7.0; 4]);
    }
}
