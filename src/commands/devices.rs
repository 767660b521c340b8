//! `devices`: one read of every GPU through the configured backend (NVML or
//! AMD SMI), as a table or JSON. This is how a user checks a distroless pod
//! with `kubectl exec`. Rates (GPM, PCIe, NVLink) need two samples, so a
//! backend with rates is read twice, 200 ms apart.

use crate::commands::args::DevicesArgs;
use crate::commands::json::{self, JsonObject};
use crate::node::backend::Opener;
use crate::node::gpu_metric::{Metric, Readings};
use crate::node::read_error::{Cause, ReadError, Reading};
use crate::node::snapshot::{GpuHealth, GpuSample};

pub fn run(args: &DevicesArgs) -> Result<(), String> {
    let mut session = Opener::new(args.backend.clone()).open()?;
    let mut gpus = session.read_node()?;
    // A second read gives the rates their second sample.
    if let Some(spacing) = session.rate_spacing() {
        std::thread::sleep(spacing);
        gpus = session.read_node()?;
    }
    let source = Source {
        backend: session.backend(),
        name: session.display_name(),
        library: session.library_path(),
        driver_version: session.driver_version(),
    };
    if args.json {
        println!("{}", render_json(&source, &gpus));
    } else {
        print!("{}", render_table(&source, &gpus));
    }
    Ok(())
}

/// Which library answered, for the first line (or the JSON's top).
pub struct Source<'a> {
    /// `nvml`, `amdsmi`.
    pub backend: &'a str,
    /// `NVML`, `AMD SMI`.
    pub name: &'a str,
    pub library: &'a str,
    pub driver_version: &'a str,
}

/// A fixed-width table; absent metrics read `n/a`, never 0.
pub fn render_table(source: &Source, gpus: &[GpuSample]) -> String {
    let mut out = format!(
        "{} {}, driver {}, {} GPU(s)\n",
        source.name,
        source.library,
        source.driver_version,
        gpus.len()
    );
    let header = [
        "GPU%", "MEM%", "USED_MIB", "USED%", "TEMP_C", "POWER_W", "SM%", "TNSR%", "DRAM%",
        "PCIE_TX", "PCIE_RX", "NVL_TX", "NVL_RX",
    ]
    .map(String::from);
    row(&mut out, "IDX", "UUID", "NAME", &header, "STATUS");
    for gpu in gpus {
        let readings = gpu.readings().copied().unwrap_or_default();
        let index = gpu.index.to_string();
        let uuid = gpu.uuid.as_deref().unwrap_or("?");
        let name = gpu.name.as_deref().unwrap_or("?");
        row(
            &mut out,
            &index,
            uuid,
            name,
            &cells(&readings),
            &status(gpu),
        );
        // MIG devices under their GPU: `GPU/slot`.
        for mig in &gpu.mig {
            let ids = match (mig.gpu_instance, mig.compute_instance) {
                (Some(gi), Some(ci)) => format!(" gi{gi} ci{ci}"),
                _ => String::new(),
            };
            let name = format!("MIG {}{ids}", mig.profile.as_deref().unwrap_or("?"));
            let status = if mig.read_errors.is_empty() {
                String::from("ok")
            } else {
                let failed: Vec<String> = mig
                    .read_errors
                    .iter()
                    .map(|e| format!("{} failed: {}", e.what, e.cause))
                    .collect();
                format!("ok ({})", failed.join("; "))
            };
            let slot = format!("{}/{}", gpu.index, mig.slot);
            row(
                &mut out,
                &slot,
                &mig.uuid,
                &name,
                &cells(&mig.readings),
                &status,
            );
        }
    }
    // Why a metric reads n/a, once per reason, with the GPUs it applies to.
    let mut reasons: Vec<(String, Vec<u32>)> = Vec::new();
    for gpu in gpus {
        let mut groups: Vec<(&Cause, Vec<Reading>)> = Vec::new();
        for e in &gpu.unreported {
            match groups.iter_mut().find(|(why, _)| **why == e.cause) {
                Some((_, what)) => what.push(e.what),
                None => groups.push((&e.cause, vec![e.what])),
            }
        }
        for (why, what) in groups {
            let line = format!("{}: {why}", names(&what));
            match reasons.iter_mut().find(|(l, _)| *l == line) {
                Some((_, indexes)) => indexes.push(gpu.index),
                None => reasons.push((line, vec![gpu.index])),
            }
        }
    }
    for (line, indexes) in reasons {
        let indexes: Vec<String> = indexes.iter().map(u32::to_string).collect();
        out.push_str(&format!("n/a on GPU {}: {line}\n", indexes.join(", ")));
    }
    out
}

