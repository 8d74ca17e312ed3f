//! Integer products for int8 and int4 weights: the activations are quantized to int8 per group
//! of 32 columns (llama.cpp's Q8_0: one f32 scale `max|x| / 127` per group, codes rounded to
//! nearest) and each group's products are summed exactly in int32 by AVX-512 VNNI
//! (`vpdpbusd`, 64 byte products per instruction), then scaled by the weight block's scale
//! times the activation group's and accumulated in f32.
//!
//! Widening int codes to f32 costs a conversion and a scale multiply per 16 weights on the
//! floating-point pipes, which left int8 and int4 decode bound by arithmetic, not by memory;
//! here the floating-point work is one conversion, one multiply and one FMA per 64 (int8) or
//! 128 (int4) weights. The price is the activations' rounding: `|x - x̂| ≤ max|x| / 254` per
//! element of a group, which bounds the error of each output ([`error_bound`]).
//!
//! The weights stay as [`CodedMatrix`] stores them. `vpdpbusd` multiplies unsigned by signed
//! bytes, so int4's nibbles (0 ..= 15, the value plus 8) go in as they are and int8's codes go
//! in plus 128 (the sign bit flipped); the `-8 · Σ x̂` or `-128 · Σ x̂` they owe is the
//! accumulator's starting value, computed with the activations. The one kernel body ([`Q8Weights`] names what differs per
//! format) exists for AVX-512 VNNI; elsewhere int8 and int4 run the f32 widening kernel
//! (`narrow`). [`reference`] is the scalar statement of what it computes.

#[cfg(test)]
use super::formats::CodedMatrix;
use super::formats::{GROUP, WeightFormat};

/// Columns one activation scale covers (and the smallest weight block).
const Q8_GROUP: usize = GROUP;

/// How a weight format's codes meet the quantized activations.
pub(crate) trait Q8Weights {
    /// Columns one step of the kernel covers: one 64-byte load of int8 codes, or of int4 codes
    /// (two nibbles a byte).
    const CHUNK: usize;
    /// Whether this is int4 (nibbles, offset 8) rather than int8 (signed bytes).
    const NIBBLES: bool;
}

/// int8 codes, 64 columns (two groups) a step, lanes 0..8 the first group.
pub(crate) struct Int8Q8;
/// int4 codes, 128 columns (four groups) a step, lanes 4g..4g+4 group g.
pub(crate) struct Int4Q8;

impl Q8Weights for Int8Q8 {
    const CHUNK: usize = 64;
    const NIBBLES: bool = false;
}

impl Q8Weights for Int4Q8 {
    const CHUNK: usize = 128;
    const NIBBLES: bool = true;
}

/// Whether `format` has an integer kernel: int8 and int4 with power-of-two blocks (so a
/// kernel step, 64 or 128 columns, never straddles a block it does not start in).
pub(crate) fn takes(format: WeightFormat) -> bool {
    match format {
        WeightFormat::Int8 { block } | WeightFormat::Int4 { block } => block.is_power_of_two(),
        _ => false,
    }
}

/// `m` activation rows quantized for format `W`, in the byte order its kernel reads.
#[derive(Debug, Default)]
pub(crate) struct Q8Rows {
    /// `[m, chunks · CHUNK]` codes; int4's chunks hold the low-nibble columns (the first 16 of
    /// each group) first, then the high.
    pub codes: Vec<i8>,
    /// `[m, chunks, 16]`: each int32 lane's activation scale.
    pub lane_scales: Vec<f32>,
    /// `[m, chunks, 16]`: each int32 lane's starting value, minus the weights' offset times
    /// the lane's codes' sum (int4's nibbles are the value plus 8, int8's codes go in plus 128).
    pub starts: Vec<i32>,
    /// Steps per row.
    pub chunks: usize,
}

