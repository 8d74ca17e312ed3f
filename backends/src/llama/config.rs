//! The Llama `config.json`: parsing Hugging Face's `LlamaForCausalLM` config and checking that
//! every value in it is one this implementation computes exactly.
//!
//! Anything the forward pass would otherwise have to ignore (biases, another activation, an
//! unknown RoPE variant, quantization) is an error that names the field, so a model never runs
//! with numerics that silently differ from its reference implementation.

use std::path::Path;

use api::runtime::RuntimeError;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::families::{Architecture, Family, FamilyError, FamilyKeys};
use super::rope::{RopeConfig, RopeScaling};
use crate::error::{BackendError, FileProblem};

/// The RoPE base Hugging Face assumes when a config omits `rope_theta`.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
/// Hugging Face's `LlamaConfig` default for `rms_norm_eps`.
const DEFAULT_RMS_NORM_EPS: f64 = 1e-6;
/// Hugging Face's `LlamaConfig` default for `initializer_range`.
const DEFAULT_INITIALIZER_RANGE: f64 = 0.02;

/// Sanity limits on config sizes, each far above any published Llama-family model (largest
/// vocabularies ~256 Ki, hidden sizes ~16 Ki, 126 layers): a value beyond them is a broken or
/// hostile config, refused before any size derived from it is computed or allocated.
pub(crate) const SIZE_LIMITS: [(&str, usize); 7] = [
    ("vocab_size", 1 << 24),
    ("hidden_size", 1 << 18),
    ("intermediate_size", 1 << 20),
    ("num_hidden_layers", 1 << 12),
    ("num_attention_heads", 1 << 12),
    ("head_dim", 1 << 14),
    // Positions only bound validation (the KV cache is sized by the run), so this is loose.
    ("max_position_embeddings", 1 << 40),
];

/// The limit [`SIZE_LIMITS`] sets for `field`.
fn size_limit(field: &str) -> usize {
    SIZE_LIMITS
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(usize::MAX, |&(_, limit)| limit)
}

/// A validated Llama configuration, in the terms the forward pass uses. Each field names the
/// Hugging Face `config.json` key it is read from; keys without a stated default are required.
/// Sizes are positive and within [`SIZE_LIMITS`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LlamaConfig {
    /// Width of the residual stream (each token's hidden state). `hidden_size`.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's gate and up projections. `intermediate_size`.
    pub intermediate_size: usize,
    /// Number of decoder layers. `num_hidden_layers`.
    pub num_layers: usize,
    /// Number of query heads. `num_attention_heads`.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention: each serves
    /// `num_heads / num_kv_heads` query heads, which must divide evenly).
    /// `num_key_value_heads`; default `num_attention_heads` (plain multi-head attention).
    pub num_kv_heads: usize,
    /// Width of one attention head; even, for rotary embeddings. `head_dim`; default
    /// `hidden_size / num_attention_heads` (which must then divide evenly).
    pub head_dim: usize,
    /// Epsilon added to the mean square in every RMSNorm. `rms_norm_eps`; default `1e-6`
    /// (Hugging Face's `LlamaConfig` default).
    pub rms_norm_eps: f64,
    /// Rotary position embedding: base and scaling. `rope_theta` (default `10000.0`) with
    /// `rope_scaling` (transformers 4), or `rope_parameters` (transformers 5); both layouts
    /// must agree when both are present. Default: no scaling.
    pub rope: RopeConfig,
    /// Whether the output projection reuses the token embedding table (no `lm_head.weight`
    /// in the checkpoint). `tie_word_embeddings`; default the family's transformers default
    /// (`true` for Gemma 2, `false` for the others).
    pub tie_word_embeddings: bool,
    /// Number of token ids (rows of the embedding table, columns of the logits).
    /// `vocab_size`.
    pub vocab_size: usize,
    /// Longest sequence the model was trained for: bounds prompt plus new tokens (the KV
    /// cache is sized by the run, not by this). `max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// Id of the beginning-of-sequence token. `bos_token_id`; default none.
    pub bos_token_id: Option<u32>,
    /// Ids that end a generation. `eos_token_id`, an int or a list (Llama 3); default none.
    /// `generation_config.json`'s `eos_token_id` overrides it when present (see
    /// [`super::files::ModelFiles`]).
    pub eos_token_ids: Vec<u32>,
    /// Standard deviation of the normal distribution random weights are drawn from.
    /// `initializer_range`; default `0.02` (Hugging Face's `LlamaConfig` default).
    pub initializer_range: f64,
    /// The family (`model_type`) and the building blocks it switches on, from the family's
    /// own keys (see [`super::families`]).
    pub arch: Architecture,
}

