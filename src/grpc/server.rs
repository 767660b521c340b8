//! Starting and stopping the whole scaler: sampler thread, stream notifier,
//! cluster sweeper and gRPC servers, in one straight line each way. What
//! can fail without side effects (TLS files, binding) comes before any
//! thread starts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{EnvBuilder, Environment, ServerBuilder, ServerCredentials};

use crate::cluster::scope::{GpuScope, Scope};
use crate::cluster::service::NodeService;
use crate::cluster::sweep::{Cluster, ClusterConfig, PeerTls};
use crate::engine::policy::EndpointPolicy;
use crate::engine::resolve;
use crate::engine::scrape::{Resolver, ScrapeConfig, Scraper};
use crate::grpc::health::HealthService;
use crate::grpc::scaler::ScalerService;
use crate::grpc::streams::StreamHub;
use crate::grpc::tls::{self, TlsFiles};
use crate::node::attribution::GpuResources;
use crate::node::backend::BackendConfig;
use crate::node::kubelet::DEFAULT_SOCKET;
use crate::node::sampler::{Sampler, SamplerConfig};
use crate::node::snapshot::SnapshotCell;
use crate::observe::listener::MetricsListener;
use crate::observe::page::{self, Sources};
use crate::observe::stats::Stats;
use crate::proto::externalscaler_grpc::create_external_scaler;
use crate::proto::health_grpc::create_health;
use crate::proto::node_grpc::create_node;
use crate::scaling::trigger_cache::TriggerCache;
use crate::scaling::windows::{Windows, WINDOW_BUDGET_BYTES};

/// A snapshot older than this many sample intervals is stale.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// How long shutdown waits for a sampler that is inside an NVML call.
const SAMPLER_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `host:port`; port 0 picks a free one (tests).
    pub listen: String,
    pub sample_interval: Duration,
    /// Which GPU library reads this node, and where it is.
    pub backend: BackendConfig,
    /// Plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// A plaintext listener serving only grpc.health.v1, for kubelet probes
    /// when the main port speaks TLS.
    pub probe_listen: Option<String>,
    /// This node's name, as peers and `query --explain` show it.
    pub node_name: String,
    /// Peer scaler pods (`host:port`, each resolved to all addresses); empty
    /// for the node-local view.
    pub peers: Vec<String>,
    /// Below `sample_interval`.
    pub peer_timeout: Duration,
    /// The name peers' certificates must carry; `None`: the first peer's host.
    pub peer_server_name: Option<String>,
    pub pod_resources_socket: PathBuf,
    pub gpu_resources: GpuResources,
    /// How engine endpoints are resolved; `None`: the system's DNS.
    pub engine_resolver: Option<Resolver>,
    /// Serve the Prometheus page here (`GET /metrics`); `None`: off.
    pub metrics_listen: Option<String>,
    /// Which engine endpoints a ScaledObject may name, and which addresses
    /// the scaler may read.
    pub engine_policy: EndpointPolicy,
}

impl ServeConfig {
    /// Defaults for everything but the address.
    pub fn new(listen: &str) -> Self {
        Self {
            listen: listen.to_string(),
            sample_interval: Duration::from_secs(1),
            backend: BackendConfig::default(),
            tls: None,
            probe_listen: None,
            node_name: String::new(),
            peers: Vec::new(),
            peer_timeout: Duration::from_millis(500),
            peer_server_name: None,
            pod_resources_socket: PathBuf::from(DEFAULT_SOCKET),
            gpu_resources: GpuResources::default(),
            engine_resolver: None,
            metrics_listen: None,
            engine_policy: EndpointPolicy::default(),
        }
    }
}

/// The running scaler. `shutdown` (or drop) stops it in order; a start
/// that fails half-way stops whatever it had started the same way.
pub struct RunningServer {
    server: Option<grpcio::Server>,
    probes: Option<(grpcio::Server, u16)>,
    streams: StreamHub,
    cluster: Option<Arc<Cluster>>,
    engines: Arc<Scraper>,
    metrics: Option<MetricsListener>,
    sampler: Option<Sampler>,
    port: u16,
}

