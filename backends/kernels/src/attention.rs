//! Causal self-attention with grouped key/value heads over a preallocated KV cache, in one pass
//! per query row: scores, a float32 softmax and the weighted sum of values, with no repeated
//! copies of the cache (each query head reads its key/value head in place). The cache is a set
//! of slots, one sequence each, and a call maps each of its sequences to the slot it reads, so
//! a continuously batched step reads its requests wherever they sit ([`CacheSlots`]).
//!
//! The cache stores keys transposed, `[head_dim, capacity]` per head, so the scores of a block
//! of keys are `head_dim` vertical multiply-adds, one key per lane. Keys stored as rows cost a
//! horizontal sum per key, which at short heads (8 values) took more time than the products:
//! attention was 46 % of a tiny-stories decode step. Values stay as rows, `[capacity,
//! head_dim]`: their weighted sum is already vertical.

use rayon::prelude::*;

use super::simd::{exp, isa_specialised, madd, max, sum};

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences.
    pub batch: usize,
    /// New positions (query rows) per sequence.
    pub seq: usize,
    /// Cached positions each query may see, the new ones included.
    pub keys: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; `heads` is a multiple of it.
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Positions the cache has room for: the length of a transposed key row, and the stride
    /// between value heads.
    pub capacity: usize,
    /// Sequences the cache holds (its slots): `batch` for a cache of the step's own sequences,
    /// more for a serving batch's cache, of which a step reads some.
    pub slots: usize,
}

impl AttentionShape {
    fn agrees(&self, q: &[f32], cache: &CacheSlots<'_>, mask: &[f32], out: &[f32]) -> bool {
        let s = *self;
        let rows = s.batch.checked_mul(s.seq);
        let q_len = rows.and_then(|r| r.checked_mul(s.heads * s.head_dim));
        let cache_len = s
            .slots
            .checked_mul(s.kv_heads)
            .and_then(|n| n.checked_mul(s.capacity))
            .and_then(|n| n.checked_mul(s.head_dim));
        let mask_len = rows.and_then(|r| r.checked_mul(s.keys));
        s.kv_heads > 0
            && s.heads.is_multiple_of(s.kv_heads)
            && s.keys <= s.capacity
            && q_len == Some(q.len())
            && q_len == Some(out.len())
            && cache_len == Some(cache.keys.len())
            && cache_len == Some(cache.values.len())
            && mask_len == Some(mask.len())
            && cache.slot_of.len() == s.batch
            && cache.slot_of.iter().all(|&slot| slot < s.slots)
    }
}

/// The KV cache an attention call reads, and which of its slots each of the step's sequences
/// reads: a step of an ordinary batch reads slot `b` for sequence `b`; a step of a serving
/// batch reads the slots of the requests it runs, wherever they sit.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlots<'a> {
    /// `[slots, kv_heads, head_dim, capacity]`: keys transposed.
    pub keys: &'a [f32],
    /// `[slots, kv_heads, capacity, head_dim]`.
    pub values: &'a [f32],
    /// `[batch]`: the slot of each sequence of the step, each below `slots`.
    pub slot_of: &'a [usize],
}

/// How a row's scores are formed from `q·k`, before the mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Multiplies `q·k`: `1/√head_dim` in Llama.
    pub scale: f32,
    /// Gemma 2's soft cap: scores become `cap · tanh(s / cap)` after scaling.
    pub soft_cap: Option<f32>,
}

