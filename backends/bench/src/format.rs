//! The weight formats `llmeff bench --dtypes` measures, how each becomes a model load, and which
//! llama.cpp type is its counterpart in a peer baseline.

use std::fmt;

use api::runtime::{DType, QuantMethod, Quantization};

/// Weights per scale of the quantized formats: llama.cpp's block (its `Q8_0` and `Q4_0` hold one
/// scale per 32 weights), so the two tools' int8 and int4 store as many bits per weight.
pub const QUANT_BLOCK_SIZE: usize = 32;

/// A precision or weight quantization the benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Every weight and activation in 32-bit floats.
    F32,
    /// The model loaded in 16-bit IEEE floats.
    F16,
    /// The model loaded in bfloat16.
    Bf16,
    /// Linear-layer weights in fp8 E4M3 with one scale per block, computed at f32.
    Fp8,
    /// Linear-layer weights in symmetric int8 with one scale per block, computed at f32.
    Int8,
    /// Linear-layer weights in symmetric int4 with one scale per block, computed at f32.
    Int4,
    /// Linear-layer weights in 4-bit NormalFloat with one scale per block, computed at f32.
    Nf4,
}

/// A `--dtypes` list that names no format, or one that is not a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A name that is no format.
    #[error("unknown format {name:?}; valid formats: {}", Format::names().join(", "))]
    Unknown {
        /// The name given.
        name: String,
    },
    /// The list is empty.
    #[error("no format given; valid formats: {}", Format::names().join(", "))]
    Empty,
}

impl Format {
    /// Every format, in the order rows list them.
    pub const ALL: [Format; 7] = [
        Format::F32,
        Format::F16,
        Format::Bf16,
        Format::Fp8,
        Format::Int8,
        Format::Int4,
        Format::Nf4,
    ];

    /// The name on the command line, in tables and in peer files (`f32`, `int8`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::F16 => "f16",
            Format::Bf16 => "bf16",
            Format::Fp8 => "fp8",
            Format::Int8 => "int8",
            Format::Int4 => "int4",
            Format::Nf4 => "nf4",
        }
    }

    /// Every format's name, in [`Format::ALL`]'s order.
    pub fn names() -> Vec<&'static str> {
        Format::ALL.iter().map(|f| f.name()).collect()
    }

    /// The format a name denotes (ASCII case ignored).
    pub fn parse(name: &str) -> Result<Format, FormatError> {
        let wanted = name.trim().to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.name() == wanted)
            .ok_or_else(|| FormatError::Unknown {
                name: name.to_string(),
            })
    }

    /// A comma-separated list of names, in the order given, each format once.
    pub fn parse_list(list: &str) -> Result<Vec<Format>, FormatError> {
        let mut formats = Vec::new();
        for name in list.split(',').filter(|n| !n.trim().is_empty()) {
            let format = Format::parse(name)?;
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
        if formats.is_empty() {
            return Err(FormatError::Empty);
        }
        Ok(formats)
    }

    /// The dtype the model is loaded in: the quantized formats keep f32 activations, KV cache,
    /// norms, embeddings and LM head, as `quantize()` in a study does.
    pub fn dtype(self) -> DType {
        match self {
            Format::F16 => DType::F16,
            Format::Bf16 => DType::BF16,
            Format::F32 | Format::Fp8 | Format::Int8 | Format::Int4 | Format::Nf4 => DType::F32,
        }
    }

    /// The weight quantization applied after loading, in blocks of [`QUANT_BLOCK_SIZE`].
    pub fn quantization(self) -> Option<Quantization> {
        let method = match self {
            Format::F32 | Format::F16 | Format::Bf16 => return None,
            Format::Fp8 => QuantMethod::Fp8,
            Format::Int8 => QuantMethod::Int8,
            Format::Int4 => QuantMethod::Int4,
            Format::Nf4 => QuantMethod::Nf4,
        };
        Some(Quantization {
            method,
            block_size: QUANT_BLOCK_SIZE,
        })
    }

    /// llama.cpp's type of the same kind (`llama-quantize`'s name, lower case): the same float
    /// width, or integers of the same width with one scale per 32 weights (Q4_0 rounds to
    /// −8..7 with scale max/−8 where int4 rounds to ±7 with absmax/7). `None` where llama.cpp
    /// has none: its 8-bit types are integers, and its 4-bit code book (`IQ4_NL`) is not NF4's.
    pub fn llama_cpp_type(self) -> Option<&'static str> {
        match self {
            Format::F32 => Some("f32"),
            Format::F16 => Some("f16"),
            Format::Bf16 => Some("bf16"),
            Format::Int8 => Some("q8_0"),
            Format::Int4 => Some("q4_0"),
            Format::Fp8 | Format::Nf4 => None,
        }
    }

    /// The format whose llama.cpp counterpart is `llama_type` (case ignored), if any.
    pub fn from_llama_cpp_type(llama_type: &str) -> Option<Format> {
        let wanted = llama_type.to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.llama_cpp_type() == Some(wanted.as_str()))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_keeps_its_order_and_names_each_format_once() {
        assert_eq!(
            Format::parse_list("int8,f32, BF16,int8").unwrap(),
            vec![Format::Int8, Format::F32, Format::Bf16]
        );
        assert_eq!(Format::parse_list("f32").unwrap(), vec![Format::F32]);
        assert_eq!(Format::parse_list(" , ").unwrap_err(), FormatError::Empty);
        for format in Format::ALL {
            assert_eq!(Format::parse(format.name()), Ok(format));
            assert_eq!(format.to_string(), format.name());
        }
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let err = Format::parse_list("f32,q8_0").unwrap_err();
        assert_eq!(
            err,
            FormatError::Unknown {
                name: "q8_0".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown format \"q8_0\"; valid formats: f32, f16, bf16, fp8, int8, int4, nf4"
        );
        assert!(FormatError::Empty.to_string().contains("f32, f16, bf16"));
    }

    #[test]
    fn half_precisions_are_dtypes_and_the_rest_quantize_f32_weights_in_blocks_of_32() {
        let loads: Vec<_> = Format::ALL
            .into_iter()
            .map(|f| (f.name(), f.dtype(), f.quantization().map(|q| q.to_string())))
            .collect();
        let b32 = |m: &str| Some(format!("{m}/b32"));
        assert_eq!(
            loads,
            vec![
                ("f32", DType::F32, None),
                ("f16", DType::F16, None),
                ("bf16", DType::BF16, None),
                ("fp8", DType::F32, b32("fp8")),
                ("int8", DType::F32, b32("int8")),
                ("int4", DType::F32, b32("int4")),
                ("nf4", DType::F32, b32("nf4")),
            ]
        );
    }

    #[test]
    fn llama_cpp_counterparts_are_the_same_kind_of_storage() {
        // Q8_0 and Q4_0 are integers with one scale per 32 weights, as int8 and int4 are here;
        // fp8 and NF4 have no llama.cpp type.
        let pairs: Vec<_> = Format::ALL
            .into_iter()
            .map(|f| (f.name(), f.llama_cpp_type()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("f32", Some("f32")),
                ("f16", Some("f16")),
                ("bf16", Some("bf16")),
                ("fp8", None),
                ("int8", Some("q8_0")),
                ("int4", Some("q4_0")),
                ("nf4", None),
            ]
        );
        for format in Format::ALL {
            if let Some(t) = format.llama_cpp_type() {
                assert_eq!(Format::from_llama_cpp_type(t), Some(format));
                assert_eq!(Format::from_llama_cpp_type(&t.to_uppercase()), Some(format));
            }
        }
        assert_eq!(Format::from_llama_cpp_type("q4_k"), None);
    }
}
