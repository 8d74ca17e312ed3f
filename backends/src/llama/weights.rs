//! The Llama parameter set: which tensors a config implies (checkpoint names and shapes), and
//! building them on a device from a checkpoint or from seeded random values.
//!
//! Linear weights are stored transposed, `[in, out]`, so the forward pass is a plain
//! `x @ W` on a `[rows, in]` view with no per-call transpose.

use std::collections::{HashMap, HashSet};

use super::linear::Linear;
use api::runtime::{DType, RuntimeError};

use crate::error::BackendError;
use burn::tensor::backend::Backend;
use burn::tensor::{DType as BurnDType, Tensor, TensorData};

use super::config::LlamaConfig;
use super::families::NormPlacement;
use crate::checkpoint::{Checkpoint, transposed};
use crate::host::{RunFloat, burn_dtype, with_run_float};
use crate::random_init;

/// Name of the (possibly tied) output projection in checkpoints.
pub(crate) const LM_HEAD: &str = "lm_head.weight";

/// How a tensor is used, which decides its on-device layout and its random init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `[vocab, hidden]` lookup table, kept as stored.
    Embedding,
    /// Stored `[out, in]`, kept as `[in, out]`.
    Linear,
    /// RMSNorm scale, `[hidden]` (or `[head_dim]` for per-head q/k norms).
    Norm,
    /// A linear layer's bias, `[out]`.
    Bias,
}

/// One tensor a config requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WeightSpec {
    /// Checkpoint name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape as stored in a Hugging Face checkpoint.
    pub shape: Vec<usize>,
    pub role: Role,
}

impl WeightSpec {
    fn new(name: impl Into<String>, shape: &[usize], role: Role) -> Self {
        Self {
            name: name.into(),
            shape: shape.to_vec(),
            role,
        }
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Shape on the device (linear weights transposed).
    fn device_shape(&self) -> Vec<usize> {
        match (self.role, self.shape.as_slice()) {
            (Role::Linear, [out, inp]) => vec![*inp, *out],
            _ => self.shape.clone(),
        }
    }
}

/// Every tensor of a model with this config, in checkpoint order (Llama's order, a family's
/// extra tensors beside the ones they belong to). A tied model has no `lm_head.weight`: the
/// embedding doubles as the output projection.
pub(crate) fn weight_specs(c: &LlamaConfig) -> Vec<WeightSpec> {
    let (h, q, kv, ff, d) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
        c.head_dim,
    );
    let arch = &c.arch;
    let mut specs = vec![WeightSpec::new(
        "model.embed_tokens.weight",
        &[c.vocab_size, h],
        Role::Embedding,
    )];
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        let spec =
            |name: &str, shape: &[usize], role| WeightSpec::new(format!("{p}.{name}"), shape, role);
        specs.push(spec("input_layernorm.weight", &[h], Role::Norm));
        if arch.fused_projections {
            specs.push(spec(
                "self_attn.qkv_proj.weight",
                &[q + 2 * kv, h],
                Role::Linear,
            ));
        } else {
            specs.extend([
                spec("self_attn.q_proj.weight", &[q, h], Role::Linear),
                spec("self_attn.k_proj.weight", &[kv, h], Role::Linear),
                spec("self_attn.v_proj.weight", &[kv, h], Role::Linear),
            ]);
        }
        if arch.qkv_bias {
            specs.extend([
                spec("self_attn.q_proj.bias", &[q], Role::Bias),
                spec("self_attn.k_proj.bias", &[kv], Role::Bias),
                spec("self_attn.v_proj.bias", &[kv], Role::Bias),
            ]);
        }
        if arch.qk_norm {
            specs.extend([
                spec("self_attn.q_norm.weight", &[d], Role::Norm),
                spec("self_attn.k_norm.weight", &[d], Role::Norm),
            ]);
        }
        specs.extend([
            spec("self_attn.o_proj.weight", &[h, q], Role::Linear),
            spec("post_attention_layernorm.weight", &[h], Role::Norm),
        ]);
        if arch.norms == NormPlacement::Sandwich {
            specs.extend([
                spec("pre_feedforward_layernorm.weight", &[h], Role::Norm),
                spec("post_feedforward_layernorm.weight", &[h], Role::Norm),
            ]);
        }
        if arch.fused_projections {
            specs.push(spec("mlp.gate_up_proj.weight", &[2 * ff, h], Role::Linear));
        } else {
            specs.extend([
                spec("mlp.gate_proj.weight", &[ff, h], Role::Linear),
                spec("mlp.up_proj.weight", &[ff, h], Role::Linear),
            ]);
        }
        specs.push(spec("mlp.down_proj.weight", &[h, ff], Role::Linear));
    }
    specs.push(WeightSpec::new("model.norm.weight", &[h], Role::Norm));
    if !c.tie_word_embeddings {
        specs.push(WeightSpec::new(LM_HEAD, &[c.vocab_size, h], Role::Linear));
    }
    specs
}

