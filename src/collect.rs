//! One read of every GPU on the node through NVML, turned into samples.
//! Shared by the sampler thread and the `devices` command.

use crate::metrics::{mib, percent_used, watts, Metric, Readings};
use crate::nvml::{Device, Nvml, NvmlError};
use crate::snapshot::{GpuHealth, GpuSample};

/// Reads every GPU. Only a failure to count the GPUs fails the whole read;
/// a failing GPU becomes a `Lost` or `Failed` sample.
pub fn read_node(nvml: &Nvml) -> Result<Vec<GpuSample>, NvmlError> {
    let count = nvml.device_count()?;
    Ok((0..count).map(|index| read_gpu(nvml, index)).collect())
}

fn read_gpu(nvml: &Nvml, index: u32) -> GpuSample {
    let mut sample = GpuSample {
        index,
        uuid: None,
        name: None,
        health: GpuHealth::Failed {
            error: String::new(),
        },
        mig_devices: Vec::new(),
        allocations: Vec::new(),
    };
    let result = nvml.device(index).and_then(|device| {
        sample.uuid = Some(device.uuid()?);
        sample.name = Some(device.name()?);
        let health = read_metrics(&device)?;
        if let GpuHealth::Healthy {
            mig_enabled: Some(true),
            ..
        } = health
        {
            sample.mig_devices = supported(device.mig_device_uuids())?.unwrap_or_default();
        }
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

fn read_metrics(device: &Device<'_>) -> Result<GpuHealth, NvmlError> {
    let mut readings = Readings::default();
    if let Some(rates) = supported(device.utilization())? {
        readings.set(Metric::GpuUtilization, f64::from(rates.gpu));
        readings.set(Metric::MemoryUtilization, f64::from(rates.memory));
    }
    if let Some(memory) = supported(device.memory())? {
        readings.set(Metric::MemoryUsedMib, mib(memory.used));
        if let Some(percent) = percent_used(memory.used, memory.total) {
            readings.set(Metric::MemoryUsedPercent, percent);
        }
    }
    if let Some(celsius) = supported(device.temperature())? {
        readings.set(Metric::Temperature, f64::from(celsius));
    }
    if let Some(milliwatts) = supported(device.power_usage_milliwatts())? {
        readings.set(Metric::PowerDraw, watts(milliwatts));
    }
    let mig_enabled = supported(device.mig_enabled())?;
    Ok(GpuHealth::Healthy {
        readings,
        mig_enabled,
    })
}

/// NOT_SUPPORTED (or a missing optional symbol) means "absent", not a fault.
fn supported<T>(result: Result<T, NvmlError>) -> Result<Option<T>, NvmlError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_supported() => Ok(None),
        Err(e) => Err(e),
    }
}
