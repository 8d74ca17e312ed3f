//! A generic, read-only view of a Parquet table by column name.
//!
//! The report reads whatever columns a study folder holds: files written by older or newer
//! llmeff versions may lack columns or carry new ones, so nothing here depends on the schema
//! constants. A missing column and a null cell read the same.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatchReader};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::ReportError;
use crate::row::Cell;

/// Rows of one table, cells addressed by column name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableView {
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

static NULL: Cell = Cell::Null;

impl TableView {
    /// A table from column names and rows (each row as long as `columns`).
    pub fn new(columns: Vec<String>, rows: Vec<Vec<Cell>>) -> Self {
        TableView { columns, rows }
    }

    /// Reads every row group of a Parquet file; columns of types the report cannot show read
    /// as null.
    pub fn read(path: &Path) -> Result<TableView, ReportError> {
        let file = File::open(path).map_err(|e| ReportError::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| ReportError::read(path, e))?;
        let columns: Vec<String> = reader
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| ReportError::read(path, e))?;
            let arrays: Vec<&ArrayRef> = batch.columns().iter().collect();
            for r in 0..batch.num_rows() {
                rows.push(arrays.iter().map(|a| cell_at(a.as_ref(), r)).collect());
            }
        }
        Ok(TableView { columns, rows })
    }

    /// Column names in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether the table has a column of that name (it may still be all null).
    pub fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c == name)
    }

    /// The cell at `row` of column `name`; null when the column or row does not exist.
    pub fn get(&self, row: usize, name: &str) -> &Cell {
        match self.columns.iter().position(|c| c == name) {
            Some(i) => self.rows.get(row).and_then(|r| r.get(i)).unwrap_or(&NULL),
            None => &NULL,
        }
    }

    /// A numeric cell as a float (integers widen); null, text and non-finite values are `None`.
    pub fn float(&self, row: usize, name: &str) -> Option<f64> {
        match self.get(row, name) {
            Cell::Float(f) if f.is_finite() => Some(*f),
            // Counts fit f64 exactly up to 2^53, far beyond any batch size or token count.
            Cell::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// An integer cell.
    pub fn int(&self, row: usize, name: &str) -> Option<i64> {
        match self.get(row, name) {
            Cell::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A text cell.
    pub fn text(&self, row: usize, name: &str) -> Option<&str> {
        match self.get(row, name) {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Whether any row has a non-null value in column `name`.
    pub fn any_value(&self, name: &str) -> bool {
        (0..self.len()).any(|r| *self.get(r, name) != Cell::Null)
    }
}

fn cell_at(array: &dyn Array, row: usize) -> Cell {
    if array.is_null(row) {
        return Cell::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Cell::Text(array.as_string_view().value(row).to_string()),
        DataType::Boolean => Cell::Text(array.as_boolean().value(row).to_string()),
        DataType::Int8 => Cell::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Cell::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Cell::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Cell::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Cell::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Cell::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Cell::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            i64::try_from(v).map_or(Cell::Float(v as f64), Cell::Int)
        }
        DataType::Float32 => Cell::from(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => Cell::from(array.as_primitive::<Float64Type>().value(row)),
        // Nested, temporal and binary columns are not part of any llmeff table.
        _ => Cell::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableView {
        TableView::new(
            vec!["a".into(), "b".into()],
            vec![
                vec![Cell::Int(3), Cell::Null],
                vec![Cell::Float(1.5), Cell::Text("x".into())],
            ],
        )
    }

    #[test]
    fn missing_columns_and_rows_read_as_null() {
        let t = table();
        assert_eq!(t.get(0, "nope"), &Cell::Null);
        assert_eq!(t.get(9, "a"), &Cell::Null);
        assert_eq!(t.float(0, "a"), Some(3.0));
        assert_eq!(t.float(1, "a"), Some(1.5));
        assert_eq!(t.float(1, "b"), None);
        assert_eq!(t.text(1, "b"), Some("x"));
        assert!(t.any_value("b"));
        assert!(!t.any_value("nope"));
        assert!(t.has_column("b"));
    }
}
