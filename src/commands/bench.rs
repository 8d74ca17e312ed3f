//! `llmeff bench`: the arguments of the speed harness (`llmeff-bench`) and the rendering of its
//! figures as a table or JSON: prefill time and decode tokens/s per model, batch and weight
//! format on the CPU or `--device`, MBU, the peers' figures in the same format and memory
//! growth.

use std::process::ExitCode;

use api::runtime::{Compute, Runtime};
use bench::{
    BASELINE_NEW_TOKENS, BASELINE_PROMPT_TOKENS, BenchReport, BenchSettings, BuiltBackends, Format,
    GROWTH_MODEL, Peer,
};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::Failure;
use crate::cli::{BenchArgs, ForwardArg};

/// The GPU backends this binary was built with.
const BUILT: BuiltBackends = BuiltBackends {
    cuda: cfg!(feature = "cuda"),
    wgpu: cfg!(feature = "wgpu"),
};

/// What one `llmeff bench` measured, with what rendering it needs.
struct Measured {
    /// The harness's figures.
    report: BenchReport,
    /// The peers' baselines, in `--baseline` order.
    peers: Vec<Peer>,
    /// The formats measured, each once, in the order given.
    formats: Vec<Format>,
    /// The device, as written (`cpu`, `cuda:0`, `wgpu`).
    device: String,
    /// Whether it is the CPU, where the CPU's checks (copy now, steal) apply.
    on_cpu: bool,
    /// What computes the forward pass, for the headline (`llmeff host kernels`, `burn-cuda`).
    forward: &'static str,
    /// Threads of the pool the forward pass runs on.
    threads: usize,
}

impl Measured {
    /// The accelerator the rows ran on, as its driver names it; `None` on the CPU.
    fn adapter(&self) -> Option<&str> {
        self.report.rows.iter().find_map(|r| r.adapter.as_deref())
    }

    /// The figures as `--json` prints them.
    fn json(&self) -> serde_json::Value {
        let peak = &self.report.peak;
        let growth = self.report.growth;
        serde_json::json!({
            "device": self.device,
            "adapter": self.adapter(),
            "threads": self.threads,
            "forward": self.forward,
            "formats": self.formats,
            "read_bytes_per_s": peak.as_ref().map(|p| p.bytes_per_s),
            "copy_bytes_per_s": self.report.copy_bytes_per_s,
            "copy_source": peak.as_ref().map(|p| p.source.clone()),
            "peers": self.peers.iter().map(|p| p.tool.as_str()).collect::<Vec<_>>(),
            "rows": self.report.rows,
            "rss_growth_bytes": growth.map(|g| g.growth_bytes()),
            "growth_model": growth.map(|_| GROWTH_MODEL),
            "warnings": self.report.warnings,
        })
    }
}

/// Runs the benchmark and prints the table (or JSON).
pub fn run(args: BenchArgs) -> Result<ExitCode, Failure> {
    let measured = measure(&args)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&measured.json())
                .map_err(|e| Failure::work(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&args, &measured);
    Ok(ExitCode::SUCCESS)
}

