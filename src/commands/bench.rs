//! `llmeff bench`: the arguments of the speed harness (`llmeff-bench`) and the rendering of its
//! figures as a table or JSON: prefill time and decode tokens/s per model, batch and weight
//! format, MBU, the peers' figures in the same format and memory growth.

use std::process::ExitCode;

use api::runtime::Compute;
use bench::{BASELINE_NEW_TOKENS, BASELINE_PROMPT_TOKENS, BenchSettings, Format, GROWTH_MODEL};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use crate::Failure;
use crate::cli::{BenchArgs, ForwardArg};

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
        .map(|path| bench::read_baseline(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::input(e.to_string()))?;
    let runtime = backends::BurnRuntime::new();
    let forward_name = match forward {
        Compute::Burn => "burn-flex",
        Compute::Host | Compute::Auto => "llmeff host kernels",
    };
    let mut formats: Vec<Format> = Vec::new();
    for format in &args.dtypes {
        if !formats.contains(format) {
            formats.push(*format);
        }
    }
    let format_names = formats
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ");
    let meters = meters::MachineMeters::detect();
    let settings = BenchSettings {
        models: args.models.clone(),
        batches: args.batches.clone(),
        prompt_tokens: args.prompt_tokens,
        new_tokens: args.new_tokens,
        repeats: args.repeats,
        growth_tokens: args.growth_tokens,
        threads: rayon::current_num_threads(),
        compute: forward,
        formats: formats.clone(),
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
    let peak = &report.peak;
    let copy_peak = report.copy_bytes_per_s;
    let rows = &report.rows;
    let growth = report.growth;
    if args.json {
        let value = serde_json::json!({
            "threads": rayon::current_num_threads(),
            "forward": forward_name,
            "formats": formats,
            "read_bytes_per_s": peak.as_ref().map(|p| p.bytes_per_s),
            "copy_bytes_per_s": copy_peak,
            "copy_source": peak.as_ref().map(|p| p.source.clone()),
            "peers": peers.iter().map(|p| p.tool.as_str()).collect::<Vec<_>>(),
            "rows": rows,
            "rss_growth_bytes": growth.map(|g| g.growth_bytes()),
            "growth_model": growth.map(|_| GROWTH_MODEL),
            "warnings": report.warnings,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| Failure::work(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "llmeff bench: {format_names} on the CPU ({forward_name}), {} threads, {}-token prompt, {} new tokens (EOS ignored), median of {} after a warm-up",
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
    for peer in &peers {
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
        println!("{}", llama_cpp_pairs(&formats));
    }
    println!("tokens/s count every sequence of the batch; decode excludes the prompt pass");
    for line in &report.warnings {
        println!("{line}");
    }
    if let Some(bench::MemoryGrowth {
        early_bytes: early,
        late_bytes: late,
    }) = growth
    {
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
