//! AVX-512F packed GEMM for prefill-sized batches: arithmetic-bound, so it is organised to keep
//! both FMA ports busy, while still reading every weight from memory only once.
//!
//! The input rows are the small operand (a prompt has tens to hundreds of tokens, a layer
//! thousands of outputs), so they are the one transposed: packed once per call into panels of
//! [`MV`] = 32 rows, `[k][32]`, panel by panel across the pool. The weights are used as
//! stored. Each task owns a range of output columns (weight rows); per depth block of at most
//! [`KC`] (split evenly: k = 576 is 2 × 288) it copies [`NR`] = 12 weight rows into an
//! L1-resident buffer (rows padded apart so they share no L1 set) and runs a 32 × 12 register
//! tile (24 accumulators) over every x panel: per depth step 2 panel loads, 12 broadcasts of
//! one weight each, 24 FMAs. With a single panel (m ≤ 32) each weight is used once, so the tile
//! broadcasts from the weight rows in place instead of copying them. While a group computes,
//! the next group's weight rows are prefetched into L2, so at m = 32 (nearly bound by reading
//! the weights) the memory stream overlaps the arithmetic. The last depth block's tile is
//! transposed in registers and written as one masked store per output row; the output lines
//! it will write are prefetched during its depth steps. The packing and work buffers are
//! thread-local and reused, so a call allocates (and page-faults) nothing once warm.
//!
//! Why this design: the previous version packed the weights instead and was slower than the
//! streaming kernel at m = 32; the gemm crate in this build has no AVX-512 kernels (its
//! `x86-v4` feature is off, and turning it on would rebuild burn), and built with them for a
//! comparison it ran behind this kernel on nearly every shape. The tile runs near the FMA rate;
//! what remains is mostly the x panel streaming from L2, and on 2-vCPU VMs whose vCPUs share one
//! core's arithmetic, that sharing bounds prefill. The measurements (against the previous
//! version, gemm's AVX-512 kernels and MKL, and the variants tried) are in
//! docs/perf/2026-12-kernels.md.

use rayon::prelude::*;
use std::arch::x86_64::{
    __m512, _MM_HINT_T0, _MM_HINT_T1, _mm_prefetch, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps, _mm512_unpackhi_ps,
    _mm512_unpacklo_ps,
};
use std::cell::Cell;

use super::buffers::{keep_buffer, line_aligned, take_buffer};

/// Input rows per x panel: the two 16-lane vectors a tile multiplies per depth step.
const MV: usize = 32;
/// Weight rows per register tile: 12 × 2 accumulators + 2 panel vectors + 1 broadcast ≤ 32
/// registers. 14 rows (28 accumulators) measured the same within noise.
const NR: usize = 12;
/// Deepest depth block: 12 copied weight rows (24 KiB) stay in the 48 KiB L1 while the x panels
/// stream past from L2 (`m`·512·4 bytes, 512 KiB at m = 256). 256 measured the same within
/// noise.
const KC: usize = 512;
/// Floats between the rows of a copied weight block: one cache line more than the deepest
/// block, so that rows whose original stride is a multiple of 4 KiB (k = 2048) do not all map
/// to one L1 set.
const STRIDE: usize = KC + 16;
/// Tasks per pool thread: equal shares of the weight-row groups, several per thread so a
/// thread that is descheduled (or finishes late) has its remaining share stolen.
const TASKS_PER_THREAD: usize = 4;

thread_local! {
    /// The packed x panels of the calls made from this thread.
    static PANELS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// A task's copied weight rows and partial sums.
    static WORK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

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
    let panels = m.div_ceil(MV);
    let mut buffer = take_buffer(&PANELS, panels * k * MV);
    let xp = line_aligned(&mut buffer, panels * k * MV);
    let pack = |(pi, panel): (usize, &mut [f32])| {
        // SAFETY: the CPU supports AVX-512F, checked on entry.
        unsafe { pack_panel(x, m, k, pi, panel) }
    };
    // Panel by panel across the pool: serial, the packing left the other threads idle for
    // about 2 % of the product at m = 256, k = 576.
    if panels > 1 {
        xp[..panels * k * MV]
            .par_chunks_mut(k * MV)
            .enumerate()
            .for_each(pack);
    } else {
        pack((0, &mut xp[..k * MV]));
    }
    let groups = n.div_ceil(NR);
    let tasks = (rayon::current_num_threads().max(1) * TASKS_PER_THREAD).min(groups);
    let cols = groups.div_ceil(tasks) * NR;
    let tasks = n.div_ceil(cols);
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for y_row in y.chunks_mut(n) {
        for (task, piece) in pieces.iter_mut().zip(y_row.chunks_mut(cols)) {
            task.push(piece);
        }
    }
    let xs = &xp[..panels * k * MV];
    let run = |out: &mut [&mut [f32]], w_cols: &[f32]| {
        // SAFETY: the CPU supports AVX-512F, checked on entry.
        unsafe { task(xs, m, k, w_cols, out) }
    };
    if tasks == 1 {
        run(&mut pieces[0], w);
    } else {
        pieces
            .into_par_iter()
            .zip(w.par_chunks(cols * k))
            .for_each(|(mut out, w_cols)| run(&mut out, w_cols));
    }
    keep_buffer(&PANELS, buffer);
    true
}

