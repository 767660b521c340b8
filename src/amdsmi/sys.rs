//! The raw AMD SMI ABI: status codes, enum values, struct layouts and entry
//! point types, as `amdsmi.h` declares them (ROCm/amdsmi, and
//! ROCm/rocm-systems `projects/amdsmi`, library versions 23.4 to 26.5).
//! Every layout is pinned by the size/offset tests below. Nothing here
//! calls the library.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_uint, c_void};

pub type amdsmi_status_t = u32;
pub type amdsmi_socket_handle = *mut c_void;
pub type amdsmi_processor_handle = *mut c_void;

pub const AMDSMI_STATUS_SUCCESS: amdsmi_status_t = 0;
pub const AMDSMI_STATUS_INVAL: amdsmi_status_t = 1;
pub const AMDSMI_STATUS_NOT_SUPPORTED: amdsmi_status_t = 2;
pub const AMDSMI_STATUS_NOT_YET_IMPLEMENTED: amdsmi_status_t = 3;
pub const AMDSMI_STATUS_TIMEOUT: amdsmi_status_t = 8;
pub const AMDSMI_STATUS_NO_PERM: amdsmi_status_t = 10;
pub const AMDSMI_STATUS_IO: amdsmi_status_t = 12;
pub const AMDSMI_STATUS_FILE_ERROR: amdsmi_status_t = 14;
pub const AMDSMI_STATUS_INIT_ERROR: amdsmi_status_t = 18;
pub const AMDSMI_STATUS_BUSY: amdsmi_status_t = 30;
pub const AMDSMI_STATUS_NOT_FOUND: amdsmi_status_t = 31;
pub const AMDSMI_STATUS_NOT_INIT: amdsmi_status_t = 32;
pub const AMDSMI_STATUS_DRIVER_NOT_LOADED: amdsmi_status_t = 34;
pub const AMDSMI_STATUS_NO_DATA: amdsmi_status_t = 40;
pub const AMDSMI_STATUS_INSUFFICIENT_SIZE: amdsmi_status_t = 41;
pub const AMDSMI_STATUS_UNEXPECTED_DATA: amdsmi_status_t = 43;
pub const AMDSMI_STATUS_UNKNOWN_ERROR: amdsmi_status_t = 0xFFFF_FFFF;

/// `amdsmi_init` flag: GPUs only.
pub const AMDSMI_INIT_AMD_GPUS: u64 = 1 << 1;
/// `processor_type_t`.
pub const AMDSMI_PROCESSOR_TYPE_AMD_GPU: u32 = 1;
/// `amdsmi_memory_type_t`.
pub const AMDSMI_MEM_TYPE_VRAM: u32 = 0;
/// `amdsmi_temperature_type_t`.
pub const AMDSMI_TEMPERATURE_TYPE_EDGE: u32 = 0;
pub const AMDSMI_TEMPERATURE_TYPE_HOTSPOT: u32 = 1;
/// `amdsmi_temperature_metric_t`.
pub const AMDSMI_TEMP_CURRENT: u32 = 0;
/// `AMDSMI_GPU_UUID_SIZE`.
pub const AMDSMI_GPU_UUID_SIZE: usize = 38;
/// A 16-bit "not available" in activity and power fields (`UINT16_MAX`).
pub const NOT_AVAILABLE_U16: u32 = 0xFFFF;

/// `amdsmi_engine_usage_t`: percent busy per engine.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct amdsmi_engine_usage_t {
    pub gfx_activity: u32,
    pub umc_activity: u32,
    pub mm_activity: u32,
    pub reserved: [u32; 13],
}

/// `amdsmi_power_info_t` in library 23.x and 24.x (ROCm 6.0 to 6.3).
/// Watts.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct amdsmi_power_info_v1_t {
    pub current_socket_power: u32,
    pub average_socket_power: u32,
    pub gfx_voltage: u32,
    pub soc_voltage: u32,
    pub mem_voltage: u32,
    pub power_limit: u32,
    pub reserved: [u32; 11],
}

/// `amdsmi_power_info_t` in library 25.x (ROCm 6.4): `socket_power` added
/// first. Watts.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct amdsmi_power_info_v2_t {
    pub socket_power: u64,
    pub current_socket_power: u32,
    pub average_socket_power: u32,
    pub gfx_voltage: u32,
    pub soc_voltage: u32,
    pub mem_voltage: u32,
    pub power_limit: u32,
    pub reserved: [u32; 2],
}

