//! Typed NVML errors: return codes, call failures and library loading
//! (the shape of `LoadError` is shared with `amdsmi`, see `dynlib`).

use std::fmt;

use super::sys::*;

/// An `nvmlReturn_t` other than success, with a catch-all for codes newer
/// than this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnCode {
    Uninitialized,
    InvalidArgument,
    NotSupported,
    NoPermission,
    AlreadyInitialized,
    NotFound,
    InsufficientSize,
    InsufficientPower,
    DriverNotLoaded,
    Timeout,
    IrqIssue,
    LibraryNotFound,
    FunctionNotFound,
    CorruptedInforom,
    GpuIsLost,
    ResetRequired,
    OperatingSystem,
    LibRmVersionMismatch,
    InUse,
    Memory,
    NoData,
    VgpuEccNotSupported,
    InsufficientResources,
    FreqNotSupported,
    ArgumentVersionMismatch,
    Deprecated,
    NotReady,
    GpuNotFound,
    InvalidState,
    Unknown(nvmlReturn_t),
}

impl From<nvmlReturn_t> for ReturnCode {
    fn from(code: nvmlReturn_t) -> Self {
        match code {
            NVML_ERROR_UNINITIALIZED => Self::Uninitialized,
            NVML_ERROR_INVALID_ARGUMENT => Self::InvalidArgument,
            NVML_ERROR_NOT_SUPPORTED => Self::NotSupported,
            NVML_ERROR_NO_PERMISSION => Self::NoPermission,
            NVML_ERROR_ALREADY_INITIALIZED => Self::AlreadyInitialized,
            NVML_ERROR_NOT_FOUND => Self::NotFound,
            NVML_ERROR_INSUFFICIENT_SIZE => Self::InsufficientSize,
            NVML_ERROR_INSUFFICIENT_POWER => Self::InsufficientPower,
            NVML_ERROR_DRIVER_NOT_LOADED => Self::DriverNotLoaded,
            NVML_ERROR_TIMEOUT => Self::Timeout,
            NVML_ERROR_IRQ_ISSUE => Self::IrqIssue,
            NVML_ERROR_LIBRARY_NOT_FOUND => Self::LibraryNotFound,
            NVML_ERROR_FUNCTION_NOT_FOUND => Self::FunctionNotFound,
            NVML_ERROR_CORRUPTED_INFOROM => Self::CorruptedInforom,
            NVML_ERROR_GPU_IS_LOST => Self::GpuIsLost,
            NVML_ERROR_RESET_REQUIRED => Self::ResetRequired,
            NVML_ERROR_OPERATING_SYSTEM => Self::OperatingSystem,
            NVML_ERROR_LIB_RM_VERSION_MISMATCH => Self::LibRmVersionMismatch,
            NVML_ERROR_IN_USE => Self::InUse,
            NVML_ERROR_MEMORY => Self::Memory,
            NVML_ERROR_NO_DATA => Self::NoData,
            NVML_ERROR_VGPU_ECC_NOT_SUPPORTED => Self::VgpuEccNotSupported,
            NVML_ERROR_INSUFFICIENT_RESOURCES => Self::InsufficientResources,
            NVML_ERROR_FREQ_NOT_SUPPORTED => Self::FreqNotSupported,
            NVML_ERROR_ARGUMENT_VERSION_MISMATCH => Self::ArgumentVersionMismatch,
            NVML_ERROR_DEPRECATED => Self::Deprecated,
            NVML_ERROR_NOT_READY => Self::NotReady,
            NVML_ERROR_GPU_NOT_FOUND => Self::GpuNotFound,
            NVML_ERROR_INVALID_STATE => Self::InvalidState,
            other => Self::Unknown(other),
        }
    }
}

