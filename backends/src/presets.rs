//! Built-in configs of the models the original tool measured, so their shapes can be run with
//! random weights without downloading anything.
//!
//! Each preset is the model's public `config.json` (the fields the Llama implementation reads),
//! copied from its Hugging Face repository, so a preset model has exactly the shapes, RoPE
//! settings and special token ids of the real one. A cached `config.json` for the same id, when
//! present, takes precedence over the preset.
//!
//! Presets carry no tokenizer: without a cached `tokenizer.json` a preset model uses the
//! byte-level fallback tokenizer ([`crate::tokenizer`]); random-weight figures measure shapes,
//! not text quality.

/// One built-in model config.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Preset {
    /// Hugging Face Hub id, exactly as the repository spells it.
    pub id: &'static str,
    /// The repository's `config.json` (the fields this implementation reads).
    pub config_json: &'static str,
}

impl Preset {
    /// How errors about the preset's config name it.
    pub(crate) fn label(&self) -> String {
        format!("built-in config of {}", self.id)
    }
}

/// `TinyLlama/TinyLlama-1.1B-Chat-v1.0`: Llama 2 architecture, GQA 32/4, untied.
const TINYLLAMA_1_1B_CHAT: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 5632,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 22,
  "num_key_value_heads": 4,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": 32000
}"#;

/// `meta-llama/Llama-3.2-1B`: tied embeddings, llama3 RoPE scaling (factor 32).
const LLAMA_3_2_1B: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
}"#;

/// `meta-llama/Llama-3.2-3B`: tied embeddings, llama3 RoPE scaling (factor 32).
const LLAMA_3_2_3B: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 3072,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 24,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
}"#;

/// `meta-llama/Llama-3.1-8B`: untied, llama3 RoPE scaling (factor 8).
const LLAMA_3_1_8B: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
}"#;

/// `HuggingFaceTB/SmolLM-135M`: a small tied Llama, GQA 9/3.
const SMOLLM_135M: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 0,
  "eos_token_id": 0,
  "hidden_act": "silu",
  "hidden_size": 576,
  "initializer_range": 0.02,
  "intermediate_size": 1536,
  "max_position_embeddings": 2048,
  "model_type": "llama",
  "num_attention_heads": 9,
  "num_hidden_layers": 30,
  "num_key_value_heads": 3,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "vocab_size": 49152
}"#;

/// Every built-in preset, smallest model first.
pub(crate) const PRESETS: [Preset; 5] = [
    Preset {
        id: "HuggingFaceTB/SmolLM-135M",
        config_json: SMOLLM_135M,
    },
    Preset {
        id: "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        config_json: TINYLLAMA_1_1B_CHAT,
    },
    Preset {
        id: "meta-llama/Llama-3.2-1B",
        config_json: LLAMA_3_2_1B,
    },
    Preset {
        id: "meta-llama/Llama-3.2-3B",
        config_json: LLAMA_3_2_3B,
    },
    Preset {
        id: "meta-llama/Llama-3.1-8B",
        config_json: LLAMA_3_1_8B,
    },
];

/// The preset for a Hub id. Matching is exact: the Hub cache's folder names are
/// case-sensitive, so accepting other spellings here would make a cached config and the preset
/// disagree on which id they belong to.
pub(crate) fn find(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}

/// Hub ids that load with random weights without any download (built-in configs).
pub fn preset_ids() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|p| p.id)
}
