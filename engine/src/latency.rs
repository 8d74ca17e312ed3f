//! Latency arithmetic: per-request timings from step timestamps, and run-level percentiles.
//!
//! Definitions follow MLPerf and vLLM's `benchmark_serving`: TTFT and e2e are measured from the
//! request's **arrival** (vLLM: from request send), so they include the time a request queued
//! before its batch started; TPOT is (e2e − ttft) / (output_tokens − 1); inter-token latencies
//! (ITL) are the gaps between a request's consecutive tokens, and run-level ITL percentiles are
//! taken over every gap of every request. In a closed loop a request arrives when it is handed
//! to the engine, i.e. when its batch starts. The batch-relative first-token time is kept as
//! `ttft_service_s`. Padding never counts as a token; an EOS token the model emitted counts as
//! an output token (it was computed and streamed).

use api::runtime::StepOutput;

/// Timings of one request (one prompt of a batch).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTiming {
    /// The replica that served it (0 for a run on one device).
    pub replica: usize,
    /// Index of the batch within the run.
    pub batch_index: usize,
    /// Index of the prompt within the run.
    pub request_index: usize,
    /// Prompt tokens (no padding).
    pub input_tokens: usize,
    /// Generated tokens (no padding).
    pub output_tokens: usize,
    /// Arrival, seconds after the run's timed window opened.
    pub arrival_s: f64,
    /// Arrival → start of its batch, seconds.
    pub queue_s: f64,
    /// Arrival → first token, seconds (MLPerf/vLLM TTFT).
    pub ttft_s: f64,
    /// Batch start → first token, seconds (TTFT without queueing).
    pub ttft_service_s: f64,
    /// Mean time per output token after the first; `None` with fewer than two tokens.
    pub tpot_s: Option<f64>,
    /// Arrival → last token, seconds.
    pub e2e_s: f64,
    /// Gaps between consecutive tokens, seconds.
    pub inter_token_s: Vec<f64>,
    /// The generated token ids.
    pub output_ids: Vec<u32>,
}

/// When one batch's events happened, all on one monotonic clock, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct BatchClock<'a> {
    /// When each request of the batch arrived.
    pub arrival_s: &'a [f64],
    /// When the batch started (was handed to the model).
    pub start_s: f64,
    /// When the run's timed window opened.
    pub window_start_s: f64,
    /// When each generation step finished.
    pub step_end_s: &'a [f64],
}

/// Turns one batch's step outputs and their clock into per-request timings.
///
/// A request cannot arrive after its batch started: a later arrival is clamped to the start.
pub fn batch_timings(
    batch_index: usize,
    first_request_index: usize,
    input_tokens: &[usize],
    steps: &[StepOutput],
    clock: &BatchClock<'_>,
) -> Vec<RequestTiming> {
    let BatchClock {
        arrival_s,
        start_s,
        window_start_s,
        step_end_s,
    } = *clock;
    (0..input_tokens.len())
        .map(|seq| {
            let mut times = Vec::new();
            let mut ids = Vec::new();
            for (step, &end) in steps.iter().zip(step_end_s) {
                if let Some(Some(token)) = step.tokens.get(seq) {
                    times.push(end);
                    ids.push(*token);
                }
            }
            let arrival = arrival_s[seq].min(start_s);
            let ttft_service_s = times.first().map_or(0.0, |t| t - start_s);
            let ttft_s = times.first().map_or(0.0, |t| t - arrival);
            let e2e_s = times.last().map_or(0.0, |t| t - arrival);
            let n = times.len();
            RequestTiming {
                replica: 0,
                batch_index,
                request_index: first_request_index + seq,
                input_tokens: input_tokens[seq],
                output_tokens: n,
                arrival_s: arrival - window_start_s,
                queue_s: start_s - arrival,
                ttft_s,
                ttft_service_s,
                tpot_s: (n >= 2).then(|| (e2e_s - ttft_s) / (n - 1) as f64),
                e2e_s,
                inter_token_s: times.windows(2).map(|w| w[1] - w[0]).collect(),
                output_ids: ids,
            }
        })
        .collect()
}

/// The requests meeting both targets of `slo` (vLLM's `--goodput`: TTFT from arrival and
/// TPOT each within its target; an unset target always holds). Goodput is this count per
/// second of the run.
pub fn slo_met(requests: &[RequestTiming], slo: &crate::stage::SloSpec) -> usize {
    requests
        .iter()
        .filter(|r| r.output_tokens > 0 && slo.met(r.ttft_s, r.tpot_s))
        .count()
}

/// Percentile with linear interpolation between closest ranks (numpy's default).
/// `q` in [0, 100]; `None` for no values.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = (q / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

/// Arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// p50, p90 and p99 of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
}

impl Percentiles {
    /// Summarises a sample.
    pub fn of(values: &[f64]) -> Self {
        Percentiles {
            p50: percentile(values, 50.0),
            p90: percentile(values, 90.0),
            p99: percentile(values, 99.0),
            mean: mean(values),
        }
    }
}