/// The table's metric columns, in header order: `n/a` where absent.
const COLUMNS: [(Metric, usize); 13] = [
    (Metric::GpuUtilization, 0),
    (Metric::MemoryUtilization, 0),
    (Metric::MemoryUsedMib, 0),
    (Metric::MemoryUsedPercent, 1),
    (Metric::Temperature, 0),
    (Metric::PowerDraw, 1),
    (Metric::SmActivity, 0),
    (Metric::TensorActivity, 0),
    (Metric::DramBandwidthUtilization, 0),
    (Metric::PcieTxMbps, 1),
    (Metric::PcieRxMbps, 1),
    (Metric::NvlinkTxMbps, 1),
    (Metric::NvlinkRxMbps, 1),
];

fn cells(readings: &Readings) -> [String; 13] {
    COLUMNS.map(|(metric, decimals)| match readings.get(metric) {
        Some(value) => format!("{value:.decimals$}"),
        None => "n/a".to_string(),
    })
}

/// One fixed-width line: identity, the metric columns, a status.
fn row(out: &mut String, index: &str, uuid: &str, name: &str, cells: &[String; 13], status: &str) {
    let widths = [6, 6, 9, 6, 6, 8, 5, 5, 5, 8, 8, 8, 8];
    out.push_str(&format!("{index:<4} {uuid:<40} {name:<24}"));
    for (cell, width) in cells.iter().zip(widths) {
        out.push_str(&format!(" {cell:>width$}"));
    }
    out.push_str(&format!("  {status}\n"));
}

/// `a, b`: the readings' names.
fn names(readings: &[Reading]) -> String {
    let names: Vec<String> = readings.iter().map(Reading::to_string).collect();
    names.join(", ")
}

/// `[{"what":…, <key>:…}, …]`.
fn errors_json(errors: &[ReadError], key: &str) -> String {
    let items: Vec<String> = errors
        .iter()
        .map(|e| {
            let mut error = JsonObject::new();
            error.string("what", Some(&e.what.to_string()));
            error.string(key, Some(&e.cause.to_string()));
            error.finish()
        })
        .collect();
    json::array(&items)
}

