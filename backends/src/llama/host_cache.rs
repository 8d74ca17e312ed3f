//! The host forward pass's per-generation state: RoPE rows, the KV cache in the layout the
//! attention kernel reads (a slot per sequence), and the step's scratch buffers, all allocated
//! once per generation or serving batch.

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

/// Keys and values of every layer, written in place: keys `[slots, kv_heads, head_dim,
/// stride]` (transposed, as `kernels::attention` reads them), values `[slots, kv_heads,
/// stride, head_dim]`, a slot per sequence (an ordinary batch's sequences, or a serving batch's
/// requests, a slot reused once its request leaves); plus the step's scratch buffers, so a
/// generation allocates once.
pub(crate) struct HostCache {
    /// Per layer, `[slots, kv_heads, head_dim, stride]`.
    pub(super) keys: Vec<Vec<f32>>,
    /// Per layer, `[slots, kv_heads, stride, head_dim]`.
    pub(super) values: Vec<Vec<f32>>,
    kv_heads: usize,
    head_dim: usize,
    /// Positions reserved per slot.
    pub(super) capacity: usize,
    /// Positions allocated per head: `capacity` rounded up to whole key blocks of the attention
    /// kernel, which then computes every span without a scalar tail.
    pub(super) stride: usize,
    /// Positions written so far in each slot.
    pub(super) lens: Vec<usize>,
    /// The step's activation buffers.
    pub(super) scratch: Scratch,
}

impl HostCache {
    /// Reserves room for `capacity` positions in each of `slots` slots.
    pub(crate) fn new(config: &LlamaConfig, slots: usize, capacity: usize) -> Self {
        let stride = capacity.next_multiple_of(KEY_TAIL_BLOCK);
        let size = slots * config.num_kv_heads * stride * config.head_dim;
        let layer = || committed_zeros(size);
        Self {
            keys: (0..config.num_layers).map(|_| layer()).collect(),
            values: (0..config.num_layers).map(|_| layer()).collect(),
            kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            capacity,
            stride,
            lens: vec![0; slots],
            scratch: Scratch::default(),
        }
    }

    /// Slots the cache holds.
    pub(crate) fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Positions written so far in the fullest slot (every slot, in an ordinary batch).
    pub(crate) fn len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// Bytes of one position of one slot: keys and values of every layer.
    fn position_bytes(&self) -> u64 {
        (2 * self.keys.len() * self.kv_heads * self.head_dim * size_of::<f32>()) as u64
    }

    /// Bytes of the positions written so far, keys and values of every layer and slot.
    pub(crate) fn bytes(&self) -> u64 {
        self.position_bytes() * self.lens.iter().sum::<usize>() as u64
    }

    /// Bytes allocated for keys and values: every slot's `stride` positions.
    pub(crate) fn reserved_bytes(&self) -> u64 {
        self.position_bytes() * (self.slots() * self.stride) as u64
    }

    /// Forgets what `slot` holds, so the next sequence in it writes from position 0 (nothing is
    /// cleared: masks never show a position before it is written again).
    pub(crate) fn release(&mut self, slot: usize) {
        if let Some(len) = self.lens.get_mut(slot) {
            *len = 0;
        }
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
