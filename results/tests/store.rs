//! Store tests: round trips, atomic parts, the resume index and the documented schema.

use std::collections::HashSet;

use results::schema::{REPLICA_COLUMNS, REQUEST_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS, markdown};
use results::store::{REPLICA_TABLE, to_csv};
use results::{Cell, Row, Store, StoreError};

fn run_row(hash: &str, cycle: i64, status: &str, started: f64) -> Row {
    let mut row = Row::new(RUN_COLUMNS);
    for c in RUN_COLUMNS.iter().filter(|c| !c.nullable) {
        let value: Cell = match c.ty {
            results::schema::ColumnType::Text => Cell::Text(format!("{}-value", c.name)),
            results::schema::ColumnType::Int => Cell::Int(1),
            results::schema::ColumnType::Float => Cell::Float(1.5),
        };
        row.set(c.name, value).unwrap();
    }
    row.set("run_hash", hash).unwrap();
    row.set("cycle_id", cycle).unwrap();
    row.set("status", status).unwrap();
    row.set("started_at_unix_s", started).unwrap();
    row.set("output_tokens", 42_i64).unwrap();
    row.set("wall_s", 0.25).unwrap();
    row
}

#[test]
fn parts_round_trip_and_compact_in_start_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(&run_row("bb", 0, "ok", 2.0), &[], &[])
        .unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 1.0), &[], &[])
        .unwrap();
    let rows = store.compact().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get("run_hash"), Some(&Cell::Text("aa".into())));
    assert_eq!(rows[1].get("output_tokens"), Some(&Cell::Int(42)));
    assert_eq!(rows[1].get("error"), Some(&Cell::Null));
    let back =
        results::parquet_io::read_rows(&store.dir().join("runs.parquet"), RUN_COLUMNS).unwrap();
    assert_eq!(back, rows);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(store.dir().join("parts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    let csv = std::fs::read_to_string(store.dir().join("runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.dir().join("runs.json")).unwrap()).unwrap();
    assert_eq!(json[0]["output_tokens"], 42);
}

#[test]
fn failed_parts_do_not_count_as_done_and_a_success_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .write_run(&run_row("cc", 1, "failed", 1.0), &[], &[])
        .unwrap();
    assert!(store.completed().unwrap().is_empty());
    assert_eq!(store.runs().unwrap().len(), 1);
    store
        .write_run(&run_row("cc", 1, "ok", 2.0), &[], &[])
        .unwrap();
    let done = store.completed().unwrap();
    assert!(done.contains(&("cc".to_string(), 1)));
    let rows = store.runs().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), Some(&Cell::Text("ok".into())));
}

#[test]
fn rows_reject_unknown_columns_wrong_types_and_missing_required_cells() {
    let mut row = Row::new(RUN_COLUMNS);
    assert!(row.set("no_such_column", 1_i64).is_err());
    assert!(row.set("wall_s", "fast").is_err());
    assert!(row.validate().is_err());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.write_run(&row, &[], &[]).is_err());
}

#[test]
fn a_corrupt_part_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    std::fs::write(
        store.dir().join("parts").join("dd-c0.parquet"),
        b"not parquet",
    )
    .unwrap();
    let err = store.runs().unwrap_err().to_string();
    assert!(err.contains("dd-c0.parquet"), "{err}");
}

#[test]
fn csv_quotes_commas_and_quotes() {
    let mut row = run_row("ee", 0, "failed", 1.0);
    row.set("error", "bad, \"very\" bad").unwrap();
    let csv = to_csv(RUN_COLUMNS, &[row]);
    assert!(csv.contains("\"bad, \"\"very\"\" bad\""), "{csv}");
}

#[test]
fn schema_is_documented() {
    insta::assert_snapshot!("run_columns", markdown(RUN_COLUMNS));
    insta::assert_snapshot!("request_columns", markdown(REQUEST_COLUMNS));
    insta::assert_snapshot!("sample_columns", markdown(SAMPLE_COLUMNS));
    insta::assert_snapshot!("replica_columns", markdown(REPLICA_COLUMNS));
}

