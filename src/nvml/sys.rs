//! Raw NVML C ABI: the types, constants and entry-point signatures this
//! scaler uses, as NVML's public header (`nvml.h`) declares them. No logic
//! lives here; `super` wraps it in a safe API.
#![allow(non_camel_case_types, non_snake_case)]

use std::os::raw::{c_char, c_int, c_longlong, c_uint, c_ulonglong, c_void};

/// `nvmlReturn_t`: every entry point returns one.
pub type nvmlReturn_t = c_uint;
/// `nvmlDevice_t`: an opaque pointer owned by the driver.
pub type nvmlDevice_t = *mut c_void;
/// `nvmlTemperatureSensors_t`.
pub type nvmlTemperatureSensors_t = c_uint;

pub const NVML_SUCCESS: nvmlReturn_t = 0;
pub const NVML_ERROR_UNINITIALIZED: nvmlReturn_t = 1;
pub const NVML_ERROR_INVALID_ARGUMENT: nvmlReturn_t = 2;
pub const NVML_ERROR_NOT_SUPPORTED: nvmlReturn_t = 3;
pub const NVML_ERROR_NO_PERMISSION: nvmlReturn_t = 4;
pub const NVML_ERROR_ALREADY_INITIALIZED: nvmlReturn_t = 5;
pub const NVML_ERROR_NOT_FOUND: nvmlReturn_t = 6;
pub const NVML_ERROR_INSUFFICIENT_SIZE: nvmlReturn_t = 7;
pub const NVML_ERROR_INSUFFICIENT_POWER: nvmlReturn_t = 8;
pub const NVML_ERROR_DRIVER_NOT_LOADED: nvmlReturn_t = 9;
pub const NVML_ERROR_TIMEOUT: nvmlReturn_t = 10;
pub const NVML_ERROR_IRQ_ISSUE: nvmlReturn_t = 11;
pub const NVML_ERROR_LIBRARY_NOT_FOUND: nvmlReturn_t = 12;
pub const NVML_ERROR_FUNCTION_NOT_FOUND: nvmlReturn_t = 13;
pub const NVML_ERROR_CORRUPTED_INFOROM: nvmlReturn_t = 14;
pub const NVML_ERROR_GPU_IS_LOST: nvmlReturn_t = 15;
pub const NVML_ERROR_RESET_REQUIRED: nvmlReturn_t = 16;
pub const NVML_ERROR_OPERATING_SYSTEM: nvmlReturn_t = 17;
pub const NVML_ERROR_LIB_RM_VERSION_MISMATCH: nvmlReturn_t = 18;
pub const NVML_ERROR_IN_USE: nvmlReturn_t = 19;
pub const NVML_ERROR_MEMORY: nvmlReturn_t = 20;
pub const NVML_ERROR_NO_DATA: nvmlReturn_t = 21;
pub const NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: nvmlReturn_t = 22;
pub const NVML_ERROR_INSUFFICIENT_RESOURCES: nvmlReturn_t = 23;
pub const NVML_ERROR_FREQ_NOT_SUPPORTED: nvmlReturn_t = 24;
pub const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = 25;
pub const NVML_ERROR_DEPRECATED: nvmlReturn_t = 26;
pub const NVML_ERROR_NOT_READY: nvmlReturn_t = 27;
pub const NVML_ERROR_GPU_NOT_FOUND: nvmlReturn_t = 28;
pub const NVML_ERROR_INVALID_STATE: nvmlReturn_t = 29;
pub const NVML_ERROR_UNKNOWN: nvmlReturn_t = 999;

/// `NVML_TEMPERATURE_GPU`: the GPU die sensor.
pub const NVML_TEMPERATURE_GPU: nvmlTemperatureSensors_t = 0;
/// `NVML_DEVICE_MIG_ENABLE`.
pub const NVML_DEVICE_MIG_ENABLE: c_uint = 1;

/// `NVML_DEVICE_UUID_V2_BUFFER_SIZE` and `NVML_DEVICE_NAME_V2_BUFFER_SIZE`.
pub const NVML_DEVICE_STRING_BUFFER_SIZE: usize = 96;
/// `NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE`.
pub const NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE: usize = 80;

