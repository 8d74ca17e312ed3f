//! The Llama forward pass on host memory, for f32 runs on the CPU: every layer runs on
//! llmeff's kernels (`crate::kernels`) over plain `f32` buffers, with the query, key and value
//! projections fused into one matrix, gate and up into another, attention read straight from a
//! preallocated KV cache, and scratch buffers kept across steps. It computes what
//! [`super::model::BurnPass`] computes (both reproduce transformers' golden logits).
//! It exists because burn-flex spends most of a small model's decode step, and most of any
//! model's prefill, outside the matrix products: per-op dispatch and allocation, and strided
//! copies for the head reshapes. On a 2-core Sapphire Rapids VM, `llmeff bench --forward burn`
//! against this path measured burn-flex 1.6–5.6× slower end to end (prefill and decode, batch 1
//! and 8, tiny-stories and the SmolLM-135M and TinyLlama-1.1B shapes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use api::runtime::{DType, RuntimeError};

use super::batch::HostStep;
use super::config::LlamaConfig;
use super::forward::{ForwardPass, LogitRows, PassState, StepLogits, argmax_row};
use super::memory;
use super::rope::{RopeConfig, rope_table_values};
use super::weights::{
    LM_HEAD, Role, WeightSource, WeightSpec, checkpoint_layout_f32, reject_unexpected_tensors,
    weight_specs,
};
use crate::error::{BackendError, InputError};
use crate::handle::HOST_COMPUTE;
use kernels::huge_pages::WeightBuffer;
use kernels::{
    AttentionShape, KEY_TAIL_BLOCK, attention, linear_f32, linear_splits, rms_norm, rotate_half,
    silu_mul,
};

/// A linear layer's weight in PyTorch's `[out, in]` layout, row-major.
#[derive(Debug, Clone)]
pub(crate) struct HostMatrix {
    /// On huge pages where possible: every step streams it (see [`WeightBuffer`]).
    values: WeightBuffer,
    out_features: usize,
    in_features: usize,
}

impl HostMatrix {
    fn new(values: WeightBuffer, out_features: usize, in_features: usize) -> Self {
        debug_assert_eq!(values.len(), out_features * in_features);
        Self {
            values,
            out_features,
            in_features,
        }
    }

