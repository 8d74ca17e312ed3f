//! Facts about the machine and software a study ran with (stored in its manifest).

use serde_json::{Value, json};

fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The environment record: CPU, cores, memory, OS, llmeff and burn versions, devices.
pub fn describe(devices: &[String]) -> Value {
    json!({
        "llmeff_version": env!("CARGO_PKG_VERSION"),
        "burn_version": "0.21.0",
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "cpu_model": cpu_model(),
        "logical_cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_bytes": total_memory_bytes(),
        "devices": devices,
    })
}