impl ReturnCode {
    /// The numeric code as NVML returned it.
    pub fn code(self) -> nvmlReturn_t {
        match self {
            Self::Uninitialized => NVML_ERROR_UNINITIALIZED,
            Self::InvalidArgument => NVML_ERROR_INVALID_ARGUMENT,
            Self::NotSupported => NVML_ERROR_NOT_SUPPORTED,
            Self::NoPermission => NVML_ERROR_NO_PERMISSION,
            Self::AlreadyInitialized => NVML_ERROR_ALREADY_INITIALIZED,
            Self::NotFound => NVML_ERROR_NOT_FOUND,
            Self::InsufficientSize => NVML_ERROR_INSUFFICIENT_SIZE,
            Self::InsufficientPower => NVML_ERROR_INSUFFICIENT_POWER,
            Self::DriverNotLoaded => NVML_ERROR_DRIVER_NOT_LOADED,
            Self::Timeout => NVML_ERROR_TIMEOUT,
            Self::IrqIssue => NVML_ERROR_IRQ_ISSUE,
            Self::LibraryNotFound => NVML_ERROR_LIBRARY_NOT_FOUND,
            Self::FunctionNotFound => NVML_ERROR_FUNCTION_NOT_FOUND,
            Self::CorruptedInforom => NVML_ERROR_CORRUPTED_INFOROM,
            Self::GpuIsLost => NVML_ERROR_GPU_IS_LOST,
            Self::ResetRequired => NVML_ERROR_RESET_REQUIRED,
            Self::OperatingSystem => NVML_ERROR_OPERATING_SYSTEM,
            Self::LibRmVersionMismatch => NVML_ERROR_LIB_RM_VERSION_MISMATCH,
            Self::InUse => NVML_ERROR_IN_USE,
            Self::Memory => NVML_ERROR_MEMORY,
            Self::NoData => NVML_ERROR_NO_DATA,
            Self::VgpuEccNotSupported => NVML_ERROR_VGPU_ECC_NOT_SUPPORTED,
            Self::InsufficientResources => NVML_ERROR_INSUFFICIENT_RESOURCES,
            Self::FreqNotSupported => NVML_ERROR_FREQ_NOT_SUPPORTED,
            Self::ArgumentVersionMismatch => NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
            Self::Deprecated => NVML_ERROR_DEPRECATED,
            Self::NotReady => NVML_ERROR_NOT_READY,
            Self::GpuNotFound => NVML_ERROR_GPU_NOT_FOUND,
            Self::InvalidState => NVML_ERROR_INVALID_STATE,
            Self::Unknown(code) => code,
        }
    }

    /// The `NVML_ERROR_*` suffix, e.g. `GPU_IS_LOST`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uninitialized => "UNINITIALIZED",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::NotSupported => "NOT_SUPPORTED",
            Self::NoPermission => "NO_PERMISSION",
            Self::AlreadyInitialized => "ALREADY_INITIALIZED",
            Self::NotFound => "NOT_FOUND",
            Self::InsufficientSize => "INSUFFICIENT_SIZE",
            Self::InsufficientPower => "INSUFFICIENT_POWER",
            Self::DriverNotLoaded => "DRIVER_NOT_LOADED",
            Self::Timeout => "TIMEOUT",
            Self::IrqIssue => "IRQ_ISSUE",
            Self::LibraryNotFound => "LIBRARY_NOT_FOUND",
            Self::FunctionNotFound => "FUNCTION_NOT_FOUND",
            Self::CorruptedInforom => "CORRUPTED_INFOROM",
            Self::GpuIsLost => "GPU_IS_LOST",
            Self::ResetRequired => "RESET_REQUIRED",
            Self::OperatingSystem => "OPERATING_SYSTEM",
            Self::LibRmVersionMismatch => "LIB_RM_VERSION_MISMATCH",
            Self::InUse => "IN_USE",
            Self::Memory => "MEMORY",
            Self::NoData => "NO_DATA",
            Self::VgpuEccNotSupported => "VGPU_ECC_NOT_SUPPORTED",
            Self::InsufficientResources => "INSUFFICIENT_RESOURCES",
            Self::FreqNotSupported => "FREQ_NOT_SUPPORTED",
            Self::ArgumentVersionMismatch => "ARGUMENT_VERSION_MISMATCH",
            Self::Deprecated => "DEPRECATED",
            Self::NotReady => "NOT_READY",
            Self::GpuNotFound => "GPU_NOT_FOUND",
            Self::InvalidState => "INVALID_STATE",
            Self::Unknown(_) => "UNKNOWN",
        }
    }
}

