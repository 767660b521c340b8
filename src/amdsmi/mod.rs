//! A safe API over the AMD SMI C library (`libamd_smi.so`), loaded at run
//! time. `sys` holds the raw ABI, `library` says where it is and which
//! entry points to resolve (`dynlib` opens it), and this file owns the
//! initialised session and the per-GPU calls. It knows the
//! layouts that changed between library versions (`amdsmi_version_t`,
//! `amdsmi_power_info_t`) and picks one from the library's version.

mod error;
mod library;
pub mod sys;

use std::ffi::CStr;
use std::mem::offset_of;
use std::os::raw::{c_char, c_uint, c_void};
use std::sync::Arc;

pub use error::{status_name, AmdSmiError, LoadError};
pub use library::{candidate_paths, AmdSmiLibrary, Entries, NAMES, ROCM_DIRS};

use crate::dynlib::{string_from_buffer, CallErrors};
use sys::*;

/// Which `amdsmi_power_info_t` the loaded library writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerLayout {
    /// Library 23.x and 24.x (ROCm 6.0 to 6.3): `current_socket_power` first.
    V1,
    /// Library 25.x and later (ROCm 6.4, 7.x): a 64-bit `socket_power`
    /// first, then `current_socket_power` and `average_socket_power`.
    SocketPowerFirst,
}

/// The library's version, read through either `amdsmi_version_t` layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibVersion {
    /// `year.major.minor.release` (up to 25.x) or `major.minor.release`.
    pub text: String,
    pub power_layout: PowerLayout,
}

impl LibVersion {
    /// Reads the version from the 24 bytes the library wrote. Up to 25.x
    /// the first field is the year (23, 24, 25); from 26.x `year` is gone
    /// and the first field is the major version (26 and up).
    pub fn from_words(words: [u32; 4]) -> Self {
        let [first, second, third, fourth] = words;
        let text = if first >= 26 {
            format!("{first}.{second}.{third}")
        } else {
            format!("{first}.{second}.{third}.{fourth}")
        };
        let power_layout = if first >= 25 {
            PowerLayout::SocketPowerFirst
        } else {
            PowerLayout::V1
        };
        Self { text, power_layout }
    }
}

/// Percent busy, each `None` where the library says "not available".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub gfx: Option<u32>,
    pub umc: Option<u32>,
}

/// Socket power, from the field the GPU fills: `current_socket_power` (MI300
/// and later), else `average_socket_power` (older parts); `None` when
/// neither is available.
pub fn socket_watts(layout: PowerLayout, buffer: &PowerInfoBuffer) -> Option<u32> {
    let word = |offset: usize| {
        u32::from_ne_bytes(buffer.0[offset..offset + 4].try_into().expect("4 bytes"))
    };
    // The v2 and v3 layouts agree up to `average_socket_power` (pinned in
    // `sys`), so v2's offsets serve both.
    let (current, average) = match layout {
        PowerLayout::V1 => (
            word(offset_of!(amdsmi_power_info_v1_t, current_socket_power)),
            word(offset_of!(amdsmi_power_info_v1_t, average_socket_power)),
        ),
        PowerLayout::SocketPowerFirst => (
            word(offset_of!(amdsmi_power_info_v2_t, current_socket_power)),
            word(offset_of!(amdsmi_power_info_v2_t, average_socket_power)),
        ),
    };
    let available = |w: u32| (w != NOT_AVAILABLE_U16 && w != u32::MAX && w != 0).then_some(w);
    // Library 25.x and later also have `socket_power` (u64, watts), which
    // holds whichever of the two the part fills: the last resort.
    let socket = match layout {
        PowerLayout::V1 => None,
        PowerLayout::SocketPowerFirst => {
            let wide = u64::from_ne_bytes(buffer.0[..8].try_into().expect("8 bytes"));
            u32::try_from(wide).ok().and_then(available)
        }
    };
    available(current).or(available(average)).or(socket)
}

/// An activity percentage, or `None` for "not available" (0xFFFF, or any
/// value that is no percentage).
fn percent(value: u32) -> Option<u32> {
    (value <= 100).then_some(value)
}

/// Failed calls since the process started.
static CALL_ERRORS: CallErrors = CallErrors::new();

/// Failed AMD SMI calls so far in this process, as `(function, status,
/// count)`, for the `/metrics` page. NOT_SUPPORTED is left out: it makes a
/// reading absent and is no failure.
pub fn call_errors() -> Vec<(&'static str, &'static str, u64)> {
    CALL_ERRORS.all()
}

/// An initialised AMD SMI session. `amdsmi_shut_down` runs on drop.
pub struct AmdSmi {
    library: Arc<AmdSmiLibrary>,
    version: LibVersion,
}

