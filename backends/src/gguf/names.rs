//! GGUF tensor names ↔ Hugging Face names for each supported architecture, and the value
//! conversions llama.cpp's `convert_hf_to_gguf.py` applied that reading must undo.
//!
//! Names follow gguf-py's `TENSOR_NAMES` and `tensor_mapping.py`: globals (`token_embd`,
//! `output_norm`, `output`) and per-block tensors `blk.N.<part>` ↔ `model.layers.N.<module>`,
//! each with a `.weight` or `.bias` suffix. Where the converter changed values:
//!
//! - llama (Llama, Mistral): `LlamaModel.permute` reorders each head's rows of `q_proj` and
//!   `k_proj` (weight and bias) from Hugging Face's rotate-half layout to GGML's interleaved
//!   pairs: GGUF row `h·d + 2i + j` holds Hugging Face row `h·d + j·d/2 + i` (`d` rows per head,
//!   `i < d/2`, `j ∈ {0, 1}`). Whole rows move, so quantized blocks move intact.
//! - gemma2: every tensor whose name ends in `norm.weight` is stored as `1 + w` (Gemma's RMSNorm
//!   scales by `1 + w`; llama.cpp's by the stored value).
//! - phi3: nothing; the fused `qkv_proj` and `gate_up_proj` are stored fused (`attn_qkv`,
//!   `ffn_up`) and exposed under their Hugging Face fused names.
//! - qwen2, qwen3: nothing.

/// The architectures llmeff maps, as error messages list them.
pub(crate) const SUPPORTED_ARCHITECTURES: &str =
    "llama (Llama and Mistral), qwen2, qwen3, phi3, gemma2";

/// A GGUF `general.architecture` llmeff maps onto a Hugging Face family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `llama`: Hugging Face's Llama and Mistral (llama.cpp converts both to it).
    Llama,
    /// `qwen2`.
    Qwen2,
    /// `qwen3`.
    Qwen3,
    /// `phi3`.
    Phi3,
    /// `gemma2`.
    Gemma2,
}

impl Architecture {
    /// The architecture named by `general.architecture`, if llmeff maps it.
    pub(crate) fn from_gguf(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "phi3" => Self::Phi3,
            "gemma2" => Self::Gemma2,
            _ => return None,
        })
    }

    /// The `general.architecture` string (also the prefix of its metadata keys).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Phi3 => "phi3",
            Self::Gemma2 => "gemma2",
        }
    }

    /// Per-block tensors: (GGUF part after `blk.N.`, Hugging Face module after
    /// `model.layers.N.`).
    fn block_parts(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Llama | Self::Qwen2 => &LLAMA_BLOCK,
            Self::Qwen3 => &QWEN3_BLOCK,
            Self::Phi3 => &PHI3_BLOCK,
            Self::Gemma2 => &GEMMA2_BLOCK,
        }
    }
}

/// Tensors outside the blocks, shared by every architecture.
const GLOBAL: [(&str, &str); 3] = [
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
];

