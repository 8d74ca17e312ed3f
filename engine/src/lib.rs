//! The llmeff engine: study scripts become plans, plans become schedules, schedules run.
//!
//! It owns the Rhai DSL and its module resolver, the plan DAG (petgraph), scheduling,
//! execution and latency arithmetic. It deliberately knows nothing about burn, CUDA or Arrow:
//! models run behind the traits of the `api` crate, and finished runs leave through
//! [`record::RecordSink`].

mod arrivals;
pub mod batching;
pub mod carbon;
pub mod execute;
pub mod flops;
pub mod latency;
pub mod limits;
pub mod metering;
pub mod options;
pub mod placement;
pub mod plan;
pub mod prompts;
pub mod quality;
pub mod quality_run;
pub mod record;
pub mod reference;
pub mod replicas;
pub mod resolver;
pub mod schedule;
pub mod script;
pub mod serving;
pub mod shuffle;
pub mod stage;
pub mod suggest;
pub mod trace;
pub mod vocabulary;
