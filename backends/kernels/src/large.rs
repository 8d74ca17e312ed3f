//! Large-batch linear layers (prefill) without AVX-512: arithmetic-bound, so the `gemm` crate's
//! packed, cache-blocked micro-kernels beat streaming the weights once per block of input rows.

use gemm::{Parallelism, gemm};

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` through `gemm::gemm` on rayon's current pool. Lengths must
/// agree (`x`: `m·k`, `w`: `n·k`, `y`: `m·n`); a mismatch computes nothing.
pub fn linear_gemm(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    if Some(x.len()) != m.checked_mul(k)
        || Some(w.len()) != n.checked_mul(k)
        || Some(y.len()) != m.checked_mul(n)
        || m == 0
        || n == 0
    {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let (k_i, n_i) = (stride(k), stride(n));
    // SAFETY: the lengths are checked above, so every element gemm visits lies inside its
    // slice: dst (i, j) at i·n + j < m·n; lhs x (i, p) at i·k + p < m·k; rhs wᵀ (p, j), stored
    // as w[j, p], at p + j·k < n·k. `y` is borrowed mutably and the inputs shared, so nothing
    // else aliases dst. read_dst = false makes gemm ignore y's old contents (and alpha).
    unsafe {
        gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n_i,
            false,
            x.as_ptr(),
            1,
            k_i,
            w.as_ptr(),
            k_i,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    };
}

/// A dimension as a gemm stride; slices never exceed `isize::MAX` bytes, so neither can a
/// dimension of one.
fn stride(d: usize) -> isize {
    isize::try_from(d).unwrap_or(isize::MAX)
}