/// Llama's, Mistral's and Qwen 2's blocks (Qwen 2's q/k/v biases are the `.bias` twins).
const LLAMA_BLOCK: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Qwen 3's blocks: Llama's plus per-head q/k norms.
const QWEN3_BLOCK: [(&str, &str); 11] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Phi-3's blocks: fused qkv and gate-up projections.
const PHI3_BLOCK: [(&str, &str); 6] = [
    ("attn_norm", "input_layernorm"),
    ("attn_qkv", "self_attn.qkv_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_up", "mlp.gate_up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Gemma 2's blocks: a norm before and after attention and the MLP.
const GEMMA2_BLOCK: [(&str, &str); 11] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

/// The GGUF tensor that stores Llama 3's RoPE frequency factors; it has no Hugging Face
/// tensor (the config's `rope_scaling` describes it).
pub(crate) const ROPE_FREQS: &str = "rope_freqs.weight";

/// Splits `weight`/`bias` off a tensor name.
fn split_suffix(name: &str) -> Option<(&str, &'static str)> {
    if let Some(stem) = name.strip_suffix(".weight") {
        Some((stem, "weight"))
    } else {
        name.strip_suffix(".bias").map(|stem| (stem, "bias"))
    }
}

/// A layer index as Hugging Face and llama.cpp print it: decimal, no sign or leading zeros.
fn layer_index(text: &str) -> Option<usize> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The first per-block pair of `arch` that `find` accepts.
fn block_pair(
    arch: Architecture,
    find: impl Fn(&(&str, &str)) -> bool,
) -> Option<(&'static str, &'static str)> {
    arch.block_parts().iter().copied().find(|p| find(p))
}

/// The Hugging Face name of GGUF tensor `gguf`, or `None` when it has none.
pub(crate) fn to_hf(arch: Architecture, gguf: &str) -> Option<String> {
    let (stem, suffix) = split_suffix(gguf)?;
    if let Some(rest) = stem.strip_prefix("blk.") {
        let (layer, part) = rest.split_once('.')?;
        let layer = layer_index(layer)?;
        let (_, module) = block_pair(arch, |&(g, _)| g == part)?;
        return Some(format!("model.layers.{layer}.{module}.{suffix}"));
    }
    let (_, hf) = GLOBAL.iter().find(|(g, _)| *g == stem)?;
    Some(format!("{hf}.{suffix}"))
}

#[cfg(test)]
/// The GGUF name of Hugging Face tensor `hf`, or `None` when llama.cpp has no tensor for it.
pub(crate) fn to_gguf(arch: Architecture, hf: &str) -> Option<String> {
    let (stem, suffix) = split_suffix(hf)?;
    if let Some(rest) = stem.strip_prefix("model.layers.") {
        let (layer, module) = rest.split_once('.')?;
        let layer = layer_index(layer)?;
        let (part, _) = block_pair(arch, |&(_, h)| h == module)?;
        return Some(format!("blk.{layer}.{part}.{suffix}"));
    }
    let (gguf, _) = GLOBAL.iter().find(|(_, h)| *h == stem)?;
    Some(format!("{gguf}.{suffix}"))
}

/// How a tensor's stored values differ from its Hugging Face values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conversion {
    /// Stored as Hugging Face has it.
    None,
    /// llama.cpp's q/k row permutation, over `heads` heads (see the module docs).
    RopeRows {
        /// Heads the rows split into: query heads for `q_proj`, key-value heads for `k_proj`.
        heads: usize,
    },
    /// Stored as `1 + w` (Gemma's norms).
    PlusOne,
}

/// The conversion llama.cpp applied to Hugging Face tensor `hf` of architecture `arch`, with
/// `heads` query heads and `kv_heads` key-value heads.
pub(crate) fn conversion(
    arch: Architecture,
    hf: &str,
    heads: usize,
    kv_heads: usize,
) -> Conversion {
    match arch {
        Architecture::Llama => {
            let module = split_suffix(hf).map_or(hf, |(stem, _)| stem);
            if module.ends_with(".self_attn.q_proj") {
                Conversion::RopeRows { heads }
            } else if module.ends_with(".self_attn.k_proj") {
                Conversion::RopeRows { heads: kv_heads }
            } else {
                Conversion::None
            }
        }
        // convert_hf_to_gguf.py's `Gemma2Model.modify_tensors`: `name.endswith("norm.weight")`.
        Architecture::Gemma2 if hf.ends_with("norm.weight") => Conversion::PlusOne,
        _ => Conversion::None,
    }
}

/// The stored row that holds Hugging Face row `hf_row` of a tensor under
/// [`Conversion::RopeRows`] with `rows_per_head` rows per head (even and positive; callers
/// check). The same mapping places rows when writing.
pub(crate) fn rope_stored_row(hf_row: usize, rows_per_head: usize) -> usize {
    let half = rows_per_head / 2;
    let (head, within) = (hf_row / rows_per_head, hf_row % rows_per_head);
    head * rows_per_head + 2 * (within % half) + within / half
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Architecture; 5] = [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Phi3,
        Architecture::Gemma2,
    ];

    #[test]
    fn names_round_trip() {
        for arch in ALL {
            for gguf in [
                "token_embd.weight",
                "output.weight",
                "blk.12.attn_output.weight",
                "blk.0.ffn_down.weight",
            ] {
                let hf = to_hf(arch, gguf).unwrap();
                assert_eq!(to_gguf(arch, &hf).as_deref(), Some(gguf), "{arch:?}");
            }
        }
        assert_eq!(
            to_hf(Architecture::Phi3, "blk.3.ffn_up.weight").as_deref(),
            Some("model.layers.3.mlp.gate_up_proj.weight")
        );
        assert_eq!(
            to_hf(Architecture::Gemma2, "blk.1.ffn_norm.weight").as_deref(),
            Some("model.layers.1.pre_feedforward_layernorm.weight")
        );
        assert_eq!(
            to_hf(Architecture::Llama, "blk.1.ffn_norm.weight").as_deref(),
            Some("model.layers.1.post_attention_layernorm.weight")
        );
        assert_eq!(
            to_gguf(Architecture::Qwen2, "model.layers.0.self_attn.q_proj.bias").as_deref(),
            Some("blk.0.attn_q.bias")
        );
    }

    #[test]
    fn foreign_names_map_to_nothing() {
        for name in [
            "rope_freqs.weight",
            "blk.01.attn_q.weight",
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
            "token_embd",
        ] {
            assert_eq!(to_hf(Architecture::Llama, name), None, "{name}");
        }
        assert_eq!(
            to_gguf(Architecture::Phi3, "model.layers.0.mlp.up_proj.weight"),
            None
        );
    }

    #[test]
    fn conversions_follow_the_converter() {
        let c = |arch, name| conversion(arch, name, 8, 2);
        assert_eq!(
            c(
                Architecture::Llama,
                "model.layers.0.self_attn.q_proj.weight"
            ),
            Conversion::RopeRows { heads: 8 }
        );
        assert_eq!(
            c(Architecture::Llama, "model.layers.0.self_attn.k_proj.bias"),
            Conversion::RopeRows { heads: 2 }
        );
        assert_eq!(
            c(
                Architecture::Qwen2,
                "model.layers.0.self_attn.q_proj.weight"
            ),
            Conversion::None
        );
        assert_eq!(
            c(Architecture::Gemma2, "model.norm.weight"),
            Conversion::PlusOne
        );
        assert_eq!(
            c(
                Architecture::Gemma2,
                "model.layers.2.post_feedforward_layernorm.weight"
            ),
            Conversion::PlusOne
        );
        assert_eq!(
            c(Architecture::Gemma2, "model.embed_tokens.weight"),
            Conversion::None
        );
    }

    #[test]
    fn the_rope_permutation_is_llama_cpps() {
        // LlamaModel.permute on one head of 8 rows: reshape(1, 2, 4).swapaxes(1, 2) stores
        // Hugging Face rows [0, 4, 1, 5, 2, 6, 3, 7].
        let stored: Vec<usize> = (0..8).map(|r| rope_stored_row(r, 8)).collect();
        let mut order = [0usize; 8];
        for (hf, s) in stored.iter().enumerate() {
            order[*s] = hf;
        }
        assert_eq!(order, [0, 4, 1, 5, 2, 6, 3, 7]);
        // A bijection over several heads.
        let mut seen: Vec<usize> = (0..24).map(|r| rope_stored_row(r, 6)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..24).collect::<Vec<_>>());
    }
}
