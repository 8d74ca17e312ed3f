//! Memory a model needs, computed from its config before anything is allocated: weights at the
//! run dtype (packed size for quantized linear layers), the KV cache and RoPE table of one
//! generation, and the check against the memory the machine has available.
//!
//! Every size is computed with checked arithmetic, so a config whose sizes overflow is an error
//! naming what overflowed rather than a wrapped (small) figure or an allocation abort.

use api::runtime::{DType, Quantization, RuntimeError};

use super::config::LlamaConfig;
use super::families::NormPlacement;
use super::host_weights::HostFormats;
use crate::error::InputError;
use kernels::{KEY_TAIL_BLOCK, WeightFormat};

/// Bytes of an f32, the element of the host kernels' weights, cache and RoPE table.
const F32_BYTES: u64 = 4;

/// `a × b × …` in u64, `None` on overflow.
fn product(factors: &[usize]) -> Option<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(u64::try_from(f).ok()?))
}

/// `a + b + …` in u64, `None` on overflow.
fn sum(terms: &[Option<u64>]) -> Option<u64> {
    terms.iter().try_fold(0u64, |acc, t| acc.checked_add((*t)?))
}

fn overflow(what: &'static str) -> RuntimeError {
    InputError::SizeOverflow { what }.into()
}

/// Elements of one decoder layer's vectors: its norms (two, four with Gemma 2's sandwich, plus
/// Qwen3's per-head q/k norms) and Qwen2's q/k/v biases.
fn layer_vector_elements(c: &LlamaConfig) -> Option<u64> {
    let arch = &c.arch;
    let norms = if arch.norms == NormPlacement::Sandwich {
        4
    } else {
        2
    };
    let qk_norm = if arch.qk_norm { 2 * c.head_dim } else { 0 };
    let bias = if arch.qkv_bias {
        c.num_heads
            .checked_add(c.num_kv_heads.checked_mul(2)?)?
            .checked_mul(c.head_dim)?
    } else {
        0
    };
    sum(&[
        product(&[norms, c.hidden_size]),
        Some(qk_norm as u64),
        Some(bias as u64),
    ])
}

/// Weights' bytes: `(resident, load_peak)`. `host` is the host-kernel path
/// ([`host_weight_bytes`]).
///
/// On burn, quantization replaces the linear layers after they are built at the run dtype, so
/// the load peak is the unquantized size while the resident size is the packed one.
pub(crate) fn weight_bytes(
    c: &LlamaConfig,
    dtype: DType,
    quantization: Option<Quantization>,
    host: bool,
) -> Result<(u64, u64), RuntimeError> {
    let (h, q, kv, ff) = (
        c.hidden_size,
        c.num_heads
            .checked_mul(c.head_dim)
            .ok_or_else(|| overflow("the query projection"))?,
        c.num_kv_heads
            .checked_mul(c.head_dim)
            .ok_or_else(|| overflow("the key projection"))?,
        c.intermediate_size,
    );
    if host {
        return host_weight_bytes(c, dtype, quantization);
    }
    let element = dtype.size_bytes() as u64;
    let tables = if c.tie_word_embeddings { 1 } else { 2 };
    // (input, output) features of each linear layer of one decoder layer.
    let linears = [(h, q), (h, kv), (h, kv), (q, h), (h, ff), (h, ff), (ff, h)];
    let layer_linear = sum(&linears.map(|(i, o)| product(&[i, o])));
    let layer_norms = layer_vector_elements(c);
    let dense_elements = sum(&[
        product(&[tables, c.vocab_size, h]),
        layer_linear.and_then(|l| l.checked_mul(c.num_layers as u64)),
        layer_norms.and_then(|n| n.checked_mul(c.num_layers as u64)),
        Some(h as u64),
    ])
    .ok_or_else(|| overflow("the weights"))?;
    let dense = dense_elements
        .checked_mul(element)
        .ok_or_else(|| overflow("the weights"))?;
    let Some(quant) = quantization else {
        return Ok((dense, dense));
    };
    let block = quant.block_size.max(1);
    let packed_linear = |(i, o): (usize, usize)| -> Option<u64> {
        let n = product(&[i, o])?;
        let codes = if quant.method.bits() == 4 {
            n.div_ceil(2)
        } else {
            n
        };
        codes.checked_add(product(&[i.div_ceil(block), o])?.checked_mul(F32_BYTES)?)
    };
    let packed_layer = sum(&linears.map(packed_linear)).ok_or_else(|| overflow("the weights"))?;
    let dense_layer = layer_linear
        .and_then(|l| l.checked_mul(element))
        .ok_or_else(|| overflow("the weights"))?;
    let resident = dense - dense_layer.saturating_sub(packed_layer) * c.num_layers as u64;
    Ok((resident, dense))
}