#[test]
fn samples_round_trip_with_nulls_kept_null() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rows: Vec<Row> = (0..3)
        .map(|i| {
            let mut row = Row::new(SAMPLE_COLUMNS);
            row.set("run_hash", "abcd")
                .unwrap()
                .set("cycle_id", 0_i64)
                .unwrap()
                .set("t_s", 0.1 * i as f64)
                .unwrap()
                .set("rss_bytes", Some(1000_u64 + i))
                .unwrap()
                // No GPU, no power meter: these stay null, never 0.
                .set("gpu_util_pct", None::<f64>)
                .unwrap();
            row
        })
        .collect();
    store.write_samples("abcd", 0, &rows).unwrap();
    let path = dir.path().join("samples/abcd-c0.parquet");
    let back = results::parquet_io::read_rows(&path, SAMPLE_COLUMNS).unwrap();
    assert_eq!(back, rows);
    assert_eq!(back[0].get("power_cpu_w"), Some(&results::row::Cell::Null));
    // Nothing to write, no file.
    store.write_samples("ef01", 0, &[]).unwrap();
    assert!(!dir.path().join("samples/ef01-c0.parquet").exists());
}

#[test]
fn a_success_supersedes_a_failed_part_left_by_a_killed_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(&run_row("aa", 0, "failed", 1.0), &[], &[])
        .unwrap();
    // The success part written, then the writer killed before it deleted the failed part.
    results::parquet_io::write_rows(
        &store.dir().join("parts/aa-c0.parquet"),
        RUN_COLUMNS,
        &[run_row("aa", 0, "ok", 2.0)],
    )
    .unwrap();
    assert!(store.dir().join("parts/aa-c0.failed.parquet").exists());
    let rows = store.compact().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get("status"), Some(&Cell::Text("ok".into())));
    assert!(!store.dir().join("parts/aa-c0.failed.parquet").exists());
}

#[test]
fn compaction_refuses_a_part_with_more_than_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 1.0), &[], &[])
        .unwrap();
    results::parquet_io::write_rows(
        &store.dir().join("parts/bb-c0.parquet"),
        RUN_COLUMNS,
        &[run_row("bb", 0, "ok", 2.0), run_row("bb", 0, "ok", 3.0)],
    )
    .unwrap();
    let err = store.compact().unwrap_err().to_string();
    assert!(
        err.contains("read 2 parts") && err.contains("built 3 rows"),
        "{err}"
    );
    assert!(!store.dir().join("runs.parquet").exists());
}

#[test]
fn compaction_waits_while_another_process_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 1.0), &[], &[])
        .unwrap();
    let held =
        results::lock::CompactionLock::acquire(store.dir(), std::time::Duration::ZERO).unwrap();
    // A second holder in the same process is another open file, which flock excludes too.
    let waiting = std::thread::spawn({
        let store = store.clone();
        move || store.compact().map(|rows| rows.len())
    });
    // The compaction cannot have written while the lock is held.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!store.dir().join("runs.parquet").exists());
    drop(held);
    assert_eq!(waiting.join().unwrap().unwrap(), 1);
    assert!(store.dir().join("runs.parquet").exists());
}

#[test]
fn stale_temporaries_are_removed_and_unreadable_parts_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 1.0), &[], &[])
        .unwrap();
    let tmp = store.dir().join("parts/.bb-c0.parquet.123-456-0.tmp");
    std::fs::write(&tmp, b"half a part").unwrap();
    std::fs::write(store.dir().join(".runs.csv.1-2-3.tmp"), b"x").unwrap();
    std::fs::write(store.dir().join("parts/cc-c0.parquet"), b"PAR1 truncated").unwrap();
    assert_eq!(
        results::store::remove_stale_temporaries(store.dir()).unwrap(),
        2
    );
    assert!(!tmp.exists());
    assert!(store.compact().is_err());
    let moved = store.quarantine_corrupt_parts().unwrap();
    assert_eq!(moved, vec![store.dir().join("parts/corrupt/cc-c0.parquet")]);
    assert!(moved[0].exists());
    assert_eq!(store.compact().unwrap().len(), 1);
    assert!(!store.completed().unwrap().contains(&("cc".to_string(), 0)));
}

