//! Qwen3 (`Qwen3ForCausalLM`): Llama with an RMSNorm over each query and key head before the
//! rotation, an explicit `head_dim` (Qwen3-0.6B: 16 heads of 128 on a 1024-wide stream), no
//! biases unless `attention_bias`, and Qwen's sliding-window rule.

use super::qwen2::qwen_windows;
use super::{Activation, Architecture, Family, FamilyError, FamilyKeys};

/// Llama's blocks with per-head q/k norms.
pub(super) fn architecture(keys: &FamilyKeys, layers: usize) -> Result<Architecture, FamilyError> {
    keys.activation("hidden_act", "silu", &[("silu", Activation::Silu)])?;
    keys.no_biases(Family::Qwen3)?;
    keys.none_of_gemmas()?;
    keys.full_rotary()?;
    Ok(Architecture {
        family: Family::Qwen3,
        qk_norm: true,
        layer_windows: qwen_windows(keys, layers)?,
        ..Architecture::llama(layers)
    })
}
