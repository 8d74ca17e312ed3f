//! AVX-512F small-batch kernel: 16 lanes, 32 vector registers.
//!
//! For `M` > 1 input rows, each weight row is loaded once per 16 columns and multiplied into
//! all of them, with `M × R` accumulators held in registers (`R` weight rows at a time); one
//! input row takes one weight row at a time. Either way the weights stream from memory
//! exactly once whatever `M` is.

use std::arch::x86_64::{
    _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_maskz_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps,
};

use super::gemv::{Panels, XLayout};

const LANES: usize = 16;

// Software prefetch only for M > 1. At M = 1 (then 8 weight rows streaming side by side, now one
// row after another: see `one_by_one`) it was measured cold
// with 2–16 rows in flight and distances of 128–1024 floats (T0, T1, NTA hints) and never beat
// the hardware prefetcher by more than noise. At M > 1 the FMAs between loads leave the core
// too few misses in flight, so the next group's rows are fetched one group ahead. Into L1 (T0)
// that measured (benches/kernels.rs, cold weights, 2 threads, alternated runs, Sapphire
// Rapids) 1.35–1.45× faster at M = 4–8 on k×n = 576×3072, 1.1–1.3× on 2048×2560, ~5 % on
// 2048×11264. On an AMD Zen 4 VM (32 KiB 8-way L1) the next group's 24 KiB in L1 evicted each
// other and x: there, with x interleaved (see `XLayout`), fetching the next group into L2 (T1)
// and this group's rows 512 bytes ahead into L1 streamed the weights at M = 8 1.2–1.4× faster
// than the T0 scheme (median call, 30 calls alternated, 2 threads, cold weights, 2048×11264,
// 5632×2048, 2048×2560: 21–25 against 15–19 GB/s).
//
// At M = 8 the weights stream at 0.80–0.85× the M = 1 rate on Emerald Rapids (a standalone copy of both loops,
// 2 threads, cold weights, 15 calls alternated: 17.6–18.9 against 22.2–23.9 GB/s best on
// those shapes). Tried against it there, none better: all 8 x rows pointing at
// one row, so x never leaves L1 (+6–12 %, an upper bound on any x blocking); k split in blocks
// of 512 with the partial sums kept as vectors (slower); two M = 4 passes over 6 rows (slower);
// R = 2 (slower); x packed depth-major (level); prefetching two groups ahead or into L2 only
// (level). On the Zen 4 VM, against the scheme above (same alternated runs): the L1 prefetch
// 64 or 256 floats ahead (level), 512 (slower); the next group two groups ahead, or with T2 or
// NTA (level or slower); no next-group prefetch (0.6–0.8×); the task's k split in blocks of
// 256–1024 with the partial sums kept as vectors between blocks, x's block then in L1
// (0.6–0.9×: each row is read in short pieces); the weights stored transposed, 48 outputs per
// vector triple, x broadcast (level, and it would need a second weight layout); threads
// claiming 4–64 groups at a time from a shared counter, so both stream neighbouring rows
// (level); two M = 4 passes over 6 rows, the second reading them from L2 while both prefetch
// the next 6 into L2 (level: 0.95–1.09× on the median call); the next group's lines prefetched
// in address order rather than row by row, one or two groups ahead (level); the group's own rows
// prefetched into L2 512–4096 floats ahead instead of the next group (level, within noise); the
// weights stored 3 rows interleaved per 16 columns so a group reads one sequential stream
// (1.02–1.08× with both prefetches, not worth a second weight layout; 0.45× with none: the
// hardware prefetcher alone does not keep up at M = 8 even on one stream).
//
// What else holds M = 8 back on the Zen 4 VM is x: at k = 2048 a block of 8 input rows is
// 64 KiB, twice the L1, so each group of 3 weight rows pulls all of x through L1 again, 8 of
// the 11 lines a step loads. In-core, everything in L1, a group runs 2.7 G 512-bit FMAs/s per
// core (78 % of the 3.5 G peak; 44 GB/s of weights on 2 cores). A lab copy with x's reads
// wrapped into 16 KiB (wrong sums, an upper bound) streamed cold weights 1.1–1.3× faster per
// shape alone. Reaching for it: the rows tiled 12 at a time and k-blocked by 512 columns, sums
// kept as vectors, the next tile prefetched into L2 in address order, ran 1.05–1.16× per shape
// alone but 0.99–1.05× over a whole TinyLlama-1.1B decode step's products in order (tiled and
// not alternated step by step, 20–60 steps) and 0.94× at M = 4; the weights stored blocked by
// 512 columns, 0.9–1.2× per shape; row pieces without the tile prefetch, 0.6–0.7×; groups
// read alternately forwards and backwards, so the next group starts on the x lines still in
// L1, 1.03–1.19× per shape alone (k = 2048) but 0.98–1.02× over the whole step (3 runs). Per
// shape alone is thus no guide at M = 8: compare over a whole decode step (there, dropping the
// own rows' L1 prefetch measured 0.89×, twice). Splitting the batch between the two cores
// instead of the rows, each running M = 4 (R = 4 or 6) over all the weight rows in the same
// order, so x halves to 32 KiB and what one core fetches reaches the other through the shared
// L3, was level over whole `llmeff bench` TinyLlama batch-8 runs too (tokens/s, alternated
// round by round: R = 4 47.0 and 45.9, R = 6 45.4–47.4, against 45.6–50.5 as it is). A lab
// copy must keep this file's shape (the kernel inlined into a `target_feature` caller): a
// standalone `unsafe fn` copy spilled 9 of its 24 accumulators to the stack, which halved its
// rate and made the lab measure the spills.

