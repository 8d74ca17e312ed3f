//! The logical plan: a DAG of content-addressed stages built by evaluating a script.
//!
//! Architecture Invariant: building a plan does no IO, loads no model and reads no clock.

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::placement::{Placement, describe_lanes, lanes};
use crate::stage::{
    AggregateStage, BatchStage, InferStage, LoadStage, MeasureStage, PromptsStage, QuantizeStage,
    Stage, StageId, StageKind,
};

/// SHA-256 of a text, hex (scripts are identified by it in manifests).
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `name` may name a study folder: letters, digits, `-`, `_` and `.`, not starting
/// with `.`, so it is one path component inside the results folder (`study(#{ name })`; the
/// binary's `--study` should apply the same rule).
pub fn is_valid_study_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Study-wide settings (`study(#{...})` in a script).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StudySettings {
    /// Folder name under `runs/`.
    pub name: String,
    /// How many times every run is repeated.
    pub cycles: usize,
    /// Seed of the per-cycle run order shuffle.
    pub seed: u64,
    /// Extra attempts after a run fails with a backend error (load failures and invalid input
    /// are not retried: they would fail the same way).
    pub retries: usize,
    /// Seconds to wait before each retry.
    pub retry_delay_s: f64,
    /// Measure each run's quality against its f32 unquantized reference (after the run,
    /// outside its timed window).
    pub quality: bool,
    /// One run at a time, or runs on devices that share no hardware at the same time. Not part
    /// of any run's identity: the same runs measured either way hash the same.
    pub placement: Placement,
}

impl StudySettings {
    /// Defaults for a study named `name`.
    pub fn named(name: impl Into<String>) -> Self {
        StudySettings {
            name: name.into(),
            cycles: 1,
            seed: 0,
            retries: 3,
            retry_delay_s: 5.0,
            quality: true,
            placement: Placement::OneAtATime,
        }
    }
}

/// One node of the plan graph.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanNode {
    /// Content address.
    pub id: StageId,
    /// What the node does.
    pub stage: Stage,
    /// Content addresses of its inputs, in argument order.
    pub inputs: Vec<StageId>,
}

/// A stage wired to an input of the wrong kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage}() expects {expected} as argument {position}, got {got}")]
pub struct WiringError {
    /// The stage being built.
    pub stage: &'static str,
    /// 1-based argument position.
    pub position: usize,
    /// What it expects, e.g. "a model (from load)".
    pub expected: &'static str,
    /// What it got.
    pub got: String,
}

/// Everything one run needs, resolved from the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// The run's content address (its measure node; implicit measures hash too).
    pub id: StageId,
    /// Id of the model node (the load, or the quantize on top of it): runs sharing it share
    /// one loaded model.
    pub load_id: StageId,
    /// Model load options.
    pub load: LoadStage,
    /// Weight quantization applied after loading.
    pub quantize: Option<QuantizeStage>,
    /// Prompt set.
    pub prompts: PromptsStage,
    /// Batching.
    pub batch: BatchStage,
    /// Generation options.
    pub infer: InferStage,
    /// Meters.
    pub measure: MeasureStage,
    /// True when the script did not call `measure` and defaults apply.
    pub implicit_measure: bool,
}

