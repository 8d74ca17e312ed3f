//! Peers' figures for the same models and batches, read from the output of the baseline
//! scripts (`benches/transformers_shapes.py`, `benches/candle-shapes`,
//! `benches/llama_cpp_shapes.py`), matched by shape, weight format and batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::format::Format;

/// Prompt length every peer baseline measures with, tokens.
pub const BASELINE_PROMPT_TOKENS: usize = 32;
/// New tokens every peer baseline generates.
pub const BASELINE_NEW_TOKENS: usize = 64;

/// A peer's speed on one model and batch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Baseline {
    /// Prompt tokens per second of the prompt pass (every sequence of the batch).
    pub prefill_tokens_per_s: f64,
    /// New tokens per second while decoding (every sequence of the batch).
    pub decode_tokens_per_s: f64,
    /// CPU steal during the peer's timed runs, percent, where its script recorded it.
    pub cpu_steal_pct: Option<f64>,
}

/// One baseline file: who was measured, and their figures by (shape, batch).
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// The tool and version, from the file's `tool` field (else `transformers` when the file
    /// names a torch version, else the file's name).
    pub tool: String,
    /// Figures by (baseline shape key, weight format, batch).
    pub figures: BTreeMap<(String, Format, usize), Baseline>,
}

impl Peer {
    /// Whether this peer is llama.cpp, whose formats are [`Format::llama_cpp_type`]'s.
    pub fn is_llama_cpp(&self) -> bool {
        self.tool.starts_with("llama.cpp")
    }
}

