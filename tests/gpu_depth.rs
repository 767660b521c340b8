//! GPM activity and PCIe/NVLink throughput through the real dlopen path:
//! the fake NVML exports the GPM and field-value entry points with
//! nvml.h's layouts (its GPM checks the request's version and writes only
//! the slots asked for), and the scaler turns two samples a pass apart
//! into rates. A pass that has no rate of its own (the first, the first
//! after a GPU returns or a MIG instance is recreated, a counter that may
//! have wrapped unseen, a slot the driver left unanswered) is a failed
//! read, never 0 and never a GPU silently left out.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use grpcio::RpcStatusCode;
use keda_gpu_scaler::grpc::server;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// GPU 0: Hopper-like, with GPM, PCIe and NVLink. GPU 1: no GPM, no NVLink.
const TWO_GPUS: &str = "gpu 0 uuid=GPU-h gpm=1 sm=45 occupancy=30 tensor=20 dram=50 pcie_tx_mbps=300 pcie_rx_mbps=120 nvlink_tx_mbps=2000 nvlink_rx_mbps=1000 util=99\n\
gpu 1 uuid=GPU-a util=80 pcie_tx_mbps=50\n";

fn within(value: f64, expected: f64, tolerance: f64) -> bool {
    (value - expected).abs() <= expected * tolerance
}

/// Waits until GetMetrics gives a value `accept` takes; returns it.
fn wait_for(
    client: &keda_gpu_scaler::proto::externalscaler_grpc::ExternalScalerClient,
    pairs: &[(&str, &str)],
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let mut last = None;
    let reached = wait_until(PATIENCE, || {
        last = Some(value(client, pairs));
        matches!(last, Some(Ok(v)) if accept(v))
    });
    assert!(reached, "{pairs:?}: last answer {last:?}");
    last.unwrap().unwrap()
}

#[test]
fn a_pass_too_soon_for_a_gpm_window_keeps_the_latest_rates() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;
    use keda_gpu_scaler::nvml::Nvml;

    let fake = FakeNvml::new(TWO_GPUS);
    // SAFETY: the fake's initialisers only set up Rust statics.
    let nvml = unsafe { Nvml::open_path(&fake.library) }.unwrap();
    let sm = |gpus: &[keda_gpu_scaler::node::snapshot::GpuSample]| {
        gpus[0].readings().and_then(|r| r.get(Metric::SmActivity))
    };
    // Two passes at once: no window yet, a failed read with the reason
    // (the GPU has GPM: leaving it out would read low).
    let mut rates = Rates::default();
    read_node(&nvml, &mut rates).unwrap();
    let gpus = read_node(&nvml, &mut rates).unwrap();
    assert_eq!(sm(&gpus), None);
    assert!(
        gpus[0]
            .read_error(Metric::SmActivity)
            .unwrap()
            .to_string()
            .contains("the pass came sooner"),
        "{:?}",
        gpus[0].read_errors
    );
    assert_eq!(gpus[0].unreported(Metric::SmActivity), None);
    // Once a window completes, a pass right after it (as at a 100 ms
    // interval with a little jitter) keeps that window's rate.
    assert!(wait_until(PATIENCE, || sm(
        &read_node(&nvml, &mut rates).unwrap()
    ) == Some(45.0)));
    let soon = read_node(&nvml, &mut rates).unwrap();
    assert_eq!(sm(&soon), Some(45.0));
    drop(rates);
}

#[test]
fn gpm_activity_is_a_rate_between_passes_and_absent_without_gpm() {
    let fake = FakeNvml::new(TWO_GPUS);
    let server = start_server(&fake);
    let client = client(server.port());
    for (metric, expected) in [
        ("sm_activity", 45.0),
        ("sm_occupancy", 30.0),
        ("tensor_activity", 20.0),
        ("dram_bandwidth_utilization", 50.0),
    ] {
        wait_for_value(
            &client,
            &[("metricType", metric), ("gpuIndex", "0")],
            expected,
        );
        // GPU 1 has no GPM: absent with the reason, never 0.
        let message = wait_for_error(
            &client,
            &[("metricType", metric), ("gpuIndex", "1")],
            RpcStatusCode::UNAVAILABLE,
            "this GPU has no GPM",
        );
        assert!(
            message.contains(&format!("does not report {metric}")),
            "{message}"
        );
        // Over both GPUs, the one that reports it counts.
        wait_for_value(
            &client,
            &[("metricType", metric), ("aggregation", "max")],
            expected,
        );
    }
    // sm_activity tells a busy kernel from a busy GPU: 99% utilization, 45% of SMs.
    wait_for_value(
        &client,
        &[("metricType", "gpu_utilization"), ("gpuIndex", "0")],
        99.0,
    );
}

