//! Evaluating Rhai study scripts into a [`Plan`].
//!
//! The Rhai engine is sandboxed: no `eval`, limits on operations, call depth and sizes, and the
//! only functions that touch the world are the stage builders, which only add plan nodes.

use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Position, Scope};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::limits;
use crate::options::{OptionError, OptionMap};
use crate::placement::Placement;
use crate::plan::{Plan, StudySettings};
use crate::prompts::{self, BUILTIN_SETS};
use crate::resolver::ModuleResolver;
use crate::stage::{
    AggregateStage, ArrivalSpec, BatchStage, CarbonSpec, DecodingSpec, InferStage, LoadStage,
    MeasureStage, PrefillMode, PromptSource, PromptsStage, QuantizeStage, ServeSpec, SloSpec,
    Stage, StageId, StageKind,
};
use crate::vocabulary::{self, DEFAULT_METERS, GROUP_BY_COLUMNS, METERS, STATS};
use api::device::{DeviceName, REPLICA_SEPARATOR};
use api::meter::EstimateMode;
use api::runtime::{Compute, DType, HOST_BLOCK_MULTIPLE, QuantMethod, WeightsKind};

/// A handle to a plan node, as Rhai scripts hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Content address of the node.
    pub id: StageId,
    /// What kind of node it is.
    pub kind: StageKind,
}

impl Node {
    fn describe(&self) -> String {
        format!("{} (from {}())", kind_noun(self.kind), self.kind.name())
    }
}

fn kind_noun(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Load => "a model",
        StageKind::Quantize => "a quantized model",
        StageKind::Prompts => "prompts",
        StageKind::Batch => "batches",
        StageKind::Infer => "an inference run",
        StageKind::Measure => "a measured run",
        StageKind::Aggregate => "an aggregate",
    }
}

/// A script error with its location, rendered with the source line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScriptError {
    /// File (or `<repl>`) the error is in.
    pub file: String,
    /// 1-based line, 0 if unknown.
    pub line: usize,
    /// 1-based column, 0 if unknown.
    pub column: usize,
    /// What went wrong.
    pub message: String,
    /// The offending source line, when known.
    pub source_line: Option<String>,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(src) = &self.source_line {
            let gutter = self.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", self.line, src)?;
            write!(
                f,
                "{:gutter$} | {:>col$}",
                "",
                "^",
                col = self.column.max(1)
            )?;
        }
        Ok(())
    }
}

type Shared = Arc<Mutex<Plan>>;

fn lock(plan: &Shared) -> MutexGuard<'_, Plan> {
    // A poisoned lock only means an earlier binding panicked; the plan itself stays consistent
    // because every mutation is a single `add`.
    plan.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds a stage to the plan unless the plan would go over [`limits::MAX_STAGES`] stages or
/// [`limits::MAX_EXECUTIONS`] runs x cycles; checked before adding, so a refused stage leaves
/// the plan (a REPL session's) as it was.
fn add(plan: &Shared, stage: Stage, inputs: &[StageId]) -> Result<StageId, Box<EvalAltResult>> {
    let mut plan = lock(plan);
    if plan.len() >= limits::MAX_STAGES && !plan.contains(&stage, inputs) {
        return Err(format!(
            "the plan is over the limit of {} stages",
            limits::MAX_STAGES
        )
        .into());
    }
    let runs = plan.runs_after_adding(&stage, inputs);
    let cycles = plan.study.cycles.max(1);
    if runs > plan.run_count() && runs.saturating_mul(cycles) > limits::MAX_EXECUTIONS {
        return Err(format!(
            "{runs} runs x {cycles} cycles is over the limit of {} executions",
            limits::MAX_EXECUTIONS
        )
        .into());
    }
    Ok(plan.add(stage, inputs))
}

fn opt_err(e: OptionError) -> Box<EvalAltResult> {
    e.to_string().into()
}

fn expect_node(
    value: &Dynamic,
    stage: &'static str,
    position: usize,
    expected: &'static str,
    kinds: &[StageKind],
) -> Result<Node, Box<EvalAltResult>> {
    let got = match value.clone().try_cast::<Node>() {
        Some(node) if kinds.contains(&node.kind) => return Ok(node),
        Some(node) => node.describe(),
        None => value.type_name().to_string(),
    };
    Err(format!("{stage}() expects {expected} as argument {position}, got {got}").into())
}

/// The options of `stage` (its map, or `()` when the call has none), checked against the keys
/// the vocabulary declares for it.
fn options(value: Dynamic, stage: &'static str) -> Result<OptionMap, Box<EvalAltResult>> {
    if value.is_unit() {
        return OptionMap::declared(stage, Map::new()).map_err(opt_err);
    }
    match value.try_cast::<Map>() {
        Some(map) => OptionMap::declared(stage, map).map_err(opt_err),
        None => Err(format!("{stage}() expects its options as a map `#{{...}}`").into()),
    }
}

fn build_load(model: &str, opts: OptionMap) -> Result<LoadStage, OptionError> {
    let dtype_names: Vec<&'static str> = DType::ALL.iter().map(|d| d.name()).collect();
    // The 8- and 4-bit formats hold weights as codes with block scales: they are a
    // quantization of a model loaded at a float dtype, so the error shows that spelling.
    if let Some(name) = opts.string("dtype")?
        && let Some(method) = QuantMethod::parse(&name)
    {
        return Err(opts.invalid(
            "dtype",
            format!(
                "`{name}` is a quantization, not a dtype (one of: {}): load at a float \
                 dtype and write `quantize(m, #{{ method: \"{}\" }})`",
                dtype_names.join(", "),
                method.name()
            ),
        ));
    }
    let dtype = opts
        .choice("dtype", &dtype_names)?
        .and_then(DType::parse)
        .unwrap_or(DType::F32);
    let weights = match opts.choice("weights", &["pretrained", "random"])? {
        Some("random") => WeightsKind::Random,
        _ => WeightsKind::Pretrained,
    };
    let device = load_device(&opts)?;
    if model.trim().is_empty() {
        return Err(opts.invalid("model", "the model name is empty"));
    }
    let compute = match opts.choice("compute", &Compute::NAMES)? {
        Some(name) => Compute::parse(name).unwrap_or_default(),
        None => Compute::Auto,
    };
    // Checked here so a run never fails late, or silently runs on burn, for a pass that
    // cannot take the model (a quantized model is checked by quantize()).
    let on_cpu = api::device::replica_devices(&device)
        .iter()
        .all(|d| d.starts_with("cpu"));
    if compute == Compute::Host && !compute.uses_host_kernels(on_cpu, dtype, None) {
        return Err(opts.invalid(
            "compute",
            format!("\"host\" runs on the cpu only, not on {device}; use \"burn\" or \"auto\""),
        ));
    }
    Ok(LoadStage {
        model: model.to_string(),
        revision: opts.string("revision")?,
        dtype,
        weights,
        device,
        seed: opts.seed("seed")?.unwrap_or(0),
        compute,
    })
}

