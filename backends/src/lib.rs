//! burn implementations of the engine's model runtime: model sources (bundled aliases, folders,
//! Hugging Face Hub ids through the local cache, built-in preset configs), devices, the Llama
//! architecture, weight loading (safetensors or seeded random), tokenization and decoding.
//!
//! API Boundary: the engine sees only [`BurnRuntime`] (an `api::runtime::Runtime`) and the
//! `Box<dyn LoadedModel>` it returns; [`BurnModel`] additionally exposes logits for tests.

pub mod bundled;
mod checkpoint;
pub mod cores;
mod device;
mod error;
pub(crate) mod gguf;
mod guard;
mod handle;
mod host;
mod hub;
mod llama;
mod pinned;
mod presets;
mod random_init;
mod runtime;
mod sampler;
mod source;
mod tokenizer;
#[cfg(feature = "wgpu")]
mod wgpu_adapter;

pub use bundled::aliases as bundled_aliases;
pub use cores::{AffinityError, CoreSet, CoreSetError};
pub use handle::{BurnModel, LogitPositions, Logits};
pub use hub::HubCache;
pub use presets::preset_ids;
pub use runtime::BurnRuntime;