/// `eos_token_id` is an int in most configs and a list in Llama 3 style ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub(crate) fn into_vec(self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

/// `config.json` exactly as written; optional fields are the ones Hugging Face defaults.
#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    tie_word_embeddings: Option<bool>,
    vocab_size: usize,
    max_position_embeddings: usize,
    bos_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    initializer_range: Option<f64>,
    pretraining_tp: Option<usize>,
    quantization_config: Option<Value>,
    /// The keys families differ in.
    #[serde(flatten)]
    family: FamilyKeys,
}

impl LlamaConfig {
    /// Reads and validates a `config.json`.
    pub(crate) fn from_file(path: &Path) -> Result<Self, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|e| BackendError::ModelFile {
            path: path.to_path_buf(),
            problem: FileProblem::Read(e),
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses and validates config JSON; `path` only labels errors.
    pub(crate) fn from_json(text: &str, path: &str) -> Result<Self, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidModelFile {
            path: path.to_string(),
            reason,
        };
        let unsupported = |reason: String| RuntimeError::UnsupportedConfig {
            path: path.to_string(),
            reason,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;

        let family = match raw.model_type.as_deref() {
            Some(name) => Family::from_model_type(name).ok_or_else(|| {
                BackendError::UnsupportedArchitecture {
                    path: path.to_string(),
                    key: "model_type",
                    found: name.to_string(),
                    supported: Family::supported_model_types(),
                }
            })?,
            None => return Err(invalid("missing field `model_type`".into())),
        };
        if let Some(archs) = &raw.architectures
            && let Some(other) = archs
                .iter()
                .find(|a| a.as_str() != family.causal_lm_class())
        {
            return Err(BackendError::UnsupportedArchitecture {
                path: path.to_string(),
                key: "architectures entry",
                found: other.clone(),
                supported: family.causal_lm_class().to_string(),
            }
            .into());
        }
        if let Some(tp) = raw.pretraining_tp
            && tp != 1
        {
            return Err(unsupported(format!(
                "pretraining_tp = {tp}: only 1 is supported"
            )));
        }
        if raw
            .quantization_config
            .as_ref()
            .is_some_and(|q| !q.is_null())
        {
            return Err(unsupported(
                "quantization_config: quantized checkpoints are not supported".into(),
            ));
        }

        let positive = |name: &str, value: usize| {
            let limit = size_limit(name);
            if value == 0 {
                Err(invalid(format!("{name} must be positive")))
            } else if value > limit {
                Err(invalid(format!(
                    "{name} ({value}) exceeds the sanity limit of {limit}"
                )))
            } else {
                Ok(value)
            }
        };
        let hidden_size = positive("hidden_size", raw.hidden_size)?;
        let intermediate_size = positive("intermediate_size", raw.intermediate_size)?;
        let num_layers = positive("num_hidden_layers", raw.num_hidden_layers)?;
        let num_heads = positive("num_attention_heads", raw.num_attention_heads)?;
        let num_kv_heads = positive(
            "num_attention_heads",
            raw.num_key_value_heads.unwrap_or(num_heads),
        )
        .map_err(|_| {
            invalid(format!(
                "num_key_value_heads must be between 1 and {}",
                size_limit("num_attention_heads")
            ))
        })?;
        let vocab_size = positive("vocab_size", raw.vocab_size)?;
        let max_position_embeddings =
            positive("max_position_embeddings", raw.max_position_embeddings)?;
        if num_heads % num_kv_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads ({num_heads}) is not a multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        let head_dim = match raw.head_dim.or(family.default_head_dim()) {
            Some(d) => positive("head_dim", d)?,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(invalid(format!(
                    "head_dim is absent and hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_heads})"
                )));
            }
        };
        if head_dim % 2 != 0 {
            return Err(invalid(format!(
                "head_dim ({head_dim}) must be even for rotary embeddings"
            )));
        }
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(
            family
                .default_rms_norm_eps()
                .unwrap_or(DEFAULT_RMS_NORM_EPS),
        );
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0) {
            return Err(invalid(format!(
                "rms_norm_eps ({rms_norm_eps}) must be positive"
            )));
        }
        let initializer_range = raw.initializer_range.unwrap_or(DEFAULT_INITIALIZER_RANGE);
        if !(initializer_range.is_finite() && initializer_range >= 0.0) {
            return Err(invalid(format!(
                "initializer_range ({initializer_range}) must be a non-negative number"
            )));
        }

