//! burn implementations of the engine's model runtime: model sources, devices, the Llama
//! architecture, weight loading (safetensors or seeded random), tokenization and decoding.
//!
//! API Boundary: the engine sees only [`BurnRuntime`] (an `engine::runtime::Runtime`) and the
//! `Box<dyn LoadedModel>` it returns; [`BurnModel`] additionally exposes logits for tests.

mod checkpoint;
mod device;
mod guard;
mod handle;
mod host;
mod llama;
mod random_init;
mod runtime;
mod sampler;
mod source;
mod tokenizer;

pub use handle::{BurnModel, LogitPositions, Logits};
pub use runtime::BurnRuntime;
