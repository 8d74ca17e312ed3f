//! llmeff's results: the table schemas, the Parquet store and its exports.
//!
//! It owns everything Arrow and Parquet; it knows nothing about Rhai, plans or burn. Rows are
//! filled by column name and checked against [`schema`], the one place columns are defined.

pub mod aggregate;
pub mod lock;
pub mod manifest;
pub mod parquet_io;
pub mod report;
pub mod row;
pub mod schema;
pub mod store;
pub mod time;

pub use lock::StudyLock;
pub use manifest::{Machine, Manifest, PlanChange};
pub use report::{Report, ReportError, write_report};
pub use row::{Cell, Row};
pub use store::Store;

use std::path::{Path, PathBuf};

/// Why results could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem failure.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Parquet encoding or decoding failure (e.g. a corrupt file).
    #[error("{path}: parquet: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the parquet library said.
        message: String,
    },
    /// A row does not fit the schema.
    #[error("schema: {0}")]
    Schema(String),
    /// Another process is writing this study.
    #[error("study is in use by {} (lock file {path}); wait for it or stop it", pid.map_or("another process".to_string(), |p| format!("pid {p}")))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder, when known.
        pid: Option<u32>,
    },
    /// The study folder holds results of a different plan.
    #[error("{0}")]
    PlanChanged(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parquet(path: &Path, e: parquet::errors::ParquetError) -> Self {
        StoreError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn arrow(path: &Path, e: arrow_schema::ArrowError) -> Self {
        StoreError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}