impl RunSpec {
    /// The run's configuration as flat key/value pairs, for tables and EXPLAIN.
    pub fn config(&self) -> BTreeMap<&'static str, String> {
        let mut c = BTreeMap::new();
        c.insert("model", self.load.model.clone());
        c.insert("dtype", self.load.dtype.name().to_string());
        c.insert("weights", self.load.weights.name().to_string());
        c.insert("device", self.load.device.clone());
        if !self.load.compute.is_auto() {
            c.insert("compute", self.load.compute.name().to_string());
        }
        if let Some(q) = &self.quantize {
            c.insert("quantization", format!("{}/b{}", q.method, q.block_size));
        }
        c.insert("prompts", self.prompts.source.to_string());
        if let Some(n) = self.prompts.count {
            c.insert("num_prompts", n.to_string());
        }
        match &self.infer.serve {
            // A served run schedules requests one by one: its batch size does not apply.
            Some(serve) => {
                c.insert(
                    "serve",
                    format!(
                        "max_batch={} max_batch_tokens={} prefill={}",
                        serve.max_batch,
                        serve.max_batch_tokens,
                        serve.prefill.name()
                    ),
                );
            }
            None => {
                c.insert("batch_size", self.batch.size.to_string());
                if let Some(t) = self.batch.token_budget {
                    c.insert("token_budget", t.to_string());
                }
            }
        }
        if let Some(slo) = &self.infer.slo {
            let target = |t: Option<f64>| t.map_or("-".to_string(), |v| v.to_string());
            c.insert(
                "slo",
                format!(
                    "ttft_s={} tpot_s={}",
                    target(slo.ttft_s),
                    target(slo.tpot_s)
                ),
            );
        }
        if self.infer.arrival != crate::stage::ArrivalSpec::ClosedLoop {
            c.insert("arrival", self.infer.arrival.describe());
        }
        c.insert("max_new_tokens", self.infer.max_new_tokens.to_string());
        c.insert("decoding", self.infer.decoding.describe());
        c.insert("meters", self.measure.meters.join("+"));
        if self.measure.estimate != api::meter::EstimateMode::Machine {
            c.insert("energy_estimate", self.measure.estimate.name().to_string());
        }
        c
    }

    /// A short label of the run naming the model and the settings that vary among `runs`
    /// (`tiny-stories decoding=greedy arrival=poisson 5/s`); with nothing varying, model,
    /// dtype and batch size.
    pub fn label(&self, varying: &[&'static str]) -> String {
        let config = self.config();
        let mut parts = vec![self.load.model.clone()];
        let keys: Vec<&str> = if varying.is_empty() {
            vec!["dtype", "batch_size"]
        } else {
            varying.iter().copied().filter(|k| *k != "model").collect()
        };
        for key in keys {
            // `config()` leaves out what is at its default; a label must still say it.
            let value = match (config.get(key), key) {
                (Some(v), _) => v.as_str(),
                (None, "arrival") => "closed_loop",
                (None, "quantization") => "none",
                (None, "serve") => "none",
                (None, _) => "-",
            };
            parts.push(format!("{key}={value}"));
        }
        parts.join(" ")
    }

    /// The configuration keys whose values differ among `runs`, alphabetically (a key
    /// some runs lack, like `arrival` for closed-loop ones, varies too).
    pub fn varying_keys<'a>(runs: impl IntoIterator<Item = &'a RunSpec>) -> Vec<&'static str> {
        let configs: Vec<BTreeMap<&'static str, String>> =
            runs.into_iter().map(RunSpec::config).collect();
        let mut keys: Vec<&'static str> = configs.iter().flat_map(|c| c.keys().copied()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.retain(|k| {
            let first = configs.first().and_then(|c| c.get(k));
            configs.iter().any(|c| c.get(k) != first)
        });
        keys
    }

    /// What the runtime loads for this run.
    pub fn model_spec(&self) -> api::runtime::ModelSpec {
        self.model_spec_on(&self.load.device)
    }

    /// The runtime's description of the model on one `device` (a replica's).
    pub fn model_spec_on(&self, device: &str) -> api::runtime::ModelSpec {
        api::runtime::ModelSpec {
            source: self.load.model.clone(),
            revision: self.load.revision.clone(),
            dtype: self.load.dtype,
            weights: self.load.weights,
            device: device.to_string(),
            seed: self.load.seed,
            quantization: self.quantize.as_ref().and_then(|q| q.to_runtime()),
            compute: self.load.compute,
        }
    }

    /// The whole configuration as JSON (stored with every result row).
    pub fn config_json(&self) -> serde_json::Value {
        json!({
            "load": self.load,
            "quantize": self.quantize,
            "prompts": self.prompts,
            "batch": self.batch,
            "infer": self.infer,
            "measure": self.measure,
        })
    }
}

/// The logical plan of a study.
#[derive(Debug, Clone)]
pub struct Plan {
    graph: DiGraph<PlanNode, usize>,
    index: HashMap<StageId, NodeIndex>,
    /// Infer nodes, measure nodes, and the infer nodes some measure reads: kept as nodes are
    /// added so the run budget is checked per stage in constant time.
    infers: usize,
    measures: usize,
    measured: std::collections::HashSet<StageId>,
    /// Study-wide settings.
    pub study: StudySettings,
}

