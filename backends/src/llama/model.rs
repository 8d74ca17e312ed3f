//! The Llama forward pass on burn tensor ops (as transformers' `LlamaForCausalLM` computes it),
//! generic over the burn backend: RMSNorm, rotary attention with grouped key/value heads and a
//! KV cache, the SwiGLU MLP and the output projection. Runs any backend, dtype or
//! quantization; f32 runs on the CPU take [`super::host_model::HostPass`] instead.

use std::sync::atomic::{AtomicU64, Ordering};

use api::runtime::RuntimeError;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

use super::batch::HostStep;
use super::config::LlamaConfig;
use super::families::Activation;
use super::forward::{ForwardPass, LogitRows, PassState, StepLogits};
use super::kv_cache::{KvCache, StepRows};
use super::linear::Linear;
use super::memory;
use super::rope::{RopeTable, apply_rope};
use super::weights::{LayerWeights, LlamaWeights};
use crate::error::BackendError;
use crate::host::to_host;

/// A step's logits on the burn device, `[rows, vocab]` in the run dtype.
#[derive(Debug)]
pub(crate) struct DeviceLogits<B: Backend>(pub(crate) Tensor<B, 2>);

impl<B: Backend> StepLogits for DeviceLogits<B> {
    fn vocab(&self) -> usize {
        self.0.dims()[1]
    }

    /// Only the few affected columns are touched: a full `[batch, vocab]` mask would be
    /// uploaded every step.
    fn suppress(self, rows: &[bool], tokens: &[u32]) -> Self {
        let [batch, vocab] = self.0.dims();
        let mask = Tensor::<B, 2, Bool>::from_data(
            TensorData::new(rows.to_vec(), [batch, 1]),
            &self.0.device(),
        );
        let mut logits = self.0;
        for &token in tokens {
            let t = token as usize;
            // An EOS id outside the vocabulary can never be produced anyway.
            if t >= vocab {
                continue;
            }
            let column = logits
                .clone()
                .slice([0..batch, t..t + 1])
                .mask_fill(mask.clone(), f32::NEG_INFINITY);
            logits = logits.slice_assign([0..batch, t..t + 1], column);
        }
        Self(logits)
    }

    /// Argmax on the device: only `batch` ids cross to the host (burn-flex's argmax keeps the
    /// first maximum, as torch does).
    fn argmax(self) -> Result<Vec<u32>, BackendError> {
        ids_to_host(self.0.argmax(1))
    }

    /// Inverse-CDF sampling on the device: softmax weights, their running sum along the row,
    /// and the count of positions whose running sum stays at or below `u` × total, which is
    /// the drawn id. Only `batch` uniforms go up and `batch` ids come back. The sums are f32
    /// (the host's are f64), so a draw within rounding of a boundary can pick the neighbour.
    fn sample_softmax(self, temperature: f64, uniforms: &[f64]) -> Result<Vec<u32>, BackendError> {
        let [batch, vocab] = self.0.dims();
        let device = self.0.device();
        let scaled = self.0.cast(DType::F32).div_scalar(temperature as f32);
        // NaN logits are never drawn (as on the host).
        let scaled = scaled.clone().mask_fill(scaled.is_nan(), f32::NEG_INFINITY);
        let max = scaled.clone().max_dim(1);
        let weights = (scaled - max).exp();
        // An all −inf row gives NaN weights (−inf − −inf): nothing drawable, id 0 as the host.
        let weights = weights.clone().mask_fill(weights.is_nan(), 0.0);
        let running = weights.cumsum(1);
        let total = running.clone().slice([0..batch, vocab - 1..vocab]);
        let draws: Vec<f32> = uniforms.iter().map(|&u| u as f32).collect();
        let target =
            total.clone() * Tensor::<B, 2>::from_data(TensorData::new(draws, [batch, 1]), &device);
        let below = running.lower_equal(target.expand([batch, vocab]));
        let ids = below
            .int()
            .sum_dim(1)
            .clamp_max((vocab - 1) as i64)
            .mask_fill(total.lower_equal_elem(0.0), 0);
        ids_to_host(ids)
    }

    fn into_host(self) -> Result<Vec<f32>, BackendError> {
        to_host(self.0.cast(DType::F32), "logits")?
            .to_vec()
            .map_err(|e| BackendError::DeviceRead {
                what: "logits".into(),
                message: format!("{e:?}"),
            })
    }
}

