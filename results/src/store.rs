//! A study's results folder: one Parquet part per finished run, compacted into tables.
//!
//! Layout: `parts/<run_hash>-c<cycle>.parquet` (one row), `requests/<run_hash>-c<cycle>.parquet`,
//! `samples/<run_hash>-c<cycle>.parquet` (the meters' time series),
//! `replicas/<run_hash>-c<cycle>.parquet` (one row per replica of a run on several devices; the
//! folder appears with the first such run), and the compacted `runs.parquet`, `runs.csv`,
//! `runs.json` and, when a successful run had replicas, `replicas.parquet`. A part's existence
//! means the run is stored; failed runs get a `.failed.parquet` part so a resume retries them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::StoreError;
use crate::lock::{COMPACTION_TIMEOUT, CompactionLock};
use crate::parquet_io::{read_rows, write_bytes, write_rows};
use crate::row::{Cell, Row};
use crate::schema::{
    Column, REPLICA_COLUMNS, REQUEST_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS, TOKEN_COLUMNS,
};

/// The compacted per-replica table of a study folder.
pub const REPLICA_TABLE: &str = "replicas.parquet";

/// The folder of per-execution replica parts, compacted into [`REPLICA_TABLE`].
const REPLICA_PARTS: &str = "replicas";

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

/// The execution (run hash, cycle) a per-execution file is named after; `None` for other
/// names, including a cycle not spelled as the store spells it (`-c01`), which would otherwise
/// name an execution twice.
fn execution_of(name: &str) -> Option<(&str, i64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (hash, digits) = stem.rsplit_once("-c")?;
    let cycle: i64 = digits.parse().ok()?;
    (cycle.to_string() == digits).then_some((hash, cycle))
}

/// Checks that the replica rows of part `path` are all of execution (`hash`, `cycle`) and
/// name each replica once: a duplicated row would count a replica's work twice.
fn check_replica_rows(path: &Path, hash: &str, cycle: i64, rows: &[Row]) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    for row in rows {
        let belongs = text(row, "run_hash").is_ok_and(|h| h == hash)
            && int(row, "cycle_id").is_ok_and(|c| c == cycle)
            && int(row, "replica").is_ok_and(|r| seen.insert(r));
        if !belongs {
            return Err(StoreError::ReplicaPartMismatch {
                path: path.to_path_buf(),
                run_hash: hash.to_string(),
                cycle,
            });
        }
    }
    Ok(())
}

/// Names of the `.parquet` files in `folder`, sorted; temporary files of an interrupted write
/// start with a dot and are left out.
fn parquet_names(folder: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| StoreError::io(folder, e))? {
        let entry = entry.map_err(|e| StoreError::io(folder, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".parquet") && !name.starts_with('.') && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `path` if it is there.
fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(path, e)),
        _ => Ok(()),
    }
}

/// Moves `path` into the folder `to_dir` (created if needed); returns its new path.
fn move_into(path: &Path, to_dir: &Path) -> Result<PathBuf, StoreError> {
    std::fs::create_dir_all(to_dir).map_err(|e| StoreError::io(to_dir, e))?;
    let to = to_dir.join(path.file_name().unwrap_or_default());
    std::fs::rename(path, &to).map_err(|e| StoreError::io(path, e))?;
    Ok(to)
}

/// The folder of the per-token tables (one file per execution).
pub const TOKENS_DIR: &str = "tokens";

