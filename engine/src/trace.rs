//! Request traces for `arrival: #{ pattern: "trace", path: ... }`: when each request arrives and
//! how many prompt and output tokens it has, read from a CSV or JSON Lines file. The columns of
//! the public Azure LLM inference traces (`TIMESTAMP, ContextTokens, GeneratedTokens`) load as
//! they are; so do `arrival_s, input_tokens, output_tokens`.

use std::path::Path;

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRequest {
    /// Seconds after the trace's first request.
    pub arrival_s: f64,
    /// Prompt tokens.
    pub input_tokens: usize,
    /// Tokens to generate.
    pub output_tokens: usize,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read the trace {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A column the trace needs is missing.
    #[error("the trace {path} has no {what} column (one of: {accepted})")]
    MissingColumn {
        /// The file.
        path: String,
        /// What the column holds.
        what: &'static str,
        /// The names accepted for it.
        accepted: String,
    },
    /// A value does not parse.
    #[error("the trace {path}, line {line}: {reason}")]
    Value {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The trace has no request.
    #[error("the trace {path} has no requests")]
    Empty {
        /// The file.
        path: String,
    },
}

/// The names each field may have, first the Azure trace's.
const ARRIVAL: [&str; 4] = ["TIMESTAMP", "timestamp", "arrival_s", "arrival_time_s"];
const INPUT: [&str; 4] = [
    "ContextTokens",
    "context_tokens",
    "input_tokens",
    "prompt_tokens",
];
const OUTPUT: [&str; 4] = [
    "GeneratedTokens",
    "generated_tokens",
    "output_tokens",
    "completion_tokens",
];

/// Reads a trace: JSON Lines when the file's first non-blank character is `{`, else CSV with
/// a header row. Arrivals are made relative to the earliest and the requests sorted by them;
/// `time_scale` multiplies the gaps (0.5 replays twice as fast).
pub fn read(path: &Path, time_scale: f64) -> Result<Vec<TraceRequest>, TraceError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: name.clone(),
        source,
    })?;
    let rows = if text.trim_start().starts_with('{') {
        jsonl_rows(&text, &name)?
    } else {
        csv_rows(&text, &name)?
    };
    if rows.is_empty() {
        return Err(TraceError::Empty { path: name });
    }
    let mut requests = rows;
    requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    let first = requests[0].arrival_s;
    for r in &mut requests {
        r.arrival_s = (r.arrival_s - first) * time_scale;
    }
    Ok(requests)
}

/// A field's column index in a header, by any of its accepted names.
fn column(
    header: &[&str],
    names: &[&str],
    what: &'static str,
    path: &str,
) -> Result<usize, TraceError> {
    header
        .iter()
        .position(|h| names.contains(&h.trim()))
        .ok_or_else(|| TraceError::MissingColumn {
            path: path.to_string(),
            what,
            accepted: names.join(", "),
        })
}

fn csv_rows(text: &str, path: &str) -> Result<Vec<TraceRequest>, TraceError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header: Vec<&str> = header.split(',').collect();
    let (a, i, o) = (
        column(&header, &ARRIVAL, "arrival time", path)?,
        column(&header, &INPUT, "input tokens", path)?,
        column(&header, &OUTPUT, "output tokens", path)?,
    );
    lines
        .map(|(n, line)| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let cell = |k: usize| {
                cells.get(k).copied().ok_or_else(|| TraceError::Value {
                    path: path.to_string(),
                    line: n + 1,
                    reason: format!("{} cells, the header has {}", cells.len(), header.len()),
                })
            };
            request(cell(a)?, cell(i)?, cell(o)?, path, n + 1)
        })
        .collect()
}

fn jsonl_rows(text: &str, path: &str) -> Result<Vec<TraceRequest>, TraceError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            let bad = |reason: String| TraceError::Value {
                path: path.to_string(),
                line: n + 1,
                reason,
            };
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            let field = |names: &[&str], what: &'static str| -> Result<String, TraceError> {
                let v = names.iter().find_map(|k| value.get(*k)).ok_or_else(|| {
                    TraceError::MissingColumn {
                        path: path.to_string(),
                        what,
                        accepted: names.join(", "),
                    }
                })?;
                Ok(match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            request(
                &field(&ARRIVAL, "arrival time")?,
                &field(&INPUT, "input tokens")?,
                &field(&OUTPUT, "output tokens")?,
                path,
                n + 1,
            )
        })
        .collect()
}

