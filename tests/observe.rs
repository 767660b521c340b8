//! The `/metrics` page through a running server: GPU and MIG readings with
//! the pods holding them, what each ScaledObject was told, the scaler's own
//! health, in the exposition format Prometheus requires. Where `promtool`
//! is installed (`.ci/run` installs it), the page also passes
//! `promtool check metrics`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::*;
use fake_engine::{Answer, Behaviour, Kind, Load, Replica};
use keda_gpu_scaler::engine::prom;
use keda_gpu_scaler::grpc::server;

const SCENARIO: &str = "gpu 0 uuid=GPU-h name=\"NVIDIA H200\" util=99 mem_total_mib=1000 mem_used_mib=250 temp=60 power_mw=500000 gpm=1 sm=45 tensor=20 pcie_tx_mbps=300\n\
gpu 1 uuid=GPU-m name=\"NVIDIA H200\" mig=1 gpm=1\n\
mig 1 0 uuid=MIG-a profile=3g.71gb gi=1 ci=0 mem_total_mib=1000 mem_used_mib=500 sm=80\n\
fail 0 temperature TIMEOUT\n";

fn scrape(port: u16) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: scaler\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_string(), body.to_string())
}

#[test]
fn the_page_shows_gpus_triggers_and_the_scaler_itself() {
    let fake = FakeNvml::new(SCENARIO);
    let kubelet = FakeKubelet::default();
    let socket = fake.dir.join("kubelet.sock");
    let _kubelet_server = kubelet.serve(&socket);
    kubelet.set_pods(&[
        ("default", "vllm-0", "GPU-h"),
        ("default", "small-0", "MIG-a"),
    ]);
    let mut config = local_config(&fake.library);
    config.pod_resources_socket = socket;
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = server::start(&config).expect("start server");
    let port = server.metrics_port().expect("a metrics port");
    let client = client(server.port());
    // A rate needs two passes; a trigger and a rejected one give the
    // per-trigger and per-code series.
    wait_for_value(
        &client,
        &[("workload", "small"), ("metricType", "sm_activity")],
        80.0,
    );
    wait_for_value(&client, &[("workload", "vllm")], 99.0);
    let _ = value(&client, &[("metricType", "nonsense")]);
    // An engine trigger over one replica that answers and one that says 503.
    let good = Replica::start("127.0.0.1:0", Behaviour::new(Kind::Vllm, Load::default())).unwrap();
    let mut failing = Behaviour::new(Kind::Vllm, Load::default());
    failing.answer = Answer::Status(503);
    let bad = Replica::start("127.0.0.1:0", failing).unwrap();
    let endpoints = format!("{},{}", good.address(), bad.address());
    let engine = value(
        &client,
        &[("profile", "vllm-queue"), ("engineEndpoints", &endpoints)],
    );
    assert!(engine.is_ok(), "one of two replicas answers: {engine:?}");

    let (head, body) = scrape(port);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let wanted = [
        "keda_gpu_scaler_build_info",
        "keda_gpu_scaler_gpu_utilization_ratio",
        "keda_gpu_scaler_gpu_memory_used_bytes",
        "keda_gpu_scaler_gpu_power_watts",
        "keda_gpu_scaler_gpu_sm_activity_ratio",
        "keda_gpu_scaler_gpu_pcie_transmit_bytes_per_second",
        "keda_gpu_scaler_gpu_up",
        "keda_gpu_scaler_snapshot_age_seconds",
        "keda_gpu_scaler_grpc_requests_total",
        "keda_gpu_scaler_grpc_request_duration_seconds",
        "keda_gpu_scaler_trigger_value",
        "keda_gpu_scaler_trigger_target",
        "keda_gpu_scaler_trigger_active",
        "keda_gpu_scaler_open_streams",
        "keda_gpu_scaler_engine_replica_reads_total",
        "keda_gpu_scaler_driver_call_errors_total",
    ];
    let families = prom::families(&body, &wanted).unwrap();
    let family = |name: &str| {
        families
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
    };
    // Ratios are 0-1; the GPU's holder is on its series.
    let utilization = &family("keda_gpu_scaler_gpu_utilization_ratio").samples[0];
    assert_eq!(utilization.value, 0.99);
    assert_eq!(utilization.label("pod"), Some("vllm-0"));
    assert_eq!(utilization.label("model"), Some("NVIDIA H200"));
    assert_eq!(utilization.label("node"), Some("test-node"));
    // The MIG device's own activity, with its pod.
    let sm = &family("keda_gpu_scaler_gpu_sm_activity_ratio").samples;
    let mig = sm
        .iter()
        .find(|s| s.label("mig") == Some("MIG-a"))
        .expect("a MIG series");
    assert_eq!(
        (mig.value, mig.label("pod"), mig.label("mig_profile")),
        (0.8, Some("small-0"), Some("3g.71gb"))
    );
    // No series for a metric a device does not report: GPU 1 as a whole
    // reports no utilization (MIG), so only GPU 0 has one.
    assert_eq!(
        family("keda_gpu_scaler_gpu_utilization_ratio")
            .samples
            .len(),
        1
    );
    assert_eq!(
        family("keda_gpu_scaler_gpu_power_watts").samples[0].value,
        500.0
    );
    assert_eq!(
        family("keda_gpu_scaler_gpu_memory_used_bytes").samples[0].value,
        250.0 * 1024.0 * 1024.0
    );
    // What the ScaledObjects were told, and the calls by code.
    let told = &family("keda_gpu_scaler_trigger_value").samples;
    assert!(
        told.iter()
            .any(|s| s.label("metric") == Some("sm-activity-max") && s.value == 80.0),
        "{told:?}"
    );
    let requests = &family("keda_gpu_scaler_grpc_requests_total").samples;
    for (method, code) in [("GetMetrics", "OK"), ("GetMetricSpec", "INVALID_ARGUMENT")] {
        assert!(
            requests
                .iter()
                .any(|s| s.label("method") == Some(method) && s.label("code") == Some(code)),
            "{method} {code}: {requests:?}"
        );
    }
    assert_eq!(
        family("keda_gpu_scaler_grpc_request_duration_seconds").kind,
        prom::Kind::Histogram
    );
    // Engine reads by outcome: one of each replica's.
    let reads = &family("keda_gpu_scaler_engine_replica_reads_total").samples;
    for outcome in ["ok", "http_status"] {
        let read = reads
            .iter()
            .find(|s| s.label("outcome") == Some(outcome))
            .unwrap_or_else(|| panic!("{outcome}: {reads:?}"));
        assert_eq!(read.value, 1.0, "{outcome}: {reads:?}");
    }
    // The failing temperature call, by call and code, once per pass.
    let call_errors = &family("keda_gpu_scaler_driver_call_errors_total").samples;
    let temperature = call_errors
        .iter()
        .find(|s| s.label("call") == Some("nvmlDeviceGetTemperature"))
        .unwrap_or_else(|| panic!("{call_errors:?}"));
    assert_eq!(
        (temperature.label("code"), temperature.label("backend")),
        (Some("TIMEOUT"), Some("nvml"))
    );
    assert!(temperature.value >= 2.0, "{call_errors:?}");
    // NOT_SUPPORTED is an absent reading, not a failure (GPU 1 is in MIG
    // mode, where utilization is NOT_SUPPORTED).
    // Nor is NOT_FOUND for an empty MIG slot (GPU 1 has six).
    assert!(
        call_errors
            .iter()
            .all(|s| !matches!(s.label("code"), Some("NOT_SUPPORTED" | "NOT_FOUND"))),
        "{call_errors:?}"
    );

    // Prometheus' own linter, where installed.
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(body.as_bytes())
                .unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Err(e) => eprintln!("promtool not run ({e}); .ci/run installs it"),
    }

    // Anything but GET /metrics is refused.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /debug HTTP/1.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