impl Q8Rows {
    /// Quantizes `m` rows of `k` floats (`x`) for weights padded to `padded` columns.
    pub(crate) fn quantize<W: Q8Weights>(&mut self, x: &[f32], m: usize, k: usize, padded: usize) {
        let chunks = padded.div_ceil(W::CHUNK);
        let width = chunks * W::CHUNK;
        self.chunks = chunks;
        self.codes.clear();
        self.codes.resize(m * width, 0);
        self.lane_scales.clear();
        self.lane_scales.resize(m * chunks * 16, 0.0);
        self.starts.clear();
        self.starts.resize(m * chunks * 16, 0);
        let groups_per_chunk = W::CHUNK / Q8_GROUP;
        let lanes_per_group = 16 / groups_per_chunk;
        let mut group = [0i8; Q8_GROUP];
        for i in 0..m {
            let row = &x[i * k..(i + 1) * k];
            for g in 0..width / Q8_GROUP {
                let c0 = g * Q8_GROUP;
                let values = row.get(c0..k.min(c0 + Q8_GROUP)).unwrap_or(&[]);
                let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
                let scale = amax / 127.0;
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                group.fill(0);
                for (q, v) in group.iter_mut().zip(values) {
                    *q = (v * inverse).round().clamp(-127.0, 127.0) as i8;
                }
                let (chunk, within) = (g / groups_per_chunk, g % groups_per_chunk);
                let base = i * width + chunk * W::CHUNK;
                let lanes = (i * chunks + chunk) * 16 + within * lanes_per_group;
                if W::NIBBLES {
                    // Lane l reads bytes 4l..4l+4 of the low half (group l/4's columns
                    // 4(l%4)..) and of the high half (16 columns on).
                    let half = W::CHUNK / 2;
                    let low = base + within * 16;
                    self.codes[low..low + 16].copy_from_slice(&group[..16]);
                    self.codes[low + half..low + half + 16].copy_from_slice(&group[16..]);
                    for lane in 0..lanes_per_group {
                        let sum: i32 = group[4 * lane..4 * lane + 4]
                            .iter()
                            .chain(&group[16 + 4 * lane..16 + 4 * lane + 4])
                            .map(|&q| i32::from(q))
                            .sum();
                        self.starts[lanes + lane] = -8 * sum;
                    }
                } else {
                    let at = base + within * Q8_GROUP;
                    self.codes[at..at + Q8_GROUP].copy_from_slice(&group);
                    for lane in 0..lanes_per_group {
                        let sum: i32 = group[4 * lane..4 * lane + 4]
                            .iter()
                            .map(|&q| i32::from(q))
                            .sum();
                        self.starts[lanes + lane] = -128 * sum;
                    }
                }
                self.lane_scales[lanes..lanes + lanes_per_group].fill(scale);
            }
        }
    }
}

/// What [`reference`] and the kernel compute for weight row `r` and activation row `x`: the
/// exact integer sums per group, scaled by the weight block's and the group's scales, in f64.
/// The scalar statement of the integer path, for tests.
#[cfg(test)]
pub(crate) fn reference(x: &[f32], w: &CodedMatrix, r: usize) -> f64 {
    let (k, padded) = (w.cols(), w.padded_cols());
    let block = w.format().block().unwrap_or(padded);
    let mut total = 0f64;
    let mut dense = vec![0f32; k];
    // The codes are recovered from the dequantized row: value / scale is an exact integer.
    w.dequantize_row(r, &mut dense);
    for g in 0..padded.div_ceil(Q8_GROUP) {
        let c0 = g * Q8_GROUP;
        let c1 = k.min(c0 + Q8_GROUP);
        if c0 >= k {
            break;
        }
        let values = &x[c0..c1];
        let amax = values.iter().fold(0f32, |a, v| a.max(v.abs()));
        let sx = amax / 127.0;
        let inverse = if sx > 0.0 { 1.0 / sx } else { 0.0 };
        let sw = w.scales()[r * w.blocks_per_row() + c0 / block];
        let mut sum = 0i64;
        for c in c0..c1 {
            let q = (x[c] * inverse).round().clamp(-127.0, 127.0) as i64;
            let code = if sw == 0.0 {
                0
            } else {
                (dense[c] / sw).round() as i64
            };
            sum += q * code;
        }
        total += f64::from(sw) * f64::from(sx) * sum as f64;
    }
    total
}

