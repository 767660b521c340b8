//! Metrics that are rates between two reads: SM, tensor and DRAM activity
//! from GPM samples (Hopper and newer), and PCIe and NVLink throughput from
//! NVML's byte counters. The previous sample of each GPU is kept here
//! between passes; the first pass has no rate, and every metric a GPU
//! cannot give is absent with the reason, never 0. Called only from the
//! thread that owns the NVML session (the sampler, or `devices`).

use std::collections::HashMap;
use std::os::raw::c_uint;
use std::time::{Duration, Instant};

use crate::node::gpu_metric::{Metric, Readings};
use crate::node::snapshot::ReadError;
use crate::nvml::sys::{
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
    NVML_FI_DEV_PCIE_COUNT_RX_BYTES, NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
    NVML_GPM_METRIC_ANY_TENSOR_UTIL, NVML_GPM_METRIC_DRAM_BW_UTIL, NVML_GPM_METRIC_SM_OCCUPANCY,
    NVML_GPM_METRIC_SM_UTIL, NVML_SCOPE_ALL_LINKS,
};
use crate::nvml::{Counter, Device, GpmSample, Nvml, NvmlError};

/// GPM needs its two samples at least this far apart.
pub const GPM_MIN_SPACING: Duration = Duration::from_millis(100);

const GPM_METRICS: [(c_uint, Metric); 4] = [
    (NVML_GPM_METRIC_SM_UTIL, Metric::SmActivity),
    (NVML_GPM_METRIC_SM_OCCUPANCY, Metric::SmOccupancy),
    (NVML_GPM_METRIC_ANY_TENSOR_UTIL, Metric::TensorActivity),
    (
        NVML_GPM_METRIC_DRAM_BW_UTIL,
        Metric::DramBandwidthUtilization,
    ),
];

/// Field, scope, metric, and bytes per counter unit.
const COUNTERS: [(c_uint, c_uint, Metric, f64); 4] = [
    (NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0, Metric::PcieTxMbps, 1.0),
    (NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0, Metric::PcieRxMbps, 1.0),
    (
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
        NVML_SCOPE_ALL_LINKS,
        Metric::NvlinkTxMbps,
        1024.0,
    ),
    (
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX,
        NVML_SCOPE_ALL_LINKS,
        Metric::NvlinkRxMbps,
        1024.0,
    ),
];

/// What the previous passes left for the next one, per GPU (by UUID).
/// Holds GPM buffers: drop it before the NVML session.
#[derive(Default)]
pub struct Rates {
    gpus: HashMap<String, GpuRates>,
}

#[derive(Default)]
struct GpuRates {
    /// Asked once per session.
    gpm_support: Option<Result<bool, String>>,
    /// The previous GPM sample and when it was taken.
    gpm: Option<(GpmSample, Instant)>,
    /// The rates of the latest complete window and when it ended, for a
    /// pass that comes too soon for a window of its own.
    gpm_last: Option<(Vec<(Metric, f64)>, Instant)>,
    /// This pass's GPM result, for the other compute instances of the same
    /// GPU instance (GPM measures GPU instances, not compute instances).
    gpm_pass: Option<(Instant, GpmResult)>,
    counters: HashMap<c_uint, Counter>,
}

/// What one GPM read gave.
#[derive(Clone, Default)]
struct GpmResult {
    values: Vec<(Metric, f64)>,
    unreported: Vec<ReadError>,
    errors: Vec<ReadError>,
}

/// The largest GPM percentage taken as real; above it the samples did
/// not belong together (an instance recreated, a GPU reset).
const GPM_MAX_PERCENT: f64 = 100.5;

/// Where one GPU's rates go.
pub struct RateOut<'a> {
    pub readings: &'a mut Readings,
    /// Metrics the GPU does not report, and why.
    pub unreported: &'a mut Vec<ReadError>,
    /// Reads that failed.
    pub errors: &'a mut Vec<ReadError>,
}

impl RateOut<'_> {
    fn unreported(&mut self, metrics: impl IntoIterator<Item = Metric>, why: &str) {
        for metric in metrics {
            self.unreported.push(ReadError {
                what: metric.name().to_string(),
                error: why.to_string(),
            });
        }
    }

    /// NOT_SUPPORTED or a missing symbol is "not reported"; anything
    /// else a failed read. GPU_IS_LOST is passed up.
    fn failed(
        &mut self,
        metrics: &[Metric],
        error: NvmlError,
        unsupported_why: &str,
    ) -> Result<(), NvmlError> {
        if error.is_gpu_lost() {
            return Err(error);
        }
        if error.is_not_supported() {
            self.unreported(
                metrics.iter().copied(),
                &format!("{unsupported_why} ({error})"),
            );
        } else {
            for metric in metrics {
                self.errors.push(ReadError {
                    what: metric.name().to_string(),
                    error: error.to_string(),
                });
            }
        }
        Ok(())
    }
}

