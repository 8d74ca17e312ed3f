//! Reports of synthetic study folders: the files exist and are what they claim to be, the page
//! is self-contained, and unmeasured figures are said to be unmeasured.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use results::parquet_io::write_batch;
use results::schema::{ColumnType, RUN_COLUMNS};
use results::{Cell, Row, Store, write_report};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A run row with every required column filled, so the test survives new schema columns.
fn run_row(hash: &str, cycle: i64, model: &str, batch: i64, ok: bool) -> Row {
    let mut row = Row::new(RUN_COLUMNS);
    for c in RUN_COLUMNS.iter().filter(|c| !c.nullable) {
        let value = match c.ty {
            ColumnType::Text => Cell::from("x"),
            ColumnType::Int => Cell::Int(0),
            ColumnType::Float => Cell::Float(0.0),
        };
        row.set(c.name, value).unwrap();
    }
    let throughput = 100.0 * (batch as f64).sqrt() + if model == "m-a" { 0.0 } else { 40.0 };
    row.set("study", "synthetic")
        .unwrap()
        .set("run_hash", hash)
        .unwrap()
        .set("cycle_id", cycle)
        .unwrap()
        .set("model", model)
        .unwrap()
        .set("dtype", "f32")
        .unwrap()
        .set("quantization", "none")
        .unwrap()
        .set("batch_size", batch)
        .unwrap()
        .set(
            "started_at_unix_s",
            1000.0 + cycle as f64 + batch as f64 * 10.0,
        )
        .unwrap()
        .set("status", if ok { "ok" } else { "failed" })
        .unwrap();
    if ok {
        row.set("output_tokens_per_s", throughput + cycle as f64)
            .unwrap()
            .set("total_tokens_per_s", throughput * 2.0)
            .unwrap()
            .set("e2e_p50_s", 0.05 * batch as f64 + 0.01 * cycle as f64)
            .unwrap()
            .set("ttft_p50_s", 0.01)
            .unwrap()
            .set("tpot_p50_s", 0.002)
            .unwrap();
    } else {
        row.set("error", "backend: out of <memory> & \"more\"")
            .unwrap();
    }
    row
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.starts_with(PNG_MAGIC), "{} is no PNG", path.display());
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let pixels = &pixels[..info.buffer_size()];
    let white = pixels.iter().filter(|&&b| b == 255).count();
    // A chart is mostly white background with axes, text and lines on it.
    assert!(white > pixels.len() / 2, "{}: not a chart", path.display());
    assert!(
        white < pixels.len() * 99 / 100,
        "{}: blank image",
        path.display()
    );
}

fn assert_svg(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", path.display());
    assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
    assert!(svg.contains("<text"), "{}: no labels", path.display());
}

fn assert_self_contained(html: &str) {
    assert!(!html.contains("http://"), "html references http://");
    assert!(!html.contains("https://"), "html references https://");
    assert!(!html.contains(" src=\""), "html loads an external resource");
}

