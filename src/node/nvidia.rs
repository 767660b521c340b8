//! The NVIDIA backend: an NVML session (loaded once, initialised per
//! session) and one read of every GPU through it, turned into samples.
//! Held by the sampler thread and the `devices` command; only they call it.
//!
//! Only a failed handle, a failed UUID or GPU_IS_LOST fail a GPU as a
//! whole. Any other failing call makes its metrics absent for that GPU,
//! with the error kept, so one bad sensor does not drop a GPU from every
//! trigger; a call answering NOT_SUPPORTED (or an entry point the driver
//! lacks) makes them unreported, with that answer as the reason, as on
//! AMD. Rates (GPM, PCIe, NVLink) are kept per GPU and per MIG GPU
//! instance between passes, and forgotten for whatever this pass did not
//! find healthy or present.
//!
//! Implements the seam in `session`; knows nothing of `backend`, which
//! chooses between vendors.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::node::gpu_metric::{mib, percent_used, watts, Metric, Readings};
use crate::node::rates::{Present, RateOut, Rates, GPM_MIN_SPACING};
use crate::node::read_error::{Cause, Reading, Reads};
use crate::node::session::{About, Loader, Names, Session};
use crate::node::snapshot::{GpuHealth, GpuSample, MigSample};
use crate::nvml::{self, Device, Nvml, NvmlError};

/// For [`Loader`] and `/metrics`.
pub const NAMES: Names = Names {
    backend: "nvml",
    display_name: "NVML",
};

/// The NVML library once found (kept across sessions).
pub type Loaded = Loader<nvml::Entries>;

/// Opens a session: loads the library the first time (`path`, else the
/// usual places), then initialises it.
pub fn open(loaded: &mut Loaded, path: Option<&Path>) -> Result<NvidiaSession, String> {
    let (nvml, about) = loaded.open(path, Nvml::init, Nvml::driver_version)?;
    Ok(NvidiaSession {
        about,
        nvml,
        rates: Rates::default(),
    })
}

/// An initialised NVML session and the rates kept between its reads (the
/// GPM buffers among them hold the NVML session themselves, so the order
/// these drop in does not matter).
pub struct NvidiaSession {
    about: About,
    nvml: Nvml,
    rates: Rates,
}

impl Session for NvidiaSession {
    fn about(&self) -> &About {
        &self.about
    }

    fn read_node(&mut self) -> Result<Vec<GpuSample>, String> {
        read_node(&self.nvml, &mut self.rates).map_err(|e| format!("NVML stopped answering: {e}"))
    }

    fn rate_spacing(&self) -> Option<Duration> {
        // GPM needs its samples 100 ms apart.
        Some(GPM_MIN_SPACING * 2)
    }
}

/// Reads every GPU. Only a failure to count the GPUs fails the whole read;
/// a failing GPU becomes a `Lost` or `Failed` sample. `rates` carries the
/// previous pass's samples for rate metrics (GPM, PCIe, NVLink).
pub fn read_node(nvml: &Nvml, rates: &mut Rates) -> Result<Vec<GpuSample>, NvmlError> {
    let count = nvml.device_count()?;
    let now = Instant::now();
    let gpus: Vec<GpuSample> = (0..count)
        .map(|index| read_gpu(nvml, index, rates, now))
        .collect();
    // A GPU that is lost or failing starts its rates afresh when it is
    // back, and so does a GPU instance destroyed and later recreated.
    let present: Vec<Present<'_>> = gpus
        .iter()
        .filter(|g| matches!(g.health, GpuHealth::Healthy { .. }))
        .filter_map(|g| {
            Some(Present {
                uuid: g.uuid.as_deref()?,
                gpu_instances: g.mig.iter().filter_map(|m| m.gpu_instance).collect(),
            })
        })
        .collect();
    rates.retain(&present);
    Ok(gpus)
}

fn read_gpu(nvml: &Nvml, index: u32, rates: &mut Rates, now: Instant) -> GpuSample {
    let mut sample = GpuSample::unread(index);
    let mut reads = Reads::default();
    let result = nvml.device(index).and_then(|device| {
        sample.uuid = Some(device.uuid()?);
        sample.name = take(&mut reads, [Reading::Name], device.name())?;
        let mut health = read_metrics(&device, &mut reads)?;
        if let (GpuHealth::Healthy { readings, .. }, Some(uuid)) = (&mut health, &sample.uuid) {
            let mut out = RateOut {
                readings,
                reads: &mut reads,
            };
            rates.read(nvml, &device, uuid, &mut out)?;
        }
        if let (
            GpuHealth::Healthy {
                mig_enabled: Some(true),
                ..
            },
            Some(uuid),
        ) = (&health, &sample.uuid)
        {
            if let Some(migs) = take(&mut reads, [Reading::MigDevices], device.mig_devices())? {
                for (slot, mig) in migs {
                    // A MIG device without a UUID cannot be attributed: its
                    // pods' ids match nothing, which is their fault, not the
                    // GPU's.
                    match mig.uuid() {
                        Ok(mig_uuid) => sample.mig.push(read_mig(
                            nvml, &device, uuid, slot, mig_uuid, &mig, rates, now,
                        )?),
                        Err(e) if e.is_gpu_lost() => return Err(e),
                        Err(e) => reads.failed([Reading::MigDevice(slot)], Cause::Call(e.into())),
                    }
                }
            }
        }
        Ok(health)
    });
    sample.health = match result {
        Ok(health) => {
            sample.read_errors = reads.errors;
            sample.unreported = reads.unreported;
            health
        }
        Err(e) if e.is_gpu_lost() => GpuHealth::Lost {
            error: e.to_string(),
        },
        Err(e) => GpuHealth::Failed {
            error: e.to_string(),
        },
    };
    sample
}

