//! The `/metrics` page: every GPU and MIG device reading with the pods
//! holding it, what each ScaledObject was last told, and the scaler's own
//! health. Built from what the other parts publish (the snapshot, the
//! counters); it calls nothing slow. Names follow Prometheus' rules: one
//! prefix, base units, ratios 0–1, `_total` on counters. Every family
//! carries `node`, so that series from several pods never merge.
//!
//! Past the staleness limit the triggers and gRPC health apply
//! ([`stale_reason`]), the snapshot's GPUs are what they were when the
//! sampler stopped: the page then leaves out every reading, `gpu_up` and
//! `gpu_read_errors`, says `snapshot_stale 1` and `driver_up 0`, rather
//! than show frozen readings as live.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::cluster::sweep::Cluster;
use crate::engine::scrape::Scraper;
use crate::node::backend::BackendChoice;
use crate::node::gpu_metric::{Metric, Readings};
use crate::node::snapshot::{
    stale_reason, Allocation, GpuHealth, GpuSample, NodeState, SnapshotCell,
};
use crate::observe::exposition::{Kind, Page};
use crate::observe::stats::{Stats, TriggerKey, LATENCY_BUCKETS};

/// Everything the page reads.
#[derive(Clone)]
pub struct Sources {
    pub node: String,
    pub snapshots: Arc<SnapshotCell>,
    /// The staleness limit the triggers and gRPC health apply.
    pub stale_after: Duration,
    /// `--gpu-backend`, which names `driver_up`'s one series.
    pub backend: BackendChoice,
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

/// `driver_up`'s `backend` label, one value per process: the library
/// `--gpu-backend nvidia` or `amd` names, whether or not it answers; with
/// `auto`, the library that last answered (`auto` until one has).
pub fn driver_label(choice: BackendChoice, answered: Option<&'static str>) -> &'static str {
    match choice {
        BackendChoice::Nvidia => "nvml",
        BackendChoice::Amd => "amdsmi",
        BackendChoice::Auto => answered.unwrap_or("auto"),
    }
}

/// A trigger's labels. `scaledobject`, not KEDA's `scaledObject`:
/// `promtool check metrics` refuses camelCase label names (join KEDA's
/// metrics with `label_replace`).
fn trigger_labels<'a>(
    node: &'a str,
    (namespace, name, metric): &'a TriggerKey,
) -> [(&'static str, &'a str); 4] {
    [
        ("node", node),
        ("namespace", namespace),
        ("scaledobject", name),
        ("metric", metric),
    ]
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
    let now = Instant::now();
    let stale = stale_reason(snapshot.age(now), sources.stale_after).is_some();
    let (answered, gpus) = match &snapshot.state {
        NodeState::Ready { backend, gpus, .. } => (Some(*backend), gpus.as_slice()),
        NodeState::Unavailable { .. } => (None, &[][..]),
    };
    let driver = driver_label(sources.backend, sources.stats.answered_backend(answered));
    // Frozen readings are not shown as live.
    let live: &[GpuSample] = if stale { &[] } else { gpus };

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
    for gpu in live {
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
    let up = format!("{PREFIX}_gpu_up");
    if !stale {
        page.family(
            &up,
            Kind::Gauge,
            "1 when the GPU answers its library, 0 when lost or failing; absent while the snapshot is stale.",
        );
    }
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
    page.sample(&age, &[("node", node)], snapshot.age(now).as_secs_f64());
    let stale_family = format!("{PREFIX}_snapshot_stale");
    page.family(
        &stale_family,
        Kind::Gauge,
        "1 when the latest GPU snapshot is past the staleness limit (the sampler is stuck; the scaler answers UNAVAILABLE and is unready): the GPU readings, gpu_up and gpu_read_errors are then left out, and driver_up is 0.",
    );
    page.sample(&stale_family, &[("node", node)], f64::from(u8::from(stale)));
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
        "1 when the GPU library (backend: nvml or amdsmi as configured; with --gpu-backend auto, the one that last answered, auto until one has) answered the latest pass within the staleness limit with at least one healthy GPU; else 0.",
    );
    let healthy = live
        .iter()
        .any(|g| matches!(g.health, GpuHealth::Healthy { .. }));
    page.sample(
        &driver_up,
        &[("node", node), ("backend", driver)],
        f64::from(u8::from(healthy)),
    );
    let read_errors = format!("{PREFIX}_gpu_read_errors");
    page.family(
        &read_errors,
        Kind::Gauge,
        "Readings that failed in the latest pass, by GPU, MIG device (mig empty for the whole GPU) and metric.",
    );
    for gpu in live {
        let index = gpu.index.to_string();
        let whole = gpu.read_errors.iter().map(|e| ("", "", e));
        let migs = gpu.mig.iter().flat_map(|mig| {
            let profile = mig.profile.as_deref().unwrap_or("");
            mig.read_errors
                .iter()
                .map(move |e| (mig.uuid.as_str(), profile, e))
        });
        for (mig, profile, error) in whole.chain(migs) {
            let what = error.what.to_string();
            page.sample(
                &read_errors,
                &[
                    ("node", node),
                    ("gpu", &index),
                    ("mig", mig),
                    ("mig_profile", profile),
                    ("what", &what),
                ],
                1.0,
            );
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
            &[("node", node), ("method", method), ("code", code)],
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
                    ("node", node),
                    ("method", method),
                    ("code", code),
                    ("le", &bound.to_string()),
                ],
                count as f64,
            );
        }
        page.sample(
            &bucket,
            &[
                ("node", node),
                ("method", method),
                ("code", code),
                ("le", "+Inf"),
            ],
            entry.count as f64,
        );
        page.sample(
            &format!("{latency}_sum"),
            &[("node", node), ("method", method), ("code", code)],
            entry.sum_seconds,
        );
        page.sample(
            &format!("{latency}_count"),
            &[("node", node), ("method", method), ("code", code)],
            entry.count as f64,
        );
    }

    let triggers = sources.stats.triggers();
    let value = format!("{PREFIX}_trigger_value");
    let target = format!("{PREFIX}_trigger_target");
    let active = format!("{PREFIX}_trigger_active");
    let asked = format!("{PREFIX}_trigger_last_asked_timestamp_seconds");
    let errors = format!("{PREFIX}_trigger_errors_total");
    page.family(
        &value,
        Kind::Gauge,
        "The last value given to a ScaledObject's trigger.",
    );
    for (key, state) in &triggers {
        if let Some(v) = state.value {
            page.sample(&value, &trigger_labels(node, key), v);
        }
    }
    page.family(&target, Kind::Gauge, "The trigger's target, per replica.");
    for (key, state) in &triggers {
        page.sample(&target, &trigger_labels(node, key), state.target);
    }
    page.family(&active, Kind::Gauge, "1 when the trigger was last active.");
    for (key, state) in &triggers {
        if let Some(a) = state.active {
            page.sample(&active, &trigger_labels(node, key), f64::from(u8::from(a)));
        }
    }
    page.family(
        &asked,
        Kind::Gauge,
        "When the ScaledObject last asked this pod about the trigger, unix seconds; of several pods, the one asked last holds the current values.",
    );
    for (key, state) in &triggers {
        let at = state
            .asked_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        page.sample(&asked, &trigger_labels(node, key), at.as_secs_f64());
    }
    page.family(
        &errors,
        Kind::Counter,
        "Errors given to the trigger, by gRPC code.",
    );
    for (key, state) in &triggers {
        let mut codes: Vec<_> = state.errors.iter().collect();
        codes.sort();
        for (code, count) in codes {
            let [n, ns, so, m] = trigger_labels(node, key);
            page.sample(&errors, &[n, ns, so, m, ("code", code)], *count as f64);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scrape::ScrapeConfig;
    use crate::node::read_error::{Cause, ReadError};
    use crate::node::snapshot::{Attribution, MigSample};
    use crate::observe::stats::TriggerAnswer;

    const LIMIT: Duration = Duration::from_millis(300);

    fn sources(backend: BackendChoice) -> Sources {
        Sources {
            node: "n".into(),
            snapshots: Arc::new(SnapshotCell::new("starting")),
            stale_after: LIMIT,
            backend,
            stats: Arc::new(Stats::default()),
            engines: Scraper::new(ScrapeConfig::new(Duration::from_secs(1))),
            cluster: None,
            open_streams: Arc::new(|| 0),
        }
    }

    fn ready(gpus: Vec<GpuSample>) -> NodeState {
        NodeState::Ready {
            backend: "nvml",
            driver_version: "550".into(),
            gpus,
            attribution: Attribution::complete(),
        }
    }

    fn gpu(index: u32) -> GpuSample {
        let mut readings = Readings::default();
        readings.set(Metric::GpuUtilization, 40.0);
        GpuSample::healthy(index, readings)
    }

    fn lines<'a>(page: &'a str, prefix: &str) -> Vec<&'a str> {
        page.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn a_stale_snapshot_shows_no_reading() {
        let sources = sources(BackendChoice::Nvidia);
        let now = Instant::now();
        sources
            .snapshots
            .publish(now, Duration::ZERO, ready(vec![gpu(0)]));
        let page = render(&sources);
        assert_eq!(
            lines(&page, "keda_gpu_scaler_gpu_utilization_ratio{").len(),
            1
        );
        assert!(page.contains("keda_gpu_scaler_snapshot_stale{node=\"n\"} 0\n"));
        assert!(page.contains("keda_gpu_scaler_driver_up{node=\"n\",backend=\"nvml\"} 1\n"));

        sources
            .snapshots
            .publish(now - LIMIT * 2, Duration::ZERO, ready(vec![gpu(0)]));
        let page = render(&sources);
        assert!(lines(&page, "keda_gpu_scaler_gpu_").is_empty(), "{page}");
        assert!(!page.contains("# TYPE keda_gpu_scaler_gpu_up"), "{page}");
        assert!(page.contains("keda_gpu_scaler_snapshot_stale{node=\"n\"} 1\n"));
        assert!(page.contains("keda_gpu_scaler_driver_up{node=\"n\",backend=\"nvml\"} 0\n"));
    }

    #[test]
    fn driver_up_keeps_its_label_and_needs_a_healthy_gpu() {
        assert_eq!(driver_label(BackendChoice::Nvidia, None), "nvml");
        assert_eq!(driver_label(BackendChoice::Amd, Some("nvml")), "amdsmi");
        assert_eq!(driver_label(BackendChoice::Auto, None), "auto");
        assert_eq!(driver_label(BackendChoice::Auto, Some("amdsmi")), "amdsmi");

        let sources = sources(BackendChoice::Auto);
        let up =
            |sources: &Sources| lines(&render(sources), "keda_gpu_scaler_driver_up{").join("\n");
        assert_eq!(
            up(&sources),
            "keda_gpu_scaler_driver_up{node=\"n\",backend=\"auto\"} 0"
        );
        let mut lost = gpu(0);
        lost.health = GpuHealth::Lost {
            error: "GPU_IS_LOST".into(),
        };
        let now = Instant::now();
        sources
            .snapshots
            .publish(now, Duration::ZERO, ready(vec![lost]));
        assert_eq!(
            up(&sources),
            "keda_gpu_scaler_driver_up{node=\"n\",backend=\"nvml\"} 0"
        );
        sources
            .snapshots
            .publish(now, Duration::ZERO, ready(vec![]));
        assert_eq!(
            up(&sources),
            "keda_gpu_scaler_driver_up{node=\"n\",backend=\"nvml\"} 0"
        );
        sources
            .snapshots
            .publish(now, Duration::ZERO, ready(vec![gpu(0)]));
        assert_eq!(
            up(&sources),
            "keda_gpu_scaler_driver_up{node=\"n\",backend=\"nvml\"} 1"
        );
        sources.snapshots.publish(
            now,
            Duration::ZERO,
            NodeState::Unavailable {
                reason: "nvmlDeviceGetCount failed".into(),
            },
        );
        assert_eq!(
            up(&sources),
            "keda_gpu_scaler_driver_up{node=\"n\",backend=\"nvml\"} 0"
        );
    }

    #[test]
    fn read_errors_include_mig_devices() {
        let sources = sources(BackendChoice::Nvidia);
        let error = |what: Metric| ReadError::new(what, Cause::said("NVML_ERROR_UNKNOWN"));
        let mut parent = gpu(1);
        parent.read_errors = vec![error(Metric::Temperature)];
        parent.mig = vec![MigSample {
            slot: 0,
            uuid: "MIG-a".into(),
            profile: Some("3g.40gb".into()),
            gpu_instance: Some(1),
            compute_instance: Some(0),
            readings: Readings::default(),
            read_errors: vec![error(Metric::SmActivity)],
            unreported: vec![],
            allocations: vec![],
        }];
        sources
            .snapshots
            .publish(Instant::now(), Duration::ZERO, ready(vec![parent]));
        assert_eq!(
            lines(&render(&sources), "keda_gpu_scaler_gpu_read_errors{"),
            [
                "keda_gpu_scaler_gpu_read_errors{node=\"n\",gpu=\"1\",mig=\"\",mig_profile=\"\",what=\"temperature\"} 1",
                "keda_gpu_scaler_gpu_read_errors{node=\"n\",gpu=\"1\",mig=\"MIG-a\",mig_profile=\"3g.40gb\",what=\"sm_activity\"} 1",
            ]
        );
    }

    #[test]
    fn trigger_families_carry_the_node_and_when_each_was_asked() {
        let sources = sources(BackendChoice::Nvidia);
        let key = ("ns".to_string(), "so".to_string(), "m".to_string());
        sources
            .stats
            .trigger(key.clone(), 50.0, TriggerAnswer::Value(20.0));
        sources
            .stats
            .trigger(key, 50.0, TriggerAnswer::Error("UNAVAILABLE"));
        let page = render(&sources);
        let labels = "{node=\"n\",namespace=\"ns\",scaledobject=\"so\",metric=\"m\"";
        for family in ["trigger_value", "trigger_target"] {
            assert!(
                page.contains(&format!("keda_gpu_scaler_{family}{labels}}} ")),
                "{family}: {page}"
            );
        }
        assert!(page.contains(&format!(
            "keda_gpu_scaler_trigger_errors_total{labels},code=\"UNAVAILABLE\"}} 1\n"
        )));
        let asked = lines(
            &page,
            "keda_gpu_scaler_trigger_last_asked_timestamp_seconds{",
        );
        let at: f64 = asked[0].rsplit_once(' ').unwrap().1.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - 60.0..=now).contains(&at), "{at} vs {now}");
    }
}
