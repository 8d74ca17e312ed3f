//! One model at one batch, timed: a warm-up generation, then timed repeats whose median
//! prefill and decode times give the row's speeds, and the decode bandwidth against the
//! device's memory bandwidth (MBU): the CPU's measured read bandwidth, or a GPU's datasheet
//! figure.

use std::path::Path;
use std::time::Instant;

use api::runtime::{Decoding, GenerateOptions, LoadedModel, RuntimeError};

use crate::baseline::Baseline;
use crate::format::Format;

/// One measured row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// The model's label.
    pub model: String,
    /// The device it ran on (`cpu`, `cuda:0`, `wgpu`).
    pub device: String,
    /// The accelerator as its driver names it (a wgpu adapter, ...); `None` on the CPU and
    /// where the backend does not say.
    pub adapter: Option<String>,
    /// The weight format measured (`f32`, `int8`, ...).
    pub format: Format,
    /// What computed the forward pass, as the loaded model reports it (llmeff's host kernels
    /// and their instruction set, or a burn backend).
    pub compute: String,
    /// Sequences generated at once.
    pub batch: usize,
    /// Prompt length, tokens.
    pub prompt_tokens: usize,
    /// New tokens per sequence, the prompt pass's included.
    pub new_tokens: usize,
    /// Median time of the prompt pass, seconds.
    pub prefill_s: f64,
    /// Prompt tokens per second of the prompt pass (every sequence of the batch).
    pub prefill_tokens_per_s: f64,
    /// New tokens per second while decoding (every sequence of the batch).
    pub decode_tokens_per_s: f64,
    /// Bytes decoding reads per second (weights and KV cache).
    pub decode_bytes_per_s: f64,
    /// Decode bytes per second over the device's memory bandwidth (the CPU's measured read
    /// bandwidth, a GPU's datasheet figure); `None` where that is unknown.
    pub mbu: Option<f64>,
    /// Share of the CPUs' time a hypervisor gave to other guests during the timed repeats,
    /// percent (`/proc/stat` steal); `None` where `/proc/stat` is unreadable, and off the CPU.
    pub cpu_steal_pct: Option<f64>,
    /// The copy benchmark behind MBU's denominator, run again just before this row's repeats,
    /// bytes read + written per second: below the denominator, other guests were sharing the
    /// memory system (which CPU steal does not show); `None` where it measured no time, and
    /// off the CPU.
    pub copy_now_bytes_per_s: Option<f64>,
    /// Each peer's figures for the same model and batch (one per baseline, in order; `None`
    /// where that peer did not measure this row).
    pub peers: Vec<Option<Baseline>>,
}

impl BenchRow {
    /// Whether the row ran on the CPU (`cpu`, a core set), where the CPU's checks apply.
    pub fn on_cpu(&self) -> bool {
        api::device::DeviceName::parse(&self.device).is_ok_and(|d| d.is_cpu())
    }
}

/// How each row is measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowSettings {
    /// Prompt length, tokens.
    pub prompt_tokens: usize,
    /// New tokens per sequence (EOS ignored).
    pub new_tokens: usize,
    /// Timed repeats after the warm-up.
    pub repeats: usize,
    /// Threads of the copy check (the pool the forward pass runs on).
    pub threads: usize,
    /// Whether the model runs on the CPU: only then do the copy check and CPU steal describe
    /// what it ran on.
    pub on_cpu: bool,
}

/// Copies of the per-row bandwidth check (best of these, as the cached figure is).
const COPY_NOW_REPS: usize = 3;

/// Prompts of `len` tokens: ids spread over the vocabulary, different per sequence, so no
/// two sequences of a batch are identical.
pub(crate) fn prompts(batch: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..len)
                .map(|i| ((7 + 31 * i + 101 * b) % vocab.max(1)) as u32)
                .collect()
        })
        .collect()
}

/// Measures one row of `model`, loaded in `format` on `device`; `read_bytes_per_s` is MBU's
/// denominator.
pub(crate) fn measure(
    label: &str,
    device: &str,
    format: Format,
    model: &dyn LoadedModel,
    batch: usize,
    settings: RowSettings,
    read_bytes_per_s: Option<f64>,
) -> Result<BenchRow, RuntimeError> {
    let info = model.info().clone();
    let prompts = prompts(batch, settings.prompt_tokens, info.vocab_size);
    let options = GenerateOptions {
        max_new_tokens: settings.new_tokens,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: Decoding::Greedy,
    };
    // Before the warm-up, so the copy's page faults and cache misses are not in the timings.
    let copy_now_bytes_per_s = settings
        .on_cpu
        .then(|| {
            meters::peak::measure_copy_bandwidth(
                meters::peak::COPY_BYTES,
                settings.threads,
                COPY_NOW_REPS,
            )
            .ok()
        })
        .flatten();
    let mut prefill_times = Vec::with_capacity(settings.repeats);
    let mut decode_times = Vec::with_capacity(settings.repeats);
    let mut decode_steps = 0;
    let mut steal_from = None;
    // One untimed generation warms caches and allocators, as every timed run of a study has.
    for repeat in 0..=settings.repeats {
        if repeat == 1 && settings.on_cpu {
            steal_from = cpu_times();
        }
        let start = Instant::now();
        let mut generation = model.start(&prompts, &options)?;
        generation.step()?;
        let prefilled = Instant::now();
        let mut steps = 0;
        loop {
            let out = generation.step()?;
            steps += 1;
            if out.finished || steps >= settings.new_tokens {
                break;
            }
        }
        let end = Instant::now();
        if repeat > 0 {
            prefill_times.push((prefilled - start).as_secs_f64());
            decode_times.push((end - prefilled).as_secs_f64());
            decode_steps = steps;
        }
    }
    let cpu_steal_pct = steal_from
        .zip(cpu_times())
        .and_then(|(from, to)| to.steal_since_measurable(&from))
        .map(|f| f * 100.0);
    // The median, as the peer baselines report: the best of a few runs would flatter llmeff.
    let (prefill_s, decode_s) = (median(prefill_times), median(decode_times));
    Ok(row_figures(
        RowTimes {
            label,
            device,
            format,
            batch,
            prompt_tokens: settings.prompt_tokens,
            decode_steps,
            prefill_s,
            decode_s,
        },
        &info,
        read_bytes_per_s,
        cpu_steal_pct,
        copy_now_bytes_per_s,
    ))
}

