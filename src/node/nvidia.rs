//! The NVIDIA backend: an NVML session (loaded once, initialised per
//! session) and one read of every GPU through it, turned into samples.
//! Held by the sampler thread and the `devices` command; only they call it.
//!
//! Only a failed handle, a failed UUID or GPU_IS_LOST fail a GPU as a
//! whole. Any other failing call makes its metrics absent for that GPU,
//! with the error kept, so one bad sensor does not drop a GPU from every
//! trigger. Rates (GPM, PCIe, NVLink) are kept per GPU and per MIG GPU
//! instance between passes, and forgotten for whatever this pass did not
//! find healthy or present.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::node::backend::{Loader, Session};
use crate::node::gpu_metric::{mib, percent_used, watts, Metric, Readings};
use crate::node::rates::{Present, RateOut, Rates, GPM_MIN_SPACING};
use crate::node::snapshot::{GpuHealth, GpuSample, MigSample, ReadError};
use crate::nvml::{Device, Nvml, NvmlError, NvmlLibrary};

/// The NVML library once found (kept across sessions).
pub type Loaded = Loader<NvmlLibrary>;

impl Loaded {
    /// Loads the library the first time (`path`, else the usual places),
    /// then initialises a session.
    pub fn open(&mut self, path: Option<&Path>) -> Result<NvidiaSession, String> {
        let library = self.load(|| {
            match path {
                // SAFETY: the operator named this library as NVML
                // (--nvml-library / NVML_LIBRARY_PATH); running its
                // initialisers is their explicit choice.
                Some(path) => unsafe { NvmlLibrary::open_path(path) },
                None => NvmlLibrary::open(),
            }
            .map_err(|e| format!("NVML is not available: {e}"))
        })?;
        let nvml = Nvml::init(Arc::clone(&library))
            .map_err(|e| format!("NVML is not available: {e} (library {})", library.path()))?;
        let driver_version = nvml
            .driver_version()
            .map_err(|e| format!("NVML is not available: {e}"))?;
        Ok(NvidiaSession {
            path: library.path().to_string(),
            nvml,
            rates: Rates::default(),
            driver_version,
        })
    }
}

/// An initialised NVML session and the rates kept between its reads.
pub struct NvidiaSession {
    // Dropped before `nvml`: GPM samples are freed before nvmlShutdown.
    rates: Rates,
    nvml: Nvml,
    path: String,
    driver_version: String,
}