impl Rates {
    /// Forgets GPUs not in `present` (gone, or replaced).
    pub fn retain(&mut self, present: &[&str]) {
        self.gpus.retain(|key, _| {
            let uuid = key.split_once("/gi").map_or(key.as_str(), |(uuid, _)| uuid);
            present.contains(&uuid)
        });
    }

    /// This GPU's rates since its previous read, into `out`.
    pub fn read(
        &mut self,
        nvml: &Nvml,
        device: &Device<'_>,
        uuid: &str,
        out: &mut RateOut<'_>,
    ) -> Result<(), NvmlError> {
        let state = self.gpus.entry(uuid.to_string()).or_default();
        read_gpm(nvml, device, None, state, out)?;
        read_counters(device, state, out)
    }

    /// GPM activity of one GPU instance (MIG) of `parent` since its
    /// previous read, computed once per pass (`now`) and shared by the
    /// compute instances of that GPU instance. PCIe and NVLink belong to
    /// the whole GPU.
    pub fn read_mig(
        &mut self,
        nvml: &Nvml,
        parent: &Device<'_>,
        parent_uuid: &str,
        gpu_instance: u32,
        now: Instant,
        out: &mut RateOut<'_>,
    ) -> Result<(), NvmlError> {
        let key = format!("{parent_uuid}/gi{gpu_instance}");
        let state = self.gpus.entry(key).or_default();
        if let Some((pass, result)) = &state.gpm_pass {
            if *pass == now {
                // Another compute instance of this GPU instance, this pass.
                for (metric, value) in &result.values {
                    out.readings.set(*metric, *value);
                }
                out.unreported.extend(result.unreported.iter().cloned());
                out.errors.extend(result.errors.iter().cloned());
                return Ok(());
            }
        }
        let mut readings = Readings::default();
        let mut result = GpmResult::default();
        let mut own = RateOut {
            readings: &mut readings,
            unreported: &mut result.unreported,
            errors: &mut result.errors,
        };
        read_gpm(nvml, parent, Some(gpu_instance), state, &mut own)?;
        result.values = GPM_METRICS
            .iter()
            .filter_map(|(_, metric)| readings.get(*metric).map(|v| (*metric, v)))
            .collect();
        for (metric, value) in &result.values {
            out.readings.set(*metric, *value);
        }
        out.unreported.extend(result.unreported.iter().cloned());
        out.errors.extend(result.errors.iter().cloned());
        state.gpm_pass = Some((now, result));
        Ok(())
    }
}

fn read_gpm(
    nvml: &Nvml,
    device: &Device<'_>,
    gpu_instance: Option<u32>,
    state: &mut GpuRates,
    out: &mut RateOut<'_>,
) -> Result<(), NvmlError> {
    let metrics = GPM_METRICS.map(|(_, metric)| metric);
    let support = state
        .gpm_support
        .get_or_insert_with(|| match device.gpm_supported() {
            Ok(supported) => Ok(supported),
            Err(e) if e.is_gpu_lost() => Err(String::from("lost")),
            Err(e) => Err(e.to_string()),
        });
    match support {
        Ok(true) => {}
        Ok(false) => {
            out.unreported(metrics, "this GPU has no GPM (Hopper or newer has it)");
            return Ok(());
        }
        Err(error) => {
            let why = format!("GPM is not available: {error}");
            state.gpm_support = None;
            out.unreported(metrics, &why);
            return Ok(());
        }
    }
    let take = |sample: &GpmSample| match gpu_instance {
        None => device.gpm_sample(sample),
        Some(gi) => device.gpm_mig_sample(gi, sample),
    };
    let sample = match nvml.gpm_sample_alloc().and_then(|s| take(&s).map(|()| s)) {
        Ok(sample) => sample,
        Err(e) => return out.failed(&metrics, e, "GPM sampling is not supported"),
    };
    // Spacing is measured between the samples themselves, not passes.
    let now = Instant::now();
    let Some((previous, at)) = &state.gpm else {
        state.gpm = Some((sample, now));
        out.unreported(
            metrics,
            "a rate: it needs a second sample, one pass from now",
        );
        return Ok(());
    };
    if now.duration_since(*at) < GPM_MIN_SPACING {
        // The baseline is kept, so the next pass has a full window. Until
        // then the latest window's rates stand (a pass a little early at
        // a 100 ms interval must not make them flicker absent), if recent.
        match &state.gpm_last {
            Some((values, ended)) if now.duration_since(*ended) < GPM_MIN_SPACING * 3 => {
                for (metric, value) in values {
                    out.readings.set(*metric, *value);
                }
            }
            _ => out.unreported(
                metrics,
                "GPM samples must be 100 ms apart; the pass came sooner",
            ),
        }
        return Ok(());
    }
    let ids = GPM_METRICS.map(|(id, _)| id);
    let values = nvml.gpm_metrics(previous, &sample, &ids);
    state.gpm = Some((sample, now));
    state.gpm_last = None;
    match values {
        Ok(values) => {
            let mut window = Vec::new();
            for ((_, metric), value) in GPM_METRICS.iter().zip(values) {
                match value {
                    Ok(value) if value.is_finite() && (0.0..=GPM_MAX_PERCENT).contains(&value) => {
                        out.readings.set(*metric, value.min(100.0));
                        window.push((*metric, value.min(100.0)));
                    }
                    // Samples that do not belong together (an instance
                    // recreated, a reset): no rate this pass, not 100%.
                    Ok(value) => out.unreported([*metric], &format!(
                        "GPM gave {value}, not a percentage: the previous sample was of another instance or before a reset; the rate resumes next pass"
                    )),
                    Err(e) => out.failed(&[*metric], e, "GPM does not measure it on this GPU")?,
                }
            }
            state.gpm_last = Some((window, now));
            Ok(())
        }
        Err(e) => out.failed(&metrics, e, "GPM metrics are not supported"),
    }
}