/// Below this many multiply-adds a call runs on the calling thread: handing rows to rayon
/// costs more than a decode step's attention on a small model.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// `out[b·seq + t, h] = softmax(cap(q[b·seq + t, h] · K[s, h/g]ᵀ · scale) + mask[b, t]) · V[s, h/g]`
/// with `s = cache.slot_of[b]`, `cap` the identity unless `scores.soft_cap` is set.
///
/// # Shapes
/// - `q`, `out`: `[batch · seq, heads · head_dim]`, rows ordered by sequence then position
/// - `cache.keys`: `[slots, kv_heads, head_dim, capacity]` (transposed); positions `0..keys`
///   are used (later ones may be read, their lanes dropped: a capacity of whole 16-key blocks
///   is fastest)
/// - `cache.values`: `[slots, kv_heads, capacity, head_dim]`; positions `0..keys` are read
/// - `cache.slot_of`: `[batch]`
/// - `mask`: additive, `[batch, seq, keys]`; `-inf` hides a key (and skips its work: a row
///   computes only the span from its first to its last visible key)
///
/// Returns `false`, leaving `out` untouched, when the lengths disagree with `shape` or a slot
/// is not in the cache. A row whose keys are all hidden comes out as zeros rather than NaN.
pub fn attention(
    q: &[f32],
    cache: CacheSlots<'_>,
    mask: &[f32],
    shape: AttentionShape,
    scores: Scores,
    out: &mut [f32],
) -> bool {
    if !shape.agrees(q, &cache, mask, out) {
        return false;
    }
    let CacheSlots {
        keys,
        values,
        slot_of,
    } = cache;
    let width = shape.heads * shape.head_dim;
    if width == 0 || shape.keys == 0 {
        out.fill(0.0);
        return true;
    }
    let form = scores;
    let row = |(r, out_row): (usize, &mut [f32]), scores: &mut Vec<f32>| {
        let (b, t) = (r / shape.seq, r % shape.seq);
        let context = RowContext {
            shape,
            scores: form,
            slot: slot_of[b],
        };
        scores.resize(shape.keys.next_multiple_of(SCORE_LANES), 0.0);
        attend_row(
            &q[r * width..(r + 1) * width],
            keys,
            values,
            &mask[(b * shape.seq + t) * shape.keys..][..shape.keys],
            context,
            scores,
            out_row,
        );
    };
    let macs = shape.batch * shape.seq * shape.heads * shape.keys * shape.head_dim * 2;
    if macs < PARALLEL_MIN_MACS || rayon::current_num_threads() == 1 {
        let mut scores = Vec::new();
        out.chunks_exact_mut(width)
            .enumerate()
            .for_each(|item| row(item, &mut scores));
    } else {
        out.par_chunks_exact_mut(width)
            .enumerate()
            .for_each_init(Vec::new, |scores, item| row(item, scores));
    }
    true
}

/// What a query row needs besides its slices.
#[derive(Debug, Clone, Copy)]
struct RowContext {
    shape: AttentionShape,
    scores: Scores,
    /// The cache slot the row's sequence reads.
    slot: usize,
}

