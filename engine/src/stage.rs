//! The stage kinds a plan is made of, with their fully-resolved options.
//!
//! A stage value holds every option with its default applied, so two calls that mean the
//! same thing hash the same, whatever the script spelled out.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

use api::meter::EstimateMode;
use api::runtime::{Compute, DType, Decoding, WeightsKind};

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

    /// Hashes a stage kind, its canonical form ([`Stage::canonical`]) and its inputs' ids.
    pub fn of(stage: &Stage, inputs: &[StageId]) -> StageId {
        let mut hasher = Sha256::new();
        hasher.update(stage.kind().name().as_bytes());
        hasher.update([0]);
        hasher.update(stage.canonical());
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

/// The canonical form of run identity, version 1 (`llmeff-run-v1`): the bytes
/// [`StageId::of`] hashes for a stage.
///
/// It is a compact JSON object written key by key in a fixed order, with each key named here
/// rather than taken from a Rust field, so renaming a field or reordering a struct cannot
/// re-hash stored runs. Version 1 is, byte for byte, the form every stored run was hashed
/// from (it was once `serde_json` of these structs), so studies stored before it resume.
/// A key added later is written only when its value is not the default, so runs that leave it
/// out keep their hash (`estimate` of measure, `compute` of load). A change that must
/// re-hash runs writes a new version (prefixed `llmeff-run-v2`) and the manifest must tell
/// the two apart.
#[derive(Default)]
struct Canonical {
    out: String,
}

/// A leaf value in its canonical JSON spelling (strings escaped, floats shortest round-trip).
fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Strings, integers, floats, booleans and lists of strings always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

impl Canonical {
    fn object(write: impl FnOnce(&mut Canonical)) -> String {
        let mut c = Canonical::default();
        c.out.push('{');
        write(&mut c);
        c.out.push('}');
        c.out
    }

    fn raw(&mut self, key: &str, value: &str) -> &mut Self {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        self.out.push_str(&json(key));
        self.out.push(':');
        self.out.push_str(value);
        self
    }

    fn value<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> &mut Self {
        self.raw(key, &json(value))
    }
}

impl Stage {
    /// The stage's canonical form (see [`Canonical`]): what its identity hashes.
    pub fn canonical(&self) -> String {
        Canonical::object(|c| match self {
            Stage::Load(s) => {
                c.value("kind", "load")
                    .value("model", &s.model)
                    .value("revision", &s.revision)
                    .value("dtype", s.dtype.name())
                    .value("weights", s.weights.name())
                    .value("device", &s.device)
                    .value("seed", &s.seed);
                if s.compute != Compute::Auto {
                    c.value("compute", s.compute.name());
                }
            }
            Stage::Quantize(s) => {
                c.value("kind", "quantize")
                    .value("method", &s.method)
                    .value("block_size", &s.block_size);
            }
            Stage::Prompts(s) => {
                let source = match &s.source {
                    PromptSource::Builtin(name) => Canonical::object(|c| {
                        c.value("builtin", name);
                    }),
                    PromptSource::Inline(items) => Canonical::object(|c| {
                        c.value("inline", items);
                    }),
                };
                c.value("kind", "prompts")
                    .raw("source", &source)
                    .value("count", &s.count)
                    .value("max_input_tokens", &s.max_input_tokens)
                    .value("seed", &s.seed);
            }
            Stage::Batch(s) => {
                c.value("kind", "batch")
                    .value("size", &s.size)
                    .value("token_budget", &s.token_budget);
            }
            Stage::Infer(s) => {
                let decoding = Canonical::object(|c| match s.decoding {
                    DecodingSpec::Greedy => {
                        c.value("method", "greedy");
                    }
                    DecodingSpec::Sample {
                        temperature,
                        top_k,
                        top_p,
                        seed,
                    } => {
                        c.value("method", "sample")
                            .value("temperature", &temperature)
                            .value("top_k", &top_k)
                            .value("top_p", &top_p)
                            .value("seed", &seed);
                    }
                });
                let arrival = Canonical::object(|c| match s.arrival {
                    ArrivalSpec::ClosedLoop => {
                        c.value("pattern", "closed_loop");
                    }
                    ArrivalSpec::Constant { interval_s } => {
                        c.value("pattern", "constant")
                            .value("interval_s", &interval_s);
                    }
                    ArrivalSpec::Poisson { rate_per_s, seed } => {
                        c.value("pattern", "poisson")
                            .value("rate_per_s", &rate_per_s)
                            .value("seed", &seed);
                    }
                    ArrivalSpec::Bursty { burst, off_s } => {
                        c.value("pattern", "bursty")
                            .value("burst", &burst)
                            .value("off_s", &off_s);
                    }
                    ArrivalSpec::Trace {
                        ref path,
                        time_scale,
                    } => {
                        c.value("pattern", "trace")
                            .value("path", path)
                            .value("time_scale", &time_scale);
                    }
                    ArrivalSpec::Gamma {
                        rate_per_s,
                        burstiness,
                        seed,
                    } => {
                        c.value("pattern", "gamma")
                            .value("rate_per_s", &rate_per_s)
                            .value("burstiness", &burstiness)
                            .value("seed", &seed);
                    }
                });
                c.value("kind", "infer")
                    .value("max_new_tokens", &s.max_new_tokens)
                    .value("min_new_tokens", &s.min_new_tokens)
                    .value("stop_at_eos", &s.stop_at_eos)
                    .raw("decoding", &decoding)
                    .value("warmup", &s.warmup)
                    .raw("arrival", &arrival);
                // Only when set, so runs planned before serving existed keep their hash.
                if let Some(serve) = &s.serve {
                    let serve = Canonical::object(|c| {
                        c.value("max_batch", &serve.max_batch)
                            .value("max_batch_tokens", &serve.max_batch_tokens)
                            .value("prefill", serve.prefill.name());
                    });
                    c.raw("serve", &serve);
                }
                if let Some(slo) = &s.slo {
                    let slo = Canonical::object(|c| {
                        c.value("ttft_s", &slo.ttft_s).value("tpot_s", &slo.tpot_s);
                    });
                    c.raw("slo", &slo);
                }
            }
            Stage::Measure(s) => {
                let carbon = Canonical::object(|c| {
                    c.value("country", &s.carbon.country)
                        .value("region", &s.carbon.region)
                        .value("intensity_g_per_kwh", &s.carbon.intensity_g_per_kwh)
                        .value("pue", &s.carbon.pue);
                });
                c.value("kind", "measure")
                    .value("meters", &s.meters)
                    .value("interval_ms", &s.interval_ms)
                    .value("idle_baseline_s", &s.idle_baseline_s)
                    .raw("carbon", &carbon);
                if s.estimate != EstimateMode::Machine {
                    c.value("estimate", s.estimate.name());
                }
            }
            Stage::Aggregate(s) => {
                c.value("kind", "aggregate")
                    .value("by", &s.by)
                    .value("stats", &s.stats);
            }
        })
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
    /// Forward pass (`auto`, `host`, `burn`). Left out of the serialised options when it is
    /// the default, so runs planned before the option existed keep their content hash.
    #[serde(skip_serializing_if = "Compute::is_auto")]
    pub compute: Compute,
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
    /// Gaps drawn from a gamma distribution of mean `1 / rate_per_s` and shape `burstiness`
    /// (vLLM's `--burstiness`: 1 is Poisson, below 1 burstier, above 1 more regular; the
    /// gaps' coefficient of variation is `1 / √burstiness`), seeded.
    Gamma {
        /// Mean arrivals per second.
        rate_per_s: f64,
        /// The gamma shape.
        burstiness: f64,
        /// RNG seed.
        seed: u64,
    },
    /// A recorded trace replayed ([`crate::trace`]): each row's arrival, prompt tokens and
    /// output tokens (the Azure LLM inference traces' columns load as they are). The trace
    /// sets the requests: the run's prompts are cycled and cut or repeated to each request's
    /// length; in fixed batches a batch runs until its longest request ends.
    Trace {
        /// The CSV or JSON Lines file, as written in the script (relative: to the working
        /// directory of `llmeff run`).
        path: String,
        /// Multiplies the gaps (0.5 replays twice as fast).
        time_scale: f64,
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
            ArrivalSpec::Gamma { .. } => "gamma",
            ArrivalSpec::Trace { .. } => "trace",
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
            ArrivalSpec::Gamma {
                rate_per_s,
                burstiness,
                seed,
            } => format!("gamma {rate_per_s}/s burstiness={burstiness} seed={seed}"),
            ArrivalSpec::Trace {
                ref path,
                time_scale,
            } => format!("trace {path} x{time_scale}"),
        }
    }

    /// The mean arrival rate the pattern offers, requests per second (`None`: everything at
    /// once, or bursts whose rate depends on the burst).
    pub fn offered_rate_per_s(&self) -> Option<f64> {
        match *self {
            ArrivalSpec::ClosedLoop => None,
            ArrivalSpec::Constant { interval_s } => Some(1.0 / interval_s),
            ArrivalSpec::Poisson { rate_per_s, .. } | ArrivalSpec::Gamma { rate_per_s, .. } => {
                Some(rate_per_s)
            }
            ArrivalSpec::Bursty { burst, off_s } => Some(burst as f64 / off_s),
            // Known once the trace is read.
            ArrivalSpec::Trace { .. } => None,
        }
    }

    /// Arrival time of each of `n` requests, seconds after the run starts (a trace's are
    /// read by the executor: all zero here).
    pub fn arrivals(&self, n: usize) -> Vec<f64> {
        match *self {
            ArrivalSpec::Trace { .. } => vec![0.0; n],
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
            ArrivalSpec::Gamma {
                rate_per_s,
                burstiness,
                seed,
            } => {
                let mut rng = crate::shuffle::SplitMix64::new(seed);
                // Scale θ = 1 / (rate · shape): the mean gap is shape · θ = 1 / rate.
                let scale = 1.0 / (rate_per_s * burstiness);
                let mut t = 0.0;
                (0..n)
                    .map(|i| {
                        if i > 0 {
                            t += crate::arrivals::gamma(&mut rng, burstiness) * scale;
                        }
                        t
                    })
                    .collect()
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
    /// Continuous batching (`serve: #{...}`): requests join and leave the running batch at
    /// every step; `None` runs the fixed batches of `batch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeSpec>,
    /// The latency targets goodput counts requests against (`slo: #{...}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
}

/// `infer(..., #{ serve: #{...} })`: the iteration-level scheduler's limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServeSpec {
    /// Sequences the running batch holds at most (KV slots).
    pub max_batch: usize,
    /// Tokens one iteration processes at most: one per decoding sequence plus the prompt
    /// tokens prefilled (vLLM's `max_num_batched_tokens`).
    pub max_batch_tokens: usize,
    /// How prompts are prefilled.
    pub prefill: PrefillMode,
}

/// How the scheduler runs a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillMode {
    /// A request is admitted when its whole prompt fits the iteration's remaining token
    /// budget, and prefilled in one pass.
    Whole,
    /// Prompts are cut to the iteration's remaining budget and prefilled over several
    /// iterations, beside the running decodes (vLLM's chunked prefill).
    Chunked,
}

impl PrefillMode {
    /// `whole` or `chunked`.
    pub fn name(self) -> &'static str {
        match self {
            PrefillMode::Whole => "whole",
            PrefillMode::Chunked => "chunked",
        }
    }
}

/// Latency targets of a request, for goodput (vLLM's `--goodput`): a request counts when
/// its TTFT and its TPOT are both within their targets (an unset target always holds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloSpec {
    /// Arrival to first token, seconds.
    pub ttft_s: Option<f64>,
    /// Mean time per output token after the first, seconds.
    pub tpot_s: Option<f64>,
}

