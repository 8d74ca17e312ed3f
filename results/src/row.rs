//! A row of a results table, filled by column name and checked against the schema.

use crate::StoreError;
use crate::schema::{Column, ColumnType};

/// One cell value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Missing (the figure is unavailable).
    Null,
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
}

impl Cell {
    fn fits(&self, ty: ColumnType) -> bool {
        matches!(
            (self, ty),
            (Cell::Null, _)
                | (Cell::Text(_), ColumnType::Text)
                | (Cell::Int(_), ColumnType::Int)
                | (Cell::Float(_), ColumnType::Float)
        )
    }

    /// Human-readable rendering for terminal tables.
    pub fn display(&self) -> String {
        match self {
            Cell::Null => "-".to_string(),
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => format_float(*f),
        }
    }
}

fn format_float(f: f64) -> String {
    let a = f.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{f:.0}")
    } else if a >= 10.0 {
        format!("{f:.1}")
    } else if a >= 0.01 {
        format!("{f:.3}")
    } else {
        format!("{f:.3e}")
    }
}

impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}
impl From<usize> for Cell {
    fn from(v: usize) -> Self {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        if v.is_finite() {
            Cell::Float(v)
        } else {
            Cell::Null
        }
    }
}
impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(v: Option<T>) -> Self {
        v.map_or(Cell::Null, Into::into)
    }
}

/// A row for a given column list; cells start null.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    columns: &'static [Column],
    cells: Vec<Cell>,
}

impl Row {
    /// An all-null row of `columns`.
    pub fn new(columns: &'static [Column]) -> Self {
        Row {
            columns,
            cells: vec![Cell::Null; columns.len()],
        }
    }

    /// Sets a cell by column name; unknown names and wrong types are errors.
    pub fn set(&mut self, name: &str, value: impl Into<Cell>) -> Result<&mut Self, StoreError> {
        let value = value.into();
        let index = self
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| StoreError::Schema(format!("no column named `{name}`")))?;
        if !value.fits(self.columns[index].ty) {
            return Err(StoreError::Schema(format!(
                "column `{name}` is {:?}, got {value:?}",
                self.columns[index].ty
            )));
        }
        self.cells[index] = value;
        Ok(self)
    }

    /// Checks non-nullable columns are filled.
    pub fn validate(&self) -> Result<(), StoreError> {
        for (c, v) in self.columns.iter().zip(&self.cells) {
            if !c.nullable && *v == Cell::Null {
                return Err(StoreError::Schema(format!(
                    "column `{}` must not be null",
                    c.name
                )));
            }
        }
        Ok(())
    }

    /// The cell of a column.
    pub fn get(&self, name: &str) -> Option<&Cell> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .map(|i| &self.cells[i])
    }

    /// The column list.
    pub fn columns(&self) -> &'static [Column] {
        self.columns
    }

    /// Cells in column order.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// A row rebuilt from cells read back from a file.
    pub(crate) fn from_cells(columns: &'static [Column], cells: Vec<Cell>) -> Self {
        Row { columns, cells }
    }
}