isa_specialised! {
    /// Every head of one query row; `scores` has `shape.keys` slots rounded up to
    /// [`SCORE_LANES`].
    fn attend_row(
        q_row: &[f32],
        keys: &[f32],
        values: &[f32],
        mask_row: &[f32],
        context: RowContext,
        scores: &mut [f32],
        out_row: &mut [f32],
    ) {
        let RowContext { shape, scores: form, slot } = context;
        let d = shape.head_dim;
        let group = shape.heads / shape.kv_heads;
        // Only the span between the first and last visible key is computed: a causal prefill
        // row skips its future, a left-padded sequence its pads.
        let Some(lo) = mask_row.iter().position(|m| *m != f32::NEG_INFINITY) else {
            out_row.fill(0.0);
            return;
        };
        let hi = mask_row.iter().rposition(|m| *m != f32::NEG_INFINITY).map_or(lo, |i| i) + 1;
        let mask = &mask_row[lo..hi];
        let n = hi - lo;
        // The softmax runs over whole vectors: the padding holds −inf, which weighs nothing.
        // A prefill row's span is short (tens of keys), where scalar tails cost as much as
        // the vector part.
        let scores = &mut scores[..n.next_multiple_of(SCORE_LANES)];
        for (h, (qh, oh)) in q_row.chunks_exact(d).zip(out_row.chunks_exact_mut(d)).enumerate() {
            let head = slot * shape.kv_heads + h / group;
            let k_head = &keys[head * d * shape.capacity..(head + 1) * d * shape.capacity];
            let v_head = &values[(head * shape.capacity + lo) * d..(head * shape.capacity + hi) * d];
            let (span, padding) = scores.split_at_mut(n);
            key_scores::<FUSED>(qh, k_head, shape.capacity, lo, span);
            // Scores as transformers' eager path forms them: (q·k)·scale + mask, in f32; a
            // hidden key inside the span gets −inf and so weight 0.
            match form.soft_cap {
                None => {
                    for (s, m) in span.iter_mut().zip(mask) {
                        *s = *s * form.scale + m;
                    }
                }
                Some(cap) => {
                    for (s, m) in span.iter_mut().zip(mask) {
                        *s = cap * (*s * form.scale / cap).tanh() + m;
                    }
                }
            }
            padding.fill(f32::NEG_INFINITY);
            let top = max(scores);
            for s in scores.iter_mut() {
                *s = if *s == f32::NEG_INFINITY { 0.0 } else { exp(*s - top) };
            }
            let inv = 1.0 / sum(scores);
            weighted_values::<FUSED>(&scores[..n], v_head, oh);
            for o in oh.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// The softmax's vector width: an AVX-512 register of scores.
const SCORE_LANES: usize = 16;

/// Keys per block of [`key_scores`]: four AVX-512 registers of accumulators.
const KEY_BLOCK: usize = 64;
/// Keys per block of the span's rest: one AVX-512 register. A cache whose capacity is a
/// multiple of this computes every span without a variable-width tail.
pub const KEY_TAIL_BLOCK: usize = 16;

/// `scores[j] = Σᵢ q[i] · kt[i · capacity + lo + j]`: the dot products of `q` with the keys
/// `lo ..` stored as columns of `kt` (`[q.len(), capacity]`).
///
/// The span's rest after whole 64-key blocks is computed in 16-key blocks reading past the
/// span's end while the row has room: those lanes are independent of the others and dropped,
/// so whatever the cache holds there cannot reach a score. Only at the row's end does a
/// variable-width loop (through memory) remain.
#[inline(always)]
fn key_scores<const FUSED: bool>(
    q: &[f32],
    kt: &[f32],
    capacity: usize,
    lo: usize,
    scores: &mut [f32],
) {
    let n = scores.len();
    let mut j = 0;
    while j + KEY_BLOCK <= n {
        scores[j..j + KEY_BLOCK].copy_from_slice(&key_block::<KEY_BLOCK, FUSED>(
            q,
            kt,
            capacity,
            lo + j,
        ));
        j += KEY_BLOCK;
    }
    while j < n && lo + j + KEY_TAIL_BLOCK <= capacity {
        let block = key_block::<KEY_TAIL_BLOCK, FUSED>(q, kt, capacity, lo + j);
        let take = (n - j).min(KEY_TAIL_BLOCK);
        scores[j..j + take].copy_from_slice(&block[..take]);
        j += take;
    }
    let tail = &mut scores[j..];
    tail.fill(0.0);
    let width = tail.len();
    for (i, qi) in q.iter().enumerate() {
        for (a, k) in tail.iter_mut().zip(&kt[i * capacity + lo + j..][..width]) {
            *a = madd::<FUSED>(*qi, *k, *a);
        }
    }
}

/// The scores of the `W` keys from position `at`; `at + W ≤ capacity`.
#[inline(always)]
fn key_block<const W: usize, const FUSED: bool>(
    q: &[f32],
    kt: &[f32],
    capacity: usize,
    at: usize,
) -> [f32; W] {
    // A fixed-size block stays in registers across the depth loop.
    let mut acc = [0.0f32; W];
    for (i, qi) in q.iter().enumerate() {
        for (a, k) in acc.iter_mut().zip(&kt[i * capacity + at..][..W]) {
            *a = madd::<FUSED>(*qi, *k, *a);
        }
    }
    acc
}

/// `out = Σⱼ p[j] · v[j]` over the value rows of `v` (`[p.len(), out.len()]`), with the row
/// length fixed at compile time for the usual head sizes so the sum stays in registers.
#[inline(always)]
fn weighted_values<const FUSED: bool>(p: &[f32], v: &[f32], out: &mut [f32]) {
    match out.len() {
        8 => weighted_rows::<8, 4, FUSED>(p, v, out),
        16 => weighted_rows::<16, 4, FUSED>(p, v, out),
        32 => weighted_rows::<32, 4, FUSED>(p, v, out),
        64 => weighted_rows::<64, 4, FUSED>(p, v, out),
        128 => weighted_rows::<128, 2, FUSED>(p, v, out),
        d => {
            out.fill(0.0);
            for (p, row) in p.iter().zip(v.chunks_exact(d)) {
                for (o, x) in out.iter_mut().zip(row) {
                    *o = madd::<FUSED>(*p, *x, *o);
                }
            }
        }
    }
}

/// [`weighted_values`] for rows of `D` values, with `S` independent sums (rows taken in turn)
/// so consecutive multiply-adds do not wait on each other.
#[inline(always)]
fn weighted_rows<const D: usize, const S: usize, const FUSED: bool>(
    p: &[f32],
    v: &[f32],
    out: &mut [f32],
) {
    let (rows, _) = v.as_chunks::<D>();
    let mut acc = [[0.0f32; D]; S];
    let mut groups = p.chunks_exact(S).zip(rows.chunks_exact(S));
    for (ps, rs) in &mut groups {
        for ((a, p), r) in acc.iter_mut().zip(ps).zip(rs) {
            for (a, x) in a.iter_mut().zip(r) {
                *a = madd::<FUSED>(*p, *x, *a);
            }
        }
    }
    let done = p.len() / S * S;
    for (p, r) in p[done..].iter().zip(&rows[done..]) {
        for (a, x) in acc[0].iter_mut().zip(r) {
            *a = madd::<FUSED>(*p, *x, *a);
        }
    }
    for (o, i) in out.iter_mut().zip(0..D) {
        *o = acc.iter().map(|a| a[i]).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::values;

    /// Straightforward f64 attention with repeated KV heads, as the definition reads; sequence
    /// `b` reads cache slot `slot_of[b]`.
    fn reference(
        q: &[f32],
        cache: CacheSlots<'_>,
        mask: &[f32],
        s: AttentionShape,
        form: Scores,
    ) -> Vec<f32> {
        let (k, v) = (cache.keys, cache.values);
        let d = s.head_dim;
        let mut out = vec![0.0; s.batch * s.seq * s.heads * d];
        for b in 0..s.batch {
            for t in 0..s.seq {
                let r = b * s.seq + t;
                for h in 0..s.heads {
                    let kv = h / (s.heads / s.kv_heads);
                    let base = (cache.slot_of[b] * s.kv_heads + kv) * s.capacity * d;
                    let qh = &q[(r * s.heads + h) * d..][..d];
                    let scores: Vec<f64> = (0..s.keys)
                        .map(|j| {
                            // Keys transposed: value i of key j at i·capacity + j.
                            let dot: f64 = (0..d)
                                .map(|i| f64::from(qh[i]) * f64::from(k[base + i * s.capacity + j]))
                                .sum();
                            let scaled = dot * f64::from(form.scale);
                            let capped = match form.soft_cap {
                                Some(cap) => f64::from(cap) * (scaled / f64::from(cap)).tanh(),
                                None => scaled,
                            };
                            capped + f64::from(mask[r * s.keys + j])
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for i in 0..d {
                        let o: f64 = (0..s.keys)
                            .map(|j| e[j] / sum * f64::from(v[base + j * d + i]))
                            .sum();
                        out[(r * s.heads + h) * d + i] = o as f32;
                    }
                }
            }
        }
        out
    }

    /// Checks a cache of the step's own sequences (slot `b` for sequence `b`).
    fn check(shape: AttentionShape, mask: Vec<f32>) {
        let slot_of: Vec<usize> = (0..shape.batch).collect();
        check_slots(shape, &mask, &slot_of);
    }

    fn check_slots(shape: AttentionShape, mask: &[f32], slot_of: &[usize]) {
        let d = shape.head_dim;
        let scale = 1.0 / (d as f32).sqrt();
        // Plain scores, and Gemma 2's soft cap at a value the scores reach.
        for soft_cap in [None, Some(0.7)] {
            check_scores(shape, mask, slot_of, Scores { scale, soft_cap });
        }
    }

    fn check_scores(shape: AttentionShape, mask: &[f32], slot_of: &[usize], form: Scores) {
        let d = shape.head_dim;
        let q = values(shape.batch * shape.seq * shape.heads * d, 1);
        let len = shape.slots * shape.kv_heads * shape.capacity * d;
        let (k, v) = (values(len, 2), values(len, 3));
        let cache = CacheSlots {
            keys: &k,
            values: &v,
            slot_of,
        };
        let mut out = vec![f32::NAN; q.len()];
        assert!(attention(&q, cache, mask, shape, form, &mut out));
        let want = reference(&q, cache, mask, shape, form);
        for (a, b) in out.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{shape:?} {form:?}: {a} vs {b}");
        }
    }

    #[test]
    fn causal_prefill_with_grouped_heads_matches_the_definition() {
        let shape = AttentionShape {
            batch: 2,
            seq: 5,
            keys: 5,
            heads: 6,
            kv_heads: 2,
            head_dim: 20,
            capacity: 7,
            slots: 2,
        };
        let mut mask = vec![f32::NEG_INFINITY; 2 * 5 * 5];
        for b in 0..2 {
            // Sequence 1 has two left pads; a pad row sees only itself.
            let pad = 2 * b;
            for i in 0..5 {
                let row = &mut mask[(b * 5 + i) * 5..][..5];
                if i < pad {
                    row[i] = 0.0;
                } else {
                    row[pad..=i].fill(0.0);
                }
            }
        }
        check(shape, mask);
    }

    #[test]
    fn decode_rows_and_large_calls_match_the_definition() {
        // One new position after 40 cached ones, large enough to run in parallel.
        let shape = AttentionShape {
            batch: 3,
            seq: 1,
            keys: 41,
            heads: 32,
            kv_heads: 4,
            head_dim: 64,
            capacity: 50,
            slots: 3,
        };
        let mut mask = vec![0.0; 3 * 41];
        mask[41..44].fill(f32::NEG_INFINITY);
        check(shape, mask);
    }

    #[test]
    fn short_and_long_heads_over_many_keys_match_the_definition() {
        // Head sizes with a fixed-width value sum (8, 128) and without (12), over spans with
        // whole key blocks and a remainder, a few keys hidden mid-span.
        for (head_dim, keys) in [(8, 150), (128, 70), (12, 64)] {
            let shape = AttentionShape {
                batch: 2,
                seq: 1,
                keys,
                heads: 4,
                kv_heads: 2,
                head_dim,
                capacity: keys + 3,
                slots: 2,
            };
            let mut mask = vec![0.0; 2 * keys];
            mask[10..13].fill(f32::NEG_INFINITY);
            check(shape, mask);
        }
    }

    /// A serving batch's decode step: its sequences read scattered slots of a larger cache,
    /// each over its own length (the mask hides what lies past it), in a call large enough to
    /// run in parallel and in a small one.
    #[test]
    fn sequences_read_the_slots_they_are_mapped_to() {
        for (heads, head_dim) in [(32, 64), (2, 8)] {
            let shape = AttentionShape {
                batch: 3,
                seq: 1,
                keys: 40,
                heads,
                kv_heads: 2,
                head_dim,
                capacity: 48,
                slots: 5,
            };
            let lens = [40, 7, 23];
            let mut mask = vec![f32::NEG_INFINITY; 3 * 40];
            for (row, len) in mask.chunks_exact_mut(40).zip(lens) {
                row[..len].fill(0.0);
            }
            check_slots(shape, &mask, &[4, 0, 2]);
        }
    }

    #[test]
    fn fully_hidden_rows_are_zero_and_bad_lengths_or_slots_are_refused() {
        let shape = AttentionShape {
            batch: 1,
            seq: 1,
            keys: 2,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            capacity: 2,
            slots: 1,
        };
        let mut out = vec![f32::NAN; 8];
        let mask = [f32::NEG_INFINITY; 2];
        let plain = Scores {
            scale: 1.0,
            soft_cap: None,
        };
        let cache = |keys, slot_of| CacheSlots {
            keys,
            values: &[1.0; 8],
            slot_of,
        };
        assert!(attention(
            &[1.0; 8],
            cache(&[1.0; 8], &[0]),
            &mask,
            shape,
            plain,
            &mut out
        ));
        assert_eq!(out, vec![0.0; 8]);
        let mut out = vec![7.0; 8];
        assert!(!attention(
            &[1.0; 8],
            cache(&[1.0; 7], &[0]),
            &mask,
            shape,
            plain,
            &mut out
        ));
        // A slot the cache does not hold, and a map not one slot per sequence.
        for slot_of in [&[1][..], &[0, 0][..], &[][..]] {
            assert!(!attention(
                &[1.0; 8],
                cache(&[1.0; 8], slot_of),
                &mask,
                shape,
                plain,
                &mut out
            ));
        }
        assert_eq!(out, vec![7.0; 8]);
    }
}