/// A run's latency figures: percentiles over its requests (vLLM's `benchmark_serving`
/// definitions), each named as its columns are (`ttft` → `ttft_p50_s`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct RunLatency {
    /// `(name, percentiles)`: ttft, ttft_service, queue, tpot, itl, e2e.
    pub figures: [(&'static str, Percentiles); 6],
}

impl RunLatency {
    /// Summarises a run's requests. TPOT is over requests with two or more tokens; ITL is over
    /// every gap between consecutive tokens of every request, not a per-request summary.
    pub fn of(requests: &[RequestTiming]) -> RunLatency {
        let over = |f: fn(&RequestTiming) -> f64| {
            Percentiles::of(&requests.iter().map(f).collect::<Vec<_>>())
        };
        let tpot: Vec<f64> = requests.iter().filter_map(|r| r.tpot_s).collect();
        let itl: Vec<f64> = requests
            .iter()
            .flat_map(|r| r.inter_token_s.iter().copied())
            .collect();
        RunLatency {
            figures: [
                ("ttft", over(|r| r.ttft_s)),
                ("ttft_service", over(|r| r.ttft_service_s)),
                ("queue", over(|r| r.queue_s)),
                ("tpot", Percentiles::of(&tpot)),
                ("itl", Percentiles::of(&itl)),
                ("e2e", over(|r| r.e2e_s)),
            ],
        }
    }

    /// The percentiles of one figure by name.
    pub fn get(&self, name: &str) -> Option<&Percentiles> {
        self.figures
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goodput's count on scripted latencies: both targets must hold, a missing target
    /// always holds, a one-token request has no TPOT, a request without tokens never counts.
    #[test]
    fn slo_counts_requests_meeting_both_targets() {
        let request = |ttft_s: f64, tpot_s: Option<f64>, output_tokens: usize| RequestTiming {
            replica: 0,
            batch_index: 0,
            request_index: 0,
            input_tokens: 4,
            output_tokens,
            arrival_s: 0.0,
            queue_s: 0.0,
            ttft_s,
            ttft_service_s: ttft_s,
            tpot_s,
            e2e_s: ttft_s,
            inter_token_s: Vec::new(),
            output_ids: Vec::new(),
        };
        let requests = vec![
            request(0.10, Some(0.02), 5), // meets both
            request(0.30, Some(0.02), 5), // TTFT too slow
            request(0.10, Some(0.08), 5), // TPOT too slow
            request(0.20, None, 1),       // one token: TTFT decides (0.20 <= 0.25)
            request(0.00, None, 0),       // nothing produced
        ];
        let both = crate::stage::SloSpec {
            ttft_s: Some(0.25),
            tpot_s: Some(0.05),
        };
        assert_eq!(slo_met(&requests, &both), 2);
        let ttft_only = crate::stage::SloSpec {
            ttft_s: Some(0.25),
            tpot_s: None,
        };
        assert_eq!(slo_met(&requests, &ttft_only), 3);
    }

    fn step(tokens: &[Option<u32>]) -> StepOutput {
        StepOutput {
            tokens: tokens.to_vec(),
            finished: false,
        }
    }

    #[test]
    fn ttft_tpot_and_e2e_follow_their_definitions() {
        // Two sequences; the second stops after two tokens (None afterwards).
        let steps = [
            step(&[Some(5), Some(7)]),
            step(&[Some(6), Some(2)]),
            step(&[Some(9), None]),
            step(&[Some(3), None]),
        ];
        let ends = [10.5, 10.7, 11.0, 11.4];
        // The requests arrived at 10.0 and 9.5; the batch started at 10.1 (window at 9.0).
        let clock = BatchClock {
            arrival_s: &[10.0, 9.5],
            start_s: 10.1,
            window_start_s: 9.0,
            step_end_s: &ends,
        };
        let t = batch_timings(0, 0, &[4, 3], &steps, &clock);
        let a = &t[0];
        assert!((a.arrival_s - 1.0).abs() < 1e-12);
        assert!((a.queue_s - 0.1).abs() < 1e-12);
        // TTFT and e2e from arrival (vLLM: from request send), the service TTFT from start.
        assert!((a.ttft_s - 0.5).abs() < 1e-12);
        assert!((a.ttft_service_s - 0.4).abs() < 1e-12);
        assert!((a.e2e_s - 1.4).abs() < 1e-12);
        assert!((a.tpot_s.unwrap() - 0.3).abs() < 1e-12); // (1.4 - 0.5) / 3
        assert_eq!(a.output_tokens, 4);
        assert_eq!(a.inter_token_s.len(), 3);
        let b = &t[1];
        assert_eq!(b.output_tokens, 2);
        assert!((b.queue_s - 0.6).abs() < 1e-12);
        assert!((b.ttft_s - 1.0).abs() < 1e-12);
        assert!((b.e2e_s - 1.2).abs() < 1e-12);
        assert!((b.tpot_s.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(b.output_ids, vec![7, 2]);
    }

    #[test]
    fn one_token_has_no_tpot() {
        let clock = BatchClock {
            arrival_s: &[0.0],
            start_s: 0.0,
            window_start_s: 0.0,
            step_end_s: &[0.25],
        };
        let t = batch_timings(0, 0, &[1], &[step(&[Some(1)])], &clock);
        assert_eq!(t[0].tpot_s, None);
        assert_eq!(t[0].ttft_s, 0.25);
    }

    #[test]
    fn percentiles_match_numpy_linear_interpolation() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert!((percentile(&v, 90.0).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