#[test]
fn pcie_and_nvlink_throughput_from_counter_deltas() {
    let fake = FakeNvml::new(TWO_GPUS);
    let server = start_server(&fake);
    let client = client(server.port());
    let rate = |metric: &str, gpu: &str| {
        let pairs = [("metricType", metric), ("gpuIndex", gpu)];
        wait_for(&client, &pairs, |_| true)
    };
    for (metric, gpu, expected) in [
        ("pcie_tx_mbps", "0", 300.0),
        ("pcie_rx_mbps", "0", 120.0),
        ("nvlink_tx_mbps", "0", 2000.0),
        ("nvlink_rx_mbps", "0", 1000.0),
        ("pcie_tx_mbps", "1", 50.0),
    ] {
        let value = rate(metric, gpu);
        assert!(
            within(value, expected, 0.02),
            "{metric} on GPU {gpu}: {value}, expected {expected}"
        );
    }
    // No NVLink on GPU 1: absent, saying so.
    let message = wait_for_error(
        &client,
        &[("metricType", "nvlink_tx_mbps"), ("gpuIndex", "1")],
        RpcStatusCode::UNAVAILABLE,
        "no NVLink on this GPU",
    );
    assert!(
        message.contains("does not report nvlink_tx_mbps"),
        "{message}"
    );
}

#[test]
fn a_counter_reset_skips_one_pass_and_a_32_bit_counter_wraps() {
    // A Gen1 x4 link moves at most 0.5 GB in 400 ms, under the 32-bit
    // counter's 4.29 GB: a wrap cannot go unseen, so the rate is kept.
    let fake = FakeNvml::new(
        "gpu 0 uuid=GPU-h nvlink_tx_mbps=2000 nvlink_rx_mbps=1000 nvlink_epoch=1 pcie_bits=32 pcie_gen=1 pcie_width=4 pcie_tx_mbps=400\n",
    );
    // Passes far enough apart that the one without a rate is seen.
    let mut config = local_config(&fake.library);
    config.sample_interval = Duration::from_millis(400);
    let server = server::start(&config).expect("start server");
    let client = client(server.port());
    let nvlink = [("metricType", "nvlink_tx_mbps"), ("gpuIndex", "0")];
    let pcie = [("metricType", "pcie_tx_mbps"), ("gpuIndex", "0")];
    wait_for(&client, &nvlink, |v| within(v, 2000.0, 0.02));
    // The 32-bit PCIe counter started just below 2^32 and wrapped within
    // the first passes; every rate since is the real one.
    for _ in 0..3 {
        let value = wait_for(&client, &pcie, |_| true);
        assert!(within(value, 400.0, 0.02), "pcie_tx_mbps {value}");
    }
    // A driver reload restarts the NVLink counters: that pass has no rate
    // (never a negative or huge one), and the next has the real rate again.
    fake.set("gpu 0 uuid=GPU-h nvlink_tx_mbps=2000 nvlink_rx_mbps=1000 nvlink_epoch=2 pcie_bits=32 pcie_gen=1 pcie_width=4 pcie_tx_mbps=400\n");
    let message = wait_for_error(&client, &nvlink, RpcStatusCode::UNAVAILABLE, "was reset");
    assert!(message.contains("the rate resumes next pass"), "{message}");
    wait_for(&client, &nvlink, |v| within(v, 2000.0, 0.02));
}

