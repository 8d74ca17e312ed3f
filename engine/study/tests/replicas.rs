//! Records of data-parallel runs through the sink into the store: `replicas.parquet` holds one
//! row per replica of each successful execution, requests name their replica, and a resumed
//! study never stores a replica twice.

use std::path::Path;

use engine::latency::RequestTiming;
use engine::plan::RunSpec;
use engine::record::{RecordSink, ReplicaRecord, RunMetrics, RunRecord, RunStatus};
use results::schema::{REPLICA_COLUMNS, REQUEST_COLUMNS};
use results::store::REPLICA_TABLE;
use results::{Cell, Row, Store};
use study::{Provenance, StoreSink, replica_row};

fn provenance() -> Provenance {
    Provenance {
        version: "0.0.0-test".into(),
        git_commit: None,
        git_dirty: None,
        build_profile: "debug".into(),
        rustc_version: None,
        cpu_model: None,
        cpu_flags: None,
        kernel: None,
        hostname: Some("node-1".into()),
        threads: 2,
    }
}

/// Two runs of one study: the first is given replicas below, the second runs on one device.
fn runs() -> Vec<RunSpec> {
    let source = "infer(load(\"tiny-stories\"), batch(prompts([\"Once\", \"Upon\", \"A\", \"Time\"])), #{ max_new_tokens: 2 });\n\
                  infer(load(\"tiny-stories\"), batch(prompts([\"Once\"])), #{ max_new_tokens: 3 });\n";
    let plan = engine::script::plan_script(Path::new("s.rhai"), source, "s").unwrap();
    let runs = plan.runs();
    assert_eq!(runs.len(), 2);
    runs
}

fn request(replica: usize, index: usize) -> RequestTiming {
    RequestTiming {
        replica,
        batch_index: index / 2,
        request_index: index,
        input_tokens: 3,
        output_tokens: 2,
        arrival_s: 0.0,
        queue_s: 0.0,
        ttft_s: 0.05,
        ttft_service_s: 0.05,
        tpot_s: Some(0.02),
        e2e_s: 0.07,
        inter_token_s: vec![0.02],
        output_ids: vec![1, 2],
    }
}

/// Replica `i` of an execution on `cpu:0` and a GPU; the GPU one has energy and memory.
fn replica(i: usize, cycle: usize) -> ReplicaRecord {
    let gpu = i == 1;
    ReplicaRecord {
        replica: i,
        device: if gpu {
            "cuda:0".into()
        } else {
            "cpu:0-3".into()
        },
        cores: (!gpu).then(|| "0-3".to_string()),
        num_requests: 2,
        num_batches: 1,
        input_tokens: 6,
        output_tokens: 4 + cycle,
        start_s: Some(0.001 * (i + 1) as f64),
        wall_s: 0.5,
        prefill_s: 0.1,
        decode_s: 0.3,
        gpu_energy_j: gpu.then_some(12.5),
        gpu_energy_source: if gpu { "nvml".into() } else { "none".into() },
        kv_cache_peak_bytes: 4096,
        weight_bytes: 1_000_000,
        gpu_memory_peak_bytes: gpu.then_some(2_000_000),
        gpu_util_mean_pct: gpu.then_some(87.5),
    }
}

fn record(spec: &RunSpec, cycle: usize, replicated: bool) -> RunRecord {
    let n = engine::prompts::materialise(&spec.prompts).len();
    let requests: Vec<RequestTiming> = (0..n)
        .map(|i| request(if replicated { i / 2 } else { 0 }, i))
        .collect();
    RunRecord {
        study: "s".into(),
        run_hash: spec.id.hex(),
        cycle,
        spec: spec.clone(),
        status: RunStatus::Ok,
        error: None,
        model: None,
        started_at_unix_s: 1_700_000_000.0 + (cycle as f64) + if replicated { 0.0 } else { 10.0 },
        metrics: Some(RunMetrics {
            num_requests: requests.len(),
            num_batches: 2,
            input_tokens: 3 * requests.len(),
            output_tokens: 2 * requests.len(),
            wall_s: 0.6,
            prefill_s: 0.2,
            decode_s: 0.6,
            ..RunMetrics::default()
        }),
        requests,
        replicas: if replicated {
            vec![replica(0, cycle), replica(1, cycle)]
        } else {
            Vec::new()
        },
    }
}

fn int(row: &Row, name: &str) -> i64 {
    match row.get(name) {
        Some(Cell::Int(i)) => *i,
        other => panic!("{name}: {other:?}"),
    }
}

fn read(path: &Path, columns: &'static [results::schema::Column]) -> Vec<Row> {
    results::parquet_io::read_rows(path, columns).unwrap()
}