/// An upper bound on `|ŷ - y|` for one output, where `y = x · w` with the dequantized weights
/// and `ŷ` the integer path's: each activation moves by at most its group's `max|x| / 254`.
#[cfg(test)]
pub(crate) fn error_bound(x: &[f32], w: &CodedMatrix, r: usize) -> f64 {
    let k = w.cols();
    let mut dense = vec![0f32; k];
    w.dequantize_row(r, &mut dense);
    (0..k.div_ceil(Q8_GROUP))
        .map(|g| {
            let (c0, c1) = (g * Q8_GROUP, k.min((g + 1) * Q8_GROUP));
            let amax = x[c0..c1].iter().fold(0f32, |a, v| a.max(v.abs()));
            let weights: f64 = dense[c0..c1].iter().map(|v| f64::from(v.abs())).sum();
            f64::from(amax) / 254.0 * weights
        })
        .sum()
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod vnni {
    //! The AVX-512 VNNI kernel.

    use std::arch::x86_64::{
        __m512, __m512i, _mm_maskz_loadu_ps, _mm512_and_si512, _mm512_castps128_ps512,
        _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps, _mm512_loadu_ps,
        _mm512_loadu_si512, _mm512_maskz_loadu_epi8, _mm512_mul_ps, _mm512_permutexvar_ps,
        _mm512_reduce_add_ps, _mm512_set1_epi8, _mm512_setzero_ps, _mm512_setzero_si512,
        _mm512_srli_epi16, _mm512_xor_si512,
    };

    use super::{Q8Rows, Q8Weights};
    use crate::formats::CodedMatrix;
    use crate::layout::MAX_BLOCK_M;

    /// Proof that this CPU runs AVX-512 F, BW, VL and VNNI.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Vnni(());

    impl Vnni {
        /// The token, where this CPU has the instructions.
        pub(crate) fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni"))
            .then_some(Vnni(()))
        }
    }

    /// `out[i][col0 + j] = x[i] · w[r0 + j]` for the `x.codes` rows `i0 .. i0 + mb` (at most
    /// [`MAX_BLOCK_M`]) and weight rows `r0 .. r1`. Operands that disagree compute nothing.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn block<W: Q8Weights>(
        _token: Vnni,
        x: &Q8Rows,
        i0: usize,
        mb: usize,
        w: &CodedMatrix,
        r0: usize,
        r1: usize,
        out: &mut [&mut [f32]],
        col0: usize,
    ) {
        let width = x.chunks * W::CHUNK;
        let rows_ok = r0 <= r1 && r1 <= w.rows();
        let x_ok = (1..=MAX_BLOCK_M).contains(&mb)
            && x.codes.len() >= (i0 + mb) * width
            && x.lane_scales.len() >= (i0 + mb) * x.chunks * 16
            && x.starts.len() >= (i0 + mb) * x.chunks * 16
            && width >= w.padded_cols();
        let out_ok = out.len() >= mb && out.iter().all(|o| o.len() >= col0 + (r1 - r0));
        if !(rows_ok && x_ok && out_ok) {
            return;
        }
        match mb {
            1 => rows::<W, 1>(x, i0, w, r0, r1, out, col0),
            2 => rows::<W, 2>(x, i0, w, r0, r1, out, col0),
            3 => rows::<W, 3>(x, i0, w, r0, r1, out, col0),
            4 => rows::<W, 4>(x, i0, w, r0, r1, out, col0),
            5 => rows::<W, 5>(x, i0, w, r0, r1, out, col0),
            6 => rows::<W, 6>(x, i0, w, r0, r1, out, col0),
            7 => rows::<W, 7>(x, i0, w, r0, r1, out, col0),
            _ => rows::<W, 8>(x, i0, w, r0, r1, out, col0),
        }
    }

    /// Weight rows a group holds for `m` activation rows: accumulators, prepared codes and
    /// scales within 32 registers.
    const fn group_rows(m: usize) -> usize {
        let fit = 28 / (m + 3);
        if fit < 1 {
            1
        } else if fit > 4 {
            4
        } else {
            fit
        }
    }

    #[inline(always)]
    fn rows<W: Q8Weights, const M: usize>(
        x: &Q8Rows,
        i0: usize,
        w: &CodedMatrix,
        r0: usize,
        r1: usize,
        out: &mut [&mut [f32]],
        col0: usize,
    ) {
        match const { group_rows(M) } {
            4 => groups::<W, M, 4>(x, i0, w, r0, r1, out, col0),
            3 => groups::<W, M, 3>(x, i0, w, r0, r1, out, col0),
            2 => groups::<W, M, 2>(x, i0, w, r0, r1, out, col0),
            _ => groups::<W, M, 1>(x, i0, w, r0, r1, out, col0),
        }
    }

    #[inline(always)]
    fn groups<W: Q8Weights, const M: usize, const R: usize>(
        x: &Q8Rows,
        i0: usize,
        w: &CodedMatrix,
        r0: usize,
        r1: usize,
        out: &mut [&mut [f32]],
        col0: usize,
    ) {
        let mut r = r0;
        while r + R <= r1 {
            group::<W, M, R>(x, i0, w, r, out, col0 + (r - r0));
            r += R;
        }
        while r < r1 {
            group::<W, M, 1>(x, i0, w, r, out, col0 + (r - r0));
            r += 1;
        }
    }

    /// How a row's block scales spread over a step's int32 lanes, the same for every row and
    /// step of a matrix: computed once per kernel call.
    #[derive(Clone, Copy)]
    struct ScaleSpread {
        /// Lane l takes the step's `index[l]`-th scale.
        index: __m512i,
        /// `log2(block)`: a column's block is `c >> shift` (blocks are powers of two).
        shift: u32,
        /// Scales a step covers when the row has them all.
        per_step: usize,
        /// Scales per row.
        blocks: usize,
    }

    impl ScaleSpread {
        #[inline(always)]
        fn new<W: Q8Weights>(w: &CodedMatrix) -> Self {
            let block = w.format().block().unwrap_or(w.padded_cols()).max(1);
            let lanes_per_group = 16 / (W::CHUNK / super::Q8_GROUP);
            let groups_per_block = (block / super::Q8_GROUP).max(1);
            let index: [i32; 16] =
                std::array::from_fn(|l| ((l / lanes_per_group) / groups_per_block) as i32);
            // SAFETY: AVX-512F is enabled by the entry point; the array is 16 i32s.
            let index = unsafe { _mm512_loadu_si512(index.as_ptr().cast()) };
            Self {
                index,
                shift: block.trailing_zeros(),
                per_step: W::CHUNK.div_ceil(block),
                blocks: w.blocks_per_row(),
            }
        }

        /// Row `row`'s scales for the step at column `c`, one per int32 lane.
        #[inline(always)]
        fn at(&self, w: &CodedMatrix, row: usize, c: usize) -> __m512 {
            let first = c >> self.shift;
            let count = self.per_step.min(self.blocks - first);
            // SAFETY: `count` ≤ 4 scales from `first` are inside row `row`'s scales (masked
            // load: the others are not read); AVX-512F/VL are enabled by the entry point.
            unsafe {
                let p = w.scales().as_ptr().add(row * self.blocks + first);
                let loaded = _mm_maskz_loadu_ps((1u8 << count) - 1, p);
                _mm512_permutexvar_ps(self.index, _mm512_castps128_ps512(loaded))
            }
        }
    }

    #[inline(always)]
    fn group<W: Q8Weights, const M: usize, const R: usize>(
        x: &Q8Rows,
        i0: usize,
        w: &CodedMatrix,
        row0: usize,
        out: &mut [&mut [f32]],
        col: usize,
    ) {
        let padded = w.padded_cols();
        let row_bytes = w.row_bytes();
        let codes = w.codes();
        let width = x.chunks * W::CHUNK;
        let spread = ScaleSpread::new::<W>(w);
        // SAFETY (whole body): AVX-512 F/BW/VL/VNNI are enabled by the entry point; every
        // pointer below stays inside its slice as the comments say.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); R]; M];
            for chunk in 0..x.chunks {
                let c = chunk * W::CHUNK;
                if c >= padded {
                    break;
                }
                // Bytes of this row's codes the step covers: less than a full load only in
                // the last step of a row whose padded width is not a multiple of the step.
                let step_bytes = if W::NIBBLES { W::CHUNK / 2 } else { W::CHUNK };
                let offset = if W::NIBBLES { c / 2 } else { c };
                let present = step_bytes.min(row_bytes - offset);
                let mask: u64 = if present >= 64 {
                    u64::MAX
                } else {
                    (1u64 << present) - 1
                };
                let mut low = [_mm512_setzero_si512(); R];
                let mut high = [_mm512_setzero_si512(); R];
                let mut scale = [_mm512_setzero_ps(); R];
                for j in 0..R {
                    let p = codes.as_ptr().add((row0 + j) * row_bytes + offset);
                    if W::NIBBLES {
                        // 64 bytes of nibbles: byte t of group g holds column t (low) and
                        // t + 16 (high); ≤ 64 bytes read, masked past the row.
                        let bytes = if present >= 64 {
                            _mm512_loadu_si512(p.cast())
                        } else {
                            _mm512_maskz_loadu_epi8(mask, p.cast())
                        };
                        let fifteen = _mm512_set1_epi8(0x0f);
                        low[j] = _mm512_and_si512(bytes, fifteen);
                        high[j] = _mm512_and_si512(_mm512_srli_epi16::<4>(bytes), fifteen);
                    } else {
                        let bytes = if present >= 64 {
                            _mm512_loadu_si512(p.cast())
                        } else {
                            _mm512_maskz_loadu_epi8(mask, p.cast())
                        };
                        // Past the row the codes are 0 and become 128, against x codes 0.
                        low[j] = _mm512_xor_si512(bytes, _mm512_set1_epi8(i8::MIN));
                    }
                    scale[j] = spread.at(w, row0 + j, c);
                }
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let xi = i0 + i;
                    let xp = x.codes.as_ptr().add(xi * width + c);
                    let lanes = (xi * x.chunks + chunk) * 16;
                    let x_scale = _mm512_loadu_ps(x.lane_scales.as_ptr().add(lanes));
                    if W::NIBBLES {
                        let x_low = _mm512_loadu_si512(xp.cast());
                        let x_high = _mm512_loadu_si512(xp.add(64).cast());
                        let start = _mm512_loadu_si512(x.starts.as_ptr().add(lanes).cast());
                        for j in 0..R {
                            let sum = _mm512_dpbusd_epi32(
                                _mm512_dpbusd_epi32(start, low[j], x_low),
                                high[j],
                                x_high,
                            );
                            acc_i[j] = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(sum),
                                _mm512_mul_ps(scale[j], x_scale),
                                acc_i[j],
                            );
                        }
                    } else {
                        let xv = _mm512_loadu_si512(xp.cast());
                        let start = _mm512_loadu_si512(x.starts.as_ptr().add(lanes).cast());
                        for j in 0..R {
                            let sum = _mm512_dpbusd_epi32(start, low[j], xv);
                            acc_i[j] = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(sum),
                                _mm512_mul_ps(scale[j], x_scale),
                                acc_i[j],
                            );
                        }
                    }
                }
            }
            for (o, acc_i) in out.iter_mut().zip(&acc) {
                for (j, a) in acc_i.iter().enumerate() {
                    o[col + j] = _mm512_reduce_add_ps(*a);
                }
            }
        }
    }
}
