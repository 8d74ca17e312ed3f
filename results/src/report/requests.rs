//! Per-request latencies from a study's `requests/` folder, joined to configurations by run
//! hash, for the TTFT and TPOT distribution charts.
//!
//! Only executions the runs table lists as successful count: a folder may still hold the
//! requests of a failed or superseded execution.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::ReportError;
use super::view::TableView;

/// Request latency columns drawn as distributions, with their chart names.
pub const DISTRIBUTIONS: &[(&str, &str)] = &[("ttft_s", "TTFT"), ("tpot_s", "TPOT")];

/// Values of each request column per configuration key (run hash).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    /// `column -> run hash -> values`, in file order.
    pub values: BTreeMap<String, BTreeMap<String, Vec<f64>>>,
    /// Request files read.
    pub files: usize,
    /// Files that could not be read, with why.
    pub unreadable: Vec<String>,
}

impl Requests {
    /// The values of `column` for a configuration (empty when none).
    pub fn of(&self, column: &str, key: &str) -> &[f64] {
        self.values
            .get(column)
            .and_then(|m| m.get(key))
            .map_or(&[], Vec::as_slice)
    }
}

/// Whether `(run_hash, cycle)` is a successful execution of the runs table; a table without
/// `status` holds only successes.
fn ok_executions(runs: &TableView) -> BTreeSet<(String, Option<i64>)> {
    (0..runs.len())
        .filter(|&r| runs.text(r, "status").is_none_or(|s| s == "ok"))
        .filter_map(|r| {
            Some((
                runs.text(r, "run_hash")?.to_string(),
                runs.int(r, "cycle_id"),
            ))
        })
        .collect()
}

/// Reads `dir/requests/*.parquet`, keeping the requests of successful executions.
pub fn read(dir: &Path, runs: &TableView) -> Result<Requests, ReportError> {
    let folder = dir.join("requests");
    let mut out = Requests::default();
    if !folder.is_dir() {
        return Ok(out);
    }
    let ok = ok_executions(runs);
    let mut paths: Vec<_> = std::fs::read_dir(&folder)
        .map_err(|e| ReportError::io(&folder, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    // Directory order is arbitrary; file order keeps values, and so the charts, reproducible.
    paths.sort();
    for path in paths {
        let table = match TableView::read(&path) {
            Ok(t) => t,
            Err(e) => {
                out.unreadable.push(e.to_string());
                continue;
            }
        };
        out.files += 1;
        for r in 0..table.len() {
            let Some(hash) = table.text(r, "run_hash") else {
                continue;
            };
            if !ok.contains(&(hash.to_string(), table.int(r, "cycle_id"))) {
                continue;
            }
            for (column, _) in DISTRIBUTIONS {
                if let Some(v) = table.float(r, column) {
                    out.values
                        .entry((*column).to_string())
                        .or_default()
                        .entry(hash.to_string())
                        .or_default()
                        .push(v);
                }
            }
        }
    }
    Ok(out)
}

/// The `q`-th percentile (0..=100) of sorted values, linearly interpolated between ranks;
/// `None` for no values.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = q.clamp(0.0, 100.0) / 100.0 * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let (a, b) = (*sorted.get(lo)?, *sorted.get(hi)?);
    Some(a + (b - a) * (rank - lo as f64))
}

/// Five-number summary of a distribution: minimum, quartiles, median, maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FiveNumbers {
    /// Smallest value.
    pub min: f64,
    /// 25th percentile.
    pub q1: f64,
    /// Median.
    pub median: f64,
    /// 75th percentile.
    pub q3: f64,
    /// Largest value.
    pub max: f64,
}

/// The five-number summary of `values` (any order); `None` when there are none.
pub fn five_numbers(values: &[f64]) -> Option<FiveNumbers> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    Some(FiveNumbers {
        min: *sorted.first()?,
        q1: percentile(&sorted, 25.0)?,
        median: percentile(&sorted, 50.0)?,
        q3: percentile(&sorted, 75.0)?,
        max: *sorted.last()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 25.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.5));
        assert_eq!(percentile(&[], 50.0), None);
        let f = five_numbers(&[5.0, 1.0, 4.0, 2.0, 3.0, f64::NAN]).unwrap();
        assert_eq!(
            (f.min, f.q1, f.median, f.q3, f.max),
            (1.0, 2.0, 3.0, 4.0, 5.0)
        );
        assert!(five_numbers(&[]).is_none());
    }
}
