//! End-to-end tests of `llmeff report`: the real binary runs the bundled single study, reports
//! it, and a headless Chromium renders the page (required where LLMEFF_REQUIRE_CHROMIUM=1).

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn llmeff() -> Command {
    Command::cargo_bin("llmeff").expect("the llmeff binary is built for integration tests")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `experiments/single.rhai` into `out` and reports it; returns the study folder.
fn run_and_report(out: &Path) -> (PathBuf, String) {
    llmeff()
        .current_dir(repo())
        .args(["run", "experiments/single.rhai", "--plain", "--out"])
        .arg(out)
        .assert()
        .success();
    let study = out.join("single");
    let output = llmeff().arg("report").arg(&study).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "report failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (study, stdout)
}

/// A study that varies batch size and decoding over two cycles: several configurations, a
/// configuration table wider than one line of a narrow page; and the model quantized to int8,
/// whose quality against f32 puts it off KL 0 in the quality-per-joule chart.
const VARIED: &str = r#"
study(#{ name: "varied", cycles: 2 });
let model = load("tiny-stories", #{ dtype: "f32", device: "cpu" });
let int8 = quantize(model, #{ method: "int8", block_size: 32 });
let stories = prompts("builtin:stories", #{ count: 4, max_input_tokens: 32 });
for size in [2, 4] {
  for dec in [#{ method: "greedy" }, #{ method: "sample", temperature: 0.8, top_k: 40 }] {
    let run = infer(model, batch(stories, #{ size: size }), #{ max_new_tokens: 8, decoding: dec });
    measure(run, #{ meters: ["latency", "energy"] });
  }
}
measure(infer(int8, batch(stories, #{ size: 4 }), #{ max_new_tokens: 8 }), #{ meters: ["latency", "energy"] });
"#;

/// Runs [`VARIED`] into `out` and reports it; returns the study folder.
fn run_and_report_varied(out: &Path) -> PathBuf {
    let script = out.join("varied.rhai");
    std::fs::write(&script, VARIED).unwrap();
    llmeff()
        .current_dir(repo())
        .args(["run", "--plain", "--out"])
        .arg(out)
        .arg(&script)
        .assert()
        .success();
    let study = out.join("varied");
    llmeff().arg("report").arg(&study).assert().success();
    study
}

#[test]
fn report_of_the_single_study_writes_tables_charts_and_a_page() {
    let tmp = tempfile::tempdir().unwrap();
    let (study, stdout) = run_and_report(tmp.path());
    assert!(stdout.contains("Configurations"), "{stdout}");
    assert!(stdout.contains("tiny-stories"), "{stdout}");
    assert!(stdout.contains("written:"), "{stdout}");
    let report = study.join("report");
    // One batch size: bars per configuration, not a line over batch size.
    assert!(!report.join("throughput_batch.svg").exists());
    for stem in ["latency_throughput", "throughput_config"] {
        let svg = std::fs::read_to_string(report.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg");
        let png = std::fs::read(report.join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{stem}.png");
        assert!(stdout.contains(&format!("{stem}.png")), "{stdout}");
    }
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("Study single"));
    // Whether energy is measured depends on the machine's meters; either way the page says so
    // consistently with the files written.
    let energy_chart = report.join("energy_config.png").exists();
    assert_eq!(report.join("energy_throughput.png").exists(), energy_chart);
    assert_eq!(
        html.contains("energy not measured"),
        !energy_chart,
        "energy chart {energy_chart}, page disagrees"
    );
    assert_eq!(
        stdout.contains("energy not measured"),
        !energy_chart,
        "{stdout}"
    );
    // An estimated domain is named as such beside its power chart, never shown as a reading.
    let runs =
        results::parquet_io::read_rows(&study.join("runs.parquet"), results::schema::RUN_COLUMNS)
            .unwrap();
    let estimated = ["cpu", "gpu", "ram"].iter().any(|d| {
        runs[0].get(&format!("energy_{d}_source")) == Some(&results::Cell::Text("estimate".into()))
    });
    if report.join("power_time.svg").exists() {
        assert_eq!(html.contains("includes estimates"), estimated);
    }
}

#[test]
fn report_of_a_missing_or_unfinished_folder_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [tmp.path().join("no-such-study"), tmp.path().to_path_buf()] {
        let out = llmeff().arg("report").arg(&dir).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("llmeff run"), "{stderr}");
        assert!(stderr.contains(&dir.display().to_string()), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Headless Chromium with everything that could reach the network or a profile turned off.
fn browser(binary: &Path, profile: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,2000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .timeout(Duration::from_secs(120));
    cmd
}

#[test]
fn the_report_page_renders_in_a_browser() {
    let Some(binary) = chromium() else {
        if std::env::var("LLMEFF_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!(
                "LLMEFF_REQUIRE_CHROMIUM=1 but no chromium at /usr/bin/chromium: apt-get install chromium"
            );
        }
        eprintln!("skipped: no chromium (set LLMEFF_REQUIRE_CHROMIUM=1 to require it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let study = run_and_report_varied(tmp.path());
    let page = study.join("report").join("report.html");
    let url = format!("file://{}", page.display());

    let shot = tmp.path().join("shot.png");
    let out = browser(&binary, &tmp.path().join("profile-shot"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&shot).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1200, 2000));
    let pixels = &pixels[..info.buffer_size()];
    let channels = info.color_type.samples();
    let inked = pixels
        .chunks(channels)
        .filter(|px| px.iter().take(3).any(|&c| c < 200))
        .count();
    let total = pixels.len() / channels;
    // Text, table rules and chart lines: a blank or error page inks almost nothing.
    assert!(
        inked > total / 100,
        "screenshot looks blank: {inked} of {total} pixels inked"
    );

    let out = browser(&binary, &tmp.path().join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success());
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<svg class=\"plot\""), "no chart in the DOM");
    assert!(dom.contains("Latency vs throughput"));
    assert!(dom.contains("Throughput by batch size"));
    assert!(dom.contains("TTFT distribution by configuration"));
    // Energy is always there (a labelled estimate where no meter is), and int8 has a KL.
    assert!(
        dom.contains("Quality per joule: energy per token vs KL from f32"),
        "no quality-per-joule chart in the DOM"
    );
    // Whether a front of two or more points exists depends on the timings of this machine
    // (int8 beating f32 on energy per token, or two configurations trading throughput for
    // latency); results/tests/report.rs checks the front on fixed data.
    assert!(
        dom.contains("KL vs f32 (nats)"),
        "no KL column in the table"
    );
    assert!(dom.contains("<h2>Environment</h2>"));
    assert!(dom.contains("<table>"), "no table in the DOM");
    assert!(dom.contains("tiny-stories"));

    // The page fits a 1200 px window: a copy of it measures its own tables once the bundled
    // font is in, and writes the widest right edge and the page's scroll width into the DOM.
    let html = std::fs::read_to_string(&page).unwrap();
    let probe = r#"<script>document.fonts.ready.then(() => {
  let right = 0;
  for (const t of document.querySelectorAll("table")) {
    right = Math.max(right, Math.ceil(t.getBoundingClientRect().right));
  }
  document.body.setAttribute("data-fit", right + " " + document.documentElement.scrollWidth);
});</script>"#;
    let measured = page.with_file_name("measure.html");
    std::fs::write(
        &measured,
        html.replace("</body>", &format!("{probe}</body>")),
    )
    .unwrap();
    let out = browser(&binary, &tmp.path().join("profile-measure"))
        .args([
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", measured.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dom = String::from_utf8_lossy(&out.stdout);
    let fit = dom
        .split("data-fit=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("the page did not measure itself: {dom:.2000}"));
    let widths: Vec<u32> = fit.split(' ').map(|w| w.parse().unwrap()).collect();
    assert!(widths[0] <= 1200, "a table reaches x = {} px", widths[0]);
    assert_eq!(
        widths[1], 1200,
        "the page scrolls sideways: {} px",
        widths[1]
    );
    // Numbers are plain decimals, not `1.234e-3`.
    assert!(
        !dom.split("<td class=\"num\">").skip(1).any(|cell| {
            let cell = &cell[..cell.find('<').unwrap_or(0)];
            cell.contains("e-") || cell.contains("e+")
        }),
        "a table cell in exponent notation"
    );
}
