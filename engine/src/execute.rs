//! Executing a schedule: load models, run generations, time them, hand records to a sink.
//!
//! A failure inside one run (a corrupt model, a backend error) becomes a failed record and the
//! study goes on; only a sink failure (results cannot be stored) stops the study.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::batching::form_batches;
use crate::latency::{BatchClock, RequestTiming, batch_timings};
use crate::metering::{PhaseTimes, RunMeters};
use crate::placement::{InFlight, Placement, Ticket, lanes};
use crate::plan::RunSpec;
use crate::prompts;
use crate::quality_run::{QualityFailure, QualityInputs, ReferenceCache, measure_quality};
use crate::record::{
    RecordSink, ReplicaRecord, RunMetrics, RunRecord, RunStatus, ServingMetrics, SinkError,
};
use crate::replicas::{ReplicaGpu, cores_of, meter_device, split_between};
use crate::schedule::{Schedule, ScheduledRun};
use crate::serving::{self, ServeStop, ServeWork, ServedRequest};
use crate::stage::{InferStage, ServeSpec, StageId};
use api::device::replica_devices;
use api::meter::{MeterProvider, NoMeters};
use api::runtime::{GenerateOptions, LoadedModel, Runtime, RuntimeError, StepOutput};
use api::serving::ServeOptions;

