//! AMD GPUs through AMD SMI, behind the same triggers: the fake
//! `libamd_smi` loaded by the production loader, in each of the library's
//! power-info layouts; attribution by PCI address; the gRPC triggers,
//! profiles and `query`/`devices` on an AMD node; a mixed cluster of an
//! NVIDIA node and an AMD node as peer processes; and missing symbols.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use keda_gpu_scaler::grpc::server;
use keda_gpu_scaler::node::backend::{BackendChoice, BackendConfig, Opener};
use keda_gpu_scaler::node::gpu_metric::Metric;
use keda_gpu_scaler::node::snapshot::{GpuHealth, GpuSample};

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

const MI300: &str = "gpu 0 uuid=amd-0 bdf=0000:19:00.0 name=\"AMD Instinct MI300X\" gfx=37 umc=12 vram_total_mib=196592 vram_used_mib=49148 hotspot=52 edge=NA current_w=550 average_w=NA\n";

fn amd(fake: &FakeAmdSmi) -> BackendConfig {
    BackendConfig {
        choice: BackendChoice::Amd,
        nvml_library: None,
        amd_smi_library: Some(fake.library.clone()),
    }
}

fn read(config: BackendConfig) -> Result<(String, String, Vec<GpuSample>), String> {
    let mut session = Opener::new(config).open()?;
    let gpus = session.read_node()?;
    Ok((
        session.backend().to_string(),
        session.driver_version().to_string(),
        gpus,
    ))
}

fn value_of(gpu: &GpuSample, metric: Metric) -> Option<f64> {
    gpu.readings().and_then(|r| r.get(metric))
}

#[test]
fn an_mi300_reads_through_the_real_loader_in_every_power_layout() {
    // ROCm 7 (192-byte power info, no `year`), ROCm 6.4 (40 bytes) and
    // ROCm 6.3 (68 bytes, `year` first).
    for (version, text) in [
        ("26.1.0", "26.1.0"),
        ("25.25.4.0", "25.25.4.0"),
        ("24.7.1.0", "24.7.1.0"),
    ] {
        let fake = FakeAmdSmi::new(&format!("version {version}\ndriver 6.10.5\n{MI300}"));
        let (backend, driver, gpus) = read(amd(&fake)).unwrap();
        assert_eq!(backend, "amdsmi");
        assert_eq!(driver, format!("6.10.5 (AMD SMI {text})"));
        let gpu = &gpus[0];
        assert_eq!(gpu.uuid.as_deref(), Some("amd-0"));
        assert_eq!(gpu.name.as_deref(), Some("AMD Instinct MI300X"));
        assert_eq!(gpu.pci_bus_id.as_deref(), Some("0000:19:00.0"));
        assert!(matches!(gpu.health, GpuHealth::Healthy { .. }));
        assert_eq!(value_of(gpu, Metric::GpuUtilization), Some(37.0));
        assert_eq!(value_of(gpu, Metric::MemoryUtilization), Some(12.0));
        assert_eq!(value_of(gpu, Metric::MemoryUsedMib), Some(49148.0));
        assert_eq!(
            value_of(gpu, Metric::MemoryUsedPercent),
            Some(49148.0 / 196592.0 * 100.0)
        );
        // The hotspot sensor: MI300 has no edge sensor.
        assert_eq!(value_of(gpu, Metric::Temperature), Some(52.0), "{version}");
        // current_socket_power, wherever the layout puts it.
        assert_eq!(value_of(gpu, Metric::PowerDraw), Some(550.0), "{version}");
        // NVIDIA-only metrics are absent with a reason, never 0.
        assert_eq!(value_of(gpu, Metric::SmActivity), None);
        let why = gpu.unreported(Metric::NvlinkTxMbps).unwrap().to_string();
        assert!(why.contains("NVLink is NVIDIA's"), "{why}");
        assert!(gpu.read_errors.is_empty(), "{:?}", gpu.read_errors);
    }
}