#[test]
fn a_study_without_energy_gets_latency_and_throughput_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("synthetic");
    let store = Store::open(&dir).unwrap();
    let mut n = 0;
    for (model, prefix) in [("m-a", "a"), ("m-b", "b")] {
        for batch in [1, 2, 4, 8, 16] {
            for cycle in 0..2 {
                let hash = format!("{prefix}{batch:02x}");
                store
                    .write_run(&run_row(&hash, cycle, model, batch, true), &[], &[])
                    .unwrap();
                n += 1;
            }
        }
    }
    store
        .write_run(&run_row("ff", 0, "m-c", 32, false), &[], &[])
        .unwrap();
    store.compact().unwrap();

    let report = write_report(&dir).unwrap();
    assert_eq!(report.runs, n + 1);
    assert_eq!(report.study, "synthetic");
    let out = dir.join("report");
    for stem in ["latency_throughput", "throughput_batch"] {
        assert_svg(&out.join(format!("{stem}.svg")));
        assert_png(&out.join(format!("{stem}.png")));
    }
    assert!(!out.join("energy_batch.svg").exists());
    assert!(!out.join("energy_batch.png").exists());
    assert!(!out.join("power_time.png").exists());
    assert!(!out.join("energy_throughput.svg").exists());
    // Batch size varies: lines over it, no bars per configuration.
    assert!(!out.join("throughput_config.svg").exists());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("energy vs throughput chart left out: energy not measured")),
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("TTFT distribution not drawn")),
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("energy not measured in this study"))
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("power not measured"))
    );
    assert_eq!(report.files.last(), Some(&out.join("report.html")));

    let config = &report.tables[0];
    assert_eq!(config.rows.len(), 11, "10 configurations + the failed one");
    let energy = config
        .header
        .iter()
        .position(|h| h.starts_with("energy"))
        .unwrap();
    assert!(
        config.rows[..10]
            .iter()
            .all(|r| r[energy] == "not measured")
    );
    assert_eq!(
        config.rows[10][energy], "-",
        "the failed configuration measured nothing"
    );
    let tput = config
        .header
        .iter()
        .position(|h| h == "output tokens/s")
        .unwrap();
    // Batch 1 of m-a: cycles 0 and 1 give 100 and 101.
    assert_eq!(config.rows[0][tput], "100.5");
    let failures = &report.tables[1];
    assert_eq!(failures.rows.len(), 1);
    assert!(failures.rows[0][2].contains("out of <memory>"));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("not measured"));
    assert!(html.contains("<table>"));
    assert!(html.contains("<svg class=\"plot\""));
    assert!(html.contains("Pareto front"));
    assert!(html.contains("out of &lt;memory&gt; &amp; &quot;more&quot;"));
    assert!(!html.contains("<memory>"));
}

fn strings(values: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn write_table(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    write_batch(path, schema, &batch).unwrap();
}

#[test]
fn energy_columns_and_power_samples_are_read_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("energy");
    std::fs::create_dir_all(dir.join("samples")).unwrap();
    // Only some columns, a newer ones among them, and an all-null column: read by name.
    write_table(
        &dir.join("runs.parquet"),
        vec![
            ("study", strings(&["energy"; 4])),
            ("run_hash", strings(&["aa", "bb", "cc", "aa"])),
            (
                "cycle_id",
                Arc::new(Int64Array::from(vec![0, 0, 0, 1])) as ArrayRef,
            ),
            ("status", strings(&["ok"; 4])),
            ("model", strings(&["m"; 4])),
            ("dtype", strings(&["f16", "f16", "f16", "f16"])),
            ("batch_size", Arc::new(Int64Array::from(vec![1, 2, 4, 1]))),
            (
                "output_tokens_per_s",
                Arc::new(Float64Array::from(vec![10.0, 18.0, 30.0, 12.0])),
            ),
            (
                "e2e_p50_s",
                Arc::new(Float64Array::from(vec![0.5, 0.6, 0.9, 0.5])),
            ),
            (
                "j_per_output_token",
                Arc::new(Float64Array::from(vec![
                    Some(0.5),
                    Some(0.3),
                    None,
                    Some(0.7),
                ])),
            ),
            (
                "energy_total_j",
                Arc::new(Float64Array::from(vec![50.0, 60.0, 70.0, 55.0])),
            ),
            (
                "energy_total_source",
                strings(&["rapl+estimate", "rapl+estimate", "rapl", "rapl"]),
            ),
            ("co2e_g", Arc::new(Float64Array::from(vec![None::<f64>; 4]))),
        ],
    );
    let t: Vec<f64> = (0..50).map(|i| f64::from(i) * 0.1).collect();
    let cpu: Vec<Option<f64>> = t.iter().map(|t| Some(20.0 + 5.0 * t.sin())).collect();
    write_table(
        &dir.join("samples").join("aa-c0.parquet"),
        vec![
            ("run_hash", strings(&["aa"; 50])),
            ("cycle_id", Arc::new(Int64Array::from(vec![0; 50]))),
            ("t_s", Arc::new(Float64Array::from(t.clone()))),
            ("power_cpu_w", Arc::new(Float64Array::from(cpu))),
            (
                "power_gpu_w",
                Arc::new(Float64Array::from(vec![None::<f64>; 50])),
            ),
            (
                "power_total_w",
                Arc::new(Float64Array::from(
                    t.iter().map(|t| 30.0 + 5.0 * t.sin()).collect::<Vec<_>>(),
                )),
            ),
        ],
    );
    // A corrupt samples file of another run is reported, not fatal.
    std::fs::write(dir.join("samples").join("bb-c0.parquet"), b"junk").unwrap();

    let report = write_report(&dir).unwrap();
    let out = dir.join("report");
    for stem in [
        "latency_throughput",
        "throughput_batch",
        "energy_batch",
        "energy_throughput",
        "power_time",
    ] {
        assert_svg(&out.join(format!("{stem}.svg")));
        assert_png(&out.join(format!("{stem}.png")));
    }
    // Energy, latency and power are measured; only quality (no quality_* columns) is not.
    let unmeasured: Vec<&String> = report
        .notes
        .iter()
        .filter(|n| n.contains("not measured"))
        .collect();
    assert!(
        unmeasured
            .iter()
            .all(|n| n.starts_with("quality per joule chart left out: quality not measured")),
        "{unmeasured:?}"
    );
    // The total's source says `rapl+estimate`: both energy charts say they include estimates.
    let titles: Vec<&str> = report.plots.iter().map(|p| p.title.as_str()).collect();
    assert!(
        titles.contains(&"Energy per output token by batch size (includes estimates)"),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Energy vs throughput (includes estimates)"),
        "{titles:?}"
    );
    let config = &report.tables[0];
    let col = |name: &str| config.header.iter().position(|h| h == name).unwrap();
    // Run aa: cycles with 0.5 and 0.7 J/token; cc measured none.
    assert_eq!(config.rows[0][col("energy (J/output token)")], "0.6");
    assert_eq!(
        config.rows[2][col("energy (J/output token)")],
        "not measured"
    );
    assert_eq!(config.rows[0][col("energy source")], "rapl, rapl+estimate");
    assert!(!config.header.iter().any(|h| h.starts_with("CO2e")));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("Power over time"));
    assert!(html.contains("Energy per output token"));

    // Energy gone from a later version of the table: the stale energy chart goes too.
    write_table(
        &dir.join("runs.parquet"),
        vec![
            ("run_hash", strings(&["aa"])),
            ("cycle_id", Arc::new(Int64Array::from(vec![0]))),
            ("batch_size", Arc::new(Int64Array::from(vec![1]))),
            (
                "output_tokens_per_s",
                Arc::new(Float64Array::from(vec![10.0])),
            ),
        ],
    );
    let report = write_report(&dir).unwrap();
    assert!(!out.join("energy_batch.svg").exists());
    assert!(!out.join("latency_throughput.png").exists());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("energy not measured"))
    );
}

