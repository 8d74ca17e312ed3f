//! The host forward pass's weights: every tensor of a Llama model in PyTorch's `[out, in]`
//! layout, with the query, key and value projections stacked into one matrix and gate and up
//! into another (one product each per layer). Matrices are f32 on huge pages where possible, or
//! held in a narrow format at its own width ([`HostFormats`] says which): the load's dtype for
//! every matrix, a quantization method for the decoder layers' linear weights (embeddings, the
//! LM head and norms stay at the dtype, as transformers' bitsandbytes integration keeps them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use api::runtime::{DType, QuantMethod, Quantization, RuntimeError};

use super::config::LlamaConfig;
use super::weights::{
    LM_HEAD, Role, WeightSource, WeightSpec, checkpoint_layout_f32, layer_norm_names,
    reject_unexpected_tensors, weight_specs,
};
use crate::checkpoint::Checkpoint;
use crate::error::BackendError;
use kernels::huge_pages::WeightBuffer;
use kernels::{CodedMatrix, Matrix, MatrixMut, ShapeError, WeightFormat, linear_coded, linear_f32};

/// Which format each kind of host matrix is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostFormats {
    /// Embeddings, the LM head and (rounded through it) the norms: `None` is f32.
    pub(crate) table: Option<WeightFormat>,
    /// The decoder layers' linear weights: `None` is f32.
    pub(crate) linear: Option<WeightFormat>,
    /// The load's dtype, which norm scales are rounded through.
    dtype: DType,
}

/// The kernels' name for the format of a quantization (`int4/b32`, `fp8-e4m3/b1024`).
pub(crate) fn quantized_format(q: Quantization) -> WeightFormat {
    let block = q.block_size;
    match q.method {
        QuantMethod::Int8 => WeightFormat::Int8 { block },
        QuantMethod::Int4 => WeightFormat::Int4 { block },
        QuantMethod::Nf4 => WeightFormat::Nf4 { block },
        QuantMethod::Fp8 => WeightFormat::Fp8 { block },
    }
}

impl HostFormats {
    /// The formats of a load at `dtype` with `quantization` of the linear layers.
    pub(crate) fn new(dtype: DType, quantization: Option<Quantization>) -> Self {
        let table = match dtype {
            DType::F32 => None,
            DType::F16 => Some(WeightFormat::F16),
            DType::BF16 => Some(WeightFormat::Bf16),
        };
        let linear = match quantization {
            None => table,
            Some(q) => Some(quantized_format(q)),
        };
        Self {
            table,
            linear,
            dtype,
        }
    }

    /// Full precision everywhere.
    #[cfg(test)]
    pub(crate) fn f32() -> Self {
        Self::new(DType::F32, None)
    }

    /// What the products compute with, for the `compute` column: the weight formats (the
    /// layers', then the tables' where they differ) and the layers' activations (f32, or int8
    /// per 32 columns where the integer kernel runs: `kernels::activation_format`).
    pub(crate) fn scheme(&self) -> String {
        let name = |f: Option<WeightFormat>| f.map_or_else(|| "f32".to_string(), |f| f.to_string());
        let activations = self.linear.map_or("f32", kernels::activation_format);
        if self.table == self.linear {
            format!("w-{}.a-{activations}", name(self.linear))
        } else {
            format!(
                "w-{}+{}.a-{activations}",
                name(self.linear),
                name(self.table)
            )
        }
    }

    /// `values` as the load's dtype holds them: rounded to f16 or bf16 and back.
    fn round(&self, mut values: Vec<f32>) -> Vec<f32> {
        match self.dtype {
            DType::F32 => {}
            DType::F16 => values
                .iter_mut()
                .for_each(|v| *v = half::f16::from_f32(*v).to_f32()),
            DType::BF16 => values
                .iter_mut()
                .for_each(|v| *v = half::bf16::from_f32(*v).to_f32()),
        }
        values
    }
}

/// How a [`HostMatrix`] holds its values.
#[derive(Debug, Clone)]
enum Stored {
    /// f32, on huge pages where possible: every step streams it (see [`WeightBuffer`]).
    F32(WeightBuffer),
    /// A narrow format, widened in registers by `kernels::linear_coded`.
    Coded(CodedMatrix),
}

/// A matrix in PyTorch's `[out, in]` layout, row-major: a linear layer's weight or an
/// embedding table.
#[derive(Debug, Clone)]
pub(crate) struct HostMatrix {
    stored: Stored,
    out_features: usize,
    in_features: usize,
}

