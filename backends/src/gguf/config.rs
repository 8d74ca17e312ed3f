//! A GGUF file's metadata as the Hugging Face `config.json` it implies, written as
//! transformers 5's `save_pretrained` writes it (RoPE under `rope_parameters`), so the loader
//! reads it exactly as it reads a model folder's config.
//!
//! Each key's source (`<arch>` is `general.architecture`):
//!
//! | `config.json` key | GGUF source |
//! |---|---|
//! | `model_type`, `architectures` | `general.architecture`; `llama` with `llama.attention.sliding_window` set is `mistral` |
//! | `hidden_size` | `<arch>.embedding_length` |
//! | `intermediate_size` | `<arch>.feed_forward_length` |
//! | `num_hidden_layers` | `<arch>.block_count` |
//! | `num_attention_heads` | `<arch>.attention.head_count` |
//! | `num_key_value_heads` | `<arch>.attention.head_count_kv` (default: the head count) |
//! | `head_dim` | `<arch>.attention.key_length` (default: hidden / heads) |
//! | `rms_norm_eps` | `<arch>.attention.layer_norm_rms_epsilon` |
//! | `max_position_embeddings` | `<arch>.context_length` |
//! | `rope_parameters.rope_theta` | `<arch>.rope.freq_base` (default 10000, llama.cpp's) |
//! | `rope_parameters` scaling | `rope_freqs.weight` (Llama 3, fitted), else `<arch>.rope.scaling.type`/`.factor`/`.original_context_length` |
//! | `rope_parameters.partial_rotary_factor` | `<arch>.rope.dimension_count` / `head_dim`, when below 1 (Phi-3) |
//! | `vocab_size` | rows of `token_embd.weight` |
//! | `tie_word_embeddings` | true when there is no `output.weight` |
//! | `bos_token_id`, `eos_token_id` | `tokenizer.ggml.bos_token_id`, `.eos_token_id` |
//! | `sliding_window` | `<arch>.attention.sliding_window` (0 or absent: none) |
//! | Gemma 2 `attn_logit_softcapping`, `final_logit_softcapping` | `gemma2.attn_logit_softcapping`, `gemma2.final_logit_softcapping` (absent: llama.cpp's defaults 50 and 30; 0: none) |
//! | Gemma 2 `query_pre_attn_scalar` | `gemma2.attention.scale` as `1/scale²` when present, else llama.cpp's rule: `hidden/heads` for the 46-layer (27B) model, `head_dim` otherwise |
//! | Gemma 2 `layer_types` | llama.cpp's pattern: even layers slide, odd ones attend fully |
//!
//! **Mistral.** llama.cpp's converter writes Mistral checkpoints as architecture `llama`, with
//! nothing that reliably says Mistral (`general.name` is free text). The two compute the same
//! thing except for Mistral's sliding window, so the choice follows the one fact that changes
//! the numerics: a file stating `llama.attention.sliding_window` (above 0) is `mistral` with
//! that window; any other is `llama`. llama.cpp's converter does not write that key (llama.cpp
//! runs Mistral 7B v0.1 with full attention), so such a file reads as the `llama` llama.cpp
//! computes; llmeff's writer adds the key so a windowed Mistral survives the round trip.

use std::f64::consts::PI;

use serde_json::{Map, Value, json};

use super::GgufFile;
use super::error::GgufError;
use super::format::decimal_f64;
use super::names::{Architecture, ROPE_FREQS};

/// llama.cpp's RoPE base when `rope.freq_base` is absent (`llama_hparams`' default).
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
/// llama.cpp's Gemma 2 soft caps when the keys are absent (`llama_hparams`' defaults).
const GEMMA2_ATTN_SOFTCAP: f64 = 50.0;
/// llama.cpp's Gemma 2 final-logit soft cap when the key is absent.
const GEMMA2_FINAL_SOFTCAP: f64 = 30.0;
/// Layers of Gemma 2 27B, the one size llama.cpp scales attention by `hidden/heads`.
const GEMMA2_27B_LAYERS: u64 = 46;
/// More layers than any published model (the largest have ~130): a count beyond it is
/// corruption, refused before per-layer lists are built from it.
const MAX_LAYERS: u64 = 1 << 12;
/// The RoPE scaling types llmeff maps, as error messages list them.
const SUPPORTED_ROPE_SCALING: &str = "none, linear, yarn, and Llama 3's rope_freqs.weight";