/// One token id per row, read back from the device (the only per-step transfer).
fn ids_to_host<B: Backend>(ids: Tensor<B, 2, Int>) -> Result<Vec<u32>, BackendError> {
    to_host(ids, "token ids")?
        .iter::<i64>()
        .map(|id| u32::try_from(id).map_err(|_| BackendError::TokenIdOutOfRange(id)))
        .collect()
}

/// `cap · tanh(x / cap)`: Gemma 2's soft cap on scores and logits.
fn soft_cap<B: Backend, const D: usize>(x: Tensor<B, D>, cap: f64) -> Tensor<B, D> {
    x.div_scalar(cap).tanh().mul_scalar(cap)
}

/// PyTorch's tanh approximation of GELU (`gelu_pytorch_tanh`):
/// `0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`.
fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

/// A generation's RoPE rows and KV cache on the burn device.
pub(crate) struct BurnState<B: Backend> {
    rope: RopeTable<B>,
    cache: KvCache<B>,
}

impl<B: Backend> PassState for BurnState<B> {
    fn len(&self) -> usize {
        self.cache.len()
    }

    fn kv_bytes(&self) -> u64 {
        self.cache.bytes()
    }

    fn reserved_bytes(&self) -> u64 {
        self.cache.reserved_bytes()
    }

    fn release(&mut self, slot: usize) {
        self.cache.release(slot);
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
    /// f32 additive mask `[batch, 1, 1, seq, keys]`.
    mask: Tensor<B, 5>,
    /// The mask of each sliding window the layers use, same shape.
    window_masks: Vec<(usize, Tensor<B, 5>)>,
    batch: usize,
    seq: usize,
}

impl<B: Backend> StepInput<B> {
    /// Uploads host-side ids and masks (one per sliding window in `windows`) and gathers the
    /// RoPE rows for the positions.
    fn upload(
        host: HostStep,
        windows: &[Option<usize>],
        rope: &RopeTable<B>,
        device: &B::Device,
    ) -> Self {
        let masks = host.window_masks(windows);
        let keys = host.keys();
        let HostStep {
            tokens,
            positions,
            mask,
            batch,
            seq,
            ..
        } = host;
        let n = batch * seq;
        let ints = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device);
        let (cos, sin) = rope.gather(ints(positions), batch, seq);
        let upload_mask = |mask: Vec<f32>| {
            Tensor::from_data(
                TensorData::new(mask, [batch, 1, 1, seq, keys]),
                (device, DType::F32),
            )
        };
        Self {
            tokens: ints(tokens),
            cos,
            sin,
            mask: upload_mask(mask),
            window_masks: masks
                .into_iter()
                .map(|(w, m)| (w, upload_mask(m)))
                .collect(),
            batch,
            seq,
        }
    }
}

/// The burn forward pass over one model's weights on one device.
pub(crate) struct BurnPass<B: Backend> {
    config: LlamaConfig,
    weights: LlamaWeights<B>,
    device: B::Device,
    /// The run dtype, as burn names it (activations, cache).
    dtype: DType,
    /// The run dtype, as the engine names it (for the memory estimate).
    run_dtype: api::runtime::DType,
    /// FLOPs of every matrix product executed, from the operands' shapes: the check on the
    /// engine's analytic count (one relaxed add per product, nothing per element).
    executed_flops: AtomicU64,
}