impl HostMatrix {
    /// The weights read, rows stacked (`[a; b; ...]`, all with the same `in_features`), stored
    /// in `format` (`None`: f32).
    fn stacked(parts: &[LinearRead], format: Option<WeightFormat>) -> Result<Self, BackendError> {
        let in_features = parts.first().map_or(0, |p| p.in_features);
        let out_features = parts.iter().map(|p| p.out_features).sum();
        let mut values = WeightBuffer::zeroed(out_features * in_features);
        let mut rest = &mut values[..];
        for p in parts {
            debug_assert_eq!(p.in_features, in_features);
            let (part, tail) = rest.split_at_mut(p.values.len().min(rest.len()));
            part.copy_from_slice(&p.values[..part.len()]);
            rest = tail;
        }
        Self::stored(values, out_features, in_features, format)
    }

    /// The matrices of a checkpoint that stores them quantized in `format` (a GGUF's Q8_0 or
    /// Q4_0), rows stacked, from their codes and scales as stored: no f32 copy is made.
    /// `None` when any part is stored otherwise (it is then read dense and encoded, which for
    /// the same format gives the same codes).
    fn from_stored_codes(
        ckpt: &Checkpoint,
        names: &[String],
        format: WeightFormat,
    ) -> Result<Option<Self>, BackendError> {
        let mut parts = Vec::with_capacity(names.len());
        for name in names {
            match ckpt.blocks(name)? {
                Some(blocks) if blocks.weight_format() == format => parts.push(blocks),
                _ => return Ok(None),
            }
        }
        let Some(in_features) = parts.first().map(|p| p.cols()) else {
            return Ok(None);
        };
        if parts.iter().any(|p| p.cols() != in_features) {
            return Ok(None);
        }
        let out_features: usize = parts.iter().map(|p| p.rows()).sum();
        let code_row = parts[0].code_bytes_per_row();
        let blocks_per_row = parts[0].blocks_per_row();
        let mut codes = vec![0u8; out_features * code_row];
        let mut scales = vec![0f32; out_features * blocks_per_row];
        let mut row = 0;
        for part in &parts {
            let rows = row..row + part.rows();
            part.copy_into(
                &mut codes[rows.start * code_row..rows.end * code_row],
                &mut scales[rows.start * blocks_per_row..rows.end * blocks_per_row],
            )
            .map_err(|e| BackendError::ModelFile {
                path: ckpt.origin().to_path_buf(),
                problem: crate::error::FileProblem::Gguf(e),
            })?;
            row = rows.end;
        }
        let coded = CodedMatrix::from_codes(format, out_features, in_features, &codes, scales)?;
        Ok(Some(Self {
            stored: Stored::Coded(coded),
            out_features,
            in_features,
        }))
    }

