//! The AMD backend: an AMD SMI session (loaded once, initialised per
//! session) and one read of every AMD GPU through it, turned into the same
//! samples NVML gives. Held by the sampler thread and the `devices`
//! command; only they call it.
//!
//! A failed UUID fails a GPU as a whole; any other failing call makes its
//! metrics absent for that GPU, with the error kept. Readings AMD SMI does
//! not have (GPM-style activity, PCIe and NVLink rates) and values it
//! marks "not available" are unreported, with the reason: never 0.
//!
//! Implements the seam in `session`; knows nothing of `backend`, which
//! chooses between vendors.

use std::path::Path;
use std::time::Duration;

use crate::amdsmi::{self, format_bdf, sys, AmdSmi, AmdSmiError, Gpu};
use crate::node::attribution::parse_pci_address;
use crate::node::gpu_metric::{mib, percent_used, Metric, Readings};
use crate::node::read_error::{Cause, Reading, Reads};
use crate::node::session::{About, Loader, Names, Session};
use crate::node::snapshot::{GpuHealth, GpuSample};

/// The temperature sensor read. MI300 and later have no edge sensor (the
/// kernel hides it), while every Instinct part reports the hotspot
/// (junction) sensor, the one AMD's own tools show first.
pub const TEMPERATURE_SENSOR: u32 = sys::AMDSMI_TEMPERATURE_TYPE_HOTSPOT;

/// Metrics AMD SMI has no counterpart for here, and why.
const NOT_ON_AMD: [(Metric, Cause); 8] = [
    (Metric::SmActivity, GPM_ONLY),
    (Metric::SmOccupancy, GPM_ONLY),
    (Metric::TensorActivity, GPM_ONLY),
    (
        Metric::DramBandwidthUtilization,
        Cause::said(
            "an NVIDIA GPM metric; AMD SMI has no counterpart here (use memory_utilization)",
        ),
    ),
    (Metric::PcieTxMbps, NOT_READ),
    (Metric::PcieRxMbps, NOT_READ),
    (Metric::NvlinkTxMbps, NO_NVLINK),
    (Metric::NvlinkRxMbps, NO_NVLINK),
];
const GPM_ONLY: Cause = Cause::said("an NVIDIA GPM metric; AMD SMI has no counterpart here");
const NOT_READ: Cause = Cause::said("not read from AMD SMI by this scaler");
const NO_NVLINK: Cause = Cause::said("NVLink is NVIDIA's; AMD GPUs have no NVLink");

/// For [`Loader`] and `/metrics`.
pub const NAMES: Names = Names {
    backend: "amdsmi",
    display_name: "AMD SMI",
};

/// The AMD SMI library once found (kept across sessions).
pub type Loaded = Loader<amdsmi::Entries>;

/// Opens a session: loads the library the first time (`path`, else the
/// usual places), then initialises it.
pub fn open(loaded: &mut Loaded, path: Option<&Path>) -> Result<AmdSession, String> {
    let (smi, about) = loaded.open(path, AmdSmi::init, driver_version)?;
    Ok(AmdSession { about, smi })
}

/// The driver's version as the first GPU states it, else the library's
/// own. Listing the GPUs must work.
fn driver_version(smi: &AmdSmi) -> Result<String, AmdSmiError> {
    let gpus = smi.gpus()?;
    let library = &smi.version().text;
    Ok(gpus
        .first()
        .and_then(|gpu| gpu.driver_version().ok())
        .filter(|v| !v.is_empty())
        .map(|v| format!("{v} (AMD SMI {library})"))
        .unwrap_or_else(|| format!("unknown (AMD SMI {library})")))
}

/// An initialised AMD SMI session.
pub struct AmdSession {
    about: About,
    smi: AmdSmi,
}

impl Session for AmdSession {
    fn about(&self) -> &About {
        &self.about
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
    let mut sample = GpuSample::unread(index);
    let mut reads = Reads::default();
    for (metric, cause) in NOT_ON_AMD {
        reads.unreported([metric], cause);
    }
    let uuid = match gpu.uuid() {
        Ok(uuid) => uuid,
        Err(e) => {
            sample.health = GpuHealth::Failed {
                error: e.to_string(),
            };
            sample.unreported = reads.unreported;
            return sample;
        }
    };
    sample.uuid = Some(uuid);
    sample.pci_bus_id = reads.take([Reading::PciBusId], gpu.bdf()).map(format_bdf);
    sample.name = reads
        .take([Reading::Name], gpu.name())
        .filter(|n| !n.is_empty());
    let mut readings = Readings::default();
    let activity = [Metric::GpuUtilization, Metric::MemoryUtilization];
    if let Some(busy) = reads.take(activity, gpu.activity()) {
        for (metric, value, not_available) in [
            (
                Metric::GpuUtilization,
                busy.gfx,
                "AMD SMI reports gfx_activity as not available on this GPU",
            ),
            (
                Metric::MemoryUtilization,
                busy.umc,
                "AMD SMI reports umc_activity as not available on this GPU",
            ),
        ] {
            match value {
                Some(percent) => readings.set(metric, f64::from(percent)),
                None => reads.unreported([metric], Cause::said(not_available)),
            }
        }
    }
    let memory = [Metric::MemoryUsedMib, Metric::MemoryUsedPercent];
    if let Some((used, total)) = reads.take(memory, gpu.vram()) {
        readings.set(Metric::MemoryUsedMib, mib(used));
        if let Some(percent) = percent_used(used, total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    let temperature = gpu.temperature(TEMPERATURE_SENSOR);
    if let Some(celsius) = reads.take([Metric::Temperature], temperature) {
        readings.set(Metric::Temperature, celsius as f64);
    }
    match reads.take([Metric::PowerDraw], gpu.power_watts()) {
        Some(Some(watts)) => readings.set(Metric::PowerDraw, f64::from(watts)),
        Some(None) => reads.unreported(
            [Metric::PowerDraw],
            Cause::said(
                "AMD SMI reports current_socket_power and average_socket_power as not available on this GPU",
            ),
        ),
        None => {}
    }
    sample.read_errors = reads.errors;
    sample.unreported = reads.unreported;
    sample.health = GpuHealth::Healthy {
        readings,
        mig_enabled: Some(false),
    };
    sample
}
