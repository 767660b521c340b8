//! Raw NVML C ABI: the types, constants and entry-point signatures this
//! scaler uses, as NVML's public header (`nvml.h`) declares them. No logic
//! lives here; `super` wraps it in a safe API.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_uint, c_ulonglong, c_void};

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_nvml_h() {
        assert_eq!(std::mem::size_of::<nvmlUtilization_t>(), 8);
        assert_eq!(std::mem::size_of::<nvmlMemory_t>(), 24);
        assert_eq!(std::mem::size_of::<nvmlMemory_v2_t>(), 40);
        assert_eq!(NVML_MEMORY_V2, 0x0200_0028);
    }
}