    /// `values` (`[out_features, in_features]`) stored in `format`.
    fn stored(
        values: WeightBuffer,
        out_features: usize,
        in_features: usize,
        format: Option<WeightFormat>,
    ) -> Result<Self, BackendError> {
        let stored = match format {
            None => Stored::F32(values),
            Some(format) => Stored::Coded(CodedMatrix::encode(
                format,
                &values,
                out_features,
                in_features,
            )?),
        };
        Ok(Self {
            stored,
            out_features,
            in_features,
        })
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ`, adding its FLOPs to `flops`.
    pub(super) fn apply(
        &self,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        flops: &AtomicU64,
    ) -> Result<(), ShapeError> {
        let x = Matrix::new(x, rows, self.in_features)?;
        let y = MatrixMut::new(y, rows, self.out_features)?;
        match &self.stored {
            Stored::F32(w) => {
                linear_f32(x, Matrix::new(w, self.out_features, self.in_features)?, y)?
            }
            Stored::Coded(w) => linear_coded(x, w, y)?,
        }
        flops.fetch_add(
            2 * (rows * self.in_features * self.out_features) as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Row `r` as f32 into `out` (`in_features` long); `None` when there is no such row.
    pub(super) fn row_into(&self, r: usize, out: &mut [f32]) -> Option<()> {
        if r >= self.out_features || out.len() != self.in_features {
            return None;
        }
        match &self.stored {
            Stored::F32(w) => {
                out.copy_from_slice(&w[r * self.in_features..(r + 1) * self.in_features])
            }
            Stored::Coded(w) => w.dequantize_row(r, out),
        }
        Some(())
    }

    /// Whether the products of this matrix at `m` rows run on more than one thread.
    pub(super) fn splits(&self, m: usize) -> bool {
        match &self.stored {
            Stored::F32(_) => kernels::linear_splits(m, self.in_features, self.out_features),
            Stored::Coded(w) => {
                kernels::linear_coded_splits(w.format(), m, self.in_features, self.out_features)
            }
        }
    }

    /// Bytes held in memory.
    pub(crate) fn bytes(&self) -> u64 {
        match &self.stored {
            Stored::F32(w) => size_of_val::<[f32]>(w) as u64,
            Stored::Coded(w) => w.bytes(),
        }
    }
}

/// A linear weight as the checkpoint (or the random initialiser) gives it, before it is
/// stacked into a [`HostMatrix`].
struct LinearRead {
    values: Vec<f32>,
    out_features: usize,
    in_features: usize,
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub(super) struct HostLayer {
    /// `[hidden]`: the attention block's input norm.
    pub(super) input_norm: Vec<f32>,
    /// `q_proj`, `k_proj` and `v_proj` stacked (as Phi-3 stores them):
    /// `[(heads + 2·kv_heads)·head_dim, hidden]`.
    pub(super) qkv: HostMatrix,
    /// The q, k and v biases stacked like `qkv`'s rows (Qwen2).
    pub(super) qkv_bias: Option<Vec<f32>>,
    /// `[head_dim]` each: the per-head query and key norms (Qwen3).
    pub(super) qk_norm: Option<[Vec<f32>; 2]>,
    /// `[hidden, heads·head_dim]`.
    pub(super) o_proj: HostMatrix,
    /// `[hidden]`: the attention output's norm (Gemma 2).
    pub(super) attn_out_norm: Option<Vec<f32>>,
    /// `[hidden]`: the MLP block's input norm.
    pub(super) mlp_norm: Vec<f32>,
    /// `[hidden]`: the MLP output's norm (Gemma 2).
    pub(super) mlp_out_norm: Option<Vec<f32>>,
    /// `gate_proj` then `up_proj` (as Phi-3 stores them): `[2·intermediate, hidden]`.
    pub(super) gate_up: HostMatrix,
    /// `[hidden, intermediate]`.
    pub(super) down_proj: HostMatrix,
}

/// Every weight of a Llama model in host memory.
#[derive(Debug, Clone)]
pub(crate) struct HostWeights {
    /// `[vocab, hidden]`; doubles as the output projection when embeddings are tied (a tied
    /// LM head streams it every step).
    pub(super) embed_tokens: HostMatrix,
    /// The decoder layers, first to last.
    pub(super) layers: Vec<HostLayer>,
    /// `[hidden]`: the final RMSNorm scale.
    pub(super) norm: Vec<f32>,
    /// `[vocab, hidden]`; `None` when tied.
    pub(super) lm_head: Option<HostMatrix>,
    /// The formats the matrices are stored in.
    pub(super) formats: HostFormats,
}

impl HostWeights {
    /// Reads (or draws) every tensor `config` requires and stores it as `formats` says.
    /// Random weights are the same values the burn path draws for the same seed, so both paths
    /// run the same model.
    pub(crate) fn build(
        config: &LlamaConfig,
        source: &WeightSource<'_>,
        formats: HostFormats,
    ) -> Result<Self, RuntimeError> {
        let specs = weight_specs(config);
        if let WeightSource::Checkpoint(ckpt) = source {
            reject_unexpected_tensors(ckpt, &specs, config)?;
        }
        if u32::try_from(specs.len()).is_err() {
            return Err(BackendError::Internal("model has more than 2^32 tensors".into()).into());
        }
        // The index is the tensor's position in `specs`, which seeds its random values.
        let by_name: HashMap<&str, (u32, &WeightSpec)> = (0u32..)
            .zip(&specs)
            .map(|(index, spec)| (spec.name.as_str(), (index, spec)))
            .collect();
        let lookup = |name: &str| {
            by_name.get(name).copied().ok_or_else(|| {
                RuntimeError::from(BackendError::Internal(format!(
                    "tensor `{name}` is not in the spec"
                )))
            })
        };
        let read = |name: &str| -> Result<Vec<f32>, RuntimeError> {
            let (index, spec) = lookup(name)?;
            Ok(formats.round(checkpoint_layout_f32(spec, index, source, config)?))
        };
        let linear = |name: &str| -> Result<LinearRead, RuntimeError> {
            let (index, spec) = lookup(name)?;
            match (spec.role, spec.shape.as_slice()) {
                (Role::Linear, &[out_features, in_features]) => Ok(LinearRead {
                    values: checkpoint_layout_f32(spec, index, source, config)?,
                    out_features,
                    in_features,
                }),
                _ => Err(BackendError::Internal(format!("`{name}` is not a linear weight")).into()),
            }
        };
        // A decoder linear the checkpoint stores in the load's quantized format is taken as
        // stored; any other is read dense and encoded.
        let linears = |names: &[String]| -> Result<HostMatrix, RuntimeError> {
            if let (WeightSource::Checkpoint(ckpt), Some(format)) = (source, formats.linear)
                && let Some(matrix) = HostMatrix::from_stored_codes(ckpt, names, format)?
            {
                return Ok(matrix);
            }
            let parts = names
                .iter()
                .map(|n| linear(n))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(HostMatrix::stacked(&parts, formats.linear)?)
        };
        let stacked = |parts: &[LinearRead], format| -> Result<HostMatrix, RuntimeError> {
            Ok(HostMatrix::stacked(parts, format)?)
        };
        let matrix = |name: &str| linears(&[name.to_string()]);
        let embed_tokens = {
            let (_, spec) = lookup("model.embed_tokens.weight")?;
            let values = WeightBuffer::from_slice(&read("model.embed_tokens.weight")?);
            match spec.shape.as_slice() {
                &[vocab, hidden] => HostMatrix::stored(values, vocab, hidden, formats.table)?,
                _ => {
                    return Err(BackendError::Internal(
                        "the embedding table is not a matrix".into(),
                    )
                    .into());
                }
            }
        };
        let arch = &config.arch;
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            let names = |suffixes: &[&str]| -> Vec<String> {
                suffixes.iter().map(|n| format!("{p}.{n}.weight")).collect()
            };
            let (qkv, gate_up) = if arch.fused_projections {
                (
                    linears(&names(&["self_attn.qkv_proj"]))?,
                    linears(&names(&["mlp.gate_up_proj"]))?,
                )
            } else {
                (
                    linears(&names(&[
                        "self_attn.q_proj",
                        "self_attn.k_proj",
                        "self_attn.v_proj",
                    ]))?,
                    linears(&names(&["mlp.gate_proj", "mlp.up_proj"]))?,
                )
            };
            let qkv_bias = if arch.qkv_bias {
                let mut bias = read(&format!("{p}.self_attn.q_proj.bias"))?;
                bias.extend(read(&format!("{p}.self_attn.k_proj.bias"))?);
                bias.extend(read(&format!("{p}.self_attn.v_proj.bias"))?);
                Some(bias)
            } else {
                None
            };
            let qk_norm = if arch.qk_norm {
                Some([
                    read(&format!("{p}.self_attn.q_norm.weight"))?,
                    read(&format!("{p}.self_attn.k_norm.weight"))?,
                ])
            } else {
                None
            };
            let (input, attn_out, mlp, mlp_out) = layer_norm_names(config, i);
            layers.push(HostLayer {
                input_norm: read(&input)?,
                qkv,
                qkv_bias,
                qk_norm,
                o_proj: matrix(&format!("{p}.self_attn.o_proj.weight"))?,
                attn_out_norm: attn_out.map(|n| read(&n)).transpose()?,
                mlp_norm: read(&mlp)?,
                mlp_out_norm: mlp_out.map(|n| read(&n)).transpose()?,
                gate_up,
                down_proj: matrix(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let norm = read("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(stacked(&[linear(LM_HEAD)?], formats.table)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            formats,
        })
    }

    /// Bytes the weights hold in memory.
    pub(crate) fn bytes(&self) -> u64 {
        let vectors = |v: &[f32]| size_of_val(v) as u64;
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                let optional = |v: &Option<Vec<f32>>| v.as_deref().map_or(0, vectors);
                vectors(&l.input_norm)
                    + vectors(&l.mlp_norm)
                    + optional(&l.qkv_bias)
                    + l.qk_norm
                        .as_ref()
                        .map_or(0, |[q, k]| vectors(q) + vectors(k))
                    + optional(&l.attn_out_norm)
                    + optional(&l.mlp_out_norm)
                    + l.qkv.bytes()
                    + l.o_proj.bytes()
                    + l.gate_up.bytes()
                    + l.down_proj.bytes()
            })
            .sum();
        self.embed_tokens.bytes()
            + layers
            + vectors(&self.norm)
            + self.lm_head.as_ref().map_or(0, HostMatrix::bytes)
    }
}