/// The checkpoint names of layer `i`'s norms, by the role they play in the forward pass:
/// `(input, attention output, MLP input, MLP output)`. Llama's `post_attention_layernorm` is
/// its MLP's input norm; Gemma 2's is the attention output's, its MLP's being
/// `pre_feedforward_layernorm`.
pub(crate) fn layer_norm_names(
    c: &LlamaConfig,
    i: usize,
) -> (String, Option<String>, String, Option<String>) {
    let p = format!("model.layers.{i}");
    match c.arch.norms {
        NormPlacement::Pre => (
            format!("{p}.input_layernorm.weight"),
            None,
            format!("{p}.post_attention_layernorm.weight"),
            None,
        ),
        NormPlacement::Sandwich => (
            format!("{p}.input_layernorm.weight"),
            Some(format!("{p}.post_attention_layernorm.weight")),
            format!("{p}.pre_feedforward_layernorm.weight"),
            Some(format!("{p}.post_feedforward_layernorm.weight")),
        ),
    }
}

/// Total parameter count of a config (tied weights counted once).
pub(crate) fn parameter_count(c: &LlamaConfig) -> u64 {
    weight_specs(c).iter().map(|s| s.numel() as u64).sum()
}

/// One decoder layer's tensors.
#[derive(Debug, Clone)]
pub(crate) struct LayerWeights<B: Backend> {
    /// `[hidden]`: the attention block's input norm.
    pub input_norm: Tensor<B, 1>,
    /// `[hidden, heads * head_dim]`
    pub q_proj: Linear<B>,
    /// `[hidden, kv_heads * head_dim]`
    pub k_proj: Linear<B>,
    /// `[hidden, kv_heads * head_dim]`
    pub v_proj: Linear<B>,
    /// The query, key and value biases (Qwen2), `[heads * head_dim]`, `[kv_heads * head_dim]`
    /// twice.
    pub qkv_bias: Option<[Tensor<B, 1>; 3]>,
    /// `[head_dim]` each: the per-head query and key norms (Qwen3).
    pub qk_norm: Option<[Tensor<B, 1>; 2]>,
    /// `[heads * head_dim, hidden]`
    pub o_proj: Linear<B>,
    /// `[hidden]`: the attention output's norm (Gemma 2's sandwich).
    pub attn_out_norm: Option<Tensor<B, 1>>,
    /// `[hidden]`: the MLP block's input norm.
    pub mlp_norm: Tensor<B, 1>,
    /// `[hidden]`: the MLP output's norm (Gemma 2's sandwich).
    pub mlp_out_norm: Option<Tensor<B, 1>>,
    /// `[hidden, intermediate]`
    pub gate_proj: Linear<B>,
    /// `[hidden, intermediate]`
    pub up_proj: Linear<B>,
    /// `[intermediate, hidden]`
    pub down_proj: Linear<B>,
}