impl<B: Backend> BurnPass<B> {
    /// The pass over `weights`, built on `device` in `run_dtype`.
    pub(crate) fn new(
        config: LlamaConfig,
        weights: LlamaWeights<B>,
        device: B::Device,
        run_dtype: api::runtime::DType,
    ) -> Self {
        Self {
            config,
            weights,
            device,
            dtype: crate::host::burn_dtype(run_dtype),
            run_dtype,
            executed_flops: AtomicU64::new(0),
        }
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

    /// Runs `seq` new tokens per sequence through the model, writing their keys and values into
    /// their slots of `cache` (where `slots` places them), and returns logits in the run dtype.
    ///
    /// # Shapes
    /// - `input`: `batch` sequences of `seq` tokens each
    /// - returns `[batch, vocab]` for [`LogitRows::Last`], `[batch * seq, vocab]` (row-major
    ///   over `(sequence, column)`) for [`LogitRows::All`]
    fn forward(
        &self,
        input: &StepInput<B>,
        slots: &StepRows<B>,
        cache: &mut KvCache<B>,
        rows: LogitRows,
    ) -> Result<Tensor<B, 2>, BackendError> {
        let weights = &self.weights;
        let arch = &self.config.arch;
        let (b, t, hidden) = (input.batch, input.seq, self.config.hidden_size);
        let mut x = weights.embed_tokens.clone().select(0, input.tokens.clone());
        if arch.embedding_scale {
            // transformers scales by √hidden rounded to the activations' dtype first.
            let scale = crate::host::round_to(self.run_dtype, (hidden as f64).sqrt() as f32);
            x = x.mul_scalar(scale);
        }
        for (i, layer) in weights.layers.iter().enumerate() {
            let h = self.rms_norm(x.clone(), &layer.input_norm);
            let a = self.attention(i, layer, h, input, (slots, cache))?;
            x = x + self.maybe_norm(a, layer.attn_out_norm.as_ref());
            let h = self.rms_norm(x.clone(), &layer.mlp_norm);
            let m = self.mlp(layer, h);
            x = x + self.maybe_norm(m, layer.mlp_out_norm.as_ref());
        }
        cache.advance(slots);
        let x = match rows {
            LogitRows::Last => x
                .reshape([b, t, hidden])
                .slice([0..b, t - 1..t, 0..hidden])
                .reshape([b, hidden]),
            LogitRows::All => x,
        };
        let x = self.rms_norm(x, &weights.norm);
        let logits = match &weights.lm_head {
            Some(w) => self.linear(w, x),
            None => self.matmul(x, weights.embed_tokens.clone().transpose()),
        };
        Ok(match arch.final_logit_softcap {
            Some(cap) => soft_cap(logits, cap),
            None => logits,
        })
    }

    /// transformers' LlamaRMSNorm over the last axis: statistics in f32, the scale applied
    /// after casting back. (Gemma's `1 + w` is folded into the scale at load.)
    ///
    /// # Shapes
    /// - `x`: `[.., width]`; `weight`: `[width]`
    fn rms_norm<const D: usize>(&self, x: Tensor<B, D>, weight: &Tensor<B, 1>) -> Tensor<B, D> {
        let x = x.cast(DType::F32);
        let inv_rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.config.rms_norm_eps)
            .sqrt()
            .recip();
        (x * inv_rms).cast(self.dtype) * weight.clone().unsqueeze::<D>()
    }

    /// `norm(x)` where the layer has that norm, else `x`.
    fn maybe_norm(&self, x: Tensor<B, 2>, weight: Option<&Tensor<B, 1>>) -> Tensor<B, 2> {
        match weight {
            Some(w) => self.rms_norm(x, w),
            None => x,
        }
    }

