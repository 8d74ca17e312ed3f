//! The small-batch (decode) kernel over weights in a narrow format (`formats`), written once
//! over an instruction set's widening operations ([`Widen`]) and a format's codes ([`Codes`]),
//! and compiled per pair by the `coded_block` entry points of `avx2.rs` and `avx512.rs`.
//!
//! As in the f32 kernel (`streaming`), each weight row is read once per call whatever the number
//! of input rows, in groups of `R` rows side by side with `M × R` accumulators in registers.
//! Codes are widened to f32 in registers and, for blockwise formats, multiplied by the row's
//! block scale; products and sums are f32. Activations are not quantized, so the result is the
//! f32 product with the dequantized weights, up to summation order.

use super::formats::{CodedMatrix, GROUP};
use super::layout::MAX_BLOCK_M;
use super::widen::{Codes, Widen};

/// One kernel call's operands: `mb` input rows and `rows` weight rows in a narrow format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodedPanels<'a> {
    /// Input rows, `padded` floats each (zero past the matrix's columns).
    pub x: &'a [f32],
    /// Input rows used (1 ..= [`MAX_BLOCK_M`]).
    pub mb: usize,
    /// The weight rows' codes, `row_bytes` each.
    pub codes: &'a [u8],
    /// Bytes of codes per weight row.
    pub row_bytes: usize,
    /// `[rows, blocks]` scales (unused by unscaled formats).
    pub scales: &'a [f32],
    /// Scales per weight row.
    pub blocks: usize,
    /// Columns per scale.
    pub block: usize,
    /// Weight rows used.
    pub rows: usize,
    /// Columns of every row, padding included: a whole number of [`GROUP`]s.
    pub padded: usize,
}

impl CodedPanels<'_> {
    /// Whether the slices hold everything the counts promise for format `F`, which the raw
    /// loads rely on.
    pub(crate) fn is_valid<F: Codes>(&self) -> bool {
        let scales_ok = !F::SCALED
            || (self.block > 0
                && self.block.is_multiple_of(GROUP)
                && self.blocks == self.padded.div_ceil(self.block)
                && self.scales.len() >= self.rows * self.blocks);
        (1..=MAX_BLOCK_M).contains(&self.mb)
            && self.padded > 0
            && self.padded.is_multiple_of(GROUP)
            && self.row_bytes == self.padded * F::BITS / 8
            && self.x.len() >= self.mb * self.padded
            && self.codes.len() >= self.rows * self.row_bytes
            && scales_ok
    }
}

/// Weight rows per group for `m` input rows on `registers` vector registers, when each row also
/// holds a widened vector and a scale: from 1 to 4.
pub(crate) const fn coded_group_rows(registers: usize, m: usize) -> usize {
    let fit = registers.saturating_sub(2) / (m + 2);
    if fit < 1 {
        1
    } else if fit > 4 {
        4
    } else {
        fit
    }
}

/// `out[i][col0 + r] = x[i] · w[r]` for every input row and weight row of the panels. Invalid
/// panels or too few outputs compute nothing; nothing is read out of bounds.
#[inline(always)]
pub(crate) fn block<S: Widen, F: Codes>(
    s: S,
    p: CodedPanels<'_>,
    out: &mut [&mut [f32]],
    col0: usize,
) {
    if !p.is_valid::<F>() || out.len() < p.mb || out.iter().any(|o| o.len() < col0 + p.rows) {
        return;
    }
    match p.mb {
        1 => rows::<S, F, 1>(s, p, out, col0),
        2 => rows::<S, F, 2>(s, p, out, col0),
        3 => rows::<S, F, 3>(s, p, out, col0),
        4 => rows::<S, F, 4>(s, p, out, col0),
        5 => rows::<S, F, 5>(s, p, out, col0),
        6 => rows::<S, F, 6>(s, p, out, col0),
        7 => rows::<S, F, 7>(s, p, out, col0),
        8 => rows::<S, F, 8>(s, p, out, col0),
        _ => {}
    }
}

/// The panels' weight rows against `M` input rows in groups sized for the registers.
#[inline(always)]
fn rows<S: Widen, F: Codes, const M: usize>(
    s: S,
    p: CodedPanels<'_>,
    out: &mut [&mut [f32]],
    col0: usize,
) {
    match const { coded_group_rows(S::REGISTERS, M) } {
        4 => groups::<S, F, M, 4>(s, p, out, col0),
        3 => groups::<S, F, M, 3>(s, p, out, col0),
        2 => groups::<S, F, M, 2>(s, p, out, col0),
        _ => groups::<S, F, M, 1>(s, p, out, col0),
    }
}