/// `nvmlUtilization_t`: percent of the last sample period.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct nvmlUtilization_t {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// `nvmlMemory_t`, in bytes. `used` includes memory the driver reserves.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct nvmlMemory_t {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2_t`, in bytes. `used` excludes `reserved`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct nvmlMemory_v2_t {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2`: `sizeof(nvmlMemory_v2_t) | 2 << 24`.
pub const NVML_MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);

pub type InitFn = unsafe extern "C" fn() -> nvmlReturn_t;
pub type ShutdownFn = unsafe extern "C" fn() -> nvmlReturn_t;
pub type ErrorStringFn = unsafe extern "C" fn(nvmlReturn_t) -> *const c_char;
pub type SystemGetDriverVersionFn = unsafe extern "C" fn(*mut c_char, c_uint) -> nvmlReturn_t;
pub type DeviceGetCountFn = unsafe extern "C" fn(*mut c_uint) -> nvmlReturn_t;
pub type DeviceGetHandleByIndexFn = unsafe extern "C" fn(c_uint, *mut nvmlDevice_t) -> nvmlReturn_t;
pub type DeviceGetStringFn =
    unsafe extern "C" fn(nvmlDevice_t, *mut c_char, c_uint) -> nvmlReturn_t;
pub type DeviceGetMemoryInfoFn =
    unsafe extern "C" fn(nvmlDevice_t, *mut nvmlMemory_t) -> nvmlReturn_t;
pub type DeviceGetMemoryInfoV2Fn =
    unsafe extern "C" fn(nvmlDevice_t, *mut nvmlMemory_v2_t) -> nvmlReturn_t;
pub type DeviceGetUtilizationRatesFn =
    unsafe extern "C" fn(nvmlDevice_t, *mut nvmlUtilization_t) -> nvmlReturn_t;
pub type DeviceGetTemperatureFn =
    unsafe extern "C" fn(nvmlDevice_t, nvmlTemperatureSensors_t, *mut c_uint) -> nvmlReturn_t;
pub type DeviceGetPowerUsageFn = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;
pub type DeviceGetMigModeFn =
    unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut c_uint) -> nvmlReturn_t;
pub type DeviceGetMaxMigDeviceCountFn =
    unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;
pub type DeviceGetMigDeviceHandleByIndexFn =
    unsafe extern "C" fn(nvmlDevice_t, c_uint, *mut nvmlDevice_t) -> nvmlReturn_t;

pub type DeviceGetInstanceIdFn = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;
pub type DeviceGetFieldValuesFn =
    unsafe extern "C" fn(nvmlDevice_t, c_int, *mut nvmlFieldValue_t) -> nvmlReturn_t;
pub type GpmQueryDeviceSupportFn =
    unsafe extern "C" fn(nvmlDevice_t, *mut nvmlGpmSupport_t) -> nvmlReturn_t;
pub type GpmSampleAllocFn = unsafe extern "C" fn(*mut nvmlGpmSample_t) -> nvmlReturn_t;
pub type GpmSampleFreeFn = unsafe extern "C" fn(nvmlGpmSample_t) -> nvmlReturn_t;
pub type GpmSampleGetFn = unsafe extern "C" fn(nvmlDevice_t, nvmlGpmSample_t) -> nvmlReturn_t;
pub type GpmMigSampleGetFn =
    unsafe extern "C" fn(nvmlDevice_t, c_uint, nvmlGpmSample_t) -> nvmlReturn_t;
pub type GpmMetricsGetFn = unsafe extern "C" fn(*mut nvmlGpmMetricsGet_t) -> nvmlReturn_t;
/// `nvmlDeviceGetMaxPcieLinkGeneration` and `nvmlDeviceGetMaxPcieLinkWidth`.
pub type DeviceGetMaxPcieLinkFn = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;

/// `nvmlGpmSample_t`: an opaque sample buffer owned by the driver.
pub type nvmlGpmSample_t = *mut c_void;

/// `nvmlGpmSupport_t`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct nvmlGpmSupport_t {
    pub version: c_uint,
    pub isSupportedDevice: c_uint,
}

