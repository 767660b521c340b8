//! A safe API over the NVML C library, loaded at run time. `sys` holds the
//! raw ABI, `library` says where it is and which entry points to resolve
//! (`dynlib` opens it), and this file owns the initialised session, the
//! per-device calls and the GPM buffers, which hold the session so that
//! `nvmlShutdown` comes only after the last is freed.

mod error;
mod library;
pub mod sys;

use std::ffi::CStr;
use std::os::raw::{c_char, c_uint};
use std::path::Path;
use std::sync::Arc;

pub use error::{LoadError, NvmlError, ReturnCode};

use crate::dynlib::{string_from_buffer, CallErrors};
use library::GpmApi;
pub use library::{candidate_paths, Entries, NvmlLibrary, DRIVER_DIRS, SONAME};

use sys::{nvmlDevice_t, nvmlReturn_t, MemoryInfoFn, NVML_SUCCESS};

/// An initialised NVML session. `nvmlShutdown` runs once it and every
/// [`GpmSample`] taken through it are dropped.
pub struct Nvml {
    initialised: Arc<Initialised>,
}

/// One successful `nvmlInit`, shared by the session and the GPM buffers
/// allocated through it: each holds an `Arc` of it, so `nvmlShutdown` (on
/// its drop) can only come after the last buffer is freed, whatever order
/// their owners drop in.
struct Initialised {
    library: Arc<NvmlLibrary>,
}

