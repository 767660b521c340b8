//! The NVML FFI through the production dlopen path, against the fake library.

mod common;

use std::path::Path;

use common::{FakeNvml, Variant};
use keda_gpu_scaler::node::gpu_metric::Metric;
use keda_gpu_scaler::node::nvidia::read_node;
use keda_gpu_scaler::node::snapshot::GpuHealth;
use keda_gpu_scaler::nvml::{LoadError, Nvml, NvmlLibrary, OpenError, ReturnCode};

/// Opens the fake through the production path for an explicit library.
fn open_fake(path: &Path) -> Result<Nvml, OpenError> {
    // SAFETY: the fake's initialisers only set up Rust statics.
    unsafe { Nvml::open_path(path) }
}

/// Loads a library (the fake, or one that is not NVML) without initialising it.
fn load_fake(path: &Path) -> Result<NvmlLibrary, LoadError> {
    // SAFETY: the fake's initialisers only set up Rust statics; libc's are
    // already run in this process.
    unsafe { NvmlLibrary::open_path(path) }
}

const ONE_GPU: &str = "driver 550.54.15\n\
gpu 0 uuid=GPU-4f2a name=\"NVIDIA H100 80GB HBM3\" util=37 mem_util=12 mem_total_mib=81920 mem_used_mib=20480 mem_reserved_mib=512 temp=41 power_mw=71500\n";

#[test]
fn every_metric_is_read_and_converted() {
    let fake = FakeNvml::new(ONE_GPU);
    let nvml = open_fake(&fake.library).expect("open fake NVML");
    assert_eq!(nvml.driver_version().unwrap(), "550.54.15");
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    assert_eq!(gpus.len(), 1);
    let gpu = &gpus[0];
    assert_eq!(
        (gpu.index, gpu.uuid.as_deref(), gpu.name.as_deref()),
        (0, Some("GPU-4f2a"), Some("NVIDIA H100 80GB HBM3"))
    );
    let readings = gpu.readings().expect("healthy");
    assert_eq!(readings.get(Metric::GpuUtilization), Some(37.0));
    assert_eq!(readings.get(Metric::MemoryUtilization), Some(12.0));
    // _v2 memory info: used excludes the 512 MiB the driver reserves.
    assert_eq!(readings.get(Metric::MemoryUsedMib), Some(20480.0));
    assert_eq!(readings.get(Metric::MemoryUsedPercent), Some(25.0));
    assert_eq!(readings.get(Metric::Temperature), Some(41.0));
    // Milliwatts to watts.
    assert_eq!(readings.get(Metric::PowerDraw), Some(71.5));
    assert!(matches!(
        gpu.health,
        GpuHealth::Healthy {
            mig_enabled: Some(false),
            ..
        }
    ));
}

#[test]
fn versioned_symbols_are_preferred() {
    let fake = FakeNvml::new(ONE_GPU);
    let library = load_fake(&fake.library).unwrap();
    assert!(library.has_memory_info_v2());
}

#[test]
fn library_without_v2_symbols_falls_back_to_v1() {
    let fake = FakeNvml::with_variant(Variant::V1Only, ONE_GPU);
    let library = std::sync::Arc::new(load_fake(&fake.library).expect("v1 library loads"));
    assert!(!library.has_memory_info_v2());
    let nvml = Nvml::init(library).expect("nvmlInit");
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    let readings = gpus[0].readings().unwrap();
    assert_eq!(readings.get(Metric::GpuUtilization), Some(37.0));
    // v1 memory info counts reserved memory as used.
    assert_eq!(readings.get(Metric::MemoryUsedMib), Some(20992.0));
}

#[test]
fn missing_library_error_lists_the_path_tried() {
    let err = load_fake(Path::new("/nonexistent/libnvidia-ml.so.1"))
        .err()
        .unwrap();
    let message = err.to_string();
    assert!(
        matches!(err, LoadError::LibraryNotFound { ref tried } if tried.len() == 1),
        "{message}"
    );
    assert!(message.starts_with("cannot load the NVML library (libnvidia-ml.so.1); tried /nonexistent/libnvidia-ml.so.1 ("), "{message}");
}

#[test]
fn default_search_lists_every_path_tried() {
    let candidates = keda_gpu_scaler::nvml::candidate_paths();
    match NvmlLibrary::open() {
        // A machine with a real driver loads it: from one of the places
        // searched, with every required entry point resolved.
        Ok(library) => {
            assert!(
                candidates
                    .iter()
                    .any(|c| c.display().to_string() == library.path()),
                "{} is not a search candidate",
                library.path()
            );
        }
        Err(err) => {
            let message = err.to_string();
            for path in candidates {
                assert!(
                    message.contains(&path.display().to_string()),
                    "{path:?} not in {message}"
                );
            }
        }
    }
}