#[test]
fn device_memory_shows_in_the_configuration_table_where_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    std::fs::create_dir_all(&dir).unwrap();
    let table = |memory: Option<Vec<Option<i64>>>| {
        let mut columns: Vec<(&str, ArrayRef)> = vec![
            ("run_hash", strings(&["aa", "bb"])),
            ("cycle_id", Arc::new(Int64Array::from(vec![0, 0]))),
            ("batch_size", Arc::new(Int64Array::from(vec![1, 8]))),
            ("output_tokens_per_s", floats(&[10.0, 40.0])),
        ];
        if let Some(m) = memory {
            columns.push(("device_memory_peak_bytes", Arc::new(Int64Array::from(m))));
        }
        write_table(&dir.join("runs.parquet"), columns);
        write_report(&dir).unwrap()
    };
    let header = "device memory peak (bytes)";
    let report = table(Some(vec![Some(1_048_576), None]));
    let config = &report.tables[0];
    let col = config.header.iter().position(|h| h == header).unwrap();
    assert_eq!(config.rows[0][col], "1048576");
    // Nowhere measured (the CPU): no column.
    let report = table(None);
    assert!(!report.tables[0].header.iter().any(|h| h == header));
}

/// Whether an SVG document has a text element reading `content` (plotters writes the
/// content on its own line).
fn has_text(svg: &str, content: &str) -> bool {
    svg.contains(&format!(">\n{content}\n</text>"))
}

