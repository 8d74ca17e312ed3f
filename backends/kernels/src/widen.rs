//! Widening narrow weight codes to f32 vectors, in two layers: [`Widen`] is what an instruction
//! set provides (one method per kind of code: halves, bfloat16s, signed bytes, fp8 bits,
//! nibbles), and [`Codes`] is what a weight format is made of those, independent of the
//! instruction set. The kernel body (`narrow`) is written once over both, so each (instruction
//! set, format) pair is an instantiation, not a copy.

use super::formats::GROUP;
use super::vector::Simd;

/// An instruction set's widening operations. Each `unsafe` method reads exactly
/// [`Simd::LANES`] codes from `p` (bytes: `LANES` for 8-bit codes, `2·LANES` for 16-bit ones,
/// `LANES` for a nibble vector, whose codes sit in either half of `LANES` bytes).
pub(crate) trait Widen: Simd {
    /// Integer lanes holding 4-bit codes (0 ..= 15), one per f32 lane.
    type Nibbles: Copy;

    /// Stores the `LANES` floats of `v` at `p`, which needs no alignment.
    ///
    /// # Safety
    /// `p .. p + LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Every lane `v`.
    fn splat(self, v: f32) -> Self::V;
    /// `a · b` per lane.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;

    /// IEEE halves to f32.
    ///
    /// # Safety
    /// `p .. p + 2·LANES` must be readable.
    unsafe fn halves(self, p: *const u8) -> Self::V;
    /// bfloat16s to f32 (exact: a bfloat16 is the top half of an f32).
    ///
    /// # Safety
    /// `p .. p + 2·LANES` must be readable.
    unsafe fn bfloat16s(self, p: *const u8) -> Self::V;
    /// Signed bytes to f32.
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn signed_bytes(self, p: *const u8) -> Self::V;
    /// E4M3 codes to f32 times `2^-120` (see `formats::fp8::widened_bits`).
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn fp8_bits(self, p: *const u8) -> Self::V;
    /// The low (`high` false) or high nibbles of `LANES` bytes.
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn nibbles(self, p: *const u8, high: bool) -> Self::Nibbles;
    /// Nibble codes as `code - 8` in f32 (symmetric int4).
    fn centred(self, codes: Self::Nibbles) -> Self::V;
    /// Nibble codes looked up in a 16-entry table.
    fn looked_up(self, codes: Self::Nibbles, table: &[f32; 16]) -> Self::V;
}

/// A weight format as the kernel body sees it: how a vector of its codes widens, and whether a
/// per-block scale multiplies it.
pub(crate) trait Codes {
    /// Whether each block of a row has a scale (else the codes are the values).
    const SCALED: bool;
    /// Bits per code.
    const BITS: usize;

    /// The `LANES` unscaled values of columns `c .. c + LANES` of the row whose codes start at
    /// `row`.
    ///
    /// # Safety
    /// `c` must be a multiple of `LANES` and `c + LANES` at most the row's padded length (a
    /// whole number of [`GROUP`]s), and the row's codes readable.
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V;
}

/// IEEE half precision.
pub(crate) struct HalfCodes;
/// bfloat16.
pub(crate) struct Bfloat16Codes;
/// Symmetric int8 with a block scale.
pub(crate) struct Int8Codes;
/// E4M3 with a block scale.
pub(crate) struct Fp8Codes;
/// Symmetric int4 with a block scale.
pub(crate) struct Int4Codes;
/// NormalFloat-4 with a block scale.
pub(crate) struct Nf4Codes;

impl Codes for HalfCodes {
    const SCALED: bool = false;
    const BITS: usize = 16;
    #[inline(always)]
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V {
        // SAFETY: the caller vouches for columns c .. c + LANES, 2 bytes each.
        unsafe { s.halves(row.add(2 * c)) }
    }
}

impl Codes for Bfloat16Codes {
    const SCALED: bool = false;
    const BITS: usize = 16;
    #[inline(always)]
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V {
        // SAFETY: as for halves.
        unsafe { s.bfloat16s(row.add(2 * c)) }
    }
}

impl Codes for Int8Codes {
    const SCALED: bool = true;
    const BITS: usize = 8;
    #[inline(always)]
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V {
        // SAFETY: the caller vouches for columns c .. c + LANES, a byte each.
        unsafe { s.signed_bytes(row.add(c)) }
    }
}

impl Codes for Fp8Codes {
    const SCALED: bool = true;
    const BITS: usize = 8;
    #[inline(always)]
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V {
        // SAFETY: as for int8.
        unsafe { s.fp8_bits(row.add(c)) }
    }
}

/// Where columns `c .. c + lanes` of a 4-bit row lie: the byte their nibbles start at and
/// whether they are the high nibbles (see [`GROUP`]'s packing).
#[inline(always)]
const fn nibble_place(c: usize) -> (usize, bool) {
    let within = c % GROUP;
    (
        c / GROUP * (GROUP / 2) + within % (GROUP / 2),
        within >= GROUP / 2,
    )
}

impl Codes for Int4Codes {
    const SCALED: bool = true;
    const BITS: usize = 4;
    #[inline(always)]
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V {
        let (byte, high) = nibble_place(c);
        // SAFETY: LANES divides GROUP / 2, so the LANES bytes from `byte` lie in c's group.
        s.centred(unsafe { s.nibbles(row.add(byte), high) })
    }
}

impl Codes for Nf4Codes {
    const SCALED: bool = true;
    const BITS: usize = 4;
    #[inline(always)]
    unsafe fn widen<S: Widen>(s: S, row: *const u8, c: usize) -> S::V {
        let (byte, high) = nibble_place(c);
        // SAFETY: as for int4.
        s.looked_up(
            unsafe { s.nibbles(row.add(byte), high) },
            &super::formats::NF4_CODES,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_are_found_where_the_packing_puts_them() {
        // AVX-512 reads 16 at a time, AVX2 8.
        assert_eq!(nibble_place(0), (0, false));
        assert_eq!(nibble_place(16), (0, true));
        assert_eq!(nibble_place(8), (8, false));
        assert_eq!(nibble_place(24), (8, true));
        assert_eq!(nibble_place(32), (16, false));
        assert_eq!(nibble_place(56), (24, true));
    }
}
