//! The operands of one small-batch kernel call ([`Panels`]) and the ways their input rows can
//! lie in memory ([`XLayout`]): the types the streaming driver (`gemv`) and the per-ISA kernels
//! (`streaming`, `avx2`, `avx512`, `portable`) share, in a module of their own so neither side
//! imports the other for them.

/// Columns per chunk of an [`XLayout::Interleaved`] block: one AVX-512 vector.
pub(crate) const CHUNK: usize = 16;

/// Input rows one kernel pass applies each weight row to; bounded by the vector registers the
/// accumulators need.
pub(crate) const MAX_BLOCK_M: usize = 8;

/// How a kernel pass's input rows lie in [`Panels::x`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XLayout {
    /// Row after row, `[mb, k]`.
    Rows,
    /// In chunks of [`CHUNK`] columns, each holding that chunk of every row in turn: value
    /// `(i, p)` at `(p / 16)·16·mb + 16·i + p % 16`, the columns past `k` zero, `mb·k16` floats
    /// (`k16` = `k` rounded up to 16). Why: with the rows `k` floats apart, a pass reading 8 of
    /// them (k = 2048: 8 KiB apart) plus its weight rows keeps a dozen streams on one L1 set,
    /// more than the 8 ways of a 32 KiB L1 (AMD Zen 4); interleaved, x is one stream. With one
    /// row the two layouts are the same.
    Interleaved,
}

impl XLayout {
    /// Floats each input row of `k` columns takes in this layout.
    pub(crate) const fn row_len(self, k: usize) -> usize {
        match self {
            XLayout::Rows => k,
            XLayout::Interleaved => k.next_multiple_of(CHUNK),
        }
    }
}

/// One kernel call's operands: `mb` input rows and `rows` weight rows of `k` floats each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Panels<'a> {
    /// Input rows, laid out as `layout` says.
    pub x: &'a [f32],
    /// How `x` holds the rows.
    pub layout: XLayout,
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
        let x_len = self.mb * self.layout.row_len(self.k);
        (1..=MAX_BLOCK_M).contains(&self.mb)
            && self.k > 0
            && self.x.len() >= x_len
            && self.w.len() >= self.rows * self.k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_reject_rows_past_their_slices() {
        let data = [0.0f32; 10];
        let p = |mb, rows, k| Panels {
            x: &data,
            layout: XLayout::Rows,
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
        // Interleaved rows are padded to whole chunks: 2 rows of 5 take 32 floats.
        let interleaved = Panels {
            layout: XLayout::Interleaved,
            ..p(2, 2, 5)
        };
        assert!(!interleaved.is_valid());
    }
}