    /// Grouped-query self-attention. Query heads sharing a key/value head are stacked along the
    /// row axis (`[B, H, T, D]` viewed as `[B, KVH, G*T, D]`), so one matmul per KV head serves
    /// the whole group and K/V are never repeated in memory.
    ///
    /// # Shapes
    /// - `h`: `[batch * seq, hidden]`
    /// - keys and values attended: `[batch, kv_heads, keys, head_dim]`, each sequence's slot
    /// - returns `[batch * seq, hidden]`
    fn attention(
        &self,
        index: usize,
        w: &LayerWeights<B>,
        h: Tensor<B, 2>,
        input: &StepInput<B>,
        (slots, cache): (&StepRows<B>, &mut KvCache<B>),
    ) -> Result<Tensor<B, 2>, BackendError> {
        let c = &self.config;
        let (b, t) = (input.batch, input.seq);
        let (heads, kv_heads, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let group = heads / kv_heads;
        let project = |linear: &Linear<B>, bias: Option<&Tensor<B, 1>>| {
            let y = self.linear(linear, h.clone());
            match bias {
                Some(bias) => y + bias.clone().unsqueeze::<2>(),
                None => y,
            }
        };
        let biases = w.qkv_bias.as_ref();
        let q = project(&w.q_proj, biases.map(|[q, _, _]| q));
        let k = project(&w.k_proj, biases.map(|[_, k, _]| k));
        let v = project(&w.v_proj, biases.map(|[_, _, v]| v));
        let heads_of = |x: Tensor<B, 2>, n: usize| x.reshape([b, t, n, d]);
        let (q, k) = match &w.qk_norm {
            // Qwen3: each head normed over its own width, before the rotation.
            Some([q_norm, k_norm]) => (
                self.rms_norm(heads_of(q, heads), q_norm),
                self.rms_norm(heads_of(k, kv_heads), k_norm),
            ),
            None => (heads_of(q, heads), heads_of(k, kv_heads)),
        };
        let q = self.rotate(q.swap_dims(1, 2), input);
        let k = self.rotate(k.swap_dims(1, 2), input);
        let v = heads_of(v, kv_heads).swap_dims(1, 2);
        let (k_all, v_all) = cache.append(index, k, v, slots)?;
        let s = k_all.dims()[2];

        // Scaling q before the product keeps f16 scores in range.
        let q = q
            .mul_scalar(c.attention_scale())
            .reshape([b, kv_heads, group * t, d]);
        let scores = self.matmul(q, k_all.swap_dims(2, 3));
        // Softmax in f32 like transformers' eager path, so f16/bf16 only round the inputs.
        let scores = scores.cast(DType::F32).reshape([b, kv_heads, group, t, s]);
        let scores = match c.arch.attn_logit_softcap {
            Some(cap) => soft_cap(scores, cap),
            None => scores,
        };
        let mask = match c.arch.layer_windows.get(index).copied().flatten() {
            Some(window) => input
                .window_masks
                .iter()
                .find(|(w, _)| *w == window)
                .map(|(_, m)| m.clone())
                .ok_or_else(|| {
                    BackendError::Internal(format!("no mask for the sliding window {window}"))
                })?,
            None => input.mask.clone(),
        };
        let probs = softmax(scores + mask, 4)
            .cast(self.dtype)
            .reshape([b, kv_heads, group * t, s]);
        let out = self
            .matmul(probs, v_all)
            .reshape([b, heads, t, d])
            .swap_dims(1, 2)
            .reshape([b * t, heads * d]);
        Ok(self.linear(&w.o_proj, out))
    }

    /// RoPE on each head's leading `rotary_dim` dimensions (all of them but for Phi-3), the
    /// rest passed through.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, seq, head_dim]`
    fn rotate(&self, x: Tensor<B, 4>, input: &StepInput<B>) -> Tensor<B, 4> {
        let [b, h, t, d] = x.dims();
        let r = self.config.rotary_dim();
        if r == d {
            return apply_rope(x, &input.cos, &input.sin);
        }
        let rotated = apply_rope(
            x.clone().slice([0..b, 0..h, 0..t, 0..r]),
            &input.cos,
            &input.sin,
        );
        Tensor::cat(vec![rotated, x.slice([0..b, 0..h, 0..t, r..d])], 3)
    }

    /// The gated MLP: `down(act(gate(x)) * up(x))`, `act` SiLU (SwiGLU) or GELU-tanh (Gemma).
    ///
    /// # Shapes
    /// - `h`: `[rows, hidden]`, returns `[rows, hidden]`
    fn mlp(&self, w: &LayerWeights<B>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let gate = self.linear(&w.gate_proj, h.clone());
        let gate = match self.config.arch.activation {
            Activation::Silu => silu(gate),
            Activation::GeluTanh => gelu_tanh(gate),
        };
        let up = self.linear(&w.up_proj, h);
        self.linear(&w.down_proj, gate * up)
    }
}

impl<B: Backend> ForwardPass for BurnPass<B> {
    type State = BurnState<B>;
    type Logits = DeviceLogits<B>;

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn compute(&self) -> String {
        // How the linears are held, e.g. `burn-flex.w-int8/b32.burn-q8s`; a layer burn cannot
        // hold (a block that does not divide its rows) adds its own label after a `+`.
        let mut labels: Vec<&str> = Vec::new();
        for layer in &self.weights.layers {
            for (_, linear) in layer.linears() {
                if let Some(label) = linear.label()
                    && !labels.contains(&label)
                {
                    labels.push(label);
                }
            }
        }
        let backend = format!("burn-{}", B::name(&self.device));
        if labels.is_empty() {
            backend
        } else {
            format!("{backend}.{}", labels.join("+"))
        }
    }

    fn executed_flops(&self) -> u64 {
        self.executed_flops.load(Ordering::Relaxed)
    }

