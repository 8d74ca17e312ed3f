//! The models the benchmark measures, and which of them `--models` selects.

use api::runtime::WeightsKind;

/// A model the benchmark measures.
#[derive(Debug, Clone, Copy)]
pub struct BenchModel {
    /// Name in the table.
    pub label: &'static str,
    /// Model source for the runtime.
    pub source: &'static str,
    /// Pretrained (bundled) or random weights of a preset shape.
    pub weights: WeightsKind,
    /// Its name in the peer baselines' output (`benches/transformers_shapes.py` and the others).
    pub baseline_key: &'static str,
}

/// The models measured, in table order.
pub const MODELS: &[BenchModel] = &[
    BenchModel {
        label: "tiny-stories",
        source: "tiny-stories",
        weights: WeightsKind::Pretrained,
        baseline_key: "tiny-stories-dir",
    },
    BenchModel {
        label: "SmolLM-135M shape",
        source: "HuggingFaceTB/SmolLM-135M",
        weights: WeightsKind::Random,
        baseline_key: "smollm-135m",
    },
    BenchModel {
        label: "TinyLlama-1.1B shape",
        source: "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        weights: WeightsKind::Random,
        baseline_key: "tinyllama-1.1b",
    },
];

/// The models `filters` select: the built-in ones whose label contains a filter, and for a
/// filter that names none of them, the presets (Hub ids with a built-in config, measured with
/// random weights) whose id contains it, ignoring case. Every built-in model when `filters` is
/// empty.
pub fn selected(filters: &[String], presets: &[&'static str]) -> Vec<BenchModel> {
    let mut chosen: Vec<BenchModel> = MODELS
        .iter()
        .filter(|m| is_selected(filters, m.label))
        .copied()
        .collect();
    for filter in filters {
        if MODELS
            .iter()
            .any(|m| is_selected(std::slice::from_ref(filter), m.label))
        {
            continue;
        }
        let wanted = filter.to_lowercase();
        for &id in presets {
            let taken = chosen.iter().any(|m| m.source == id);
            if !taken && id.to_lowercase().contains(&wanted) {
                chosen.push(BenchModel {
                    label: id,
                    source: id,
                    weights: WeightsKind::Random,
                    baseline_key: id,
                });
            }
        }
    }
    chosen
}

/// The model whose resident memory is followed over a long generation.
pub const GROWTH_MODEL: &str = "tiny-llama3-gqa";

/// Whether a model is among `filters` (every model when none is named): a filter selects the
/// models whose label contains it, ignoring case.
pub fn is_selected(filters: &[String], label: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|w| label.to_lowercase().contains(&w.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_filter_selects_the_memory_model_too() {
        assert!(is_selected(&[], GROWTH_MODEL), "no filter: everything");
        assert!(!is_selected(&["tiny-stories".into()], GROWTH_MODEL));
        assert!(is_selected(&["GQA".into()], GROWTH_MODEL));
        assert!(is_selected(&["smollm".into()], "SmolLM-135M shape"));
    }

    #[test]
    fn a_filter_naming_no_built_in_model_takes_the_presets() {
        let presets = [
            "HuggingFaceTB/SmolLM-135M",
            "meta-llama/Llama-3.2-1B",
            "meta-llama/Llama-3.2-3B",
        ];
        let labels = |filters: &[&str]| -> Vec<&str> {
            let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
            selected(&filters, &presets)
                .iter()
                .map(|m| m.label)
                .collect()
        };
        assert_eq!(
            labels(&[]),
            ["tiny-stories", "SmolLM-135M shape", "TinyLlama-1.1B shape"]
        );
        assert_eq!(labels(&["llama-3.2-1b"]), ["meta-llama/Llama-3.2-1B"]);
        assert_eq!(
            labels(&["Llama-3.2"]),
            ["meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B"]
        );
        // SmolLM is a built-in model: its preset is not added twice.
        assert_eq!(labels(&["smollm", "SmolLM-135M"]), ["SmolLM-135M shape"]);
        assert!(labels(&["gpt-9"]).is_empty());
        let preset = &selected(&["3.2-3b".to_string()], &presets)[0];
        assert_eq!(
            (preset.source, preset.weights),
            ("meta-llama/Llama-3.2-3B", WeightsKind::Random)
        );
    }
}
