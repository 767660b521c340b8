//! The sampler's fault handling, seen the way KEDA sees it: through GetMetrics
//! over loopback gRPC, with the fake NVML changing underneath.

mod common;

use common::*;
use grpcio::RpcStatusCode;

fn two_gpus(util0: u32, util1: u32) -> String {
    format!("{}{}", gpu_line(0, util0), gpu_line(1, util1))
}

#[test]
fn one_lost_gpu_is_excluded_and_reported() {
    let fake = FakeNvml::new(&two_gpus(30, 90));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 90.0);

    fake.set(&format!("{}fail 1 * GPU_IS_LOST\n", two_gpus(30, 90)));
    wait_for_value(&client, &[], 30.0);
    // Selecting the lost GPU is an error, never a 0.
    let (code, message) = value(&client, &[("gpuIndex", "1")]).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(
        message.contains("GPU 1") && message.contains("GPU_IS_LOST"),
        "{message}"
    );
}

#[test]
fn all_gpus_lost_is_unavailable() {
    let fake = FakeNvml::new(&two_gpus(30, 90));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 90.0);

    fake.set(&format!(
        "{}fail 0 * GPU_IS_LOST\nfail 1 * GPU_IS_LOST\n",
        two_gpus(30, 90)
    ));
    let message = wait_for_error(
        &client,
        &[],
        RpcStatusCode::UNAVAILABLE,
        "no healthy GPU reports gpu_utilization",
    );
    assert!(
        message.contains("GPU 0") && message.contains("GPU 1"),
        "{message}"
    );
    let active = is_active(&client, &[]).map_err(status_of).unwrap_err();
    assert_eq!(active.0, RpcStatusCode::UNAVAILABLE);
}

#[test]
fn lost_gpu_that_comes_back_is_included_again() {
    let fake = FakeNvml::new(&format!("{}fail 1 * GPU_IS_LOST\n", two_gpus(30, 90)));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 30.0);
    fake.set(&two_gpus(30, 90));
    wait_for_value(&client, &[], 90.0);
}

#[test]
fn hang_makes_readings_stale_then_recovers() {
    let fake = FakeNvml::new(&two_gpus(40, 20));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 40.0);

    fake.set(&format!("{}hang 0 power 60000\n", two_gpus(40, 20)));
    // The call deadline is 5 s: an answer of UNAVAILABLE (not DEADLINE_EXCEEDED)
    // proves the handler answered from the snapshot while NVML hangs.
    let message = wait_for_error(
        &client,
        &[],
        RpcStatusCode::UNAVAILABLE,
        "GPU readings are stale",
    );
    assert!(message.contains("limit 0.3s"), "{message}");
    let active = is_active(&client, &[]).map_err(status_of).unwrap_err();
    assert_eq!(active.0, RpcStatusCode::UNAVAILABLE);

    fake.set(&two_gpus(55, 20));
    wait_for_value(&client, &[], 55.0);
}

#[test]
fn late_driver_is_picked_up_by_retry() {
    let fake = FakeNvml::new("init_error DRIVER_NOT_LOADED\n");
    let server = start_server(&fake);
    let client = client(server.port());
    let message = wait_for_error(
        &client,
        &[],
        RpcStatusCode::UNAVAILABLE,
        "NVML_ERROR_DRIVER_NOT_LOADED",
    );
    assert!(
        message.starts_with("NVML is not available: nvmlInit failed"),
        "{message}"
    );

    fake.set(&gpu_line(0, 63));
    wait_for_value(&client, &[], 63.0);
}

#[test]
fn library_installed_after_start_is_loaded() {
    let fake = FakeNvml::unplaced();
    fake.set(&gpu_line(0, 12));
    let server = start_server_at(&fake.library);
    let client = client(server.port());
    let message = wait_for_error(
        &client,
        &[],
        RpcStatusCode::UNAVAILABLE,
        "cannot load the NVML library",
    );
    assert!(
        message.contains(&fake.library.display().to_string()),
        "{message}"
    );

    fake.place_library(Variant::Full);
    wait_for_value(&client, &[], 12.0);
}

