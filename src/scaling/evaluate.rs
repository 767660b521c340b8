//! Applies a trigger to GPU readings: selects GPUs (by index, by the pods
//! holding them, across nodes), aggregates, and turns every fault into an
//! error. No path here turns a fault into 0. Each GPU's part is explained
//! for `query --explain`.

use std::time::{Duration, Instant};

use crate::node::gpu_metric::Metric;
use crate::node::snapshot::{stale_reason, GpuHealth, GpuSample, NodeState, Snapshot, Unplaced};
use crate::scaling::outcome::{Detail, EvalError, Explained, Outcome};
use crate::scaling::trigger::{GpuSelector, Source, Trigger};

/// One node's GPUs as evaluation sees them.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Empty for the node-local view (messages then say just "GPU 1").
    pub name: &'a str,
    pub gpus: &'a [GpuSample],
    /// The node's [`Attribution`](crate::node::snapshot::Attribution) as
    /// evaluation reads it: the device ids that could not be placed, or
    /// why the node's GPUs cannot be attributed to pods.
    pub attribution: Result<&'a [Unplaced], &'a str>,
}

/// The trigger over this node's snapshot, with the explanation when
/// `detail` asks for it. `stale_after` is the oldest a snapshot may be
/// (three sample intervals).
pub fn local_outcome(
    trigger: &Trigger,
    snapshot: &Snapshot,
    now: Instant,
    stale_after: Duration,
    detail: Detail,
) -> Outcome {
    match local_view(snapshot, now, stale_after, "") {
        Ok(node) => evaluate_nodes(trigger, &[node], detail),
        Err(reason) => Outcome::unavailable(reason),
    }
}

/// The node's GPUs from a snapshot, or why they cannot be used.
pub fn local_view<'a>(
    snapshot: &'a Snapshot,
    now: Instant,
    stale_after: Duration,
    name: &'a str,
) -> Result<NodeView<'a>, String> {
    let (gpus, attribution) = match &snapshot.state {
        NodeState::Unavailable { reason } => return Err(reason.clone()),
        NodeState::Ready {
            gpus, attribution, ..
        } => (gpus, attribution),
    };
    if let Some(reason) = stale_reason(snapshot.age(now), stale_after) {
        return Err(reason);
    }
    Ok(NodeView {
        name,
        gpus,
        attribution: attribution.unplaced(),
    })
}

