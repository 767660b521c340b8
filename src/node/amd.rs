//! The AMD backend: an AMD SMI session (loaded once, initialised per
//! session) and one read of every AMD GPU through it, turned into the same
//! samples NVML gives. Held by the sampler thread and the `devices`
//! command; only they call it.
//!
//! A failed UUID fails a GPU as a whole; any other failing call makes its
//! metrics absent for that GPU, with the error kept. Readings AMD SMI does
//! not have (GPM-style activity, PCIe and NVLink rates) and values it
//! marks "not available" are unreported, with the reason: never 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::amdsmi::{format_bdf, sys, AmdSmi, AmdSmiError, AmdSmiLibrary, Gpu};
use crate::node::attribution::parse_pci_address;
use crate::node::backend::{Loader, Session};
use crate::node::gpu_metric::{mib, percent_used, Metric, Readings};
use crate::node::snapshot::{GpuHealth, GpuSample, ReadError};

/// The temperature sensor read. MI300 and later have no edge sensor (the
/// kernel hides it), while every Instinct part reports the hotspot
/// (junction) sensor, the one AMD's own tools show first.
pub const TEMPERATURE_SENSOR: u32 = sys::AMDSMI_TEMPERATURE_TYPE_HOTSPOT;

/// Metrics AMD SMI has no counterpart for here, and why.
const NOT_ON_AMD: [(Metric, &str); 8] = [
    (
        Metric::SmActivity,
        "an NVIDIA GPM metric; AMD SMI has no counterpart here",
    ),
    (
        Metric::SmOccupancy,
        "an NVIDIA GPM metric; AMD SMI has no counterpart here",
    ),
    (
        Metric::TensorActivity,
        "an NVIDIA GPM metric; AMD SMI has no counterpart here",
    ),
    (
        Metric::DramBandwidthUtilization,
        "an NVIDIA GPM metric; AMD SMI has no counterpart here (use memory_utilization)",
    ),
    (Metric::PcieTxMbps, "not read from AMD SMI by this scaler"),
    (Metric::PcieRxMbps, "not read from AMD SMI by this scaler"),
    (
        Metric::NvlinkTxMbps,
        "NVLink is NVIDIA's; AMD GPUs have no NVLink",
    ),
    (
        Metric::NvlinkRxMbps,
        "NVLink is NVIDIA's; AMD GPUs have no NVLink",
    ),
];

/// The AMD SMI library once found (kept across sessions).
pub type Loaded = Loader<AmdSmiLibrary>;

impl Loaded {
    /// Loads the library the first time (`path`, else the usual places),
    /// then initialises a session.
    pub fn open(&mut self, path: Option<&Path>) -> Result<AmdSession, String> {
        let library = self.load(|| {
            match path {
                // SAFETY: the operator named this library as AMD SMI
                // (--amd-smi-library / AMD_SMI_LIBRARY_PATH); running its
                // initialisers is their explicit choice.
                Some(path) => unsafe { AmdSmiLibrary::open_path(path) },
                None => AmdSmiLibrary::open(),
            }
            .map_err(|e| format!("AMD SMI is not available: {e}"))
        })?;
        let smi = AmdSmi::init(Arc::clone(&library))
            .map_err(|e| format!("AMD SMI is not available: {e} (library {})", library.path()))?;
        let gpus = smi
            .gpus()
            .map_err(|e| format!("AMD SMI is not available: {e}"))?;
        // The driver's version as the first GPU states it; else the
        // library's own.
        let driver_version = gpus
            .first()
            .and_then(|gpu| gpu.driver_version().ok())
            .filter(|v| !v.is_empty())
            .map(|v| format!("{v} (AMD SMI {})", smi.version().text))
            .unwrap_or_else(|| format!("unknown (AMD SMI {})", smi.version().text));
        drop(gpus);
        Ok(AmdSession {
            path: library.path().to_string(),
            smi,
            driver_version,
        })
    }
}

/// An initialised AMD SMI session.
pub struct AmdSession {
    smi: AmdSmi,
    path: String,
    driver_version: String,
}

impl Session for AmdSession {
    fn backend(&self) -> &'static str {
        "amdsmi"
    }

    fn display_name(&self) -> &'static str {
        "AMD SMI"
    }

    fn library_path(&self) -> &str {
        &self.path
    }

    fn driver_version(&self) -> &str {
        &self.driver_version
    }

    fn read_node(&mut self) -> Result<Vec<GpuSample>, String> {
        read_node(&self.smi).map_err(|e| format!("AMD SMI stopped answering: {e}"))
    }

    fn rate_spacing(&self) -> Option<Duration> {
        None
    }
}

/// Reads every AMD GPU. Only a failure to list the GPUs fails the whole
/// read; a failing GPU becomes a `Failed` sample, and so does each compute
/// partition of a partitioned GPU (out of scope: see `mark_partitions`).
pub fn read_node(smi: &AmdSmi) -> Result<Vec<GpuSample>, AmdSmiError> {
    let gpus = smi.gpus()?;
    let mut samples: Vec<GpuSample> = gpus
        .iter()
        .enumerate()
        .map(|(index, gpu)| read_gpu(index as u32, gpu))
        .collect();
    mark_partitions(&mut samples);
    Ok(samples)
}

