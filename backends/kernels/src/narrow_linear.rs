//! Linear layers over weights in a narrow format ([`CodedMatrix`]): `y = x · wᵀ` with the
//! weights widened in registers.
//!
//! Small batches (decode) run the `narrow` kernel, each weight row streamed from memory once per
//! call at its own width, split across rayon's current pool as the f32 kernel splits (`gemv`).
//! Large batches (prefill) are bound by arithmetic, not by reading weights: each task widens a
//! chunk of weight rows into an f32 buffer once and multiplies it on the f32 GEMM, so a prompt
//! costs about what it costs in f32. Either way the result is the f32 product with the
//! dequantized weights (activations stay f32), up to summation order.

use std::cell::Cell;

use rayon::prelude::*;

use super::buffers::{keep_buffer, line_aligned, take_buffer};
use super::dispatch::{Isa, Path, choose, rows_per_task};
use super::formats::{CodedMatrix, WeightFormat};
use super::gemv::column_pieces;
use super::layout::MAX_BLOCK_M;
use super::matrix::{self, Dimension, Matrix, MatrixMut, ShapeError};
use super::narrow::CodedPanels;
use super::q8::{self, Int4Q8, Int8Q8, Q8Rows, Q8Weights};
use super::widen::{Bfloat16Codes, Codes, Fp8Codes, HalfCodes, Int4Codes, Int8Codes, Nf4Codes};
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx2::Avx2, avx512, avx512::Avx512, q8::vnni::Vnni};

