//! Phi-3 (`Phi3ForCausalLM`): Llama computed from fused checkpoint tensors (`qkv_proj`: q, k and
//! v rows stacked; `gate_up_proj`: gate rows then up rows), rotary embeddings on the leading
//! `partial_rotary_factor` of each head, and a sliding window in every layer when
//! `sliding_window` is set (Phi-3-mini-4k: 2047).

use super::{Activation, Architecture, Family, FamilyError, FamilyKeys, positive};

/// Llama's blocks over fused projections, with partial rotation.
pub(super) fn architecture(
    keys: &FamilyKeys,
    layers: usize,
    rope_partial_factor: Option<f64>,
) -> Result<Architecture, FamilyError> {
    keys.activation("hidden_act", "silu", &[("silu", Activation::Silu)])?;
    keys.no_biases(Family::Phi3)?;
    keys.none_of_gemmas()?;
    let factor = match (keys.partial_rotary_factor, rope_partial_factor) {
        (Some(a), Some(b)) if a != b => {
            return Err(FamilyError::Invalid(format!(
                "partial_rotary_factor ({a}) disagrees with rope_parameters.partial_rotary_factor ({b})"
            )));
        }
        (Some(f), _) | (None, Some(f)) => positive("partial_rotary_factor", f)?,
        (None, None) => 1.0,
    };
    if factor > 1.0 {
        return Err(FamilyError::Invalid(format!(
            "partial_rotary_factor ({factor}) must be at most 1"
        )));
    }
    let window = keys.window()?;
    Ok(Architecture {
        family: Family::Phi3,
        partial_rotary_factor: factor,
        fused_projections: true,
        layer_windows: keys.layer_windows(layers, |_| window.is_some())?,
        ..Architecture::llama(layers)
    })
}