impl Drop for Initialised {
    fn drop(&mut self) {
        // SAFETY: pairs the successful init in `Nvml::init`; every GPM
        // buffer of this session is freed (each held an `Arc` of this).
        let code = unsafe { (self.library.api().shutdown)() };
        if let Err(e) = check(&self.library, "nvmlShutdown", code) {
            log::debug!("{e}");
        }
    }
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
        Ok(Self {
            initialised: Arc::new(Initialised { library }),
        })
    }

    pub fn library(&self) -> &Arc<NvmlLibrary> {
        &self.initialised.library
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
        self.library().api()
    }

    fn check(&self, function: &'static str, code: nvmlReturn_t) -> Result<(), NvmlError> {
        check(self.library(), function, code)
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
            .library()
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
        self.mig_devices()?
            .iter()
            .map(|(_, mig)| mig.uuid())
            .collect()
    }

    /// The MIG devices on this GPU, with their slot index: every index up
    /// to `nvmlDeviceGetMaxMigDeviceCount`, skipping empty slots (NOT_FOUND;
    /// they can be anywhere, not only at the end). Optional, like
    /// `mig_enabled`.
    pub fn mig_devices(&self) -> Result<Vec<(u32, Device<'_>)>, NvmlError> {
        let optional = self.nvml.library().optional();
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
        let mut devices = Vec::new();
        for index in 0..count {
            let mut handle: nvmlDevice_t = std::ptr::null_mut();
            // SAFETY: `handle` is a valid out-pointer.
            let code = unsafe { handle_by_index(self.handle, index, &mut handle) };
            // NOT_FOUND is an empty slot: an answer, not a failure.
            if code == sys::NVML_ERROR_NOT_FOUND {
                continue;
            }
            self.nvml
                .check(sys::symbols::DEVICE_GET_MIG_DEVICE_HANDLE_BY_INDEX, code)?;
            devices.push((
                index,
                Device {
                    nvml: self.nvml,
                    handle,
                },
            ));
        }
        Ok(devices)
    }

    /// The GPU-instance id of this MIG device. Optional.
    pub fn gpu_instance_id(&self) -> Result<u32, NvmlError> {
        self.get_uint(
            sys::symbols::DEVICE_GET_GPU_INSTANCE_ID,
            self.nvml.library().optional().gpu_instance_id,
        )
    }

    /// The compute-instance id of this MIG device. Optional.
    pub fn compute_instance_id(&self) -> Result<u32, NvmlError> {
        self.get_uint(
            sys::symbols::DEVICE_GET_COMPUTE_INSTANCE_ID,
            self.nvml.library().optional().compute_instance_id,
        )
    }

    /// One `unsigned int` out of an optional `(device, unsigned int *)` call.
    fn get_uint(
        &self,
        symbol: &'static str,
        f: Option<sys::DeviceGetInstanceIdFn>,
    ) -> Result<u32, NvmlError> {
        let f = f.ok_or(NvmlError::MissingSymbol(symbol))?;
        let mut id: c_uint = 0;
        // SAFETY: `id` is a valid out-pointer.
        let code = unsafe { f(self.handle, &mut id) };
        self.nvml.check(symbol, code)?;
        Ok(id)
    }

    /// Whether the GPU supports GPM (Hopper and newer). Optional: errors
    /// with `MissingSymbol` on drivers without GPM.
    pub fn gpm_supported(&self) -> Result<bool, NvmlError> {
        let gpm = self.nvml.gpm()?;
        let mut support = sys::nvmlGpmSupport_t {
            version: sys::NVML_GPM_SUPPORT_VERSION,
            isSupportedDevice: 0,
        };
        // SAFETY: `support` is a valid out-pointer with its version set.
        let code = unsafe { (gpm.query_device_support)(self.handle, &mut support) };
        self.nvml
            .check(sys::symbols::GPM_QUERY_DEVICE_SUPPORT, code)?;
        Ok(support.isSupportedDevice != 0)
    }

    /// Fills `sample` with this GPU's GPM counters now.
    pub fn gpm_sample(&self, sample: &GpmSample) -> Result<(), NvmlError> {
        let gpm = self.nvml.gpm()?;
        // SAFETY: `sample` was allocated by nvmlGpmSampleAlloc of this
        // library and is not freed while borrowed.
        let code = unsafe { (gpm.sample_get)(self.handle, sample.sample) };
        self.nvml.check(sys::symbols::GPM_SAMPLE_GET, code)
    }

    /// Fills `sample` with the GPM counters of one GPU instance (MIG) of
    /// this GPU, by its GPU-instance id.
    pub fn gpm_mig_sample(&self, gpu_instance: u32, sample: &GpmSample) -> Result<(), NvmlError> {
        let symbol = sys::symbols::GPM_MIG_SAMPLE_GET;
        let f = self
            .nvml
            .gpm()?
            .mig_sample_get
            .ok_or(NvmlError::MissingSymbol(symbol))?;
        // SAFETY: as in `gpm_sample`.
        let code = unsafe { f(self.handle, gpu_instance, sample.sample) };
        self.nvml.check(symbol, code)
    }

    /// The highest PCIe generation this GPU and its slot both support.
    /// Optional.
    pub fn max_pcie_link_generation(&self) -> Result<u32, NvmlError> {
        self.get_uint(
            sys::symbols::DEVICE_GET_MAX_PCIE_LINK_GENERATION,
            self.nvml.library().optional().max_pcie_link_generation,
        )
    }

    /// The widest PCIe link (lanes) this GPU and its slot both support.
    /// Optional.
    pub fn max_pcie_link_width(&self) -> Result<u32, NvmlError> {
        self.get_uint(
            sys::symbols::DEVICE_GET_MAX_PCIE_LINK_WIDTH,
            self.nvml.library().optional().max_pcie_link_width,
        )
    }

    /// Counters from `nvmlDeviceGetFieldValues`, one per `(field, scope)`,
    /// each with its own result: the call succeeds when any field did.
    pub fn field_values(
        &self,
        requests: &[(c_uint, c_uint)],
    ) -> Result<Vec<FieldValue>, NvmlError> {
        let symbol = sys::symbols::DEVICE_GET_FIELD_VALUES;
        let f = self
            .nvml
            .library()
            .optional()
            .field_values
            .ok_or(NvmlError::MissingSymbol(symbol))?;
        let mut values: Vec<sys::nvmlFieldValue_t> = requests
            .iter()
            .map(|&(field, scope)| sys::nvmlFieldValue_t {
                fieldId: field,
                scopeId: scope,
                timestamp: 0,
                latencyUsec: 0,
                valueType: 0,
                nvmlReturn: 0,
                value: sys::nvmlValue_t { ullVal: 0 },
            })
            .collect();
        // SAFETY: `values` holds `requests.len()` initialised entries with
        // their field and scope set; NVML writes only within them.
        let code = unsafe {
            f(
                self.handle,
                values.len() as std::os::raw::c_int,
                values.as_mut_ptr(),
            )
        };
        self.nvml.check(symbol, code)?;
        Ok(values
            .iter()
            .map(|v| FieldValue {
                field: v.fieldId,
                result: self
                    .nvml
                    .check(symbol, v.nvmlReturn)
                    .and_then(|()| {
                        counter(v).ok_or(NvmlError::Call {
                            function: symbol,
                            code: ReturnCode::from(sys::NVML_ERROR_NOT_SUPPORTED),
                            description: format!("value type {} is not a counter", v.valueType),
                        })
                    })
                    .map(|(value, bits)| Counter {
                        value,
                        bits,
                        timestamp_us: v.timestamp,
                    }),
            })
            .collect())
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

/// One field from `nvmlDeviceGetFieldValues`.
#[derive(Debug)]
pub struct FieldValue {
    pub field: c_uint,
    pub result: Result<Counter, NvmlError>,
}

/// A cumulative counter and when NVML read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub value: u64,
    /// Its width: it wraps at 2^bits.
    pub bits: u32,
    /// Microseconds since 1970.
    pub timestamp_us: i64,
}