/// `NVML_GPM_SUPPORT_VERSION`.
pub const NVML_GPM_SUPPORT_VERSION: c_uint = 1;
/// `NVML_GPM_METRICS_GET_VERSION`: still 1 although the metrics array grew
/// from 98 to 210 to 333 slots across drivers (see `nvmlGpmMetricsGet_t`).
pub const NVML_GPM_METRICS_GET_VERSION: c_uint = 1;
/// `NVML_GPM_METRIC_MAX` in the newest nvml.h: the array is allocated at
/// this size, the largest any driver may expect.
pub const NVML_GPM_METRIC_MAX: usize = 333;
/// `NVML_GPM_METRIC_SM_UTIL`: percent of SMs busy, 0-100.
pub const NVML_GPM_METRIC_SM_UTIL: c_uint = 2;
/// `NVML_GPM_METRIC_SM_OCCUPANCY`: percent of warps active vs the maximum.
pub const NVML_GPM_METRIC_SM_OCCUPANCY: c_uint = 3;
/// `NVML_GPM_METRIC_ANY_TENSOR_UTIL`: percent of time any tensor op ran.
pub const NVML_GPM_METRIC_ANY_TENSOR_UTIL: c_uint = 5;
/// `NVML_GPM_METRIC_DRAM_BW_UTIL`: percent of DRAM bandwidth used.
pub const NVML_GPM_METRIC_DRAM_BW_UTIL: c_uint = 10;

/// `nvmlGpmMetric_t.metricInfo`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmMetricInfo {
    pub shortName: *mut c_char,
    pub longName: *mut c_char,
    pub unit: *mut c_char,
}

/// `nvmlGpmMetric_t`: one metric asked for (`metricId`) and its answer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmMetric_t {
    pub metricId: c_uint,
    pub nvmlReturn: nvmlReturn_t,
    pub value: f64,
    pub metricInfo: nvmlGpmMetricInfo,
}

/// `nvmlGpmMetricsGet_t`, at the newest (largest) size.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlGpmMetricsGet_t {
    pub version: c_uint,
    pub numMetrics: c_uint,
    pub sample1: nvmlGpmSample_t,
    pub sample2: nvmlGpmSample_t,
    pub metrics: [nvmlGpmMetric_t; NVML_GPM_METRIC_MAX],
}

/// What every metric slot holds until the driver answers it: an error and
/// NaN, so a slot a driver leaves untouched reads as a failed metric, never
/// as SUCCESS and 0.0. NVML_ERROR_UNKNOWN rather than NOT_SUPPORTED: an
/// unanswered slot is the driver misbehaving (a fault, UNAVAILABLE), not
/// a metric the GPU lacks (which would leave the GPU out of a sum).
pub const GPM_SLOT_UNANSWERED: nvmlReturn_t = NVML_ERROR_UNKNOWN;

impl nvmlGpmMetricsGet_t {
    /// With `version` set and every slot pre-set to
    /// [`GPM_SLOT_UNANSWERED`] and NaN: a slot stays so unless the driver
    /// writes it.
    pub fn new() -> Box<Self> {
        let empty = nvmlGpmMetric_t {
            metricId: 0,
            nvmlReturn: GPM_SLOT_UNANSWERED,
            value: f64::NAN,
            metricInfo: nvmlGpmMetricInfo {
                shortName: std::ptr::null_mut(),
                longName: std::ptr::null_mut(),
                unit: std::ptr::null_mut(),
            },
        };
        Box::new(Self {
            version: NVML_GPM_METRICS_GET_VERSION,
            numMetrics: 0,
            sample1: std::ptr::null_mut(),
            sample2: std::ptr::null_mut(),
            metrics: [empty; NVML_GPM_METRIC_MAX],
        })
    }
}

/// `nvmlValueType_t` values this scaler reads (nvml.h numbers them
/// DOUBLE 0, UNSIGNED_INT 1, UNSIGNED_LONG 2, UNSIGNED_LONG_LONG 3,
/// SIGNED_LONG_LONG 4, SIGNED_INT 5, UNSIGNED_SHORT 6).
pub const NVML_VALUE_TYPE_UNSIGNED_INT: c_uint = 1;
pub const NVML_VALUE_TYPE_UNSIGNED_LONG: c_uint = 2;
pub const NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: c_uint = 3;
pub const NVML_VALUE_TYPE_SIGNED_LONG_LONG: c_uint = 4;
pub const NVML_VALUE_TYPE_UNSIGNED_SHORT: c_uint = 6;

