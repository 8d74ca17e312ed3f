//! Executor tests against a fake runtime whose steps take scripted times on a fake clock.

mod common;

use common::fake_model_info;
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use api::meter::{
    DevicePeak, Domain, EnergyCounter, MeterError, MeterProvider, MeterStatus, Probe, Source,
};
use api::runtime::{
    GenerateOptions, Generation, LoadedModel, ModelInfo, ModelSpec, Runtime, RuntimeError,
    StepOutput,
};
use engine::execute::{Clock, Executor, Outcome, Progress};
use engine::metering::{EnergySource, EnergySplit};
use engine::record::{MemorySink, RunStatus};
use engine::schedule::Schedule;

/// Seconds on the fake clock; steps advance it.
#[derive(Clone, Default)]
struct FakeTime(Arc<Mutex<f64>>);

impl FakeTime {
    fn advance(&self, s: f64) {
        *self.0.lock().unwrap() += s;
    }
}

impl Clock for FakeTime {
    fn now_s(&self) -> f64 {
        *self.0.lock().unwrap()
    }
    fn sleep_s(&self, seconds: f64) {
        self.advance(seconds);
    }
}

const PREFILL_S: f64 = 0.5;
const DECODE_S: f64 = 0.1;
const LOAD_S: f64 = 3.0;

struct FakeModel {
    info: ModelInfo,
    time: FakeTime,
    /// Generations that fail with a backend error before one succeeds.
    failures_left: Mutex<usize>,
}

struct FakeGeneration {
    time: FakeTime,
    remaining: Vec<usize>,
    step: usize,
}

impl Generation for FakeGeneration {
    fn step(&mut self) -> Result<StepOutput, RuntimeError> {
        self.time
            .advance(if self.step == 0 { PREFILL_S } else { DECODE_S });
        self.step += 1;
        let tokens = self
            .remaining
            .iter_mut()
            .map(|r| {
                if *r == 0 {
                    None
                } else {
                    *r -= 1;
                    Some(7)
                }
            })
            .collect();
        Ok(StepOutput {
            tokens,
            finished: self.remaining.iter().all(|r| *r == 0),
        })
    }

    fn kv_cache_bytes(&self) -> u64 {
        1024 * self.step as u64
    }
}

impl LoadedModel for FakeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        // One token per word, plus BOS.
        Ok(std::iter::once(1)
            .chain(text.split_whitespace().map(|_| 5))
            .collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        Ok(format!("{} tokens", ids.len()))
    }
    fn start<'a>(
        &'a self,
        prompts: &[Vec<u32>],
        options: &GenerateOptions,
    ) -> Result<Box<dyn Generation + 'a>, RuntimeError> {
        {
            let mut left = self.failures_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                // Both forms of a backend failure, alternately: each must be retried.
                return Err(if left.is_multiple_of(2) {
                    RuntimeError::Backend("device busy".into())
                } else {
                    RuntimeError::BackendFailure(Box::new(std::io::Error::other("device busy")))
                });
            }
        }
        // Sequence i stops after max_new_tokens - i tokens, so lengths differ within a batch.
        let remaining = (0..prompts.len())
            .map(|i| options.max_new_tokens.saturating_sub(i).max(1))
            .collect();
        Ok(Box::new(FakeGeneration {
            time: self.time.clone(),
            remaining,
            step: 0,
        }))
    }
}

struct FakeRuntime {
    time: FakeTime,
    loads: Mutex<Vec<String>>,
}

impl Runtime for FakeRuntime {
    fn load(&self, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        self.loads.lock().unwrap().push(spec.source.clone());
        self.time.advance(LOAD_S);
        if spec.source == "broken" {
            return Err(RuntimeError::InvalidModelFile {
                path: "broken/model.safetensors".into(),
                reason: "truncated".into(),
            });
        }
        Ok(Box::new(FakeModel {
            info: fake_model_info(&spec.source, 16),
            time: self.time.clone(),
            failures_left: Mutex::new(match spec.source.as_str() {
                "flaky" => 2,
                "hopeless" => usize::MAX,
                _ => 0,
            }),
        }))
    }
    fn devices(&self) -> Vec<String> {
        vec!["cpu".into()]
    }
}

