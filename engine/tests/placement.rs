//! `study(#{ placement: "per-device" })` on a scripted clock: runs on devices that share no
//! hardware execute at the same time in lanes, each run's GPU energy is exactly its own GPU's
//! counter, machine-wide CPU energy is each run's time-share (the window's energy over the mean
//! number of runs in flight), and a sink failure or a cancel stops every lane. The default
//! placement runs one at a time and shares nothing.

mod common;

use common::fake_model_info;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use api::meter::{
    DevicePeak, Domain, EnergyCounter, MeterError, MeterProvider, MeterStatus, Probe, Source,
};
use api::runtime::{
    GenerateOptions, Generation, LoadedModel, ModelInfo, ModelSpec, Runtime, RuntimeError,
    StepOutput,
};
use engine::execute::{Clock, Executor, Outcome, Progress};
use engine::metering::{EnergySource, EnergySplit};
use engine::record::{MemorySink, RecordSink, RunRecord, RunStatus, SinkError};
use engine::schedule::Schedule;

/// A scripted clock on which every thread but the one that made it (the lanes) keeps its own
/// time, starting from the owner's when it first looks; a lane that advances waits until no
/// other lane is behind it. Events of all lanes then happen in the order of their scripted
/// times, as on a real clock, which the time-share relies on: when a run ends, every run that
/// started before has registered its window. No lane advances before `lanes` lanes have
/// looked; a lane stops counting when its thread ends.
#[derive(Clone)]
struct LaneTime(Arc<Inner>);

struct Inner {
    owner: ThreadId,
    lanes: usize,
    state: Mutex<State>,
    moved: Condvar,
}

#[derive(Default)]
struct State {
    /// The owner's time.
    shared: f64,
    /// Each live lane's time.
    threads: HashMap<ThreadId, f64>,
    /// Lanes that have looked so far, ended ones included.
    seen: usize,
}

/// Removes a lane from the clock when its thread ends, so the others stop waiting for it.
struct Leave(Arc<Inner>, ThreadId);

impl Drop for Leave {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.threads.remove(&self.1);
        self.0.moved.notify_all();
    }
}

thread_local! {
    static LEAVES: RefCell<Vec<Leave>> = const { RefCell::new(Vec::new()) };
}

impl LaneTime {
    fn new(lanes: usize) -> Self {
        LaneTime(Arc::new(Inner {
            owner: std::thread::current().id(),
            lanes,
            state: Mutex::default(),
            moved: Condvar::new(),
        }))
    }

    /// The state, with the calling lane registered (at the owner's time) if it is new.
    fn state(&self) -> MutexGuard<'_, State> {
        let me = std::thread::current().id();
        let mut state = self.0.state.lock().unwrap();
        if me != self.0.owner && !state.threads.contains_key(&me) {
            let start = state.shared;
            state.threads.insert(me, start);
            state.seen += 1;
            LEAVES.with(|l| l.borrow_mut().push(Leave(self.0.clone(), me)));
            self.0.moved.notify_all();
        }
        state
    }

    fn advance(&self, s: f64) {
        let me = std::thread::current().id();
        let mut state = self.state();
        if me == self.0.owner {
            state.shared += s;
            return;
        }
        let t = {
            let t = state.threads.get_mut(&me).unwrap();
            *t += s;
            *t
        };
        self.0.moved.notify_all();
        while state.seen < self.0.lanes
            || state
                .threads
                .iter()
                .any(|(id, other)| *id != me && *other < t)
        {
            state = self.0.moved.wait(state).unwrap();
        }
    }

    /// A thread's time without registering the caller (meters read it from their sampler
    /// thread too).
    fn time_of(&self, thread: ThreadId) -> f64 {
        let state = self.0.state.lock().unwrap();
        state.threads.get(&thread).copied().unwrap_or(state.shared)
    }
}

