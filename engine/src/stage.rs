//! The stage kinds a plan is made of, with their fully-resolved options.
//!
//! A stage value holds every option with its default applied, so two calls that mean the
//! same thing hash the same, whatever the script spelled out.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

use api::meter::EstimateMode;
use api::runtime::{DType, Decoding, WeightsKind};

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
    /// Quantize a loaded model's weights.
    Quantize,
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
            StageKind::Quantize => "quantize",
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
    /// See [`QuantizeStage`].
    Quantize(QuantizeStage),
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
            Stage::Quantize(_) => StageKind::Quantize,
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

/// `quantize(model, #{...})`: weight-only quantization of a loaded model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct QuantizeStage {
    /// `int8`, `int4` or `nf4`.
    pub method: String,
    /// Weights per scale.
    pub block_size: usize,
}

impl QuantizeStage {
    /// The runtime form (the method name was validated when the stage was built).
    pub fn to_runtime(&self) -> Option<api::runtime::Quantization> {
        Some(api::runtime::Quantization {
            method: api::runtime::QuantMethod::parse(&self.method)?,
            block_size: self.block_size,
        })
    }
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
    /// Prompts per batch at most (the last batch may be smaller).
    pub size: usize,
    /// Adaptive batching: a batch also stops growing before its padded token count
    /// (batch × (longest prompt + max_new_tokens)) would exceed this budget.
    pub token_budget: Option<usize>,
}

/// When requests arrive (`infer(..., #{ arrival: #{...} })`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "pattern", rename_all = "snake_case")]
pub enum ArrivalSpec {
    /// All requests are waiting when the run starts (offline, closed loop).
    ClosedLoop,
    /// One request every `interval_s` seconds.
    Constant {
        /// Seconds between arrivals.
        interval_s: f64,
    },
    /// A Poisson process of `rate_per_s` requests per second (seeded).
    Poisson {
        /// Mean arrivals per second.
        rate_per_s: f64,
        /// RNG seed.
        seed: u64,
    },
    /// Bursts: `burst` requests at once, then `off_s` seconds of silence.
    Bursty {
        /// Requests per burst.
        burst: usize,
        /// Seconds between bursts.
        off_s: f64,
    },
}

impl ArrivalSpec {
    /// Short name for tables.
    pub fn name(&self) -> &'static str {
        match self {
            ArrivalSpec::ClosedLoop => "closed_loop",
            ArrivalSpec::Constant { .. } => "constant",
            ArrivalSpec::Poisson { .. } => "poisson",
            ArrivalSpec::Bursty { .. } => "bursty",
        }
    }

    /// The pattern with its parameters (`poisson 5/s seed=1`), for tables and progress lines.
    pub fn describe(&self) -> String {
        match *self {
            ArrivalSpec::ClosedLoop => "closed_loop".to_string(),
            ArrivalSpec::Constant { interval_s } => format!("constant every {interval_s} s"),
            ArrivalSpec::Poisson { rate_per_s, seed } => {
                format!("poisson {rate_per_s}/s seed={seed}")
            }
            ArrivalSpec::Bursty { burst, off_s } => format!("bursty {burst} every {off_s} s"),
        }
    }

    /// Arrival time of each of `n` requests, seconds after the run starts.
    pub fn arrivals(&self, n: usize) -> Vec<f64> {
        match *self {
            ArrivalSpec::ClosedLoop => vec![0.0; n],
            ArrivalSpec::Constant { interval_s } => (0..n).map(|i| i as f64 * interval_s).collect(),
            ArrivalSpec::Poisson { rate_per_s, seed } => {
                let mut rng = crate::shuffle::SplitMix64::new(seed);
                let mut t = 0.0;
                (0..n)
                    .map(|i| {
                        if i > 0 {
                            // Exponential gaps by inversion; 53 random bits give a uniform in (0, 1].
                            let u = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
                            t += -u.ln() / rate_per_s;
                        }
                        t
                    })
                    .collect()
            }
            ArrivalSpec::Bursty { burst, off_s } => {
                (0..n).map(|i| (i / burst.max(1)) as f64 * off_s).collect()
            }
        }
    }
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

    /// The method with its settings, so two sampling runs tell apart in a table
    /// (`sample t=0.8 top_k=50 top_p=1 seed=0`).
    pub fn describe(&self) -> String {
        match *self {
            DecodingSpec::Greedy => "greedy".to_string(),
            DecodingSpec::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            } => format!("sample t={temperature} top_k={top_k} top_p={top_p} seed={seed}"),
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
    /// Request arrival pattern.
    pub arrival: ArrivalSpec,
}

