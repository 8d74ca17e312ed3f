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
                    .write_run(&run_row(&hash, cycle, model, batch, true), &[])
                    .unwrap();
                n += 1;
            }
        }
    }
    store
        .write_run(&run_row("ff", 0, "m-c", 32, false), &[])
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
        "power_time",
    ] {
        assert_svg(&out.join(format!("{stem}.svg")));
        assert_png(&out.join(format!("{stem}.png")));
    }
    assert!(!report.notes.iter().any(|n| n.contains("not measured")));
    let config = &report.tables[0];
    let col = |name: &str| config.header.iter().position(|h| h == name).unwrap();
    // Run aa: cycles with 0.5 and 0.7 J/token; cc measured none.
    assert_eq!(config.rows[0][col("energy (J/output token)")], "0.600");
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
