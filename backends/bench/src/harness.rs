//! The benchmark end to end: the selected models loaded one at a time in each format on the
//! device, each measured at every batch, the peers' figures in the same format beside each
//! row, the caveats, and memory growth.

use api::device::DeviceName;
use api::meter::{DevicePeak, MeterProvider};
use api::runtime::{Compute, ModelSpec, Runtime, RuntimeError};
use std::fmt;

use crate::baseline::Peer;
use crate::format::Format;
use crate::growth::{GrowthError, MemoryGrowth, memory_growth};
use crate::measure::{BenchRow, RowSettings, measure};
use crate::models::{GROWTH_MODEL, MODELS, is_selected, selected};
use crate::warnings::warnings;

/// What to measure.
#[derive(Debug, Clone, Default)]
pub struct BenchSettings {
    /// Only models whose label contains one of these (every model when empty).
    pub models: Vec<String>,
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Prompt length, tokens.
    pub prompt_tokens: usize,
    /// New tokens per sequence (EOS ignored); at least 2, so decoding does something.
    pub new_tokens: usize,
    /// Timed repeats after one warm-up (at least 1).
    pub repeats: usize,
    /// Tokens of the memory-growth generation (0 = skip).
    pub growth_tokens: usize,
    /// Threads of the pool the forward pass runs on.
    pub threads: usize,
    /// The device every model loads on (`cpu` when empty; `cuda:0`, `wgpu`, ...).
    pub device: String,
    /// The forward pass measured (`host` kernels or `burn`: burn-flex on the CPU, the GPU's
    /// burn backend elsewhere).
    pub compute: Compute,
    /// Weight formats, each model measured in every one (f32 alone when empty).
    pub formats: Vec<Format>,
    /// Hub ids with a built-in config, which `models` may name beside the built-in models.
    pub presets: Vec<&'static str>,
}

/// What the harness is doing, for a progress line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchProgress {
    /// Loading a model.
    Loading {
        /// Its label.
        model: String,
        /// The format it is loaded in.
        format: Format,
    },
    /// Measuring the loaded model at a batch size.
    Batch {
        /// The batch size.
        batch: usize,
    },
}

impl fmt::Display for BenchProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchProgress::Loading { model, format } => write!(f, "loading {model} ({format})"),
            BenchProgress::Batch { batch } => write!(f, "  batch {batch}"),
        }
    }
}

/// The measured figures.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The device's peaks (MBU's denominator is their bandwidth): the CPU's measured read
    /// bandwidth, a GPU's datasheet row; `None` where unknown.
    pub peak: Option<DevicePeak>,
    /// The CPU copy bandwidth each row's `copy now` is compared with, bytes/s; `None` off the
    /// CPU.
    pub copy_bytes_per_s: Option<f64>,
    /// One row per model, batch and format (in that order: a batch's formats side by side),
    /// with the peers' figures in the row's format.
    pub rows: Vec<BenchRow>,
    /// Memory growth of [`GROWTH_MODEL`], when measured.
    pub growth: Option<MemoryGrowth>,
    /// What the figures cannot be trusted for, one sentence each.
    pub warnings: Vec<String>,
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `models` selects nothing.
    #[error("no benchmark model matches {filters:?}; models: {}", known.join(", "))]
    NoModelMatches {
        /// The filters given.
        filters: Vec<String>,
        /// Every model the benchmark knows.
        known: Vec<&'static str>,
    },
    /// A model failed to load.
    #[error("{model} ({format}): {source}")]
    Load {
        /// Its label.
        model: &'static str,
        /// The format it was loaded in.
        format: Format,
        /// Why.
        source: RuntimeError,
    },
    /// A model failed while measured.
    #[error("{model} ({format}) batch {batch}: {source}")]
    Measure {
        /// Its label.
        model: &'static str,
        /// The format it was loaded in.
        format: Format,
        /// The batch size.
        batch: usize,
        /// Why.
        source: RuntimeError,
    },
    /// Memory growth was not measured.
    #[error(transparent)]
    Growth(#[from] GrowthError),
}

impl BenchError {
    /// True when the settings are at fault rather than the work: nothing selected, or a
    /// device this machine does not have.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            BenchError::NoModelMatches { .. }
                | BenchError::Load {
                    source: RuntimeError::DeviceUnavailable { .. },
                    ..
                }
        )
    }
}