    /// The weights read, rows stacked (`[a; b; ...]`, all with the same `in_features`), each
    /// copied once into the matrix's [`WeightBuffer`].
    fn stacked(parts: &[LinearRead]) -> Self {
        let in_features = parts.first().map_or(0, |p| p.in_features);
        let out_features = parts.iter().map(|p| p.out_features).sum();
        let mut values = WeightBuffer::zeroed(out_features * in_features);
        let mut rest = &mut values[..];
        for p in parts {
            debug_assert_eq!(p.in_features, in_features);
            let (part, tail) = rest.split_at_mut(p.values.len().min(rest.len()));
            part.copy_from_slice(&p.values[..part.len()]);
            rest = tail;
        }
        Self::new(values, out_features, in_features)
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ`, adding its FLOPs to `flops`.
    fn apply(&self, x: &[f32], rows: usize, y: &mut [f32], flops: &AtomicU64) {
        product(
            &self.values,
            self.out_features,
            self.in_features,
            x,
            rows,
            y,
            flops,
        );
    }
}

/// A linear weight as the checkpoint (or the random initialiser) gives it, before it is
/// stacked into a [`HostMatrix`].
struct LinearRead {
    values: Vec<f32>,
    out_features: usize,
    in_features: usize,
}

/// One decoder layer.
#[derive(Debug, Clone)]
struct HostLayer {
    input_norm: Vec<f32>,
    /// `q_proj`, `k_proj` and `v_proj` stacked: `[(heads + 2·kv_heads)·head_dim, hidden]`.
    qkv: HostMatrix,
    o_proj: HostMatrix,
    post_attention_norm: Vec<f32>,
    /// `gate_proj` then `up_proj`: `[2·intermediate, hidden]`.
    gate_up: HostMatrix,
    down_proj: HostMatrix,
}

/// Every weight of a Llama model as host f32.
#[derive(Debug, Clone)]
pub(crate) struct HostWeights {
    /// `[vocab, hidden]`; doubles as the output projection when embeddings are tied.
    /// On huge pages where possible: a tied LM head streams it every step.
    embed_tokens: WeightBuffer,
    layers: Vec<HostLayer>,
    norm: Vec<f32>,
    /// `[vocab, hidden]`; `None` when tied.
    lm_head: Option<HostMatrix>,
}

impl HostWeights {
    /// Reads (or draws) every tensor `config` requires in f32. Random weights are the same
    /// values the burn path draws for the same seed, so both paths run the same model.
    pub(crate) fn build(
        config: &LlamaConfig,
        source: &WeightSource<'_>,
    ) -> Result<Self, RuntimeError> {
        let specs = weight_specs(config);
        if let WeightSource::Checkpoint(ckpt) = source {
            reject_unexpected_tensors(ckpt, &specs, config)?;
        }
        if u32::try_from(specs.len()).is_err() {
            return Err(BackendError::Internal("model has more than 2^32 tensors".into()).into());
        }
        // The index is the tensor's position in `specs`, which seeds its random values.
        let by_name: HashMap<&str, (u32, &WeightSpec)> = (0u32..)
            .zip(&specs)
            .map(|(index, spec)| (spec.name.as_str(), (index, spec)))
            .collect();
        let lookup = |name: &str| {
            by_name.get(name).copied().ok_or_else(|| {
                RuntimeError::from(BackendError::Internal(format!(
                    "tensor `{name}` is not in the spec"
                )))
            })
        };
        let read = |name: &str| -> Result<Vec<f32>, RuntimeError> {
            let (index, spec) = lookup(name)?;
            Ok(checkpoint_layout_f32(spec, index, source, config)?)
        };
        let linear = |name: &str| -> Result<LinearRead, RuntimeError> {
            let (index, spec) = lookup(name)?;
            match (spec.role, spec.shape.as_slice()) {
                (Role::Linear, &[out_features, in_features]) => Ok(LinearRead {
                    values: checkpoint_layout_f32(spec, index, source, config)?,
                    out_features,
                    in_features,
                }),
                _ => Err(BackendError::Internal(format!("`{name}` is not a linear weight")).into()),
            }
        };
        let matrix = |name: &str| linear(name).map(|w| HostMatrix::stacked(&[w]));
        let embed_tokens = WeightBuffer::from_slice(&read("model.embed_tokens.weight")?);
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            layers.push(HostLayer {
                input_norm: read(&format!("{p}.input_layernorm.weight"))?,
                qkv: HostMatrix::stacked(&[
                    linear(&format!("{p}.self_attn.q_proj.weight"))?,
                    linear(&format!("{p}.self_attn.k_proj.weight"))?,
                    linear(&format!("{p}.self_attn.v_proj.weight"))?,
                ]),
                o_proj: matrix(&format!("{p}.self_attn.o_proj.weight"))?,
                post_attention_norm: read(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up: HostMatrix::stacked(&[
                    linear(&format!("{p}.mlp.gate_proj.weight"))?,
                    linear(&format!("{p}.mlp.up_proj.weight"))?,
                ]),
                down_proj: matrix(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let norm = read("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(matrix(LM_HEAD)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }
}

/// cos/sin rows for positions `0..len`, `[len, head_dim]` each.
#[derive(Debug, Clone)]
pub(crate) struct HostRope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    head_dim: usize,
}

impl HostRope {
    /// The table for positions `0..len`, built as the burn path's is.
    pub(crate) fn new(rope: &RopeConfig, head_dim: usize, len: usize) -> Self {
        let (cos, sin) = rope_table_values(rope, head_dim, len);
        Self { cos, sin, head_dim }
    }

    fn row(&self, position: usize) -> Option<(&[f32], &[f32])> {
        let range = position * self.head_dim..(position + 1) * self.head_dim;
        Some((self.cos.get(range.clone())?, self.sin.get(range)?))
    }
}

/// Keys and values of every layer, written in place: keys `[batch, kv_heads, head_dim,
/// stride]` (transposed, as `kernels::attention` reads them), values `[batch, kv_heads,
/// stride, head_dim]`; plus the step's scratch buffers, so a generation allocates once.
pub(crate) struct HostCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    /// Positions allocated per head: `capacity` rounded up to whole key blocks of the attention
    /// kernel, which then computes every span without a scalar tail.
    stride: usize,
    len: usize,
    scratch: Scratch,
}

impl HostCache {
    /// Reserves room for `capacity` positions of `batch` sequences.
    pub(crate) fn new(config: &LlamaConfig, batch: usize, capacity: usize) -> Self {
        let stride = capacity.next_multiple_of(KEY_TAIL_BLOCK);
        let size = batch * config.num_kv_heads * stride * config.head_dim;
        let layer = || committed_zeros(size);
        Self {
            keys: (0..config.num_layers).map(|_| layer()).collect(),
            values: (0..config.num_layers).map(|_| layer()).collect(),
            batch,
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            capacity,
            stride,
            len: 0,
            scratch: Scratch::default(),
        }
    }

    /// Positions written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the positions written so far, keys and values of every layer.
    pub(crate) fn bytes(&self) -> u64 {
        (2 * self.keys.len() * self.batch * self.kv_heads * self.len * self.head_dim * 4) as u64
    }
}

/// `len` zeros with every page already mapped. A plain zeroed allocation gets fresh pages that
/// are only mapped when first written, so the cache would grow by page faults during decoding,
/// adding to step times and making memory look like it grows per step; committing it up front
/// also makes a too-large cache fail at the start rather than mid-generation.
fn committed_zeros(len: usize) -> Vec<f32> {
    const FLOATS_PER_PAGE: usize = 4096 / size_of::<f32>();
    let mut values = vec![0.0f32; len];
    for i in (0..len).step_by(FLOATS_PER_PAGE) {
        // SAFETY: `i < len`, so the pointer is in bounds of the live allocation. A volatile
        // write, unlike a plain one, cannot be dropped as redundant with the zeroing.
        unsafe { std::ptr::write_volatile(values.as_mut_ptr().add(i), 0.0) };
    }
    values
}

/// Activations of one step, reused across steps (resizing within capacity never reallocates,
/// so decoding allocates nothing per step).
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    attn: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    /// Each sequence's last hidden row, for [`LogitRows::Last`].
    last: Vec<f32>,
    /// The final norm's output.
    normed: Vec<f32>,
}

fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}

