//! A study's results folder: one Parquet part per finished run, compacted into tables.
//!
//! Layout: `parts/<run_hash>-c<cycle>.parquet` (one row), `requests/<run_hash>-c<cycle>.parquet`,
//! `samples/<run_hash>-c<cycle>.parquet` (the meters' time series), and the compacted `runs.parquet`, `runs.csv`, `runs.json`. A part's existence means the
//! run is stored; failed runs get a `.failed.parquet` part so a resume retries them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::lock::{COMPACTION_TIMEOUT, CompactionLock};
use crate::parquet_io::{read_rows, write_bytes, write_rows};
use crate::row::{Cell, Row};
use crate::schema::{Column, REQUEST_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS};

/// A study's results folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

fn part_name(run_hash: &str, cycle: i64, failed: bool) -> String {
    if failed {
        format!("{run_hash}-c{cycle}.failed.parquet")
    } else {
        format!("{run_hash}-c{cycle}.parquet")
    }
}

fn text<'a>(row: &'a Row, name: &str) -> Result<&'a str, StoreError> {
    match row.get(name) {
        Some(Cell::Text(s)) => Ok(s),
        _ => Err(StoreError::Schema(format!("row has no `{name}`"))),
    }
}

fn int(row: &Row, name: &str) -> Result<i64, StoreError> {
    match row.get(name) {
        Some(Cell::Int(i)) => Ok(*i),
        _ => Err(StoreError::Schema(format!("row has no `{name}`"))),
    }
}