/// A monotonic clock in seconds; tests substitute a scripted one. Replicas read it from their
/// own threads.
pub trait Clock: Send + Sync {
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
#[derive(Debug, thiserror::Error)]
enum RunFailure {
    /// The runtime failed.
    #[error("{0}")]
    Runtime(RuntimeError),
    /// One replica's runtime failed (the others were stopped).
    #[error("replica {replica} ({device}): {source}")]
    Replica {
        /// 0-based replica.
        replica: usize,
        /// Its device.
        device: String,
        /// The runtime's error.
        source: RuntimeError,
    },
    /// The cancel flag was raised mid-run.
    #[error("cancelled")]
    Cancelled,
    /// Another replica of the run failed, so this one stopped (that one's error is the run's).
    #[error("stopped: another replica failed")]
    Aborted,
}

impl RunFailure {
    /// Backend failures may pass (device busy, memory pressure); bad input would fail the
    /// same way again.
    fn is_transient(&self) -> bool {
        matches!(
            self,
            RunFailure::Runtime(RuntimeError::Backend(_) | RuntimeError::BackendFailure(_))
                | RunFailure::Replica {
                    source: RuntimeError::Backend(_) | RuntimeError::BackendFailure(_),
                    ..
                }
        )
    }
}

impl From<RuntimeError> for RunFailure {
    fn from(e: RuntimeError) -> Self {
        RunFailure::Runtime(e)
    }
}

/// The models of one load group in one cycle (one per replica device), or why one failed to
/// load.
type LoadedGroup = (
    StageId,
    usize,
    Result<Vec<Box<dyn LoadedModel>>, LoadFailure>,
);

/// Why a run's model did not load.
#[derive(Debug, thiserror::Error)]
enum LoadFailure {
    /// The model (on one device) failed.
    #[error("{0}")]
    Model(RuntimeError),
    /// One replica's model failed (the run needs them all).
    #[error("replica {replica} ({device}): {source}")]
    Replica {
        /// 0-based replica.
        replica: usize,
        /// Its device.
        device: String,
        /// The runtime's error.
        source: RuntimeError,
    },
}

/// Runs schedules against a runtime.
pub struct Executor<'a> {
    runtime: &'a dyn Runtime,
    clock: &'a dyn Clock,
    meters: &'a dyn MeterProvider,
    cancel: Option<&'a AtomicBool>,
    /// Where quality references are kept; `None`: quality is not measured.
    quality: Option<&'a dyn ReferenceCache>,
    /// Raised when a lane's record could not be stored: every lane stops as on a cancel.
    halt: Option<&'a AtomicBool>,
    /// The windows of runs in flight, when lanes run at the same time: machine-wide energy is
    /// then each run's time-share.
    in_flight: Option<&'a InFlight>,
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
            halt: None,
            in_flight: None,
        }
    }

    /// Stops the study when `cancel` is raised: no further run starts, and the run in progress
    /// is abandoned at its next generation step without writing anything.
    pub fn with_cancel(mut self, cancel: &'a AtomicBool) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn cancelled(&self) -> bool {
        [self.cancel, self.halt]
            .iter()
            .flatten()
            .any(|c| c.load(Ordering::SeqCst))
    }

    /// Fails with `Cancelled` once the cancel flag is up.
    fn check_cancel(&self) -> Result<(), RunFailure> {
        self.driver(&AtomicBool::new(false)).check()
    }

    /// Waits `seconds` in slices, so a raised cancel flag ends a long wait (an arrival gap,
    /// an idle baseline, a retry delay) within one slice.
    fn wait(&self, seconds: f64) -> Result<(), RunFailure> {
        self.driver(&AtomicBool::new(false)).wait(seconds)
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
    ///
    /// With `placement: "per-device"` and runs on devices that share no hardware, the runs
    /// execute in lanes at the same time (see [`crate::placement`]); the sink and `progress`
    /// are still called on this thread only, one event at a time, each record stored before
    /// its lane goes on.
    pub fn execute(
        &self,
        schedule: &Schedule,
        sink: &mut dyn RecordSink,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Outcome, SinkError> {
        let done = sink.completed();
        // Each with its 1-based index among pending executions, what `Progress` reports.
        let pending: Vec<(usize, &ScheduledRun)> = schedule
            .items
            .iter()
            .filter(|item| !done.contains(&(item.run.id.hex(), item.cycle)))
            .enumerate()
            .map(|(i, item)| (i + 1, item))
            .collect();
        progress(Progress::StudyStarted {
            pending: pending.len(),
            already_done: schedule.items.len() - pending.len(),
        });
        let mut out = Output {
            sink,
            progress,
            outcome: Outcome {
                skipped: schedule.items.len() - pending.len(),
                ..Outcome::default()
            },
            error: None,
        };
        // Progress lines name the settings that tell this study's runs apart.
        let lane = Lane {
            schedule,
            total: pending.len(),
            varying: RunSpec::varying_keys(schedule.items.iter().map(|item| item.run.as_ref())),
        };
        let lanes = match schedule.placement {
            Placement::OneAtATime => vec![pending],
            Placement::PerDevice => split_into_lanes(pending),
        };
        let end = if lanes.len() > 1 {
            self.run_lanes(&lane, &lanes, &mut out)
        } else {
            let items = lanes.into_iter().next().unwrap_or_default();
            self.run_lane(&lane, &items, &mut out)
        };
        if let Some(e) = out.error {
            return Err(e);
        }
        out.outcome.cancelled = end == LaneEnd::Cancelled;
        Ok(out.outcome)
    }

    /// Runs lanes at the same time, each on its own thread with its own models; their
    /// progress and records reach `out` here, on the calling thread. A record that cannot be
    /// stored raises the lanes' halt flag: every lane abandons its run and stops.
    fn run_lanes(
        &self,
        lane: &Lane<'_>,
        lanes: &[Vec<(usize, &ScheduledRun)>],
        out: &mut Output<'_, '_>,
    ) -> LaneEnd {
        let halt = AtomicBool::new(false);
        let in_flight = InFlight::default();
        let lane_executor = Executor {
            halt: Some(&halt),
            in_flight: Some(&in_flight),
            ..*self
        };
        let (tx, rx) = mpsc::channel::<LaneMessage>();
        let ends: Vec<LaneEnd> = std::thread::scope(|s| {
            let handles: Vec<_> = lanes
                .iter()
                .map(|items| {
                    let tx = tx.clone();
                    let executor = &lane_executor;
                    let halt = &halt;
                    s.spawn(move || {
                        let _stop_the_others = HaltOnPanic(halt);
                        let (reply, replies) = mpsc::channel();
                        let mut forward = Forward { tx, reply, replies };
                        executor.run_lane(lane, items, &mut forward)
                    })
                })
                .collect();
            // The loop below ends once every lane has ended and dropped its sender.
            drop(tx);
            for message in rx {
                match message {
                    LaneMessage::Progress(event) => out.progress(event),
                    LaneMessage::Finished {
                        index,
                        record,
                        reply,
                    } => {
                        let stored = out.error.is_none() && out.finished(index, *record);
                        if !stored {
                            halt.store(true, Ordering::SeqCst);
                        }
                        // A lane that is gone has nothing left to be told.
                        let _ = reply.send(stored);
                    }
                }
            }
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        if ends.contains(&LaneEnd::Cancelled) {
            LaneEnd::Cancelled
        } else if ends.contains(&LaneEnd::Stopped) {
            LaneEnd::Stopped
        } else {
            LaneEnd::Done
        }
    }

    /// Executes one lane's executions in order on the calling thread, keeping the current load
    /// group's models and dropping them when the group changes, so at most one group is
    /// resident per lane. The only path of a study that runs one at a time.
    fn run_lane(
        &self,
        lane: &Lane<'_>,
        items: &[(usize, &ScheduledRun)],
        out: &mut dyn LaneOutput,
    ) -> LaneEnd {
        let schedule = lane.schedule;
        let mut loaded: Option<LoadedGroup> = None;
        for &(index, item) in items {
            if self.cancelled() {
                return LaneEnd::Cancelled;
            }
            let key = (item.run.load_id, item.cycle);
            if loaded.as_ref().map(|(id, cycle, _)| (*id, *cycle)) != Some(key) {
                // Free the previous model before loading the next, so two never coexist.
                drop(loaded.take());
                out.progress(Progress::Loading {
                    model: item.run.load.model.clone(),
                });
                let models = self.load_replicas(&item.run);
                loaded = Some((key.0, key.1, models));
            }
            let label = format!("{} cycle {}", item.run.label(&lane.varying), item.cycle);
            out.progress(Progress::RunStarted {
                index,
                total: lane.total,
                label,
            });
            let started_at_unix_s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let models = loaded.as_mut().map(|(_, _, m)| m.as_mut());
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
                replicas: Vec::new(),
            };
            match models {
                Some(Ok(models)) => {
                    record.model = Some(models[0].info().clone());
                    let mut attempt = 0;
                    loop {
                        match self.run_one(item, models) {
                            // run_one returns a failed replica's error, never Aborted; kept total.
                            Err(RunFailure::Cancelled | RunFailure::Aborted) => {
                                return LaneEnd::Cancelled;
                            }
                            Ok((mut metrics, requests, replicas)) => {
                                if schedule.quality
                                    && self
                                        .measure_quality(
                                            &item.run,
                                            models[0].as_ref(),
                                            &mut metrics,
                                        )
                                        .is_err()
                                {
                                    return LaneEnd::Cancelled;
                                }
                                record.status = RunStatus::Ok;
                                record.metrics = Some(metrics);
                                record.requests = requests;
                                record.replicas = replicas;
                                record.error = None;
                                break;
                            }
                            // Only backend failures can be transient (device busy, memory
                            // pressure); bad input would fail the same way again.
                            Err(
                                failure @ (RunFailure::Runtime(_) | RunFailure::Replica { .. }),
                            ) if failure.is_transient() && attempt < schedule.retries => {
                                attempt += 1;
                                record.error = Some(failure.to_string());
                                out.progress(Progress::Retrying {
                                    index,
                                    attempt,
                                    error: failure.to_string(),
                                });
                                if self.wait(schedule.retry_delay_s).is_err() {
                                    return LaneEnd::Cancelled;
                                }
                            }
                            Err(failure) => {
                                record.error = Some(if attempt > 0 {
                                    format!("{failure} (after {attempt} retries)")
                                } else {
                                    failure.to_string()
                                });
                                break;
                            }
                        }
                    }
                }
                Some(Err(e)) => record.error = Some(format!("model load failed: {e}")),
                None => record.error = Some("model was not loaded".to_string()),
            }
            if !out.finished(index, record) {
                return LaneEnd::Stopped;
            }
        }
        LaneEnd::Done
    }

    /// Loads a run's model on each of its devices: one model, or one replica per device,
    /// loaded in parallel. A replica that fails names itself, and the run fails.
    fn load_replicas(&self, run: &RunSpec) -> Result<Vec<Box<dyn LoadedModel>>, LoadFailure> {
        let devices = replica_devices(&run.load.device);
        if devices.len() == 1 {
            return self
                .runtime
                .load(&run.model_spec())
                .map(|m| vec![m])
                .map_err(LoadFailure::Model);
        }
        let runtime = self.runtime;
        let loaded: Vec<Result<Box<dyn LoadedModel>, RuntimeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .iter()
                .map(|device| {
                    let spec = run.model_spec_on(device);
                    s.spawn(move || runtime.load(&spec))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RuntimeError::InvalidInput(
                            "the loading thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let mut models = Vec::with_capacity(loaded.len());
        for (replica, (device, model)) in devices.iter().zip(loaded).enumerate() {
            models.push(model.map_err(|source| LoadFailure::Replica {
                replica,
                device: device.to_string(),
                source,
            })?);
        }
        Ok(models)
    }

    fn driver<'d>(&'d self, abort: &'d AtomicBool) -> Driver<'d> {
        Driver {
            clock: self.clock,
            cancel: self.cancel,
            halt: self.halt,
            abort,
        }
    }

    fn run_one(
        &self,
        item: &ScheduledRun,
        models: &mut [Box<dyn LoadedModel>],
    ) -> Result<(RunMetrics, Vec<RequestTiming>, Vec<ReplicaRecord>), RunFailure> {
        let run = &item.run;
        let mut encoded = encode_prompts(run, models[0].as_ref())?;
        if encoded.is_empty() {
            return Err(RuntimeError::InvalidInput("the prompt set is empty".into()).into());
        }
        // A trace sets the requests: their arrivals, prompt lengths and output lengths.
        let trace = match &run.infer.arrival {
            crate::stage::ArrivalSpec::Trace { path, time_scale } => Some(
                crate::trace::read(std::path::Path::new(path), *time_scale)
                    .map_err(|e| RuntimeError::InvalidInput(e.to_string()))?,
            ),
            _ => None,
        };
        let max_new_tokens: Vec<usize> = match &trace {
            Some(requests) => {
                encoded = trace_prompts(&encoded, requests);
                requests
                    .iter()
                    .map(|r| r.output_tokens.clamp(1, run.infer.max_new_tokens))
                    .collect()
            }
            None => vec![run.infer.max_new_tokens; encoded.len()],
        };
        let options = GenerateOptions {
            max_new_tokens: run.infer.max_new_tokens,
            min_new_tokens: run.infer.min_new_tokens,
            stop_at_eos: run.infer.stop_at_eos,
            decoding: run.infer.decoding.to_runtime(),
        };
        let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
        let devices = replica_devices(&run.load.device);
        let replicated = devices.len() > 1;
        // Each replica forms its own batches from its contiguous share, as each Accelerate
        // process batches the prompts it was given.
        let shares: Vec<Vec<Range<usize>>> = split_between(encoded.len(), models.len())
            .into_iter()
            .map(|share| {
                form_batches(
                    &lengths[share.clone()],
                    run.batch.size,
                    run.batch.token_budget,
                    options.max_new_tokens,
                )
                .into_iter()
                .map(|r| r.start + share.start..r.end + share.start)
                .collect()
            })
            .collect();
        let arrivals = match &trace {
            Some(requests) => requests.iter().map(|r| r.arrival_s).collect(),
            None => run.infer.arrival.arrivals(encoded.len()),
        };
        let closed_loop = run.infer.arrival == crate::stage::ArrivalSpec::ClosedLoop;
        if run.infer.serve.is_some() && replicated {
            return Err(RuntimeError::InvalidInput(format!(
                "serve (continuous batching) runs on one device; this run has {} replicas",
                devices.len()
            ))
            .into());
        }

        let meter_device = meter_device(&run.load.device);
        let mut meters = RunMeters::open(self.meters, &meter_device, &run.measure);
        // The peak may run a short microbenchmark the first time: outside any timing. Over
        // replicas, summed busy time against one device's peak is not yet defined: left out.
        let peak = if replicated || run.load.device.starts_with("cpu:") {
            None
        } else {
            self.meters.peak(&run.load.device, run.load.dtype.name())
        };
        meters.idle_baseline(run.measure.idle_baseline_s, &|| self.clock.now_s(), &|s| {
            // A cancel ends the wait early; the check below then abandons the run.
            let _ = self.wait(s);
        });
        self.check_cancel()?;

        let warmup_start = self.clock.now_s();
        for (model, batches) in models.iter().zip(&shares) {
            let Some(first) = batches.first() else {
                continue;
            };
            for _ in 0..run.infer.warmup {
                let mut generation = model.start(&encoded[first.clone()], &options)?;
                loop {
                    self.check_cancel()?;
                    if generation.step()?.finished {
                        break;
                    }
                }
            }
        }
        let warmup_s = self.clock.now_s() - warmup_start;

        let mut metrics = RunMetrics {
            warmup_s,
            num_batches: shares.iter().map(Vec::len).sum(),
            peak,
            ..RunMetrics::default()
        };
        let abort = AtomicBool::new(false);
        let driver = self.driver(&abort);
        let mut gpus: Vec<Option<ReplicaGpu>> = devices
            .iter()
            .map(|d| {
                replicated
                    .then(|| ReplicaGpu::open(self.meters, d, &run.measure))
                    .flatten()
            })
            .collect();
        let work = |replica: usize, batch_offset: usize, run_start: f64| ShareWork {
            replica,
            batches: &shares[replica],
            batch_offset,
            encoded: &encoded,
            lengths: &lengths,
            arrivals: &arrivals,
            max_new_tokens: &max_new_tokens,
            run_start,
            closed_loop,
            options: &options,
            dtype_bytes: run.load.dtype.size_bytes() as u64,
        };
        let offsets: Vec<usize> = shares
            .iter()
            .scan(0, |acc, b| {
                let offset = *acc;
                *acc += b.len();
                Some(offset)
            })
            .collect();
        meters.start();
        let run_start = self.clock.now_s();
        // Beside other lanes the window is registered, so that when it closes its share of the
        // machine-wide energy is known; the guard closes it on every way out.
        let window = self.in_flight.map(|in_flight| Window {
            in_flight,
            clock: self.clock,
            ticket: Some(in_flight.open(run_start)),
        });
        let outcomes: Vec<ShareOutcome> = if replicated {
            let results: Vec<Result<ShareOutcome, RunFailure>> = std::thread::scope(|s| {
                let handles: Vec<_> = models
                    .iter_mut()
                    .zip(gpus.iter_mut())
                    .enumerate()
                    .map(|(replica, (model, gpu))| {
                        let work = work(replica, offsets[replica], run_start);
                        let driver = &driver;
                        s.spawn(move || {
                            let result =
                                driver.run_share(model.as_ref(), &work, None, gpu.as_mut());
                            if result.is_err() {
                                // The others stop at their next step: the run has failed.
                                driver.abort.store(true, Ordering::SeqCst);
                            }
                            result
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(RunFailure::Runtime(RuntimeError::InvalidInput(
                                "a replica thread panicked".into(),
                            )))
                        })
                    })
                    .collect()
            });
            let mut outcomes = Vec::with_capacity(results.len());
            let mut failure = None;
            for (replica, result) in results.into_iter().enumerate() {
                match result {
                    Ok(o) => outcomes.push(o),
                    Err(RunFailure::Cancelled) if self.cancelled() => {
                        return Err(RunFailure::Cancelled);
                    }
                    // Stopped because another replica failed: that one's error is the run's.
                    Err(RunFailure::Aborted) => {}
                    Err(RunFailure::Runtime(source)) if failure.is_none() => {
                        failure = Some(RunFailure::Replica {
                            replica,
                            device: devices[replica].to_string(),
                            source,
                        });
                    }
                    Err(_) => {}
                }
            }
            if let Some(f) = failure {
                return Err(f);
            }
            outcomes
        } else if let Some(spec) = &run.infer.serve {
            let (outcome, serving) =
                driver.serve_share(models[0].as_ref(), &work(0, 0, run_start), spec, &run.infer)?;
            metrics.num_batches = serving.iterations;
            metrics.serving = Some(serving);
            vec![outcome]
        } else {
            vec![driver.run_share(
                models[0].as_ref(),
                &work(0, 0, run_start),
                Some(&mut meters),
                None,
            )?]
        };
        metrics.wall_s = if replicated {
            // From the first start to the last finish: the replicas' ends, read on their
            // own threads.
            outcomes
                .iter()
                .filter_map(|o| o.end_s)
                .fold(run_start, f64::max)
                - run_start
        } else {
            self.clock.now_s() - run_start
        };
        let mut requests = Vec::with_capacity(encoded.len());
        let mut replicas = Vec::new();
        let mut replica_notes = Vec::new();
        for (replica, (outcome, gpu)) in outcomes.into_iter().zip(gpus).enumerate() {
            metrics.prefill_s += outcome.prefill_s;
            metrics.decode_s += outcome.decode_s;
            metrics.decode_bytes += outcome.decode_bytes;
            metrics.kv_cache_peak_bytes =
                metrics.kv_cache_peak_bytes.max(outcome.kv_cache_peak_bytes);
            // Replicas' devices are distinct, so their peaks add up.
            if let Some(bytes) = outcome.device_memory_peak_bytes {
                metrics.device_memory_peak_bytes =
                    Some(metrics.device_memory_peak_bytes.unwrap_or(0) + bytes);
            }
            if replicated {
                let gpu = gpu.map(ReplicaGpu::report);
                if let Some(g) = &gpu {
                    replica_notes.extend(g.notes.iter().cloned());
                }
                let (input, output) = outcome.requests.iter().fold((0, 0), |(i, o), r| {
                    (i + r.input_tokens, o + r.output_tokens)
                });
                replicas.push(ReplicaRecord {
                    replica,
                    device: devices[replica].to_string(),
                    cores: cores_of(devices[replica]),
                    num_requests: outcome.requests.len(),
                    num_batches: shares[replica].len(),
                    input_tokens: input,
                    output_tokens: output,
                    start_s: outcome.start_s.map(|s| s - run_start),
                    wall_s: match (outcome.start_s, outcome.end_s) {
                        (Some(a), Some(b)) => b - a,
                        _ => 0.0,
                    },
                    prefill_s: outcome.prefill_s,
                    decode_s: outcome.decode_s,
                    gpu_energy_j: gpu.as_ref().and_then(|g| g.energy_j),
                    gpu_energy_source: gpu
                        .as_ref()
                        .map_or_else(|| "none".to_string(), |g| g.source.clone()),
                    kv_cache_peak_bytes: outcome.kv_cache_peak_bytes,
                    weight_bytes: models[replica].info().weight_bytes,
                    gpu_memory_peak_bytes: gpu.as_ref().and_then(|g| g.memory_peak_bytes),
                    gpu_util_mean_pct: gpu.as_ref().and_then(|g| g.util_mean_pct),
                });
            }
            requests.extend(outcome.requests);
        }
        requests.sort_by_key(|r| r.request_index);
        if let Some(window) = window {
            meters.share_machine(window.close());
        }
        metrics.meters = meters.finish(PhaseTimes {
            prefill_s: metrics.prefill_s,
            decode_s: metrics.decode_s,
            wall_s: metrics.wall_s,
            // Served iterations interleave prompt passes and decode steps.
            phases_overlap: replicated || metrics.serving.is_some(),
        });
        if replicated {
            metrics.meters.notes.push(format!(
                "{} replicas: prefill_s and decode_s are summed over replicas; MFU and MBU are not computed over replicas; CPU and RAM energy are machine-wide and counted once",
                devices.len()
            ));
        }
        metrics.meters.notes.extend(replica_notes);
        if metrics.meters.total_j().is_some() {
            // Validated while planning, so this resolves; a failure leaves co2e null.
            metrics.intensity = crate::carbon::resolve(&run.measure.carbon).ok();
        }
        metrics.num_requests = requests.len();
        metrics.input_tokens = requests.iter().map(|r| r.input_tokens).sum();
        metrics.output_tokens = requests.iter().map(|r| r.output_tokens).sum();
        for r in &requests {
            let (prefill, decode) = crate::flops::generation(
                models[0].info(),
                r.input_tokens as u64,
                r.output_tokens as u64,
            );
            metrics.flops_prefill += prefill;
            metrics.flops_decode += decode;
        }
        let notes = metrics.interpretation_notes();
        metrics.meters.notes.extend(notes);
        Ok((metrics, requests, replicas))
    }
}

/// What a lane shares with the others: the schedule, and what progress lines need.
struct Lane<'l> {
    schedule: &'l Schedule,
    /// Pending executions of the whole study (progress indices count among them).
    total: usize,
    /// The settings that tell this study's runs apart, for progress labels.
    varying: Vec<&'static str>,
}

/// How a lane ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneEnd {
    /// Every execution of the lane ran.
    Done,
    /// The cancel flag (or the halt flag) stopped it; the run in progress wrote nothing.
    Cancelled,
    /// A record could not be stored.
    Stopped,
}

/// Where a lane reports: progress events, and finished records, each stored before the lane
/// goes on.
trait LaneOutput {
    /// A progress event.
    fn progress(&mut self, event: Progress);
    /// Stores a finished execution (`index`: among pending executions); false when it could
    /// not be stored, and the lane stops.
    fn finished(&mut self, index: usize, record: RunRecord) -> bool;
}

/// The caller's sink and progress display, and the counts of what was stored.
struct Output<'s, 'p> {
    sink: &'s mut dyn RecordSink,
    progress: &'p mut dyn FnMut(Progress),
    outcome: Outcome,
    /// The first record that could not be stored: the study stops with it.
    error: Option<SinkError>,
}

impl LaneOutput for Output<'_, '_> {
    fn progress(&mut self, event: Progress) {
        (self.progress)(event);
    }

    fn finished(&mut self, index: usize, record: RunRecord) -> bool {
        if let Err(e) = self.sink.record(&record) {
            self.error = Some(e);
            return false;
        }
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
            RunStatus::Ok => self.outcome.ok += 1,
            RunStatus::Failed => self.outcome.failed += 1,
        }
        (self.progress)(Progress::RunFinished {
            index,
            status: record.status,
            summary,
        });
        true
    }
}

/// What a lane's thread sends to the calling thread.
enum LaneMessage {
    Progress(Progress),
    /// A finished execution to store; whether it was stored goes back on `reply`.
    Finished {
        index: usize,
        record: Box<RunRecord>,
        reply: mpsc::Sender<bool>,
    },
}

/// A lane's output on its own thread: everything goes to the calling thread, and a record
/// waits there until it is stored.
struct Forward {
    tx: mpsc::Sender<LaneMessage>,
    reply: mpsc::Sender<bool>,
    replies: mpsc::Receiver<bool>,
}

impl LaneOutput for Forward {
    fn progress(&mut self, event: Progress) {
        // The receiver outlives every lane; a failed send has no one left to tell.
        let _ = self.tx.send(LaneMessage::Progress(event));
    }

    fn finished(&mut self, index: usize, record: RunRecord) -> bool {
        self.tx
            .send(LaneMessage::Finished {
                index,
                record: Box::new(record),
                reply: self.reply.clone(),
            })
            .is_ok()
            && self.replies.recv().unwrap_or(false)
    }
}

/// Raises the lanes' halt flag if its lane's thread panics, so the other lanes stop rather
/// than run to their end before the panic reaches the caller.
struct HaltOnPanic<'h>(&'h AtomicBool);

impl Drop for HaltOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Pending executions split into lanes whose devices share no hardware (see
/// [`crate::placement::lanes`]), each in schedule order.
fn split_into_lanes(pending: Vec<(usize, &ScheduledRun)>) -> Vec<Vec<(usize, &ScheduledRun)>> {
    let devices = lanes(
        pending
            .iter()
            .map(|(_, item)| item.run.load.device.as_str()),
    );
    let mut split: Vec<Vec<(usize, &ScheduledRun)>> = vec![Vec::new(); devices.len()];
    for (index, item) in pending {
        let lane = devices
            .iter()
            .position(|lane| lane.contains(&item.run.load.device))
            .unwrap_or(0);
        split[lane].push((index, item));
    }
    split
}

/// A run's window in the study's [`InFlight`] registry; closed when dropped if not before.
struct Window<'w> {
    in_flight: &'w InFlight,
    clock: &'w dyn Clock,
    ticket: Option<Ticket>,
}

impl Window<'_> {
    /// Closes the window now: the mean number of runs in flight over it.
    fn close(mut self) -> f64 {
        match self.ticket.take() {
            Some(ticket) => self.in_flight.close(ticket, self.clock.now_s()),
            None => 1.0,
        }
    }
}

