//! The host forward pass's per-generation state: RoPE rows, the KV cache in the layout the
//! attention kernel reads, and the step's scratch buffers, all allocated once per generation.

use super::config::LlamaConfig;
use super::rope::{RopeConfig, rope_table_values};
use kernels::KEY_TAIL_BLOCK;

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

    /// The cos and sin rows of `position`, `[head_dim]` each; `None` past the table.
    pub(super) fn row(&self, position: usize) -> Option<(&[f32], &[f32])> {
        let range = position * self.head_dim..(position + 1) * self.head_dim;
        Some((self.cos.get(range.clone())?, self.sin.get(range)?))
    }
}

/// Keys and values of every layer, written in place: keys `[batch, kv_heads, head_dim,
/// stride]` (transposed, as `kernels::attention` reads them), values `[batch, kv_heads,
/// stride, head_dim]`; plus the step's scratch buffers, so a generation allocates once.
pub(crate) struct HostCache {
    /// Per layer, `[batch, kv_heads, head_dim, stride]`.
    pub(super) keys: Vec<Vec<f32>>,
    /// Per layer, `[batch, kv_heads, stride, head_dim]`.
    pub(super) values: Vec<Vec<f32>>,
    /// Sequences.
    pub(super) batch: usize,
    kv_heads: usize,
    head_dim: usize,
    /// Positions reserved per sequence.
    pub(super) capacity: usize,
    /// Positions allocated per head: `capacity` rounded up to whole key blocks of the attention
    /// kernel, which then computes every span without a scalar tail.
    pub(super) stride: usize,
    /// Positions written so far.
    pub(super) len: usize,
    /// The step's activation buffers.
    pub(super) scratch: Scratch,
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
pub(super) struct Scratch {
    /// The residual stream, `[rows, hidden]`.
    pub(super) x: Vec<f32>,
    /// See `LayerBuffers` in [`super::host_model`] for these five.
    pub(super) h: Vec<f32>,
    pub(super) qkv: Vec<f32>,
    pub(super) q: Vec<f32>,
    pub(super) attn: Vec<f32>,
    pub(super) gate_up: Vec<f32>,
    pub(super) act: Vec<f32>,
    /// Each sequence's last hidden row, for `LogitRows::Last`.
    pub(super) last: Vec<f32>,
    /// The final norm's output.
    pub(super) normed: Vec<f32>,
}

/// `buffer` as a slice of `len` values, grown if needed (never shrunk, so a generation's
/// steps reuse its allocation).
pub(super) fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.resize(len, 0.0);
    &mut buffer[..len]
}
