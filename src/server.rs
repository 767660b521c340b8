//! Starting and stopping the whole scaler: sampler thread, stream notifier
//! and gRPC server, in one straight line each way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{EnvBuilder, ServerBuilder, ServerCredentials};

use crate::health::HealthService;
use crate::proto::externalscaler_grpc::create_external_scaler;
use crate::proto::health_grpc::create_health;
use crate::sampler::{Sampler, SamplerConfig};
use crate::service::ScalerService;
use crate::snapshot::SnapshotCell;
use crate::streams::StreamHub;
use crate::tls::{self, TlsFiles};

/// A snapshot older than this many sample intervals is stale.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// How long shutdown waits for a sampler that is inside an NVML call.
const SAMPLER_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `host:port`; port 0 picks a free one (tests).
    pub listen: String,
    pub sample_interval: Duration,
    pub nvml_library: Option<PathBuf>,
    /// Plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// A plaintext listener serving only grpc.health.v1, for kubelet probes
    /// when the main port speaks TLS.
    pub probe_listen: Option<String>,
}

/// The running scaler. `shutdown` (or drop) stops it in order.
pub struct RunningServer {
    server: Option<grpcio::Server>,
    probes: Option<(grpcio::Server, u16)>,
    streams: StreamHub,
    sampler: Option<Sampler>,
    snapshots: Arc<SnapshotCell>,
    port: u16,
}

/// Starts sampling and serving. Errors if the address cannot be bound.
pub fn start(config: &ServeConfig) -> Result<RunningServer, String> {
    let snapshots = Arc::new(SnapshotCell::new(
        "NVML has not been read yet (the scaler is starting)",
    ));
    let stale_after = config.sample_interval * STALE_AFTER_INTERVALS;
    let sampler = Sampler::start(
        SamplerConfig {
            interval: config.sample_interval,
            library: config.nvml_library.clone(),
        },
        Arc::clone(&snapshots),
    )
    .map_err(|e| format!("cannot start the sampler thread: {e}"))?;
    let streams = StreamHub::start(Arc::clone(&snapshots), config.sample_interval)
        .map_err(|e| format!("cannot start the stream notifier thread: {e}"))?;
    let scaler = ScalerService::new(Arc::clone(&snapshots), streams.clone(), stale_after);
    let health = HealthService::new(Arc::clone(&snapshots), streams.clone(), stale_after);

    let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
    let mut server = ServerBuilder::new(Arc::clone(&env))
        .register_service(create_external_scaler(scaler))
        .register_service(create_health(health.clone()))
        .build()
        .map_err(|e| format!("cannot build the gRPC server: {e}"))?;
    let credentials = match &config.tls {
        Some(files) => tls::server_credentials(files)?,
        None => ServerCredentials::insecure(),
    };
    let port = server
        .add_listening_port(config.listen.as_str(), credentials)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let probes = match &config.probe_listen {
        Some(address) => Some(start_probes(env, health, address)?),
        None => None,
    };
    server.start();
    Ok(RunningServer {
        server: Some(server),
        probes,
        streams,
        sampler: Some(sampler),
        snapshots,
        port,
    })
}

/// The health service alone, in plaintext, on its own port.
fn start_probes(
    env: Arc<grpcio::Environment>,
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
    server.start();
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

    pub fn snapshots(&self) -> &Arc<SnapshotCell> {
        &self.snapshots
    }

    pub fn streams(&self) -> &StreamHub {
        &self.streams
    }

    /// Ends streams, stops accepting and drains calls, then stops the sampler.
    pub fn shutdown(mut self) {
        self.shutdown_in_order();
    }

    fn shutdown_in_order(&mut self) {
        if let Some(mut server) = self.server.take() {
            self.streams.shutdown();
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
