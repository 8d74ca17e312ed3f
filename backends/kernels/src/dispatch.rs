//! Choosing a kernel: the instruction set this CPU offers, and where batches stop being
//! bandwidth-bound enough for the streaming kernels to beat a packed GEMM.

/// A kernel family `linear_f32` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// The register-blocked streaming kernels (weights read once), on this instruction set.
    Small(Isa),
    /// The packed AVX-512 GEMM.
    Packed,
    /// The `gemm` crate.
    Gemm,
}

impl Path {
    /// Every path, the streaming ones first.
    pub const ALL: [Path; 5] = [
        Path::Small(Isa::Portable),
        Path::Small(Isa::Avx2),
        Path::Small(Isa::Avx512),
        Path::Packed,
        Path::Gemm,
    ];

    /// Whether this CPU and build can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Path::Small(isa) => isa.is_supported(),
            Path::Packed => cfg!(target_arch = "x86_64") && Isa::Avx512.is_supported(),
            Path::Gemm => true,
        }
    }
}

// The thresholds below are where the arithmetic-bound kernel started to beat the streaming one
// with both forced on the SmolLM-135M and TinyLlama-1.1B shapes: below them both are near the
// memory bound and the streaming kernel (weights read once) is level or ahead. The
// measurements are in docs/perf/2026-12-kernels.md.

/// Batch size from which the packed AVX-512 GEMM beats the streaming AVX-512 kernel (it led at
/// m = 32 and above on every shape measured).
const PACKED_MIN_M: usize = 32;
/// Batch size from which the `gemm` crate (AVX2 kernels) beats the streaming AVX2 kernel
/// (about even at 16, gemm ahead from 24 on).
const GEMM_MIN_M_AVX2: usize = 16;
/// Batch size from which the `gemm` crate beats the portable kernel. Not measured on a CPU
/// without AVX2; once arithmetic dominates, gemm's hand-written SIMD outpaces plain Rust.
const GEMM_MIN_M_PORTABLE: usize = 4;

/// The fastest path for `m` input rows on `isa`.
pub fn choose(isa: Isa, m: usize) -> Path {
    match isa {
        Isa::Avx512 if m >= PACKED_MIN_M => Path::Packed,
        Isa::Avx2 if m >= GEMM_MIN_M_AVX2 => Path::Gemm,
        Isa::Portable if m >= GEMM_MIN_M_PORTABLE => Path::Gemm,
        _ => Path::Small(isa),
    }
}

/// An instruction set a small-batch kernel is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust the compiler vectorises for the build target; runs everywhere.
    Portable,
    /// x86-64 AVX2 with FMA and F16C, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
}

impl Isa {
    /// Lower-case name, as results report it (`avx512`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Every instruction set, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The fastest instruction set this CPU supports.
    pub fn detect() -> Isa {
        // The std macro caches its CPUID probe, so detecting per call costs an atomic load.
        if Isa::Avx512.is_supported() {
            Isa::Avx512
        } else if Isa::Avx2.is_supported() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    /// Whether this CPU can run kernels compiled for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 => false,
        }
    }
}

/// Output rows per parallel task: equal shares, a whole number of them per thread (so no
/// thread idles while another finishes a larger share), up to [`TASKS_PER_THREAD`] per thread
/// so a stalled thread's share can be stolen, but none under [`MIN_TASK_MACS`]; a multiple of 8
/// so every task runs whole register blocks.
pub(crate) fn rows_per_task(m: usize, k: usize, n: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    let macs = m.max(1).saturating_mul(k.max(1)).saturating_mul(n);
    let affordable = (macs / MIN_TASK_MACS).max(1);
    let mut tasks = (threads * TASKS_PER_THREAD).min(affordable);
    if tasks > threads {
        tasks -= tasks % threads;
    }
    n.div_ceil(tasks).next_multiple_of(8).max(8)
}

/// The least work worth a task of its own: 64 K multiply-adds, which in a decode step is 256 KiB
/// of weights, tens of microseconds of streaming against a few for handing a task to a thread.
const MIN_TASK_MACS: usize = 1 << 16;
/// Tasks per thread when the work allows.
const TASKS_PER_THREAD: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_isa_is_supported() {
        assert!(Isa::detect().is_supported());
        assert!(Isa::Portable.is_supported());
    }

    #[test]
    fn decode_streams_and_prefill_multiplies() {
        for isa in Isa::ALL {
            assert_eq!(choose(isa, 1), Path::Small(isa));
            assert_ne!(choose(isa, 256), Path::Small(isa));
        }
    }

    #[test]
    fn tasks_are_whole_blocks_equal_shares_and_not_tiny() {
        // Decode and prefill shapes of SmolLM-135M and TinyLlama-1.1B (fused q/k/v, o, gate/up,
        // down, LM head) and some degenerate ones.
        for (m, k, n, t) in [
            (1, 576, 960, 2),
            (1, 576, 576, 2),
            (1, 576, 3072, 2),
            (1, 1536, 576, 2),
            (1, 576, 49152, 2),
            (8, 2048, 2560, 2),
            (1, 5632, 2048, 2),
            (1, 2048, 32000, 2),
            (1, 7, 3, 1),
            (3, 1, 1000, 64),
        ] {
            let rows = rows_per_task(m, k, n, t);
            let tasks = n.div_ceil(rows);
            assert_eq!(rows % 8, 0);
            assert!(
                tasks == 1 || rows * m * k >= MIN_TASK_MACS / 2,
                "{m}×{k}×{n}: {rows}"
            );
            if n * m * k >= 2 * t * MIN_TASK_MACS && n >= 8 * t * TASKS_PER_THREAD {
                assert_eq!(tasks % t, 0, "{m}×{k}×{n} on {t}: {tasks} tasks of {rows}");
            }
        }
        // A large GEMV is split into several tasks per thread.
        assert!(5632 / rows_per_task(1, 2048, 5632, 2) >= 4);
    }
}