/// Measures the selected models on `settings.device`, with `peers` beside each row; progress
/// lines go to `progress`. On the CPU, MBU divides by the read bandwidth `meters` measures
/// (once, cached between runs) and each row's copy check is compared with its copy peak; on a
/// GPU, MBU divides by the datasheet bandwidth `meters` knows it by (NVML's name), and the
/// CPU's checks are not run.
pub fn run_bench(
    runtime: &dyn Runtime,
    meters: &meters::MachineMeters,
    settings: &BenchSettings,
    peers: &[Peer],
    progress: &mut dyn FnMut(BenchProgress),
) -> Result<BenchReport, BenchError> {
    let selected = selected(&settings.models, &settings.presets);
    let growth_selected = settings.growth_tokens > 0 && is_selected(&settings.models, GROWTH_MODEL);
    if selected.is_empty() && !growth_selected {
        return Err(BenchError::NoModelMatches {
            filters: settings.models.clone(),
            known: MODELS
                .iter()
                .map(|m| m.label)
                .chain([GROWTH_MODEL])
                .chain(settings.presets.iter().copied())
                .collect(),
        });
    }
    let device = if settings.device.is_empty() {
        "cpu"
    } else {
        settings.device.as_str()
    };
    let on_cpu = DeviceName::parse(device).is_ok_and(|d| d.is_cpu());
    // A GPU's bandwidth is the same at every dtype; its f32 row is the one every GPU has.
    let (peak, copy_bytes_per_s) = if on_cpu {
        (
            meters.peak("cpu", "f32"),
            meters.cpu_copy_bytes_per_s("f32"),
        )
    } else {
        (meters.peak(device, "f32"), None)
    };
    let row_settings = RowSettings {
        prompt_tokens: settings.prompt_tokens,
        new_tokens: settings.new_tokens,
        repeats: settings.repeats,
        threads: settings.threads,
        on_cpu,
    };
    let formats = if settings.formats.is_empty() {
        vec![Format::F32]
    } else {
        settings.formats.clone()
    };
    let mut rows = Vec::new();
    for bench in selected {
        // A model's formats are measured back to back (one loaded at a time, so memory holds
        // one copy), then listed per batch so each batch's formats sit side by side.
        let mut model_rows = Vec::new();
        for &format in &formats {
            progress(BenchProgress::Loading {
                model: bench.label.to_string(),
                format,
            });
            let spec = ModelSpec {
                source: bench.source.to_string(),
                revision: None,
                dtype: format.dtype(),
                weights: bench.weights,
                device: device.to_string(),
                seed: 0,
                quantization: format.quantization(),
                compute: settings.compute,
            };
            let model = runtime.load(&spec).map_err(|source| BenchError::Load {
                model: bench.label,
                format,
                source,
            })?;
            for &batch in &settings.batches {
                progress(BenchProgress::Batch { batch });
                let row = measure(
                    bench.label,
                    device,
                    format,
                    model.as_ref(),
                    batch,
                    row_settings,
                    peak.as_ref().map(|p| p.bytes_per_s),
                )
                .map_err(|source| BenchError::Measure {
                    model: bench.label,
                    format,
                    batch,
                    source,
                })?;
                let key = (bench.baseline_key.to_string(), format, batch);
                model_rows.push(BenchRow {
                    peers: peers.iter().map(|p| p.figures.get(&key).copied()).collect(),
                    ..row
                });
            }
        }
        model_rows.sort_by_key(|r| {
            let batch = settings.batches.iter().position(|&b| b == r.batch);
            let format = formats.iter().position(|&f| f == r.format);
            (batch, format)
        });
        rows.extend(model_rows);
    }
    let growth = if growth_selected {
        Some(memory_growth(
            runtime,
            device,
            settings.compute,
            settings.growth_tokens,
        )?)
    } else {
        None
    };
    let warnings = warnings(&rows, copy_bytes_per_s);
    Ok(BenchReport {
        peak,
        copy_bytes_per_s,
        rows,
        growth,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that loads nothing: the selection is checked before any model is.
    struct NoRuntime;

    impl Runtime for NoRuntime {
        fn load(
            &self,
            spec: &ModelSpec,
        ) -> Result<Box<dyn api::runtime::LoadedModel>, RuntimeError> {
            Err(RuntimeError::ModelNotFound {
                name: spec.source.clone(),
                reason: "no runtime".into(),
            })
        }

        fn devices(&self) -> Vec<String> {
            vec!["cpu".into()]
        }
    }

    /// A runtime that records the specs it is asked to load, and loads none of them.
    #[derive(Default)]
    struct RecordingRuntime {
        specs: std::sync::Mutex<Vec<ModelSpec>>,
    }

    impl Runtime for RecordingRuntime {
        fn load(
            &self,
            spec: &ModelSpec,
        ) -> Result<Box<dyn api::runtime::LoadedModel>, RuntimeError> {
            self.specs.lock().unwrap().push(spec.clone());
            Err(RuntimeError::ModelNotFound {
                name: spec.source.clone(),
                reason: "no runtime".into(),
            })
        }

        fn devices(&self) -> Vec<String> {
            vec!["cpu".into()]
        }
    }

    #[test]
    fn a_filter_that_selects_nothing_names_every_model() {
        let settings = BenchSettings {
            models: vec!["gpt-9".into()],
            batches: vec![1],
            growth_tokens: 100,
            ..BenchSettings::default()
        };
        let meters = meters::MachineMeters::detect();
        let err = run_bench(&NoRuntime, &meters, &settings, &[], &mut |_| {}).unwrap_err();
        assert!(err.is_input());
        let text = err.to_string();
        assert!(
            text.starts_with("no benchmark model matches [\"gpt-9\"]"),
            "{text}"
        );
        for model in MODELS.iter().map(|m| m.label).chain([GROWTH_MODEL]) {
            assert!(text.contains(model), "{text}");
        }
    }

    #[test]
    fn progress_lines_name_the_model_and_its_format() {
        let loading = BenchProgress::Loading {
            model: "tiny-stories".into(),
            format: Format::Int8,
        };
        assert_eq!(loading.to_string(), "loading tiny-stories (int8)");
        assert_eq!(BenchProgress::Batch { batch: 8 }.to_string(), "  batch 8");
    }

    #[test]
    fn a_quantized_format_loads_f32_weights_quantized_in_blocks_of_32() {
        let settings = BenchSettings {
            models: vec!["tiny-stories".into()],
            batches: vec![1],
            formats: vec![Format::Int8, Format::F32],
            presets: Vec::new(),
            compute: Compute::Host,
            ..BenchSettings::default()
        };
        let runtime = RecordingRuntime::default();
        let meters = meters::MachineMeters::detect();
        let err = run_bench(&runtime, &meters, &settings, &[], &mut |_| {}).unwrap_err();
        // The first format listed is loaded first, and a failure names it.
        assert!(
            err.to_string().starts_with("tiny-stories (int8): "),
            "{err}"
        );
        let specs = runtime.specs.lock().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].dtype, api::runtime::DType::F32);
        assert_eq!(
            specs[0].quantization,
            Some(api::runtime::Quantization {
                method: api::runtime::QuantMethod::Int8,
                block_size: 32,
            })
        );
        assert_eq!(specs[0].compute, Compute::Host);
    }

    /// A runtime on a machine without the GPU asked for.
    struct NoGpuRuntime(std::sync::Mutex<Vec<ModelSpec>>);

    impl Runtime for NoGpuRuntime {
        fn load(
            &self,
            spec: &ModelSpec,
        ) -> Result<Box<dyn api::runtime::LoadedModel>, RuntimeError> {
            self.0.lock().unwrap().push(spec.clone());
            Err(RuntimeError::DeviceUnavailable {
                device: spec.device.clone(),
                reason: "no CUDA driver".into(),
            })
        }

        fn devices(&self) -> Vec<String> {
            vec!["cpu".into()]
        }
    }

    #[test]
    fn models_load_on_the_device_asked_for_and_a_missing_gpu_is_the_users_to_fix() {
        let settings = BenchSettings {
            models: vec!["tiny-stories".into()],
            batches: vec![1],
            device: "cuda:0".into(),
            compute: Compute::Burn,
            formats: vec![Format::Bf16],
            ..BenchSettings::default()
        };
        let runtime = NoGpuRuntime(Default::default());
        let meters = meters::MachineMeters::detect();
        let err = run_bench(&runtime, &meters, &settings, &[], &mut |_| {}).unwrap_err();
        assert!(err.is_input(), "{err}");
        assert_eq!(
            err.to_string(),
            "tiny-stories (bf16): device `cuda:0` is not available: no CUDA driver"
        );
        let specs = runtime.0.lock().unwrap();
        assert_eq!(
            (specs[0].device.as_str(), specs[0].compute, specs[0].dtype),
            ("cuda:0", Compute::Burn, api::runtime::DType::BF16)
        );
    }
}
