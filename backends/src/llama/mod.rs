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
mod model;
mod quant;
mod rope;
mod weights;

pub(crate) use loaded::LoadedLlama;