fn status(gpu: &GpuSample) -> String {
    let mut notes = Vec::new();
    if let GpuHealth::Healthy {
        mig_enabled: Some(true),
        ..
    } = gpu.health
    {
        notes.push("MIG enabled: utilization not reported".to_string());
    }
    // One call can feed two metrics; say its error once.
    let mut errors: Vec<&Cause> = Vec::new();
    for e in &gpu.read_errors {
        if !errors.contains(&&e.cause) {
            errors.push(&e.cause);
            let what: Vec<Reading> = gpu
                .read_errors
                .iter()
                .filter(|other| other.cause == e.cause)
                .map(|other| other.what)
                .collect();
            notes.push(format!("{} failed: {}", names(&what), e.cause));
        }
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    match &gpu.health {
        GpuHealth::Healthy { .. } => format!("ok{notes}"),
        GpuHealth::Lost { error } => format!("LOST: {error}"),
        GpuHealth::Failed { error } => format!("ERROR: {error}"),
    }
}

/// `{"backend":…, "library":…, "driver_version":…, "gpus":[…]}`; absent
/// metrics are null.
pub fn render_json(source: &Source, gpus: &[GpuSample]) -> String {
    let gpus: Vec<String> = gpus
        .iter()
        .map(|gpu| {
            let mut object = JsonObject::new();
            object.number("index", Some(f64::from(gpu.index)));
            object.string("uuid", gpu.uuid.as_deref());
            object.string("name", gpu.name.as_deref());
            let (health, error, mig) = match &gpu.health {
                GpuHealth::Healthy { mig_enabled, .. } => ("healthy", None, *mig_enabled),
                GpuHealth::Lost { error } => ("lost", Some(error.as_str()), None),
                GpuHealth::Failed { error } => ("failed", Some(error.as_str()), None),
            };
            object.string("health", Some(health));
            object.string("error", error);
            object.boolean("mig_enabled", mig);
            for metric in Metric::ALL {
                object.number(metric.name(), gpu.readings().and_then(|r| r.get(metric)));
            }
            object.raw("read_errors", &errors_json(&gpu.read_errors, "error"));
            object.raw("unreported", &errors_json(&gpu.unreported, "why"));
            let migs: Vec<String> = gpu
                .mig
                .iter()
                .map(|mig| {
                    let mut m = JsonObject::new();
                    m.number("slot", Some(f64::from(mig.slot)));
                    m.string("uuid", Some(&mig.uuid));
                    m.string("profile", mig.profile.as_deref());
                    m.number("gpu_instance", mig.gpu_instance.map(f64::from));
                    m.number("compute_instance", mig.compute_instance.map(f64::from));
                    for metric in Metric::ALL {
                        m.number(metric.name(), mig.readings.get(metric));
                    }
                    m.raw("read_errors", &errors_json(&mig.read_errors, "error"));
                    m.raw("unreported", &errors_json(&mig.unreported, "why"));
                    m.finish()
                })
                .collect();
            object.raw("mig", &json::array(&migs));
            object.finish()
        })
        .collect();
    let mut root = JsonObject::new();
    root.string("backend", Some(source.backend));
    root.string("library", Some(source.library));
    root.string("driver_version", Some(source.driver_version));
    root.raw("gpus", &json::array(&gpus));
    root.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::gpu_metric::Readings;

    fn gpus() -> Vec<GpuSample> {
        let mut readings = Readings::default();
        readings.set(Metric::GpuUtilization, 37.0);
        readings.set(Metric::PowerDraw, 71.5);
        vec![
            GpuSample {
                uuid: Some("GPU-a".into()),
                name: Some("NVIDIA H100".into()),
                pci_bus_id: None,
                ..GpuSample::healthy(0, readings)
            },
            GpuSample {
                index: 1,
                uuid: None,
                name: None,
                pci_bus_id: None,
                health: GpuHealth::Lost {
                    error: "nvmlDeviceGetHandleByIndex failed: \"lost\"".into(),
                },
                mig: vec![],
                allocations: vec![],
                read_errors: vec![],
                unreported: vec![],
            },
        ]
    }

    fn nvml() -> Source<'static> {
        Source {
            backend: "nvml",
            name: "NVML",
            library: "lib",
            driver_version: "550",
        }
    }

    #[test]
    fn json_marks_absent_metrics_null() {
        let source = Source {
            library: "/lib/libnvidia-ml.so.1",
            driver_version: "550.54",
            ..nvml()
        };
        let json = render_json(&source, &gpus());
        assert!(json.starts_with(r#"{"backend":"nvml","library":"/lib/libnvidia-ml.so.1","driver_version":"550.54","gpus":[{"index":0,"uuid":"GPU-a""#), "{json}");
        assert!(
            json.contains(r#""gpu_utilization":37,"memory_utilization":null"#),
            "{json}"
        );
        assert!(
            json.contains(r#""power_draw":71.5,"sm_activity":null"#)
                && json.contains(
                    r#""nvlink_rx_mbps":null,"read_errors":[],"unreported":[],"mig":[]}"#
                ),
            "{json}"
        );
        assert!(
            json.contains(
                r#""health":"lost","error":"nvmlDeviceGetHandleByIndex failed: \"lost\"""#
            ),
            "{json}"
        );
    }

    #[test]
    fn a_failed_reading_shows_in_status_and_json() {
        let mut gpus = gpus();
        let failed = Cause::Call(
            crate::nvml::NvmlError::Call {
                function: "nvmlDeviceGetUtilizationRates",
                code: crate::nvml::ReturnCode::Unknown(999),
                description: "Unknown Error".into(),
            }
            .into(),
        );
        for what in [Metric::GpuUtilization, Metric::MemoryUtilization] {
            gpus[0]
                .read_errors
                .push(ReadError::new(what, failed.clone()));
        }
        let table = render_table(&nvml(), &gpus);
        let row0 = table.lines().nth(2).unwrap();
        assert!(
            row0.ends_with("ok (gpu_utilization, memory_utilization failed: nvmlDeviceGetUtilizationRates failed: NVML_ERROR_UNKNOWN (999): Unknown Error)"),
            "{row0}"
        );
        let json = render_json(&nvml(), &gpus);
        assert!(
            json.contains(r#""read_errors":[{"what":"gpu_utilization","error":"nvmlDeviceGetUtilizationRates failed: NVML_ERROR_UNKNOWN (999): Unknown Error"},{"what":"memory_utilization""#),
            "{json}"
        );
    }

    #[test]
    fn table_shows_na_and_status() {
        let table = render_table(&nvml(), &gpus());
        let row0 = table.lines().nth(2).unwrap();
        assert!(row0.starts_with("0    GPU-a"), "{row0}");
        assert!(
            row0.contains("37") && row0.contains("n/a") && row0.ends_with("  ok"),
            "{row0}"
        );
        assert!(table.lines().nth(3).unwrap().contains("LOST: "), "{table}");
    }
}
