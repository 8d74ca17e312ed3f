//! `llmeff bench`: llmeff's own inference speed on the CPU: prefill time and decode tokens/s at
//! batch 1 and 8 for three model shapes, with the bandwidth decode achieves against the
//! machine's measured read bandwidth (MBU), and memory growth over a long generation.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use api::meter::MeterProvider;
use api::runtime::{
    Compute, DType, Decoding, GenerateOptions, LoadedModel, ModelSpec, Runtime, WeightsKind,
};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::Failure;
use crate::cli::{BenchArgs, ForwardArg};

/// A model the benchmark measures.
struct BenchModel {
    /// Name in the table.
    label: &'static str,
    /// Model source for the runtime.
    source: &'static str,
    weights: WeightsKind,
    /// Its name in the peer baselines' output (`benches/transformers_shapes.py` and the others).
    baseline_key: &'static str,
}

const MODELS: &[BenchModel] = &[
    BenchModel {
        label: "tiny-stories",
        source: "tiny-stories",
        weights: WeightsKind::Pretrained,
        baseline_key: "tiny-stories-dir",
    },
    BenchModel {
        label: "SmolLM-135M shape",
        source: "HuggingFaceTB/SmolLM-135M",
        weights: WeightsKind::Random,
        baseline_key: "smollm-135m",
    },
    BenchModel {
        label: "TinyLlama-1.1B shape",
        source: "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        weights: WeightsKind::Random,
        baseline_key: "tinyllama-1.1b",
    },
];

/// One measured row.
#[derive(Debug, Clone, serde::Serialize)]
struct BenchRow {
    model: String,
    batch: usize,
    prompt_tokens: usize,
    new_tokens: usize,
    prefill_s: f64,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    decode_bytes_per_s: f64,
    mbu: Option<f64>,
    /// Share of the CPUs' time a hypervisor gave to other guests during the timed repeats,
    /// percent (`/proc/stat` steal); `None` where `/proc/stat` is unreadable.
    cpu_steal_pct: Option<f64>,
    /// The copy benchmark behind MBU's denominator, run again just before this row's repeats,
    /// bytes read + written per second: below the denominator, other guests were sharing the
    /// memory system (which CPU steal does not show); `None` where it measured no time.
    copy_now_bytes_per_s: Option<f64>,
    /// Each peer's figures for the same model and batch (one per `--baseline`, in order; `None`
    /// where that peer did not measure this row).
    peers: Vec<Option<Baseline>>,
}

/// A peer's speed on one model and batch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
struct Baseline {
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    /// CPU steal during the peer's timed runs, percent, where its script recorded it.
    cpu_steal_pct: Option<f64>,
}

/// One `--baseline` file: who was measured, and their figures by (shape, batch).
#[derive(Debug)]
struct Peer {
    /// The tool and version, from the file's `tool` field (else `transformers` when the file
    /// names a torch version, else the file's name).
    tool: String,
    figures: BTreeMap<(String, usize), Baseline>,
}

/// Prompt and generation lengths every peer baseline measures with.
const BASELINE_PROMPT_TOKENS: usize = 32;
const BASELINE_NEW_TOKENS: usize = 64;

