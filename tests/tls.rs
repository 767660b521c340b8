//! TLS and mutual TLS with certificates made at test time by `openssl`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use grpcio::{ChannelBuilder, ChannelCredentialsBuilder, EnvBuilder, RpcStatusCode};
use keda_gpu_scaler::grpc::server::{self, RunningServer};
use keda_gpu_scaler::grpc::tls::TlsFiles;
use keda_gpu_scaler::proto::externalscaler_grpc::ExternalScalerClient;

/// Two CAs and certificates signed by them, in a temporary directory.
struct Pki {
    dir: FakeNvml,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            dir: FakeNvml::unplaced(),
        };
        std::fs::write(
            pki.path("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        for ca in ["ca1", "ca2"] {
            pki.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=test {ca}"),
            ]);
        }
        pki.sign("server1", "ca1");
        pki.sign("server2", "ca2");
        pki.sign("client1", "ca1");
        pki.sign("client2", "ca2");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.dir)
            .output()
            .expect("openssl is installed");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `<name>.crt` and `<name>.key`, signed by `ca`, valid for localhost.
    fn sign(&self, name: &str, ca: &str) {
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=localhost",
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

fn serve_tls(fake: &FakeNvml, pki: &Pki, client_ca: Option<&str>) -> RunningServer {
    // The server reads copies, so a test can rotate them.
    for name in ["tls.crt", "tls.key"] {
        let source = if name == "tls.crt" {
            "server1.crt"
        } else {
            "server1.key"
        };
        std::fs::copy(pki.path(source), pki.path(name)).unwrap();
    }
    let mut config = local_config(&fake.library);
    config.tls = Some(TlsFiles {
        cert: pki.path("tls.crt"),
        key: pki.path("tls.key"),
        client_ca: client_ca.map(|ca| pki.path(ca)),
    });
    config.probe_listen = Some("127.0.0.1:0".into());
    server::start(&config).expect("start TLS server")
}

/// A fresh channel (so a fresh handshake) trusting `ca`, optionally with a client certificate.
fn tls_client(port: u16, pki: &Pki, ca: &str, client: Option<&str>) -> ExternalScalerClient {
    let mut credentials = ChannelCredentialsBuilder::new().root_cert(pki.read(ca));
    if let Some(name) = client {
        credentials = credentials.cert(
            pki.read(&format!("{name}.crt")),
            pki.read(&format!("{name}.key")),
        );
    }
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(env)
        .override_ssl_target("localhost")
        .set_credentials(credentials.build())
        .connect(&format!("127.0.0.1:{port}"));
    ExternalScalerClient::new(channel)
}

fn answer(client: &ExternalScalerClient) -> Result<f64, (RpcStatusCode, String)> {
    value(client, &[])
}

#[test]
fn tls_client_succeeds_and_plaintext_fails() {
    let fake = FakeNvml::new(&gpu_line(0, 33));
    let pki = Pki::new();
    let server = serve_tls(&fake, &pki, None);
    wait_for_value(&tls_client(server.port(), &pki, "ca1.crt", None), &[], 33.0);
    let plaintext = answer(&client(server.port())).unwrap_err();
    assert_eq!(plaintext.0, RpcStatusCode::UNAVAILABLE, "{plaintext:?}");
}

#[test]
fn mutual_tls_requires_a_certificate_from_the_client_ca() {
    let fake = FakeNvml::new(&gpu_line(0, 44));
    let pki = Pki::new();
    let server = serve_tls(&fake, &pki, Some("ca1.crt"));
    let port = server.port();
    wait_for_value(
        &tls_client(port, &pki, "ca1.crt", Some("client1")),
        &[],
        44.0,
    );
    let without = answer(&tls_client(port, &pki, "ca1.crt", None)).unwrap_err();
    assert_eq!(without.0, RpcStatusCode::UNAVAILABLE, "{without:?}");
    let other_ca = answer(&tls_client(port, &pki, "ca1.crt", Some("client2"))).unwrap_err();
    assert_eq!(other_ca.0, RpcStatusCode::UNAVAILABLE, "{other_ca:?}");
}

#[test]
fn rotated_certificate_is_used_for_new_connections() {
    let fake = FakeNvml::new(&gpu_line(0, 55));
    let pki = Pki::new();
    let server = serve_tls(&fake, &pki, None);
    let port = server.port();
    wait_for_value(&tls_client(port, &pki, "ca1.crt", None), &[], 55.0);
    // Rotate to a certificate from another CA, as cert-manager would: write, then rename.
    for (source, target) in [("server2.key", "tls.key"), ("server2.crt", "tls.crt")] {
        let staging = pki.path("staging");
        std::fs::copy(pki.path(source), &staging).unwrap();
        std::fs::rename(&staging, pki.path(target)).unwrap();
    }
    assert!(
        wait_until(PATIENCE, || answer(&tls_client(
            port, &pki, "ca2.crt", None
        )) == Ok(55.0)),
        "new connections never got the rotated certificate"
    );
    // The old CA no longer verifies the server: a handshake failure, while
    // the server goes on answering the new one.
    let old_ca = answer(&tls_client(port, &pki, "ca1.crt", None)).unwrap_err();
    assert_eq!(old_ca.0, RpcStatusCode::UNAVAILABLE, "{old_ca:?}");
    assert!(old_ca.1.contains("CERTIFICATE_VERIFY_FAILED"), "{old_ca:?}");
    assert_eq!(answer(&tls_client(port, &pki, "ca2.crt", None)), Ok(55.0));
}

#[test]
fn unreadable_certificate_fails_startup_naming_it() {
    let fake = FakeNvml::new(&gpu_line(0, 1));
    let mut config = local_config(&fake.library);
    config.tls = Some(TlsFiles {
        cert: Path::new("/nonexistent/tls.crt").into(),
        key: Path::new("/nonexistent/tls.key").into(),
        client_ca: None,
    });
    let error = server::start(&config).err().expect("startup fails");
    assert!(
        error.starts_with("cannot read --tls-cert /nonexistent/tls.crt"),
        "{error}"
    );
}

#[test]
fn probes_are_served_in_plaintext_beside_a_tls_port() {
    let fake = FakeNvml::new(&gpu_line(0, 66));
    let pki = Pki::new();
    let server = serve_tls(&fake, &pki, Some("ca1.crt"));
    let probe_port = server.probe_port().expect("probe listener");
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(env).connect(&format!("127.0.0.1:{probe_port}"));
    let health = keda_gpu_scaler::proto::health_grpc::HealthClient::new(channel);
    let request = keda_gpu_scaler::proto::health::HealthCheckRequest::new();
    let serving = keda_gpu_scaler::proto::health::health_check_response::ServingStatus::SERVING;
    assert!(wait_until(PATIENCE, || health
        .check(&request)
        .map(|r| r.status())
        .ok()
        == Some(serving)));
    // The probe port serves health only: no metrics without mTLS.
    let scaler = ExternalScalerClient::new(
        ChannelBuilder::new(Arc::new(EnvBuilder::new().cq_count(1).build()))
            .connect(&format!("127.0.0.1:{probe_port}")),
    );
    assert_eq!(answer(&scaler).unwrap_err().0, RpcStatusCode::UNIMPLEMENTED);
}

/// Puts `source` in place of `target` as cert-manager does: write, then rename.
fn rotate(pki: &Pki, source: &str, target: &str) {
    let staging = pki.path("staging");
    std::fs::copy(pki.path(source), &staging).unwrap();
    std::fs::rename(&staging, pki.path(target)).unwrap();
}

/// Two scalers peered over mutual TLS, each with its own copies of the
/// files; rotating every file to a new CA, and restarting one pod, must
/// not break the other's calls to it.
#[test]
fn a_cluster_over_mutual_tls_survives_a_certificate_rotation() {
    let pki = Pki::new();
    let fakes = [
        FakeNvml::new(&gpu_line(0, 30)),
        FakeNvml::new(&gpu_line(0, 40)),
    ];
    let ports = [free_port(), free_port()];
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let files = |i: usize, name: &str| format!("node{i}-{name}");
    for i in 0..2 {
        std::fs::copy(pki.path("server1.crt"), pki.path(&files(i, "tls.crt"))).unwrap();
        std::fs::copy(pki.path("server1.key"), pki.path(&files(i, "tls.key"))).unwrap();
        std::fs::copy(pki.path("ca1.crt"), pki.path(&files(i, "ca.crt"))).unwrap();
    }
    let config = |i: usize| {
        let mut config = local_config(&fakes[i].library);
        config.listen = peers[i].clone();
        config.node_name = format!("node-{i}");
        config.peers = peers.clone();
        config.sample_interval = Duration::from_millis(200);
        config.peer_timeout = Duration::from_millis(150);
        config.peer_server_name = Some("localhost".into());
        config.tls = Some(TlsFiles {
            cert: pki.path(&files(i, "tls.crt")),
            key: pki.path(&files(i, "tls.key")),
            client_ca: Some(pki.path(&files(i, "ca.crt"))),
        });
        config
    };
    let first = server::start(&config(0)).expect("start node 0");
    let mut second = Some(server::start(&config(1)).expect("start node 1"));
    let sum = [("aggregation", "sum")];
    wait_for_value(
        &tls_client(ports[0], &pki, "ca1.crt", Some("client1")),
        &sum,
        70.0,
    );

    // Rotate every file of both pods to certificates of a new CA.
    for i in 0..2 {
        rotate(&pki, "server2.crt", &files(i, "tls.crt"));
        rotate(&pki, "server2.key", &files(i, "tls.key"));
        rotate(&pki, "ca2.crt", &files(i, "ca.crt"));
    }
    // Node 1 restarts (a node drain, an upgrade): node 0 must reconnect,
    // and only the new certificates are accepted now.
    second.take();
    fakes[1].set(&gpu_line(0, 45));
    let _second = server::start(&config(1)).expect("restart node 1");
    let client = tls_client(ports[0], &pki, "ca2.crt", Some("client2"));
    let mut last = None;
    assert!(
        wait_until(PATIENCE, || {
            last = Some(value(&client, &sum));
            last == Some(Ok(75.0))
        }),
        "node 0 never read node 1 with the rotated certificates; last answer {last:?}"
    );
    drop(first);
}