/// [`weight_bytes`] on the host kernels: tables at the dtype's width, linear weights in their
/// format (rows padded to whole groups of [`kernels::GROUP`], one f32 scale per block), norms
/// f32. Each matrix is read as f32 and encoded as it is loaded, so the load peaks at the
/// resident size plus the largest matrix twice in f32 (read, then stacked).
fn host_weight_bytes(
    c: &LlamaConfig,
    dtype: DType,
    quantization: Option<Quantization>,
) -> Result<(u64, u64), RuntimeError> {
    let h = c.hidden_size;
    let q = c.num_heads.saturating_mul(c.head_dim);
    let kv = c.num_kv_heads.saturating_mul(c.head_dim);
    let ff = c.intermediate_size;
    let formats = HostFormats::new(dtype, quantization);
    // Bytes of a [rows, cols] matrix in `format` (`None` is f32), as `CodedMatrix` lays it out:
    // columns padded to the kernels' group, codes then one f32 scale per block of each row.
    let matrix = |format: Option<WeightFormat>, rows: usize, cols: usize| -> Option<u64> {
        let Some(format) = format else {
            return product(&[rows, cols])?.checked_mul(F32_BYTES);
        };
        let padded = cols.checked_next_multiple_of(kernels::GROUP)?;
        let codes = product(&[rows, padded])?.checked_mul(format.bits() as u64)? / 8;
        let scales = match format.block() {
            Some(block) => {
                product(&[rows, padded.div_ceil(block.max(1))])?.checked_mul(F32_BYTES)?
            }
            None => 0,
        };
        codes.checked_add(scales)
    };
    let linear = |rows: usize, cols: usize| matrix(formats.linear, rows, cols);
    let tables = if c.tie_word_embeddings { 1 } else { 2 };
    let layer = sum(&[
        linear(q + 2 * kv, h),
        linear(h, q),
        linear(2 * ff, h),
        linear(h, ff),
        layer_vector_elements(c).and_then(|n| n.checked_mul(F32_BYTES)),
    ]);
    let resident = sum(&[
        matrix(formats.table, c.vocab_size, h).and_then(|t| t.checked_mul(tables)),
        layer.and_then(|l| l.checked_mul(c.num_layers as u64)),
        Some(h as u64 * F32_BYTES),
    ])
    .ok_or_else(|| overflow("the weights"))?;
    let largest = [
        product(&[c.vocab_size, h]),
        product(&[q + 2 * kv, h]),
        product(&[2 * ff, h]),
    ]
    .into_iter()
    .map(|n| n.and_then(|n| n.checked_mul(2 * F32_BYTES)))
    .try_fold(0u64, |m, n| n.map(|n| m.max(n)))
    .ok_or_else(|| overflow("the weights"))?;
    Ok((resident, resident.saturating_add(largest)))
}

