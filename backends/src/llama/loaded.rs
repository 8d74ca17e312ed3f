//! A Llama model loaded onto a device from a model folder or a built-in preset: config,
//! tokenizer and weights put together, the facts reported about it, and the engine's
//! `LoadedModel` contract.

use api::runtime::{
    GenerateOptions, Generation, LoadedModel, ModelInfo, ModelSpec, Quantization, RuntimeError,
    WeightsKind,
};
use api::serving::{ServeOptions, ServingBatch};
use burn::tensor::backend::Backend;
use kernels::WeightFormat;

use super::batch::PaddedBatch;
use super::burn_quant::BurnQuantFormats;
use super::config::LlamaConfig;
use super::files::ModelFiles;
use super::forward::{ForwardPass, LogitRows, StepLogits};
use super::generation::{LlamaGeneration, validate_prompts};
use super::host_model::HostPass;
use super::host_weights::{HostFormats, HostWeights};
use super::memory::{self, MemoryBudget};
use super::model::BurnPass;
use super::serving::LlamaServing;
use super::weights::{LM_HEAD, LlamaWeights, Role, WeightSource, parameter_count, weight_specs};
use crate::checkpoint::Checkpoint;
use crate::error::BackendError;
use crate::guard::catch_backend_panic;
use crate::handle::{ErasedModel, LogitPositions, Logits};
use crate::host::burn_dtype;
use crate::source::ResolvedSource;
use crate::tokenizer::TextTokenizer;

/// A Llama model ready to generate, on forward pass `P`.
pub(crate) struct LoadedLlama<P: ForwardPass> {
    info: ModelInfo,
    tokenizer: TextTokenizer,
    pass: P,
    /// What a generation's KV cache is checked against before it is reserved.
    budget: MemoryBudget,
}

/// The accelerator a model runs on, as its driver names it (recorded with every run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdapterInfo {
    /// The adapter (`llvmpipe (LLVM 15.0.6, 256 bits) (Cpu, vulkan)`).
    pub name: String,
    /// Its driver and version.
    pub driver: String,
}

/// Which forward pass a model is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassChoice {
    /// llmeff's host kernels ([`HostPass`], weights in their format; the CPU).
    Host,
    /// burn's ops ([`BurnPass`]), quantized linears as burn's own quantized tensors where the
    /// backend holds the format, else dequantized per product.
    Burn(BurnQuantFormats),
}

/// Loads the model in `source` onto `device` as `spec` asks, for the forward pass `pass`
/// (the one place the pass is chosen). The weights' size is checked against `budget` before
/// any of them is allocated.
pub(crate) fn load_llama<B: Backend>(
    source: &ResolvedSource,
    spec: &ModelSpec,
    device: B::Device,
    pass: PassChoice,
    budget: MemoryBudget,
    adapter: Option<AdapterInfo>,
) -> Result<Box<dyn ErasedModel>, RuntimeError> {
    let ModelFiles {
        config,
        eos_token_ids,
        tokenizer,
    } = ModelFiles::read(source)?;
    let dtype = burn_dtype(spec.dtype);
    let supported = catch_backend_panic("querying the device", || {
        Ok::<_, RuntimeError>(B::supports_dtype(&device, dtype))
    })?;
    if !supported {
        return Err(RuntimeError::UnsupportedDType {
            dtype: spec.dtype,
            device: spec.device.clone(),
        });
    }
    let checkpoint = match spec.weights {
        WeightsKind::Pretrained => match (&source.dir, &source.gguf) {
            (Some(dir), _) => Some(Checkpoint::open(dir)?),
            (None, Some(file)) => Some(Checkpoint::open_gguf(file)?),
            // Resolution only yields a folderless source for random weights.
            (None, None) => {
                return Err(RuntimeError::ModelNotFound {
                    name: source.name.clone(),
                    reason: "pretrained weights need the model's files, not a built-in preset"
                        .into(),
                });
            }
        },
        WeightsKind::Random => None,
    };
    if let Some(c) = &checkpoint {
        check_stored_quantization(c, &config, spec.quantization, pass)?;
    }
    let weight_source = match &checkpoint {
        Some(c) => WeightSource::Checkpoint(c),
        None => WeightSource::Random { seed: spec.seed },
    };
    let on_host = pass == PassChoice::Host;
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
    let info = |config: &LlamaConfig, compute: String, weight_bytes: i64| ModelInfo {
        name: source.name.clone(),
        architecture: config.arch.family.model_type().into(),
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
        eos_token_ids: eos_token_ids.clone(),
        adapter: adapter.as_ref().map(|a| a.name.clone()),
        adapter_driver: adapter.as_ref().map(|a| a.driver.clone()),
    };
    if on_host {
        let formats = HostFormats::new(spec.dtype, spec.quantization);
        let weights = HostWeights::build(&config, &weight_source, formats)?;
        let held = weights.bytes() as i64;
        let pass = HostPass::new(config, weights);
        let info = info(pass.config(), pass.compute(), held);
        return Ok(Box::new(LoadedLlama {
            info,
            tokenizer,
            pass,
            budget,
        }));
    }
    let mut weights = catch_backend_panic("loading weights", || {
        LlamaWeights::<B>::build(&config, &weight_source, &device, spec.dtype)
    })?;
    if let (Some(q), PassChoice::Burn(formats)) = (spec.quantization, pass) {
        for (i, layer) in weights.layers.iter_mut().enumerate() {
            for (name, linear) in layer.linears_mut() {
                let full = format!("model.layers.{i}.{name}.weight");
                weight_bytes -= catch_backend_panic("quantizing weights", || {
                    linear.quantize(&full, q, formats)
                })?;
            }
        }
    }
    let pass = BurnPass::new(config, weights, device, spec.dtype);
    let info = info(pass.config(), pass.compute(), weight_bytes);
    Ok(Box::new(LoadedLlama {
        info,
        tokenizer,
        pass,
        budget,
    }))
}

