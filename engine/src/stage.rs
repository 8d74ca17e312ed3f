//! The stage kinds a plan is made of, with their fully-resolved options.
//!
//! A stage value holds every option with its default applied, so two calls that mean the
//! same thing hash the same, whatever the script spelled out.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

use crate::runtime::{DType, Decoding, WeightsKind};

/// Content address of a stage: hash of its kind, options and inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct StageId(pub [u8; 16]);

impl StageId {
    /// Hex form, as used in file names and tables.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Short hex form for human-facing output.
    pub fn short(&self) -> String {
        self.hex()[..8].to_string()
    }

    /// Hashes a stage kind, its serialised options and its inputs' ids.
    pub fn of(stage: &Stage, inputs: &[StageId]) -> StageId {
        let mut hasher = Sha256::new();
        hasher.update(stage.kind().name().as_bytes());
        hasher.update([0]);
        // Serialising plain structs of strings and numbers cannot fail.
        let options = serde_json::to_vec(stage).expect("stage options are plain data");
        hasher.update(&options);
        for input in inputs {
            hasher.update(input.0);
        }
        let digest = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        StageId(id)
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// The kinds of stage, in pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Load a model onto a device.
    Load,
    /// A set of prompts.
    Prompts,
    /// Prompts grouped into batches.
    Batch,
    /// Generation over batches with a model.
    Infer,
    /// What to measure while an inference runs; one measure node is one run.
    Measure,
    /// Statistics over finished runs.
    Aggregate,
}

impl StageKind {
    /// Lower-case name, as the Rhai function is called.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Load => "load",
            StageKind::Prompts => "prompts",
            StageKind::Batch => "batch",
            StageKind::Infer => "infer",
            StageKind::Measure => "measure",
            StageKind::Aggregate => "aggregate",
        }
    }
}

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stage {
    /// See [`LoadStage`].
    Load(LoadStage),
    /// See [`PromptsStage`].
    Prompts(PromptsStage),
    /// See [`BatchStage`].
    Batch(BatchStage),
    /// See [`InferStage`].
    Infer(InferStage),
    /// See [`MeasureStage`].
    Measure(MeasureStage),
    /// See [`AggregateStage`].
    Aggregate(AggregateStage),
}

impl Stage {
    /// The stage's kind.
    pub fn kind(&self) -> StageKind {
        match self {
            Stage::Load(_) => StageKind::Load,
            Stage::Prompts(_) => StageKind::Prompts,
            Stage::Batch(_) => StageKind::Batch,
            Stage::Infer(_) => StageKind::Infer,
            Stage::Measure(_) => StageKind::Measure,
            Stage::Aggregate(_) => StageKind::Aggregate,
        }
    }
}

fn serialize_dtype<S: serde::Serializer>(d: &DType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.name())
}

fn serialize_weights<S: serde::Serializer>(w: &WeightsKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(w.name())
}

/// `load(model, #{...})`: which model, in which precision, on which device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LoadStage {
    /// Alias, folder or Hub id.
    pub model: String,
    /// Hub revision.
    pub revision: Option<String>,
    /// Precision.
    #[serde(serialize_with = "serialize_dtype")]
    pub dtype: DType,
    /// Trained or random weights.
    #[serde(serialize_with = "serialize_weights")]
    pub weights: WeightsKind,
    /// Device name (`cpu`, `cuda:0`).
    pub device: String,
    /// Seed for random weights.
    pub seed: u64,
}

/// Where prompts come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptSource {
    /// A prompt set bundled with llmeff (`builtin:NAME`).
    Builtin(String),
    /// Prompts written in the script.
    Inline(Vec<String>),
}

impl fmt::Display for PromptSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptSource::Builtin(name) => write!(f, "builtin:{name}"),
            PromptSource::Inline(items) => write!(f, "inline[{}]", items.len()),
        }
    }
}

/// `prompts(source, #{...})`: a deterministic list of prompts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PromptsStage {
    /// Where they come from.
    pub source: PromptSource,
    /// How many to take (cycling through the source if it has fewer).
    pub count: Option<usize>,
    /// Prompts are cut to at most this many tokens (after tokenisation, at run time).
    pub max_input_tokens: Option<usize>,
    /// Seed of the shuffle that picks prompts from the source.
    pub seed: u64,
}

/// `batch(prompts, #{...})`: how prompts are grouped into generation batches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BatchStage {
    /// Prompts per batch (the last batch may be smaller).
    pub size: usize,
}

/// How tokens are chosen, as written in a script.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum DecodingSpec {
    /// Most likely token.
    Greedy,
    /// Random sampling.
    Sample {
        /// Softmax temperature.
        temperature: f64,
        /// Top-k cut (0 = off).
        top_k: usize,
        /// Top-p cut (1.0 = off).
        top_p: f64,
        /// RNG seed.
        seed: u64,
    },
}

impl DecodingSpec {
    /// The runtime form.
    pub fn to_runtime(&self) -> Decoding {
        match *self {
            DecodingSpec::Greedy => Decoding::Greedy,
            DecodingSpec::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            } => Decoding::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            },
        }
    }

    /// Short name for tables (`greedy`, `sample`).
    pub fn method(&self) -> &'static str {
        match self {
            DecodingSpec::Greedy => "greedy",
            DecodingSpec::Sample { .. } => "sample",
        }
    }
}

/// `infer(model, batches, #{...})`: a generation workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferStage {
    /// New tokens per prompt at most.
    pub max_new_tokens: usize,
    /// New tokens per prompt at least (EOS ignored before).
    pub min_new_tokens: usize,
    /// Whether EOS ends a sequence.
    pub stop_at_eos: bool,
    /// Token selection.
    pub decoding: DecodingSpec,
    /// Untimed warm-up generations (real generate calls on the first batch) before timing.
    pub warmup: usize,
}

/// `measure(run, #{...})`: the meters of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureStage {
    /// Meter names, in a canonical (sorted, deduplicated) order.
    pub meters: Vec<String>,
}

/// `aggregate(#{...})`: statistics over all runs of the study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateStage {
    /// Group-by columns.
    pub by: Vec<String>,
    /// Statistic names.
    pub stats: Vec<String>,
}