/// `nvmlValue_t`: 8 bytes, read as the `valueType` says.
#[repr(C)]
#[derive(Clone, Copy)]
pub union nvmlValue_t {
    pub dVal: f64,
    pub siVal: c_int,
    pub uiVal: c_uint,
    /// `unsigned long`: 64 bits on the LP64 Linux targets this builds for.
    pub ulVal: u64,
    pub ullVal: c_ulonglong,
    pub sllVal: c_longlong,
    pub usVal: u16,
}

/// `nvmlFieldValue_t`: one field asked for and its own result.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct nvmlFieldValue_t {
    pub fieldId: c_uint,
    pub scopeId: c_uint,
    /// CPU time of the value, microseconds since 1970.
    pub timestamp: c_longlong,
    pub latencyUsec: c_longlong,
    pub valueType: c_uint,
    pub nvmlReturn: nvmlReturn_t,
    pub value: nvmlValue_t,
}

/// `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX`: NVLink data sent, KiB, cumulative.
pub const NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX: c_uint = 138;
/// `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX`: NVLink data received, KiB.
pub const NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX: c_uint = 139;
/// `NVML_FI_DEV_PCIE_COUNT_TX_BYTES`: PCIe bytes sent; may wrap.
pub const NVML_FI_DEV_PCIE_COUNT_TX_BYTES: c_uint = 197;
/// `NVML_FI_DEV_PCIE_COUNT_RX_BYTES`: PCIe bytes received; may wrap.
pub const NVML_FI_DEV_PCIE_COUNT_RX_BYTES: c_uint = 198;
/// A `scopeId` of UINT_MAX sums an NVLink counter over every link.
pub const NVML_SCOPE_ALL_LINKS: c_uint = c_uint::MAX;

/// Memory info through whichever entry point the library exports.
#[derive(Clone, Copy)]
pub enum MemoryInfoFn {
    V2(DeviceGetMemoryInfoV2Fn),
    V1(DeviceGetMemoryInfoFn),
}

/// Every required entry point, resolved once when the library is opened.
/// Where a `_v2` symbol exists it is used; otherwise the unversioned one.
#[derive(Clone, Copy)]
pub struct Api {
    pub init: InitFn,
    pub shutdown: ShutdownFn,
    pub error_string: ErrorStringFn,
    pub system_get_driver_version: SystemGetDriverVersionFn,
    pub device_get_count: DeviceGetCountFn,
    pub device_get_handle_by_index: DeviceGetHandleByIndexFn,
    pub device_get_uuid: DeviceGetStringFn,
    pub device_get_name: DeviceGetStringFn,
    pub device_get_memory_info: MemoryInfoFn,
    pub device_get_utilization_rates: DeviceGetUtilizationRatesFn,
    pub device_get_temperature: DeviceGetTemperatureFn,
    pub device_get_power_usage: DeviceGetPowerUsageFn,
}

