//! The vector operations the streaming kernel (`streaming`) is written over, so its body exists
//! once and is compiled per instruction set: [`Simd`] is implemented by a token type per
//! instruction set (`avx2::Avx2` over `__m256`, `avx512::Avx512` over `__m512`) that can only
//! be made where the CPU has it.
//!
//! Every method is `#[inline(always)]` and carries no target features of its own: inlined into
//! a `#[target_feature]` entry point, the intrinsics it calls are inlined there too and compile
//! to single instructions, as in a hand-written kernel.

/// One instruction set's `f32` vectors. A value of the implementing type proves this CPU runs
/// the instruction set, which is what makes the safe methods sound.
pub(crate) trait Simd: Copy {
    /// A vector of [`Simd::LANES`] floats.
    type V: Copy;
    /// Which lanes a masked load reads.
    type Mask: Copy;
    /// Floats per vector.
    const LANES: usize;
    /// Vector registers the instruction set has; the kernels size their register blocks by it.
    const REGISTERS: usize;

    /// All lanes zero.
    fn zero(self) -> Self::V;
    /// `a · b + c` per lane, rounded once.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b` per lane.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// The sum of the lanes.
    fn reduce(self, v: Self::V) -> f32;
    /// Lanes `0 .. n` enabled, for `1 ≤ n < LANES`.
    fn tail_mask(self, n: usize) -> Self::Mask;
    /// [`Simd::LANES`] floats from `p`, which need no alignment.
    ///
    /// # Safety
    /// `p .. p + LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// The lanes of `mask` from `p`, the others zero; masked-off lanes are not read and cannot
    /// fault.
    ///
    /// # Safety
    /// The enabled lanes' addresses must be readable.
    unsafe fn load_masked(self, p: *const f32, mask: Self::Mask) -> Self::V;
}

/// The parts of a [`Simd`] implementation that follow from the vector type and from intrinsics
/// taking the same operands on every instruction set: `V`, `LANES` (the floats the type holds),
/// and `zero`, `fma`, `add` and `load` from the intrinsics' names.
macro_rules! vector_ops {
    ($v:ty: $zero:ident, $fma:ident, $add:ident, $load:ident) => {
        type V = $v;
        const LANES: usize = size_of::<$v>() / size_of::<f32>();

        #[inline(always)]
        fn zero(self) -> Self::V {
            // SAFETY: `self` exists only where the CPU has this instruction set.
            unsafe { $zero() }
        }
        #[inline(always)]
        fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            // SAFETY: as for `zero`.
            unsafe { $fma(a, b, c) }
        }
        #[inline(always)]
        fn add(self, a: Self::V, b: Self::V) -> Self::V {
            // SAFETY: as for `zero`.
            unsafe { $add(a, b) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> Self::V {
            // SAFETY: the CPU has the instruction set (as for `zero`) and the caller vouches
            // for the addresses.
            unsafe { $load(p) }
        }
    };
}
pub(crate) use vector_ops;