/// The device of a load: `device` (one), or `devices` (replicas, joined by
/// [`REPLICA_SEPARATOR`]), each name parsed; replicas must be of one kind and share no
/// hardware (a GPU or a core named twice would measure one device as two).
fn load_device(opts: &OptionMap) -> Result<String, OptionError> {
    let one = opts.string("device")?;
    let many = opts.strings("devices")?;
    // Errors name the option the script used.
    let key = if many.is_some() { "devices" } else { "device" };
    let names = match (one, many) {
        (Some(_), Some(_)) => {
            return Err(opts.invalid(
                "devices",
                "give `device` (one) or `devices` (replicas), not both",
            ));
        }
        (Some(device), None) => {
            if device.contains(REPLICA_SEPARATOR) {
                return Err(opts.invalid(
                    "device",
                    format!(
                        "`{device}`: name replicas as a list, `devices: [\"cpu:0\", \"cpu:1\"]`"
                    ),
                ));
            }
            vec![device]
        }
        (None, Some(devices)) if devices.is_empty() => {
            return Err(opts.invalid("devices", "the list is empty; name at least one device"));
        }
        (None, Some(devices)) => devices,
        (None, None) => vec!["cpu".to_string()],
    };
    let mut parsed: Vec<DeviceName> = Vec::with_capacity(names.len());
    for name in &names {
        let device = DeviceName::parse(name).map_err(|e| opts.invalid(key, e.to_string()))?;
        if let Some(first) = parsed.first()
            && first.kind() != device.kind()
        {
            return Err(opts.invalid(
                key,
                format!("replicas run on devices of one kind: `{first}` and `{device}` differ"),
            ));
        }
        if let Some(other) = parsed.iter().find(|p| p.overlaps(&device)) {
            return Err(opts.invalid(
                key,
                if *other == device {
                    format!("`{device}` is named twice: each replica needs a device of its own")
                } else if device.is_cpu() {
                    format!(
                        "`{other}` and `{device}` share cores: each replica needs cores of its own"
                    )
                } else {
                    format!(
                        "`{other}` and `{device}` may be the same adapter: name each as `wgpu:N`"
                    )
                },
            ));
        }
        parsed.push(device);
    }
    Ok(parsed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(&REPLICA_SEPARATOR.to_string()))
}

fn build_prompts(source: Dynamic, opts: OptionMap) -> Result<PromptsStage, Box<EvalAltResult>> {
    let source = if source.is_string() {
        let s = source.into_string().unwrap_or_default();
        match s.strip_prefix("builtin:") {
            Some(name) if prompts::builtin(name).is_some() => {
                PromptSource::Builtin(name.to_string())
            }
            _ => {
                let valid: Vec<String> = BUILTIN_SETS
                    .iter()
                    .map(|n| format!("builtin:{n}"))
                    .collect();
                return Err(format!(
                    "unknown prompt source `{s}`; valid sources: {}, or an array of strings",
                    valid.join(", ")
                )
                .into());
            }
        }
    } else if source.is_array() {
        let items: Array = source.into_array().unwrap_or_default();
        let mut texts = Vec::with_capacity(items.len());
        for item in items {
            if !item.is_string() {
                return Err(format!(
                    "prompts() expects an array of strings, found {}",
                    item.type_name()
                )
                .into());
            }
            texts.push(item.into_string().unwrap_or_default());
        }
        if texts.len() > limits::MAX_PROMPTS {
            return Err(format!(
                "prompts() got {} prompts, over the limit of {}",
                texts.len(),
                limits::MAX_PROMPTS
            )
            .into());
        }
        if texts.is_empty() || texts.iter().any(|t| t.is_empty()) {
            return Err("prompts() needs at least one prompt and no empty prompt".into());
        }
        PromptSource::Inline(texts)
    } else {
        return Err(format!(
            "prompts() expects a source string like \"builtin:stories\" or an array of strings, got {}",
            source.type_name()
        )
        .into());
    };
    let count = opts
        .count_at_most("count", limits::MAX_PROMPTS)
        .map_err(opt_err)?;
    if count == Some(0) {
        return Err(opt_err(opts.invalid("count", "must be at least 1")));
    }
    let max_input_tokens = opts
        .count_at_most("max_input_tokens", limits::MAX_TOKENS)
        .map_err(opt_err)?;
    if max_input_tokens == Some(0) {
        return Err(opt_err(
            opts.invalid("max_input_tokens", "must be at least 1"),
        ));
    }
    Ok(PromptsStage {
        source,
        count,
        max_input_tokens,
        seed: opts.seed("seed").map_err(opt_err)?.unwrap_or(0),
    })
}

fn build_decoding(map: Option<Map>) -> Result<DecodingSpec, OptionError> {
    let Some(map) = map else {
        return Ok(DecodingSpec::Greedy);
    };
    let opts = OptionMap::declared("decoding", map)?;
    match opts
        .choice("method", &["greedy", "sample"])?
        .unwrap_or("greedy")
    {
        "greedy" => {
            for key in ["temperature", "top_k", "top_p", "seed"] {
                if opts.float(key).ok().flatten().is_some() {
                    return Err(opts.invalid(key, "only applies to method \"sample\""));
                }
            }
            Ok(DecodingSpec::Greedy)
        }
        _ => {
            let temperature = opts.float("temperature")?.unwrap_or(1.0);
            if !(temperature >= 0.0 && temperature.is_finite()) {
                return Err(opts.invalid("temperature", "must be a finite number >= 0"));
            }
            let top_p = opts.float("top_p")?.unwrap_or(1.0);
            if !(top_p > 0.0 && top_p <= 1.0) {
                return Err(opts.invalid("top_p", "must be in (0, 1]"));
            }
            Ok(DecodingSpec::Sample {
                temperature,
                top_k: opts.count("top_k")?.unwrap_or(0),
                top_p,
                seed: opts.seed("seed")?.unwrap_or(0),
            })
        }
    }
}

fn build_infer(opts: OptionMap) -> Result<InferStage, OptionError> {
    let max_new_tokens = opts
        .count_at_most("max_new_tokens", limits::MAX_TOKENS)?
        .unwrap_or(32);
    if max_new_tokens == 0 {
        return Err(opts.invalid("max_new_tokens", "must be at least 1"));
    }
    let min_new_tokens = opts.count("min_new_tokens")?.unwrap_or(0);
    if min_new_tokens > max_new_tokens {
        return Err(opts.invalid(
            "min_new_tokens",
            format!("{min_new_tokens} is more than max_new_tokens ({max_new_tokens})"),
        ));
    }
    let arrival = build_arrival(opts.map("arrival")?)?;
    let serve = build_serve(opts.map("serve")?)?;
    Ok(InferStage {
        max_new_tokens,
        min_new_tokens,
        stop_at_eos: opts.boolean("stop_at_eos")?.unwrap_or(true),
        decoding: build_decoding(opts.map("decoding")?)?,
        warmup: opts
            .count_at_most("warmup", limits::MAX_WARMUP)?
            .unwrap_or(1),
        arrival,
        serve,
        slo: build_slo(opts.map("slo")?)?,
    })
}

fn build_serve(map: Option<Map>) -> Result<Option<ServeSpec>, OptionError> {
    let Some(map) = map else {
        return Ok(None);
    };
    let opts = OptionMap::declared("serve", map)?;
    let max_batch = opts
        .count_at_most("max_batch", limits::MAX_BATCH_SIZE)?
        .unwrap_or(16);
    if max_batch == 0 {
        return Err(opts.invalid("max_batch", "must be at least 1"));
    }
    let max_batch_tokens = opts
        .count_at_most("max_batch_tokens", limits::MAX_TOKENS)?
        .unwrap_or(2048);
    if max_batch_tokens < max_batch {
        return Err(opts.invalid(
            "max_batch_tokens",
            format!(
                "{max_batch_tokens} cannot hold one decode token for each of max_batch ({max_batch}) sequences"
            ),
        ));
    }
    let prefill = match opts.choice("prefill", &["whole", "chunked"])? {
        Some("chunked") => PrefillMode::Chunked,
        _ => PrefillMode::Whole,
    };
    Ok(Some(ServeSpec {
        max_batch,
        max_batch_tokens,
        prefill,
    }))
}