fn replica_row(hash: &str, cycle: i64, replica: i64) -> Row {
    let mut row = Row::new(REPLICA_COLUMNS);
    row.set("study", "s")
        .unwrap()
        .set("run_hash", hash)
        .unwrap()
        .set("cycle_id", cycle)
        .unwrap()
        .set("replica", replica)
        .unwrap()
        .set("device", format!("cpu:{replica}"))
        .unwrap()
        .set("num_requests", 2_i64)
        .unwrap()
        .set("num_batches", 1_i64)
        .unwrap()
        .set("input_tokens", 10_i64)
        .unwrap()
        .set("output_tokens", 8_i64 + replica)
        .unwrap()
        .set("start_s", 0.01 * replica as f64)
        .unwrap()
        .set("wall_s", 0.5)
        .unwrap()
        .set("prefill_s", 0.1)
        .unwrap()
        .set("decode_s", 0.3)
        .unwrap()
        .set("gpu_energy_source", "none")
        .unwrap()
        .set("cpu_energy_source", "run")
        .unwrap()
        .set("ram_energy_source", "run")
        .unwrap()
        .set("kv_cache_peak_bytes", 4096_i64)
        .unwrap()
        .set("weight_bytes", 1_000_000_i64)
        .unwrap();
    row
}

fn replica_keys(rows: &[Row]) -> Vec<(String, i64, i64)> {
    rows.iter()
        .map(
            |r| match (r.get("run_hash"), r.get("cycle_id"), r.get("replica")) {
                (Some(Cell::Text(h)), Some(Cell::Int(c)), Some(Cell::Int(i))) => {
                    (h.clone(), *c, *i)
                }
                other => panic!("replica row without its key: {other:?}"),
            },
        )
        .collect()
}

fn read_replica_table(store: &Store) -> Vec<Row> {
    results::parquet_io::read_rows(&store.dir().join(REPLICA_TABLE), REPLICA_COLUMNS).unwrap()
}

#[test]
fn replica_rows_compact_in_run_order_and_a_study_without_them_has_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 1.0), &[], &[])
        .unwrap();
    store.compact().unwrap();
    assert!(!store.dir().join(REPLICA_TABLE).exists());
    assert!(!store.dir().join("replicas").exists());
    // Cycle 1 started first; replicas handed over out of order.
    for (cycle, started) in [(0, 3.0), (1, 2.0)] {
        let replicas = [replica_row("bb", cycle, 1), replica_row("bb", cycle, 0)];
        store
            .write_run(&run_row("bb", cycle, "ok", started), &[], &replicas)
            .unwrap();
    }
    store.compact().unwrap();
    let table = read_replica_table(&store);
    assert_eq!(
        replica_keys(&table),
        [
            ("bb".to_string(), 1, 0),
            ("bb".to_string(), 1, 1),
            ("bb".to_string(), 0, 0),
            ("bb".to_string(), 0, 1),
        ]
    );
    assert_eq!(table[0], replica_row("bb", 1, 0));
    assert_eq!(table[1].get("gpu_energy_j"), Some(&Cell::Null));
    assert_eq!(store.replicas().unwrap(), table);
}