fn request(
    arrival: &str,
    input: &str,
    output: &str,
    path: &str,
    line: usize,
) -> Result<TraceRequest, TraceError> {
    let bad = |reason: String| TraceError::Value {
        path: path.to_string(),
        line,
        reason,
    };
    let count = |v: &str, what: &str| -> Result<usize, TraceError> {
        v.parse::<usize>()
            .map_err(|_| bad(format!("{what} `{v}` is not a whole number")))
    };
    let input_tokens = count(input, "input tokens")?;
    if input_tokens == 0 {
        return Err(bad("a request needs at least one input token".into()));
    }
    Ok(TraceRequest {
        arrival_s: seconds(arrival).ok_or_else(|| {
            bad(format!(
                "arrival `{arrival}` is neither seconds nor a `YYYY-MM-DD HH:MM:SS[.fff]` time"
            ))
        })?,
        input_tokens,
        output_tokens: count(output, "output tokens")?,
    })
}

/// Seconds from a number, or from a `YYYY-MM-DD HH:MM:SS[.fraction]` (or `T`-separated) time
/// as seconds since 1970 (only differences matter).
fn seconds(text: &str) -> Option<f64> {
    let text = text.trim().trim_end_matches('Z');
    if let Ok(v) = text.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s >= 61.0 {
        return None;
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn the_azure_trace_columns_load_as_they_are() {
        let (_d, path) = write(
            "azure.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:15:46.6805900,4808,10\n\
             2023-11-16 18:15:50.9951690,3180,8\n\
             2023-11-16 18:15:45.0000000,110,27\n",
        );
        let trace = read(&path, 1.0).unwrap();
        assert_eq!(trace.len(), 3);
        // Sorted by arrival, relative to the first.
        assert_eq!(trace[0].arrival_s, 0.0);
        assert_eq!((trace[0].input_tokens, trace[0].output_tokens), (110, 27));
        assert!(
            (trace[1].arrival_s - 1.68059).abs() < 1e-6,
            "{}",
            trace[1].arrival_s
        );
        assert!((trace[2].arrival_s - 5.995169).abs() < 1e-6);
        let faster = read(&path, 0.5).unwrap();
        assert!((faster[2].arrival_s - 2.9975845).abs() < 1e-6);
    }

    #[test]
    fn jsonl_with_seconds_loads() {
        let (_d, path) = write(
            "t.jsonl",
            "{\"arrival_s\": 0.5, \"input_tokens\": 12, \"output_tokens\": 3}\n\n\
             {\"arrival_s\": 0.25, \"input_tokens\": 7, \"output_tokens\": 1}\n",
        );
        let trace = read(&path, 1.0).unwrap();
        assert_eq!(
            trace,
            vec![
                TraceRequest {
                    arrival_s: 0.0,
                    input_tokens: 7,
                    output_tokens: 1
                },
                TraceRequest {
                    arrival_s: 0.25,
                    input_tokens: 12,
                    output_tokens: 3
                },
            ]
        );
    }

    #[test]
    fn bad_traces_say_what_is_wrong_and_where() {
        let cases = [
            ("a.csv", "time,in,out\n1,2,3\n", "arrival time column"),
            (
                "b.csv",
                "arrival_s,input_tokens,output_tokens\n1,x,3\n",
                "line 2",
            ),
            (
                "c.csv",
                "arrival_s,input_tokens,output_tokens\nsoon,2,3\n",
                "neither seconds",
            ),
            (
                "d.csv",
                "arrival_s,input_tokens,output_tokens\n",
                "no requests",
            ),
            (
                "e.jsonl",
                "{\"arrival_s\": 1, \"input_tokens\": 2}\n",
                "output tokens column",
            ),
            (
                "f.csv",
                "arrival_s,input_tokens,output_tokens\n1,0,3\n",
                "at least one input",
            ),
        ];
        for (name, text, needle) in cases {
            let (_d, path) = write(name, text);
            let err = read(&path, 1.0).unwrap_err().to_string();
            assert!(err.contains(needle), "{name}: {err}");
        }
        let err = read(Path::new("/nonexistent/trace.csv"), 1.0).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