fn build_slo(map: Option<Map>) -> Result<Option<SloSpec>, OptionError> {
    let Some(map) = map else {
        return Ok(None);
    };
    let opts = OptionMap::declared("slo", map)?;
    let target = |key: &str| -> Result<Option<f64>, OptionError> {
        match opts.seconds(key)? {
            Some(v) if v > 0.0 => Ok(Some(v)),
            Some(v) => Err(opts.invalid(key, format!("must be a positive number, got {v}"))),
            None => Ok(None),
        }
    };
    let slo = SloSpec {
        ttft_s: target("ttft_s")?,
        tpot_s: target("tpot_s")?,
    };
    if slo.ttft_s.is_none() && slo.tpot_s.is_none() {
        return Err(opts.invalid("ttft_s", "an slo needs ttft_s, tpot_s or both"));
    }
    Ok(Some(slo))
}

/// A required, positive duration below [`limits::MAX_SECONDS`].
fn positive_seconds(opts: &OptionMap, key: &str) -> Result<f64, OptionError> {
    match opts.seconds(key)? {
        Some(v) if v > 0.0 => Ok(v),
        Some(v) => Err(opts.invalid(key, format!("must be a positive number, got {v}"))),
        None => Err(opts.invalid(key, "is required for this pattern")),
    }
}

/// A required arrival rate whose mean gap (`1 / rate`) is a duration within the limits.
fn rate(opts: &OptionMap, key: &str) -> Result<f64, OptionError> {
    let min = 1.0 / limits::MAX_SECONDS;
    match opts.float(key)? {
        Some(v) if v.is_finite() && (min..=limits::MAX_RATE_PER_S).contains(&v) => Ok(v),
        Some(v) => Err(opts.invalid(
            key,
            format!(
                "must be between {min} and {} per second, got {v}",
                limits::MAX_RATE_PER_S
            ),
        )),
        None => Err(opts.invalid(key, "is required for this pattern")),
    }
}

fn build_arrival(map: Option<Map>) -> Result<ArrivalSpec, OptionError> {
    let Some(map) = map else {
        return Ok(ArrivalSpec::ClosedLoop);
    };
    let opts = OptionMap::declared("arrival", map)?;
    let pattern = opts
        .choice(
            "pattern",
            &[
                "closed_loop",
                "constant",
                "poisson",
                "bursty",
                "gamma",
                "trace",
            ],
        )?
        .unwrap_or("closed_loop");
    let allowed: &[&str] = match pattern {
        "constant" => &["pattern", "interval_s"],
        "poisson" => &["pattern", "rate_per_s", "seed"],
        "bursty" => &["pattern", "burst", "off_s"],
        "gamma" => &["pattern", "rate_per_s", "burstiness", "seed"],
        "trace" => &["pattern", "path", "time_scale"],
        _ => &["pattern"],
    };
    for key in vocabulary::options_of("arrival").iter().map(|k| k.name) {
        if !allowed.contains(&key) && opts.is_set(key) {
            return Err(opts.invalid(key, format!("does not apply to pattern \"{pattern}\"")));
        }
    }
    Ok(match pattern {
        "constant" => ArrivalSpec::Constant {
            interval_s: positive_seconds(&opts, "interval_s")?,
        },
        "poisson" => ArrivalSpec::Poisson {
            rate_per_s: rate(&opts, "rate_per_s")?,
            seed: opts.seed("seed")?.unwrap_or(0),
        },
        "trace" => {
            let Some(path) = opts.string("path")? else {
                return Err(opts.invalid("path", "is required for this pattern"));
            };
            let time_scale = opts.float("time_scale")?.unwrap_or(1.0);
            if !(time_scale.is_finite() && time_scale > 0.0) {
                return Err(opts.invalid(
                    "time_scale",
                    format!("must be a positive number, got {time_scale}"),
                ));
            }
            ArrivalSpec::Trace { path, time_scale }
        }
        "gamma" => {
            let burstiness = opts.float("burstiness")?.unwrap_or(1.0);
            if !(burstiness.is_finite() && (0.01..=1000.0).contains(&burstiness)) {
                return Err(opts.invalid(
                    "burstiness",
                    format!("must be between 0.01 and 1000, got {burstiness}"),
                ));
            }
            ArrivalSpec::Gamma {
                rate_per_s: rate(&opts, "rate_per_s")?,
                burstiness,
                seed: opts.seed("seed")?.unwrap_or(0),
            }
        }
        "bursty" => {
            let burst = opts
                .count_at_most("burst", limits::MAX_PROMPTS)?
                .unwrap_or(0);
            if burst == 0 {
                return Err(opts.invalid("burst", "must be at least 1"));
            }
            ArrivalSpec::Bursty {
                burst,
                off_s: positive_seconds(&opts, "off_s")?,
            }
        }
        _ => ArrivalSpec::ClosedLoop,
    })
}

fn build_measure(opts: &OptionMap) -> Result<MeasureStage, OptionError> {
    let meters = checked_names(opts, "meters", METERS, DEFAULT_METERS)?;
    let interval_ms = opts
        .count_at_most("interval_ms", limits::MAX_INTERVAL_MS)?
        .unwrap_or(100);
    if interval_ms == 0 {
        return Err(opts.invalid("interval_ms", "must be at least 1"));
    }
    let idle_baseline_s = opts.seconds("idle_baseline_s")?.unwrap_or(0.0);
    let mut carbon = CarbonSpec::default();
    if let Some(map) = opts.map("carbon")? {
        let c = OptionMap::declared("carbon", map)?;
        carbon.country = c.string("country")?.map(|s| s.to_ascii_uppercase());
        carbon.region = c.string("region")?;
        carbon.intensity_g_per_kwh = c.float("intensity_g_per_kwh")?;
        if carbon
            .intensity_g_per_kwh
            .is_some_and(|v| v.is_nan() || v < 0.0)
        {
            return Err(c.invalid("intensity_g_per_kwh", "must be >= 0"));
        }
        carbon.pue = c.float("pue")?.unwrap_or(1.0);
        if !(carbon.pue >= 1.0 && carbon.pue.is_finite()) {
            return Err(c.invalid("pue", "must be a number >= 1"));
        }
        // Checked while planning, so a typo fails before any model loads.
        if let Err(e) = crate::carbon::resolve(&carbon) {
            let key = match e {
                crate::carbon::CarbonError::UnknownRegion { .. }
                | crate::carbon::CarbonError::RegionWithoutCountry => "region",
                crate::carbon::CarbonError::UnknownCountry(_) => "country",
            };
            return Err(c.invalid(key, e.to_string()));
        }
    }
    let estimate = match opts.string("estimate")? {
        None => EstimateMode::Machine,
        Some(name) => EstimateMode::parse(&name).ok_or_else(|| {
            opts.invalid(
                "estimate",
                format!("`{name}` is not one of: {}", EstimateMode::NAMES.join(", ")),
            )
        })?,
    };
    Ok(MeasureStage {
        meters,
        interval_ms: interval_ms as u64,
        idle_baseline_s,
        carbon,
        estimate,
    })
}

