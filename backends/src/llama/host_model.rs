//! The Llama forward pass on host memory, for f32 runs on the CPU: every layer runs on
//! llmeff's kernels (`crate::kernels`) over plain `f32` buffers, with the query, key and value
//! projections fused into one matrix, gate and up into another, attention read straight from a
//! preallocated KV cache, and scratch buffers kept across steps. It computes what
//! [`super::model`]'s burn forward pass computes (both reproduce transformers' golden logits).
//! It exists because burn-flex spends most of a small model's decode step, and most of any
//! model's prefill, outside the matrix products: per-op dispatch and allocation, and strided
//! copies for the head reshapes. On a 2-core Sapphire Rapids VM, `llmeff bench --forward burn`
//! against this path measured burn-flex 1.6–5.6× slower end to end (prefill and decode, batch 1
//! and 8, tiny-stories and the SmolLM-135M and TinyLlama-1.1B shapes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use api::runtime::RuntimeError;

use super::batch::HostStep;
use super::config::LlamaConfig;
use super::model::LogitRows;
use super::rope::{RopeConfig, rope_table_values};
use super::weights::{
    LM_HEAD, Role, WeightSource, WeightSpec, checkpoint_layout_f32, reject_unexpected_tensors,
    weight_specs,
};
use kernels::huge_pages::WeightBuffer;
use kernels::{
    AttentionShape, KEY_TAIL_BLOCK, Matrix, MatrixMut, attention, linear_f32, linear_splits,
    rms_norm, rotate_half, silu_mul,
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
    fn apply(
        &self,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        flops: &AtomicU64,
    ) -> Result<(), RuntimeError> {
        product(
            &self.values,
            self.out_features,
            self.in_features,
            x,
            rows,
            y,
            flops,
        )
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
            return Err(RuntimeError::Backend(
                "model has more than 2^32 tensors".into(),
            ));
        }
        // The index is the tensor's position in `specs`, which seeds its random values.
        let by_name: HashMap<&str, (u32, &WeightSpec)> = (0u32..)
            .zip(&specs)
            .map(|(index, spec)| (spec.name.as_str(), (index, spec)))
            .collect();
        let lookup = |name: &str| {
            by_name.get(name).copied().ok_or_else(|| {
                RuntimeError::Backend(format!("internal: tensor `{name}` is not in the spec"))
            })
        };
        let read = |name: &str| -> Result<Vec<f32>, RuntimeError> {
            let (index, spec) = lookup(name)?;
            checkpoint_layout_f32(spec, index, source, config)
        };
        let linear = |name: &str| -> Result<LinearRead, RuntimeError> {
            let (index, spec) = lookup(name)?;
            match (spec.role, spec.shape.as_slice()) {
                (Role::Linear, &[out_features, in_features]) => Ok(LinearRead {
                    values: checkpoint_layout_f32(spec, index, source, config)?,
                    out_features,
                    in_features,
                }),
                _ => Err(RuntimeError::Backend(format!(
                    "internal: `{name}` is not a linear weight"
                ))),
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

fn internal(what: String) -> RuntimeError {
    RuntimeError::Backend(format!("internal: {what}"))
}

impl HostWeights {
    /// Runs `step` through the model, appending its keys and values to `cache`, and returns
    /// f32 logits: `[batch, vocab]` for [`LogitRows::Last`], `[batch·seq, vocab]` for
    /// [`LogitRows::All`]. FLOPs of every product go to `flops`, counted as the burn path
    /// counts them.
    pub(crate) fn forward(
        &self,
        config: &LlamaConfig,
        step: &HostStep,
        rope: &HostRope,
        cache: &mut HostCache,
        rows: LogitRows,
        flops: &AtomicU64,
    ) -> Result<Vec<f32>, RuntimeError> {
        // From outside rayon's pool every product that splits is a hand-over that wakes a pool
        // thread and blocks the caller until it is done: about 120 per decode step of
        // SmolLM-135M, and in a VM each wake-up is a system call and often an inter-processor
        // interrupt (perf put 14 % of a SmolLM-135M batch-1 bench's samples in the kernel's
        // wake-up path, 4 % after this change). Run from a pool thread, the step costs one
        // hand-over, and its products split between that thread and the pool's others, which
        // spin between products instead of sleeping (see `with_spinning_helpers`). A step
        // whose products all stay on one thread (the tiny models' decode) keeps running here:
        // a hand-over would cost more.
        if rayon::current_thread_index().is_none() && step_splits(config, step, rows) {
            with_spinning_helpers(|| self.forward_here(config, step, rope, cache, rows, flops))
        } else {
            self.forward_here(config, step, rope, cache, rows, flops)
        }
    }

    /// [`Self::forward`] on the calling thread.
    fn forward_here(
        &self,
        config: &LlamaConfig,
        step: &HostStep,
        rope: &HostRope,
        cache: &mut HostCache,
        rows: LogitRows,
        flops: &AtomicU64,
    ) -> Result<Vec<f32>, RuntimeError> {
        let c = config;
        let (b, t, hidden) = (step.batch, step.seq, c.hidden_size);
        let (heads, kv_heads, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (qd, kvd, ff) = (heads * d, kv_heads * d, c.intermediate_size);
        let n = b * t;
        let past = cache.len;
        if step.past != past || cache.batch != b || step.tokens.len() != n {
            return Err(internal(format!(
                "step for {b}×{t} after {} positions does not fit a cache of {} sequences at {past}",
                step.past, cache.batch
            )));
        }
        if t == 0 || b == 0 {
            return Err(RuntimeError::InvalidInput(
                "a step needs at least one sequence and one position".into(),
            ));
        }
        if past + t > cache.capacity {
            return Err(RuntimeError::Backend(format!(
                "KV cache holds {} positions, {} needed",
                cache.capacity,
                past + t
            )));
        }
        let keys_seen = past + t;
        if step.mask.len() != n * keys_seen || step.positions.len() != n {
            return Err(internal("mask or positions do not match the step".into()));
        }
        let eps = c.rms_norm_eps as f32;
        let scale = 1.0 / (d as f32).sqrt();
        let attention_shape = AttentionShape {
            batch: b,
            seq: t,
            keys: keys_seen,
            heads,
            kv_heads,
            head_dim: d,
            capacity: cache.stride,
        };
        let stride = cache.stride;
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
        let x = sized(x, n * hidden);
        for (row, &token) in x.chunks_exact_mut(hidden).zip(&step.tokens) {
            let embedding = usize::try_from(token)
                .ok()
                .and_then(|t| self.embed_tokens.get(t * hidden..(t + 1) * hidden))
                .ok_or_else(|| {
                    RuntimeError::InvalidInput(format!(
                        "token id {token} is outside the vocabulary"
                    ))
                })?;
            row.copy_from_slice(embedding);
        }
        let h = sized(h, n * hidden);
        let qkv = sized(qkv, n * (qd + 2 * kvd));
        let q = sized(q, n * qd);
        let attn = sized(attn, n * qd);
        let gate_up = sized(gate_up, n * 2 * ff);
        let act = sized(act, n * ff);
        for ((layer, layer_keys), layer_values) in self.layers.iter().zip(keys).zip(values) {
            rms_norm(x, &layer.input_norm, eps, h);
            layer.qkv.apply(h, n, qkv, flops)?;
            for (r, row) in qkv.chunks_exact_mut(qd + 2 * kvd).enumerate() {
                let position = usize::try_from(step.positions[r]).unwrap_or(usize::MAX);
                let (cos, sin) = rope.row(position).ok_or_else(|| {
                    internal(format!("position {position} is past the RoPE table"))
                })?;
                let (row_q, rest) = row.split_at_mut(qd);
                let (row_k, row_v) = rest.split_at_mut(kvd);
                rotate_half(row_q, cos, sin);
                rotate_half(row_k, cos, sin);
                q[r * qd..(r + 1) * qd].copy_from_slice(row_q);
                let (sequence, column) = (r / t, r % t);
                for g in 0..kv_heads {
                    let head = sequence * kv_heads + g;
                    // Keys transposed (see `kernels::attention`): value i of this position
                    // at i·stride.
                    let key_column = &mut layer_keys[head * d * stride + past + column..];
                    for (i, k) in row_k[g * d..(g + 1) * d].iter().enumerate() {
                        key_column[i * stride] = *k;
                    }
                    let at = (head * stride + past + column) * d;
                    layer_values[at..at + d].copy_from_slice(&row_v[g * d..(g + 1) * d]);
                }
            }
            if !attention(
                q,
                layer_keys,
                layer_values,
                &step.mask,
                attention_shape,
                scale,
                attn,
            ) {
                return Err(internal(format!(
                    "attention shapes disagree: {attention_shape:?}"
                )));
            }
            // Scores and weighted values, over every visible and hidden key, as the burn path
            // and the analytic count reckon them.
            flops.fetch_add(
                2 * 2 * (b * heads * t * keys_seen * d) as u64,
                Ordering::Relaxed,
            );
            layer.o_proj.apply(attn, n, h, flops)?;
            add_in_place(x, h);
            rms_norm(x, &layer.post_attention_norm, eps, h);
            layer.gate_up.apply(h, n, gate_up, flops)?;
            silu_mul(gate_up, ff, act);
            layer.down_proj.apply(act, n, h, flops)?;
            add_in_place(x, h);
        }
        cache.len += t;

        let (final_rows, count) = match rows {
            LogitRows::All => (&x[..], n),
            LogitRows::Last => {
                let last = sized(last, b * hidden);
                for (dst, src) in last
                    .chunks_exact_mut(hidden)
                    .zip(x.chunks_exact(hidden).skip(t - 1).step_by(t))
                {
                    dst.copy_from_slice(src);
                }
                (&last[..], b)
            }
        };
        let normed = sized(normed, count * hidden);
        rms_norm(final_rows, &self.norm, eps, normed);
        let mut logits = vec![0.0f32; count * c.vocab_size];
        match &self.lm_head {
            Some(head) => head.apply(normed, count, &mut logits, flops),
            // The embedding table is already `[vocab, hidden]`: the tied head needs no copy.
            None => product(
                &self.embed_tokens,
                c.vocab_size,
                hidden,
                normed,
                count,
                &mut logits,
                flops,
            ),
        }?;
        Ok(logits)
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
) -> Result<(), RuntimeError> {
    flops.fetch_add(
        2 * (rows * in_features * out_features) as u64,
        Ordering::Relaxed,
    );
    let mut shaped = || {
        linear_f32(
            Matrix::new(x, rows, in_features)?,
            Matrix::new(w, out_features, in_features)?,
            MatrixMut::new(y, rows, out_features)?,
        )
    };
    shaped().map_err(|e| internal(format!("a linear layer's operands disagree: {e}")))
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