#[test]
fn older_parts_report_average_power_and_not_available_is_never_zero() {
    for version in ["26.1.0", "25.25.4.0", "24.7.1.0"] {
        let fake = FakeAmdSmi::new(&format!(
            "version {version}\n\
             gpu 0 bdf=0000:19:00.0 name=\"AMD Instinct MI250X\" gfx=80 umc=NA hotspot=61 current_w=NA average_w=300\n\
             gpu 1 bdf=0000:3b:00.0 gfx=NA umc=5 current_w=NA average_w=NA\n"
        ));
        let (_, _, gpus) = read(amd(&fake)).unwrap();
        assert_eq!(
            value_of(&gpus[0], Metric::PowerDraw),
            Some(300.0),
            "{version}"
        );
        assert_eq!(value_of(&gpus[0], Metric::MemoryUtilization), None);
        let why = gpus[0]
            .unreported(Metric::MemoryUtilization)
            .unwrap()
            .to_string();
        assert!(why.contains("umc_activity as not available"), "{why}");
        // 0xFFFF is "not available": absent, not 65535% or 0.
        assert_eq!(value_of(&gpus[1], Metric::GpuUtilization), None);
        assert_eq!(value_of(&gpus[1], Metric::PowerDraw), None);
        let why = gpus[1].unreported(Metric::PowerDraw).unwrap().to_string();
        assert!(why.contains("not available"), "{why}");
    }
    // From 25.x, a part that fills only socket_power is read from it.
    for version in ["26.1.0", "25.25.4.0"] {
        let fake = FakeAmdSmi::new(&format!(
            "version {version}\ngpu 0 bdf=0000:19:00.0 current_w=NA average_w=NA socket_w=420\n"
        ));
        let (_, _, gpus) = read(amd(&fake)).unwrap();
        assert_eq!(
            value_of(&gpus[0], Metric::PowerDraw),
            Some(420.0),
            "{version}"
        );
    }
}

#[test]
fn a_failing_call_leaves_its_metric_absent_with_the_error() {
    let fake = FakeAmdSmi::new(&format!(
        "{MI300}fail 0 power BUSY\nfail 0 temperature NOT_SUPPORTED\n"
    ));
    let (_, _, gpus) = read(amd(&fake)).unwrap();
    assert_eq!(value_of(&gpus[0], Metric::PowerDraw), None);
    assert!(gpus[0]
        .read_errors
        .iter()
        .any(|e| e.what == Metric::PowerDraw
            && e.cause.to_string()
                == "amdsmi_get_power_info failed: AMDSMI_STATUS_BUSY (30): Device busy"));
    // NOT_SUPPORTED is absent, not a failure.
    assert!(gpus[0]
        .read_errors
        .iter()
        .all(|e| e.what != Metric::Temperature));
    assert!(gpus[0].unreported(Metric::Temperature).is_some());
    assert_eq!(value_of(&gpus[0], Metric::GpuUtilization), Some(37.0));
    // A GPU without a UUID fails as a whole.
    fake.set(&format!("{MI300}fail 0 uuid IO\n"));
    let (_, _, gpus) = read(amd(&fake)).unwrap();
    assert!(
        matches!(&gpus[0].health, GpuHealth::Failed { error } if error.contains("AMDSMI_STATUS_IO"))
    );
}

#[test]
fn missing_symbols_are_named_and_optional_ones_only_leave_the_name_out() {
    // A library that is not AMD SMI (the fake NVML) lacks amdsmi_init.
    let nvml = FakeNvml::new(&gpu_line(0, 10));
    let error = read(BackendConfig {
        choice: BackendChoice::Amd,
        nvml_library: None,
        amd_smi_library: Some(nvml.library.clone()),
    })
    .unwrap_err();
    assert!(
        error.contains("does not export the required symbol amdsmi_init"),
        "{error}"
    );
    // Without the optional asic/driver info: no name, an unknown driver,
    // every reading still there.
    let fake = FakeAmdSmi::minimal(MI300);
    let (_, driver, gpus) = read(amd(&fake)).unwrap();
    assert_eq!(driver, "unknown (AMD SMI 26.1.0)");
    assert_eq!(gpus[0].name, None);
    assert_eq!(value_of(&gpus[0], Metric::GpuUtilization), Some(37.0));
}

