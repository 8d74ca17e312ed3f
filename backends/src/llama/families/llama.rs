//! Llama (`LlamaForCausalLM`): the reference every other family is described against.

use super::{Activation, Architecture, Family, FamilyError, FamilyKeys};

/// Llama's blocks; any key of another family's that would change the numerics is refused.
pub(super) fn architecture(keys: &FamilyKeys, layers: usize) -> Result<Architecture, FamilyError> {
    keys.activation("hidden_act", "silu", &[("silu", Activation::Silu)])?;
    keys.no_biases(Family::Llama)?;
    keys.none_of_gemmas()?;
    keys.full_rotary()?;
    if keys.window()?.is_some() {
        return Err(FamilyError::Unsupported(
            "sliding_window: LlamaForCausalLM attends fully (a windowed Llama is `mistral`)".into(),
        ));
    }
    Ok(Architecture::llama(layers))
}