impl Store {
    /// Opens (creating if needed) the folder of a study.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        for sub in ["parts", "requests", "samples", TOKENS_DIR] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| StoreError::io(&p, e))?;
        }
        Ok(Store { dir })
    }

    /// The study folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores one execution: its run row, its request rows and its replica rows (none for a run
    /// on one device), each file atomically. The run part is written last, so its presence
    /// implies the requests and replicas are there too; an execution written again (a resumed
    /// or retried one) replaces its files rather than adding rows.
    pub fn write_run(
        &self,
        run: &Row,
        requests: &[Row],
        replicas: &[Row],
    ) -> Result<(), StoreError> {
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
        let path = self.replica_part(&hash, cycle);
        if replicas.is_empty() {
            // A part left by an earlier attempt killed before its run part is not this one's.
            remove_if_present(&path)?;
        } else {
            check_replica_rows(&path, &hash, cycle, replicas)?;
            let folder = self.dir.join(REPLICA_PARTS);
            std::fs::create_dir_all(&folder).map_err(|e| StoreError::io(&folder, e))?;
            write_rows(&path, REPLICA_COLUMNS, replicas)?;
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

    /// Writes one execution's token rows (`tokens/<hash>-c<cycle>.parquet`), atomically.
    /// Written before the execution's part, like its samples: a part on disk means its
    /// tokens are too.
    pub fn write_tokens(&self, hash: &str, cycle: usize, tokens: &[Row]) -> Result<(), StoreError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let path = self
            .dir
            .join(TOKENS_DIR)
            .join(format!("{hash}-c{cycle}.parquet"));
        write_rows(&path, TOKEN_COLUMNS, tokens)
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
        parquet_names(&self.dir.join("parts"))
    }

    /// The replica part of an execution.
    fn replica_part(&self, hash: &str, cycle: i64) -> PathBuf {
        self.dir
            .join(REPLICA_PARTS)
            .join(format!("{hash}-c{cycle}.parquet"))
    }

    /// Names of the replica parts present (none before the first replicated run).
    fn replica_part_names(&self) -> Result<Vec<String>, StoreError> {
        let folder = self.dir.join(REPLICA_PARTS);
        if !folder.is_dir() {
            return Ok(Vec::new());
        }
        parquet_names(&folder)
    }

    /// The replica rows of every successful execution, ordered as [`Store::runs`] orders
    /// executions, then by replica: what [`Store::compact`] writes to `replicas.parquet`.
    pub fn replicas(&self) -> Result<Vec<Row>, StoreError> {
        self.replica_rows(&self.runs()?)
    }

    /// The replica rows of the successful executions among `runs`, in their order. A part
    /// without a successful run part is left out: a writer killed between the two left it,
    /// and the execution's next attempt replaces it.
    fn replica_rows(&self, runs: &[Row]) -> Result<Vec<Row>, StoreError> {
        let order: HashMap<(&str, i64), usize> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| text(r, "status").is_ok_and(|s| s == "ok"))
            .filter_map(|(i, r)| Some(((text(r, "run_hash").ok()?, int(r, "cycle_id").ok()?), i)))
            .collect();
        let mut rows = Vec::new();
        for name in self.replica_part_names()? {
            let Some((hash, cycle)) = execution_of(&name) else {
                continue;
            };
            let Some(&position) = order.get(&(hash, cycle)) else {
                continue;
            };
            let path = self.replica_part(hash, cycle);
            let part = read_rows(&path, REPLICA_COLUMNS)?;
            check_replica_rows(&path, hash, cycle, &part)?;
            rows.extend(part.into_iter().map(|row| (position, row)));
        }
        rows.sort_by_key(|(position, row)| (*position, int(row, "replica").unwrap_or(0)));
        Ok(rows.into_iter().map(|(_, row)| row).collect())
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
    /// the moved parts' new paths, for a warning. A replica part that cannot be read, or holds
    /// rows of another execution, goes to `replicas/corrupt/` with its execution's run part:
    /// the execution runs again rather than its replicas going missing from `replicas.parquet`.
    pub fn quarantine_corrupt_parts(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut moved = Vec::new();
        let parts = self.dir.join("parts");
        for name in self.part_names()? {
            let path = parts.join(&name);
            if read_rows(&path, RUN_COLUMNS).is_ok() {
                continue;
            }
            moved.push(move_into(&path, &parts.join("corrupt"))?);
        }
        for name in self.replica_part_names()? {
            let Some((hash, cycle)) = execution_of(&name) else {
                continue;
            };
            let path = self.replica_part(hash, cycle);
            let sound = read_rows(&path, REPLICA_COLUMNS)
                .and_then(|rows| check_replica_rows(&path, hash, cycle, &rows))
                .is_ok();
            if sound {
                continue;
            }
            moved.push(move_into(
                &path,
                &self.dir.join(REPLICA_PARTS).join("corrupt"),
            )?);
            let part = parts.join(part_name(hash, cycle, false));
            if part.is_file() {
                moved.push(move_into(&part, &parts.join("corrupt"))?);
            }
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

    /// Moves parts, request, sample and replica files of runs not in `keep` into
    /// `superseded/<label>/`, so a re-planned study does not mix results while nothing is
    /// deleted (the compacted tables are rebuilt from what stays).
    pub fn supersede_except(
        &self,
        keep: &HashSet<String>,
        label: &str,
    ) -> Result<usize, StoreError> {
        let target = self.dir.join("superseded").join(label);
        let mut moved = 0;
        for sub in ["parts", "requests", "samples", TOKENS_DIR, REPLICA_PARTS] {
            let from_dir = self.dir.join(sub);
            // The replica folder exists only once a replicated run was stored.
            if !from_dir.is_dir() {
                continue;
            }
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

    /// Writes `runs.parquet`, `runs.csv` and `runs.json` from all parts, and `replicas.parquet`
    /// from the replica parts of the successful executions; returns the run rows.
    ///
    /// Under the study's compaction lock, so two processes finishing together cannot replace
    /// a newer table with an older one; the row count is checked against the parts read, and
    /// every part is read before any table is written, so a failure leaves them all as they
    /// were. With no replica rows `replicas.parquet` is removed rather than left empty or
    /// stale (its runs may have been superseded).
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
        let replicas = self.replica_rows(&rows)?;
        write_rows(&self.dir.join("runs.parquet"), RUN_COLUMNS, &rows)?;
        write_bytes(
            &self.dir.join("runs.csv"),
            to_csv(RUN_COLUMNS, &rows).as_bytes(),
        )?;
        let json = serde_json::to_vec_pretty(&to_json(&rows))
            .map_err(|e| StoreError::Schema(e.to_string()))?;
        write_bytes(&self.dir.join("runs.json"), &json)?;
        let table = self.dir.join(REPLICA_TABLE);
        if replicas.is_empty() {
            remove_if_present(&table)?;
        } else {
            write_rows(&table, REPLICA_COLUMNS, &replicas)?;
        }
        Ok(rows)
    }
}

/// Removes the temporary files that writers killed mid-write left in the study folder `dir`
/// (named `.<file>.<unique>.tmp` by [`crate::parquet_io`]); returns how many. Call only while
/// no other process writes the study.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    for sub in [
        "",
        "parts",
        "requests",
        "samples",
        TOKENS_DIR,
        REPLICA_PARTS,
        "quality",
    ] {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_execution_files_are_named_after_their_execution() {
        assert_eq!(execution_of("ab12-c3.parquet"), Some(("ab12", 3)));
        assert_eq!(execution_of("ab12-c3.failed.parquet"), None);
        assert_eq!(execution_of("ab12.parquet"), None);
        assert_eq!(execution_of("ab12-c3.csv"), None);
        assert_eq!(execution_of("ab12-c03.parquet"), None);
        assert_eq!(execution_of("ab12-c+3.parquet"), None);
    }
}
