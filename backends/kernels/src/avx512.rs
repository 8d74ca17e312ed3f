//! AVX-512F: 16 lanes, 32 vector registers. The [`Simd`] operations over `__m512` and the
//! streaming kernel (`streaming`) compiled for them.
//!
//! Decisions: a single input row reads one weight row at a time at every depth (8 rows side by
//! side measured slower, most at short rows); several rows read x interleaved
//! ([`XLayout::Interleaved`], one stream instead of `M`); and groups prefetch in software: the
//! next group's rows into L2 one group ahead and their own rows [`L1_AHEAD`] floats ahead into
//! L1, because at M > 1 the FMAs between loads leave the core too few misses in flight (at
//! M = 1 no prefetch scheme beat the hardware prefetcher). Many alternatives measured level or
//! slower; the measurements, and why a lab copy must keep the kernel inlined into its
//! `target_feature` caller, are in `docs/perf/2026-12-kernels.md`.

use std::arch::x86_64::{
    __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps,
    _mm512_reduce_add_ps, _mm512_setzero_ps,
};

use super::layout::{Panels, XLayout};
use super::streaming::{self, Streaming};
use super::vector::{Simd, vector_ops};

/// Proof that this CPU runs AVX-512F: made only by [`Avx512::detect`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx512(());

impl Avx512 {
    /// The token, where this CPU has AVX-512F (which implies FMA).
    pub(crate) fn detect() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Avx512(()))
    }
}

impl Simd for Avx512 {
    /// Bit l set: lane l is loaded.
    type Mask = u16;
    const REGISTERS: usize = 32;

    vector_ops!(__m512: _mm512_setzero_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_loadu_ps);

    #[inline(always)]
    fn reduce(self, v: __m512) -> f32 {
        // SAFETY: the CPU has AVX-512F (the token).
        unsafe { _mm512_reduce_add_ps(v) }
    }

    /// `n` < 16, so the shift neither overflows nor, for n ≥ 1, yields an empty mask.
    #[inline(always)]
    fn tail_mask(self, n: usize) -> u16 {
        (1u16 << n) - 1
    }

    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, mask: u16) -> __m512 {
        // SAFETY: the CPU has AVX-512F (the token) and the caller vouches for the enabled lanes.
        unsafe { _mm512_maskz_loadu_ps(mask, p) }
    }
}

/// Floats ahead of the loads at which a group's own weight rows are prefetched into L1 at
/// M > 1: 8 cache lines per row.
const L1_AHEAD: usize = 128;

impl Streaming for Avx512 {
    const ONE_STREAM_MAX_K: usize = usize::MAX;
    const X_LAYOUT: XLayout = XLayout::Interleaved;
    const PREFETCH: Option<usize> = Some(L1_AHEAD);

    #[inline(always)]
    fn row_dot(self, x: &[f32], w: &[f32]) -> f32 {
        // SAFETY: an `Avx512` exists only where the CPU has AVX-512F.
        unsafe { row_dot(self, x, w) }
    }
}

streaming::entry_points!(Avx512, "avx512f");