#[test]
fn replicated_executions_get_a_row_per_replica_and_requests_name_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let provenance = provenance();
    let runs = runs();
    let records = [
        record(&runs[0], 0, true),
        record(&runs[0], 1, true),
        record(&runs[1], 0, false),
    ];
    let mut sink = StoreSink::new(store.clone(), None, &provenance).unwrap();
    for r in &records {
        sink.record(r).unwrap();
    }
    drop(sink);
    assert_eq!(store.compact().unwrap().len(), 3);

    let table = read(&store.dir().join(REPLICA_TABLE), REPLICA_COLUMNS);
    let expected: Vec<Row> = records[..2]
        .iter()
        .flat_map(|r| r.replicas.iter().map(|p| replica_row(r, p).unwrap()))
        .collect();
    assert_eq!(
        table, expected,
        "2 rows per replicated execution, none for one device"
    );
    let single = runs[1].id.hex();
    assert!(
        table
            .iter()
            .all(|r| r.get("run_hash") != Some(&Cell::Text(single.clone())))
    );
    let (cpu, gpu) = (&table[0], &table[1]);
    assert_eq!(cpu.get("device"), Some(&Cell::Text("cpu:0-3".into())));
    assert_eq!(cpu.get("cores"), Some(&Cell::Text("0-3".into())));
    assert_eq!(cpu.get("gpu_energy_j"), Some(&Cell::Null));
    assert_eq!(
        cpu.get("gpu_energy_source"),
        Some(&Cell::Text("none".into()))
    );
    assert_eq!(cpu.get("gpu_memory_peak_bytes"), Some(&Cell::Null));
    assert_eq!(cpu.get("start_s"), Some(&Cell::Float(0.001)));
    assert_eq!(gpu.get("cores"), Some(&Cell::Null));
    assert_eq!(gpu.get("gpu_energy_j"), Some(&Cell::Float(12.5)));
    assert_eq!(
        gpu.get("gpu_energy_source"),
        Some(&Cell::Text("nvml".into()))
    );
    assert_eq!(
        gpu.get("gpu_memory_peak_bytes"),
        Some(&Cell::Int(2_000_000))
    );
    assert_eq!(gpu.get("gpu_util_mean_pct"), Some(&Cell::Float(87.5)));
    for row in &table {
        // Machine-wide domains are the run's, never split per replica.
        assert_eq!(
            row.get("cpu_energy_source"),
            Some(&Cell::Text("run".into()))
        );
        assert_eq!(
            row.get("ram_energy_source"),
            Some(&Cell::Text("run".into()))
        );
        assert_eq!(
            row.get("output_tokens_per_s"),
            Some(&Cell::Float(int(row, "output_tokens") as f64 / 0.5))
        );
        let Some(Cell::Float(busy)) = row.get("busy_ratio") else {
            panic!("busy_ratio missing");
        };
        assert!((busy - 0.8).abs() < 1e-12, "{busy}");
        assert_eq!(row.get("study"), Some(&Cell::Text("s".into())));
    }
    assert_eq!(int(&table[2], "cycle_id"), 1);
    assert_eq!(int(&table[2], "output_tokens"), 5);

    let replicated = runs[0].id.hex();
    let requests = read(
        &store
            .dir()
            .join(format!("requests/{replicated}-c0.parquet")),
        REQUEST_COLUMNS,
    );
    let served: Vec<i64> = requests.iter().map(|r| int(r, "replica")).collect();
    assert_eq!(served, [0, 0, 1, 1]);
    let requests = read(
        &store.dir().join(format!("requests/{single}-c0.parquet")),
        REQUEST_COLUMNS,
    );
    assert!(requests.iter().all(|r| int(r, "replica") == 0));
}

#[test]
fn a_resumed_study_stores_each_replica_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let provenance = provenance();
    let runs = runs();
    let hash = runs[0].id.hex();
    {
        let mut sink = StoreSink::new(store.clone(), None, &provenance).unwrap();
        sink.record(&record(&runs[0], 0, true)).unwrap();
        sink.record(&record(&runs[0], 1, true)).unwrap();
    }
    // Killed after cycle 1's replica part, before its run part: cycle 1 is not done.
    std::fs::remove_file(store.dir().join(format!("parts/{hash}-c1.parquet"))).unwrap();
    let mut sink = StoreSink::new(store.clone(), None, &provenance).unwrap();
    let done = sink.completed();
    assert!(done.contains(&(hash.clone(), 0)) && !done.contains(&(hash.clone(), 1)));
    // The resumed study runs cycle 1 again, and stores it twice, as a retried write would.
    sink.record(&record(&runs[0], 1, true)).unwrap();
    sink.record(&record(&runs[0], 1, true)).unwrap();
    drop(sink);
    store.compact().unwrap();
    let table = read(&store.dir().join(REPLICA_TABLE), REPLICA_COLUMNS);
    let keys: Vec<(i64, i64)> = table
        .iter()
        .map(|r| (int(r, "cycle_id"), int(r, "replica")))
        .collect();
    assert_eq!(keys, [(0, 0), (0, 1), (1, 0), (1, 1)]);
    assert_eq!(store.replicas().unwrap(), table);
}