#[test]
fn an_old_driver_without_gpm_or_field_values_reports_them_absent() {
    let fake = FakeNvml::with_variant(Variant::V1Only, TWO_GPUS);
    let server = start_server(&fake);
    let client = client(server.port());
    let message = wait_for_error(
        &client,
        &[("metricType", "sm_activity"), ("gpuIndex", "0")],
        RpcStatusCode::UNAVAILABLE,
        "GPM is not available",
    );
    assert!(
        message.contains("is not exported by this NVML library"),
        "{message}"
    );
    let message = wait_for_error(
        &client,
        &[("metricType", "pcie_rx_mbps"), ("gpuIndex", "0")],
        RpcStatusCode::UNAVAILABLE,
        "nvmlDeviceGetFieldValues is not exported",
    );
    assert!(
        message.contains("does not report pcie_rx_mbps"),
        "{message}"
    );
    // The older metrics still read.
    wait_for_value(
        &client,
        &[("metricType", "gpu_utilization"), ("gpuIndex", "0")],
        99.0,
    );
}

#[test]
fn query_and_devices_show_every_new_metric() {
    let fake = FakeNvml::new(TWO_GPUS);
    let port = free_port();
    let serve = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--sample-interval",
            "200ms",
        ])
        .arg("--nvml-library")
        .arg(&fake.library)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn serve");
    // Killed on drop, even when an assertion below fails.
    struct Serve(std::process::Child);
    impl Drop for Serve {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let serve = Serve(serve);
    let client = client(port);
    for (metric, expected) in [
        ("sm_activity", 45.0),
        ("sm_occupancy", 30.0),
        ("tensor_activity", 20.0),
        ("dram_bandwidth_utilization", 50.0),
        ("pcie_tx_mbps", 300.0),
        ("pcie_rx_mbps", 120.0),
        ("nvlink_tx_mbps", 2000.0),
        ("nvlink_rx_mbps", 1000.0),
    ] {
        let pairs = [
            ("metricType", metric),
            ("gpuIndex", "0"),
            ("targetValue", "50"),
        ];
        wait_for(&client, &pairs, |_| true);
        let output = Command::new(BINARY)
            .args(["query", "--address", &format!("127.0.0.1:{port}")])
            .args(
                pairs
                    .iter()
                    .flat_map(|(k, v)| ["--metadata".to_string(), format!("{k}={v}")]),
            )
            .output()
            .expect("run query");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{metric}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let name = metric.replace('_', "-");
        assert!(
            text.contains(&format!("metric        {name}-gpu0")),
            "{text}"
        );
        let value_line = text.lines().find(|l| l.starts_with("value")).unwrap_or("");
        let shown: f64 = value_line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        assert!(within(shown, expected, 0.02), "{metric}: {value_line}");
    }
    drop(serve);

    // `devices` reads twice, so its table has the rates, and says why the
    // rest are n/a.
    let output = Command::new(BINARY)
        .args(["devices", "--nvml-library"])
        .arg(&fake.library)
        .output()
        .expect("run devices");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("SM%") && text.contains("NVL_TX"), "{text}");
    let gpu0 = text.lines().find(|l| l.starts_with("0 ")).unwrap_or("");
    assert!(gpu0.contains(" 45 ") && gpu0.contains(" 20 "), "{gpu0}");
    assert!(
        text.contains("n/a on GPU 1: sm_activity, sm_occupancy, tensor_activity, dram_bandwidth_utilization: this GPU has no GPM"),
        "{text}"
    );
    let output = Command::new(BINARY)
        .args(["devices", "--json", "--nvml-library"])
        .arg(&fake.library)
        .output()
        .expect("run devices --json");
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(json.contains("\"sm_activity\":45"), "{json}");
    assert!(
        json.contains("\"unreported\":[{\"what\":\"sm_activity\",\"why\":\"this GPU has no GPM"),
        "{json}"
    );
}

/// GPU 0 in MIG mode with GPM: two 3g.40gb devices in slots 0 and 2 (slot
/// 1 empty, as after deleting an instance), busy and idle.
const MIG_GPU: &str = "gpu 0 uuid=GPU-m name=\"NVIDIA H200\" mig=1 gpm=1 sm=50 mem_used_mib=34000 util=90\n\
mig 0 0 uuid=MIG-busy profile=3g.40gb gi=1 ci=0 mem_total_mib=40000 mem_used_mib=30000 sm=80 occupancy=60 tensor=70 dram=55\n\
mig 0 2 uuid=MIG-idle profile=3g.40gb gi=2 ci=0 mem_total_mib=40000 mem_used_mib=4000 sm=10 occupancy=5 tensor=2 dram=3\n\
mig 0 3 uuid=MIG-sibling profile=1c.3g.40gb gi=1 ci=1 mem_total_mib=40000 mem_used_mib=30000\n";

