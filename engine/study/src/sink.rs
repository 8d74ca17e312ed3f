//! Connects the engine's finished-run records to the results store.
//!
//! This is the only code that knows both an engine record and a results row.

use std::collections::HashSet;

use api::meter::{Domain, Sample};
use engine::latency::{RequestTiming, RunLatency, percentile, slo_met};
use engine::metering::{EnergySource, energy_over};
use engine::record::{RecordSink, ReplicaRecord, RunRecord, SinkError};
use engine::stage::{ArrivalSpec, DecodingSpec};
use results::schema::{
    PER_RUN_ENERGY_SOURCE, REPLICA_COLUMNS, REQUEST_COLUMNS, RUN_COLUMNS, SAMPLE_COLUMNS,
    TOKEN_COLUMNS,
};
use results::{Row, Store, StoreError};

use crate::provenance::{Provenance, iso8601_utc};

/// A [`RecordSink`] that writes each record to a [`Store`] as it arrives.
pub struct StoreSink<'a> {
    store: Store,
    /// Build and machine facts written into every run row.
    provenance: &'a Provenance,
    /// Told of each run row once it is stored (the binary's `--verbose` details).
    on_stored: Option<&'a mut dyn FnMut(&Row)>,
    completed: HashSet<(String, usize)>,
    /// Next experiment id to hand out.
    next_experiment_id: i64,
    /// Step between ids: the shard count, so concurrent shards never hand out the same id.
    stride: i64,
}

impl<'a> StoreSink<'a> {
    /// A sink over a store, remembering what it already holds. With shard `(index, count)`,
    /// experiment ids are `≡ index + 1 (mod count)` above everything stored, so shards running
    /// at once on one study folder stay unique and each stays monotonic across restarts.
    pub fn new(
        store: Store,
        shard: Option<(usize, usize)>,
        provenance: &'a Provenance,
    ) -> Result<Self, StoreError> {
        let completed = store.completed()?;
        let (index, count) = shard.map_or((0, 1), |(i, n)| (i as i64, n.max(1) as i64));
        let max = store.max_experiment_id()?;
        let base = (max + count - 1) / count * count;
        Ok(StoreSink {
            store,
            provenance,
            on_stored: None,
            completed,
            next_experiment_id: base + index + 1,
            stride: count,
        })
    }

    /// Calls `on_stored` with each run row after it is stored.
    pub fn with_on_stored(mut self, on_stored: &'a mut dyn FnMut(&Row)) -> Self {
        self.on_stored = Some(on_stored);
        self
    }
}

