//! The `/metrics` page through a running server: GPU and MIG readings with
//! the pods holding them, what each ScaledObject was told, the scaler's own
//! health, in the exposition format Prometheus requires. Where `promtool`
//! is installed (`.ci/run` installs it), the page also passes
//! `promtool check metrics`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use fake_engine::{Answer, Behaviour, Kind, Load, Replica};
use keda_gpu_scaler::engine::prom;
use keda_gpu_scaler::grpc::server;
use keda_gpu_scaler::node::backend::BackendChoice;

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

/// The samples of `family` on `body` whose labels include `labels`.
fn samples(body: &str, family: &str, labels: &[(&str, &str)]) -> Vec<prom::Sample> {
    let families = prom::families(body, &[family]).unwrap();
    families
        .into_iter()
        .flat_map(|f| f.samples)
        .filter(|s| labels.iter().all(|(l, v)| s.label(l) == Some(*v)))
        .collect()
}

/// The one sample of `family` with `labels`, if exactly one.
fn gauge(body: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match samples(body, family, labels).as_slice() {
        [one] => Some(one.value),
        _ => None,
    }
}

/// Scrapes until `condition` holds on the page; returns that page, or
/// panics with the last one.
fn wait_for_page(port: u16, what: &str, condition: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let reached = wait_until(PATIENCE, || {
        last = scrape(port).1;
        condition(&last)
    });
    assert!(reached, "never saw {what}; last page:\n{last}");
    last
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
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
    let started = unix_now();
    // A rate needs two passes; a trigger and a rejected one give the
    // per-trigger and per-code series.
    wait_for_value(
        &client,
        &[("workload", "small"), ("metricType", "sm_activity")],
        80.0,
    );
    wait_for_value(&client, &[("workload", "vllm")], 99.0);
    // IsActive on the MIG trigger gives its `trigger_active` series.
    let active = is_active(
        &client,
        &[("workload", "small"), ("metricType", "sm_activity")],
    )
    .expect("IsActive");
    assert!(active.result());
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
    // Every family asked for is on the page: `prom::families` leaves out
    // a missing one silently.
    for name in wanted {
        assert!(
            !family(name).samples.is_empty(),
            "{name} has no series:\n{body}"
        );
    }
    let only = |name: &str| match family(name).samples.as_slice() {
        [one] => one.clone(),
        other => panic!("{name}: one series expected, got {other:?}"),
    };
    let build = only("keda_gpu_scaler_build_info");
    assert_eq!(
        (build.value, build.label("version")),
        (1.0, Some(env!("CARGO_PKG_VERSION")))
    );
    // Both GPUs answer their library.
    let up = &family("keda_gpu_scaler_gpu_up").samples;
    for uuid in ["GPU-h", "GPU-m"] {
        assert!(
            up.iter()
                .any(|s| s.label("uuid") == Some(uuid) && s.value == 1.0),
            "{uuid}: {up:?}"
        );
    }
    let age = only("keda_gpu_scaler_snapshot_age_seconds").value;
    assert!((0.0..5.0).contains(&age), "snapshot age {age}");
    // The scrape above holds no stream open.
    assert_eq!(only("keda_gpu_scaler_open_streams").value, 0.0);
    let of_trigger = |name: &str| {
        family(name)
            .samples
            .iter()
            .find(|s| s.label("metric") == Some("sm-activity-max"))
            .unwrap_or_else(|| panic!("{name} of sm-activity-max:\n{body}"))
            .value
    };
    // The default target, and active since 80 > the activation threshold 0.
    assert_eq!(of_trigger("keda_gpu_scaler_trigger_target"), 80.0);
    assert_eq!(of_trigger("keda_gpu_scaler_trigger_active"), 1.0);
    // GPU 0's PCIe counter grows at the fake's `pcie_tx_mbps=300`, GPU 1's
    // not at all.
    let transmit = &family("keda_gpu_scaler_gpu_pcie_transmit_bytes_per_second").samples;
    let of_gpu = |gpu: &str| {
        transmit
            .iter()
            .find(|s| s.label("gpu") == Some(gpu))
            .unwrap_or_else(|| panic!("GPU {gpu}: {transmit:?}"))
            .value
    };
    assert!((of_gpu("0") / 300e6 - 1.0).abs() < 0.05, "{transmit:?}");
    assert_eq!(of_gpu("1"), 0.0, "{transmit:?}");
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
    // Every trigger family carries the node, and when each trigger last
    // asked this pod.
    for name in [
        "keda_gpu_scaler_trigger_value",
        "keda_gpu_scaler_trigger_target",
        "keda_gpu_scaler_trigger_last_asked_timestamp_seconds",
    ] {
        let all = samples(&body, name, &[]);
        assert!(!all.is_empty(), "{name} missing:\n{body}");
        for sample in &all {
            assert_eq!(
                (
                    sample.label("node"),
                    sample.label("namespace"),
                    sample.label("scaledobject"),
                ),
                (Some("test-node"), Some("default"), Some("app")),
                "{name}: {sample:?}"
            );
        }
    }
    let asked = samples(
        &body,
        "keda_gpu_scaler_trigger_last_asked_timestamp_seconds",
        &[("metric", "sm-activity-max")],
    );
    assert!(
        asked.len() == 1 && (started..=unix_now()).contains(&asked[0].value),
        "asked between {started} and now: {asked:?}"
    );
    let requests = &family("keda_gpu_scaler_grpc_requests_total").samples;
    assert!(
        requests
            .iter()
            .all(|s| s.label("node") == Some("test-node")),
        "{requests:?}"
    );
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

/// A sampler stuck in a GPU library call: past the staleness limit (3
/// intervals, as gRPC health and the triggers apply it) the page leaves
/// every reading and `gpu_up` out, says `snapshot_stale 1` and
/// `driver_up 0`, and shows the readings again once the call returns.
#[test]
fn a_hung_sampler_leaves_the_readings_out_until_it_recovers() {
    let healthy = "gpu 0 uuid=GPU-h name=\"NVIDIA H200\" util=50 mem_total_mib=1000 mem_used_mib=250 temp=60 power_mw=500000\n";
    let fake = FakeNvml::new(healthy);
    let mut config = local_config(&fake.library);
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = server::start(&config).expect("start server");
    let port = server.metrics_port().expect("a metrics port");
    let fresh = |body: &str| {
        gauge(
            body,
            "keda_gpu_scaler_snapshot_stale",
            &[("node", "test-node")],
        ) == Some(0.0)
            && gauge(
                body,
                "keda_gpu_scaler_gpu_utilization_ratio",
                &[("gpu", "0")],
            ) == Some(0.5)
            && gauge(body, "keda_gpu_scaler_gpu_up", &[("gpu", "0")]) == Some(1.0)
            && gauge(body, "keda_gpu_scaler_driver_up", &[("backend", "nvml")]) == Some(1.0)
    };
    wait_for_page(port, "fresh readings", fresh);

    fake.set(&format!("{healthy}hang 0 power 60000\n"));
    let body = wait_for_page(port, "snapshot_stale 1", |body| {
        gauge(
            body,
            "keda_gpu_scaler_snapshot_stale",
            &[("node", "test-node")],
        ) == Some(1.0)
    });
    // No frozen reading shown as live: no GPU family has a sample.
    let frozen: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("keda_gpu_scaler_gpu_"))
        .collect();
    assert!(frozen.is_empty(), "{frozen:?}\n{body}");
    assert_eq!(
        gauge(&body, "keda_gpu_scaler_driver_up", &[("backend", "nvml")]),
        Some(0.0),
        "{body}"
    );
    let age = gauge(&body, "keda_gpu_scaler_snapshot_age_seconds", &[]).unwrap();
    assert!(age > 0.3, "past the 0.3 s limit: {age}");

    // The call returns: fresh readings again.
    fake.set(healthy);
    wait_for_page(port, "fresh readings after the hang", fresh);
}

