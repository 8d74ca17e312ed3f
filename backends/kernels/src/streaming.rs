//! The small-batch (decode) kernel, written once over [`Simd`] and compiled per instruction set
//! by the `#[target_feature]` entry points in `avx2.rs` and `avx512.rs`.
//!
//! For `M` > 1 input rows, each weight row is loaded once per vector of columns and multiplied
//! into all of them, with `M × R` accumulators held in registers (`R` weight rows at a time,
//! [`group_rows`]); one input row with rows up to [`Streaming::ONE_STREAM_MAX_K`] floats takes
//! one weight row at a time ([`one_by_one`]). Either way the weights stream from memory exactly
//! once whatever `M` is.
//!
//! Every function here is `#[inline(always)]`: the whole body lands in the entry point, which
//! enables the instruction set, so the intrinsics inline and the accumulators stay in registers
//! (the hand-written kernels had this shape for a reason: a standalone `unsafe fn` lab copy
//! spilled 9 of its 24 accumulators at M = 8 on AVX-512; see `docs/perf/2026-12-kernels.md`).

use super::layout::{CHUNK, Panels, XLayout};
use super::vector::Simd;

/// An instruction set's choices for the streaming kernel, beyond its vector operations. Each is
/// a measured decision; `avx2.rs` and `avx512.rs` say why, and `docs/perf/` holds the
/// measurements.
pub(crate) trait Streaming: Simd {
    /// Longest rows a single input row reads one whole weight row at a time; longer ones go
    /// through groups of weight rows side by side.
    const ONE_STREAM_MAX_K: usize;
    /// How x must lie for blocks of more than one input row (one row lies the same either way).
    const X_LAYOUT: XLayout;
    /// Software prefetch in groups (`M` > 1): `None`, or `Some(ahead)`: the next group's weight
    /// rows into L2 one group ahead, and this group's rows `ahead` floats ahead into L1.
    const PREFETCH: Option<usize>;

    /// `x · w` over one weight row: [`dot`] compiled for this instruction set in a function of
    /// its own, as the hand-written kernels had it. Inlined into the kernel's large entry point
    /// it measured slower at M = 1 (`docs/perf/2026-12-kernels.md`, 2026-12-06).
    fn row_dot(self, x: &[f32], w: &[f32]) -> f32;
}

/// Weight rows per group for `m` input rows on `registers` vector registers: as many as leave
/// room for the `m·R` accumulators, `R` weight vectors, one input vector and one spare, from 1
/// to 4 (each x vector loaded then serves `R` rows). It reproduces the blocks chosen by hand
/// for AVX2 and AVX-512 (see the test).
pub(crate) const fn group_rows(registers: usize, m: usize) -> usize {
    let fit = registers.saturating_sub(2) / (m + 1);
    if fit < 1 {
        1
    } else if fit > 4 {
        4
    } else {
        fit
    }
}

/// `out[i][col0 + r] = x[i] · w[r]` for every input row (`p.mb` ≤ 8) and weight row of the
/// panels.
///
/// Invalid panels (see [`Panels::is_valid`]), x of more than one row in another layout than
/// [`Streaming::X_LAYOUT`], or too few outputs compute nothing; an output slice shorter than
/// `col0 + p.rows` panics on its index. Nothing is read out of bounds.
#[inline(always)]
pub(crate) fn block<S: Streaming>(s: S, p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    let layout_ok = p.mb == 1 || p.layout == S::X_LAYOUT;
    debug_assert!(layout_ok, "{} input rows in {:?}", p.mb, p.layout);
    if !p.is_valid() || !layout_ok || out.len() < p.mb {
        return;
    }
    match p.mb {
        1 if p.k <= S::ONE_STREAM_MAX_K => one_by_one(s, p, out, col0),
        1 => rows::<S, 1>(s, p, out, col0),
        2 => rows::<S, 2>(s, p, out, col0),
        3 => rows::<S, 3>(s, p, out, col0),
        4 => rows::<S, 4>(s, p, out, col0),
        5 => rows::<S, 5>(s, p, out, col0),
        6 => rows::<S, 6>(s, p, out, col0),
        7 => rows::<S, 7>(s, p, out, col0),
        8 => rows::<S, 8>(s, p, out, col0),
        _ => debug_assert!(false, "block of {} input rows", p.mb),
    }
}

/// One input row: each weight row is read whole before the next. A task's rows are
/// contiguous, so the task reads one sequential stream, the pattern hardware prefetchers follow
/// furthest. x (one row) stays in L1.
#[inline(always)]
fn one_by_one<S: Streaming>(s: S, p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    let (Some(out), Some(x)) = (out.first_mut(), p.x.get(..p.k)) else {
        return;
    };
    for (r, w) in p.w.chunks_exact(p.k).take(p.rows).enumerate() {
        out[col0 + r] = s.row_dot(x, w);
    }
}