/// The trigger over several nodes' GPUs (one, for the node-local view).
pub fn evaluate_nodes(trigger: &Trigger, nodes: &[NodeView<'_>], detail: Detail) -> Outcome {
    let mut explained = Vec::new();
    let mut selected = 0;
    let value = select_and_aggregate(trigger, nodes, detail, &mut explained, &mut selected);
    Outcome {
        value,
        explained,
        selected,
        notes: Vec::new(),
        replicas: Vec::new(),
    }
}

fn select_and_aggregate(
    trigger: &Trigger,
    nodes: &[NodeView<'_>],
    detail: Detail,
    explained: &mut Vec<Explained>,
    selected: &mut usize,
) -> Result<f64, EvalError> {
    let Source::Gpu { metric, gpus } = &trigger.source else {
        return Err(EvalError::InvalidArgument(String::from(
            "this trigger reads an engine's /metrics, not GPUs",
        )));
    };
    let (metric, gpus) = (*metric, *gpus);
    if let Some(selector) = &trigger.selector {
        if let Some(node) = nodes.iter().find(|n| n.attribution.is_err()) {
            return Err(EvalError::Unavailable(format!(
                "cannot tell which GPUs {selector} holds: pod attribution is unavailable{}: {}",
                on(node.name),
                node.attribution.unwrap_err()
            )));
        }
        for node in nodes {
            let held = node
                .attribution
                .unwrap_or_default()
                .iter()
                .find(|u| selector.matches(&u.allocation.namespace, &u.allocation.pod));
            if let Some(id) = held {
                return Err(EvalError::Unavailable(format!(
                    "cannot read the GPU of pod {}/{} ({selector}){}: {}",
                    id.allocation.namespace,
                    id.allocation.pod,
                    on(node.name),
                    id.reason
                )));
            }
        }
    }
    let total: usize = nodes.iter().map(|n| n.gpus.len()).sum();
    if total == 0 && trigger.selector.is_none() {
        return Err(EvalError::Unavailable(format!(
            "the GPU library reports no GPUs{}",
            if nodes.len() == 1 {
                on(nodes[0].name)
            } else {
                String::from(" on any node")
            }
        )));
    }
    if let GpuSelector::Index(index) = gpus {
        if total > 0
            && !nodes
                .iter()
                .any(|n| n.gpus.iter().any(|g| g.index == index))
        {
            let message = match nodes {
                [node] if !node.gpus.is_empty() => format!(
                    "invalid gpuIndex \"{index}\": this node has GPU indexes 0 to {}",
                    node.gpus.len() - 1
                ),
                _ => format!("invalid gpuIndex \"{index}\": no node has a GPU with that index"),
            };
            return Err(EvalError::InvalidArgument(message));
        }
    }

    let mut values = Vec::new();
    let mut excluded = Vec::new();
    // Selected GPUs whose reading failed: any one makes the value an
    // error, as leaving it out would read lower than the truth.
    let mut failed = Vec::new();
    for node in nodes {
        for gpu in node.gpus {
            let value = gpu.readings().and_then(|r| r.get(metric));
            let (counted, reason) = match why_not_selected(trigger, gpus, gpu) {
                Some(reason) => (false, reason),
                None => {
                    *selected += 1;
                    match (&gpu.health, value) {
                        (GpuHealth::Healthy { .. }, Some(value)) => {
                            values.push(value);
                            (true, Reason::Counted)
                        }
                        (GpuHealth::Healthy { .. }, None) => {
                            if let Some(error) = gpu.read_error(metric) {
                                let reason = format!("reading {metric} failed: {error}");
                                failed.push(format!("{}: {reason}", label(node.name, gpu)));
                                (false, Reason::Failed(reason))
                            } else {
                                let reason = format!(
                                    "does not report {metric}{}",
                                    unsupported_why(gpu, metric)
                                );
                                excluded.push(format!("{} {reason}", label(node.name, gpu)));
                                (false, Reason::Excluded(reason))
                            }
                        }
                        (GpuHealth::Lost { error }, _) => {
                            excluded.push(format!("{} is lost: {error}", label(node.name, gpu)));
                            (false, Reason::Excluded(format!("lost: {error}")))
                        }
                        (GpuHealth::Failed { error }, _) => {
                            failed.push(format!("{} is failing: {error}", label(node.name, gpu)));
                            (false, Reason::Failed(format!("failing: {error}")))
                        }
                    }
                }
            };
            if detail == Detail::Explained {
                explained.push(Explained {
                    node: node.name.to_string(),
                    index: gpu.index,
                    uuid: gpu.uuid.clone().unwrap_or_default(),
                    pods: gpu
                        .allocations
                        .iter()
                        .map(|a| format!("{}/{}", a.namespace, a.pod))
                        .collect(),
                    value,
                    counted,
                    reason: reason.describe(trigger),
                });
            }
            // A pod holding a MIG device reads that device, not its GPU.
            if let Some(selector) = &trigger.selector {
                for mig in &gpu.mig {
                    if matches!(gpus, GpuSelector::Index(index) if index != gpu.index)
                        || !mig
                            .allocations
                            .iter()
                            .any(|a| selector.matches(&a.namespace, &a.pod))
                    {
                        continue;
                    }
                    *selected += 1;
                    let value = mig.readings.get(metric);
                    let name = format!("{} {}", label(node.name, gpu), mig.label());
                    let (counted, reason) = match (&gpu.health, value) {
                        (GpuHealth::Healthy { .. }, Some(value)) => {
                            values.push(value);
                            (true, String::from("counted"))
                        }
                        (GpuHealth::Healthy { .. }, None) => {
                            match mig.read_errors.iter().find(|e| e.what == metric) {
                                Some(error) => {
                                    let reason =
                                        format!("reading {metric} failed: {}", error.cause);
                                    failed.push(format!("{name}: {reason}"));
                                    (false, reason)
                                }
                                None => {
                                    let why = mig
                                        .why_absent(metric)
                                        .map_or_else(String::new, |why| format!(" ({why})"));
                                    let reason = format!("does not report {metric}{why}");
                                    excluded.push(format!("{name} {reason}"));
                                    (false, reason)
                                }
                            }
                        }
                        (GpuHealth::Lost { error }, _) => {
                            excluded.push(format!("{name} is on a lost GPU: {error}"));
                            (false, format!("its GPU is lost: {error}"))
                        }
                        (GpuHealth::Failed { error }, _) => {
                            failed.push(format!("{name} is on a failing GPU: {error}"));
                            (false, format!("its GPU is failing: {error}"))
                        }
                    };
                    if detail == Detail::Explained {
                        explained.push(Explained {
                            node: node.name.to_string(),
                            index: gpu.index,
                            uuid: mig.uuid.clone(),
                            pods: mig
                                .allocations
                                .iter()
                                .map(|a| format!("{}/{}", a.namespace, a.pod))
                                .collect(),
                            value,
                            counted,
                            reason,
                        });
                    }
                }
            }
        }
    }
    if !failed.is_empty() {
        return Err(EvalError::Unavailable(format!(
            "cannot read {metric} of every selected GPU (left out, the value would read low): {}",
            failed.join("; ")
        )));
    }
    if *selected == 0 && trigger.selector.is_some() {
        // Attribution works everywhere and no pod matches: the workload is
        // at zero replicas. That is a 0, not a fault.
        return Ok(0.0);
    }
    let value = trigger.aggregation.apply(&values).ok_or_else(|| {
        EvalError::Unavailable(format!(
            "no healthy GPU reports {metric}: {}",
            excluded.join("; ")
        ))
    })?;
    if !value.is_finite() || value < 0.0 {
        return Err(EvalError::Unavailable(format!(
            "{metric} aggregated to {value}, which is not a valid metric value"
        )));
    }
    Ok(value)
}

/// Why a GPU did or did not count; worded only for explanations.
enum Reason {
    Counted,
    OtherIndex(u32),
    Unallocated,
    OtherPods,
    /// Not counted, and rightly so: the GPU is lost or lacks the metric.
    Excluded(String),
    /// Its reading failed: the value is an error.
    Failed(String),
}

impl Reason {
    fn describe(self, trigger: &Trigger) -> String {
        match self {
            Reason::Counted => String::from("counted"),
            Reason::OtherIndex(index) => format!("not gpuIndex {index}"),
            Reason::Unallocated => String::from("not allocated to any pod"),
            Reason::OtherPods => match &trigger.selector {
                Some(selector) => format!("held by other pods, not {selector}"),
                None => String::from("held by other pods"),
            },
            Reason::Excluded(reason) | Reason::Failed(reason) => reason,
        }
    }
}

/// Why a healthy GPU without a failed read lacks `metric` (unsupported,
/// or MIG), in parentheses; empty when not known.
fn unsupported_why(gpu: &GpuSample, metric: Metric) -> String {
    let mig_enabled = matches!(
        gpu.health,
        GpuHealth::Healthy {
            mig_enabled: Some(true),
            ..
        }
    );
    match gpu.unreported(metric) {
        Some(why) => format!(" ({why})"),
        None if mig_enabled => String::from(" (MIG is enabled)"),
        None => String::new(),
    }
}

/// `None` when the GPU is selected; otherwise why not.
fn why_not_selected(trigger: &Trigger, gpus: GpuSelector, gpu: &GpuSample) -> Option<Reason> {
    if let GpuSelector::Index(index) = gpus {
        if gpu.index != index {
            return Some(Reason::OtherIndex(index));
        }
    }
    let selector = trigger.selector.as_ref()?;
    if gpu
        .allocations
        .iter()
        .any(|a| selector.matches(&a.namespace, &a.pod))
    {
        None
    } else if gpu.allocations.is_empty() {
        Some(Reason::Unallocated)
    } else {
        Some(Reason::OtherPods)
    }
}

fn on(node: &str) -> String {
    if node.is_empty() {
        String::new()
    } else {
        format!(" on node {node}")
    }
}

fn label(node: &str, gpu: &GpuSample) -> String {
    if node.is_empty() {
        gpu.label()
    } else {
        format!("node {node} {}", gpu.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::gpu_metric::{Metric, Readings};
    use crate::node::read_error::{Cause, ReadError};
    use crate::node::snapshot::{Allocation, Attribution};
    use std::collections::HashMap;

    fn healthy(index: u32, utilization: f64) -> GpuSample {
        let mut readings = Readings::default();
        readings.set(Metric::GpuUtilization, utilization);
        GpuSample {
            uuid: Some(format!("GPU-{index}")),
            name: Some("Test GPU".into()),
            ..GpuSample::healthy(index, readings)
        }
    }

    fn held_by(mut gpu: GpuSample, namespace: &str, pod: &str) -> GpuSample {
        gpu.allocations.push(Allocation {
            namespace: namespace.into(),
            pod: pod.into(),
            container: "main".into(),
            device_id: gpu.uuid.clone().unwrap(),
        });
        gpu
    }

    fn lost(index: u32) -> GpuSample {
        GpuSample {
            health: GpuHealth::Lost {
                error: "GPU_IS_LOST".into(),
            },
            ..healthy(index, 0.0)
        }
    }

    fn snapshot(gpus: Vec<GpuSample>, age: Duration) -> (Snapshot, Instant) {
        let now = Instant::now();
        let state = NodeState::Ready {
            backend: "nvml",
            driver_version: "550".into(),
            gpus,
            attribution: Attribution::complete(),
        };
        (Snapshot::aged(state, age, now), now)
    }

    fn trigger(pairs: &[(&str, &str)]) -> Trigger {
        let metadata: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::scaling::trigger::parse(&metadata, "ml").unwrap()
    }

    fn node<'a>(name: &'a str, gpus: &'a [GpuSample]) -> NodeView<'a> {
        NodeView {
            name,
            gpus,
            attribution: Ok(&[]),
        }
    }

    /// The node-local value, as GetMetrics computes it.
    fn evaluate(
        trigger: &Trigger,
        snapshot: &Snapshot,
        now: Instant,
        stale_after: Duration,
    ) -> Result<f64, EvalError> {
        local_outcome(trigger, snapshot, now, stale_after, Detail::ValueOnly).value
    }

    const FRESH: Duration = Duration::from_millis(10);
    const LIMIT: Duration = Duration::from_secs(3);

    #[test]
    fn aggregates_over_healthy_gpus_only() {
        let (snap, now) = snapshot(vec![healthy(0, 30.0), lost(1), healthy(2, 50.0)], FRESH);
        assert_eq!(
            evaluate(&trigger(&[("aggregation", "min")]), &snap, now, LIMIT),
            Ok(30.0)
        );
        assert_eq!(
            evaluate(&trigger(&[("aggregation", "avg")]), &snap, now, LIMIT),
            Ok(40.0)
        );
    }

    #[test]
    fn a_selected_lost_gpu_is_unavailable_not_zero() {
        let (snap, now) = snapshot(vec![healthy(0, 30.0), lost(1)], FRESH);
        let err = evaluate(&trigger(&[("gpuIndex", "1")]), &snap, now, LIMIT).unwrap_err();
        assert!(
            matches!(&err, EvalError::Unavailable(m) if m.contains("GPU 1 (GPU-1) is lost")),
            "{err:?}"
        );
    }

    #[test]
    fn a_gpu_index_the_node_lacks_is_invalid() {
        let (snap, now) = snapshot(vec![healthy(0, 30.0), healthy(1, 40.0)], FRESH);
        let err = evaluate(&trigger(&[("gpuIndex", "2")]), &snap, now, LIMIT).unwrap_err();
        assert_eq!(
            err,
            EvalError::InvalidArgument(
                "invalid gpuIndex \"2\": this node has GPU indexes 0 to 1".into()
            )
        );
    }

    #[test]
    fn stale_snapshot_is_unavailable() {
        let (snap, now) = snapshot(vec![healthy(0, 30.0)], Duration::from_secs(4));
        let err = evaluate(&trigger(&[]), &snap, now, LIMIT).unwrap_err();
        assert!(
            err.message().starts_with("GPU readings are stale"),
            "{err:?}"
        );
    }

    #[test]
    fn unsupported_metric_everywhere_is_unavailable() {
        let (snap, now) = snapshot(vec![healthy(0, 30.0)], FRESH);
        let pairs = [("metricType", "power_draw"), ("targetValue", "300")];
        let err = evaluate(&trigger(&pairs), &snap, now, LIMIT).unwrap_err();
        assert_eq!(
            err,
            EvalError::Unavailable(
                "no healthy GPU reports power_draw: GPU 0 (GPU-0) does not report power_draw"
                    .into()
            )
        );
    }

    #[test]
    fn unavailable_node_passes_its_reason_through() {
        let now = Instant::now();
        let state = NodeState::Unavailable {
            reason: "NVML is not available: driver not loaded".into(),
        };
        let snap = Snapshot::aged(state, Duration::from_secs(60), now);
        let err = evaluate(&trigger(&[]), &snap, now, LIMIT).unwrap_err();
        assert_eq!(
            err,
            EvalError::Unavailable("NVML is not available: driver not loaded".into())
        );
    }

    #[test]
    fn node_without_gpus_is_unavailable() {
        let (snap, now) = snapshot(vec![], FRESH);
        assert!(matches!(
            evaluate(&trigger(&[]), &snap, now, LIMIT),
            Err(EvalError::Unavailable(_))
        ));
    }

    #[test]
    fn workload_counts_only_its_gpus_across_nodes() {
        let a = [
            held_by(healthy(0, 60.0), "ml", "vllm-7d9f8b6c5d-x2k4p"),
            held_by(healthy(1, 100.0), "ml", "other-0"),
        ];
        let b = [
            held_by(healthy(0, 80.0), "ml", "vllm-7d9f8b6c5d-q8w2e"),
            healthy(1, 99.0),
        ];
        let outcome = evaluate_nodes(
            &trigger(&[("workload", "vllm"), ("aggregation", "avg")]),
            &[node("a", &a), node("b", &b)],
            Detail::Explained,
        );
        assert_eq!(outcome.value, Ok(70.0));
        let counted: Vec<(&str, u32)> = outcome
            .explained
            .iter()
            .filter(|e| e.counted)
            .map(|e| (e.node.as_str(), e.index))
            .collect();
        assert_eq!(counted, [("a", 0), ("b", 0)]);
        let other = outcome
            .explained
            .iter()
            .find(|e| e.node == "a" && e.index == 1)
            .unwrap();
        assert_eq!(other.reason, "held by other pods, not workload ml/vllm");
        assert_eq!(other.pods, ["ml/other-0"]);
    }

    #[test]
    fn a_gpu_shared_by_two_matching_pods_counts_once() {
        let shared = held_by(held_by(healthy(0, 50.0), "ml", "vllm-0"), "ml", "vllm-1");
        let gpus = [shared];
        let outcome = evaluate_nodes(
            &trigger(&[("workload", "vllm"), ("aggregation", "sum")]),
            &[node("a", &gpus)],
            Detail::ValueOnly,
        );
        assert_eq!(outcome.value, Ok(50.0));
    }

    #[test]
    fn workload_with_no_pods_is_zero_while_attribution_works() {
        let gpus = [held_by(healthy(0, 90.0), "ml", "other-0")];
        let trigger = trigger(&[("workload", "vllm")]);
        let outcome = evaluate_nodes(&trigger, &[node("a", &gpus)], Detail::ValueOnly);
        assert_eq!(outcome.value, Ok(0.0));
        assert!(!trigger.is_active(0.0));
    }

    #[test]
    fn workload_without_attribution_is_unavailable() {
        let gpus = [healthy(0, 90.0)];
        let broken = NodeView {
            name: "b",
            gpus: &gpus,
            attribution: Err("socket missing"),
        };
        let outcome = evaluate_nodes(
            &trigger(&[("workload", "vllm")]),
            &[node("a", &gpus), broken],
            Detail::ValueOnly,
        );
        assert_eq!(
            outcome.value,
            Err(EvalError::Unavailable(
                "cannot tell which GPUs workload ml/vllm holds: pod attribution is unavailable on node b: socket missing".into()
            ))
        );
        // Node-wide triggers do not need attribution.
        assert_eq!(
            evaluate_nodes(
                &trigger(&[]),
                &[node("a", &gpus), broken],
                Detail::ValueOnly
            )
            .value,
            Ok(90.0)
        );
    }

    #[test]
    fn gpu_index_narrows_per_node_in_the_fleet() {
        let a = [healthy(0, 10.0), healthy(1, 20.0)];
        let b = [healthy(0, 30.0), healthy(1, 40.0)];
        let nodes = [node("a", &a), node("b", &b)];
        assert_eq!(
            evaluate_nodes(
                &trigger(&[("gpuIndex", "1"), ("aggregation", "sum")]),
                &nodes,
                Detail::ValueOnly
            )
            .value,
            Ok(60.0)
        );
        assert_eq!(
            evaluate_nodes(&trigger(&[("gpuIndex", "5")]), &nodes, Detail::ValueOnly).value,
            Err(EvalError::InvalidArgument(
                "invalid gpuIndex \"5\": no node has a GPU with that index".into()
            ))
        );
    }

    #[test]
    fn a_matching_pod_whose_gpu_cannot_be_placed_is_unavailable_not_zero() {
        let gpus = [held_by(healthy(0, 90.0), "ml", "other-0")];
        let unplaced = [Unplaced {
            allocation: Allocation {
                namespace: "ml".into(),
                pod: "vllm-0".into(),
                container: "main".into(),
                device_id: "GPU-gone".into(),
            },
            reason:
                "device id \"GPU-gone\" of nvidia.com/gpu matches no GPU the GPU library reports on this node"
                    .into(),
        }];
        let node = NodeView {
            name: "a",
            gpus: &gpus,
            attribution: Ok(&unplaced),
        };
        let outcome = evaluate_nodes(
            &trigger(&[("workload", "vllm")]),
            &[node],
            Detail::ValueOnly,
        );
        assert_eq!(
            outcome.value,
            Err(EvalError::Unavailable(
                "cannot read the GPU of pod ml/vllm-0 (workload ml/vllm) on node a: device id \"GPU-gone\" of nvidia.com/gpu matches no GPU the GPU library reports on this node".into()
            ))
        );
        // Another workload's trigger is unaffected.
        let other = evaluate_nodes(
            &trigger(&[("workload", "other")]),
            &[node],
            Detail::ValueOnly,
        );
        assert_eq!(other.value, Ok(90.0));
    }

    #[test]
    fn a_selected_gpu_whose_reading_failed_makes_the_value_unavailable() {
        let mut gpu = healthy(0, 30.0);
        gpu.read_errors.push(ReadError::new(
            Metric::GpuUtilization,
            Cause::said("Timeout"),
        ));
        if let GpuHealth::Healthy { readings, .. } = &mut gpu.health {
            *readings = Readings::default();
        }
        let gpus = [gpu, healthy(1, 50.0)];
        for aggregation in ["sum", "avg", "max", "min"] {
            let outcome = evaluate_nodes(
                &trigger(&[("aggregation", aggregation)]),
                &[node("", &gpus)],
                Detail::Explained,
            );
            assert_eq!(
                outcome.value,
                Err(EvalError::Unavailable(
                    "cannot read gpu_utilization of every selected GPU (left out, the value would read low): GPU 0 (GPU-0): reading gpu_utilization failed: Timeout".into()
                )),
                "{aggregation}"
            );
            assert_eq!(
                outcome.explained[0].reason,
                "reading gpu_utilization failed: Timeout"
            );
        }
        // A trigger that does not select the failing GPU is unaffected.
        assert_eq!(
            evaluate_nodes(
                &trigger(&[("gpuIndex", "1")]),
                &[node("", &gpus)],
                Detail::ValueOnly
            )
            .value,
            Ok(50.0)
        );
    }

    #[test]
    fn a_failing_gpu_is_unavailable_but_a_lost_or_unsupported_one_is_left_out() {
        let failing = GpuSample {
            health: GpuHealth::Failed {
                error: "Unknown Error".into(),
            },
            ..healthy(0, 0.0)
        };
        let gpus = [failing, healthy(1, 50.0)];
        assert_eq!(
            evaluate_nodes(&trigger(&[]), &[node("", &gpus)], Detail::ValueOnly).value,
            Err(EvalError::Unavailable(
                "cannot read gpu_utilization of every selected GPU (left out, the value would read low): GPU 0 (GPU-0) is failing: Unknown Error".into()
            ))
        );
        // Lost: excluded, as documented.
        let gpus = [lost(0), healthy(1, 50.0)];
        assert_eq!(
            evaluate_nodes(&trigger(&[]), &[node("", &gpus)], Detail::ValueOnly).value,
            Ok(50.0)
        );
        // Unsupported (no reading, no failure): excluded.
        let mut unsupported = healthy(0, 0.0);
        if let GpuHealth::Healthy { readings, .. } = &mut unsupported.health {
            *readings = Readings::default();
        }
        unsupported.unreported.push(ReadError::new(
            Metric::GpuUtilization,
            Cause::said("Not Supported"),
        ));
        let gpus = [unsupported, healthy(1, 50.0)];
        let outcome = evaluate_nodes(&trigger(&[]), &[node("", &gpus)], Detail::Explained);
        assert_eq!(outcome.value, Ok(50.0));
        assert_eq!(
            outcome.explained[0].reason,
            "does not report gpu_utilization (Not Supported)"
        );
    }

    #[test]
    fn a_failed_reading_is_named_and_the_gpu_counts_for_what_it_read() {
        let mut gpu = healthy(0, 30.0);
        gpu.read_errors.push(ReadError::new(
            Metric::Temperature,
            Cause::said("Unknown Error"),
        ));
        let gpus = [gpu, healthy(1, 50.0)];
        let pairs = [("metricType", "temperature"), ("targetValue", "80")];
        let outcome = evaluate_nodes(&trigger(&pairs), &[node("", &gpus)], Detail::Explained);
        assert!(
            matches!(&outcome.value, Err(EvalError::Unavailable(m))
            if m.contains("GPU 0 (GPU-0): reading temperature failed: Unknown Error")),
            "{:?}",
            outcome.value
        );
        // The same GPU still counts for what it did read.
        assert_eq!(
            evaluate_nodes(
                &trigger(&[("aggregation", "min")]),
                &[node("", &gpus)],
                Detail::ValueOnly
            )
            .value,
            Ok(30.0)
        );
    }
}
