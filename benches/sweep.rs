//! The cluster sweep across 50 scaler instances on loopback: latency,
//! bytes per sweep, and CPU per sweep; plus the encoded size of a fully
//! attributed 8-GPU node, for estimates of larger clusters.
//!
//! Run: `cargo bench --bench sweep`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::EnvBuilder;
use keda_gpu_scaler::cluster::report::to_proto;
use keda_gpu_scaler::cluster::sweep::{Cluster, ClusterConfig};
use keda_gpu_scaler::grpc::server;
use keda_gpu_scaler::node::gpu_metric::{Metric, Readings};
use keda_gpu_scaler::node::snapshot::{
    Allocation, Attribution, GpuHealth, GpuSample, NodeState, Snapshot, SnapshotCell,
};
use protobuf::Message;

const INSTANCES: usize = 50;
const SWEEPS: usize = 200;

fn main() {
    let scenario: String = (0..8)
        .map(|i| {
            format!(
                "gpu {i} util={} mem_total_mib=81920 mem_used_mib=40960 temp=50 power_mw=350000\n",
                10 * i
            )
        })
        .collect();
    let fakes: Vec<_> = (0..INSTANCES)
        .map(|_| common::FakeNvml::new(&scenario))
        .collect();
    let servers: Vec<_> = fakes
        .iter()
        .enumerate()
        .map(|(i, fake)| {
            let mut config = common::local_config(&fake.library);
            config.sample_interval = Duration::from_secs(1);
            config.node_name = format!("node-{i:02}");
            server::start(&config).expect("start instance")
        })
        .collect();
    let peers: Vec<String> = servers
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port()))
        .collect();
    // Let every instance take its first sample.
    std::thread::sleep(Duration::from_millis(1500));

    let local = Arc::new(SnapshotCell::new("bench"));
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let cluster = Cluster::new(
        ClusterConfig {
            node_name: "answering-pod".into(),
            peers,
            peer_timeout: Duration::from_secs(1),
            // Expire the cache at once, so that every view is a sweep.
            interval: Duration::from_nanos(1),
            stale_after: Duration::from_secs(5),
            tls: None,
        },
        local,
        env,
    );
    cluster.start().expect("start sweeper");

    let cpu_before = process_cpu_seconds();
    let wall = Instant::now();
    let mut latencies = Vec::with_capacity(SWEEPS);
    let mut bytes = 0;
    for _ in 0..SWEEPS {
        let started = Instant::now();
        let view = futures_executor::block_on(cluster.view());
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(
            view.nodes.len(),
            INSTANCES + 1,
            "missing peers: {:?}",
            view.missing
        );
        bytes = view.bytes;
    }
    let cpu = process_cpu_seconds() - cpu_before;
    let elapsed = wall.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!("sweep over {INSTANCES} instances (8 GPUs each, unattributed), {SWEEPS} sweeps:");
    println!("  latency p50 {:.2} ms, p99 {:.2} ms", pct(0.5), pct(0.99));
    println!(
        "  bytes per sweep (peer answers, protobuf) {bytes}, {:.0} per node",
        bytes as f64 / INSTANCES as f64
    );
    println!(
        "  CPU per sweep, answering pod and peers together: {:.2} ms ({:.1} s CPU in {elapsed:.1} s)",
        cpu / SWEEPS as f64 * 1e3,
        cpu
    );
    println!(
        "  attributed 8-GPU node, one pod per GPU: {} bytes",
        attributed_node_size()
    );
    cluster.shutdown();
    drop(servers);
}

/// Encoded size of a node whose 8 GPUs each hold one pod.
fn attributed_node_size() -> u64 {
    let mut readings = Readings::default();
    for metric in Metric::ALL {
        readings.set(metric, 55.5);
    }
    let gpus = (0..8)
        .map(|i| GpuSample {
            index: i,
            uuid: Some(format!("GPU-5e2c8a3b-1d2e-4f50-8000-00000000000{i}")),
            name: Some("NVIDIA H100 80GB HBM3".into()),
            pci_bus_id: None,
            health: GpuHealth::Healthy {
                readings,
                mig_enabled: Some(false),
            },
            mig: vec![],
            read_errors: vec![],
            unreported: vec![],
            allocations: vec![Allocation {
                namespace: "inference".into(),
                pod: format!("vllm-7d9f8b6c5d-x2k4{i}"),
                container: "vllm".into(),
                device_id: format!("GPU-5e2c8a3b-1d2e-4f50-8000-00000000000{i}"),
            }],
        })
        .collect();
    let snapshot = Snapshot {
        sequence: 1,
        taken_at: Instant::now(),
        duration: Duration::ZERO,
        state: NodeState::Ready {
            backend: "nvml",
            driver_version: "550.54.15".into(),
            gpus,
            attribution: Attribution::complete(),
        },
    };
    to_proto("gke-pool-gpu-h100-7f3a-abcd", &snapshot, Instant::now()).compute_size() as u64
}

/// User plus system CPU of this process, in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}