impl Drop for Window<'_> {
    fn drop(&mut self) {
        // A run that failed or was abandoned was in flight until now.
        if let Some(ticket) = self.ticket.take() {
            self.in_flight.close(ticket, self.clock.now_s());
        }
    }
}

/// One replica's share of a run: its batches (request ranges of the whole run) and what it
/// needs to time them.
struct ShareWork<'w> {
    replica: usize,
    batches: &'w [Range<usize>],
    /// Batches of the replicas before it: its batches' indices in the run continue theirs.
    batch_offset: usize,
    encoded: &'w [Vec<u32>],
    lengths: &'w [usize],
    arrivals: &'w [f64],
    /// Tokens each request generates at most (a trace's own; else the run's for all).
    max_new_tokens: &'w [usize],
    run_start: f64,
    closed_loop: bool,
    options: &'w GenerateOptions,
    dtype_bytes: u64,
}

/// What one replica's share produced.
#[derive(Default)]
struct ShareOutcome {
    requests: Vec<RequestTiming>,
    prefill_s: f64,
    decode_s: f64,
    kv_cache_peak_bytes: u64,
    /// Largest bytes the device allocator held at a batch end.
    device_memory_peak_bytes: Option<u64>,
    decode_bytes: u64,
    /// When its first batch started (`None`: an empty share).
    start_s: Option<f64>,
    /// When its last step ended.
    end_s: Option<f64>,
}