#[test]
fn a_pod_on_a_mig_device_reads_its_own_slice() {
    let fake = FakeNvml::new(MIG_GPU);
    let kubelet = FakeKubelet::default();
    let socket = fake.dir.join("kubelet.sock");
    let _kubelet_server = kubelet.serve(&socket);
    kubelet.set_pods(&[
        ("default", "vllm-0", "MIG-busy"),
        // deviceIDStrategy: index, GPU 0 MIG slot 2.
        ("default", "batch-0", "0:2"),
        // A second compute instance in the busy one's GPU instance.
        ("default", "sibling-0", "MIG-sibling"),
    ]);
    let mut config = local_config(&fake.library);
    config.pod_resources_socket = socket;
    let server = server::start(&config).expect("start server");
    let client = client(server.port());

    for (workload, metric, expected) in [
        ("vllm", "sm_activity", 80.0),
        ("vllm", "tensor_activity", 70.0),
        ("vllm", "memory_used_percent", 75.0),
        ("batch", "sm_activity", 10.0),
        ("batch", "dram_bandwidth_utilization", 3.0),
        ("batch", "memory_used_percent", 10.0),
        // GPM measures GPU instances: both compute instances of GPU
        // instance 1 read its activity, every pass.
        ("sibling", "sm_activity", 80.0),
    ] {
        wait_for_value(
            &client,
            &[("workload", workload), ("metricType", metric)],
            expected,
        );
    }
    // The whole GPU still reads as itself, node-wide.
    wait_for_value(
        &client,
        &[("metricType", "sm_activity"), ("gpuIndex", "0")],
        50.0,
    );
    // Utilization does not exist on MIG: absent, saying what to use.
    let message = wait_for_error(
        &client,
        &[("workload", "vllm"), ("metricType", "gpu_utilization")],
        RpcStatusCode::UNAVAILABLE,
        "does not report gpu_utilization",
    );
    assert!(
        message.contains("use sm_activity") && message.contains("MIG 3g.40gb (MIG-busy)"),
        "{message}"
    );

    // --explain names the MIG device and its pod.
    let explained = explain(
        server.port(),
        &[("workload", "vllm"), ("metricType", "sm_activity")],
    )
    .unwrap();
    let line = explained
        .lines()
        .iter()
        .find(|l| l.gpu_uuid() == "MIG-busy")
        .expect("a line for the MIG device");
    assert_eq!(
        (line.gpu_index(), line.value(), line.counted()),
        (0, 80.0, true)
    );
    assert_eq!(line.pods(), ["default/vllm-0"]);

    // A MIG id that matches no MIG device is a fault for its pod.
    kubelet.set_pods(&[("default", "vllm-0", "MIG-deleted")]);
    wait_for_error(
        &client,
        &[("workload", "vllm"), ("metricType", "sm_activity")],
        RpcStatusCode::UNAVAILABLE,
        "matches no GPU or MIG device",
    );
}

#[test]
fn devices_lists_mig_devices_under_their_gpu() {
    let fake = FakeNvml::new(MIG_GPU);
    let output = Command::new(BINARY)
        .args(["devices", "--nvml-library"])
        .arg(&fake.library)
        .output()
        .expect("run devices");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let row = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} row:\n{text}"))
            .to_string()
    };
    let busy = row("0/0 ");
    assert!(
        busy.contains("MIG-busy") && busy.contains("MIG 3g.40gb gi1 ci0") && busy.contains(" 80 "),
        "{busy}"
    );
    let idle = row("0/2 ");
    assert!(idle.contains("MIG-idle") && idle.contains(" 10 "), "{idle}");
    let output = Command::new(BINARY)
        .args(["devices", "--json", "--nvml-library"])
        .arg(&fake.library)
        .output()
        .expect("run devices --json");
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(
        json.contains("\"mig\":[{\"slot\":0,\"uuid\":\"MIG-busy\",\"profile\":\"3g.40gb\",\"gpu_instance\":1,\"compute_instance\":0,\"gpu_utilization\":null"),
        "{json}"
    );
    assert!(json.contains("\"sm_activity\":80"), "{json}");
}

