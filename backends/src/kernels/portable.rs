//! Portable small-batch kernel: plain Rust for any target, shaped so the compiler vectorises it
//! with whatever SIMD the build target guarantees (SSE2 on x86-64, NEON on aarch64).

use super::gemv::Panels;

/// Independent partial sums per dot product: one vector's worth on wide targets, and enough
/// chains to hide the add latency on narrow ones.
const LANES: usize = 16;

/// `out[i][col0 + r] = x[i] · w[r]` for every input row and weight row of the panels.
///
/// Invalid panels compute nothing; an output slice shorter than `col0 + p.rows` panics on its
/// index.
pub(super) fn block(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    if !p.is_valid() || out.len() < p.mb {
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

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}