fn floats(values: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

/// A study where batch size is constant and decoding varies, over three cycles, with request
/// files (one of a failed cycle), estimated energy and environment columns across two hosts.
fn flat_study(dir: &Path) {
    std::fs::create_dir_all(dir.join("requests")).unwrap();
    let hashes = ["g", "g", "g", "s", "s", "s"];
    write_table(
        &dir.join("runs.parquet"),
        vec![
            ("study", strings(&["flat"; 6])),
            ("run_hash", strings(&hashes)),
            (
                "cycle_id",
                Arc::new(Int64Array::from(vec![0, 1, 2, 0, 1, 2])),
            ),
            ("status", strings(&["ok", "ok", "ok", "ok", "ok", "failed"])),
            ("model", strings(&["m"; 6])),
            ("dtype", strings(&["f32"; 6])),
            ("batch_size", Arc::new(Int64Array::from(vec![4; 6]))),
            (
                "decoding",
                strings(&["greedy", "greedy", "greedy", "sample", "sample", "sample"]),
            ),
            (
                "output_tokens_per_s",
                floats(&[101.0, 105.0, 109.0, 80.0, 90.0, 0.0]),
            ),
            ("e2e_p50_s", floats(&[0.5, 0.6, 0.7, 0.9, 1.0, 0.0])),
            (
                "ttft_p50_s",
                floats(&[0.0021, 0.0022, 0.0023, 0.0031, 0.0032, 0.0]),
            ),
            (
                "j_per_output_token",
                floats(&[0.5, 0.6, 0.7, 0.8, 0.9, 0.0]),
            ),
            (
                "energy_total_j",
                floats(&[50.0, 60.0, 70.0, 80.0, 90.0, 0.0]),
            ),
            ("energy_cpu_source", strings(&["rapl"; 6])),
            ("energy_ram_source", strings(&["estimate"; 6])),
            ("energy_total_source", strings(&["rapl+estimate"; 6])),
            (
                "hostname",
                strings(&["node-a", "node-a", "node-a", "node-a", "node-b", "node-b"]),
            ),
            ("cpu_model", strings(&["AMD EPYC 9R14"; 6])),
            ("threads", Arc::new(Int64Array::from(vec![2; 6]))),
            ("git_commit", strings(&["0123456789abcdef0123"; 6])),
            (
                "git_dirty",
                Arc::new(arrow_array::BooleanArray::from(vec![true; 6])),
            ),
            ("energy_meters", strings(&["cpu: rapl; ram: estimate"; 6])),
        ],
    );
    // Requests: greedy cycles 0-2 and sample cycle 0, plus the failed sample cycle 2, whose
    // huge latencies must not count.
    let requests = [
        ("g", 0, [0.010, 0.020]),
        ("g", 1, [0.030, 0.040]),
        ("g", 2, [0.050, 0.060]),
        ("s", 0, [0.100, 0.300]),
        ("s", 2, [9.0, 9.0]),
    ];
    for (hash, cycle, ttft) in requests {
        write_table(
            &dir.join("requests")
                .join(format!("{hash}-c{cycle}.parquet")),
            vec![
                ("run_hash", strings(&[hash; 2])),
                ("cycle_id", Arc::new(Int64Array::from(vec![cycle; 2]))),
                ("ttft_s", floats(&ttft)),
                (
                    "tpot_s",
                    Arc::new(Float64Array::from(vec![Some(0.001), None])),
                ),
            ],
        );
    }
}

#[test]
fn a_study_of_one_batch_size_gets_bars_distributions_and_an_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flat");
    flat_study(&dir);
    let report = write_report(&dir).unwrap();
    let out = dir.join("report");
    for stem in [
        "latency_throughput",
        "throughput_config",
        "energy_config",
        "energy_throughput",
        "ttft_distribution",
        "tpot_distribution",
    ] {
        assert_svg(&out.join(format!("{stem}.svg")));
        assert_png(&out.join(format!("{stem}.png")));
    }
    assert!(!out.join("throughput_batch.svg").exists());
    assert!(!out.join("energy_batch.svg").exists());

    let plot = |stem: &str| {
        report
            .plots
            .iter()
            .find(|p| p.svg_path.ends_with(format!("{stem}.svg")))
            .unwrap()
    };
    let svg = |stem: &str| std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
    // Bars are labelled by what varies: the decoding.
    let bars = svg("throughput_config");
    assert!(has_text(&bars, "decoding=greedy"), "{bars}");
    assert!(has_text(&bars, "decoding=sample"));
    // The greedy bar's mean of 101, 105, 109.
    assert!(has_text(&bars, "105"));
    assert!(
        plot("throughput_config")
            .caption
            .contains("lowest to the highest")
    );
    // Energy charts name the estimated domain.
    let energy = plot("energy_config");
    assert_eq!(
        energy.title,
        "Energy per output token by configuration (includes estimates)"
    );
    assert!(
        energy.caption.contains("estimated energy (RAM)"),
        "{}",
        energy.caption
    );
    let scatter = svg("energy_throughput");
    assert!(has_text(&scatter, "decoding=sample"), "points are labelled");

    // TTFT from requests/, in ms: greedy 10..60 ms (median 35), sample 100 and 300 ms; the
    // failed cycle's 9 s is not among them.
    let ttft = plot("ttft_distribution");
    assert!(ttft.caption.contains("(8 requests)"), "{}", ttft.caption);
    let ttft_svg = svg("ttft_distribution");
    assert!(has_text(&ttft_svg, "p50 35 ms, n=6"), "{ttft_svg}");
    assert!(has_text(&ttft_svg, "p50 200 ms, n=2"));
    assert!(!ttft_svg.contains("9000"));
    // TPOT nulls (one-token requests) are skipped.
    assert!(has_text(&svg("tpot_distribution"), "p50 1 ms, n=3"));

    // The environment lists distinct values, counted when they differ.
    let env = |label: &str| {
        report
            .environment
            .iter()
            .find(|e| e.label == label)
            .map(|e| e.values.clone())
            .unwrap_or_default()
    };
    assert_eq!(env("host"), vec!["node-a (4 runs)", "node-b (2 runs)"]);
    assert_eq!(env("CPU"), vec!["AMD EPYC 9R14"]);
    assert_eq!(env("threads"), vec!["2"]);
    assert_eq!(env("commit"), vec!["0123456789ab (dirty)"]);
    assert_eq!(env("energy meters"), vec!["cpu: rapl; ram: estimate"]);
    assert!(env("compute").is_empty(), "absent columns are left out");

    // Numbers in plain decimals: TTFT p50 means of 2.2 and 3.15 ms.
    let config = &report.tables[0];
    let col = config
        .header
        .iter()
        .position(|h| h == "TTFT p50 (s)")
        .unwrap();
    assert_eq!(config.rows[0][col], "0.0022");
    assert!(
        config.rows.iter().flatten().all(|c| !c.contains("e-")),
        "{config:?}"
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("<h2>Environment</h2>"));
    assert!(html.contains("node-a (4 runs)<br>node-b (2 runs)"));
    assert!(html.contains("TTFT distribution by configuration"));

    // The tables and environment as printed: stable text, reviewed in the snapshot.
    let mut text = String::new();
    for e in &report.environment {
        text.push_str(&format!("{}: {}\n", e.label, e.values.join("; ")));
    }
    for t in &report.tables {
        text.push_str(&format!("\n{}\n{}\n", t.title, t.header.join(" | ")));
        for r in &t.rows {
            text.push_str(&r.join(" | "));
            text.push('\n');
        }
    }
    insta::assert_snapshot!("flat_study_tables", text);
}

