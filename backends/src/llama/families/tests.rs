//! Each family's `config.json` keys read into its building blocks, and the refusals.

#![cfg(test)]

use serde_json::{Value, json};

use super::*;
use crate::llama::config::LlamaConfig;

/// A bundled fixture's config, parsed.
fn fixture(name: &str) -> LlamaConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(name)
        .join("config.json");
    LlamaConfig::from_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A small config of `model_type` with `extra` keys merged in.
fn parse(model_type: &str, extra: Value) -> Result<LlamaConfig, String> {
    let mut config = json!({
        "model_type": model_type, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 128, "max_position_embeddings": 256
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    LlamaConfig::from_json(&config.to_string(), "config.json").map_err(|e| e.to_string())
}

#[test]
fn every_bundled_fixture_reads_as_its_family() {
    let cases = [
        ("tiny-stories", Family::Llama),
        ("tiny-llama3-gqa", Family::Llama),
        ("tiny-qwen2", Family::Qwen2),
        ("tiny-qwen3", Family::Qwen3),
        ("tiny-mistral", Family::Mistral),
        ("tiny-phi3", Family::Phi3),
        ("tiny-gemma2", Family::Gemma2),
    ];
    for (name, family) in cases {
        assert_eq!(fixture(name).arch.family, family, "{name}");
    }
    let qwen2 = fixture("tiny-qwen2").arch;
    assert!(qwen2.qkv_bias && !qwen2.qk_norm);
    assert_eq!(qwen2.layer_windows, vec![None, None]);
    let qwen3 = fixture("tiny-qwen3");
    assert!(qwen3.arch.qk_norm && !qwen3.arch.qkv_bias);
    assert_eq!(qwen3.head_dim, 32, "explicit head_dim, not hidden / heads");
    assert_eq!(fixture("tiny-mistral").arch.layer_windows, vec![Some(8); 2]);
    let phi3 = fixture("tiny-phi3");
    assert!(phi3.arch.fused_projections);
    assert_eq!((phi3.head_dim, phi3.rotary_dim()), (16, 12));
    let gemma2 = fixture("tiny-gemma2");
    let arch = &gemma2.arch;
    assert_eq!(arch.layer_windows, vec![Some(6), None, Some(6)]);
    assert_eq!(
        (arch.attn_logit_softcap, arch.final_logit_softcap),
        (Some(50.0), Some(5.0))
    );
    assert_eq!(arch.activation, Activation::GeluTanh);
    assert_eq!(arch.norms, NormPlacement::Sandwich);
    assert!(arch.norm_weight_offset && arch.embedding_scale);
    assert!((gemma2.attention_scale() - 0.25).abs() < 1e-12, "16^-1/2");
}

#[test]
fn an_unknown_family_names_itself_and_lists_the_supported_ones() {
    let err = parse("falcon", json!({})).unwrap_err();
    assert!(err.contains("falcon"), "{err}");
    for family in Family::ALL {
        assert!(err.contains(family.model_type()), "{err}");
    }
    let err = parse("qwen2", json!({ "architectures": ["LlamaForCausalLM"] })).unwrap_err();
    assert!(
        err.contains("LlamaForCausalLM") && err.contains("Qwen2ForCausalLM"),
        "{err}"
    );
}

#[test]
fn settings_a_family_does_not_compute_are_refused() {
    for (model_type, extra, needle) in [
        ("llama", json!({ "sliding_window": 16 }), "sliding_window"),
        ("llama", json!({ "attention_bias": true }), "attention_bias"),
        ("qwen3", json!({ "attention_bias": true }), "attention_bias"),
        (
            "mistral",
            json!({ "hidden_act": "gelu" }),
            "hidden_act `gelu`",
        ),
        ("gemma2", json!({ "hidden_activation": "relu" }), "relu"),
        (
            "llama",
            json!({ "attn_logit_softcapping": 30.0 }),
            "attn_logit_softcapping",
        ),
        (
            "llama",
            json!({ "partial_rotary_factor": 0.5 }),
            "partial_rotary_factor",
        ),
        (
            "gemma2",
            json!({ "layer_types": ["full_attention"] }),
            "layer_types has 1",
        ),
        (
            "qwen2",
            json!({ "layer_types": vec!["chunked_attention"; 4] }),
            "chunked_attention",
        ),
        (
            "mistral",
            json!({ "layer_types": vec!["sliding_attention"; 4] }),
            "sliding_window is not set",
        ),
        ("mistral", json!({ "sliding_window": 0 }), "sliding_window"),
        (
            "phi3",
            json!({ "partial_rotary_factor": 0.3 }),
            "must be even",
        ),
        (
            "phi3",
            json!({ "partial_rotary_factor": 0.5,
                    "rope_parameters": { "rope_type": "default", "partial_rotary_factor": 0.75 } }),
            "disagrees",
        ),
    ] {
        let err = parse(model_type, extra.clone()).expect_err(&format!("{model_type} {extra}"));
        assert!(err.contains(needle), "{model_type} {extra}: {err}");
    }
}

#[test]
fn defaults_and_transformers_4_rules_match_transformers() {
    // Gemma 2 without the keys: transformers' defaults, alternating from a local layer 0.
    let gemma = parse("gemma2", json!({ "sliding_window": 4096 }))
        .unwrap()
        .arch;
    assert_eq!(
        (
            gemma.attn_logit_softcap,
            gemma.final_logit_softcap,
            gemma.query_pre_attn_scalar
        ),
        (Some(50.0), Some(30.0), Some(256.0))
    );
    assert_eq!(
        gemma.layer_windows,
        vec![Some(4096), None, Some(4096), None]
    );
    // Null caps switch soft-capping off.
    let uncapped = parse(
        "gemma2",
        json!({ "sliding_window": 8, "attn_logit_softcapping": null,
                "final_logit_softcapping": null }),
    )
    .unwrap()
    .arch;
    assert_eq!(
        (uncapped.attn_logit_softcap, uncapped.final_logit_softcap),
        (None, None)
    );
    // Qwen: windows from max_window_layers on, only when switched on.
    let qwen = |on| {
        parse(
            "qwen2",
            json!({ "use_sliding_window": on, "sliding_window": 32, "max_window_layers": 2 }),
        )
        .unwrap()
        .arch
        .layer_windows
    };
    assert_eq!(qwen(true), vec![None, None, Some(32), Some(32)]);
    assert_eq!(qwen(false), vec![None; 4]);
    // Mistral v0.3 sets the window to null: full attention.
    let mistral = parse("mistral", json!({ "sliding_window": null }))
        .unwrap()
        .arch;
    assert_eq!(mistral.layer_windows, vec![None; 4]);
    // Phi-3's factor from transformers 4's top-level key.
    let phi3 = parse("phi3", json!({ "partial_rotary_factor": 0.5 })).unwrap();
    assert_eq!(phi3.rotary_dim(), 8);
}
