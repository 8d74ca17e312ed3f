//! The Llama forward pass on host memory ([`HostPass`]), for f32 runs on the CPU: every layer
//! runs on llmeff's kernels (the `kernels` crate) over plain `f32` buffers, with the query, key
//! and value projections fused into one matrix, gate and up into another
//! ([`super::host_weights`]), attention read straight from a preallocated KV cache, and scratch
//! buffers kept across steps ([`super::host_cache`]). A step is
//! split as the model is: embedding ([`HostWeights::embed`]), per layer a norm, `attention`, a
//! residual add, a norm, `mlp`, a residual add ([`HostLayer::forward`]), then the final norm
//! and output projection ([`HostWeights::logits`]); each states its buffers' shapes. It
//! computes what [`super::model::BurnPass`] computes (both reproduce transformers' golden
//! logits).
//! It exists because burn-flex spends most of a small model's decode step, and most of any
//! model's prefill, outside the matrix products: per-op dispatch and allocation, and strided
//! copies for the head reshapes. On a 2-core Sapphire Rapids VM, `llmeff bench --forward burn`
//! against this path measured burn-flex 1.6–5.6× slower end to end (prefill and decode, batch 1
//! and 8, tiny-stories and the SmolLM-135M and TinyLlama-1.1B shapes).

use std::sync::atomic::{AtomicU64, Ordering};

use api::runtime::{DType, RuntimeError};