    fn kv_cache_bytes(&self, sequences: usize, capacity: usize) -> Result<u64, RuntimeError> {
        memory::kv_cache_bytes(
            &self.config,
            self.run_dtype,
            false,
            sequences,
            capacity,
            capacity,
        )
    }

    fn new_state(&self, slots: usize, capacity: usize, rope_len: usize) -> BurnState<B> {
        let c = &self.config;
        BurnState {
            rope: RopeTable::new(&c.rope, c.rotary_dim(), rope_len, &self.device, self.dtype),
            cache: KvCache::new(
                c.num_layers,
                slots,
                c.num_kv_heads,
                c.head_dim,
                capacity,
                &self.device,
                self.dtype,
            ),
        }
    }

    fn step(
        &self,
        step: HostStep,
        state: &mut BurnState<B>,
        rows: LogitRows,
    ) -> Result<DeviceLogits<B>, BackendError> {
        // Checked before anything is uploaded or written.
        let slots = state.cache.rows(&step, &self.device)?;
        let input = StepInput::upload(
            step,
            &self.config.arch.layer_windows,
            &state.rope,
            &self.device,
        );
        self.forward(&input, &slots, &mut state.cache, rows)
            .map(DeviceLogits)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::backend::Backend;
    use burn_flex::{Flex, FlexDevice};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::sampler::Warpers;

    /// Random logits rows (a few −inf and NaN entries, one all −inf row) and uniforms.
    fn rows(batch: usize, vocab: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut logits: Vec<f32> = (0..batch * vocab)
            .map(|_| rng.random_range(-6.0f32..6.0))
            .collect();
        logits[3] = f32::NEG_INFINITY;
        logits[vocab + 5] = f32::NAN;
        for v in &mut logits[(batch - 1) * vocab..] {
            *v = f32::NEG_INFINITY;
        }
        let uniforms = (0..batch).map(|_| rng.random::<f64>()).collect();
        (logits, uniforms)
    }

    /// Device draws equal the host's inverse-CDF draws for the same uniforms (the sums differ
    /// only in rounding: f32 on the device, f64 on the host).
    fn device_sampling_matches_the_host<B: Backend>(device: &B::Device) {
        let (batch, vocab) = (64, 1000);
        let mut mismatches = 0;
        for (seed, temperature) in [(1, 1.0), (2, 0.7), (3, 1.6)] {
            let (logits, uniforms) = rows(batch, vocab, seed);
            let warpers = Warpers::softmax(temperature);
            let host: Vec<u32> = logits
                .chunks_exact(vocab)
                .zip(&uniforms)
                .map(|(row, &u)| warpers.sample_at(row, u))
                .collect();
            let tensor =
                Tensor::<B, 2>::from_data(TensorData::new(logits.clone(), [batch, vocab]), device);
            let on_device = DeviceLogits(tensor)
                .sample_softmax(temperature, &uniforms)
                .unwrap();
            assert_eq!(on_device[batch - 1], 0, "an all −inf row draws id 0");
            for (row, (d, h)) in on_device.iter().zip(&host).enumerate() {
                let row_logits = &logits[row * vocab..(row + 1) * vocab];
                assert!(!row_logits[*d as usize].is_nan(), "a NaN logit was drawn");
                if d != h {
                    mismatches += 1;
                    assert!(d.abs_diff(*h) == 1, "row {row}: device {d}, host {h}");
                }
            }
        }
        // A rounding neighbour needs u within ~1e-6 of a boundary: at most one in 192 draws.
        assert!(mismatches <= 1, "{mismatches} draws differ from the host's");
    }

    #[test]
    fn sampling_on_burn_flex_matches_the_host() {
        device_sampling_matches_the_host::<Flex>(&FlexDevice);
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn sampling_on_wgpu_matches_the_host() {
        match crate::wgpu_adapter::select("wgpu", None) {
            Ok(adapter) => device_sampling_matches_the_host::<burn_wgpu::Wgpu>(&adapter.device),
            Err(e) => {
                assert!(
                    std::env::var("LLMEFF_REQUIRE_WGPU").as_deref() != Ok("1"),
                    "LLMEFF_REQUIRE_WGPU=1 but {e}"
                );
                eprintln!("skipped: {e}");
            }
        }
    }
}