impl SloSpec {
    /// Whether a request with these latencies meets both targets (a request with one token
    /// has no TPOT and meets any TPOT target).
    pub fn met(&self, ttft_s: f64, tpot_s: Option<f64>) -> bool {
        self.ttft_s.is_none_or(|t| ttft_s <= t)
            && match (self.tpot_s, tpot_s) {
                (Some(target), Some(tpot)) => tpot <= target,
                _ => true,
            }
    }
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
            meters: crate::vocabulary::DEFAULT_METERS
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

    /// One stage of each kind and variant, with hashes taken before the canonical form
    /// replaced `serde_json` of these structs.
    fn known_stages() -> Vec<(&'static str, Stage)> {
        vec![
            (
                "load",
                Stage::Load(LoadStage {
                    model: "tiny-stories".into(),
                    revision: None,
                    dtype: DType::F32,
                    weights: WeightsKind::Pretrained,
                    device: "cpu".into(),
                    seed: 0,
                    compute: Compute::Auto,
                }),
            ),
            (
                "load_rev",
                Stage::Load(LoadStage {
                    model: "org/m \"q\"".into(),
                    revision: Some("v1".into()),
                    dtype: DType::BF16,
                    weights: WeightsKind::Random,
                    device: "cuda:1".into(),
                    seed: 7,
                    compute: Compute::Auto,
                }),
            ),
            (
                "quantize",
                Stage::Quantize(QuantizeStage {
                    method: "int8".into(),
                    block_size: 32,
                }),
            ),
            (
                "prompts_builtin",
                Stage::Prompts(PromptsStage {
                    source: PromptSource::Builtin("stories".into()),
                    count: Some(8),
                    max_input_tokens: None,
                    seed: 0,
                }),
            ),
            (
                "prompts_inline",
                Stage::Prompts(PromptsStage {
                    source: PromptSource::Inline(vec!["a\nb".into(), "é".into()]),
                    count: None,
                    max_input_tokens: Some(64),
                    seed: 3,
                }),
            ),
            (
                "batch",
                Stage::Batch(BatchStage {
                    size: 4,
                    token_budget: None,
                }),
            ),
            (
                "batch_budget",
                Stage::Batch(BatchStage {
                    size: 8,
                    token_budget: Some(512),
                }),
            ),
            (
                "infer",
                Stage::Infer(InferStage {
                    max_new_tokens: 32,
                    min_new_tokens: 0,
                    stop_at_eos: true,
                    decoding: DecodingSpec::Greedy,
                    warmup: 1,
                    arrival: ArrivalSpec::ClosedLoop,
                    serve: None,
                    slo: None,
                }),
            ),
            (
                "infer_sample_poisson",
                Stage::Infer(InferStage {
                    max_new_tokens: 64,
                    min_new_tokens: 8,
                    stop_at_eos: false,
                    decoding: DecodingSpec::Sample {
                        temperature: 0.8,
                        top_k: 40,
                        top_p: 0.9,
                        seed: 1,
                    },
                    warmup: 0,
                    arrival: ArrivalSpec::Poisson {
                        rate_per_s: 5.0,
                        seed: 2,
                    },
                    serve: None,
                    slo: None,
                }),
            ),
            (
                "infer_constant",
                Stage::Infer(InferStage {
                    max_new_tokens: 16,
                    min_new_tokens: 0,
                    stop_at_eos: true,
                    decoding: DecodingSpec::Sample {
                        temperature: 1.0,
                        top_k: 0,
                        top_p: 1.0,
                        seed: 0,
                    },
                    warmup: 2,
                    arrival: ArrivalSpec::Constant { interval_s: 0.25 },
                    serve: None,
                    slo: None,
                }),
            ),
            (
                "infer_bursty",
                Stage::Infer(InferStage {
                    max_new_tokens: 16,
                    min_new_tokens: 1,
                    stop_at_eos: true,
                    decoding: DecodingSpec::Greedy,
                    warmup: 1,
                    arrival: ArrivalSpec::Bursty {
                        burst: 4,
                        off_s: 1e-7,
                    },
                    serve: None,
                    slo: None,
                }),
            ),
            ("measure", Stage::Measure(MeasureStage::default_for_run())),
            (
                "measure_full",
                Stage::Measure(MeasureStage {
                    meters: vec!["energy".into(), "latency".into()],
                    interval_ms: 50,
                    idle_baseline_s: 1.5,
                    carbon: CarbonSpec {
                        country: Some("SWE".into()),
                        region: Some("SE3".into()),
                        intensity_g_per_kwh: Some(12.5),
                        pue: 1.2,
                    },
                    estimate: EstimateMode::Process,
                }),
            ),
            (
                "aggregate",
                Stage::Aggregate(AggregateStage {
                    by: vec!["model".into(), "batch_size".into()],
                    stats: vec!["mean".into(), "ci95".into()],
                }),
            ),
        ]
    }

