//! The linear-layer kernels against a naive f64-accumulated reference, on every path this CPU
//! can run (each streaming kernel's instruction set, the packed AVX-512 GEMM and the gemm crate,
//! each forced) and through the dispatcher.
//!
//! A path this CPU lacks is skipped, and said so. `LLMEFF_REQUIRE_ISAS` turns such a skip into
//! a failure: a comma list of instruction sets (`Isa::name`: `avx2`, `avx512`, `portable`) the
//! run must exercise, e.g. `LLMEFF_REQUIRE_ISAS=avx2,avx512` on a CI machine known to have
//! both; `avx512` also requires the packed AVX-512 GEMM. Unset, the ISAs run are checked
//! against what CPUID reports (`the_isas_exercised_are_the_ones_the_cpu_reports`).

use kernels::{Isa, Matrix, MatrixMut, Path};

const MS: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33];
const KS: &[usize] = &[1, 7, 16, 64, 100, 576, 2048];
const NS: &[usize] = &[1, 3, 64, 65, 1000];

/// `kernels::linear_f32` on operands the test shapes to agree.
fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    let (x, w, y) = views(x, m, k, w, n, y);
    kernels::linear_f32(x, w, y).expect("the test's shapes agree");
}

/// `kernels::linear_f32_with`: whether `path` ran.
fn linear_with(
    path: Path,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    y: &mut [f32],
) -> bool {
    let (x, w, y) = views(x, m, k, w, n, y);
    kernels::linear_f32_with(path, x, w, y).expect("the test's shapes agree")
}

/// `kernels::linear_f32_into_new`.
fn linear_into_new(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let x = Matrix::new(x, m, k).expect("x is m × k");
    let w = Matrix::new(w, n, k).expect("w is n × k");
    kernels::linear_f32_into_new(x, w).expect("the test's shapes agree")
}

fn views<'a>(
    x: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [f32],
    n: usize,
    y: &'a mut [f32],
) -> (Matrix<'a>, Matrix<'a>, MatrixMut<'a>) {
    (
        Matrix::new(x, m, k).expect("x is m × k"),
        Matrix::new(w, n, k).expect("w is n × k"),
        MatrixMut::new(y, m, n).expect("y is m × n"),
    )
}