impl Session for NvidiaSession {
    fn backend(&self) -> &'static str {
        "nvml"
    }

    fn display_name(&self) -> &'static str {
        "NVML"
    }

    fn library_path(&self) -> &str {
        &self.path
    }

    fn driver_version(&self) -> &str {
        &self.driver_version
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
        unreported: Vec::new(),
    };
    let result = nvml.device(index).and_then(|device| {
        sample.uuid = Some(device.uuid()?);
        let mut reads = Reads::default();
        sample.name = reads.take(&["name"], device.name())?;
        let mut health = read_metrics(&device, &mut reads)?;
        if let (GpuHealth::Healthy { readings, .. }, Some(uuid)) = (&mut health, &sample.uuid) {
            let mut out = RateOut {
                readings,
                unreported: &mut sample.unreported,
                errors: &mut reads.errors,
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
            if let Some(migs) = reads.take(&["mig_devices"], device.mig_devices())? {
                for (slot, mig) in migs {
                    // A MIG device without a UUID cannot be attributed: its
                    // pods' ids match nothing, which is their fault, not the
                    // GPU's.
                    match mig.uuid() {
                        Ok(mig_uuid) => sample.mig.push(read_mig(
                            nvml, &device, uuid, slot, mig_uuid, &mig, rates, now,
                        )?),
                        Err(e) if e.is_gpu_lost() => return Err(e),
                        Err(e) => reads.errors.push(ReadError {
                            what: format!("mig_device_{slot}"),
                            error: e.to_string(),
                        }),
                    }
                }
            }
        }
        sample.read_errors = reads.errors;
        Ok(health)
    });
    sample.health = match result {
        Ok(health) => health,
        Err(e) if e.is_gpu_lost() => GpuHealth::Lost {
            error: e.to_string(),
        },
        Err(e) => GpuHealth::Failed {
            error: e.to_string(),
        },
    };
    sample
}

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
    let profile = reads.take(&["name"], device.name())?.and_then(|name| {
        name.rsplit_once("MIG ")
            .map(|(_, profile)| profile.trim().to_string())
    });
    let failed_before = reads.errors.len();
    let gpu_instance = reads.take(&["gpu_instance"], device.gpu_instance_id())?;
    let gpu_instance_failed = reads.errors.len() > failed_before;
    let compute_instance = reads.take(&["compute_instance"], device.compute_instance_id())?;
    let mut readings = Readings::default();
    let memory = [Metric::MemoryUsedMib, Metric::MemoryUsedPercent].map(Metric::name);
    if let Some(memory) = reads.take(&memory, device.memory())? {
        readings.set(Metric::MemoryUsedMib, mib(memory.used));
        if let Some(percent) = percent_used(memory.used, memory.total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    let absent = |metrics: &[Metric], why: &str| -> Vec<ReadError> {
        metrics
            .iter()
            .map(|m| ReadError {
                what: m.name().to_string(),
                error: why.to_string(),
            })
            .collect()
    };
    let mut unreported = absent(
        &[Metric::GpuUtilization, Metric::MemoryUtilization],
        "NVML does not report utilization on MIG devices; use sm_activity",
    );
    unreported.extend(absent(
        &[
            Metric::Temperature,
            Metric::PowerDraw,
            Metric::PcieTxMbps,
            Metric::PcieRxMbps,
            Metric::NvlinkTxMbps,
            Metric::NvlinkRxMbps,
        ],
        "a whole-GPU reading: select the GPU for it",
    ));
    let gpm = [
        Metric::SmActivity,
        Metric::SmOccupancy,
        Metric::TensorActivity,
        Metric::DramBandwidthUtilization,
    ];
    match gpu_instance {
        Some(gi) => {
            let mut out = RateOut {
                readings: &mut readings,
                unreported: &mut unreported,
                errors: &mut reads.errors,
            };
            rates.read_mig(nvml, parent, parent_uuid, gi, now, &mut out)?;
        }
        // Reading the id failed: so did GPM, this pass.
        None if gpu_instance_failed => reads.errors.extend(absent(
            &gpm,
            "GPM on MIG needs the GPU-instance id, and reading it failed",
        )),
        None => unreported.extend(absent(
            &gpm,
            "GPM on MIG needs the GPU-instance id, which NVML does not give",
        )),
    }
    Ok(MigSample {
        slot,
        uuid,
        profile,
        gpu_instance,
        compute_instance,
        readings,
        read_errors: reads.errors,
        unreported,
        allocations: Vec::new(),
    })
}

fn read_metrics(device: &Device<'_>, reads: &mut Reads) -> Result<GpuHealth, NvmlError> {
    let mut readings = Readings::default();
    let utilization = [Metric::GpuUtilization, Metric::MemoryUtilization].map(Metric::name);
    if let Some(rates) = reads.take(&utilization, device.utilization())? {
        readings.set(Metric::GpuUtilization, f64::from(rates.gpu));
        readings.set(Metric::MemoryUtilization, f64::from(rates.memory));
    }
    let memory = [Metric::MemoryUsedMib, Metric::MemoryUsedPercent].map(Metric::name);
    if let Some(memory) = reads.take(&memory, device.memory())? {
        readings.set(Metric::MemoryUsedMib, mib(memory.used));
        if let Some(percent) = percent_used(memory.used, memory.total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    let temperature = [Metric::Temperature.name()];
    if let Some(celsius) = reads.take(&temperature, device.temperature())? {
        readings.set(Metric::Temperature, f64::from(celsius));
    }
    let power = [Metric::PowerDraw.name()];
    if let Some(milliwatts) = reads.take(&power, device.power_usage_milliwatts())? {
        readings.set(Metric::PowerDraw, watts(milliwatts));
    }
    let mig_enabled = reads.take(&["mig_mode"], device.mig_enabled())?;
    Ok(GpuHealth::Healthy {
        readings,
        mig_enabled,
    })
}

/// The failed reads of one GPU so far.
#[derive(Default)]
struct Reads {
    errors: Vec<ReadError>,
}

impl Reads {
    /// NOT_SUPPORTED (or a missing optional symbol) is `None`: absent, not a
    /// fault. GPU_IS_LOST fails the GPU. Any other error is `None` too, kept
    /// against each of `what` (the metrics this call feeds).
    fn take<T>(
        &mut self,
        what: &[&str],
        result: Result<T, NvmlError>,
    ) -> Result<Option<T>, NvmlError> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_not_supported() => Ok(None),
            Err(e) if e.is_gpu_lost() => Err(e),
            Err(e) => {
                self.errors.extend(what.iter().map(|what| ReadError {
                    what: what.to_string(),
                    error: e.to_string(),
                }));
                Ok(None)
            }
        }
    }
}
