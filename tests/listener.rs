//! The `/metrics` listener under slow clients, through the real binary: a
//! `serve` process with the fake NVML, four slow-loris clients holding
//! every request slot, a fifth answered 503 at once, and SIGTERM still
//! ending the process promptly with status 0.

mod common;

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");
/// The listener's request slots (`observe::listener::MAX_CONCURRENT`).
const SLOTS: usize = 4;
/// The listener's request deadline; the test must finish well inside it,
/// or the deadline rather than shutdown would free the slots.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a whole request; the answer read until the server closes.
fn ask(port: u16) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let _ = stream.set_read_timeout(Some(REQUEST_DEADLINE));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that sent part of a request and then trickles one byte a
/// second (well within any per-read timeout) on a thread, until the server
/// closes the connection; the thread returns how long that took.
fn slow_loris(port: u16) -> JoinHandle<Option<Duration>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nX-").unwrap();
    let connected = Instant::now();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        while connected.elapsed() < Duration::from_secs(30) {
            if stream.write_all(b"a").is_err() {
                return Some(connected.elapsed());
            }
            match stream.read(&mut buf) {
                Ok(0) => return Some(connected.elapsed()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return Some(connected.elapsed()),
            }
        }
        None
    })
}

#[test]
fn sigterm_exits_promptly_while_slow_clients_hold_every_metrics_slot() {
    let fake = FakeNvml::new(&gpu_line(0, 40));
    let (port, metrics_port) = (free_port(), free_port());
    let log_path = fake.dir.join("serve.log");
    let log = File::create(&log_path).unwrap();
    let mut child = KillOnDrop(
        Command::new(BINARY)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--node-name",
                "node-a",
            ])
            .arg("--nvml-library")
            .arg(&fake.library)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(PATIENCE, || ask(metrics_port).starts_with("HTTP/1.1 200")),
        "/metrics never answered: {}",
        log()
    );
    let held = Instant::now();
    let slow: Vec<_> = (0..SLOTS).map(|_| slow_loris(metrics_port)).collect();
    // Accepted in order after the four, so over the cap.
    let fifth = ask(metrics_port);
    let status = terminate(&mut child.0, Duration::from_secs(3));
    let exited = status.is_some();
    assert!(
        exited,
        "serve did not exit within 3 s of SIGTERM with {SLOTS} slow /metrics clients: {}",
        log()
    );
    assert!(status.unwrap().success(), "{:?}: {}", status, log());
    // All of it inside the request deadline: shutdown, not the deadline,
    // ended the slow requests.
    assert!(
        held.elapsed() < REQUEST_DEADLINE,
        "took {:?}, past the request deadline",
        held.elapsed()
    );
    assert!(
        fifth.starts_with("HTTP/1.1 503 "),
        "a request over the cap got {fifth:?}"
    );
    for client in slow {
        let closed = client.join().unwrap();
        assert!(
            closed.is_some_and(|c| c < REQUEST_DEADLINE),
            "a slow client's connection stayed open: {closed:?}"
        );
    }
}
