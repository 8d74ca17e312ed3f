//! Resident memory over a long generation: a leak or an unbounded cache shows as growth
//! between 10 % of the steps and the end.

use std::path::Path;

use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, ModelSpec, Runtime, RuntimeError, WeightsKind,
};

use crate::measure::prompts;
use crate::models::GROWTH_MODEL;

/// Resident memory after 10 % of a long generation and at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryGrowth {
    /// RSS after 10 % of the steps, bytes.
    pub early_bytes: u64,
    /// RSS at the end, bytes.
    pub late_bytes: u64,
}

impl MemoryGrowth {
    /// Late minus early RSS, bytes (negative when memory was given back).
    pub fn growth_bytes(&self) -> i64 {
        self.late_bytes as i64 - self.early_bytes as i64
    }
}

/// Why memory growth was not measured.
#[derive(Debug, thiserror::Error)]
pub enum GrowthError {
    /// The model failed to load or generate.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// `/proc/self/status` gave no resident memory.
    #[error("resident memory is not readable from /proc/self/status")]
    RssUnreadable,
}

/// RSS after 10 % of a `tokens`-token generation and at its end ([`GROWTH_MODEL`], bundled,
/// whose context is long enough; batch 1) on `device`: the host process's memory, which on a
/// GPU holds the backend's host-side state but not the device's memory.
pub fn memory_growth(
    runtime: &dyn Runtime,
    device: &str,
    compute: Compute,
    tokens: usize,
) -> Result<MemoryGrowth, GrowthError> {
    let spec = ModelSpec {
        source: GROWTH_MODEL.into(),
        revision: None,
        dtype: DType::F32,
        weights: WeightsKind::Pretrained,
        device: device.into(),
        seed: 0,
        quantization: None,
        compute,
    };
    let model = runtime.load(&spec)?;
    let max = model.info().max_position_embeddings;
    let prompt_len = 8.min(max.saturating_sub(tokens).max(1));
    let tokens = tokens.min(max.saturating_sub(prompt_len));
    let options = GenerateOptions {
        max_new_tokens: tokens,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: Decoding::Greedy,
    };
    let prompt = prompts(1, prompt_len, model.info().vocab_size);
    // The meters' own /proc probe reads resident memory, as in a study's samples.
    let mut probe = meters::procfs::ProcessProbe::new(Path::new("/proc"), meters::monotonic());
    let mut rss_bytes = || {
        let mut sample = api::meter::Sample::default();
        api::meter::Probe::sample(&mut probe, &mut sample);
        sample.rss_bytes
    };
    let mut generation = model.start(&prompt, &options)?;
    let mut early = None;
    for step in 0..tokens {
        let out = generation.step()?;
        if step == tokens / 10 {
            early = rss_bytes();
        }
        if out.finished {
            break;
        }
    }
    match (early, rss_bytes()) {
        (Some(early_bytes), Some(late_bytes)) => Ok(MemoryGrowth {
            early_bytes,
            late_bytes,
        }),
        _ => Err(GrowthError::RssUnreadable),
    }
}