#[test]
fn quality_per_joule_chart_and_columns_when_quality_was_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("quality");
    std::fs::create_dir_all(&dir).unwrap();
    let table = |kl: Vec<Option<f64>>| {
        vec![
            ("study", strings(&["quality"; 4])),
            ("run_hash", strings(&["aa", "bb", "cc", "dd"])),
            (
                "cycle_id",
                Arc::new(Int64Array::from(vec![0; 4])) as ArrayRef,
            ),
            ("status", strings(&["ok"; 4])),
            ("model", strings(&["m"; 4])),
            ("dtype", strings(&["f32", "bf16", "f32", "f32"])),
            (
                "quantization",
                strings(&["none", "none", "int8/b32", "int4/b32"]),
            ),
            ("batch_size", Arc::new(Int64Array::from(vec![4; 4]))),
            (
                "output_tokens_per_s",
                Arc::new(Float64Array::from(vec![10.0, 14.0, 18.0, 25.0])),
            ),
            (
                "j_per_output_token",
                Arc::new(Float64Array::from(vec![0.004, 0.003, 0.0035, 0.002])),
            ),
            ("quality_kl_mean_nats", Arc::new(Float64Array::from(kl))),
            (
                "quality_top1_agreement_ratio",
                Arc::new(Float64Array::from(vec![1.0, 1.0, 1.0, 0.95])),
            ),
        ]
    };
    write_table(
        &dir.join("runs.parquet"),
        table(vec![Some(0.0), Some(0.00004), Some(0.00024), Some(0.012)]),
    );
    let report = write_report(&dir).unwrap();
    let out = dir.join("report");
    assert_svg(&out.join("quality_energy.svg"));
    assert_png(&out.join("quality_energy.png"));
    let svg = std::fs::read_to_string(out.join("quality_energy.svg")).unwrap();
    // Points are labelled by their weight format; int8 (more KL and more energy than bf16) is
    // off the front, which the legend names.
    for text in ["bf16", "f32 int8/b32", "f32 int4/b32", "Pareto front"] {
        assert!(has_text(&svg, text), "no `{text}` in the chart");
    }
    let plot = report
        .plots
        .iter()
        .find(|p| p.svg_path.ends_with("quality_energy.svg"))
        .unwrap();
    assert!(
        plot.title.starts_with("Quality per joule"),
        "{}",
        plot.title
    );
    let config = &report.tables[0];
    let col = |name: &str| config.header.iter().position(|h| h == name).unwrap();
    assert_eq!(config.rows[1][col("KL vs f32 (nats)")], "0.00004");
    assert_eq!(config.rows[3][col("top-1 agreement vs f32")], "0.95");
    assert!(!config.header.iter().any(|h| h == "prompt perplexity"));

    // Quality off in a later version of the study: the chart goes, and the notes say why.
    write_table(&dir.join("runs.parquet"), table(vec![None; 4]));
    let report = write_report(&dir).unwrap();
    assert!(!out.join("quality_energy.svg").exists());
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("quality per joule chart left out: quality not measured")),
        "{:?}",
        report.notes
    );
}

