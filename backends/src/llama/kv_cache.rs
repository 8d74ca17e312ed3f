//! The key/value cache of one generation or serving batch on the burn pass: per layer, keys and
//! values of every slot (a slot per sequence), preallocated so each step writes in place
//! instead of re-concatenating the history.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::batch::HostStep;
use crate::error::BackendError;

/// Keys and values of all layers, `[slots, kv_heads, capacity, head_dim]` each.
pub(crate) struct KvCache<B: Backend> {
    /// `None` only transiently while a layer's tensors are being written.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// Positions written so far in each slot.
    lens: Vec<usize>,
    capacity: usize,
    /// Bytes one position of one slot occupies across all layers, keys and values.
    position_bytes: u64,
}

/// Where one step's sequences sit in the cache, checked against it before any layer is
/// written ([`KvCache::rows`]).
pub(crate) struct StepRows<B: Backend> {
    /// `[batch]`: each sequence's slot.
    slots: Vec<usize>,
    /// `[batch]`: the position each sequence's first new key is written at.
    starts: Vec<usize>,
    /// New positions per sequence.
    seq: usize,
    /// Positions every sequence's attention reads: the mask's width.
    keys: usize,
    layout: RowLayout<B>,
}

/// How a step's sequences are written to and read from the cache.
enum RowLayout<B: Backend> {
    /// Slots `first..first + batch` in order, all written from the same position: one slice
    /// per layer (every step of an ordinary batch).
    Block { first: usize, start: usize },
    /// Any other placement (a serving batch's steps): each sequence written on its own, the
    /// slots read back gathered by `index` (`[batch]`).
    Scattered { index: Tensor<B, 1, Int> },
}

impl<B: Backend> KvCache<B> {
    /// Reserves room for `capacity` positions in each of `slots` slots.
    pub(crate) fn new(
        num_layers: usize,
        slots: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        let layers = (0..num_layers)
            .map(|_| {
                let shape = [slots, kv_heads, capacity, head_dim];
                Some((
                    Tensor::zeros(shape, (device, dtype)),
                    Tensor::zeros(shape, (device, dtype)),
                ))
            })
            .collect();
        let position_bytes = 2 * (num_layers * kv_heads * head_dim * dtype.size()) as u64;
        Self {
            layers,
            lens: vec![0; slots],
            capacity,
            position_bytes,
        }
    }

    /// Positions written so far in the fullest slot (every slot, in an ordinary batch).
    pub(crate) fn len(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }

    /// Bytes of the positions written so far (the reserved capacity is larger until the
    /// generation reaches its last step).
    pub(crate) fn bytes(&self) -> u64 {
        self.position_bytes * self.lens.iter().sum::<usize>() as u64
    }

    /// Bytes reserved: every slot's `capacity` positions.
    pub(crate) fn reserved_bytes(&self) -> u64 {
        self.position_bytes * (self.lens.len() * self.capacity) as u64
    }

    /// Forgets what `slot` holds (nothing is cleared: masks never show a position before it is
    /// written again). A slot the cache lacks is ignored.
    pub(crate) fn release(&mut self, slot: usize) {
        if let Some(len) = self.lens.get_mut(slot) {
            *len = 0;
        }
    }

    /// Where `step`'s sequences sit, or why the step cannot run on this cache: every sequence
    /// names a slot of it once, starts where that slot's positions end, and fits the slot.
    pub(crate) fn rows(
        &self,
        step: &HostStep,
        device: &B::Device,
    ) -> Result<StepRows<B>, BackendError> {
        step.check_slots(&self.lens, self.capacity)?;
        let first = step.slots.first().copied().unwrap_or(0);
        let start = step.starts.first().copied().unwrap_or(0);
        let in_order = step.slots.iter().enumerate().all(|(i, &s)| s == first + i);
        let layout = if in_order && step.starts.iter().all(|&s| s == start) {
            RowLayout::Block { first, start }
        } else {
            let index: Vec<i64> = step.slots.iter().map(|&s| s as i64).collect();
            RowLayout::Scattered {
                index: Tensor::from_data(TensorData::new(index, [step.batch]), device),
            }
        };
        Ok(StepRows {
            slots: step.slots.clone(),
            starts: step.starts.clone(),
            seq: step.seq,
            keys: step.keys(),
            layout,
        })
    }