/// The Hugging Face `config.json` `file`'s metadata implies.
pub(crate) fn hf_config(file: &GgufFile) -> Result<Value, GgufError> {
    let arch = file.arch();
    let key = |suffix: &str| file.arch_key(suffix);
    let positive = |suffix: &str| -> Result<u64, GgufError> {
        let k = key(suffix);
        match file.required_count(&k)? {
            0 => Err(GgufError::InvalidValue {
                key: k,
                value: "0".into(),
                reason: "it must be positive".into(),
            }),
            v => Ok(v),
        }
    };
    let hidden = positive("embedding_length")?;
    let intermediate = positive("feed_forward_length")?;
    let layers = positive("block_count")?;
    if layers > MAX_LAYERS {
        return Err(GgufError::InvalidValue {
            key: key("block_count"),
            value: layers.to_string(),
            reason: format!("more than {MAX_LAYERS} layers is beyond any real model"),
        });
    }
    let heads = positive("attention.head_count")?;
    let kv_heads = match file.optional_count(&key("attention.head_count_kv"))? {
        Some(0) => {
            return Err(GgufError::InvalidValue {
                key: key("attention.head_count_kv"),
                value: "0".into(),
                reason: "it must be positive".into(),
            });
        }
        Some(n) => n,
        None => heads,
    };
    let head_dim = head_dim(file, hidden, heads)?;
    let rms_norm_eps = file.required_f64(&key("attention.layer_norm_rms_epsilon"))?;
    let context = positive("context_length")?;
    let vocab = file
        .gguf_tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or_else(|| GgufError::MissingTensor {
            name: "token_embd.weight".into(),
        })?;
    let tied = file.gguf_tensor("output.weight").is_none();
    let window = file
        .optional_count(&key("attention.sliding_window"))?
        .filter(|&w| w > 0);

    let (model_type, class) = match arch {
        Architecture::Llama if window.is_some() => ("mistral", "MistralForCausalLM"),
        Architecture::Llama => ("llama", "LlamaForCausalLM"),
        Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        Architecture::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
        Architecture::Phi3 => ("phi3", "Phi3ForCausalLM"),
        Architecture::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
    };

    let mut config = Map::new();
    config.insert("architectures".into(), json!([class]));
    config.insert("model_type".into(), json!(model_type));
    config.insert("hidden_size".into(), json!(hidden));
    config.insert("intermediate_size".into(), json!(intermediate));
    config.insert("num_hidden_layers".into(), json!(layers));
    config.insert("num_attention_heads".into(), json!(heads));
    config.insert("num_key_value_heads".into(), json!(kv_heads));
    config.insert("head_dim".into(), json!(head_dim));
    config.insert(
        "rms_norm_eps".into(),
        number(&key("attention.layer_norm_rms_epsilon"), rms_norm_eps)?,
    );
    config.insert("max_position_embeddings".into(), json!(context));
    config.insert("vocab_size".into(), json!(vocab));
    config.insert("tie_word_embeddings".into(), json!(tied));
    config.insert(
        "rope_parameters".into(),
        Value::Object(rope_parameters(file, head_dim)?),
    );
    for (name, gguf) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ] {
        config.insert(name.into(), json!(file.optional_u64(gguf)?));
    }
    let has_tensor = |suffix: &str| file.gguf_tensor(&format!("blk.0.{suffix}")).is_some();
    match arch {
        Architecture::Llama => {
            config.insert("hidden_act".into(), json!("silu"));
            config.insert("attention_bias".into(), json!(has_tensor("attn_q.bias")));
            if model_type == "llama" {
                config.insert("mlp_bias".into(), json!(has_tensor("ffn_up.bias")));
            } else {
                config.insert("sliding_window".into(), json!(window));
            }
        }
        Architecture::Qwen2 | Architecture::Qwen3 => {
            config.insert("hidden_act".into(), json!("silu"));
            if arch == Architecture::Qwen3 {
                config.insert("attention_bias".into(), json!(has_tensor("attn_q.bias")));
            }
            // llama.cpp runs Qwen 2 and 3 with full attention in every layer.
            config.insert("use_sliding_window".into(), json!(false));
            config.insert("sliding_window".into(), Value::Null);
            config.insert("max_window_layers".into(), json!(layers));
            config.insert(
                "layer_types".into(),
                json!(vec!["full_attention"; layers as usize]),
            );
        }
        Architecture::Phi3 => {
            config.insert("hidden_act".into(), json!("silu"));
            config.insert("sliding_window".into(), json!(window));
            if let Some(original) =
                file.optional_u64(&key("rope.scaling.original_context_length"))?
            {
                config.insert("original_max_position_embeddings".into(), json!(original));
            }
        }
        Architecture::Gemma2 => {
            gemma2_keys(file, &mut config, hidden, heads, head_dim, layers, window)?
        }
    }
    Ok(Value::Object(config))
}