/// One task: `out[i][c] = x[i] · w[c]` for every input row `i < m` and every row `c` of `w`
/// (`[nc, k]`), from `xp`, x packed by [`pack_panel`].
#[target_feature(enable = "avx512f")]
fn task(xp: &[f32], m: usize, k: usize, w: &[f32], out: &mut [&mut [f32]]) {
    let nc = w.len() / k;
    let panels = m.div_ceil(MV);
    if nc == 0 || xp.len() < panels * k * MV || out.len() < m {
        return;
    }
    // Equal blocks, a multiple of 16 deep where k allows: k = 576 is 2 × 288, not 512 + 64.
    let blocks = k.div_ceil(KC);
    let kc_max = k.div_ceil(blocks).next_multiple_of(16).min(k);
    let groups = nc.div_ceil(NR);
    // Partial sums between depth blocks, one 32 × 12 tile per (group, panel).
    let tiles = if blocks > 1 { groups * panels } else { 0 };
    let len = NR * STRIDE + tiles * NR * MV;
    let mut buffer = take_buffer(&WORK, len);
    let (wb, scratch) = line_aligned(&mut buffer, len).split_at_mut(NR * STRIDE);
    for p0 in (0..k).step_by(kc_max) {
        let kc = kc_max.min(k - p0);
        for g in 0..groups {
            let r0 = g * NR;
            let rows = (nc - r0).min(NR);
            // A single panel reads each weight once: the tile broadcasts straight from w, whose
            // next rows the previous tile prefetched, instead of copying them first (the copy
            // is what keeps rows in L1 for the panels after the first).
            let direct = panels == 1 && rows == NR;
            if !direct {
                for r in 0..rows {
                    wb[r * STRIDE..r * STRIDE + kc].copy_from_slice(&w[(r0 + r) * k + p0..][..kc]);
                }
                // Rows past the last group's end: zeros rather than stale values, whose
                // accumulators are computed but never stored.
                for r in rows..NR {
                    wb[r * STRIDE..r * STRIDE + kc].fill(0.0);
                }
            }
            let (next_r0, next_p0) = if g + 1 < groups {
                (r0 + NR, p0)
            } else {
                (0, p0 + kc)
            };
            let next = (next_p0 < k).then(|| Prefetch {
                w,
                at: next_r0 * k + next_p0,
                rows: (nc - next_r0).min(NR),
                k,
                len: kc.min(k - next_p0),
            });
            for pi in 0..panels {
                let i0 = pi * MV;
                let t = Tile {
                    x: &xp[(pi * k + p0) * MV..][..kc * MV],
                    w: if direct { &w[r0 * k + p0..] } else { wb },
                    ws: if direct { k } else { STRIDE },
                    kc,
                    accumulate: p0 > 0,
                    // Once per group is enough: the later panels find the rows in L2.
                    prefetch: if pi == 0 { next.as_ref() } else { None },
                };
                let slot = if tiles > 0 {
                    &mut scratch[(g * panels + pi) * NR * MV..][..NR * MV]
                } else {
                    &mut []
                };
                let mi = (m - i0).min(MV);
                let dest = (p0 + kc == k).then(|| Dest {
                    out: &mut out[i0..i0 + mi],
                    col: r0,
                    cols: rows,
                });
                // A panel of at most 16 real rows (m = 16, or the rest of m = 40) runs half a
                // tile rather than multiply zeros.
                match (mi > 16, direct) {
                    (true, false) => tile::<2, false>(&t, slot, dest),
                    (false, false) => tile::<1, false>(&t, slot, dest),
                    (true, true) => tile::<2, true>(&t, slot, dest),
                    (false, true) => tile::<1, true>(&t, slot, dest),
                }
            }
        }
    }
    keep_buffer(&WORK, buffer);
}

/// Weight rows to prefetch while a tile computes: `rows` rows of `w`, `k` apart, `len` floats
/// each from `at`.
struct Prefetch<'a> {
    w: &'a [f32],
    at: usize,
    rows: usize,
    k: usize,
    len: usize,
}

