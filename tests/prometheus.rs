//! The Grafana dashboard against a real Prometheus: a scaler on the fake
//! NVML with a fake kubelet, a Prometheus (the Debian package, which
//! `.ci/run` installs) scraping it on loopback, and every PromQL
//! expression in `deploy/grafana/keda-gpu-scaler.json` run through
//! Prometheus' HTTP API: each must parse and return at least one series.
//! With or without Prometheus, every sample name an expression reads must
//! be on the scaler's page; where no `prometheus` binary is installed the
//! test says so and stops there. The
//! dashboard's JSON is also read as Grafana reads it: its tables are
//! instant queries in table format merged into one frame, and its trigger
//! panels follow the pod KEDA asked last, checked against two scalers.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use keda_gpu_scaler::engine::http::{self, BodyBudget};
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
    found.iter().map(|e| all_variables(e)).collect()
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

/// A JSON value, as far as the dashboard and Prometheus' answers need.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = JsonParser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.space();
        if parser.at != parser.bytes.len() {
            return Err(format!("trailing text at byte {}", parser.at));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Json::Text(text) => Some(text),
            _ => None,
        }
    }

    fn items(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            _ => &[],
        }
    }
}

struct JsonParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn space(&mut self) {
        while self.at < self.bytes.len() && self.bytes[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), String> {
        self.space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", byte as char, self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.space();
        let rest = &self.bytes[self.at..];
        for (word, value) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if rest.starts_with(word.as_bytes()) {
                self.at += word.len();
                return Ok(value);
            }
        }
        match rest.first() {
            Some(b'"') => self.string().map(Json::Text),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(format!("bad array at byte {}", self.at)),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.space();
                if self.bytes.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.eat(b':')?;
                    members.push((key, self.value()?));
                    self.space();
                    match self.bytes.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(format!("bad object at byte {}", self.at)),
                    }
                }
            }
            _ => {
                let start = self.at;
                while self.at < self.bytes.len()
                    && matches!(
                        self.bytes[self.at],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.at += 1;
                }
                std::str::from_utf8(&self.bytes[start..self.at])
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .map(Json::Number)
                    .ok_or_else(|| format!("bad value at byte {start}"))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let byte = *self.bytes.get(self.at).ok_or("unterminated string")?;
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let escape = *self.bytes.get(self.at).ok_or("unterminated escape")?;
                    self.at += 1;
                    let c = match escape {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self.bytes.get(self.at..self.at + 4).ok_or("short \\u")?;
                            self.at += 4;
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).unwrap_or(""), 16)
                                    .map_err(|e| e.to_string())?;
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        other => other as char,
                    };
                    let mut buffer = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                }
                byte => out.push(byte),
            }
        }
    }
}

fn dashboard() -> Json {
    Json::parse(DASHBOARD).expect("the dashboard is JSON")
}

/// The panel titled `title`'s expressions, Grafana's variables replaced as
/// "All" would.
fn panel_expressions(title: &str) -> Vec<String> {
    let dashboard = dashboard();
    let panel = dashboard
        .get("panels")
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .find(|p| p.get("title").and_then(Json::text) == Some(title))
        .unwrap_or_else(|| panic!("no panel {title:?}"))
        .clone();
    panel
        .get("targets")
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.get("expr").and_then(Json::text))
        .map(all_variables)
        .collect()
}

fn all_variables(expression: &str) -> String {
    ["$node", "$gpu", "$namespace", "$scaledobject"]
        .iter()
        .fold(expression.to_string(), |e, var| e.replace(var, ".*"))
}

/// Grafana renders a table panel's queries as one table only when each is
/// an instant query in table format and a transformation merges or joins
/// their frames (else it shows one frame per series, with a picker).
#[test]
fn the_fleet_tables_are_one_table_each() {
    let dashboard = dashboard();
    let tables: Vec<&Json> = dashboard
        .get("panels")
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .filter(|p| p.get("type").and_then(Json::text) == Some("table"))
        .collect();
    assert!(tables.len() >= 2, "the fleet tables: {}", tables.len());
    for panel in tables {
        let title = panel.get("title").and_then(Json::text).unwrap_or("?");
        let targets = panel.get("targets").map(Json::items).unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(
                (
                    target.get("instant"),
                    target.get("format").and_then(Json::text)
                ),
                (Some(&Json::Bool(true)), Some("table")),
                "{title}: every query instant, in table format: {target:?}"
            );
        }
        let transformations: Vec<&str> = panel
            .get("transformations")
            .map(Json::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.get("id").and_then(Json::text))
            .collect();
        assert!(
            transformations
                .iter()
                .any(|t| matches!(*t, "merge" | "joinByField" | "seriesToRows")),
            "{title}: no transformation makes one table of its frames: {transformations:?}"
        );
    }
}

struct Prometheus(Child);