fn checked_names(
    opts: &OptionMap,
    key: &str,
    valid: &[&'static str],
    default: &[&str],
) -> Result<Vec<String>, OptionError> {
    let mut names = opts
        .strings(key)?
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    for name in &names {
        if !valid.contains(&name.as_str()) {
            return Err(opts.invalid(key, format!("`{name}` is not one of: {}", valid.join(", "))));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

fn register_stages(engine: &mut Engine, plan: &Shared) {
    engine
        .register_type_with_name::<Node>("Node")
        .register_fn("to_string", |n: &mut Node| {
            format!("<{} {}>", n.kind.name(), n.id)
        })
        .register_fn("to_debug", |n: &mut Node| {
            format!("<{} {}>", n.kind.name(), n.id)
        })
        .register_get("id", |n: &mut Node| n.id.short())
        .register_get("kind", |n: &mut Node| n.kind.name().to_string());

    let p = plan.clone();
    let load = move |model: &str, opts: Dynamic| -> Result<Node, Box<EvalAltResult>> {
        // One spelling for replicas: the devices themselves, never a count.
        if opts
            .read_lock::<Map>()
            .is_some_and(|m| m.contains_key("replicas"))
        {
            return Err(opt_err(OptionError::Invalid {
                stage: "load",
                key: "replicas".into(),
                reason: "replicas are named by their devices: `devices: [\"cuda:0\", \"cuda:1\"]` \
                         or `devices: [\"cpu:0\", \"cpu:1\"]`"
                    .into(),
            }));
        }
        let stage = build_load(model, options(opts, "load")?).map_err(opt_err)?;
        let id = add(&p, Stage::Load(stage), &[])?;
        Ok(Node {
            id,
            kind: StageKind::Load,
        })
    };
    let load1 = load.clone();
    engine.register_fn("load", load);
    engine.register_fn("load", move |model: &str| load1(model, Dynamic::UNIT));

    let p = plan.clone();
    let quantize = move |model: Dynamic, opts: Dynamic| -> Result<Node, Box<EvalAltResult>> {
        let model = expect_node(
            &model,
            "quantize",
            1,
            "a model (from load())",
            &[StageKind::Load],
        )?;
        let opts = options(opts, "quantize")?;
        let methods: Vec<&'static str> = QuantMethod::ALL.iter().map(|m| m.name()).collect();
        let method = opts
            .choice("method", &methods)
            .map_err(opt_err)?
            .ok_or_else(|| {
                opt_err(opts.invalid(
                    "method",
                    format!("is required; one of: {}", methods.join(", ")),
                ))
            })?;
        let block_size = opts.count("block_size").map_err(opt_err)?.unwrap_or(32);
        if !(block_size >= 8 && block_size.is_power_of_two()) {
            return Err(opt_err(opts.invalid(
                "block_size",
                format!("must be a power of two >= 8, got {block_size}"),
            )));
        }
        if let Some(Stage::Load(load)) = lock(&p).node(model.id).map(|n| &n.stage)
            && load.compute == Compute::Host
            && !block_size.is_multiple_of(HOST_BLOCK_MULTIPLE)
        {
            return Err(opt_err(opts.invalid(
                "block_size",
                format!(
                    "must be a multiple of {HOST_BLOCK_MULTIPLE} for a model loaded with \
                     compute \"host\" (the host kernels unpack weights in groups of \
                     {HOST_BLOCK_MULTIPLE}), got {block_size}; load it with compute \"burn\" or \
                     \"auto\" for smaller blocks"
                ),
            )));
        }
        let stage = QuantizeStage {
            method: method.to_string(),
            block_size,
        };
        let id = add(&p, Stage::Quantize(stage), &[model.id])?;
        Ok(Node {
            id,
            kind: StageKind::Quantize,
        })
    };
    let quantize1 = quantize.clone();
    engine.register_fn("quantize", quantize);
    engine.register_fn("quantize", move |model: Dynamic| {
        quantize1(model, Dynamic::UNIT)
    });

    let p = plan.clone();
    let prompts = move |source: Dynamic, opts: Dynamic| -> Result<Node, Box<EvalAltResult>> {
        let stage = build_prompts(source, options(opts, "prompts")?)?;
        let id = add(&p, Stage::Prompts(stage), &[])?;
        Ok(Node {
            id,
            kind: StageKind::Prompts,
        })
    };
    let prompts1 = prompts.clone();
    engine.register_fn("prompts", prompts);
    engine.register_fn("prompts", move |source: Dynamic| {
        prompts1(source, Dynamic::UNIT)
    });

    let p = plan.clone();
    let batch = move |input: Dynamic, opts: Dynamic| -> Result<Node, Box<EvalAltResult>> {
        let prompts = expect_node(
            &input,
            "batch",
            1,
            "prompts (from prompts())",
            &[StageKind::Prompts],
        )?;
        let opts = options(opts, "batch")?;
        let token_budget = opts
            .count_at_most("token_budget", limits::MAX_TOKEN_BUDGET)
            .map_err(opt_err)?;
        if token_budget == Some(0) {
            return Err(opt_err(opts.invalid("token_budget", "must be at least 1")));
        }
        // With a token budget alone, batches may grow to the whole prompt set (counted, not
        // materialised: planning allocates nothing per prompt).
        let all_prompts = match lock(&p).node(prompts.id).map(|n| &n.stage) {
            Some(Stage::Prompts(stage)) => prompts::count(stage).clamp(1, limits::MAX_BATCH_SIZE),
            _ => 1,
        };
        let size = opts
            .count_at_most("size", limits::MAX_BATCH_SIZE)
            .map_err(opt_err)?
            .unwrap_or(if token_budget.is_some() {
                all_prompts
            } else {
                1
            });
        if size == 0 {
            return Err(opt_err(opts.invalid("size", "must be at least 1")));
        }
        let id = add(
            &p,
            Stage::Batch(BatchStage { size, token_budget }),
            &[prompts.id],
        )?;
        Ok(Node {
            id,
            kind: StageKind::Batch,
        })
    };
    let batch1 = batch.clone();
    engine.register_fn("batch", batch.clone());
    engine.register_fn("batch", move |input: Dynamic| batch1(input, Dynamic::UNIT));

    let p = plan.clone();
    let infer = move |model: Dynamic,
                      batches: Dynamic,
                      opts: Dynamic|
          -> Result<Node, Box<EvalAltResult>> {
        let model = expect_node(
            &model,
            "infer",
            1,
            "a model (from load() or quantize())",
            &[StageKind::Load, StageKind::Quantize],
        )?;
        let batches = expect_node(
            &batches,
            "infer",
            2,
            "batches (from batch()) or prompts (from prompts())",
            &[StageKind::Batch, StageKind::Prompts],
        )?;
        // Prompts passed straight to infer run one at a time.
        let batches = if batches.kind == StageKind::Prompts {
            batch(Dynamic::from(batches), Dynamic::UNIT)?
        } else {
            batches
        };
        let stage = build_infer(options(opts, "infer")?).map_err(opt_err)?;
        let id = add(&p, Stage::Infer(stage), &[model.id, batches.id])?;
        Ok(Node {
            id,
            kind: StageKind::Infer,
        })
    };
    let infer2 = infer.clone();
    engine.register_fn("infer", infer);
    engine.register_fn("infer", move |m: Dynamic, b: Dynamic| {
        infer2(m, b, Dynamic::UNIT)
    });

    let p = plan.clone();
    let measure = move |run: Dynamic, opts: Dynamic| -> Result<Node, Box<EvalAltResult>> {
        let run = expect_node(
            &run,
            "measure",
            1,
            "an inference run (from infer())",
            &[StageKind::Infer],
        )?;
        let opts = options(opts, "measure")?;
        let stage = build_measure(&opts).map_err(opt_err)?;
        let id = add(&p, Stage::Measure(stage), &[run.id])?;
        Ok(Node {
            id,
            kind: StageKind::Measure,
        })
    };
    let measure1 = measure.clone();
    engine.register_fn("measure", measure);
    engine.register_fn("measure", move |run: Dynamic| measure1(run, Dynamic::UNIT));

    let p = plan.clone();
    engine.register_fn(
        "aggregate",
        move |opts: Dynamic| -> Result<Node, Box<EvalAltResult>> {
            let opts = options(opts, "aggregate")?;
            let by = opts.strings("by").map_err(opt_err)?.unwrap_or_default();
            // Checked while planning, so a typo fails before the study runs rather than after.
            if let Some(column) = by.iter().find(|c| !GROUP_BY_COLUMNS.contains(&c.as_str())) {
                let hint = crate::suggest::closest(column, GROUP_BY_COLUMNS.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                return Err(opt_err(opts.invalid(
                    "by",
                    format!(
                        "`{column}` is not a column of runs.parquet; {hint}columns: {}",
                        GROUP_BY_COLUMNS.join(", ")
                    ),
                )));
            }
            let stats = checked_names(&opts, "stats", STATS, &["mean", "std"]).map_err(opt_err)?;
            let id = add(&p, Stage::Aggregate(AggregateStage { by, stats }), &[])?;
            Ok(Node {
                id,
                kind: StageKind::Aggregate,
            })
        },
    );

    let p = plan.clone();
    engine.register_fn(
        "study",
        move |opts: Dynamic| -> Result<(), Box<EvalAltResult>> {
            let opts = options(opts, "study")?;
            let mut plan = lock(&p);
            if let Some(name) = opts.string("name").map_err(opt_err)? {
                if !crate::plan::is_valid_study_name(&name) {
                    return Err(opt_err(
                        opts.invalid("name", "use letters, digits, '-', '_' and '.' only"),
                    ));
                }
                plan.study.name = name;
            }
            if let Some(cycles) = opts
                .count_at_most("cycles", limits::MAX_CYCLES)
                .map_err(opt_err)?
            {
                if cycles == 0 {
                    return Err(opt_err(opts.invalid("cycles", "must be at least 1")));
                }
                let runs = plan.run_count();
                if runs.saturating_mul(cycles) > limits::MAX_EXECUTIONS {
                    return Err(opt_err(opts.invalid(
                        "cycles",
                        format!(
                            "{runs} runs x {cycles} cycles is over the limit of {} executions",
                            limits::MAX_EXECUTIONS
                        ),
                    )));
                }
                plan.study.cycles = cycles;
            }
            if let Some(seed) = opts.seed("seed").map_err(opt_err)? {
                plan.study.seed = seed;
            }
            if let Some(retries) = opts
                .count_at_most("retries", limits::MAX_RETRIES)
                .map_err(opt_err)?
            {
                plan.study.retries = retries;
            }
            if let Some(delay) = opts.seconds("retry_delay_s").map_err(opt_err)? {
                plan.study.retry_delay_s = delay;
            }
            if let Some(quality) = opts.boolean("quality").map_err(opt_err)? {
                plan.study.quality = quality;
            }
            if let Some(name) = opts
                .choice("placement", &Placement::NAMES)
                .map_err(opt_err)?
            {
                plan.study.placement = Placement::parse(name).unwrap_or_default();
            }
            Ok(())
        },
    );
}

/// Where a script's `print` and `debug` lines go, each as soon as it is written (the binary
/// passes one that writes to stderr; a library does not print).
pub type ScriptOutput = Arc<dyn Fn(&str) + Send + Sync>;

/// Functions Rhai provides that scripts may not call: a plan must depend on its script only,
/// so nothing may read the clock, and planning must not block (`sleep(1e20)` would panic,
/// `sleep(1e18)` hang).
pub const DISABLED_FUNCTIONS: &[&str] = &["timestamp", "sleep"];

/// Builds the sandboxed Rhai engine whose stage functions add nodes to `plan`; `print(x)`
/// and `debug(x)` lines go to `output` as they happen.
pub fn build_engine(
    plan: &Arc<Mutex<Plan>>,
    resolver: ModuleResolver,
    output: ScriptOutput,
) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits::MAX_OPERATIONS);
    engine.set_max_call_levels(limits::MAX_CALL_LEVELS);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(limits::MAX_STRING_SIZE);
    engine.set_max_array_size(limits::MAX_ARRAY_SIZE);
    engine.set_max_map_size(limits::MAX_MAP_SIZE);
    engine.set_max_modules(256);
    engine.disable_symbol("eval");
    engine.set_module_resolver(resolver);
    let out = output.clone();
    engine.on_print(move |s| out(s));
    engine.on_debug(move |s, _, pos| output(&format!("[{pos}] {s}")));
    // Registered functions shadow the standard package's, so the call fails with a reason
    // rather than returning the time.
    engine.register_fn("timestamp", || -> Result<Dynamic, Box<EvalAltResult>> {
        Err(
            "timestamp() is not available: scripts cannot read the clock, so a plan \
                 depends on its script only"
                .into(),
        )
    });
    let no_sleep = || -> Box<EvalAltResult> {
        "sleep() is not available: planning never waits (runs wait through `arrival`)".into()
    };
    engine.register_fn("sleep", move |_: i64| -> Result<(), Box<EvalAltResult>> {
        Err(no_sleep())
    });
    engine.register_fn("sleep", move |_: f64| -> Result<(), Box<EvalAltResult>> {
        Err(no_sleep())
    });
    register_stages(&mut engine, plan);
    engine.register_fn("builtin_prompt_sets", |_ctx: NativeCallContext| -> Array {
        BUILTIN_SETS
            .iter()
            .map(|s| Dynamic::from(s.to_string()))
            .collect()
    });
    engine
}

/// A script evaluation context: one plan that successive evaluations extend (the REPL uses
/// one session for a whole conversation; `llmeff run` uses one per script).
pub struct Session {
    plan: Arc<Mutex<Plan>>,
    messages: Arc<Mutex<Vec<String>>>,
    engine: Engine,
    scope: Scope<'static>,
    base_dir: PathBuf,
}

impl Session {
    /// A session whose relative imports resolve against `base_dir`.
    pub fn new(study: StudySettings, base_dir: &Path, search_path: Vec<PathBuf>) -> Self {
        let messages: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        let output: ScriptOutput = Arc::new(move |line: &str| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.to_string())
        });
        Self::build(study, base_dir, search_path, messages, output)
    }

    /// A session whose `print` and `debug` lines go straight to `output` (so
    /// [`Session::take_messages`] stays empty).
    pub fn with_output(
        study: StudySettings,
        base_dir: &Path,
        search_path: Vec<PathBuf>,
        output: ScriptOutput,
    ) -> Self {
        Self::build(study, base_dir, search_path, Default::default(), output)
    }

    fn build(
        study: StudySettings,
        base_dir: &Path,
        search_path: Vec<PathBuf>,
        messages: Arc<Mutex<Vec<String>>>,
        output: ScriptOutput,
    ) -> Self {
        let plan = Arc::new(Mutex::new(Plan::new(study)));
        let resolver = ModuleResolver::new(base_dir.to_path_buf(), search_path);
        let engine = build_engine(&plan, resolver, output);
        Session {
            plan,
            messages,
            engine,
            scope: Scope::new(),
            base_dir: base_dir.to_path_buf(),
        }
    }

    /// Evaluates source text named `file` (for error messages), extending the plan.
    /// Returns the value of the last statement.
    pub fn eval(&mut self, file: &str, source: &str) -> Result<Dynamic, ScriptError> {
        let mut ast: AST = self
            .engine
            .compile_with_scope(&self.scope, source)
            .map_err(|e| {
                let pos = e.position();
                located(file, source, pos, e.err_type().to_string())
            })?;
        ast.set_source(file.to_string());
        self.engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &ast)
            .map_err(|e| {
                let known = KnownFunctions::new(&self.engine, &ast);
                runtime_error(file, source, &e, &known)
            })
    }

    /// A copy of the plan built so far.
    pub fn plan(&self) -> Plan {
        lock(&self.plan).clone()
    }

    /// Lines the script printed since the last call.
    pub fn take_messages(&self) -> Vec<String> {
        std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The folder relative imports resolve against.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Names of variables defined so far (for completion).
    pub fn variables(&self) -> Vec<String> {
        self.scope
            .iter()
            .map(|(name, _, _)| name.to_string())
            .collect()
    }
}

/// Evaluates a whole script file's text into a plan whose study is named `study_name`;
/// what the script prints is dropped (see [`plan_script_with_output`]).
pub fn plan_script(file: &Path, source: &str, study_name: &str) -> Result<Plan, ScriptError> {
    plan_script_with_output(file, source, study_name, Arc::new(|_: &str| {}))
}

/// [`plan_script`], with the script's `print` and `debug` lines sent to `output` as they
/// happen.
pub fn plan_script_with_output(
    file: &Path,
    source: &str,
    study_name: &str,
    output: ScriptOutput,
) -> Result<Plan, ScriptError> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut session = Session::with_output(
        StudySettings::named(study_name),
        &base,
        crate::resolver::search_path_from_env(),
        output,
    );
    let _last_value = session.eval(&file.display().to_string(), source)?;
    Ok(session.plan())
}

