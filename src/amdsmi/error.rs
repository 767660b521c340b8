//! Typed AMD SMI errors: status codes, call failures and library loading
//! (the shape of `LoadError` is shared with `nvml`, see `dynlib`).

use std::fmt;

use super::sys::*;

/// A failed AMD SMI call: which entry point, its status, and the library's
/// own words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmdSmiError {
    Call {
        function: &'static str,
        status: amdsmi_status_t,
        description: String,
    },
}

/// The `AMDSMI_STATUS_*` suffix for the codes this scaler names, else the
/// number.
pub fn status_name(status: amdsmi_status_t) -> &'static str {
    match status {
        AMDSMI_STATUS_INVAL => "INVAL",
        AMDSMI_STATUS_NOT_SUPPORTED => "NOT_SUPPORTED",
        AMDSMI_STATUS_NOT_YET_IMPLEMENTED => "NOT_YET_IMPLEMENTED",
        AMDSMI_STATUS_TIMEOUT => "TIMEOUT",
        AMDSMI_STATUS_NO_PERM => "NO_PERM",
        AMDSMI_STATUS_IO => "IO",
        AMDSMI_STATUS_FILE_ERROR => "FILE_ERROR",
        AMDSMI_STATUS_INIT_ERROR => "INIT_ERROR",
        AMDSMI_STATUS_BUSY => "BUSY",
        AMDSMI_STATUS_NOT_FOUND => "NOT_FOUND",
        AMDSMI_STATUS_NOT_INIT => "NOT_INIT",
        AMDSMI_STATUS_DRIVER_NOT_LOADED => "DRIVER_NOT_LOADED",
        AMDSMI_STATUS_NO_DATA => "NO_DATA",
        AMDSMI_STATUS_INSUFFICIENT_SIZE => "INSUFFICIENT_SIZE",
        AMDSMI_STATUS_UNEXPECTED_DATA => "UNEXPECTED_DATA",
        AMDSMI_STATUS_UNKNOWN_ERROR => "UNKNOWN_ERROR",
        _ => "OTHER",
    }
}

impl AmdSmiError {
    pub fn status(&self) -> amdsmi_status_t {
        match self {
            Self::Call { status, .. } => *status,
        }
    }

    /// The device or library does not offer this reading; not a fault.
    pub fn is_not_supported(&self) -> bool {
        matches!(
            self.status(),
            AMDSMI_STATUS_NOT_SUPPORTED | AMDSMI_STATUS_NOT_YET_IMPLEMENTED
        )
    }

    /// The session is gone (the library was shut down or lost its state):
    /// only a new `amdsmi_init` helps.
    pub fn is_not_initialised(&self) -> bool {
        self.status() == AMDSMI_STATUS_NOT_INIT
    }
}

impl fmt::Display for AmdSmiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call {
                function,
                status,
                description,
            } => write!(
                f,
                "{function} failed: AMDSMI_STATUS_{} ({status}): {description}",
                status_name(*status)
            ),
        }
    }
}

impl std::error::Error for AmdSmiError {}

crate::dynlib::load_error!(
    /// Why the library could not be used at all.
    not_found
);

/// "Not found": paths that do not exist are many (every name in every
/// directory), so they are summarised; any other failure is listed.
fn not_found(f: &mut fmt::Formatter<'_>, tried: &[(String, String)]) -> fmt::Result {
    write!(f, "cannot load the AMD SMI library (libamd_smi.so); ")?;
    // Paths that do not exist are many (every name in every
    // directory): summarise them; list any other failure.
    let absent = |e: &str| e.contains("No such file or directory");
    let (missing, failed): (Vec<_>, Vec<_>) = tried.iter().partition(|(_, e)| absent(e));
    if !missing.is_empty() {
        let mut names: Vec<&str> = Vec::new();
        let mut dirs: Vec<&str> = Vec::new();
        for (path, _) in &missing {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if !names.contains(&name) {
                names.push(name);
            }
            if !dir.is_empty() && !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        write!(f, "no {} found", names.join(", "))?;
        match (
            missing.iter().any(|(p, _)| !p.contains('/')),
            dirs.is_empty(),
        ) {
            (true, true) => write!(f, " by the loader's search")?,
            (true, false) => write!(f, " by the loader's search or in {}", dirs.join(", "))?,
            (false, _) => write!(f, " in {}", dirs.join(", "))?,
        }
    }
    for (i, (path, error)) in failed.iter().enumerate() {
        let sep = if i == 0 && missing.is_empty() {
            ""
        } else {
            "; "
        };
        write!(f, "{sep}{path} ({error})")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_error_names_function_status_and_description() {
        let err = AmdSmiError::Call {
            function: "amdsmi_get_power_info",
            status: AMDSMI_STATUS_BUSY,
            description: "Device busy".into(),
        };
        assert_eq!(
            err.to_string(),
            "amdsmi_get_power_info failed: AMDSMI_STATUS_BUSY (30): Device busy"
        );
        assert!(!err.is_not_supported());
        let absent = AmdSmiError::Call {
            function: "amdsmi_get_temp_metric",
            status: AMDSMI_STATUS_NOT_SUPPORTED,
            description: String::new(),
        };
        assert!(absent.is_not_supported());
        assert_eq!(status_name(12345), "OTHER");
    }

    #[test]
    fn absent_paths_are_summarised_and_other_failures_listed() {
        let gone = |p: &str| {
            (
                p.to_string(),
                format!("{p}: cannot open shared object file: No such file or directory"),
            )
        };
        let error = LoadError::LibraryNotFound {
            tried: vec![
                gone("libamd_smi.so"),
                gone("libamd_smi.so.26"),
                gone("/opt/rocm/lib/libamd_smi.so"),
                (
                    "/opt/rocm/lib/libamd_smi.so.26".into(),
                    "libdrm_amdgpu.so.1: cannot open shared object file".into(),
                ),
            ],
        };
        assert_eq!(
            error.to_string(),
            "cannot load the AMD SMI library (libamd_smi.so); no libamd_smi.so, libamd_smi.so.26 found by the loader's search or in /opt/rocm/lib; /opt/rocm/lib/libamd_smi.so.26 (libdrm_amdgpu.so.1: cannot open shared object file)"
        );
    }
}