/// `driver_up` is one series per process, labelled with the configured
/// library: 1 while it answers with a healthy GPU, 0 when every GPU is
/// lost and when the library fails as a whole (never a second series
/// with `backend=""`).
#[test]
fn driver_up_is_one_series_that_says_whether_any_gpu_answers() {
    let two = format!("{}{}", gpu_line(0, 30), gpu_line(1, 60));
    let fake = FakeNvml::new(&two);
    let mut config = local_config(&fake.library);
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = server::start(&config).expect("start server");
    let port = server.metrics_port().expect("a metrics port");
    let driver_up = |body: &str| {
        let all = samples(body, "keda_gpu_scaler_driver_up", &[]);
        assert!(
            all.len() == 1 && all[0].label("backend") == Some("nvml"),
            "one driver_up series, backend nvml: {all:?}"
        );
        all[0].value
    };
    wait_for_page(port, "driver_up 1", |body| driver_up(body) == 1.0);

    fake.set(&format!(
        "{two}fail 0 * GPU_IS_LOST\nfail 1 * GPU_IS_LOST\n"
    ));
    wait_for_page(port, "driver_up 0 with every GPU lost", |body| {
        gauge(body, "keda_gpu_scaler_gpu_up", &[("gpu", "1")]) == Some(0.0)
            && driver_up(body) == 0.0
    });

    fake.set(&format!("count_error UNKNOWN\n{two}"));
    wait_for_page(port, "driver_up 0 with NVML failing", |body| {
        samples(body, "keda_gpu_scaler_gpu_up", &[]).is_empty() && driver_up(body) == 0.0
    });

    fake.set(&two);
    wait_for_page(port, "driver_up 1 again", |body| driver_up(body) == 1.0);
}

