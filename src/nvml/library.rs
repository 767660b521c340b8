//! Where `libnvidia-ml.so.1` is found, and which of its entry points are
//! resolved (opening it is `dynlib`'s, the same for every vendor).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::LoadError;
use super::sys::{self, symbols, Api, MemoryInfoFn};
use crate::dynlib::{Loaded, MissingSymbol, Opened, Vendor};

/// The soname the driver installs; the unversioned `.so` is often absent.
pub const SONAME: &str = "libnvidia-ml.so.1";

/// Driver library directories tried after the dynamic loader's own search:
/// distro layouts, the GPU Operator's driver root, and NVIDIA's container
/// images, for both x86_64 and aarch64.
pub const DRIVER_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/run/nvidia/driver/usr/lib/x86_64-linux-gnu",
    "/run/nvidia/driver/usr/lib64",
    "/usr/local/nvidia/lib64",
    "/usr/lib/aarch64-linux-gnu",
    "/run/nvidia/driver/usr/lib/aarch64-linux-gnu",
    "/usr/local/nvidia/lib",
];

/// Where the driver's directories are found: `/`, or the root the
/// operator names in this variable (a host's `/` mounted elsewhere).
pub const DRIVER_ROOT_ENV: &str = "KEDA_GPU_SCALER_DRIVER_ROOT";

/// The standard places, in the order they are tried: the loader's search
/// for the soname, then the driver's own directories. Under a
/// [`DRIVER_ROOT_ENV`] other than `/`, only those directories under it.
pub fn candidate_paths() -> Vec<PathBuf> {
    let root = std::env::var_os(DRIVER_ROOT_ENV)
        .map(PathBuf::from)
        .filter(|root| root != Path::new("/"));
    let under = |dir: &str| match &root {
        Some(root) => root.join(dir.trim_start_matches('/')).join(SONAME),
        None => Path::new(dir).join(SONAME),
    };
    root.is_none()
        .then(|| PathBuf::from(SONAME))
        .into_iter()
        .chain(DRIVER_DIRS.iter().map(|dir| under(dir)))
        .collect()
}

/// An opened NVML library with its entry points resolved beside it: its
/// `open` searches [`candidate_paths`]; its `open_path(path)` (unsafe:
/// loading runs the library's initialisers) opens the library the
/// operator named (`--nvml-library`, `NVML_LIBRARY_PATH`).
pub type NvmlLibrary = Loaded<Entries>;

/// NVML's entry points: the required ones resolved when the library
/// loads, the ones newer drivers add on first use.
pub struct Entries {
    api: Api,
    optional: OnceLock<OptionalApi>,
}

// SAFETY: `candidate_paths` is NVML's soname (the loader's search for it)
// and the driver's own install locations, where only NVML is found.
unsafe impl Vendor for Entries {
    type Error = LoadError;

    fn candidates() -> Vec<PathBuf> {
        candidate_paths()
    }

    fn resolve(opened: &Opened) -> Result<Self, LoadError> {
        let memory_info = symbols::DEVICE_GET_MEMORY_INFO;
        // SAFETY: each field's type is the signature nvml.h declares for
        // the symbol named beside it (see `sys`), and the `Api` is kept
        // beside `opened`.
        let api = unsafe {
            Api {
                init: versioned(opened, symbols::INIT)?,
                shutdown: opened.required(symbols::SHUTDOWN)?,
                error_string: opened.required(symbols::ERROR_STRING)?,
                system_get_driver_version: opened.required(symbols::SYSTEM_GET_DRIVER_VERSION)?,
                device_get_count: versioned(opened, symbols::DEVICE_GET_COUNT)?,
                device_get_handle_by_index: versioned(opened, symbols::DEVICE_GET_HANDLE_BY_INDEX)?,
                device_get_uuid: opened.required(symbols::DEVICE_GET_UUID)?,
                device_get_name: opened.required(symbols::DEVICE_GET_NAME)?,
                device_get_memory_info: match opened.optional(memory_info.0) {
                    Some(f) => MemoryInfoFn::V2(f),
                    None => MemoryInfoFn::V1(opened.required(memory_info.1)?),
                },
                device_get_utilization_rates: opened
                    .required(symbols::DEVICE_GET_UTILIZATION_RATES)?,
                device_get_temperature: opened.required(symbols::DEVICE_GET_TEMPERATURE)?,
                device_get_power_usage: opened.required(symbols::DEVICE_GET_POWER_USAGE)?,
            }
        };
        Ok(Self {
            api,
            optional: OnceLock::new(),
        })
    }
}

impl NvmlLibrary {
    /// Whether `nvmlDeviceGetMemoryInfo_v2` is used (it excludes reserved memory).
    pub fn has_memory_info_v2(&self) -> bool {
        matches!(self.api().device_get_memory_info, MemoryInfoFn::V2(_))
    }

    pub(super) fn api(&self) -> &Api {
        &self.entries().api
    }

