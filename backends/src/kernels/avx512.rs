//! AVX-512F small-batch kernel: 16 lanes, 32 vector registers.
//!
//! Each weight row is loaded once per 16 columns and multiplied into all `M` input rows, with
//! `M × R` accumulators held in registers (`R` weight rows at a time), so the weights stream
//! from memory exactly once whatever `M` is.

use std::arch::x86_64::{
    _MM_HINT_T0, _mm_prefetch, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps,
    _mm512_reduce_add_ps, _mm512_setzero_ps,
};

use super::gemv::Panels;

const LANES: usize = 16;

// Software prefetch only for M > 1. At M = 1 (8 weight rows streaming) it was measured cold
// with 2–16 rows in flight and distances of 128–1024 floats (T0, T1, NTA hints) and never beat
// the hardware prefetcher by more than noise. At M > 1, fetching the next group's rows one
// group ahead measured (benches/kernels.rs, cold weights, 2 threads, alternated runs)
// 1.35–1.45× faster at M = 4–8 on k×n = 576×3072, 1.1–1.3× on 2048×2560, ~5 % on 2048×11264.
// Not because 3–4 rows are too few streams: M = 1 over groups of 3 rows, without prefetch,
// streamed as fast as over groups of 8 (22–24 GB/s best on 2048×{2560, 11264} and 5632×2048).
//
// At M = 8 the weights stream at 0.80–0.85× the M = 1 rate (a standalone copy of both loops,
// 2 threads, cold weights, 15 calls alternated: 17.6–18.9 against 22.2–23.9 GB/s best on
// those shapes, an Emerald Rapids VM). Tried against it, none better: all 8 x rows pointing at
// one row, so x never leaves L1 (+6–12 %, an upper bound on any x blocking); k split in blocks
// of 512 with the partial sums kept as vectors (slower); two M = 4 passes over 6 rows (slower);
// R = 2 (slower); x packed depth-major (level); prefetching two groups ahead or into L2 only
// (level). Batch-8 decode is held at that rate (29–35 tokens/s on TinyLlama-1.1B, where
// 8 × the batch-1 rate would be 41–53).

/// `out[i][col0 + r] = x[i] · w[r]` for every input row (`p.mb` ≤ 8) and weight row of the
/// panels. Returns
/// `false`, computing nothing, when the CPU lacks AVX-512F.
///
/// Invalid panels (see [`Panels::is_valid`]) or too few outputs compute nothing; an output
/// slice shorter than `col0 + p.rows` panics on its index. Nothing is read out of bounds.
pub(super) fn block(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) -> bool {
    if !is_x86_feature_detected!("avx512f") {
        return false;
    }
    // SAFETY: the CPU supports AVX-512F, checked just above.
    unsafe { block_avx512(p, out, col0) };
    true
}

#[target_feature(enable = "avx512f")]
fn block_avx512(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    if !p.is_valid() || out.len() < p.mb {
        return;
    }
    // R as large as the register file allows: M·R accumulators + R weights + 1 input ≤ 32. At
    // M = 1 more rows mean more concurrent memory streams, which is what feeds a core.
    match p.mb {
        1 => rows::<1, 8>(p, out, col0),
        2 => rows::<2, 4>(p, out, col0),
        3 => rows::<3, 4>(p, out, col0),
        4 => rows::<4, 4>(p, out, col0),
        5 => rows::<5, 4>(p, out, col0),
        6 => rows::<6, 4>(p, out, col0),
        7 => rows::<7, 3>(p, out, col0),
        8 => rows::<8, 3>(p, out, col0),
        _ => debug_assert!(false, "block of {} input rows", p.mb),
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
fn rows<const M: usize, const R: usize>(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    let mut r = 0;
    while r + R <= p.rows {
        group::<M, R>(p.x, &p.w[r * p.k..], p.k, out, col0 + r);
        r += R;
    }
    while r < p.rows {
        group::<M, 1>(p.x, &p.w[r * p.k..], p.k, out, col0 + r);
        r += 1;
    }
}

/// `out[i][col + r] = x[i] · w[r]` for `i < M`, `r < R`; rows are `k` floats long.
#[target_feature(enable = "avx512f")]
#[inline]
fn group<const M: usize, const R: usize>(
    x: &[f32],
    w: &[f32],
    k: usize,
    out: &mut [&mut [f32]],
    col: usize,
) {
    // The raw loads below rely on these bounds; checking once per group costs nothing.
    if x.len() < M * k || w.len() < R * k {
        return;
    }
    let xp = x.as_ptr();
    let wp = w.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); R]; M];
    let mut wv = [_mm512_setzero_ps(); R];
    let mut p = 0;
    while p + LANES <= k {
        if M > 1 {
            for r in 0..R {
                // The next group's rows, one group ahead (see the note on prefetching above).
                // A prefetch never faults, and `wrapping_add` keeps the address arithmetic
                // defined past the slice's end.
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add((R + r) * k + p).cast::<i8>());
            }
        }
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: p + 16 ≤ k, so r·k + p + 16 ≤ R·k ≤ w.len().
            *v = unsafe { _mm512_loadu_ps(wp.add(r * k + p)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: p + 16 ≤ k, so i·k + p + 16 ≤ M·k ≤ x.len().
            let xv = unsafe { _mm512_loadu_ps(xp.add(i * k + p)) };
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(*v, xv, *a);
            }
        }
        p += LANES;
    }
    if p < k {
        // 1 ≤ k − p < 16, so the shift neither overflows nor yields an empty mask.
        let mask = (1u16 << (k - p)) - 1;
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: lanes outside `mask` are neither read nor able to fault; the enabled
            // lanes r·k + p .. r·k + k lie inside w (r < R, R·k ≤ w.len()).
            *v = unsafe { _mm512_maskz_loadu_ps(mask, wp.add(r * k + p)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: as above, the enabled lanes i·k + p .. i·k + k lie inside x.
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, xp.add(i * k + p)) };
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(*v, xv, *a);
            }
        }
    }
    for (o, acc_i) in out.iter_mut().zip(&acc) {
        for (r, a) in acc_i.iter().enumerate() {
            o[col + r] = _mm512_reduce_add_ps(*a);
        }
    }
}