impl<B: Backend> LayerWeights<B> {
    /// The linear layers with their checkpoint names (a fused checkpoint's parts under the
    /// separate names they are computed as).
    pub(crate) fn linears(&self) -> [(&'static str, &Linear<B>); 7] {
        [
            ("self_attn.q_proj", &self.q_proj),
            ("self_attn.k_proj", &self.k_proj),
            ("self_attn.v_proj", &self.v_proj),
            ("self_attn.o_proj", &self.o_proj),
            ("mlp.gate_proj", &self.gate_proj),
            ("mlp.up_proj", &self.up_proj),
            ("mlp.down_proj", &self.down_proj),
        ]
    }

    /// The linear layers with their checkpoint names, for quantization.
    pub(crate) fn linears_mut(&mut self) -> [(&'static str, &mut Linear<B>); 7] {
        [
            ("self_attn.q_proj", &mut self.q_proj),
            ("self_attn.k_proj", &mut self.k_proj),
            ("self_attn.v_proj", &mut self.v_proj),
            ("self_attn.o_proj", &mut self.o_proj),
            ("mlp.gate_proj", &mut self.gate_proj),
            ("mlp.up_proj", &mut self.up_proj),
            ("mlp.down_proj", &mut self.down_proj),
        ]
    }
}

/// All tensors of a Llama model, on one device at one dtype.
#[derive(Debug, Clone)]
pub(crate) struct LlamaWeights<B: Backend> {
    /// `[vocab, hidden]`
    pub embed_tokens: Tensor<B, 2>,
    pub layers: Vec<LayerWeights<B>>,
    pub norm: Tensor<B, 1>,
    /// `[hidden, vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
}

/// Where tensor values come from.
pub(crate) enum WeightSource<'c> {
    Checkpoint(&'c Checkpoint),
    Random { seed: u64 },
}

impl<B: Backend> LlamaWeights<B> {
    /// Builds every tensor `config` requires, one at a time so at most one host buffer is alive
    /// besides what is already on the device.
    pub(crate) fn build(
        config: &LlamaConfig,
        source: &WeightSource<'_>,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self, RuntimeError> {
        let specs = weight_specs(config);
        if let WeightSource::Checkpoint(ckpt) = source {
            reject_unexpected_tensors(ckpt, &specs, config)?;
        }
        let run_dtype: BurnDType = burn_dtype(dtype);
        let mut matrices: HashMap<String, Tensor<B, 2>> = HashMap::new();
        let mut vectors: HashMap<String, Tensor<B, 1>> = HashMap::new();
        for (index, spec) in specs.iter().enumerate() {
            let index = u32::try_from(index)
                .map_err(|_| BackendError::Internal("model has more than 2^32 tensors".into()))?;
            let data = with_run_float!(dtype, T => TensorData::new(
                host_values::<T>(spec, index, source, config)?,
                spec.device_shape()
            ));
            match spec.role {
                Role::Norm | Role::Bias => {
                    vectors.insert(
                        spec.name.clone(),
                        Tensor::from_data(data, (device, run_dtype)),
                    );
                }
                Role::Linear | Role::Embedding => {
                    matrices.insert(
                        spec.name.clone(),
                        Tensor::from_data(data, (device, run_dtype)),
                    );
                }
            }
        }
        // Every name below was produced by `weight_specs` above, so lookups cannot miss; the
        // error path only guards against the two lists drifting apart.
        let missing = |name: &str| BackendError::Internal(format!("tensor `{name}` was not built"));
        let mut matrix = |name: String| matrices.remove(&name).ok_or_else(|| missing(&name));
        let embed_tokens = matrix("model.embed_tokens.weight".into())?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Linear::Dense(matrix(LM_HEAD.into())?))
        };
        let mut vector = |name: &str| vectors.remove(name).ok_or_else(|| missing(name));
        let arch = &config.arch;
        let (q, kv, ff) = (
            config.num_heads * config.head_dim,
            config.num_kv_heads * config.head_dim,
            config.intermediate_size,
        );
        let mut layers = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            let (q_proj, k_proj, v_proj, gate_proj, up_proj) = if arch.fused_projections {
                // Device layout `[in, out]`: the fused outputs are column ranges.
                let qkv = matrix(format!("{p}.self_attn.qkv_proj.weight"))?;
                let gate_up = matrix(format!("{p}.mlp.gate_up_proj.weight"))?;
                let columns = |m: &Tensor<B, 2>, range: std::ops::Range<usize>| {
                    let rows = m.dims()[0];
                    Linear::Dense(m.clone().slice([0..rows, range]))
                };
                (
                    columns(&qkv, 0..q),
                    columns(&qkv, q..q + kv),
                    columns(&qkv, q + kv..q + 2 * kv),
                    columns(&gate_up, 0..ff),
                    columns(&gate_up, ff..2 * ff),
                )
            } else {
                (
                    Linear::Dense(matrix(format!("{p}.self_attn.q_proj.weight"))?),
                    Linear::Dense(matrix(format!("{p}.self_attn.k_proj.weight"))?),
                    Linear::Dense(matrix(format!("{p}.self_attn.v_proj.weight"))?),
                    Linear::Dense(matrix(format!("{p}.mlp.gate_proj.weight"))?),
                    Linear::Dense(matrix(format!("{p}.mlp.up_proj.weight"))?),
                )
            };
            let qkv_bias = if arch.qkv_bias {
                Some([
                    vector(&format!("{p}.self_attn.q_proj.bias"))?,
                    vector(&format!("{p}.self_attn.k_proj.bias"))?,
                    vector(&format!("{p}.self_attn.v_proj.bias"))?,
                ])
            } else {
                None
            };
            let qk_norm = if arch.qk_norm {
                Some([
                    vector(&format!("{p}.self_attn.q_norm.weight"))?,
                    vector(&format!("{p}.self_attn.k_norm.weight"))?,
                ])
            } else {
                None
            };
            let (input, attn_out, mlp, mlp_out) = layer_norm_names(config, i);
            layers.push(LayerWeights {
                input_norm: vector(&input)?,
                q_proj,
                k_proj,
                v_proj,
                qkv_bias,
                qk_norm,
                o_proj: Linear::Dense(matrix(format!("{p}.self_attn.o_proj.weight"))?),
                attn_out_norm: attn_out.map(|n| vector(&n)).transpose()?,
                mlp_norm: vector(&mlp)?,
                mlp_out_norm: mlp_out.map(|n| vector(&n)).transpose()?,
                gate_proj,
                up_proj,
                down_proj: Linear::Dense(matrix(format!("{p}.mlp.down_proj.weight"))?),
            });
        }
        let norm = vector("model.norm.weight")?;
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }
}

