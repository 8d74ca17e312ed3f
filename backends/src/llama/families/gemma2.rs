//! Gemma 2 (`Gemma2ForCausalLM`): norm scales stored as `w` with the scale `1 + w`, embeddings
//! times `√hidden_size`, a GELU-tanh gated MLP, a norm before and after each block, scores
//! scaled by `1/√query_pre_attn_scalar` and soft-capped, logits soft-capped, and local
//! (sliding-window) and global layers alternating, the first local.

use super::{
    Activation, Architecture, Family, FamilyError, FamilyKeys, NormPlacement, positive, soft_cap,
};

/// transformers' `Gemma2Config` defaults.
const DEFAULT_ATTN_SOFTCAP: f64 = 50.0;
const DEFAULT_FINAL_SOFTCAP: f64 = 30.0;
const DEFAULT_QUERY_PRE_ATTN_SCALAR: f64 = 256.0;

/// Gemma 2's blocks.
pub(super) fn architecture(keys: &FamilyKeys, layers: usize) -> Result<Architecture, FamilyError> {
    // Gemma's configs name it `hidden_activation`; transformers reads only that key.
    let activation = keys.activation(
        "hidden_activation",
        "gelu_pytorch_tanh",
        &[("gelu_pytorch_tanh", Activation::GeluTanh)],
    )?;
    keys.no_biases(Family::Gemma2)?;
    keys.full_rotary()?;
    Ok(Architecture {
        family: Family::Gemma2,
        norm_weight_offset: true,
        embedding_scale: true,
        activation,
        norms: NormPlacement::Sandwich,
        attn_logit_softcap: soft_cap(
            "attn_logit_softcapping",
            keys.attn_logit_softcapping.as_ref(),
            DEFAULT_ATTN_SOFTCAP,
        )?,
        final_logit_softcap: soft_cap(
            "final_logit_softcapping",
            keys.final_logit_softcapping.as_ref(),
            DEFAULT_FINAL_SOFTCAP,
        )?,
        query_pre_attn_scalar: Some(positive(
            "query_pre_attn_scalar",
            keys.query_pre_attn_scalar
                .unwrap_or(DEFAULT_QUERY_PRE_ATTN_SCALAR),
        )?),
        // transformers 4: layer i is local when i is even.
        layer_windows: keys.layer_windows(layers, |i| i % 2 == 0)?,
        ..Architecture::llama(layers)
    })
}
