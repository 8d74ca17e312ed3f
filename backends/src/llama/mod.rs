//! The Llama architecture (`LlamaForCausalLM`): config, weights, KV cache and generation over
//! one forward-pass trait ([`forward::ForwardPass`]) with two implementations, burn's tensor
//! ops ([`model::BurnPass`], any backend) and llmeff's host kernels ([`host_model::HostPass`],
//! f32 on the CPU).

mod batch;
mod burn_quant;
mod config;
mod device_timing;
mod families;
mod files;
mod forward;
mod generation;
#[cfg(test)]
mod gguf_load_tests;
mod host_cache;
mod host_model;
mod host_weights;
mod kv_cache;
mod linear;
mod loaded;
pub(crate) mod memory;
mod model;
mod quant;
mod rope;
mod serving;
mod spinning;
mod weights;

pub(crate) use burn_quant::BurnQuantFormats;
pub(crate) use files::ModelFiles;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub(crate) use loaded::AdapterInfo;
pub(crate) use loaded::{PassChoice, load_llama};
pub(crate) use spinning::as_step_owner;
#[cfg(test)]
pub(crate) use spinning::is_step_owner;
