//! A safe API over the NVML C library, loaded at run time. `sys` holds the
//! raw ABI, `library` finds and resolves it, and this file owns the
//! initialised session and the per-device calls.

mod error;
mod library;
pub mod sys;

use std::ffi::CStr;
use std::os::raw::{c_char, c_uint};
use std::path::Path;
use std::sync::Arc;

pub use error::{LoadError, NvmlError, ReturnCode};
pub use library::{candidate_paths, NvmlLibrary, DRIVER_DIRS, SONAME};

use sys::{nvmlDevice_t, nvmlReturn_t, MemoryInfoFn, NVML_SUCCESS};

/// An initialised NVML session. `nvmlShutdown` runs on drop.
pub struct Nvml {
    library: Arc<NvmlLibrary>,
}

/// Memory in bytes, as NVML counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
}

/// Utilization in percent over NVML's last sample period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utilization {
    pub gpu: u32,
    pub memory: u32,
}

impl Nvml {
    /// Opens the library from the standard places (see
    /// [`NvmlLibrary::open`]) and initialises it.
    pub fn open() -> Result<Self, OpenError> {
        let library = Arc::new(NvmlLibrary::open().map_err(OpenError::Load)?);
        Self::init(library).map_err(OpenError::Init)
    }

    /// Opens the library at `path` and initialises it.
    ///
    /// # Safety
    ///
    /// As [`NvmlLibrary::open_path`]: `path` must be NVML, or a library
    /// whose initialisers are sound to run.
    pub unsafe fn open_path(path: &Path) -> Result<Self, OpenError> {
        // SAFETY: the caller's promise is passed on unchanged.
        let library = unsafe { NvmlLibrary::open_path(path) }.map_err(OpenError::Load)?;
        Self::init(Arc::new(library)).map_err(OpenError::Init)
    }

    /// Initialises an opened library (`nvmlInit_v2`, or `nvmlInit`).
    pub fn init(library: Arc<NvmlLibrary>) -> Result<Self, NvmlError> {
        // SAFETY: `init` takes no arguments; NVML counts init/shutdown pairs.
        let code = unsafe { (library.api().init)() };
        check(&library, "nvmlInit", code)?;
        Ok(Self { library })
    }

    pub fn library(&self) -> &Arc<NvmlLibrary> {
        &self.library
    }

    pub fn driver_version(&self) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; sys::NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE];
        // SAFETY: the buffer is writable and its length is passed.
        let code = unsafe {
            (self.api().system_get_driver_version)(buf.as_mut_ptr(), buf.len() as c_uint)
        };
        self.check("nvmlSystemGetDriverVersion", code)?;
        Ok(string_from_buffer(&buf))
    }

    pub fn device_count(&self) -> Result<u32, NvmlError> {
        let mut count: c_uint = 0;
        // SAFETY: `count` is a valid out-pointer.
        let code = unsafe { (self.api().device_get_count)(&mut count) };
        self.check("nvmlDeviceGetCount", code)?;
        Ok(count)
    }

    /// The device at `index`; the handle borrows this session.
    pub fn device(&self, index: u32) -> Result<Device<'_>, NvmlError> {
        let mut handle: nvmlDevice_t = std::ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer.
        let code = unsafe { (self.api().device_get_handle_by_index)(index, &mut handle) };
        self.check("nvmlDeviceGetHandleByIndex", code)?;
        Ok(Device { nvml: self, handle })
    }

    fn api(&self) -> &sys::Api {
        self.library.api()
    }

    fn check(&self, function: &'static str, code: nvmlReturn_t) -> Result<(), NvmlError> {
        check(&self.library, function, code)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: pairs the successful init in `Nvml::init`.
        let code = unsafe { (self.api().shutdown)() };
        if let Err(e) = self.check("nvmlShutdown", code) {
            log::debug!("{e}");
        }
    }
}

/// A GPU handle, valid while its session lives.
pub struct Device<'nvml> {
    nvml: &'nvml Nvml,
    handle: nvmlDevice_t,
}

