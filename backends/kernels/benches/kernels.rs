//! Linear-layer kernels against burn-flex's matmul on the shapes of small Llama models.
//!
//! Weights are cold, as in a real forward pass where every layer's weights were evicted by the
//! layers before it: each repetition uses the next of several copies whose total is well above the
//! L3 cache, on huge pages as the model's are. Times are the best of several repetitions. GB/s
//! counts weight bytes read once (the floor any kernel must move); GFLOP/s counts 2·m·k·n; `med
//! GF/s` is the median call's rate, nearer what a model's forward pass sees than the best.
//! `GF/cpu-s` divides by the best CPU time per pool thread instead of wall time: on a VM whose
//! neighbours steal the vCPUs it is the steadier figure for comparing kernels (see
//! [`best_of_both`]); `-` where every call was too short for the scheduler's per-thread figures to
//! advance.
//!
//! `cargo bench -p llmeff-backends --bench kernels`. Environment: `KERNELS_SHAPES=2048x5632,…`
//! (k×n) and `KERNELS_M=1,8,…` pick the table's rows (an empty list skips it); `KERNELS_FLEX=0`
//! skips burn-flex, `KERNELS_FORCED=0` the per-path rows, `KERNELS_SWEEP=0` the threshold sweep
//! (`KERNELS_SWEEP_SHAPES`, `KERNELS_SWEEP_M`, `KERNELS_SWEEP_PATHS` set its rows and
//! columns), `KERNELS_MEMORY=0` the memory ceiling; `KERNELS_HOT=1` reuses one weight copy
//! (cache-resident when it fits in L3).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorData};
use burn_flex::{Flex, FlexDevice};
use kernels::huge_pages::WeightBuffer;
use kernels::{Isa, Matrix, MatrixMut, Path};

/// Weight bytes each shape's copies add up to: several times a large server L3 (105 MiB here).
const COLD_BYTES: usize = 400 << 20;
/// Repetitions per measurement, and the time after which fewer suffice.
const MIN_REPS: usize = 3;
const MAX_REPS: usize = 20;
const TIME_BUDGET: Duration = Duration::from_millis(600);

fn main() {
    let sweep = flag("KERNELS_SWEEP", true);
    let flex = flag("KERNELS_FLEX", true);
    let forced = flag("KERNELS_FORCED", true);
    let shapes = shape_list(
        "KERNELS_SHAPES",
        "2048x5632,5632x2048,2048x32000,576x1536,576x49152",
    );
    let ms = list("KERNELS_M", "1,8,32,256")
        .iter()
        .filter_map(|m| m.parse().ok())
        .collect::<Vec<usize>>();
    let isa = Isa::detect();
    let paths: Vec<String> = [1, 8, 16, 32, 256]
        .iter()
        .map(|&m| format!("m={m}: {:?}", kernels::choose(isa, m)))
        .collect();
    println!(
        "threads {}, isa {isa:?}; {}",
        rayon::current_num_threads(),
        paths.join(", ")
    );
    if flag("KERNELS_MEMORY", true) {
        memory_rows();
    }
    println!(
        "\n{:>5} {:>6} {:>4} | {:>9} {:>7} {:>8} {:>8} {:>8} {:>6} | {:>9} {:>7} {:>8} | {:>7}",
        "k",
        "n",
        "m",
        "ours ms",
        "GB/s",
        "GFLOP/s",
        "med GF/s",
        "GF/cpu-s",
        "/m=1",
        "flex ms",
        "GB/s",
        "GFLOP/s",
        "speedup"
    );
    for &(k, n) in &shapes {
        let weights = Weights::new(k, n, flex);
        let mut single = None;
        for &m in &ms {
            let x = values(m * k, 7);
            let mut y = vec![0.0f32; m * n];
            let timing = weights.time_both(|w| linear(None, &x, m, k, w, n, &mut y));
            let ours = timing.wall;
            if m == 1 {
                single = Some(ours);
            }
            let bytes = (n * k * 4) as f64;
            let flops = 2.0 * (m * k * n) as f64;
            let mut line = format!(
                "{k:>5} {n:>6} {m:>4} | {:>9.3} {:>7.1} {:>8.1} {:>8.1} {:>8} {:>6} |",
                ours * 1e3,
                bytes / ours / 1e9,
                flops / ours / 1e9,
                flops / timing.median / 1e9,
                if timing.cpu.is_finite() {
                    format!("{:.1}", flops / timing.cpu / 1e9)
                } else {
                    "-".to_string()
                },
                single.map_or(String::new(), |t| format!("{:.2}×", ours / t)),
            );
            if flex {
                let t = weights.time_flex(&x, m);
                line += &format!(
                    " {:>9.3} {:>7.1} {:>8.1} | {:>6.2}×",
                    t * 1e3,
                    bytes / t / 1e9,
                    flops / t / 1e9,
                    t / ours
                );
            }
            println!("{line}");
        }
        if forced {
            forced_rows(&weights, k, n);
        }
    }
    if sweep {
        let sweep_ms = list("KERNELS_SWEEP_M", "4,8,12,16,24,32,48,64,128,256,512")
            .iter()
            .filter_map(|m| m.parse().ok())
            .collect::<Vec<usize>>();
        for (k, n) in shape_list("KERNELS_SWEEP_SHAPES", "2048x5632,576x1536") {
            threshold_sweep(k, n, &sweep_ms);
        }
    }
}