    /// Entry points newer drivers add, resolved on first use; each is
    /// `None` where the driver lacks it.
    pub(super) fn optional(&self) -> &OptionalApi {
        let opened = self.opened();
        // SAFETY: as in `resolve`: each field's type is the signature
        // nvml.h declares for its symbol, kept beside `opened`.
        self.entries().optional.get_or_init(|| unsafe {
            OptionalApi {
                mig_mode: opened.optional(symbols::DEVICE_GET_MIG_MODE),
                max_mig_device_count: opened.optional(symbols::DEVICE_GET_MAX_MIG_DEVICE_COUNT),
                mig_device_handle_by_index: opened
                    .optional(symbols::DEVICE_GET_MIG_DEVICE_HANDLE_BY_INDEX),
                gpu_instance_id: opened.optional(symbols::DEVICE_GET_GPU_INSTANCE_ID),
                compute_instance_id: opened.optional(symbols::DEVICE_GET_COMPUTE_INSTANCE_ID),
                field_values: opened.optional(symbols::DEVICE_GET_FIELD_VALUES),
                max_pcie_link_generation: opened
                    .optional(symbols::DEVICE_GET_MAX_PCIE_LINK_GENERATION),
                max_pcie_link_width: opened.optional(symbols::DEVICE_GET_MAX_PCIE_LINK_WIDTH),
                gpm: (|| {
                    Some(GpmApi {
                        query_device_support: opened.optional(symbols::GPM_QUERY_DEVICE_SUPPORT)?,
                        sample_alloc: opened.optional(symbols::GPM_SAMPLE_ALLOC)?,
                        sample_free: opened.optional(symbols::GPM_SAMPLE_FREE)?,
                        sample_get: opened.optional(symbols::GPM_SAMPLE_GET)?,
                        mig_sample_get: opened.optional(symbols::GPM_MIG_SAMPLE_GET),
                        metrics_get: opened.optional(symbols::GPM_METRICS_GET)?,
                    })
                })(),
            }
        })
    }
}

/// Optional entry points (newer drivers); each `None` where missing.
pub struct OptionalApi {
    pub mig_mode: Option<sys::DeviceGetMigModeFn>,
    pub max_mig_device_count: Option<sys::DeviceGetMaxMigDeviceCountFn>,
    pub mig_device_handle_by_index: Option<sys::DeviceGetMigDeviceHandleByIndexFn>,
    pub gpu_instance_id: Option<sys::DeviceGetInstanceIdFn>,
    pub compute_instance_id: Option<sys::DeviceGetInstanceIdFn>,
    pub field_values: Option<sys::DeviceGetFieldValuesFn>,
    pub max_pcie_link_generation: Option<sys::DeviceGetMaxPcieLinkFn>,
    pub max_pcie_link_width: Option<sys::DeviceGetMaxPcieLinkFn>,
    /// All of GPM, or `None` when any required part is missing.
    pub gpm: Option<GpmApi>,
}

/// GPM's entry points (R520 and newer). `mig_sample_get` may be missing
/// on its own; MIG instances then have no GPM metrics.
#[derive(Clone, Copy)]
pub struct GpmApi {
    pub query_device_support: sys::GpmQueryDeviceSupportFn,
    pub sample_alloc: sys::GpmSampleAllocFn,
    pub sample_free: sys::GpmSampleFreeFn,
    pub sample_get: sys::GpmSampleGetFn,
    pub mig_sample_get: Option<sys::GpmMigSampleGetFn>,
    pub metrics_get: sys::GpmMetricsGetFn,
}

/// The `_v2` symbol when exported, else the unversioned one.
///
/// # Safety
///
/// As [`Opened::optional`], for both symbols.
unsafe fn versioned<T: Copy>(
    opened: &Opened,
    (v2, v1): (&'static str, &'static str),
) -> Result<T, MissingSymbol> {
    // SAFETY: the caller's promise, for both symbols.
    match unsafe { opened.optional(v2) } {
        Some(f) => Ok(f),
        // SAFETY: as above.
        None => unsafe { opened.required(v1) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_that_does_not_load_is_the_only_one_tried() {
        // SAFETY: nothing is there to load, so no initialiser runs.
        let error = unsafe { NvmlLibrary::open_path(Path::new("/nonexistent/libnvidia-ml.so.1")) }
            .err()
            .expect("nothing to load");
        match error {
            LoadError::LibraryNotFound { tried } => {
                assert_eq!(tried.len(), 1);
                assert_eq!(tried[0].0, "/nonexistent/libnvidia-ml.so.1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn search_tries_soname_then_driver_roots() {
        let paths = candidate_paths();
        assert_eq!(paths[0], PathBuf::from("libnvidia-ml.so.1"));
        assert!(paths.contains(&PathBuf::from(
            "/run/nvidia/driver/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"
        )));
        assert!(paths.contains(&PathBuf::from(
            "/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1"
        )));
        assert_eq!(paths.len(), DRIVER_DIRS.len() + 1);
    }
}
