//! Reading and writing rows as Parquet, atomically.
//!
//! Every file is written to a temporary name in the same folder, fsynced, then renamed, so a
//! reader (or a study killed mid-write) never sees a half-written file.

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crate::StoreError;
use crate::row::{Cell, Row};
use crate::schema::{Column, ColumnType, arrow_schema};

fn column_array(columns: &[Column], rows: &[Row], index: usize) -> ArrayRef {
    let cells = rows.iter().map(|r| &r.cells()[index]);
    match columns[index].ty {
        ColumnType::Text => Arc::new(
            cells
                .map(|c| match c {
                    Cell::Text(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<StringArray>(),
        ),
        ColumnType::Int => Arc::new(
            cells
                .map(|c| match c {
                    Cell::Int(i) => Some(*i),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        ColumnType::Float => Arc::new(
            cells
                .map(|c| match c {
                    Cell::Float(f) => Some(*f),
                    _ => None,
                })
                .collect::<Float64Array>(),
        ),
    }
}

/// Writes rows (all of `columns`) to `path` atomically.
pub fn write_rows(path: &Path, columns: &'static [Column], rows: &[Row]) -> Result<(), StoreError> {
    for row in rows {
        // Cells are laid out by position: a row of another table would be written under the
        // wrong names.
        if !std::ptr::eq(row.columns(), columns) && row.columns() != columns {
            return Err(StoreError::Schema(format!(
                "{}: a row of another table ({} columns, first `{}`)",
                path.display(),
                row.columns().len(),
                row.columns().first().map_or("", |c| c.name)
            )));
        }
        row.validate()?;
    }
    let schema = arrow_schema(columns);
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|i| column_array(columns, rows, i))
        .collect();
    let batch =
        RecordBatch::try_new(schema.clone(), arrays).map_err(|e| StoreError::arrow(path, e))?;
    write_batch(path, schema, &batch)
}

/// Writes one record batch to `path` atomically.
pub fn write_batch(
    path: &Path,
    schema: Arc<arrow_schema::Schema>,
    batch: &RecordBatch,
) -> Result<(), StoreError> {
    write_atomically(path, |file| {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| StoreError::parquet(path, e))?;
        writer
            .write(batch)
            .map_err(|e| StoreError::parquet(path, e))?;
        let file = writer
            .into_inner()
            .map_err(|e| StoreError::parquet(path, e))?;
        Ok(file)
    })
}

/// Writes bytes to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomically(path, |mut file| {
        file.write_all(bytes).map_err(|e| StoreError::io(path, e))?;
        Ok(file)
    })
}

fn write_atomically(
    path: &Path,
    fill: impl FnOnce(File) -> Result<File, StoreError>,
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    // Shards on several machines may write the same file on a shared filesystem: the pid
    // alone could collide, so the temporary name also carries the time and a counter.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = format!(
        "{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tmp = dir.join(format!(".{name}.{unique}.tmp"));
    let file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    let result = fill(file).and_then(|file| file.sync_all().map_err(|e| StoreError::io(&tmp, e)));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    // Persist the rename itself; a failure here is not fatal on filesystems that refuse
    // directory fsync.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a Parquet file written with `columns`; columns missing from the file read as null
/// (files from older llmeff versions), extra columns are ignored.
pub fn read_rows(path: &Path, columns: &'static [Column]) -> Result<Vec<Row>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| StoreError::parquet(path, e))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| StoreError::arrow(path, e))?;
        let sources: Vec<Option<ArrayRef>> = columns
            .iter()
            .map(|c| batch.column_by_name(c.name).cloned())
            .collect();
        for r in 0..batch.num_rows() {
            let cells = columns
                .iter()
                .zip(&sources)
                .map(|(c, array)| cell_at(c, array.as_ref(), r))
                .collect();
            rows.push(Row::from_cells(columns, cells));
        }
    }
    Ok(rows)
}

fn cell_at(column: &Column, array: Option<&ArrayRef>, row: usize) -> Cell {
    let Some(array) = array else {
        return Cell::Null;
    };
    if array.is_null(row) {
        return Cell::Null;
    }
    let any = array.as_any();
    match column.ty {
        ColumnType::Text => any
            .downcast_ref::<StringArray>()
            .map_or(Cell::Null, |a| Cell::Text(a.value(row).to_string())),
        ColumnType::Int => any
            .downcast_ref::<Int64Array>()
            .map_or(Cell::Null, |a| Cell::Int(a.value(row))),
        ColumnType::Float => any
            .downcast_ref::<Float64Array>()
            .map_or(Cell::Null, |a| Cell::Float(a.value(row))),
    }
}