#[test]
fn library_without_required_symbol_is_a_load_error() {
    let err = load_fake(Path::new("libc.so.6")).err().unwrap();
    assert!(
        matches!(
            err,
            LoadError::MissingEntryPoint {
                symbol: "nvmlInit",
                ..
            }
        ),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn init_failure_is_typed() {
    let fake = FakeNvml::new("init_error DRIVER_NOT_LOADED\n");
    match open_fake(&fake.library) {
        Err(OpenError::Init(e)) => {
            assert_eq!(e.code(), Some(ReturnCode::DriverNotLoaded));
            assert_eq!(
                e.to_string(),
                "nvmlInit failed: NVML_ERROR_DRIVER_NOT_LOADED (9): Driver Not Loaded"
            );
        }
        Err(e) => panic!("expected an init error, got {e}"),
        Ok(_) => panic!("init should fail"),
    }
}

#[test]
fn not_supported_metric_is_absent_not_zero() {
    let fake = FakeNvml::new(&format!(
        "{ONE_GPU}fail 0 power NOT_SUPPORTED\nfail 0 temperature NOT_SUPPORTED\n"
    ));
    let nvml = open_fake(&fake.library).unwrap();
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    let readings = gpus[0].readings().expect("still healthy");
    assert_eq!(readings.get(Metric::PowerDraw), None);
    assert_eq!(readings.get(Metric::Temperature), None);
    assert_eq!(readings.get(Metric::GpuUtilization), Some(37.0));
}

#[test]
fn mig_gpu_reports_no_utilization() {
    let fake = FakeNvml::new("gpu 0 util=50 mem_used_mib=1024 mig=1 mig_uuids=MIG-aa,MIG-bb\n");
    let nvml = open_fake(&fake.library).unwrap();
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    // Enumerated through the optional MIG entry points, skipping the empty slot.
    let uuids: Vec<&str> = gpus[0].mig.iter().map(|m| m.uuid.as_str()).collect();
    assert_eq!(uuids, ["MIG-aa", "MIG-bb"]);
    match &gpus[0].health {
        GpuHealth::Healthy {
            readings,
            mig_enabled,
        } => {
            assert_eq!(*mig_enabled, Some(true));
            assert_eq!(readings.get(Metric::GpuUtilization), None);
            assert_eq!(readings.get(Metric::MemoryUsedMib), Some(1024.0));
        }
        other => panic!("expected healthy, got {other:?}"),
    }
}

#[test]
fn lost_gpu_is_marked_lost_and_others_still_read() {
    let fake = FakeNvml::new(&format!(
        "{ONE_GPU}gpu 1 util=80\nfail 1 utilization GPU_IS_LOST\n"
    ));
    let nvml = open_fake(&fake.library).unwrap();
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    assert!(gpus[0].readings().is_some());
    match &gpus[1].health {
        GpuHealth::Lost { error } => assert_eq!(
            error,
            "nvmlDeviceGetUtilizationRates failed: NVML_ERROR_GPU_IS_LOST (15): GPU is lost"
        ),
        other => panic!("expected lost, got {other:?}"),
    }
}

#[test]
fn other_gpu_errors_mark_it_failed() {
    let fake = FakeNvml::new(&format!("{ONE_GPU}fail 0 handle UNKNOWN\n"));
    let nvml = open_fake(&fake.library).unwrap();
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    assert!(
        matches!(&gpus[0].health, GpuHealth::Failed { error } if error.contains("NVML_ERROR_UNKNOWN (999)")),
        "{:?}",
        gpus[0]
    );
}

#[test]
fn not_supported_metric_is_unreported_with_nvmls_answer() {
    let fake = FakeNvml::new(&format!("{ONE_GPU}fail 0 power NOT_SUPPORTED\n"));
    let nvml = open_fake(&fake.library).unwrap();
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    // Absent, not failed, and the reason is NVML's own answer.
    assert_eq!(gpus[0].read_error(Metric::PowerDraw), None);
    assert_eq!(
        gpus[0]
            .unreported(Metric::PowerDraw)
            .map(ToString::to_string),
        Some(String::from(
            "nvmlDeviceGetPowerUsage failed: NVML_ERROR_NOT_SUPPORTED (3): Not Supported"
        ))
    );
    // A GPU in MIG mode lacks utilization because of MIG, and says so.
    let fake = FakeNvml::new("gpu 0 util=50 mig=1 mig_uuids=MIG-aa\n");
    let nvml = open_fake(&fake.library).unwrap();
    let gpus = read_node(&nvml, &mut keda_gpu_scaler::node::rates::Rates::default()).unwrap();
    assert_eq!(
        gpus[0]
            .unreported(Metric::GpuUtilization)
            .map(ToString::to_string),
        Some(String::from("MIG is enabled"))
    );
}
