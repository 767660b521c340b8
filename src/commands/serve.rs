//! `serve`: run the scaler until SIGTERM or SIGINT, then stop in order.

use crate::commands::args::ServeArgs;
use crate::commands::signals;
use crate::grpc::server::{self, ServeConfig};
use crate::node::attribution::GpuResources;
use crate::scaling::duration::format_duration;

pub fn run(args: &ServeArgs) -> Result<(), String> {
    // Before any thread exists, so that every thread inherits the mask and
    // the signals are only ever taken by `signals.wait()` below.
    let signals = signals::block_termination().map_err(|e| format!("cannot block signals: {e}"))?;
    let config = ServeConfig {
        listen: args.listen.clone(),
        sample_interval: args.sample_interval,
        backend: args.backend.clone(),
        tls: args.tls.clone(),
        probe_listen: args.probe_listen.clone(),
        node_name: args.node_name.clone().unwrap_or_else(hostname),
        peers: args.peers.clone(),
        peer_timeout: args.peer_timeout,
        peer_server_name: args.peer_server_name.clone(),
        pod_resources_socket: args.pod_resources_socket.clone(),
        gpu_resources: GpuResources {
            extra: args.gpu_resource_names.clone(),
        },
        engine_resolver: None,
        metrics_listen: args.metrics_listen.clone(),
        engine_policy: args.engine_policy.clone(),
    };
    let running = server::start(&config)?;
    let host = args.listen.rsplit_once(':').map_or("", |(host, _)| host);
    let transport = match &args.tls {
        None => "plaintext",
        Some(tls) if tls.client_ca.is_some() => "mutual TLS",
        Some(_) => "TLS",
    };
    log::info!(
        "serving externalscaler.ExternalScaler on {host}:{} ({transport}, sample interval {})",
        running.port(),
        format_duration(args.sample_interval)
    );
    if let (Some(address), Some(port)) = (&args.metrics_listen, running.metrics_port()) {
        let host = address.rsplit_once(':').map_or("", |(host, _)| host);
        log::info!("serving the Prometheus page on http://{host}:{port}/metrics");
    }
    if let (Some(address), Some(port)) = (&args.probe_listen, running.probe_port()) {
        let host = address.rsplit_once(':').map_or("", |(host, _)| host);
        log::info!("serving grpc.health.v1 for probes on {host}:{port} (plaintext)");
    }
    match config.peers.as_slice() {
        [] => log::info!("node {}: node-local view (no --peers)", config.node_name),
        peers => log::info!(
            "node {}: cluster-wide view over peers {}",
            config.node_name,
            peers.join(", ")
        ),
    }
    let signal = signals
        .wait()
        .map_err(|e| format!("waiting for signals: {e}"))?;
    log::info!("received {signal}; shutting down");
    running.shutdown();
    log::info!("stopped");
    Ok(())
}

/// The kernel's hostname: a pod's name, or the machine's.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| String::from("unknown"))
}