thread_local! {
    /// Input rows padded to the weights' padded width, for calls from this thread.
    static PADDED_X: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Activations quantized for the integer kernels (`q8`) by calls from this thread.
    static Q8_X: Cell<Q8Rows> = Cell::new(Q8Rows::default());
    /// Weight rows widened to f32 by a large-batch task on this thread.
    static WIDENED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Bytes of codes a task reuses across blocks of [`MAX_BLOCK_M`] input rows when `m` exceeds
/// one block (as `gemv`'s tile): about half a core's L2.
const TILE_BYTES: usize = 1 << 20;

/// f32 bytes of weight rows a large-batch task widens at once: small enough to stay in L2
/// while the GEMM reuses them across every input row.
const WIDEN_CHUNK_BYTES: usize = 1 << 19;

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` for weights stored in a narrow format, choosing the path from
/// the batch size and this CPU. The operands must agree; otherwise nothing is computed and the
/// error names the dimension.
pub fn linear_coded(x: Matrix<'_>, w: &CodedMatrix, y: MatrixMut<'_>) -> Result<(), ShapeError> {
    linear_coded_on(choose(Isa::detect(), x.rows()), x, w, y)
}

/// [`linear_coded`] forced onto `path` (for tests and benchmarks): a small-batch path this CPU
/// lacks runs the portable kernel; the large-batch paths fall back as `linear_f32`'s do.
#[doc(hidden)]
pub fn linear_coded_on(
    path: Path,
    x: Matrix<'_>,
    w: &CodedMatrix,
    mut y: MatrixMut<'_>,
) -> Result<(), ShapeError> {
    matrix::agree(Dimension::Depth, x.cols(), w.cols())?;
    matrix::agree(Dimension::OutputRows, x.rows(), y.rows())?;
    matrix::agree(Dimension::OutputCols, w.rows(), y.cols())?;
    let (m, k, n) = (x.rows(), x.cols(), w.rows());
    let y = y.data_mut();
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(path, Path::Small(Isa::Avx512) | Path::Packed)
        && q8::takes(w.format())
        && let Some(vnni) = Vnni::detect()
    {
        match w.format() {
            WeightFormat::Int4 { .. } => small_q8::<Int4Q8>(vnni, x.data(), m, w, y),
            _ => small_q8::<Int8Q8>(vnni, x.data(), m, w, y),
        }
        return Ok(());
    }
    match path {
        Path::Small(isa) => match w.format() {
            WeightFormat::F16 => small::<HalfCodes>(isa, x.data(), m, w, y),
            WeightFormat::Bf16 => small::<Bfloat16Codes>(isa, x.data(), m, w, y),
            WeightFormat::Int8 { .. } => small::<Int8Codes>(isa, x.data(), m, w, y),
            WeightFormat::Int4 { .. } => small::<Int4Codes>(isa, x.data(), m, w, y),
            WeightFormat::Nf4 { .. } => small::<Nf4Codes>(isa, x.data(), m, w, y),
            WeightFormat::Fp8 { .. } => small::<Fp8Codes>(isa, x.data(), m, w, y),
        },
        Path::Packed | Path::Gemm => large(path, x.data(), m, k, w, y),
    }
    Ok(())
}

/// The activations' format in [`linear_coded`]'s products with weights in `format` on this
/// CPU, for the `compute` column: `"q8/b32"` where the integer kernel runs (int8 and int4 with
/// power-of-two blocks on AVX-512 VNNI: activations rounded to int8 per 32 columns), else
/// `"f32"`.
pub fn activation_format(format: WeightFormat) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if q8::takes(format) && Isa::detect() == Isa::Avx512 && Vnni::detect().is_some() {
        return "q8/b32";
    }
    let _ = format;
    "f32"
}

/// Whether [`linear_coded`] hands an `m × k × n` product to rayon's pool as more than one task
/// (see `linear_splits`).
pub fn linear_coded_splits(format: WeightFormat, m: usize, k: usize, n: usize) -> bool {
    let threads = rayon::current_num_threads();
    if threads < 2 || m == 0 || k == 0 || n == 0 {
        return false;
    }
    if activation_format(format) != "f32" {
        return n > rows_per_task(m, k, n, threads);
    }
    match choose(Isa::detect(), m) {
        Path::Small(_) => n > rows_per_task(m, k, n, threads),
        Path::Packed | Path::Gemm => n > large_chunk_rows(k),
    }
}

/// The small-batch path for format `F`: x padded to the weights' width once, then tasks of
/// contiguous weight rows.
fn small<F: Codes>(isa: Isa, x: &[f32], m: usize, w: &CodedMatrix, y: &mut [f32]) {
    let (k, n, padded) = (w.cols(), w.rows(), w.padded_cols());
    let mut buffer = Vec::new();
    let x = if padded == k {
        x
    } else {
        buffer = take_buffer(&PADDED_X, m * padded);
        let out = line_aligned(&mut buffer, m * padded);
        for (row, o) in x.chunks_exact(k).zip(out.chunks_exact_mut(padded)) {
            o[..k].copy_from_slice(row);
            o[k..].fill(0.0);
        }
        &*out
    };
    let rows = rows_per_task(m, k, n, rayon::current_num_threads());
    let tasks = n.div_ceil(rows);
    let mut pieces = column_pieces(y, n, rows);
    let run = |t: usize, out: &mut Vec<&mut [f32]>| {
        let r0 = t * rows;
        let r1 = (r0 + rows).min(n);
        task::<F>(isa, x, m, w, r0, r1, out);
    };
    if tasks == 1 {
        run(0, &mut pieces[0]);
    } else {
        pieces
            .into_par_iter()
            .enumerate()
            .for_each(|(t, mut out)| run(t, &mut out));
    }
    if padded != k {
        keep_buffer(&PADDED_X, buffer);
    }
}

/// The small-batch path for int8 and int4 on AVX-512 VNNI (`q8`): the activations quantized
/// once on this thread, then tasks of contiguous weight rows.
#[cfg(target_arch = "x86_64")]
fn small_q8<W: Q8Weights>(vnni: Vnni, x: &[f32], m: usize, w: &CodedMatrix, y: &mut [f32]) {
    let (k, n) = (w.cols(), w.rows());
    let mut q = Q8_X.take();
    q.quantize::<W>(x, m, k, w.padded_cols());
    let rows = rows_per_task(m, k, n, rayon::current_num_threads());
    let tasks = n.div_ceil(rows);
    let mut pieces = column_pieces(y, n, rows);
    let row_bytes = w.row_bytes().max(1);
    let tile_rows = if m <= MAX_BLOCK_M {
        n
    } else {
        (TILE_BYTES / row_bytes).max(8)
    };
    let run = |t: usize, out: &mut Vec<&mut [f32]>| {
        let r0 = t * rows;
        let r1 = (r0 + rows).min(n);
        for t0 in (r0..r1).step_by(tile_rows) {
            let t1 = (t0 + tile_rows).min(r1);
            for i0 in (0..m).step_by(MAX_BLOCK_M) {
                let i1 = (i0 + MAX_BLOCK_M).min(m);
                // SAFETY: the token exists only where this CPU has AVX-512 F, BW, VL and
                // VNNI, all the kernel enables.
                unsafe {
                    q8::vnni::block::<W>(
                        vnni,
                        &q,
                        i0,
                        i1 - i0,
                        w,
                        t0,
                        t1,
                        &mut out[i0..i1],
                        t0 - r0,
                    )
                };
            }
        }
    };
    if tasks == 1 {
        run(0, &mut pieces[0]);
    } else {
        pieces
            .into_par_iter()
            .enumerate()
            .for_each(|(t, mut out)| run(t, &mut out));
    }
    Q8_X.set(q);
}

/// One task: weight rows `r0 .. r1` against all `m` input rows, into `out[i][0 .. r1 - r0]`.
fn task<F: Codes>(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &CodedMatrix,
    r0: usize,
    r1: usize,
    out: &mut [&mut [f32]],
) {
    let (padded, row_bytes, blocks) = (w.padded_cols(), w.row_bytes(), w.blocks_per_row());
    let block = w.format().block().unwrap_or(padded);
    let tile_rows = if m <= MAX_BLOCK_M {
        r1 - r0
    } else {
        (TILE_BYTES / row_bytes.max(1)).max(8)
    };
    for t0 in (r0..r1).step_by(tile_rows.max(1)) {
        let t1 = (t0 + tile_rows).min(r1);
        for i0 in (0..m).step_by(MAX_BLOCK_M) {
            let i1 = (i0 + MAX_BLOCK_M).min(m);
            let panels = CodedPanels {
                x: &x[i0 * padded..i1 * padded],
                mb: i1 - i0,
                codes: &w.codes()[t0 * row_bytes..t1 * row_bytes],
                row_bytes,
                scales: &w.scales()[t0 * blocks..t1 * blocks],
                blocks,
                block,
                rows: t1 - t0,
                padded,
            };
            block_on::<F>(isa, panels, &mut out[i0..i1], t0 - r0, w);
        }
    }
}

/// One kernel call on `isa`'s kernel, or the portable one where this CPU or build lacks it.
fn block_on<F: Codes>(
    isa: Isa,
    p: CodedPanels<'_>,
    out: &mut [&mut [f32]],
    col0: usize,
    w: &CodedMatrix,
) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => {
            if let Some(avx512) = Avx512::detect() {
                // SAFETY: the token exists only where this CPU has AVX-512F, all the kernel
                // enables.
                return unsafe { avx512::coded_block::<F>(avx512, p, out, col0) };
            }
        }
        Isa::Avx2 => {
            if let Some(avx2) = Avx2::detect() {
                // SAFETY: the token exists only where this CPU has AVX2, FMA and F16C, all the
                // kernel enables.
                return unsafe { avx2::coded_block::<F>(avx2, p, out, col0) };
            }
        }
        Isa::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    portable_block(p, out, col0, w.format());
}

/// The portable kernel: each weight row widened by the scalar reference, then dotted with every
/// input row.
fn portable_block(p: CodedPanels<'_>, out: &mut [&mut [f32]], col0: usize, format: WeightFormat) {
    let mut row = vec![0f32; p.padded];
    for r in 0..p.rows {
        let codes = &p.codes[r * p.row_bytes..(r + 1) * p.row_bytes];
        for (c, v) in row.iter_mut().enumerate() {
            let scale = format
                .block()
                .map_or(1.0, |b| p.scales[r * p.blocks + c / b]);
            *v = super::formats::code_value(format, codes, c) * scale;
        }
        for (o, xr) in out.iter_mut().zip(p.x.chunks_exact(p.padded).take(p.mb)) {
            o[col0 + r] = super::simd::dot(xr, &row);
        }
    }
}

/// Rows `r0 ..` of `w` widened to f32 into `out` (whole rows of `w.cols()` floats) on `isa`'s
/// kernel, or by the scalar reference where this CPU or build lacks it.
fn widen_rows(isa: Isa, w: &CodedMatrix, r0: usize, out: &mut [f32]) {
    match w.format() {
        WeightFormat::F16 => widen_rows_as::<HalfCodes>(isa, w, r0, out),
        WeightFormat::Bf16 => widen_rows_as::<Bfloat16Codes>(isa, w, r0, out),
        WeightFormat::Int8 { .. } => widen_rows_as::<Int8Codes>(isa, w, r0, out),
        WeightFormat::Int4 { .. } => widen_rows_as::<Int4Codes>(isa, w, r0, out),
        WeightFormat::Nf4 { .. } => widen_rows_as::<Nf4Codes>(isa, w, r0, out),
        WeightFormat::Fp8 { .. } => widen_rows_as::<Fp8Codes>(isa, w, r0, out),
    }
}

/// [`widen_rows`] for format `F`.
fn widen_rows_as<F: Codes>(isa: Isa, w: &CodedMatrix, r0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => {
            if let Some(avx512) = Avx512::detect() {
                // SAFETY: the token exists only where this CPU has AVX-512F, all the kernel
                // enables.
                return unsafe { avx512::widen_rows::<F>(avx512, w, r0, out) };
            }
        }
        Isa::Avx2 => {
            if let Some(avx2) = Avx2::detect() {
                // SAFETY: the token exists only where this CPU has AVX2, FMA and F16C, all the
                // kernel enables.
                return unsafe { avx2::widen_rows::<F>(avx2, w, r0, out) };
            }
        }
        Isa::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    let cols = w.cols();
    for (r, row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        w.dequantize_row(r0 + r, row);
    }
}

/// Weight rows a large-batch task widens at once.
fn large_chunk_rows(k: usize) -> usize {
    (WIDEN_CHUNK_BYTES / (k.max(1) * size_of::<f32>()))
        .next_multiple_of(16)
        .max(16)
}

/// The large-batch path: tasks of weight rows, each widened to f32 once and multiplied on
/// `path` (the f32 GEMMs) into its columns of `y`.
fn large(path: Path, x: &[f32], m: usize, k: usize, w: &CodedMatrix, y: &mut [f32]) {
    let n = w.rows();
    let isa = Isa::detect();
    let chunk = large_chunk_rows(k).min(n);
    let pieces = column_pieces(y, n, chunk);
    pieces.into_par_iter().enumerate().for_each(|(t, mut out)| {
        let r0 = t * chunk;
        let rows = chunk.min(n - r0);
        let mut widened = take_buffer(&WIDENED, rows * k + m * rows);
        let (weights, product) = widened.split_at_mut(rows * k);
        widen_rows(isa, w, r0, weights);
        let product = &mut product[..m * rows];
        super::run(path, x, m, k, weights, rows, product);
        for (o, p) in out.iter_mut().zip(product.chunks_exact(rows)) {
            o.copy_from_slice(p);
        }
        keep_buffer(&WIDENED, widened);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::values;

    const FORMATS: [WeightFormat; 6] = [
        WeightFormat::F16,
        WeightFormat::Bf16,
        WeightFormat::Int8 { block: 32 },
        WeightFormat::Int4 { block: 64 },
        WeightFormat::Nf4 { block: 32 },
        WeightFormat::Fp8 { block: 32 },
    ];

    /// Whether `linear_coded_on(path, ..)` takes the integer kernel for `format` here.
    fn integer_kernel(path: Path, format: WeightFormat) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(path, Path::Small(Isa::Avx512) | Path::Packed)
                && q8::takes(format)
                && Vnni::detect().is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (path, format);
            false
        }
    }

    /// The f32 widening kernels still run int8 and int4 where VNNI is missing: forced here so
    /// they stay tested on a machine that has it.
    #[test]
    fn the_widening_kernels_take_int8_and_int4_too() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            if !isa.is_supported() {
                continue;
            }
            for format in [
                WeightFormat::Int8 { block: 32 },
                WeightFormat::Int4 { block: 64 },
            ] {
                for (m, k, n) in [(1, 150, 9), (3, 33, 9), (8, 300, 29)] {
                    let x = values(m * k, 1);
                    let w = CodedMatrix::encode(format, &values(n * k, 2), n, k).unwrap();
                    let mut y = vec![f32::NAN; m * n];
                    match format {
                        WeightFormat::Int8 { .. } => small::<Int8Codes>(isa, &x, m, &w, &mut y),
                        _ => small::<Int4Codes>(isa, &x, m, &w, &mut y),
                    }
                    for (a, b) in y.iter().zip(&reference(&x, m, k, &w)) {
                        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{isa:?} {format}");
                    }
                }
            }
        }
    }

    /// f64 products of x with the dequantized weights: what every path must reproduce.
    fn reference(x: &[f32], m: usize, k: usize, w: &CodedMatrix) -> Vec<f32> {
        let dense = w.dequantize();
        let n = w.rows();
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(dense[j * k + p]))
                    .sum();
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    #[test]
    fn every_path_and_format_matches_the_dequantized_reference_on_ragged_shapes() {
        let mut tested = Vec::new();
        for path in Path::ALL {
            if !path.is_supported() {
                eprintln!("skipping {path:?}: not supported by this CPU or build");
                continue;
            }
            tested.push(path);
            for format in FORMATS {
                for (m, k, n) in [
                    (1, 17, 5),
                    (1, 200, 7),
                    (2, 160, 5),
                    (4, 1000, 6),
                    (1, 64, 3),
                    (1, 150, 9),
                    (2, 96, 13),
                    (3, 33, 9),
                    (8, 40, 130),
                    (5, 300, 29),
                    (11, 64, 70),
                    (40, 100, 37),
                ] {
                    let x = values(m * k, 1);
                    let dense = values(n * k, 2);
                    let w = CodedMatrix::encode(format, &dense, n, k).expect("valid format");
                    let mut y = vec![f32::NAN; m * n];
                    let xm = Matrix::new(&x, m, k).unwrap();
                    let ym = MatrixMut::new(&mut y, m, n).unwrap();
                    linear_coded_on(path, xm, &w, ym).unwrap();
                    let r = reference(&x, m, k, &w);
                    if integer_kernel(path, format) {
                        // Quantized activations: the integer path's own statement, and within
                        // the rounding bound of the f32 product.
                        for (at, (a, b)) in y.iter().zip(&r).enumerate() {
                            let (i, j) = (at / n, at % n);
                            let xi = &x[i * k..(i + 1) * k];
                            let exact = q8::reference(xi, &w, j);
                            let bound = q8::error_bound(xi, &w, j);
                            assert!(
                                (f64::from(*a) - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                                "{path:?} {format} {m}×{k}×{n}: {a} vs integer reference {exact}"
                            );
                            assert!(
                                f64::from((a - b).abs())
                                    <= bound + 1e-5 * (1.0 + f64::from(b.abs())),
                                "{path:?} {format} {m}×{k}×{n}: {a} vs {b}, bound {bound}"
                            );
                        }
                        continue;
                    }
                    for (a, b) in y.iter().zip(&r) {
                        assert!(
                            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                            "{path:?} {format} {m}×{k}×{n}: {a} vs {b}"
                        );
                    }
                }
            }
        }
        for m in [1, 8, 70] {
            let taken = choose(Isa::detect(), m);
            assert!(tested.contains(&taken), "{taken:?} (m = {m}) was skipped");
        }
    }

    #[test]
    fn every_instruction_set_widens_rows_as_the_reference_does() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            for format in FORMATS {
                for (n, k) in [(3, 17), (5, 64), (4, 100), (2, 300)] {
                    let w = CodedMatrix::encode(format, &values(n * k, 3), n, k).unwrap();
                    for r0 in [0, 1] {
                        let rows = n - r0;
                        let mut got = vec![f32::NAN; rows * k];
                        widen_rows(isa, &w, r0, &mut got);
                        let mut want = vec![0.0; rows * k];
                        for (r, row) in want.chunks_exact_mut(k).enumerate() {
                            w.dequantize_row(r0 + r, row);
                        }
                        assert_eq!(got, want, "{isa:?} {format} {n}×{k} from row {r0}");
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let w = CodedMatrix::encode(WeightFormat::Int8 { block: 32 }, &[0.5; 64], 2, 32).unwrap();
        let mut y = vec![7.0; 4];
        let x = [1.0; 6];
        let err = linear_coded(
            Matrix::new(&x, 2, 3).unwrap(),
            &w,
            MatrixMut::new(&mut y, 2, 2).unwrap(),
        );
        assert!(matches!(err, Err(ShapeError::Mismatch { .. })));
        assert_eq!(y, vec![7.0; 4]);
    }
}