/// One register tile's operands.
struct Tile<'a> {
    /// The x panel over the depth block, `[kc][MV]`.
    x: &'a [f32],
    /// [`NR`] weight rows, `ws` apart, the first `kc` floats of each in use.
    w: &'a [f32],
    /// Floats between the weight rows: [`STRIDE`] in the copy, `k` in place.
    ws: usize,
    /// Depth of the block (1 ..= [`KC`]).
    kc: usize,
    /// Start from the partial sums in the slot (later depth blocks) instead of zero.
    accumulate: bool,
    /// The next group's weight rows, fetched into L2 as the depth steps go.
    prefetch: Option<&'a Prefetch<'a>>,
}

/// Where a tile's last depth block goes: `out[i][col .. col + cols]` for the panel's rows.
struct Dest<'a, 'b> {
    out: &'a mut [&'b mut [f32]],
    col: usize,
    cols: usize,
}

/// `acc[r][i] (+)= Σ_p w[r·ws + p] · x[p·MV + i]` over the block, kept in `slot` (`[NR][MV]`)
/// or, with a `dest`, transposed into the outputs. `DIRECT`: the weights are read in place
/// (`ws` is the layer's depth) rather than from the copy (`ws` = [`STRIDE`], a constant the
/// broadcasts then take as displacements).
///
/// Never inlined: alone, the 24 accumulators get registers to themselves, and one call does
/// thousands of FMAs.
#[target_feature(enable = "avx512f")]
#[inline(never)]
fn tile<const V: usize, const DIRECT: bool>(
    t: &Tile<'_>,
    slot: &mut [f32],
    dest: Option<Dest<'_, '_>>,
) {
    let ws = if DIRECT { t.ws } else { STRIDE };
    // The raw accesses below rely on these bounds; checking once per tile costs nothing.
    if V == 0
        || V * 16 > MV
        || t.kc == 0
        || t.kc > ws
        || t.x.len() < t.kc * MV
        || t.w.len() < (NR - 1) * ws + t.kc
        || (dest.is_none() || t.accumulate) && slot.len() < NR * MV
    {
        return;
    }
    let xp = t.x.as_ptr();
    let wp = t.w.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); V]; NR];
    if t.accumulate {
        for (r, a) in acc.iter_mut().enumerate() {
            for (v, a) in a.iter_mut().enumerate() {
                // SAFETY: r < NR and v < V ≤ 2, so r·MV + 16·v + 16 ≤ NR·MV ≤ slot.len().
                *a = unsafe { _mm512_loadu_ps(slot.as_ptr().add(r * MV + 16 * v)) };
            }
        }
    }
    let step = |acc: &mut [[__m512; V]; NR], p: usize| {
        let mut xv = [_mm512_setzero_ps(); V];
        for (v, xv) in xv.iter_mut().enumerate() {
            // SAFETY: p < kc and v < V ≤ 2, so p·MV + 16·v + 16 ≤ kc·MV ≤ x.len().
            *xv = unsafe { _mm512_loadu_ps(xp.add(p * MV + 16 * v)) };
        }
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r < NR and p < kc, so r·ws + p < (NR − 1)·ws + kc ≤ w.len().
            let b = _mm512_set1_ps(unsafe { *wp.add(r * ws + p) });
            for (a, xv) in a.iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(b, *xv, *a);
            }
        }
    };
    // A cache line of each weight row per 16 steps: one prefetch per next row per 16 steps
    // keeps pace with the copy that will read them.
    let lines = t.kc / 16;
    // The outputs too are fetched ahead, a few rows per 16 steps: y (3 MiB at m = 256,
    // n = 3072) is mostly out of L2, and without this the stores at the end of the tile wait
    // on it: 7–10 % slower at k = 576, m = 256.
    let out_rows = dest.as_ref().map_or(0, |d| d.out.len().min(16 * V));
    let per_line = out_rows.div_ceil(lines.max(1));
    for c in 0..lines {
        if let Some(d) = &dest {
            for o in d
                .out
                .iter()
                .take(out_rows)
                .skip(c * per_line)
                .take(per_line)
            {
                if let Some(o) = o.get(d.col..d.col + d.cols.min(NR))
                    && let Some(last) = o.last()
                {
                    _mm_prefetch::<_MM_HINT_T0>(o.as_ptr().cast::<i8>());
                    _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(last).cast::<i8>());
                }
            }
        }
        if let Some(pf) = t.prefetch
            && c * 16 < pf.len
        {
            for r in 0..pf.rows {
                let at = pf.at + r * pf.k + c * 16;
                if at < pf.w.len() {
                    // SAFETY: at < w.len(), so the address lies inside w (and a prefetch
                    // never faults anyway).
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(pf.w.as_ptr().add(at).cast::<i8>()) };
                }
            }
        }
        for q in 0..16 {
            step(&mut acc, c * 16 + q);
        }
    }
    for p in lines * 16..t.kc {
        step(&mut acc, p);
    }
    let Some(d) = dest else {
        for (r, a) in acc.iter().enumerate() {
            for (v, a) in a.iter().enumerate() {
                // SAFETY: r < NR and v < V ≤ 2, so r·MV + 16·v + 16 ≤ NR·MV ≤ slot.len().
                unsafe { _mm512_storeu_ps(slot.as_mut_ptr().add(r * MV + 16 * v), *a) };
            }
        }
        return;
    };
    // Each accumulator holds one output column for 16 rows; transposed in registers, a row's
    // `cols` outputs are one masked store instead of 12 scalar moves through memory (384 per
    // tile).
    let cols = d.cols.min(NR);
    let mask = ((1u32 << cols) - 1) as u16;
    for v in 0..V {
        let mut block = [_mm512_setzero_ps(); 16];
        for (b, a) in block.iter_mut().zip(&acc) {
            *b = a[v];
        }
        let rows = transpose16(block);
        for (o, row) in d.out.iter_mut().skip(16 * v).zip(&rows) {
            if let Some(o) = o.get_mut(d.col..d.col + cols) {
                // SAFETY: o has `cols` floats and the mask enables the first `cols` lanes;
                // masked-off lanes are neither written nor able to fault.
                unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr(), mask, *row) };
            }
        }
    }
}