#[test]
fn auto_tries_nvml_then_amd_smi_and_names_both_when_neither_answers() {
    let fake = FakeAmdSmi::new(MI300);
    let missing = fake.dir.join("libnvidia-ml.so.1");
    let (backend, _, _) = read(BackendConfig {
        choice: BackendChoice::Auto,
        nvml_library: Some(missing.clone()),
        amd_smi_library: Some(fake.library.clone()),
    })
    .unwrap();
    assert_eq!(backend, "amdsmi");
    let nvidia = FakeNvml::new(&gpu_line(0, 10));
    let (backend, _, _) = read(BackendConfig {
        choice: BackendChoice::Auto,
        nvml_library: Some(nvidia.library.clone()),
        amd_smi_library: Some(fake.library.clone()),
    })
    .unwrap();
    assert_eq!(backend, "nvml");
    let error = read(BackendConfig {
        choice: BackendChoice::Auto,
        nvml_library: Some(missing),
        amd_smi_library: Some(fake.dir.join("nothing.so")),
    })
    .unwrap_err();
    assert!(
        error.starts_with("no GPU library answered (--gpu-backend auto tries NVML, then AMD SMI): NVML is not available: ")
            && error.contains("; AMD SMI is not available: cannot load the AMD SMI library"),
        "{error}"
    );
    // An init failure is the library's own words.
    fake.set("init_error DRIVER_NOT_LOADED\n");
    let error = read(amd(&fake)).unwrap_err();
    assert!(
        error.contains(
            "amdsmi_init failed: AMDSMI_STATUS_DRIVER_NOT_LOADED (34): Driver not loaded"
        ),
        "{error}"
    );
}

#[test]
fn the_same_triggers_and_profiles_work_on_an_amd_node() {
    let fake = FakeAmdSmi::new(&format!(
        "{MI300}gpu 1 uuid=amd-1 bdf=0000:3b:00.0 gfx=63 vram_total_mib=196592 vram_used_mib=0 current_w=400\n\
         fail 1 temperature BUSY\n"
    ));
    let kubelet = FakeKubelet::default();
    let socket = fake.dir.join("kubelet.sock");
    let _kubelet_server = kubelet.serve(&socket);
    kubelet.set_pods(&[
        ("default", "vllm-0", "0000:19:00.0"),
        ("default", "vllm-1", "0000:3B:00.0"),
        ("default", "part-0", "amdgpu_xcp_3"),
    ]);
    let mut config = amd_config(&fake);
    config.pod_resources_socket = socket;
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = server::start(&config).expect("start server");
    let client = client(server.port());
    // Attribution by PCI address: vllm's two GPUs, max (the default) and
    // averaged.
    wait_for_value(&client, &[("workload", "vllm")], 63.0);
    wait_for_value(
        &client,
        &[("workload", "vllm"), ("aggregation", "avg")],
        50.0,
    );
    wait_for_value(
        &client,
        &[("workload", "vllm"), ("aggregation", "min")],
        37.0,
    );
    // A profile: vllm-inference reads gpu_utilization.
    wait_for_value(
        &client,
        &[("profile", "vllm-inference"), ("workload", "vllm")],
        63.0,
    );
    wait_for_value(
        &client,
        &[("metricType", "power_draw"), ("gpuIndex", "0")],
        550.0,
    );
    wait_for_value(
        &client,
        &[("metricType", "memory_used_percent"), ("gpuIndex", "0")],
        25.0,
    );
    // An NVIDIA-only metric is an error naming why, never a 0.
    let message = wait_for_error(
        &client,
        &[("metricType", "sm_activity"), ("workload", "vllm")],
        grpcio::RpcStatusCode::UNAVAILABLE,
        "sm_activity",
    );

    assert!(message.contains("AMD SMI has no counterpart"), "{message}");
    // A pod on a compute partition cannot be read: UNAVAILABLE, saying so.
    let message = wait_for_error(
        &client,
        &[("workload", "part")],
        grpcio::RpcStatusCode::UNAVAILABLE,
        "compute partition",
    );
    assert!(message.contains("amdgpu_xcp_3"), "{message}");

    // The /metrics page: the AMD readings, the backend, and AMD SMI's
    // failing call by its own name and status.
    let page = scrape_metrics(server.metrics_port().unwrap());
    for line in [
        "keda_gpu_scaler_driver_up{node=\"amd-node\",backend=\"amdsmi\"} 1",
        "keda_gpu_scaler_driver_call_errors_total{node=\"amd-node\",backend=\"amdsmi\",call=\"amdsmi_get_temp_metric\",code=\"BUSY\"} ",
    ] {
        assert!(page.lines().any(|l| l.starts_with(line)), "{line} not in:\n{page}");
    }
    assert!(
        page.lines()
            .any(|l| l.starts_with("keda_gpu_scaler_gpu_power_watts{")
                && l.contains("uuid=\"amd-0\"")
                && l.ends_with(" 550")),
        "{page}"
    );
}

