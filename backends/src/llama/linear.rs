//! A linear layer's weight in the form its product runs in on the device: a burn tensor, or a
//! quantized matrix dequantized per product.

use api::runtime::{Quantization, RuntimeError};
use burn::tensor::backend::Backend;
use burn::tensor::{DType as BurnDType, Tensor, TensorData};

use super::quant::QuantizedMatrix;
use crate::error::BackendError;

/// A linear layer's weight: dense on the device, or quantized on the host.
#[derive(Debug, Clone)]
pub(crate) enum Linear<B: Backend> {
    /// `[in, out]` on the device at the run dtype.
    Dense(Tensor<B, 2>),
    /// Quantized; dequantized to `dtype` for each product.
    Quantized {
        /// The codes and scales.
        matrix: QuantizedMatrix,
        /// Run dtype.
        dtype: BurnDType,
    },
}

impl<B: Backend> Linear<B> {
    /// `[in, out]` of the weight.
    pub(crate) fn dims(&self) -> [usize; 2] {
        match self {
            Linear::Dense(w) => w.dims(),
            Linear::Quantized { matrix, .. } => [matrix.rows(), matrix.cols()],
        }
    }

    /// `x · W` for `x` of shape `[rows, in]`.
    pub(crate) fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Linear::Dense(w) => x.matmul(w.clone()),
            Linear::Quantized { matrix, dtype } => {
                let data = TensorData::new(matrix.dequantize(), [matrix.rows(), matrix.cols()]);
                let w = Tensor::<B, 2>::from_data(data, (&x.device(), *dtype));
                x.matmul(w)
            }
        }
    }

    /// Replaces a dense weight by its quantized form; returns bytes saved.
    pub(crate) fn quantize(&mut self, name: &str, q: Quantization) -> Result<i64, RuntimeError> {
        let Linear::Dense(w) = self else { return Ok(0) };
        let [rows, cols] = w.dims();
        let dtype = w.dtype();
        let dense_bytes = (rows * cols * dtype.size()) as i64;
        let values = w
            .to_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| BackendError::DeviceRead {
                what: format!("{name} for quantization"),
                message: format!("{e:?}"),
            })?;
        let matrix = QuantizedMatrix::quantize(name, &values, rows, cols, q)?;
        let saved = dense_bytes - matrix.bytes() as i64;
        *self = Linear::Quantized { matrix, dtype };
        Ok(saved)
    }
}