/// Deterministic values in [−1, 1), different per seed.
fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    (0..len)
        .map(|_| {
            // xorshift32: cheap, and not periodic in the shapes' strides.
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// The exact product (f64 sums) and a tolerance per output: f32 rounding grows like √k and
/// with the size of the terms (Σ|x·w|, which bounds it even when the terms cancel).
struct Reference {
    y: Vec<f64>,
    tol: Vec<f64>,
}

impl Reference {
    fn new(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Self {
        let mut y = vec![0.0; m * n];
        let mut tol = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let (xr, wr) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
                let (mut sum, mut magnitude) = (0.0f64, 0.0f64);
                for (a, b) in xr.iter().zip(wr) {
                    let t = f64::from(*a) * f64::from(*b);
                    sum += t;
                    magnitude += t.abs();
                }
                y[i * n + j] = sum;
                tol[i * n + j] = 1e-5 * (k as f64).sqrt().max(1.0) * magnitude.max(1e-30);
            }
        }
        Reference { y, tol }
    }

    fn check(&self, what: &str, got: &[f32], m: usize, k: usize, n: usize) {
        assert_eq!(got.len(), self.y.len(), "{what} m={m} k={k} n={n}: length");
        for (at, ((g, want), tol)) in got.iter().zip(&self.y).zip(&self.tol).enumerate() {
            let g = f64::from(*g);
            assert!(
                (g - want).abs() <= *tol,
                "{what} m={m} k={k} n={n} at ({}, {}): {g} vs {want} (tolerance {tol})",
                at / n,
                at % n
            );
        }
    }
}

fn check(what: &str, y: &[f32], x: &[f32], m: usize, k: usize, w: &[f32], n: usize) {
    Reference::new(x, m, k, w, n).check(what, y, m, k, n);
}

#[test]
fn every_path_matches_the_reference_on_many_shapes() {
    let mut skipped = Vec::new();
    for &m in MS {
        for &k in KS {
            for &n in NS {
                let x = values(m * k, (m * 31 + k) as u32);
                let w = values(n * k, (n * 17 + k) as u32 + 1);
                let r = Reference::new(&x, m, k, &w, n);
                for path in Path::ALL {
                    let mut y = vec![f32::NAN; m * n];
                    if linear_with(path, &x, m, k, &w, n, &mut y) {
                        r.check(&format!("{path:?}"), &y, m, k, n);
                    } else if !skipped.contains(&path) {
                        assert!(!path.is_supported(), "{path:?} refused a supported run");
                        skip(path);
                        skipped.push(path);
                    }
                }
                let mut y = vec![f32::NAN; m * n];
                linear(&x, m, k, &w, n, &mut y);
                r.check("linear_f32", &y, m, k, n);
                assert_eq!(linear_into_new(&x, m, k, &w, n), y);
            }
        }
    }
}

#[test]
fn every_tail_length_is_exact() {
    // k from 1 to 40 covers every remainder modulo 8 and 16 on either side of a full vector;
    // n up to 9 covers every remainder of the row groups.
    for path in supported() {
        for k in 1..=40 {
            for n in 1..=9 {
                for m in 1..=9 {
                    let x = values(m * k, k as u32);
                    let w = values(n * k, 100 + n as u32);
                    let mut y = vec![f32::NAN; m * n];
                    assert!(linear_with(path, &x, m, k, &w, n, &mut y));
                    check(&format!("{path:?} tail"), &y, &x, m, k, &w, n);
                }
            }
        }
    }
}

#[test]
fn many_threads_split_large_outputs_correctly() {
    // More output rows than one task takes, across a pool wider than the machine, so tasks are
    // split, stolen and run concurrently.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(5)
        .build()
        .unwrap();
    pool.install(|| {
        for m in [1, 3, 8, 9, 20] {
            let (k, n) = (130, 4099);
            let x = values(m * k, 5);
            let w = values(n * k, 6);
            for path in supported() {
                let mut y = vec![f32::NAN; m * n];
                assert!(linear_with(path, &x, m, k, &w, n, &mut y));
                check(&format!("{path:?} pooled"), &y, &x, m, k, &w, n);
            }
            let mut y = vec![f32::NAN; m * n];
            linear(&x, m, k, &w, n, &mut y);
            check("pooled", &y, &x, m, k, &w, n);
        }
    });
}

#[test]
fn misaligned_slices_are_fine() {
    // Sub-slices starting one float in, so no load is 64-byte aligned.
    let (m, k, n) = (13, 37, 70);
    let xs = values(m * k + 1, 8);
    let ws = values(n * k + 1, 9);
    let (x, w) = (&xs[1..], &ws[1..]);
    for path in supported() {
        let mut y = vec![f32::NAN; m * n + 1];
        assert!(linear_with(path, x, m, k, w, n, &mut y[1..]));
        check(&format!("{path:?} misaligned"), &y[1..], x, m, k, w, n);
    }
}

#[test]
fn depth_blocks_accumulate() {
    // The packed GEMM works in depth blocks of 256: depths just around multiples of it, with
    // row tiles of 12 and column panels of 32 both partial.
    for k in [255, 256, 257, 511, 513, 1000] {
        let (m, n) = (25, 70);
        let x = values(m * k, 10);
        let w = values(n * k, 11);
        for path in supported() {
            let mut y = vec![f32::NAN; m * n];
            assert!(linear_with(path, &x, m, k, &w, n, &mut y));
            check(&format!("{path:?} depth"), &y, &x, m, k, &w, n);
        }
    }
}

#[test]
fn degenerate_shapes() {
    // k = 0: an empty sum is zero.
    let mut y = vec![f32::NAN; 6];
    linear(&[], 2, 0, &[], 3, &mut y);
    assert_eq!(y, vec![0.0; 6]);
    let mut y = vec![f32::NAN; 40];
    linear(&[], 20, 0, &[], 2, &mut y);
    assert_eq!(y, vec![0.0; 40]);
    for path in supported() {
        for m in [1, 9, 70] {
            let mut y = vec![f32::NAN; m * 3];
            assert!(linear_with(path, &[], m, 0, &[], 3, &mut y));
            assert_eq!(y, vec![0.0; m * 3], "{path:?} m = {m}");
        }
    }
    // m = 0 or n = 0: nothing to write.
    linear(&[], 0, 4, &[1.0; 12], 3, &mut []);
    linear(&[1.0; 8], 2, 4, &[], 0, &mut []);
    assert!(linear_into_new(&[1.0; 4], 1, 4, &[], 0).is_empty());
}

#[test]
fn unsupported_path_is_refused_not_run() {
    for path in Path::ALL {
        let mut y = vec![7.0; 2];
        let ran = linear_with(path, &[1.0; 2], 1, 2, &[1.0; 4], 2, &mut y);
        assert_eq!(ran, path.is_supported());
        assert_eq!(y, if ran { vec![2.0; 2] } else { vec![7.0; 2] });
    }
}

/// The paths this CPU and build run, announcing the others.
fn supported() -> Vec<Path> {
    Path::ALL
        .into_iter()
        .filter(|path| {
            let ok = path.is_supported();
            if !ok {
                skip(*path);
            }
            ok
        })
        .collect()
}

/// Announces that `path` is skipped, failing when `LLMEFF_REQUIRE_ISAS` requires its
/// instruction set.
fn skip(path: Path) {
    let isa = match path {
        Path::Small(isa) => Some(isa),
        Path::Packed => Some(Isa::Avx512),
        Path::Gemm => None,
    };
    if let Some(isa) = isa.filter(|isa| required_isas().contains(isa)) {
        panic!(
            "{path:?} skipped: this CPU or build lacks {}, which LLMEFF_REQUIRE_ISAS requires",
            isa.name()
        );
    }
    eprintln!("skipping {path:?}: this CPU or build lacks it");
}

/// The instruction sets `LLMEFF_REQUIRE_ISAS` names (none when unset); a name that is not an
/// instruction set fails the test, so a typo cannot require nothing.
fn required_isas() -> Vec<Isa> {
    let list = std::env::var("LLMEFF_REQUIRE_ISAS").unwrap_or_default();
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            Isa::ALL
                .into_iter()
                .find(|isa| isa.name() == name)
                .unwrap_or_else(|| {
                    panic!("LLMEFF_REQUIRE_ISAS names {name:?}: not avx2, avx512 or portable")
                })
        })
        .collect()
}

/// The instruction sets this CPU reports through CPUID, asked directly rather than through
/// `Isa`, slowest first.
fn reported_by_cpuid() -> Vec<Isa> {
    let mut isas = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            isas.push(Isa::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            isas.push(Isa::Avx512);
        }
    }
    isas
}

#[test]
fn the_isas_exercised_are_the_ones_the_cpu_reports() {
    let reported = reported_by_cpuid();
    let exercised: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|isa| supported().contains(&Path::Small(*isa)))
        .collect();
    eprintln!(
        "instruction sets exercised: {:?}",
        exercised.iter().map(|isa| isa.name()).collect::<Vec<_>>()
    );
    assert_eq!(
        exercised, reported,
        "the kernels skip an ISA the CPU has, or the reverse"
    );
    assert_eq!(Some(&Isa::detect()), reported.last());
    assert_eq!(
        supported().contains(&Path::Packed),
        reported.contains(&Isa::Avx512),
        "the packed GEMM runs exactly where AVX-512 does"
    );
    for isa in required_isas() {
        assert!(
            exercised.contains(&isa),
            "LLMEFF_REQUIRE_ISAS requires {}, which this CPU lacks (it reports {reported:?})",
            isa.name()
        );
    }
}