/// The median times of one row.
struct RowTimes<'a> {
    label: &'a str,
    device: &'a str,
    format: Format,
    batch: usize,
    prompt_tokens: usize,
    decode_steps: usize,
    prefill_s: f64,
    decode_s: f64,
}

/// A row's speeds, decode bandwidth and MBU from its median times.
fn row_figures(
    t: RowTimes<'_>,
    info: &api::runtime::ModelInfo,
    read_bytes_per_s: Option<f64>,
    cpu_steal_pct: Option<f64>,
    copy_now_bytes_per_s: Option<f64>,
) -> BenchRow {
    // Every sequence of the batch has the same prompt and as many new tokens. The KV cache is
    // held in the load dtype (f32 for the quantized formats), as a study's MBU counts it.
    let dtype_bytes = t.format.dtype().size_bytes() as u64;
    let sequence = (t.prompt_tokens as u64, t.decode_steps as u64 + 1);
    let bytes = engine::flops::decode_read_bytes(
        info,
        t.decode_steps as u64,
        std::iter::repeat_n(sequence, t.batch),
        dtype_bytes,
    );
    let decode_bytes_per_s = bytes as f64 / t.decode_s;
    BenchRow {
        model: t.label.to_string(),
        device: t.device.to_string(),
        adapter: info.adapter.clone(),
        format: t.format,
        compute: info.compute.clone(),
        batch: t.batch,
        prompt_tokens: t.prompt_tokens,
        new_tokens: t.decode_steps + 1,
        prefill_s: t.prefill_s,
        prefill_tokens_per_s: (t.batch * t.prompt_tokens) as f64 / t.prefill_s,
        decode_tokens_per_s: (t.batch * t.decode_steps) as f64 / t.decode_s,
        decode_bytes_per_s,
        mbu: read_bytes_per_s.map(|c| decode_bytes_per_s / c),
        cpu_steal_pct,
        copy_now_bytes_per_s,
        peers: Vec::new(),
    }
}

/// All CPUs' times from `/proc/stat`, for the steal over the timed repeats.
fn cpu_times() -> Option<meters::estimate::CpuTimes> {
    meters::estimate::CpuTimes::read(Path::new(meters::procfs::DEFAULT_PROC_ROOT)).ok()
}

/// The middle value (the upper one of an even count); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_run() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn prompts_differ_per_sequence_and_stay_in_the_vocabulary() {
        let p = prompts(3, 5, 50);
        assert_eq!(p.len(), 3);
        assert!(p.iter().all(|s| s.len() == 5 && s.iter().all(|&t| t < 50)));
        assert_ne!(p[0], p[1]);
        assert_ne!(p[1], p[2]);
    }

    #[test]
    fn speeds_count_every_sequence_and_mbu_divides_by_the_read_bandwidth() {
        let info = api::runtime::ModelInfo {
            name: "m".into(),
            architecture: "llama".into(),
            compute: "test".into(),
            parameters: 0,
            weight_bytes: 0,
            step_weight_bytes: 1_000,
            hidden_size: 64,
            num_layers: 5,
            num_heads: 8,
            num_kv_heads: 4,
            head_dim: 8,
            intermediate_size: 172,
            vocab_size: 512,
            max_position_embeddings: 512,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            adapter: None,
            adapter_driver: None,
        };
        let row = row_figures(
            RowTimes {
                label: "m",
                device: "cpu",
                format: Format::F32,
                batch: 2,
                prompt_tokens: 8,
                decode_steps: 9,
                prefill_s: 0.5,
                decode_s: 3.0,
            },
            &info,
            Some(2e9),
            Some(1.0),
            None,
        );
        assert_eq!(row.new_tokens, 10, "the prompt pass's token counts");
        assert_eq!(row.prefill_tokens_per_s, 32.0);
        assert_eq!(row.decode_tokens_per_s, 6.0);
        let bytes = engine::flops::decode_read_bytes(&info, 9, std::iter::repeat_n((8, 10), 2), 4);
        assert!(bytes > 0);
        assert_eq!(row.decode_bytes_per_s, bytes as f64 / 3.0);
        assert_eq!(row.mbu, Some(row.decode_bytes_per_s / 2e9));
        let unmeasured = row_figures(
            RowTimes {
                label: "m",
                device: "cpu",
                format: Format::F16,
                batch: 1,
                prompt_tokens: 8,
                decode_steps: 9,
                prefill_s: 0.5,
                decode_s: 3.0,
            },
            &info,
            None,
            None,
            None,
        );
        assert_eq!(unmeasured.mbu, None, "no read bandwidth, no MBU");
        assert_eq!((row.format, row.compute.as_str()), (Format::F32, "test"));
        assert_eq!((row.device.as_str(), row.adapter.as_deref()), ("cpu", None));
        assert!(row.on_cpu());
        // A half-precision KV cache reads half the bytes per position.
        let f16_bytes =
            engine::flops::decode_read_bytes(&info, 9, std::iter::repeat_n((8, 10), 1), 2);
        assert_eq!(unmeasured.decode_bytes_per_s, f16_bytes as f64 / 3.0);
    }
}