impl Plan {
    /// An empty plan for a study.
    pub fn new(study: StudySettings) -> Self {
        Plan {
            graph: DiGraph::new(),
            index: HashMap::new(),
            infers: 0,
            measures: 0,
            measured: std::collections::HashSet::new(),
            study,
        }
    }

    /// Adds a stage, or returns the existing node if an equal one is already there.
    pub fn add(&mut self, stage: Stage, inputs: &[StageId]) -> StageId {
        let id = StageId::of(&stage, inputs);
        if self.index.contains_key(&id) {
            return id;
        }
        let node = self.graph.add_node(PlanNode {
            id,
            stage,
            inputs: inputs.to_vec(),
        });
        for (position, input) in inputs.iter().enumerate() {
            if let Some(&from) = self.index.get(input) {
                self.graph.add_edge(from, node, position);
            }
        }
        self.index.insert(id, node);
        match &self.graph[node].stage {
            Stage::Infer(_) => self.infers += 1,
            Stage::Measure(_) => {
                self.measures += 1;
                if let Some(&infer) = inputs.first() {
                    self.measured.insert(infer);
                }
            }
            _ => {}
        }
        id
    }

    /// True when an equal stage with these inputs is already in the plan.
    pub fn contains(&self, stage: &Stage, inputs: &[StageId]) -> bool {
        self.index.contains_key(&StageId::of(stage, inputs))
    }

    /// How many runs the plan has ([`Plan::runs`]'s length), without resolving them: every
    /// measure node, plus every infer node that nothing measures.
    pub fn run_count(&self) -> usize {
        self.measures + self.infers - self.measured.len().min(self.infers)
    }

    /// The run count once `stage` is added with `inputs` (adding an existing stage changes
    /// nothing; a new infer is one more run; a new measure is one more unless it measures an
    /// infer nothing measured yet, which was already a run).
    pub fn runs_after_adding(&self, stage: &Stage, inputs: &[StageId]) -> usize {
        let runs = self.run_count();
        if self.contains(stage, inputs) {
            return runs;
        }
        match stage {
            Stage::Infer(_) => runs + 1,
            Stage::Measure(_) => {
                let already_measured = inputs
                    .first()
                    .is_some_and(|infer| self.measured.contains(infer));
                runs + usize::from(already_measured)
            }
            _ => runs,
        }
    }

    /// The node with this id.
    pub fn node(&self, id: StageId) -> Option<&PlanNode> {
        self.index.get(&id).map(|&i| &self.graph[i])
    }

    /// The kind of the node with this id.
    pub fn kind_of(&self, id: StageId) -> Option<StageKind> {
        self.node(id).map(|n| n.stage.kind())
    }