use super::batch::HostStep;
use super::config::LlamaConfig;
use super::families::{Activation, Architecture};
use super::forward::{ForwardPass, LogitRows, PassState, StepLogits, argmax_row};
use super::host_cache::{HostCache, HostRope, Scratch, sized};
use super::host_weights::{HostLayer, HostWeights};
use super::memory;
use super::spinning::{self, with_spinning_helpers};
use crate::error::{BackendError, InputError};
use crate::handle::HOST_COMPUTE;
use kernels::{
    AttentionShape, CacheSlots, Scores, attention, gelu_tanh_mul, rms_norm, rms_norm_in_place,
    rotate_half, silu_mul,
};

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

    fn reserved_bytes(&self) -> u64 {
        self.cache.reserved_bytes()
    }

    fn release(&mut self, slot: usize) {
        self.cache.release(slot);
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

    /// Runs `step` through the model, writing its keys and values into its sequences' slots
    /// of `state`'s cache, and returns f32 logits: `[batch, vocab]` for [`LogitRows::Last`],
    /// `[batch·seq, vocab]` for [`LogitRows::All`].
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
        // a hand-over would cost more. A model pinned to a core set calls this from a thread
        // of its own pool, marked as the step's owner (`as_step_owner`): its step has already
        // paid its one hand-over, and spins the pool's other threads just the same.
        let owns_step = rayon::current_thread_index().is_none() || spinning::is_step_owner();
        if owns_step && step_splits(&self.weights, step, rows) {
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
        let arch = &self.config.arch;
        let window_masks = step.window_masks(&arch.layer_windows);
        let input = LayerInput {
            dims,
            step,
            rope,
            eps: self.config.rms_norm_eps as f32,
            scores: Scores {
                scale: self.config.attention_scale() as f32,
                soft_cap: arch.attn_logit_softcap.map(|c| c as f32),
            },
            rotary_dim: self.config.rotary_dim(),
            arch,
            window_masks: &window_masks,
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
        if arch.embedding_scale {
            // transformers scales by √hidden rounded to the activations' dtype (f32 here).
            let scale = (dims.hidden as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let mut buffers = LayerBuffers {
            h: sized(h, n * dims.hidden),
            qkv: sized(qkv, n * (dims.q_width() + 2 * dims.kv_width())),
            q: sized(q, n * dims.q_width()),
            attn: sized(attn, n * dims.q_width()),
            gate_up: sized(gate_up, n * 2 * dims.intermediate),
            act: sized(act, n * dims.intermediate),
        };
        for (((layer, keys), values), window) in self
            .weights
            .layers
            .iter()
            .zip(keys)
            .zip(values)
            .zip(&arch.layer_windows)
        {
            let cache = LayerCache { keys, values };
            layer.forward(&input, *window, x, cache, &mut buffers)?;
        }
        for (&slot, &start) in step.slots.iter().zip(&step.starts) {
            cache.lens[slot] = start + dims.seq;
        }
        self.weights.logits(&input, rows, x, last, normed)
    }
}

impl ForwardPass for HostPass {
    type State = HostState;
    type Logits = HostLogits;

    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn compute(&self) -> String {
        format!(
            "{HOST_COMPUTE}/{}/{}",
            kernels::Isa::detect().name(),
            self.weights.formats.scheme()
        )
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

    fn new_state(&self, slots: usize, capacity: usize, rope_len: usize) -> HostState {
        let c = &self.config;
        HostState {
            rope: HostRope::new(&c.rope, c.rotary_dim(), rope_len),
            cache: HostCache::new(c, slots, capacity),
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
    /// Key columns each mask row spans ([`HostStep::keys`]).
    keys: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    vocab: usize,
    /// Positions allocated per head in the cache (see [`HostCache`]).
    stride: usize,
    /// Slots the cache holds.
    slots: usize,
}

impl StepDims {
    /// The sizes of `step` on a model of `config`, or why it cannot run on `cache`: every
    /// sequence names a slot of the cache once and starts where that slot's positions end,
    /// and its new positions fit the slot.
    fn check(
        config: &LlamaConfig,
        step: &HostStep,
        cache: &HostCache,
    ) -> Result<Self, BackendError> {
        let (b, t) = (step.batch, step.seq);
        if t == 0 || b == 0 {
            return Err(InputError::EmptyStep.into());
        }
        let n = b * t;
        for (input, found) in [
            ("token ids", step.tokens.len()),
            ("position ids", step.positions.len()),
        ] {
            if found != n {
                return Err(BackendError::StepInputLength {
                    input,
                    shape: vec![b, t],
                    found,
                });
            }
        }
        step.check_slots(&cache.lens, cache.capacity)?;
        let keys = step.keys();
        if step.mask.len() != n * keys {
            return Err(BackendError::StepInputLength {
                input: "attention mask",
                shape: vec![b, t, keys],
                found: step.mask.len(),
            });
        }
        Ok(Self {
            batch: b,
            seq: t,
            keys,
            hidden: config.hidden_size,
            heads: config.num_heads,
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            intermediate: config.intermediate_size,
            vocab: config.vocab_size,
            stride: cache.stride,
            slots: cache.slots(),
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
            keys: self.keys,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            capacity: self.stride,
            slots: self.slots,
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
    /// How attention forms its scores: the scale (`1/√head_dim` in Llama) and soft cap.
    scores: Scores,
    /// Leading dimensions of each head that RoPE rotates.
    rotary_dim: usize,
    /// The family's building blocks.
    arch: &'a Architecture,
    /// The step's mask for each sliding window a layer uses.
    window_masks: &'a [(usize, Vec<f32>)],
    /// Where each product's FLOPs are counted.
    flops: &'a AtomicU64,
}

/// One layer's part of the KV cache.
struct LayerCache<'c> {
    /// `[slots, kv_heads, head_dim, stride]`: transposed, as `kernels::attention` reads them.
    keys: &'c mut [f32],
    /// `[slots, kv_heads, stride, head_dim]`.
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
    /// One decoder layer with residuals: `x += attention(norm(x))`, then `x += mlp(norm(x))`
    /// (Gemma 2 also norms each block's output), appending the step's keys and values to
    /// `cache`; `window` is the layer's sliding window, if it has one.
    ///
    /// # Shapes
    /// - `x`: `[rows, hidden]`, the residual stream, updated in place
    fn forward(
        &self,
        input: &LayerInput<'_>,
        window: Option<usize>,
        x: &mut [f32],
        mut cache: LayerCache<'_>,
        b: &mut LayerBuffers<'_>,
    ) -> Result<(), BackendError> {
        rms_norm(x, &self.input_norm, input.eps, b.h);
        self.attention(input, window, &mut cache, b)?;
        if let Some(norm) = &self.attn_out_norm {
            rms_norm_in_place(b.h, norm, input.eps);
        }
        add_in_place(x, b.h);
        rms_norm(x, &self.mlp_norm, input.eps, b.h);
        self.mlp(input, b)?;
        if let Some(norm) = &self.mlp_out_norm {
            rms_norm_in_place(b.h, norm, input.eps);
        }
        add_in_place(x, b.h);
        Ok(())
    }

    /// Grouped-query self-attention of the step's rows over their slots' cached positions and
    /// their own, as transformers computes it (scores scaled by `1/√head_dim`, the mask added,
    /// a softmax per row).
    ///
    /// # Shapes
    /// - `b.h`: in `[rows, hidden]` (the normed residual), out `[rows, hidden]` (after
    ///   `o_proj`)
    /// - `cache`: keys `[slots, kv_heads, head_dim, stride]`, values
    ///   `[slots, kv_heads, stride, head_dim]`, each sequence's positions
    ///   `start..start + seq` of its slot written
    /// - mask (`input.step.mask`): `[batch, seq, keys]`
    fn attention(
        &self,
        input: &LayerInput<'_>,
        window: Option<usize>,
        cache: &mut LayerCache<'_>,
        b: &mut LayerBuffers<'_>,
    ) -> Result<(), BackendError> {
        let dims = input.dims;
        let n = dims.rows();
        self.qkv.apply(b.h, n, b.qkv, input.flops)?;
        let row_width = dims.q_width() + 2 * dims.kv_width();
        if let Some(bias) = &self.qkv_bias {
            for row in b.qkv.chunks_exact_mut(row_width) {
                add_in_place(row, bias);
            }
        }
        if let Some([q_norm, k_norm]) = &self.qk_norm {
            // Each head normed over its own width (the weight's length), before the rotation.
            for row in b.qkv.chunks_exact_mut(row_width) {
                let (q, rest) = row.split_at_mut(dims.q_width());
                rms_norm_in_place(q, q_norm, input.eps);
                rms_norm_in_place(&mut rest[..dims.kv_width()], k_norm, input.eps);
            }
        }
        rotate_and_cache(input, b.qkv, b.q, cache)?;
        let shape = dims.attention_shape();
        let mask = match window {
            None => &input.step.mask,
            Some(w) => input
                .window_masks
                .iter()
                .find(|(mw, _)| *mw == w)
                .map(|(_, m)| m)
                .ok_or_else(|| {
                    BackendError::Internal(format!("no mask for the sliding window {w}"))
                })?,
        };
        let slots = CacheSlots {
            keys: cache.keys,
            values: cache.values,
            slot_of: &input.step.slots,
        };
        if !attention(b.q, slots, mask, shape, input.scores, b.attn) {
            return Err(BackendError::Internal(format!(
                "attention shapes disagree: {shape:?}"
            )));
        }
        // Scores and weighted values, over every visible and hidden key of the mask's width
        // (the longest sequence's), as the burn path and the analytic count reckon them.
        input.flops.fetch_add(
            2 * 2 * (dims.batch * dims.heads * dims.seq * shape.keys * dims.head_dim) as u64,
            Ordering::Relaxed,
        );
        self.o_proj.apply(b.attn, n, b.h, input.flops)?;
        Ok(())
    }

    /// The gated MLP: `down(act(gate(h)) · up(h))`, `act` SiLU (SwiGLU) or GELU-tanh (Gemma).
    ///
    /// # Shapes
    /// - `b.h`: in `[rows, hidden]` (the normed residual), out `[rows, hidden]`
    /// - through `b.gate_up` `[rows, 2 · intermediate]` and `b.act` `[rows, intermediate]`
    fn mlp(&self, input: &LayerInput<'_>, b: &mut LayerBuffers<'_>) -> Result<(), BackendError> {
        let n = input.dims.rows();
        self.gate_up.apply(b.h, n, b.gate_up, input.flops)?;
        match input.arch.activation {
            Activation::Silu => silu_mul(b.gate_up, input.dims.intermediate, b.act),
            Activation::GeluTanh => gelu_tanh_mul(b.gate_up, input.dims.intermediate, b.act),
        }
        self.down_proj.apply(b.act, n, b.h, input.flops)?;
        Ok(())
    }
}

/// Rotates each row's queries and keys by its position (RoPE), copies the queries out, and
/// writes the keys and values into its sequence's slot of the cache from the sequence's start.
///
/// # Shapes
/// - `qkv`: `[rows, (heads + 2 · kv_heads) · head_dim]`, rotated in place
/// - `q`: `[rows, heads · head_dim]`, written
/// - `cache`: keys `[slots, kv_heads, head_dim, stride]`, values
///   `[slots, kv_heads, stride, head_dim]`, each sequence's positions `start..start + seq` of
///   its slot written
fn rotate_and_cache(
    input: &LayerInput<'_>,
    qkv: &mut [f32],
    q: &mut [f32],
    cache: &mut LayerCache<'_>,
) -> Result<(), BackendError> {
    let dims = input.dims;
    let (t, d, stride) = (dims.seq, dims.head_dim, dims.stride);
    let (qd, kvd) = (dims.q_width(), dims.kv_width());
    for (r, row) in qkv.chunks_exact_mut(qd + 2 * kvd).enumerate() {
        let position = usize::try_from(input.step.positions[r]).unwrap_or(usize::MAX);
        let (cos, sin) = input.rope.row(position).ok_or_else(|| {
            BackendError::Internal(format!("position {position} is past the RoPE table"))
        })?;
        let (row_q, rest) = row.split_at_mut(qd);
        let (row_k, row_v) = rest.split_at_mut(kvd);
        if input.rotary_dim == d {
            rotate_half(row_q, cos, sin);
            rotate_half(row_k, cos, sin);
        } else {
            // Partial rotation (Phi-3): each head's leading `rotary_dim` values only.
            for head in row_q.chunks_exact_mut(d).chain(row_k.chunks_exact_mut(d)) {
                rotate_half(&mut head[..input.rotary_dim], cos, sin);
            }
        }
        q[r * qd..(r + 1) * qd].copy_from_slice(row_q);
        let sequence = r / t;
        let column = input.step.starts[sequence] + r % t;
        for g in 0..dims.kv_heads {
            let head = input.step.slots[sequence] * dims.kv_heads + g;
            // Keys transposed (see `kernels::attention`): value i of this position at
            // i·stride.
            let key_column = &mut cache.keys[head * d * stride + column..];
            for (i, k) in row_k[g * d..(g + 1) * d].iter().enumerate() {
                key_column[i * stride] = *k;
            }
            let at = (head * stride + column) * d;
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
            usize::try_from(token)
                .ok()
                .and_then(|t| self.embed_tokens.row_into(t, row))
                .ok_or(InputError::StepTokenOutsideVocabulary { token })?;
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
    ) -> Result<Vec<f32>, BackendError> {
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
            None => self
                .embed_tokens
                .apply(normed, count, &mut logits, input.flops),
        }?;
        if let Some(cap) = input.arch.final_logit_softcap {
            let cap = cap as f32;
            logits.iter_mut().for_each(|l| *l = cap * (*l / cap).tanh());
        }
        Ok(logits)
    }
}

/// Whether any product of `step` runs on more than one thread (see
/// [`kernels::linear_splits`]). Every layer's matrices have the first one's shapes and formats.
fn step_splits(w: &HostWeights, step: &HostStep, rows: LogitRows) -> bool {
    let n = step.batch * step.seq;
    let head_rows = match rows {
        LogitRows::All => n,
        LogitRows::Last => step.batch,
    };
    let head = w.lm_head.as_ref().unwrap_or(&w.embed_tokens);
    w.layers.first().is_some_and(|l| {
        [&l.qkv, &l.o_proj, &l.gate_up, &l.down_proj]
            .iter()
            .any(|m| m.splits(n))
    }) || head.splits(head_rows)
}

fn add_in_place(x: &mut [f32], delta: &[f32]) {
    for (a, b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}
