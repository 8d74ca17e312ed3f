//! Which quantized linear weights a burn backend holds as its own quantized tensors, and in
//! which of burn's schemes.
//!
//! burn 0.21 quantizes symmetrically with a scale of `2·absmax / (b − a)` per block, `[a, b]`
//! the code range: `absmax/127` for Q8S, `absmax/7` for Q4S, `absmax/448` for E4M3. Those are
//! exactly llmeff's int8, int4 and fp8 definitions (`quant.rs`), so a weight held by burn has
//! the same codes and scales as one held by llmeff. burn's blocks are consecutive elements of
//! the stored tensor, so the weight is stored `[out, in]` (blocks along `in`, the reduction
//! dimension, as llmeff and llama.cpp block it) and multiplied as `W · xᵀ`: burn-flex cannot
//! transpose a block-quantized tensor without requantizing it, and cubek's quantized matmul
//! reads an `[M, K]` operand blocked along K directly.
//!
//! What burn 0.21 holds faithfully differs per backend (read in its sources, 2026-12):
//! burn-cubecl (CUDA, and wgpu later) stores int8 natively, int4 packed eight to a `u32` and
//! E4M3 natively where the device can convert it (sm_89+), and its matmul dequantizes while
//! reading the operand. burn-flex stores every code in a byte and dequantizes the whole matrix
//! per product; it rounds E4M3 values to integers, so fp8 stays in llmeff's own matrix there,
//! and int4 too (a byte per 4-bit code would double its memory). NF4 has no burn scheme.

use api::runtime::{QuantMethod, Quantization};
use burn::tensor::DType;
use burn::tensor::backend::{Backend, DTypeUsage};
use burn::tensor::quantization::{
    BlockSize, QuantLevel, QuantParam, QuantScheme, QuantStore, QuantValue,
};

/// The quantization methods a burn backend holds as its own quantized tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BurnQuantFormats {
    int8: bool,
    int4: bool,
    fp8: bool,
}

impl BurnQuantFormats {
    /// burn-flex: int8 only (see the module docs for why not int4 and fp8).
    pub(crate) const FLEX: Self = Self {
        int8: true,
        int4: false,
        fp8: false,
    };

    /// burn's cubecl backends (CUDA, wgpu): int8, int4 and fp8, each where the device can
    /// store it ([`storable`]).
    // Only the `cuda` and `wgpu` builds load onto a cubecl backend.
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
    pub(crate) const CUBECL: Self = Self {
        int8: true,
        int4: true,
        fp8: true,
    };

    /// Every method, for tests that exercise burn's schemes on the CPU.
    #[cfg(test)]
    pub(crate) const ALL: Self = Self::CUBECL;

    /// burn's scheme for a linear layer of `in_features` inputs quantized as `q`, or `None`
    /// where this backend keeps the weight in llmeff's matrix, dequantized per product: a
    /// method it does not hold, a block over 255 weights (burn's block sizes are bytes) or a
    /// block that does not divide the rows (burn's blocks would straddle them).
    pub(crate) fn scheme(&self, q: Quantization, in_features: usize) -> Option<QuantScheme> {
        let (value, store) = match q.method {
            QuantMethod::Int8 if self.int8 => (QuantValue::Q8S, QuantStore::Native),
            QuantMethod::Int4 if self.int4 => (QuantValue::Q4S, QuantStore::PackedU32(0)),
            QuantMethod::Fp8 if self.fp8 => (QuantValue::E4M3, QuantStore::Native),
            _ => return None,
        };
        let block = u8::try_from(q.block_size).ok()?;
        if block == 0 || !in_features.is_multiple_of(q.block_size) {
            return None;
        }
        Some(
            QuantScheme::default()
                .with_value(value)
                .with_store(store)
                .with_level(QuantLevel::Block(BlockSize::new([block])))
                .with_param(QuantParam::F32),
        )
    }
}

