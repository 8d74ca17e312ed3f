//! A Llama model loaded onto a device from a model folder or a built-in preset: config,
//! tokenizer and weights put together, the facts reported about it, and the engine's
//! `LoadedModel` contract.

use api::runtime::{
    DType, GenerateOptions, Generation, LoadedModel, ModelInfo, ModelSpec, RuntimeError,
    WeightsKind,
};
use burn::tensor::backend::Backend;

use super::batch::PaddedBatch;
use super::files::ModelFiles;
use super::generation::{LlamaGeneration, validate_prompts};
use super::host_model::HostWeights;
use super::memory::{self, MemoryBudget};
use super::model::{LlamaModel, LogitRows, ModelWeights};
use super::weights::{LlamaWeights, WeightSource, parameter_count};
use crate::checkpoint::Checkpoint;
use crate::guard::catch_backend_panic;
use crate::handle::{ErasedModel, HOST_COMPUTE, LogitPositions, Logits};
use crate::host::burn_dtype;
use crate::source::ResolvedSource;
use crate::tokenizer::TextTokenizer;

/// A Llama model ready to generate.
pub(crate) struct LoadedLlama<B: Backend> {
    info: ModelInfo,
    tokenizer: TextTokenizer,
    model: LlamaModel<B>,
    /// Whether the host kernels run it (its cache is then f32 and block-rounded).
    on_host: bool,
    /// The run dtype (the burn path's cache element).
    run_dtype: DType,
    /// What a generation's KV cache is checked against before it is reserved.
    budget: MemoryBudget,
}

impl<B: Backend> LoadedLlama<B> {
    /// Loads the model in `source` onto `device` as `spec` asks. With `host_kernels` (the CPU),
    /// an unquantized f32 model runs on llmeff's host kernels instead of burn's ops. The
    /// weights' size is checked against `budget` before any of them is allocated.
    pub(crate) fn load(
        source: &ResolvedSource,
        spec: &ModelSpec,
        device: B::Device,
        host_kernels: bool,
        budget: MemoryBudget,
    ) -> Result<Self, RuntimeError> {
        let ModelFiles {
            config,
            eos_token_ids,
            tokenizer,
        } = ModelFiles::read(source)?;
        let dtype = burn_dtype(spec.dtype);
        let supported = catch_backend_panic("querying the device", || {
            Ok(B::supports_dtype(&device, dtype))
        })?;
        if !supported {
            return Err(RuntimeError::UnsupportedDType {
                dtype: spec.dtype,
                device: spec.device.clone(),
            });
        }
        let checkpoint = match spec.weights {
            WeightsKind::Pretrained => match &source.dir {
                Some(dir) => Some(Checkpoint::open(dir)?),
                // Resolution only yields a folderless source for random weights.
                None => {
                    return Err(RuntimeError::ModelNotFound {
                        name: source.name.clone(),
                        reason: "pretrained weights need the model's files, not a built-in preset"
                            .into(),
                    });
                }
            },
            WeightsKind::Random => None,
        };
        let weight_source = match &checkpoint {
            Some(c) => WeightSource::Checkpoint(c),
            None => WeightSource::Random { seed: spec.seed },
        };
        let on_host = host_kernels && spec.dtype == DType::F32 && spec.quantization.is_none();
        let (_, load_peak) = memory::weight_bytes(&config, spec.dtype, spec.quantization, on_host)?;
        budget.ensure(0, load_peak, || {
            format!(
                "the weights of {} ({} on {})",
                source.name, spec.dtype, spec.device
            )
        })?;
        let parameters = parameter_count(&config);
        let mut weight_bytes = (parameters * spec.dtype.size_bytes() as u64) as i64;
        // An untied input embedding is gathered a row per token, not streamed; tied, the same
        // table is read whole as the output head. It is never quantized.
        let gathered_bytes = if config.tie_word_embeddings {
            0
        } else {
            (config.vocab_size * config.hidden_size * spec.dtype.size_bytes()) as i64
        };
        let weights = if on_host {
            ModelWeights::Host(HostWeights::build(&config, &weight_source)?)
        } else {
            let mut weights = catch_backend_panic("loading weights", || {
                LlamaWeights::build(&config, &weight_source, &device, spec.dtype)
            })?;
            if let Some(q) = spec.quantization {
                for (i, layer) in weights.layers.iter_mut().enumerate() {
                    for (name, linear) in layer.linears_mut() {
                        let full = format!("model.layers.{i}.{name}.weight");
                        weight_bytes -= catch_backend_panic("quantizing weights", || {
                            linear.quantize(&full, q)
                        })?;
                    }
                }
            }
            ModelWeights::Burn(weights)
        };
        let compute = match &weights {
            ModelWeights::Host(_) => {
                format!("{HOST_COMPUTE}/{}", kernels::Isa::detect().name())
            }
            ModelWeights::Burn(_) => format!("burn-{}", B::name(&device)),
        };
        let info = ModelInfo {
            name: source.name.clone(),
            architecture: "llama".into(),
            compute,
            parameters,
            weight_bytes: weight_bytes.max(0) as u64,
            step_weight_bytes: (weight_bytes - gathered_bytes).max(0) as u64,
            hidden_size: config.hidden_size,
            num_layers: config.num_layers,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            intermediate_size: config.intermediate_size,
            vocab_size: config.vocab_size,
            max_position_embeddings: config.max_position_embeddings,
            bos_token_id: config.bos_token_id,
            eos_token_ids,
        };
        Ok(Self {
            info,
            tokenizer,
            model: LlamaModel::new(config, weights, device, dtype),
            on_host,
            run_dtype: spec.dtype,
            budget,
        })
    }
}