/// The counter in a field value and its width in bits, by its declared
/// type: `unsigned int` is 32 bits, `unsigned short` 16, `unsigned long`
/// and `unsigned long long` 64; a `signed long long` is taken while it is
/// not negative (as 64 bits: it cannot wrap in any lifetime). Doubles and
/// signed ints are not counters.
fn counter(value: &sys::nvmlFieldValue_t) -> Option<(u64, u32)> {
    // SAFETY: the union is read as the member `valueType` names, which
    // NVML wrote; every member is plain data.
    unsafe {
        match value.valueType {
            sys::NVML_VALUE_TYPE_UNSIGNED_SHORT => Some((u64::from(value.value.usVal), 16)),
            sys::NVML_VALUE_TYPE_UNSIGNED_INT => Some((u64::from(value.value.uiVal), 32)),
            sys::NVML_VALUE_TYPE_UNSIGNED_LONG => Some((value.value.ulVal, 64)),
            sys::NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => Some((value.value.ullVal, 64)),
            sys::NVML_VALUE_TYPE_SIGNED_LONG_LONG => {
                u64::try_from(value.value.sllVal).ok().map(|v| (v, 64))
            }
            _ => None,
        }
    }
}

/// A GPM sample buffer, freed (`nvmlGpmSampleFree`) on drop. It holds its
/// session's initialisation, so it is always freed before `nvmlShutdown`:
/// it may outlive the [`Nvml`] that allocated it, never the NVML session.
/// Refilled by each `gpm_sample` call, so one buffer serves every pass.
pub struct GpmSample {
    initialised: Arc<Initialised>,
    sample: sys::nvmlGpmSample_t,
}

// SAFETY: the buffer is driver memory behind an opaque pointer, used only
// through NVML calls, which are thread-safe; it has no thread affinity.
unsafe impl Send for GpmSample {}

impl Drop for GpmSample {
    fn drop(&mut self) {
        if let Some(gpm) = &self.initialised.library.optional().gpm {
            // SAFETY: allocated by nvmlGpmSampleAlloc of this library in a
            // session still initialised (this holds it), freed once.
            unsafe { (gpm.sample_free)(self.sample) };
        }
    }
}

/// What GPM computed for one metric between two samples.
pub type GpmValue = Result<f64, NvmlError>;

impl Nvml {
    fn gpm(&self) -> Result<&GpmApi, NvmlError> {
        self.library()
            .optional()
            .gpm
            .as_ref()
            .ok_or(NvmlError::MissingSymbol(sys::symbols::GPM_SAMPLE_GET))
    }

    /// A new, empty GPM sample buffer.
    pub fn gpm_sample_alloc(&self) -> Result<GpmSample, NvmlError> {
        let gpm = self.gpm()?;
        let mut sample: sys::nvmlGpmSample_t = std::ptr::null_mut();
        // SAFETY: `sample` is a valid out-pointer.
        let code = unsafe { (gpm.sample_alloc)(&mut sample) };
        self.check(sys::symbols::GPM_SAMPLE_ALLOC, code)?;
        Ok(GpmSample {
            initialised: Arc::clone(&self.initialised),
            sample,
        })
    }