/// Why a baseline file gives no figures.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// The file cannot be read.
    #[error("cannot read the baseline {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no line with a shape's figures.
    #[error(
        "{} holds no peer figures (lines `<shape> {{\"batch1\": ...}}` as benches/transformers_shapes.py prints)",
        path.display()
    )]
    NoFigures {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a peer baseline's output: per-shape lines `<shape> {json}` and/or a JSON line with
/// every shape (and the `tool`), so the output of an interrupted run still counts. A shape's
/// figures are f32 unless its JSON names a `format` (llmeff's name) or a `llama_cpp_type`; a
/// whole-file line may also list them as `rows` of `{"shape": ..., "format": ..., ...}`.
/// Figures in a format llmeff does not measure are left out.
pub fn read_baseline(path: &Path) -> Result<Peer, BaselineError> {
    let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut shapes: BTreeMap<(String, Format), serde_json::Value> = BTreeMap::new();
    let mut add = |name: &str, value: serde_json::Value| {
        if let Some(format) = format_of(&value) {
            shapes.insert((name.to_string(), format), value);
        }
    };
    let mut tool = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Ok(serde_json::Value::Object(all)) = serde_json::from_str(line) {
            if let Some(name) = all.get("tool").and_then(serde_json::Value::as_str) {
                tool = Some(name.to_string());
            } else if let Some(torch) = all.get("torch").and_then(serde_json::Value::as_str) {
                tool.get_or_insert_with(|| format!("transformers (torch {torch})"));
            }
            for (key, value) in all {
                if value.is_object() {
                    add(&key, value);
                } else if key == "rows"
                    && let serde_json::Value::Array(rows) = value
                {
                    for row in rows {
                        let shape = row.get("shape").and_then(serde_json::Value::as_str);
                        if let Some(shape) = shape.map(str::to_string) {
                            add(&shape, row);
                        }
                    }
                }
            }
        } else if let Some((name, json)) = line.split_once(' ')
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(json)
        {
            add(name, value);
        }
    }
    let mut out = BTreeMap::new();
    for ((shape, format), value) in &shapes {
        // Every `batch<N>` the peer measured (1 and 8 by default; more with its BATCHES).
        let Some(rows) = value.as_object() else {
            continue;
        };
        for (key, row) in rows {
            let Some(batch) = key
                .strip_prefix("batch")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&b| b > 0)
            else {
                continue;
            };
            let prefill_s = row.get("prefill_s").and_then(serde_json::Value::as_f64);
            let decode = row
                .get("decode_tokens_per_s")
                .and_then(serde_json::Value::as_f64);
            if let (Some(prefill_s), Some(decode)) = (prefill_s, decode)
                && prefill_s > 0.0
            {
                out.insert(
                    (shape.clone(), *format, batch),
                    Baseline {
                        prefill_tokens_per_s: (batch * BASELINE_PROMPT_TOKENS) as f64 / prefill_s,
                        decode_tokens_per_s: decode,
                        cpu_steal_pct: row.get("cpu_steal_pct").and_then(serde_json::Value::as_f64),
                    },
                );
            }
        }
    }
    if out.is_empty() {
        return Err(BaselineError::NoFigures {
            path: path.to_path_buf(),
        });
    }
    let tool = tool.unwrap_or_else(|| {
        path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    Ok(Peer { tool, figures: out })
}

/// The weight format of one shape's figures: its `format` (llmeff's name), else its
/// `llama_cpp_type`, else f32 (the peers that measure only f32 name none); `None` for a
/// format llmeff does not measure.
fn format_of(value: &serde_json::Value) -> Option<Format> {
    if let Some(name) = value.get("format").and_then(serde_json::Value::as_str) {
        return Format::parse(name).ok();
    }
    match value
        .get("llama_cpp_type")
        .and_then(serde_json::Value::as_str)
    {
        Some(llama_type) => Format::from_llama_cpp_type(llama_type),
        None => Some(Format::F32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_reads_shape_lines_and_the_final_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.jsonl");
        // An interrupted run: one shape line, no final line.
        std::fs::write(
            &path,
            "Loading weights: 100%\nsmollm-135m {\"batch1\": {\"prefill_s\": 0.2, \"decode_tokens_per_s\": 14.2, \"generate_s\": 4.6}}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap();
        assert_eq!(b.tool, "baseline", "no tool named: the file's name");
        let b = b.figures;
        assert_eq!(
            b[&("smollm-135m".to_string(), Format::F32, 1)],
            Baseline {
                prefill_tokens_per_s: 160.0,
                decode_tokens_per_s: 14.2,
                cpu_steal_pct: None,
            }
        );
        assert!(!b.contains_key(&("smollm-135m".to_string(), Format::F32, 8)));
        // Any batch the peer measured, and a preset's Hub id as the shape.
        std::fs::write(
            &path,
            "meta-llama/Llama-3.2-1B {\"batch4\": {\"prefill_s\": 1.6, \"decode_tokens_per_s\": 9.5}, \"batches\": 3}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap().figures;
        let four = &b[&("meta-llama/Llama-3.2-1B".to_string(), Format::F32, 4)];
        assert_eq!(
            (four.prefill_tokens_per_s, four.decode_tokens_per_s),
            (80.0, 9.5)
        );
        assert_eq!(b.len(), 1);
        // A finished run's last line holds every shape.
        std::fs::write(
            &path,
            "{\"torch\": \"2.15.0\", \"threads\": 2, \"tinyllama-1.1b\": {\"batch8\": {\"prefill_s\": 6.4, \"decode_tokens_per_s\": 4.1}}}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap();
        assert_eq!(b.tool, "transformers (torch 2.15.0)");
        assert_eq!(
            b.figures[&("tinyllama-1.1b".to_string(), Format::F32, 8)].prefill_tokens_per_s,
            40.0
        );
        // Other peers name themselves, on their first or last line.
        std::fs::write(
            &path,
            "{\"tool\": \"candle 0.11.1\"}\nsmollm-135m {\"batch8\": {\"prefill_s\": 0.5, \"decode_tokens_per_s\": 140.0, \"cpu_steal_pct\": 12.5}}\n",
        )
        .unwrap();
        let b = read_baseline(&path).unwrap();
        assert_eq!(b.tool, "candle 0.11.1");
        let row = b.figures[&("smollm-135m".to_string(), Format::F32, 8)];
        assert_eq!(row.prefill_tokens_per_s, 512.0);
        assert_eq!(row.cpu_steal_pct, Some(12.5), "the steal the peer recorded");
        std::fs::write(&path, "nothing useful\n").unwrap();
        assert!(
            read_baseline(&path)
                .unwrap_err()
                .to_string()
                .contains("no peer figures")
        );
        assert!(matches!(
            read_baseline(&dir.path().join("missing")),
            Err(BaselineError::Read { .. })
        ));
    }

    #[test]
    fn figures_are_matched_by_format_and_llama_cpp_types_read_as_llmeff_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("llamacpp.jsonl");
        // benches/llama_cpp_shapes.py --types f32,q8_0,q4_k: its per-shape lines, then the
        // whole run's line; a type without an llmeff format is left out.
        std::fs::write(
            &path,
            concat!(
                "{\"tool\": \"llama.cpp 0c1e57098\"}\n",
                "smollm-135m {\"format\": \"f32\", \"llama_cpp_type\": \"f32\", \"batch1\": {\"prefill_s\": 0.32, \"decode_tokens_per_s\": 50.0}}\n",
                "smollm-135m {\"format\": \"int8\", \"llama_cpp_type\": \"q8_0\", \"batch1\": {\"prefill_s\": 0.16, \"decode_tokens_per_s\": 90.0}}\n",
                "{\"tool\": \"llama.cpp 0c1e57098\", \"threads\": 2, \"rows\": [",
                "{\"shape\": \"tinyllama-1.1b\", \"llama_cpp_type\": \"q4_0\", \"batch8\": {\"prefill_s\": 2.56, \"decode_tokens_per_s\": 20.0}}, ",
                "{\"shape\": \"tinyllama-1.1b\", \"llama_cpp_type\": \"q4_k\", \"batch8\": {\"prefill_s\": 1.0, \"decode_tokens_per_s\": 30.0}}]}\n",
            ),
        )
        .unwrap();
        let peer = read_baseline(&path).unwrap();
        assert!(peer.is_llama_cpp());
        let figure = |shape: &str, format, batch| {
            peer.figures
                .get(&(shape.to_string(), format, batch))
                .map(|b| b.decode_tokens_per_s)
        };
        assert_eq!(figure("smollm-135m", Format::F32, 1), Some(50.0));
        assert_eq!(figure("smollm-135m", Format::Int8, 1), Some(90.0));
        assert_eq!(
            peer.figures[&("smollm-135m".to_string(), Format::Int8, 1)].prefill_tokens_per_s,
            200.0
        );
        assert_eq!(figure("tinyllama-1.1b", Format::Int4, 8), Some(20.0));
        assert_eq!(peer.figures.len(), 3, "q4_k has no llmeff format: {peer:?}");
        // A peer that names no format measured f32.
        std::fs::write(
            &path,
            "smollm-135m {\"batch1\": {\"prefill_s\": 0.2, \"decode_tokens_per_s\": 14.2}}\n",
        )
        .unwrap();
        let peer = read_baseline(&path).unwrap();
        assert!(!peer.is_llama_cpp());
        assert_eq!(
            peer.figures.keys().collect::<Vec<_>>(),
            [&("smollm-135m".to_string(), Format::F32, 1)]
        );
    }
}