impl<B: Backend> LoadedModel for LoadedLlama<B> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        self.tokenizer.encode(text)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        self.tokenizer.decode(ids)
    }

    fn start<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + 'a>, RuntimeError> {
        // What the generation reserves is refused before it is allocated.
        let admit = |sequences: usize, capacity: usize| {
            let needed = memory::kv_cache_bytes(
                self.model.config(),
                self.run_dtype,
                self.on_host,
                sequences,
                capacity,
                capacity,
            )?;
            self.budget.ensure(self.info.weight_bytes, needed, || {
                format!(
                    "the KV cache of {} ({sequences} sequences × {capacity} positions)",
                    self.info.name
                )
            })
        };
        let generation = LlamaGeneration::start(
            &self.model,
            &self.info.eos_token_ids,
            prompts,
            options,
            admit,
        )?;
        Ok(Box::new(generation))
    }
}

impl<B: Backend> ErasedModel for LoadedLlama<B> {
    fn executed_flops(&self) -> u64 {
        self.model.executed_flops()
    }

    fn logits(
        &self,
        prompts: &[Vec<u32>],
        positions: LogitPositions,
    ) -> Result<Logits, RuntimeError> {
        let config = self.model.config();
        validate_prompts(
            prompts,
            config.vocab_size,
            config.max_position_embeddings,
            0,
        )?;
        let batch = PaddedBatch::new(prompts.iter().map(Vec::len).collect());
        let width = batch.width();
        let rows = match positions {
            LogitPositions::Last => LogitRows::Last,
            LogitPositions::All => LogitRows::All,
        };
        let values: Vec<f32> = catch_backend_panic("computing logits", || {
            let mut state = self.model.new_state(batch.batch(), width, width);
            self.model
                .step(batch.prefill(prompts), &mut state, rows)?
                .into_host()
        })?;
        let vocab = config.vocab_size;
        let row = |r: usize| values[r * vocab..(r + 1) * vocab].to_vec();
        Ok((0..batch.batch())
            .map(|b| match positions {
                LogitPositions::Last => vec![row(b)],
                // Skip the pad columns: callers get exactly the prompt's own positions.
                LogitPositions::All => (width - batch.len(b)..width)
                    .map(|t| row(b * width + t))
                    .collect(),
            })
            .collect())
    }
}
