//! The `/metrics` page: every GPU and MIG device reading with the pods
//! holding it, what each ScaledObject was last told, and the scaler's own
//! health. Built from what the other parts publish (the snapshot, the
//! counters); it calls nothing slow. Names follow Prometheus' rules: one
//! prefix, base units, ratios 0–1, `_total` on counters.

use std::sync::Arc;
use std::time::Instant;

use crate::cluster::sweep::Cluster;
use crate::engine::scrape::Scraper;
use crate::node::gpu_metric::{Metric, Readings};
use crate::node::snapshot::{Allocation, GpuHealth, NodeState, SnapshotCell};
use crate::observe::exposition::{Kind, Page};
use crate::observe::stats::{Stats, LATENCY_BUCKETS};

/// Everything the page reads.
#[derive(Clone)]
pub struct Sources {
    pub node: String,
    pub snapshots: Arc<SnapshotCell>,
    pub stats: Arc<Stats>,
    pub engines: Arc<Scraper>,
    pub cluster: Option<Arc<Cluster>>,
    /// Open push and watch streams now.
    pub open_streams: Arc<dyn Fn() -> usize + Send + Sync>,
}

const PREFIX: &str = "keda_gpu_scaler";

/// The exported name, unit conversion and help of each GPU metric.
pub fn gpu_family(metric: Metric) -> (&'static str, f64, &'static str) {
    match metric {
        Metric::GpuUtilization => (
            "gpu_utilization_ratio",
            0.01,
            "Time the GPU was busy running work, 0-1 (NVML utilization.gpu; AMD SMI gfx_activity).",
        ),
        Metric::MemoryUtilization => (
            "gpu_memory_utilization_ratio",
            0.01,
            "Time the memory controller was busy, 0-1 (NVML utilization.memory; AMD SMI umc_activity).",
        ),
        Metric::MemoryUsedMib => (
            "gpu_memory_used_bytes",
            1024.0 * 1024.0,
            "Memory used, bytes.",
        ),
        Metric::MemoryUsedPercent => (
            "gpu_memory_used_ratio",
            0.01,
            "Memory used over total, 0-1.",
        ),
        Metric::Temperature => ("gpu_temperature_celsius", 1.0, "GPU die temperature."),
        Metric::PowerDraw => ("gpu_power_watts", 1.0, "Board power draw."),
        Metric::SmActivity => (
            "gpu_sm_activity_ratio",
            0.01,
            "Share of SMs busy, 0-1 (GPM).",
        ),
        Metric::SmOccupancy => (
            "gpu_sm_occupancy_ratio",
            0.01,
            "Warps resident over the SMs' maximum, 0-1 (GPM).",
        ),
        Metric::TensorActivity => (
            "gpu_tensor_activity_ratio",
            0.01,
            "Time any tensor core was busy, 0-1 (GPM).",
        ),
        Metric::DramBandwidthUtilization => (
            "gpu_dram_bandwidth_utilization_ratio",
            0.01,
            "DRAM bandwidth used over peak, 0-1 (GPM).",
        ),
        Metric::PcieTxMbps => (
            "gpu_pcie_transmit_bytes_per_second",
            1e6,
            "PCIe bytes sent per second.",
        ),
        Metric::PcieRxMbps => (
            "gpu_pcie_receive_bytes_per_second",
            1e6,
            "PCIe bytes received per second.",
        ),
        Metric::NvlinkTxMbps => (
            "gpu_nvlink_transmit_bytes_per_second",
            1e6,
            "NVLink bytes sent per second, all links.",
        ),
        Metric::NvlinkRxMbps => (
            "gpu_nvlink_receive_bytes_per_second",
            1e6,
            "NVLink bytes received per second, all links.",
        ),
    }
}

/// One device's labels: the GPU, its MIG device if any, and its holder.
struct Device<'a> {
    gpu: String,
    uuid: &'a str,
    model: &'a str,
    mig: &'a str,
    profile: &'a str,
    holder: Option<&'a Allocation>,
    readings: &'a Readings,
}