        // transformers 5 keeps Phi-3's partial rotary factor with the RoPE parameters; it says
        // which dimensions rotate, not how, so it is taken out before the RoPE is read.
        let mut rope_parameters = raw.rope_parameters;
        let rope_partial_factor = match rope_parameters.as_mut().and_then(Value::as_object_mut) {
            Some(map) => match map.remove("partial_rotary_factor") {
                None => None,
                Some(v) => Some(v.as_f64().ok_or_else(|| {
                    invalid("rope_parameters.partial_rotary_factor must be a number".into())
                })?),
            },
            None => None,
        };
        let arch = family
            .architecture(&raw.family, num_layers, rope_partial_factor)
            .map_err(|e| match e {
                FamilyError::Unsupported(r) => unsupported(r),
                FamilyError::Invalid(r) => invalid(r),
            })?;
        let rotary_dim = (head_dim as f64 * arch.partial_rotary_factor).round() as usize;
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(invalid(format!(
                "partial_rotary_factor ({}) of head_dim ({head_dim}) gives {rotary_dim} rotated dimensions, which must be even and positive",
                arch.partial_rotary_factor
            )));
        }
        let rope =
            parse_rope(raw.rope_theta, raw.rope_scaling, rope_parameters).map_err(|e| match e {
                RopeError::Unsupported(r) => unsupported(r),
                RopeError::Invalid(r) => invalid(r),
            })?;

        Ok(LlamaConfig {
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope,
            tie_word_embeddings: raw
                .tie_word_embeddings
                .unwrap_or(family.default_tie_word_embeddings()),
            vocab_size,
            max_position_embeddings,
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(TokenIds::into_vec).unwrap_or_default(),
            initializer_range,
            arch,
        })
    }

    /// Dimensions of each head that rotary embeddings rotate (the leading ones): `head_dim`
    /// unless the family rotates part of it (Phi-3).
    pub(crate) fn rotary_dim(&self) -> usize {
        (self.head_dim as f64 * self.arch.partial_rotary_factor).round() as usize
    }

    /// The attention scores' scale: `1/√head_dim`, or `1/√query_pre_attn_scalar` (Gemma).
    pub(crate) fn attention_scale(&self) -> f64 {
        1.0 / self
            .arch
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
    }
}

/// Why the RoPE settings were rejected: a value we do not implement, or a malformed one.
#[derive(Debug)]
enum RopeError {
    Unsupported(String),
    Invalid(String),
}

/// Combines the two layouts Hugging Face has used: `rope_theta` + `rope_scaling` (transformers
/// 4) and `rope_parameters` (transformers 5). When both are present they must agree, because
/// choosing one would silently drop the other.
fn parse_rope(
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
) -> Result<RopeConfig, RopeError> {
    let rope_scaling = rope_scaling.filter(|v| !v.is_null());
    let rope_parameters = rope_parameters.filter(|v| !v.is_null());

    let legacy = || -> Result<RopeConfig, RopeError> {
        let theta = rope_theta.unwrap_or(DEFAULT_ROPE_THETA);
        let scaling = match &rope_scaling {
            None => RopeScaling::None,
            Some(v) => parse_scaling("rope_scaling", as_object("rope_scaling", v)?, false)?,
        };
        Ok(RopeConfig { theta, scaling })
    };

    let Some(params) = rope_parameters.as_ref() else {
        return validate_rope(legacy()?);
    };
    let map = as_object("rope_parameters", params)?;
    let theta = match map.get("rope_theta") {
        Some(v) => number("rope_parameters.rope_theta", v)?,
        None => rope_theta.unwrap_or(DEFAULT_ROPE_THETA),
    };
    if let Some(top) = rope_theta
        && top != theta
    {
        return Err(RopeError::Invalid(format!(
            "rope_theta ({top}) disagrees with rope_parameters.rope_theta ({theta})"
        )));
    }
    let from_params = RopeConfig {
        theta,
        scaling: parse_scaling("rope_parameters", map, true)?,
    };
    if rope_scaling.is_some() {
        let from_legacy = legacy()?;
        if from_legacy != from_params {
            return Err(RopeError::Invalid(format!(
                "rope_scaling ({:?}) disagrees with rope_parameters ({:?})",
                from_legacy.scaling, from_params.scaling
            )));
        }
    }
    validate_rope(from_params)
}

fn validate_rope(rope: RopeConfig) -> Result<RopeConfig, RopeError> {
    if !(rope.theta.is_finite() && rope.theta > 0.0) {
        return Err(RopeError::Invalid(format!(
            "rope_theta ({}) must be positive",
            rope.theta
        )));
    }
    Ok(rope)
}

fn as_object<'v>(field: &str, value: &'v Value) -> Result<&'v Map<String, Value>, RopeError> {
    value
        .as_object()
        .ok_or_else(|| RopeError::Invalid(format!("{field} must be an object or null")))
}

