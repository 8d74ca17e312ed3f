//! Mistral (`MistralForCausalLM`): Llama with sliding-window attention in every layer when
//! `sliding_window` is set (Mistral 7B v0.1: 4096; v0.3: null, i.e. full attention).

use super::{Activation, Architecture, Family, FamilyError, FamilyKeys};

/// Llama's blocks with every layer's window from `sliding_window`.
pub(super) fn architecture(keys: &FamilyKeys, layers: usize) -> Result<Architecture, FamilyError> {
    keys.activation("hidden_act", "silu", &[("silu", Activation::Silu)])?;
    keys.no_biases(Family::Mistral)?;
    keys.none_of_gemmas()?;
    keys.full_rotary()?;
    let window = keys.window()?;
    Ok(Architecture {
        family: Family::Mistral,
        layer_windows: keys.layer_windows(layers, |_| window.is_some())?,
        ..Architecture::llama(layers)
    })
}