/// Opens the fake through the production path, for reads without a server.
fn open_nvml(fake: &FakeNvml) -> keda_gpu_scaler::nvml::Nvml {
    // SAFETY: the fake's initialisers only set up Rust statics.
    unsafe { keda_gpu_scaler::nvml::Nvml::open_path(&fake.library) }.unwrap()
}

#[test]
fn a_rate_before_its_second_sample_is_a_failed_read_not_unsupported() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;

    let fake = FakeNvml::new(TWO_GPUS);
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    let gpus = read_node(&nvml, &mut rates).unwrap();
    // GPU 0 has GPM, PCIe and NVLink: without a second sample each is a
    // failure this pass (UNAVAILABLE for a trigger selecting it), not a
    // metric it lacks (which would leave it out of a sum).
    for metric in [Metric::SmActivity, Metric::PcieTxMbps, Metric::NvlinkRxMbps] {
        let error = gpus[0].read_error(metric);
        assert!(
            error.is_some_and(|e| e.to_string().contains("needs a second sample")),
            "{metric}: {:?}",
            gpus[0].read_errors
        );
        assert_eq!(gpus[0].unreported(metric), None, "{metric}");
    }
    // What GPU 1 lacks stays unreported.
    assert!(gpus[1]
        .unreported(Metric::SmActivity)
        .unwrap()
        .to_string()
        .contains("no GPM"));
    assert!(gpus[1].unreported(Metric::NvlinkTxMbps).is_some());
    assert_eq!(gpus[1].read_error(Metric::SmActivity), None);
    drop(rates);
}

#[test]
fn a_gpu_back_from_lost_is_unavailable_until_its_rates_resume() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;
    use keda_gpu_scaler::node::snapshot::GpuHealth;

    const BOTH: &str = "gpu 0 uuid=GPU-a gpm=1 sm=45\ngpu 1 uuid=GPU-b gpm=1 sm=30\n";
    const B_LOST: &str =
        "gpu 0 uuid=GPU-a gpm=1 sm=45\ngpu 1 uuid=GPU-b gpm=1 sm=30\nfail 1 * GPU_IS_LOST\n";

    // Pass by pass: the first pass after the GPU returns has no rate, and
    // says so as a failed read.
    let fake = FakeNvml::new(BOTH);
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    let sm = |gpu: &keda_gpu_scaler::node::snapshot::GpuSample| {
        gpu.readings().and_then(|r| r.get(Metric::SmActivity))
    };
    assert!(wait_until(PATIENCE, || {
        let gpus = read_node(&nvml, &mut rates).unwrap();
        sm(&gpus[0]) == Some(45.0) && sm(&gpus[1]) == Some(30.0)
    }));
    fake.set(B_LOST);
    let gpus = read_node(&nvml, &mut rates).unwrap();
    assert!(matches!(gpus[1].health, GpuHealth::Lost { .. }), "{gpus:?}");
    fake.set(BOTH);
    let gpus = read_node(&nvml, &mut rates).unwrap();
    assert_eq!(sm(&gpus[1]), None);
    assert!(
        gpus[1]
            .read_error(Metric::SmActivity)
            .is_some_and(|e| e.to_string().contains("needs a second sample")),
        "{:?}",
        gpus[1]
    );
    drop(rates);
    drop(nvml);

    // Through the server, passes 400 ms apart: the sum is UNAVAILABLE for
    // that pass, never 45 (GPU 0 alone) as if GPU 1 were idle.
    let fake = FakeNvml::new(BOTH);
    let mut config = local_config(&fake.library);
    config.sample_interval = Duration::from_millis(400);
    let server = server::start(&config).expect("start server");
    let client = client(server.port());
    let sum = [("metricType", "sm_activity"), ("aggregation", "sum")];
    wait_for_value(&client, &sum, 75.0);
    // A lost GPU is left out, as documented.
    fake.set(B_LOST);
    wait_for_value(&client, &sum, 45.0);
    fake.set(BOTH);
    let message = wait_for_error(
        &client,
        &sum,
        RpcStatusCode::UNAVAILABLE,
        "needs a second sample",
    );
    assert!(message.contains("GPU-b"), "{message}");
    wait_for_value(&client, &sum, 75.0);
}