fn plan(src: &str) -> engine::plan::Plan {
    engine::script::plan_script(Path::new("t.rhai"), src, "t").unwrap()
}

fn execute(src: &str) -> (MemorySink, Vec<String>) {
    let time = FakeTime::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let executor = Executor::new(&runtime, &time);
    let mut sink = MemorySink::default();
    let events = Rc::new(Cell::new(0));
    let counter = events.clone();
    executor
        .execute(
            &Schedule::from_plan(&plan(src)),
            &mut sink,
            &mut |_: Progress| counter.set(counter.get() + 1),
        )
        .unwrap();
    assert!(events.get() > 0);
    let loads = runtime.loads.lock().unwrap().clone();
    (sink, loads)
}

#[test]
fn latency_arithmetic_on_scripted_step_times() {
    let (sink, _) = execute(
        r#"
        let m = load("fake");
        let p = prompts(["a b", "c d e", "f"]);
        infer(m, batch(p, #{ size: 2 }), #{ max_new_tokens: 4, warmup: 1 });
        "#,
    );
    let record = &sink.records[0];
    assert_eq!(record.status, RunStatus::Ok);
    let m = record.metrics.as_ref().unwrap();
    // Batch 0: prompts of 3 and 4 tokens; lengths 4 and 3 -> 4 steps. Batch 1: one prompt, 4 steps.
    assert_eq!(m.num_batches, 2);
    assert_eq!(m.input_tokens, 3 + 4 + 2);
    assert_eq!(m.output_tokens, 4 + 3 + 4);
    let eps = 1e-9;
    assert!((m.prefill_s - 2.0 * PREFILL_S).abs() < eps);
    assert!((m.decode_s - 6.0 * DECODE_S).abs() < eps);
    assert!((m.wall_s - (2.0 * PREFILL_S + 6.0 * DECODE_S)).abs() < eps);
    // Warm-up is one real generation of the first batch, excluded from wall_s.
    assert!((m.warmup_s - (PREFILL_S + 3.0 * DECODE_S)).abs() < eps);
    let r = &record.requests;
    assert_eq!(r.len(), 3);
    assert!((r[0].ttft_s - PREFILL_S).abs() < eps);
    assert!((r[0].e2e_s - (PREFILL_S + 3.0 * DECODE_S)).abs() < eps);
    assert!((r[0].tpot_s.unwrap() - DECODE_S).abs() < eps);
    assert!((r[1].e2e_s - (PREFILL_S + 2.0 * DECODE_S)).abs() < eps);
    // Closed loop: the second batch's request arrives when it is handed to the engine, after
    // the first batch finished, so it does not queue and its TTFT is its own prompt pass.
    assert_eq!(r[2].queue_s, 0.0);
    assert!((r[2].arrival_s - (PREFILL_S + 3.0 * DECODE_S)).abs() < eps);
    assert!((r[2].ttft_s - PREFILL_S).abs() < eps);
    assert!((m.output_tokens_per_s().unwrap() - 11.0 / m.wall_s).abs() < eps);
}

#[test]
fn each_model_loads_once_per_cycle_and_a_broken_one_fails_alone() {
    let (sink, loads) = execute(
        r#"
        import "sweep" as sweep;
        let p = prompts(["x"]);
        for cfg in sweep::grid(#{ model: ["a", "broken", "c"], bs: [1, 2, 3, 4] }) {
            infer(load(cfg.model), batch(p, #{ size: cfg.bs }), #{ max_new_tokens: 2, warmup: 0 });
        }
        "#,
    );
    assert_eq!(loads, vec!["a", "broken", "c"]);
    assert_eq!(sink.records.len(), 12);
    let failed: Vec<_> = sink
        .records
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 4);
    assert!(failed.iter().all(|r| r.spec.load.model == "broken"));
    assert!(
        failed[0].error.as_deref().unwrap().contains("truncated"),
        "{:?}",
        failed[0].error
    );
}

#[test]
fn completed_runs_are_skipped_on_resume() {
    let src = r#"infer(load("a"), batch(prompts(["x"])), #{ max_new_tokens: 2, warmup: 0 });"#;
    let time = FakeTime::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let executor = Executor::new(&runtime, &time);
    let mut sink = MemorySink::default();
    let schedule = Schedule::from_plan(&plan(src));
    let first = executor.execute(&schedule, &mut sink, &mut |_| {}).unwrap();
    let second = executor.execute(&schedule, &mut sink, &mut |_| {}).unwrap();
    assert_eq!((first.ok, first.skipped), (1, 0));
    assert_eq!((second.ok, second.skipped), (0, 1));
    assert_eq!(sink.records.len(), 1);
}

#[test]
fn arrivals_delay_batches_and_show_as_queue_time() {
    // One request every 2 s, batches of 2: batch 0 waits for request 1 (t=2), batch 1 for
    // request 3 (t=6).
    let (sink, _) = execute(
        r#"
        let p = prompts(["a", "b", "c", "d"]);
        infer(load("m"), batch(p, #{ size: 2 }), #{ max_new_tokens: 1, warmup: 0,
              arrival: #{ pattern: "constant", interval_s: 2.0 } });
        "#,
    );
    let r = &sink.records[0].requests;
    let eps = 1e-9;
    assert!((r[0].queue_s - 2.0).abs() < eps);
    assert!((r[1].queue_s - 0.0).abs() < eps);
    assert!((r[2].queue_s - 2.0).abs() < eps);
    // TTFT and e2e count from arrival (vLLM, MLPerf): request 0 queued 2 s for its batch.
    // Regression (issue A.1): they were measured from the batch start, hiding the queue.
    assert!((r[0].ttft_s - (2.0 + PREFILL_S)).abs() < eps);
    assert!((r[0].ttft_service_s - PREFILL_S).abs() < eps);
    assert!((r[1].ttft_s - PREFILL_S).abs() < eps);
    assert!((r[0].e2e_s - (2.0 + PREFILL_S)).abs() < eps);
    // Arrival offsets are from the window's opening: 0, 2, 4, 6 s.
    let arrivals: Vec<f64> = r.iter().map(|q| q.arrival_s).collect();
    assert_eq!(arrivals, vec![0.0, 2.0, 4.0, 6.0]);
    // Request 2 arrived at 4 s; batch 1 starts at 6 s (after request 3).
    assert!((r[2].ttft_s - (2.0 + PREFILL_S)).abs() < eps);
    let m = sink.records[0].metrics.as_ref().unwrap();
    assert!((m.wall_s - (6.0 + PREFILL_S)).abs() < eps);
}

#[test]
fn token_budget_splits_batches_by_padded_cost() {
    // Prompts of 2 tokens + 4 new tokens cost 6 each: a budget of 12 allows two per batch.
    let (sink, _) = execute(
        r#"
        let p = prompts(["a", "b", "c", "d", "e"]);
        infer(load("m"), batch(p, #{ token_budget: 12 }), #{ max_new_tokens: 4, warmup: 0 });
        "#,
    );
    assert_eq!(sink.records[0].metrics.as_ref().unwrap().num_batches, 3);
}

/// Executes `src` on the fake runtime; returns what was recorded and the fake seconds it took.
fn execute_timed(src: &str) -> (MemorySink, f64) {
    let time = FakeTime::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let mut sink = MemorySink::default();
    Executor::new(&runtime, &time)
        .execute(&Schedule::from_plan(&plan(src)), &mut sink, &mut |_| {})
        .unwrap();
    (sink, time.now_s())
}

#[test]
fn backend_errors_are_retried_after_a_delay_then_recorded() {
    // Non-default settings (the defaults are 3 retries, 5 s apart), so settings that were
    // accepted and then ignored would show.
    let script = |delay: &str| {
        format!(
            r#"
        study(#{{ retries: 2, retry_delay_s: {delay} }});
        let p = batch(prompts(["x"]));
        infer(load("flaky"), p, #{{ max_new_tokens: 2, warmup: 0 }});
        infer(load("hopeless"), p, #{{ max_new_tokens: 2, warmup: 0 }});
        "#
        )
    };
    let (sink, waited) = execute_timed(&script("1.5"));
    // "flaky" fails twice: the second retry succeeds.
    assert_eq!(sink.records[0].status, RunStatus::Ok);
    assert_eq!(sink.records[0].error, None);
    assert_eq!(sink.records[1].status, RunStatus::Failed);
    assert_eq!(
        sink.records[1].error.as_deref(),
        Some("backend error: device busy (after 2 retries)")
    );
    // Four retries in all, each after 1.5 s on the clock.
    let (_, unwaited) = execute_timed(&script("0"));
    assert!(
        (waited - unwaited - 4.0 * 1.5).abs() < 1e-9,
        "{waited} vs {unwaited}"
    );
    // One retry is not enough for "flaky".
    let (sink, _) = execute_timed(&script("0").replace("retries: 2", "retries: 1"));
    assert_eq!(
        sink.records[0].error.as_deref(),
        Some("backend error: device busy (after 1 retries)")
    );
}

/// A counter that integrates a constant power over the fake clock, like RAPL under a steady
/// load: its joules are exact functions of fake time, whoever reads them and when.
struct SteadyPower {
    time: FakeTime,
    watts: f64,
    domain: Domain,
    source: Source,
}

impl EnergyCounter for SteadyPower {
    fn domain(&self) -> Domain {
        self.domain
    }
    fn source(&self) -> Source {
        self.source
    }
    fn describe(&self) -> String {
        format!("steady {} W", self.watts)
    }
    fn read_j(&mut self) -> Result<f64, MeterError> {
        Ok(self.watts * self.time.now_s())
    }
}

struct SteadyMachine {
    time: FakeTime,
}

impl MeterProvider for SteadyMachine {
    fn energy_counters(&self, _device: &str) -> Vec<Box<dyn EnergyCounter>> {
        vec![
            Box::new(SteadyPower {
                time: self.time.clone(),
                watts: 30.0,
                domain: Domain::Cpu,
                source: Source::Rapl,
            }),
            Box::new(SteadyPower {
                time: self.time.clone(),
                watts: 6.0,
                domain: Domain::Ram,
                source: Source::Estimate,
            }),
        ]
    }
    fn probes(&self, _device: &str) -> Vec<Box<dyn Probe>> {
        Vec::new()
    }
    fn peak(&self, _device: &str, _dtype: &str) -> Option<DevicePeak> {
        Some(DevicePeak {
            flops_per_s: 1e6,
            bytes_per_s: 1e4,
            source: "test".into(),
            ..DevicePeak::default()
        })
    }
    fn inventory(&self) -> Vec<MeterStatus> {
        Vec::new()
    }
}

#[test]
fn energy_is_split_by_phase_with_sources_and_idle_baseline() {
    let time = FakeTime::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let machine = SteadyMachine { time: time.clone() };
    let executor = Executor::new(&runtime, &time).with_meters(&machine);
    let mut sink = MemorySink::default();
    let src = r#"
        let m = load("fake");
        let r = infer(m, batch(prompts(["a b", "c d e", "f"]), #{ size: 2 }),
                      #{ max_new_tokens: 4, warmup: 1 });
        measure(r, #{ meters: ["energy", "latency"], idle_baseline_s: 2.0,
                      carbon: #{ country: "FRA", pue: 1.5 } });
    "#;
    executor
        .execute(&Schedule::from_plan(&plan(src)), &mut sink, &mut |_| {})
        .unwrap();
    let m = sink.records[0].metrics.as_ref().unwrap();
    // Two batches of 4 steps: 2 × (0.5 s prefill + 3 × 0.1 s decode) = 1.6 s.
    assert!((m.wall_s - 1.6).abs() < 1e-9);
    let total = m.meters.total_j().unwrap();
    assert!((total - 36.0 * 1.6).abs() < 1e-9, "{total}");
    assert_eq!(m.meters.total_source(), "rapl+estimate");
    let cpu = m.meters.domain(Domain::Cpu).unwrap();
    assert!((cpu.joules.unwrap() - 48.0).abs() < 1e-9);
    assert_eq!(cpu.source, EnergySource::From(Source::Rapl));
    assert_eq!(
        m.meters.domain(Domain::Gpu).unwrap().source,
        EnergySource::Unavailable
    );
    // CPU is split at the boundaries (30 W × 1.0 s prefill); RAM is apportioned by time.
    let prefill = m.meters.prefill_j.unwrap();
    assert!((prefill - (30.0 * 1.0 + 6.0 * 1.6 * 1.0 / 1.6)).abs() < 1e-9);
    assert!((m.meters.decode_j.unwrap() - 36.0 * 0.6).abs() < 1e-9);
    assert_eq!(m.meters.split, Some(EnergySplit::Apportioned));
    // Idle baseline: the same steady 36 W, so nothing is left net of idle.
    assert!((m.meters.idle_power_w.unwrap() - 36.0).abs() < 1e-9);
    assert!(m.energy_net_j().unwrap().abs() < 1e-9);
    // Joules per generated token use the total, not the net figure.
    let tokens = m.output_tokens as f64;
    assert!((m.j_per_output_token().unwrap() - total / tokens).abs() < 1e-12);
    // France 2021: 67.39 g/kWh, PUE 1.5.
    let co2 = m.co2e_g().unwrap();
    assert!((co2 - total / 3.6e6 * 67.39 * 1.5).abs() < 1e-12);
    // MFU and MBU use the device peak.
    assert!((m.mfu().unwrap() - m.flops_per_s().unwrap() / 1e6).abs() < 1e-12);
    assert!((m.mbu().unwrap() - m.decode_bytes as f64 / m.decode_s / 1e4).abs() < 1e-12);
    // Decode reads the weights a step reads (32 of the 40 bytes) once per step, 2 batches ×
    // 3 steps, plus each request's KV cache.
    let info = sink.records[0].model.as_ref().unwrap();
    let kv: u64 = sink.records[0]
        .requests
        .iter()
        .map(|r| {
            engine::flops::decode_kv_read_bytes(
                info,
                r.input_tokens as u64,
                r.output_tokens as u64,
                4,
            )
        })
        .sum();
    assert_eq!(m.decode_bytes, 6 * 32 + kv);
}

/// Runs a 3-run study whose cancel flag is raised by the progress event `raise_on`.
fn execute_cancelled(raise_on: &dyn Fn(&Progress) -> bool) -> (MemorySink, Outcome) {
    let src = r#"
        let p = batch(prompts(["x", "y"]));
        for n in [1, 2, 3] { infer(load("a"), p, #{ max_new_tokens: n, warmup: 0 }); }
    "#;
    let time = FakeTime::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let cancel = AtomicBool::new(false);
    let executor = Executor::new(&runtime, &time).with_cancel(&cancel);
    let mut sink = MemorySink::default();
    let outcome = executor
        .execute(&Schedule::from_plan(&plan(src)), &mut sink, &mut |p| {
            if raise_on(&p) {
                cancel.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
    (sink, outcome)
}

#[test]
fn a_raised_cancel_flag_starts_no_further_run() {
    let (sink, outcome) =
        execute_cancelled(&|p| matches!(p, Progress::RunFinished { index: 1, .. }));
    assert!(outcome.cancelled);
    assert_eq!((outcome.ok, outcome.failed), (1, 0));
    assert_eq!(sink.records.len(), 1);
}

#[test]
fn a_run_cancelled_midway_is_abandoned_and_writes_nothing() {
    // Raised as run 2 starts: it is abandoned at its first step, run 3 never starts.
    let (sink, outcome) =
        execute_cancelled(&|p| matches!(p, Progress::RunStarted { index: 2, .. }));
    assert!(outcome.cancelled);
    assert_eq!((outcome.ok, outcome.failed), (1, 0));
    assert_eq!(sink.records.len(), 1);
    assert_eq!(sink.records[0].status, RunStatus::Ok);
}

#[test]
fn a_cancel_ends_an_arrival_wait() {
    // Requests 1000 s apart: the wait for the second batch ends at the cancel, not after it.
    let time = FakeTime::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let cancel = AtomicBool::new(false);
    let src = r#"
        infer(load("a"), batch(prompts(["x", "y"]), #{ size: 1 }), #{ max_new_tokens: 1,
              warmup: 0, arrival: #{ pattern: "constant", interval_s: 1000.0 } });
    "#;
    let mut sink = MemorySink::default();
    let waits = AtomicUsize::new(0);
    struct CancellingClock<'a> {
        time: &'a FakeTime,
        cancel: &'a AtomicBool,
        waits: &'a AtomicUsize,
    }
    impl Clock for CancellingClock<'_> {
        fn now_s(&self) -> f64 {
            self.time.now_s()
        }
        fn sleep_s(&self, seconds: f64) {
            if self.waits.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                self.cancel.store(true, Ordering::SeqCst);
            }
            self.time.sleep_s(seconds);
        }
    }
    let clock = CancellingClock {
        time: &time,
        cancel: &cancel,
        waits: &waits,
    };
    let executor = Executor::new(&runtime, &clock).with_cancel(&cancel);
    let outcome = executor
        .execute(&Schedule::from_plan(&plan(src)), &mut sink, &mut |_| {})
        .unwrap();
    assert!(outcome.cancelled);
    assert!(sink.records.is_empty());
    assert_eq!(waits.load(Ordering::SeqCst), 3);
    assert!(time.now_s() < 10.0, "waited {} s", time.now_s());
}

#[test]
fn run_latency_follows_vllm_on_the_scripted_clock() {
    // Three requests every 1 s, batches of 2, 3 new tokens (the fake's second sequence of a
    // batch stops one token earlier). Batch 0 [r0, r1] waits for r1 (t = 1 s); batch 1 [r2]
    // starts when it arrives (t = 2 s, after batch 0's 0.7 s).
    let (sink, _) = execute(
        r#"
        let p = prompts(["a", "b", "c"]);
        infer(load("m"), batch(p, #{ size: 2 }), #{ max_new_tokens: 3, warmup: 0,
              arrival: #{ pattern: "constant", interval_s: 1.0 } });
        "#,
    );
    let latency = engine::latency::RunLatency::of(&sink.records[0].requests);
    let eps = 1e-9;
    let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < eps;
    // TTFT from arrival: r0 queued 1 s, r1 and r2 none; each first token after one prefill.
    let ttft = latency.get("ttft").unwrap();
    assert!(close(ttft.p50, PREFILL_S));
    assert!(close(ttft.mean, (1.0 + 3.0 * PREFILL_S) / 3.0));
    let queue = latency.get("queue").unwrap();
    assert!(close(queue.mean, 1.0 / 3.0) && close(queue.p50, 0.0));
    assert!(close(latency.get("ttft_service").unwrap().mean, PREFILL_S));
    // ITL over every gap of every request: r0 and r2 have 2 gaps, r1 one, all one decode step.
    let itl = latency.get("itl").unwrap();
    assert!(close(itl.mean, DECODE_S) && close(itl.p99, DECODE_S));
    // TPOT per request, (e2e - ttft) / (tokens - 1): one decode step for each.
    assert!(close(latency.get("tpot").unwrap().p50, DECODE_S));
    // e2e from arrival: r0 1 s + prefill + 2 steps; r1 prefill + 1 step; r2 prefill + 2 steps.
    let e2e = latency.get("e2e").unwrap();
    let expected = [
        1.0 + PREFILL_S + 2.0 * DECODE_S,
        PREFILL_S + DECODE_S,
        PREFILL_S + 2.0 * DECODE_S,
    ];
    assert!(close(e2e.mean, expected.iter().sum::<f64>() / 3.0));
}
