//! One node's report: the type the cluster view holds for this node and
//! for every peer alike, built from the local snapshot or from a peer's
//! `Node.Snapshot` answer (validated: a peer's lie is an error), and what
//! it says about a selector's pods. Pure: no I/O, no clock but `now` passed in.

use std::time::{Duration, Instant};

use crate::node::gpu_metric::{Metric, Readings};
use crate::node::read_error::{Cause, ReadError, Reading as ReadingName};
use crate::node::snapshot::{
    stale_reason, Allocation, Attribution, GpuHealth, GpuSample, MigSample, NodeState, Snapshot,
    Unplaced,
};
use crate::proto::node::{
    Allocation as AllocationProto, Gpu, MigDevice, MigMode, NodeSnapshot,
    ReadError as ReadErrorProto, Reading,
};
use crate::scaling::evaluate::NodeView;
use crate::scaling::trigger::Selector;
use crate::untrusted::plain;

/// Read errors (and unreported reasons) kept per GPU from a peer; its whole
/// answer is capped too, at 256 KiB.
const MAX_READ_ERRORS: usize = 64;
/// MIG devices kept per GPU from a peer (a GPU has at most 7 today).
const MAX_MIG_DEVICES: usize = 16;

/// A node's snapshot as the cluster view holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeReport {
    pub name: String,
    /// `Err` when the node's readings cannot be used (NVML down, stale).
    pub usable: Result<(), String>,
    pub attribution: Attribution,
    pub gpus: Vec<GpuSample>,
}

/// What a node's report says about a selector's pods there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holds {
    /// These pods (`namespace/name`) held GPUs there.
    Pods(Vec<String>),
    /// Attribution worked there and no matching pod held a GPU.
    Nothing,
    /// The report cannot say (attribution or NVML was down): why.
    Unknown(String),
}