impl AmdSmi {
    /// `amdsmi_init(AMDSMI_INIT_AMD_GPUS)`, then the library's version.
    pub fn init(library: Arc<AmdSmiLibrary>) -> Result<Self, AmdSmiError> {
        // SAFETY: amdsmi_init takes a flags word; no pointers.
        let status = unsafe { (library.api().init)(AMDSMI_INIT_AMD_GPUS) };
        check(&library, symbols::INIT, status)?;
        // From here, drop shuts the library down.
        let mut smi = Self {
            library,
            version: LibVersion::from_words([0; 4]),
        };
        let mut raw = VersionBuffer::default();
        // SAFETY: `raw` has the size and alignment of both
        // amdsmi_version_t layouts (pinned in `sys`).
        let status = unsafe { (smi.api().get_lib_version)(raw.0.as_mut_ptr().cast::<c_void>()) };
        smi.check(symbols::GET_LIB_VERSION, status)?;
        smi.version = LibVersion::from_words([raw.0[0], raw.0[1], raw.0[2], raw.0[3]]);
        Ok(smi)
    }

    pub fn library(&self) -> &AmdSmiLibrary {
        &self.library
    }

    pub fn version(&self) -> &LibVersion {
        &self.version
    }

    /// Every AMD GPU, in socket then processor order.
    pub fn gpus(&self) -> Result<Vec<Gpu<'_>>, AmdSmiError> {
        let sockets = self.list(symbols::GET_SOCKET_HANDLES, |count, handles| {
            // SAFETY: `count` points to the array's length (0 with a null
            // array asks for the count); `handles` holds that many.
            unsafe { (self.api().get_socket_handles)(count, handles) }
        })?;
        let mut gpus = Vec::new();
        for socket in sockets {
            let processors = self.list(symbols::GET_PROCESSOR_HANDLES, |count, handles| {
                // SAFETY: as above, for one socket's processors.
                unsafe { (self.api().get_processor_handles)(socket, count, handles) }
            })?;
            for handle in processors {
                let mut kind = 0u32;
                // SAFETY: a handle the library just listed; `kind` is a u32.
                let status = unsafe { (self.api().get_processor_type)(handle, &mut kind) };
                // Initialised for GPUs only, the library lists GPUs: one
                // whose type cannot be read is kept, so that its own reads
                // fail it alone rather than the whole node.
                let known = self.check(symbols::GET_PROCESSOR_TYPE, status).is_ok();
                if !known || kind == AMDSMI_PROCESSOR_TYPE_AMD_GPU {
                    gpus.push(Gpu { smi: self, handle });
                }
            }
        }
        Ok(gpus)
    }

    /// The two-call list idiom: ask for the count, then fill that many
    /// (the library may shrink it). A bounded number of handles.
    fn list(
        &self,
        function: &'static str,
        call: impl Fn(*mut u32, *mut *mut c_void) -> amdsmi_status_t,
    ) -> Result<Vec<*mut c_void>, AmdSmiError> {
        const MAX: u32 = 1024;
        let mut count = 0u32;
        self.check(function, call(&mut count, std::ptr::null_mut()))?;
        let mut handles = vec![std::ptr::null_mut(); count.min(MAX) as usize];
        let mut filled = handles.len() as u32;
        if filled > 0 {
            self.check(function, call(&mut filled, handles.as_mut_ptr()))?;
        }
        handles.truncate(filled.min(count.min(MAX)) as usize);
        Ok(handles)
    }

    fn api(&self) -> &Api {
        self.library.api()
    }

    fn check(&self, function: &'static str, status: amdsmi_status_t) -> Result<(), AmdSmiError> {
        check(&self.library, function, status)
    }
}

impl Drop for AmdSmi {
    fn drop(&mut self) {
        // SAFETY: pairs the successful amdsmi_init in `AmdSmi::init`.
        let status = unsafe { (self.api().shut_down)() };
        if let Err(e) = self.check(symbols::SHUT_DOWN, status) {
            log::debug!("{e}");
        }
    }
}

/// One AMD GPU of a live session.
pub struct Gpu<'a> {
    smi: &'a AmdSmi,
    handle: amdsmi_processor_handle,
}

