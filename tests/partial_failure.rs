//! Honest answers under partial failure, with real scaler processes: three
//! nodes (a answers KEDA, b and c are its peers), each a `serve` process
//! with its own fake NVML and fake kubelet. A silent node is a process
//! stopped with SIGSTOP, so calls to it time out rather than being refused,
//! as with a dead node whose DaemonSet pod is still in the peers' DNS.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use grpcio::RpcStatusCode;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// One node: fake NVML, fake kubelet, and a `serve` process.
struct ProcNode {
    name: String,
    fake: FakeNvml,
    kubelet: FakeKubelet,
    _kubelet_server: grpcio::Server,
    port: u16,
    metrics_port: u16,
    child: Option<Child>,
}

impl ProcNode {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the scaler process, peered with `peers`.
    fn start(&mut self, peers: &str) {
        let log = File::create(self.fake.dir.join(format!("{}.log", self.name))).unwrap();
        let child = Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                &self.address(),
                "--sample-interval",
                "200ms",
                "--peer-timeout",
                "150ms",
                "--node-name",
                &self.name,
                "--peers",
                peers,
                "--metrics-listen",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .arg("--nvml-library")
            .arg(&self.fake.library)
            .arg("--pod-resources-socket")
            .arg(self.fake.dir.join("kubelet.sock"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn serve");
        self.child = Some(child);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: kill(2) with a live child's pid and a valid signal.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The process stops answering: calls to it time out.
    fn go_silent(&self) {
        self.signal(libc::SIGSTOP);
    }

    fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: as above; a stopped process must be continued to die cleanly.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `keda_gpu_scaler_peers{state}` on this node's `/metrics` page.
    fn peers_gauge(&self, state: &str) -> Option<f64> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: scaler\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let wanted = format!(
            "keda_gpu_scaler_peers{{node=\"{}\",state=\"{state}\"}} ",
            self.name
        );
        answer
            .lines()
            .find_map(|line| line.strip_prefix(&wanted))
            .and_then(|value| value.parse().ok())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.fake.dir.join(format!("{}.log", self.name)))
            .unwrap_or_default()
    }
}

impl Drop for ProcNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Nodes a, b, c, all peered with each other, each with one GPU at `util`.
fn three_nodes(utils: [u32; 3]) -> (Vec<ProcNode>, String) {
    let names = ["node-a", "node-b", "node-c"];
    let mut nodes: Vec<ProcNode> = names
        .iter()
        .zip(utils)
        .map(|(name, util)| {
            let fake = FakeNvml::new(&format!(
                "gpu 0 uuid=GPU-{name} util={util} mem_total_mib=81920 mem_used_mib=8192\n"
            ));
            let kubelet = FakeKubelet::default();
            let server = kubelet.serve(&fake.dir.join("kubelet.sock"));
            ProcNode {
                name: name.to_string(),
                fake,
                kubelet,
                _kubelet_server: server,
                port: free_port(),
                metrics_port: free_port(),
                child: None,
            }
        })
        .collect();
    let peers: Vec<String> = nodes.iter().map(ProcNode::address).collect();
    let peers = peers.join(",");
    for node in &mut nodes {
        node.start(&peers);
    }
    (nodes, peers)
}

/// Waits until node a's `--explain` for `pairs` has a note containing every needle.
fn wait_for_note(a: &ProcNode, pairs: &[(&str, &str)], needles: &[&str]) -> String {
    let mut last = Vec::new();
    let found = wait_until(PATIENCE, || {
        last = explain(a.port, pairs)
            .map(|e| e.notes().to_vec())
            .unwrap_or_default();
        last.iter().any(|n| needles.iter().all(|x| n.contains(x)))
    });
    assert!(found, "no note with {needles:?}; notes {last:?}");
    last.into_iter()
        .find(|n| needles.iter().all(|x| n.contains(x)))
        .unwrap()
}

const BOTH: [(&str, &str); 2] = [("workload", "both"), ("aggregation", "sum")];
const ONLY_A: [(&str, &str); 1] = [("workload", "only-a")];
const IDLE: [(&str, &str); 1] = [("workload", "idle")];

#[test]
fn a_silent_peer_never_shrinks_a_workload_to_zero() {
    let (nodes, _) = three_nodes([60, 20, 30]);
    let (a, c) = (&nodes[0], &nodes[2]);
    // Workload "both" runs on a and c, "only-a" on a, "idle" nowhere.
    a.kubelet.set_pods(&[
        ("default", "both-0", "GPU-node-a"),
        ("default", "only-a-0", "GPU-node-a"),
    ]);
    c.kubelet.set_pods(&[("default", "both-1", "GPU-node-c")]);
    let client = client(a.port);
    wait_for_value(&client, &BOTH, 90.0);
    wait_for_value(&client, &ONLY_A, 60.0);
    wait_for_value(&client, &IDLE, 0.0);

    assert!(wait_until(PATIENCE, || a.peers_gauge("answered") == Some(2.0)));

    c.go_silent();
    // c held pods of "both": its value cannot be read, so no value.
    let message = wait_for_error(
        &client,
        &BOTH,
        RpcStatusCode::UNAVAILABLE,
        c.address().as_str(),
    );
    assert!(
        message.contains("node node-c")
            && message.contains("did not answer")
            && message.contains("default/both-1"),
        "{message}"
    );
    // The /metrics page counts it as failed in the latest sweep (its last
    // report is still trusted).
    assert!(
        wait_until(PATIENCE, || a.peers_gauge("failed") == Some(1.0)
            && a.peers_gauge("answered") == Some(1.0)),
        "{:?}",
        (a.peers_gauge("answered"), a.peers_gauge("failed"))
    );
    // c held none of "only-a": skipped, the value from a is unchanged.
    let note = wait_for_note(a, &ONLY_A, &[&c.address(), "skipped"]);
    assert!(
        note.contains("shows no pod of workload default/only-a"),
        "{note}"
    );
    wait_for_value(&client, &ONLY_A, 60.0);
    // "idle" had no pods anywhere, c included: 0 and inactive, as before.
    wait_for_note(a, &IDLE, &[&c.address(), "skipped"]);
    wait_for_value(&client, &IDLE, 0.0);
    assert!(!is_active(&client, &IDLE).unwrap().result());
    // Node-wide triggers keep today's rule: the others answer, and
    // `--explain` names the missing node.
    let sum = [("aggregation", "sum")];
    wait_for_value(&client, &sum, 80.0);
    wait_for_note(a, &sum, &[&c.address(), "node-c", "did not answer"]);

    // c comes back: normal answers again.
    c.resume();
    wait_for_value(&client, &BOTH, 90.0);
    wait_for_value(&client, &sum, 110.0);
    assert!(
        a.log()
            .contains(&format!("peer {} (node-c) answers again", c.address())),
        "{}",
        a.log()
    );
}

#[test]
fn after_a_restart_a_silent_peer_is_unknown_not_empty() {
    let (mut nodes, peers) = three_nodes([60, 20, 30]);
    nodes[0]
        .kubelet
        .set_pods(&[("default", "only-a-0", "GPU-node-a")]);
    nodes[2]
        .kubelet
        .set_pods(&[("default", "elsewhere-0", "GPU-node-c")]);
    wait_for_value(&client(nodes[0].port), &ONLY_A, 60.0);

    nodes[2].go_silent();
    // a restarts while c is silent: it has never heard from c.
    nodes[0].kill();
    nodes[0].start(&peers);
    let a = &nodes[0];
    let c = &nodes[2];
    let client = client(a.port);
    // Pods found on a: the value from a, with c named as unknown.
    wait_for_value(&client, &ONLY_A, 60.0);
    let note = wait_for_note(a, &ONLY_A, &[&c.address(), "unknown"]);
    assert!(
        note.contains("has not answered since this scaler started"),
        "{note}"
    );
    assert!(
        wait_until(PATIENCE, || a.peers_gauge("unknown") == Some(1.0)
            && a.peers_gauge("answered") == Some(1.0)),
        "{:?}",
        (a.peers_gauge("answered"), a.peers_gauge("unknown"))
    );
    assert!(
        // The error in the text may differ from call to call; the verdict is logged once.
        wait_until(PATIENCE, || a
            .log()
            .lines()
            .any(|l| l.contains("workload default/only-a: peer")
                && l.contains(&c.address())
                && l.contains("is unknown"))),
        "the log does not name the unknown peer: {}",
        a.log()
    );
    // `query --explain` shows the same note to an operator.
    let output = Command::new(BINARY)
        .args(["query", "--address", &a.address(), "--explain"])
        .args(["--metadata", "workload=only-a"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("  note: peer {} did not answer", c.address()))
            && text.contains("is unknown")
            && text.contains("  = 60.00"),
        "{text}"
    );
    // A workload found nowhere else: UNAVAILABLE, never 0 (its pods are on c).
    for pairs in [&[("workload", "elsewhere")][..], &IDLE[..]] {
        let message = wait_for_error(&client, pairs, RpcStatusCode::UNAVAILABLE, &c.address());
        assert!(
            message.contains("a 0 here could scale a busy workload to zero"),
            "{message}"
        );
    }
    // IsActive fails alike: UNAVAILABLE, naming the silent peer.
    let (code, message) = status_of(is_active(&client, &IDLE).unwrap_err());
    assert_eq!(code, RpcStatusCode::UNAVAILABLE);
    assert!(
        message.contains(&c.address())
            && message.contains("a 0 here could scale a busy workload to zero"),
        "{message}"
    );
}

#[test]
fn sigterm_stops_within_the_grace_period_while_a_peer_is_silent() {
    let fake = FakeNvml::new(&gpu_line(0, 40));
    let mut silent = {
        let other = FakeNvml::new(&gpu_line(0, 10));
        let kubelet = FakeKubelet::default();
        let server = kubelet.serve(&other.dir.join("kubelet.sock"));
        ProcNode {
            name: "node-silent".into(),
            fake: other,
            kubelet,
            _kubelet_server: server,
            port: free_port(),
            metrics_port: free_port(),
            child: None,
        }
    };
    silent.start(&silent.address());
    let port = free_port();
    // A long sample interval and peer deadline: a sweep in flight would
    // hold shutdown for up to 25 s if it were waited for.
    let log = File::create(fake.dir.join("serve.log")).unwrap();
    let mut child = KillOnDrop(
        Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--sample-interval",
                "30s",
                "--peer-timeout",
                "25s",
                "--node-name",
                "node-a",
                "--peers",
                &format!("127.0.0.1:{port},{}", silent.address()),
            ])
            .arg("--nvml-library")
            .arg(&fake.library)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let client = client(port);
    wait_until(PATIENCE, || {
        metric_spec(&client, &scaled_object(&[])).is_ok()
    });
    silent.go_silent();
    // A request and a push stream, both waiting on a sweep that waits on the silent peer.
    let waiting = std::thread::spawn(move || value(&client, &[("workload", "x")]));
    let stream_client = common::client(port);
    let mut stream = stream_client
        .stream_is_active_opt(&scaled_object(&[]), call_option())
        .unwrap();
    // The sweep is in flight once a has connected to the silent peer.
    assert!(
        wait_until(PATIENCE, || connected_to(silent.port)),
        "no connection to the silent peer"
    );
    let status = terminate(&mut child.0, Duration::from_secs(10));
    let exited = status.is_some();
    assert!(
        exited,
        "serve did not exit within 10 s of SIGTERM with a silent peer: {}",
        std::fs::read_to_string(fake.dir.join("serve.log")).unwrap_or_default()
    );
    assert!(status.unwrap().success());
    // Both end with the documented status, not the client's own deadline.
    let shutting_down = (
        RpcStatusCode::UNAVAILABLE,
        "keda-gpu-scaler is shutting down".to_string(),
    );
    assert_eq!(waiting.join().unwrap(), Err(shutting_down.clone()));
    assert_eq!(next_result(&mut stream), Err(shutting_down));
}

/// A child process that a failing test must not leave behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether some socket on this machine has an established TCP connection
/// to loopback port `port` (`/proc/net/tcp` and `tcp6`, state 01; gRPC
/// uses IPv6 sockets with IPv4-mapped addresses where it can).
fn connected_to(port: u16) -> bool {
    let remotes = [
        format!("0100007F:{port:04X}"),
        format!("0000000000000000FFFF00000100007F:{port:04X}"),
    ];
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let table = std::fs::read_to_string(table).unwrap_or_default();
        table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && remotes.iter().any(|r| fields[2] == r) && fields[3] == "01"
        })
    })
}