/// Floats ahead of the loads at which a group's own weight rows are prefetched into L1 at
/// M > 1: 8 cache lines per row.
const L1_AHEAD: usize = 128;

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
    // Several rows are read interleaved (one row is the same either way).
    let layout_ok = p.mb == 1 || p.layout == XLayout::Interleaved;
    debug_assert!(layout_ok, "{} input rows in {:?}", p.mb, p.layout);
    if !p.is_valid() || !layout_ok || out.len() < p.mb {
        return;
    }
    // For M > 1, R as large as the register file allows: M·R accumulators + R weights + 1
    // input ≤ 32, so each x vector loaded serves R rows.
    match p.mb {
        1 => one_by_one(p, out, col0),
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

/// One input row: each weight row is read whole before the next. A task's rows are
/// contiguous, so the task reads one sequential stream, the pattern hardware prefetchers
/// follow furthest; reading 8 rows side by side (8 streams a row apart, the M > 1 scheme at
/// R = 8) measured slower on an AMD Zen 4 VM, most at short rows: a SmolLM-135M decode step's
/// products (k = 576 and 1536, cold weights, 2 threads, a spin barrier between products, 20
/// steps alternated) 21.3–21.6 against 30.3–30.8 GB/s median, and TinyLlama-1.1B's 23.8–34.2
/// against 26.1–39.1 (`llmeff bench` TinyLlama batch-1 decode came out level). x (one row)
/// stays in L1 either way.
#[target_feature(enable = "avx512f")]
#[inline]
fn one_by_one(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    let (Some(out), Some(x)) = (out.first_mut(), p.x.get(..p.k)) else {
        return;
    };
    for (r, w) in p.w.chunks_exact(p.k).take(p.rows).enumerate() {
        out[col0 + r] = dot(x, w);
    }
}

/// `x · w` over `w.len()` columns (`x` at least as long), in 4 independent accumulators so
/// the FMA latency never holds up the next load. Not `simd::dot` (one chain of unfused
/// multiply-adds): in its place TinyLlama-1.1B batch-1 decode fell from 6.9–7.5 to 5.6–5.8
/// tokens/s (`llmeff bench`, 3 rounds alternated, Zen 4 VM).
#[target_feature(enable = "avx512f")]
#[inline]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    const U: usize = 4;
    let k = w.len();
    if x.len() < k {
        return 0.0;
    }
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm512_setzero_ps(); U];
    let mut p = 0;
    while p + U * LANES <= k {
        for (u, a) in acc.iter_mut().enumerate() {
            let at = p + u * LANES;
            // SAFETY: at + 16 ≤ p + U·16 ≤ k ≤ both lengths.
            let (wv, xv) = unsafe { (_mm512_loadu_ps(wp.add(at)), _mm512_loadu_ps(xp.add(at))) };
            *a = _mm512_fmadd_ps(wv, xv, *a);
        }
        p += U * LANES;
    }
    while p + LANES <= k {
        // SAFETY: p + 16 ≤ k ≤ both lengths.
        let (wv, xv) = unsafe { (_mm512_loadu_ps(wp.add(p)), _mm512_loadu_ps(xp.add(p))) };
        acc[0] = _mm512_fmadd_ps(wv, xv, acc[0]);
        p += LANES;
    }
    if p < k {
        // 1 ≤ k − p < 16, so the shift neither overflows nor yields an empty mask.
        let mask = (1u16 << (k - p)) - 1;
        // SAFETY: only the enabled lanes p .. k are read, inside both slices; masked-off lanes
        // cannot fault.
        let (wv, xv) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, wp.add(p)),
                _mm512_maskz_loadu_ps(mask, xp.add(p)),
            )
        };
        acc[1] = _mm512_fmadd_ps(wv, xv, acc[1]);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
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

/// `out[i][col + r] = x[i] · w[r]` for `i < M`, `r < R`; weight rows are `k` floats long, x
/// is [`XLayout::Interleaved`]. For `M` > 1 only (one row goes through [`one_by_one`]).
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
    let x_len = M * k.next_multiple_of(LANES);
    if M < 2 || x.len() < x_len || w.len() < R * k {
        return;
    }
    let xp = x.as_ptr();
    let wp = w.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); R]; M];
    let mut wv = [_mm512_setzero_ps(); R];
    let mut p = 0;
    while p + LANES <= k {
        for r in 0..R {
            // The next group's rows into L2, one group ahead, and this group's a few lines
            // ahead into L1 (see the note on prefetching above). A prefetch never faults, and
            // `wrapping_add` keeps the address arithmetic defined past the slice's end.
            _mm_prefetch::<_MM_HINT_T1>(wp.wrapping_add((R + r) * k + p).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(r * k + p + L1_AHEAD).cast::<i8>());
        }
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: p + 16 ≤ k, so r·k + p + 16 ≤ R·k ≤ w.len().
            *v = unsafe { _mm512_loadu_ps(wp.add(r * k + p)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: p + 16 ≤ k and p is a multiple of 16, so (interleaved) p·M + 16·i + 16 ≤
            // x_len ≤ x.len().
            let xv = unsafe { _mm512_loadu_ps(xp.add(p * M + i * LANES)) };
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
            // SAFETY: as above, the enabled lanes p·M + 16·i .. p·M + 16·i + k − p lie inside
            // x, below M·k16.
            let xv = unsafe { _mm512_maskz_loadu_ps(mask, xp.add(p * M + i * LANES)) };
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
