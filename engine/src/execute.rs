//! Executing a schedule: load models, run generations, time them, hand records to a sink.
//!
//! A failure inside one run (a corrupt model, a backend error) becomes a failed record and the
//! study goes on; only a sink failure (results cannot be stored) stops the study.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::batching::form_batches;
use crate::latency::{BatchClock, RequestTiming, batch_timings};
use crate::metering::{PhaseTimes, RunMeters};
use crate::plan::RunSpec;
use crate::prompts;
use crate::quality_run::{QualityFailure, QualityInputs, ReferenceCache, measure_quality};
use crate::record::{RecordSink, RunMetrics, RunRecord, RunStatus, SinkError};
use crate::schedule::{Schedule, ScheduledRun};
use crate::stage::StageId;
use api::meter::{MeterProvider, NoMeters};
use api::runtime::{GenerateOptions, LoadedModel, Runtime, RuntimeError, StepOutput};

/// A monotonic clock in seconds; tests substitute a scripted one.
pub trait Clock {
    /// Seconds since an arbitrary fixed origin; never decreases.
    fn now_s(&self) -> f64;
    /// Waits `seconds` (used to wait for scheduled request arrivals, outside any timing).
    fn sleep_s(&self, seconds: f64);
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn sleep_s(&self, seconds: f64) {
        if seconds > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
        }
    }
}

/// What the executor tells a progress display.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The study starts: how many executions are pending and how many were already done.
    StudyStarted {
        /// Executions still to run.
        pending: usize,
        /// Executions found already stored.
        already_done: usize,
    },
    /// A model is being loaded.
    Loading {
        /// Model source.
        model: String,
    },
    /// A run starts.
    RunStarted {
        /// 1-based index among pending executions.
        index: usize,
        /// Pending executions.
        total: usize,
        /// Short description.
        label: String,
    },
    /// A run failed with a backend error and will be tried again.
    Retrying {
        /// 1-based index.
        index: usize,
        /// Which retry this is (1-based).
        attempt: usize,
        /// The error of the failed attempt.
        error: String,
    },
    /// A run ended.
    RunFinished {
        /// 1-based index.
        index: usize,
        /// Ok or failed.
        status: RunStatus,
        /// Summary line (throughput or the error).
        summary: String,
    },
}

/// How a study ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Runs that finished.
    pub ok: usize,
    /// Runs that failed.
    pub failed: usize,
    /// Runs skipped because their results were already stored.
    pub skipped: usize,
    /// The study was stopped by its cancel flag before every pending run executed; the run in
    /// progress then was abandoned and wrote nothing.
    pub cancelled: bool,
}

/// Why one execution of a run produced no measurements.
enum RunFailure {
    /// The runtime failed.
    Runtime(RuntimeError),
    /// The cancel flag was raised mid-run.
    Cancelled,
}

impl From<RuntimeError> for RunFailure {
    fn from(e: RuntimeError) -> Self {
        RunFailure::Runtime(e)
    }
}

/// The model of one load group in one cycle, or why it failed to load.
type LoadedGroup = (StageId, usize, Result<Box<dyn LoadedModel>, RuntimeError>);

/// Runs schedules against a runtime.
pub struct Executor<'a> {
    runtime: &'a dyn Runtime,
    clock: &'a dyn Clock,
    meters: &'a dyn MeterProvider,
    cancel: Option<&'a AtomicBool>,
    /// Where quality references are kept; `None`: quality is not measured.
    quality: Option<&'a dyn ReferenceCache>,
}

impl<'a> Executor<'a> {
    /// An executor over a runtime and a clock.
    pub fn new(runtime: &'a dyn Runtime, clock: &'a dyn Clock) -> Self {
        Executor {
            runtime,
            clock,
            meters: &NoMeters,
            cancel: None,
            quality: None,
        }
    }

