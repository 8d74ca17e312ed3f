//! The Llama forward pass (as transformers' `LlamaForCausalLM` computes it), generic over the
//! burn backend: RMSNorm, rotary attention with grouped key/value heads and a KV cache, the
//! SwiGLU MLP and the output projection. f32 runs on the CPU take the host path instead
//! ([`super::host_model`]); [`LlamaModel::step`] hides which one a model uses.

use std::sync::atomic::{AtomicU64, Ordering};

use api::runtime::RuntimeError;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::batch::HostStep;
use super::config::LlamaConfig;
use super::host_model::{HostCache, HostRope, HostWeights};
use super::kv_cache::KvCache;
use super::linear::Linear;
use super::rope::{RopeTable, apply_rope};
use super::weights::{LayerWeights, LlamaWeights};
use crate::host::to_host;

/// Which rows of the final hidden states go through the output projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogitRows {
    /// Only each sequence's last column (what generation needs; saves `T - 1` vocab-sized
    /// products per sequence).
    Last,
    /// Every column, pads included.
    All,
}

/// A step's logits, `[rows, vocab]`, where the forward pass left them.
#[derive(Debug)]
pub(crate) enum StepLogits<B: Backend> {
    /// On the burn device, in the run dtype.
    Device(Tensor<B, 2>),
    /// In host memory, f32, row-major (the host forward pass): picked there, without a round
    /// trip through a device tensor.
    Host { values: Vec<f32>, vocab: usize },
}

impl<B: Backend> StepLogits<B> {
    /// The values as f32 on the host, row-major.
    pub(crate) fn into_host(self) -> Result<Vec<f32>, RuntimeError> {
        match self {
            StepLogits::Device(t) => to_host(t.cast(DType::F32))?
                .to_vec()
                .map_err(|e| RuntimeError::Backend(format!("reading logits: {e:?}"))),
            StepLogits::Host { values, .. } => Ok(values),
        }
    }
}