/// Checks the arguments, then measures; progress lines go to stderr.
fn measure(args: &BenchArgs) -> Result<Measured, Failure> {
    if args.repeats == 0 {
        return Err(Failure::input("--repeats must be at least 1"));
    }
    if args.new_tokens < 2 {
        // Decode tokens/s would divide by a decode phase that did nothing.
        return Err(Failure::input(
            "--new-tokens must be at least 2: the first new token comes from the prompt pass, so decoding starts at the second",
        ));
    }
    let runtime = backends::BurnRuntime::new();
    // Before anything is measured: a GPU this build lacks is said at once, not after the
    // CPU's bandwidth benchmark.
    let device = bench::parse_device(&args.device, BUILT, &|| runtime.devices())
        .map_err(|e| Failure::input(format!("--device: {e}")))?;
    let forward = bench::forward_for(
        &device,
        args.forward.map(|f| match f {
            ForwardArg::Host => Compute::Host,
            ForwardArg::Burn => Compute::Burn,
        }),
    )
    .map_err(|e| Failure::input(e.to_string()))?;
    super::init_threads(args.threads)?;
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
        .map(|path| bench::read_baseline(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::input(e.to_string()))?;
    let forward_name = match (bench::gpu_backend(&device), forward) {
        (Some(backend), _) => backend,
        (None, Compute::Burn) => "burn-flex",
        (None, Compute::Host | Compute::Auto) => "llmeff host kernels",
    };
    let mut formats: Vec<Format> = Vec::new();
    for format in &args.dtypes {
        if !formats.contains(format) {
            formats.push(*format);
        }
    }
    let meters = meters::MachineMeters::detect();
    let settings = BenchSettings {
        models: args.models.clone(),
        batches: args.batches.clone(),
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        repeats: args.repeats,
        growth_tokens: args.growth_tokens,
        threads: rayon::current_num_threads(),
        // As parsed, so `cuda` reads `cuda:0` in the rows.
        device: device.to_string(),
        compute: forward,
        formats: formats.clone(),
        presets: backends::preset_ids().collect(),
    };
    let report = bench::run_bench(&runtime, &meters, &settings, &peers, &mut |p| {
        eprintln!("{p}")
    })
    .map_err(|e| {
        if e.is_input() {
            Failure::input(e.to_string())
        } else {
            Failure::work(e.to_string())
        }
    })?;
    Ok(Measured {
        report,
        peers,
        formats,
        device: device.to_string(),
        on_cpu: device.is_cpu(),
        forward: forward_name,
        threads: rayon::current_num_threads(),
    })
}

/// Prints the figures as a table, with the lines that explain them.
fn print_table(args: &BenchArgs, measured: &Measured) {
    let Measured {
        report,
        peers,
        formats,
        device,
        on_cpu,
        forward: forward_name,
        threads,
    } = measured;
    let format_names = formats
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ");
    let peak = &report.peak;
    let rows = &report.rows;
    if *on_cpu {
        println!(
            "llmeff bench: {format_names} on the CPU ({forward_name}), {threads} threads, {}-token prompt, {} new tokens (EOS ignored), median of {} after a warm-up",
            args.prompt_tokens, args.new_tokens, args.repeats
        );
        match &peak {
            Some(p) => println!(
                "read bandwidth {:.1} GB/s, copy {:.1} GB/s ({}); MBU = decode bytes read per second / read bandwidth",
                p.bytes_per_s / 1e9,
                report.copy_bytes_per_s.unwrap_or(0.0) / 1e9,
                p.source
            ),
            None => println!("read bandwidth: not measured (MBU not reported)"),
        }
    } else {
        let adapter = measured
            .adapter()
            .map(|a| format!(": {a}"))
            .unwrap_or_default();
        println!(
            "llmeff bench: {format_names} on {device} ({forward_name}{adapter}), {}-token prompt, {} new tokens (EOS ignored), median of {} after a warm-up",
            args.prompt_tokens, args.new_tokens, args.repeats
        );
        match &peak {
            Some(p) => println!(
                "memory bandwidth {:.0} GB/s ({}); MBU = decode bytes read per second / memory bandwidth",
                p.bytes_per_s / 1e9,
                p.source
            ),
            None => println!("memory bandwidth of {device}: not known (MBU not reported)"),
        }
    }
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    let mut header: Vec<String> = [
        "model",
        "format",
        "compute",
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
    for peer in peers {
        header.push(format!("{}\nprefill / decode tok/s", peer.tool));
        header.push("llmeff ×\nprefill / decode".into());
    }
    table.set_header(header);
    for r in rows {
        let mut cells = vec![
            r.model.clone(),
            r.format.to_string(),
            r.compute.clone(),
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
        for (peer, figures) in peers.iter().zip(&r.peers) {
            cells.extend(match figures {
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
                None if peer.is_llama_cpp() && r.format.llama_cpp_type().is_none() => {
                    [format!("no llama.cpp {}", r.format), "-".into()]
                }
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
    if peers.iter().any(|p| p.is_llama_cpp()) {
        println!("{}", llama_cpp_pairs(formats));
    }
    println!("tokens/s count every sequence of the batch; decode excludes the prompt pass");
    for line in &report.warnings {
        println!("{line}");
    }
    if let Some(bench::MemoryGrowth {
        early_bytes: early,
        late_bytes: late,
    }) = report.growth
    {
        let place = if *on_cpu {
            String::new()
        } else {
            format!(" on {device}, the host process's")
        };
        println!(
            "memory over a {}-token generation ({GROWTH_MODEL}{place}): RSS {:.1} MB after 10 % of the steps, {:.1} MB at the end ({:+.2} MB)",
            args.growth_tokens,
            early as f64 / 1e6,
            late as f64 / 1e6,
            (late as f64 - early as f64) / 1e6
        );
    }
}

/// The line under a table with llama.cpp figures: which of its types each format's row is set
/// against, and which formats it has none for.
fn llama_cpp_pairs(formats: &[Format]) -> String {
    let pairs: Vec<String> = formats
        .iter()
        .filter_map(|f| {
            f.llama_cpp_type()
                .map(|t| format!("{f} against {}", t.to_uppercase()))
        })
        .collect();
    let unmatched: Vec<&str> = formats
        .iter()
        .filter(|f| f.llama_cpp_type().is_none())
        .map(|f| f.name())
        .collect();
    let mut line = format!("llama.cpp figures by format: {}", pairs.join(", "));
    if pairs.is_empty() {
        line = "llama.cpp figures by format: none of these formats".into();
    }
    if !unmatched.is_empty() {
        line.push_str(&format!(
            "; {} {} no llama.cpp counterpart (its 8-bit types are integers, and IQ4_NL's code book is not NF4's)",
            unmatched.join(", "),
            if unmatched.len() == 1 { "has" } else { "have" }
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `llmeff <line>`'s bench arguments, as clap parses them.
    fn bench_args(line: &str) -> BenchArgs {
        use clap::Parser;
        let words = std::iter::once("llmeff").chain(line.split_whitespace());
        match crate::cli::Cli::try_parse_from(words).map(|cli| cli.command) {
            Ok(crate::cli::Command::Bench(args)) => args,
            other => panic!("{line}: not bench arguments: {other:?}"),
        }
    }

    #[test]
    fn the_device_defaults_to_the_cpu_and_a_bad_one_is_refused_before_measuring() {
        assert_eq!(bench_args("bench").device, "cpu");
        let failure = measure(&bench_args("bench --device gpu:0 --models tiny-stories"))
            .err()
            .expect("no such device");
        assert_eq!(failure.code, 2, "{}", failure.message);
        assert!(
            failure
                .message
                .starts_with("--device: `gpu:0` is not a device")
                && failure.message.contains("devices here: cpu"),
            "{}",
            failure.message
        );
        let failure = measure(&bench_args("bench --forward host --device cuda:0"))
            .err()
            .expect("host kernels off the CPU, or no cuda build");
        assert_eq!(failure.code, 2, "{}", failure.message);
    }

    #[cfg(not(feature = "wgpu"))]
    #[test]
    fn wgpu_in_a_build_without_the_feature_names_the_feature_and_the_devices() {
        let failure = measure(&bench_args(
            "bench --device wgpu --models tiny-stories --batches 1 --new-tokens 4 --repeats 1",
        ))
        .err()
        .expect("this build has no wgpu backend");
        assert_eq!(failure.code, 2, "{}", failure.message);
        assert!(
            failure.message.starts_with(
                "--device: `wgpu` needs a build with the `wgpu` feature (cargo build --release --features wgpu); this build's devices: cpu"
            ),
            "{}",
            failure.message
        );
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn bench_runs_on_wgpu_and_says_so_in_every_row() {
        // Mesa's lavapipe is an adapter on any Linux machine with mesa-vulkan-drivers.
        let adapters = backends::BurnRuntime::new()
            .devices()
            .into_iter()
            .filter(|d| d.starts_with("wgpu:"))
            .count();
        if adapters == 0 {
            assert_ne!(
                std::env::var("LLMEFF_REQUIRE_WGPU").as_deref(),
                Ok("1"),
                "LLMEFF_REQUIRE_WGPU=1 but wgpu lists no adapter: apt-get install mesa-vulkan-drivers libvulkan1"
            );
            eprintln!("skipped: wgpu lists no adapter (LLMEFF_REQUIRE_WGPU=1 requires one)");
            return;
        }
        let measured = measure(&bench_args(
            "bench --device wgpu --models tiny-stories --batches 1 --new-tokens 4 --repeats 1 --growth-tokens 0",
        ))
        .unwrap_or_else(|f| panic!("{}", f.message));
        let json = measured.json();
        assert_eq!(json["device"], "wgpu");
        assert_eq!(json["forward"], "burn-wgpu");
        assert!(
            json["adapter"].as_str().is_some_and(|a| !a.is_empty()),
            "{json}"
        );
        // The CPU's checks describe the CPU, not the adapter: null, not the CPU's numbers.
        assert!(json["copy_bytes_per_s"].is_null(), "{json}");
        let rows = json["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{json}");
        let row = &rows[0];
        assert_eq!(
            (&row["device"], &row["model"]),
            (&"wgpu".into(), &"tiny-stories".into())
        );
        assert!(
            row["compute"].as_str().unwrap().starts_with("burn-"),
            "{row}"
        );
        assert!(
            row["cpu_steal_pct"].is_null() && row["copy_now_bytes_per_s"].is_null(),
            "{row}"
        );
        let decode = row["decode_tokens_per_s"].as_f64().unwrap();
        assert!(decode.is_finite() && decode > 0.0, "{row}");
        assert!(
            json["warnings"].as_array().unwrap().iter().any(|w| w
                .as_str()
                .unwrap()
                .starts_with("CPU steal and copy now \"-\" on wgpu")),
            "{json}"
        );
    }

    #[test]
    fn the_llama_cpp_line_pairs_each_format_with_its_type_and_names_the_unmatched() {
        assert_eq!(
            llama_cpp_pairs(&[
                Format::F32,
                Format::Int8,
                Format::Int4,
                Format::Fp8,
                Format::Nf4
            ]),
            "llama.cpp figures by format: f32 against F32, int8 against Q8_0, int4 against Q4_0; \
             fp8, nf4 have no llama.cpp counterpart (its 8-bit types are integers, and IQ4_NL's \
             code book is not NF4's)"
        );
        assert_eq!(
            llama_cpp_pairs(&[Format::Bf16]),
            "llama.cpp figures by format: bf16 against BF16"
        );
        assert!(
            llama_cpp_pairs(&[Format::Nf4])
                .starts_with("llama.cpp figures by format: none of these formats; nf4 has no")
        );
    }
}