/// Runs `work` on a rayon pool thread (this one, if it is one) while each other thread of the
/// pool spins, running any task it can steal, until `work` returns. Left to rayon, a pool
/// thread that finds no task for a few dozen yields goes to sleep on a futex; the serial
/// stretches of a step (norms, small attentions, rotary) are that long, so every product after
/// one woke a thread again: a system call on one side and a reschedule on the other, which perf
/// put at about 6 % of a SmolLM-135M batch-8 bench's samples, and the woken thread starts its
/// share late. The helpers spin only for the length of one step, as llama.cpp's threads spin
/// between operations: the CPU time (and energy) they burn in the serial stretches is part of
/// what a run costs, and the meters count it.
///
/// `llmeff bench`, this against the previous binary, alternated, 2 threads, on a 2-vCPU
/// Emerald Rapids VM: SmolLM-135M (3 rounds) batch-1 decode 33.8–38.1 → 36.8–49.2 tokens/s,
/// batch-8 decode 188–248 → 248–269, prefill mixed; TinyLlama-1.1B (2 rounds, the second at
/// 3–10 % steal) batch-8 decode 27.8–29.1 → 29.4–36.1 tokens/s.
fn with_spinning_helpers<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let done = &AtomicBool::new(false);
    // From outside the pool, `scope` runs its body on a pool thread; from inside, right here.
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                // The owner may pop a helper itself while it waits inside `work`; spinning
                // there would wait for `work`, which cannot go on until the helper returns.
                if rayon::current_thread_index() == owner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set on return and on unwinding alike: a panic in `work` must not leave the helpers
        // spinning, or the scope, which waits for them, would hang instead of passing it on.
        let _stop = StopOnDrop(done);
        work()
    })
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A step's logits in host memory, f32 row-major `[rows, vocab]`: tokens are picked there,
/// without a round trip through a device tensor.
#[derive(Debug)]
pub(crate) struct HostLogits {
    values: Vec<f32>,
    vocab: usize,
}

