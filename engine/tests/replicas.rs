//! Data-parallel replicas on a scripted clock: the prompt split, every request exactly once,
//! per-replica figures, wall from the first start to the last finish, and energy attributed
//! per GPU (each device's counter once) with machine-wide CPU energy counted once per run.

mod common;

use common::fake_model_info;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use api::meter::{
    DevicePeak, Domain, EnergyCounter, MeterError, MeterProvider, MeterStatus, Probe, Source,
};
use api::runtime::{
    GenerateOptions, Generation, LoadedModel, ModelInfo, ModelSpec, Runtime, RuntimeError,
    StepOutput,
};
use engine::execute::{Clock, Executor};
use engine::metering::EnergySource;
use engine::record::{MemorySink, RunStatus};
use engine::schedule::Schedule;

/// A scripted clock on which every thread but the one that made it keeps its own time,
/// starting from the shared time when it first looks: replicas then run side by side, each
/// on its own timeline, as they would on their own devices.
#[derive(Clone)]
struct ThreadTime {
    owner: ThreadId,
    shared: Arc<Mutex<f64>>,
    others: Arc<Mutex<HashMap<ThreadId, f64>>>,
}

impl ThreadTime {
    fn new() -> Self {
        ThreadTime {
            owner: std::thread::current().id(),
            shared: Arc::default(),
            others: Arc::default(),
        }
    }

    fn advance(&self, s: f64) {
        let me = std::thread::current().id();
        if me == self.owner {
            *self.shared.lock().unwrap() += s;
        } else {
            let start = *self.shared.lock().unwrap();
            *self.others.lock().unwrap().entry(me).or_insert(start) += s;
        }
    }
}

impl Clock for ThreadTime {
    fn now_s(&self) -> f64 {
        let me = std::thread::current().id();
        let shared = *self.shared.lock().unwrap();
        if me == self.owner {
            shared
        } else {
            *self.others.lock().unwrap().entry(me).or_insert(shared)
        }
    }
    fn sleep_s(&self, seconds: f64) {
        self.advance(seconds);
    }
}

const PREFILL_S: f64 = 0.5;
const DECODE_S: f64 = 0.1;
/// Joules a step puts on its GPU's counter, per device ordinal: distinct so a mix-up shows.
const GPU_J_PER_STEP: [f64; 2] = [3.0, 5.0];

/// Cumulative joules of each fake GPU, advanced by the steps run on it, and of the machine's
/// CPU package, advanced by [`CPU_J_PER_STEP`] by every step on any device.
type GpuCounters = Arc<Mutex<[f64; 3]>>;
/// Joules a step puts on the machine's CPU counter, whatever its device.
const CPU_J_PER_STEP: f64 = 1.0;

struct FakeModel {
    info: ModelInfo,
    time: ThreadTime,
    gpu: Option<usize>,
    counters: GpuCounters,
}

struct FakeGeneration<'a> {
    model: &'a FakeModel,
    /// Greedy ids depend on the prompt only: a request's output must not depend on the
    /// replica that served it.
    ids: Vec<u32>,
    remaining: Vec<usize>,
    step: usize,
}

impl Generation for FakeGeneration<'_> {
    fn step(&mut self) -> Result<StepOutput, RuntimeError> {
        let m = self.model;
        m.time
            .advance(if self.step == 0 { PREFILL_S } else { DECODE_S });
        let mut counters = m.counters.lock().unwrap();
        if let Some(g) = m.gpu {
            counters[g] += GPU_J_PER_STEP[g];
        }
        counters[2] += CPU_J_PER_STEP;
        drop(counters);
        self.step += 1;
        let tokens = self
            .remaining
            .iter_mut()
            .zip(&self.ids)
            .map(|(r, id)| {
                (*r > 0).then(|| {
                    *r -= 1;
                    *id
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
            ids: prompts.iter().map(|p| p.len() as u32 + 10).collect(),
            remaining: vec![options.max_new_tokens; prompts.len()],
            step: 0,
        }))
    }
}

struct FakeRuntime {
    time: ThreadTime,
    counters: GpuCounters,
    loads: Mutex<Vec<String>>,
}

