//! Finding and opening `libamd_smi.so`, and resolving its entry points.
//! Its SONAME follows the library's major version (`.so.24` in ROCm 6.3,
//! `.so.25` in 6.4, `.so.26` in 7.x), so every known name is tried, through
//! the loader's search and then ROCm's install directories.

use std::path::{Path, PathBuf};

use libloading::Library;

use super::error::LoadError;
use super::sys::{symbols, Api};
use crate::dynlib;

/// File names tried, newest first; the unversioned one is a developer
/// package's symlink and often absent.
pub const NAMES: &[&str] = &[
    "libamd_smi.so",
    "libamd_smi.so.27",
    "libamd_smi.so.26",
    "libamd_smi.so.25",
    "libamd_smi.so.24",
    "libamd_smi.so.23",
];

/// ROCm's install directories, tried after the loader's own search; any
/// versioned `/opt/rocm-X.Y.Z/lib` present is tried too, newest first.
pub const ROCM_DIRS: &[&str] = &["/opt/rocm/lib", "/opt/rocm/lib64"];

/// The standard places, in the order they are tried.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ROCM_DIRS.iter().map(PathBuf::from).collect();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/opt")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("rocm-"))
                })
                .map(|p| p.join("lib"))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort();
    versioned.reverse();
    dirs.extend(versioned);
    NAMES
        .iter()
        .map(PathBuf::from)
        .chain(
            dirs.iter()
                .flat_map(|dir| NAMES.iter().map(move |name| dir.join(name))),
        )
        .collect()
}

/// An opened AMD SMI library with its entry points resolved. The function
/// pointers live beside the `Library` that keeps them valid.
pub struct AmdSmiLibrary {
    api: Api,
    path: String,
    _library: Library,
}

impl AmdSmiLibrary {
    /// Opens the first of the standard places (see [`candidate_paths`])
    /// that loads. The error lists every path tried and why it failed.
    pub fn open() -> Result<Self, LoadError> {
        // SAFETY: loading runs the library's initialisers. These are ROCm's
        // own install locations (and the loader's search for its names),
        // where only AMD SMI is found.
        let (library, path) = unsafe { dynlib::open_first(candidate_paths()) }
            .map_err(|tried| LoadError::LibraryNotFound { tried })?;
        Self::resolve(library, path)
    }

    /// Opens the library at `path` (from `--amd-smi-library` or
    /// `AMD_SMI_LIBRARY_PATH`) instead of searching.
    ///
    /// # Safety
    ///
    /// Loading a library runs its initialisers with this process's rights.
    /// The caller must be sure that `path` is AMD SMI, or a library whose
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
        let entries = Entries {
            library: &library,
            path: &path,
        };
        let api = Api {
            init: entries.required(symbols::INIT)?,
            shut_down: entries.required(symbols::SHUT_DOWN)?,
            status_code_to_string: entries.required(symbols::STATUS_CODE_TO_STRING)?,
            get_lib_version: entries.required(symbols::GET_LIB_VERSION)?,
            get_socket_handles: entries.required(symbols::GET_SOCKET_HANDLES)?,
            get_processor_handles: entries.required(symbols::GET_PROCESSOR_HANDLES)?,
            get_processor_type: entries.required(symbols::GET_PROCESSOR_TYPE)?,
            get_gpu_device_uuid: entries.required(symbols::GET_GPU_DEVICE_UUID)?,
            get_gpu_device_bdf: entries.required(symbols::GET_GPU_DEVICE_BDF)?,
            get_gpu_activity: entries.required(symbols::GET_GPU_ACTIVITY)?,
            get_gpu_memory_usage: entries.required(symbols::GET_GPU_MEMORY_USAGE)?,
            get_gpu_memory_total: entries.required(symbols::GET_GPU_MEMORY_TOTAL)?,
            get_temp_metric: entries.required(symbols::GET_TEMP_METRIC)?,
            get_power_info: entries.required(symbols::GET_POWER_INFO)?,
            get_gpu_asic_info: entries.required(symbols::GET_GPU_ASIC_INFO).ok(),
            get_gpu_driver_info: entries.required(symbols::GET_GPU_DRIVER_INFO).ok(),
        };
        Ok(Self {
            api,
            path,
            _library: library,
        })
    }

    /// Where the library was loaded from.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn api(&self) -> &Api {
        &self.api
    }
}

/// Resolves entry points of one library.
struct Entries<'a> {
    library: &'a Library,
    path: &'a str,
}

impl Entries<'_> {
    /// One entry point, typed as the `Api` field it fills.
    fn required<T: Copy>(&self, symbol: &'static str) -> Result<T, LoadError> {
        // SAFETY: `T` is the `extern "C"` signature amdsmi.h declares for
        // `symbol` (the `Api` field's type), and the pointer is stored
        // beside the library it came from.
        unsafe { self.library.get::<T>(symbol.as_bytes()) }
            .map(|f| *f)
            .map_err(|source| LoadError::MissingEntryPoint {
                library: self.path.to_string(),
                symbol,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_tried_by_the_loader_first_then_in_rocm_dirs() {
        let paths = candidate_paths();
        assert_eq!(paths[0], PathBuf::from("libamd_smi.so"));
        assert_eq!(paths[..NAMES.len()].len(), NAMES.len());
        assert!(paths.contains(&PathBuf::from("/opt/rocm/lib/libamd_smi.so.26")));
        assert!(paths.contains(&PathBuf::from("/opt/rocm/lib/libamd_smi.so.24")));
    }

    #[test]
    fn a_missing_library_names_every_path_tried() {
        // SAFETY: the path does not exist; nothing is loaded.
        let error = unsafe { AmdSmiLibrary::open_path(Path::new("/nonexistent/libamd_smi.so")) }
            .err()
            .unwrap();
        assert!(
            error.to_string()
                == "cannot load the AMD SMI library (libamd_smi.so); no libamd_smi.so found in /nonexistent",
            "{error}"
        );
    }
}