    /// Stops the study when `cancel` is raised: no further run starts, and the run in progress
    /// is abandoned at its next generation step without writing anything.
    pub fn with_cancel(mut self, cancel: &'a AtomicBool) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }

    /// Fails with `Cancelled` once the cancel flag is up.
    fn check_cancel(&self) -> Result<(), RunFailure> {
        if self.cancelled() {
            Err(RunFailure::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Waits `seconds` in slices, so a raised cancel flag ends a long wait (an arrival gap,
    /// an idle baseline, a retry delay) within one slice.
    fn wait(&self, seconds: f64) -> Result<(), RunFailure> {
        const SLICE_S: f64 = 0.1;
        // Slices are measured against the clock, so a sleep's overshoot is not repeated.
        let until = self.clock.now_s() + seconds;
        loop {
            self.check_cancel()?;
            let left = until - self.clock.now_s();
            if left <= 0.0 {
                return Ok(());
            }
            self.clock.sleep_s(left.min(SLICE_S));
        }
    }

    /// Measures each finished run's quality against its reference (when the schedule asks
    /// for it), keeping reference outputs in `cache`.
    pub fn with_quality(mut self, cache: &'a dyn ReferenceCache) -> Self {
        self.quality = Some(cache);
        self
    }

    /// The run's quality, or a note why it is missing; `Err` only when cancelled.
    fn measure_quality(
        &self,
        run: &RunSpec,
        model: &dyn LoadedModel,
        metrics: &mut RunMetrics,
    ) -> Result<(), RunFailure> {
        let Some(cache) = self.quality else {
            return Ok(());
        };
        let result = encode_prompts(run, model)
            .map_err(|source| QualityFailure::Runtime {
                which: "run",
                source,
            })
            .and_then(|encoded| {
                measure_quality(&QualityInputs {
                    runtime: self.runtime,
                    model,
                    run,
                    encoded: &encoded,
                    cache,
                    cancelled: &|| self.cancelled(),
                })
            });
        match result {
            Ok((quality, notes)) => {
                metrics.quality = Some(quality);
                metrics.meters.notes.extend(notes);
            }
            Err(QualityFailure::Cancelled) => return Err(RunFailure::Cancelled),
            // Quality is a figure beside the run, not the run: its failure only leaves the
            // quality columns null.
            Err(e) => metrics
                .meters
                .notes
                .push(format!("quality not measured: {e}")),
        }
        Ok(())
    }

    /// Uses a machine's meters (energy, memory, utilisation, device peaks).
    pub fn with_meters(mut self, meters: &'a dyn MeterProvider) -> Self {
        self.meters = meters;
        self
    }

    /// Executes every scheduled run not already in the sink.
    pub fn execute(
        &self,
        schedule: &Schedule,
        sink: &mut dyn RecordSink,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Outcome, SinkError> {
        let done = sink.completed();
        let pending: Vec<&ScheduledRun> = schedule
            .items
            .iter()
            .filter(|item| !done.contains(&(item.run.id.hex(), item.cycle)))
            .collect();
        let mut outcome = Outcome {
            skipped: schedule.items.len() - pending.len(),
            ..Outcome::default()
        };
        progress(Progress::StudyStarted {
            pending: pending.len(),
            already_done: outcome.skipped,
        });
        // Progress lines name the settings that tell this study's runs apart.
        let varying = RunSpec::varying_keys(schedule.items.iter().map(|item| item.run.as_ref()));
        // The model of the current load group; replaced (and the old one dropped) when the
        // group changes, so at most one model is resident at a time.
        let mut loaded: Option<LoadedGroup> = None;
        for (i, item) in pending.iter().enumerate() {
            if self.cancelled() {
                outcome.cancelled = true;
                break;
            }
            let key = (item.run.load_id, item.cycle);
            if loaded.as_ref().map(|(id, cycle, _)| (*id, *cycle)) != Some(key) {
                // Free the previous model before loading the next, so two never coexist.
                drop(loaded.take());
                progress(Progress::Loading {
                    model: item.run.load.model.clone(),
                });
                let model = self.runtime.load(&item.run.model_spec());
                loaded = Some((key.0, key.1, model));
            }
            let label = format!("{} cycle {}", item.run.label(&varying), item.cycle);
            progress(Progress::RunStarted {
                index: i + 1,
                total: pending.len(),
                label,
            });
            let started_at_unix_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let model = loaded.as_ref().map(|(_, _, m)| m.as_ref());
            let mut record = RunRecord {
                study: schedule.study.clone(),
                run_hash: item.run.id.hex(),
                cycle: item.cycle,
                spec: (*item.run).clone(),
                status: RunStatus::Failed,
                error: None,
                model: None,
                started_at_unix_s,
                metrics: None,
                requests: Vec::new(),
            };
            match model {
                Some(Ok(model)) => {
                    record.model = Some(model.info().clone());
                    let mut attempt = 0;
                    loop {
                        match self.run_one(item, model.as_ref()) {
                            Err(RunFailure::Cancelled) => {
                                outcome.cancelled = true;
                                return Ok(outcome);
                            }
                            Ok((mut metrics, requests)) => {
                                if schedule.quality
                                    && self
                                        .measure_quality(&item.run, model.as_ref(), &mut metrics)
                                        .is_err()
                                {
                                    outcome.cancelled = true;
                                    return Ok(outcome);
                                }
                                record.status = RunStatus::Ok;
                                record.metrics = Some(metrics);
                                record.requests = requests;
                                record.error = None;
                                break;
                            }
                            // Only backend failures can be transient (device busy, memory
                            // pressure); bad input would fail the same way again.
                            Err(RunFailure::Runtime(
                                e @ (RuntimeError::Backend(_) | RuntimeError::BackendFailure(_)),
                            )) if attempt < schedule.retries => {
                                attempt += 1;
                                record.error = Some(e.to_string());
                                progress(Progress::Retrying {
                                    index: i + 1,
                                    attempt,
                                    error: e.to_string(),
                                });
                                if self.wait(schedule.retry_delay_s).is_err() {
                                    outcome.cancelled = true;
                                    return Ok(outcome);
                                }
                            }
                            Err(RunFailure::Runtime(e)) => {
                                record.error = Some(if attempt > 0 {
                                    format!("{e} (after {attempt} retries)")
                                } else {
                                    e.to_string()
                                });
                                break;
                            }
                        }
                    }
                }
                Some(Err(e)) => record.error = Some(format!("model load failed: {e}")),
                None => record.error = Some("model was not loaded".to_string()),
            }
            sink.record(&record)?;
            let summary = match (&record.status, &record.metrics) {
                (RunStatus::Ok, Some(m)) => format!(
                    "{} tokens in {:.3} s ({:.1} tokens/s)",
                    m.output_tokens,
                    m.wall_s,
                    m.output_tokens_per_s().unwrap_or(0.0)
                ),
                _ => record.error.clone().unwrap_or_default(),
            };
            match record.status {
                RunStatus::Ok => outcome.ok += 1,
                RunStatus::Failed => outcome.failed += 1,
            }
            progress(Progress::RunFinished {
                index: i + 1,
                status: record.status,
                summary,
            });
        }
        Ok(outcome)
    }

    fn run_one(
        &self,
        item: &ScheduledRun,
        model: &dyn LoadedModel,
    ) -> Result<(RunMetrics, Vec<RequestTiming>), RunFailure> {
        let run = &item.run;
        let encoded = encode_prompts(run, model)?;
        if encoded.is_empty() {
            return Err(RuntimeError::InvalidInput("the prompt set is empty".into()).into());
        }
        let options = GenerateOptions {
            max_new_tokens: run.infer.max_new_tokens,
            min_new_tokens: run.infer.min_new_tokens,
            stop_at_eos: run.infer.stop_at_eos,
            decoding: run.infer.decoding.to_runtime(),
        };
        let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let ranges = form_batches(
            &lengths,
            run.batch.size,
            run.batch.token_budget,
            options.max_new_tokens,
        );
        let batches: Vec<&[Vec<u32>]> = ranges.iter().map(|r| &encoded[r.clone()]).collect();
        let arrivals = run.infer.arrival.arrivals(encoded.len());
        let closed_loop = run.infer.arrival == crate::stage::ArrivalSpec::ClosedLoop;

        let mut meters = RunMeters::open(self.meters, &run.load.device, &run.measure);
        // The peak may run a short microbenchmark the first time: outside any timing.
        let peak = self.meters.peak(&run.load.device, run.load.dtype.name());
        meters.idle_baseline(run.measure.idle_baseline_s, &|| self.clock.now_s(), &|s| {
            // A cancel ends the wait early; the check below then abandons the run.
            let _ = self.wait(s);
        });
        self.check_cancel()?;

        let warmup_start = self.clock.now_s();
        for _ in 0..run.infer.warmup {
            let mut generation = model.start(batches[0], &options)?;
            loop {
                self.check_cancel()?;
                if generation.step()?.finished {
                    break;
                }
            }
        }
        let warmup_s = self.clock.now_s() - warmup_start;

        let mut metrics = RunMetrics {
            warmup_s,
            num_batches: batches.len(),
            peak,
            ..RunMetrics::default()
        };
        let dtype_bytes = run.load.dtype.size_bytes() as u64;
        let mut requests = Vec::with_capacity(encoded.len());
        meters.start();
        let run_start = self.clock.now_s();
        for (b, batch) in batches.iter().enumerate() {
            let range = ranges[b].clone();
            // A batch starts once its last request has arrived; the wait is idle time, outside
            // every request's timing (it shows up as queue_s of the earlier arrivals).
            let ready = run_start + arrivals[range.clone()].iter().copied().fold(0.0, f64::max);
            let now = self.clock.now_s();
            if ready > now {
                self.wait(ready - now)?;
            }
            let start = self.clock.now_s();
            let energy_start = meters.read_energy();
            let mut energy_prefilled = energy_start;
            let mut generation = model.start(batch, &options)?;
            let mut steps: Vec<StepOutput> = Vec::with_capacity(options.max_new_tokens);
            let mut ends = Vec::with_capacity(options.max_new_tokens);
            loop {
                self.check_cancel()?;
                let out = generation.step()?;
                let end = self.clock.now_s();
                if steps.is_empty() {
                    // The phase boundary: what came before was the prompt pass.
                    energy_prefilled = meters.read_energy();
                    meters.add_prefill(&energy_start, &energy_prefilled);
                }
                metrics.kv_cache_peak_bytes =
                    metrics.kv_cache_peak_bytes.max(generation.kv_cache_bytes());
                let finished = out.finished;
                steps.push(out);
                ends.push(end);
                if finished || steps.len() > options.max_new_tokens {
                    break;
                }
            }
            let energy_end = meters.read_energy();
            meters.add_decode(&energy_prefilled, &energy_end);
            metrics.prefill_s += ends[0] - start;
            metrics.decode_s += ends[ends.len() - 1] - ends[0];
            // In a closed loop a request arrives when it is handed to the engine: its batch's
            // start. Scheduled arrivals are offsets from the window's opening.
            let absolute: Vec<f64> = if closed_loop {
                vec![start; range.len()]
            } else {
                arrivals[range.clone()]
                    .iter()
                    .map(|a| run_start + a)
                    .collect()
            };
            let first = requests.len();
            requests.extend(batch_timings(
                b,
                range.start,
                &lengths[range.clone()],
                &steps,
                &BatchClock {
                    arrival_s: &absolute,
                    start_s: start,
                    window_start_s: run_start,
                    step_end_s: &ends,
                },
            ));
            metrics.decode_bytes += crate::flops::decode_read_bytes(
                model.info(),
                steps.len() as u64 - 1,
                requests[first..]
                    .iter()
                    .map(|r| (r.input_tokens as u64, r.output_tokens as u64)),
                dtype_bytes,
            );
        }
        metrics.wall_s = self.clock.now_s() - run_start;
        metrics.meters = meters.finish(PhaseTimes {
            prefill_s: metrics.prefill_s,
            decode_s: metrics.decode_s,
            wall_s: metrics.wall_s,
        });
        if metrics.meters.total_j().is_some() {
            // Validated while planning, so this resolves; a failure leaves co2e null.
            metrics.intensity = crate::carbon::resolve(&run.measure.carbon).ok();
        }
        metrics.num_requests = requests.len();
        metrics.input_tokens = requests.iter().map(|r| r.input_tokens).sum();
        metrics.output_tokens = requests.iter().map(|r| r.output_tokens).sum();
        for r in &requests {
            let (prefill, decode) = crate::flops::generation(
                model.info(),
                r.input_tokens as u64,
                r.output_tokens as u64,
            );
            metrics.flops_prefill += prefill;
            metrics.flops_decode += decode;
        }
        let notes = metrics.interpretation_notes();
        metrics.meters.notes.extend(notes);
        Ok((metrics, requests))
    }
}

/// The run's prompts as token ids, cut to `max_input_tokens`.
fn encode_prompts(run: &RunSpec, model: &dyn LoadedModel) -> Result<Vec<Vec<u32>>, RuntimeError> {
    let texts = prompts::materialise(&run.prompts);
    let mut encoded = Vec::with_capacity(texts.len());
    for text in &texts {
        let mut ids = model.encode(text)?;
        if let Some(max) = run.prompts.max_input_tokens {
            ids.truncate(max);
        }
        encoded.push(ids);
    }
    Ok(encoded)
}