/// Serving charts, by file stem.
const SERVING_CHARTS: &[&str] = &[
    "serving_ttft_p50",
    "serving_ttft_p99",
    "serving_tpot_p50",
    "serving_tpot_p99",
    "serving_requests",
    "serving_goodput",
    "serving_throughput",
    "serving_energy",
];

/// A request-rate sweep under Poisson arrivals: continuous batching (max_batch 8) beside
/// fixed batches of 8, at each of `rates` requests/s, with an SLO. Continuous batching keeps
/// up (97% of the offered rate); fixed batches manage at most 150 requests/s, so fall behind
/// from 200/s. Continuous batching at 100/s has two cycles (goodput 93 and 95). Without
/// `energy`, the energy columns are null.
fn serving_study(dir: &Path, rates: &[f64], energy: bool) {
    std::fs::create_dir_all(dir).unwrap();
    struct Run {
        served: bool,
        rate: f64,
        cycle: i64,
        goodput: f64,
    }
    let mut runs = Vec::new();
    for served in [true, false] {
        for &rate in rates {
            let goodput = if served {
                rate * 0.9
            } else {
                rate.min(100.0) * 0.8
            };
            runs.push(Run {
                served,
                rate,
                cycle: 0,
                goodput: if served && rate == 100.0 {
                    93.0
                } else {
                    goodput
                },
            });
            if served && rate == 100.0 {
                runs.push(Run {
                    served,
                    rate,
                    cycle: 1,
                    goodput: 95.0,
                });
            }
        }
    }
    let achieved = |r: &Run| {
        if r.served {
            r.rate * 0.97
        } else {
            (r.rate * 0.98).min(150.0)
        }
    };
    let f = |g: &dyn Fn(&Run) -> f64| floats(&runs.iter().map(g).collect::<Vec<_>>());
    let optional = |g: &dyn Fn(&Run) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(
            runs.iter()
                .map(|r| energy.then(|| g(r)))
                .collect::<Vec<_>>(),
        ))
    };
    let served_int = |v: i64| -> ArrayRef {
        Arc::new(Int64Array::from(
            runs.iter()
                .map(|r| r.served.then_some(v))
                .collect::<Vec<_>>(),
        ))
    };
    let n = runs.len();
    let hashes: Vec<String> = runs
        .iter()
        .map(|r| format!("{}{}", if r.served { "s" } else { "f" }, r.rate))
        .collect();
    write_table(
        &dir.join("runs.parquet"),
        vec![
            ("study", strings(&vec!["serving"; n])),
            (
                "run_hash",
                strings(&hashes.iter().map(String::as_str).collect::<Vec<_>>()),
            ),
            (
                "cycle_id",
                Arc::new(Int64Array::from(
                    runs.iter().map(|r| r.cycle).collect::<Vec<_>>(),
                )),
            ),
            ("status", strings(&vec!["ok"; n])),
            ("model", strings(&vec!["tiny-stories"; n])),
            ("dtype", strings(&vec!["f32"; n])),
            ("quantization", strings(&vec!["none"; n])),
            (
                "batch_size",
                Arc::new(Int64Array::from(
                    runs.iter()
                        .map(|r| if r.served { 1 } else { 8 })
                        .collect::<Vec<_>>(),
                )),
            ),
            ("serve_max_batch", served_int(8)),
            ("serve_max_batch_tokens", served_int(512)),
            (
                "serve_prefill",
                Arc::new(StringArray::from(
                    runs.iter()
                        .map(|r| r.served.then_some("whole"))
                        .collect::<Vec<_>>(),
                )),
            ),
            ("arrival", strings(&vec!["poisson"; n])),
            ("arrival_rate_per_s", f(&|r| r.rate)),
            ("arrival_seed", Arc::new(Int64Array::from(vec![7; n]))),
            ("offered_rate_per_s", f(&|r| r.rate)),
            ("slo_ttft_s", floats(&vec![0.05; n])),
            ("slo_tpot_s", floats(&vec![0.004; n])),
            ("requests_per_s", f(&achieved)),
            ("goodput_requests_per_s", f(&|r| r.goodput)),
            ("output_tokens_per_s", f(&|r| achieved(r) * 30.0)),
            ("e2e_p50_s", f(&|r| 0.1 + r.rate / 1000.0)),
            ("ttft_p50_s", f(&|r| r.rate / 10000.0)),
            (
                "ttft_p99_s",
                f(&|r| r.rate / 2000.0 * if r.served { 1.0 } else { 4.0 }),
            ),
            ("tpot_p50_s", floats(&vec![0.002; n])),
            ("tpot_p99_s", f(&|r| 0.003 + r.rate / 1e5)),
            ("j_per_output_token", optional(&|r| 2.0 / r.rate.sqrt())),
            ("energy_per_request_j", optional(&|r| 60.0 / r.rate.sqrt())),
            ("energy_idle_ratio", optional(&|r| 5.0 / r.rate)),
            ("energy_total_source", strings(&vec!["rapl"; n])),
        ],
    );
}

