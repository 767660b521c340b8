//! Applies a trigger to a snapshot: selects GPUs, aggregates, and turns
//! every fault into an error. No path here turns a fault into 0.

use std::time::{Duration, Instant};

use crate::snapshot::{GpuHealth, NodeState, Snapshot};
use crate::trigger::{GpuSelector, Trigger};

/// Why a trigger has no value; maps to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvalError {
    /// The request asks for something this node does not have.
    InvalidArgument(String),
    /// The data is missing, stale or faulty right now.
    Unavailable(String),
}

impl EvalError {
    pub fn message(&self) -> &str {
        match self {
            EvalError::InvalidArgument(m) | EvalError::Unavailable(m) => m,
        }
    }
}

/// The trigger's value over the snapshot. `stale_after` is the oldest a
/// snapshot may be (three sample intervals).
pub fn evaluate(
    trigger: &Trigger,
    snapshot: &Snapshot,
    now: Instant,
    stale_after: Duration,
) -> Result<f64, EvalError> {
    let gpus = match &snapshot.state {
        NodeState::Unavailable { reason } => return Err(EvalError::Unavailable(reason.clone())),
        NodeState::Ready { gpus, .. } => gpus,
    };
    let age = snapshot.age(now);
    if age > stale_after {
        return Err(EvalError::Unavailable(format!(
            "GPU readings are stale: the last NVML sample started {:.1}s ago (limit {:.1}s); an NVML call may be hanging on a failing GPU",
            age.as_secs_f64(),
            stale_after.as_secs_f64()
        )));
    }
    if gpus.is_empty() {
        return Err(EvalError::Unavailable(
            "NVML reports no GPUs on this node".to_string(),
        ));
    }
    let selected: Vec<_> = match trigger.gpus {
        GpuSelector::All => gpus.iter().collect(),
        GpuSelector::Index(index) => {
            let gpu = gpus.iter().find(|g| g.index == index).ok_or_else(|| {
                EvalError::InvalidArgument(format!(
                    "invalid gpuIndex \"{index}\": this node has GPU indexes 0 to {}",
                    gpus.len() - 1
                ))
            })?;
            vec![gpu]
        }
    };

    let mut values = Vec::with_capacity(selected.len());
    let mut excluded = Vec::new();
    for gpu in &selected {
        match &gpu.health {
            GpuHealth::Healthy {
                readings,
                mig_enabled,
            } => match readings.get(trigger.metric) {
                Some(value) => values.push(value),
                None => excluded.push(format!(
                    "{} does not report {}{}",
                    gpu.label(),
                    trigger.metric,
                    if *mig_enabled == Some(true) {
                        " (MIG is enabled)"
                    } else {
                        ""
                    }
                )),
            },
            GpuHealth::Lost { error } => excluded.push(format!("{} is lost: {error}", gpu.label())),
            GpuHealth::Failed { error } => {
                excluded.push(format!("{} is failing: {error}", gpu.label()))
            }
        }
    }
    let value = trigger.aggregation.apply(&values).ok_or_else(|| {
        EvalError::Unavailable(format!(
            "no healthy GPU reports {}: {}",
            trigger.metric,
            excluded.join("; ")
        ))
    })?;
    if !value.is_finite() || value < 0.0 {
        return Err(EvalError::Unavailable(format!(
            "{} aggregated to {value}, which is not a valid metric value",
            trigger.metric
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metric, Readings};
    use crate::snapshot::GpuSample;
    use std::collections::HashMap;

    fn healthy(index: u32, utilization: f64) -> GpuSample {
        let mut readings = Readings::default();
        readings.set(Metric::GpuUtilization, utilization);
        GpuSample {
            index,
            uuid: Some(format!("GPU-{index}")),
            name: Some("Test GPU".into()),
            health: GpuHealth::Healthy {
                readings,
                mig_enabled: Some(false),
            },
        }
    }

    fn snapshot(gpus: Vec<GpuSample>, age: Duration) -> (Snapshot, Instant) {
        let now = Instant::now();
        let snapshot = Snapshot {
            sequence: 1,
            taken_at: now - age,
            duration: Duration::ZERO,
            state: NodeState::Ready {
                driver_version: "550".into(),
                gpus,
            },
        };
        (snapshot, now)
    }

    fn trigger(pairs: &[(&str, &str)]) -> Trigger {
        let metadata: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::trigger::parse(&metadata).unwrap()
    }

    const FRESH: Duration = Duration::from_millis(10);
    const LIMIT: Duration = Duration::from_secs(3);

    #[test]
    fn aggregates_over_healthy_gpus_only() {
        let lost = GpuSample {
            health: GpuHealth::Lost {
                error: "GPU_IS_LOST".into(),
            },
            ..healthy(1, 0.0)
        };
        let (snap, now) = snapshot(vec![healthy(0, 30.0), lost, healthy(2, 50.0)], FRESH);
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
        let lost = GpuSample {
            health: GpuHealth::Lost {
                error: "GPU_IS_LOST".into(),
            },
            ..healthy(1, 0.0)
        };
        let (snap, now) = snapshot(vec![healthy(0, 30.0), lost], FRESH);
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
        let err = evaluate(
            &trigger(&[("metricType", "power_draw"), ("targetValue", "300")]),
            &snap,
            now,
            LIMIT,
        )
        .unwrap_err();
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
        let snap = Snapshot {
            sequence: 1,
            taken_at: now - Duration::from_secs(60),
            duration: Duration::ZERO,
            state: NodeState::Unavailable {
                reason: "NVML is not available: driver not loaded".into(),
            },
        };
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
}