impl Clock for LaneTime {
    fn now_s(&self) -> f64 {
        let me = std::thread::current().id();
        let state = self.state();
        if me == self.0.owner {
            state.shared
        } else {
            state.threads[&me]
        }
    }
    fn sleep_s(&self, seconds: f64) {
        self.advance(seconds);
    }
}

const PREFILL_S: f64 = 0.5;
const DECODE_S: f64 = 0.25;
/// Joules a step puts on its GPU's counter, per device ordinal: distinct so a mix-up shows.
const GPU_J_PER_STEP: [f64; 2] = [3.0, 5.0];
/// The machine's CPU package draws this much whatever runs: its counter is power × time.
const CPU_W: f64 = 10.0;

/// Cumulative joules of each fake GPU, advanced by the steps run on it.
type GpuCounters = Arc<Mutex<[f64; 2]>>;

struct FakeModel {
    info: ModelInfo,
    time: LaneTime,
    gpu: Option<usize>,
    counters: GpuCounters,
}

struct FakeGeneration<'a> {
    model: &'a FakeModel,
    remaining: Vec<usize>,
    step: usize,
}

impl Generation for FakeGeneration<'_> {
    fn step(&mut self) -> Result<StepOutput, RuntimeError> {
        let m = self.model;
        m.time
            .advance(if self.step == 0 { PREFILL_S } else { DECODE_S });
        if let Some(g) = m.gpu {
            m.counters.lock().unwrap()[g] += GPU_J_PER_STEP[g];
        }
        self.step += 1;
        let tokens = self
            .remaining
            .iter_mut()
            .map(|r| {
                (*r > 0).then(|| {
                    *r -= 1;
                    7
                })
            })
            .collect();
        Ok(StepOutput {
            tokens,
            finished: self.remaining.iter().all(|r| *r == 0),
        })
    }

    fn kv_cache_bytes(&self) -> u64 {
        100 * self.step as u64
    }
}

impl LoadedModel for FakeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        Ok(std::iter::once(1)
            .chain(text.split_whitespace().map(|w| w.len() as u32))
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
        Ok(Box::new(FakeGeneration {
            model: self,
            remaining: vec![options.max_new_tokens; prompts.len()],
            step: 0,
        }))
    }
}

struct FakeRuntime {
    time: LaneTime,
    counters: GpuCounters,
    /// (device, loading thread) of every load.
    loads: Mutex<Vec<(String, ThreadId)>>,
}

impl Runtime for FakeRuntime {
    fn load(&self, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        self.loads
            .lock()
            .unwrap()
            .push((spec.device.clone(), std::thread::current().id()));
        let gpu = spec
            .device
            .strip_prefix("cuda:")
            .map(|n| n.parse::<usize>().unwrap());
        Ok(Box::new(FakeModel {
            info: fake_model_info(&spec.source, 64),
            time: self.time.clone(),
            gpu,
            counters: self.counters.clone(),
        }))
    }
    fn devices(&self) -> Vec<String> {
        vec!["cpu".into(), "cuda:0".into(), "cuda:1".into()]
    }
}

/// One GPU's counter, as NVML opens it per device.
struct FakeNvml {
    gpu: usize,
    counters: GpuCounters,
}

impl EnergyCounter for FakeNvml {
    fn domain(&self) -> Domain {
        Domain::Gpu
    }
    fn source(&self) -> Source {
        Source::Nvml
    }
    fn describe(&self) -> String {
        format!("fake nvml cuda:{}", self.gpu)
    }
    fn read_j(&mut self) -> Result<f64, MeterError> {
        Ok(self.counters.lock().unwrap()[self.gpu])
    }
}

/// The machine's CPU package at constant power: joules are [`CPU_W`] × now, read on the time
/// of the lane that opened it (its sampler thread reads that time too).
struct FakeRapl {
    time: LaneTime,
    lane: ThreadId,
}