impl HostLogits {
    /// `values` `[rows, vocab]`, row-major.
    pub(crate) fn new(values: Vec<f32>, vocab: usize) -> Self {
        Self { values, vocab }
    }
}

impl StepLogits for HostLogits {
    fn vocab(&self) -> usize {
        self.vocab
    }

    fn suppress(mut self, rows: &[bool], tokens: &[u32]) -> Self {
        for (row, _) in self
            .values
            .chunks_exact_mut(self.vocab.max(1))
            .zip(rows)
            .filter(|(_, flagged)| **flagged)
        {
            for &token in tokens {
                // An EOS id outside the vocabulary can never be produced anyway.
                if let Some(v) = row.get_mut(token as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        self
    }

    fn argmax(self) -> Result<Vec<u32>, BackendError> {
        Ok(self
            .values
            .chunks_exact(self.vocab.max(1))
            .map(argmax_row)
            .collect())
    }

    fn into_host(self) -> Result<Vec<f32>, BackendError> {
        Ok(self.values)
    }
}

/// A generation's RoPE rows and KV cache for the host pass.
pub(crate) struct HostState {
    rope: HostRope,
    cache: HostCache,
}

impl PassState for HostState {
    fn len(&self) -> usize {
        self.cache.len()
    }

    fn kv_bytes(&self) -> u64 {
        self.cache.bytes()
    }
}

/// The host forward pass over one model's f32 weights.
pub(crate) struct HostPass {
    config: LlamaConfig,
    weights: HostWeights,
    /// FLOPs of every product executed, counted as the burn pass counts them.
    executed_flops: AtomicU64,
}

impl HostPass {
    /// The pass over `weights`, which were built for `config`.
    pub(crate) fn new(config: LlamaConfig, weights: HostWeights) -> Self {
        Self {
            config,
            weights,
            executed_flops: AtomicU64::new(0),
        }
    }

    /// Runs `step` through the model, appending its keys and values to `state`'s cache, and
    /// returns f32 logits: `[batch, vocab]` for [`LogitRows::Last`], `[batch·seq, vocab]` for
    /// [`LogitRows::All`].
    fn forward(
        &self,
        step: &HostStep,
        state: &mut HostState,
        rows: LogitRows,
    ) -> Result<Vec<f32>, BackendError> {
        // From outside rayon's pool every product that splits is a hand-over that wakes a pool
        // thread and blocks the caller until it is done: about 120 per decode step of
        // SmolLM-135M, and in a VM each wake-up is a system call and often an inter-processor
        // interrupt (perf put 14 % of a SmolLM-135M batch-1 bench's samples in the kernel's
        // wake-up path, 4 % after this change). Run from a pool thread, the step costs one
        // hand-over, and its products split between that thread and the pool's others, which
        // spin between products instead of sleeping (see `with_spinning_helpers`). A step
        // whose products all stay on one thread (the tiny models' decode) keeps running here:
        // a hand-over would cost more.
        if rayon::current_thread_index().is_none() && step_splits(&self.config, step, rows) {
            with_spinning_helpers(|| self.forward_here(step, state, rows))
        } else {
            self.forward_here(step, state, rows)
        }
    }

    /// [`Self::forward`] on the calling thread: embeddings, every decoder layer
    /// ([`HostLayer::forward`]), then the final norm and the output projection.
    fn forward_here(
        &self,
        step: &HostStep,
        state: &mut HostState,
        rows: LogitRows,
    ) -> Result<Vec<f32>, BackendError> {
        let HostState { rope, cache } = state;
        let dims = StepDims::check(&self.config, step, cache)?;
        let input = LayerInput {
            dims,
            step,
            rope,
            eps: self.config.rms_norm_eps as f32,
            flops: &self.executed_flops,
        };
        let n = dims.rows();
        let HostCache {
            keys,
            values,
            scratch,
            ..
        } = cache;
        let Scratch {
            x,
            h,
            qkv,
            q,
            attn,
            gate_up,
            act,
            last,
            normed,
        } = scratch;
        let x = sized(x, n * dims.hidden);
        self.weights.embed(&step.tokens, dims.hidden, x)?;
        let mut buffers = LayerBuffers {
            h: sized(h, n * dims.hidden),
            qkv: sized(qkv, n * (dims.q_width() + 2 * dims.kv_width())),
            q: sized(q, n * dims.q_width()),
            attn: sized(attn, n * dims.q_width()),
            gate_up: sized(gate_up, n * 2 * dims.intermediate),
            act: sized(act, n * dims.intermediate),
        };
        for ((layer, keys), values) in self.weights.layers.iter().zip(keys).zip(values) {
            let cache = LayerCache { keys, values };
            layer.forward(&input, x, cache, &mut buffers)?;
        }
        cache.len += dims.seq;
        Ok(self.weights.logits(&input, rows, x, last, normed))
    }
}

impl ForwardPass for HostPass {
    type State = HostState;
    type Logits = HostLogits;

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn compute(&self) -> String {
        format!("{HOST_COMPUTE}/{}", kernels::Isa::detect().name())
    }

    fn executed_flops(&self) -> u64 {
        self.executed_flops.load(Ordering::Relaxed)
    }

    fn kv_cache_bytes(&self, sequences: usize, capacity: usize) -> Result<u64, RuntimeError> {
        memory::kv_cache_bytes(
            &self.config,
            DType::F32,
            true,
            sequences,
            capacity,
            capacity,
        )
    }

    fn new_state(&self, batch: usize, capacity: usize, rope_len: usize) -> HostState {
        let c = &self.config;
        HostState {
            rope: HostRope::new(&c.rope, c.head_dim, rope_len),
            cache: HostCache::new(c, batch, capacity),
        }
    }

    fn step(
        &self,
        step: HostStep,
        state: &mut HostState,
        rows: LogitRows,
    ) -> Result<HostLogits, BackendError> {
        let values = self.forward(&step, state, rows)?;
        Ok(HostLogits::new(values, self.config.vocab_size))
    }
}

/// One step's sizes with the model's, checked against the cache the step writes.
#[derive(Debug, Clone, Copy)]
struct StepDims {
    /// Sequences.
    batch: usize,
    /// New positions per sequence.
    seq: usize,
    /// Positions cached before the step.
    past: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    /// Positions allocated per head in the cache (see [`HostCache`]).
    stride: usize,
}

impl StepDims {
    /// The sizes of `step` on a model of `config`, or why it cannot run on `cache`.
    fn check(
        config: &LlamaConfig,
        step: &HostStep,
        cache: &HostCache,
    ) -> Result<Self, BackendError> {
        let (b, t, past) = (step.batch, step.seq, cache.len);
        let n = b * t;
        if step.past != past || cache.batch != b || step.tokens.len() != n {
            return Err(BackendError::StepMismatch {
                batch: b,
                seq: t,
                past: step.past,
                cache_batch: cache.batch,
                cache_len: past,
            });
        }
        if t == 0 || b == 0 {
            return Err(InputError::EmptyStep.into());
        }
        if past + t > cache.capacity {
            return Err(BackendError::KvCacheFull {
                capacity: cache.capacity,
                needed: past + t,
            });
        }
        let keys_seen = past + t;
        if step.mask.len() != n * keys_seen {
            return Err(BackendError::ShapeMismatch {
                tensor: "attention mask".into(),
                expected: vec![b, t, keys_seen],
                found: vec![step.mask.len()],
            });
        }
        if step.positions.len() != n {
            return Err(BackendError::ShapeMismatch {
                tensor: "position ids".into(),
                expected: vec![b, t],
                found: vec![step.positions.len()],
            });
        }
        Ok(Self {
            batch: b,
            seq: t,
            past,
            hidden: config.hidden_size,
            heads: config.num_heads,
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
            stride: cache.stride,
        })
    }

    /// Rows of activations: `batch · seq`.
    fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Width of a row's queries: `heads · head_dim`.
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of a row's keys (or values): `kv_heads · head_dim`.
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// What `kernels::attention` computes over.
    fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            batch: self.batch,
            seq: self.seq,
            keys: self.past + self.seq,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            capacity: self.stride,
        }
    }
}

/// What every layer of one step reads besides its weights and buffers.
struct LayerInput<'a> {
    dims: StepDims,
    step: &'a HostStep,
    rope: &'a HostRope,
    /// RMSNorm's epsilon.
    eps: f32,
    /// Where each product's FLOPs are counted.
    flops: &'a AtomicU64,
}