fn number(field: &str, value: &Value) -> Result<f64, RopeError> {
    value
        .as_f64()
        .ok_or_else(|| RopeError::Invalid(format!("{field} must be a number")))
}

/// Reads one scaling object. `allow_theta` is set for `rope_parameters`, which also carries
/// the base; every other unknown key is rejected so a variant we do not model cannot slip by.
fn parse_scaling(
    field: &str,
    map: &Map<String, Value>,
    allow_theta: bool,
) -> Result<RopeScaling, RopeError> {
    let kind = match (map.get("rope_type"), map.get("type")) {
        (Some(a), Some(b)) if a != b => {
            return Err(RopeError::Invalid(format!(
                "{field}.rope_type ({a}) disagrees with {field}.type ({b})"
            )));
        }
        (Some(v), _) | (None, Some(v)) => v
            .as_str()
            .ok_or_else(|| RopeError::Invalid(format!("{field}.rope_type must be a string")))?,
        (None, None) => "default",
    };
    let allowed: &[&str] = match kind {
        "default" => &[],
        "linear" => &["factor"],
        "llama3" => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        other => {
            return Err(RopeError::Unsupported(format!(
                "{field}: rope type `{other}` is not supported (supported: default, linear, llama3)"
            )));
        }
    };
    for key in map.keys() {
        let known = key == "rope_type"
            || key == "type"
            || (allow_theta && key == "rope_theta")
            || allowed.contains(&key.as_str());
        if !known {
            return Err(RopeError::Unsupported(format!(
                "{field}.{key} is not supported for rope type `{kind}`"
            )));
        }
    }
    let get = |key: &str| -> Result<f64, RopeError> {
        let name = format!("{field}.{key}");
        number(
            &name,
            map.get(key)
                .ok_or_else(|| RopeError::Invalid(format!("{name} is missing")))?,
        )
    };
    let positive = |key: &str| -> Result<f64, RopeError> {
        let v = get(key)?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(RopeError::Invalid(format!(
                "{field}.{key} ({v}) must be positive"
            )))
        }
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: positive("factor")?,
        }),
        _ => {
            let low = positive("low_freq_factor")?;
            let high = positive("high_freq_factor")?;
            if high <= low {
                return Err(RopeError::Invalid(format!(
                    "{field}.high_freq_factor ({high}) must exceed low_freq_factor ({low})"
                )));
            }
            Ok(RopeScaling::Llama3 {
                factor: positive("factor")?,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: positive("original_max_position_embeddings")?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 64,
            "intermediate_size": 172,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "vocab_size": 512,
            "max_position_embeddings": 1024,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu"
        })
    }

    fn parse(v: &Value) -> Result<LlamaConfig, RuntimeError> {
        LlamaConfig::from_json(&v.to_string(), "config.json")
    }

    fn unsupported_reason(v: &Value) -> String {
        match parse(v) {
            Err(RuntimeError::UnsupportedConfig { reason, .. }) => reason,
            other => panic!("expected UnsupportedConfig, got {other:?}"),
        }
    }

    fn llama3() -> Value {
        serde_json::json!({
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192
        })
    }

    #[test]
    fn defaults_follow_hugging_face() {
        let mut v = base();
        let obj = v.as_object_mut().unwrap();
        obj.remove("num_key_value_heads");
        obj.remove("rope_theta");
        obj.remove("hidden_act");
        let c = parse(&v).unwrap();
        assert_eq!(c.num_kv_heads, 4);
        assert_eq!(c.head_dim, 16);
        assert_eq!(c.rope.theta, 10_000.0);
        assert_eq!(c.rope.scaling, RopeScaling::None);
        assert!(!c.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, vec![2]);
    }

    #[test]
    fn eos_list_and_explicit_head_dim() {
        let mut v = base();
        v["eos_token_id"] = serde_json::json!([2, 7]);
        v["head_dim"] = serde_json::json!(32);
        let c = parse(&v).unwrap();
        assert_eq!(c.eos_token_ids, vec![2, 7]);
        assert_eq!(c.head_dim, 32);
    }

    #[test]
    fn legacy_rope_scaling_llama3() {
        let mut v = base();
        v["rope_scaling"] = llama3();
        let c = parse(&v).unwrap();
        assert_eq!(c.rope.theta, 500000.0);
        assert_eq!(
            c.rope.scaling,
            RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            }
        );
    }

    #[test]
    fn transformers5_rope_parameters() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("rope_theta");
        let mut params = llama3();
        params["rope_theta"] = serde_json::json!(500000.0);
        v["rope_parameters"] = params;
        let from_params = parse(&v).unwrap();

        let mut legacy = base();
        legacy["rope_scaling"] = llama3();
        assert_eq!(from_params, parse(&legacy).unwrap());

        // Both layouts at once are fine when they agree ...
        let mut both = v.clone();
        both["rope_scaling"] = llama3();
        both["rope_theta"] = serde_json::json!(500000.0);
        assert_eq!(parse(&both).unwrap(), from_params);
        // ... and an error when they do not.
        both["rope_scaling"]["factor"] = serde_json::json!(8.0);
        assert!(matches!(
            parse(&both),
            Err(RuntimeError::InvalidModelFile { .. })
        ));
    }

    #[test]
    fn default_rope_parameters_and_linear_scaling() {
        let mut v = base();
        v["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 500000.0});
        assert_eq!(parse(&v).unwrap().rope.scaling, RopeScaling::None);

        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0});
        assert_eq!(
            parse(&v).unwrap().rope.scaling,
            RopeScaling::Linear { factor: 2.0 }
        );
    }

    #[test]
    fn unsupported_rope_type_is_named() {
        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        assert!(unsupported_reason(&v).contains("yarn"));

        let mut v = base();
        v["rope_parameters"] = serde_json::json!({"rope_type": "dynamic", "factor": 4.0});
        assert!(unsupported_reason(&v).contains("dynamic"));
    }

    #[test]
    fn unknown_rope_key_is_named() {
        let mut v = base();
        let mut s = llama3();
        s["attention_factor"] = serde_json::json!(1.5);
        v["rope_scaling"] = s;
        assert!(unsupported_reason(&v).contains("attention_factor"));
    }

    #[test]
    fn unsupported_activation_is_named() {
        let mut v = base();
        v["hidden_act"] = serde_json::json!("gelu");
        let reason = unsupported_reason(&v);
        assert!(
            reason.contains("hidden_act") && reason.contains("gelu"),
            "{reason}"
        );
    }

    #[test]
    fn biases_are_named() {
        for field in ["attention_bias", "mlp_bias"] {
            let mut v = base();
            v[field] = serde_json::json!(true);
            assert!(unsupported_reason(&v).contains(field));
        }
    }

    #[test]
    fn other_model_types_and_quantization_are_rejected() {
        let mut v = base();
        v["model_type"] = serde_json::json!("falcon");
        let reason = unsupported_reason(&v);
        assert!(
            reason.contains("falcon") && reason.contains("llama, mistral"),
            "{reason}"
        );

        let mut v = base();
        v["quantization_config"] = serde_json::json!({"quant_method": "gptq"});
        assert!(unsupported_reason(&v).contains("quantization_config"));

        let mut v = base();
        v["pretraining_tp"] = serde_json::json!(2);
        assert!(unsupported_reason(&v).contains("pretraining_tp"));
    }

    #[test]
    fn absurd_sizes_are_refused_naming_the_field() {
        for (field, limit) in SIZE_LIMITS {
            let mut v = base();
            v[field] = serde_json::json!(limit as u64 + 1);
            match parse(&v) {
                Err(RuntimeError::InvalidModelFile { reason, .. }) => {
                    assert!(
                        reason.contains(field) && reason.contains("sanity limit"),
                        "{reason}"
                    )
                }
                other => panic!("{field}: expected InvalidModelFile, got {other:?}"),
            }
        }
        let mut v = base();
        v["num_key_value_heads"] = serde_json::json!(1u64 << 40);
        assert!(matches!(
            parse(&v),
            Err(RuntimeError::InvalidModelFile { reason, .. }) if reason.contains("num_key_value_heads")
        ));
        // At the limit is fine: the limits bound sizes, they do not reject real models.
        let mut v = base();
        v["max_position_embeddings"] = serde_json::json!(1_000_000_000u64);
        assert_eq!(parse(&v).unwrap().max_position_embeddings, 1_000_000_000);
    }

    #[test]
    fn malformed_configs_are_invalid_files() {
        let mut v = base();
        v["num_key_value_heads"] = serde_json::json!(3);
        assert!(matches!(
            parse(&v),
            Err(RuntimeError::InvalidModelFile { .. })
        ));
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        match parse(&v) {
            Err(RuntimeError::InvalidModelFile { reason, .. }) => {
                assert!(reason.contains("hidden_size"), "{reason}")
            }
            other => panic!("expected InvalidModelFile, got {other:?}"),
        }
        assert!(matches!(
            LlamaConfig::from_json("{not json", "config.json"),
            Err(RuntimeError::InvalidModelFile { .. })
        ));
    }
}
