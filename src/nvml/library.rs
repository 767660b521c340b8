//! Finding and opening `libnvidia-ml.so.1`, and resolving its entry points.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::Library;

use super::error::LoadError;
use super::sys::{self, symbols, Api, MemoryInfoFn};
use crate::dynlib;

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

/// The standard places, in the order they are tried.
pub fn candidate_paths() -> Vec<PathBuf> {
    std::iter::once(PathBuf::from(SONAME))
        .chain(DRIVER_DIRS.iter().map(|dir| Path::new(dir).join(SONAME)))
        .collect()
}

/// An opened NVML library with its required entry points resolved. The
/// function pointers live beside the `Library` that keeps them valid.
pub struct NvmlLibrary {
    api: Api,
    optional: OnceLock<OptionalApi>,
    path: String,
    library: Library,
}

impl NvmlLibrary {
    /// Opens the first of the standard places (see [`candidate_paths`])
    /// that loads. The error lists every path tried and why it failed.
    pub fn open() -> Result<Self, LoadError> {
        // SAFETY: loading runs the library's initialisers. These are the
        // driver's own install locations (and the loader's search for its
        // soname), where only NVML is found.
        let (library, path) = unsafe { dynlib::open_first(candidate_paths()) }
            .map_err(|tried| LoadError::LibraryNotFound { tried })?;
        Self::resolve(library, path)
    }

    /// Opens the library at `path` (from `--nvml-library` or
    /// `NVML_LIBRARY_PATH`) instead of searching.
    ///
    /// # Safety
    ///
    /// Loading a library runs its initialisers with this process's rights.
    /// The caller must be sure that `path` is NVML, or a library whose
    /// initialisers are sound to run on any thread (the test fake is).
    pub unsafe fn open_path(path: &Path) -> Result<Self, LoadError> {
        // SAFETY: the caller vouches for the library (see above).
        let library =
            unsafe { dynlib::open(path) }.map_err(|failure| LoadError::LibraryNotFound {
                tried: vec![failure],
            })?;
        Self::resolve(library, path.display().to_string())
    }

    fn resolve(library: Library, path: String) -> Result<Self, LoadError> {
        let resolver = Resolver {
            library: &library,
            path: &path,
        };
        let api = Api {
            init: resolver.versioned(symbols::INIT)?,
            shutdown: resolver.required(symbols::SHUTDOWN)?,
            error_string: resolver.required(symbols::ERROR_STRING)?,
            system_get_driver_version: resolver.required(symbols::SYSTEM_GET_DRIVER_VERSION)?,
            device_get_count: resolver.versioned(symbols::DEVICE_GET_COUNT)?,
            device_get_handle_by_index: resolver.versioned(symbols::DEVICE_GET_HANDLE_BY_INDEX)?,
            device_get_uuid: resolver.required(symbols::DEVICE_GET_UUID)?,
            device_get_name: resolver.required(symbols::DEVICE_GET_NAME)?,
            device_get_memory_info: {
                let (v2, v1) = symbols::DEVICE_GET_MEMORY_INFO;
                match resolver.optional(v2) {
                    Some(f) => MemoryInfoFn::V2(f),
                    None => MemoryInfoFn::V1(resolver.required(v1)?),
                }
            },
            device_get_utilization_rates: resolver
                .required(symbols::DEVICE_GET_UTILIZATION_RATES)?,
            device_get_temperature: resolver.required(symbols::DEVICE_GET_TEMPERATURE)?,
            device_get_power_usage: resolver.required(symbols::DEVICE_GET_POWER_USAGE)?,
        };
        Ok(Self {
            api,
            optional: OnceLock::new(),
            path,
            library,
        })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether `nvmlDeviceGetMemoryInfo_v2` is used (it excludes reserved memory).
    pub fn has_memory_info_v2(&self) -> bool {
        matches!(self.api.device_get_memory_info, MemoryInfoFn::V2(_))
    }

    pub(super) fn api(&self) -> &Api {
        &self.api
    }

    /// Entry points newer drivers add, resolved on first use; each is
    /// `None` where the driver lacks it.
    pub(super) fn optional(&self) -> &OptionalApi {
        self.optional.get_or_init(|| {
            let resolver = Resolver {
                library: &self.library,
                path: &self.path,
            };
            OptionalApi {
                mig_mode: resolver.optional(symbols::DEVICE_GET_MIG_MODE),
                max_mig_device_count: resolver.optional(symbols::DEVICE_GET_MAX_MIG_DEVICE_COUNT),
                mig_device_handle_by_index: resolver
                    .optional(symbols::DEVICE_GET_MIG_DEVICE_HANDLE_BY_INDEX),
                gpu_instance_id: resolver.optional(symbols::DEVICE_GET_GPU_INSTANCE_ID),
                compute_instance_id: resolver.optional(symbols::DEVICE_GET_COMPUTE_INSTANCE_ID),
                field_values: resolver.optional(symbols::DEVICE_GET_FIELD_VALUES),
                max_pcie_link_generation: resolver
                    .optional(symbols::DEVICE_GET_MAX_PCIE_LINK_GENERATION),
                max_pcie_link_width: resolver.optional(symbols::DEVICE_GET_MAX_PCIE_LINK_WIDTH),
                gpm: (|| {
                    Some(GpmApi {
                        query_device_support: resolver
                            .optional(symbols::GPM_QUERY_DEVICE_SUPPORT)?,
                        sample_alloc: resolver.optional(symbols::GPM_SAMPLE_ALLOC)?,
                        sample_free: resolver.optional(symbols::GPM_SAMPLE_FREE)?,
                        sample_get: resolver.optional(symbols::GPM_SAMPLE_GET)?,
                        mig_sample_get: resolver.optional(symbols::GPM_MIG_SAMPLE_GET),
                        metrics_get: resolver.optional(symbols::GPM_METRICS_GET)?,
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

struct Resolver<'a> {
    library: &'a Library,
    path: &'a str,
}

impl Resolver<'_> {
    fn optional<T: Copy>(&self, symbol: &'static str) -> Option<T> {
        // SAFETY: `T` is the `extern "C"` signature nvml.h declares for
        // `symbol`, and the pointer is stored beside the library it came from.
        unsafe { self.library.get::<T>(symbol.as_bytes()) }
            .ok()
            .map(|f| *f)
    }

    fn required<T: Copy>(&self, symbol: &'static str) -> Result<T, LoadError> {
        // SAFETY: as in `optional`.
        unsafe { self.library.get::<T>(symbol.as_bytes()) }
            .map(|f| *f)
            .map_err(|source| LoadError::MissingEntryPoint {
                library: self.path.to_string(),
                symbol,
                source,
            })
    }

    /// The `_v2` symbol when exported, else the unversioned one.
    fn versioned<T: Copy>(&self, (v2, v1): (&'static str, &'static str)) -> Result<T, LoadError> {
        match self.optional(v2) {
            Some(f) => Ok(f),
            None => self.required(v1),
        }
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