/// A checkpoint whose linear weights are stored quantized (a GGUF's Q8_0 or Q4_0) runs at
/// that quantization only, and only when the spec says so: the run's `quantization` column
/// comes from the script, so a file's int8 weights under an unquantized spec would be
/// recorded as f32, and re-quantizing them to another format would quantize twice. Linears
/// the file stores dense (llama.cpp keeps rows that are not whole blocks at F16) are quantized
/// to the same format as the load's other linears.
///
/// The host kernels take the stored codes as they are. The burn pass reads the values and
/// quantizes them again, which gives back Q8_0's codes exactly (both are absmax over 127,
/// rounded half away from zero) but not Q4_0's (its scale is the signed maximum over −8,
/// burn's and llmeff's int4 quantizers use absmax over 7): a Q4_0 file runs on the host only.
fn check_stored_quantization(
    checkpoint: &Checkpoint,
    config: &LlamaConfig,
    quantization: Option<Quantization>,
    pass: PassChoice,
) -> Result<(), RuntimeError> {
    let mut stored: Option<(String, WeightFormat)> = None;
    for spec in weight_specs(config) {
        if spec.role != Role::Linear || spec.name == LM_HEAD {
            continue;
        }
        if let Some(blocks) = checkpoint.blocks(&spec.name)? {
            let format = blocks.weight_format();
            match &stored {
                Some((_, first)) if *first != format => {
                    return Err(RuntimeError::InvalidModelFile {
                        path: checkpoint.origin().display().to_string(),
                        reason: format!(
                            "linear weights stored in two quantized formats ({} and {}): one run has one quantization",
                            first, format
                        ),
                    });
                }
                Some(_) => {}
                None => stored = Some((spec.name.clone(), format)),
            }
        }
    }
    let Some((example, format)) = stored else {
        return Ok(());
    };
    let (method, block) = match format {
        WeightFormat::Int8 { block } => ("int8", block),
        WeightFormat::Int4 { block } => ("int4", block),
        other => {
            return Err(BackendError::Internal(format!(
                "a stored quantized format llmeff has no method for: {}",
                other
            ))
            .into());
        }
    };
    let matches = quantization.is_some_and(|q| q.method.name() == method && q.block_size == block);
    if matches && method == "int4" && pass != PassChoice::Host {
        return Err(RuntimeError::InvalidInput(format!(
            "{} stores Q4_0 weights, which only llmeff's host kernels run as stored (compute: \"host\", the CPU's default): burn's int4 would quantize them a second time with another scale",
            checkpoint.origin().display()
        )));
    }
    if matches {
        return Ok(());
    }
    let asked = quantization.map_or_else(
        || "no quantization".to_string(),
        |q| format!("{} with blocks of {}", q.method.name(), q.block_size),
    );
    Err(RuntimeError::InvalidInput(format!(
        "{path} stores its linear weights quantized ({example}: {method}, blocks of {block}) but the load asks for {asked}: load it as `quantize(load(\"{path}\"), #{{ method: \"{method}\", block_size: {block} }})` (`llmeff generate --quantize {method}`) so the run computes and records the file's own quantization",
        path = checkpoint.origin().display(),
    )))
}

impl<P: ForwardPass> LoadedLlama<P> {
    /// Refuses a KV cache of `sequences` × `capacity` positions that the memory budget cannot
    /// hold beside the weights, before it is allocated.
    fn reserve_kv(&self, sequences: usize, capacity: usize) -> Result<(), RuntimeError> {
        let needed = self.pass.kv_cache_bytes(sequences, capacity)?;
        self.budget.ensure(self.info.weight_bytes, needed, || {
            format!(
                "the KV cache of {} ({sequences} sequences × {capacity} positions)",
                self.info.name
            )
        })
    }
}

impl<P: ForwardPass + 'static> LoadedModel for LoadedLlama<P> {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        Ok(self.tokenizer.encode(text)?)
    }

    fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        Ok(self.tokenizer.decode(ids)?)
    }

    fn start<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + 'a>, RuntimeError> {
        Ok(self.start_send(prompts, options)?)
    }

    fn serve<'a>(
        &'a self,
        options: &ServeOptions,
    ) -> Result<Box<dyn ServingBatch + 'a>, RuntimeError> {
        Ok(self.serve_send(options)?)
    }
}

impl<P: ForwardPass + 'static> ErasedModel for LoadedLlama<P> {
    fn start_send<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + Send + 'a>, RuntimeError> {
        // What the generation reserves is refused before it is allocated.
        let generation = LlamaGeneration::start(
            &self.pass,
            &self.info.eos_token_ids,
            prompts,
            options,
            |sequences, capacity| self.reserve_kv(sequences, capacity),
        )?;
        Ok(Box::new(generation))
    }

    fn serve_send<'a>(
        &'a self,
        options: &ServeOptions,
    ) -> Result<Box<dyn ServingBatch + Send + 'a>, RuntimeError> {
        // The slots' cache is checked against the budget as a generation's is.
        let serving = LlamaServing::new(
            &self.pass,
            &self.info.eos_token_ids,
            options,
            |slots, capacity| self.reserve_kv(slots, capacity),
        )?;
        Ok(Box::new(serving))
    }

    fn executed_flops(&self) -> u64 {
        self.pass.executed_flops()
    }

    fn logits(
        &self,
        prompts: &[Vec<u32>],
        positions: LogitPositions,
    ) -> Result<Logits, RuntimeError> {
        let config = self.pass.config();
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
            let mut state = self.pass.new_state(batch.batch(), width, width);
            self.pass
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