impl Runtime for FakeRuntime {
    fn load(&self, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, RuntimeError> {
        self.loads.lock().unwrap().push(spec.device.clone());
        if spec.device == "cpu:1" && spec.source == "fails-on-cpu1" {
            return Err(RuntimeError::DeviceUnavailable {
                device: spec.device.clone(),
                reason: "core 1 is busy".into(),
            });
        }
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

/// A GPU counter over some of the fake GPUs, each once, as NVML's counter is opened.
struct FakeNvml {
    gpus: Vec<usize>,
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
        format!("fake nvml {:?}", self.gpus)
    }
    fn read_j(&mut self) -> Result<f64, MeterError> {
        let c = self.counters.lock().unwrap();
        Ok(self.gpus.iter().map(|g| c[*g]).sum())
    }
}

/// The machine's CPU package, advanced by every step on any device.
struct FakeRapl(GpuCounters);

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
        Ok(self.0.lock().unwrap()[2])
    }
}

struct FakeMachine {
    counters: GpuCounters,
    opened: Mutex<Vec<String>>,
}

impl MeterProvider for FakeMachine {
    fn energy_counters(&self, device: &str) -> Vec<Box<dyn EnergyCounter>> {
        self.opened.lock().unwrap().push(device.to_string());
        let mut gpus: Vec<usize> = device
            .split(',')
            .filter_map(|d| d.strip_prefix("cuda:")?.parse().ok())
            .collect();
        gpus.dedup();
        let mut out: Vec<Box<dyn EnergyCounter>> = vec![Box::new(FakeRapl(self.counters.clone()))];
        if !gpus.is_empty() {
            out.push(Box::new(FakeNvml {
                gpus,
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

struct Outcome {
    sink: MemorySink,
    loads: Vec<String>,
    opened: Vec<String>,
}

fn execute(src: &str) -> Outcome {
    let time = ThreadTime::new();
    let counters: GpuCounters = Arc::default();
    let runtime = FakeRuntime {
        time: time.clone(),
        counters: counters.clone(),
        loads: Mutex::new(Vec::new()),
    };
    let meters = FakeMachine {
        counters,
        opened: Mutex::new(Vec::new()),
    };
    let plan = engine::script::plan_script(Path::new("t.rhai"), src, "t").unwrap();
    let mut sink = MemorySink::default();
    Executor::new(&runtime, &time)
        .with_meters(&meters)
        .execute(&Schedule::from_plan(&plan), &mut sink, &mut |_| {})
        .unwrap();
    Outcome {
        sink,
        loads: runtime.loads.into_inner().unwrap(),
        opened: meters.opened.into_inner().unwrap(),
    }
}

const PROMPTS: &str = r#"prompts(["a", "b b", "c c c", "d d d d", "e e e e e"])"#;

fn script(devices: &str, batch: usize) -> String {
    format!(
        r#"
        let m = load("fake", #{{ devices: {devices} }});
        let run = infer(m, batch({PROMPTS}, #{{ size: {batch} }}), #{{ max_new_tokens: 3, warmup: 0 }});
        measure(run, #{{ meters: ["latency", "energy"] }});
        "#
    )
}

#[test]
fn two_gpu_replicas_split_the_prompts_and_read_each_gpu_once() {
    let out = execute(&script(r#"["cuda:0", "cuda:1"]"#, 2));
    let record = &out.sink.records[0];
    assert_eq!(record.status, RunStatus::Ok, "{:?}", record.error);
    // One load per replica, each on its own device.
    let mut loads = out.loads.clone();
    loads.sort();
    assert_eq!(loads, vec!["cuda:0", "cuda:1"]);
    // Accelerate's split: 5 prompts over 2 replicas, the first takes the remainder.
    let replicas = &record.replicas;
    assert_eq!(replicas.len(), 2);
    assert_eq!((replicas[0].num_requests, replicas[1].num_requests), (3, 2));
    assert_eq!((replicas[0].num_batches, replicas[1].num_batches), (2, 1));
    assert_eq!(replicas[0].device, "cuda:0");
    assert_eq!(replicas[1].device, "cuda:1");
    // Every request exactly once, in order, with the replica that served it.
    let served: Vec<(usize, usize)> = record
        .requests
        .iter()
        .map(|r| (r.request_index, r.replica))
        .collect();
    assert_eq!(served, vec![(0, 0), (1, 0), (2, 0), (3, 1), (4, 1)]);
    let batches: Vec<usize> = record.requests.iter().map(|r| r.batch_index).collect();
    assert_eq!(batches, vec![0, 0, 1, 2, 2]);
    // Each batch: a prefill then two decode steps (3 tokens).
    let batch_s = PREFILL_S + 2.0 * DECODE_S;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // Replica 0 ran two batches, replica 1 one, side by side from the same start.
    assert_eq!(replicas[0].start_s, Some(0.0));
    assert_eq!(replicas[1].start_s, Some(0.0));
    assert!(close(replicas[0].wall_s, 2.0 * batch_s));
    assert!(close(replicas[1].wall_s, batch_s));
    let metrics = record.metrics.as_ref().unwrap();
    // Wall: first start to last finish, not the sum of the replicas' times.
    assert!(close(metrics.wall_s, 2.0 * batch_s), "{}", metrics.wall_s);
    assert!(close(metrics.prefill_s, 3.0 * PREFILL_S));
    assert_eq!(metrics.output_tokens, 15);
    assert_eq!(metrics.num_batches, 3);
    // GPU energy: each replica exactly its own device's counter (3 steps per batch).
    assert_eq!(
        replicas[0].gpu_energy_j,
        Some(2.0 * 3.0 * GPU_J_PER_STEP[0])
    );
    assert_eq!(replicas[1].gpu_energy_j, Some(3.0 * GPU_J_PER_STEP[1]));
    assert_eq!(replicas[0].gpu_energy_source, "nvml");
    // The run's GPU total is exactly the two counters' sum, each GPU counted once.
    let gpu = metrics.meters.domain(Domain::Gpu).unwrap();
    assert_eq!(gpu.source, EnergySource::From(Source::Nvml));
    assert_eq!(
        gpu.joules,
        Some(6.0 * GPU_J_PER_STEP[0] + 3.0 * GPU_J_PER_STEP[1])
    );
    // The machine's meters were opened once, over both GPUs; each replica opened its own GPU.
    assert_eq!(
        out.opened.iter().filter(|d| *d == "cuda:0,cuda:1").count(),
        1
    );
    // CPU package energy is machine-wide: counted once for the run (9 steps), never once per
    // replica.
    let cpu = metrics.meters.domain(Domain::Cpu).unwrap();
    assert_eq!(cpu.joules, Some(9.0 * CPU_J_PER_STEP));
    // Phases overlapped: no split.
    assert_eq!(metrics.meters.prefill_j, None);
    assert!(
        metrics
            .meters
            .notes
            .iter()
            .any(|n| n.contains("not split by phase"))
    );
}

#[test]
fn greedy_outputs_equal_the_one_device_run() {
    let one = execute(&script(r#"["cpu:0"]"#, 2));
    let two = execute(&script(r#"["cpu:0", "cpu:1"]"#, 2));
    let ids = |o: &Outcome| -> Vec<Vec<u32>> {
        o.sink.records[0]
            .requests
            .iter()
            .map(|r| r.output_ids.clone())
            .collect()
    };
    assert_eq!(ids(&one), ids(&two));
    assert!(one.sink.records[0].replicas.is_empty());
    let replicas = &two.sink.records[0].replicas;
    assert_eq!(replicas[1].cores.as_deref(), Some("1"));
    assert_eq!(replicas[1].gpu_energy_source, "none");
    assert_eq!(replicas[1].gpu_energy_j, None);
    // CPU replicas: the run's meters are the machine's, opened once.
    assert_eq!(two.opened, vec!["cpu"]);
}

#[test]
fn a_replica_that_fails_to_load_fails_the_run_naming_it_and_the_study_goes_on() {
    let src = format!(
        r#"
        infer(load("fails-on-cpu1", #{{ devices: ["cpu:0", "cpu:1"] }}), {PROMPTS});
        infer(load("fake", #{{ devices: ["cpu:0", "cpu:1"] }}), {PROMPTS});
        "#
    );
    let out = execute(&src);
    let by_model = |name: &str| {
        out.sink
            .records
            .iter()
            .find(|r| r.spec.load.model == name)
            .unwrap()
    };
    let failed = by_model("fails-on-cpu1");
    assert_eq!(failed.status, RunStatus::Failed);
    let error = failed.error.as_deref().unwrap();
    assert!(error.contains("replica 1 (cpu:1)"), "{error}");
    assert!(error.contains("core 1 is busy"), "{error}");
    assert_eq!(by_model("fake").status, RunStatus::Ok);
}

#[test]
fn more_replicas_than_prompts_leave_the_last_ones_idle() {
    let src = r#"
        infer(load("fake", #{ devices: ["cuda:0", "cuda:1"] }), prompts(["only one"]),
              #{ max_new_tokens: 2, warmup: 0 });
    "#;
    let out = execute(src);
    let record = &out.sink.records[0];
    assert_eq!(record.status, RunStatus::Ok, "{:?}", record.error);
    let r = &record.replicas;
    assert_eq!((r[0].num_requests, r[1].num_requests), (1, 0));
    assert_eq!(r[1].start_s, None);
    assert_eq!(r[1].wall_s, 0.0);
    assert_eq!(record.requests.len(), 1);
}