/// `head_dim`: `key_length`, else `hidden / heads`; `value_length` must agree (Hugging Face's
/// families have one head size).
fn head_dim(file: &GgufFile, hidden: u64, heads: u64) -> Result<u64, GgufError> {
    let key_length = file.arch_key("attention.key_length");
    let head_dim = match file.optional_u64(&key_length)? {
        Some(0) => {
            return Err(GgufError::InvalidValue {
                key: key_length,
                value: "0".into(),
                reason: "it must be positive".into(),
            });
        }
        Some(d) => d,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(GgufError::InvalidValue {
                key: file.arch_key("attention.head_count"),
                value: heads.to_string(),
                reason: format!(
                    "it does not divide the embedding length {hidden}, and no key_length gives the head size"
                ),
            });
        }
    };
    let value_length = file.arch_key("attention.value_length");
    match file.optional_u64(&value_length)? {
        Some(v) if v != head_dim => Err(GgufError::UnsupportedValue {
            what: "a value head size different from the key head size",
            value: format!("{value_length} = {v}, key size {head_dim}"),
            supported: "equal key and value head sizes",
        }),
        _ => Ok(head_dim),
    }
}

/// A JSON number for a float read from `key`.
fn number(key: &str, v: f64) -> Result<Value, GgufError> {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| GgufError::InvalidValue {
            key: key.to_string(),
            value: v.to_string(),
            reason: "it must be a finite number".into(),
        })
}

/// transformers 5's `rope_parameters`: type, base, scaling parameters, and the partial rotary
/// factor when fewer than all of a head's dimensions rotate.
fn rope_parameters(file: &GgufFile, head_dim: u64) -> Result<Map<String, Value>, GgufError> {
    let theta_key = file.arch_key("rope.freq_base");
    let theta = file.optional_f64(&theta_key)?.unwrap_or(DEFAULT_ROPE_THETA);
    if !(theta.is_finite() && theta > 0.0) {
        return Err(GgufError::InvalidValue {
            key: theta_key,
            value: theta.to_string(),
            reason: "it must be positive".into(),
        });
    }
    let dims_key = file.arch_key("rope.dimension_count");
    let rope_dims = file.optional_u64(&dims_key)?.unwrap_or(head_dim);
    if rope_dims == 0 || rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
        return Err(GgufError::InvalidValue {
            key: dims_key,
            value: rope_dims.to_string(),
            reason: format!("it must be even, positive and at most the head size {head_dim}"),
        });
    }
    let mut params = Map::new();
    params.insert("rope_type".into(), json!("default"));
    params.insert("rope_theta".into(), number(&theta_key, theta)?);
    if rope_dims != head_dim {
        params.insert(
            "partial_rotary_factor".into(),
            json!(rope_dims as f64 / head_dim as f64),
        );
    }
    if file.gguf_tensor(ROPE_FREQS).is_some() {
        if file.arch() != Architecture::Llama {
            return Err(GgufError::UnsupportedValue {
                what: "rope_freqs.weight in architecture",
                value: file.architecture().to_string(),
                supported: "llama (Llama 3 scaling)",
            });
        }
        let factors = file.gguf_tensor_f32(ROPE_FREQS)?;
        let original = file.optional_u64(&file.arch_key("rope.scaling.original_context_length"))?;
        if let Some(llama3) = fit_llama3(&factors, theta, rope_dims, original)? {
            params.extend(llama3);
        }
        return Ok(params);
    }
    let type_key = file.arch_key("rope.scaling.type");
    let factor_key = file.arch_key("rope.scaling.factor");
    match file.optional_str(&type_key)? {
        None | Some("none") => {}
        Some(kind @ ("linear" | "yarn")) => {
            let factor = file.required_f64(&factor_key)?;
            params.insert("rope_type".into(), json!(kind));
            params.insert("factor".into(), number(&factor_key, factor)?);
            if kind == "yarn" {
                let original_key = file.arch_key("rope.scaling.original_context_length");
                params.insert(
                    "original_max_position_embeddings".into(),
                    json!(file.optional_u64(&original_key)?),
                );
            }
        }
        Some(other) => {
            return Err(GgufError::UnsupportedValue {
                what: "RoPE scaling",
                value: other.to_string(),
                supported: SUPPORTED_ROPE_SCALING,
            });
        }
    }
    if file.gguf_tensor("rope_factors_long.weight").is_some() {
        return Err(GgufError::UnsupportedValue {
            what: "RoPE scaling",
            value: "longrope (rope_factors_long.weight)".into(),
            supported: SUPPORTED_ROPE_SCALING,
        });
    }
    Ok(params)
}