impl EnergyCounter for FakeRapl {
    fn domain(&self) -> Domain {
        Domain::Cpu
    }
    fn source(&self) -> Source {
        Source::Rapl
    }
    fn describe(&self) -> String {
        "fake rapl".into()
    }
    fn read_j(&mut self) -> Result<f64, MeterError> {
        Ok(CPU_W * self.time.time_of(self.lane))
    }
}

struct FakeMachine {
    time: LaneTime,
    counters: GpuCounters,
}

impl MeterProvider for FakeMachine {
    fn energy_counters(&self, device: &str) -> Vec<Box<dyn EnergyCounter>> {
        let mut out: Vec<Box<dyn EnergyCounter>> = vec![Box::new(FakeRapl {
            time: self.time.clone(),
            lane: std::thread::current().id(),
        })];
        if let Some(gpu) = device.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            out.push(Box::new(FakeNvml {
                gpu,
                counters: self.counters.clone(),
            }));
        }
        out
    }
    fn probes(&self, _device: &str) -> Vec<Box<dyn Probe>> {
        Vec::new()
    }
    fn peak(&self, _device: &str, _dtype: &str) -> Option<DevicePeak> {
        None
    }
    fn inventory(&self) -> Vec<MeterStatus> {
        Vec::new()
    }
}