pub fn render(sources: &Sources) -> String {
    let mut page = Page::default();
    let snapshot = sources.snapshots.load();
    let node = sources.node.as_str();

    page.family(
        &format!("{PREFIX}_build_info"),
        Kind::Gauge,
        "The running build; always 1.",
    );
    page.sample(
        &format!("{PREFIX}_build_info"),
        &[("version", env!("CARGO_PKG_VERSION")), ("node", node)],
        1.0,
    );

    let mut devices = Vec::new();
    let mut gpus_up = Vec::new();
    if let NodeState::Ready { gpus, .. } = &snapshot.state {
        for gpu in gpus {
            let index = gpu.index.to_string();
            let uuid = gpu.uuid.as_deref().unwrap_or("");
            let model = gpu.name.as_deref().unwrap_or("");
            gpus_up.push((
                index.clone(),
                uuid,
                model,
                matches!(gpu.health, GpuHealth::Healthy { .. }),
            ));
            if let Some(readings) = gpu.readings() {
                devices.push(Device {
                    gpu: index.clone(),
                    uuid,
                    model,
                    mig: "",
                    profile: "",
                    holder: gpu.allocations.first(),
                    readings,
                });
                for mig in &gpu.mig {
                    devices.push(Device {
                        gpu: index.clone(),
                        uuid,
                        model,
                        mig: &mig.uuid,
                        profile: mig.profile.as_deref().unwrap_or(""),
                        holder: mig.allocations.first(),
                        readings: &mig.readings,
                    });
                }
            }
        }
    }
    let up = format!("{PREFIX}_gpu_up");
    page.family(
        &up,
        Kind::Gauge,
        "1 when the GPU answers its library, 0 when lost or failing.",
    );
    for (gpu, uuid, model, healthy) in &gpus_up {
        let labels = [
            ("node", node),
            ("gpu", gpu.as_str()),
            ("uuid", uuid),
            ("model", model),
        ];
        page.sample(&up, &labels, if *healthy { 1.0 } else { 0.0 });
    }
    for metric in Metric::ALL {
        let (name, scale, help) = gpu_family(metric);
        let name = format!("{PREFIX}_{name}");
        let with_value: Vec<(&Device, f64)> = devices
            .iter()
            .filter_map(|d| d.readings.get(metric).map(|v| (d, v * scale)))
            .collect();
        if with_value.is_empty() {
            continue;
        }
        page.family(&name, Kind::Gauge, help);
        for (device, value) in with_value {
            let (namespace, pod, container) = device.holder.map_or(("", "", ""), |a| {
                (a.namespace.as_str(), a.pod.as_str(), a.container.as_str())
            });
            let labels = [
                ("node", node),
                ("gpu", device.gpu.as_str()),
                ("uuid", device.uuid),
                ("model", device.model),
                ("mig", device.mig),
                ("mig_profile", device.profile),
                ("namespace", namespace),
                ("pod", pod),
                ("container", container),
            ];
            page.sample(&name, &labels, value);
        }
    }

    let age = format!("{PREFIX}_snapshot_age_seconds");
    page.family(&age, Kind::Gauge, "Age of the latest GPU snapshot.");
    page.sample(
        &age,
        &[("node", node)],
        snapshot.age(Instant::now()).as_secs_f64(),
    );
    let pass = format!("{PREFIX}_sampler_pass_duration_seconds");
    page.family(
        &pass,
        Kind::Gauge,
        "How long the latest GPU sampling pass took.",
    );
    page.sample(&pass, &[("node", node)], snapshot.duration.as_secs_f64());
    let driver_up = format!("{PREFIX}_driver_up");
    page.family(
        &driver_up,
        Kind::Gauge,
        "1 when the GPU library (backend: nvml or amdsmi) answered the latest pass; 0 with backend \"\" when none did.",
    );
    let backend = match &snapshot.state {
        NodeState::Ready { backend, .. } => backend,
        NodeState::Unavailable { .. } => "",
    };
    page.sample(
        &driver_up,
        &[("node", node), ("backend", backend)],
        f64::from(u8::from(!backend.is_empty())),
    );
    let read_errors = format!("{PREFIX}_gpu_read_errors");
    page.family(
        &read_errors,
        Kind::Gauge,
        "Readings that failed in the latest pass, by metric.",
    );
    if let NodeState::Ready { gpus, .. } = &snapshot.state {
        for gpu in gpus {
            let index = gpu.index.to_string();
            for error in &gpu.read_errors {
                page.sample(
                    &read_errors,
                    &[("node", node), ("gpu", &index), ("what", &error.what)],
                    1.0,
                );
            }
        }
    }

    let call_errors = format!("{PREFIX}_driver_call_errors_total");
    page.family(
        &call_errors,
        Kind::Counter,
        "Failed GPU driver library calls since start, by backend, call and code (NOT_SUPPORTED excluded).",
    );
    let nvml = crate::nvml::call_errors().into_iter().map(|e| ("nvml", e));
    let amdsmi = crate::amdsmi::call_errors()
        .into_iter()
        .map(|e| ("amdsmi", e));
    for (backend, (call, code, count)) in nvml.chain(amdsmi) {
        page.sample(
            &call_errors,
            &[
                ("node", node),
                ("backend", backend),
                ("call", call),
                ("code", code),
            ],
            count as f64,
        );
    }

    let requests = format!("{PREFIX}_grpc_requests_total");
    let latency = format!("{PREFIX}_grpc_request_duration_seconds");
    let all = sources.stats.requests();
    page.family(
        &requests,
        Kind::Counter,
        "gRPC requests served, by method and status code.",
    );
    for ((method, code), entry) in &all {
        page.sample(
            &requests,
            &[("method", method), ("code", code)],
            entry.count as f64,
        );
    }
    page.family(
        &latency,
        Kind::Histogram,
        "gRPC request latency, by method.",
    );
    for ((method, code), entry) in &all {
        let bucket = format!("{latency}_bucket");
        for (bound, count) in LATENCY_BUCKETS.iter().zip(entry.buckets) {
            page.sample(
                &bucket,
                &[
                    ("method", method),
                    ("code", code),
                    ("le", &bound.to_string()),
                ],
                count as f64,
            );
        }
        page.sample(
            &bucket,
            &[("method", method), ("code", code), ("le", "+Inf")],
            entry.count as f64,
        );
        page.sample(
            &format!("{latency}_sum"),
            &[("method", method), ("code", code)],
            entry.sum_seconds,
        );
        page.sample(
            &format!("{latency}_count"),
            &[("method", method), ("code", code)],
            entry.count as f64,
        );
    }

    let triggers = sources.stats.triggers();
    let value = format!("{PREFIX}_trigger_value");
    let target = format!("{PREFIX}_trigger_target");
    let active = format!("{PREFIX}_trigger_active");
    let errors = format!("{PREFIX}_trigger_errors_total");
    page.family(
        &value,
        Kind::Gauge,
        "The last value given to a ScaledObject's trigger.",
    );
    for ((namespace, name, metric), state) in &triggers {
        if let Some(v) = state.value {
            page.sample(
                &value,
                &[
                    ("namespace", namespace),
                    ("scaledobject", name),
                    ("metric", metric),
                ],
                v,
            );
        }
    }
    page.family(&target, Kind::Gauge, "The trigger's target, per replica.");
    for ((namespace, name, metric), state) in &triggers {
        page.sample(
            &target,
            &[
                ("namespace", namespace),
                ("scaledobject", name),
                ("metric", metric),
            ],
            state.target,
        );
    }
    page.family(&active, Kind::Gauge, "1 when the trigger was last active.");
    for ((namespace, name, metric), state) in &triggers {
        if let Some(a) = state.active {
            page.sample(
                &active,
                &[
                    ("namespace", namespace),
                    ("scaledobject", name),
                    ("metric", metric),
                ],
                f64::from(u8::from(a)),
            );
        }
    }
    page.family(
        &errors,
        Kind::Counter,
        "Errors given to the trigger, by gRPC code.",
    );
    for ((namespace, name, metric), state) in &triggers {
        for (code, count) in &state.errors {
            page.sample(
                &errors,
                &[
                    ("namespace", namespace),
                    ("scaledobject", name),
                    ("metric", metric),
                    ("code", code),
                ],
                *count as f64,
            );
        }
    }

    let streams = format!("{PREFIX}_open_streams");
    page.family(
        &streams,
        Kind::Gauge,
        "Open StreamIsActive and health Watch streams.",
    );
    page.sample(&streams, &[("node", node)], (sources.open_streams)() as f64);

    let rounds = format!("{PREFIX}_engine_scrape_rounds_total");
    page.family(
        &rounds,
        Kind::Counter,
        "Engine scrape rounds (one per endpoint per interval at most).",
    );
    page.sample(&rounds, &[("node", node)], sources.engines.rounds() as f64);
    let reads = format!("{PREFIX}_engine_replica_reads_total");
    page.family(
        &reads,
        Kind::Counter,
        "Engine replica pages requested, by outcome.",
    );
    for (outcome, count) in sources.engines.reads() {
        page.sample(
            &reads,
            &[("node", node), ("outcome", outcome.label())],
            count as f64,
        );
    }

    if let Some(cluster) = &sources.cluster {
        for (name, help, value) in [
            (
                "sweeps_total",
                "Cluster sweeps of every peer.",
                cluster.sweeps(),
            ),
            (
                "peer_call_failures_total",
                "Peer calls that failed or timed out.",
                cluster.failed_calls(),
            ),
            (
                "peers_skipped_total",
                "Times a trigger skipped a silent peer whose last report held none of its pods.",
                cluster.skipped_peers(),
            ),
            (
                "peers_unknown_total",
                "Times a trigger answered without a silent peer it knew nothing of.",
                cluster.unknown_peers(),
            ),
        ] {
            let name = format!("{PREFIX}_{name}");
            page.family(&name, Kind::Counter, help);
            page.sample(&name, &[("node", node)], value as f64);
        }
        if let Some(view) = cluster.last_view() {
            let took = format!("{PREFIX}_sweep_duration_seconds");
            page.family(
                &took,
                Kind::Gauge,
                "How long the latest cluster sweep took.",
            );
            page.sample(&took, &[("node", node)], view.took.as_secs_f64());
            let peers = format!("{PREFIX}_peers");
            page.family(
                &peers,
                Kind::Gauge,
                "Peers in the latest sweep: answered, failed (silent, last report still trusted), unknown (silent, nothing trusted known).",
            );
            let failed = view.missing.iter().filter(|m| m.last.is_some()).count();
            for (state, count) in [
                // Every node that answered, less this one (always in).
                ("answered", view.nodes.len().saturating_sub(1)),
                ("failed", failed),
                ("unknown", view.missing.len() - failed),
            ] {
                page.sample(&peers, &[("node", node), ("state", state)], count as f64);
            }
        }
    }
    page.finish()
}