    /// Writes the step's new positions for `layer` into their slots and returns views of
    /// every position the step's sequences attend over. [`KvCache::advance`] commits the
    /// new lengths once every layer has been written.
    ///
    /// # Shapes
    /// - `keys`, `values`: `[batch, kv_heads, seq, head_dim]`
    /// - returns `(keys, values)`, each `[batch, kv_heads, rows.keys, head_dim]`, sequence `i`
    ///   read from slot `rows.slots[i]`
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: Tensor<B, 4>,
        values: Tensor<B, 4>,
        rows: &StepRows<B>,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), BackendError> {
        let [b, h, seq, d] = keys.dims();
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| BackendError::Internal(format!("KV cache has no layer {layer}")))?;
        // Moving the tensors out (rather than cloning) keeps them uniquely owned, which lets
        // the backend write the slice in place.
        let (mut k_all, mut v_all) = slot
            .take()
            .ok_or_else(|| BackendError::Internal("KV cache layer lost".into()))?;
        let views = match &rows.layout {
            RowLayout::Block { first, start } => {
                let write = [*first..first + b, 0..h, *start..start + seq, 0..d];
                k_all = k_all.slice_assign(write.clone(), keys);
                v_all = v_all.slice_assign(write, values);
                let read = [*first..first + b, 0..h, 0..rows.keys, 0..d];
                (k_all.clone().slice(read.clone()), v_all.clone().slice(read))
            }
            RowLayout::Scattered { index } => {
                for (i, (&s, &start)) in rows.slots.iter().zip(&rows.starts).enumerate() {
                    let write = [s..s + 1, 0..h, start..start + seq, 0..d];
                    let row = [i..i + 1, 0..h, 0..seq, 0..d];
                    k_all = k_all.slice_assign(write.clone(), keys.clone().slice(row.clone()));
                    v_all = v_all.slice_assign(write, values.clone().slice(row));
                }
                let read = [0..self.lens.len(), 0..h, 0..rows.keys, 0..d];
                let gather =
                    |all: &Tensor<B, 4>| all.clone().slice(read.clone()).select(0, index.clone());
                (gather(&k_all), gather(&v_all))
            }
        };
        *slot = Some((k_all, v_all));
        Ok(views)
    }

    /// Commits the positions [`KvCache::append`] wrote for `rows` on every layer.
    pub(crate) fn advance(&mut self, rows: &StepRows<B>) {
        for (&slot, &start) in rows.slots.iter().zip(&rows.starts) {
            self.lens[slot] = start + rows.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::{Flex, FlexDevice};

    fn tensor(v: Vec<f32>, n: usize) -> Tensor<Flex, 4> {
        Tensor::<Flex, 4>::from_data(TensorData::new(v, [1, 1, n, 2]), &FlexDevice)
    }

    /// An ordinary batch's step of `seq` positions after `past` in slot 0.
    fn step(past: usize, seq: usize) -> HostStep {
        HostStep {
            tokens: vec![0; seq],
            positions: (past..past + seq).map(|p| p as i64).collect(),
            mask: vec![0.0; seq * (past + seq)],
            batch: 1,
            seq,
            slots: vec![0],
            starts: vec![past],
        }
    }

    #[test]
    fn appends_in_order_and_reports_bytes() {
        let device = FlexDevice;
        let mut cache = KvCache::<Flex>::new(1, 1, 1, 2, 3, &device, DType::F32);
        let rows = cache.rows(&step(0, 2), &device).unwrap();
        let (k, _) = cache
            .append(
                0,
                tensor(vec![1., 2., 3., 4.], 2),
                tensor(vec![0.; 4], 2),
                &rows,
            )
            .unwrap();
        assert_eq!(k.dims(), [1, 1, 2, 2]);
        cache.advance(&rows);
        assert_eq!(cache.bytes(), 2 * 2 * 2 * 4);
        let rows = cache.rows(&step(2, 1), &device).unwrap();
        let (k, _) = cache
            .append(0, tensor(vec![5., 6.], 1), tensor(vec![0.; 2], 1), &rows)
            .unwrap();
        cache.advance(&rows);
        let got: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(got, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.reserved_bytes(), 3 * 2 * 2 * 4);
        assert!(matches!(
            cache.rows(&step(3, 1), &device),
            Err(BackendError::KvCacheFull {
                capacity: 3,
                needed: 4
            })
        ));
        assert!(matches!(
            cache.rows(&step(1, 1), &device),
            Err(BackendError::StepMismatch {
                start: 1,
                cache_len: 3,
                ..
            })
        ));
    }

    #[test]
    fn scattered_slots_are_written_at_their_own_positions_and_read_back_in_step_order() {
        let device = FlexDevice;
        // Three slots of 3 positions, one value per position (head_dim 1).
        let mut cache = KvCache::<Flex>::new(1, 3, 1, 1, 3, &device, DType::F32);
        let column = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<Flex, 4>::from_data(TensorData::new(v, [n, 1, 1, 1]), &device)
        };
        // Slot 2 holds two positions, slot 0 one.
        for (slot, values) in [(2, vec![20., 21.]), (0, vec![10.])] {
            let chunk = HostStep::slot_chunk(slot, 0, &vec![0; values.len()]);
            let rows = cache.rows(&chunk, &device).unwrap();
            let n = values.len();
            let v = Tensor::<Flex, 4>::from_data(TensorData::new(values, [1, 1, n, 1]), &device);
            cache.append(0, v.clone(), v, &rows).unwrap();
            cache.advance(&rows);
        }
        let decode = HostStep::slot_decode(&[2, 0], &[2, 1], &[0, 0]);
        let rows = cache.rows(&decode, &device).unwrap();
        let (k, _) = cache
            .append(0, column(vec![22., 11.]), column(vec![0., 0.]), &rows)
            .unwrap();
        cache.advance(&rows);
        assert_eq!(k.dims(), [2, 1, 3, 1]);
        let got: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(got, vec![20., 21., 22., 10., 11., 0.]);
        assert_eq!(cache.lens, vec![2, 0, 3]);
        // A released slot starts again from position 0; the others keep theirs.
        cache.release(2);
        assert!(
            cache
                .rows(&HostStep::slot_chunk(2, 0, &[0]), &device)
                .is_ok()
        );
        assert_eq!(cache.len(), 2);
    }
}