/// The symbol names behind [`Api`], for messages and the loader.
pub mod symbols {
    pub const INIT: (&str, &str) = ("nvmlInit_v2", "nvmlInit");
    pub const SHUTDOWN: &str = "nvmlShutdown";
    pub const ERROR_STRING: &str = "nvmlErrorString";
    pub const SYSTEM_GET_DRIVER_VERSION: &str = "nvmlSystemGetDriverVersion";
    pub const DEVICE_GET_COUNT: (&str, &str) = ("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
    pub const DEVICE_GET_HANDLE_BY_INDEX: (&str, &str) = (
        "nvmlDeviceGetHandleByIndex_v2",
        "nvmlDeviceGetHandleByIndex",
    );
    pub const DEVICE_GET_UUID: &str = "nvmlDeviceGetUUID";
    pub const DEVICE_GET_NAME: &str = "nvmlDeviceGetName";
    pub const DEVICE_GET_MEMORY_INFO: (&str, &str) =
        ("nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetMemoryInfo");
    pub const DEVICE_GET_UTILIZATION_RATES: &str = "nvmlDeviceGetUtilizationRates";
    pub const DEVICE_GET_TEMPERATURE: &str = "nvmlDeviceGetTemperature";
    pub const DEVICE_GET_POWER_USAGE: &str = "nvmlDeviceGetPowerUsage";
    /// Optional: R450 and newer.
    pub const DEVICE_GET_MIG_MODE: &str = "nvmlDeviceGetMigMode";
    /// Optional: R450 and newer.
    pub const DEVICE_GET_MAX_MIG_DEVICE_COUNT: &str = "nvmlDeviceGetMaxMigDeviceCount";
    /// Optional: R450 and newer.
    pub const DEVICE_GET_MIG_DEVICE_HANDLE_BY_INDEX: &str = "nvmlDeviceGetMigDeviceHandleByIndex";
    /// Optional: R450 and newer; on a MIG device handle.
    pub const DEVICE_GET_GPU_INSTANCE_ID: &str = "nvmlDeviceGetGpuInstanceId";
    /// Optional: R450 and newer; on a MIG device handle.
    pub const DEVICE_GET_COMPUTE_INSTANCE_ID: &str = "nvmlDeviceGetComputeInstanceId";
    /// Optional: R325 and newer.
    pub const DEVICE_GET_FIELD_VALUES: &str = "nvmlDeviceGetFieldValues";
    /// Optional, with the other GPM entry points: R520 and newer.
    pub const GPM_QUERY_DEVICE_SUPPORT: &str = "nvmlGpmQueryDeviceSupport";
    pub const GPM_SAMPLE_ALLOC: &str = "nvmlGpmSampleAlloc";
    pub const GPM_SAMPLE_FREE: &str = "nvmlGpmSampleFree";
    pub const GPM_SAMPLE_GET: &str = "nvmlGpmSampleGet";
    pub const GPM_MIG_SAMPLE_GET: &str = "nvmlGpmMigSampleGet";
    pub const GPM_METRICS_GET: &str = "nvmlGpmMetricsGet";
    /// Optional (Fermi and newer): the highest PCIe generation the GPU and
    /// its slot both support.
    pub const DEVICE_GET_MAX_PCIE_LINK_GENERATION: &str = "nvmlDeviceGetMaxPcieLinkGeneration";
    /// Optional (Fermi and newer): the widest PCIe link the GPU and its
    /// slot both support.
    pub const DEVICE_GET_MAX_PCIE_LINK_WIDTH: &str = "nvmlDeviceGetMaxPcieLinkWidth";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynlib::assert_layout;

    use std::mem::size_of;

    #[test]
    fn struct_layouts_match_nvml_h() {
        assert_layout!(nvmlUtilization_t, 8, { gpu: 0, memory: 4 });
        assert_layout!(nvmlMemory_t, 24, { total: 0, free: 8, used: 16 });
        assert_layout!(nvmlMemory_v2_t, 40, {
            version: 0, total: 8, reserved: 16, free: 24, used: 32,
        });
        assert_eq!(NVML_MEMORY_V2, 0x0200_0028);
    }

    #[test]
    fn gpm_layouts_match_nvml_h() {
        assert_layout!(nvmlGpmSupport_t, 8, { version: 0, isSupportedDevice: 4 });
        // metricId, nvmlReturn, a double, three char pointers.
        assert_layout!(nvmlGpmMetric_t, 40, {
            metricId: 0, nvmlReturn: 4, value: 8, metricInfo: 16,
        });
        // version, numMetrics, two sample pointers, 333 metrics.
        assert_layout!(nvmlGpmMetricsGet_t, 24 + 333 * 40, {
            version: 0, numMetrics: 4, sample1: 8, sample2: 16, metrics: 24,
        });
        let fresh = nvmlGpmMetricsGet_t::new();
        assert_eq!(fresh.version, 1);
        // A slot the driver leaves untouched is a failure, never SUCCESS
        // and 0.0.
        assert!(fresh
            .metrics
            .iter()
            .all(|m| m.metricId == 0 && m.nvmlReturn == NVML_ERROR_UNKNOWN && m.value.is_nan()));
    }

    #[test]
    fn field_value_layout_matches_nvml_h() {
        assert_layout!(nvmlValue_t, 8, {});
        assert_eq!(size_of::<std::os::raw::c_ulong>(), size_of::<u64>());
        assert_layout!(nvmlFieldValue_t, 40, {
            fieldId: 0, scopeId: 4, timestamp: 8, latencyUsec: 16, valueType: 24,
            nvmlReturn: 28, value: 32,
        });
    }
}
