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
    __m128i, __m256i, __m512, __m512i, _mm_loadu_si128, _mm256_loadu_si256, _mm512_add_ps,
    _mm512_and_si512, _mm512_castsi512_ps, _mm512_cvtepi8_epi32, _mm512_cvtepi32_ps,
    _mm512_cvtepu8_epi32, _mm512_cvtepu16_epi32, _mm512_cvtph_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_or_si512, _mm512_permutexvar_ps,
    _mm512_reduce_add_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps, _mm512_slli_epi32,
    _mm512_srli_epi32, _mm512_storeu_ps, _mm512_sub_epi32,
};

use super::layout::{Panels, XLayout};
use super::streaming::{self, Streaming};
use super::vector::{Simd, vector_ops};
use super::widen::Widen;

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

impl Widen for Avx512 {
    type Nibbles = __m512i;

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the token; the caller vouches for LANES writable floats.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[inline(always)]
    fn splat(self, v: f32) -> __m512 {
        // SAFETY: the CPU has AVX-512F (the token).
        unsafe { _mm512_set1_ps(v) }
    }

    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: as for `splat`.
        unsafe { _mm512_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn halves(self, p: *const u8) -> __m512 {
        // SAFETY: AVX-512F (the token) converts halves; the caller vouches for 32 bytes.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())) }
    }

    #[inline(always)]
    unsafe fn bfloat16s(self, p: *const u8) -> __m512 {
        // SAFETY: as for `halves`; a bfloat16 shifted to the top of a lane is its f32.
        unsafe {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast::<__m256i>()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }

    #[inline(always)]
    unsafe fn signed_bytes(self, p: *const u8) -> __m512 {
        // SAFETY: the token; the caller vouches for 16 bytes.
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast::<__m128i>()))) }
    }

    #[inline(always)]
    unsafe fn fp8_bits(self, p: *const u8) -> __m512 {
        // SAFETY: as for `signed_bytes`; the rest computes on registers.
        unsafe {
            let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast::<__m128i>()));
            let sign = _mm512_slli_epi32::<24>(_mm512_and_si512(b, _mm512_set1_epi32(0x80)));
            let magnitude = _mm512_slli_epi32::<20>(_mm512_and_si512(b, _mm512_set1_epi32(0x7f)));
            _mm512_castsi512_ps(_mm512_or_si512(sign, magnitude))
        }
    }

    #[inline(always)]
    unsafe fn nibbles(self, p: *const u8, high: bool) -> __m512i {
        // SAFETY: as for `signed_bytes`.
        unsafe {
            let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast::<__m128i>()));
            let b = if high { _mm512_srli_epi32::<4>(b) } else { b };
            _mm512_and_si512(b, _mm512_set1_epi32(0x0f))
        }
    }

    #[inline(always)]
    fn centred(self, codes: __m512i) -> __m512 {
        // SAFETY: the token; registers only.
        unsafe { _mm512_cvtepi32_ps(_mm512_sub_epi32(codes, _mm512_set1_epi32(8))) }
    }

    #[inline(always)]
    fn looked_up(self, codes: __m512i, table: &[f32; 16]) -> __m512 {
        // SAFETY: the token; the table is 16 floats, one vector.
        unsafe { _mm512_permutexvar_ps(codes, _mm512_loadu_ps(table.as_ptr())) }
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