/// A failed NVML call: which entry point, its code, and NVML's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmlError {
    Call {
        function: &'static str,
        code: ReturnCode,
        description: String,
    },
    /// An optional entry point this driver does not export.
    MissingSymbol(&'static str),
}

impl NvmlError {
    /// The return code, when NVML returned one.
    pub fn code(&self) -> Option<ReturnCode> {
        match self {
            Self::Call { code, .. } => Some(*code),
            Self::MissingSymbol(_) => None,
        }
    }

    /// GPU_IS_LOST: the device fell off the bus or needs a reset.
    pub fn is_gpu_lost(&self) -> bool {
        self.code() == Some(ReturnCode::GpuIsLost)
    }

    /// The device or driver does not offer this reading; not a fault.
    pub fn is_not_supported(&self) -> bool {
        matches!(self.code(), Some(ReturnCode::NotSupported))
            || matches!(self, Self::MissingSymbol(_))
    }
}

impl fmt::Display for NvmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call {
                function,
                code,
                description,
            } => write!(
                f,
                "{function} failed: NVML_ERROR_{} ({}): {description}",
                code.name(),
                code.code()
            ),
            Self::MissingSymbol(symbol) => {
                write!(f, "{symbol} is not exported by this NVML library")
            }
        }
    }
}

impl std::error::Error for NvmlError {}

crate::dynlib::load_error!(
    /// The NVML library could not be opened or lacks a required entry point.
    not_found
);

/// "Not found", listing every path tried and why it failed, then what
/// to do on the platform the chart says this pod runs on.
fn not_found(f: &mut fmt::Formatter<'_>, tried: &[(String, String)]) -> fmt::Result {
    write!(f, "cannot load the NVML library (libnvidia-ml.so.1); tried")?;
    for (i, (path, error)) in tried.iter().enumerate() {
        let sep = if i == 0 { " " } else { "; " };
        write!(f, "{sep}{path} ({error})")?;
    }
    let platform = std::env::var(PLATFORM_ENV).unwrap_or_default();
    write!(f, ". {}", platform_hint(&platform))
}

/// The chart's `platform` value, as the pod sees it.
pub const PLATFORM_ENV: &str = "KEDA_GPU_SCALER_PLATFORM";

/// What makes NVML loadable on `platform` (the README's "NVML not found,
/// per platform").
pub fn platform_hint(platform: &str) -> &'static str {
    match platform {
        "gke" => "On GKE: is GKE's driver installed on this node (gpu-driver-version not disabled), and Google's NRI device injector running with gke.gpusPerNode right?",
        "gpu-operator" => "With the GPU Operator: set runtimeClassName to the operator's runtime class (kubectl get runtimeclass); /run/nvidia/driver appears once the operator's driver pod is ready",
        "eks" => "On EKS: use the AL2023 NVIDIA AMI, or on Bottlerocket allow NVIDIA_VISIBLE_DEVICES for unprivileged containers",
        "aks" => "On AKS: the node pool needs AKS's GPU driver (not --gpu-driver none); else install the GPU Operator and set platform=gpu-operator",
        "oke" => "On OKE: install the GPU Operator and set platform=gpu-operator",
        _ => "On GKE install the chart with platform=gke (and gke.gpusPerNode); with the GPU Operator v25.10+ set platform=gpu-operator; on Bottlerocket allow NVIDIA_VISIBLE_DEVICES for unprivileged containers; see the README's \"NVML not found, per platform\"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_round_trips() {
        for code in (1..=29).chain([999, 12345]) {
            assert_eq!(ReturnCode::from(code).code(), code);
        }
        assert_eq!(ReturnCode::from(15), ReturnCode::GpuIsLost);
        assert_eq!(ReturnCode::from(12345), ReturnCode::Unknown(12345));
    }

    #[test]
    fn call_error_names_function_code_and_description() {
        let err = NvmlError::Call {
            function: "nvmlDeviceGetPowerUsage",
            code: ReturnCode::GpuIsLost,
            description: "GPU is lost".into(),
        };
        assert!(err.is_gpu_lost());
        assert_eq!(
            err.to_string(),
            "nvmlDeviceGetPowerUsage failed: NVML_ERROR_GPU_IS_LOST (15): GPU is lost"
        );
    }
}