impl Device<'_> {
    pub fn uuid(&self) -> Result<String, NvmlError> {
        self.string("nvmlDeviceGetUUID", self.nvml.api().device_get_uuid)
    }

    pub fn name(&self) -> Result<String, NvmlError> {
        self.string("nvmlDeviceGetName", self.nvml.api().device_get_name)
    }

    /// Used memory excludes driver-reserved memory where `_v2` is exported.
    pub fn memory(&self) -> Result<Memory, NvmlError> {
        match self.nvml.api().device_get_memory_info {
            MemoryInfoFn::V2(f) => {
                let mut info = sys::nvmlMemory_v2_t {
                    version: sys::NVML_MEMORY_V2,
                    ..Default::default()
                };
                // SAFETY: `info` is a valid out-pointer with its version set.
                let code = unsafe { f(self.handle, &mut info) };
                self.nvml.check("nvmlDeviceGetMemoryInfo_v2", code)?;
                Ok(Memory {
                    total: info.total,
                    used: info.used,
                })
            }
            MemoryInfoFn::V1(f) => {
                let mut info = sys::nvmlMemory_t::default();
                // SAFETY: `info` is a valid out-pointer.
                let code = unsafe { f(self.handle, &mut info) };
                self.nvml.check("nvmlDeviceGetMemoryInfo", code)?;
                Ok(Memory {
                    total: info.total,
                    used: info.used,
                })
            }
        }
    }

    pub fn utilization(&self) -> Result<Utilization, NvmlError> {
        let mut rates = sys::nvmlUtilization_t::default();
        // SAFETY: `rates` is a valid out-pointer.
        let code =
            unsafe { (self.nvml.api().device_get_utilization_rates)(self.handle, &mut rates) };
        self.nvml.check("nvmlDeviceGetUtilizationRates", code)?;
        Ok(Utilization {
            gpu: rates.gpu,
            memory: rates.memory,
        })
    }

    /// Die temperature in °C.
    pub fn temperature(&self) -> Result<u32, NvmlError> {
        let mut celsius: c_uint = 0;
        // SAFETY: `celsius` is a valid out-pointer.
        let code = unsafe {
            (self.nvml.api().device_get_temperature)(
                self.handle,
                sys::NVML_TEMPERATURE_GPU,
                &mut celsius,
            )
        };
        self.nvml.check("nvmlDeviceGetTemperature", code)?;
        Ok(celsius)
    }

    /// Board power draw in milliwatts.
    pub fn power_usage_milliwatts(&self) -> Result<u32, NvmlError> {
        let mut milliwatts: c_uint = 0;
        // SAFETY: `milliwatts` is a valid out-pointer.
        let code =
            unsafe { (self.nvml.api().device_get_power_usage)(self.handle, &mut milliwatts) };
        self.nvml.check("nvmlDeviceGetPowerUsage", code)?;
        Ok(milliwatts)
    }

    /// Whether MIG mode is on. Optional: errors with `MissingSymbol` on
    /// drivers without `nvmlDeviceGetMigMode`.
    pub fn mig_enabled(&self) -> Result<bool, NvmlError> {
        let symbol = sys::symbols::DEVICE_GET_MIG_MODE;
        let f = self
            .nvml
            .library
            .optional()
            .mig_mode
            .ok_or(NvmlError::MissingSymbol(symbol))?;
        let (mut current, mut pending): (c_uint, c_uint) = (0, 0);
        // SAFETY: both are valid out-pointers.
        let code = unsafe { f(self.handle, &mut current, &mut pending) };
        self.nvml.check(symbol, code)?;
        Ok(current == sys::NVML_DEVICE_MIG_ENABLE)
    }

    /// UUIDs (`MIG-…`) of the MIG devices on this GPU. Optional, like
    /// `mig_enabled`.
    pub fn mig_device_uuids(&self) -> Result<Vec<String>, NvmlError> {
        let optional = self.nvml.library.optional();
        let max_count = optional
            .max_mig_device_count
            .ok_or(NvmlError::MissingSymbol(
                sys::symbols::DEVICE_GET_MAX_MIG_DEVICE_COUNT,
            ))?;
        let handle_by_index =
            optional
                .mig_device_handle_by_index
                .ok_or(NvmlError::MissingSymbol(
                    sys::symbols::DEVICE_GET_MIG_DEVICE_HANDLE_BY_INDEX,
                ))?;
        let mut count: c_uint = 0;
        // SAFETY: `count` is a valid out-pointer.
        let code = unsafe { max_count(self.handle, &mut count) };
        self.nvml
            .check(sys::symbols::DEVICE_GET_MAX_MIG_DEVICE_COUNT, code)?;
        let mut uuids = Vec::new();
        for index in 0..count {
            let mut handle: nvmlDevice_t = std::ptr::null_mut();
            // SAFETY: `handle` is a valid out-pointer.
            let code = unsafe { handle_by_index(self.handle, index, &mut handle) };
            match self
                .nvml
                .check(sys::symbols::DEVICE_GET_MIG_DEVICE_HANDLE_BY_INDEX, code)
            {
                Ok(()) => {}
                // An empty slot.
                Err(e) if e.code() == Some(ReturnCode::NotFound) => continue,
                Err(e) => return Err(e),
            }
            let mig = Device {
                nvml: self.nvml,
                handle,
            };
            uuids.push(mig.uuid()?);
        }
        Ok(uuids)
    }

    fn string(
        &self,
        function: &'static str,
        f: sys::DeviceGetStringFn,
    ) -> Result<String, NvmlError> {
        let mut buf = [0 as c_char; sys::NVML_DEVICE_STRING_BUFFER_SIZE];
        // SAFETY: the buffer is writable and its length is passed.
        let code = unsafe { f(self.handle, buf.as_mut_ptr(), buf.len() as c_uint) };
        self.nvml.check(function, code)?;
        Ok(string_from_buffer(&buf))
    }
}

/// Opening failed before a session existed.
#[derive(Debug)]
pub enum OpenError {
    Load(LoadError),
    Init(NvmlError),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Load(e) => e.fmt(f),
            Self::Init(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Load(e) => Some(e),
            Self::Init(e) => Some(e),
        }
    }
}

/// The one place return codes become errors.
fn check(
    library: &NvmlLibrary,
    function: &'static str,
    code: nvmlReturn_t,
) -> Result<(), NvmlError> {
    if code == NVML_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvmlErrorString accepts any code and returns a static string.
    let description = unsafe { (library.api().error_string)(code) };
    let description = if description.is_null() {
        String::from("no description")
    } else {
        // SAFETY: non-null, NUL-terminated, static storage per nvml.h.
        unsafe { CStr::from_ptr(description) }
            .to_string_lossy()
            .into_owned()
    };
    Err(NvmlError::Call {
        function,
        code: ReturnCode::from(code),
        description,
    })
}

/// Reads a NUL-terminated string from a fixed buffer, tolerating a missing NUL.
fn string_from_buffer(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_strings_stop_at_nul_or_end() {
        let mut buf = [0 as c_char; 8];
        for (slot, byte) in buf.iter_mut().zip(b"GPU-ab\0x") {
            *slot = *byte as c_char;
        }
        assert_eq!(string_from_buffer(&buf), "GPU-ab");
        let full = [b'a' as c_char; 4];
        assert_eq!(string_from_buffer(&full), "aaaa");
    }
}