/// What a thread driving generations needs: the clock, and the flags that stop it (the
/// study's cancel, and a sibling replica's failure).
struct Driver<'d> {
    clock: &'d dyn Clock,
    cancel: Option<&'d AtomicBool>,
    /// The lanes' halt flag (a record could not be stored): stops the run as a cancel does.
    halt: Option<&'d AtomicBool>,
    abort: &'d AtomicBool,
}

impl Driver<'_> {
    fn check(&self) -> Result<(), RunFailure> {
        if [self.cancel, self.halt]
            .iter()
            .flatten()
            .any(|c| c.load(Ordering::SeqCst))
        {
            Err(RunFailure::Cancelled)
        } else if self.abort.load(Ordering::SeqCst) {
            Err(RunFailure::Aborted)
        } else {
            Ok(())
        }
    }

    /// Waits `seconds` in slices, so a raised flag ends a long wait within one slice.
    fn wait(&self, seconds: f64) -> Result<(), RunFailure> {
        const SLICE_S: f64 = 0.1;
        // Slices are measured against the clock, so a sleep's overshoot is not repeated.
        let until = self.clock.now_s() + seconds;
        loop {
            self.check()?;
            let left = until - self.clock.now_s();
            if left <= 0.0 {
                return Ok(());
            }
            self.clock.sleep_s(left.min(SLICE_S));
        }
    }

    /// Serves the run's requests with continuous batching ([`crate::serving`]) on `model`.
    /// Energy is not split into prefill and decode: the phases interleave every iteration.
    fn serve_share(
        &self,
        model: &dyn LoadedModel,
        work: &ShareWork,
        spec: &ServeSpec,
        infer: &InferStage,
    ) -> Result<(ShareOutcome, ServingMetrics), RunFailure> {
        let options = work.options;
        let longest = work.lengths.iter().copied().max().unwrap_or(0);
        let most_new = work.max_new_tokens.iter().copied().max().unwrap_or(0);
        let mut batch = model.serve(&ServeOptions {
            max_batch: spec.max_batch,
            slot_capacity: longest + most_new,
            min_new_tokens: options.min_new_tokens,
            stop_at_eos: options.stop_at_eos,
            decoding: options.decoding.clone(),
        })?;
        let kv_cache_bytes = batch.kv_cache_bytes();
        let mut served = serving::serve(
            batch.as_mut(),
            &ServeWork {
                prompts: work.encoded,
                max_new_tokens: work.max_new_tokens,
                arrivals: work.arrivals,
                window_start_s: work.run_start,
                spec,
            },
            self.clock,
            &|| self.check(),
            &|s| self.wait(s),
        )
        .map_err(|stop| match stop {
            ServeStop::Runtime(e) => RunFailure::Runtime(e),
            ServeStop::Caller(f) => f,
        })?;
        drop(batch);
        // Converted one by one, each request's token times freed as its timing is made.
        let requests = std::mem::take(&mut served.requests)
            .into_iter()
            .enumerate()
            .map(|(i, r)| served_timing(i, work.lengths[i], &r, work.run_start, work.closed_loop))
            .collect::<Vec<_>>();
        let decode_steps: u64 = requests
            .iter()
            .map(|r| r.output_tokens.saturating_sub(1) as u64)
            .max()
            .unwrap_or(0);
        let outcome = ShareOutcome {
            decode_bytes: crate::flops::decode_read_bytes(
                model.info(),
                decode_steps,
                requests
                    .iter()
                    .map(|r| (r.input_tokens as u64, r.output_tokens as u64)),
                work.dtype_bytes,
            ),
            requests,
            prefill_s: served.prefill_s,
            decode_s: served.decode_s,
            kv_cache_peak_bytes: kv_cache_bytes,
            device_memory_peak_bytes: model.device_memory_bytes(),
            start_s: Some(work.run_start),
            end_s: served.end_s,
        };
        let serving = ServingMetrics {
            spec: spec.clone(),
            offered_rate_per_s: infer.arrival.offered_rate_per_s(),
            iterations: served.iterations,
            schedule_s: served.schedule_s,
            idle: served.idle,
            occupancy: served.occupancy,
        };
        Ok((outcome, serving))
    }

    /// Runs a share's batches one after another on `model`. With `meters` (a run on one
    /// device) the energy counters are read at each phase boundary; a replica's GPU, if any,
    /// is read over its own window.
    fn run_share(
        &self,
        model: &dyn LoadedModel,
        work: &ShareWork,
        mut meters: Option<&mut RunMeters>,
        mut gpu: Option<&mut ReplicaGpu>,
    ) -> Result<ShareOutcome, RunFailure> {
        let options = work.options;
        let mut out = ShareOutcome::default();
        for (b, range) in work.batches.iter().enumerate() {
            let batch = &work.encoded[range.clone()];
            // A batch starts once its last request has arrived; the wait is idle time, outside
            // every request's timing (it shows up as queue_s of the earlier arrivals).
            let ready = work.run_start
                + work.arrivals[range.clone()]
                    .iter()
                    .copied()
                    .fold(0.0, f64::max);
            let now = self.clock.now_s();
            if ready > now {
                self.wait(ready - now)?;
            }
            let start = self.clock.now_s();
            if out.start_s.is_none() {
                out.start_s = Some(start);
                if let Some(g) = gpu.as_deref_mut() {
                    g.start();
                }
            }
            let energy_start = meters.as_ref().map(|m| m.read_energy());
            let mut energy_prefilled = energy_start;
            // Requests with their own output lengths (a trace) generate, as a static batch
            // does, until the longest of them ends; each keeps its own tokens only.
            let caps = &work.max_new_tokens[range.clone()];
            let longest = caps.iter().copied().max().unwrap_or(options.max_new_tokens);
            let batch_options = GenerateOptions {
                max_new_tokens: longest,
                min_new_tokens: options.min_new_tokens.min(longest),
                ..options.clone()
            };
            let options = &batch_options;
            let mut generation = model.start(batch, options)?;
            let mut steps: Vec<StepOutput> = Vec::with_capacity(options.max_new_tokens);
            let mut ends = Vec::with_capacity(options.max_new_tokens);
            loop {
                self.check()?;
                let step = generation.step()?;
                let end = self.clock.now_s();
                if steps.is_empty()
                    && let (Some(m), Some(before)) = (meters.as_deref_mut(), &energy_start)
                {
                    // The phase boundary: what came before was the prompt pass.
                    let now = m.read_energy();
                    m.add_prefill(before, &now);
                    energy_prefilled = Some(now);
                }
                out.kv_cache_peak_bytes = out.kv_cache_peak_bytes.max(generation.kv_cache_bytes());
                let finished = step.finished;
                steps.push(step);
                ends.push(end);
                if finished || steps.len() > options.max_new_tokens {
                    break;
                }
            }
            if let (Some(m), Some(before)) = (meters.as_deref_mut(), &energy_prefilled) {
                let end = m.read_energy();
                m.add_decode(before, &end);
            }
            cap_outputs(&mut steps, caps);
            if let Some(g) = gpu.as_deref_mut() {
                g.sample();
            }
            // After the window's last step of the batch: the cache and activations at full size.
            if let Some(bytes) = model.device_memory_bytes() {
                out.device_memory_peak_bytes =
                    Some(out.device_memory_peak_bytes.map_or(bytes, |p| p.max(bytes)));
            }
            out.prefill_s += ends[0] - start;
            out.decode_s += ends[ends.len() - 1] - ends[0];
            out.end_s = Some(ends[ends.len() - 1]);
            // In a closed loop a request arrives when it is handed to the engine: its batch's
            // start. Scheduled arrivals are offsets from the window's opening.
            let absolute: Vec<f64> = if work.closed_loop {
                vec![start; range.len()]
            } else {
                work.arrivals[range.clone()]
                    .iter()
                    .map(|a| work.run_start + a)
                    .collect()
            };
            let first = out.requests.len();
            out.requests.extend(
                batch_timings(
                    work.batch_offset + b,
                    range.start,
                    &work.lengths[range.clone()],
                    &steps,
                    &BatchClock {
                        arrival_s: &absolute,
                        start_s: start,
                        window_start_s: work.run_start,
                        step_end_s: &ends,
                    },
                )
                .into_iter()
                .map(|r| RequestTiming {
                    replica: work.replica,
                    ..r
                }),
            );
            out.decode_bytes += crate::flops::decode_read_bytes(
                model.info(),
                steps.len() as u64 - 1,
                out.requests[first..]
                    .iter()
                    .map(|r| (r.input_tokens as u64, r.output_tokens as u64)),
                work.dtype_bytes,
            );
        }
        if let Some(g) = gpu {
            g.stop();
        }
        Ok(out)
    }
}