/// Whether the environment variable `name` is unset (then `default`) or not `0`.
fn flag(name: &str, default: bool) -> bool {
    std::env::var(name).map_or(default, |v| v != "0")
}

/// The `k×n` shapes listed in `name`, or in `default`.
fn shape_list(name: &str, default: &str) -> Vec<(usize, usize)> {
    list(name, default)
        .iter()
        .filter_map(|s| s.split_once('x'))
        .filter_map(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)))
        .collect()
}

/// The comma-separated list in `name`, or `default`'s.
fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

/// The memory system's ceiling: a parallel read of cold data (a sum) and a parallel copy.
fn memory_rows() {
    use rayon::prelude::*;
    let len = COLD_BYTES / 4;
    let src = values(len, 1);
    let mut dst = vec![0.0f32; len];
    let chunk = len.div_ceil(rayon::current_num_threads() * 4);
    let read = best_of(|| {
        let s: f32 = src
            .par_chunks(chunk)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                for v in c.chunks_exact(16) {
                    for (a, b) in acc.iter_mut().zip(v) {
                        *a += b;
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        black_box(s);
    });
    let copy = best_of(|| {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        black_box(&dst);
    });
    let bytes = (len * 4) as f64;
    println!(
        "memory: read {:.1} GB/s, copy {:.1} GB/s (read + write)",
        bytes / read / 1e9,
        2.0 * bytes / copy / 1e9
    );
}

/// Each streaming kernel, forced, at m = 1 and 8, and the gemm crate for comparison.
fn forced_rows(weights: &Weights, k: usize, n: usize) {
    for m in [1, 8] {
        let x = values(m * k, 7);
        let mut y = vec![0.0f32; m * n];
        let mut line = format!("{k:>5} {n:>6} {m:>4}   forced:");
        for path in Path::ALL {
            if !path.is_supported() || path == Path::Packed {
                continue;
            }
            let t = weights.time(|w| {
                linear(Some(path), &x, m, k, w, n, &mut y);
            });
            line += &format!(
                "  {} {:.3} ms {:.1} GB/s",
                name(path),
                t * 1e3,
                (n * k * 4) as f64 / t / 1e9
            );
        }
        println!("{line}");
    }
}

/// Every path that can win as m grows, to place the thresholds in `dispatch.rs`.
fn threshold_sweep(k: usize, n: usize, ms: &[usize]) {
    println!("\nthreshold sweep k = {k}, n = {n} (GFLOP/s, cold weights)");
    let only = list("KERNELS_SWEEP_PATHS", "Avx2,Avx512,Packed,Gemm");
    let paths: Vec<Path> = Path::ALL
        .into_iter()
        .filter(|p| p.is_supported() && only.contains(&name(*p)))
        .collect();
    let mut header = format!("{:>4}", "m");
    for path in &paths {
        header += &format!(" {:>10}", name(*path));
    }
    println!("{header}");
    let weights = Weights::new(k, n, false);
    for &m in ms {
        let x = values(m * k, 7);
        let mut y = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let mut line = format!("{m:>4}");
        for path in &paths {
            let t = weights.time(|w| {
                linear(Some(*path), &x, m, k, w, n, &mut y);
            });
            line += &format!(" {:>10.1}", flops / t / 1e9);
        }
        println!("{line}");
    }
}

/// `y = x · wᵀ` on `path` (the dispatcher's choice when `None`); the bench's shapes agree, so a
/// mismatch is a bug in the bench.
fn linear(path: Option<Path>, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, y: &mut [f32]) {
    let x = Matrix::new(x, m, k).expect("x is m × k");
    let w = Matrix::new(w, n, k).expect("w is n × k");
    let y = MatrixMut::new(y, m, n).expect("y is m × n");
    match path {
        None => kernels::linear_f32(x, w, y).expect("the shapes agree"),
        Some(path) => {
            kernels::linear_f32_with(path, x, w, y).expect("the shapes agree");
        }
    }
}

fn name(path: Path) -> String {
    match path {
        Path::Small(isa) => format!("{isa:?}"),
        other => format!("{other:?}"),
    }
}

/// Copies of one `[n, k]` weight (and the same values as burn's `[k, n]` layout), cycled so
/// every repetition reads weights that are not in cache.
struct Weights {
    k: usize,
    /// On huge pages where the kernel allows, as the model's weights are.
    copies: Vec<WeightBuffer>,
    flex: Vec<Tensor<Flex, 2>>,
}

impl Weights {
    fn new(k: usize, n: usize, with_flex: bool) -> Self {
        let hot = std::env::var("KERNELS_HOT").is_ok_and(|v| v == "1");
        let count = if hot {
            1
        } else {
            COLD_BYTES.div_ceil(n * k * 4).max(2)
        };
        let w = values(n * k, 3);
        let mut wt = vec![0.0f32; n * k];
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let flex = (0..count)
            .filter(|_| with_flex)
            .map(|_| Tensor::from_data(TensorData::new(wt.clone(), [k, n]), &FlexDevice))
            .collect();
        Weights {
            k,
            copies: (0..count).map(|_| WeightBuffer::from_slice(&w)).collect(),
            flex,
        }
    }

    fn time(&self, f: impl FnMut(&[f32]) + Send) -> f64 {
        self.time_both(f).wall
    }

    /// [`Weights::time`] with the CPU time per pool thread as well. The calls are made from a
    /// pool thread, as the model's forward pass makes them (`HostWeights::forward`): from
    /// outside the pool each call would also pay for waking a pool thread and handing over.
    fn time_both(&self, mut f: impl FnMut(&[f32]) + Send) -> Timing {
        let copies = &self.copies;
        let mut i = 0;
        rayon::scope(|_| {
            best_of_both(|| {
                f(black_box(&copies[i % copies.len()]));
                i += 1;
            })
        })
    }

    /// burn's `Linear` layout (`[in, out]`), as the model's dense layers hold it.
    fn time_flex(&self, x: &[f32], m: usize) -> f64 {
        let xt =
            Tensor::<Flex, 2>::from_data(TensorData::new(x.to_vec(), [m, self.k]), &FlexDevice);
        let mut i = 0;
        best_of(|| {
            let w = self.flex[i % self.flex.len()].clone();
            i += 1;
            // Reading the result back is what makes the product complete.
            let out = xt.clone().matmul(w).into_data();
            black_box(out);
        })
    }
}

/// Best wall time of `f` over a warm-up and up to `MAX_REPS` timed calls, in seconds.
fn best_of(f: impl FnMut()) -> f64 {
    best_of_both(f).wall
}

/// One measurement's best wall time, median wall time and best CPU time per pool thread, in
/// seconds.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    /// The typical call: inside a model each product runs once per step, not best of 20.
    median: f64,
    cpu: f64,
}

/// [`best_of`], also timing each repetition in CPU time: on a VM whose neighbours steal the
/// vCPUs (the `steal` of `/proc/stat`), wall times swing by tens of percent while CPU time
/// excludes the stolen share, so it is the steadier figure to compare two kernels by. It also
/// excludes a thread's idle wait at the end of a product, so it flatters unbalanced splits.
fn best_of_both(mut f: impl FnMut()) -> Timing {
    f();
    let threads = rayon::current_num_threads().max(1) as f64;
    let start = Instant::now();
    let mut best = Timing {
        wall: f64::INFINITY,
        median: f64::NAN,
        cpu: f64::INFINITY,
    };
    let mut walls = Vec::with_capacity(MAX_REPS);
    for rep in 0..MAX_REPS {
        let c = process_cpu_ns();
        let t = Instant::now();
        f();
        let wall = t.elapsed().as_secs_f64();
        best.wall = best.wall.min(wall);
        walls.push(wall);
        // A thread's figure only advances when it is scheduled or at a tick, so a call shorter
        // than a tick can read zero: that says nothing, and is not a best.
        if let (Some(c0), Some(c1)) = (c, process_cpu_ns())
            && c1 > c0
        {
            best.cpu = best.cpu.min((c1 - c0) as f64 / 1e9 / threads);
        }
        if rep + 1 >= MIN_REPS && start.elapsed() > TIME_BUDGET {
            break;
        }
    }
    walls.sort_by(f64::total_cmp);
    best.median = walls.get(walls.len() / 2).copied().unwrap_or(f64::NAN);
    best
}

/// This process's CPU time over all threads, in nanoseconds: the first field of each thread's
/// `/proc/self/task/*/schedstat` (time on a CPU; the kernel leaves hypervisor steal out of it).
/// `None` where there is no such file (not Linux, or schedstats compiled out).
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Deterministic values in [−1, 1).
fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}