impl Gpu<'_> {
    fn api(&self) -> &Api {
        self.smi.api()
    }

    fn check(&self, function: &'static str, status: amdsmi_status_t) -> Result<(), AmdSmiError> {
        self.smi.check(function, status)
    }

    pub fn uuid(&self) -> Result<String, AmdSmiError> {
        let mut buffer = [0 as c_char; AMDSMI_GPU_UUID_SIZE + 2];
        let mut length = buffer.len() as c_uint;
        // SAFETY: `length` is the buffer's size; the library writes at most
        // that many bytes, NUL included.
        let status = unsafe {
            (self.api().get_gpu_device_uuid)(self.handle, &mut length, buffer.as_mut_ptr())
        };
        self.check(symbols::GET_GPU_DEVICE_UUID, status)?;
        Ok(string_from_buffer(&buffer))
    }

    /// The PCI address, as `amdsmi_bdf_t` packs it: function in bits 0-2,
    /// device 3-7, bus 8-15, domain 16-63.
    pub fn bdf(&self) -> Result<u64, AmdSmiError> {
        let mut bdf = 0u64;
        // SAFETY: amdsmi_bdf_t is a union over one uint64_t.
        let status = unsafe { (self.api().get_gpu_device_bdf)(self.handle, &mut bdf) };
        self.check(symbols::GET_GPU_DEVICE_BDF, status)?;
        Ok(bdf)
    }

    /// `market_name` from `amdsmi_get_gpu_asic_info`.
    pub fn name(&self) -> Result<String, AmdSmiError> {
        self.info_string(self.api().get_gpu_asic_info, symbols::GET_GPU_ASIC_INFO)
    }

    /// `driver_version` from `amdsmi_get_gpu_driver_info`.
    pub fn driver_version(&self) -> Result<String, AmdSmiError> {
        self.info_string(self.api().get_gpu_driver_info, symbols::GET_GPU_DRIVER_INFO)
    }

    fn info_string(
        &self,
        call: Option<GetInfoFn>,
        function: &'static str,
    ) -> Result<String, AmdSmiError> {
        let call = call.ok_or_else(|| missing(function))?;
        let mut buffer = Box::new(InfoBuffer([0; 4096]));
        // SAFETY: the buffer is larger than every known layout of the
        // struct (pinned in `sys`), zeroed and 8-byte aligned.
        let status = unsafe { call(self.handle, buffer.0.as_mut_ptr().cast::<c_void>()) };
        self.check(function, status)?;
        let field = &buffer.0[..AMDSMI_MAX_STRING_LENGTH];
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        Ok(String::from_utf8_lossy(&field[..end]).trim().to_string())
    }

    pub fn activity(&self) -> Result<Activity, AmdSmiError> {
        let mut usage = amdsmi_engine_usage_t::default();
        // SAFETY: `usage` has amdsmi_engine_usage_t's layout (pinned).
        let status = unsafe { (self.api().get_gpu_activity)(self.handle, &mut usage) };
        self.check(symbols::GET_GPU_ACTIVITY, status)?;
        Ok(Activity {
            gfx: percent(usage.gfx_activity),
            umc: percent(usage.umc_activity),
        })
    }

    /// VRAM `(used, total)` in bytes.
    pub fn vram(&self) -> Result<(u64, u64), AmdSmiError> {
        let (mut used, mut total) = (0u64, 0u64);
        // SAFETY: each call writes one uint64_t.
        let status = unsafe {
            (self.api().get_gpu_memory_usage)(self.handle, AMDSMI_MEM_TYPE_VRAM, &mut used)
        };
        self.check(symbols::GET_GPU_MEMORY_USAGE, status)?;
        // SAFETY: as above.
        let status = unsafe {
            (self.api().get_gpu_memory_total)(self.handle, AMDSMI_MEM_TYPE_VRAM, &mut total)
        };
        self.check(symbols::GET_GPU_MEMORY_TOTAL, status)?;
        Ok((used, total))
    }

    /// One sensor's current temperature, °C.
    pub fn temperature(&self, sensor: u32) -> Result<i64, AmdSmiError> {
        let mut value = 0i64;
        // SAFETY: writes one int64_t.
        let status = unsafe {
            (self.api().get_temp_metric)(self.handle, sensor, AMDSMI_TEMP_CURRENT, &mut value)
        };
        self.check(symbols::GET_TEMP_METRIC, status)?;
        Ok(value)
    }

    /// Socket power in watts (see [`socket_watts`]).
    pub fn power_watts(&self) -> Result<Option<u32>, AmdSmiError> {
        let mut buffer = PowerInfoBuffer([0; 256]);
        // SAFETY: the buffer holds the largest amdsmi_power_info_t layout,
        // aligned as it (pinned in `sys`).
        let status = unsafe {
            (self.api().get_power_info)(self.handle, buffer.0.as_mut_ptr().cast::<c_void>())
        };
        self.check(symbols::GET_POWER_INFO, status)?;
        Ok(socket_watts(self.smi.version.power_layout, &buffer))
    }
}

