//! Small-batch linear layers (decode): the weights stream from memory once per call.
//!
//! The output rows (`n`, the weight's rows) are split into contiguous ranges, one rayon task
//! each, so every thread streams its own contiguous part of `w`. The tasks own disjoint pieces
//! of `y` (for `m` > 1 a task's outputs are `m` strided runs, handed over as `m` sub-slices), so
//! no output buffer is shared or copied.
//!
//! For the AVX-512 kernel with more than one input row, x is first copied once per call into
//! [`XLayout::Interleaved`] blocks, so a kernel pass reads its input rows as one contiguous
//! stream instead of `mb` streams a row apart.

use std::cell::Cell;

use rayon::prelude::*;

use super::buffers::{keep_buffer, line_aligned, take_buffer};
use super::dispatch::{Isa, rows_per_task};
use super::layout::{CHUNK, MAX_BLOCK_M, Panels, XLayout};
use super::portable;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx2::Avx2, avx512, avx512::Avx512};

thread_local! {
    /// The interleaved x of the calls made from this thread.
    static INTERLEAVED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Bytes of weights a task reuses across blocks of [`MAX_BLOCK_M`] input rows when `m` exceeds
/// one block: about half of a core's L2, so the tile is read from memory once.
const TILE_BYTES: usize = 1 << 20;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` on the small-batch kernels of `isa`, split across rayon's
/// current pool. Lengths must agree (`x`: `m·k`, `w`: `n·k`, `y`: `m·n`); callers check them.
pub fn linear_small(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let layout = if isa == Isa::Avx512 && m > 1 && isa.is_supported() {
        XLayout::Interleaved
    } else {
        XLayout::Rows
    };
    let mut buffer = Vec::new();
    let x = match layout {
        XLayout::Rows => x,
        XLayout::Interleaved => {
            let len = interleaved_len(m, k);
            buffer = take_buffer(&INTERLEAVED, len);
            let packed = line_aligned(&mut buffer, len);
            interleave(x, m, k, packed);
            &*packed
        }
    };
    let rows = rows_per_task(m, k, n, rayon::current_num_threads());
    let tasks = n.div_ceil(rows);
    let mut pieces = column_pieces(y, n, rows);
    if tasks == 1 {
        // Nothing to share: skip rayon's hand-off.
        task(isa, layout, x, m, k, w, &mut pieces[0]);
    } else {
        pieces
            .into_par_iter()
            .zip(w.par_chunks(rows * k))
            .for_each(|(mut out, w_rows)| task(isa, layout, x, m, k, w_rows, &mut out));
    }
    if layout == XLayout::Interleaved {
        keep_buffer(&INTERLEAVED, buffer);
    }
}

/// Floats of `x` (`[m, k]`) in [`XLayout::Interleaved`] blocks of [`MAX_BLOCK_M`] rows.
fn interleaved_len(m: usize, k: usize) -> usize {
    m * XLayout::Interleaved.row_len(k)
}

/// Copies `x` (`[m, k]`) into `out` as [`XLayout::Interleaved`] blocks of [`MAX_BLOCK_M`] rows
/// (the last block holds the rest), one after another.
fn interleave(x: &[f32], m: usize, k: usize, out: &mut [f32]) {
    let k16 = XLayout::Interleaved.row_len(k);
    if x.len() < m * k || out.len() < m * k16 {
        return;
    }
    for (block, i0) in out
        .chunks_mut(MAX_BLOCK_M * k16)
        .zip((0..m).step_by(MAX_BLOCK_M))
    {
        let mb = (m - i0).min(MAX_BLOCK_M);
        for (c, chunk) in block.chunks_exact_mut(mb * CHUNK).enumerate() {
            let (p0, width) = (c * CHUNK, (k - c * CHUNK).min(CHUNK));
            for (i, part) in chunk.chunks_exact_mut(CHUNK).enumerate() {
                let row = (i0 + i) * k + p0;
                part[..width].copy_from_slice(&x[row..row + width]);
                // Only the last chunk of a ragged k has columns to zero; skipping the empty
                // fill keeps a call out of the per-chunk loop.
                if width < CHUNK {
                    part[width..].fill(0.0);
                }
            }
        }
    }
}

/// One task: all `m` outputs of the weight rows `w`, written to `out[i][0..rows]`.
///
/// The depth (`k`) is not split: splitting it so a block of 8 input rows stays in L1 measured
/// slower at every shape benchmarked, the extra horizontal sums costing more than the L2
/// traffic they save.
fn task(
    isa: Isa,
    layout: XLayout,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    out: &mut [&mut [f32]],
) {
    let rows = w.len() / k;
    let row_len = layout.row_len(k);
    let tile_rows = if m <= MAX_BLOCK_M {
        rows
    } else {
        (TILE_BYTES / (k * size_of::<f32>())).max(8)
    };
    for r0 in (0..rows).step_by(tile_rows) {
        let r1 = (r0 + tile_rows).min(rows);
        for i0 in (0..m).step_by(MAX_BLOCK_M) {
            let i1 = (i0 + MAX_BLOCK_M).min(m);
            let panels = Panels {
                x: &x[i0 * row_len..i1 * row_len],
                layout,
                mb: i1 - i0,
                w: &w[r0 * k..r1 * k],
                rows: r1 - r0,
                k,
            };
            block(isa, panels, &mut out[i0..i1], r0);
        }
    }
}

/// One kernel call on `isa`'s kernel, or on the portable one where this CPU or build lacks
/// `isa`.
fn block(isa: Isa, p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => {
            if let Some(avx512) = Avx512::detect() {
                // SAFETY: the token exists only where this CPU has AVX-512F, all the kernel
                // enables.
                return unsafe { avx512::block(avx512, p, out, col0) };
            }
        }
        Isa::Avx2 => {
            if let Some(avx2) = Avx2::detect() {
                // SAFETY: the token exists only where this CPU has AVX2 and FMA, all the kernel
                // enables.
                return unsafe { avx2::block(avx2, p, out, col0) };
            }
        }
        Isa::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    portable::block(p, out, col0);
}

/// `y` (rows of `n` outputs) cut into tasks of `width` output columns: task t holds columns
/// `t·width ..` of every row, so tasks write disjoint parts of `y`.
pub(crate) fn column_pieces(y: &mut [f32], n: usize, width: usize) -> Vec<Vec<&mut [f32]>> {
    let tasks = n.div_ceil(width.max(1));
    let rows = y.len().checked_div(n).unwrap_or(0);
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(rows)).collect();
    for y_row in y.chunks_mut(n.max(1)) {
        for (task, piece) in pieces.iter_mut().zip(y_row.chunks_mut(width.max(1))) {
            task.push(piece);
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_puts_each_chunk_of_every_row_together() {
        // Two blocks (8 rows, then 3), k not a multiple of the chunk.
        let (m, k): (usize, usize) = (11, 21);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32 + 1.0).collect();
        let k16 = k.next_multiple_of(CHUNK);
        let mut out = vec![f32::NAN; interleaved_len(m, k)];
        interleave(&x, m, k, &mut out);
        for i in 0..m {
            let (block, r) = (i / MAX_BLOCK_M, i % MAX_BLOCK_M);
            let mb = (m - block * MAX_BLOCK_M).min(MAX_BLOCK_M);
            for p in 0..k16 {
                let got = out
                    [block * MAX_BLOCK_M * k16 + (p / CHUNK) * CHUNK * mb + r * CHUNK + p % CHUNK];
                let want = if p < k { x[i * k + p] } else { 0.0 };
                assert_eq!(got, want, "row {i}, column {p}");
            }
        }
    }
}