/// `x` on cuda:0 (two one-prompt batches: 2 s), then `y1` (one batch: 1 s) and `y2` (two
/// batches: 2 s) on cuda:1; each batch a prefill and two decode steps.
fn script(placement: &str) -> String {
    let run = |device: &str, prompts: &str| {
        format!(
            r#"measure(infer(load("fake", #{{ device: "{device}" }}), batch(prompts({prompts}), #{{ size: 1 }}),
                     #{{ max_new_tokens: 3, warmup: 0 }}), #{{ meters: ["latency", "energy"] }});
            "#
        )
    };
    format!(
        "study(#{{ placement: \"{placement}\" }});\n{}{}{}",
        run("cuda:0", r#"["x a", "x b"]"#),
        run("cuda:1", r#"["y1"]"#),
        run("cuda:1", r#"["y2 a", "y2 b"]"#),
    )
}

struct Executed {
    records: Vec<RunRecord>,
    outcome: Result<Outcome, SinkError>,
    events: Vec<Progress>,
    loads: Vec<(String, ThreadId)>,
}

impl Executed {
    /// The record of the run whose first prompt starts with `name`.
    fn run(&self, name: &str) -> &RunRecord {
        self.records
            .iter()
            .find(|r| first_word(r) == name)
            .unwrap_or_else(|| panic!("no record of {name}"))
    }
}

fn first_word(r: &RunRecord) -> String {
    engine::prompts::materialise(&r.spec.prompts)[0]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// What an execution returned, the progress events it sent, and its loads.
type Run = (
    Result<Outcome, SinkError>,
    Vec<Progress>,
    Vec<(String, ThreadId)>,
);

fn execute_with(
    src: &str,
    lanes: usize,
    sink: &mut dyn RecordSink,
    cancel: Option<&AtomicBool>,
    on_progress: &dyn Fn(&Progress),
) -> Run {
    let time = LaneTime::new(lanes);
    let counters: GpuCounters = Arc::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        counters: counters.clone(),
        loads: Mutex::default(),
    };
    let meters = FakeMachine {
        time: time.clone(),
        counters,
    };
    let plan = engine::script::plan_script(Path::new("t.rhai"), src, "t").unwrap();
    let mut events = Vec::new();
    let mut executor = Executor::new(&runtime, &time).with_meters(&meters);
    if let Some(cancel) = cancel {
        executor = executor.with_cancel(cancel);
    }
    let outcome = executor.execute(&Schedule::from_plan(&plan), sink, &mut |p| {
        on_progress(&p);
        events.push(p);
    });
    (outcome, events, runtime.loads.into_inner().unwrap())
}

fn execute(src: &str, lanes: usize) -> Executed {
    let mut sink = MemorySink::default();
    let (outcome, events, loads) = execute_with(src, lanes, &mut sink, None, &|_| {});
    Executed {
        records: sink.records,
        outcome,
        events,
        loads,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn cpu(r: &RunRecord) -> (Option<f64>, EnergySource) {
    let d = r
        .metrics
        .as_ref()
        .unwrap()
        .meters
        .domain(Domain::Cpu)
        .unwrap();
    (d.joules, d.source)
}

fn gpu_j(r: &RunRecord) -> Option<f64> {
    r.metrics
        .as_ref()
        .unwrap()
        .meters
        .domain(Domain::Gpu)
        .unwrap()
        .joules
}

#[test]
fn per_device_lanes_overlap_and_each_run_holds_its_time_share_of_the_cpu() {
    let out = execute(&script("per-device"), 2);
    let outcome = out.outcome.as_ref().unwrap();
    assert_eq!(
        (outcome.ok, outcome.failed, outcome.cancelled),
        (3, 0, false)
    );
    for r in &out.records {
        assert_eq!(r.status, RunStatus::Ok, "{:?}", r.error);
    }
    // Windows on the scripted clock: x [0, 2] on cuda:0 beside y1 [0, 1] then y2 [1, 3] on
    // cuda:1. Each lane loaded its model once, on its own thread.
    let (x, y1, y2) = (out.run("x"), out.run("y1"), out.run("y2"));
    for (r, wall) in [(x, 2.0), (y1, 1.0), (y2, 2.0)] {
        assert!(close(r.metrics.as_ref().unwrap().wall_s, wall), "{wall}");
    }
    assert_eq!(out.loads.len(), 2);
    assert_ne!(
        out.loads[0].1, out.loads[1].1,
        "lanes load on their own threads"
    );
    assert_ne!(out.loads[0].1, std::thread::current().id());
    // Records are stored as runs end: y1 at 1 s, x at 2 s, y2 at 3 s.
    let order: Vec<String> = out.records.iter().map(first_word).collect();
    assert_eq!(order, ["y1", "x", "y2"]);
    // GPU: each run exactly its own device's counter (3 steps per batch).
    assert_eq!(gpu_j(x), Some(2.0 * 3.0 * GPU_J_PER_STEP[0]));
    assert_eq!(gpu_j(y1), Some(3.0 * GPU_J_PER_STEP[1]));
    assert_eq!(gpu_j(y2), Some(2.0 * 3.0 * GPU_J_PER_STEP[1]));
    // CPU: the window's counter delta × window / ∫ runs in flight over the window.
    //   x  [0, 2]: itself 2 + y1 1 + y2 1 = 4   → 20 J × 2/4
    //   y1 [0, 1]: itself 1 + x 1 = 2           → 10 J × 1/2
    //   y2 [1, 3]: itself 2 + x 1 = 3           → 20 J × 2/3
    for (r, window, integral) in [(x, 2.0, 4.0), (y1, 1.0, 2.0), (y2, 2.0, 3.0)] {
        let (joules, source) = cpu(r);
        assert_eq!(source, EnergySource::Shared(Source::Rapl));
        let expected = CPU_W * window * window / integral;
        assert!(close(joules.unwrap(), expected), "{joules:?} != {expected}");
        let m = &r.metrics.as_ref().unwrap().meters;
        assert_eq!(m.total_source(), "nvml+shared");
        // Machine-wide energy cannot be split by phase: neither can the run's.
        assert_eq!((m.prefill_j, m.split), (None, None));
        let notes = m.notes.join("; ");
        assert!(notes.contains("time-share"), "{notes}");
        assert!(
            notes.contains(&format!("{:.2} runs in flight", integral / window)),
            "{notes}"
        );
    }
    // Progress indices stay those of the pending executions, each started and finished once.
    let mut started: Vec<usize> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Progress::RunStarted { index, total, .. } => {
                assert_eq!(*total, 3);
                Some(*index)
            }
            _ => None,
        })
        .collect();
    started.sort();
    assert_eq!(started, [1, 2, 3]);
    let mut finished: Vec<usize> = out
        .events
        .iter()
        .filter_map(|e| match e {
            Progress::RunFinished { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    finished.sort();
    assert_eq!(finished, [1, 2, 3]);
}

#[test]
fn one_at_a_time_stays_the_default_and_shares_nothing() {
    let out = execute(&script("one-at-a-time"), 0);
    assert_eq!(out.outcome.as_ref().unwrap().ok, 3);
    // In schedule order on the calling thread: x [0, 2], y1 [2, 3], y2 [3, 5].
    let order: Vec<String> = out.records.iter().map(first_word).collect();
    assert_eq!(order, ["x", "y1", "y2"]);
    assert!(
        out.loads
            .iter()
            .all(|(_, t)| *t == std::thread::current().id())
    );
    for (name, window, gpu) in [
        ("x", 2.0, 6.0 * GPU_J_PER_STEP[0]),
        ("y1", 1.0, 3.0 * GPU_J_PER_STEP[1]),
        ("y2", 2.0, 6.0 * GPU_J_PER_STEP[1]),
    ] {
        let r = out.run(name);
        let (joules, source) = cpu(r);
        assert_eq!(source, EnergySource::From(Source::Rapl));
        assert!(close(joules.unwrap(), CPU_W * window), "{name}");
        assert_eq!(gpu_j(r), Some(gpu));
        let m = &r.metrics.as_ref().unwrap().meters;
        assert_eq!(m.total_source(), "nvml+rapl");
        assert_eq!(m.split, Some(EnergySplit::Measured));
    }
}

#[test]
fn runs_whose_devices_overlap_run_in_one_lane_one_at_a_time() {
    // `cuda` is cuda:0: every run shares one GPU, so per-device runs one lane, as the default.
    let src = script("per-device").replace("\"cuda:1\"", "\"cuda\"");
    let out = execute(&src, 0);
    assert_eq!(out.outcome.as_ref().unwrap().ok, 3);
    let order: Vec<String> = out.records.iter().map(first_word).collect();
    assert_eq!(order, ["x", "y1", "y2"]);
    for r in &out.records {
        assert_eq!(cpu(r).1, EnergySource::From(Source::Rapl));
    }
}

/// A sink that refuses every record.
#[derive(Default)]
struct FailingSink {
    attempts: usize,
}

impl RecordSink for FailingSink {
    fn record(&mut self, record: &RunRecord) -> Result<(), SinkError> {
        self.attempts += 1;
        Err(SinkError {
            run_hash: record.run_hash.clone(),
            source: Box::new(std::io::Error::other("disk full")),
        })
    }
    fn completed(&self) -> std::collections::HashSet<(String, usize)> {
        Default::default()
    }
}

#[test]
fn a_record_that_cannot_be_stored_stops_every_lane() {
    let mut sink = FailingSink::default();
    let (outcome, events, _) = execute_with(&script("per-device"), 2, &mut sink, None, &|_| {});
    let err = outcome.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    // y1 ended first and was refused: x, in flight, was abandoned and y2 never started.
    assert_eq!(sink.attempts, 1);
    let started = events
        .iter()
        .filter(|e| matches!(e, Progress::RunStarted { .. }))
        .count();
    assert_eq!(started, 2);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Progress::RunFinished { .. }))
    );
}

#[test]
fn a_cancel_stops_every_lane_and_keeps_what_finished() {
    let cancel = AtomicBool::new(false);
    let mut sink = MemorySink::default();
    let (outcome, _, _) = execute_with(&script("per-device"), 2, &mut sink, Some(&cancel), &|e| {
        if matches!(e, Progress::RunFinished { .. }) {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    let outcome = outcome.unwrap();
    assert!(outcome.cancelled);
    assert_eq!((outcome.ok, outcome.failed), (1, 0));
    let stored: Vec<String> = sink.records.iter().map(first_word).collect();
    assert_eq!(stored, ["y1"]);
}