fn scrape_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: scaler\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_hung_amd_smi_call_makes_readings_stale_never_zero_then_recovers() {
    let fake = FakeAmdSmi::new(MI300);
    let server = server::start(&amd_config(&fake)).expect("start server");
    let client = client(server.port());
    wait_for_value(&client, &[], 37.0);
    // A call that blocks (as on a failing GPU): the handler answers from the
    // snapshot at once, UNAVAILABLE once it is stale, and never a 0.
    fake.set(&format!("{MI300}hang 0 power 60000\n"));
    let message = wait_for_error(
        &client,
        &[],
        grpcio::RpcStatusCode::UNAVAILABLE,
        "GPU readings are stale",
    );
    assert!(
        message.contains("a GPU library call may be hanging"),
        "{message}"
    );
    fake.set(&MI300.replace("gfx=37", "gfx=41"));
    wait_for_value(&client, &[], 41.0);
}

fn serve(args: &[String], log: &std::path::Path) -> Child {
    Command::new(BINARY)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn serve")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_mixed_cluster_of_an_nvidia_node_and_an_amd_node_answers_as_one() {
    let nvidia = FakeNvml::new(
        "gpu 0 uuid=GPU-n0 name=\"NVIDIA H100\" util=20 mem_total_mib=81920 mem_used_mib=8192\n",
    );
    let amd = FakeAmdSmi::new(MI300);
    let kubelets = [FakeKubelet::default(), FakeKubelet::default()];
    let sockets = [
        nvidia.dir.join("kubelet.sock"),
        amd.dir.join("kubelet.sock"),
    ];
    let _servers: Vec<_> = kubelets
        .iter()
        .zip(&sockets)
        .map(|(k, s)| k.serve(s))
        .collect();
    kubelets[0].set_pods(&[("default", "llm-0", "GPU-n0")]);
    kubelets[1].set_pods(&[("default", "llm-1", "0000:19:00.0")]);
    let ports = [free_port(), free_port()];
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let common = |port: u16, name: &str, socket: &std::path::Path| -> Vec<String> {
        vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--sample-interval".into(),
            "200ms".into(),
            "--peer-timeout".into(),
            "150ms".into(),
            "--node-name".into(),
            name.into(),
            "--peers".into(),
            peers.clone(),
            "--pod-resources-socket".into(),
            socket.display().to_string(),
        ]
    };
    let mut nvidia_args = common(ports[0], "gpu-nvidia", &sockets[0]);
    nvidia_args.extend([
        "--nvml-library".into(),
        nvidia.library.display().to_string(),
    ]);
    // The AMD node runs with the default `auto`: no NVML there, AMD SMI answers.
    let mut amd_args = common(ports[1], "gpu-amd", &sockets[1]);
    amd_args.extend([
        "--nvml-library".into(),
        amd.dir.join("libnvidia-ml.so.1").display().to_string(),
        "--amd-smi-library".into(),
        amd.library.display().to_string(),
    ]);
    let _nodes = [
        Killed(serve(&nvidia_args, &nvidia.dir.join("serve.log"))),
        Killed(serve(&amd_args, &amd.dir.join("serve.log"))),
    ];
    // Either node answers for both: 20 (H100) + 37 (MI300X).
    for port in ports {
        let client = client(port);
        wait_for_value(
            &client,
            &[("workload", "llm"), ("aggregation", "sum")],
            57.0,
        );
        wait_for_value(&client, &[("aggregation", "sum")], 57.0);
    }
    // `query --explain` through the binary names each node's GPU.
    let output = Command::new(BINARY)
        .args(["query", "--address", &format!("127.0.0.1:{}", ports[0])])
        .args([
            "--metadata",
            "workload=llm",
            "--metadata",
            "aggregation=sum",
            "--explain",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("gpu-nvidia") && text.contains("gpu-amd"),
        "{text}"
    );
    assert!(
        text.contains("default/llm-1") && text.contains("default/llm-0"),
        "{text}"
    );
    let log = std::fs::read_to_string(amd.dir.join("serve.log")).unwrap();
    assert!(log.contains("AMD SMI initialised from"), "{log}");
}

