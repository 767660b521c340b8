//! GetMetrics latency against the real server (fake NVML, real binary) and
//! against a grpcio server on the same proto that returns a constant (the
//! floor), at 1 and 64 concurrent clients, and at 64 while the scaler's
//! `/metrics` page is scraped every 100 ms; plus the server's peak RSS,
//! first after 200 `query` runs (one connection at a time, as KEDA), then
//! after everything. Last, in this process, the scaler's own work per call:
//! the trigger lookup and its evaluation over the same four GPUs.
//!
//! Run: `cargo bench --bench get_metrics`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{ChannelBuilder, EnvBuilder, RpcContext, ServerBuilder, ServerCredentials, UnarySink};
use keda_gpu_scaler::node::nvidia::read_node;
use keda_gpu_scaler::node::rates::Rates;
use keda_gpu_scaler::node::snapshot::{Attribution, NodeState, Snapshot};
use keda_gpu_scaler::nvml::Nvml;
use keda_gpu_scaler::proto::externalscaler::{GetMetricsRequest, GetMetricsResponse, MetricValue};
use keda_gpu_scaler::proto::externalscaler_grpc::{
    create_external_scaler, ExternalScaler, ExternalScalerClient,
};
use keda_gpu_scaler::scaling::evaluate::local_outcome;
use keda_gpu_scaler::scaling::outcome::Detail;
use keda_gpu_scaler::scaling::trigger_cache::TriggerCache;