/// `amdsmi_power_info_t` from library 26.x (ROCm 7): voltages widened to
/// 64 bits, reserved grown to 144 bytes. Watts on Linux bare metal.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct amdsmi_power_info_v3_t {
    pub socket_power: u64,
    pub current_socket_power: u32,
    pub average_socket_power: u32,
    pub gfx_voltage: u64,
    pub soc_voltage: u64,
    pub mem_voltage: u64,
    pub power_limit: u32,
    pub reserved: [u64; 18],
}

/// Room for any `amdsmi_power_info_t` layout, 8-byte aligned: the library
/// writes its own layout into it.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct PowerInfoBuffer(pub [u8; 256]);

/// `amdsmi_version_t` up to library 25.x (ROCm 6.x): a `year` first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct amdsmi_version_year_t {
    pub year: u32,
    pub major: u32,
    pub minor: u32,
    pub release: u32,
    pub build: *const c_char,
}

/// `amdsmi_version_t` from library 26.x (ROCm 7): `year` removed.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct amdsmi_version_t {
    pub major: u32,
    pub minor: u32,
    pub release: u32,
    pub build: *const c_char,
}

/// Either `amdsmi_version_t` layout: 24 bytes, 8-byte aligned (for the
/// `build` pointer at offset 16); read as four 32-bit words.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, Default)]
pub struct VersionBuffer(pub [u32; 6]);

/// Room for `amdsmi_asic_info_t` (456 bytes in 24.x, 904 in 26.3) or
/// `amdsmi_driver_info_t`; each starts with a NUL-terminated string
/// (`market_name`, `driver_version`), 64 bytes in 23.x and 256 since.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct InfoBuffer(pub [u8; 4096]);

/// The string fields' size since library 24.x (64 before).
pub const AMDSMI_MAX_STRING_LENGTH: usize = 256;

pub type InitFn = unsafe extern "C" fn(init_flags: u64) -> amdsmi_status_t;
pub type ShutDownFn = unsafe extern "C" fn() -> amdsmi_status_t;
pub type StatusCodeToStringFn =
    unsafe extern "C" fn(status: amdsmi_status_t, string: *mut *const c_char) -> amdsmi_status_t;
pub type GetLibVersionFn = unsafe extern "C" fn(version: *mut c_void) -> amdsmi_status_t;
pub type GetSocketHandlesFn =
    unsafe extern "C" fn(count: *mut u32, handles: *mut amdsmi_socket_handle) -> amdsmi_status_t;
pub type GetProcessorHandlesFn = unsafe extern "C" fn(
    socket: amdsmi_socket_handle,
    count: *mut u32,
    handles: *mut amdsmi_processor_handle,
) -> amdsmi_status_t;
pub type GetProcessorTypeFn =
    unsafe extern "C" fn(handle: amdsmi_processor_handle, kind: *mut u32) -> amdsmi_status_t;
pub type GetDeviceUuidFn = unsafe extern "C" fn(
    handle: amdsmi_processor_handle,
    length: *mut c_uint,
    uuid: *mut c_char,
) -> amdsmi_status_t;
pub type GetDeviceBdfFn =
    unsafe extern "C" fn(handle: amdsmi_processor_handle, bdf: *mut u64) -> amdsmi_status_t;
pub type GetInfoFn =
    unsafe extern "C" fn(handle: amdsmi_processor_handle, info: *mut c_void) -> amdsmi_status_t;
pub type GetActivityFn = unsafe extern "C" fn(
    handle: amdsmi_processor_handle,
    usage: *mut amdsmi_engine_usage_t,
) -> amdsmi_status_t;
pub type GetMemoryFn = unsafe extern "C" fn(
    handle: amdsmi_processor_handle,
    kind: u32,
    bytes: *mut u64,
) -> amdsmi_status_t;
pub type GetTempMetricFn = unsafe extern "C" fn(
    handle: amdsmi_processor_handle,
    sensor: u32,
    metric: u32,
    value: *mut i64,
) -> amdsmi_status_t;

/// The entry points, by name.
pub mod symbols {
    pub const INIT: &str = "amdsmi_init";
    pub const SHUT_DOWN: &str = "amdsmi_shut_down";
    pub const STATUS_CODE_TO_STRING: &str = "amdsmi_status_code_to_string";
    pub const GET_LIB_VERSION: &str = "amdsmi_get_lib_version";
    pub const GET_SOCKET_HANDLES: &str = "amdsmi_get_socket_handles";
    pub const GET_PROCESSOR_HANDLES: &str = "amdsmi_get_processor_handles";
    pub const GET_PROCESSOR_TYPE: &str = "amdsmi_get_processor_type";
    pub const GET_GPU_DEVICE_UUID: &str = "amdsmi_get_gpu_device_uuid";
    pub const GET_GPU_DEVICE_BDF: &str = "amdsmi_get_gpu_device_bdf";
    pub const GET_GPU_ASIC_INFO: &str = "amdsmi_get_gpu_asic_info";
    pub const GET_GPU_DRIVER_INFO: &str = "amdsmi_get_gpu_driver_info";
    pub const GET_GPU_ACTIVITY: &str = "amdsmi_get_gpu_activity";
    pub const GET_GPU_MEMORY_USAGE: &str = "amdsmi_get_gpu_memory_usage";
    pub const GET_GPU_MEMORY_TOTAL: &str = "amdsmi_get_gpu_memory_total";
    pub const GET_TEMP_METRIC: &str = "amdsmi_get_temp_metric";
    pub const GET_POWER_INFO: &str = "amdsmi_get_power_info";
}

