//! Portable small-batch kernel: plain Rust for any target, shaped so the compiler vectorises it
//! with whatever SIMD the build target guarantees (SSE2 on x86-64, NEON on aarch64).

use super::layout::{Panels, XLayout};
use super::simd::dot;

/// `out[i][col0 + r] = x[i] · w[r]` for every input row and weight row of the panels.
///
/// Invalid panels, or x in any layout but [`XLayout::Rows`], compute nothing; an output slice
/// shorter than `col0 + p.rows` panics on its index.
pub(super) fn block(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    debug_assert_eq!(p.layout, XLayout::Rows);
    if !p.is_valid() || p.layout != XLayout::Rows || out.len() < p.mb {
        return;
    }
    for (r, wr) in p.w.chunks_exact(p.k).take(p.rows).enumerate() {
        // The weight row slice (a few KiB) stays in L1 while every input row uses it, so
        // memory sees it once.
        for (o, xr) in out.iter_mut().zip(p.x.chunks_exact(p.k).take(p.mb)) {
            o[col0 + r] = dot(xr, wr);
        }
    }
}