    #[test]
    fn run_identity_is_pinned_to_the_canonical_form_stored_runs_were_hashed_from() {
        // (stage, id without inputs, id with the plain load's id twice as inputs). These are
        // the ids stored studies hold; a change here re-hashes every stored run and breaks
        // resume, so it needs a new canonical version, not a new literal.
        let pinned = [
            (
                "load",
                "7a09afb1786e4aca7838ea855fb4426e",
                "6298eb7a085ad9ac3d15b152ef6bf5fd",
            ),
            (
                "load_rev",
                "de1023c94141c21f78512a5230a28d9d",
                "41bdfddabf74c3e31e216ff4fa4063cc",
            ),
            (
                "quantize",
                "284874c587b6bdbfbf6f43342d4c13e9",
                "0b8cb91663617765851d327246bc1ac4",
            ),
            (
                "prompts_builtin",
                "4dfc6277be29c8bdcbc9577ac38feb0c",
                "76bca4b44c4b72c43d45db938957c653",
            ),
            (
                "prompts_inline",
                "7ada494723c0bbeddad7d455fe945b03",
                "920c60d2d0c5402a8bd7b5f82d5d05b8",
            ),
            (
                "batch",
                "6b418d5b3427043c7235151bbf123728",
                "fe52eb09aac531d14935169e2f89d20a",
            ),
            (
                "batch_budget",
                "a1a3d3291d57ea65a2d69f6b0e745c29",
                "94e2d4281e43c5bf565a7454bfc1a084",
            ),
            (
                "infer",
                "77a296320151cbcbb37ec77ba4c39b8c",
                "1a0f4c343051a4e8943269558c1d96d9",
            ),
            (
                "infer_sample_poisson",
                "2e12d8e2a79cd6dd7b23de91c7a96ec1",
                "63e0e14b5e9c30cef2d8472eedc8fa65",
            ),
            (
                "infer_constant",
                "5fe413512beb58b373e61916c549650e",
                "d37af004a9b3e7bd0bcad361d8d91e71",
            ),
            (
                "infer_bursty",
                "d44554a49eb19555ed9d7631e4d0414c",
                "535a1c4002c29ff2076a946a541e4e71",
            ),
            (
                "measure",
                "2498780981434255926718d3de5d6505",
                "864862868bf2a3a36791a16453434279",
            ),
            (
                "measure_full",
                "8e58956d825acfa902811a3c1d3357ee",
                "0c7d9dd809bb90eb566e821c56a53917",
            ),
            (
                "aggregate",
                "f933aa655d0620f9e524acef8055aa86",
                "d9e0cab29b03ef6e52c82078e3ea27b2",
            ),
        ];
        let stages = known_stages();
        assert_eq!(stages.len(), pinned.len());
        let load = StageId::of(&stages[0].1, &[]);
        for ((name, stage), (pinned_name, alone, with_inputs)) in stages.iter().zip(pinned) {
            assert_eq!(*name, pinned_name);
            assert_eq!(StageId::of(stage, &[]).hex(), alone, "{name}");
            assert_eq!(
                StageId::of(stage, &[load, load]).hex(),
                with_inputs,
                "{name}"
            );
        }
    }

