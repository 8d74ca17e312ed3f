//! The host forward pass's weights: every tensor of a Llama model as f32 in PyTorch's
//! `[out, in]` layout, with the query, key and value projections stacked into one matrix and
//! gate and up into another (one product each per layer), on huge pages where possible.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use api::runtime::RuntimeError;

use super::config::LlamaConfig;
use super::weights::{
    LM_HEAD, Role, WeightSource, WeightSpec, checkpoint_layout_f32, reject_unexpected_tensors,
    weight_specs,
};
use crate::error::BackendError;
use kernels::huge_pages::WeightBuffer;
use kernels::{Matrix, MatrixMut, ShapeError, linear_f32};

/// A linear layer's weight in PyTorch's `[out, in]` layout, row-major.
#[derive(Debug, Clone)]
pub(crate) struct HostMatrix {
    /// On huge pages where possible: every step streams it (see [`WeightBuffer`]).
    values: WeightBuffer,
    out_features: usize,
    in_features: usize,
}

impl HostMatrix {
    fn new(values: WeightBuffer, out_features: usize, in_features: usize) -> Self {
        debug_assert_eq!(values.len(), out_features * in_features);
        Self {
            values,
            out_features,
            in_features,
        }
    }

    /// The weights read, rows stacked (`[a; b; ...]`, all with the same `in_features`), each
    /// copied once into the matrix's [`WeightBuffer`].
    fn stacked(parts: &[LinearRead]) -> Self {
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
        Self::new(values, out_features, in_features)
    }

    /// `y[rows, out] = x[rows, in] · Wᵀ`, adding its FLOPs to `flops`.
    pub(super) fn apply(
        &self,
        x: &[f32],
        rows: usize,
        y: &mut [f32],
        flops: &AtomicU64,
    ) -> Result<(), ShapeError> {
        product(
            &self.values,
            self.out_features,
            self.in_features,
            x,
            rows,
            y,
            flops,
        )
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
    /// `[hidden]`: the attention block's RMSNorm scale.
    pub(super) input_norm: Vec<f32>,
    /// `q_proj`, `k_proj` and `v_proj` stacked: `[(heads + 2·kv_heads)·head_dim, hidden]`.
    pub(super) qkv: HostMatrix,
    /// `[hidden, heads·head_dim]`.
    pub(super) o_proj: HostMatrix,
    /// `[hidden]`: the MLP block's RMSNorm scale.
    pub(super) post_attention_norm: Vec<f32>,
    /// `gate_proj` then `up_proj`: `[2·intermediate, hidden]`.
    pub(super) gate_up: HostMatrix,
    /// `[hidden, intermediate]`.
    pub(super) down_proj: HostMatrix,
}

/// Every weight of a Llama model as host f32.
#[derive(Debug, Clone)]
pub(crate) struct HostWeights {
    /// `[vocab, hidden]`; doubles as the output projection when embeddings are tied.
    /// On huge pages where possible: a tied LM head streams it every step.
    pub(super) embed_tokens: WeightBuffer,
    /// The decoder layers, first to last.
    pub(super) layers: Vec<HostLayer>,
    /// `[hidden]`: the final RMSNorm scale.
    pub(super) norm: Vec<f32>,
    /// `[vocab, hidden]`; `None` when tied.
    pub(super) lm_head: Option<HostMatrix>,
}

impl HostWeights {
    /// Reads (or draws) every tensor `config` requires in f32. Random weights are the same
    /// values the burn path draws for the same seed, so both paths run the same model.
    pub(crate) fn build(
        config: &LlamaConfig,
        source: &WeightSource<'_>,
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
            Ok(checkpoint_layout_f32(spec, index, source, config)?)
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
        let matrix = |name: &str| linear(name).map(|w| HostMatrix::stacked(&[w]));
        let embed_tokens = WeightBuffer::from_slice(&read("model.embed_tokens.weight")?);
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            layers.push(HostLayer {
                input_norm: read(&format!("{p}.input_layernorm.weight"))?,
                qkv: HostMatrix::stacked(&[
                    linear(&format!("{p}.self_attn.q_proj.weight"))?,
                    linear(&format!("{p}.self_attn.k_proj.weight"))?,
                    linear(&format!("{p}.self_attn.v_proj.weight"))?,
                ]),
                o_proj: matrix(&format!("{p}.self_attn.o_proj.weight"))?,
                post_attention_norm: read(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up: HostMatrix::stacked(&[
                    linear(&format!("{p}.mlp.gate_proj.weight"))?,
                    linear(&format!("{p}.mlp.up_proj.weight"))?,
                ]),
                down_proj: matrix(&format!("{p}.mlp.down_proj.weight"))?,
            });
        }
        let norm = read("model.norm.weight")?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(matrix(LM_HEAD)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }
}

/// `y[rows, out] = x[rows, in] · wᵀ` for `w` in `[out, in]` layout, counted in `flops`.
pub(super) fn product(
    w: &[f32],
    out_features: usize,
    in_features: usize,
    x: &[f32],
    rows: usize,
    y: &mut [f32],
    flops: &AtomicU64,
) -> Result<(), ShapeError> {
    linear_f32(
        Matrix::new(x, rows, in_features)?,
        Matrix::new(w, out_features, in_features)?,
        MatrixMut::new(y, rows, out_features)?,
    )?;
    flops.fetch_add(
        2 * (rows * in_features * out_features) as u64,
        Ordering::Relaxed,
    );
    Ok(())
}
