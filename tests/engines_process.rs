//! Engine triggers with real processes: the `serve` binary reads replicas
//! that are `fake-engine` processes, one of which is stopped with SIGSTOP
//! (its kernel still accepts connections; nothing answers), and
//! `query --explain` shows each replica as a user would see it; an SLO
//! trigger follows replicas whose counters and histograms move with the
//! clock (p90 TTFT crossing its SLO, a rate adding up, a stopped replica,
//! a stuck engine).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// A child process killed (and continued first, if stopped) on drop.
struct Process(Child);

impl Process {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with a live child's pid and a valid signal.
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, signal) }, 0);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: as above; a stopped process must be continued to die cleanly.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGCONT) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One fake vLLM replica process serving what `state` says; its address.
fn replica(state: &Path) -> (Process, String) {
    let mut child = Command::new(fake_engine_binary(false))
        .args(["--engine", "vllm", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn fake-engine");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("fake-engine said {line:?}"))
        .to_string();
    (Process(child), address)
}

/// Three fake vLLM replica processes, each serving its own state file
/// (starting as `state`), and a `serve` process that reads them (a 500 ms
/// sample interval, the lab's endpoint policy, its log in serve.log).
struct Lab {
    fake: FakeNvml,
    states: Vec<PathBuf>,
    replicas: Vec<(Process, String)>,
    /// The replicas' addresses, as `engineEndpoints`.
    endpoints: String,
    port: u16,
    _serve: Process,
}

impl Lab {
    fn start(state: &str) -> Lab {
        let fake = FakeNvml::new(&gpu_line(0, 10));
        let states: Vec<PathBuf> = (0..3)
            .map(|i| fake.dir.join(format!("engine-{i}")))
            .collect();
        for path in &states {
            std::fs::write(path, state).unwrap();
        }
        let replicas: Vec<(Process, String)> = states.iter().map(|s| replica(s)).collect();
        let endpoints: Vec<&str> = replicas.iter().map(|(_, a)| a.as_str()).collect();
        let endpoints = endpoints.join(",");
        let port = free_port();
        let log = std::fs::File::create(fake.dir.join("serve.log")).unwrap();
        let serve = Process(
            Command::new(BINARY)
                .args([
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--sample-interval",
                    "500ms",
                ])
                .args(LAB_POLICY_FLAGS)
                .arg("--nvml-library")
                .arg(&fake.library)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn serve"),
        );
        Lab {
            fake,
            states,
            replicas,
            endpoints,
            port,
            _serve: serve,
        }
    }
}

/// `keda-gpu-scaler query` against the scaler at `port`, as a user runs it.
fn query(port: u16, pairs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .args(["query", "--address", &format!("127.0.0.1:{port}")])
        .args(args)
        .args(
            pairs
                .iter()
                .flat_map(|(k, v)| ["--metadata".to_string(), format!("{k}={v}")]),
        )
        .output()
        .expect("run query")
}

#[test]
fn a_stopped_replica_counts_as_its_last_read_never_zero() {
    let Lab {
        fake,
        states,
        replicas,
        endpoints,
        port,
        _serve,
    } = Lab::start("waiting=2 running=1 kv=0.2");
    let client = client(port);
    let queue = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", endpoints.as_str()),
        ("engineTimeout", "300ms"),
    ];
    wait_for_value(&client, &queue, 6.0);

    // The queue grows on every replica: 3 x 9 = 27 waiting.
    for state in &states {
        std::fs::write(state, "waiting=9 running=4 kv=0.7").unwrap();
    }
    wait_for_value(&client, &queue, 27.0);

    // One replica stops: read a moment ago, it counts as what it last
    // said (9), so the total holds at 27 (not 18, which would ask for
    // fewer replicas) while it is silent.
    replicas[2].0.signal(libc::SIGSTOP);
    let silent = &replicas[2].1;
    let logged = wait_until(PATIENCE, || {
        let _ = value(&client, &queue);
        std::fs::read_to_string(fake.dir.join("serve.log"))
            .unwrap_or_default()
            .contains(&format!(
                "replica {silent} cannot be read: no answer before the deadline"
            ))
    });
    assert!(logged, "the serve log does not name the silent replica");
    assert_eq!(value(&client, &queue), Ok(27.0));

    // query --explain, as a user runs it, names the silent replica.
    let output = query(port, &queue, &["--replicas", "3", "--explain"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains(silent.as_str()))
        .unwrap_or_else(|| panic!("no line for {silent}:\n{text}"));
    assert!(
        line.contains("missing (no answer before the deadline); counted as its last read, 9, from"),
        "{line}\n{text}"
    );
    assert!(
        text.contains("explain (per engine replica):") && text.contains("= 27.00"),
        "{text}"
    );

    // All stopped: an error naming each, never 0.
    replicas[0].0.signal(libc::SIGSTOP);
    replicas[1].0.signal(libc::SIGSTOP);
    let message = wait_for_error(
        &client,
        &queue,
        grpcio::RpcStatusCode::UNAVAILABLE,
        "no replica of",
    );
    for (_, address) in &replicas {
        assert!(
            message.contains(&format!("{address}: no answer before the deadline")),
            "{message}"
        );
    }

    // They resume: the value returns.
    for (process, _) in &replicas {
        process.signal(libc::SIGCONT);
    }
    wait_for_value(&client, &queue, 27.0);

    // Replicas that answer without the metric: an error naming it, never 0.
    for state in &states {
        std::fs::write(state, "engine=sglang waiting=9").unwrap();
    }
    let message = wait_for_error(
        &client,
        &queue,
        grpcio::RpcStatusCode::UNAVAILABLE,
        "the page has no vllm:num_requests_waiting",
    );
    assert!(
        message.contains("no family on it starts with vllm: (is engine right?)"),
        "{message}"
    );

    // Bad metadata: INVALID_ARGUMENT naming the key.
    let too_slow = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", endpoints.as_str()),
        ("engineTimeout", "2s"),
    ];
    let (code, message) = value(&client, &too_slow).unwrap_err();
    assert_eq!(code, grpcio::RpcStatusCode::INVALID_ARGUMENT);
    assert!(message.starts_with("invalid engineTimeout 2s"), "{message}");
}

#[test]
fn a_service_name_without_addresses_through_system_dns() {
    use keda_gpu_scaler::engine::resolve::{resolve, Resolved};
    // `.invalid` never resolves (RFC 6761): what cluster DNS answers for a
    // misspelt Service and for a headless one with no ready pod alike.
    let name = "vllm-metrics.invalid";
    let fake = FakeNvml::new("gpu 0 uuid=GPU-0 util=10 mem_total_mib=81920 mem_used_mib=8192\n");
    let kubelet = FakeKubelet::default();
    let socket = fake.dir.join("kubelet.sock");
    let _kubelet_server = kubelet.serve(&socket);
    let port = free_port();
    let _serve = Process(
        Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--sample-interval",
                "200ms",
            ])
            .args(LAB_POLICY_FLAGS)
            .arg("--nvml-library")
            .arg(&fake.library)
            .arg("--pod-resources-socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let client = client(port);
    let endpoint = format!("{name}:8000");
    let plain = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", endpoint.as_str()),
    ];
    let with_workload = [
        ("profile", "vllm-queue"),
        ("engineEndpoints", endpoint.as_str()),
        ("workload", "vllm"),
    ];
    match resolve(name, 8000) {
        Resolved::NoSuchName(_) => {
            // Never resolved and no workload to ask: an error, not 0.
            let message = wait_for_error(
                &client,
                &plain,
                grpcio::RpcStatusCode::UNAVAILABLE,
                "unknown to DNS",
            );
            assert!(message.contains("set workload"), "{message}");
            // With the workload: no pod of it holds a GPU, so zero replicas.
            wait_for_value(&client, &with_workload, 0.0);
            kubelet.set_pods(&[("default", "vllm-0", "GPU-0")]);
            wait_for_error(
                &client,
                &with_workload,
                grpcio::RpcStatusCode::UNAVAILABLE,
                "has pods holding GPUs (default/vllm-0)",
            );
        }
        other => {
            // A machine whose resolver cannot be reached: the replicas are
            // unknown, which must be an error whatever the selector says.
            eprintln!("system DNS answers {other:?} for {name}");
            for pairs in [&plain[..], &with_workload[..]] {
                wait_for_error(
                    &client,
                    pairs,
                    grpcio::RpcStatusCode::UNAVAILABLE,
                    "cannot resolve engine endpoint",
                );
            }
        }
    }
}

