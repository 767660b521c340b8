//! Fake engine replicas on loopback addresses that share one port (as a
//! headless Service's pods do), a table that stands in for cluster DNS
//! (names with addresses, with none, failing, unknown), and an in-process
//! scaler that resolves through it. Test code only.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use fake_engine::{Behaviour, Kind, Load, Replica};
use keda_gpu_scaler::engine::resolve::Resolved;
use keda_gpu_scaler::engine::scrape::Resolver;

use std::time::Duration;

use grpcio::RpcStatusCode;
use keda_gpu_scaler::grpc::server::{self, RunningServer};
use keda_gpu_scaler::proto::externalscaler_grpc::ExternalScalerClient;

use super::{client, free_port, local_config, value, FakeKubelet, FakeNvml, INTERVAL};

/// Cluster DNS as a table: a name with addresses, a name with none
/// (NODATA), a name whose lookup fails (SERVFAIL: `None`), and any other
/// name unknown (NXDOMAIN).
#[derive(Clone, Default)]
pub struct Dns(Arc<Mutex<HashMap<String, Option<Vec<IpAddr>>>>>);

impl Dns {
    pub fn set(&self, name: &str, ips: &[IpAddr]) {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_string(), Some(ips.to_vec()));
    }

    pub fn fail(&self, name: &str) {
        self.0.lock().unwrap().insert(name.to_string(), None);
    }

    pub fn remove(&self, name: &str) {
        self.0.lock().unwrap().remove(name);
    }

    pub fn resolver(&self) -> Resolver {
        let table = Arc::clone(&self.0);
        Resolver(Arc::new(move |host, port| {
            match table.lock().unwrap().get(host) {
                None => Resolved::NoSuchName("Name or service not known".into()),
                Some(None) => Resolved::Failed("Temporary failure in name resolution".into()),
                Some(Some(ips)) if ips.is_empty() => {
                    Resolved::NoAddress("No address associated with hostname".into())
                }
                Some(Some(ips)) => Resolved::Addresses(
                    ips.iter()
                        .map(|ip| std::net::SocketAddr::new(*ip, port))
                        .collect(),
                ),
            }
        }))
    }
}

/// Replicas on 127.0.0.2, .3, … all on one port.
pub struct Fleet {
    pub replicas: Vec<Replica>,
    pub port: u16,
}

impl Fleet {
    pub fn start(kind: Kind, loads: &[Load]) -> Fleet {
        'ports: loop {
            let port = free_port();
            let mut replicas = Vec::new();
            for (i, load) in loads.iter().enumerate() {
                let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
                match Replica::start((ip, port), Behaviour::new(kind, load.clone())) {
                    Ok(replica) => replicas.push(replica),
                    Err(_) => continue 'ports,
                }
            }
            return Fleet { replicas, port };
        }
    }

    /// Replicas serving these texts as their pages.
    pub fn pages(kind: Kind, pages: &[&str]) -> Fleet {
        'ports: loop {
            let port = free_port();
            let mut replicas = Vec::new();
            for (i, page) in pages.iter().enumerate() {
                let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
                let behaviour = Behaviour {
                    page: Some(page.to_string()),
                    ..Behaviour::new(kind, Load::default())
                };
                match Replica::start((ip, port), behaviour) {
                    Ok(replica) => replicas.push(replica),
                    Err(_) => continue 'ports,
                }
            }
            return Fleet { replicas, port };
        }
    }

    pub fn ips(&self) -> Vec<IpAddr> {
        self.replicas.iter().map(|r| r.address().ip()).collect()
    }

    pub fn hits(&self) -> u64 {
        self.replicas.iter().map(Replica::hits).sum()
    }
}

/// A scaler with this DNS; its GPU side is one fake GPU held by nobody.
pub struct Scaler {
    pub server: RunningServer,
    pub client: ExternalScalerClient,
    _fake: FakeNvml,
    _kubelet: Option<grpcio::Server>,
}

impl Scaler {
    pub fn start(dns: &Dns) -> Scaler {
        Self::start_with(dns, None, INTERVAL)
    }

    pub fn start_with(dns: &Dns, kubelet: Option<&FakeKubelet>, interval: Duration) -> Scaler {
        let fake =
            FakeNvml::new("gpu 0 uuid=GPU-0 util=10 mem_total_mib=81920 mem_used_mib=8192\n");
        let mut config = local_config(&fake.library);
        config.sample_interval = interval;
        config.engine_resolver = Some(dns.resolver());
        let kubelet = kubelet.map(|k| {
            let socket = fake.dir.join("kubelet.sock");
            config.pod_resources_socket = socket.clone();
            k.serve(&socket)
        });
        let server = server::start(&config).expect("start server");
        let client = client(server.port());
        Scaler {
            server,
            client,
            _fake: fake,
            _kubelet: kubelet,
        }
    }

    pub fn value(&self, pairs: &[(&str, &str)]) -> Result<f64, (RpcStatusCode, String)> {
        value(&self.client, pairs)
    }
}
