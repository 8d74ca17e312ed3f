//! llmeff's study session: everything between a planned study and its stored results. It
//! takes the study folder's lock, claims the folder for the plan (the supersede policy),
//! executes the schedule through a [`api::runtime::Runtime`] and [`api::meter::MeterProvider`]
//! into a Parquet store, compacts the tables and writes the summaries. It prints nothing: a
//! [`StudyObserver`] receives progress and notes, and the binary renders them.

pub mod claim;
pub mod error;
pub mod observer;
pub mod provenance;
pub mod quality_cache;
pub mod session;
pub mod shard;
pub mod sink;

pub use claim::{Claim, ScriptOrigin, claim_study};
pub use error::StudyError;
pub use observer::{StudyNote, StudyObserver};
pub use provenance::{BuildInfo, Provenance};
pub use quality_cache::StudyReferenceCache;
pub use session::{StudyOptions, StudyResult, StudySession};
pub use shard::{ShardEnvError, ShardLayoutError, ShardSource, TaskShard, shard_from_env};
pub use sink::{StoreSink, replica_row, run_row};
