//! The host side of a model: the element types it can run in (converting checkpoint values to
//! the run dtype, mapping engine and burn dtype names) and reading results back from the device.

use api::runtime::DType;
use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, DType as BurnDType, Element, Tensor, TensorData, bf16, f16};

use crate::error::BackendError;

/// A float type weights are materialised in before they go to the device.
pub(crate) trait RunFloat: Element + Copy + Default + Send + Sync + 'static {
    /// Rounds an f32 to this type (round-to-nearest-even, as torch's `.to()` does).
    fn from_f32(value: f32) -> Self;
}

impl RunFloat for f32 {
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl RunFloat for f16 {
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

impl RunFloat for bf16 {
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

/// `value` rounded to `dtype` and back (round-to-nearest-even): a constant as a tensor of that
/// dtype holds it.
pub(crate) fn round_to(dtype: DType, value: f32) -> f32 {
    match dtype {
        DType::F32 => value,
        DType::F16 => f16::from_f32(value).to_f32(),
        DType::BF16 => bf16::from_f32(value).to_f32(),
    }
}

/// The burn dtype for an engine dtype.
pub(crate) fn burn_dtype(dtype: DType) -> BurnDType {
    match dtype {
        DType::F32 => BurnDType::F32,
        DType::F16 => BurnDType::F16,
        DType::BF16 => BurnDType::BF16,
    }
}

/// Copies a tensor to the host. It returns only once the device has finished computing it,
/// which is what makes a step's wall-clock time honest.
pub(crate) fn to_host<B, const D: usize, K>(
    tensor: Tensor<B, D, K>,
    what: &str,
) -> Result<TensorData, BackendError>
where
    B: Backend,
    K: BasicOps<B>,
    K::Elem: Element,
{
    tensor
        .try_into_data()
        .map_err(|e| BackendError::DeviceRead {
            what: what.to_string(),
            message: e.to_string(),
        })
}

/// Calls `$body` with `$t` bound to the Rust element type of an engine dtype, so generic
/// host-side code is written once for f32/f16/bf16.
macro_rules! with_run_float {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            api::runtime::DType::F32 => {
                type $t = f32;
                $body
            }
            api::runtime::DType::F16 => {
                type $t = burn::tensor::f16;
                $body
            }
            api::runtime::DType::BF16 => {
                type $t = burn::tensor::bf16;
                $body
            }
        }
    };
}
pub(crate) use with_run_float;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest() {
        // 1 + 2^-11 is halfway between two f16 values; ties go to the even mantissa (1.0).
        assert_eq!(f16::from_f32(1.0 + 2f32.powi(-11)).to_f32(), 1.0);
        assert_eq!(<bf16 as RunFloat>::from_f32(3.0).to_f32(), 3.0);
        assert_eq!(<f32 as RunFloat>::from_f32(0.1), 0.1);
    }

    #[test]
    fn dtype_names_map() {
        assert_eq!(burn_dtype(DType::F16), BurnDType::F16);
        assert_eq!(burn_dtype(DType::BF16), BurnDType::BF16);
        assert_eq!(burn_dtype(DType::F32), BurnDType::F32);
    }
}
