//! Where `libamd_smi.so` is found, and which of its entry points are
//! resolved (opening it is `dynlib`'s, the same for every vendor).
//! Its SONAME follows the library's major version (`.so.24` in ROCm 6.3,
//! `.so.25` in 6.4, `.so.26` in 7.x), so every known name is tried, through
//! the loader's search and then ROCm's install directories.

use std::path::PathBuf;

use super::error::LoadError;
use super::sys::{symbols, Api};
use crate::dynlib::{Loaded, Opened, Vendor};

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

/// An opened AMD SMI library with its entry points resolved beside it:
/// its `open` searches [`candidate_paths`]; its `open_path(path)` (unsafe:
/// loading runs the library's initialisers) opens the library the
/// operator named (`--amd-smi-library`, `AMD_SMI_LIBRARY_PATH`).
pub type AmdSmiLibrary = Loaded<Entries>;

/// AMD SMI's entry points, resolved when the library loads.
pub struct Entries {
    api: Api,
}

// SAFETY: `candidate_paths` is AMD SMI's names (the loader's search for
// them) and ROCm's own install directories, where only AMD SMI is found.
unsafe impl Vendor for Entries {
    type Error = LoadError;

    fn candidates() -> Vec<PathBuf> {
        candidate_paths()
    }

    fn resolve(opened: &Opened) -> Result<Self, LoadError> {
        // SAFETY: each field's type is the signature amdsmi.h declares for
        // the symbol named beside it (see `sys`), and the `Api` is kept
        // beside `opened`.
        let api = unsafe {
            Api {
                init: opened.required(symbols::INIT)?,
                shut_down: opened.required(symbols::SHUT_DOWN)?,
                status_code_to_string: opened.required(symbols::STATUS_CODE_TO_STRING)?,
                get_lib_version: opened.required(symbols::GET_LIB_VERSION)?,
                get_socket_handles: opened.required(symbols::GET_SOCKET_HANDLES)?,
                get_processor_handles: opened.required(symbols::GET_PROCESSOR_HANDLES)?,
                get_processor_type: opened.required(symbols::GET_PROCESSOR_TYPE)?,
                get_gpu_device_uuid: opened.required(symbols::GET_GPU_DEVICE_UUID)?,
                get_gpu_device_bdf: opened.required(symbols::GET_GPU_DEVICE_BDF)?,
                get_gpu_activity: opened.required(symbols::GET_GPU_ACTIVITY)?,
                get_gpu_memory_usage: opened.required(symbols::GET_GPU_MEMORY_USAGE)?,
                get_gpu_memory_total: opened.required(symbols::GET_GPU_MEMORY_TOTAL)?,
                get_temp_metric: opened.required(symbols::GET_TEMP_METRIC)?,
                get_power_info: opened.required(symbols::GET_POWER_INFO)?,
                get_gpu_asic_info: opened.optional(symbols::GET_GPU_ASIC_INFO),
                get_gpu_driver_info: opened.optional(symbols::GET_GPU_DRIVER_INFO),
            }
        };
        Ok(Self { api })
    }
}

impl AmdSmiLibrary {
    pub(super) fn api(&self) -> &Api {
        &self.entries().api
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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