impl RecordSink for StoreSink<'_> {
    fn record(&mut self, record: &RunRecord) -> Result<(), SinkError> {
        let wrap = |e: StoreError| SinkError {
            run_hash: record.run_hash.clone(),
            source: Box::new(e),
        };
        let mut run = run_row(record, self.provenance).map_err(wrap)?;
        run.set("experiment_id", self.next_experiment_id)
            .map_err(wrap)?;
        self.next_experiment_id += self.stride;
        let requests = record
            .requests
            .iter()
            .map(|r| request_row(record, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        let replicas = record
            .replicas
            .iter()
            .map(|r| replica_row(record, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        let samples = record
            .metrics
            .iter()
            .flat_map(|m| m.meters.samples.iter())
            .map(|s| sample_row(record, s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        self.store
            .write_samples(&record.run_hash, record.cycle, &samples)
            .map_err(wrap)?;
        let mut tokens = Vec::new();
        for r in &record.requests {
            tokens.extend(token_rows(record, r).map_err(wrap)?);
        }
        self.store
            .write_tokens(&record.run_hash, record.cycle, &tokens)
            .map_err(wrap)?;
        self.store
            .write_run(&run, &requests, &replicas)
            .map_err(wrap)?;
        if let Some(on_stored) = self.on_stored.as_mut() {
            on_stored(&run);
        }
        if record.status == engine::record::RunStatus::Ok {
            self.completed
                .insert((record.run_hash.clone(), record.cycle));
        }
        Ok(())
    }

    fn completed(&self) -> HashSet<(String, usize)> {
        self.completed.clone()
    }
}

/// The runs-table row of a record (without its experiment id, which the sink hands out).
pub fn run_row(record: &RunRecord, provenance: &Provenance) -> Result<Row, StoreError> {
    let spec = &record.spec;
    let mut row = Row::new(RUN_COLUMNS);
    row.set("study", record.study.as_str())?
        .set("run_hash", record.run_hash.as_str())?
        .set("cycle_id", record.cycle)?
        .set("status", record.status.name())?
        .set("error", record.error.clone())?
        .set("started_at_unix_s", record.started_at_unix_s)?
        .set("started_at", iso8601_utc(record.started_at_unix_s))?
        .set("model", spec.load.model.as_str())?
        .set("revision", spec.load.revision.clone())?
        .set("dtype", spec.load.dtype.name())?
        .set("weights", spec.load.weights.name())?
        .set(
            "quantization",
            spec.quantize.as_ref().map_or("none".to_string(), |q| {
                format!("{}/b{}", q.method, q.block_size)
            }),
        )?
        .set("device", spec.load.device.as_str())?
        .set("prompts", spec.prompts.source.to_string())?
        .set(
            "num_prompts",
            engine::prompts::materialise(&spec.prompts).len(),
        )?
        .set("max_input_tokens", spec.prompts.max_input_tokens)?
        .set("batch_size", spec.batch.size)?
        .set("token_budget", spec.batch.token_budget)?
        .set("arrival", spec.infer.arrival.name())?
        .set("max_new_tokens", spec.infer.max_new_tokens)?
        .set("min_new_tokens", spec.infer.min_new_tokens)?
        .set("stop_at_eos", spec.infer.stop_at_eos.to_string())?
        .set("decoding", spec.infer.decoding.method())?
        .set("warmup_runs", spec.infer.warmup)?
        .set("meters", spec.measure.meters.join("+"))?
        .set("energy_estimate", spec.measure.estimate.name())?
        .set("config_json", spec.config_json().to_string())?
        .set("llmeff_version", provenance.version.as_str())?;
    set_arrival_columns(&mut row, &spec.infer.arrival)?;
    row.set(
        "offered_rate_per_s",
        spec.infer.arrival.offered_rate_per_s(),
    )?;
    if let Some(serve) = &spec.infer.serve {
        row.set("serve_max_batch", serve.max_batch)?
            .set("serve_max_batch_tokens", serve.max_batch_tokens)?
            .set("serve_prefill", serve.prefill.name())?;
    }
    if let Some(slo) = &spec.infer.slo {
        row.set("slo_ttft_s", slo.ttft_s)?
            .set("slo_tpot_s", slo.tpot_s)?;
    }
    set_provenance_columns(&mut row, provenance)?;
    if let DecodingSpec::Sample {
        temperature,
        top_k,
        top_p,
        ..
    } = spec.infer.decoding
    {
        row.set("temperature", temperature)?
            .set("top_k", top_k)?
            .set("top_p", top_p)?;
    }
    if let Some(model) = &record.model {
        row.set("architecture", model.architecture.as_str())?
            .set("compute", model.compute.as_str())?
            .set("model_parameters", model.parameters)?
            .set("model_bytes", model.weight_bytes)?;
        if let Some(adapter) = &model.adapter {
            row.set("adapter", adapter.as_str())?;
        }
        if let Some(driver) = &model.adapter_driver {
            row.set("adapter_driver", driver.as_str())?;
        }
    }
    if let Some(m) = &record.metrics {
        row.set("num_requests", m.num_requests)?
            .set("num_batches", m.num_batches)?
            .set("input_tokens", m.input_tokens)?
            .set("output_tokens", m.output_tokens)?
            .set("wall_s", m.wall_s)?
            .set("prefill_s", m.prefill_s)?
            .set("decode_s", m.decode_s)?
            .set("warmup_s", m.warmup_s)?
            .set("output_tokens_per_s", m.output_tokens_per_s())?
            .set("total_tokens_per_s", m.total_tokens_per_s())?
            .set("requests_per_s", m.requests_per_s())?
            .set("kv_cache_peak_bytes", m.kv_cache_peak_bytes)?
            .set("device_memory_peak_bytes", m.device_memory_peak_bytes)?
            .set("flops_prefill", m.flops_prefill)?
            .set("flops_decode", m.flops_decode)?
            .set("flops_per_s", m.flops_per_s())?;
        set_meter_columns(&mut row, m)?;
        set_serving_columns(&mut row, record, m)?;
        if let Some(q) = &m.quality {
            row.set("quality_ref", q.reference.as_str())?
                .set("quality_kl_mean_nats", q.kl_mean_nats)?
                .set("quality_top1_agreement_ratio", q.top1_agreement)?
                .set("quality_perplexity_run", q.perplexity_run)?
                .set("quality_perplexity_ref", q.perplexity_ref)?
                .set("quality_greedy_agreement_ratio", q.greedy_agreement)?
                .set("quality_positions", q.positions)?;
        }
        for (name, p) in RunLatency::of(&record.requests).figures {
            row.set(&format!("{name}_mean_s"), p.mean)?
                .set(&format!("{name}_p50_s"), p.p50)?
                .set(&format!("{name}_p90_s"), p.p90)?
                .set(&format!("{name}_p99_s"), p.p99)?;
        }
    }
    Ok(row)
}

/// Goodput against the run's SLO, energy per request, and what a served run's scheduler did:
/// its iterations, mean occupancy, own time, and the time and energy with no request in
/// flight.
fn set_serving_columns(
    row: &mut Row,
    record: &RunRecord,
    m: &engine::record::RunMetrics,
) -> Result<(), StoreError> {
    let total_j = m.meters.total_j();
    if let Some(slo) = &record.spec.infer.slo {
        let met = slo_met(&record.requests, slo);
        row.set(
            "goodput_requests_per_s",
            (m.wall_s > 0.0).then(|| met as f64 / m.wall_s),
        )?
        .set(
            "slo_attainment_ratio",
            (m.num_requests > 0).then(|| met as f64 / m.num_requests as f64),
        )?;
    }
    row.set(
        "energy_per_request_j",
        total_j
            .filter(|_| m.num_requests > 0)
            .map(|j| j / m.num_requests as f64),
    )?;
    if let Some(serving) = &m.serving {
        let idle_j = energy_over(&m.meters.samples, &serving.idle);
        row.set("serve_iterations", serving.iterations)?
            .set("serve_running_mean", serving.mean_running())?
            .set("serve_schedule_s", serving.schedule_s)?
            .set("idle_s", serving.idle_s())?
            .set("energy_idle_j", idle_j)?
            .set(
                "energy_idle_ratio",
                idle_j.zip(total_j.filter(|j| *j > 0.0)).map(|(i, t)| i / t),
            )?;
    }
    Ok(())
}

/// The parameters of the run's arrival pattern, each in its own column.
fn set_arrival_columns(row: &mut Row, arrival: &ArrivalSpec) -> Result<(), StoreError> {
    match *arrival {
        ArrivalSpec::ClosedLoop => {}
        ArrivalSpec::Constant { interval_s } => {
            row.set("arrival_interval_s", interval_s)?;
        }
        ArrivalSpec::Poisson { rate_per_s, seed } => {
            row.set("arrival_rate_per_s", rate_per_s)?
                .set("arrival_seed", seed)?;
        }
        ArrivalSpec::Bursty { burst, off_s } => {
            row.set("arrival_burst", burst)?
                .set("arrival_off_s", off_s)?;
        }
        ArrivalSpec::Gamma {
            rate_per_s,
            burstiness,
            seed,
        } => {
            row.set("arrival_rate_per_s", rate_per_s)?
                .set("arrival_burstiness", burstiness)?
                .set("arrival_seed", seed)?;
        }
        ArrivalSpec::Trace {
            ref path,
            time_scale,
        } => {
            row.set("arrival_trace", path.as_str())?
                .set("arrival_time_scale", time_scale)?;
        }
    }
    Ok(())
}

/// What built llmeff and which machine ran it; the thread count is the pool the forward pass
/// ran on.
fn set_provenance_columns(row: &mut Row, p: &Provenance) -> Result<(), StoreError> {
    row.set("git_commit", p.git_commit.clone())?
        .set("git_dirty", p.git_dirty.map(|d| d.to_string()))?
        .set("build_profile", p.build_profile.as_str())?
        .set("rustc_version", p.rustc_version.clone())?
        .set("threads", p.threads)?
        .set("cpu_model", p.cpu_model.clone())?
        .set("cpu_flags", p.cpu_flags.clone())?
        .set("kernel", p.kernel.clone())?
        .set("hostname", p.hostname.clone())?;
    Ok(())
}

/// Energy, carbon, utilisation, memory and MFU/MBU columns of a finished run.
fn set_meter_columns(row: &mut Row, m: &engine::record::RunMetrics) -> Result<(), StoreError> {
    let report = &m.meters;
    let energy_on = !report.energy.is_empty();
    for domain in Domain::ALL {
        let (joules, source) = match report.domain(domain) {
            Some(d) => (d.joules, d.source),
            None if energy_on => (None, EnergySource::Unavailable),
            None => (None, EnergySource::Off),
        };
        row.set(&format!("energy_{}_j", domain.name()), joules)?
            .set(&format!("energy_{}_source", domain.name()), source.name())?;
    }
    let meters: Vec<String> = report
        .energy
        .iter()
        .filter_map(|d| Some(format!("{}: {}", d.domain.name(), d.meter.as_ref()?)))
        .collect();
    row.set("energy_total_j", report.total_j())?
        .set("energy_total_source", report.total_source())?
        .set("energy_prefill_j", report.prefill_j)?
        .set("energy_decode_j", report.decode_j)?
        .set("energy_other_j", report.other_j)?
        .set("energy_split", report.split.map(|s| s.name()))?
        .set("idle_power_w", report.idle_power_w)?
        .set("energy_net_j", m.energy_net_j())?
        .set("j_per_output_token", m.j_per_output_token())?
        .set("co2e_g", m.co2e_g())?
        .set(
            "energy_meters",
            (!meters.is_empty()).then(|| meters.join("; ")),
        )?
        .set("decode_bytes", m.decode_bytes)?
        .set("decode_bytes_per_s", m.decode_bytes_per_s())?
        .set("mfu", m.mfu())?
        .set("mbu", m.mbu())?
        .set("peak_rss_bytes", report.peak(|s| s.rss_bytes))?
        .set("rss_hwm_bytes", report.rss_high_water_bytes)?
        .set("gpu_mem_peak_bytes", report.peak(|s| s.gpu_mem_bytes))?
        .set("num_samples", report.samples.len())?
        .set(
            "meter_notes",
            (!report.notes.is_empty()).then(|| report.notes.join("; ")),
        )?;
    // Shares of time: from enough samples of a few clock ticks each, else null.
    type Share = fn(&Sample) -> Option<f64>;
    let utilisation: [(&str, Share, bool); 6] = [
        ("process_cpu_mean_pct", |s| s.process_cpu_pct, false),
        ("process_cpu_peak_pct", |s| s.process_cpu_pct, true),
        ("system_cpu_mean_pct", |s| s.system_cpu_pct, false),
        ("cpu_steal_mean_pct", |s| s.cpu_steal_pct, false),
        ("gpu_util_mean_pct", |s| s.gpu_util_pct, false),
        ("gpu_util_peak_pct", |s| s.gpu_util_pct, true),
    ];
    for (column, figure, peak) in utilisation {
        let value = if peak {
            report.utilisation_peak(figure)
        } else {
            report.utilisation_mean(figure)
        };
        row.set(column, value)?;
    }
    if let Some(i) = &m.intensity {
        row.set("carbon_intensity_g_per_kwh", i.g_per_kwh)?
            .set("carbon_intensity_source", i.source.as_str())?
            .set("pue", i.pue)?;
    }
    if let Some(p) = &m.peak {
        row.set("peak_flops_per_s", p.flops_per_s)?
            .set("peak_bytes_per_s", p.bytes_per_s)?
            .set("peak_source", p.source.as_str())?
            .set("peak_measured_at", p.measured_at_unix_s.map(iso8601_utc))?
            .set("peak_threads", p.threads)?
            .set("peak_conditions", p.conditions.clone())?;
    }
    Ok(())
}

fn sample_row(record: &RunRecord, s: &Sample) -> Result<Row, StoreError> {
    let powers: Vec<f64> = Domain::ALL.iter().filter_map(|d| s.power_w(*d)).collect();
    let mut row = Row::new(SAMPLE_COLUMNS);
    if let Some(serving) = record.metrics.as_ref().and_then(|m| m.serving.as_ref()) {
        let (running, queued) = serving.occupancy_at(s.t_s);
        row.set("running_requests", running)?
            .set("queued_requests", queued)?;
    }
    row.set("run_hash", record.run_hash.as_str())?
        .set("cycle_id", record.cycle)?
        .set("t_s", s.t_s)?
        .set("rss_bytes", s.rss_bytes)?
        .set("process_cpu_pct", s.process_cpu_pct)?
        .set("system_cpu_pct", s.system_cpu_pct)?
        .set("cpu_steal_pct", s.cpu_steal_pct)?
        .set("gpu_util_pct", s.gpu_util_pct)?
        .set("gpu_mem_bytes", s.gpu_mem_bytes)?
        .set("power_cpu_w", s.power_cpu_w)?
        .set("power_gpu_w", s.power_gpu_w)?
        .set("power_ram_w", s.power_ram_w)?
        .set(
            "power_total_w",
            (!powers.is_empty()).then(|| powers.iter().sum::<f64>()),
        )?;
    Ok(row)
}

/// The replicas-table row of one replica of a run on several devices.
pub fn replica_row(record: &RunRecord, r: &ReplicaRecord) -> Result<Row, StoreError> {
    let mut row = Row::new(REPLICA_COLUMNS);
    row.set("study", record.study.as_str())?
        .set("run_hash", record.run_hash.as_str())?
        .set("cycle_id", record.cycle)?
        .set("replica", r.replica)?
        .set("device", r.device.as_str())?
        .set("cores", r.cores.clone())?
        .set("num_requests", r.num_requests)?
        .set("num_batches", r.num_batches)?
        .set("input_tokens", r.input_tokens)?
        .set("output_tokens", r.output_tokens)?
        .set("start_s", r.start_s)?
        .set("wall_s", r.wall_s)?
        .set("prefill_s", r.prefill_s)?
        .set("decode_s", r.decode_s)?
        .set("output_tokens_per_s", r.output_tokens_per_s())?
        .set("busy_ratio", r.busy_ratio())?
        .set("gpu_energy_j", r.gpu_energy_j)?
        .set("gpu_energy_source", r.gpu_energy_source.as_str())?
        // RAPL and the estimate see the whole machine: a per-replica share would be invented.
        .set("cpu_energy_source", PER_RUN_ENERGY_SOURCE)?
        .set("ram_energy_source", PER_RUN_ENERGY_SOURCE)?
        .set("kv_cache_peak_bytes", r.kv_cache_peak_bytes)?
        .set("weight_bytes", r.weight_bytes)?
        .set("gpu_memory_peak_bytes", r.gpu_memory_peak_bytes)?
        .set("gpu_util_mean_pct", r.gpu_util_mean_pct)?;
    Ok(row)
}

/// One row per generated token of a request: when it reached the host and the gap since the
/// request's previous one.
fn token_rows(record: &RunRecord, r: &RequestTiming) -> Result<Vec<Row>, StoreError> {
    let mut rows = Vec::with_capacity(r.output_tokens);
    let mut t = r.arrival_s + r.ttft_s;
    for index in 0..r.output_tokens {
        let gap = index
            .checked_sub(1)
            .and_then(|g| r.inter_token_s.get(g))
            .copied();
        if let Some(gap) = gap {
            t += gap;
        }
        let mut row = Row::new(TOKEN_COLUMNS);
        row.set("run_hash", record.run_hash.as_str())?
            .set("cycle_id", record.cycle)?
            .set("request_index", r.request_index)?
            .set("token_index", index)?
            .set("t_s", t)?
            .set("itl_s", gap)?;
        rows.push(row);
    }
    Ok(rows)
}

fn request_row(record: &RunRecord, r: &RequestTiming) -> Result<Row, StoreError> {
    let mut row = Row::new(REQUEST_COLUMNS);
    row.set("run_hash", record.run_hash.as_str())?
        .set("cycle_id", record.cycle)?
        .set("replica", r.replica)?
        .set("request_index", r.request_index)?
        .set("batch_index", r.batch_index)?
        .set("input_tokens", r.input_tokens)?
        .set("output_tokens", r.output_tokens)?
        .set("arrival_s", r.arrival_s)?
        .set("queue_s", r.queue_s)?
        .set("admitted_s", r.arrival_s + r.queue_s)?
        .set(
            "first_token_s",
            (r.output_tokens > 0).then_some(r.arrival_s + r.ttft_s),
        )?
        .set(
            "last_token_s",
            (r.output_tokens > 0).then_some(r.arrival_s + r.e2e_s),
        )?
        .set("ttft_s", r.ttft_s)?
        .set("ttft_service_s", r.ttft_service_s)?
        .set("tpot_s", r.tpot_s)?
        .set("e2e_s", r.e2e_s)?
        .set("itl_p50_s", percentile(&r.inter_token_s, 50.0))?
        .set(
            "itl_max_s",
            r.inter_token_s.iter().copied().reduce(f64::max),
        )?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::Cell;
    use std::path::Path;

    fn record() -> RunRecord {
        let plan = engine::script::plan_script(
            Path::new("s.rhai"),
            "infer(load(\"tiny-stories\"), batch(prompts([\"Once\"])));",
            "s",
        )
        .unwrap();
        let spec = plan.runs().remove(0);
        RunRecord {
            study: "s".into(),
            run_hash: spec.id.hex(),
            cycle: 0,
            spec,
            status: engine::record::RunStatus::Ok,
            error: None,
            model: None,
            started_at_unix_s: 0.0,
            metrics: None,
            requests: Vec::new(),
            replicas: Vec::new(),
        }
    }

    #[test]
    fn a_replica_without_a_share_has_null_rates_not_zero() {
        let idle = ReplicaRecord {
            replica: 2,
            device: "cpu:8-11".into(),
            gpu_energy_source: "none".into(),
            ..ReplicaRecord::default()
        };
        let row = replica_row(&record(), &idle).unwrap();
        row.validate().unwrap();
        for column in [
            "start_s",
            "output_tokens_per_s",
            "busy_ratio",
            "gpu_energy_j",
        ] {
            assert_eq!(row.get(column), Some(&Cell::Null), "{column}");
        }
        assert_eq!(row.get("wall_s"), Some(&Cell::Float(0.0)));
        assert_eq!(row.get("replica"), Some(&Cell::Int(2)));
    }

    #[test]
    fn a_time_share_of_machine_wide_energy_is_stored_as_shared() {
        use engine::metering::{DomainEnergy, MeterReport};
        use engine::record::RunMetrics;
        let domain = |domain, joules, source| DomainEnergy {
            domain,
            joules: Some(joules),
            source,
            meter: None,
        };
        let mut shared = record();
        shared.metrics = Some(RunMetrics {
            wall_s: 1.0,
            meters: MeterReport {
                energy: vec![
                    domain(
                        Domain::Cpu,
                        5.0,
                        EnergySource::Shared(api::meter::Source::Rapl),
                    ),
                    domain(
                        Domain::Gpu,
                        12.0,
                        EnergySource::From(api::meter::Source::Nvml),
                    ),
                    domain(
                        Domain::Ram,
                        1.0,
                        EnergySource::Shared(api::meter::Source::Estimate),
                    ),
                ],
                idle_power_w: Some(3.0),
                notes: vec!["cpu and ram energy is machine-wide ... time-share".into()],
                ..MeterReport::default()
            },
            ..RunMetrics::default()
        });
        let provenance = Provenance {
            version: "0".into(),
            git_commit: None,
            git_dirty: None,
            build_profile: "debug".into(),
            rustc_version: None,
            cpu_model: None,
            cpu_flags: None,
            kernel: None,
            hostname: None,
            threads: 1,
        };
        let row = run_row(&shared, &provenance).unwrap();
        let text = |c: &str| row.get(c).cloned();
        assert_eq!(text("energy_cpu_source"), Some(Cell::Text("shared".into())));
        assert_eq!(text("energy_ram_source"), Some(Cell::Text("shared".into())));
        assert_eq!(text("energy_gpu_source"), Some(Cell::Text("nvml".into())));
        assert_eq!(
            text("energy_total_source"),
            Some(Cell::Text("nvml+shared".into()))
        );
        assert_eq!(text("energy_total_j"), Some(Cell::Float(18.0)));
        // An idle baseline beside other runs is not idle: no net energy.
        assert_eq!(text("energy_net_j"), Some(Cell::Null));
        assert!(matches!(text("meter_notes"), Some(Cell::Text(n)) if n.contains("time-share")));
    }

    #[test]
    fn a_non_finite_replica_time_is_refused_rather_than_stored() {
        let broken = ReplicaRecord {
            wall_s: f64::NAN,
            gpu_energy_source: "none".into(),
            ..ReplicaRecord::default()
        };
        // `wall_s` may not be null: the row does not validate, so the store refuses it.
        let row = replica_row(&record(), &broken).unwrap();
        assert!(row.validate().is_err());
    }
}