    #[test]
    fn the_canonical_form_names_its_keys_in_a_fixed_order() {
        let stages = known_stages();
        assert_eq!(
            stages[0].1.canonical(),
            r#"{"kind":"load","model":"tiny-stories","revision":null,"dtype":"f32","weights":"pretrained","device":"cpu","seed":0}"#
        );
        assert_eq!(
            stages[8].1.canonical(),
            r#"{"kind":"infer","max_new_tokens":64,"min_new_tokens":8,"stop_at_eos":false,"decoding":{"method":"sample","temperature":0.8,"top_k":40,"top_p":0.9,"seed":1},"warmup":0,"arrival":{"pattern":"poisson","rate_per_s":5.0,"seed":2}}"#
        );
    }

    #[test]
    fn the_compute_path_is_part_of_the_identity_only_when_chosen() {
        let Stage::Load(auto) = known_stages().remove(0).1 else {
            unreachable!("the first known stage is a load")
        };
        let id = |compute| {
            StageId::of(
                &Stage::Load(LoadStage {
                    compute,
                    ..auto.clone()
                }),
                &[],
            )
        };
        // `auto` is the pass every run took before the option existed: same hash as then.
        assert_eq!(id(Compute::Auto).hex(), "7a09afb1786e4aca7838ea855fb4426e");
        assert_ne!(id(Compute::Host), id(Compute::Auto));
        assert_ne!(id(Compute::Burn), id(Compute::Auto));
        assert_ne!(id(Compute::Host), id(Compute::Burn));
        assert!(
            Stage::Load(LoadStage {
                compute: Compute::Burn,
                ..auto
            })
            .canonical()
            .ends_with(r#","seed":0,"compute":"burn"}"#)
        );
    }
}