/// The inputs of one forward call, already on the device.
struct StepInput<B: Backend> {
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
    fn upload(host: HostStep, rope: &RopeTable<B>, device: &B::Device) -> Self {
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

/// The weights a model computes with, which decides its forward pass.
pub(crate) enum ModelWeights<B: Backend> {
    /// burn tensors on the device (any backend, dtype or quantization).
    Burn(LlamaWeights<B>),
    /// Host f32 for llmeff's CPU kernels.
    Host(HostWeights),
}

/// A generation's RoPE rows and KV cache, in the form its model's forward pass uses.
pub(crate) enum StepState<B: Backend> {
    /// For [`ModelWeights::Burn`].
    Burn {
        rope: RopeTable<B>,
        cache: KvCache<B>,
    },
    /// For [`ModelWeights::Host`] (boxed: it carries the step's scratch buffers inline).
    Host {
        rope: HostRope,
        cache: Box<HostCache>,
    },
}

impl<B: Backend> StepState<B> {
    /// Bytes of keys and values cached so far.
    pub(crate) fn kv_bytes(&self) -> u64 {
        match self {
            StepState::Burn { cache, .. } => cache.bytes(),
            StepState::Host { cache, .. } => cache.bytes(),
        }
    }

    /// Positions cached so far.
    pub(crate) fn len(&self) -> usize {
        match self {
            StepState::Burn { cache, .. } => cache.len(),
            StepState::Host { cache, .. } => cache.len(),
        }
    }
}

/// A Llama model on one device.
pub(crate) struct LlamaModel<B: Backend> {
    config: LlamaConfig,
    weights: ModelWeights<B>,
    device: B::Device,
    dtype: DType,
    /// FLOPs of every matrix product executed, from the operands' shapes: the check on the
    /// engine's analytic count (one relaxed add per product, nothing per element).
    executed_flops: AtomicU64,
}

impl<B: Backend> LlamaModel<B> {
    pub(crate) fn new(
        config: LlamaConfig,
        weights: ModelWeights<B>,
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

    /// Whether this model runs on the host kernels (tests; results read `ModelInfo::compute`).
    #[cfg(test)]
    pub(crate) fn on_host(&self) -> bool {
        matches!(self.weights, ModelWeights::Host(_))
    }

    /// An empty KV cache with room for `capacity` positions of `batch` sequences, and RoPE rows
    /// for positions `0..rope_len`.
    pub(crate) fn new_state(&self, batch: usize, capacity: usize, rope_len: usize) -> StepState<B> {
        let c = &self.config;
        match self.weights {
            ModelWeights::Burn(_) => StepState::Burn {
                rope: RopeTable::new(&c.rope, c.head_dim, rope_len, &self.device, self.dtype),
                cache: KvCache::new(
                    c.num_layers,
                    batch,
                    c.num_kv_heads,
                    c.head_dim,
                    capacity,
                    &self.device,
                    self.dtype,
                ),
            },
            ModelWeights::Host(_) => StepState::Host {
                rope: HostRope::new(&c.rope, c.head_dim, rope_len),
                cache: Box::new(HostCache::new(c, batch, capacity)),
            },
        }
    }

    /// Runs one step (`host`: the prompt pass or one decode position per sequence), appending
    /// to `state`'s cache, and returns logits: `[batch, vocab]` for [`LogitRows::Last`],
    /// `[batch * seq, vocab]` for [`LogitRows::All`].
    pub(crate) fn step(
        &self,
        host: HostStep,
        state: &mut StepState<B>,
        rows: LogitRows,
    ) -> Result<StepLogits<B>, RuntimeError> {
        match (&self.weights, state) {
            (ModelWeights::Burn(weights), StepState::Burn { rope, cache }) => {
                let input = StepInput::upload(host, rope, &self.device);
                self.forward(weights, &input, cache, rows)
                    .map(StepLogits::Device)
            }
            (ModelWeights::Host(weights), StepState::Host { rope, cache }) => {
                let logits = weights.forward(
                    &self.config,
                    &host,
                    rope,
                    cache,
                    rows,
                    &self.executed_flops,
                )?;
                Ok(StepLogits::Host {
                    values: logits,
                    vocab: self.config.vocab_size,
                })
            }
            _ => Err(RuntimeError::Backend(
                "internal: a generation's state does not match its model's weights".into(),
            )),
        }
    }

    /// Runs `seq` new tokens per sequence through the model, appending their keys and values to
    /// `cache`, and returns logits in the run dtype.
    ///
    /// # Shapes
    /// - `input`: `batch` sequences of `seq` tokens each, `cache.len()` positions already cached
    /// - returns `[batch, vocab]` for [`LogitRows::Last`], `[batch * seq, vocab]` (row-major
    ///   over `(sequence, column)`) for [`LogitRows::All`]
    fn forward(
        &self,
        weights: &LlamaWeights<B>,
        input: &StepInput<B>,
        cache: &mut KvCache<B>,
        rows: LogitRows,
    ) -> Result<Tensor<B, 2>, RuntimeError> {
        let (b, t, hidden) = (input.batch, input.seq, self.config.hidden_size);
        let mut x = weights.embed_tokens.clone().select(0, input.tokens.clone());
        for (i, layer) in weights.layers.iter().enumerate() {
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
        let x = self.rms_norm(x, &weights.norm);
        Ok(match &weights.lm_head {
            Some(w) => self.linear(w, x),
            None => self.matmul(x, weights.embed_tokens.clone().transpose()),
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

#[cfg(test)]
mod tests {
    use burn_flex::{Flex, FlexDevice};

    use super::*;
    use crate::llama::batch::PaddedBatch;
    use crate::llama::rope::{RopeConfig, RopeScaling};
    use crate::llama::weights::WeightSource;

    /// A small GQA config with head_dim 16 and a tied head, so both paths' special cases run.
    fn config() -> LlamaConfig {
        LlamaConfig {
            hidden_size: 64,
            intermediate_size: 96,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            rms_norm_eps: 1e-5,
            rope: RopeConfig {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
            tie_word_embeddings: true,
            vocab_size: 97,
            max_position_embeddings: 64,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            initializer_range: 0.2,
        }
    }

    fn models() -> (LlamaModel<Flex>, LlamaModel<Flex>) {
        let c = config();
        let source = WeightSource::Random { seed: 7 };
        let burn = LlamaWeights::build(&c, &source, &FlexDevice, api::runtime::DType::F32).unwrap();
        let host = HostWeights::build(&c, &source).unwrap();
        let make = |w| LlamaModel::new(c.clone(), w, FlexDevice, DType::F32);
        (
            make(ModelWeights::Burn(burn)),
            make(ModelWeights::Host(host)),
        )
    }

    fn values(logits: StepLogits<Flex>) -> Vec<f32> {
        logits.into_host().unwrap()
    }

    #[test]
    fn host_and_burn_paths_compute_the_same_random_model() {
        let (burn, host) = models();
        assert!(host.on_host() && !burn.on_host());
        let prompts = vec![vec![3, 5, 8, 13, 21], vec![34, 55]];
        let batch = PaddedBatch::new(prompts.iter().map(Vec::len).collect());
        let mut states = [burn.new_state(2, 7, 7), host.new_state(2, 7, 7)];
        let mut logits = [Vec::new(), Vec::new()];
        for ((model, state), out) in [&burn, &host].into_iter().zip(&mut states).zip(&mut logits) {
            let all = model
                .step(batch.prefill(&prompts), state, LogitRows::All)
                .unwrap();
            out.extend(values(all));
            let next = model
                .step(
                    batch.decode(1, &[4, 6], state.len()),
                    state,
                    LogitRows::Last,
                )
                .unwrap();
            out.extend(values(next));
            assert_eq!(state.len(), 6);
            assert_eq!(state.kv_bytes(), 2 * 2 * 2 * 2 * 16 * 4 * 6);
        }
        assert_eq!(logits[0].len(), (2 * 5 + 2) * 97);
        let worst = logits[0]
            .iter()
            .zip(&logits[1])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // Both are f32 with different summation orders.
        assert!(worst < 1e-4, "max abs difference {worst}");
        assert_eq!(burn.executed_flops(), host.executed_flops());
    }

    #[test]
    fn a_full_host_cache_or_a_stale_step_is_an_error() {
        let (_, host) = models();
        let batch = PaddedBatch::new(vec![2]);
        let mut state = host.new_state(1, 3, 3);
        host.step(batch.prefill(&[vec![3, 4]]), &mut state, LogitRows::Last)
            .unwrap();
        // A step that claims the wrong number of cached positions.
        let stale = batch.decode(1, &[5], 0);
        assert!(host.step(stale, &mut state, LogitRows::Last).is_err());
        host.step(batch.decode(1, &[5], 2), &mut state, LogitRows::Last)
            .unwrap();
        let err = host
            .step(batch.decode(2, &[6], 3), &mut state, LogitRows::Last)
            .unwrap_err();
        assert!(err.to_string().contains("KV cache holds 3"), "{err}");
    }
}
