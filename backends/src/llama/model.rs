//! The Llama forward pass (as transformers' `LlamaForCausalLM` computes it), generic over the
//! burn backend: RMSNorm, rotary attention with grouped key/value heads and a KV cache, the
//! SwiGLU MLP and the output projection.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use engine::runtime::RuntimeError;

use super::batch::HostStep;
use super::config::LlamaConfig;
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::rope::{RopeTable, apply_rope};
use super::weights::{LayerWeights, LlamaWeights};

/// Which rows of the final hidden states go through the output projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogitRows {
    /// Only each sequence's last column (what generation needs; saves `T - 1` vocab-sized
    /// products per sequence).
    Last,
    /// Every column, pads included.
    All,
}

/// The inputs of one forward call, already on the device.
pub(crate) struct StepInput<B: Backend> {
    /// `[batch * seq]`
    tokens: Tensor<B, 1, Int>,
    /// `[batch, 1, seq, head_dim]`
    cos: Tensor<B, 4>,
    /// `[batch, 1, seq, head_dim]`
    sin: Tensor<B, 4>,
    /// f32 additive mask `[batch, 1, 1, seq, past + seq]`.
    mask: Tensor<B, 5>,
    batch: usize,
    seq: usize,
}

impl<B: Backend> StepInput<B> {
    /// Uploads host-side ids and mask and gathers the RoPE rows for the positions.
    pub(crate) fn upload(host: HostStep, rope: &RopeTable<B>, device: &B::Device) -> Self {
        let HostStep {
            tokens,
            positions,
            mask,
            batch,
            seq,
            past,
        } = host;
        let n = batch * seq;
        let ints = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device);
        let (cos, sin) = rope.gather(ints(positions), batch, seq);
        let mask = Tensor::from_data(
            TensorData::new(mask, [batch, 1, 1, seq, past + seq]),
            (device, DType::F32),
        );
        Self {
            tokens: ints(tokens),
            cos,
            sin,
            mask,
            batch,
            seq,
        }
    }
}

/// A Llama model on one device.
pub(crate) struct LlamaModel<B: Backend> {
    config: LlamaConfig,
    weights: LlamaWeights<B>,
    device: B::Device,
    dtype: DType,
    /// FLOPs of every matrix product executed, from the operands' shapes: the check on the
    /// engine's analytic count (one relaxed add per product, nothing per element).
    executed_flops: AtomicU64,
}

impl<B: Backend> LlamaModel<B> {
    pub(crate) fn new(
        config: LlamaConfig,
        weights: LlamaWeights<B>,
        device: B::Device,
        dtype: DType,
    ) -> Self {
        Self {
            config,
            weights,
            device,
            dtype,
            executed_flops: AtomicU64::new(0),
        }
    }

    /// FLOPs of the matrix products executed since the model was built.
    pub(crate) fn executed_flops(&self) -> u64 {
        self.executed_flops.load(Ordering::Relaxed)
    }

    /// A (batched) matrix product `[.., m, k] · [.., k, n]`, counted.
    fn matmul<const D: usize>(&self, a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
        let (ad, bd) = (a.dims(), b.dims());
        let batch: usize = ad[..D - 2].iter().product();
        let flops = 2 * batch as u64 * ad[D - 2] as u64 * ad[D - 1] as u64 * bd[D - 1] as u64;
        self.executed_flops.fetch_add(flops, Ordering::Relaxed);
        a.matmul(b)
    }

    /// A linear layer applied to `[rows, in]`, counted.
    fn linear(&self, w: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [rows, _] = x.dims();
        let [k, n] = w.dims();
        self.executed_flops
            .fetch_add(2 * rows as u64 * k as u64 * n as u64, Ordering::Relaxed);
        w.forward(x)
    }

    pub(crate) fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub(crate) fn device(&self) -> &B::Device {
        &self.device
    }

    /// An empty cache with room for `capacity` positions of `batch` sequences.
    pub(crate) fn new_cache(&self, batch: usize, capacity: usize) -> KvCache<B> {
        let c = &self.config;
        KvCache::new(
            c.num_layers,
            batch,
            c.num_kv_heads,
            c.head_dim,
            capacity,
            &self.device,
            self.dtype,
        )
    }

    /// A RoPE table for positions `0..len`.
    pub(crate) fn rope_table(&self, len: usize) -> RopeTable<B> {
        RopeTable::new(
            &self.config.rope,
            self.config.head_dim,
            len,
            &self.device,
            self.dtype,
        )
    }

