//! The GPU metric kinds a trigger can scale on (`metricType`), their units,
//! and one GPU's readings, where an unsupported metric is absent, never 0.
//! Not Prometheus metrics: those are exported elsewhere.

use std::fmt;

/// A metric a trigger scales on; names are the `metricType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    GpuUtilization,
    MemoryUtilization,
    MemoryUsedMib,
    MemoryUsedPercent,
    Temperature,
    PowerDraw,
    /// GPM `SM_UTIL`: percent of SMs busy (Hopper and newer).
    SmActivity,
    /// GPM `SM_OCCUPANCY`: percent of warp slots in use.
    SmOccupancy,
    /// GPM `ANY_TENSOR_UTIL`: percent of time any tensor core was busy.
    TensorActivity,
    /// GPM `DRAM_BW_UTIL`: percent of DRAM bandwidth used.
    DramBandwidthUtilization,
    PcieTxMbps,
    PcieRxMbps,
    NvlinkTxMbps,
    NvlinkRxMbps,
}

impl Metric {
    pub const ALL: [Metric; 14] = [
        Metric::GpuUtilization,
        Metric::MemoryUtilization,
        Metric::MemoryUsedMib,
        Metric::MemoryUsedPercent,
        Metric::Temperature,
        Metric::PowerDraw,
        Metric::SmActivity,
        Metric::SmOccupancy,
        Metric::TensorActivity,
        Metric::DramBandwidthUtilization,
        Metric::PcieTxMbps,
        Metric::PcieRxMbps,
        Metric::NvlinkTxMbps,
        Metric::NvlinkRxMbps,
    ];

    /// Rates from two samples: absent until the second pass.
    pub const RATES: [Metric; 8] = [
        Metric::SmActivity,
        Metric::SmOccupancy,
        Metric::TensorActivity,
        Metric::DramBandwidthUtilization,
        Metric::PcieTxMbps,
        Metric::PcieRxMbps,
        Metric::NvlinkTxMbps,
        Metric::NvlinkRxMbps,
    ];

    /// The `metricType` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Metric::GpuUtilization => "gpu_utilization",
            Metric::MemoryUtilization => "memory_utilization",
            Metric::MemoryUsedMib => "memory_used_mib",
            Metric::MemoryUsedPercent => "memory_used_percent",
            Metric::Temperature => "temperature",
            Metric::PowerDraw => "power_draw",
            Metric::SmActivity => "sm_activity",
            Metric::SmOccupancy => "sm_occupancy",
            Metric::TensorActivity => "tensor_activity",
            Metric::DramBandwidthUtilization => "dram_bandwidth_utilization",
            Metric::PcieTxMbps => "pcie_tx_mbps",
            Metric::PcieRxMbps => "pcie_rx_mbps",
            Metric::NvlinkTxMbps => "nvlink_tx_mbps",
            Metric::NvlinkRxMbps => "nvlink_rx_mbps",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::GpuUtilization
            | Metric::MemoryUtilization
            | Metric::MemoryUsedPercent
            | Metric::SmActivity
            | Metric::SmOccupancy
            | Metric::TensorActivity
            | Metric::DramBandwidthUtilization => "%",
            Metric::MemoryUsedMib => "MiB",
            Metric::Temperature => "°C",
            Metric::PowerDraw => "W",
            Metric::PcieTxMbps
            | Metric::PcieRxMbps
            | Metric::NvlinkTxMbps
            | Metric::NvlinkRxMbps => "MB/s",
        }
    }

    pub fn from_name(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// All names, for error messages.
    pub fn names() -> String {
        Metric::ALL.map(Metric::name).join(", ")
    }

    fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One GPU's readings. A metric the GPU does not support is `None`, never 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Readings([Option<f64>; Metric::ALL.len()]);

impl Readings {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.0[metric.slot()]
    }

    pub fn set(&mut self, metric: Metric, value: f64) {
        self.0[metric.slot()] = Some(value);
    }
}

/// Bytes to MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// used / total × 100; `None` when total is 0 (no meaningful percent).
pub fn percent_used(used: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| used as f64 / total as f64 * 100.0)
}

/// NVML reports power in milliwatts.
pub fn watts(milliwatts: u32) -> f64 {
    f64::from(milliwatts) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for metric in Metric::ALL {
            assert_eq!(Metric::from_name(metric.name()), Some(metric));
        }
        assert_eq!(Metric::from_name("GPU_UTILIZATION"), None);
    }

    #[test]
    fn unit_conversions() {
        assert_eq!(mib(80 * 1024 * 1024 * 1024), 81920.0);
        assert_eq!(percent_used(1, 4), Some(25.0));
        assert_eq!(percent_used(1, 0), None);
        assert_eq!(watts(312_500), 312.5);
    }

    #[test]
    fn unsupported_metric_is_absent_not_zero() {
        let mut readings = Readings::default();
        readings.set(Metric::PowerDraw, 0.0);
        assert_eq!(readings.get(Metric::PowerDraw), Some(0.0));
        assert_eq!(readings.get(Metric::GpuUtilization), None);
    }
}
