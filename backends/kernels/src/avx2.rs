//! AVX2 + FMA small-batch kernel: 8 lanes, 16 vector registers.
//!
//! The same scheme as the AVX-512 kernel (each weight row loaded once and applied to all `M`
//! input rows from registers; a single input row with rows up to 2048 floats reads them one
//! whole row at a time) with half the lanes and half the registers, so fewer weight rows per
//! group.

use std::arch::x86_64::{
    __m256, __m256i, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehdup_ps, _mm_movehl_ps,
    _mm256_add_ps, _mm256_castps256_ps128, _mm256_cmpgt_epi32, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps, _mm256_set1_epi32, _mm256_setr_epi32,
    _mm256_setzero_ps,
};

use super::gemv::{Panels, XLayout};

const LANES: usize = 8;

/// `out[i][col0 + r] = x[i] · w[r]` for every input row (`p.mb` ≤ 8) and weight row of the
/// panels. Returns
/// `false`, computing nothing, when the CPU lacks AVX2 or FMA.
///
/// Invalid operands are handled as by the AVX-512 kernel: nothing is read out of bounds. x must
/// be in [`XLayout::Rows`]; in any other layout nothing is computed.
pub(super) fn block(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) -> bool {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return false;
    }
    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
    unsafe { block_avx2(p, out, col0) };
    true
}

#[target_feature(enable = "avx2,fma")]
fn block_avx2(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    debug_assert_eq!(p.layout, XLayout::Rows);
    if !p.is_valid() || p.layout != XLayout::Rows || out.len() < p.mb {
        return;
    }
    // M·R accumulators + R weights + 1 input ≤ 16 registers.
    match p.mb {
        1 if p.k <= ONE_STREAM_MAX_K => one_by_one(p, out, col0),
        1 => rows::<1, 4>(p, out, col0),
        2 => rows::<2, 4>(p, out, col0),
        3 => rows::<3, 3>(p, out, col0),
        4 => rows::<4, 2>(p, out, col0),
        5 => rows::<5, 2>(p, out, col0),
        6 => rows::<6, 2>(p, out, col0),
        7 => rows::<7, 1>(p, out, col0),
        8 => rows::<8, 1>(p, out, col0),
        _ => debug_assert!(false, "block of {} input rows", p.mb),
    }
}

/// Longest rows [`one_by_one`] reads; longer ones go 4 side by side. Measured on an AMD Zen 4
/// VM with the AVX2 path forced (`benches/kernels.rs`, cold weights, 2 threads, best of
/// several calls, 3 rounds alternated with the 4-row kernel): one row at a time streamed
/// k×n = 576×{960, 3072, 49152} and 1536×576 1.2–2.4× faster, 2048×{2560, 11264} level
/// (0.9–1.1×), and 5632×2048 0.54–0.86×: short rows end before the prefetcher has picked up
/// 4 streams, long ones gain from 4 in flight.
const ONE_STREAM_MAX_K: usize = 2048;

/// One input row: each weight row is read whole before the next, so a task reads one
/// sequential stream (see `avx512::one_by_one`).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn one_by_one(p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    let (Some(out), Some(x)) = (out.first_mut(), p.x.get(..p.k)) else {
        return;
    };
    for (r, w) in p.w.chunks_exact(p.k).take(p.rows).enumerate() {
        out[col0 + r] = dot(x, w);
    }
}

/// `x · w` over `w.len()` columns (`x` at least as long), in 4 independent accumulators so the
/// FMA latency never holds up the next load.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot(x: &[f32], w: &[f32]) -> f32 {
    const U: usize = 4;
    let k = w.len();
    if x.len() < k {
        return 0.0;
    }
    let (xp, wp) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm256_setzero_ps(); U];
    let mut p = 0;
    while p + U * LANES <= k {
        for (u, a) in acc.iter_mut().enumerate() {
            let at = p + u * LANES;
            // SAFETY: at + 8 ≤ p + U·8 ≤ k ≤ both lengths.
            let (wv, xv) = unsafe { (_mm256_loadu_ps(wp.add(at)), _mm256_loadu_ps(xp.add(at))) };
            *a = _mm256_fmadd_ps(wv, xv, *a);
        }
        p += U * LANES;
    }
    while p + LANES <= k {
        // SAFETY: p + 8 ≤ k ≤ both lengths.
        let (wv, xv) = unsafe { (_mm256_loadu_ps(wp.add(p)), _mm256_loadu_ps(xp.add(p))) };
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
        p += LANES;
    }
    if p < k {
        let mask = tail_mask(k - p);
        // SAFETY: masked-off lanes are neither read nor able to fault; the enabled lanes
        // p .. k lie inside both slices.
        let (wv, xv) = unsafe {
            (
                _mm256_maskload_ps(wp.add(p), mask),
                _mm256_maskload_ps(xp.add(p), mask),
            )
        };
        acc[1] = _mm256_fmadd_ps(wv, xv, acc[1]);
    }
    hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

/// Lanes `0 .. n` (`n` < 8) enabled for `_mm256_maskload_ps`: lane l is loaded when its mask
/// element is negative, i.e. when l < n.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn tail_mask(n: usize) -> __m256i {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane)
}

#[target_feature(enable = "avx2,fma")]
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
#[target_feature(enable = "avx2,fma")]
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
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    let mut wv = [_mm256_setzero_ps(); R];
    let mut p = 0;
    while p + LANES <= k {
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: p + 8 ≤ k, so r·k + p + 8 ≤ R·k ≤ w.len().
            *v = unsafe { _mm256_loadu_ps(wp.add(r * k + p)) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: p + 8 ≤ k, so i·k + p + 8 ≤ M·k ≤ x.len().
            let xv = unsafe { _mm256_loadu_ps(xp.add(i * k + p)) };
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(*v, xv, *a);
            }
        }
        p += LANES;
    }
    if p < k {
        let mask = tail_mask(k - p);
        for (r, v) in wv.iter_mut().enumerate() {
            // SAFETY: masked-off lanes are neither read nor able to fault; the enabled lanes
            // r·k + p .. r·k + k lie inside w (r < R, R·k ≤ w.len()).
            *v = unsafe { _mm256_maskload_ps(wp.add(r * k + p), mask) };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: as above, the enabled lanes i·k + p .. i·k + k lie inside x.
            let xv = unsafe { _mm256_maskload_ps(xp.add(i * k + p), mask) };
            for (a, v) in acc_i.iter_mut().zip(&wv) {
                *a = _mm256_fmadd_ps(*v, xv, *a);
            }
        }
    }
    for (o, acc_i) in out.iter_mut().zip(&acc) {
        for (r, a) in acc_i.iter().enumerate() {
            o[col + r] = hsum(*a);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}
