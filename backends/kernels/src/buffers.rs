//! Thread-local work buffers the kernels reuse from call to call, and the cache-line alignment
//! their vector loads want.

use std::cell::Cell;
use std::thread::LocalKey;

/// This thread's buffer from `cell`, with room for `len` floats from a cache-line boundary (see
/// [`line_aligned`]); its contents are left over from earlier calls (finite: only products of
/// finite inputs, packed values and zeros are stored). Kept between calls because a fresh one
/// of a few hundred KiB comes from `mmap` and costs a page fault and a zeroed page per 4 KiB,
/// every call. A nested call on the same thread (a pool thread that steals another product's
/// task while it waits) finds the cell empty and allocates.
pub(super) fn take_buffer(cell: &'static LocalKey<Cell<Vec<f32>>>, len: usize) -> Vec<f32> {
    let mut buf = cell.take();
    let room = len + LINE_FLOATS;
    if buf.len() < room {
        buf.resize(room, 0.0);
    }
    buf
}

/// Floats per 64-byte cache line.
pub(super) const LINE_FLOATS: usize = 16;

/// The `len` floats of `buf` that start on a cache line. A `Vec` of a few hundred KiB comes
/// from `mmap` through malloc 16 bytes past a page boundary, so every 64-byte vector load from
/// it straddles two cache lines; aligned, each load touches one, which measured a few percent
/// faster at prefill sizes (docs/perf/2026-12-kernels.md).
pub(super) fn line_aligned(buf: &mut [f32], len: usize) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(LINE_FLOATS);
    &mut buf[skip..skip + len]
}

/// Returns a buffer from [`take_buffer`], keeping the larger if a nested call returned one.
pub(super) fn keep_buffer(cell: &'static LocalKey<Cell<Vec<f32>>>, buf: Vec<f32>) {
    let other = cell.take();
    cell.set(if other.len() > buf.len() { other } else { buf });
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static TEST: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    }

    #[test]
    fn work_buffers_start_on_a_cache_line() {
        let mut buf = take_buffer(&TEST, 1000);
        let aligned = line_aligned(&mut buf, 1000);
        assert_eq!(aligned.len(), 1000);
        assert_eq!(aligned.as_ptr().addr() % 64, 0);
        // Whatever the vector's own offset, the room left suffices.
        let mut odd = vec![0.0f32; 1000 + LINE_FLOATS + 3];
        for start in 0..4 {
            let slice = &mut odd[start..];
            let len = slice.len() - LINE_FLOATS;
            assert_eq!(line_aligned(slice, len).as_ptr().addr() % 64, 0);
        }
        keep_buffer(&TEST, buf);
    }

    #[test]
    fn the_larger_buffer_is_kept() {
        let small = take_buffer(&TEST, 10);
        let large = take_buffer(&TEST, 5000);
        keep_buffer(&TEST, large);
        keep_buffer(&TEST, small);
        assert!(TEST.take().len() >= 5000);
    }
}
