//! What the executor tests' fake runtimes share.

use api::runtime::ModelInfo;

/// A fake model's facts: a one-layer model of `vocab_size` tokens named `name` (FLOPs and bytes
/// follow from these, so tests can check the analytic figures).
pub fn fake_model_info(name: &str, vocab_size: usize) -> ModelInfo {
    ModelInfo {
        name: name.to_string(),
        architecture: "fake".into(),
        compute: "fake".into(),
        parameters: 10,
        weight_bytes: 40,
        step_weight_bytes: 32,
        hidden_size: 4,
        num_layers: 1,
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 4,
        intermediate_size: 8,
        vocab_size,
        max_position_embeddings: 64,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        adapter: None,
        adapter_driver: None,
    }
}