/// The Llama 3 scaling (`factor`, `low_freq_factor`, `high_freq_factor`,
/// `original_max_position_embeddings`) that reproduces llama.cpp's `rope_freqs.weight`, the
/// per-frequency divisors its converter computed from them; `None` when every divisor is 1.
///
/// The tensor does not determine the four numbers uniquely: transformers' rule depends on the
/// frequencies' wavelengths through `L/lf`, `L/hf` and the smooth band between, so the fit
/// takes `factor` from the fully interpolated band, tries Meta's band factors (1, 4) first,
/// solves `L` from the smooth band (else takes `<arch>.rope.scaling.original_context_length`,
/// else 8192), rounds it to an integer, and keeps the first candidate whose divisors all match
/// the tensor to f32 precision. Any candidate that matches computes the same frequencies.
fn fit_llama3(
    factors: &[f32],
    theta: f64,
    rope_dims: u64,
    original: Option<u64>,
) -> Result<Option<Map<String, Value>>, GgufError> {
    let half = (rope_dims / 2) as usize;
    if factors.len() != half {
        return Err(GgufError::RopeFactors {
            reason: format!(
                "it holds {} values for {half} rotated frequency pairs",
                factors.len()
            ),
        });
    }
    let divisors: Vec<f64> = factors.iter().map(|&f| f64::from(f)).collect();
    if divisors
        .iter()
        .any(|d| !(d.is_finite() && *d >= 1.0 - 1e-6))
    {
        return Err(GgufError::RopeFactors {
            reason: "a divisor is below 1 or not finite".into(),
        });
    }
    if divisors.iter().all(|d| (d - 1.0).abs() <= 1e-6) {
        return Ok(None);
    }
    let wavelengths: Vec<f64> = (0..half)
        .map(|i| 2.0 * PI * theta.powf((2 * i) as f64 / rope_dims as f64))
        .collect();
    let factor = divisors.iter().copied().fold(1.0, f64::max);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1.0);
    let factor = decimal_f64(factor as f32);
    // The divisors strictly between 1 and the factor lie in the smooth band.
    let smooth: Vec<(f64, f64)> = wavelengths
        .iter()
        .zip(&divisors)
        .filter(|&(_, &d)| !close(d, 1.0) && !close(d, factor))
        .map(|(&w, &d)| (w, d))
        .collect();
    for (low, high) in [
        (1.0, 4.0),
        (1.0, 2.0),
        (2.0, 4.0),
        (1.0, 8.0),
        (2.0, 8.0),
        (4.0, 8.0),
    ] {
        let length = match smooth.first() {
            Some(&(wavelength, divisor)) => {
                // divisor = 1 / ((1 − s)/factor + s), s = (L/wavelength − low)/(high − low).
                let s = (1.0 / divisor - 1.0 / factor) / (1.0 - 1.0 / factor);
                (wavelength * (low + s * (high - low))).round()
            }
            None => original.map_or(8192.0, |o| o as f64),
        };
        if length <= 0.0 {
            continue;
        }
        let reproduces = wavelengths.iter().zip(&divisors).all(|(&wavelength, &d)| {
            close(llama3_divisor(wavelength, factor, low, high, length), d)
        });
        if reproduces {
            let mut params = Map::new();
            params.insert("rope_type".into(), json!("llama3"));
            params.insert("factor".into(), json!(factor));
            params.insert("low_freq_factor".into(), json!(low));
            params.insert("high_freq_factor".into(), json!(high));
            params.insert(
                "original_max_position_embeddings".into(),
                json!(length as u64),
            );
            return Ok(Some(params));
        }
    }
    Err(GgufError::RopeFactors {
        reason: format!("no factor, band and original length reproduce {divisors:?}"),
    })
}

/// The frequency divisor transformers' `_compute_llama3_parameters` applies at `wavelength`.
fn llama3_divisor(wavelength: f64, factor: f64, low: f64, high: f64, length: f64) -> f64 {
    if wavelength < length / high {
        1.0
    } else if wavelength > length / low {
        factor
    } else {
        let s = (length / wavelength - low) / (high - low);
        1.0 / ((1.0 - s) / factor + s)
    }
}