    /// The metrics `ids` between two samples of the same GPU (or GPU
    /// instance), `earlier` first, each with its own result. The request
    /// is allocated at the largest layout any driver expects, so a driver
    /// newer than this header writes within it. Each slot starts as a
    /// failure (see [`sys::GPM_SLOT_UNANSWERED`]): one the driver leaves
    /// untouched is an error, never 0.
    pub fn gpm_metrics(
        &self,
        earlier: &GpmSample,
        later: &GpmSample,
        ids: &[c_uint],
    ) -> Result<Vec<GpmValue>, NvmlError> {
        let gpm = self.gpm()?;
        let mut request = sys::nvmlGpmMetricsGet_t::new();
        let count = ids.len().min(sys::NVML_GPM_METRIC_MAX);
        request.numMetrics = count as c_uint;
        request.sample1 = earlier.sample;
        request.sample2 = later.sample;
        for (slot, id) in request.metrics.iter_mut().zip(&ids[..count]) {
            slot.metricId = *id;
        }
        // SAFETY: `request` is a valid, versioned nvmlGpmMetricsGet_t whose
        // samples stay alive for the call.
        let code = unsafe { (gpm.metrics_get)(&mut *request) };
        self.check(sys::symbols::GPM_METRICS_GET, code)?;
        Ok(request.metrics[..count]
            .iter()
            .map(|metric| {
                if metric.nvmlReturn == sys::GPM_SLOT_UNANSWERED && metric.value.is_nan() {
                    return Err(unanswered(sys::symbols::GPM_METRICS_GET));
                }
                self.check(sys::symbols::GPM_METRICS_GET, metric.nvmlReturn)
                    .map(|()| metric.value)
            })
            .collect())
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

/// Failed calls since the process started.
static CALL_ERRORS: CallErrors = CallErrors::new();

/// Failed NVML calls so far in this process, as `(function, code, count)`,
/// for the `/metrics` page. NOT_SUPPORTED is left out: it makes a reading
/// absent, which `devices` shows, and is no failure.
pub fn call_errors() -> Vec<(&'static str, &'static str, u64)> {
    CALL_ERRORS.all()
}

/// A GPM slot still as it was pre-set: the driver did not answer it.
/// Counted with the other failed calls.
fn unanswered(function: &'static str) -> NvmlError {
    let code = ReturnCode::from(sys::GPM_SLOT_UNANSWERED);
    CALL_ERRORS.count(function, code.name());
    NvmlError::Call {
        function,
        code,
        description: String::from(
            "the driver left this metric's slot unanswered (it still holds the error it was pre-set to)",
        ),
    }
}

/// The one place return codes become errors (and are counted).
fn check(
    library: &NvmlLibrary,
    function: &'static str,
    code: nvmlReturn_t,
) -> Result<(), NvmlError> {
    if code == NVML_SUCCESS {
        return Ok(());
    }
    let typed = ReturnCode::from(code);
    if typed != ReturnCode::NotSupported {
        CALL_ERRORS.count(function, typed.name());
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
        code: typed,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value_type: c_uint, value: sys::nvmlValue_t) -> sys::nvmlFieldValue_t {
        sys::nvmlFieldValue_t {
            fieldId: sys::NVML_FI_DEV_PCIE_COUNT_TX_BYTES,
            scopeId: 0,
            timestamp: 0,
            latencyUsec: 0,
            valueType: value_type,
            nvmlReturn: NVML_SUCCESS,
            value,
        }
    }

    #[test]
    fn a_counter_is_as_wide_as_its_value_type_says() {
        use sys::nvmlValue_t as V;
        let read = |value_type, value| counter(&field(value_type, value));
        assert_eq!(
            read(sys::NVML_VALUE_TYPE_UNSIGNED_INT, V { uiVal: 7 }),
            Some((7, 32))
        );
        assert_eq!(
            read(sys::NVML_VALUE_TYPE_UNSIGNED_LONG, V { ulVal: 7 }),
            Some((7, 64))
        );
        assert_eq!(
            read(sys::NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, V { ullVal: 7 }),
            Some((7, 64))
        );
        assert_eq!(
            read(sys::NVML_VALUE_TYPE_UNSIGNED_SHORT, V { usVal: 7 }),
            Some((7, 16))
        );
        // nvml.h: SIGNED_LONG_LONG is 4 (SIGNED_INT is 5).
        assert_eq!(sys::NVML_VALUE_TYPE_SIGNED_LONG_LONG, 4);
        assert_eq!(
            read(sys::NVML_VALUE_TYPE_SIGNED_LONG_LONG, V { sllVal: 7 }),
            Some((7, 64))
        );
        assert_eq!(
            read(sys::NVML_VALUE_TYPE_SIGNED_LONG_LONG, V { sllVal: -1 }),
            None
        );
        // A double or a signed int is no counter.
        assert_eq!(read(0, V { dVal: 7.0 }), None);
        assert_eq!(read(5, V { siVal: 7 }), None);
    }
}