/// Starts sampling and serving. Errors if an address cannot be bound or a
/// TLS file cannot be read; both are checked before any thread starts.
pub fn start(config: &ServeConfig) -> Result<RunningServer, String> {
    if !config.peers.is_empty() && config.peer_timeout >= config.sample_interval {
        return Err(format!(
            "the peer timeout ({:?}) must be below the sample interval ({:?})",
            config.peer_timeout, config.sample_interval
        ));
    }
    let credentials = match &config.tls {
        Some(files) => tls::server_credentials(files)?,
        None => ServerCredentials::insecure(),
    };
    let peer_tls = peer_tls(config)?;
    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    let snapshots = Arc::new(SnapshotCell::new(
        "the GPUs have not been read yet (the scaler is starting)",
    ));
    let stale_after = config.sample_interval * STALE_AFTER_INTERVALS;
    let cluster = (!config.peers.is_empty()).then(|| {
        Cluster::new(
            ClusterConfig {
                node_name: config.node_name.clone(),
                peers: config.peers.clone(),
                peer_timeout: config.peer_timeout,
                interval: config.sample_interval,
                stale_after,
                tls: peer_tls,
            },
            Arc::clone(&snapshots),
            Arc::clone(&env),
        )
    });
    let gpus = match &cluster {
        Some(cluster) => GpuScope::Cluster(Arc::clone(cluster)),
        None => GpuScope::Node {
            snapshots: Arc::clone(&snapshots),
            stale_after,
        },
    };
    let mut scrape = ScrapeConfig::new(config.sample_interval);
    if let Some(resolver) = &config.engine_resolver {
        scrape.resolver = resolver.clone();
    }
    scrape.policy = config.engine_policy.clone();
    let engines = Scraper::new(scrape);
    let scope = Scope {
        gpus,
        engines: Arc::clone(&engines),
        windows: Windows::new(WINDOW_BUDGET_BYTES),
        sample_interval: config.sample_interval,
    };
    let streams = StreamHub::new(
        Arc::clone(&snapshots),
        scope.clone(),
        config.sample_interval,
    );
    let stats = Arc::new(Stats::default());
    let scaler = ScalerService::new(
        scope.clone(),
        streams.clone(),
        Arc::clone(&stats),
        TriggerCache::new(config.engine_policy.clone()),
    );
    let health = HealthService::new(Arc::clone(&snapshots), streams.clone(), stale_after);
    let node = NodeService::new(config.node_name.clone(), Arc::clone(&snapshots), scope);

    let mut server = ServerBuilder::new(Arc::clone(&env))
        .register_service(create_external_scaler(scaler))
        .register_service(create_health(health.clone()))
        .register_service(create_node(node))
        .build()
        .map_err(|e| format!("cannot build the gRPC server: {e}"))?;
    let port = server
        .add_listening_port(config.listen.as_str(), credentials)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let probes = match &config.probe_listen {
        Some(address) => Some(bind_probes(Arc::clone(&env), health, address)?),
        None => None,
    };

    // Threads from here on; dropping `running` on an error stops those started.
    let mut running = RunningServer {
        server: None,
        probes: None,
        streams,
        cluster,
        engines,
        metrics: None,
        sampler: None,
        port,
    };
    if let Some(address) = &config.metrics_listen {
        let sources = Sources {
            node: config.node_name.clone(),
            snapshots: Arc::clone(&snapshots),
            stale_after,
            backend: config.backend.choice,
            stats: Arc::clone(&stats),
            engines: Arc::clone(&running.engines),
            cluster: running.cluster.clone(),
            open_streams: {
                let streams = running.streams.clone();
                Arc::new(move || streams.open_streams())
            },
        };
        let listener = MetricsListener::start(address, Arc::new(move || page::render(&sources)))
            .map_err(|e| format!("cannot serve /metrics on {address}: {e}"))?;
        running.metrics = Some(listener);
    }
    running.sampler = Some(
        Sampler::start(
            SamplerConfig {
                interval: config.sample_interval,
                backend: config.backend.clone(),
                pod_resources_socket: config.pod_resources_socket.clone(),
                gpu_resources: config.gpu_resources.clone(),
            },
            Arc::clone(&snapshots),
            Arc::clone(&env),
        )
        .map_err(|e| format!("cannot start the sampler thread: {e}"))?,
    );
    // This scaler's own listeners are never an engine endpoint.
    let mut own_ports = vec![port];
    own_ports.extend(running.metrics.as_ref().map(|m| m.address().port()));
    own_ports.extend(probes.as_ref().map(|(_, port)| *port));
    running
        .engines
        .listening_on(own_ports, resolve::local_addresses());
    if let Some(cluster) = &running.cluster {
        cluster
            .start()
            .map_err(|e| format!("cannot start the cluster sweeper thread: {e}"))?;
    }
    running
        .streams
        .start()
        .map_err(|e| format!("cannot start the stream notifier thread: {e}"))?;
    server.start();
    running.server = Some(server);
    if let Some((mut probes, port)) = probes {
        probes.start();
        running.probes = Some((probes, port));
    }
    Ok(running)
}