/// Gemma 2's own keys: activation, soft caps, attention scale and alternating windows.
fn gemma2_keys(
    file: &GgufFile,
    config: &mut Map<String, Value>,
    hidden: u64,
    heads: u64,
    head_dim: u64,
    layers: u64,
    window: Option<u64>,
) -> Result<(), GgufError> {
    config.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
    config.insert("attention_bias".into(), json!(false));
    for (name, default) in [
        ("attn_logit_softcapping", GEMMA2_ATTN_SOFTCAP),
        ("final_logit_softcapping", GEMMA2_FINAL_SOFTCAP),
    ] {
        let key = file.arch_key(name);
        let cap = file.optional_f64(&key)?.unwrap_or(default);
        // llama.cpp skips a cap of 0; Hugging Face says so with null.
        let value = if cap == 0.0 {
            Value::Null
        } else {
            number(&key, cap)?
        };
        config.insert(name.into(), value);
    }
    let scale_key = file.arch_key("attention.scale");
    let scalar = match file.optional_f64(&scale_key)? {
        Some(scale) if scale.is_finite() && scale > 0.0 => {
            let scalar = 1.0 / (scale * scale);
            // Configs state integers (256, 144); the f32 scale loses the last digits.
            let rounded = scalar.round();
            if (scalar - rounded).abs() <= 1e-3 * rounded {
                rounded
            } else {
                scalar
            }
        }
        Some(scale) => {
            return Err(GgufError::InvalidValue {
                key: scale_key,
                value: scale.to_string(),
                reason: "it must be positive".into(),
            });
        }
        None if layers == GEMMA2_27B_LAYERS => (hidden / heads) as f64,
        None => head_dim as f64,
    };
    config.insert("query_pre_attn_scalar".into(), json!(scalar));
    config.insert("sliding_window".into(), json!(window));
    // llama.cpp's `set_swa_pattern(2)`: layer i slides when i is even (transformers' default
    // `layer_types` for Gemma 2); without a window every layer attends fully.
    let layer_types: Vec<&str> = (0..layers)
        .map(|i| {
            if window.is_some() && i % 2 == 0 {
                "sliding_attention"
            } else {
                "full_attention"
            }
        })
        .collect();
    config.insert("layer_types".into(), json!(layer_types));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freqs(theta: f64, dims: u64, factor: f64, low: f64, high: f64, length: f64) -> Vec<f32> {
        (0..dims / 2)
            .map(|i| {
                let wavelength = 2.0 * PI * theta.powf((2 * i) as f64 / dims as f64);
                llama3_divisor(wavelength, factor, low, high, length) as f32
            })
            .collect()
    }

    #[test]
    fn llama3_scaling_is_recovered_from_its_factors() {
        // Llama 3.1 8B: head 128, theta 500000, factor 8, bands 1 and 4, 8192 positions.
        let f = freqs(500_000.0, 128, 8.0, 1.0, 4.0, 8192.0);
        let p = fit_llama3(&f, 500_000.0, 128, None).unwrap().unwrap();
        assert_eq!(p["factor"], json!(8.0));
        assert_eq!(p["original_max_position_embeddings"], json!(8192));
        assert_eq!(
            (p["low_freq_factor"].clone(), p["high_freq_factor"].clone()),
            (json!(1.0), json!(4.0))
        );
        // The bundled tiny-llama3-gqa: head 16, factor 32.
        let f = freqs(500_000.0, 16, 32.0, 1.0, 4.0, 8192.0);
        let p = fit_llama3(&f, 500_000.0, 16, None).unwrap().unwrap();
        assert_eq!(p["factor"], json!(32.0));
        assert_eq!(p["original_max_position_embeddings"], json!(8192));
    }

    #[test]
    fn unit_factors_are_no_scaling_and_nonsense_is_an_error() {
        assert!(fit_llama3(&[1.0; 4], 10_000.0, 8, None).unwrap().is_none());
        assert!(matches!(
            fit_llama3(&[1.0; 3], 10_000.0, 8, None),
            Err(GgufError::RopeFactors { .. })
        ));
        assert!(matches!(
            fit_llama3(&[1.0, 0.5, 1.0, 1.0], 10_000.0, 8, None),
            Err(GgufError::RopeFactors { .. })
        ));
        // Divisors that fall and rise are no Llama 3 band structure.
        assert!(matches!(
            fit_llama3(&[3.0, 1.0, 2.0, 1.5], 10_000.0, 8, None),
            Err(GgufError::RopeFactors { .. })
        ));
    }
}