/// `measure(run, #{...})`: the meters of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasureStage {
    /// Meter names, in a canonical (sorted, deduplicated) order.
    pub meters: Vec<String>,
    /// Sampling interval of background meters (power, utilisation, memory), milliseconds.
    pub interval_ms: u64,
    /// Seconds of idle measurement before the run, for a baseline power (0 = none).
    pub idle_baseline_s: f64,
    /// Carbon accounting settings.
    pub carbon: CarbonSpec,
    /// How a CPU/RAM estimate charges the run (`estimate: "machine" | "process"`). Left out of
    /// the serialised options when it is the default, so runs planned before the option
    /// existed keep their content hash.
    #[serde(skip_serializing_if = "EstimateMode::is_machine")]
    pub estimate: EstimateMode,
}

/// Where electricity comes from, for `co2e_g`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CarbonSpec {
    /// ISO 3166-1 alpha-3 country code (`GBR`), or `None` for the world average.
    pub country: Option<String>,
    /// Sub-national region within the country, where the table has one.
    pub region: Option<String>,
    /// Explicit grid intensity, gCO2e per kWh, overriding the table.
    pub intensity_g_per_kwh: Option<f64>,
    /// Power usage effectiveness of the facility (1.0 = none).
    pub pue: f64,
}

impl Default for CarbonSpec {
    fn default() -> Self {
        CarbonSpec {
            country: None,
            region: None,
            intensity_g_per_kwh: None,
            pue: 1.0,
        }
    }
}

impl MeasureStage {
    /// The meters a run gets when nothing measures it explicitly.
    pub fn default_for_run() -> Self {
        MeasureStage {
            meters: crate::plan::DEFAULT_METERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            interval_ms: 100,
            idle_baseline_s: 0.0,
            carbon: CarbonSpec::default(),
            estimate: EstimateMode::Machine,
        }
    }
}

/// `aggregate(#{...})`: statistics over all runs of the study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateStage {
    /// Group-by columns.
    pub by: Vec<String>,
    /// Statistic names.
    pub stats: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_are_seeded_with_the_requested_mean_rate() {
        let a = ArrivalSpec::Poisson {
            rate_per_s: 4.0,
            seed: 3,
        }
        .arrivals(20_000);
        assert_eq!(
            a,
            ArrivalSpec::Poisson {
                rate_per_s: 4.0,
                seed: 3
            }
            .arrivals(20_000)
        );
        assert_eq!(a[0], 0.0);
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        let mean_gap = a[a.len() - 1] / (a.len() - 1) as f64;
        // Standard error of the mean gap is 0.25 / sqrt(20000) = 0.0018; allow 4 of them.
        assert!((mean_gap - 0.25).abs() < 0.0072, "{mean_gap}");
    }

    #[test]
    fn constant_and_bursty_arrivals() {
        assert_eq!(
            ArrivalSpec::Constant { interval_s: 0.5 }.arrivals(3),
            vec![0.0, 0.5, 1.0]
        );
        assert_eq!(
            ArrivalSpec::Bursty {
                burst: 2,
                off_s: 3.0
            }
            .arrivals(5),
            vec![0.0, 0.0, 3.0, 3.0, 6.0]
        );
        assert_eq!(ArrivalSpec::ClosedLoop.arrivals(2), vec![0.0, 0.0]);
    }
}