#[test]
fn a_gpm_slot_the_driver_leaves_untouched_is_a_failed_read_not_zero() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;

    let fake = FakeNvml::new("gpu 0 uuid=GPU-h gpm=1 sm=45 dram=50 gpm_untouched=dram\n");
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    let mut gpus = Vec::new();
    // Once a window completes, SM activity reads; DRAM's slot was never
    // written, so it is a failed read, never 0%.
    assert!(wait_until(PATIENCE, || {
        gpus = read_node(&nvml, &mut rates).unwrap();
        gpus[0].readings().and_then(|r| r.get(Metric::SmActivity)) == Some(45.0)
    }));
    let readings = gpus[0].readings().unwrap();
    assert_eq!(readings.get(Metric::DramBandwidthUtilization), None);
    let error = gpus[0]
        .read_error(Metric::DramBandwidthUtilization)
        .map(ToString::to_string);
    assert!(
        error.is_some_and(|e| e.contains("nvmlGpmMetricsGet") && e.contains("unanswered")),
        "{:?}",
        gpus[0].read_errors
    );
    drop(rates);
}

#[test]
fn a_32_bit_pcie_counter_that_could_wrap_unseen_is_unavailable_with_the_reason() {
    // At the tests' 100 ms interval a Gen5 x16 link (the fake's default)
    // can move 6.4 GB, more than the 32-bit counter's 4.29 GB: the counter
    // could wrap twice and read as little traffic.
    let fake = FakeNvml::new("gpu 0 uuid=GPU-h pcie_bits=32 pcie_tx_mbps=400\n");
    let server = start_server(&fake);
    let client = client(server.port());
    let pcie = [("metricType", "pcie_tx_mbps"), ("gpuIndex", "0")];
    let message = wait_for_error(
        &client,
        &pcie,
        RpcStatusCode::UNAVAILABLE,
        "a 32-bit counter",
    );
    assert!(
        message.contains("PCIe Gen5 x16") && message.contains("a wrap could go unseen"),
        "{message}"
    );
    drop(server);

    // A driver that cannot say the link's maximum: the fastest is assumed.
    let fake =
        FakeNvml::new("gpu 0 uuid=GPU-h pcie_bits=32 pcie_gen=0 pcie_width=0 pcie_tx_mbps=400\n");
    let server = start_server(&fake);
    let client = common::client(server.port());
    let message = wait_for_error(
        &client,
        &pcie,
        RpcStatusCode::UNAVAILABLE,
        "a 32-bit counter",
    );
    assert!(message.contains("assumed"), "{message}");
}

#[test]
fn a_destroyed_and_recreated_gpu_instance_starts_a_fresh_baseline() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;

    const GPU: &str = "gpu 0 uuid=GPU-m mig=1 gpm=1 sm=50\n";
    let with_instance =
        |sm: u32| format!("{GPU}mig 0 0 uuid=MIG-{sm} profile=3g.40gb gi=1 ci=0 sm={sm}\n");
    let fake = FakeNvml::new(&with_instance(80));
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    let mig_sm = |gpus: &[keda_gpu_scaler::node::snapshot::GpuSample]| {
        gpus[0]
            .mig
            .first()
            .and_then(|m| m.readings.get(Metric::SmActivity))
    };
    assert!(wait_until(PATIENCE, || mig_sm(
        &read_node(&nvml, &mut rates).unwrap()
    ) == Some(80.0)));
    // GPU instance 1 is destroyed: a pass sees no MIG device.
    fake.set(GPU);
    let gpus = read_node(&nvml, &mut rates).unwrap();
    assert!(gpus[0].mig.is_empty(), "{:?}", gpus[0].mig);
    // Recreated with the same id: its first pass has no rate (no stale
    // baseline, no window of the destroyed instance standing in).
    fake.set(&with_instance(20));
    let gpus = read_node(&nvml, &mut rates).unwrap();
    let mig = &gpus[0].mig[0];
    assert_eq!(mig.readings.get(Metric::SmActivity), None, "{mig:?}");
    assert!(
        mig.read_errors.iter().any(|e| e.what == Metric::SmActivity
            && e.cause.to_string().contains("needs a second sample")),
        "{mig:?}"
    );
    // And its own rate from the next window.
    assert!(wait_until(PATIENCE, || mig_sm(
        &read_node(&nvml, &mut rates).unwrap()
    ) == Some(20.0)));
    drop(rates);
}

