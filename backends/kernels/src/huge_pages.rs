//! f32 buffers for model weights, backed by transparent huge pages where the kernel offers them.
//!
//! A forward pass streams every weight from memory once per step. On 4 KiB pages that is a TLB
//! miss and a page walk every 4 KiB (a TinyLlama-1.1B step touches a million pages); on 2 MiB
//! pages, 512 times fewer. Linux maps huge pages into an anonymous mapping advised with
//! `MADV_HUGEPAGE` even where the system setting is `madvise` (the common default), so large
//! weights live in such a mapping instead of a `Vec`. Public (hidden) for the kernel bench, whose
//! weights should stream as the model's do.
//!
//! Chosen because the host kernels streamed weights faster from huge pages on every shape
//! measured, at m = 1 and m = 8 alike (docs/perf/2026-12-kernels.md).

use std::fmt;
use std::ops::{Deref, DerefMut};

use memmap2::MmapMut;

/// Below this many bytes a buffer stays on the heap: a huge page would mostly be empty.
const MIN_MAPPED_BYTES: usize = 2 << 20;

/// `len` floats, on huge pages when large enough and the kernel allows, else on the heap.
pub struct WeightBuffer {
    storage: Storage,
    len: usize,
}

enum Storage {
    /// An anonymous private mapping of at least `len · 4` bytes, page-aligned.
    Mapped(MmapMut),
    Heap(Vec<f32>),
}

impl WeightBuffer {
    /// `len` zeros. A mapping's pages are only committed as they are first written.
    pub fn zeroed(len: usize) -> Self {
        let bytes = len.saturating_mul(size_of::<f32>());
        let storage = if bytes >= MIN_MAPPED_BYTES {
            // A failed mapping (an address-space limit) falls back to the heap, which then
            // fails, or not, as any allocation would.
            MmapMut::map_anon(bytes).ok().map(|map| {
                #[cfg(target_os = "linux")]
                // Advice only: where THP is off, or not built in, the mapping keeps 4 KiB pages.
                let _ = map.advise(memmap2::Advice::HugePage);
                Storage::Mapped(map)
            })
        } else {
            None
        };
        Self {
            storage: storage.unwrap_or_else(|| Storage::Heap(vec![0.0; len])),
            len,
        }
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[f32]) -> Self {
        let mut buffer = Self::zeroed(values.len());
        buffer.copy_from_slice(values);
        buffer
    }

    /// Whether the floats live in a mapping advised to use huge pages.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }
}

impl Deref for WeightBuffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.storage {
            // SAFETY: the mapping is page-aligned (so aligned for f32), at least `len · 4`
            // bytes long, and lives as long as `self`; every bit pattern is a valid f32.
            Storage::Mapped(map) => unsafe {
                std::slice::from_raw_parts(map.as_ptr().cast::<f32>(), self.len)
            },
            Storage::Heap(values) => values,
        }
    }
}

impl DerefMut for WeightBuffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            // SAFETY: as in `deref`; the mapping is private and borrowed mutably through self.
            Storage::Mapped(map) => unsafe {
                std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<f32>(), self.len)
            },
            Storage::Heap(values) => values,
        }
    }
}

impl Clone for WeightBuffer {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl fmt::Debug for WeightBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightBuffer")
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_stay_on_the_heap_and_large_ones_are_mapped() {
        let small = WeightBuffer::from_slice(&[1.0, 2.0, 3.0]);
        assert!(!small.is_mapped());
        assert_eq!(&small[..], &[1.0, 2.0, 3.0]);
        let len = MIN_MAPPED_BYTES / size_of::<f32>() + 5;
        let values: Vec<f32> = (0..len).map(|i| i as f32).collect();
        let large = WeightBuffer::from_slice(&values);
        assert!(large.is_mapped());
        assert_eq!(large.len(), len);
        assert_eq!(&large[..], &values[..]);
        assert_eq!(large.as_ptr().addr() % 4096, 0);
        let copy = large.clone();
        assert_eq!(&copy[..], &values[..]);
        assert!(WeightBuffer::zeroed(len).iter().all(|v| *v == 0.0));
        assert!(WeightBuffer::zeroed(0).is_empty());
    }
}
