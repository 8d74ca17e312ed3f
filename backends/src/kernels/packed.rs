//! AVX-512F packed GEMM for prefill-sized batches: arithmetic-bound, so it is organised to keep
//! both FMA ports busy rather than to read the weights once.
//!
//! Each task owns a range of output columns (weight rows). Per depth block of [`KC`] columns it
//! packs its weight rows transposed into panels of [`NR`] = 32 columns (`[kc][32]`, about
//! 32 KiB, L1-sized) and, per 12 input rows, those rows interleaved (`[kc][12]`); a 12 × 32
//! register tile (24 accumulators) then walks each panel, broadcasting one input value per row
//! and depth step: 24 FMAs per 2 panel loads and 12 broadcasts. The gemm crate in this build
//! has no AVX-512 kernels (its `x86-v4` feature is off, and turning it on would rebuild burn),
//! so on AVX-512 CPUs this path measured 1.3–2× faster than it from m = 64 up.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4,
    _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps,
};

use rayon::prelude::*;

use super::dispatch::rows_per_task;

/// Output columns per panel: two 16-lane vectors.
const NR: usize = 32;
/// Input rows per register tile: 12 × 2 accumulators + 2 panel vectors + 1 broadcast ≤ 32.
const MR: usize = 12;
/// Depth per packed block: a `[KC][NR]` panel (32 KiB) plus 12 input rows' slices (12 KiB)
/// fit a 48 KiB L1.
const KC: usize = 256;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` on the packed AVX-512 kernel, split across rayon's current
/// pool; returns `false`, computing nothing, when the CPU lacks AVX-512F or the lengths
/// disagree (`x`: `m·k`, `w`: `n·k`, `y`: `m·n`).
pub fn linear_packed(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) -> bool {
    if !is_x86_feature_detected!("avx512f")
        || Some(x.len()) != m.checked_mul(k)
        || Some(w.len()) != n.checked_mul(k)
        || Some(y.len()) != m.checked_mul(n)
    {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        y.fill(0.0);
        return true;
    }
    let cols = rows_per_task(m, k, n, rayon::current_num_threads()).next_multiple_of(NR);
    let tasks = n.div_ceil(cols);
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for y_row in y.chunks_mut(n) {
        for (task, piece) in pieces.iter_mut().zip(y_row.chunks_mut(cols)) {
            task.push(piece);
        }
    }
    let run = |out: &mut [&mut [f32]], w_cols: &[f32]| {
        // SAFETY: the CPU supports AVX-512F, checked on entry.
        unsafe { task(x, m, k, w_cols, out) }
    };
    if tasks == 1 {
        run(&mut pieces[0], w);
    } else {
        pieces
            .into_par_iter()
            .zip(w.par_chunks(cols * k))
            .for_each(|(mut out, w_cols)| run(&mut out, w_cols));
    }
    true
}

/// One task: `out[i][c] = x[i] · w[c]` for every input row and every row `c` of `w`.
#[target_feature(enable = "avx512f")]
fn task(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [&mut [f32]]) {
    let nc = w.len() / k;
    let panels = nc.div_ceil(NR);
    let mut packed = vec![0.0f32; panels * KC.min(k) * NR];
    let mut x_packed = vec![0.0f32; KC.min(k) * MR];
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        pack_w(w, k, p0, kc, &mut packed[..panels * kc * NR]);
        for i0 in (0..m).step_by(MR) {
            let i1 = (i0 + MR).min(m);
            let x_block = &mut x_packed[..kc * (i1 - i0)];
            pack_x(&x[i0 * k..i1 * k], k, p0, x_block);
            for (q, panel) in packed[..panels * kc * NR].chunks_exact(kc * NR).enumerate() {
                let tile = Tile {
                    x: x_block,
                    kc,
                    panel,
                    col: q * NR,
                    cols: (nc - q * NR).min(NR),
                    accumulate: p0 > 0,
                };
                tile_dispatch(i1 - i0, &tile, &mut out[i0..i1]);
            }
        }
    }
}

/// Packs columns `p0 .. p0 + kc` of the `mr` rows of `x` (`[mr, k]`) into `[kc][mr]`
/// (`x_block.len() == kc·mr`), so a tile's broadcasts read one contiguous run: with the rows
/// themselves, a power-of-two `k` puts all 12 in one L1 set.
///
/// Never inlined into the AVX-512 code, which vectorised it into scatters slower than these
/// scalar moves.
#[inline(never)]
fn pack_x(x: &[f32], k: usize, p0: usize, x_block: &mut [f32]) {
    let mr = x.len() / k;
    for (i, row) in x.chunks_exact(k).enumerate() {
        for (step, v) in x_block.chunks_exact_mut(mr).zip(&row[p0..]) {
            step[i] = *v;
        }
    }
}

/// Packs columns `p0 .. p0 + kc` of the rows of `w` (`[nc, k]`) into `[panel][kc][NR]`, the
/// padding lanes of a partial last panel zero.
///
/// A transpose, done 16 × 16 in registers: element by element it costs about as much as the
/// arithmetic it feeds at m = 32.
#[target_feature(enable = "avx512f")]
fn pack_w(w: &[f32], k: usize, p0: usize, kc: usize, packed: &mut [f32]) {
    let nc = w.len() / k;
    if k == 0 || p0 + kc > k || packed.len() < nc.div_ceil(NR) * kc * NR {
        return;
    }
    for (q, panel) in packed
        .chunks_exact_mut(kc * NR)
        .take(nc.div_ceil(NR))
        .enumerate()
    {
        for half in 0..NR / 16 {
            let c0 = q * NR + half * 16;
            let rows = nc.saturating_sub(c0).min(16);
            for p in (0..kc).step_by(16) {
                let width = (kc - p).min(16);
                // 1 ≤ width ≤ 16: the lanes of the columns this step covers.
                let mask = ((1u32 << width) - 1) as u16;
                let mut v = [_mm512_setzero_ps(); 16];
                for (r, v) in v.iter_mut().enumerate().take(rows) {
                    let at = (c0 + r) * k + p0 + p;
                    // SAFETY: row c0 + r < nc and p0 + p + width ≤ p0 + kc ≤ k, so the enabled
                    // lanes at .. at + width lie inside w (nc·k ≤ w.len()); masked-off lanes are
                    // neither read nor able to fault.
                    *v = unsafe { _mm512_maskz_loadu_ps(mask, w.as_ptr().add(at)) };
                }
                let t = transpose16(v);
                for (j, column) in t.iter().enumerate().take(width) {
                    let at = (p + j) * NR + half * 16;
                    // SAFETY: p + j < kc, so at + 16 ≤ (kc − 1)·NR + 32 = kc·NR = panel.len().
                    unsafe { _mm512_storeu_ps(panel.as_mut_ptr().add(at), *column) };
                }
            }
        }
    }
}

/// The transpose of a 16 × 16 block held as 16 row vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    // Interleave pairs of rows, then pairs of pairs, then 128-bit lanes twice: 4 rounds of
    // 16 shuffles.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let b = 4 * i;
        u[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        u[b + 1] = _mm512_shuffle_ps::<0xEE>(t[b], t[b + 2]);
        u[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_shuffle_ps::<0xEE>(t[b + 1], t[b + 3]);
    }
    let mut v = [_mm512_setzero_ps(); 16];
    for h in 0..2 {
        let b = 8 * h;
        for j in 0..4 {
            v[b + j] = _mm512_shuffle_f32x4::<0x88>(u[b + j], u[b + 4 + j]);
            v[b + 4 + j] = _mm512_shuffle_f32x4::<0xDD>(u[b + j], u[b + 4 + j]);
        }
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..8 {
        out[j] = _mm512_shuffle_f32x4::<0x88>(v[j], v[8 + j]);
        out[8 + j] = _mm512_shuffle_f32x4::<0xDD>(v[j], v[8 + j]);
    }
    out
}

/// One register tile's operands.
struct Tile<'a> {
    /// The tile's input rows over the depth block, packed `[kc][M]`.
    x: &'a [f32],
    /// Depth of the block.
    kc: usize,
    /// The packed panel, `[kc][NR]`.
    panel: &'a [f32],
    /// First output column of the panel.
    col: usize,
    /// Output columns the panel holds (1 ..= NR); the rest are padding.
    cols: usize,
    /// Add to the outputs (later depth blocks) instead of overwriting them (the first).
    accumulate: bool,
}

#[target_feature(enable = "avx512f")]
fn tile_dispatch(mr: usize, t: &Tile<'_>, out: &mut [&mut [f32]]) {
    match mr {
        1 => tile::<1>(t, out),
        2 => tile::<2>(t, out),
        3 => tile::<3>(t, out),
        4 => tile::<4>(t, out),
        5 => tile::<5>(t, out),
        6 => tile::<6>(t, out),
        7 => tile::<7>(t, out),
        8 => tile::<8>(t, out),
        9 => tile::<9>(t, out),
        10 => tile::<10>(t, out),
        11 => tile::<11>(t, out),
        12 => tile::<12>(t, out),
        _ => debug_assert!(false, "tile of {mr} input rows"),
    }
}

/// `out[i][col .. col + cols] (+)= Σ_p x[p·M + i] · panel[p]` for `i < M`.
///
/// Never inlined: alone, the 24 accumulators get registers to themselves (inlined into the
/// packing loops they were spilled), and one call does thousands of FMAs.
#[target_feature(enable = "avx512f")]
#[inline(never)]
fn tile<const M: usize>(t: &Tile<'_>, out: &mut [&mut [f32]]) {
    // The raw accesses below rely on these bounds; checking once per tile costs nothing.
    if M == 0
        || t.kc == 0
        || t.cols == 0
        || t.cols > NR
        || t.x.len() < t.kc * M
        || t.panel.len() < t.kc * NR
        || out.len() < M
        || out[..M].iter().any(|o| o.len() < t.col + t.cols)
    {
        return;
    }
    let xp = t.x.as_ptr();
    let bp = t.panel.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for p in 0..t.kc {
        // SAFETY: p < kc, so p·NR + 32 ≤ kc·NR ≤ panel.len().
        let b = unsafe {
            [
                _mm512_loadu_ps(bp.add(p * NR)),
                _mm512_loadu_ps(bp.add(p * NR + 16)),
            ]
        };
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: i < M and p < kc, so p·M + i < kc·M ≤ x.len().
            let a = _mm512_set1_ps(unsafe { *xp.add(p * M + i) });
            acc_i[0] = _mm512_fmadd_ps(a, b[0], acc_i[0]);
            acc_i[1] = _mm512_fmadd_ps(a, b[1], acc_i[1]);
        }
    }
    // Lanes of each half that are real columns: 1 ≤ cols ≤ 32.
    let bits = (1u32 << (t.cols - 1) << 1).wrapping_sub(1);
    let masks = [bits as u16, (bits >> 16) as u16];
    for (o, acc_i) in out.iter_mut().zip(&acc) {
        for (h, (v, mask)) in acc_i.iter().zip(masks).enumerate() {
            store(o, t.col + h * 16, *v, mask, t.accumulate);
        }
    }
}

/// `o[at + l] (+)= v[l]` for the lanes `l` in `mask`; nothing when a lane would fall outside
/// `o`.
#[target_feature(enable = "avx512f")]
#[inline]
fn store(o: &mut [f32], at: usize, v: __m512, mask: u16, accumulate: bool) {
    // The highest enabled lane must lie inside `o`; the masked accesses touch no other.
    let Some(top) = mask.checked_ilog2() else {
        return;
    };
    if at + top as usize >= o.len() {
        return;
    }
    let p = o[at..].as_mut_ptr();
    let v = if accumulate {
        // SAFETY: masked-off lanes are neither read nor able to fault, and the enabled ones,
        // at most at + top, lie inside `o` (checked above).
        _mm512_add_ps(v, unsafe { _mm512_maskz_loadu_ps(mask, p) })
    } else {
        v
    };
    // SAFETY: as for the load, only enabled lanes are written and they lie inside `o`, which
    // is borrowed mutably.
    unsafe { _mm512_mask_storeu_ps(p, mask, v) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_packing_interleaves_rows() {
        let (mr, k, p0, kc) = (3, 7, 2, 4);
        let x: Vec<f32> = (0..mr * k).map(|i| i as f32).collect();
        let mut block = vec![f32::NAN; kc * mr];
        pack_x(&x, k, p0, &mut block);
        for p in 0..kc {
            for i in 0..mr {
                assert_eq!(block[p * mr + i], x[i * k + p0 + p]);
            }
        }
    }

    #[test]
    fn packing_transposes_and_pads() {
        let (nc, k) = (35, 41);
        let w: Vec<f32> = (0..nc * k).map(|i| i as f32 + 1.0).collect();
        let (p0, kc) = (3, 37);
        let mut packed = vec![f32::NAN; 2 * kc * NR];
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        // SAFETY: the CPU supports AVX-512F, checked just above.
        unsafe { pack_w(&w, k, p0, kc, &mut packed) };
        for c in 0..2 * NR {
            for p in 0..kc {
                let got = packed[(c / NR) * kc * NR + p * NR + c % NR];
                let want = if c < nc { w[c * k + p0 + p] } else { 0.0 };
                assert_eq!(got, want, "column {c}, depth {p}");
            }
        }
    }
}