#[test]
fn an_slo_trigger_through_the_binary_follows_latency_and_holds_a_stopped_replica() {
    // Each replica finishes 40 requests a second, first tokens at 0.2 s.
    let Lab {
        fake: _fake,
        states,
        replicas,
        endpoints,
        port,
        _serve,
    } = Lab::start("waiting=1 running=2 rate=40 ttft_now=0.2");
    let client = client(port);
    let ttft = [
        ("engine", "vllm"),
        ("metricType", "ttft_seconds"),
        ("percentile", "0.9"),
        ("engineWindow", "3s"),
        ("targetValue", "0.5"),
        ("engineEndpoints", endpoints.as_str()),
        ("engineTimeout", "300ms"),
    ];
    let rate = [
        ("engine", "vllm"),
        ("metricType", "request_rate"),
        ("engineWindow", "3s"),
        ("targetValue", "50"),
        ("engineEndpoints", endpoints.as_str()),
        ("engineTimeout", "300ms"),
    ];
    // 90% of first tokens at 0.2 s (the (0.1, 0.25] bucket): p90 under the SLO.
    let fast = wait_for_ok(&client, &ttft);
    assert!(fast > 0.1 && fast <= 0.25, "{fast}");
    // Three replicas at 40 a second add up to ~120.
    let mut last = None;
    let near = wait_until(PATIENCE, || {
        last = Some(value(&client, &rate));
        matches!(last, Some(Ok(v)) if (90.0..=150.0).contains(&v))
    });
    assert!(near, "the rate never came near 120/s: {last:?}");

    // Under load first tokens take 1.2 s: once the window holds mostly
    // slow ones, the merged p90 is over the SLO.
    for state in &states {
        std::fs::write(state, "waiting=20 running=8 rate=40 ttft_now=1.2").unwrap();
    }
    let mut last = None;
    let slow = wait_until(PATIENCE, || {
        last = Some(value(&client, &ttft));
        matches!(last, Some(Ok(v)) if v > 1.0)
    });
    assert!(slow, "p90 never crossed the SLO: {last:?}");

    // A stopped replica: its reads up to the last still count, as the
    // explanation says; the value stays over the SLO.
    replicas[2].0.signal(libc::SIGSTOP);
    let silent = replicas[2].1.clone();
    let explain = || {
        let output = query(port, &ttft, &["--explain"]);
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let mut text = String::new();
    let shown = wait_until(PATIENCE, || {
        text = explain();
        text.lines().any(|l| {
            l.contains(silent.as_str())
                && l.contains(
                    "not read now (no answer before the deadline): its reads up to the last count",
                )
        })
    });
    assert!(shown, "{text}");
    assert!(
        text.contains("merged over") && text.contains("falls in le="),
        "{text}"
    );
    assert!(matches!(value(&client, &ttft), Ok(v) if v > 1.0));
    replicas[2].0.signal(libc::SIGCONT);

    // Requests wait and none finishes: UNAVAILABLE once the window holds
    // no finished request, never a 0.
    for state in &states {
        std::fs::write(state, "waiting=5 running=0 rate=0 ttft_now=1.2").unwrap();
    }
    let message = wait_for_error(
        &client,
        &rate,
        grpcio::RpcStatusCode::UNAVAILABLE,
        "no request finished in the 3s window",
    );
    assert!(
        message.contains("wait") && message.contains("a 0 would scale it down"),
        "{message}"
    );
}