#[test]
fn reinitialised_nvml_is_picked_up_without_restart() {
    let fake = FakeNvml::new(&format!("generation 1\n{}", gpu_line(0, 10)));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 10.0);
    // A new generation invalidates the session, like a driver reload: every
    // call answers UNINITIALIZED until nvmlInit runs again.
    fake.set(&format!("generation 2\n{}", gpu_line(0, 70)));
    wait_for_value(&client, &[], 70.0);
}

#[test]
fn whole_nvml_failure_is_unavailable() {
    let fake = FakeNvml::new(&gpu_line(0, 10));
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_value(&client, &[], 10.0);
    fake.set(&format!("count_error UNKNOWN\n{}", gpu_line(0, 10)));
    let message = wait_for_error(
        &client,
        &[],
        RpcStatusCode::UNAVAILABLE,
        "NVML stopped answering",
    );
    assert!(message.contains("nvmlDeviceGetCount failed"), "{message}");
    fake.set(&gpu_line(0, 11));
    wait_for_value(&client, &[], 11.0);
}

#[test]
fn node_with_no_gpus_is_unavailable() {
    let fake = FakeNvml::new("driver 550.1\n");
    let server = start_server(&fake);
    let client = client(server.port());
    wait_for_error(
        &client,
        &[],
        RpcStatusCode::UNAVAILABLE,
        "the GPU library reports no GPUs",
    );
}

#[test]
fn a_selected_gpu_whose_read_fails_is_unavailable_never_a_smaller_sum() {
    let fake = FakeNvml::new(&two_gpus(30, 90));
    let server = start_server(&fake);
    let client = client(server.port());
    let sum = [("aggregation", "sum")];
    wait_for_value(&client, &sum, 120.0);

    // A TIMEOUT on GPU 1's utilization: without it the sum would read 30.
    fake.set(&format!("{}fail 1 utilization TIMEOUT\n", two_gpus(30, 90)));
    let message = wait_for_error(
        &client,
        &sum,
        RpcStatusCode::UNAVAILABLE,
        "cannot read gpu_utilization of every selected GPU",
    );
    assert!(
        message.contains("GPU 1") && message.contains("reading gpu_utilization failed"),
        "{message}"
    );
    // Triggers that do not select it still answer.
    wait_for_value(&client, &[("gpuIndex", "0")], 30.0);

    // A GPU failing as a whole (not lost): the same.
    fake.set(&format!("{}fail 1 * UNKNOWN\n", two_gpus(30, 90)));
    let message = wait_for_error(&client, &sum, RpcStatusCode::UNAVAILABLE, "is failing");
    assert!(message.contains("GPU 1"), "{message}");

    // It reads cleanly again: the whole sum is back.
    fake.set(&two_gpus(30, 90));
    wait_for_value(&client, &sum, 120.0);
}

#[test]
fn a_reading_nvml_does_not_support_is_explained_with_nvmls_answer() {
    let fake = FakeNvml::new(&format!(
        "{}fail 1 temperature NOT_SUPPORTED\n",
        two_gpus(30, 90)
    ));
    let server = start_server(&fake);
    let client = client(server.port());
    let temperature = [("metricType", "temperature")];
    // GPU 1 lacks the reading: left out of the value, as on AMD.
    assert_eq!(wait_for_ok(&client, &temperature), 40.0);
    let explained = explain(server.port(), &temperature).unwrap();
    let line = explained
        .lines()
        .iter()
        .find(|l| l.gpu_index() == 1)
        .expect("a line for GPU 1");
    assert!(!line.counted());
    assert_eq!(
        line.reason(),
        "does not report temperature (nvmlDeviceGetTemperature failed: NVML_ERROR_NOT_SUPPORTED (3): Not Supported)"
    );
}