/// An MI300 in a compute-partition mode shows one processor per partition,
/// on the same PCI device with the partition in the function number
/// (`0000:0c:00.1`), and most readings are not available on partitions
/// other than the first. Reading partitions is out of scope: each is
/// `Failed` with that reason (kept out of node-wide triggers; a trigger
/// selecting a pod on one is UNAVAILABLE), never read as a whole GPU.
fn mark_partitions(samples: &mut [GpuSample]) {
    let device = |s: &GpuSample| {
        s.pci_bus_id
            .as_deref()
            .and_then(parse_pci_address)
            .map(|(domain, bus, device, function)| ((domain, bus, device), function))
    };
    let partitioned: Vec<bool> = samples
        .iter()
        .map(|sample| match device(sample) {
            None => false,
            Some((id, function)) => {
                function != 0
                    || samples
                        .iter()
                        .filter(|o| device(o).map(|d| d.0) == Some(id))
                        .count()
                        > 1
            }
        })
        .collect();
    for (sample, partitioned) in samples.iter_mut().zip(partitioned) {
        if partitioned {
            sample.health = GpuHealth::Failed {
                error: format!(
                    "an AMD GPU compute partition (PCI {}): partitioned AMD GPUs are out of scope for this scaler",
                    sample.pci_bus_id.as_deref().unwrap_or("?")
                ),
            };
        }
    }
}

fn read_gpu(index: u32, gpu: &Gpu<'_>) -> GpuSample {
    let mut sample = GpuSample {
        index,
        uuid: None,
        name: None,
        pci_bus_id: None,
        health: GpuHealth::Failed {
            error: String::new(),
        },
        mig: Vec::new(),
        allocations: Vec::new(),
        read_errors: Vec::new(),
        unreported: NOT_ON_AMD
            .iter()
            .map(|(metric, why)| ReadError {
                what: metric.name().to_string(),
                error: why.to_string(),
            })
            .collect(),
    };
    let uuid = match gpu.uuid() {
        Ok(uuid) => uuid,
        Err(e) => {
            sample.health = GpuHealth::Failed {
                error: e.to_string(),
            };
            return sample;
        }
    };
    sample.uuid = Some(uuid);
    let mut reads = Reads::default();
    sample.pci_bus_id = reads.take(&["pci_bus_id"], gpu.bdf()).map(format_bdf);
    sample.name = reads.take(&["name"], gpu.name()).filter(|n| !n.is_empty());
    let mut readings = Readings::default();
    let activity = [Metric::GpuUtilization, Metric::MemoryUtilization];
    if let Some(busy) = reads.take(&activity.map(Metric::name), gpu.activity()) {
        for (metric, value, field) in [
            (Metric::GpuUtilization, busy.gfx, "gfx_activity"),
            (Metric::MemoryUtilization, busy.umc, "umc_activity"),
        ] {
            match value {
                Some(percent) => readings.set(metric, f64::from(percent)),
                None => reads.unreported.push(ReadError {
                    what: metric.name().to_string(),
                    error: format!("AMD SMI reports {field} as not available on this GPU"),
                }),
            }
        }
    }
    let memory = [Metric::MemoryUsedMib, Metric::MemoryUsedPercent].map(Metric::name);
    if let Some((used, total)) = reads.take(&memory, gpu.vram()) {
        readings.set(Metric::MemoryUsedMib, mib(used));
        if let Some(percent) = percent_used(used, total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    let temperature = [Metric::Temperature.name()];
    if let Some(celsius) = reads.take(&temperature, gpu.temperature(TEMPERATURE_SENSOR)) {
        readings.set(Metric::Temperature, celsius as f64);
    }
    let power = [Metric::PowerDraw.name()];
    match reads.take(&power, gpu.power_watts()) {
        Some(Some(watts)) => readings.set(Metric::PowerDraw, f64::from(watts)),
        Some(None) => reads.unreported.push(ReadError {
            what: Metric::PowerDraw.name().to_string(),
            error: String::from(
                "AMD SMI reports current_socket_power and average_socket_power as not available on this GPU",
            ),
        }),
        None => {}
    }
    sample.read_errors = reads.errors;
    sample.unreported.extend(reads.unreported);
    sample.health = GpuHealth::Healthy {
        readings,
        mig_enabled: Some(false),
    };
    sample
}

/// The failed and unsupported reads of one GPU so far.
#[derive(Default)]
struct Reads {
    errors: Vec<ReadError>,
    unreported: Vec<ReadError>,
}

impl Reads {
    /// NOT_SUPPORTED is `None` with the metrics unreported; any other error
    /// is `None` with the error kept against each of `what`.
    fn take<T>(&mut self, what: &[&str], result: Result<T, AmdSmiError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                let into = if e.is_not_supported() {
                    &mut self.unreported
                } else {
                    &mut self.errors
                };
                into.extend(what.iter().map(|what| ReadError {
                    what: what.to_string(),
                    error: e.to_string(),
                }));
                None
            }
        }
    }
}