/// `x · w` over `w.len()` columns (`x` at least as long), in 4 independent accumulators so the
/// FMA latency never holds up the next load. Not `simd::dot` (one chain of unfused
/// multiply-adds), which decodes measurably slower (`docs/perf/2026-12-kernels.md`).
#[inline(always)]
pub(crate) fn dot<S: Simd>(s: S, x: &[f32], w: &[f32]) -> f32 {
    const U: usize = 4;
    let k = w.len();
    if x.len() < k {
        return 0.0;
    }
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut acc = [s.zero(); U];
    let mut p = 0;
    while p + U * S::LANES <= k {
        for (u, a) in acc.iter_mut().enumerate() {
            let at = p + u * S::LANES;
            // SAFETY: at + LANES ≤ p + U·LANES ≤ k ≤ both lengths.
            let (wv, xv) = unsafe { (s.load(wp.add(at)), s.load(xp.add(at))) };
            *a = s.fma(wv, xv, *a);
        }
        p += U * S::LANES;
    }
    while p + S::LANES <= k {
        // SAFETY: p + LANES ≤ k ≤ both lengths.
        let (wv, xv) = unsafe { (s.load(wp.add(p)), s.load(xp.add(p))) };
        acc[0] = s.fma(wv, xv, acc[0]);
        p += S::LANES;
    }
    if p < k {
        // 1 ≤ k − p < LANES.
        let mask = s.tail_mask(k - p);
        // SAFETY: only the enabled lanes p .. k are read, inside both slices; masked-off lanes
        // cannot fault.
        let (wv, xv) = unsafe {
            (
                s.load_masked(wp.add(p), mask),
                s.load_masked(xp.add(p), mask),
            )
        };
        acc[1] = s.fma(wv, xv, acc[1]);
    }
    s.reduce(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3])))
}

/// The panels' weight rows against `M` input rows, in groups of [`group_rows`] for this
/// instruction set's registers. The group size is a constant per instruction set, so only its
/// arm is compiled.
#[inline(always)]
fn rows<S: Streaming, const M: usize>(s: S, p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    match const { group_rows(S::REGISTERS, M) } {
        4 => groups::<S, M, 4>(s, p, out, col0),
        3 => groups::<S, M, 3>(s, p, out, col0),
        2 => groups::<S, M, 2>(s, p, out, col0),
        _ => groups::<S, M, 1>(s, p, out, col0),
    }
}

/// The panels' weight rows in groups of `R`, the rest one at a time.
#[inline(always)]
fn groups<S: Streaming, const M: usize, const R: usize>(
    s: S,
    p: Panels<'_>,
    out: &mut [&mut [f32]],
    col0: usize,
) {
    let mut r = 0;
    while r + R <= p.rows {
        group::<S, M, R>(s, p.x, &p.w[r * p.k..], p.k, out, col0 + r);
        r += R;
    }
    while r < p.rows {
        group::<S, M, 1>(s, p.x, &p.w[r * p.k..], p.k, out, col0 + r);
        r += 1;
    }
}

/// `out[i][col + r] = x[i] · w[r]` for `i < M`, `r < R`; weight rows are `k` floats long, x is
/// in [`Streaming::X_LAYOUT`] (in rows when `M` = 1).
#[inline(always)]
fn group<S: Streaming, const M: usize, const R: usize>(
    s: S,
    x: &[f32],
    w: &[f32],
    k: usize,
    out: &mut [&mut [f32]],
    col: usize,
) {
    let layout = if M == 1 { XLayout::Rows } else { S::X_LAYOUT };
    // Interleaved offsets below step one chunk per vector.
    const { assert!(matches!(S::X_LAYOUT, XLayout::Rows) || S::LANES == CHUNK) };
    // The raw loads below rely on these bounds; checking once per group costs nothing.
    if x.len() < M * layout.row_len(k) || w.len() < R * k {
        return;
    }
    let xp = x.as_ptr();
    let wp = w.as_ptr();
    // Where input row i's columns from p (a multiple of LANES) start.
    let x_at = |i: usize, p: usize| match layout {
        XLayout::Rows => i * k + p,
        XLayout::Interleaved => p * M + i * S::LANES,
    };
    let mut acc = [[s.zero(); R]; M];
    let mut wv = [s.zero(); R];
    let mut p = 0;
    while p + S::LANES <= k {
        if let Some(ahead) = S::PREFETCH {
            for r in 0..R {
                // The next group's rows into L2, one group ahead, and this group's `ahead`
                // floats ahead into L1. A prefetch never faults, and `wrapping_add` keeps the
                // address arithmetic defined past the slice's end.
                prefetch_l2(wp.wrapping_add((R + r) * k + p));
                prefetch_l1(wp.wrapping_add(r * k + p + ahead));
            }
        }
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: p + LANES ≤ k, so r·k + p + LANES ≤ R·k ≤ w.len().
            *v = unsafe { s.load(wp.add(r * k + p)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: p + LANES ≤ k; in rows i·k + p + LANES ≤ M·k, interleaved (p a multiple
            // of LANES = CHUNK) p·M + LANES·i + LANES ≤ M·k16; both ≤ x.len(), checked above.
            let xv = unsafe { s.load(xp.add(x_at(i, p))) };
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = s.fma(*v, xv, *a);
            }
        }
        p += S::LANES;
    }
    if p < k {
        // 1 ≤ k − p < LANES.
        let mask = s.tail_mask(k - p);
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: lanes outside `mask` are neither read nor able to fault; the enabled
            // lanes r·k + p .. r·k + k lie inside w (r < R, R·k ≤ w.len()).
            *v = unsafe { s.load_masked(wp.add(r * k + p), mask) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: as above, the enabled lanes (k − p of them from x_at(i, p)) lie inside x:
            // below M·k in rows, below M·k16 interleaved.
            let xv = unsafe { s.load_masked(xp.add(x_at(i, p)), mask) };
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = s.fma(*v, xv, *a);
            }
        }
    }
    for (o, acc_i) in out.iter_mut().zip(&acc) {
        for (r, a) in acc_i.iter().enumerate() {
            o[col + r] = s.reduce(*a);
        }
    }
}

