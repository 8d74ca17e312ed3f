//! Built-in configs of the models the original tool measured, so their shapes can be run with
//! random weights without downloading anything.
//!
//! Each preset is the model's public `config.json` (the fields the decoder implementation reads),
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

/// `Qwen/Qwen2.5-0.5B`: q/k/v biases, GQA 14/2, tied.
const QWEN2_5_0_5B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;
/// `Qwen/Qwen2.5-1.5B`: q/k/v biases, GQA 12/2, tied.
const QWEN2_5_1_5B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 1536,
  "initializer_range": 0.02,
  "intermediate_size": 8960,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 12,
  "num_hidden_layers": 28,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;
/// `Qwen/Qwen2.5-7B`: q/k/v biases, GQA 28/4, untied.
const QWEN2_5_7B: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 18944,
  "max_position_embeddings": 131072,
  "max_window_layers": 28,
  "model_type": "qwen2",
  "num_attention_heads": 28,
  "num_hidden_layers": 28,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 152064
}"#;
/// `Qwen/Qwen3-0.6B`: per-head q/k norms, head_dim 128 on a 1024-wide stream, tied.
const QWEN3_0_6B: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 1024,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;
/// `Qwen/Qwen3-1.7B`: per-head q/k norms, GQA 16/8, tied (the repository also stores a copy of the head).
const QWEN3_1_7B: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 6144,
  "max_position_embeddings": 40960,
  "max_window_layers": 28,
  "model_type": "qwen3",
  "num_attention_heads": 16,
  "num_hidden_layers": 28,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;
/// `Qwen/Qwen3-8B`: per-head q/k norms, GQA 32/8, untied.
const QWEN3_8B: &str = r#"{
  "architectures": ["Qwen3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 12288,
  "max_position_embeddings": 40960,
  "max_window_layers": 36,
  "model_type": "qwen3",
  "num_attention_heads": 32,
  "num_hidden_layers": 36,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;
/// `mistralai/Mistral-7B-v0.3`: GQA 32/8, no sliding window (v0.1 had 4096), vocabulary 32768.
const MISTRAL_7B_V0_3: &str = r#"{
  "architectures": ["MistralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "vocab_size": 32768
}"#;
/// `microsoft/Phi-3-mini-4k-instruct`: fused qkv and gate/up projections, multi-head attention
/// (32/32), a 2047-position sliding window.
const PHI_3_MINI_4K_INSTRUCT: &str = r#"{
  "architectures": ["Phi3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "embd_pdrop": 0.0,
  "eos_token_id": 32000,
  "hidden_act": "silu",
  "hidden_size": 3072,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 4096,
  "model_type": "phi3",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "original_max_position_embeddings": 4096,
  "pad_token_id": 32000,
  "resid_pdrop": 0.0,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "sliding_window": 2047,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "use_cache": true,
  "vocab_size": 32064
}"#;
/// `google/gemma-2-2b`: sandwich norms, soft-capping, local/global layers, tied (the config relies on Gemma 2's default).
const GEMMA_2_2B: &str = r#"{
  "architectures": ["Gemma2ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0,
  "bos_token_id": 2,
  "cache_implementation": "hybrid",
  "eos_token_id": 1,
  "final_logit_softcapping": 30.0,
  "head_dim": 256,
  "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 2304,
  "initializer_range": 0.02,
  "intermediate_size": 9216,
  "max_position_embeddings": 8192,
  "model_type": "gemma2",
  "num_attention_heads": 8,
  "num_hidden_layers": 26,
  "num_key_value_heads": 4,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "torch_dtype": "float32",
  "use_cache": true,
  "vocab_size": 256000
}"#;
/// `google/gemma-2-9b`: as 2B, GQA 16/8, 42 layers.
const GEMMA_2_9B: &str = r#"{
  "architectures": ["Gemma2ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0,
  "bos_token_id": 2,
  "cache_implementation": "hybrid",
  "eos_token_id": 1,
  "final_logit_softcapping": 30.0,
  "head_dim": 256,
  "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 3584,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 8192,
  "model_type": "gemma2",
  "num_attention_heads": 16,
  "num_hidden_layers": 42,
  "num_key_value_heads": 8,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "torch_dtype": "float32",
  "use_cache": true,
  "vocab_size": 256000
}"#;

/// Every built-in preset, by family, smallest model first.
pub(crate) const PRESETS: [Preset; 15] = [
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
    Preset {
        id: "Qwen/Qwen2.5-0.5B",
        config_json: QWEN2_5_0_5B,
    },
    Preset {
        id: "Qwen/Qwen2.5-1.5B",
        config_json: QWEN2_5_1_5B,
    },
    Preset {
        id: "Qwen/Qwen2.5-7B",
        config_json: QWEN2_5_7B,
    },
    Preset {
        id: "Qwen/Qwen3-0.6B",
        config_json: QWEN3_0_6B,
    },
    Preset {
        id: "Qwen/Qwen3-1.7B",
        config_json: QWEN3_1_7B,
    },
    Preset {
        id: "Qwen/Qwen3-8B",
        config_json: QWEN3_8B,
    },
    Preset {
        id: "mistralai/Mistral-7B-v0.3",
        config_json: MISTRAL_7B_V0_3,
    },
    Preset {
        id: "microsoft/Phi-3-mini-4k-instruct",
        config_json: PHI_3_MINI_4K_INSTRUCT,
    },
    Preset {
        id: "google/gemma-2-2b",
        config_json: GEMMA_2_2B,
    },
    Preset {
        id: "google/gemma-2-9b",
        config_json: GEMMA_2_9B,
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
