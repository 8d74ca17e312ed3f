//! Statistics over a study's runs, grouped by configuration columns (`aggregate(...)`).
//!
//! Each group (one value of each `by` column) gets, for every measured metric, the requested
//! statistics across its successful executions (typically its cycles). The 95 % confidence
//! interval of the mean uses Student's t, since a handful of cycles is the usual case.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::StoreError;
use crate::parquet_io::write_batch;
use crate::row::{Cell, Row};
use crate::schema::{ColumnType, RUN_COLUMNS};

/// Metrics summarised, when present in the runs table.
pub const METRICS: &[&str] = &[
    "wall_s",
    "prefill_s",
    "decode_s",
    "output_tokens_per_s",
    "total_tokens_per_s",
    "requests_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "e2e_p50_s",
    "e2e_p99_s",
    "queue_p50_s",
    "itl_p50_s",
    "itl_p99_s",
    "energy_total_j",
    "j_per_output_token",
];

/// Statistic names accepted by [`aggregate`].
pub const STATS: &[&str] = &["mean", "std", "min", "max", "p50", "p90", "p99", "ci95"];

/// A summary table: group columns, `n`, then `<metric>_<stat>` columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Column names and types.
    pub columns: Vec<(String, ColumnType)>,
    /// Rows, cells in column order.
    pub rows: Vec<Vec<Cell>>,
}

/// Two-sided 97.5 % quantiles of Student's t for 1..=30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

fn t_975(df: usize) -> f64 {
    T_975.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

fn sample_std(v: &[f64], mean: f64) -> Option<f64> {
    (v.len() >= 2)
        .then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}

/// Groups successful runs by `by` and computes `stats` of every metric.
pub fn aggregate(rows: &[Row], by: &[String], stats: &[String]) -> Result<Summary, StoreError> {
    for key in by {
        if !RUN_COLUMNS.iter().any(|c| c.name == key) {
            let names: Vec<&str> = RUN_COLUMNS.iter().map(|c| c.name).collect();
            return Err(StoreError::Schema(format!(
                "aggregate by `{key}`: no such column; columns: {}",
                names.join(", ")
            )));
        }
    }
    for stat in stats {
        if !STATS.contains(&stat.as_str()) {
            return Err(StoreError::Schema(format!(
                "unknown statistic `{stat}`; valid: {}",
                STATS.join(", ")
            )));
        }
    }
    let mut groups: BTreeMap<Vec<String>, (Vec<Cell>, Vec<&Row>)> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| r.get("status") == Some(&Cell::Text("ok".into())))
    {
        let cells: Vec<Cell> = by
            .iter()
            .map(|k| row.get(k).cloned().unwrap_or(Cell::Null))
            .collect();
        let key = cells.iter().map(|c| format!("{c:?}")).collect();
        groups
            .entry(key)
            .or_insert_with(|| (cells, Vec::new()))
            .1
            .push(row);
    }
    let mut columns: Vec<(String, ColumnType)> = by
        .iter()
        .map(|k| {
            let ty = RUN_COLUMNS
                .iter()
                .find(|c| c.name == k)
                .map_or(ColumnType::Text, |c| c.ty);
            (k.clone(), ty)
        })
        .collect();
    columns.push(("n".into(), ColumnType::Int));
    let wants_ci = stats.iter().any(|s| s == "ci95");
    for metric in METRICS {
        for stat in stats {
            if stat == "ci95" {
                columns.push((format!("{metric}_ci95_low"), ColumnType::Float));
                columns.push((format!("{metric}_ci95_high"), ColumnType::Float));
            } else {
                columns.push((format!("{metric}_{stat}"), ColumnType::Float));
            }
        }
    }
    if wants_ci {
        columns.push(("notes".into(), ColumnType::Text));
    }
    let mut out = Vec::new();
    for (_, (keys, members)) in groups {
        let mut cells = keys;
        cells.push(Cell::Int(members.len() as i64));
        let mut clipped: Vec<&str> = Vec::new();
        for metric in METRICS {
            let mut v: Vec<f64> = members
                .iter()
                .filter_map(|r| match r.get(metric) {
                    Some(Cell::Float(f)) => Some(*f),
                    _ => None,
                })
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            for stat in stats {
                let value = |f: &dyn Fn(&[f64]) -> Option<f64>| {
                    if v.is_empty() {
                        Cell::Null
                    } else {
                        f(&v).into()
                    }
                };
                match stat.as_str() {
                    "mean" => cells.push(mean.into()),
                    "std" => cells.push(mean.and_then(|m| sample_std(&v, m)).into()),
                    "min" => cells.push(value(&|v| v.first().copied())),
                    "max" => cells.push(value(&|v| v.last().copied())),
                    "p50" => cells.push(value(&|v| Some(percentile(v, 50.0)))),
                    "p90" => cells.push(value(&|v| Some(percentile(v, 90.0)))),
                    "p99" => cells.push(value(&|v| Some(percentile(v, 99.0)))),
                    _ => {
                        let half = mean
                            .and_then(|m| sample_std(&v, m))
                            .map(|s| t_975(v.len() - 1) * s / (v.len() as f64).sqrt());
                        // Every summarised metric is a non-negative quantity: a t-interval
                        // reaching below zero is clipped there and the row says so.
                        let low = mean.zip(half).map(|(m, h)| m - h);
                        if low.is_some_and(|l| l < 0.0) {
                            clipped.push(metric);
                        }
                        cells.push(low.map(|l| l.max(0.0)).into());
                        cells.push(mean.zip(half).map(|(m, h)| m + h).into());
                    }
                }
            }
        }
        if wants_ci {
            cells.push(
                (!clipped.is_empty())
                    .then(|| {
                        format!(
                            "ci95 low clipped at 0 (t-interval below zero, too few or too spread cycles): {}",
                            clipped.join(", ")
                        )
                    })
                    .into(),
            );
        }
        out.push(cells);
    }
    Ok(Summary { columns, rows: out })
}

