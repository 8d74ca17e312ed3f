//! Model families: what sets each checkpoint format apart from Llama's, one module per family
//! (candle's style). Every family here is a Llama-style decoder (RMSNorm, rotary attention with
//! grouped key/value heads, a gated MLP), so both forward passes are written once, over the
//! building blocks an [`Architecture`] switches on; a family's module reads its own
//! `config.json` keys into that description and says how its checkpoint names its tensors.

mod gemma2;
mod llama;
mod mistral;
mod phi3;
mod qwen2;
mod qwen3;

use serde::Deserialize;
use serde_json::Value;

/// A supported model family, by its `config.json` `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `llama`: `LlamaForCausalLM`.
    Llama,
    /// `mistral`: Llama with sliding-window attention.
    Mistral,
    /// `qwen2` (Qwen2, Qwen2.5): biases on the query, key and value projections.
    Qwen2,
    /// `qwen3`: RMSNorm on each query and key head, an explicit head width.
    Qwen3,
    /// `phi3`: fused projections in the checkpoint, partial rotary embeddings.
    Phi3,
    /// `gemma2`: (1 + w) norms, scaled embeddings, GELU-tanh, soft-capping, sandwich norms,
    /// alternating local and global layers.
    Gemma2,
}

impl Family {
    /// Every supported family, in the order errors list them.
    pub(crate) const ALL: [Family; 6] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Phi3,
        Family::Gemma2,
    ];

    /// The `model_type` in `config.json`.
    pub(crate) fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Phi3 => "phi3",
            Family::Gemma2 => "gemma2",
        }
    }

    /// The transformers class a checkpoint of this family names in `architectures`.
    pub(crate) fn causal_lm_class(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mistral => "MistralForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Qwen3 => "Qwen3ForCausalLM",
            Family::Phi3 => "Phi3ForCausalLM",
            Family::Gemma2 => "Gemma2ForCausalLM",
        }
    }

    /// transformers' default for `tie_word_embeddings` in this family's config class.
    pub(crate) fn default_tie_word_embeddings(self) -> bool {
        self == Family::Gemma2
    }

    /// transformers' default `head_dim` where the config class has one of its own (Gemma 2:
    /// 256), else `None` (`hidden_size / num_attention_heads`).
    pub(crate) fn default_head_dim(self) -> Option<usize> {
        (self == Family::Gemma2).then_some(256)
    }

    /// transformers' default `rms_norm_eps` where it differs from Llama's 1e-6 (Phi-3: 1e-5).
    pub(crate) fn default_rms_norm_eps(self) -> Option<f64> {
        (self == Family::Phi3).then_some(1e-5)
    }

    /// The family whose `model_type` is `name`.
    pub(crate) fn from_model_type(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == name)
    }

    /// The supported `model_type`s, comma-separated, for errors.
    pub(crate) fn supported_model_types() -> String {
        Self::ALL.map(Family::model_type).join(", ")
    }

    /// Reads this family's keys of `config.json` into the blocks its forward pass uses.
    /// `rope_partial_factor` is `rope_parameters.partial_rotary_factor` (transformers 5).
    pub(crate) fn architecture(
        self,
        keys: &FamilyKeys,
        layers: usize,
        rope_partial_factor: Option<f64>,
    ) -> Result<Architecture, FamilyError> {
        if self != Family::Phi3 && rope_partial_factor.is_some_and(|f| f != 1.0) {
            return Err(FamilyError::Unsupported(format!(
                "rope_parameters.partial_rotary_factor: {} rotates whole heads",
                self.causal_lm_class()
            )));
        }
        match self {
            Family::Llama => llama::architecture(keys, layers),
            Family::Mistral => mistral::architecture(keys, layers),
            Family::Qwen2 => qwen2::architecture(keys, layers),
            Family::Qwen3 => qwen3::architecture(keys, layers),
            Family::Phi3 => phi3::architecture(keys, layers, rope_partial_factor),
            Family::Gemma2 => gemma2::architecture(keys, layers),
        }
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `silu(gate) · up` (SwiGLU).
    Silu,
    /// `gelu_tanh(gate) · up`: PyTorch's tanh approximation of GELU (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// How a decoder layer's norms sit around its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormPlacement {
    /// `x += attn(norm(x)); x += mlp(norm(x))` (Llama).
    Pre,
    /// `x += norm(attn(norm(x))); x += norm(mlp(norm(x)))` (Gemma 2: a norm before and after
    /// each block).
    Sandwich,
}