#[test]
fn an_execution_written_again_replaces_its_replica_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    let replicas = [replica_row("bb", 0, 0), replica_row("bb", 0, 1)];
    // A writer killed after the replica part and before the run part: the part is no one's.
    std::fs::create_dir_all(store.dir().join("replicas")).unwrap();
    results::parquet_io::write_rows(
        &store.dir().join("replicas/bb-c0.parquet"),
        REPLICA_COLUMNS,
        &replicas,
    )
    .unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 1.0), &[], &[])
        .unwrap();
    store.compact().unwrap();
    assert!(!store.dir().join(REPLICA_TABLE).exists());
    // The resumed study runs the execution again, then once more (a retry after a failure).
    store
        .write_run(&run_row("bb", 0, "failed", 2.0), &[], &[])
        .unwrap();
    assert!(!store.dir().join("replicas/bb-c0.parquet").exists());
    for _ in 0..2 {
        store
            .write_run(&run_row("bb", 0, "ok", 3.0), &[], &replicas)
            .unwrap();
    }
    store.compact().unwrap();
    assert_eq!(read_replica_table(&store), replicas);
}

#[test]
fn replica_rows_of_another_execution_or_named_twice_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    for replicas in [
        [replica_row("bb", 0, 0), replica_row("cc", 0, 1)],
        [replica_row("bb", 0, 0), replica_row("bb", 1, 1)],
        [replica_row("bb", 0, 1), replica_row("bb", 0, 1)],
    ] {
        let err = store
            .write_run(&run_row("bb", 0, "ok", 1.0), &[], &replicas)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::ReplicaPartMismatch { run_hash, cycle: 0, .. } if run_hash == "bb"),
            "{err}"
        );
    }
    // Nothing was stored: the execution is still to run.
    assert!(store.completed().unwrap().is_empty());
    // Rows of one table are never written under another's column names.
    let err = store
        .write_run(
            &run_row("bb", 0, "ok", 1.0),
            &[replica_row("bb", 0, 0)],
            &[],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Schema(_)), "{err}");
}

#[test]
fn superseding_moves_replica_parts_and_compaction_drops_the_stale_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(
            &run_row("bb", 0, "ok", 1.0),
            &[],
            &[replica_row("bb", 0, 0), replica_row("bb", 0, 1)],
        )
        .unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 2.0), &[], &[])
        .unwrap();
    store.compact().unwrap();
    assert_eq!(read_replica_table(&store).len(), 2);
    let keep = HashSet::from(["aa".to_string()]);
    assert_eq!(store.supersede_except(&keep, "1").unwrap(), 2);
    assert!(
        store
            .dir()
            .join("superseded/1/replicas/bb-c0.parquet")
            .is_file()
    );
    assert_eq!(store.compact().unwrap().len(), 1);
    assert!(!store.dir().join(REPLICA_TABLE).exists());
}

#[test]
fn a_damaged_replica_part_is_moved_aside_with_its_run_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("study")).unwrap();
    store
        .write_run(
            &run_row("bb", 0, "ok", 1.0),
            &[],
            &[replica_row("bb", 0, 0), replica_row("bb", 0, 1)],
        )
        .unwrap();
    store
        .write_run(&run_row("aa", 0, "ok", 2.0), &[], &[])
        .unwrap();
    store.compact().unwrap();
    std::fs::write(store.dir().join("replicas/bb-c0.parquet"), b"PAR1 cut").unwrap();
    let err = store.compact().unwrap_err().to_string();
    assert!(err.contains("bb-c0.parquet"), "{err}");
    // The tables stay as they were.
    assert_eq!(read_replica_table(&store).len(), 2);
    let moved = store.quarantine_corrupt_parts().unwrap();
    assert_eq!(
        moved,
        [
            store.dir().join("replicas/corrupt/bb-c0.parquet"),
            store.dir().join("parts/corrupt/bb-c0.parquet"),
        ]
    );
    // The execution runs again rather than losing its replica rows.
    assert!(!store.completed().unwrap().contains(&("bb".to_string(), 0)));
    assert_eq!(store.compact().unwrap().len(), 1);
    assert!(!store.dir().join(REPLICA_TABLE).exists());
}
