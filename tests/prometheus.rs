//! The Grafana dashboard against a real Prometheus: a scaler on the fake
//! NVML with a fake kubelet, a Prometheus (the Debian package, which
//! `.ci/run` installs) scraping it on loopback, and every PromQL
//! expression in `deploy/grafana/keda-gpu-scaler.json` run through
//! Prometheus' HTTP API: each must parse and return at least one series.
//! Where no `prometheus` binary is installed the test says so and checks
//! only that the dashboard's expressions name exported families.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use keda_gpu_scaler::engine::http::{self, Budget};
use keda_gpu_scaler::grpc::server;

const DASHBOARD: &str = include_str!("../deploy/grafana/keda-gpu-scaler.json");

/// Every `"expr"` and variable `"definition"`, with Grafana's variables
/// replaced as "All" would (`.*`).
fn expressions() -> Vec<String> {
    let mut found = Vec::new();
    for key in ["\"expr\": \"", "\"definition\": \""] {
        for (start, _) in DASHBOARD.match_indices(key) {
            let rest = &DASHBOARD[start + key.len()..];
            let mut text = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => text.push(chars.next().unwrap_or('\\')),
                    '"' => break,
                    c => text.push(c),
                }
            }
            found.push(text);
        }
    }
    found
        .into_iter()
        .map(|e| {
            ["$node", "$gpu", "$namespace", "$scaledobject"]
                .iter()
                .fold(e, |e, var| e.replace(var, ".*"))
        })
        .collect()
}

/// `label_values(x, label)` is Grafana's, not PromQL: its series query.
fn as_promql(expression: &str) -> String {
    match expression.strip_prefix("label_values(") {
        Some(rest) => rest
            .rsplit_once(',')
            .map_or(rest, |(metric, _)| metric)
            .to_string(),
        None => expression.to_string(),
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(port: u16, promql: &str) -> Result<String, String> {
    let budget = Budget::new(16 << 20);
    let path = format!("/api/v1/query?query={}", encode(promql));
    let deadline = Instant::now() + Duration::from_secs(5);
    http::get(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "prometheus",
        &path,
        deadline,
        8 << 20,
        &budget,
    )
    .map(|page| page.text.clone())
    .map_err(|e| e.to_string())
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let expressions = expressions();
    assert!(expressions.len() >= 15, "{expressions:?}");
    for expression in &expressions {
        assert!(
            expression.contains("keda_gpu_scaler_"),
            "an expression that reads none of the scaler's families: {expression}"
        );
    }

    // The MIG-mode query fails on every pass, for the driver-errors panel.
    let fake = FakeNvml::new(
        "gpu 0 uuid=GPU-h name=\"NVIDIA H200\" util=90 mem_total_mib=1000 mem_used_mib=500 temp=60 power_mw=500000 gpm=1 sm=45\n\
         fail 0 mig UNKNOWN\n",
    );
    let kubelet = FakeKubelet::default();
    let socket = fake.dir.join("kubelet.sock");
    let _kubelet_server = kubelet.serve(&socket);
    kubelet.set_pods(&[("default", "vllm-0", "GPU-h")]);
    let mut config = local_config(&fake.library);
    config.pod_resources_socket = socket;
    config.metrics_listen = Some("127.0.0.1:0".into());
    // A cluster of this scaler and a peer that refuses, for the peers panel.
    let own = free_port();
    config.listen = format!("127.0.0.1:{own}");
    config.peers = vec![
        format!("127.0.0.1:{own}"),
        format!("127.0.0.1:{}", free_port()),
    ];
    config.peer_timeout = config.sample_interval / 2;
    let server = server::start(&config).expect("start server");
    let metrics = server.metrics_port().unwrap();
    let client = client(server.port());
    // A trigger that answers, one that is active, and one that errors.
    wait_for_value(
        &client,
        &[("workload", "vllm"), ("metricType", "sm_activity")],
        45.0,
    );
    let _ = is_active(
        &client,
        &[("workload", "vllm"), ("metricType", "sm_activity")],
    );
    let _ = value(&client, &[("workload", "vllm"), ("gpuIndex", "7")]);

    let binary = match Command::new("prometheus").arg("--version").output() {
        Ok(_) => "prometheus",
        Err(e) => {
            eprintln!("prometheus is not installed ({e}); .ci/run installs it and runs the rest");
            return;
        }
    };
    let port = free_port();
    let config_file = fake.dir.join("prometheus.yml");
    std::fs::write(
        &config_file,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: keda-gpu-scaler\n    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Prometheus(
        Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                fake.dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    // Two scrapes at least, and a rate's worth of samples.
    let scraped = wait_until(Duration::from_secs(60), || {
        query(port, "count_over_time(keda_gpu_scaler_build_info[1m])")
            .is_ok_and(|answer| answer.contains("\"value\":[") && !answer.contains("\"1\"]"))
    });
    assert!(scraped, "Prometheus never scraped the scaler twice");
    // Rates need two samples of a counter that moved between them.
    for _ in 0..3 {
        let _ = value(
            &client,
            &[("workload", "vllm"), ("metricType", "sm_activity")],
        );
        let _ = value(&client, &[("workload", "vllm"), ("gpuIndex", "7")]);
        let before =
            query(port, "count_over_time(keda_gpu_scaler_build_info[1m])").unwrap_or_default();
        wait_until(Duration::from_secs(10), || {
            query(port, "count_over_time(keda_gpu_scaler_build_info[1m])")
                .is_ok_and(|a| a != before)
        });
    }

    for expression in &expressions {
        let promql = as_promql(expression);
        let mut last = String::new();
        let answered = wait_until(Duration::from_secs(20), || {
            last = query(port, &promql).unwrap_or_else(|e| e);
            last.contains("\"status\":\"success\"") && last.contains("\"metric\":")
        });
        assert!(answered, "{promql}: {last}");
    }
}