impl Summary {
    /// Writes the summary as Parquet (atomically) and CSV beside it.
    pub fn write(&self, parquet: &Path, csv: &Path) -> Result<(), StoreError> {
        let schema = Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|(name, ty)| {
                    let dt = match ty {
                        ColumnType::Text => DataType::Utf8,
                        ColumnType::Int => DataType::Int64,
                        ColumnType::Float => DataType::Float64,
                    };
                    Field::new(name, dt, true)
                })
                .collect::<Vec<_>>(),
        ));
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| -> ArrayRef {
                let cells = self.rows.iter().map(|r| &r[i]);
                match ty {
                    ColumnType::Text => Arc::new(
                        cells
                            .map(|c| match c {
                                Cell::Text(s) => Some(s.clone()),
                                _ => None,
                            })
                            .collect::<StringArray>(),
                    ),
                    ColumnType::Int => Arc::new(
                        cells
                            .map(|c| match c {
                                Cell::Int(v) => Some(*v),
                                _ => None,
                            })
                            .collect::<Int64Array>(),
                    ),
                    ColumnType::Float => Arc::new(
                        cells
                            .map(|c| match c {
                                Cell::Float(v) => Some(*v),
                                _ => None,
                            })
                            .collect::<Float64Array>(),
                    ),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| StoreError::arrow(parquet, e))?;
        write_batch(parquet, schema, &batch)?;
        let mut text = self
            .columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(",");
        text.push('\n');
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .map(|c| match c {
                    Cell::Null => String::new(),
                    Cell::Text(s) if s.contains([',', '"', '\n']) => {
                        format!("\"{}\"", s.replace('"', "\"\""))
                    }
                    Cell::Text(s) => s.clone(),
                    Cell::Int(i) => i.to_string(),
                    Cell::Float(f) => format!("{f}"),
                })
                .collect();
            text.push_str(&line.join(","));
            text.push('\n');
        }
        crate::parquet_io::write_bytes(csv, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, bs: i64, wall: f64) -> Row {
        let mut r = Row::new(RUN_COLUMNS);
        r.set("status", "ok").unwrap();
        r.set("model", model).unwrap();
        r.set("batch_size", bs).unwrap();
        r.set("wall_s", wall).unwrap();
        r
    }

    #[test]
    fn groups_and_statistics() {
        let rows = vec![
            row("a", 1, 1.0),
            row("a", 1, 2.0),
            row("a", 1, 3.0),
            row("b", 1, 5.0),
        ];
        let s = aggregate(
            &rows,
            &["model".into(), "batch_size".into()],
            &["mean".into(), "std".into(), "ci95".into()],
        )
        .unwrap();
        assert_eq!(s.rows.len(), 2);
        let col = |name: &str| s.columns.iter().position(|(n, _)| n == name).unwrap();
        let a = &s.rows[0];
        assert_eq!(a[col("model")], Cell::Text("a".into()));
        assert_eq!(a[col("batch_size")], Cell::Int(1));
        assert_eq!(a[col("n")], Cell::Int(3));
        assert_eq!(a[col("wall_s_mean")], Cell::Float(2.0));
        assert_eq!(a[col("wall_s_std")], Cell::Float(1.0));
        // mean ± t(0.975, 2) * 1 / sqrt(3) = 2 ± 2.48: a wall time cannot be negative, so
        // the low bound is clipped at 0 and the row says so (issue A.6).
        let Cell::Float(high) = a[col("wall_s_ci95_high")] else {
            panic!()
        };
        assert!((high - (2.0 + 4.303 / 3f64.sqrt())).abs() < 1e-9);
        assert_eq!(a[col("wall_s_ci95_low")], Cell::Float(0.0));
        let Cell::Text(notes) = &a[col("notes")] else {
            panic!("{:?}", a[col("notes")])
        };
        assert!(
            notes.starts_with("ci95 low clipped at 0") && notes.ends_with("wall_s"),
            "{notes}"
        );
        // One sample: no spread, no interval.
        assert_eq!(s.rows[1][col("wall_s_std")], Cell::Null);
        assert_eq!(s.rows[1][col("ttft_p50_s_mean")], Cell::Null);
    }

    #[test]
    fn a_tight_interval_is_not_clipped() {
        let rows = vec![row("a", 1, 10.0), row("a", 1, 11.0), row("a", 1, 12.0)];
        let s = aggregate(&rows, &["model".into()], &["ci95".into()]).unwrap();
        let col = |name: &str| s.columns.iter().position(|(n, _)| n == name).unwrap();
        let Cell::Float(low) = s.rows[0][col("wall_s_ci95_low")] else {
            panic!()
        };
        assert!((low - (11.0 - 4.303 / 3f64.sqrt())).abs() < 1e-9);
        assert_eq!(s.rows[0][col("notes")], Cell::Null);
    }

    #[test]
    fn unknown_group_column_lists_columns() {
        let err = aggregate(&[], &["nope".into()], &["mean".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("aggregate by `nope`") && err.contains("batch_size"),
            "{err}"
        );
    }
}