/// What a forward pass computes for one family: the switches on the shared building blocks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Architecture {
    /// The family these switches describe.
    pub family: Family,
    /// Biases on the query, key and value projections (not the output's).
    pub qkv_bias: bool,
    /// RMSNorm over each query and key head (width `head_dim`) before the rotation.
    pub qk_norm: bool,
    /// Norm weights stored as an offset from one, the scale being `1 + w` (Gemma): the loader
    /// adds the one, so the passes see the scale itself.
    pub norm_weight_offset: bool,
    /// Embeddings multiplied by `√hidden_size`, rounded to the run dtype first (Gemma).
    pub embedding_scale: bool,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Where the norms sit.
    pub norms: NormPlacement,
    /// Scores soft-capped as `cap · tanh(s / cap)` after scaling, before the mask.
    pub attn_logit_softcap: Option<f64>,
    /// Logits soft-capped as `cap · tanh(l / cap)`.
    pub final_logit_softcap: Option<f64>,
    /// Scores scaled by `1/√query_pre_attn_scalar` instead of `1/√head_dim` (Gemma).
    pub query_pre_attn_scalar: Option<f64>,
    /// The share of each head's dimensions that rotary embeddings rotate (the leading ones);
    /// 1 rotates the whole head.
    pub partial_rotary_factor: f64,
    /// The checkpoint stores `qkv_proj` (q, k, v rows stacked) and `gate_up_proj` (gate then
    /// up) instead of the separate projections (Phi-3).
    pub fused_projections: bool,
    /// Per layer, the sliding window (a query sees the `window` most recent positions, itself
    /// included), or `None` for full causal attention.
    pub layer_windows: Vec<Option<usize>>,
}

impl Architecture {
    /// Llama's blocks for `layers` layers, every switch off.
    pub(crate) fn llama(layers: usize) -> Self {
        Self {
            family: Family::Llama,
            qkv_bias: false,
            qk_norm: false,
            norm_weight_offset: false,
            embedding_scale: false,
            activation: Activation::Silu,
            norms: NormPlacement::Pre,
            attn_logit_softcap: None,
            final_logit_softcap: None,
            query_pre_attn_scalar: None,
            partial_rotary_factor: 1.0,
            fused_projections: false,
            layer_windows: vec![None; layers],
        }
    }
}

/// The `config.json` keys that differ between families, as written (read with the common ones
/// by [`super::config`]). A family that does not use a key refuses a value that would change
/// its numerics.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FamilyKeys {
    /// Llama's and most families' activation key.
    pub hidden_act: Option<String>,
    /// Gemma's activation key.
    pub hidden_activation: Option<String>,
    /// Biases on the attention projections (Llama, Qwen3, Gemma: all four).
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections (Llama).
    #[serde(default)]
    pub mlp_bias: bool,
    /// The sliding window's length in positions.
    pub sliding_window: Option<Value>,
    /// Qwen's switch for sliding windows.
    pub use_sliding_window: Option<bool>,
    /// Qwen: layers below this index attend fully when sliding windows are on.
    pub max_window_layers: Option<usize>,
    /// transformers 5's per-layer attention kinds (`full_attention`, `sliding_attention`).
    pub layer_types: Option<Vec<String>>,
    /// Gemma 2: the attention scores' soft cap (absent: the family's default; null: none).
    #[serde(default, deserialize_with = "present")]
    pub attn_logit_softcapping: Option<Value>,
    /// Gemma 2: the logits' soft cap (absent: the family's default; null: none).
    #[serde(default, deserialize_with = "present")]
    pub final_logit_softcapping: Option<Value>,
    /// Gemma 2: scores are scaled by `1/√query_pre_attn_scalar`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Phi-3 (transformers 4; transformers 5 moves it into `rope_parameters`).
    pub partial_rotary_factor: Option<f64>,
}

/// A key that is present, null included (serde reads a null `Option` as absent).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Why a family's keys were refused: a value this implementation does not compute, or a
/// malformed one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FamilyError {
    /// A valid setting whose numerics are not implemented.
    Unsupported(String),
    /// A malformed value.
    Invalid(String),
}