/// Packs panel `pi` of x (`[m, k]`): rows `32·pi ..`, `[k][MV]`, the rows past `m` zero, so a
/// tile's two vectors per depth step are one contiguous 128-byte run.
///
/// A transpose, done 16 × 16 in registers: x is the small operand, so this costs little next
/// to the product (well under 1 % of it at the shapes benchmarked).
#[target_feature(enable = "avx512f")]
fn pack_panel(x: &[f32], m: usize, k: usize, pi: usize, panel: &mut [f32]) {
    if k == 0 || x.len() < m * k || panel.len() < k * MV {
        return;
    }
    for half in 0..MV / 16 {
        let i0 = pi * MV + half * 16;
        let rows = m.saturating_sub(i0).min(16);
        for p in (0..k).step_by(16) {
            let width = (k - p).min(16);
            let mask = ((1u32 << width) - 1) as u16;
            let mut v = [_mm512_setzero_ps(); 16];
            for (r, v) in v.iter_mut().enumerate().take(rows) {
                let at = (i0 + r) * k + p;
                // SAFETY: row i0 + r < m and p + width ≤ k, so the enabled lanes lie inside
                // x; masked-off lanes are neither read nor able to fault.
                *v = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr().add(at)) };
            }
            let t = transpose16(v);
            for (j, column) in t.iter().enumerate().take(width) {
                let at = (p + j) * MV + half * 16;
                // SAFETY: p + j < k, so at + 16 ≤ (k − 1)·MV + 32 = k·MV ≤ panel.len().
                unsafe { _mm512_storeu_ps(panel.as_mut_ptr().add(at), *column) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_packing_transposes_into_padded_panels() {
        if !is_x86_feature_detected!("avx512f") {
            return;
        }
        let (m, k): (usize, usize) = (35, 41);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32 + 1.0).collect();
        let panels = m.div_ceil(MV);
        let mut xp = vec![f32::NAN; panels * k * MV];
        for (pi, panel) in xp.chunks_exact_mut(k * MV).enumerate() {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { pack_panel(&x, m, k, pi, panel) };
        }
        for i in 0..panels * MV {
            for p in 0..k {
                let got = xp[(i / MV) * k * MV + p * MV + i % MV];
                let want = if i < m { x[i * k + p] } else { 0.0 };
                assert_eq!(got, want, "row {i}, depth {p}");
            }
        }
    }

    #[test]
    fn deep_ragged_shapes_match_a_plain_product() {
        // Several depth blocks (k > KC, not a multiple of 16), a partial last panel and a
        // partial last weight group, split over more tasks than threads; one panel (weights
        // read in place) and several (weights copied), a full one and half a one.
        let (k, n) = (2 * KC + 9, 2 * NR + 5);
        for m in [37, 32, 5] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
            let mut y = vec![f32::NAN; m * n];
            if !linear_packed(&x, m, k, &w, n, &mut y) {
                return;
            }
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                        .sum();
                    let got = f64::from(y[i * n + j]);
                    assert!(
                        (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "m = {m}, ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