fn located(file: &str, source: &str, pos: Position, message: String) -> ScriptError {
    let line = pos.line().unwrap_or(0);
    let column = pos.position().unwrap_or(1);
    ScriptError {
        file: file.to_string(),
        line,
        column,
        message,
        source_line: (line > 0).then(|| source.lines().nth(line - 1).unwrap_or("").to_string()),
    }
}

/// Function names a script can call, for "did you mean" on an unknown one.
struct KnownFunctions {
    /// Stage and helper functions, then the script's own.
    llmeff: Vec<String>,
    /// Rhai's standard functions (`print`, `len`, ...).
    rhai: Vec<String>,
}

impl KnownFunctions {
    fn new(engine: &Engine, ast: &AST) -> Self {
        let mut llmeff: Vec<String> = vocabulary::stage_functions()
            .into_iter()
            .chain(vocabulary::helper_functions())
            .map(str::to_string)
            .collect();
        llmeff.extend(ast.iter_functions().map(|f| f.name.to_string()));
        let mut rhai: Vec<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|s| s.split(['(', ' ']).next())
            .filter(|n| {
                n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .map(str::to_string)
            .collect();
        rhai.sort();
        rhai.dedup();
        KnownFunctions { llmeff, rhai }
    }

    fn contains(&self, name: &str) -> bool {
        self.llmeff.iter().chain(&self.rhai).any(|n| n == name)
    }
}

/// Rhai's argument types as a script author knows them.
fn script_types(args: &str) -> String {
    args.split(", ")
        .filter(|a| !a.is_empty())
        .map(|a| match a.trim() {
            t if t.contains("ImmutableString") => "string",
            "i64" => "int",
            "f64" => "float",
            "Node" => "node",
            t => t,
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message for Rhai's "function not found": a typo gets the closest name, a known name
/// called with the wrong arguments gets its call forms.
fn function_not_found(signature: &str, known: &KnownFunctions) -> String {
    let (name, args) = match signature.split_once(" (") {
        Some((name, args)) => (name.trim(), script_types(args.trim_end_matches(')'))),
        None => (signature.trim(), String::new()),
    };
    let (qualifier, bare) = match name.rsplit_once("::") {
        Some((q, b)) => (Some(q), b),
        None => (None, name),
    };
    let Some(qualifier) = qualifier else {
        if let Some(topic) = vocabulary::topic(bare).filter(|t| {
            matches!(
                t.kind,
                vocabulary::TopicKind::Stage | vocabulary::TopicKind::Helper
            )
        }) {
            return format!(
                "{bare}() cannot be called with ({args}); call it as {}",
                topic.signatures.join(" or ")
            );
        }
        if known.contains(bare) {
            return format!("`{bare}` cannot be called with ({args})");
        }
        let suggestion = crate::suggest::closest(bare, known.llmeff.iter().map(String::as_str))
            .or_else(|| crate::suggest::closest(bare, known.rhai.iter().map(String::as_str)));
        return match suggestion {
            Some(s) => format!("unknown function `{bare}`: did you mean `{s}`?"),
            None => format!(
                "unknown function `{bare}`; stage functions: {} (`llmeff help` describes them)",
                vocabulary::stage_functions().join(", ")
            ),
        };
    };
    let stdlib = vocabulary::stdlib_functions();
    if let Some((_, f)) = stdlib.iter().find(|(_, f)| f.name == bare) {
        return format!(
            "`{name}` cannot be called with ({args}); call it as {}",
            f.signature
        );
    }
    match crate::suggest::closest(bare, stdlib.iter().map(|(_, f)| f.name)) {
        Some(s) => format!("unknown function `{name}`: did you mean `{qualifier}::{s}`?"),
        None => format!("module `{qualifier}` has no function `{bare}` taking ({args})"),
    }
}

/// Finds the innermost message and the outermost position in the script being evaluated.
fn runtime_error(
    file: &str,
    source: &str,
    err: &EvalAltResult,
    known: &KnownFunctions,
) -> ScriptError {
    let mut position = err.position();
    let mut current = err;
    let mut context: Vec<String> = Vec::new();
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(name, src, inner, pos) => {
                if !src.is_empty() && src != file {
                    context.push(format!("in {name}() of {src}"));
                } else if !pos.is_none() {
                    position = *pos;
                }
                current = inner;
            }
            EvalAltResult::ErrorInModule(name, inner, _) => {
                context.push(format!("in module `{name}`"));
                current = inner;
            }
            _ => break,
        }
    }
    if position.is_none() {
        position = current.position();
    }
    let mut message = match current {
        EvalAltResult::ErrorRuntime(value, _) => value.to_string(),
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the script exceeded the limit of {} operations (an endless loop?)",
            limits::MAX_OPERATIONS
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "the script exceeded the call depth limit of {}",
            limits::MAX_CALL_LEVELS
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let lower = what.to_lowercase();
            let limit = if lower.contains("array") {
                format!("{} elements", limits::MAX_ARRAY_SIZE)
            } else if lower.contains("map") {
                format!("{} entries", limits::MAX_MAP_SIZE)
            } else {
                format!("{} bytes", limits::MAX_STRING_SIZE)
            };
            format!("{what} exceeds its size limit of {limit}")
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => function_not_found(signature, known),
        other => other.to_string(),
    };
    if !context.is_empty() {
        message = format!("{message} ({})", context.join(", "));
    }
    located(file, source, position, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(src: &str) -> Result<Plan, ScriptError> {
        plan_script(Path::new("test.rhai"), src, "test")
    }

    #[test]
    fn replicas_are_named_by_their_devices() {
        let p = plan(
            r#"infer(load("tiny-stories", #{ devices: ["cpu:1", "cpu:0"] }), prompts("builtin:stories"));"#,
        )
        .unwrap();
        assert_eq!(p.runs()[0].load.device, "cpu:1+cpu:0");
        let one = plan(r#"infer(load("tiny-stories", #{ devices: ["cpu:0-1"] }), prompts("builtin:stories"));"#)
            .unwrap();
        assert_eq!(one.runs()[0].load.device, "cpu:0-1");
        let err = |src: &str| plan(src).unwrap_err().to_string();
        for (devices, expected) in [
            (r#"["cpu:0", "cpu:0"]"#, "`cpu:0` is named twice"),
            (r#"["cuda:1", "cuda:1"]"#, "`cuda:1` is named twice"),
            (
                r#"["cpu:0-1", "cpu:1,2"]"#,
                "`cpu:0-1` and `cpu:1-2` share cores",
            ),
            (r#"["cpu", "cpu:3"]"#, "`cpu` and `cpu:3` share cores"),
            (r#"["cpu:0", "cuda:0"]"#, "devices of one kind"),
            (r#"["cuda:0", "wgpu:1"]"#, "devices of one kind"),
            (r#"["wgpu", "wgpu:0"]"#, "may be the same adapter"),
            (r#"["cpu:0", "cpu:x"]"#, "`x` is not a core number"),
            ("[]", "the list is empty"),
        ] {
            let e = err(&format!(
                r#"load("tiny-stories", #{{ devices: {devices} }});"#
            ));
            assert!(e.contains("option `devices` of load()"), "{e}");
            assert!(e.contains(expected), "{devices}: {e}");
        }
        let e = err(r#"load("tiny-stories", #{ replicas: 2 });"#);
        assert!(
            e.contains("option `replicas` of load()") && e.contains("devices: ["),
            "{e}"
        );
        let e = err(r#"load("tiny-stories", #{ device: "cpu", devices: ["cpu:0"] });"#);
        assert!(e.contains("not both"), "{e}");
        let e = err(r#"load("tiny-stories", #{ device: "tpu:0" });"#);
        assert!(e.contains("`tpu:0` is not a device"), "{e}");
    }

    #[test]
    fn a_quantization_asked_for_as_a_dtype_is_refused_with_the_spelling_that_works() {
        let err = plan(r#"let m = load("tiny-stories", #{ dtype: "fp8" });"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("test.rhai:1:9: option `dtype` of load(): `fp8` is a quantization"),
            "{err}"
        );
        assert!(err.contains("one of: f32, f16, bf16"), "{err}");
        assert!(err.contains(r#"quantize(m, #{ method: "fp8" })"#), "{err}");
        let int4 = plan(r#"let m = load("tiny-stories", #{ dtype: "int4" });"#).unwrap_err();
        assert!(int4.to_string().contains(r#"method: "int4""#), "{int4}");
    }

    #[test]
    fn equal_calls_return_the_same_node() {
        let p = plan(
            r#"
            let a = load("tiny-stories");
            let b = load("tiny-stories", #{ dtype: "f32" });
            let ps = prompts("builtin:stories", #{ count: 4 });
            infer(a, batch(ps, #{ size: 2 }));
            infer(b, batch(ps, #{ size: 2 }));
            "#,
        )
        .unwrap();
        assert_eq!(p.count(StageKind::Load), 1);
        assert_eq!(p.runs().len(), 1);
    }

    #[test]
    fn unknown_option_is_located_and_lists_valid_keys() {
        let err = plan("let m = load(\"tiny-stories\", #{ dtyp: \"f32\" });").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:1:9: unknown option `dtyp` for load(): did you mean `dtype`? valid options: compute, device, devices, dtype, revision, seed, weights\n  |\n1 | let m = load(\"tiny-stories\", #{ dtyp: \"f32\" });\n  |         ^"
        );
        let err = plan("study(#{ name: \"x\" });\nlet r = infer(load(\"tiny-stories\"), prompts(\"builtin:chat\"), #{ arival: #{} });")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:2:9: unknown option `arival` for infer(): did you mean `arrival`? valid options: arrival, decoding, max_new_tokens, min_new_tokens, serve, slo, stop_at_eos, warmup\n  |\n2 | let r = infer(load(\"tiny-stories\"), prompts(\"builtin:chat\"), #{ arival: #{} });\n  |         ^"
        );
    }

    #[test]
    fn a_misspelt_stage_function_suggests_the_right_one() {
        let err =
            plan("study(#{ name: \"x\" });\nlet m = laod(\"tiny-stories\", #{ dtype: \"f32\" });")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:2:9: unknown function `laod`: did you mean `load`?\n  |\n2 | let m = laod(\"tiny-stories\", #{ dtype: \"f32\" });\n  |         ^"
        );
        let err = plan(
            "let p = prompts(\"builtin:chat\");\nlet r = infer(load(\"tiny-stories\"), bacth(p));",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:2:37: unknown function `bacth`: did you mean `batch`?\n  |\n2 | let r = infer(load(\"tiny-stories\"), bacth(p));\n  |                                     ^"
        );
        // The script's own functions and Rhai's are candidates too.
        let err =
            plan("fn make_model() { load(\"tiny-stories\") }\nlet m = make_modle();").unwrap_err();
        assert_eq!(
            err.message,
            "unknown function `make_modle`: did you mean `make_model`?"
        );
        let err = plan("let n = [1, 2].lenn();").unwrap_err();
        assert_eq!(err.message, "unknown function `lenn`: did you mean `len`?");
    }

    #[test]
    fn an_unknown_function_with_no_close_name_lists_the_stage_functions() {
        let err = plan("frobnicate(1);").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:1:1: unknown function `frobnicate`; stage functions: study, load, quantize, prompts, batch, infer, measure, aggregate (`llmeff help` describes them)\n  |\n1 | frobnicate(1);\n  | ^"
        );
    }

    #[test]
    fn a_stage_called_with_wrong_arguments_shows_its_call_forms() {
        let err = plan("let m = load(1);").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:1:9: load() cannot be called with (int); call it as load(model) or load(model, #{ options })\n  |\n1 | let m = load(1);\n  |         ^"
        );
    }

    #[test]
    fn a_misspelt_stdlib_function_suggests_within_the_module() {
        let err = plan("import \"sweep\" as s;\nlet g = s::gird(#{ a: [1] });").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.rhai:2:12: unknown function `s::gird`: did you mean `s::grid`?\n  |\n2 | let g = s::gird(#{ a: [1] });\n  |            ^"
        );
    }

    #[test]
    fn study_retries_and_retry_delay_reach_the_schedule() {
        let src = |opts: &str| {
            format!(
                "study(#{{ {opts} }});\ninfer(load(\"tiny-stories\"), prompts(\"builtin:stories\"));"
            )
        };
        let p = plan(&src("retries: 0, retry_delay_s: 0.5")).unwrap();
        let schedule = crate::schedule::Schedule::from_plan(&p);
        assert_eq!((schedule.retries, schedule.retry_delay_s), (0, 0.5));
        assert!(
            p.to_string()
                .contains("\n  Retries 0 after a backend error, 0.5 s apart\n"),
            "{p}"
        );
        let p = plan(&src("retries: 7, retry_delay_s: 2")).unwrap();
        let schedule = crate::schedule::Schedule::from_plan(&p);
        assert_eq!((schedule.retries, schedule.retry_delay_s), (7, 2.0));
        // Left out, the defaults stay.
        let p = plan(&src("name: \"d\"")).unwrap();
        assert_eq!((p.study.retries, p.study.retry_delay_s), (3, 5.0));
        for (opts, message) in [
            (
                "retries: -1",
                "option `retries` of study(): must be >= 0, got -1",
            ),
            (
                "retries: 1.5",
                "option `retries` of study() expects an integer, got f64",
            ),
            (
                "retry_delay_s: -0.5",
                "option `retry_delay_s` of study(): must be a finite number of seconds >= 0, got -0.5",
            ),
            (
                "retry_delay_s: \"5\"",
                "option `retry_delay_s` of study() expects a number, got string",
            ),
        ] {
            let err = plan(&src(opts)).unwrap_err();
            assert_eq!(err.message, message, "{opts}");
        }
    }

    #[test]
    fn study_placement_reaches_the_schedule_and_leaves_run_identity_alone() {
        let src = |opts: &str| {
            format!(
                "study(#{{ {opts} }});\n\
                 let p = prompts(\"builtin:stories\");\n\
                 infer(load(\"tiny-stories\", #{{ device: \"cuda:0\" }}), p);\n\
                 infer(load(\"tiny-stories\", #{{ device: \"cuda:1\" }}), p);\n\
                 infer(load(\"tiny-stories\", #{{ devices: [\"cpu:0\", \"cpu:1\"] }}), p);\n\
                 infer(load(\"tiny-stories\", #{{ device: \"cpu\" }}), p);"
            )
        };
        let default = plan(&src("name: \"d\"")).unwrap();
        assert_eq!(default.study.placement, Placement::OneAtATime);
        assert_eq!(default.lanes(), None);
        assert!(!default.to_string().contains("Placement"), "{default}");
        assert!(default.to_json().get("lanes").is_none());
        assert!(!default.to_dot().contains("placement"));
        let per_device = plan(&src("placement: \"per-device\"")).unwrap();
        let schedule = crate::schedule::Schedule::from_plan(&per_device);
        assert_eq!(schedule.placement, Placement::PerDevice);
        // The same runs, the same hashes: placement is not part of a run's identity.
        let ids = |p: &Plan| p.runs().iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(&default), ids(&per_device));
        assert!(
            per_device.to_string().contains(
                "\n  Placement per-device: lanes cuda:0 | cuda:1 | cpu:0+cpu:1, cpu (runs of different lanes at the same time)\n"
            ),
            "{per_device}"
        );
        let json = per_device.to_json();
        assert_eq!(json["study"]["placement"], "per-device");
        assert_eq!(json["lanes"][2], serde_json::json!(["cpu:0+cpu:1", "cpu"]));
        assert_eq!(default.to_json()["study"]["placement"], "one-at-a-time");
        assert!(
            per_device.to_dot().contains(
                "label=\"placement per-device: lanes cuda:0 | cuda:1 | cpu:0+cpu:1, cpu\""
            ),
            "{}",
            per_device.to_dot()
        );
        assert_eq!(
            plan(&src("placement: \"per-gpu\"")).unwrap_err().message,
            "option `placement` of study(): `per-gpu` is not one of: one-at-a-time, per-device"
        );
        assert_eq!(
            plan(&src("placement: 1")).unwrap_err().message,
            "option `placement` of study() expects a string, got i64"
        );
    }

    #[test]
    fn an_unknown_carbon_place_fails_while_planning() {
        let src = |carbon: &str| {
            format!(
                "let r = infer(load(\"tiny-stories\"), batch(prompts(\"builtin:stories\")));\nmeasure(r, #{{ carbon: {carbon} }});"
            )
        };
        let err = plan(&src("#{ country: \"XYZ\" }")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message.contains("unknown country `XYZ`"),
            "{}",
            err.message
        );
        let err = plan(&src("#{ country: \"swe\", region: \"SE9\" }")).unwrap_err();
        assert!(
            err.message.contains("SE1, SE2, SE3, SE4"),
            "{}",
            err.message
        );
        assert!(plan(&src("#{ country: \"swe\", region: \"SE3\", pue: 1.2 }")).is_ok());
    }

    #[test]
    fn the_estimate_mode_is_checked_and_hashed_only_when_not_default() {
        let src = |opts: &str| {
            format!(
                "let r = infer(load(\"tiny-stories\"), batch(prompts(\"builtin:stories\")));\nmeasure(r, #{{ {opts} }});"
            )
        };
        let err = plan(&src("estimate: \"proces\"")).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message
                .contains("`proces` is not one of: machine, process"),
            "{}",
            err.message
        );
        let run = |opts: &str| plan(&src(opts)).unwrap().runs().remove(0);
        let default = run("");
        let machine = run("estimate: \"machine\"");
        let process = run("estimate: \"process\"");
        assert_eq!(process.measure.estimate, EstimateMode::Process);
        assert_eq!(default.measure.estimate, EstimateMode::Machine);
        // The default spelled out is the same run, and its options serialise as before the
        // option existed (so stored runs keep their hash); process mode is another run.
        assert_eq!(default.id, machine.id);
        assert_ne!(default.id, process.id);
        let json = serde_json::to_string(&default.measure).unwrap();
        assert!(!json.contains("estimate"), "{json}");
        let json = serde_json::to_string(&process.measure).unwrap();
        assert!(json.contains("\"estimate\":\"process\""), "{json}");
    }

    #[test]
    fn wrong_input_kind_names_both() {
        let err = plan("let p = prompts(\"builtin:stories\");\ninfer(p, p);").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(
            err.message,
            "infer() expects a model (from load() or quantize()) as argument 1, got prompts (from prompts())"
        );
    }

    #[test]
    fn endless_loop_hits_the_operation_limit() {
        let err = plan("loop { }").unwrap_err();
        assert!(
            err.message.contains(&format!(
                "limit of {} operations",
                crate::limits::MAX_OPERATIONS
            )),
            "{err}"
        );
    }

    #[test]
    fn eval_is_disabled() {
        assert!(plan("eval(\"1\")").is_err());
    }

    #[test]
    fn parse_error_has_line_and_column() {
        let err = plan("let x = ;").unwrap_err();
        assert_eq!((err.line, err.column), (1, 9));
    }
}
