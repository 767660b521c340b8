//! NVML found where each platform puts it, through the real binary: the
//! fake library placed at GKE's in-container path (`/usr/local/nvidia/lib64`,
//! the chart's mount of `/home/kubernetes/bin/nvidia`) under a temporary
//! root is found without `--nvml-library`; not found, the error names every
//! path tried and the platform's fix.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// `devices` with the driver searched under `root`, as the chart's pod
/// would see it, on `platform`.
fn devices_under(root: &Path, scenario: &Path, platform: &str) -> Output {
    Command::new(BINARY)
        .args(["devices", "--gpu-backend", "nvidia"])
        .env_remove("NVML_LIBRARY_PATH")
        .env("KEDA_GPU_SCALER_DRIVER_ROOT", root)
        .env("KEDA_GPU_SCALER_PLATFORM", platform)
        .env("FAKE_NVML_SCENARIO", scenario)
        .output()
        .expect("run devices")
}

#[test]
fn nvml_is_found_at_gkes_mount_without_naming_it() {
    let fake = FakeNvml::new("gpu 0 uuid=GPU-gke name=\"NVIDIA L4\" util=12\n");
    let root = fake.dir.join("root");
    let lib64 = root.join("usr/local/nvidia/lib64");
    std::fs::create_dir_all(&lib64).unwrap();
    std::fs::copy(&fake.library, lib64.join("libnvidia-ml.so.1")).unwrap();
    let found = devices_under(&root, &fake.scenario, "gke");
    let text = String::from_utf8_lossy(&found.stdout);
    assert!(found.status.success(), "{found:?}");
    assert!(
        text.contains("GPU-gke") && text.contains("NVIDIA L4"),
        "{text}"
    );
}

#[test]
fn nvml_not_found_names_every_path_and_the_platforms_fix() {
    let fake = FakeNvml::new("gpu 0\n");
    let empty = fake.dir.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    for (platform, fix) in [
        ("generic", "On GKE install the chart with platform=gke"),
        ("gke", "On GKE: is GKE's driver installed on this node"),
        (
            "gpu-operator",
            "set runtimeClassName to the operator's runtime class",
        ),
        ("aks", "the node pool needs AKS's GPU driver"),
    ] {
        let missing = devices_under(&empty, &fake.scenario, platform);
        assert_eq!(missing.status.code(), Some(1), "{missing:?}");
        let stderr = String::from_utf8_lossy(&missing.stderr);
        let gke_path = empty.join("usr/local/nvidia/lib64/libnvidia-ml.so.1");
        assert!(
            stderr.contains(&format!("{}", gke_path.display())) && stderr.contains(fix),
            "{platform}: {stderr}"
        );
        // Under another root, the bare soname (the host's loader) is not tried.
        assert!(!stderr.contains("tried libnvidia-ml.so.1 ("), "{stderr}");
    }
}