impl Prometheus {
    /// Prometheus on a free loopback port, scraping `targets` every second,
    /// its files under `dir`; with the port, or `None` where not installed.
    fn start(dir: &std::path::Path, targets: &[u16]) -> Option<(Prometheus, u16)> {
        if let Err(e) = Command::new("prometheus").arg("--version").output() {
            eprintln!("prometheus is not installed ({e}); .ci/run installs it and runs the rest");
            return None;
        }
        let port = free_port();
        let config_file = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'127.0.0.1:{t}'")).collect();
        std::fs::write(
            &config_file,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: keda-gpu-scaler\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .unwrap();
        let prometheus = Prometheus(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("tsdb").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prometheus"),
        );
        Some((prometheus, port))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn query(port: u16, promql: &str) -> Result<String, String> {
    let budget = BodyBudget::new(16 << 20);
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

    // Without Prometheus as with it: every sample name an expression reads
    // is on the page (a histogram's `_bucket` as exported).
    let mut page = String::new();
    let mut missing = Vec::new();
    let all_there = wait_until(PATIENCE, || {
        page = metrics_page(metrics);
        missing = sample_names(&expressions)
            .into_iter()
            .filter(|name| !has_sample(&page, name))
            .collect();
        missing.is_empty()
    });
    assert!(all_there, "not on the page: {missing:?}\n{page}");

    let Some((_prometheus, port)) = Prometheus::start(&fake.dir, &[metrics]) else {
        return;
    };
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

/// The scaler's `/metrics` page.
fn metrics_page(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: scaler\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_once("\r\n\r\n")
        .map_or(answer.clone(), |(_, body)| body.to_string())
}

/// Every `keda_gpu_scaler_…` name the expressions read, once each.
fn sample_names(expressions: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for expression in expressions {
        for (start, _) in expression.match_indices("keda_gpu_scaler_") {
            let name: String = expression[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Whether `page` has a sample named exactly `name`.
fn has_sample(page: &str, name: &str) -> bool {
    page.lines().any(|line| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[test]
fn a_name_is_on_the_page_only_as_a_sample_of_that_name() {
    let page = "# TYPE x_seconds histogram\nx_seconds_bucket{le=\"1\"} 1\nx_seconds_sum 2\ny 1\n";
    assert!(has_sample(page, "x_seconds_bucket"));
    assert!(has_sample(page, "y"));
    // A family's `# TYPE` line, or a longer name, is not a sample of it.
    assert!(!has_sample(page, "x_seconds"));
    assert!(!has_sample(page, "x_seconds_bu"));
    assert_eq!(
        sample_names(&["sum(rate(keda_gpu_scaler_a_total[5m])) / keda_gpu_scaler_b".into()]),
        ["keda_gpu_scaler_a_total", "keda_gpu_scaler_b"]
    );
}

/// `(labels, value)` of each series in an instant query's answer.
fn vector(answer: &str) -> Vec<(Json, String)> {
    let Ok(answer) = Json::parse(answer) else {
        return Vec::new();
    };
    answer
        .get("data")
        .and_then(|d| d.get("result"))
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|series| {
            let value = series.get("value")?.items().get(1)?.text()?.to_string();
            Some((series.get("metric")?.clone(), value))
        })
        .collect()
}

/// Two pods each keep what they last told a ScaledObject for 10 minutes;
/// when KEDA's connection moves from one to the other, the trigger panels
/// show only the pod asked last (one line, its value), both ways.
#[test]
fn the_trigger_panels_follow_the_pod_keda_asked_last() {
    let busy = FakeNvml::new(&gpu_line(0, 90));
    let idle = FakeNvml::new(&gpu_line(0, 30));
    let start = |fake: &FakeNvml, node: &str| {
        let mut config = local_config(&fake.library);
        config.node_name = node.into();
        config.metrics_listen = Some("127.0.0.1:0".into());
        server::start(&config).expect("start server")
    };
    let a = start(&busy, "node-a");
    let b = start(&idle, "node-b");
    let (client_a, client_b) = (client(a.port()), client(b.port()));
    let Some((_prometheus, port)) = Prometheus::start(
        &busy.dir,
        &[a.metrics_port().unwrap(), b.metrics_port().unwrap()],
    ) else {
        return;
    };
    let title = "Why did my workload scale? Value against target";
    let value_query = panel_expressions(title)
        .into_iter()
        .find(|e| e.contains("keda_gpu_scaler_trigger_value"))
        .expect("the value query");
    let mut last = String::new();
    let mut shows = |value: &str, both_kept: bool| {
        let reached = wait_until(Duration::from_secs(30), || {
            last = query(port, &value_query).unwrap_or_else(|e| e);
            let series = vector(&last);
            let kept =
                vector(&query(port, "keda_gpu_scaler_trigger_value").unwrap_or_default()).len();
            series.len() == 1 && series[0].1 == value && (!both_kept || kept == 2)
        });
        assert!(
            reached,
            "{value_query}: never one series of {value}: {last}"
        );
    };

    // KEDA asks node-a, then its connection moves to node-b.
    wait_for_value(&client_a, &[], 90.0);
    shows("90", false);
    wait_for_value(&client_b, &[], 30.0);
    shows("30", true);
    // And back.
    wait_for_value(&client_a, &[], 90.0);
    shows("90", true);
}
