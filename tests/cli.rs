//! The binary as users run it: `serve` under SIGTERM, `devices`, `query`,
//! and what the binary links against.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// A `serve` child process and the port it reported.
struct Served {
    child: Child,
    port: u16,
    log: mpsc::Receiver<String>,
}

fn serve(fake: &FakeNvml) -> Served {
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sample-interval",
            "100ms",
        ])
        .env("NVML_LIBRARY_PATH", &fake.library)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let (tx, log) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let marker = "serving externalscaler.ExternalScaler on 127.0.0.1:";
    let port = loop {
        let line = log
            .recv_timeout(PATIENCE)
            .expect("serve never reported its port");
        if let Some(rest) = line.split(marker).nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    Served { child, port, log }
}

impl Drop for Served {
    /// A test that fails early must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = terminate(&mut self.child, Duration::from_secs(10))
            .expect("serve did not exit within 10 s of SIGTERM");
        (status, self.log.try_iter().collect())
    }
}

fn run(args: &[&str], library: &Path) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("NVML_LIBRARY_PATH", library)
        .output()
        .expect("run binary")
}

#[test]
fn sigterm_exits_zero_even_with_an_open_stream() {
    let fake = FakeNvml::new(&gpu_line(0, 42));
    let served = serve(&fake);
    let client = client(served.port);
    wait_for_value(&client, &[], 42.0);
    let mut stream = client.stream_is_active(&scaled_object(&[])).unwrap();
    let first = futures_executor::block_on(futures_util::StreamExt::next(&mut stream));
    assert!(first.unwrap().unwrap().result());
    let (status, log) = served.terminate();
    assert_eq!(status.code(), Some(0), "log: {log:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("received SIGTERM; shutting down")),
        "{log:?}"
    );
}

#[test]
fn sigterm_exits_zero_while_nvml_hangs() {
    let fake = FakeNvml::new(&gpu_line(0, 42));
    let served = serve(&fake);
    let client = client(served.port);
    wait_for_value(&client, &[], 42.0);
    fake.set(&format!("{}hang 0 * 600000\n", gpu_line(0, 42)));
    wait_for_error(&client, &[], grpcio::RpcStatusCode::UNAVAILABLE, "stale");
    let (status, log) = served.terminate();
    assert_eq!(status.code(), Some(0), "log: {log:?}");
}