#[test]
fn compute_partitions_are_out_of_scope_and_never_read_as_whole_gpus() {
    // GPU 0 is split in two partitions (functions 0 and 1); GPU 1 is whole.
    let fake = FakeAmdSmi::new(
        "gpu 0 uuid=p0 bdf=0000:0c:00.0 gfx=40\n\
         gpu 1 uuid=p1 bdf=0000:0c:00.1 gfx=NA\n\
         gpu 2 uuid=whole bdf=0000:3b:00.0 gfx=70\n",
    );
    let (_, _, gpus) = read(amd(&fake)).unwrap();
    for gpu in &gpus[..2] {
        assert!(
            matches!(&gpu.health, GpuHealth::Failed { error } if error.contains("compute partition")),
            "{:?}",
            gpu.health
        );
    }
    assert!(matches!(gpus[2].health, GpuHealth::Healthy { .. }));
    // Through the server: node-wide triggers read the whole GPU only; a pod
    // on partition 0 (named by its PCI address) or another partition
    // (amdgpu_xcp_N) is UNAVAILABLE, saying why.
    let kubelet = FakeKubelet::default();
    let socket = fake.dir.join("kubelet.sock");
    let _kubelet_server = kubelet.serve(&socket);
    kubelet.set_pods(&[
        ("default", "first-0", "0000:0c:00.0"),
        ("default", "other-0", "amdgpu_xcp_1"),
        ("default", "whole-0", "0000:3b:00.0"),
    ]);
    let mut config = amd_config(&fake);
    config.pod_resources_socket = socket;
    let server = server::start(&config).expect("start server");
    let client = client(server.port());
    wait_for_value(&client, &[("workload", "whole")], 70.0);
    // The first partition's pod is placed on its (failing) processor; the
    // other's id names a partition and is unplaced. Each error says so.
    for (workload, names) in [
        ("first", "GPU 0 (p0) is failing"),
        ("other", "default/other-0"),
    ] {
        let message = wait_for_error(
            &client,
            &[("workload", workload)],
            grpcio::RpcStatusCode::UNAVAILABLE,
            "compute partition",
        );
        assert!(message.contains(names), "{message}");
    }
}

#[test]
fn devices_says_which_backend_answered() {
    let fake = FakeAmdSmi::new(MI300);
    let output = Command::new(BINARY)
        .args(["devices", "--gpu-backend", "amd", "--amd-smi-library"])
        .arg(&fake.library)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        table.starts_with(&format!(
            "AMD SMI {}, driver 6.10.5 (AMD SMI 26.1.0), 1 GPU(s)",
            fake.library.display()
        )),
        "{table}"
    );
    assert!(table.contains("AMD Instinct MI300X"), "{table}");
    let output = Command::new(BINARY)
        .args([
            "devices",
            "--json",
            "--gpu-backend",
            "amd",
            "--amd-smi-library",
        ])
        .arg(&fake.library)
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(json.starts_with("{\"backend\":\"amdsmi\""), "{json}");
    assert!(json.contains("\"gpu_utilization\":37"), "{json}");
    assert!(json.contains("\"sm_activity\":null"), "{json}");
    // A bad backend name is refused, naming the choices.
    let output = Command::new(BINARY)
        .args(["devices", "--gpu-backend", "rocm"])
        .output()
        .unwrap();
    // Exit code 2: a usage error.
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("expected one of auto, nvidia, amd"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