    /// Runs `seq` new tokens per sequence through the model, appending their keys and values to
    /// `cache`, and returns logits in the run dtype.
    ///
    /// # Shapes
    /// - `input`: `batch` sequences of `seq` tokens each, `cache.len()` positions already cached
    /// - returns `[batch, vocab]` for [`LogitRows::Last`], `[batch * seq, vocab]` (row-major
    ///   over `(sequence, column)`) for [`LogitRows::All`]
    pub(crate) fn forward(
        &self,
        input: &StepInput<B>,
        cache: &mut KvCache<B>,
        rows: LogitRows,
    ) -> Result<Tensor<B, 2>, RuntimeError> {
        let (b, t, hidden) = (input.batch, input.seq, self.config.hidden_size);
        let mut x = self
            .weights
            .embed_tokens
            .clone()
            .select(0, input.tokens.clone());
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &layer.input_norm);
            x = x + self.attention(i, layer, h, input, cache)?;
            let h = self.rms_norm(x.clone(), &layer.post_attention_norm);
            x = x + self.mlp(layer, h);
        }
        cache.advance(t);
        let x = match rows {
            LogitRows::Last => x
                .reshape([b, t, hidden])
                .slice([0..b, t - 1..t, 0..hidden])
                .reshape([b, hidden]),
            LogitRows::All => x,
        };
        let x = self.rms_norm(x, &self.weights.norm);
        Ok(match &self.weights.lm_head {
            Some(w) => self.linear(w, x),
            None => self.matmul(x, self.weights.embed_tokens.clone().transpose()),
        })
    }

    /// transformers' LlamaRMSNorm: statistics in f32, the scale applied after casting back.
    ///
    /// # Shapes
    /// - `x`: `[rows, hidden]`
    fn rms_norm(&self, x: Tensor<B, 2>, weight: &Tensor<B, 1>) -> Tensor<B, 2> {
        let x = x.cast(DType::F32);
        let inv_rms = x
            .clone()
            .square()
            .mean_dim(1)
            .add_scalar(self.config.rms_norm_eps)
            .sqrt()
            .recip();
        (x * inv_rms).cast(self.dtype) * weight.clone().unsqueeze::<2>()
    }

    /// Grouped-query self-attention. Query heads sharing a key/value head are stacked along the
    /// row axis (`[B, H, T, D]` viewed as `[B, KVH, G*T, D]`), so one matmul per KV head serves
    /// the whole group and K/V are never repeated in memory.
    ///
    /// # Shapes
    /// - `h`: `[batch * seq, hidden]`
    /// - returns `[batch * seq, hidden]`
    fn attention(
        &self,
        index: usize,
        w: &LayerWeights<B>,
        h: Tensor<B, 2>,
        input: &StepInput<B>,
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>, RuntimeError> {
        let c = &self.config;
        let (b, t) = (input.batch, input.seq);
        let (heads, kv_heads, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let group = heads / kv_heads;
        let split = |x: Tensor<B, 2>, n: usize| x.reshape([b, t, n, d]).swap_dims(1, 2);
        let q = split(self.linear(&w.q_proj, h.clone()), heads);
        let k = split(self.linear(&w.k_proj, h.clone()), kv_heads);
        let v = split(self.linear(&w.v_proj, h), kv_heads);
        let q = apply_rope(q, &input.cos, &input.sin);
        let k = apply_rope(k, &input.cos, &input.sin);
        let (k_all, v_all) = cache.append(index, k, v)?;
        let s = k_all.dims()[2];

        // Scaling q before the product keeps f16 scores in range.
        let q = q
            .mul_scalar(1.0 / (d as f64).sqrt())
            .reshape([b, kv_heads, group * t, d]);
        let scores = self.matmul(q, k_all.swap_dims(2, 3));
        // Softmax in f32 like transformers' eager path, so f16/bf16 only round the inputs.
        let scores =
            scores.cast(DType::F32).reshape([b, kv_heads, group, t, s]) + input.mask.clone();
        let probs = softmax(scores, 4)
            .cast(self.dtype)
            .reshape([b, kv_heads, group * t, s]);
        let out = self
            .matmul(probs, v_all)
            .reshape([b, heads, t, d])
            .swap_dims(1, 2)
            .reshape([b * t, heads * d]);
        Ok(self.linear(&w.o_proj, out))
    }
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
///
/// # Shapes
/// - `h`: `[rows, hidden]`, returns `[rows, hidden]`
impl<B: Backend> LlamaModel<B> {
    fn mlp(&self, w: &LayerWeights<B>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let gate = silu(self.linear(&w.gate_proj, h.clone()));
        let up = self.linear(&w.up_proj, h);
        self.linear(&w.down_proj, gate * up)
    }
}
