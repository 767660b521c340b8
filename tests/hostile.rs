//! Hostile tenants through the real binary: what a ScaledObject author can
//! make the scaler read, under the default endpoint policy and under each
//! flag that relaxes it. Every replica listens on loopback; refusals of
//! other addresses (the cloud metadata service, link-local, multicast) are
//! unit tests of `engine::policy` on parsed addresses, so that no test can
//! send traffic anywhere else, even through a bug.

mod common;

use std::process::{Child, Command, Stdio};

use common::*;
use fake_engine::{Behaviour, Kind, Load, Replica};
use grpcio::RpcStatusCode;

const BINARY: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// A `serve` process with `flags`, killed on drop; its gRPC port.
struct Serve {
    child: Child,
    port: u16,
    _fake: FakeNvml,
}

impl Serve {
    fn start(flags: &[&str]) -> Serve {
        let fake = FakeNvml::new(&gpu_line(0, 10));
        let port = free_port();
        let child = Command::new(BINARY)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--sample-interval", "500ms"])
            .args(flags)
            .arg("--nvml-library")
            .arg(&fake.library)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve");
        let serve = Serve {
            child,
            port,
            _fake: fake,
        };
        // Ready once a GPU trigger answers.
        wait_for_value(&client(port), &[], 10.0);
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vllm() -> Replica {
    let load = Load {
        waiting: 3,
        ..Load::default()
    };
    Replica::start("127.0.0.1:0", Behaviour::new(Kind::Vllm, load)).unwrap()
}

fn queue(endpoints: &str) -> Vec<(&'static str, String)> {
    vec![
        ("profile", "vllm-queue".to_string()),
        ("engineEndpoints", endpoints.to_string()),
    ]
}

fn ask(serve: &Serve, pairs: &[(&'static str, String)]) -> Result<f64, (RpcStatusCode, String)> {
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    value(&client(serve.port), &pairs)
}

#[test]
fn by_default_a_trigger_names_only_its_own_namespaces_services() {
    let replica = vllm();
    let serve = Serve::start(&[]);
    // An IP address (here loopback), another namespace, an outside name:
    // each refused before anything is resolved, naming the rule and flag.
    for (endpoints, what) in [
        (replica.address().to_string(), "an IP address"),
        (
            "vllm.other:8000".to_string(),
            "a Service in namespace \"other\"",
        ),
        (
            "metadata.google.internal:80".to_string(),
            "a name outside the cluster's Services",
        ),
    ] {
        let (code, message) = ask(&serve, &queue(&endpoints)).unwrap_err();
        assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{message}");
        assert!(
            message.starts_with("invalid engineEndpoints: names ")
                && message.contains(what)
                && message.contains("a Service in the ScaledObject's namespace \"default\"")
                && message.contains("--engine-any-namespace"),
            "{endpoints}: {message}"
        );
    }
    assert_eq!(replica.hits(), 0);
}

#[test]
fn a_name_that_resolves_to_a_refused_address_is_never_read() {
    let replica = vllm();
    let port = replica.address().port();
    // Other namespaces and names allowed, loopback not: `localhost`
    // resolves to 127.0.0.1 (and ::1), which the address check refuses.
    let serve = Serve::start(&["--engine-any-namespace"]);
    let (code, message) = ask(&serve, &queue(&format!("localhost:{port}"))).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains(&format!(
            "127.0.0.1:{port}: refused: the address is loopback"
        )),
        "{message}"
    );
    assert_eq!(replica.hits(), 0);
}

#[test]
fn a_lab_allows_loopback_with_both_flags() {
    let replica = vllm();
    let serve = Serve::start(&LAB_POLICY_FLAGS);
    assert_eq!(ask(&serve, &queue(&replica.address().to_string())), Ok(3.0));
    assert!(replica.hits() >= 1);
    // The scaler's own port is refused even so.
    let (code, message) = ask(&serve, &queue(&format!("127.0.0.1:{}", serve.port))).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains("refused: the address is this scaler's own listener"),
        "{message}"
    );
}

/// A server on loopback that answers every request with `answer`, raw.
fn raw_server(answer: Vec<u8>) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(&answer);
        }
    });
    address
}

/// No raw control character, and no run of one outside string longer than
/// the cap, reaches the gRPC message.
fn assert_tame(message: &str) {
    assert!(
        !message.chars().any(|c| c.is_control()),
        "a raw control character: {message:?}"
    );
    assert!(
        !message.contains(&"A".repeat(201)),
        "more than 200 characters echoed: {message}"
    );
}

#[test]
fn what_a_replica_sends_reaches_messages_capped_and_escaped() {
    let serve = Serve::start(&LAB_POLICY_FLAGS);
    // A redirect whose Location carries escape sequences and a flood.
    let location = format!("http://x/\u{1b}[31m\r{}", "A".repeat(5000));
    let redirect = raw_server(
        format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes(),
    );
    let (code, message) = ask(&serve, &queue(&redirect.to_string())).unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    assert!(
        message.contains("HTTP status 302 (a redirect to http://x/\\u{1b}[31m")
            && message.contains("more characters), not followed)"),
        "{message}"
    );
    assert_tame(&message);
    // A status line and a page full of control characters in names.
    let status = raw_server(format!("HTTP/1.1 2\u{7}00 {}\r\n\r\n", "A".repeat(5000)).into_bytes());
    let (_, message) = ask(&serve, &queue(&status.to_string())).unwrap_err();
    assert!(
        message.contains("malformed HTTP answer: status line \""),
        "{message}"
    );
    assert_tame(&message);
    let mut evil = Behaviour::new(Kind::Vllm, Load::default());
    evil.page = Some(format!(
        "# TYPE vllm:evil\u{7}{} gauge\nvllm:evil\u{7}{}{{a=\"\u{1b}\"}} 1\n",
        "A".repeat(300),
        "A".repeat(300)
    ));
    let replica = Replica::start("127.0.0.1:0", evil).unwrap();
    let (_, message) = ask(&serve, &queue(&replica.address().to_string())).unwrap_err();
    assert!(
        message.contains("the page has no vllm:num_requests_waiting; it has vllm:evil\\u{7}AAA"),
        "{message}"
    );
    assert_tame(&message);
}

#[test]
fn a_page_of_one_byte_chunks_fails_only_its_own_trigger() {
    use std::io::{Read, Write};
    let serve = Serve::start(&LAB_POLICY_FLAGS);
    // A replica that answers with 1-byte chunks, each with a long
    // extension, for as long as it is read.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let evil = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = format!("1;{}\r\nx\r\n", "e".repeat(1000));
                while stream.write_all(chunk.as_bytes()).is_ok() {}
            });
        }
    });
    let honest = vllm();
    let evil_pairs = queue(&evil.to_string());
    let port = serve.port;
    let flooded = std::thread::spawn(move || {
        let pairs: Vec<(&str, &str)> = evil_pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(&client(port), &pairs)
    });
    // The honest tenant reads while the flood is read.
    for _ in 0..3 {
        assert_eq!(ask(&serve, &queue(&honest.address().to_string())), Ok(3.0));
    }
    let (code, message) = flooded.join().unwrap().unwrap_err();
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{message}");
    // Cut off at a page's worth on the wire (its share of the read budget,
    // or the body limit with the chunks' framing, whichever comes first).
    assert!(
        message.contains(&format!("{evil}: answer too large: "))
            && (message.contains("one endpoint may take")
                || message.contains("with its framing is over the 4194304-byte limit")),
        "{message}"
    );
}
