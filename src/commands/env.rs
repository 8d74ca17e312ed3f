//! `llmeff env`: the machine, the devices, and which meters this machine has (and why the
//! others are missing).

use std::process::ExitCode;

use api::meter::MeterProvider;
use api::runtime::Runtime;

use crate::Failure;

/// Prints the environment and the meter inventory, as text or JSON.
pub fn run(json: bool) -> Result<ExitCode, Failure> {
    let runtime = backends::BurnRuntime::new();
    let devices = runtime.devices();
    let meters = meters::MachineMeters::detect();
    let inventory = meters.inventory();
    if json {
        let value = serde_json::json!({
            "environment": crate::environment::describe(&devices),
            "meters": inventory.iter().map(|m| serde_json::json!({
                "name": m.name,
                "available": m.available,
                "detail": m.detail,
            })).collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| Failure::work(e.to_string()))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let environment = crate::environment::describe(&devices);
    println!("llmeff {}", env!("CARGO_PKG_VERSION"));
    if let Some(map) = environment.as_object() {
        for (key, value) in map {
            println!("  {key}: {value}");
        }
    }
    println!();
    println!("meters:");
    crate::table::print_meters(&inventory);
    let energy_sensors = inventory
        .iter()
        .any(|m| m.available && (m.name == "nvml" || m.name == "amdgpu" || m.name == "rapl"));
    if !energy_sensors {
        println!();
        println!(
            "no energy sensor is readable here: energy figures will be labelled `estimate` \
             (CodeCarbon's TDP × load method), never reported as measured"
        );
    }
    Ok(ExitCode::SUCCESS)
}
