//! A linear layer's weight in the form its product runs in on the device: a burn tensor, burn's
//! own quantized tensor, or llmeff's quantized matrix dequantized per product.

use api::runtime::{Quantization, RuntimeError};
use burn::tensor::backend::Backend;
use burn::tensor::{DType as BurnDType, Tensor, TensorData};

use super::burn_quant::{BurnQuantFormats, held_bytes, scheme_name, storable};
use super::host_weights::quantized_format;
use super::quant::QuantizedMatrix;
use crate::error::BackendError;

/// A linear layer's weight: dense or quantized on the device, or quantized on the host.
#[derive(Debug, Clone)]
pub(crate) enum Linear<B: Backend> {
    /// `[in, out]` on the device at the run dtype.
    Dense(Tensor<B, 2>),
    /// burn's quantized tensor, `[out, in]` in blocks along `in`; each product is burn's
    /// quantized matmul `W · xᵀ` (see `burn_quant.rs`).
    BurnQuantized {
        /// The quantized weight, `[out, in]`.
        weight: Tensor<B, 2>,
        /// How the `compute` column names it, e.g. `w-int8/b32.burn-q8s`.
        label: String,
    },
    /// Quantized in llmeff's matrix on the host; dequantized to `dtype` for each product.
    Quantized {
        /// The codes and scales.
        matrix: QuantizedMatrix,
        /// Run dtype.
        dtype: BurnDType,
        /// How the `compute` column names it, e.g. `w-nf4/b32.dequantized`.
        label: String,
    },
}

impl<B: Backend> Linear<B> {
    /// `[in, out]` of the weight.
    pub(crate) fn dims(&self) -> [usize; 2] {
        match self {
            Linear::Dense(w) => w.dims(),
            Linear::BurnQuantized { weight, .. } => {
                let [out, inputs] = weight.dims();
                [inputs, out]
            }
            Linear::Quantized { matrix, .. } => [matrix.rows(), matrix.cols()],
        }
    }

    /// How the weight is held and multiplied, for the `compute` column; `None` when dense.
    pub(crate) fn label(&self) -> Option<&str> {
        match self {
            Linear::Dense(_) => None,
            Linear::BurnQuantized { label, .. } | Linear::Quantized { label, .. } => Some(label),
        }
    }

    /// `x · W` for `x` of shape `[rows, in]`.
    pub(crate) fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Linear::Dense(w) => x.matmul(w.clone()),
            Linear::BurnQuantized { weight, .. } => {
                weight.clone().matmul(x.transpose()).transpose()
            }
            Linear::Quantized { matrix, dtype, .. } => {
                let data = TensorData::new(matrix.dequantize(), [matrix.rows(), matrix.cols()]);
                let w = Tensor::<B, 2>::from_data(data, (&x.device(), *dtype));
                x.matmul(w)
            }
        }
    }

    /// Replaces a dense weight by its quantized form: burn's own quantized tensor where
    /// `formats` and the device hold `q`, else llmeff's matrix. Returns bytes saved.
    pub(crate) fn quantize(
        &mut self,
        name: &str,
        q: Quantization,
        formats: BurnQuantFormats,
    ) -> Result<i64, RuntimeError> {
        let Linear::Dense(w) = self else { return Ok(0) };
        let [rows, cols] = w.dims();
        let dtype = w.dtype();
        let device = w.device();
        let dense_bytes = (rows * cols * dtype.size()) as i64;
        let values = w
            .to_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| BackendError::DeviceRead {
                what: format!("{name} for quantization"),
                message: format!("{e:?}"),
            })?;
        if q.block_size == 0 {
            // llmeff's matrix names the tensor in the error.
            QuantizedMatrix::quantize(name, &values, rows, cols, q)?;
        }
        let format = quantized_format(q);
        let scheme = formats
            .scheme(q, rows)
            .and_then(|scheme| storable::<B>(&device, scheme));
        if let Some(scheme) = scheme {
            // `[out, in]`, transposed on the host once, quantized from f32 values.
            let mut transposed = vec![0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    transposed[c * rows + r] = values[r * cols + c];
                }
            }
            let data = TensorData::new(transposed, [cols, rows]);
            let weight = Tensor::<B, 2>::from_data(data, (&device, BurnDType::F32))
                .quantize_dynamic(&scheme);
            let held = held_bytes(&scheme, cols, rows, q.block_size);
            *self = Linear::BurnQuantized {
                weight,
                label: format!("w-{format}.{}", scheme_name(&scheme)),
            };
            return Ok(dense_bytes - held as i64);
        }
        let matrix = QuantizedMatrix::quantize(name, &values, rows, cols, q)?;
        let saved = dense_bytes - matrix.bytes() as i64;
        *self = Linear::Quantized {
            matrix,
            dtype,
            label: format!("w-{format}.dequantized"),
        };
        Ok(saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::runtime::QuantMethod;
    use burn_flex::{Flex, FlexDevice};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn tensor(values: Vec<f32>, shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::from_data(
            TensorData::new(values, shape),
            (&FlexDevice, BurnDType::F32),
        )
    }

    fn host(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    /// burn's schemes give the product llmeff's own matrix gives, the weight blocked along
    /// `in` (a scheme blocked along `out` would differ by whole quantization steps).
    #[test]
    fn burns_quantized_product_equals_llmeffs_dequantized_one() {
        let (rows, inputs, outputs) = (3, 96, 40);
        let w = random(inputs * outputs, 7);
        let x = tensor(random(rows * inputs, 11), [rows, inputs]);
        // burn-flex's E4M3 rounds to integers (burn_quant.rs): fp8 is checked on cubecl only.
        for method in [QuantMethod::Int8, QuantMethod::Int4] {
            let q = Quantization {
                method,
                block_size: 32,
            };
            let mut burns = Linear::Dense(tensor(w.clone(), [inputs, outputs]));
            burns.quantize("w", q, BurnQuantFormats::ALL).unwrap();
            let own = Linear::<Flex>::Quantized {
                matrix: QuantizedMatrix::quantize("w", &w, inputs, outputs, q).unwrap(),
                dtype: BurnDType::F32,
                label: String::new(),
            };
            assert!(matches!(burns, Linear::BurnQuantized { .. }), "{method:?}");
            assert_eq!(burns.dims(), [inputs, outputs]);
            let (a, b) = (host(burns.forward(x.clone())), host(own.forward(x.clone())));
            assert_eq!(a.len(), rows * outputs);
            let err = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(err < 1e-4, "{method:?}: {err}");
        }
    }

    #[test]
    fn labels_name_who_holds_the_weight() {
        let w = random(64 * 8, 3);
        let q = |method| Quantization {
            method,
            block_size: 32,
        };
        let mut int8 = Linear::Dense(tensor(w.clone(), [64, 8]));
        let saved = int8
            .quantize("w", q(QuantMethod::Int8), BurnQuantFormats::FLEX)
            .unwrap();
        assert_eq!(int8.label(), Some("w-int8/b32.burn-q8s"));
        assert_eq!(saved, (64 * 8 * 4 - (64 * 8 + 4 * 16)) as i64);
        let mut nf4 = Linear::Dense(tensor(w, [64, 8]));
        nf4.quantize("w", q(QuantMethod::Nf4), BurnQuantFormats::FLEX)
            .unwrap();
        assert_eq!(nf4.label(), Some("w-nf4/b32.dequantized"));
    }
}
