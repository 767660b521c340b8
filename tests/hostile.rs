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