/// One layer's part of the KV cache.
struct LayerCache<'c> {
    /// `[batch, kv_heads, head_dim, stride]`: transposed, as `kernels::attention` reads them.
    keys: &'c mut [f32],
    /// `[batch, kv_heads, stride, head_dim]`.
    values: &'c mut [f32],
}

/// The activation buffers a layer works in, sized for the step (`rows = batch · seq`) and
/// shared by every layer.
struct LayerBuffers<'s> {
    /// `[rows, hidden]`: a norm's output going into a block, then the block's output.
    h: &'s mut [f32],
    /// `[rows, (heads + 2 · kv_heads) · head_dim]`: each row's queries, keys and values.
    qkv: &'s mut [f32],
    /// `[rows, heads · head_dim]`: the rotated queries.
    q: &'s mut [f32],
    /// `[rows, heads · head_dim]`: attention's output, before `o_proj`.
    attn: &'s mut [f32],
    /// `[rows, 2 · intermediate]`: gate then up projection of each row.
    gate_up: &'s mut [f32],
    /// `[rows, intermediate]`: `silu(gate) · up`.
    act: &'s mut [f32],
}

impl HostLayer {
    /// One decoder layer, pre-norm with residuals: `x += attention(norm(x))`, then
    /// `x += mlp(norm(x))`, appending the step's keys and values to `cache`.
    ///
    /// # Shapes
    /// - `x`: `[rows, hidden]`, the residual stream, updated in place
    fn forward(
        &self,
        input: &LayerInput<'_>,
        x: &mut [f32],
        mut cache: LayerCache<'_>,
        b: &mut LayerBuffers<'_>,
    ) -> Result<(), BackendError> {
        rms_norm(x, &self.input_norm, input.eps, b.h);
        self.attention(input, &mut cache, b)?;
        add_in_place(x, b.h);
        rms_norm(x, &self.post_attention_norm, input.eps, b.h);
        self.mlp(input, b);
        add_in_place(x, b.h);
        Ok(())
    }