/// The tables whose title starts with `prefix`, as printed: stable text for snapshots.
fn tables_text(report: &results::Report, prefix: &str) -> String {
    let mut text = String::new();
    for t in report.tables.iter().filter(|t| t.title.starts_with(prefix)) {
        text.push_str(&format!("\n{}\n{}\n", t.title, t.header.join(" | ")));
        for r in &t.rows {
            text.push_str(&r.join(" | "));
            text.push('\n');
        }
    }
    text
}

#[test]
fn a_request_rate_sweep_gets_serving_curves_and_saturation_points() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("serving");
    serving_study(&dir, &[50.0, 100.0, 200.0, 400.0], true);
    let report = write_report(&dir).unwrap();
    let out = dir.join("report");
    for stem in SERVING_CHARTS {
        assert_svg(&out.join(format!("{stem}.svg")));
        assert_png(&out.join(format!("{stem}.png")));
    }
    assert!(
        !report.notes.iter().any(|n| n.starts_with("serving")),
        "{:?}",
        report.notes
    );
    let table = |prefix: &str| {
        report
            .tables
            .iter()
            .find(|t| t.title.starts_with(prefix))
            .unwrap()
    };
    let saturation = table("Serving under load: saturation");
    assert!(
        saturation.title.contains(
            "the lowest offered rate at which the achieved request rate (requests_per_s) falls below 90% of the offered rate"
        ),
        "{}",
        saturation.title
    );
    let col = |t: &results::report::TextTable, name: &str| {
        t.header.iter().position(|h| h == name).unwrap()
    };
    let sat = col(saturation, "saturation (offered requests/s)");
    assert_eq!(saturation.rows[0][sat], "not reached up to 400/s");
    // 150 of 200/s is 75%.
    assert_eq!(saturation.rows[1][sat], "200");
    let max = col(saturation, "max goodput (requests/s)");
    assert_eq!(saturation.rows[0][max..], ["360", "400"]);
    assert_eq!(saturation.rows[1][max..], ["80", "100"]);

    let curves = table("Serving under load: figures");
    assert_eq!(curves.rows.len(), 8);
    // Continuous batching at 100/s: two cycles, goodput 93 and 95.
    assert_eq!(curves.rows[1][col(curves, "cycles")], "2");
    assert_eq!(curves.rows[1][col(curves, "goodput (requests/s)")], "94");
    assert_eq!(
        curves.rows[1][col(curves, "energy (J/output token)")],
        "0.2"
    );

    // The ring sits on the fixed batches' point at 200/s in every chart; the goodput and
    // request charts carry their reference lines.
    let svg = |stem: &str| std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
    for stem in SERVING_CHARTS {
        assert!(
            has_text(
                &svg(stem),
                "saturation point (achieved below 90% of offered)"
            ),
            "{stem}"
        );
    }
    assert!(has_text(
        &svg("serving_goodput"),
        "ideal: goodput = offered"
    ));
    let requests = svg("serving_requests");
    assert!(has_text(&requests, "ideal: achieved = offered"));
    assert!(has_text(&requests, "saturation threshold: 90% of offered"));
    assert!(has_text(
        &requests,
        "continuous max_batch=8 max_batch_tokens=512 prefill=whole"
    ));
    assert!(has_text(&requests, "fixed batch_size=8"));
    let goodput = report
        .plots
        .iter()
        .find(|p| p.svg_path.ends_with("serving_goodput.svg"))
        .unwrap();
    assert!(
        goodput.caption.contains("TTFT ≤ 0.05 s and TPOT ≤ 0.004 s"),
        "{}",
        goodput.caption
    );
    // The configuration table tells the two schedulers apart.
    let config = &report.tables[0];
    assert!(config.header.iter().any(|h| h == "serve max batch"));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("Serving under load: saturation"));
    assert!(html.contains("Goodput vs offered rate"));
    insta::assert_snapshot!("serving_tables", tables_text(&report, "Serving under load"));

    // Energy gone in a later version of the study: its chart goes, a note says why, and the
    // table says not measured.
    serving_study(&dir, &[50.0, 100.0, 200.0, 400.0], false);
    let report = write_report(&dir).unwrap();
    assert!(!out.join("serving_energy.svg").exists());
    assert!(!out.join("serving_energy.png").exists());
    assert!(out.join("serving_goodput.svg").exists());
    assert!(
        report.notes.iter().any(|n| n.starts_with(
            "serving: energy per output token against offered rate not drawn: energy not measured"
        )),
        "{:?}",
        report.notes
    );
    let curves = report
        .tables
        .iter()
        .find(|t| t.title.starts_with("Serving under load: figures"))
        .unwrap();
    assert!(
        curves
            .rows
            .iter()
            .all(|r| r[col(curves, "energy (J/output token)")] == "not measured")
    );
    assert!(!curves.header.iter().any(|h| h == "energy (J/request)"));
}

#[test]
fn a_single_offered_rate_has_no_serving_section() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("serving");
    serving_study(&dir, &[50.0, 100.0], true);
    write_report(&dir).unwrap();
    let out = dir.join("report");
    assert!(out.join("serving_requests.svg").exists());
    // The same study at one rate: the section and its stale charts are gone, without a note.
    serving_study(&dir, &[100.0], true);
    let report = write_report(&dir).unwrap();
    for stem in SERVING_CHARTS {
        assert!(!out.join(format!("{stem}.svg")).exists(), "{stem}");
        assert!(!out.join(format!("{stem}.png")).exists(), "{stem}");
    }
    assert!(
        !report
            .tables
            .iter()
            .any(|t| t.title.starts_with("Serving under load"))
    );
    assert!(!report.notes.iter().any(|n| n.starts_with("serving")));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(!html.contains("Serving under load"));
}