impl NodeReport {
    /// For evaluation: an unusable node has no GPUs and no attribution.
    pub fn view(&self) -> NodeView<'_> {
        match &self.usable {
            Ok(()) => NodeView {
                name: &self.name,
                gpus: &self.gpus,
                attribution: self.attribution.unplaced(),
            },
            Err(reason) => NodeView {
                name: &self.name,
                gpus: &[],
                attribution: Err(reason),
            },
        }
    }

    /// Which of `selector`'s pods this report shows holding GPUs here.
    pub fn holds(&self, selector: &Selector) -> Holds {
        let unplaced = match (&self.usable, self.attribution.unplaced()) {
            (Err(reason), _) => return Holds::Unknown(reason.clone()),
            (Ok(()), Err(reason)) => return Holds::Unknown(reason.to_string()),
            (Ok(()), Ok(unplaced)) => unplaced.iter().map(|u| &u.allocation),
        };
        let placed = self.gpus.iter().flat_map(|g| {
            g.allocations
                .iter()
                .chain(g.mig.iter().flat_map(|m| &m.allocations))
        });
        let mut pods: Vec<String> = placed
            .chain(unplaced)
            .filter(|a| selector.matches(&a.namespace, &a.pod))
            .map(|a| format!("{}/{}", a.namespace, a.pod))
            .collect();
        pods.sort();
        pods.dedup();
        if pods.is_empty() {
            Holds::Nothing
        } else {
            Holds::Pods(pods)
        }
    }

    /// A report read from a peer's answer. A reading that is not a finite,
    /// non-negative number makes the whole answer invalid: a peer that lies
    /// about one GPU cannot be trusted about the others.
    pub fn from_proto(message: &NodeSnapshot, stale_after: Duration) -> Result<Self, String> {
        let age_seconds = message.age_seconds();
        if !age_seconds.is_finite() || age_seconds < 0.0 {
            return Err(format!("it sent an invalid snapshot age {age_seconds}"));
        }
        let age = Duration::try_from_secs_f64(age_seconds).unwrap_or(Duration::MAX);
        let usable = match (message.nvml_error(), stale_reason(age, stale_after)) {
            ("", None) => Ok(()),
            ("", Some(stale)) => Err(stale),
            (error, _) => Err(plain(error)),
        };
        // On the wire: an error string, or the unplaced ids beside it.
        let attribution = match message.attribution_error() {
            "" => Attribution::Known {
                unplaced: message
                    .unplaced()
                    .iter()
                    .map(|a| Unplaced {
                        allocation: allocation_from_proto(a),
                        reason: plain(a.reason()),
                    })
                    .collect(),
            },
            error => Attribution::Unavailable(plain(error)),
        };
        Ok(Self {
            name: message.node_name().to_string(),
            usable,
            attribution,
            gpus: message
                .gpus()
                .iter()
                .map(gpu_from_proto)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The local node's report, from its own snapshot.
    pub fn from_local(
        name: &str,
        snapshot: &Snapshot,
        now: Instant,
        stale_after: Duration,
    ) -> Self {
        match &snapshot.state {
            NodeState::Ready {
                gpus, attribution, ..
            } => Self {
                name: name.to_string(),
                usable: stale_reason(snapshot.age(now), stale_after).map_or(Ok(()), Err),
                attribution: attribution.clone(),
                gpus: gpus.clone(),
            },
            NodeState::Unavailable { reason } => Self {
                name: name.to_string(),
                usable: Err(reason.clone()),
                attribution: Attribution::complete(),
                gpus: Vec::new(),
            },
        }
    }
}

/// This node's snapshot as it is sent to peers.
pub fn to_proto(name: &str, snapshot: &Snapshot, now: Instant) -> NodeSnapshot {
    let mut message = NodeSnapshot::new();
    message.set_node_name(name.to_string());
    message.set_age_seconds(snapshot.age(now).as_secs_f64());
    match &snapshot.state {
        NodeState::Unavailable { reason } => message.set_nvml_error(reason.clone()),
        NodeState::Ready {
            gpus, attribution, ..
        } => {
            match attribution {
                Attribution::Unavailable(reason) => message.set_attribution_error(reason.clone()),
                Attribution::Known { unplaced } => {
                    for id in unplaced {
                        let mut a = allocation_to_proto(&id.allocation);
                        a.set_reason(id.reason.clone());
                        message.mut_unplaced().push(a);
                    }
                }
            }
            message.set_gpus(gpus.iter().map(gpu_to_proto).collect());
        }
    }
    message
}

fn gpu_to_proto(gpu: &GpuSample) -> Gpu {
    let mut message = Gpu::new();
    message.set_index(gpu.index);
    message.set_uuid(gpu.uuid.clone().unwrap_or_default());
    message.set_name(gpu.name.clone().unwrap_or_default());
    match &gpu.health {
        GpuHealth::Healthy {
            readings,
            mig_enabled,
        } => {
            message.set_readings(readings_to_proto(readings));
            message.set_mig_mode(match mig_enabled {
                None => MigMode::MIG_MODE_UNKNOWN,
                Some(false) => MigMode::MIG_MODE_DISABLED,
                Some(true) => MigMode::MIG_MODE_ENABLED,
            });
        }
        GpuHealth::Lost { error } => {
            message.set_error(error.clone());
            message.set_lost(true);
        }
        GpuHealth::Failed { error } => message.set_error(error.clone()),
    }
    for allocation in &gpu.allocations {
        message
            .mut_allocations()
            .push(allocation_to_proto(allocation));
    }
    message.set_read_errors(read_errors_to_proto(&gpu.read_errors));
    message.set_unreported(read_errors_to_proto(&gpu.unreported));
    message.set_mig_devices(gpu.mig.iter().map(|m| m.uuid.clone()).collect());
    message.set_mig(gpu.mig.iter().map(mig_to_proto).collect());
    message
}

fn readings_to_proto(readings: &Readings) -> Vec<Reading> {
    Metric::ALL
        .iter()
        .filter_map(|metric| {
            let value = readings.get(*metric)?;
            let mut reading = Reading::new();
            reading.set_metric(metric.name().to_string());
            reading.set_value(value);
            Some(reading)
        })
        .collect()
}

fn read_errors_to_proto(errors: &[ReadError]) -> Vec<ReadErrorProto> {
    errors
        .iter()
        .map(|error| {
            let mut e = ReadErrorProto::new();
            e.set_what(error.what.to_string());
            e.set_error(error.cause.to_string());
            e
        })
        .collect()
}

fn mig_to_proto(mig: &MigSample) -> MigDevice {
    let mut message = MigDevice::new();
    message.set_slot(mig.slot);
    message.set_uuid(mig.uuid.clone());
    message.set_profile(mig.profile.clone().unwrap_or_default());
    if let Some(gi) = mig.gpu_instance {
        message.set_has_gpu_instance(true);
        message.set_gpu_instance(gi);
    }
    if let Some(ci) = mig.compute_instance {
        message.set_has_compute_instance(true);
        message.set_compute_instance(ci);
    }
    message.set_readings(readings_to_proto(&mig.readings));
    message.set_read_errors(read_errors_to_proto(&mig.read_errors));
    message.set_unreported(read_errors_to_proto(&mig.unreported));
    message.set_allocations(mig.allocations.iter().map(allocation_to_proto).collect());
    message
}

/// Readings from a peer: each must be a finite number >= 0.
fn readings_from_proto(readings: &[Reading], what: &str) -> Result<Readings, String> {
    let mut out = Readings::default();
    for reading in readings {
        let value = reading.value();
        if !value.is_finite() || value < 0.0 {
            return Err(format!(
                "it sent an invalid {} reading {value} for {what}",
                reading.metric()
            ));
        }
        if let Some(metric) = Metric::from_name(reading.metric()) {
            out.set(metric, value);
        }
    }
    Ok(out)
}

fn mig_from_proto(message: &MigDevice, parent: u32) -> Result<MigSample, String> {
    Ok(MigSample {
        slot: message.slot(),
        uuid: message.uuid().to_string(),
        profile: (!message.profile().is_empty()).then(|| message.profile().to_string()),
        gpu_instance: message.has_gpu_instance().then(|| message.gpu_instance()),
        compute_instance: message
            .has_compute_instance()
            .then(|| message.compute_instance()),
        readings: readings_from_proto(
            message.readings(),
            &format!("MIG device {} of GPU {parent}", message.uuid()),
        )?,
        read_errors: read_errors_from_proto(message.read_errors()),
        unreported: read_errors_from_proto(message.unreported()),
        allocations: message
            .allocations()
            .iter()
            .take(MAX_MIG_DEVICES * 8)
            .map(allocation_from_proto)
            .collect(),
    })
}

fn allocation_to_proto(allocation: &Allocation) -> AllocationProto {
    let mut a = AllocationProto::new();
    a.set_namespace(allocation.namespace.clone());
    a.set_pod(allocation.pod.clone());
    a.set_container(allocation.container.clone());
    a.set_device_id(allocation.device_id.clone());
    a
}

fn allocation_from_proto(a: &AllocationProto) -> Allocation {
    Allocation {
        namespace: a.namespace().to_string(),
        pod: a.pod().to_string(),
        container: a.container().to_string(),
        device_id: a.device_id().to_string(),
    }
}

fn gpu_from_proto(message: &Gpu) -> Result<GpuSample, String> {
    let health = match (message.error(), message.lost()) {
        ("", _) => {
            let readings =
                readings_from_proto(message.readings(), &format!("GPU {}", message.index()))?;
            GpuHealth::Healthy {
                readings,
                mig_enabled: match message.mig_mode() {
                    MigMode::MIG_MODE_UNKNOWN => None,
                    MigMode::MIG_MODE_DISABLED => Some(false),
                    MigMode::MIG_MODE_ENABLED => Some(true),
                },
            }
        }
        (error, true) => GpuHealth::Lost {
            error: plain(error),
        },
        (error, false) => GpuHealth::Failed {
            error: plain(error),
        },
    };
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(GpuSample {
        index: message.index(),
        uuid: text(message.uuid()),
        name: text(message.name()),
        pci_bus_id: None,
        health,
        mig: match message.mig() {
            // An older peer: the MIG devices' UUIDs only.
            [] => message
                .mig_devices()
                .iter()
                .take(MAX_MIG_DEVICES)
                .enumerate()
                .map(|(slot, uuid)| MigSample {
                    slot: slot as u32,
                    uuid: uuid.clone(),
                    profile: None,
                    gpu_instance: None,
                    compute_instance: None,
                    readings: Readings::default(),
                    read_errors: Vec::new(),
                    unreported: Vec::new(),
                    allocations: Vec::new(),
                })
                .collect(),
            migs => migs
                .iter()
                .take(MAX_MIG_DEVICES)
                .map(|m| mig_from_proto(m, message.index()))
                .collect::<Result<_, _>>()?,
        },
        allocations: message
            .allocations()
            .iter()
            .map(allocation_from_proto)
            .collect(),
        read_errors: read_errors_from_proto(message.read_errors()),
        unreported: read_errors_from_proto(message.unreported()),
    })
}

/// A peer's read errors: what failed, by name (one this build does not
/// know is left out: nothing here could ask for it), and why, in the
/// peer's words.
fn read_errors_from_proto(errors: &[ReadErrorProto]) -> Vec<ReadError> {
    errors
        .iter()
        .take(MAX_READ_ERRORS)
        .filter_map(|e| {
            let what = ReadingName::parse(e.what())?;
            Some(ReadError::new(what, Cause::Reason(plain(e.error()).into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(gpus: Vec<GpuSample>, attribution: Attribution) -> (Snapshot, Instant) {
        let now = Instant::now();
        let state = NodeState::Ready {
            backend: "nvml",
            driver_version: "550".into(),
            gpus,
            attribution,
        };
        let snapshot = Snapshot::aged(state, Duration::from_millis(200), now);
        (snapshot, now)
    }

    #[test]
    fn gpus_round_trip_with_absent_metrics_and_allocations() {
        let mut readings = Readings::default();
        readings.set(Metric::GpuUtilization, 37.0);
        readings.set(Metric::PowerDraw, 71.5);
        let gpus = vec![
            GpuSample {
                index: 0,
                uuid: Some("GPU-a".into()),
                name: Some("H100".into()),
                pci_bus_id: None,
                health: GpuHealth::Healthy {
                    readings,
                    mig_enabled: Some(false),
                },
                mig: vec![MigSample {
                    slot: 2,
                    uuid: "MIG-s".into(),
                    profile: Some("3g.40gb".into()),
                    gpu_instance: Some(2),
                    compute_instance: None,
                    readings,
                    read_errors: vec![],
                    unreported: vec![ReadError::new(
                        Metric::GpuUtilization,
                        Cause::said("not on MIG"),
                    )],
                    allocations: vec![Allocation {
                        namespace: "ml".into(),
                        pod: "small-0".into(),
                        container: "main".into(),
                        device_id: "MIG-s".into(),
                    }],
                }],
                read_errors: vec![ReadError::new(
                    Metric::Temperature,
                    Cause::said("Unknown Error"),
                )],
                unreported: vec![ReadError::new(
                    Metric::SmActivity,
                    Cause::said("this GPU has no GPM"),
                )],
                allocations: vec![Allocation {
                    namespace: "ml".into(),
                    pod: "vllm-0".into(),
                    container: "main".into(),
                    device_id: "GPU-a::1".into(),
                }],
            },
            GpuSample {
                index: 1,
                uuid: Some("GPU-b".into()),
                name: None,
                pci_bus_id: None,
                health: GpuHealth::Lost {
                    error: "GPU_IS_LOST".into(),
                },
                mig: vec![],
                allocations: vec![],
                read_errors: vec![],
                unreported: vec![],
            },
        ];
        let (snap, now) = snapshot(gpus.clone(), Attribution::complete());
        let report = NodeReport::from_local("node-a", &snap, now, Duration::from_secs(3));
        assert_eq!(report.name, "node-a");
        assert_eq!(report.usable, Ok(()));
        assert_eq!(report.attribution, Attribution::complete());
        assert_eq!(report.gpus, gpus);
        // What a peer receives reads back to the same report.
        let sent = to_proto("node-a", &snap, now);
        assert_eq!(
            NodeReport::from_proto(&sent, Duration::from_secs(3)),
            Ok(report.clone())
        );
        // A pod on a MIG device is among the pods the node holds.
        let small = Selector {
            namespace: "ml".into(),
            pods: crate::scaling::trigger::PodMatch::Pattern("small-*".into()),
        };
        assert_eq!(report.holds(&small), Holds::Pods(vec!["ml/small-0".into()]));
    }

    #[test]
    fn a_peers_read_errors_arrive_as_its_words_for_the_readings_known_here() {
        let call = crate::nvml::NvmlError::MissingSymbol("nvmlDeviceGetMigMode");
        let sent = read_errors_to_proto(&[
            ReadError::new(ReadingName::MigDevice(3), Cause::Call(call.into())),
            ReadError::new(Metric::PowerDraw, Cause::said("Unknown Error")),
        ]);
        let mut unknown = ReadErrorProto::new();
        unknown.set_what("a_reading_of_a_newer_build".into());
        unknown.set_error("why".into());
        let received = read_errors_from_proto(&[sent[0].clone(), unknown, sent[1].clone()]);
        assert_eq!(
            received,
            [
                ReadError::new(
                    ReadingName::MigDevice(3),
                    Cause::said("nvmlDeviceGetMigMode is not exported by this NVML library")
                ),
                ReadError::new(Metric::PowerDraw, Cause::said("Unknown Error")),
            ]
        );
    }

    #[test]
    fn stale_or_unavailable_nodes_are_unusable() {
        let (snap, now) = snapshot(vec![], Attribution::Unavailable("no socket".into()));
        let report = NodeReport::from_local("a", &snap, now, Duration::from_millis(100));
        // A peer's answer of the same age is judged by the same rule.
        let peer =
            NodeReport::from_proto(&to_proto("a", &snap, now), Duration::from_millis(100)).unwrap();
        assert_eq!(peer.usable, report.usable);
        assert!(report
            .usable
            .as_ref()
            .unwrap_err()
            .starts_with("GPU readings are stale"));
        assert_eq!(
            report.view().attribution.unwrap_err(),
            report.usable.as_ref().unwrap_err()
        );
        let down = Snapshot {
            state: NodeState::Unavailable {
                reason: "NVML is not available".into(),
            },
            ..snap
        };
        let report = NodeReport::from_local("a", &down, now, Duration::from_secs(3));
        assert_eq!(report.usable, Err("NVML is not available".into()));
    }

    #[test]
    fn mig_mode_and_unplaced_ids_cross_the_wire() {
        let mut readings = Readings::default();
        readings.set(Metric::MemoryUsedPercent, 50.0);
        let gpus = [None, Some(false), Some(true)]
            .into_iter()
            .enumerate()
            .map(|(index, mig_enabled)| GpuSample {
                index: index as u32,
                uuid: Some(format!("GPU-{index}")),
                name: None,
                pci_bus_id: None,
                health: GpuHealth::Healthy {
                    readings,
                    mig_enabled,
                },
                mig: vec![],
                allocations: vec![],
                read_errors: vec![],
                unreported: vec![],
            })
            .collect();
        let (mut snap, now) = snapshot(gpus, Attribution::complete());
        let id = Unplaced {
            allocation: Allocation {
                namespace: "ml".into(),
                pod: "vllm-0".into(),
                container: "main".into(),
                device_id: "GPU-gone".into(),
            },
            reason: "matches no GPU".into(),
        };
        if let NodeState::Ready { attribution, .. } = &mut snap.state {
            *attribution = Attribution::Known {
                unplaced: vec![id.clone()],
            };
        }
        let peer =
            NodeReport::from_proto(&to_proto("a", &snap, now), Duration::from_secs(3)).unwrap();
        assert_eq!(
            peer,
            NodeReport::from_local("a", &snap, now, Duration::from_secs(3))
        );
        assert_eq!(peer.attribution.unplaced(), Ok(&[id][..]));
    }

    #[test]
    fn a_peer_reading_that_is_not_a_number_rejects_its_answer() {
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let mut readings = Readings::default();
            readings.set(Metric::GpuUtilization, bad);
            let gpu = GpuSample::healthy(2, readings);
            let (snap, now) = snapshot(vec![gpu], Attribution::complete());
            let error = NodeReport::from_proto(&to_proto("a", &snap, now), Duration::from_secs(3))
                .unwrap_err();
            assert!(
                error.contains("invalid gpu_utilization reading") && error.contains("GPU 2"),
                "{error}"
            );
        }
        let (snap, now) = snapshot(vec![], Attribution::complete());
        let mut message = to_proto("a", &snap, now);
        message.set_age_seconds(f64::NAN);
        let error = NodeReport::from_proto(&message, Duration::from_secs(3)).unwrap_err();
        assert_eq!(error, "it sent an invalid snapshot age NaN");
    }
}