/// What NVML never reports on a MIG device, and why.
const NOT_ON_MIG: [(Metric, Cause); 8] = [
    (Metric::GpuUtilization, UTILIZATION_ON_MIG),
    (Metric::MemoryUtilization, UTILIZATION_ON_MIG),
    (Metric::Temperature, WHOLE_GPU),
    (Metric::PowerDraw, WHOLE_GPU),
    (Metric::PcieTxMbps, WHOLE_GPU),
    (Metric::PcieRxMbps, WHOLE_GPU),
    (Metric::NvlinkTxMbps, WHOLE_GPU),
    (Metric::NvlinkRxMbps, WHOLE_GPU),
];
const UTILIZATION_ON_MIG: Cause =
    Cause::said("NVML does not report utilization on MIG devices; use sm_activity");
const WHOLE_GPU: Cause = Cause::said("a whole-GPU reading: select the GPU for it");

/// GPM's metrics, as a MIG device has them.
const GPM: [Metric; 4] = [
    Metric::SmActivity,
    Metric::SmOccupancy,
    Metric::TensorActivity,
    Metric::DramBandwidthUtilization,
];

/// One MIG device: identity, memory and (with GPM) activity. Only a lost
/// GPU fails it; anything else leaves a metric absent with the reason.
#[allow(clippy::too_many_arguments)]
fn read_mig(
    nvml: &Nvml,
    parent: &Device<'_>,
    parent_uuid: &str,
    slot: u32,
    uuid: String,
    device: &Device<'_>,
    rates: &mut Rates,
    now: Instant,
) -> Result<MigSample, NvmlError> {
    let mut reads = Reads::default();
    for (metric, cause) in NOT_ON_MIG {
        reads.unreported([metric], cause);
    }
    let profile = take(&mut reads, [Reading::Name], device.name())?.and_then(|name| {
        name.rsplit_once("MIG ")
            .map(|(_, profile)| profile.trim().to_string())
    });
    let failed_before = reads.errors.len();
    let gpu_instance = take(&mut reads, [Reading::GpuInstance], device.gpu_instance_id())?;
    let gpu_instance_failed = reads.errors.len() > failed_before;
    let compute_instance = take(
        &mut reads,
        [Reading::ComputeInstance],
        device.compute_instance_id(),
    )?;
    let mut readings = Readings::default();
    let memory = [Metric::MemoryUsedMib, Metric::MemoryUsedPercent];
    if let Some(memory) = take(&mut reads, memory, device.memory())? {
        readings.set(Metric::MemoryUsedMib, mib(memory.used));
        if let Some(percent) = percent_used(memory.used, memory.total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    match gpu_instance {
        Some(gi) => {
            let mut out = RateOut {
                readings: &mut readings,
                reads: &mut reads,
            };
            rates.read_mig(nvml, parent, parent_uuid, gi, now, &mut out)?;
        }
        // Reading the id failed: so did GPM, this pass.
        None if gpu_instance_failed => reads.failed(
            GPM,
            Cause::said("GPM on MIG needs the GPU-instance id, and reading it failed"),
        ),
        None => reads.unreported(
            GPM,
            Cause::said("GPM on MIG needs the GPU-instance id, which NVML does not give"),
        ),
    }
    Ok(MigSample {
        slot,
        uuid,
        profile,
        gpu_instance,
        compute_instance,
        readings,
        read_errors: reads.errors,
        unreported: reads.unreported,
        allocations: Vec::new(),
    })
}

fn read_metrics(device: &Device<'_>, reads: &mut Reads) -> Result<GpuHealth, NvmlError> {
    let mut readings = Readings::default();
    // Asked first: on a GPU in MIG mode NVML answers NOT_SUPPORTED for
    // utilization, and MIG mode is why.
    let mig_enabled = take(reads, [Reading::MigMode], device.mig_enabled())?;
    let utilization = [Metric::GpuUtilization, Metric::MemoryUtilization];
    match device.utilization() {
        Err(e) if e.is_not_supported() && mig_enabled == Some(true) => {
            reads.unreported(utilization, Cause::said("MIG is enabled"));
        }
        result => {
            if let Some(rates) = take(reads, utilization, result)? {
                readings.set(Metric::GpuUtilization, f64::from(rates.gpu));
                readings.set(Metric::MemoryUtilization, f64::from(rates.memory));
            }
        }
    }
    let memory = [Metric::MemoryUsedMib, Metric::MemoryUsedPercent];
    if let Some(memory) = take(reads, memory, device.memory())? {
        readings.set(Metric::MemoryUsedMib, mib(memory.used));
        if let Some(percent) = percent_used(memory.used, memory.total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    if let Some(celsius) = take(reads, [Metric::Temperature], device.temperature())? {
        readings.set(Metric::Temperature, f64::from(celsius));
    }
    let power = device.power_usage_milliwatts();
    if let Some(milliwatts) = take(reads, [Metric::PowerDraw], power)? {
        readings.set(Metric::PowerDraw, watts(milliwatts));
    }
    Ok(GpuHealth::Healthy {
        readings,
        mig_enabled,
    })
}

/// As [`Reads::take`], NOT_SUPPORTED (or a missing optional symbol) is
/// absent and unreported, with the error; any other error is absent with
/// the error kept. GPU_IS_LOST fails the GPU.
fn take<T, R: Into<Reading>>(
    reads: &mut Reads,
    what: impl IntoIterator<Item = R>,
    result: Result<T, NvmlError>,
) -> Result<Option<T>, NvmlError> {
    match result {
        Err(e) if e.is_gpu_lost() => Err(e),
        result => Ok(reads.take(what, result)),
    }
}