const FLOOR_FLAG: &str = "--floor-server";
const CALLS_ALONE: usize = 5_000;
const CALLS_EACH_OF_64: usize = 500;
/// Rounds per client count, each measuring the floor and the scaler.
const ROUNDS: usize = 5;
/// `query` runs before any concurrent load, for the peak RSS KEDA's way.
const QUERIES: usize = 200;
/// In-process trigger lookups and evaluations.
const EVALUATIONS: u32 = 1_000_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == FLOOR_FLAG) {
        return run_floor_server();
    }
    let fake = common::FakeNvml::new(&format!(
        "{}{}{}{}",
        common::gpu_line(0, 35),
        common::gpu_line(1, 70),
        common::gpu_line(2, 55),
        common::gpu_line(3, 10)
    ));
    let metrics_port = common::free_port();
    let scaler = Command::new(env!("CARGO_BIN_EXE_keda-gpu-scaler"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sample-interval",
            "1s",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("NVML_LIBRARY_PATH", &fake.library)
        .env("RUST_LOG", "warn,keda_gpu_scaler::commands=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keda-gpu-scaler");
    let floor = Command::new(&args[0])
        .arg(FLOOR_FLAG)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start floor server");
    let mut scaler = Served::new(
        scaler,
        |line| line.split("127.0.0.1:").nth(1).map(str::to_string),
        true,
    );
    let mut floor = Served::new(
        floor,
        |line| line.strip_prefix("port ").map(str::to_string),
        false,
    );

    // KEDA keeps one connection per scaler address: the peak RSS of calls
    // made one connection at a time, each `query` a process of its own
    // (GetMetricSpec, GetMetrics, IsActive), before the concurrent rounds.
    let queried = Instant::now();
    for _ in 0..QUERIES {
        let status = Command::new(env!("CARGO_BIN_EXE_keda-gpu-scaler"))
            .args([
                "query",
                "--address",
                &format!("127.0.0.1:{}", scaler.port),
                "--metadata",
                "profile=vllm-inference",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("run keda-gpu-scaler query");
        assert!(status.success(), "query failed: {status}");
    }
    println!(
        "keda-gpu-scaler peak RSS after {QUERIES} query runs, one connection at a time: {:.1} MiB (goal <= 10 MiB; {:.1} s)",
        status_mib(scaler.child.id(), "VmHWM:"),
        queried.elapsed().as_secs_f64()
    );

    println!("GetMetrics latency over loopback (µs)");
    println!(
        "{:<34} {:>8} {:>8} {:>8}",
        "server / clients", "calls", "p50", "p99"
    );
    let mut ratios = Vec::new();
    let mut scaler_cpu_per_call_64 = 0.0;
    for clients in [1, 64] {
        let calls = if clients == 1 {
            CALLS_ALONE
        } else {
            CALLS_EACH_OF_64
        } / ROUNDS;
        // Warm up both, then alternate which goes first in each round, so
        // that neither gains from the machine's state; the ratio is the
        // median of the rounds' ratios, the latencies pooled.
        measure(floor.port, 1, 200);
        measure(scaler.port, 1, 200);
        let (mut floor_all, mut scaler_all) = (Vec::new(), Vec::new());
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        let (mut floor_cpu, mut scaler_cpu) = (0.0, 0.0);
        let timed = |server: &Served, cpu: &mut f64| {
            let before = cpu_seconds(server.child.id());
            let latency = measure(server.port, clients, calls);
            *cpu += cpu_seconds(server.child.id()) - before;
            latency
        };
        for round in 0..ROUNDS {
            let (floor_latency, scaler_latency) = if round % 2 == 0 {
                let f = timed(&floor, &mut floor_cpu);
                (f, timed(&scaler, &mut scaler_cpu))
            } else {
                let s = timed(&scaler, &mut scaler_cpu);
                (timed(&floor, &mut floor_cpu), s)
            };
            p50s.push(percentile(&scaler_latency, 0.50) / percentile(&floor_latency, 0.50));
            p99s.push(percentile(&scaler_latency, 0.99) / percentile(&floor_latency, 0.99));
            floor_all.extend(floor_latency);
            scaler_all.extend(scaler_latency);
        }
        for (name, latency) in [
            ("keda-gpu-scaler", &scaler_all),
            ("constant floor", &floor_all),
        ] {
            println!(
                "{:<34} {:>8} {:>8.0} {:>8.0}",
                format!("{name} / {clients}"),
                latency.len(),
                percentile(latency, 0.50),
                percentile(latency, 0.99)
            );
        }
        let per_call = |cpu: f64, latency: &Vec<f64>| cpu / latency.len() as f64 * 1e6;
        if clients == 64 {
            scaler_cpu_per_call_64 = per_call(scaler_cpu, &scaler_all);
        }
        println!(
            "{:<34} {:>8.1} µs scaler, {:.1} µs floor",
            format!("server CPU per call / {clients}"),
            per_call(scaler_cpu, &scaler_all),
            per_call(floor_cpu, &floor_all)
        );
        ratios.push((
            clients,
            percentile(&p50s, 0.5),
            percentile(&p99s, 0.5),
            scaler_cpu / floor_cpu,
        ));
    }
    // The same 64 clients while a Prometheus-like client scrapes /metrics
    // every 100 ms: the gRPC path should not notice.
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = std::thread::spawn({
        let scraping = std::sync::Arc::clone(&scraping);
        move || {
            let mut scrapes = 0u64;
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                let budget = keda_gpu_scaler::engine::http::BodyBudget::new(1 << 24);
                let deadline = Instant::now() + Duration::from_secs(2);
                let address = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
                if keda_gpu_scaler::engine::http::get(
                    address,
                    "bench",
                    "/metrics",
                    deadline,
                    1 << 24,
                    &budget,
                )
                .is_ok()
                {
                    scrapes += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            scrapes
        }
    });
    let mut scraped_p99s = Vec::new();
    for round in 0..ROUNDS {
        let (floor_latency, scaler_latency) = if round % 2 == 0 {
            let f = measure(floor.port, 64, CALLS_EACH_OF_64 / ROUNDS);
            (f, measure(scaler.port, 64, CALLS_EACH_OF_64 / ROUNDS))
        } else {
            let s = measure(scaler.port, 64, CALLS_EACH_OF_64 / ROUNDS);
            (measure(floor.port, 64, CALLS_EACH_OF_64 / ROUNDS), s)
        };
        scraped_p99s.push(percentile(&scaler_latency, 0.99) / percentile(&floor_latency, 0.99));
    }
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    assert!(scrapes > 0, "/metrics was never scraped");
    println!(
        "ratio scaler/floor at 64 clients while /metrics is scraped every 100 ms ({scrapes} scrapes), median of {ROUNDS} rounds: p99 {:.2}",
        percentile(&scraped_p99s, 0.5)
    );
    for (clients, p50, p99, cpu) in ratios {
        println!(
            "ratio scaler/floor at {clients} client(s), median of {ROUNDS} alternating rounds: p50 {p50:.2}, p99 {p99:.2} (goal <= 1.1); server CPU {cpu:.2}"
        );
    }
    for (name, pid) in [
        ("keda-gpu-scaler", scaler.child.id()),
        ("constant floor", floor.child.id()),
    ] {
        println!(
            "{name:<16} peak RSS {:.1} MiB (goal <= 10 MiB); now {:.1} MiB of code and files, {:.1} MiB anonymous",
            status_mib(pid, "VmHWM:"),
            status_mib(pid, "RssFile:"),
            status_mib(pid, "RssAnon:")
        );
    }
    scaler.stop();
    floor.stop();

    let own = trigger_work(&fake.library);
    println!(
        "trigger lookup and evaluation in-process, four GPUs, {EVALUATIONS} calls: {own:.3} µs per call, {:.1}% of the scaler's server CPU per call at 64 clients ({scaler_cpu_per_call_64:.1} µs)",
        own / scaler_cpu_per_call_64 * 100.0
    );
}

/// The scaler's own work in one GetMetrics, without gRPC: the trigger
/// cache's lookup (parsed once, as after KEDA's first call) and the
/// evaluation over a snapshot of the fake NVML's four GPUs, in µs per call.
fn trigger_work(library: &std::path::Path) -> f64 {
    // SAFETY: the fake NVML built for tests; its initialisers are trivial.
    let nvml = unsafe { Nvml::open_path(library) }.expect("open the fake NVML");
    let gpus = read_node(&nvml, &mut Rates::default()).expect("read the fake GPUs");
    assert_eq!(gpus.len(), 4);
    let snapshot = Snapshot {
        sequence: 1,
        taken_at: Instant::now(),
        duration: Duration::ZERO,
        state: NodeState::Ready {
            backend: "nvml",
            driver_version: "bench".into(),
            gpus,
            attribution: Attribution::complete(),
        },
    };
    let request = request();
    let scaled_object = request.scaledObjectRef();
    let cache = TriggerCache::default();
    let stale_after = Duration::from_secs(3600);
    let evaluate = || {
        let parsed = cache
            .get(
                scaled_object.namespace(),
                scaled_object.name(),
                scaled_object.scalerMetadata(),
            )
            .expect("the bench's trigger parses");
        local_outcome(
            &parsed.trigger,
            &snapshot,
            Instant::now(),
            stale_after,
            Detail::ValueOnly,
        )
        .value
        .expect("a value")
    };
    assert_eq!(evaluate(), 70.0, "the busiest of the four GPUs");
    let started = Instant::now();
    for _ in 0..EVALUATIONS {
        std::hint::black_box(evaluate());
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(EVALUATIONS)
}

/// A child server and the port it printed.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    fn new(mut child: Child, port_in: impl Fn(&str) -> Option<String>, stderr: bool) -> Self {
        let lines: Box<dyn std::io::Read + Send> = if stderr {
            Box::new(child.stderr.take().unwrap())
        } else {
            Box::new(child.stdout.take().unwrap())
        };
        let mut reader = BufReader::new(lines);
        let mut line = String::new();
        let port = loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "server exited before reporting its port"
            );
            if let Some(rest) = port_in(&line) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per-call latencies in µs from `clients` threads making `calls` each.
fn measure(port: u16, clients: usize, calls: usize) -> Vec<f64> {
    let env = Arc::new(EnvBuilder::new().cq_count(2).build());
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let env = Arc::clone(&env);
            std::thread::spawn(move || {
                let channel = ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}"));
                let client = ExternalScalerClient::new(channel);
                let request = request();
                (0..calls)
                    .map(|_| {
                        let started = Instant::now();
                        let response = client.get_metrics(&request).expect("GetMetrics");
                        assert_eq!(response.metricValues().len(), 1);
                        started.elapsed().as_secs_f64() * 1e6
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

fn request() -> GetMetricsRequest {
    let mut request = GetMetricsRequest::new();
    request.set_scaledObjectRef(common::scaled_object(&[
        ("profile", "vllm-inference"),
        ("scalerAddress", "x:6000"),
    ]));
    request.set_metricName("gpu-utilization-max".into());
    request
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// User plus system CPU of a process so far, in seconds (`/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Clock ticks; 100 per second on Linux.
    fields.iter().sum::<f64>() / 100.0
}

/// A `/proc/<pid>/status` memory line, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The floor: same proto and server setup, no trigger parsing, no snapshot.
#[derive(Clone)]
struct ConstantScaler;

impl ExternalScaler for ConstantScaler {
    fn get_metrics(
        &mut self,
        ctx: RpcContext,
        req: GetMetricsRequest,
        sink: UnarySink<GetMetricsResponse>,
    ) {
        let mut value = MetricValue::new();
        value.set_metricName(req.metricName().to_string());
        value.set_metricValue(70);
        value.set_metricValueFloat(70.0);
        let mut response = GetMetricsResponse::new();
        response.mut_metricValues().push(value);
        ctx.spawn(async move {
            let _ = sink.success(response).await;
        });
    }
}

fn run_floor_server() {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let mut server = ServerBuilder::new(env)
        .register_service(create_external_scaler(ConstantScaler))
        .build()
        .expect("build floor server");
    let port = server
        .add_listening_port("127.0.0.1:0", ServerCredentials::insecure())
        .expect("bind floor server");
    server.start();
    println!("port {port}");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