/// `scheme` as `device` can store it: as is, or int8 packed four codes to a `u32` where the
/// device has no 8-bit integers (WGSL has none: wgpu); `None` where neither is stored (E4M3
/// before CUDA sm_89), so the weight stays in llmeff's matrix.
pub(crate) fn storable<B: Backend>(device: &B::Device, scheme: QuantScheme) -> Option<QuantScheme> {
    let stores =
        |s: QuantScheme| B::dtype_usage(device, DType::QFloat(s)).contains(DTypeUsage::Storage);
    if stores(scheme) {
        return Some(scheme);
    }
    let packed = scheme.with_store(QuantStore::PackedU32(0));
    (scheme.value == QuantValue::Q8S && scheme.store == QuantStore::Native && stores(packed))
        .then_some(packed)
}

/// How the `compute` column names burn's scheme: `burn-q8s`, `burn-q8s/u32` (packed in
/// `u32`s), `burn-q4s/u32`, `burn-e4m3`.
pub(crate) fn scheme_name(scheme: &QuantScheme) -> String {
    let value = match scheme.value {
        QuantValue::Q8S => "q8s",
        QuantValue::Q4S => "q4s",
        QuantValue::E4M3 => "e4m3",
        _ => "quantized",
    };
    match scheme.store {
        QuantStore::PackedU32(_) => format!("burn-{value}/u32"),
        _ => format!("burn-{value}"),
    }
}

/// Bytes burn holds for an `[out, in]` weight in `scheme`: codes at their stored width plus
/// one f32 scale per block.
pub(crate) fn held_bytes(scheme: &QuantScheme, rows: usize, cols: usize, block: usize) -> u64 {
    let n = (rows * cols) as u64;
    let codes = match scheme.store {
        QuantStore::PackedU32(_) => (n * scheme.value.size_bits() as u64).div_ceil(32) * 4,
        _ => n,
    };
    codes + 4 * n.div_ceil(block as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(method: QuantMethod, block_size: usize) -> Quantization {
        Quantization { method, block_size }
    }

    #[test]
    fn flex_holds_int8_only_and_cubecl_every_burn_scheme() {
        let flex = BurnQuantFormats::FLEX;
        assert_eq!(
            flex.scheme(q(QuantMethod::Int8, 32), 64).unwrap().value,
            QuantValue::Q8S
        );
        for m in [QuantMethod::Int4, QuantMethod::Fp8, QuantMethod::Nf4] {
            assert!(flex.scheme(q(m, 32), 64).is_none(), "{m:?}");
        }
        let cube = BurnQuantFormats::CUBECL;
        let int4 = cube.scheme(q(QuantMethod::Int4, 32), 64).unwrap();
        assert_eq!(int4.store, QuantStore::PackedU32(0));
        assert_eq!(
            cube.scheme(q(QuantMethod::Fp8, 32), 64).unwrap().value,
            QuantValue::E4M3
        );
        assert!(cube.scheme(q(QuantMethod::Nf4, 32), 64).is_none());
    }

    #[test]
    fn blocks_burn_cannot_express_stay_in_llmeffs_matrix() {
        let cube = BurnQuantFormats::CUBECL;
        // Straddling rows, too long for burn's byte-sized block, and per-row scales.
        assert!(cube.scheme(q(QuantMethod::Int8, 32), 48).is_none());
        assert!(cube.scheme(q(QuantMethod::Int8, 256), 512).is_none());
        assert!(cube.scheme(q(QuantMethod::Int8, 128), 256).is_some());
    }

    #[test]
    fn held_bytes_count_packed_codes_and_scales() {
        let cube = BurnQuantFormats::CUBECL;
        let int4 = cube.scheme(q(QuantMethod::Int4, 32), 64).unwrap();
        assert_eq!(held_bytes(&int4, 16, 64, 32), 16 * 64 / 2 + 4 * 32);
        let int8 = cube.scheme(q(QuantMethod::Int8, 32), 64).unwrap();
        assert_eq!(held_bytes(&int8, 16, 64, 32), 16 * 64 + 4 * 32);
    }
}