/// Groups of `R` weight rows, the rest one at a time.
#[inline(always)]
fn groups<S: Widen, F: Codes, const M: usize, const R: usize>(
    s: S,
    p: CodedPanels<'_>,
    out: &mut [&mut [f32]],
    col0: usize,
) {
    let mut r = 0;
    while r + R <= p.rows {
        group::<S, F, M, R>(s, p, r, out, col0 + r);
        r += R;
    }
    while r < p.rows {
        group::<S, F, M, 1>(s, p, r, out, col0 + r);
        r += 1;
    }
}

/// `out[i][col + j] = x[i] · w[r0 + j]` for `i < M`, `j < R`.
#[inline(always)]
fn group<S: Widen, F: Codes, const M: usize, const R: usize>(
    s: S,
    p: CodedPanels<'_>,
    r0: usize,
    out: &mut [&mut [f32]],
    col: usize,
) {
    // `is_valid` checked the lengths the loads below rely on; the group's rows exist.
    if r0 + R > p.rows {
        return;
    }
    let xp = p.x.as_ptr();
    let rows: [*const u8; R] = std::array::from_fn(|j| p.codes[(r0 + j) * p.row_bytes..].as_ptr());
    let block = if F::SCALED { p.block } else { p.padded };
    let mut acc = [[s.zero(); R]; M];
    let mut c0 = 0;
    let mut b = 0;
    while c0 < p.padded {
        // Both are multiples of GROUP, so of LANES: the block holds whole vectors.
        let c1 = (c0 + block).min(p.padded);
        let scale: [S::V; R] = std::array::from_fn(|j| {
            if F::SCALED {
                s.splat(p.scales[(r0 + j) * p.blocks + b])
            } else {
                s.zero()
            }
        });
        let mut c = c0;
        while c < c1 {
            let mut wv = [s.zero(); R];
            for (j, v) in wv.iter_mut().enumerate() {
                // SAFETY: c is a multiple of LANES and c + LANES ≤ padded; row r0 + j's
                // row_bytes codes are inside `codes` (is_valid, r0 + R ≤ rows).
                let widened = unsafe { F::widen(s, rows[j], c) };
                *v = if F::SCALED {
                    s.mul(widened, scale[j])
                } else {
                    widened
                };
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: i·padded + c + LANES ≤ M·padded ≤ x.len() (is_valid).
                let xv = unsafe { s.load(xp.add(i * p.padded + c)) };
                for (a, v) in acc_i.iter_mut().zip(&wv) {
                    *a = s.fma(*v, xv, *a);
                }
            }
            c += S::LANES;
        }
        c0 = c1;
        b += 1;
    }
    for (o, acc_i) in out.iter_mut().zip(&acc) {
        for (j, a) in acc_i.iter().enumerate() {
            o[col + j] = s.reduce(*a);
        }
    }
}

/// Rows `r0 .. r0 + out.len() / cols` of `w` widened to f32 and scaled, `cols` floats each
/// into `out` (the large-batch path's operand for the f32 GEMM). A format other than `F`'s, rows
/// past the matrix or an `out` that is not whole rows write nothing.
#[inline(always)]
pub(crate) fn widen_rows<S: Widen, F: Codes>(s: S, w: &CodedMatrix, r0: usize, out: &mut [f32]) {
    let (cols, padded, row_bytes) = (w.cols(), w.padded_cols(), w.row_bytes());
    let blocks = w.blocks_per_row();
    let block = w.format().block().unwrap_or(padded);
    if cols == 0
        || !out.len().is_multiple_of(cols)
        || row_bytes != padded * F::BITS / 8
        || F::SCALED != w.format().block().is_some()
        || r0 + out.len() / cols > w.rows()
    {
        return;
    }
    let (codes, scales) = (w.codes(), w.scales());
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        let at = (r0 + r) * row_bytes;
        let codes = &codes[at..at + row_bytes];
        let mut c = 0;
        while c < cols {
            // SAFETY: c is a multiple of LANES and c + LANES ≤ padded (a multiple of GROUP,
            // so of LANES); the row's row_bytes codes are in `codes`.
            let mut v = unsafe { F::widen(s, codes.as_ptr(), c) };
            if F::SCALED {
                v = s.mul(v, s.splat(scales[(r0 + r) * blocks + c / block]));
            }
            if c + S::LANES <= cols {
                // SAFETY: c + LANES ≤ cols = row.len().
                unsafe { s.store(row.as_mut_ptr().add(c), v) };
            } else {
                // The row's last, partial vector: its padding lanes are not stored.
                let mut tail = [0f32; 16];
                // SAFETY: LANES ≤ 16 floats are writable in `tail`.
                unsafe { s.store(tail.as_mut_ptr(), v) };
                row[c..].copy_from_slice(&tail[..cols - c]);
            }
            c += S::LANES;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_leave_room_for_widened_rows_and_scales() {
        for registers in [16, 32] {
            for m in 1..=MAX_BLOCK_M {
                let r = coded_group_rows(registers, m);
                assert!(
                    r >= 1 && m * r + 2 * r + 1 < registers,
                    "{registers}: {m}×{r}"
                );
            }
        }
    }
}
