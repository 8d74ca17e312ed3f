//! "Did you mean" suggestions for misspelt names, by edit distance.
//!
//! Used for unknown functions and unknown option keys, so a typo names the intended word
//! instead of a list the author has to search.

/// Edit distance with adjacent transpositions counted as one edit (optimal string alignment),
/// so `laod` is one edit from `load`.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: the one before the previous is needed for transpositions.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `word` when it is close enough to be a likely typo: at most a
/// third of the word's length in edits, and at least one. Ties go to the earlier candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let d = distance(&word.to_lowercase(), &candidate.to_lowercase());
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpositions_insertions_and_deletions_are_one_edit() {
        assert_eq!(distance("laod", "load"), 1);
        assert_eq!(distance("mesure", "measure"), 1);
        assert_eq!(distance("inferr", "infer"), 1);
        assert_eq!(distance("load", "load"), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_picks_a_near_name_and_refuses_a_far_one() {
        let stages = ["load", "prompts", "batch", "infer", "measure"];
        assert_eq!(closest("laod", stages), Some("load"));
        assert_eq!(closest("Batch", stages), Some("batch"));
        assert_eq!(closest("promts", stages), Some("prompts"));
        assert_eq!(closest("frobnicate", stages), None);
        // One edit on a three-letter word is allowed, two are not.
        assert_eq!(closest("lod", ["load"]), Some("load"));
        assert_eq!(closest("xy", ["load"]), None);
    }
}