/// With `--gpu-backend auto` the label is `auto` until a library answers,
/// then that library's, and stays so when it fails.
#[test]
fn driver_up_under_auto_names_the_library_that_answered() {
    let fake = FakeNvml::new("init_error DRIVER_NOT_LOADED\n");
    let mut config = local_config(&fake.library);
    config.backend.choice = BackendChoice::Auto;
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = server::start(&config).expect("start server");
    let port = server.metrics_port().expect("a metrics port");
    let driver_up = |body: &str| {
        let all = samples(body, "keda_gpu_scaler_driver_up", &[]);
        assert_eq!(all.len(), 1, "one driver_up series: {all:?}");
        (
            all[0].label("backend").unwrap_or("").to_string(),
            all[0].value,
        )
    };
    // The first pass has run (its error counted) with no library loaded.
    wait_for_page(port, "driver_up{backend=auto} 0", |body| {
        driver_up(body) == ("auto".into(), 0.0)
            && samples(body, "keda_gpu_scaler_snapshot_age_seconds", &[]).len() == 1
    });
    fake.set(&gpu_line(0, 50));
    wait_for_page(port, "driver_up{backend=nvml} 1", |body| {
        driver_up(body) == ("nvml".into(), 1.0)
    });
    fake.set(&format!("count_error UNKNOWN\n{}", gpu_line(0, 50)));
    wait_for_page(port, "driver_up{backend=nvml} 0", |body| {
        samples(body, "keda_gpu_scaler_gpu_up", &[]).is_empty()
            && driver_up(body) == ("nvml".into(), 0.0)
    });
}

/// A MIG device's failed reading is on `gpu_read_errors`, labelled with
/// the device as its readings are.
#[test]
fn mig_devices_read_errors_are_counted() {
    let mig = "gpu 0 uuid=GPU-m name=\"NVIDIA H200\" mig=1 gpm=1\n\
mig 0 0 uuid=MIG-a profile=3g.71gb gi=1 ci=0 mem_total_mib=1000 mem_used_mib=500 sm=80\n";
    let fake = FakeNvml::new(mig);
    let mut config = local_config(&fake.library);
    config.metrics_listen = Some("127.0.0.1:0".into());
    let server = server::start(&config).expect("start server");
    let port = server.metrics_port().expect("a metrics port");
    // GPM answers first (its support is then known), then sampling fails.
    wait_for_page(port, "the MIG device's SM activity", |body| {
        gauge(
            body,
            "keda_gpu_scaler_gpu_sm_activity_ratio",
            &[("mig", "MIG-a")],
        ) == Some(0.8)
    });
    fake.set(&format!("{mig}fail 0 gpm UNKNOWN\n"));
    let body = wait_for_page(port, "the MIG device's read error", |body| {
        gauge(
            body,
            "keda_gpu_scaler_gpu_read_errors",
            &[
                ("node", "test-node"),
                ("gpu", "0"),
                ("mig", "MIG-a"),
                ("mig_profile", "3g.71gb"),
                ("what", "sm_activity"),
            ],
        ) == Some(1.0)
    });
    // The whole GPU's own errors stay apart, with an empty `mig`.
    for sample in samples(&body, "keda_gpu_scaler_gpu_read_errors", &[]) {
        assert!(
            matches!(sample.label("mig"), Some("" | "MIG-a")),
            "{sample:?}"
        );
    }
}
