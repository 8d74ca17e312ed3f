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
    #[error("study locked by {holder} (lock file {path}); wait for it or stop it")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as the holder wrote it (`pid 123 on host-a since …`), or `another
        /// process` when it has not written itself yet.
        holder: String,
    },
    /// Another study's execution, under another shard layout, is live in the same folder.
    #[error(
        "study is being run as {holder} (lock file {path}); a plain run and shards of another count would run the same work twice: wait for it or use the same --shard count"
    )]
    LayoutConflict {
        /// The lock file of the other layout.
        path: PathBuf,
        /// The other layout's holder.
        holder: String,
    },
    /// `manifest.json` cannot be read.
    #[error(
        "{path} is corrupt ({reason}); rerun with --force to move it aside and start the study afresh"
    )]
    CorruptManifest {
        /// The manifest.
        path: PathBuf,
        /// What the JSON parser said.
        reason: String,
    },
    /// Compaction found a different number of rows than parts it read.
    #[error(
        "compaction read {parts} parts of {dir} but built {rows} rows; runs.parquet was left as it was"
    )]
    CompactionMismatch {
        /// The study folder.
        dir: PathBuf,
        /// Distinct (run hash, cycle) parts read.
        parts: usize,
        /// Rows built.
        rows: usize,
    },
    /// A replica part holds rows of another execution, or one replica twice.
    #[error("{path}: replica rows must all be of run {run_hash} cycle {cycle}, each replica once")]
    ReplicaPartMismatch {
        /// The replica part (`replicas/<run_hash>-c<cycle>.parquet`).
        path: PathBuf,
        /// The execution's run hash, from the part's name.
        run_hash: String,
        /// The execution's cycle, from the part's name.
        cycle: i64,
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
