//! The seams of llmeff: the traits the engine drives and backends implement.
//!
//! [`runtime`] is how a model is loaded and run ([`runtime::Runtime`], [`runtime::LoadedModel`],
//! [`runtime::Generation`]); [`device`] is how devices are named (core sets and GPUs, replicas);
//! [`meter`] is how energy and utilisation are read
//! ([`meter::MeterProvider`], [`meter::EnergyCounter`], [`meter::Probe`]). Like ripgrep's
//! `grep-matcher`, this crate holds interfaces and their value types only (serde and
//! thiserror aside, no dependencies), so a backend or meter crate builds without Rhai, burn or
//! Arrow behind it.

pub mod device;
pub mod meter;
pub mod runtime;
pub mod serving;