/// Bytes the KV cache of `batch` sequences with room for `capacity` positions reserves, plus
/// the RoPE table for `rope_len` positions, as [`super::forward::ForwardPass::new_state`]
/// allocates them. `host` is the host-kernel path (f32, positions rounded up to key blocks).
pub(crate) fn kv_cache_bytes(
    c: &LlamaConfig,
    dtype: DType,
    host: bool,
    batch: usize,
    capacity: usize,
    rope_len: usize,
) -> Result<u64, RuntimeError> {
    let (positions, element) = if host {
        let stride = capacity
            .checked_next_multiple_of(KEY_TAIL_BLOCK)
            .ok_or_else(|| overflow("the KV cache"))?;
        (stride, F32_BYTES)
    } else {
        (capacity, dtype.size_bytes() as u64)
    };
    let cache = product(&[
        2,
        c.num_layers,
        batch,
        c.num_kv_heads,
        positions,
        c.head_dim,
    ])
    .and_then(|n| n.checked_mul(element));
    let rope = product(&[2, rope_len, c.head_dim]).and_then(|n| n.checked_mul(F32_BYTES));
    sum(&[cache, rope]).ok_or_else(|| overflow("the KV cache"))
}

/// `MemAvailable` of `/proc/meminfo`, bytes; `None` where it cannot be read (not Linux).
pub(crate) fn host_available_bytes() -> Option<u64> {
    parse_mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// The `MemAvailable:` line of a meminfo text (kB), in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// What allocations of a model are checked against: the host's available memory (when the model
/// lives there) and an optional cap (tests, and users who want a margin).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MemoryBudget {
    /// Whether the model's memory is the host's (the CPU device), so `MemAvailable` applies.
    pub host: bool,
    /// Memory free on the model's GPU (NVML), when it lives on one and NVML answers.
    pub device_free: Option<u64>,
    /// A ceiling on top of what the machine reports, if any.
    pub cap: Option<u64>,
}