#[test]
fn a_failing_gpm_support_or_gpu_instance_read_is_a_failed_read_not_unsupported() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;

    // nvmlGpmQueryDeviceSupport failing is no answer that the GPU lacks
    // GPM: its activity failed this pass.
    let fake = FakeNvml::new("gpu 0 uuid=GPU-h gpm=1 sm=45\nfail 0 gpm UNKNOWN\n");
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    let gpus = read_node(&nvml, &mut rates).unwrap();
    assert!(
        gpus[0]
            .read_error(Metric::SmActivity)
            .is_some_and(|e| e.to_string().contains("NVML_ERROR_UNKNOWN")),
        "{:?}",
        gpus[0]
    );
    assert_eq!(gpus[0].unreported(Metric::SmActivity), None);
    drop(rates);
    drop(nvml);

    // Nor is a MIG device whose GPU-instance id could not be read.
    let fake = FakeNvml::new(&format!("{MIG_GPU}fail 0 gpu_instance UNKNOWN\n"));
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    let gpus = read_node(&nvml, &mut rates).unwrap();
    let mig = &gpus[0].mig[0];
    assert!(
        mig.read_errors
            .iter()
            .any(|e| e.what == Metric::SmActivity
                && e.cause.to_string().contains("reading it failed")),
        "{mig:?}"
    );
    assert!(
        mig.unreported.iter().all(|e| e.what != Metric::SmActivity),
        "{mig:?}"
    );
    drop(rates);
}

/// The fake's GPM buffer counts: `(allocated, live, freed after shutdown)`.
fn gpm_sample_counts(library: &libloading::Library) -> (u64, u64, u64) {
    type Counts = unsafe extern "C" fn(*mut u64, *mut u64, *mut u64);
    // SAFETY: the fake exports this symbol with this signature.
    let counts = unsafe { library.get::<Counts>(b"fakeNvmlGpmSampleCounts") }.unwrap();
    let (mut allocated, mut live, mut after_shutdown) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    unsafe { counts(&mut allocated, &mut live, &mut after_shutdown) };
    (allocated, live, after_shutdown)
}

#[test]
fn gpm_buffers_are_two_per_gpu_or_instance_reused_and_freed_before_shutdown() {
    use keda_gpu_scaler::node::gpu_metric::Metric;
    use keda_gpu_scaler::node::nvidia::read_node;
    use keda_gpu_scaler::node::rates::Rates;

    let fake = FakeNvml::new(MIG_GPU);
    // SAFETY: the fake's initialisers only set up Rust statics. This
    // handle keeps the scaler's instance loaded to the end, to be asked.
    let library = unsafe { libloading::Library::new(&fake.library) }.unwrap();
    let nvml = open_nvml(&fake);
    let mut rates = Rates::default();
    // Many passes, windows among them: the GPU and its two GPU instances
    // (two compute instances share GPU instance 1) each have two buffers,
    // allocated once and swapped.
    assert!(wait_until(PATIENCE, || {
        let gpus = read_node(&nvml, &mut rates).unwrap();
        let busy = gpus[0].mig.iter().find(|m| m.uuid == "MIG-busy");
        busy.and_then(|m| m.readings.get(Metric::SmActivity)) == Some(80.0)
    }));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(110));
        read_node(&nvml, &mut rates).unwrap();
    }
    assert_eq!(gpm_sample_counts(&library), (6, 6, 0));
    // The session dropped first, the buffers after: NVML shuts down only
    // once they are freed.
    drop(nvml);
    drop(rates);
    assert_eq!(gpm_sample_counts(&library), (6, 0, 0));
}