impl FamilyKeys {
    /// The activation under `key`, checked against the one the family computes
    /// (`default` when absent).
    fn activation(
        &self,
        key: &str,
        default: &str,
        allowed: &[(&str, Activation)],
    ) -> Result<Activation, FamilyError> {
        let value = match key {
            "hidden_activation" => self.hidden_activation.as_deref(),
            _ => self.hidden_act.as_deref(),
        }
        .unwrap_or(default);
        allowed
            .iter()
            .find(|(name, _)| *name == value)
            .map(|&(_, activation)| activation)
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                FamilyError::Unsupported(format!(
                    "{key} `{value}`: supported: {}",
                    names.join(", ")
                ))
            })
    }

    /// Refuses biases the family's modelling code has no place for.
    fn no_biases(&self, family: Family) -> Result<(), FamilyError> {
        if self.attention_bias {
            return Err(FamilyError::Unsupported(format!(
                "attention_bias = true: {} with attention biases is not supported",
                family.causal_lm_class()
            )));
        }
        if self.mlp_bias {
            return Err(FamilyError::Unsupported(format!(
                "mlp_bias = true: {} with MLP biases is not supported",
                family.causal_lm_class()
            )));
        }
        Ok(())
    }

    /// The sliding window length, `None` when the key is absent or null.
    fn window(&self) -> Result<Option<usize>, FamilyError> {
        match &self.sliding_window {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64().and_then(|w| usize::try_from(w).ok()) {
                Some(w) if w > 0 => Ok(Some(w)),
                _ => Err(FamilyError::Invalid(format!(
                    "sliding_window ({v}) must be a positive integer or null"
                ))),
            },
        }
    }

    /// Per layer, the window from `layer_types` (transformers 5) when present, else from
    /// `derive(layer)` (whether layer `i` slides under the family's transformers 4 rule).
    fn layer_windows(
        &self,
        layers: usize,
        derive: impl Fn(usize) -> bool,
    ) -> Result<Vec<Option<usize>>, FamilyError> {
        let window = self.window()?;
        let slides: Vec<bool> = match &self.layer_types {
            Some(types) => {
                if types.len() != layers {
                    return Err(FamilyError::Invalid(format!(
                        "layer_types has {} entries for {layers} layers",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "full_attention" => Ok(false),
                        "sliding_attention" => Ok(true),
                        other => Err(FamilyError::Unsupported(format!(
                            "layer_types entry `{other}`: supported: full_attention, sliding_attention"
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            None => (0..layers).map(derive).collect(),
        };
        slides
            .into_iter()
            .map(|s| match (s, window) {
                (false, _) => Ok(None),
                (true, Some(w)) => Ok(Some(w)),
                (true, None) => Err(FamilyError::Invalid(
                    "a layer uses sliding attention but sliding_window is not set".into(),
                )),
            })
            .collect()
    }

    /// Refuses keys only other families use, when set to a value that changes the numerics.
    fn none_of_gemmas(&self) -> Result<(), FamilyError> {
        for (key, set) in [
            (
                "attn_logit_softcapping",
                self.attn_logit_softcapping
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
            (
                "final_logit_softcapping",
                self.final_logit_softcapping
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
            (
                "query_pre_attn_scalar",
                self.query_pre_attn_scalar.is_some(),
            ),
        ] {
            if set {
                return Err(FamilyError::Unsupported(format!(
                    "{key} is set, but this family does not use it"
                )));
            }
        }
        Ok(())
    }

    /// Refuses a partial rotary factor other than one.
    fn full_rotary(&self) -> Result<(), FamilyError> {
        match self.partial_rotary_factor {
            None => Ok(()),
            Some(1.0) => Ok(()),
            Some(f) => Err(FamilyError::Unsupported(format!(
                "partial_rotary_factor = {f}: this family rotates whole heads"
            ))),
        }
    }
}

/// A soft cap: `default` when `value` is absent, none when it is null, else a positive number.
fn soft_cap(key: &str, value: Option<&Value>, default: f64) -> Result<Option<f64>, FamilyError> {
    match value {
        None => Ok(Some(default)),
        Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| FamilyError::Invalid(format!("{key} ({v}) must be a number or null")))
            .and_then(|c| positive(key, c))
            .map(Some),
    }
}

/// A positive, finite value of `key`.
fn positive(key: &str, value: f64) -> Result<f64, FamilyError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(FamilyError::Invalid(format!(
            "{key} ({value}) must be positive"
        )))
    }
}

#[cfg(test)]
mod tests;