    /// Grouped-query self-attention of the step's rows over every cached position and their
    /// own, as transformers computes it (scores scaled by `1/√head_dim`, the mask added, a
    /// softmax per row).
    ///
    /// # Shapes
    /// - `b.h`: in `[rows, hidden]` (the normed residual), out `[rows, hidden]` (after
    ///   `o_proj`)
    /// - `cache`: keys `[batch, kv_heads, head_dim, stride]`, values
    ///   `[batch, kv_heads, stride, head_dim]`, positions `past..past + seq` written
    /// - mask (`input.step.mask`): `[batch, seq, past + seq]`
    fn attention(
        &self,
        input: &LayerInput<'_>,
        cache: &mut LayerCache<'_>,
        b: &mut LayerBuffers<'_>,
    ) -> Result<(), BackendError> {
        let dims = input.dims;
        let n = dims.rows();
        self.qkv.apply(b.h, n, b.qkv, input.flops);
        rotate_and_cache(input, b.qkv, b.q, cache)?;
        let shape = dims.attention_shape();
        let scale = 1.0 / (dims.head_dim as f32).sqrt();
        if !attention(
            b.q,
            cache.keys,
            cache.values,
            &input.step.mask,
            shape,
            scale,
            b.attn,
        ) {
            return Err(BackendError::Internal(format!(
                "attention shapes disagree: {shape:?}"
            )));
        }
        // Scores and weighted values, over every visible and hidden key, as the burn path
        // and the analytic count reckon them.
        input.flops.fetch_add(
            2 * 2 * (dims.batch * dims.heads * dims.seq * shape.keys * dims.head_dim) as u64,
            Ordering::Relaxed,
        );
        self.o_proj.apply(b.attn, n, b.h, input.flops);
        Ok(())
    }