/// One tensor's values at the run dtype, in device layout.
fn host_values<T: RunFloat>(
    spec: &WeightSpec,
    index: u32,
    source: &WeightSource<'_>,
    config: &LlamaConfig,
) -> Result<Vec<T>, BackendError> {
    match source {
        WeightSource::Checkpoint(ckpt) => {
            if stored_as_offset(spec, config) {
                // The scale `1 + w` in f32, then rounded to the run dtype once.
                let values = ckpt.read::<f32>(&spec.name, &spec.shape, false)?;
                return Ok(values.into_iter().map(|w| T::from_f32(1.0 + w)).collect());
            }
            ckpt.read::<T>(&spec.name, &spec.shape, spec.role == Role::Linear)
        }
        WeightSource::Random { seed } => Ok(match spec.role {
            // transformers initialises RMSNorm scales to one (Gemma's offsets to zero, the
            // same scale) and biases to zero.
            Role::Norm => vec![T::from_f32(1.0); spec.numel()],
            Role::Bias => vec![T::from_f32(0.0); spec.numel()],
            Role::Linear | Role::Embedding => {
                random_init::normal::<T>(*seed, index, spec.numel(), config.initializer_range)
            }
        }),
    }
}

/// Whether the checkpoint stores this norm's scale as an offset from one (Gemma's
/// `(1 + w)`), which the loader adds so both passes see the scale itself.
fn stored_as_offset(spec: &WeightSpec, config: &LlamaConfig) -> bool {
    spec.role == Role::Norm && config.arch.norm_weight_offset
}