/// The resolved entry points. Each function pointer is valid while the
/// `Library` it came from is loaded (see `library::AmdSmiLibrary`).
pub struct Api {
    pub init: InitFn,
    pub shut_down: ShutDownFn,
    pub status_code_to_string: StatusCodeToStringFn,
    pub get_lib_version: GetLibVersionFn,
    pub get_socket_handles: GetSocketHandlesFn,
    pub get_processor_handles: GetProcessorHandlesFn,
    pub get_processor_type: GetProcessorTypeFn,
    pub get_gpu_device_uuid: GetDeviceUuidFn,
    pub get_gpu_device_bdf: GetDeviceBdfFn,
    pub get_gpu_activity: GetActivityFn,
    pub get_gpu_memory_usage: GetMemoryFn,
    pub get_gpu_memory_total: GetMemoryFn,
    pub get_temp_metric: GetTempMetricFn,
    pub get_power_info: GetInfoFn,
    /// Optional: a name for people only.
    pub get_gpu_asic_info: Option<GetInfoFn>,
    /// Optional: the driver version for people only.
    pub get_gpu_driver_info: Option<GetInfoFn>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynlib::assert_layout;
    use std::mem::{align_of, size_of};

    #[test]
    fn engine_usage_layout() {
        assert_layout!(amdsmi_engine_usage_t, 64, {
            gfx_activity: 0, umc_activity: 4, mm_activity: 8, reserved: 12,
        });
    }

    #[test]
    fn power_info_layouts() {
        assert_layout!(amdsmi_power_info_v1_t, 68, {
            current_socket_power: 0, average_socket_power: 4, gfx_voltage: 8,
            soc_voltage: 12, mem_voltage: 16, power_limit: 20, reserved: 24,
        });
        assert_layout!(amdsmi_power_info_v2_t, 40, {
            socket_power: 0, current_socket_power: 8, average_socket_power: 12,
            gfx_voltage: 16, soc_voltage: 20, mem_voltage: 24, power_limit: 28, reserved: 32,
        });
        assert_layout!(amdsmi_power_info_v3_t, 192, {
            socket_power: 0, current_socket_power: 8, average_socket_power: 12,
            gfx_voltage: 16, soc_voltage: 24, mem_voltage: 32, power_limit: 40, reserved: 48,
        });
        // The buffer passed to the library holds the largest, aligned.
        let largest = [
            size_of::<amdsmi_power_info_v1_t>(),
            size_of::<amdsmi_power_info_v2_t>(),
            size_of::<amdsmi_power_info_v3_t>(),
        ];
        assert!(largest.iter().all(|&s| s <= size_of::<PowerInfoBuffer>()));
        assert_eq!(
            align_of::<PowerInfoBuffer>(),
            align_of::<amdsmi_power_info_v3_t>()
        );
    }

    #[test]
    fn version_layouts() {
        assert_layout!(amdsmi_version_year_t, 24, {
            year: 0, major: 4, minor: 8, release: 12, build: 16,
        });
        assert_layout!(amdsmi_version_t, 24, { major: 0, minor: 4, release: 8, build: 16 });
        // The buffer read as four words holds either, aligned as both.
        assert_layout!(VersionBuffer, size_of::<amdsmi_version_t>(), {});
        for align in [
            align_of::<amdsmi_version_t>(),
            align_of::<amdsmi_version_year_t>(),
        ] {
            assert_eq!(align_of::<VersionBuffer>(), align);
        }
    }

    #[test]
    fn info_buffer_holds_every_known_info_struct() {
        // amdsmi_asic_info_t: 256 (23.x), 448/456 (24.x), 896/904 (26.x);
        // amdsmi_driver_info_t: 3 strings of AMDSMI_MAX_STRING_LENGTH.
        for size in [256, 456, 904, 3 * AMDSMI_MAX_STRING_LENGTH] {
            assert!(size <= size_of::<InfoBuffer>());
        }
    }
}