    /// SwiGLU: `down(silu(gate(h)) · up(h))`.
    ///
    /// # Shapes
    /// - `b.h`: in `[rows, hidden]` (the normed residual), out `[rows, hidden]`
    /// - through `b.gate_up` `[rows, 2 · intermediate]` and `b.act` `[rows, intermediate]`
    fn mlp(&self, input: &LayerInput<'_>, b: &mut LayerBuffers<'_>) {
        let n = input.dims.rows();
        self.gate_up.apply(b.h, n, b.gate_up, input.flops);
        silu_mul(b.gate_up, input.dims.intermediate, b.act);
        self.down_proj.apply(b.act, n, b.h, input.flops);
    }
}

/// Rotates each row's queries and keys by its position (RoPE), copies the queries out, and
/// writes the keys and values into the cache after the `past` positions already there.
///
/// # Shapes
/// - `qkv`: `[rows, (heads + 2 · kv_heads) · head_dim]`, rotated in place
/// - `q`: `[rows, heads · head_dim]`, written
/// - `cache`: keys `[batch, kv_heads, head_dim, stride]`, values
///   `[batch, kv_heads, stride, head_dim]`, positions `past..past + seq` written
fn rotate_and_cache(
    input: &LayerInput<'_>,
    qkv: &mut [f32],
    q: &mut [f32],
    cache: &mut LayerCache<'_>,
) -> Result<(), BackendError> {
    let dims = input.dims;
    let (t, past, d, stride) = (dims.seq, dims.past, dims.head_dim, dims.stride);
    let (qd, kvd) = (dims.q_width(), dims.kv_width());
    for (r, row) in qkv.chunks_exact_mut(qd + 2 * kvd).enumerate() {
        let position = usize::try_from(input.step.positions[r]).unwrap_or(usize::MAX);
        let (cos, sin) = input.rope.row(position).ok_or_else(|| {
            BackendError::Internal(format!("position {position} is past the RoPE table"))
        })?;
        let (row_q, rest) = row.split_at_mut(qd);
        let (row_k, row_v) = rest.split_at_mut(kvd);
        rotate_half(row_q, cos, sin);
        rotate_half(row_k, cos, sin);
        q[r * qd..(r + 1) * qd].copy_from_slice(row_q);
        let (sequence, column) = (r / t, r % t);
        for g in 0..dims.kv_heads {
            let head = sequence * dims.kv_heads + g;
            // Keys transposed (see `kernels::attention`): value i of this position at
            // i·stride.
            let key_column = &mut cache.keys[head * d * stride + past + column..];
            for (i, k) in row_k[g * d..(g + 1) * d].iter().enumerate() {
                key_column[i * stride] = *k;
            }
            let at = (head * stride + past + column) * d;
            cache.values[at..at + d].copy_from_slice(&row_v[g * d..(g + 1) * d]);
        }
    }
    Ok(())
}

impl HostWeights {
    /// Each token's embedding row.
    ///
    /// # Shapes
    /// - `tokens`: `[rows]`; `x`: `[rows, hidden]`, written
    fn embed(&self, tokens: &[i64], hidden: usize, x: &mut [f32]) -> Result<(), BackendError> {
        for (row, &token) in x.chunks_exact_mut(hidden).zip(tokens) {
            let embedding = usize::try_from(token)
                .ok()
                .and_then(|t| self.embed_tokens.get(t * hidden..(t + 1) * hidden))
                .ok_or(InputError::StepTokenOutsideVocabulary { token })?;
            row.copy_from_slice(embedding);
        }
        Ok(())
    }