/// A served request's timings, as [`crate::latency`] defines them: from its arrival (in a
/// closed loop, every request arrives when the window opens), its admission taking the place
/// of a batch's start.
fn served_timing(
    index: usize,
    input_tokens: usize,
    r: &ServedRequest,
    window_start_s: f64,
    closed_loop: bool,
) -> RequestTiming {
    let arrival = if closed_loop {
        window_start_s
    } else {
        r.arrival_s
    };
    let admitted = if r.admitted_s.is_nan() {
        arrival
    } else {
        r.admitted_s
    };
    let first = r.token_s.first().copied();
    let last = r.token_s.last().copied();
    let n = r.token_s.len();
    let ttft_s = first.map_or(0.0, |t| t - arrival);
    let e2e_s = last.map_or(0.0, |t| t - arrival);
    RequestTiming {
        replica: 0,
        batch_index: r.iteration,
        request_index: index,
        input_tokens,
        output_tokens: n,
        arrival_s: arrival - window_start_s,
        queue_s: admitted - arrival,
        ttft_s,
        ttft_service_s: first.map_or(0.0, |t| t - admitted),
        tpot_s: (n >= 2).then(|| (e2e_s - ttft_s) / (n - 1) as f64),
        e2e_s,
        inter_token_s: r.token_s.windows(2).map(|w| w[1] - w[0]).collect(),
        output_ids: r.output_ids.clone(),
    }
}

/// Drops each sequence's tokens past its own cap: they were computed (a static batch runs
/// until its longest sequence ends) but are not the request's output.
fn cap_outputs(steps: &mut [StepOutput], caps: &[usize]) {
    let mut seen = vec![0usize; caps.len()];
    for step in steps {
        for ((token, seen), &cap) in step.tokens.iter_mut().zip(&mut seen).zip(caps) {
            if token.is_some() {
                if *seen >= cap {
                    *token = None;
                } else {
                    *seen += 1;
                }
            }
        }
    }
}

/// Each trace request's prompt: the run's prompt `i` (cycled) repeated or cut to the
/// request's token count. The contents are synthetic; the lengths are the trace's.
fn trace_prompts(encoded: &[Vec<u32>], requests: &[crate::trace::TraceRequest]) -> Vec<Vec<u32>> {
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let source = &encoded[i % encoded.len()];
            source
                .iter()
                .copied()
                .cycle()
                .take(r.input_tokens)
                .collect()
        })
        .collect()
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