impl MemoryBudget {
    /// Bytes available now: the smaller of `MemAvailable` (host models) and the cap; `None`
    /// when neither applies (a GPU model without a cap).
    pub(crate) fn available(&self) -> Option<u64> {
        let host = if self.host {
            host_available_bytes()
        } else {
            self.device_free
        };
        match (host, self.cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Refuses `needed` more bytes of `what` when they exceed the machine's available memory,
    /// or when together with the `resident` bytes the model already holds they exceed the cap.
    pub(crate) fn ensure(
        &self,
        resident: u64,
        needed: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), RuntimeError> {
        let host = if self.host {
            host_available_bytes()
        } else {
            self.device_free
        };
        let refuse = |needed_bytes, available_bytes| RuntimeError::OutOfMemory {
            needed_bytes,
            available_bytes,
            what: what(),
        };
        if let Some(available) = host
            && needed > available
        {
            return Err(refuse(needed, available));
        }
        let total = resident.saturating_add(needed);
        if let Some(cap) = self.cap
            && total > cap
        {
            return Err(refuse(total, cap));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::weights::parameter_count;
    use super::*;
    use api::runtime::QuantMethod;

    fn config(tied: bool) -> LlamaConfig {
        let text = serde_json::json!({
            "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 512, "max_position_embeddings": 1024,
            "tie_word_embeddings": tied
        });
        LlamaConfig::from_json(&text.to_string(), "config.json").unwrap()
    }

    /// Every family's extra vectors (biases, q/k norms, sandwich norms) are in the estimate.
    #[test]
    fn every_familys_dense_weights_match_its_parameter_count() {
        for name in [
            "tiny-qwen2",
            "tiny-qwen3",
            "tiny-mistral",
            "tiny-phi3",
            "tiny-gemma2",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models")
                .join(name)
                .join("config.json");
            let c = LlamaConfig::from_file(&path).unwrap();
            let n = parameter_count(&c);
            assert_eq!(
                weight_bytes(&c, DType::F32, None, false).unwrap(),
                (4 * n, 4 * n),
                "{name}"
            );
            assert_eq!(
                weight_bytes(&c, DType::F32, None, true).unwrap().0,
                4 * n,
                "{name}"
            );
        }
    }

    #[test]
    fn dense_weights_match_the_parameter_count() {
        for tied in [false, true] {
            let c = config(tied);
            let n = parameter_count(&c);
            assert_eq!(
                weight_bytes(&c, DType::BF16, None, false).unwrap(),
                (2 * n, 2 * n)
            );
            let host_f32 = weight_bytes(&c, DType::F32, None, true).unwrap().0;
            assert_eq!(host_f32, 4 * n);
            // On the host kernels the norm scales stay f32 and down_proj's 172 columns are
            // padded to 192 (two layers of 64 rows).
            let norms = 2 * 64 * 2 + 64;
            let padding = 2 * 64 * 20;
            let host_bf16 = weight_bytes(&c, DType::BF16, None, true).unwrap().0;
            assert_eq!(host_bf16, 2 * (n - norms + padding) + 4 * norms);
        }
    }

    #[test]
    fn quantized_weights_are_packed_but_peak_at_the_dense_size() {
        let c = config(false);
        let n = parameter_count(&c);
        let q = Quantization {
            method: QuantMethod::Int4,
            block_size: 32,
        };
        let (resident, peak) = weight_bytes(&c, DType::F32, Some(q), false).unwrap();
        assert_eq!(peak, 4 * n);
        // One layer's linears: 4·64·64/2... computed independently from the shapes.
        let linear = |i: usize, o: usize| (i * o).div_ceil(2) + 4 * i.div_ceil(32) * o;
        let packed =
            linear(64, 64) * 2 + linear(64, 32) * 2 + linear(64, 172) * 2 + linear(172, 64);
        let dense = (64 * 64 * 2 + 64 * 32 * 2 + 64 * 172 * 3) * 4;
        assert_eq!(resident, 4 * n - 2 * (dense - packed) as u64);
    }

    #[test]
    fn kv_cache_follows_the_run_not_the_model_positions() {
        let c = config(false);
        // 2 (k, v) · 2 layers · batch 3 · 2 kv heads · 10 positions · head_dim 16 · 2 bytes,
        // plus cos and sin for 9 positions in f32.
        let burn = kv_cache_bytes(&c, DType::F16, false, 3, 10, 9).unwrap();
        assert_eq!(burn, 2 * 2 * 3 * 2 * 10 * 16 * 2 + 2 * 9 * 16 * 4);
        // The host cache rounds positions up to whole key blocks and is f32.
        let host = kv_cache_bytes(&c, DType::F32, true, 3, 10, 9).unwrap();
        assert_eq!(host, 2 * 2 * 3 * 2 * 16 * 16 * 4 + 2 * 9 * 16 * 4);
        assert!(matches!(
            kv_cache_bytes(&c, DType::F32, false, usize::MAX, usize::MAX, 1),
            Err(RuntimeError::InvalidInput(_))
        ));
    }

    #[test]
    fn a_gpu_model_is_checked_against_the_devices_free_memory() {
        let budget = MemoryBudget {
            host: false,
            device_free: Some(1000),
            cap: None,
        };
        assert_eq!(budget.available(), Some(1000));
        assert!(budget.ensure(0, 1000, || "x".into()).is_ok());
        match budget.ensure(0, 1001, || "weights on cuda:0".into()) {
            Err(RuntimeError::OutOfMemory {
                needed_bytes: 1001,
                available_bytes: 1000,
                what,
            }) => assert_eq!(what, "weights on cuda:0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn budgets_refuse_with_the_figures() {
        let budget = MemoryBudget {
            host: false,
            device_free: None,
            cap: Some(100),
        };
        assert!(budget.ensure(0, 100, || "x".into()).is_ok());
        match budget.ensure(0, 101, || "weights".into()) {
            Err(RuntimeError::OutOfMemory {
                needed_bytes: 101,
                available_bytes: 100,
                what,
            }) => assert_eq!(what, "weights"),
            other => panic!("unexpected {other:?}"),
        }
        // The cap bounds what is resident plus what is asked for.
        assert!(matches!(
            budget.ensure(60, 41, || "cache".into()),
            Err(RuntimeError::OutOfMemory {
                needed_bytes: 101,
                ..
            })
        ));
        assert_eq!(MemoryBudget::default().available(), None);
    }

    #[test]
    fn meminfo_available_is_read_in_bytes() {
        let text = "MemTotal:       16000000 kB\nMemFree:  1 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }
}
