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
}