/// Reads a peer baseline's output: per-shape lines `<shape> {json}` and/or a JSON line with
/// every shape (and the `tool`), so the output of an interrupted run still counts.
fn read_baseline(path: &Path) -> Result<Peer, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the baseline {}: {e}", path.display()))?;
    let mut shapes: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut tool = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Ok(serde_json::Value::Object(all)) = serde_json::from_str(line) {
            if let Some(name) = all.get("tool").and_then(serde_json::Value::as_str) {
                tool = Some(name.to_string());
            } else if let Some(torch) = all.get("torch").and_then(serde_json::Value::as_str) {
                tool.get_or_insert_with(|| format!("transformers (torch {torch})"));
            }
            shapes.extend(all.into_iter().filter(|(_, v)| v.is_object()));
        } else if let Some((name, json)) = line.split_once(' ')
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(json)
        {
            shapes.insert(name.to_string(), value);
        }
    }
    let mut out = BTreeMap::new();
    for (shape, value) in &shapes {
        for batch in [1usize, 8] {
            let Some(row) = value.get(format!("batch{batch}")) else {
                continue;
            };
            let prefill_s = row.get("prefill_s").and_then(serde_json::Value::as_f64);
            let decode = row
                .get("decode_tokens_per_s")
                .and_then(serde_json::Value::as_f64);
            if let (Some(prefill_s), Some(decode)) = (prefill_s, decode)
                && prefill_s > 0.0
            {
                out.insert(
                    (shape.clone(), batch),
                    Baseline {
                        prefill_tokens_per_s: (batch * BASELINE_PROMPT_TOKENS) as f64 / prefill_s,
                        decode_tokens_per_s: decode,
                        cpu_steal_pct: row.get("cpu_steal_pct").and_then(serde_json::Value::as_f64),
                    },
                );
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{} holds no peer figures (lines `<shape> {{\"batch1\": ...}}` as benches/transformers_shapes.py prints)",
            path.display()
        ));
    }
    let tool = tool.unwrap_or_else(|| {
        path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    Ok(Peer { tool, figures: out })
}

/// Runs the benchmark and prints the table (or JSON).
pub fn run(args: BenchArgs) -> Result<ExitCode, Failure> {
    super::init_threads(args.threads)?;
    if args.repeats == 0 {
        return Err(Failure::input("--repeats must be at least 1"));
    }
    if args.new_tokens < 2 {
        // Decode tokens/s would divide by a decode phase that did nothing.
        return Err(Failure::input(
            "--new-tokens must be at least 2: the first new token comes from the prompt pass, so decoding starts at the second",
        ));
    }
    let forward = match args.forward {
        Some(ForwardArg::Host) | None => Compute::Host,
        Some(ForwardArg::Burn) => Compute::Burn,
    };
    if !args.baseline.is_empty()
        && (args.prompt_tokens, args.new_tokens) != (BASELINE_PROMPT_TOKENS, BASELINE_NEW_TOKENS)
    {
        return Err(Failure::input(format!(
            "the baselines are measured with a {BASELINE_PROMPT_TOKENS}-token prompt and {BASELINE_NEW_TOKENS} new tokens; drop --prompt-tokens/--new-tokens to compare"
        )));
    }
    let peers = args
        .baseline
        .iter()
        .map(|path| read_baseline(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::input)?;
    let runtime = backends::BurnRuntime::new();
    let forward_name = match forward {
        Compute::Burn => "burn-flex",
        _ => "llmeff host kernels",
    };
    let meters = meters::MachineMeters::detect();
    let peak = meters.peak("cpu", "f32");
    // MBU divides by the read bandwidth; each row's copy is compared with the copy peak.
    let copy_peak = meters.cpu_copy_bytes_per_s("f32");
    let selected: Vec<&BenchModel> = MODELS
        .iter()
        .filter(|m| is_selected(&args.models, m.label))
        .collect();
    let growth_selected = args.growth_tokens > 0 && is_selected(&args.models, GROWTH_MODEL);
    if selected.is_empty() && !growth_selected {
        let names: Vec<&str> = MODELS
            .iter()
            .map(|m| m.label)
            .chain([GROWTH_MODEL])
            .collect();
        return Err(Failure::input(format!(
            "no benchmark model matches {:?}; models: {}",
            args.models,
            names.join(", ")
        )));
    }
    let mut rows = Vec::new();
    for bench in selected {
        eprintln!("loading {}", bench.label);
        let spec = ModelSpec {
            source: bench.source.to_string(),
            revision: None,
            dtype: DType::F32,
            weights: bench.weights,
            device: "cpu".to_string(),
            seed: 0,
            quantization: None,
            compute: forward,
        };
        let model = runtime
            .load(&spec)
            .map_err(|e| Failure::work(format!("{}: {e}", bench.label)))?;
        for &batch in &args.batches {
            eprintln!("  batch {batch}");
            let row = measure(
                bench.label,
                model.as_ref(),
                batch,
                &args,
                peak.as_ref().map(|p| p.bytes_per_s),
            )
            .map_err(|e| Failure::work(format!("{} batch {batch}: {e}", bench.label)))?;
            let key = (bench.baseline_key.to_string(), batch);
            rows.push(BenchRow {
                peers: peers.iter().map(|p| p.figures.get(&key).copied()).collect(),
                ..row
            });
        }
    }
    let growth = if growth_selected {
        Some(memory_growth(&runtime, forward, args.growth_tokens).map_err(Failure::work)?)
    } else {
        None
    };
    if args.json {
        let value = serde_json::json!({
            "threads": rayon::current_num_threads(),
            "forward": forward_name,
            "read_bytes_per_s": peak.as_ref().map(|p| p.bytes_per_s),
            "copy_bytes_per_s": copy_peak,
            "copy_source": peak.as_ref().map(|p| p.source.clone()),
            "peers": peers.iter().map(|p| p.tool.as_str()).collect::<Vec<_>>(),
            "rows": rows,
            "rss_growth_bytes": growth.map(|g| g.1 as i64 - g.0 as i64),
            "growth_model": growth.map(|_| GROWTH_MODEL),
            "warnings": warnings(&rows, copy_peak),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| Failure::work(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "llmeff bench: f32 on the CPU ({forward_name}), {} threads, {}-token prompt, {} new tokens (EOS ignored), median of {} after a warm-up",
        rayon::current_num_threads(),
        args.prompt_tokens,
        args.new_tokens,
        args.repeats
    );
    match &peak {
        Some(p) => println!(
            "read bandwidth {:.1} GB/s, copy {:.1} GB/s ({}); MBU = decode bytes read per second / read bandwidth",
            p.bytes_per_s / 1e9,
            copy_peak.unwrap_or(0.0) / 1e9,
            p.source
        ),
        None => println!("read bandwidth: not measured (MBU not reported)"),
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    let mut header: Vec<String> = [
        "model",
        "batch",
        "prefill ms",
        "prefill tok/s",
        "decode tok/s",
        "decode GB/s",
        "MBU",
        "CPU steal",
        "copy now\nGB/s",
    ]
    .map(String::from)
    .to_vec();
    for peer in &peers {
        header.push(format!("{}\nprefill / decode tok/s", peer.tool));
        header.push("llmeff ×\nprefill / decode".into());
    }
    table.set_header(header);
    for r in &rows {
        let mut cells = vec![
            r.model.clone(),
            r.batch.to_string(),
            format!("{:.2}", r.prefill_s * 1e3),
            format!("{:.0}", r.prefill_tokens_per_s),
            format!("{:.1}", r.decode_tokens_per_s),
            format!("{:.2}", r.decode_bytes_per_s / 1e9),
            r.mbu
                .map(|m| format!("{:.0} %", m * 100.0))
                .unwrap_or_else(|| "-".into()),
            r.cpu_steal_pct
                .map(|p| format!("{p:.0} %"))
                .unwrap_or_else(|| "-".into()),
            r.copy_now_bytes_per_s
                .map(|b| format!("{:.1}", b / 1e9))
                .unwrap_or_else(|| "-".into()),
        ];
        for peer in &r.peers {
            cells.extend(match peer {
                Some(b) => [
                    format!(
                        "{:.0} / {:.1}{}",
                        b.prefill_tokens_per_s,
                        b.decode_tokens_per_s,
                        b.cpu_steal_pct
                            .filter(|p| *p >= engine::metering::STEAL_NOTE_PCT)
                            .map(|p| format!("\nsteal {p:.0} %"))
                            .unwrap_or_default()
                    ),
                    format!(
                        "{:.2} / {:.2}",
                        r.prefill_tokens_per_s / b.prefill_tokens_per_s,
                        r.decode_tokens_per_s / b.decode_tokens_per_s
                    ),
                ],
                None => ["not measured".into(), "-".into()],
            });
        }
        table.add_row(cells);
    }
    println!("{table}");
    for (peer, path) in peers.iter().zip(&args.baseline) {
        println!(
            "{} figures from {} (measure them on this machine just before or after: the same sitting)",
            peer.tool,
            path.display()
        );
    }
    println!("tokens/s count every sequence of the batch; decode excludes the prompt pass");
    for line in warnings(&rows, copy_peak) {
        println!("{line}");
    }
    if let Some((early, late)) = growth {
        println!(
            "memory over a {}-token generation ({GROWTH_MODEL}): RSS {:.1} MB after 10 % of the steps, {:.1} MB at the end ({:+.2} MB)",
            args.growth_tokens,
            early as f64 / 1e6,
            late as f64 / 1e6,
            (late as f64 - early as f64) / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a model is among `--models` (every model when none is named).
fn is_selected(filters: &[String], label: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|w| label.to_lowercase().contains(&w.to_lowercase()))
}

/// The model whose resident memory is followed over a long generation.
const GROWTH_MODEL: &str = "tiny-llama3-gqa";

/// What the figures cannot be trusted for, one sentence each: printed under the table and
/// listed in the JSON, since a number without its caveat misleads the same in both.
/// `copy_peak` is the copy bandwidth each row's `copy now` is compared with.
fn warnings(rows: &[BenchRow], copy_peak: Option<f64>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(worst) = rows
        .iter()
        .flat_map(|r| {
            let peers = r.peers.iter().flatten().map(|b| b.cpu_steal_pct);
            std::iter::once(r.cpu_steal_pct).chain(peers)
        })
        .flatten()
        .filter(|p| *p >= engine::metering::STEAL_NOTE_PCT)
        .max_by(f64::total_cmp)
    {
        out.push(format!(
            "CPU steal up to {worst:.0} %: the hypervisor ran other guests on this machine's CPUs during those figures (the CPU steal column; a peer's under its figures), so they are below what this machine does; measure again in the same sitting when steal is near 0"
        ));
    }
    out.extend(contention_note(rows, copy_peak));
    if rows.iter().any(|r| r.cpu_steal_pct.is_none()) {
        out.push(
            "CPU steal \"-\": /proc/stat is unreadable, or the row's timed repeats took under 1 s of CPU time, too short for its 10 ms ticks".into(),
        );
    }
    if rows.iter().any(|r| r.mbu.is_some_and(|m| m > 1.0)) {
        out.push(
            "MBU above 100 %: decoding read faster than the read-bandwidth benchmark (weights that fit in the CPU caches are read from cache)".into(),
        );
    }
    out
}

/// Prompts of `len` tokens: ids spread over the vocabulary, different per sequence, so no
/// two sequences of a batch are identical.
fn prompts(batch: usize, len: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..len)
                .map(|i| ((7 + 31 * i + 101 * b) % vocab.max(1)) as u32)
                .collect()
        })
        .collect()
}

fn measure(
    label: &str,
    model: &dyn LoadedModel,
    batch: usize,
    args: &BenchArgs,
    read_bytes_per_s: Option<f64>,
) -> Result<BenchRow, String> {
    let info = model.info().clone();
    let prompts = prompts(batch, args.prompt_tokens, info.vocab_size);
    let options = GenerateOptions {
        max_new_tokens: args.new_tokens,
        min_new_tokens: 0,
        stop_at_eos: false,
        decoding: Decoding::Greedy,
    };
    // Before the warm-up, so the copy's page faults and cache misses are not in the timings.
    let copy_now_bytes_per_s = meters::peak::measure_copy_bandwidth(
        meters::peak::COPY_BYTES,
        rayon::current_num_threads(),
        COPY_NOW_REPS,
    )
    .ok();
    let mut prefill_times = Vec::with_capacity(args.repeats);
    let mut decode_times = Vec::with_capacity(args.repeats);
    let mut decode_steps = 0;
    let mut steal_from = None;
    // One untimed generation warms caches and allocators, as every timed run of a study has.
    for repeat in 0..=args.repeats {
        if repeat == 1 {
            steal_from = cpu_times();
        }
        let start = Instant::now();
        let mut generation = model.start(&prompts, &options).map_err(|e| e.to_string())?;
        generation.step().map_err(|e| e.to_string())?;
        let prefilled = Instant::now();
        let mut steps = 0;
        loop {
            let out = generation.step().map_err(|e| e.to_string())?;
            steps += 1;
            if out.finished || steps >= args.new_tokens {
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
    // Every sequence of the batch has the same prompt and as many new tokens.
    let dtype_bytes = DType::F32.size_bytes() as u64;
    let sequence = (args.prompt_tokens as u64, decode_steps as u64 + 1);
    let bytes = engine::flops::decode_read_bytes(
        &info,
        decode_steps as u64,
        std::iter::repeat_n(sequence, batch),
        dtype_bytes,
    );
    let decode_bytes_per_s = bytes as f64 / decode_s;
    Ok(BenchRow {
        model: label.to_string(),
        batch,
        prompt_tokens: args.prompt_tokens,
        new_tokens: decode_steps + 1,
        prefill_s,
        prefill_tokens_per_s: (batch * args.prompt_tokens) as f64 / prefill_s,
        decode_tokens_per_s: (batch * decode_steps) as f64 / decode_s,
        decode_bytes_per_s,
        mbu: read_bytes_per_s.map(|c| decode_bytes_per_s / c),
        cpu_steal_pct,
        copy_now_bytes_per_s,
        peers: Vec::new(),
    })
}

/// Copies of the per-row bandwidth check (best of these, as the cached figure is).
const COPY_NOW_REPS: usize = 3;

/// A row's copy bandwidth below this share of the copy bandwidth peak is reported as contention:
/// the denominator is a best of 4, and quiet re-measurements on the development VM came within
/// about 10 % of it.
const CONTENDED_SHARE: f64 = 0.85;

/// The note under the table when some row's copy bandwidth, measured just before it, fell
/// below [`CONTENDED_SHARE`] of `denominator` (the copy bandwidth peak, bytes/s).
fn contention_note(rows: &[BenchRow], denominator: Option<f64>) -> Option<String> {
    let denominator = denominator.filter(|d| *d > 0.0)?;
    let worst = rows
        .iter()
        .filter_map(|r| r.copy_now_bytes_per_s)
        .min_by(f64::total_cmp)?;
    (worst < CONTENDED_SHARE * denominator).then(|| {
        format!(
            "memory contended: the copy benchmark measured down to {:.1} GB/s just before a row ({:.0} % of the {:.1} GB/s copy peak), so other guests or processes were using this machine's memory bandwidth and the figures are below what it does; CPU steal does not show this",
            worst / 1e9,
            100.0 * worst / denominator,
            denominator / 1e9
        )
    })
}

/// All CPUs' times from `/proc/stat`, for the steal over the timed repeats.
fn cpu_times() -> Option<meters::estimate::CpuTimes> {
    meters::estimate::CpuTimes::read(Path::new(meters::procfs::DEFAULT_PROC_ROOT)).ok()
}

/// The middle value (the upper one of an even count); NaN when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// RSS after 10 % of a long generation and at its end, bytes (the bundled tiny-llama3-gqa,
/// whose context is long enough; batch 1).
fn memory_growth(
    runtime: &backends::BurnRuntime,
    compute: Compute,
    tokens: usize,
) -> Result<(u64, u64), String> {
    let spec = ModelSpec {
        source: "tiny-llama3-gqa".into(),
        revision: None,
        dtype: DType::F32,
        weights: WeightsKind::Pretrained,
        device: "cpu".into(),
        seed: 0,
        quantization: None,
        compute,
    };
    let model = runtime.load(&spec).map_err(|e| e.to_string())?;
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
    let mut probe =
        meters::procfs::ProcessProbe::new(std::path::Path::new("/proc"), meters::monotonic());
    let mut rss_bytes = || {
        let mut sample = api::meter::Sample::default();
        api::meter::Probe::sample(&mut probe, &mut sample);
        sample.rss_bytes
    };
    let mut generation = model.start(&prompt, &options).map_err(|e| e.to_string())?;
    let mut early = None;
    for step in 0..tokens {
        let out = generation.step().map_err(|e| e.to_string())?;
        if step == tokens / 10 {
            early = rss_bytes();
        }
        if out.finished {
            break;
        }
    }
    match (early, rss_bytes()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err("resident memory is not readable from /proc/self/status".into()),
    }
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

    fn row_with_copy(copy_now_bytes_per_s: Option<f64>) -> BenchRow {
        BenchRow {
            model: "m".into(),
            batch: 1,
            prompt_tokens: 32,
            new_tokens: 64,
            prefill_s: 1.0,
            prefill_tokens_per_s: 32.0,
            decode_tokens_per_s: 10.0,
            decode_bytes_per_s: 1e9,
            mbu: None,
            cpu_steal_pct: None,
            copy_now_bytes_per_s,
            peers: Vec::new(),
        }
    }

    #[test]
    fn contention_is_reported_below_85_percent_of_the_denominator() {
        let gb = 1e9;
        let quiet = [row_with_copy(Some(25.0 * gb)), row_with_copy(None)];
        assert_eq!(contention_note(&quiet, Some(26.4 * gb)), None);
        let busy = [
            row_with_copy(Some(25.0 * gb)),
            row_with_copy(Some(13.2 * gb)),
        ];
        let note = contention_note(&busy, Some(26.4 * gb)).expect("the slow row is reported");
        assert!(note.contains("13.2 GB/s"), "{note}");
        assert!(note.contains("50 %"), "{note}");
        assert!(note.contains("26.4 GB/s"), "{note}");
        // Nothing to compare against: no note rather than a guess.
        assert_eq!(contention_note(&busy, None), None);
        assert_eq!(contention_note(&busy, Some(0.0)), None);
        assert_eq!(
            contention_note(&[row_with_copy(None)], Some(26.4 * gb)),
            None
        );
    }

    #[test]
    fn warnings_hold_the_contention_note_for_the_json_too() {
        let gb = 1e9;
        let busy = [row_with_copy(Some(13.2 * gb))];
        let busy = warnings(&busy, Some(26.4 * gb));
        assert!(
            busy.iter().any(|w| w.starts_with("memory contended")),
            "{busy:?}"
        );
        let quiet = [BenchRow {
            cpu_steal_pct: Some(0.0),
            ..row_with_copy(Some(25.0 * gb))
        }];
        assert_eq!(warnings(&quiet, Some(26.4 * gb)), Vec::<String>::new());
    }

    #[test]
    fn models_filter_selects_the_memory_model_too() {
        assert!(is_selected(&[], GROWTH_MODEL), "no filter: everything");
        assert!(!is_selected(&["tiny-stories".into()], GROWTH_MODEL));
        assert!(is_selected(&["GQA".into()], GROWTH_MODEL));
        assert!(is_selected(&["smollm".into()], "SmolLM-135M shape"));
    }

    #[test]
    fn baseline_reads_shape_lines_and_the_final_json() {
        let dir = std::env::temp_dir().join(format!("llmeff-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("baseline.jsonl");
        // An interrupted run: one shape line, no final line.
        std::fs::write(
            &path,
            "Loading weights: 100%\nsmollm-135m {\"batch1\": {\"prefill_s\": 0.2, \"decode_tokens_per_s\": 14.2, \"generate_s\": 4.6}}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap();
        assert_eq!(b.tool, "baseline", "no tool named: the file's name");
        let b = b.figures;
        assert_eq!(
            b[&("smollm-135m".to_string(), 1)],
            Baseline {
                prefill_tokens_per_s: 160.0,
                decode_tokens_per_s: 14.2,
                cpu_steal_pct: None,
            }
        );
        assert!(!b.contains_key(&("smollm-135m".to_string(), 8)));
        // A finished run's last line holds every shape.
        std::fs::write(
            &path,
            "{\"torch\": \"2.15.0\", \"threads\": 2, \"tinyllama-1.1b\": {\"batch8\": {\"prefill_s\": 6.4, \"decode_tokens_per_s\": 4.1}}}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap();
        assert_eq!(b.tool, "transformers (torch 2.15.0)");
        assert_eq!(
            b.figures[&("tinyllama-1.1b".to_string(), 8)].prefill_tokens_per_s,
            40.0
        );
        // Other peers name themselves, on their first or last line.
        std::fs::write(
            &path,
            "{\"tool\": \"candle 0.11.1\"}\nsmollm-135m {\"batch8\": {\"prefill_s\": 0.5, \"decode_tokens_per_s\": 140.0, \"cpu_steal_pct\": 12.5}}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap();
        assert_eq!(b.tool, "candle 0.11.1");
        let row = b.figures[&("smollm-135m".to_string(), 8)];
        assert_eq!(row.prefill_tokens_per_s, 512.0);
        assert_eq!(row.cpu_steal_pct, Some(12.5), "the steal the peer recorded");
        std::fs::write(&path, "nothing useful\n").unwrap();
        assert!(
            read_baseline(&path)
                .unwrap_err()
                .contains("no peer figures")
        );
        assert!(read_baseline(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