/// Fetches the line of `at` towards L2 (a hint: it never faults, whatever `at` is).
#[inline(always)]
fn prefetch_l2(at: *const f32) {
    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
    // SAFETY: SSE, which every x86-64 CPU has; a prefetch reads nothing and never faults.
    unsafe { _mm_prefetch::<_MM_HINT_T1>(at.cast::<i8>()) };
}

/// Fetches the line of `at` into L1 (a hint, as [`prefetch_l2`]).
#[inline(always)]
fn prefetch_l1(at: *const f32) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: as for `prefetch_l2`.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
}

/// The `#[target_feature]` entry points of one instruction set, the same for each but for its
/// type and features: `block`, the kernel over [`Panels`] (input rows in the instruction set's
/// [`Streaming::X_LAYOUT`] when more than one), `row_dot`, one row's [`dot`] out of line
/// (see [`Streaming::row_dot`]), and `coded_block`, the kernel over narrow weight formats
/// (`narrow`), generic over the format.
macro_rules! entry_points {
    ($isa:ty, $features:literal) => {
        /// One row's [`streaming::dot`] with the instruction set enabled, out of line.
        #[target_feature(enable = $features)]
        #[inline(never)]
        fn row_dot(isa: $isa, x: &[f32], w: &[f32]) -> f32 {
            $crate::streaming::dot(isa, x, w)
        }

        /// `out[i][col0 + r] = x[i] · w[r]` for every input row (`p.mb` ≤ 8) and weight row
        /// of the panels: [`streaming::block`] with the instruction set enabled.
        #[target_feature(enable = $features)]
        pub(crate) fn block(isa: $isa, p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
            $crate::streaming::block(isa, p, out, col0);
        }

        /// `out[i][col0 + r] = x[i] · w[r]` over weights in format `F`: [`narrow::block`]
        /// with the instruction set enabled, one instantiation per format.
        #[target_feature(enable = $features)]
        pub(crate) fn coded_block<F: $crate::widen::Codes>(
            isa: $isa,
            p: $crate::narrow::CodedPanels<'_>,
            out: &mut [&mut [f32]],
            col0: usize,
        ) {
            $crate::narrow::block::<$isa, F>(isa, p, out, col0);
        }

        /// Rows `r0 ..` of `w` (format `F`) widened to f32 into `out`: [`narrow::widen_rows`]
        /// with the instruction set enabled, one instantiation per format.
        #[target_feature(enable = $features)]
        pub(crate) fn widen_rows<F: $crate::widen::Codes>(
            isa: $isa,
            w: &$crate::formats::CodedMatrix,
            r0: usize,
            out: &mut [f32],
        ) {
            $crate::narrow::widen_rows::<$isa, F>(isa, w, r0, out);
        }
    };
}
pub(crate) use entry_points;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MAX_BLOCK_M;

    #[test]
    fn register_blocks_fit_the_register_files() {
        // The blocks the hand-written kernels used: AVX2 (16 registers) and AVX-512 (32).
        let avx2: Vec<usize> = (1..=MAX_BLOCK_M).map(|m| group_rows(16, m)).collect();
        assert_eq!(avx2, [4, 4, 3, 2, 2, 2, 1, 1]);
        let avx512: Vec<usize> = (2..=MAX_BLOCK_M).map(|m| group_rows(32, m)).collect();
        assert_eq!(avx512, [4, 4, 4, 4, 4, 3, 3]);
        for registers in [16, 32] {
            for m in 1..=MAX_BLOCK_M {
                let r = group_rows(registers, m);
                assert!(r >= 1 && m * r + r + 1 < registers, "{registers}: {m}×{r}");
            }
        }
    }
}