fn missing(function: &'static str) -> AmdSmiError {
    AmdSmiError::Call {
        function,
        status: AMDSMI_STATUS_NOT_SUPPORTED,
        description: String::from("this library does not export it"),
    }
}

/// The one place status codes become errors (and are counted).
fn check(
    library: &AmdSmiLibrary,
    function: &'static str,
    status: amdsmi_status_t,
) -> Result<(), AmdSmiError> {
    if status == AMDSMI_STATUS_SUCCESS {
        return Ok(());
    }
    if !matches!(
        status,
        AMDSMI_STATUS_NOT_SUPPORTED | AMDSMI_STATUS_NOT_YET_IMPLEMENTED
    ) {
        CALL_ERRORS.count(function, status_name(status));
    }
    let mut text: *const c_char = std::ptr::null();
    // SAFETY: the library sets `text` to a static string for any status.
    let described = unsafe { (library.api().status_code_to_string)(status, &mut text) };
    let description = if described != AMDSMI_STATUS_SUCCESS || text.is_null() {
        String::from("no description")
    } else {
        // SAFETY: non-null, NUL-terminated, static storage.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    };
    Err(AmdSmiError::Call {
        function,
        status,
        description,
    })
}

/// Formats an `amdsmi_bdf_t` as the device plugin names it: `0000:19:00.0`.
pub fn format_bdf(bdf: u64) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        bdf >> 16,
        (bdf >> 8) & 0xff,
        (bdf >> 3) & 0x1f,
        bdf & 0x7
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_layout_is_told_by_its_first_word() {
        // ROCm 6.3 (24.7.1.0, with year), 6.4 (25.25.4.0), 7.0 (26.1.0).
        let v24 = LibVersion::from_words([24, 7, 1, 0]);
        assert_eq!(
            (v24.text.as_str(), v24.power_layout),
            ("24.7.1.0", PowerLayout::V1)
        );
        let v25 = LibVersion::from_words([25, 25, 4, 0]);
        assert_eq!(v25.power_layout, PowerLayout::SocketPowerFirst);
        let v26 = LibVersion::from_words([26, 1, 0, 0]);
        assert_eq!(
            (v26.text.as_str(), v26.power_layout),
            ("26.1.0", PowerLayout::SocketPowerFirst)
        );
    }

    fn power(layout: PowerLayout, current: u32, average: u32) -> PowerInfoBuffer {
        let mut buffer = PowerInfoBuffer([0; 256]);
        let at = match layout {
            PowerLayout::V1 => 0,
            PowerLayout::SocketPowerFirst => {
                buffer.0[..8].copy_from_slice(&u64::from(current).to_ne_bytes());
                8
            }
        };
        buffer.0[at..at + 4].copy_from_slice(&current.to_ne_bytes());
        buffer.0[at + 4..at + 8].copy_from_slice(&average.to_ne_bytes());
        buffer
    }

    #[test]
    fn power_uses_current_then_average_and_never_the_sentinel() {
        for layout in [PowerLayout::V1, PowerLayout::SocketPowerFirst] {
            // MI300: current is filled.
            assert_eq!(socket_watts(layout, &power(layout, 550, 0xFFFF)), Some(550));
            // MI200 and older: current is "not available", average is not.
            assert_eq!(socket_watts(layout, &power(layout, 0xFFFF, 300)), Some(300));
            assert_eq!(socket_watts(layout, &power(layout, u32::MAX, 0xFFFF)), None);
        }
        // Only socket_power filled (25.x and later): it is used.
        let mut buffer = power(PowerLayout::SocketPowerFirst, 0xFFFF, 0xFFFF);
        buffer.0[..8].copy_from_slice(&420u64.to_ne_bytes());
        assert_eq!(
            socket_watts(PowerLayout::SocketPowerFirst, &buffer),
            Some(420)
        );
        buffer.0[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert_eq!(socket_watts(PowerLayout::SocketPowerFirst, &buffer), None);
    }

    #[test]
    fn activity_of_0xffff_is_not_a_percentage() {
        assert_eq!(percent(0xFFFF), None);
        assert_eq!(percent(100), Some(100));
        assert_eq!(percent(0), Some(0));
    }

    #[test]
    fn bdf_prints_as_the_device_plugin_names_it() {
        // function 0, device 0, bus 0x19, domain 0.
        assert_eq!(format_bdf(0x19 << 8), "0000:19:00.0");
        // function 1, device 2, bus 0x19, domain 0x1234 (amdsmi_bdf_t bits).
        assert_eq!(format_bdf(0x0000_0000_1234_1911), "1234:19:02.1");
    }
}