    /// The final norm and the output projection of the rows `rows` selects (`last` and
    /// `normed` are the step's scratch buffers for them).
    ///
    /// # Shapes
    /// - `x`: `[batch · seq, hidden]`, the residual stream after the last layer
    /// - returns `[batch, vocab]` for [`LogitRows::Last`], `[batch · seq, vocab]` for
    ///   [`LogitRows::All`]
    fn logits(
        &self,
        input: &LayerInput<'_>,
        rows: LogitRows,
        x: &[f32],
        last: &mut Vec<f32>,
        normed: &mut Vec<f32>,
    ) -> Vec<f32> {
        let dims = input.dims;
        let (t, hidden) = (dims.seq, dims.hidden);
        let (final_rows, count) = match rows {
            LogitRows::All => (x, dims.rows()),
            LogitRows::Last => {
                let last = sized(last, dims.batch * hidden);
                for (dst, src) in last
                    .chunks_exact_mut(hidden)
                    .zip(x.chunks_exact(hidden).skip(t - 1).step_by(t))
                {
                    dst.copy_from_slice(src);
                }
                (&last[..], dims.batch)
            }
        };
        let normed = sized(normed, count * hidden);
        rms_norm(final_rows, &self.norm, input.eps, normed);
        let mut logits = vec![0.0f32; count * dims.vocab];
        match &self.lm_head {
            Some(head) => head.apply(normed, count, &mut logits, input.flops),
            // The embedding table is already `[vocab, hidden]`: the tied head needs no copy.
            None => product(
                &self.embed_tokens,
                dims.vocab,
                hidden,
                normed,
                count,
                &mut logits,
                input.flops,
            ),
        }
        logits
    }
}

/// Whether any product of `step` runs on more than one thread (see
/// [`kernels::linear_splits`]).
fn step_splits(c: &LlamaConfig, step: &HostStep, rows: LogitRows) -> bool {
    let n = step.batch * step.seq;
    let hidden = c.hidden_size;
    let (qd, kvd, ff) = (
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    );
    let head_rows = match rows {
        LogitRows::All => n,
        LogitRows::Last => step.batch,
    };
    [
        (n, hidden, qd + 2 * kvd),
        (n, qd, hidden),
        (n, hidden, 2 * ff),
        (n, ff, hidden),
        (head_rows, hidden, c.vocab_size),
    ]
    .into_iter()
    .any(|(m, k, out)| linear_splits(m, k, out))
}

/// `y[rows, out] = x[rows, in] · wᵀ` for `w` in `[out, in]` layout, counted in `flops`.
fn product(
    w: &[f32],
    out_features: usize,
    in_features: usize,
    x: &[f32],
    rows: usize,
    y: &mut [f32],
    flops: &AtomicU64,
) {
    flops.fetch_add(
        2 * (rows * in_features * out_features) as u64,
        Ordering::Relaxed,
    );
    linear_f32(x, rows, in_features, w, out_features, y);
}

fn add_in_place(x: &mut [f32], delta: &[f32]) {
    for (a, b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn spinning_helpers_run_the_work_and_stop_with_it() {
        let sum = |n: u64| (0..n).into_par_iter().map(|i| i * 2).sum::<u64>();
        // Called from outside a pool, and alone in one, the work runs and returns its result.
        assert_eq!(with_spinning_helpers(|| sum(1000)), 999_000);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a small test pool");
            // Many steps in a row, each with nested parallel work whose waits may pop a helper
            // on the owner's thread: every one returns, with the work's result.
            let total: u64 = pool.install(|| {
                (0..200)
                    .map(|_| with_spinning_helpers(|| sum(10_000)))
                    .sum()
            });
            assert_eq!(total, 200 * 99_990_000, "{threads} threads");
        }
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller_instead_of_hanging() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a small test pool");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| with_spinning_helpers(|| -> u32 { panic!("a bug in a step") }))
        }));
        assert!(outcome.is_err());
    }
}