impl Store {
    /// Opens (creating if needed) the folder of a study.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        for sub in ["parts", "requests", "samples"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        Ok(Store { dir })
    }

    /// The study folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores one execution: its run row and its request rows, each atomically. The run part
    /// is written last, so its presence implies the requests are there too.
    pub fn write_run(&self, run: &Row, requests: &[Row]) -> Result<(), StoreError> {
        let hash = text(run, "run_hash")?.to_string();
        if hash.is_empty() || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::Schema(format!(
                "run_hash `{hash}` is not a hex digest"
            )));
        }
        let cycle = int(run, "cycle_id")?;
        let failed = text(run, "status")? != "ok";
        if !requests.is_empty() {
            let path = self
                .dir
                .join("requests")
                .join(format!("{hash}-c{cycle}.parquet"));
            write_rows(&path, REQUEST_COLUMNS, requests)?;
        }
        let path = self.dir.join("parts").join(part_name(&hash, cycle, failed));
        write_rows(&path, RUN_COLUMNS, std::slice::from_ref(run))?;
        // Fault injection for the resume tests: die as `kill -9` would between the success
        // part and the removal of the failed one (debug builds only).
        #[cfg(debug_assertions)]
        if !failed && std::env::var_os("LLMEFF_TEST_EXIT_AFTER_PART").is_some() {
            std::process::exit(86);
        }
        // A success replaces an earlier failure of the same execution.
        if !failed {
            let stale = self.dir.join("parts").join(part_name(&hash, cycle, true));
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| StoreError::io(&stale, e))?;
            }
        }
        Ok(())
    }

    /// Stores the background sample series of one execution (call before [`Store::write_run`],
    /// whose part marks the execution complete).
    pub fn write_samples(
        &self,
        hash: &str,
        cycle: usize,
        samples: &[Row],
    ) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join("samples")
            .join(format!("{hash}-c{cycle}.parquet"));
        write_rows(&path, SAMPLE_COLUMNS, samples)
    }

    /// (run hash, cycle) of every successfully stored execution.
    pub fn completed(&self) -> Result<HashSet<(String, usize)>, StoreError> {
        let mut done = HashSet::new();
        for name in self.part_names()? {
            if name.ends_with(".failed.parquet") {
                continue;
            }
            if let Some(stem) = name.strip_suffix(".parquet")
                && let Some((hash, cycle)) = stem.rsplit_once("-c")
                && let Ok(cycle) = cycle.parse::<usize>()
            {
                done.insert((hash.to_string(), cycle));
            }
        }
        Ok(done)
    }

    fn part_names(&self) -> Result<Vec<String>, StoreError> {
        let parts = self.dir.join("parts");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&parts).map_err(|e| StoreError::io(&parts, e))? {
            let entry = entry.map_err(|e| StoreError::io(&parts, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            // Temporary files of an interrupted write start with a dot and are ignored.
            if name.ends_with(".parquet") && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// All stored run rows, ordered by start time. A success supersedes a failed part of the
    /// same execution even where the failed part was not deleted (a writer killed between the
    /// two): the failed row is left out and its part removed.
    pub fn runs(&self) -> Result<Vec<Row>, StoreError> {
        Ok(self.read_parts()?.0)
    }

    /// The rows of the parts present, and how many distinct executions they came from.
    fn read_parts(&self) -> Result<(Vec<Row>, usize), StoreError> {
        let names = self.part_names()?;
        let succeeded: HashSet<&str> = names
            .iter()
            .filter(|n| !n.ends_with(".failed.parquet"))
            .filter_map(|n| n.strip_suffix(".parquet"))
            .collect();
        let mut rows = Vec::new();
        let mut executions = HashSet::new();
        for name in &names {
            let path = self.dir.join("parts").join(name);
            if let Some(stem) = name.strip_suffix(".failed.parquet") {
                if succeeded.contains(stem) {
                    // Best effort: the row is left out whether or not the removal works.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                executions.insert(stem);
            } else if let Some(stem) = name.strip_suffix(".parquet") {
                executions.insert(stem);
            }
            rows.extend(read_rows(&path, RUN_COLUMNS)?);
        }
        rows.sort_by(|a, b| {
            let key = |r: &Row| match r.get("started_at_unix_s") {
                Some(Cell::Float(f)) => *f,
                _ => 0.0,
            };
            key(a).total_cmp(&key(b))
        });
        Ok((rows, executions.len()))
    }

    /// Moves parts that cannot be read (truncated by a full disk, damaged by hand) into
    /// `parts/corrupt/`, so their executions run again instead of failing the study; returns
    /// the moved parts' new paths, for a warning.
    pub fn quarantine_corrupt_parts(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut moved = Vec::new();
        for name in self.part_names()? {
            let path = self.dir.join("parts").join(&name);
            if read_rows(&path, RUN_COLUMNS).is_ok() {
                continue;
            }
            let corrupt = self.dir.join("parts").join("corrupt");
            std::fs::create_dir_all(&corrupt).map_err(|e| StoreError::io(&corrupt, e))?;
            let to = corrupt.join(&name);
            std::fs::rename(&path, &to).map_err(|e| StoreError::io(&path, e))?;
            moved.push(to);
        }
        Ok(moved)
    }

    /// The largest `experiment_id` stored so far, superseded parts included, so the counter
    /// never repeats within a study folder (0 when none).
    pub fn max_experiment_id(&self) -> Result<i64, StoreError> {
        let mut rows = self.runs()?;
        let superseded = self.dir.join("superseded");
        if superseded.is_dir() {
            for entry in
                std::fs::read_dir(&superseded).map_err(|e| StoreError::io(&superseded, e))?
            {
                let parts = entry
                    .map_err(|e| StoreError::io(&superseded, e))?
                    .path()
                    .join("parts");
                let Ok(files) = std::fs::read_dir(&parts) else {
                    continue;
                };
                for file in files.flatten() {
                    rows.extend(read_rows(&file.path(), RUN_COLUMNS)?);
                }
            }
        }
        Ok(rows
            .iter()
            .filter_map(|r| match r.get("experiment_id") {
                Some(Cell::Int(i)) => Some(*i),
                _ => None,
            })
            .max()
            .unwrap_or(0))
    }

    /// Moves parts and request files of runs not in `keep` into `superseded/<label>/`, so a
    /// re-planned study does not mix results while nothing is deleted.
    pub fn supersede_except(
        &self,
        keep: &HashSet<String>,
        label: &str,
    ) -> Result<usize, StoreError> {
        let target = self.dir.join("superseded").join(label);
        let mut moved = 0;
        for sub in ["parts", "requests", "samples"] {
            let from_dir = self.dir.join(sub);
            for entry in std::fs::read_dir(&from_dir).map_err(|e| StoreError::io(&from_dir, e))? {
                let entry = entry.map_err(|e| StoreError::io(&from_dir, e))?;
                let name = entry.file_name().to_string_lossy().to_string();
                let hash = name.split("-c").next().unwrap_or_default();
                if keep.contains(hash) {
                    continue;
                }
                let to_dir = target.join(sub);
                std::fs::create_dir_all(&to_dir).map_err(|e| StoreError::io(&to_dir, e))?;
                std::fs::rename(entry.path(), to_dir.join(&name))
                    .map_err(|e| StoreError::io(&entry.path(), e))?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Writes `runs.parquet`, `runs.csv` and `runs.json` from all parts; returns the rows.
    ///
    /// Under the study's compaction lock, so two processes finishing together cannot replace
    /// a newer table with an older one; the row count is checked against the parts read.
    pub fn compact(&self) -> Result<Vec<Row>, StoreError> {
        let _lock = CompactionLock::acquire(&self.dir, COMPACTION_TIMEOUT)?;
        let (rows, executions) = self.read_parts()?;
        if rows.len() != executions {
            return Err(StoreError::CompactionMismatch {
                dir: self.dir.clone(),
                parts: executions,
                rows: rows.len(),
            });
        }
        write_rows(&self.dir.join("runs.parquet"), RUN_COLUMNS, &rows)?;
        write_bytes(
            &self.dir.join("runs.csv"),
            to_csv(RUN_COLUMNS, &rows).as_bytes(),
        )?;
        let json = serde_json::to_vec_pretty(&to_json(&rows))
            .map_err(|e| StoreError::Schema(e.to_string()))?;
        write_bytes(&self.dir.join("runs.json"), &json)?;
        Ok(rows)
    }
}

/// Removes the temporary files that writers killed mid-write left in the study folder `dir`
/// (named `.<file>.<unique>.tmp` by [`crate::parquet_io`]); returns how many. Call only while
/// no other process writes the study.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for sub in ["", "parts", "requests", "samples", "quality"] {
        let folder = dir.join(sub);
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&folder, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(|e| StoreError::io(&entry.path(), e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Rows as CSV with a header (RFC 4180 quoting).
pub fn to_csv(columns: &[Column], rows: &[Row]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = columns.iter().map(|c| c.name).collect::<Vec<_>>().join(",");
    out.push('\n');
    for row in rows {
        let line: Vec<String> = row
            .cells()
            .iter()
            .map(|c| match c {
                Cell::Null => String::new(),
                Cell::Text(s) => quote(s),
                Cell::Int(i) => i.to_string(),
                Cell::Float(f) => format!("{f}"),
            })
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

/// Rows as a JSON array of objects (nulls kept).
pub fn to_json(rows: &[Row]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|row| {
                let map = row
                    .columns()
                    .iter()
                    .zip(row.cells())
                    .map(|(c, v)| {
                        let value = match v {
                            Cell::Null => serde_json::Value::Null,
                            Cell::Text(s) => serde_json::Value::from(s.clone()),
                            Cell::Int(i) => serde_json::Value::from(*i),
                            Cell::Float(f) => serde_json::Value::from(*f),
                        };
                        (c.name.to_string(), value)
                    })
                    .collect();
                serde_json::Value::Object(map)
            })
            .collect(),
    )
}
