//! What the figures cannot be trusted for, one sentence each: printed under the table and
//! listed in the JSON, since a number without its caveat misleads the same in both.

use crate::measure::BenchRow;

/// A row's copy bandwidth below this share of the copy bandwidth peak is reported as contention:
/// the denominator is a best of 4, and quiet re-measurements on the development VM came within
/// about 10 % of it.
pub const CONTENDED_SHARE: f64 = 0.85;

/// The caveats of `rows`; `copy_peak` is the copy bandwidth each row's `copy now` is
/// compared with.
pub fn warnings(rows: &[BenchRow], copy_peak: Option<f64>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(worst) = rows
        .iter()
        .flat_map(|r| {
            let peers = r.peers.iter().flatten().map(|b| b.cpu_steal_pct);
            std::iter::once(r.cpu_steal_pct).chain(peers)
        })
        .flatten()
        .filter(|p| *p >= engine::metering::STEAL_NOTE_PCT)
        .max_by(f64::total_cmp)
    {
        out.push(format!(
            "CPU steal up to {worst:.0} %: the hypervisor ran other guests on this machine's CPUs during those figures (the CPU steal column; a peer's under its figures), so they are below what this machine does; measure again in the same sitting when steal is near 0"
        ));
    }
    out.extend(contention_note(rows, copy_peak));
    if rows.iter().any(|r| r.on_cpu() && r.cpu_steal_pct.is_none()) {
        out.push(
            "CPU steal \"-\": /proc/stat is unreadable, or the row's timed repeats took under 1 s of CPU time, too short for its 10 ms ticks".into(),
        );
    }
    if let Some(gpu) = rows.iter().find(|r| !r.on_cpu()) {
        out.push(format!(
            "CPU steal and copy now \"-\" on {}: they measure the CPU's time and memory bandwidth, not the device's",
            gpu.device
        ));
        if rows.iter().any(|r| !r.on_cpu() && r.mbu.is_none()) {
            out.push(format!(
                "MBU \"-\" on {}: no datasheet memory bandwidth is known for it (llmeff's table names NVIDIA GPUs as NVML does)",
                gpu.device
            ));
        }
    }
    if rows.iter().any(|r| r.mbu.is_some_and(|m| m > 1.0)) {
        out.push(
            "MBU above 100 %: decoding read faster than the read-bandwidth benchmark (weights that fit in the CPU caches are read from cache)".into(),
        );
    }
    out
}

/// The note under the table when some row's copy bandwidth, measured just before it, fell
/// below [`CONTENDED_SHARE`] of `denominator` (the copy bandwidth peak, bytes/s).
pub fn contention_note(rows: &[BenchRow], denominator: Option<f64>) -> Option<String> {
    let denominator = denominator.filter(|d| *d > 0.0)?;
    let worst = rows
        .iter()
        .filter_map(|r| r.copy_now_bytes_per_s)
        .min_by(f64::total_cmp)?;
    (worst < CONTENDED_SHARE * denominator).then(|| {
        format!(
            "memory contended: the copy benchmark measured down to {:.1} GB/s just before a row ({:.0} % of the {:.1} GB/s copy peak), so other guests or processes were using this machine's memory bandwidth and the figures are below what it does; CPU steal does not show this",
            worst / 1e9,
            100.0 * worst / denominator,
            denominator / 1e9
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Baseline;

    fn row_with_copy(copy_now_bytes_per_s: Option<f64>) -> BenchRow {
        BenchRow {
            model: "m".into(),
            device: "cpu".into(),
            adapter: None,
            format: crate::format::Format::F32,
            compute: "test".into(),
            batch: 1,
            prompt_tokens: 32,
            new_tokens: 64,
            prefill_s: 1.0,
            prefill_tokens_per_s: 32.0,
            decode_tokens_per_s: 10.0,
            decode_bytes_per_s: 1e9,
            mbu: None,
            cpu_steal_pct: None,
            copy_now_bytes_per_s,
            peers: Vec::new(),
        }
    }

    #[test]
    fn contention_is_reported_below_85_percent_of_the_denominator() {
        let gb = 1e9;
        let quiet = [row_with_copy(Some(25.0 * gb)), row_with_copy(None)];
        assert_eq!(contention_note(&quiet, Some(26.4 * gb)), None);
        let busy = [
            row_with_copy(Some(25.0 * gb)),
            row_with_copy(Some(13.2 * gb)),
        ];
        let note = contention_note(&busy, Some(26.4 * gb)).expect("the slow row is reported");
        assert!(note.contains("13.2 GB/s"), "{note}");
        assert!(note.contains("50 %"), "{note}");
        assert!(note.contains("26.4 GB/s"), "{note}");
        // Nothing to compare against: no note rather than a guess.
        assert_eq!(contention_note(&busy, None), None);
        assert_eq!(contention_note(&busy, Some(0.0)), None);
        assert_eq!(
            contention_note(&[row_with_copy(None)], Some(26.4 * gb)),
            None
        );
    }

    #[test]
    fn warnings_hold_the_contention_note_for_the_json_too() {
        let gb = 1e9;
        let busy = [row_with_copy(Some(13.2 * gb))];
        let busy = warnings(&busy, Some(26.4 * gb));
        assert!(
            busy.iter().any(|w| w.starts_with("memory contended")),
            "{busy:?}"
        );
        let quiet = [BenchRow {
            cpu_steal_pct: Some(0.0),
            ..row_with_copy(Some(25.0 * gb))
        }];
        assert_eq!(warnings(&quiet, Some(26.4 * gb)), Vec::<String>::new());
    }

    #[test]
    fn steal_is_the_worst_of_llmeff_and_its_peers_and_mbu_over_one_is_explained() {
        let peer = Baseline {
            prefill_tokens_per_s: 1.0,
            decode_tokens_per_s: 1.0,
            cpu_steal_pct: Some(40.0),
        };
        let rows = [BenchRow {
            cpu_steal_pct: Some(12.0),
            mbu: Some(1.3),
            peers: vec![Some(peer), None],
            ..row_with_copy(None)
        }];
        let out = warnings(&rows, None);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with("CPU steal up to 40 %"), "{out:?}");
        assert!(out[1].starts_with("MBU above 100 %"), "{out:?}");
    }

    #[test]
    fn a_gpu_row_says_why_its_cpu_figures_are_missing_and_not_that_proc_stat_is_unreadable() {
        let gpu = BenchRow {
            device: "wgpu".into(),
            ..row_with_copy(None)
        };
        let out = warnings(std::slice::from_ref(&gpu), None);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0].starts_with("CPU steal and copy now \"-\" on wgpu: "),
            "{out:?}"
        );
        assert!(out[1].starts_with("MBU \"-\" on wgpu: "), "{out:?}");
        let known = BenchRow {
            mbu: Some(0.4),
            ..gpu
        };
        assert_eq!(warnings(&[known], None).len(), 1);
    }
}