/// One tensor's f32 values in the checkpoint's layout (`[out, in]` for a linear weight), for
/// the host forward pass. Random values are the ones [`LlamaWeights::build`] draws for the same
/// seed, transposed back, so both paths run the same model.
pub(crate) fn checkpoint_layout_f32(
    spec: &WeightSpec,
    index: u32,
    source: &WeightSource<'_>,
    config: &LlamaConfig,
) -> Result<Vec<f32>, BackendError> {
    match (source, spec.role, spec.shape.as_slice()) {
        (WeightSource::Checkpoint(_), Role::Norm, _) => {
            host_values::<f32>(spec, index, source, config)
        }
        (WeightSource::Checkpoint(ckpt), _, _) => ckpt.read::<f32>(&spec.name, &spec.shape, false),
        (WeightSource::Random { .. }, Role::Linear, &[out, inp]) => {
            let device_layout = host_values::<f32>(spec, index, source, config)?;
            Ok(transposed(&device_layout, inp, out))
        }
        (WeightSource::Random { .. }, _, _) => host_values::<f32>(spec, index, source, config),
    }
}

/// A tensor the config does not account for means the checkpoint is a different architecture
/// (biases, extra norms, ...) than the config claims; computing without it would be wrong.
pub(crate) fn reject_unexpected_tensors(
    ckpt: &Checkpoint,
    specs: &[WeightSpec],
    config: &LlamaConfig,
) -> Result<(), RuntimeError> {
    let expected: HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let mut unexpected: Vec<&str> = ckpt
        .names()
        .filter(|n| !expected.contains(n))
        // Old checkpoints persist RoPE buffers; they are recomputed from the config.
        .filter(|n| !n.ends_with(".rotary_emb.inv_freq"))
        // transformers ignores a stored lm_head when embeddings are tied, and so do we.
        .filter(|n| !(config.tie_word_embeddings && *n == LM_HEAD))
        .collect();
    if unexpected.is_empty() {
        return Ok(());
    }
    unexpected.sort_unstable();
    let shown: Vec<&str> = unexpected.iter().take(5).copied().collect();
    Err(RuntimeError::InvalidModelFile {
        path: ckpt.origin().display().to_string(),
        reason: format!(
            "{} tensor(s) not used by {} with this config, e.g. `{}`",
            unexpected.len(),
            config.arch.family.causal_lm_class(),
            shown.join("`, `")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::rope::{RopeConfig, RopeScaling};

    fn config(tied: bool) -> LlamaConfig {
        LlamaConfig {
            hidden_size: 64,
            intermediate_size: 172,
            num_layers: 5,
            num_heads: 8,
            num_kv_heads: 4,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope: RopeConfig {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
            tie_word_embeddings: tied,
            vocab_size: 512,
            max_position_embeddings: 512,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            initializer_range: 0.02,
            arch: crate::llama::families::Architecture::llama(5),
        }
    }

    #[test]
    fn stories260k_parameter_count() {
        // stories260K: 512*64 embedding, 5 layers of (2*64 norms + 64*64 q + 2*32*64 k,v +
        // 64*64 o + 3*172*64 mlp), final norm; "260K" is the tied count.
        let per_layer = 2 * 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 172 * 64;
        let tied = 512 * 64 + 5 * per_layer + 64;
        assert_eq!(parameter_count(&config(true)), tied as u64);
        assert_eq!(parameter_count(&config(false)), (tied + 512 * 64) as u64);
    }

    #[test]
    fn linear_device_shape_is_transposed() {
        let specs = weight_specs(&config(true));
        let k = specs
            .iter()
            .find(|s| s.name == "model.layers.0.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(k.shape, vec![32, 64]);
        assert_eq!(k.device_shape(), vec![64, 32]);
        assert!(!specs.iter().any(|s| s.name == LM_HEAD));
    }
}
