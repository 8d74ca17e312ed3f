//! AVX2 + FMA: 8 lanes, 16 vector registers. The [`Simd`] operations over `__m256` and the
//! streaming kernel (`streaming`) compiled for them.
//!
//! The same scheme as on AVX-512 with half the lanes and half the registers, so fewer weight
//! rows per group. Decisions: x in rows (it is interleaved only for AVX-512, whose 16-float
//! chunks the layout follows); no software prefetch (only measured worth it on AVX-512); a
//! single input row reads one weight row at a time up to [`ONE_STREAM_MAX_K`] columns, because
//! short rows end before the hardware prefetcher has picked up several streams while long ones
//! gain from 4 in flight. The measurements are in `docs/perf/2026-12-kernels.md`.

use std::arch::x86_64::{
    __m128i, __m256, __m256i, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_loadl_epi64,
    _mm_loadu_si128, _mm_movehdup_ps, _mm_movehl_ps, _mm256_add_ps, _mm256_and_si256,
    _mm256_blendv_ps, _mm256_castps256_ps128, _mm256_castsi256_ps, _mm256_cmpgt_epi32,
    _mm256_cvtepi8_epi32, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_cvtepu16_epi32,
    _mm256_cvtph_ps, _mm256_extractf128_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_maskload_ps,
    _mm256_mul_ps, _mm256_or_si256, _mm256_permutevar8x32_ps, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setr_epi32, _mm256_setzero_ps, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_ps,
    _mm256_sub_epi32,
};

use super::layout::{Panels, XLayout};
use super::streaming::{self, Streaming};
use super::vector::{Simd, vector_ops};
use super::widen::Widen;

/// Proof that this CPU runs AVX2 and FMA: made only by [`Avx2::detect`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2(());

impl Avx2 {
    /// The token, where this CPU has AVX2, FMA and F16C (every CPU with AVX2 has F16C; the
    /// half-precision weights need it).
    pub(crate) fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        .then_some(Avx2(()))
    }
}

impl Simd for Avx2 {
    /// A lane is loaded where its element is negative.
    type Mask = __m256i;
    const REGISTERS: usize = 16;

    vector_ops!(__m256: _mm256_setzero_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_loadu_ps);

    #[inline(always)]
    unsafe fn load_masked(self, p: *const f32, mask: __m256i) -> __m256 {
        // SAFETY: the CPU has AVX2 (the token) and the caller vouches for the enabled lanes.
        unsafe { _mm256_maskload_ps(p, mask) }
    }

    #[inline(always)]
    fn tail_mask(self, n: usize) -> __m256i {
        // SAFETY: the CPU has AVX2 (the token); these only compute on registers.
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane)
        }
    }

    /// Halves, then quarters, then the last pair: three adds instead of seven.
    #[inline(always)]
    fn reduce(self, v: __m256) -> f32 {
        // SAFETY: the CPU has AVX2 (the token); these only compute on registers.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }
    }
}

/// Longest rows one input row reads one whole weight row at a time; longer ones go 4 side by
/// side (measured on a Zen 4 VM with AVX2 forced, see the note).
impl Widen for Avx2 {
    type Nibbles = __m256i;

    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the token; the caller vouches for LANES writable floats.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[inline(always)]
    fn splat(self, v: f32) -> __m256 {
        // SAFETY: the CPU has AVX2 (the token).
        unsafe { _mm256_set1_ps(v) }
    }

    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: as for `splat`.
        unsafe { _mm256_mul_ps(a, b) }
    }

    #[inline(always)]
    unsafe fn halves(self, p: *const u8) -> __m256 {
        // SAFETY: the token includes F16C; the caller vouches for 16 bytes.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
    }

    #[inline(always)]
    unsafe fn bfloat16s(self, p: *const u8) -> __m256 {
        // SAFETY: the token; the caller vouches for 16 bytes.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast::<__m128i>()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }

    #[inline(always)]
    unsafe fn signed_bytes(self, p: *const u8) -> __m256 {
        // SAFETY: the token; the caller vouches for 8 bytes.
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast::<__m128i>()))) }
    }

    #[inline(always)]
    unsafe fn fp8_bits(self, p: *const u8) -> __m256 {
        // SAFETY: as for `signed_bytes`; the rest computes on registers.
        unsafe {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast::<__m128i>()));
            let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(b, _mm256_set1_epi32(0x80)));
            let magnitude = _mm256_slli_epi32::<20>(_mm256_and_si256(b, _mm256_set1_epi32(0x7f)));
            _mm256_castsi256_ps(_mm256_or_si256(sign, magnitude))
        }
    }

    #[inline(always)]
    unsafe fn nibbles(self, p: *const u8, high: bool) -> __m256i {
        // SAFETY: as for `signed_bytes`.
        unsafe {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast::<__m128i>()));
            let b = if high { _mm256_srli_epi32::<4>(b) } else { b };
            _mm256_and_si256(b, _mm256_set1_epi32(0x0f))
        }
    }

    #[inline(always)]
    fn centred(self, codes: __m256i) -> __m256 {
        // SAFETY: the token; registers only.
        unsafe { _mm256_cvtepi32_ps(_mm256_sub_epi32(codes, _mm256_set1_epi32(8))) }
    }

    /// Two 8-entry permutes (each uses the code's low 3 bits) and a blend on bit 3, moved to
    /// the sign bit `blendv` reads.
    #[inline(always)]
    fn looked_up(self, codes: __m256i, table: &[f32; 16]) -> __m256 {
        // SAFETY: the token; the table is 16 floats, two vectors.
        unsafe {
            let low = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr()), codes);
            let high = _mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr().add(8)), codes);
            _mm256_blendv_ps(
                low,
                high,
                _mm256_castsi256_ps(_mm256_slli_epi32::<28>(codes)),
            )
        }
    }
}

const ONE_STREAM_MAX_K: usize = 2048;

impl Streaming for Avx2 {
    const ONE_STREAM_MAX_K: usize = ONE_STREAM_MAX_K;
    const X_LAYOUT: XLayout = XLayout::Rows;
    const PREFETCH: Option<usize> = None;

    #[inline(always)]
    fn row_dot(self, x: &[f32], w: &[f32]) -> f32 {
        // SAFETY: an `Avx2` exists only where the CPU has AVX2 and FMA.
        unsafe { row_dot(self, x, w) }
    }
}

streaming::entry_points!(Avx2, "avx2,fma,f16c");
