//! The key/value cache of one generation: per layer, keys and values for every position seen
//! so far, preallocated for the whole generation so each step writes in place instead of
//! re-concatenating the history.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::error::BackendError;

/// Keys and values of all layers, `[batch, kv_heads, capacity, head_dim]` each.
pub(crate) struct KvCache<B: Backend> {
    /// `None` only transiently while a layer's tensors are being written.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
    capacity: usize,
    /// Bytes one position occupies across all layers, keys and values, whole batch.
    bytes_per_position: u64,
}

impl<B: Backend> KvCache<B> {
    /// Reserves room for `capacity` positions.
    pub(crate) fn new(
        num_layers: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        let layers = (0..num_layers)
            .map(|_| {
                let shape = [batch, kv_heads, capacity, head_dim];
                Some((
                    Tensor::zeros(shape, (device, dtype)),
                    Tensor::zeros(shape, (device, dtype)),
                ))
            })
            .collect();
        let bytes_per_position =
            2 * (num_layers * batch * kv_heads * head_dim * dtype.size()) as u64;
        Self {
            layers,
            len: 0,
            capacity,
            bytes_per_position,
        }
    }

    /// Positions written so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the positions written so far (the reserved capacity is larger until the
    /// generation reaches its last step).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes_per_position * self.len as u64
    }

    /// Writes `seq` new positions for `layer` after the current ones and returns views of all
    /// positions including them. [`KvCache::advance`] commits the new length once every layer
    /// has been written.
    ///
    /// # Shapes
    /// - `keys`, `values`: `[batch, kv_heads, seq, head_dim]`
    /// - returns `(keys, values)`, each `[batch, kv_heads, len + seq, head_dim]`
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: Tensor<B, 4>,
        values: Tensor<B, 4>,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>), BackendError> {
        let [b, h, seq, d] = keys.dims();
        let end = self.len + seq;
        if end > self.capacity {
            return Err(BackendError::KvCacheFull {
                capacity: self.capacity,
                needed: end,
            });
        }
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| BackendError::Internal(format!("KV cache has no layer {layer}")))?;
        // Moving the tensors out (rather than cloning) keeps them uniquely owned, which lets
        // the backend write the slice in place.
        let (k_all, v_all) = slot
            .take()
            .ok_or_else(|| BackendError::Internal("KV cache layer lost".into()))?;
        let write = [0..b, 0..h, self.len..end, 0..d];
        let k_all = k_all.slice_assign(write.clone(), keys);
        let v_all = v_all.slice_assign(write, values);
        let read = [0..b, 0..h, 0..end, 0..d];
        let views = (k_all.clone().slice(read.clone()), v_all.clone().slice(read));
        *slot = Some((k_all, v_all));
        Ok(views)
    }

    /// Commits `seq` positions written by [`KvCache::append`] on every layer.
    pub(crate) fn advance(&mut self, seq: usize) {
        self.len += seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use burn_flex::{Flex, FlexDevice};

    #[test]
    fn appends_in_order_and_reports_bytes() {
        let device = FlexDevice;
        let mut cache = KvCache::<Flex>::new(1, 1, 1, 2, 3, &device, DType::F32);
        let t = |v: Vec<f32>, n| {
            Tensor::<Flex, 4>::from_data(TensorData::new(v, [1, 1, n, 2]), &device)
        };
        let (k, _) = cache
            .append(0, t(vec![1., 2., 3., 4.], 2), t(vec![0.; 4], 2))
            .unwrap();
        assert_eq!(k.dims(), [1, 1, 2, 2]);
        cache.advance(2);
        assert_eq!(cache.bytes(), 2 * 2 * 2 * 4);
        let (k, _) = cache
            .append(0, t(vec![5., 6.], 1), t(vec![0.; 2], 1))
            .unwrap();
        cache.advance(1);
        let got: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(got, vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(cache.len(), 3);
        assert!(matches!(
            cache.append(0, t(vec![7., 8.], 1), t(vec![0.; 2], 1)),
            Err(BackendError::KvCacheFull {
                capacity: 3,
                needed: 4
            })
        ));
    }
}
