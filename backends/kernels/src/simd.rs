//! Run-time instruction-set specialisation for plain-Rust kernels: one body, compiled three
//! times (AVX-512F, AVX2 + FMA, the build's baseline) and picked per call by [`super::Isa`].
//!
//! The loops are written with independent lanes so the compiler vectorises them at whatever
//! width the enabled features allow; the baseline x86-64 target only guarantees SSE2, which
//! would leave three quarters of an AVX-512 register idle.

/// Defines a function whose body is compiled for every [`super::Isa`] and dispatched at run
/// time. The body must be safe code; the dispatch only adds target features. The body may read
/// `FUSED`, a `bool` const that is true where fused multiply-add is an instruction (pass it on
/// to [`madd`]).
macro_rules! isa_specialised {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused)]
            fn body<const FUSED: bool>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                // AVX-512F implies FMA.
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { body::<true>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { body::<true>($($arg),*) }
                match $crate::Isa::detect() {
                    // SAFETY: `detect` reports an instruction set only when this CPU has it.
                    $crate::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::Isa::Portable => {}
                }
            }
            body::<{ cfg!(any(target_feature = "fma", target_arch = "aarch64")) }>($($arg),*)
        }
    };
}
pub(crate) use isa_specialised;

/// `a · b + c`: one fused instruction when `FUSED` (rounded once), else a multiply and an add
/// (where the CPU has no FMA, `mul_add` would be a library call per element).
#[inline(always)]
pub(crate) fn madd<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// Independent partial sums per reduction: one AVX-512 register's worth.
pub(crate) const LANES: usize = 16;

/// `a · b` over the common length: [`LANES`] independent partial sums, then 8, then single
/// products, each reduced as a tree, so both long rows and attention's short heads (8–128
/// values) vectorise without a chain of dependent adds.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += x * y;
        }
    }
    let mut acc8 = [0.0f32; 8];
    let (ca8, cb8) = (ra.chunks_exact(8), rb.chunks_exact(8));
    let tail: f32 = ca8
        .remainder()
        .iter()
        .zip(cb8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca8.zip(cb8) {
        for ((s, x), y) in acc8.iter_mut().zip(xa).zip(xb) {
            *s += x * y;
        }
    }
    tree_sum16(acc) + tree_sum8(acc8) + tail
}

/// `Σ a²`, vectorisable like [`dot`].
#[inline(always)]
pub(crate) fn sum_of_squares(a: &[f32]) -> f32 {
    dot(a, a)
}

/// `Σ a` with [`LANES`] independent partial sums.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (s, x) in acc.iter_mut().zip(c) {
            *s += x;
        }
    }
    tree_sum16(acc) + tail
}

/// The largest value of `a` (−inf when empty; NaNs are ignored, as `f32::max` does), with
/// [`LANES`] independent running maxima.
#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    for c in chunks {
        for (s, x) in acc.iter_mut().zip(c) {
            *s = s.max(*x);
        }
    }
    acc.iter().fold(tail, |m, x| m.max(*x))
}

/// Sum of 16 partial sums by halving, which compiles to a few shuffles and adds instead of 15
/// dependent scalar adds.
#[inline(always)]
fn tree_sum16(mut v: [f32; 16]) -> f32 {
    for i in 0..8 {
        v[i] += v[i + 8];
    }
    let mut h = [0.0f32; 8];
    h.copy_from_slice(&v[..8]);
    tree_sum8(h)
}

/// Sum of 8 partial sums by halving.
#[inline(always)]
fn tree_sum8(mut v: [f32; 8]) -> f32 {
    for i in 0..4 {
        v[i] += v[i + 4];
    }
    for i in 0..2 {
        v[i] += v[i + 2];
    }
    v[0] + v[1]
}

/// `eˣ` to about 2 ulp for finite `x`, in branch-free arithmetic the compiler vectorises
/// (libm's `expf` is a call per element). Cephes' `expf`: `x = n·ln2 + r` with `|r| ≤ ln2/2`,
/// a degree-6 polynomial for `eʳ`, and `2ⁿ` built in the exponent bits. Inputs are clamped to
/// the finite range: below it the result is the smallest normal (callers only ever add it to
/// 1 or weigh it against the maximum, where it vanishes), above it the largest finite value.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so `n·LN2_HI` is exact for |n| < 2⁹.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer in the low mantissa bits, without a
    // rounding instruction SSE2 lacks.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // Near 1.5·2²³ one ulp is 1, so `t`'s bits are the offset's bits plus n; moving n onto the
    // exponent bias gives the bits of 2ⁿ.
    let bits = (t.to_bits().wrapping_sub(ROUND.to_bits()) as i32).wrapping_add(127) << 23;
    er * f32::from_bits(bits as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_finite_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let got = f64::from(exp(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        // 2 ulp of f32 is 2.4e-7 relative.
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn reductions_match_sequential_sums() {
        // Lengths that exercise every combination of the 16-, 8- and 1-wide parts.
        for len in [0, 1, 7, 8, 9, 16, 24, 31, 37, 64, 128] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.25 - 3.0).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 - i as f32 * 0.5).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-3, "len {len}");
            let sq: f64 = a.iter().map(|x| f64::from(x * x)).sum();
            assert!(
                (f64::from(sum_of_squares(&a)) - sq).abs() < 1e-2,
                "len {len}"
            );
        }
    }

    #[test]
    fn sums_and_maxima_cover_every_length() {
        for len in [0usize, 1, 15, 16, 17, 40] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 7.3) % 11.0 - 5.0).collect();
            let want: f64 = a.iter().map(|x| f64::from(*x)).sum();
            assert!((f64::from(sum(&a)) - want).abs() < 1e-4, "len {len}");
            let m = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), m, "len {len}");
        }
    }

    isa_specialised! {
        fn doubled(x: &[f32], out: &mut [f32]) {
            for (o, v) in out.iter_mut().zip(x) {
                *o = 2.0 * v;
            }
        }
    }

    #[test]
    fn specialised_functions_run() {
        let mut out = [0.0; 3];
        doubled(&[1.0, 2.0, 3.0], &mut out);
        assert_eq!(out, [2.0, 4.0, 6.0]);
    }
}
