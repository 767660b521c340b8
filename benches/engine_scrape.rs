//! Engine scrapes against their floor: 64 loopback replicas (one
//! `fake-engine` process) each serve a vLLM page of about 200 KB, with its
//! histograms. The scraper reads all 64 as a trigger does (resolve, fetch
//! in parallel, parse the wanted families, keep them); the floor makes the
//! same 64 fetches with the same HTTP client and threads, and parses
//! nothing. Also: parse throughput alone, CPU per scrape, and an SLO round
//! (a p90 TTFT and a generated-token rate over a window) against the gauge
//! round on the same pages, with the memory windows keep per replica.
//!
//! Run: `cargo bench --bench engine_scrape`

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keda_gpu_scaler::engine::endpoint::Endpoint;
use keda_gpu_scaler::engine::http::{self, BodyBudget};
use keda_gpu_scaler::engine::prom;
use keda_gpu_scaler::engine::resolve::Resolved;
use keda_gpu_scaler::engine::scrape::{Resolver, ScrapeConfig, Scraper};

const REPLICAS: usize = 64;
/// Scrapes per alternating round, for each of scraper and floor.
const SCRAPES: usize = 40;
const ROUNDS: usize = 5;
const WANTED: [&str; 3] = [
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
];

fn main() {
    let dir = std::env::temp_dir().join(format!("engine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    // Six data-parallel engines: a page the size of a busy production one.
    // Counters and histograms move: 50 requests a second per replica.
    std::fs::write(
        &state,
        "waiting=3 running=2 kv=0.4 dp=6 rate=50 ttft_now=0.3",
    )
    .unwrap();
    let (mut engines, addresses) = start_engines(&state);

    let page = fetch(addresses[0]).expect("a page");
    println!(
        "vLLM page: {} bytes, {} lines, {} families; {REPLICAS} replicas on loopback",
        page.len(),
        page.lines().count(),
        page.lines().filter(|l| l.starts_with("# TYPE")).count()
    );

    // Parse alone: the wanted families out of the whole page.
    let parses = 2_000;
    let started = cpu_seconds();
    for _ in 0..parses {
        let parsed = prom::families_and_names(&page, &WANTED, 256).unwrap();
        assert_eq!(parsed.0.len(), 3);
    }
    let cpu = cpu_seconds() - started;
    println!(
        "parse: {:.0} MB/s of page, {:.0} µs CPU per page",
        (page.len() * parses) as f64 / cpu / 1e6,
        cpu / parses as f64 * 1e6
    );

    let scraper = Scraper::new(ScrapeConfig {
        // Every call a new round: the cache would otherwise answer.
        interval: Duration::ZERO,
        resolver: Resolver(Arc::new({
            let addresses = addresses.clone();
            move |_, _| Resolved::Addresses(addresses.clone())
        })),
        // Replicas on loopback: a lab's policy (the default refuses it).
        policy: common::lab_policy(),
        ..ScrapeConfig::new(Duration::ZERO)
    });
    let endpoint = Endpoint {
        host: String::from("vllm.bench"),
        port: addresses[0].port(),
        path: String::from("/metrics"),
    };
    let wants: Vec<prom::Want> = WANTED.iter().map(|f| prom::Want::all(f)).collect();
    let scrape = || {
        let started = Instant::now();
        let round =
            futures_executor::block_on(scraper.scrape(&endpoint, &wants, Duration::from_secs(5)));
        let elapsed = started.elapsed();
        if let Some(failed) = round.replicas.iter().find(|r| r.page.is_err()) {
            panic!("replica {} failed: {:?}", failed.address, failed.page);
        }
        elapsed
    };
    let budget = BodyBudget::new(usize::MAX);
    let floor = || {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for address in &addresses {
                let budget = &budget;
                scope.spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    http::get(
                        *address,
                        "vllm.bench",
                        "/metrics",
                        deadline,
                        http::MAX_BODY_BYTES,
                        budget,
                    )
                    .expect("floor fetch");
                });
            }
        });
        started.elapsed()
    };

    // Warm up, then alternate which goes first in each round.
    for _ in 0..3 {
        scrape();
        floor();
    }
    let (mut scraper_all, mut floor_all) = (Vec::new(), Vec::new());
    let mut p50s = Vec::new();
    let (mut scraper_cpu, mut floor_cpu) = (0.0, 0.0);
    for round in 0..ROUNDS {
        let (s, f) = if round % 2 == 0 {
            let s = timed(&scrape, &mut scraper_cpu);
            (s, timed(&floor, &mut floor_cpu))
        } else {
            let f = timed(&floor, &mut floor_cpu);
            (timed(&scrape, &mut scraper_cpu), f)
        };
        p50s.push(percentile(&s, 0.5) / percentile(&f, 0.5));
        scraper_all.extend(s);
        floor_all.extend(f);
    }
    println!("scrape of all {REPLICAS} replicas (ms)");
    println!("{:<28} {:>8} {:>8} {:>8}", "", "scrapes", "p50", "p99");
    for (name, latencies) in [
        ("scraper (fetch + parse)", &scraper_all),
        ("floor (fetch only)", &floor_all),
    ] {
        println!(
            "{name:<28} {:>8} {:>8.2} {:>8.2}",
            latencies.len(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.99)
        );
    }
    let per_scrape = |cpu: f64| cpu / (ROUNDS * SCRAPES) as f64 * 1e3;
    println!(
        "CPU per scrape of {REPLICAS}: scraper {:.1} ms, floor {:.1} ms (this process; the engines run in another)",
        per_scrape(scraper_cpu),
        per_scrape(floor_cpu)
    );
    println!(
        "ratio scraper/floor: p50 {:.2} (median of {ROUNDS} alternating rounds), p99 {:.2} (of all {} scrapes each; goal <= 1.2); CPU {:.2}",
        percentile(&p50s, 0.5),
        percentile(&scraper_all, 0.99) / percentile(&floor_all, 0.99),
        ROUNDS * SCRAPES,
        scraper_cpu / floor_cpu
    );
    let per_replica_ms = per_scrape(scraper_cpu) / REPLICAS as f64;
    let waves = 1000_usize.div_ceil(REPLICAS);
    println!(
        "at 1,000 replicas: ~{:.0} ms of CPU per scrape ({per_replica_ms:.2} ms each); {waves} waves of {REPLICAS} reads, ~{:.0} ms at this p50 per wave",
        per_replica_ms * 1000.0,
        waves as f64 * percentile(&scraper_all, 0.5)
    );
    slo_against_gauges(&scraper, &endpoint);
    let _ = engines.kill();
    let _ = engines.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A round that computes a p90 TTFT and a generated-token rate (both over
/// a window) against today's gauge round (the queue), on the same 64 pages:
/// fetch, parse, keep, evaluate. Alternating rounds; CPU of this process.
fn slo_against_gauges(scraper: &Arc<Scraper>, endpoint: &Endpoint) {
    use keda_gpu_scaler::scaling::outcome::Detail;
    use keda_gpu_scaler::scaling::replicas::engine_outcome;
    use keda_gpu_scaler::scaling::trigger;
    use keda_gpu_scaler::scaling::windows::{Windows, WINDOW_BUDGET_BYTES};
    let at = format!("{}:{}", endpoint.host, endpoint.port);
    let parse = |pairs: &[(&str, &str)]| {
        let mut metadata: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metadata.insert("engineEndpoints".into(), at.clone());
        trigger::parse(&metadata, "default").unwrap()
    };
    let queue = parse(&[("profile", "vllm-queue")]);
    let ttft = parse(&[
        ("engine", "vllm"),
        ("metricType", "ttft_seconds"),
        ("targetValue", "0.5"),
    ]);
    let tokens = parse(&[
        ("engine", "vllm"),
        ("metricType", "generation_tokens_rate"),
        ("targetValue", "2500"),
    ]);
    let windows = Windows::new(WINDOW_BUDGET_BYTES);
    let gauge_round = || {
        let started = Instant::now();
        let source = queue.engine().unwrap();
        let round = futures_executor::block_on(scraper.scrape(
            endpoint,
            &source.wants(),
            Duration::from_secs(5),
        ));
        let outcome = engine_outcome(
            &queue,
            source,
            &[round],
            None,
            Detail::ValueOnly,
            Instant::now(),
        );
        assert!(outcome.value.is_ok(), "{:?}", outcome.value);
        started.elapsed()
    };
    let mut wants = ttft.engine().unwrap().wants();
    wants.extend(tokens.engine().unwrap().wants());
    wants.sort();
    wants.dedup();
    let slo_round = || {
        let started = Instant::now();
        let round =
            futures_executor::block_on(scraper.scrape(endpoint, &wants, Duration::from_secs(5)));
        // Every page read and kept, or the comparison would flatter.
        if let Some(failed) = round.replicas.iter().find(|r| r.page.is_err()) {
            panic!("replica {} failed: {:?}", failed.address, failed.page);
        }
        let round = [round];
        for trigger in [&ttft, &tokens] {
            let source = trigger.engine().unwrap();
            let window = source.window.as_ref().unwrap();
            let outcome = windows
                .outcome(
                    trigger,
                    source,
                    window,
                    &round,
                    None,
                    Detail::ValueOnly,
                    Instant::now(),
                )
                .unwrap();
            // The very first round warms up.
            let _ = outcome.value;
        }
        started.elapsed()
    };
    for _ in 0..3 {
        gauge_round();
        slo_round();
    }
    let (mut gauge_all, mut slo_all) = (Vec::new(), Vec::new());
    let (mut gauge_cpu, mut slo_cpu) = (0.0, 0.0);
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            gauge_all.extend(timed(&gauge_round, &mut gauge_cpu));
            slo_all.extend(timed(&slo_round, &mut slo_cpu));
        } else {
            slo_all.extend(timed(&slo_round, &mut slo_cpu));
            gauge_all.extend(timed(&gauge_round, &mut gauge_cpu));
        }
    }
    let per = |cpu: f64| cpu / (ROUNDS * SCRAPES) as f64 * 1e3;
    println!("SLO round (p90 TTFT + generated-token rate over a window) against the gauge round (queue), same 64 pages (ms)");
    for (name, latencies, cpu) in [
        ("gauge round", &gauge_all, gauge_cpu),
        ("SLO round", &slo_all, slo_cpu),
    ] {
        println!(
            "{name:<28} p50 {:>7.2} p99 {:>7.2} CPU per round {:>6.2}",
            percentile(latencies, 0.5),
            percentile(latencies, 0.99),
            per(cpu)
        );
    }
    println!(
        "ratio SLO/gauge: CPU per round {:.2} (goal <= 1.3), p50 {:.2}",
        slo_cpu / gauge_cpu,
        percentile(&slo_all, 0.5) / percentile(&gauge_all, 0.5)
    );
    let value = |trigger: &trigger::Trigger| {
        let source = trigger.engine().unwrap();
        let round =
            futures_executor::block_on(scraper.scrape(endpoint, &wants, Duration::from_secs(5)));
        windows
            .outcome(
                trigger,
                source,
                source.window.as_ref().unwrap(),
                &[round],
                None,
                Detail::ValueOnly,
                Instant::now(),
            )
            .unwrap()
            .value
    };
    println!(
        "values: p90 TTFT {:?} s, generated tokens {:?}/s; windows hold {} bytes for 2 triggers x {REPLICAS} replicas ({} bytes per replica and trigger, {} reads each at most)",
        value(&ttft),
        value(&tokens),
        windows.bytes(),
        windows.bytes() / (2 * REPLICAS),
        keda_gpu_scaler::engine::window::MAX_POINTS
    );
}

