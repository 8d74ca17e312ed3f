//! Checked views of row-major `f32` matrices: a slice together with its shape, its length
//! checked once when the view is made, so a kernel is never handed a slice that disagrees with
//! the shape it is told and a mismatch reaches the caller as a [`ShapeError`] instead of being
//! skipped.

/// Why a slice or a set of operands does not fit the shape asked of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// The slice does not hold `rows · cols` values.
    #[error("a {rows}×{cols} matrix needs {expected} values, the slice holds {actual}")]
    Length {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
        /// `rows · cols`.
        expected: usize,
        /// The slice's length.
        actual: usize,
    },
    /// `rows · cols` does not fit in `usize`.
    #[error("a {rows}×{cols} matrix has more values than memory can hold")]
    Overflow {
        /// Rows asked for.
        rows: usize,
        /// Columns asked for.
        cols: usize,
    },
    /// Two operands of a product disagree on a dimension they share.
    #[error("{dimension}: expected {expected}, got {actual}")]
    Mismatch {
        /// Which dimension.
        dimension: Dimension,
        /// What the other operands fix it to.
        expected: usize,
        /// What this operand has.
        actual: usize,
    },
}

/// A dimension the operands of `y = x · wᵀ` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// `w`'s columns against `x`'s columns (the depth `k`).
    Depth,
    /// `y`'s rows against `x`'s rows (`m`).
    OutputRows,
    /// `y`'s columns against `w`'s rows (`n`).
    OutputCols,
}

impl std::fmt::Display for Dimension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dimension::Depth => "the weight's columns (depth) against the input's",
            Dimension::OutputRows => "the output's rows against the input's",
            Dimension::OutputCols => "the output's columns against the weight's rows",
        })
    }
}

/// `Ok` when a slice of `len` values holds a `rows × cols` matrix.
fn check_len(len: usize, rows: usize, cols: usize) -> Result<(), ShapeError> {
    let expected = rows
        .checked_mul(cols)
        .ok_or(ShapeError::Overflow { rows, cols })?;
    let wrong = ShapeError::Length {
        rows,
        cols,
        expected,
        actual: len,
    };
    (expected == len).then_some(()).ok_or(wrong)
}

/// `Ok` when `actual == expected`, else a [`ShapeError::Mismatch`] on `dimension`.
pub(crate) fn agree(
    dimension: Dimension,
    expected: usize,
    actual: usize,
) -> Result<(), ShapeError> {
    let mismatch = ShapeError::Mismatch {
        dimension,
        expected,
        actual,
    };
    (expected == actual).then_some(()).ok_or(mismatch)
}

/// A read-only `rows × cols` row-major matrix whose slice holds exactly `rows · cols` values.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> Matrix<'a> {
    /// Views `data` as `rows × cols`, or says why it cannot.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, ShapeError> {
        check_len(data.len(), rows, cols)?;
        Ok(Self { data, rows, cols })
    }

    /// The values, row after row.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A writable `rows × cols` row-major matrix whose slice holds exactly `rows · cols` values.
#[derive(Debug)]
pub struct MatrixMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatrixMut<'a> {
    /// Views `data` as `rows × cols`, or says why it cannot.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, ShapeError> {
        check_len(data.len(), rows, cols)?;
        Ok(Self { data, rows, cols })
    }

    /// The values, row after row.
    pub fn data(&self) -> &[f32] {
        self.data
    }

    /// The values, row after row, to write.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_accept_exact_lengths_only() {
        let data = [0.0f32; 6];
        let m = Matrix::new(&data, 2, 3).expect("2×3 of 6");
        assert_eq!((m.rows(), m.cols(), m.data().len()), (2, 3, 6));
        assert_eq!(
            Matrix::new(&data, 2, 2).unwrap_err(),
            ShapeError::Length {
                rows: 2,
                cols: 2,
                expected: 4,
                actual: 6
            }
        );
        assert!(Matrix::new(&[], 5, 0).is_ok());
        assert_eq!(
            Matrix::new(&[], usize::MAX, 2).unwrap_err(),
            ShapeError::Overflow {
                rows: usize::MAX,
                cols: 2
            }
        );
        let mut out = [0.0f32; 5];
        assert!(matches!(
            MatrixMut::new(&mut out, 2, 3),
            Err(ShapeError::Length { actual: 5, .. })
        ));
    }

    #[test]
    fn errors_name_what_disagrees() {
        let e = agree(Dimension::Depth, 4, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: expected 4, got 3", Dimension::Depth)
        );
        assert!(agree(Dimension::OutputCols, 7, 7).is_ok());
    }
}