    /// All nodes, in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = &PlanNode> {
        self.graph.node_indices().map(|i| &self.graph[i])
    }

    /// Number of nodes of a kind.
    pub fn count(&self, kind: StageKind) -> usize {
        self.nodes().filter(|n| n.stage.kind() == kind).count()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// True when the plan has no stage.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The aggregate stages of the study.
    pub fn aggregates(&self) -> Vec<&AggregateStage> {
        self.nodes()
            .filter_map(|n| match &n.stage {
                Stage::Aggregate(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    fn input_of<'a>(&'a self, node: &'a PlanNode, position: usize) -> Option<&'a PlanNode> {
        node.inputs.get(position).and_then(|id| self.node(*id))
    }

    /// Every run of the plan, in the order the script declared them.
    ///
    /// A run is a `measure` node; an `infer` node that nothing measures is a run with the
    /// default meters.
    pub fn runs(&self) -> Vec<RunSpec> {
        let mut measured: HashMap<StageId, bool> = HashMap::new();
        for node in self.nodes() {
            if let Stage::Measure(_) = node.stage
                && let Some(&infer) = node.inputs.first()
            {
                measured.insert(infer, true);
            }
        }
        let mut runs = Vec::new();
        for node in self.nodes() {
            match &node.stage {
                Stage::Measure(m) => {
                    if let Some(infer) = self.input_of(node, 0)
                        && let Some(run) = self.resolve(node.id, infer, m.clone(), false)
                    {
                        runs.push(run);
                    }
                }
                Stage::Infer(_) if !measured.contains_key(&node.id) => {
                    let measure = MeasureStage::default_for_run();
                    let id = StageId::of(&Stage::Measure(measure.clone()), &[node.id]);
                    if let Some(run) = self.resolve(id, node, measure, true) {
                        runs.push(run);
                    }
                }
                _ => {}
            }
        }
        runs
    }

    fn resolve(
        &self,
        id: StageId,
        infer_node: &PlanNode,
        measure: MeasureStage,
        implicit_measure: bool,
    ) -> Option<RunSpec> {
        let Stage::Infer(infer) = &infer_node.stage else {
            return None;
        };
        let model_node = self.input_of(infer_node, 0)?;
        let (load_node, quantize) = match &model_node.stage {
            Stage::Quantize(q) => (self.input_of(model_node, 0)?, Some(q.clone())),
            _ => (model_node, None),
        };
        let batch_node = self.input_of(infer_node, 1)?;
        let prompts_node = self.input_of(batch_node, 0)?;
        match (&load_node.stage, &batch_node.stage, &prompts_node.stage) {
            (Stage::Load(load), Stage::Batch(batch), Stage::Prompts(prompts)) => Some(RunSpec {
                id,
                load_id: model_node.id,
                load: load.clone(),
                quantize,
                prompts: prompts.clone(),
                batch: batch.clone(),
                infer: infer.clone(),
                measure,
                implicit_measure,
            }),
            _ => None,
        }
    }

    /// The lanes of a `per-device` study (devices of runs that may run at the same time),
    /// over every run of the plan; `None` for a study that runs one at a time.
    pub fn lanes(&self) -> Option<Vec<Vec<String>>> {
        (self.study.placement == Placement::PerDevice).then(|| {
            let runs = self.runs();
            lanes(runs.iter().map(|r| r.load.device.as_str()))
        })
    }

    /// Graphviz DOT text of the DAG.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph plan {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        if let Some(lanes) = self.lanes() {
            out.push_str(&format!(
                "  labelloc=t;\n  label=\"placement per-device: lanes {}\";\n",
                describe_lanes(&lanes).replace('"', "\\\"")
            ));
        }
        for i in self.graph.node_indices() {
            let n = &self.graph[i];
            let label = format!(
                "{} {}\\n{}",
                n.stage.kind().name(),
                n.id.short(),
                summary(&n.stage)
            );
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\"];\n",
                n.id.short(),
                label.replace('"', "\\\"")
            ));
        }
        for e in self.graph.edge_references() {
            out.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                self.graph[e.source()].id.short(),
                self.graph[e.target()].id.short()
            ));
        }
        out.push_str("}\n");
        out
    }

    /// Machine-readable plan: nodes with kind and options, edges, runs and study settings.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<_> = self
            .nodes()
            .map(|n| {
                json!({
                    "id": n.id.hex(),
                    "kind": n.stage.kind().name(),
                    "options": n.stage,
                    "inputs": n.inputs.iter().map(|i| i.hex()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let edges: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| json!({"from": self.graph[e.source()].id.hex(), "to": self.graph[e.target()].id.hex()}))
            .collect();
        let runs: Vec<_> = self
            .runs()
            .iter()
            .map(|r| {
                json!({
                    "id": r.id.hex(),
                    "load": r.load_id.hex(),
                    "config": r.config(),
                    "replicas": api::device::replica_devices(&r.load.device),
                })
            })
            .collect();
        let mut plan = json!({ "study": self.study, "nodes": nodes, "edges": edges, "runs": runs });
        if let Some(lanes) = self.lanes() {
            plan["lanes"] = json!(lanes);
        }
        plan
    }
}

fn summary(stage: &Stage) -> String {
    match stage {
        Stage::Load(l) => {
            let replicas = api::device::replica_devices(&l.device).len();
            format!(
                "{} dtype={} weights={} device={}{}",
                l.model,
                l.dtype,
                l.weights.name(),
                l.device,
                if replicas > 1 {
                    format!(" replicas={replicas}")
                } else {
                    String::new()
                }
            )
        }
        Stage::Quantize(q) => format!("method={} block_size={}", q.method, q.block_size),
        Stage::Prompts(p) => format!(
            "{} count={} max_input_tokens={}",
            p.source,
            p.count.map_or("all".into(), |c| c.to_string()),
            p.max_input_tokens.map_or("none".into(), |c| c.to_string())
        ),
        Stage::Batch(b) => match b.token_budget {
            Some(t) => format!("size={} token_budget={t}", b.size),
            None => format!("size={}", b.size),
        },
        Stage::Infer(i) => {
            let mut text = format!(
                "max_new_tokens={} decoding={} warmup={} arrival={}",
                i.max_new_tokens,
                i.decoding.method(),
                i.warmup,
                i.arrival.name()
            );
            if let Some(serve) = &i.serve {
                text.push_str(&format!(
                    " serve=max_batch:{}/tokens:{}/{}",
                    serve.max_batch,
                    serve.max_batch_tokens,
                    serve.prefill.name()
                ));
            }
            text
        }
        Stage::Measure(m) => format!("meters={}", m.meters.join(",")),
        Stage::Aggregate(a) => format!("by={} stats={}", a.by.join(","), a.stats.join(",")),
    }
}

/// SQL-EXPLAIN-like text: counts, then one line per load and per run.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = self.runs();
        writeln!(
            f,
            "Study {:?}: {} runs x {} cycles, {} loads, {} stages",
            self.study.name,
            runs.len(),
            self.study.cycles,
            self.count(StageKind::Load),
            self.len()
        )?;
        writeln!(
            f,
            "  Retries {} after a backend error, {} s apart",
            self.study.retries, self.study.retry_delay_s
        )?;
        if let Some(lanes) = self.lanes() {
            writeln!(
                f,
                "  Placement per-device: lanes {} (runs of different lanes at the same time)",
                describe_lanes(&lanes)
            )?;
        }
        for node in self.nodes().filter(|n| n.stage.kind() == StageKind::Load) {
            let users = runs.iter().filter(|r| r.load_id == node.id).count();
            writeln!(
                f,
                "  Load {} {} (serves {users} runs)",
                node.id,
                summary(&node.stage)
            )?;
        }
        for (i, run) in runs.iter().enumerate() {
            let config: Vec<String> = run
                .config()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            writeln!(f, "  Run {:>3} {} {}", i + 1, run.id, config.join(" "))?;
        }
        for a in self.aggregates() {
            writeln!(
                f,
                "  Aggregate by={} stats={}",
                a.by.join(","),
                a.stats.join(",")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn study_names_are_one_safe_path_component() {
        for ok in ["single", "grid-2", "a_b.c"] {
            assert!(is_valid_study_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "/abs", "a/b", "../up", "a b", "é"] {
            assert!(!is_valid_study_name(bad), "{bad}");
        }
    }
    use super::*;

    fn runs(src: &str) -> Vec<RunSpec> {
        crate::script::plan_script(std::path::Path::new("t.rhai"), src, "t")
            .unwrap()
            .runs()
    }

    #[test]
    fn labels_name_what_varies_among_runs() {
        // Regression (issue A): runs differing only in decoding and arrival printed as
        // identical `model dtype bs` lines.
        let runs = runs(
            r#"
            let m = load("tiny-stories");
            let b = batch(prompts(["a"]));
            infer(m, b, #{ max_new_tokens: 2 });
            infer(m, b, #{ max_new_tokens: 2, decoding: #{ method: "sample", temperature: 0.7 } });
            infer(m, b, #{ max_new_tokens: 2, arrival: #{ pattern: "poisson", rate_per_s: 5.0 } });
            "#,
        );
        let varying = RunSpec::varying_keys(&runs);
        assert_eq!(varying, vec!["arrival", "decoding"]);
        let labels: Vec<String> = runs.iter().map(|r| r.label(&varying)).collect();
        assert!(
            labels.contains(&"tiny-stories arrival=closed_loop decoding=greedy".to_string()),
            "{labels:?}"
        );
        assert!(
            labels
                .iter()
                .any(|l| l.starts_with("tiny-stories arrival=poisson 5/s")),
            "{labels:?}"
        );
        assert!(
            labels.iter().any(|l| l.contains("decoding=sample t=0.7")),
            "{labels:?}"
        );
        // One run: nothing varies, the familiar model dtype batch label.
        assert_eq!(
            runs[0].label(&RunSpec::varying_keys(&runs[..1])),
            "tiny-stories dtype=f32 batch_size=1"
        );
    }
}
