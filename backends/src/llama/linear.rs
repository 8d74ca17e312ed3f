//! A linear layer's weight in the form its product runs fastest in on the device: a burn
//! tensor, a quantized matrix dequantized per product, or f32 on the host for llmeff's CPU
//! kernels.

use burn::tensor::backend::Backend;
use burn::tensor::{DType as BurnDType, Tensor, TensorData};
use engine::runtime::{Quantization, RuntimeError};

use super::quant::QuantizedMatrix;

/// A linear layer's weight: dense on the device, quantized on the host, or f32 on the host for
/// llmeff's own CPU kernels.
#[derive(Debug, Clone)]
pub(crate) enum Linear<B: Backend> {
    /// `[in, out]` on the device at the run dtype.
    Dense(Tensor<B, 2>),
    /// f32 on the host in the checkpoint's `[out, in]` layout, multiplied by
    /// [`crate::kernels::linear_f32`]: decoding is a matrix-vector product per layer, which
    /// burn-flex's matmul runs at about half the memory bandwidth (DESIGN.md §7).
    Host {
        /// `[out, in]`, row-major.
        weight: Vec<f32>,
        /// Input features (`in`).
        in_features: usize,
        /// Output features (`out`).
        out_features: usize,
    },
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
            Linear::Host {
                in_features,
                out_features,
                ..
            } => [*in_features, *out_features],
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
            Linear::Host {
                weight,
                in_features,
                out_features,
            } => {
                let [m, _] = x.dims();
                let device = x.device();
                // Host linears exist only for f32 runs (`to_host`), so the activations are f32.
                let values = x
                    .into_data()
                    .into_vec::<f32>()
                    .expect("host linear layers are only built for f32 runs");
                let mut y = vec![0.0f32; m * out_features];
                crate::kernels::linear_f32(&values, m, *in_features, weight, *out_features, &mut y);
                Tensor::from_data(TensorData::new(y, [m, *out_features]), &device)
            }
        }
    }

    /// Moves a dense f32 weight to the host in `[out, in]` layout for the CPU kernels; other
    /// forms are left as they are.
    pub(crate) fn move_to_host(&mut self, name: &str) -> Result<(), RuntimeError> {
        let Linear::Dense(w) = self else {
            return Ok(());
        };
        if w.dtype() != BurnDType::F32 {
            return Ok(());
        }
        let [in_features, out_features] = w.dims();
        let weight = w
            .clone()
            .transpose()
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| RuntimeError::Backend(format!("reading {name} to the host: {e:?}")))?;
        *self = Linear::Host {
            weight,
            in_features,
            out_features,
        };
        Ok(())
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
            .map_err(|e| {
                RuntimeError::Backend(format!("reading {name} for quantization: {e:?}"))
            })?;
        let matrix = QuantizedMatrix::quantize(name, &values, rows, cols, q)?;
        let saved = dense_bytes - matrix.bytes() as i64;
        *self = Linear::Quantized { matrix, dtype };
        Ok(saved)
    }
}