/// One fake-engine process listening on 127.0.0.2 … 127.0.0.65, one port.
fn start_engines(state: &Path) -> (std::process::Child, Vec<SocketAddr>) {
    let binary = common::fake_engine_binary(true);
    'ports: loop {
        let port = common::free_port();
        let addresses: Vec<SocketAddr> = (0..REPLICAS)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)), port))
            .collect();
        let mut command = Command::new(&binary);
        command.args(["--engine", "vllm", "--state"]).arg(state);
        for address in &addresses {
            command.args(["--listen", &address.to_string()]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..REPLICAS {
            if !matches!(lines.next(), Some(Ok(line)) if line.starts_with("listening on")) {
                let _ = child.wait();
                continue 'ports;
            }
        }
        return (child, addresses);
    }
}

fn fetch(address: SocketAddr) -> Result<String, http::HttpError> {
    let budget = BodyBudget::new(usize::MAX);
    let deadline = Instant::now() + Duration::from_secs(5);
    http::get(
        address,
        "vllm.bench",
        "/metrics",
        deadline,
        http::MAX_BODY_BYTES,
        &budget,
    )
    .map(|page| page.text.clone())
}

/// `SCRAPES` runs' latencies in ms; their CPU (this process's) added to `cpu`.
fn timed(run: &dyn Fn() -> Duration, cpu: &mut f64) -> Vec<f64> {
    let before = cpu_seconds();
    let latencies = (0..SCRAPES).map(|_| run().as_secs_f64() * 1e3).collect();
    *cpu += cpu_seconds() - before;
    latencies
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// This process's user plus system CPU so far, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
