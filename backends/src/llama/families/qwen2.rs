//! Qwen2 and Qwen2.5 (`Qwen2ForCausalLM`): Llama with biases on the query, key and value
//! projections (always: the config has no switch), usually tied embeddings, and sliding
//! windows only in layers from `max_window_layers` on when `use_sliding_window` is set.

use super::{Activation, Architecture, Family, FamilyError, FamilyKeys};

/// Llama's blocks with q/k/v biases and Qwen's window rule.
pub(super) fn architecture(keys: &FamilyKeys, layers: usize) -> Result<Architecture, FamilyError> {
    keys.activation("hidden_act", "silu", &[("silu", Activation::Silu)])?;
    keys.none_of_gemmas()?;
    keys.full_rotary()?;
    Ok(Architecture {
        family: Family::Qwen2,
        qkv_bias: true,
        layer_windows: qwen_windows(keys, layers)?,
        ..Architecture::llama(layers)
    })
}

/// Qwen's rule (transformers 4): with `use_sliding_window`, layers at or past
/// `max_window_layers` slide; transformers 5 writes the result as `layer_types`.
pub(super) fn qwen_windows(
    keys: &FamilyKeys,
    layers: usize,
) -> Result<Vec<Option<usize>>, FamilyError> {
    let on = keys.use_sliding_window.unwrap_or(false);
    let from = keys.max_window_layers.unwrap_or(layers);
    keys.layer_windows(layers, |i| on && i >= from)
}
