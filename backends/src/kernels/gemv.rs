//! Small-batch linear layers (decode): the weights stream from memory once per call.
//!
//! The output rows (`n`, the weight's rows) are split into contiguous ranges, one rayon task
//! each, so every thread streams its own contiguous part of `w`. The tasks own disjoint pieces
//! of `y` (for `m` > 1 a task's outputs are `m` strided runs, handed over as `m` sub-slices), so
//! no output buffer is shared or copied.

use rayon::prelude::*;

use super::dispatch::{Isa, rows_per_task};
use super::portable;

/// Input rows one kernel pass applies each weight row to; bounded by the vector registers the
/// accumulators need.
pub const MAX_BLOCK_M: usize = 8;

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
    let rows = rows_per_task(m, k, n, rayon::current_num_threads());
    let tasks = n.div_ceil(rows);
    let mut pieces: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for y_row in y.chunks_mut(n) {
        for (task, piece) in pieces.iter_mut().zip(y_row.chunks_mut(rows)) {
            task.push(piece);
        }
    }
    if tasks == 1 {
        // Nothing to share: skip rayon's hand-off.
        task(isa, x, m, k, w, &mut pieces[0]);
    } else {
        pieces
            .into_par_iter()
            .zip(w.par_chunks(rows * k))
            .for_each(|(mut out, w_rows)| task(isa, x, m, k, w_rows, &mut out));
    }
}

/// One task: all `m` outputs of the weight rows `w`, written to `out[i][0..rows]`.
///
/// The depth (`k`) is not split: splitting it so a block of 8 input rows stays in L1 measured
/// slower at every shape benchmarked, the extra horizontal sums costing more than the L2
/// traffic they save.
fn task(isa: Isa, x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [&mut [f32]]) {
    let rows = w.len() / k;
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
                x: &x[i0 * k..i1 * k],
                mb: i1 - i0,
                w: &w[r0 * k..r1 * k],
                rows: r1 - r0,
                k,
            };
            block(isa, panels, &mut out[i0..i1], r0);
        }
    }
}

/// One kernel call's operands: `mb` input rows and `rows` weight rows of `k` floats each.
#[derive(Debug, Clone, Copy)]
pub(super) struct Panels<'a> {
    /// Input rows, `[mb, k]`.
    pub x: &'a [f32],
    /// Input rows used (1 ..= [`MAX_BLOCK_M`]).
    pub mb: usize,
    /// Weight rows, `[rows, k]`.
    pub w: &'a [f32],
    /// Weight rows used.
    pub rows: usize,
    /// Columns of every row.
    pub k: usize,
}

impl Panels<'_> {
    /// Whether the slices hold every row the counts promise, which the kernels' raw loads rely
    /// on.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_BLOCK_M).contains(&self.mb)
            && self.k > 0
            && self.x.len() >= self.mb * self.k
            && self.w.len() >= self.rows * self.k
    }
}

fn block(isa: Isa, p: Panels<'_>, out: &mut [&mut [f32]], col0: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let done = match isa {
            Isa::Avx512 => super::avx512::block(p, out, col0),
            Isa::Avx2 => super::avx2::block(p, out, col0),
            Isa::Portable => false,
        };
        if done {
            return;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    portable::block(p, out, col0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_reject_rows_past_their_slices() {
        let data = [0.0f32; 10];
        let p = |mb, rows, k| Panels {
            x: &data,
            mb,
            w: &data,
            rows,
            k,
        };
        assert!(p(2, 2, 5).is_valid());
        assert!(!p(2, 3, 4).is_valid());
        assert!(!p(3, 2, 4).is_valid());
        assert!(!p(0, 1, 5).is_valid());
        assert!(!p(9, 1, 1).is_valid());
        assert!(!p(1, 1, 0).is_valid());
    }
}