#[test]
fn devices_prints_a_table_and_json() {
    let fake = FakeNvml::new(
        "driver 550.90.07\ngpu 0 uuid=GPU-aa name=\"NVIDIA A100\" util=37 mem_util=5 mem_total_mib=40960 mem_used_mib=10240 temp=44 power_mw=123400\ngpu 1 uuid=GPU-bb\nfail 1 * GPU_IS_LOST\n",
    );
    let table = run(&["devices"], &fake.library);
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("driver 550.90.07, 2 GPU(s)"), "{text}");
    let row = text.lines().find(|l| l.starts_with("0 ")).unwrap();
    for cell in [
        "GPU-aa",
        "NVIDIA A100",
        "37",
        "10240",
        "25.0",
        "44",
        "123.4",
        "ok",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("1 ") && l.contains("LOST: ")),
        "{text}"
    );

    let json = run(&["devices", "--json"], &fake.library);
    let text = String::from_utf8(json.stdout).unwrap();
    assert!(text.contains(r#""index":0,"uuid":"GPU-aa","name":"NVIDIA A100","health":"healthy","error":null,"mig_enabled":false,"gpu_utilization":37,"memory_utilization":5,"memory_used_mib":10240,"memory_used_percent":25,"temperature":44,"power_draw":123.4"#), "{text}");
    assert!(text.contains(r#""health":"lost""#), "{text}");
}

#[test]
fn devices_without_nvml_fails_naming_the_path() {
    // With --gpu-backend nvidia, only NVML is tried.
    let output = run(
        &["devices", "--gpu-backend", "nvidia"],
        Path::new("/nonexistent/libnvidia-ml.so.1"),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("keda-gpu-scaler: NVML is not available: cannot load the NVML library"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/libnvidia-ml.so.1"),
        "{stderr}"
    );
    // With the default (auto), AMD SMI is tried too, and both are named.
    let output = run(&["devices"], Path::new("/nonexistent/libnvidia-ml.so.1"));
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("keda-gpu-scaler: no GPU library answered (--gpu-backend auto tries NVML, then AMD SMI): NVML is not available: cannot load the NVML library")
            && stderr.contains("AMD SMI is not available: cannot load the AMD SMI library"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/libnvidia-ml.so.1"),
        "{stderr}"
    );
}

#[test]
fn query_shows_what_keda_and_the_hpa_see() {
    let fake = FakeNvml::new(&format!("{}{}", gpu_line(0, 100), gpu_line(1, 60)));
    let served = serve(&fake);
    wait_for_value(&client(served.port), &[], 100.0);
    let address = format!("127.0.0.1:{}", served.port);
    let output = run(
        &[
            "query",
            "--address",
            &address,
            "--metadata",
            "profile=vllm-inference",
            "--replicas",
            "3",
        ],
        &fake.library,
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{text} {:?}", output.stderr);
    assert!(text.contains("metric        gpu-utilization-max"), "{text}");
    assert!(text.contains("value         100.00 (int 100)"), "{text}");
    assert!(text.contains("target        80 (int 80)"), "{text}");
    assert!(text.contains("active        true"), "{text}");
    // 3 replicas at 100% against 80: Value asks for 4, AverageValue for 2.
    assert!(
        text.contains("metricType: AverageValue (default)  ->   2"),
        "{text}"
    );
    assert!(
        text.contains("metricType: Value                   ->   4"),
        "{text}"
    );

    let explained = run(
        &[
            "query",
            "--address",
            &address,
            "--metadata",
            "gpuIndex=1",
            "--explain",
        ],
        &fake.library,
    );
    let text = String::from_utf8(explained.stdout).unwrap();
    assert!(explained.status.success(), "{text} {:?}", explained.stderr);
    let line = |gpu: &str| {
        text.lines()
            .find(|l| {
                l.trim_start().starts_with("(this node)")
                    && l.split_whitespace().nth(2) == Some(gpu)
            })
            .unwrap_or_else(|| panic!("no line for GPU {gpu} in {text}"))
            .to_string()
    };
    assert!(line("0").contains("not gpuIndex 1"), "{text}");
    assert!(
        line("1").contains("60.00") && line("1").contains("yes") && line("1").ends_with("counted"),
        "{text}"
    );
    assert!(text.contains("  = 60.00"), "{text}");

    let bad = run(
        &[
            "query",
            "--address",
            &address,
            "--metadata",
            "aggregation=median",
        ],
        &fake.library,
    );
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(
        stderr.contains("GetMetricSpec on 127.0.0.1:")
            && stderr.contains(": INVALID_ARGUMENT: ")
            && stderr.contains("invalid aggregation \"median\""),
        "{stderr}"
    );
    served.terminate();
}

#[test]
fn bad_flags_exit_2_with_the_reason() {
    let output = run(&["serve", "--sample-interval", "10ms"], Path::new("/x"));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "keda-gpu-scaler: invalid --sample-interval \"10ms\": allowed range is 100ms to 60s (see --help)"
    );
    let output = run(
        &["serve", "--peers", "peers:6000", "--peer-timeout", "1s"],
        Path::new("/x"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid --peer-timeout \"1s\": it must be below --sample-interval (1s)"),
        "{stderr}"
    );
}

/// The distroless `cc` image has glibc and nothing else: the binary must not
/// need libstdc++, libgcc_s, libssl or libz at run time.
#[test]
fn binary_needs_only_glibc() {
    let output = Command::new("readelf")
        .args(["-d", BINARY])
        .output()
        .expect("readelf (binutils)");
    let dynamic = String::from_utf8(output.stdout).unwrap();
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(!needed.is_empty(), "no NEEDED entries read: {dynamic}");
    let glibc = [
        "libc.so.6",
        "libm.so.6",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    for library in &needed {
        assert!(
            glibc.contains(library),
            "{library} is not part of glibc; NEEDED: {needed:?}"
        );
    }
}

/// Raw bytes in and out, for messages no generated type would write.
fn raw_method(name: &'static str) -> grpcio::Method<Vec<u8>, Vec<u8>> {
    // grpcio's Marshaller takes `fn(&T, …)` with T = Vec<u8>.
    #[allow(clippy::ptr_arg)]
    fn ser(bytes: &Vec<u8>, buf: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
        *buf = grpcio::GrpcSlice::from(bytes.clone());
        Ok(())
    }
    fn de(mut reader: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes)
            .map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
        Ok(bytes)
    }
    grpcio::Method {
        ty: grpcio::MethodType::Unary,
        name,
        req_mar: grpcio::Marshaller { ser, de },
        resp_mar: grpcio::Marshaller { ser, de },
    }
}

/// RUSTSEC-2024-0437: protobuf before 3.7.2 recursed once per nested
/// unknown group and overflowed the stack on a crafted message. Every
/// request, probe and peer answer is decoded by it, on a plaintext port.
#[test]
fn deeply_nested_unknown_groups_do_not_crash_the_server() {
    let fake = FakeNvml::new(&gpu_line(0, 40));
    let served = serve(&fake);
    wait_for_value(&client(served.port), &[], 40.0);
    // Field 99, wire type 3 (start group) 200,000 times, then as many ends.
    const DEPTH: usize = 200_000;
    let mut crafted = Vec::with_capacity(DEPTH * 4);
    for _ in 0..DEPTH {
        crafted.extend_from_slice(&[0x9b, 0x06]);
    }
    for _ in 0..DEPTH {
        crafted.extend_from_slice(&[0x9c, 0x06]);
    }
    let env = std::sync::Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let channel = grpcio::ChannelBuilder::new(env).connect(&format!("127.0.0.1:{}", served.port));
    let raw = grpcio::Client::new(channel);
    for method in [
        "/externalscaler.ExternalScaler/GetMetrics",
        "/externalscaler.ExternalScaler/GetMetricSpec",
        "/grpc.health.v1.Health/Check",
        "/kedagpuscaler.node.v1.Node/Explain",
    ] {
        let method = raw_method(method);
        let answer = raw.unary_call(&method, &crafted, call_option());
        let status = match answer {
            Err(grpcio::Error::RpcFailure(status)) => status,
            other => panic!("{} accepted the crafted message: {other:?}", method.name),
        };
        assert_ne!(
            status.code(),
            grpcio::RpcStatusCode::UNAVAILABLE,
            "{status:?}"
        );
    }
    // Still alive and answering.
    assert_eq!(value(&client(served.port), &[]), Ok(40.0));
    let (status, _) = served.terminate();
    assert!(status.success());
}