/// How pods call each other when they serve TLS; the files are read now,
/// so a missing one fails the start.
fn peer_tls(config: &ServeConfig) -> Result<Option<PeerTls>, String> {
    let (Some(files), Some(first)) = (&config.tls, config.peers.first()) else {
        return Ok(None);
    };
    let Some(ca) = &files.client_ca else {
        return Err(
            "--peers with TLS needs --tls-client-ca: pods call each other with mutual TLS under one CA"
                .to_string(),
        );
    };
    let server_name = match &config.peer_server_name {
        Some(name) => name.clone(),
        None => peer_host(first).to_string(),
    };
    let tls = PeerTls {
        ca: ca.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        server_name,
    };
    tls.check()?;
    Ok(Some(tls))
}

/// The host of a `host:port` peer entry, without an IPv6 address's brackets.
pub fn peer_host(entry: &str) -> &str {
    let host = entry.rsplit_once(':').map_or(entry, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The health service alone, in plaintext, on its own port (bound, not started).
fn bind_probes(
    env: Arc<Environment>,
    health: HealthService,
    address: &str,
) -> Result<(grpcio::Server, u16), String> {
    let mut server = ServerBuilder::new(env)
        .register_service(create_health(health))
        .build()
        .map_err(|e| format!("cannot build the probe server: {e}"))?;
    let port = server
        .add_listening_port(address, ServerCredentials::insecure())
        .map_err(|e| format!("cannot listen on --probe-listen {address}: {e}"))?;
    Ok((server, port))
}

impl RunningServer {
    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bound probe port, when `probe_listen` was given.
    pub fn probe_port(&self) -> Option<u16> {
        self.probes.as_ref().map(|(_, port)| *port)
    }

    pub fn streams(&self) -> &StreamHub {
        &self.streams
    }

    /// The `/metrics` port, when `metrics_listen` was given.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|m| m.address().port())
    }

    /// The engine scraper.
    pub fn engines(&self) -> &Arc<Scraper> {
        &self.engines
    }

    /// The cluster sweeper, when peers are configured.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Stops the sweeper (aborting a sweep in flight, so nothing waits on
    /// a silent peer), ends streams, stops accepting and drains calls,
    /// then stops the sampler.
    pub fn shutdown(mut self) {
        self.shutdown_in_order();
    }

    fn shutdown_in_order(&mut self) {
        self.metrics.take();
        if let Some(cluster) = &self.cluster {
            cluster.shutdown();
        }
        self.engines.shutdown();
        self.streams.shutdown();
        if let Some(mut server) = self.server.take() {
            if let Err(e) = futures_executor::block_on(server.shutdown()) {
                log::warn!("gRPC server shutdown: {e}");
            }
        }
        if let Some((mut probes, _)) = self.probes.take() {
            let _ = futures_executor::block_on(probes.shutdown());
        }
        if let Some(sampler) = self.sampler.take() {
            sampler.stop(SAMPLER_STOP_GRACE);
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown_in_order();
    }
}
