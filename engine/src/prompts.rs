//! Prompt sets bundled with llmeff, so a study runs with no download.
//!
//! The story openings were written for llmeff; they suit models trained on children's stories
//! (like the bundled tiny-stories model) as well as general chat models.

use crate::stage::{PromptSource, PromptsStage};

/// Names of the bundled prompt sets, as used after `builtin:`.
pub const BUILTIN_SETS: &[&str] = &["stories", "chat", "long"];

const STORIES: &[&str] = &[
    "Once upon a time",
    "The little dog",
    "Lily wanted to",
    "One day, a small bird",
    "Tom and his mom went to the park",
    "There was a big red ball",
    "The cat sat by the window and",
    "In a small town, there lived a girl named Sue",
    "Ben found a shiny stone in the garden",
    "The sun was warm and the sky was blue",
    "Mia had a new toy car",
    "A little fish swam in the pond",
    "Grandma baked a cake for",
    "The boy was sad because",
    "Every morning, the farmer",
    "Sam and Anna built a tall tower of blocks",
    "The old tree in the forest",
    "It was raining, so Max stayed inside and",
    "The princess looked out of the castle",
    "A friendly frog jumped onto a lily pad",
    "At school, Tim met a new friend",
    "The moon was bright that night",
    "Lucy lost her favourite teddy bear",
    "The bunny hopped across the field",
];

const CHAT: &[&str] = &[
    "What is the capital of France?",
    "Explain in one sentence why the sky is blue.",
    "Give me three ideas for a rainy afternoon.",
    "How do I boil an egg?",
    "Write a haiku about autumn.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery.",
    "Translate 'good morning' into Spanish.",
    "Why do cats purr?",
    "Summarise the plot of Little Red Riding Hood.",
    "How many minutes are there in a day?",
    "What should I pack for a weekend hike?",
];

const LONG: &[&str] = &[
    "Once upon a time, in a quiet village at the edge of a great forest, there lived an old \
     clockmaker and his granddaughter. Every day the girl watched him fix the clocks that people \
     brought from far away. Some were tiny and fit in a pocket; others were as tall as a door. \
     One winter morning a stranger knocked and set down a clock that had no hands at all. \
     Summarise what happens next and why the clock matters.",
    "The town council met to decide what to do with the empty field behind the school. Some \
     people wanted a car park, because the streets were full every morning. Others wanted a \
     garden where children could grow vegetables and learn about plants. The baker said a market \
     would bring visitors, and the teacher said a playground would keep children safe. After a \
     long evening of talk they voted. Describe each option and which one you would choose.",
    "A small robot woke up in a workshop full of dust. It did not know who had built it or why. \
     On the bench beside it lay a notebook with drawings of bridges, boats and a strange machine \
     with wings. The last page said: finish what I started. The robot looked at the drawings for \
     a long time, then picked up a screwdriver. Continue the story and explain the robot's plan.",
];

/// The prompts of a bundled set, or `None` if no set has that name.
pub fn builtin(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "stories" => Some(STORIES),
        "chat" => Some(CHAT),
        "long" => Some(LONG),
        _ => None,
    }
}

/// How many prompts a prompts stage yields, without building them.
pub fn count(stage: &PromptsStage) -> usize {
    let available = match &stage.source {
        PromptSource::Builtin(name) => builtin(name).map_or(0, <[_]>::len),
        PromptSource::Inline(items) => items.len(),
    };
    if available == 0 {
        return 0;
    }
    stage.count.unwrap_or(available)
}

/// The prompt texts a prompts stage yields: `count` items drawn in a seeded order, cycling
/// through the source when it has fewer.
pub fn materialise(stage: &PromptsStage) -> Vec<String> {
    let source: Vec<String> = match &stage.source {
        PromptSource::Builtin(name) => builtin(name)
            .unwrap_or_default()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        PromptSource::Inline(items) => items.clone(),
    };
    if source.is_empty() {
        return Vec::new();
    }
    let count = stage.count.unwrap_or(source.len());
    let mut order: Vec<usize> = (0..source.len()).collect();
    if stage.seed != 0 {
        crate::shuffle::shuffle(&mut order, stage.seed);
    }
    (0..count)
        .map(|i| source[order[i % order.len()]].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(count: Option<usize>, seed: u64) -> PromptsStage {
        PromptsStage {
            source: PromptSource::Builtin("stories".into()),
            count,
            max_input_tokens: None,
            seed,
        }
    }

    #[test]
    fn seed_zero_keeps_source_order_and_count_cycles() {
        let p = materialise(&stage(Some(STORIES.len() + 2), 0));
        assert_eq!(p.len(), STORIES.len() + 2);
        assert_eq!(p[0], STORIES[0]);
        assert_eq!(p[STORIES.len()], STORIES[0]);
    }

    #[test]
    fn seeded_order_is_reproducible_and_seed_dependent() {
        assert_eq!(
            materialise(&stage(Some(8), 3)),
            materialise(&stage(Some(8), 3))
        );
        assert_ne!(
            materialise(&stage(Some(8), 3)),
            materialise(&stage(Some(8), 4))
        );
    }

    #[test]
    fn count_agrees_with_materialise() {
        for count in [None, Some(1), Some(STORIES.len() + 5)] {
            assert_eq!(
                super::count(&stage(count, 2)),
                materialise(&stage(count, 2)).len()
            );
        }
    }

    #[test]
    fn every_builtin_set_is_non_empty() {
        for name in BUILTIN_SETS {
            assert!(!builtin(name).unwrap().is_empty(), "{name}");
        }
    }
}
