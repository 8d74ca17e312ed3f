//! Facts about the machine and software a study ran with (stored in its manifest).

use std::path::Path;

use meters::estimate::{CpuInfo, mem_total_bytes};
use serde_json::{Value, json};

/// The environment record: CPU, cores, memory, OS, llmeff and burn versions, devices.
pub fn describe(devices: &[String]) -> Value {
    json!({
        "llmeff_version": env!("CARGO_PKG_VERSION"),
        "burn_version": "0.21.0",
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "cpu_model": CpuInfo::read(Path::new("/proc")).ok().and_then(|c| c.model),
        "logical_cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_bytes": mem_total_bytes(Path::new("/proc")).ok(),
        "devices": devices,
    })
}