fn read_counters(
    device: &Device<'_>,
    state: &mut GpuRates,
    out: &mut RateOut<'_>,
) -> Result<(), NvmlError> {
    let requests = COUNTERS.map(|(field, scope, _, _)| (field, scope));
    let values = match device.field_values(&requests) {
        Ok(values) => values,
        Err(e) => {
            let metrics = COUNTERS.map(|(_, _, metric, _)| metric);
            return out.failed(&metrics, e, "NVML has no field values here");
        }
    };
    for ((field, _, metric, unit), value) in COUNTERS.iter().zip(values) {
        let counter = match value.result {
            Ok(counter) => counter,
            Err(e) => {
                state.counters.remove(field);
                let why = match metric {
                    Metric::PcieTxMbps | Metric::PcieRxMbps => {
                        "no PCIe byte counters on this GPU or driver"
                    }
                    _ => "no NVLink on this GPU, or no throughput counters in this driver",
                };
                out.failed(&[*metric], e, why)?;
                continue;
            }
        };
        let previous = state.counters.insert(*field, counter);
        match previous.map(|p| rate(p, counter, *unit)) {
            None => out.unreported(
                [*metric],
                "a rate: it needs a second sample, one pass from now",
            ),
            Some(Ok(mbps)) => out.readings.set(*metric, mbps),
            Some(Err(why)) => out.unreported([*metric], &why),
        }
    }
    Ok(())
}

/// MB/s (10^6 bytes) between two reads of a cumulative counter of `unit`
/// bytes. A counter that went down wrapped when it is 32 bits wide and its
/// earlier value was in the top half; otherwise it was reset (driver reload,
/// GPU reset), and that pass has no rate.
pub fn rate(earlier: Counter, later: Counter, unit: f64) -> Result<f64, String> {
    let micros = later.timestamp_us - earlier.timestamp_us;
    if micros <= 0 {
        return Err(String::from(
            "the counter was not updated since the last pass",
        ));
    }
    let delta = if later.value >= earlier.value {
        later.value - earlier.value
    } else if earlier.bits < 64 && earlier.value >= 1 << (earlier.bits - 1) {
        (1u64 << earlier.bits) - earlier.value + later.value
    } else {
        return Err(String::from(
            "the counter was reset; the rate resumes next pass",
        ));
    };
    Ok(delta as f64 * unit / micros as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(value: u64, bits: u32, timestamp_us: i64) -> Counter {
        Counter {
            value,
            bits,
            timestamp_us,
        }
    }

    #[test]
    fn rates_from_counters() {
        // 5,000,000 bytes in 0.5 s: 10 MB/s.
        assert_eq!(
            rate(counter(1_000, 64, 0), counter(5_001_000, 64, 500_000), 1.0),
            Ok(10.0)
        );
        // KiB counters: 1,000 KiB in 1 s is 1.024 MB/s.
        assert_eq!(
            rate(counter(0, 64, 0), counter(1_000, 64, 1_000_000), 1024.0),
            Ok(1.024)
        );
        // A 32-bit counter that wrapped.
        let wrapped = rate(
            counter(u32::MAX as u64 - 99, 32, 0),
            counter(900, 32, 1_000_000),
            1.0,
        );
        assert_eq!(wrapped, Ok(1000.0 / 1e6));
        // A reset: no rate that pass.
        assert!(rate(counter(5_000, 64, 0), counter(10, 64, 1_000_000), 1.0)
            .unwrap_err()
            .contains("reset"));
        assert!(rate(counter(10, 32, 0), counter(5, 32, 1_000_000), 1.0)
            .unwrap_err()
            .contains("reset"));
        // The same timestamp twice: nothing new.
        assert!(rate(counter(1, 64, 7), counter(2, 64, 7), 1.0).is_err());
    }
}
