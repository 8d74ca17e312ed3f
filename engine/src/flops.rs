//! Analytic floating-point operation counts of a decoder-only transformer (Llama family).
//!
//! Counts are FLOPs, not multiply-accumulates (one MAC = 2 FLOPs), for the matrix products
//! the model actually performs, attention included with its real KV length. They depend only
//! on shapes, so they hold for every dtype and quantization (a quantized weight is multiplied
//! as often as a full-precision one).

use api::runtime::ModelInfo;

/// FLOPs of one product of an `[m, k]` by a `[k, n]` matrix.
pub fn matmul(m: u64, k: u64, n: u64) -> u64 {
    2 * m * k * n
}

/// FLOPs of the linear layers for `tokens` new positions (projections, MLP, LM head on
/// `logit_positions` positions).
pub fn linear(info: &ModelInfo, tokens: u64, logit_positions: u64) -> u64 {
    let h = info.hidden_size as u64;
    let d = info.head_dim as u64;
    let q = info.num_heads as u64 * d;
    let kv = info.num_kv_heads as u64 * d;
    let ffn = info.intermediate_size as u64;
    let per_layer = matmul(tokens, h, q) // q_proj
        + 2 * matmul(tokens, h, kv) // k_proj, v_proj
        + matmul(tokens, q, h) // o_proj
        + 2 * matmul(tokens, h, ffn) // gate_proj, up_proj
        + matmul(tokens, ffn, h); // down_proj
    info.num_layers as u64 * per_layer + matmul(logit_positions, h, info.vocab_size as u64)
}

/// FLOPs of attention scores and weighted values for `new` queries attending to `kv_len`
/// keys each (per sequence).
pub fn attention(info: &ModelInfo, new: u64, kv_len: u64) -> u64 {
    let d = info.head_dim as u64;
    let heads = info.num_heads as u64;
    // QK^T and softmax(QK^T)V, per head.
    info.num_layers as u64 * heads * (matmul(new, d, kv_len) + matmul(new, kv_len, d))
}

/// FLOPs of a prompt pass over a prompt of `prompt_len` tokens (attention over the full
/// prompt, as computed with a causal mask), logits for the last position only.
pub fn prefill(info: &ModelInfo, prompt_len: u64) -> u64 {
    linear(info, prompt_len, 1) + attention(info, prompt_len, prompt_len)
}

/// FLOPs of one decode step of one sequence whose cache holds `kv_len` positions including
/// the new token.
pub fn decode_step(info: &ModelInfo, kv_len: u64) -> u64 {
    linear(info, 1, 1) + attention(info, 1, kv_len)
}

/// FLOPs to generate `new_tokens` after a prompt of `prompt_len` tokens: one prefill, then a
/// decode step per token after the first (the first comes from the prefill's logits).
pub fn generation(info: &ModelInfo, prompt_len: u64, new_tokens: u64) -> (u64, u64) {
    let prefill = prefill(info, prompt_len);
    let decode = (1..new_tokens)
        .map(|i| decode_step(info, prompt_len + i))
        .sum();
    (prefill, decode)
}

/// Bytes of keys and values one sequence reads in one decode step with `kv_len` cached
/// positions, at `dtype_bytes` per element.
pub fn kv_read_bytes(info: &ModelInfo, kv_len: u64, dtype_bytes: u64) -> u64 {
    2 * info.num_layers as u64
        * info.num_kv_heads as u64
        * info.head_dim as u64
        * kv_len
        * dtype_bytes
}

/// Bytes of KV cache read by the decode steps of one request (the first token comes from the
/// prefill; each later step reads the cache including the new position).
pub fn decode_kv_read_bytes(
    info: &ModelInfo,
    prompt_len: u64,
    new_tokens: u64,
    dtype_bytes: u64,
) -> u64 {
    (1..new_tokens)
        .map(|i| kv_read_bytes(info, prompt_len + i, dtype_bytes))
        .sum()
}

/// Bytes one batch's `steps` decode steps read: every weight the step streams once per step
/// ([`ModelInfo::step_weight_bytes`]) and each request's KV cache over its own new tokens.
/// `requests` are each request's `(prompt tokens, new tokens)`.
pub fn decode_read_bytes(
    info: &ModelInfo,
    steps: u64,
    requests: impl IntoIterator<Item = (u64, u64)>,
    dtype_bytes: u64,
) -> u64 {
    let kv: u64 = requests
        .into_iter()
        .map(|(prompt, new)| decode_kv_read_bytes(info, prompt, new, dtype_bytes))
        .sum();
    info.step_weight_bytes * steps + kv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_stories() -> ModelInfo {
        ModelInfo {
            name: "tiny-stories".into(),
            architecture: "llama".into(),
            compute: "test".into(),
            parameters: 0,
            weight_bytes: 0,
            step_weight_bytes: 0,
            hidden_size: 64,
            num_layers: 5,
            num_heads: 8,
            num_kv_heads: 4,
            head_dim: 8,
            intermediate_size: 172,
            vocab_size: 512,
            max_position_embeddings: 512,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            adapter: None,
            adapter_driver: None,
        }
    }

    #[test]
    fn linear_flops_are_twice_the_weight_count_per_token() {
        // Per token, every projection weight is used once (2 FLOPs): 5 layers x
        // (64*64 + 2*64*32 + 64*64 + 3*64*172) weights, plus the 64x512 head.
        let info = tiny_stories();
        let weights = 5 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 172) + 64 * 512;
        assert_eq!(linear(&info, 1, 1), 2 * weights);
    }

    #[test]
    fn attention_grows_with_the_cache() {
        let info = tiny_stories();
        assert_eq!(attention(&info, 1, 10), 5 * 8 * (2 * 8 * 10 * 2));
        let (p, d) = generation(&info, 5, 3);
        assert_eq!(p, prefill(&info, 5));
        assert_eq!(d, decode_step(&info, 6) + decode_step(&info, 7));
    }

    #[test]
    fn decode_reads_the_weights_per_step_and_each_requests_own_cache() {
        let info = ModelInfo {
            step_weight_bytes: 1000,
            ..tiny_stories()
        };
        // One KV position of one sequence: 2 (K, V) × 5 layers × 4 heads × 8 dims × 4 bytes.
        let position = 2 * 5 * 4 * 8 * 4;
        assert_eq!(kv_read_bytes(&info, 1, 4), position);
        // Request one: prompt 5, 3 new tokens, so its decode steps see 6 and 7 positions;
        // request two finished after 1 new token (the prefill's), so it read none.
        let bytes = decode_read_bytes(&info, 2, [(5, 3), (4, 1)], 4);
        assert_eq!(bytes, 2 * 1000 + (6 + 7) * position);
        assert_eq!(decode_read_bytes(&info, 0, [], 4), 0);
    }
}
