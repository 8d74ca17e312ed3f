//! The Llama architecture (`LlamaForCausalLM`): config, weights, forward pass, KV cache and
//! generation, generic over the burn backend.

mod batch;
mod config;
mod files;
mod generation;
mod host_model;
mod kv_cache;
mod linear;
mod loaded;
pub(crate) mod memory;
mod model;
mod quant;
mod rope;
mod weights;

pub(crate) use files::ModelFiles;
pub(crate) use loaded::LoadedLlama;
