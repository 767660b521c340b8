//! Which pods hold which GPUs: the kubelet's device ids matched to the
//! GPUs the GPU library reports (NVIDIA by UUID or index, AMD by PCI
//! address), and MIG device ids to the MIG device itself (a pod holding a
//! slice reads that slice, not its GPU). Pure functions, tested with
//! literal inputs.

use crate::node::kubelet::PodDevice;
use crate::node::snapshot::{Allocation, GpuHealth, GpuSample, MigSample, Unplaced};

/// Resource names whose device ids are GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuResources {
    /// Beyond `nvidia.com/gpu`, `nvidia.com/mig-*`, `amd.com/gpu` and AMD's
    /// partition-mode names (e.g. a renamed time-sliced resource such as
    /// `nvidia.com/gpu.shared`).
    pub extra: Vec<String>,
}

impl GpuResources {
    /// AMD's device plugin names its resource `amd.com/gpu`, or one per
    /// partition mode (`amd.com/cpx_nps4`) with its `mixed` strategy. Other
    /// `amd.com/` resources (the network operator's `amd.com/nic`) are not
    /// GPUs.
    pub fn is_gpu(&self, resource: &str) -> bool {
        resource == "nvidia.com/gpu"
            || resource.starts_with("nvidia.com/mig-")
            || resource == "amd.com/gpu"
            || is_amd_partition_resource(resource)
            || self.extra.iter().any(|r| r == resource)
    }
}

/// `amd.com/{spx,dpx,tpx,qpx,cpx}_nps<N>`: a partition mode's resource.
fn is_amd_partition_resource(resource: &str) -> bool {
    resource
        .strip_prefix("amd.com/")
        .and_then(|rest| rest.split_once("_nps"))
        .is_some_and(|(mode, memory)| {
            matches!(mode, "spx" | "dpx" | "tpx" | "qpx" | "cpx") && is_number(memory)
        })
}

/// A device id, as far as its format tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRef<'a> {
    /// `GPU-<uuid>`: a whole GPU, by NVML UUID.
    Gpu(&'a str),
    /// `MIG-<uuid>`: a MIG device, by its own UUID.
    Mig(&'a str),
    /// `MIG-GPU-<uuid>/<gi>/<ci>` (older drivers): the MIG device with that
    /// GPU-instance and compute-instance id on that GPU.
    MigOnGpu(&'a str, Option<u32>, Option<u32>),
    /// `3`: a whole GPU by NVML index (the device plugin's
    /// `deviceIDStrategy: index`).
    Index(u32),
    /// `3:1`: MIG device 1 of GPU 3, by index (`deviceIDStrategy: index`).
    MigIndex(u32, u32),
    /// `0000:19:00.0`: a whole GPU by PCI address (AMD's device plugin), as
    /// (domain, bus, device, function).
    Pci(PciAddress),
    /// `amdgpu_xcp_3`: an MI300 compute partition (AMD's device plugin),
    /// which this scaler does not read.
    AmdPartition,
    Unknown,
}

/// A PCI address, compared by value: `0000:19:00.0` and NVML's
/// `00000000:19:00.0` are the same device.
pub type PciAddress = (u64, u8, u8, u8);

/// Parses `DOMAIN:BUS:DEVICE.FUNCTION` in hex (any case, domain of 4 to 8
/// digits).
pub fn parse_pci_address(text: &str) -> Option<PciAddress> {
    let (domain, rest) = text.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (device, function) = rest.split_once('.')?;
    let hex = |t: &str, max: usize| {
        (!t.is_empty() && t.len() <= max && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u64::from_str_radix(t, 16).ok())
            .flatten()
    };
    let domain = hex(domain, 8).filter(|_| domain.len() >= 4)?;
    let bus = u8::try_from(hex(bus, 2)?).ok()?;
    let device = u8::try_from(hex(device, 2)?).ok().filter(|&d| d < 32)?;
    let function = u8::try_from(hex(function, 1)?).ok().filter(|&f| f < 8)?;
    Some((domain, bus, device, function))
}

/// Parses a kubelet device id, dropping a time-slicing suffix `::N`.
pub fn parse_device_id(id: &str) -> DeviceRef<'_> {
    let id = match id.rsplit_once("::") {
        Some((base, replica)) if is_number(replica) => base,
        _ => id,
    };
    if let Some(rest) = id.strip_prefix("MIG-") {
        if rest.starts_with("GPU-") {
            let mut parts = rest.split('/');
            let gpu = parts.next().unwrap_or("");
            let id = |part: Option<&str>| part.and_then(|p| p.parse::<u32>().ok());
            return match (parts.next(), parts.next()) {
                (Some(gi), ci) => DeviceRef::MigOnGpu(gpu, id(Some(gi)), id(ci)),
                (None, _) => DeviceRef::Unknown,
            };
        }
        return if rest.is_empty() {
            DeviceRef::Unknown
        } else {
            DeviceRef::Mig(id)
        };
    }
    if let Some(address) = parse_pci_address(id) {
        return DeviceRef::Pci(address);
    }
    if id.strip_prefix("amdgpu_xcp_").is_some_and(is_number) {
        return DeviceRef::AmdPartition;
    }
    if let Some(rest) = id.strip_prefix("GPU-") {
        return if rest.is_empty() {
            DeviceRef::Unknown
        } else {
            DeviceRef::Gpu(id)
        };
    }
    let index = |text: &str| is_number(text).then(|| text.parse::<u32>().ok()).flatten();
    match id.split_once(':') {
        None => index(id).map_or(DeviceRef::Unknown, DeviceRef::Index),
        Some((gpu, mig)) => match (index(gpu), index(mig)) {
            (Some(gpu), Some(mig)) => DeviceRef::MigIndex(gpu, mig),
            _ => DeviceRef::Unknown,
        },
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Where a device id lands: a whole GPU, or one of its MIG devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Gpu(usize),
    Mig(usize, usize),
}

/// The MIG device of GPU `gpu` that `matches`; `None` when none does.
/// Only a GPU that is not healthy (lost, failing), whose MIG devices could
/// not be read, stands in for them: its fault then counts for their pods,
/// and a whole GPU's readings are never taken for a slice's.
fn mig_target(
    gpus: &[GpuSample],
    gpu: usize,
    matches: impl Fn(&MigSample) -> bool,
) -> Option<Target> {
    let sample = &gpus[gpu];
    match sample.mig.iter().position(matches) {
        Some(mig) => Some(Target::Mig(gpu, mig)),
        None if sample.mig.is_empty() && !matches!(sample.health, GpuHealth::Healthy { .. }) => {
            Some(Target::Gpu(gpu))
        }
        None => None,
    }
}

/// Records each GPU device held by a container on the GPU, or the MIG
/// device, it belongs to. Returns each id that could not be placed
/// (unknown format, or no such GPU or MIG device on this node): the pods
/// holding them cannot be read, which the caller must treat as a fault for
/// triggers that select them.
pub fn attribute(
    gpus: &mut [GpuSample],
    devices: &[PodDevice],
    resources: &GpuResources,
) -> Vec<Unplaced> {
    for gpu in gpus.iter_mut() {
        gpu.allocations.clear();
        for mig in &mut gpu.mig {
            mig.allocations.clear();
        }
    }
    let mut unplaced = Vec::new();
    for device in devices.iter().filter(|d| resources.is_gpu(&d.resource)) {
        let allocation = Allocation {
            namespace: device.namespace.clone(),
            pod: device.pod.clone(),
            container: device.container.clone(),
            device_id: device.device_id.clone(),
        };
        let by_index = |index: u32| gpus.iter().position(|g| g.index == index);
        let by_uuid = |uuid: &str| gpus.iter().position(|g| g.uuid.as_deref() == Some(uuid));
        let target = match parse_device_id(&device.device_id) {
            DeviceRef::Gpu(uuid) => by_uuid(uuid).map(Target::Gpu),
            DeviceRef::MigOnGpu(uuid, gi, ci) => by_uuid(uuid).and_then(|gpu| {
                mig_target(gpus, gpu, |m| {
                    m.gpu_instance.is_some() && m.gpu_instance == gi && m.compute_instance == ci
                })
            }),
            DeviceRef::Mig(uuid) => gpus.iter().enumerate().find_map(|(gpu, g)| {
                g.mig
                    .iter()
                    .position(|m| m.uuid == uuid)
                    .map(|mig| Target::Mig(gpu, mig))
            }),
            DeviceRef::Index(index) => by_index(index).map(Target::Gpu),
            DeviceRef::MigIndex(index, slot) => {
                by_index(index).and_then(|gpu| mig_target(gpus, gpu, |m| m.slot == slot))
            }
            DeviceRef::Pci(address) => gpus
                .iter()
                .position(|g| g.pci_bus_id.as_deref().and_then(parse_pci_address) == Some(address))
                .map(Target::Gpu),
            DeviceRef::AmdPartition => {
                unplaced.push(Unplaced {
                    reason: format!(
                        "device id {:?} of {} is an AMD GPU compute partition, which this scaler does not read (partitioned AMD GPUs are out of scope)",
                        device.device_id, device.resource
                    ),
                    allocation,
                });
                continue;
            }
            DeviceRef::Unknown => {
                unplaced.push(Unplaced {
                    reason: format!(
                        "device id {:?} of {} is in a format this scaler does not know",
                        device.device_id, device.resource
                    ),
                    allocation,
                });
                continue;
            }
        };
        let Some(target) = target else {
            unplaced.push(Unplaced {
                reason: format!(
                    "device id {:?} of {} matches no GPU or MIG device the GPU library reports on this node",
                    device.device_id, device.resource
                ),
                allocation,
            });
            continue;
        };
        let allocations = match target {
            Target::Gpu(gpu) => &mut gpus[gpu].allocations,
            Target::Mig(gpu, mig) => &mut gpus[gpu].mig[mig].allocations,
        };
        if !allocations.contains(&allocation) {
            allocations.push(allocation);
        }
    }
    for gpu in gpus.iter_mut() {
        gpu.allocations.sort();
        for mig in &mut gpu.mig {
            mig.allocations.sort();
        }
    }
    unplaced.sort();
    unplaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::snapshot::GpuHealth;

    fn gpu(index: u32, uuid: &str, mig: &[&str]) -> GpuSample {
        GpuSample {
            index,
            uuid: Some(uuid.into()),
            name: None,
            pci_bus_id: None,
            health: GpuHealth::Failed {
                error: String::new(),
            },
            mig: mig
                .iter()
                .enumerate()
                .map(|(slot, uuid)| MigSample {
                    slot: slot as u32,
                    uuid: uuid.to_string(),
                    profile: Some("1g.10gb".into()),
                    gpu_instance: Some(7 + slot as u32),
                    compute_instance: Some(0),
                    readings: Default::default(),
                    read_errors: vec![],
                    unreported: vec![],
                    allocations: vec![],
                })
                .collect(),
            allocations: vec![],
            read_errors: vec![],
            unreported: vec![],
        }
    }

    fn pods_on(gpu: &GpuSample) -> Vec<&str> {
        gpu.allocations.iter().map(|a| a.pod.as_str()).collect()
    }

    fn pods_on_mig(gpu: &GpuSample, slot: usize) -> Vec<&str> {
        gpu.mig[slot]
            .allocations
            .iter()
            .map(|a| a.pod.as_str())
            .collect()
    }

    fn device(pod: &str, resource: &str, id: &str) -> PodDevice {
        PodDevice {
            namespace: "ml".into(),
            pod: pod.into(),
            container: "main".into(),
            resource: resource.into(),
            device_id: id.into(),
        }
    }

    #[test]
    fn device_id_formats() {
        assert_eq!(parse_device_id("GPU-8c1e"), DeviceRef::Gpu("GPU-8c1e"));
        assert_eq!(parse_device_id("GPU-8c1e::3"), DeviceRef::Gpu("GPU-8c1e"));
        assert_eq!(parse_device_id("MIG-51a2"), DeviceRef::Mig("MIG-51a2"));
        assert_eq!(parse_device_id("MIG-51a2::0"), DeviceRef::Mig("MIG-51a2"));
        assert_eq!(
            parse_device_id("MIG-GPU-8c1e/1/0"),
            DeviceRef::MigOnGpu("GPU-8c1e", Some(1), Some(0))
        );
        assert_eq!(
            parse_device_id("0000:3b:00.0"),
            DeviceRef::Pci((0, 0x3b, 0, 0))
        );
        assert_eq!(parse_device_id("3"), DeviceRef::Index(3));
        assert_eq!(parse_device_id("3::1"), DeviceRef::Index(3));
        assert_eq!(parse_device_id("3:1"), DeviceRef::MigIndex(3, 1));
        assert_eq!(parse_device_id("3:"), DeviceRef::Unknown);
        assert_eq!(parse_device_id("-1"), DeviceRef::Unknown);
        assert_eq!(parse_device_id("99999999999"), DeviceRef::Unknown);
        assert_eq!(parse_device_id("GPU-"), DeviceRef::Unknown);
        assert_eq!(
            parse_device_id("GPU-8c1e::x"),
            DeviceRef::Gpu("GPU-8c1e::x")
        );
    }

    #[test]
    fn resources_that_are_gpus() {
        let resources = GpuResources {
            extra: vec!["nvidia.com/gpu.shared".into()],
        };
        assert!(resources.is_gpu("nvidia.com/gpu"));
        assert!(resources.is_gpu("nvidia.com/mig-1g.10gb"));
        assert!(resources.is_gpu("nvidia.com/gpu.shared"));
        assert!(!resources.is_gpu("example.com/fpga"));
    }

    #[test]
    fn allocations_land_on_their_gpus() {
        let mut gpus = vec![gpu(0, "GPU-a", &[]), gpu(1, "GPU-b", &["MIG-m1", "MIG-m2"])];
        let devices = vec![
            device("vllm-1", "nvidia.com/gpu", "GPU-a::2"),
            device("vllm-2", "nvidia.com/gpu", "GPU-a::5"),
            device("small-1", "nvidia.com/mig-1g.10gb", "MIG-m2"),
            device("old-1", "nvidia.com/mig-1g.10gb", "MIG-GPU-b/7/0"),
            device("fpga-1", "example.com/fpga", "GPU-a"),
        ];
        let problems = attribute(&mut gpus, &devices, &GpuResources::default());
        assert!(problems.is_empty(), "{problems:?}");
        let pods = |i: usize| pods_on(&gpus[i]);
        assert_eq!(pods(0), ["vllm-1", "vllm-2"]);
        // MIG pods are on their MIG device (gi 7 ci 0 is slot 0), not the GPU.
        assert!(pods(1).is_empty());
        assert_eq!(pods_on_mig(&gpus[1], 0), ["old-1"]);
        assert_eq!(pods_on_mig(&gpus[1], 1), ["small-1"]);
    }

    #[test]
    fn a_gpu_stands_in_for_its_mig_devices_only_when_it_is_not_healthy() {
        let healthy = |mut gpu: GpuSample| {
            gpu.health = GpuHealth::Healthy {
                readings: Default::default(),
                mig_enabled: Some(true),
            };
            gpu
        };
        // In MIG mode, healthy, but its MIG devices could not be read: the
        // pod is unplaced rather than given the whole GPU's readings.
        let mut gpus = vec![healthy(gpu(0, "GPU-a", &[]))];
        let devices = vec![device("small", "nvidia.com/mig-1g.10gb", "MIG-GPU-a/1/0")];
        let unplaced = attribute(&mut gpus, &devices, &GpuResources::default());
        assert_eq!(unplaced.len(), 1);
        assert!(gpus[0].allocations.is_empty());
        // Lost: the pod is on the GPU, so its fault is the pod's.
        let mut gpus = vec![gpu(0, "GPU-a", &[])];
        let unplaced = attribute(&mut gpus, &devices, &GpuResources::default());
        assert!(unplaced.is_empty());
        assert_eq!(pods_on(&gpus[0]), ["small"]);
    }

    #[test]
    fn a_mig_id_matching_no_mig_device_is_unplaced() {
        let mut gpus = vec![gpu(0, "GPU-a", &["MIG-m1"])];
        let devices = vec![
            device("gone", "nvidia.com/mig-1g.10gb", "MIG-m9"),
            device("old", "nvidia.com/mig-1g.10gb", "MIG-GPU-a/3/0"),
            device("slot", "nvidia.com/mig-1g.10gb", "0:4"),
        ];
        let unplaced = attribute(&mut gpus, &devices, &GpuResources::default());
        let pods: Vec<&str> = unplaced.iter().map(|u| u.allocation.pod.as_str()).collect();
        assert_eq!(pods, ["gone", "old", "slot"]);
        assert!(unplaced[0].reason.contains("matches no GPU or MIG device"));
    }

    #[test]
    fn index_strategy_ids_map_to_nvml_indexes() {
        let mut gpus = vec![gpu(0, "GPU-a", &[]), gpu(1, "GPU-b", &["MIG-m1"])];
        let devices = vec![
            device("whole-1", "nvidia.com/gpu", "0"),
            device("sliced-1", "nvidia.com/gpu", "0::2"),
            device("mig-1", "nvidia.com/mig-1g.10gb", "1:0"),
        ];
        let unplaced = attribute(&mut gpus, &devices, &GpuResources::default());
        assert!(unplaced.is_empty(), "{unplaced:?}");
        let pods = |i: usize| pods_on(&gpus[i]);
        assert_eq!(pods(0), ["sliced-1", "whole-1"]);
        assert_eq!(pods_on_mig(&gpus[1], 0), ["mig-1"]);
    }

    #[test]
    fn unknown_and_foreign_ids_are_unplaced_with_their_pods() {
        let mut gpus = vec![gpu(0, "GPU-a", &[])];
        let devices = vec![
            device("x", "nvidia.com/gpu", "0000:3b:00.0"),
            device("y", "nvidia.com/gpu", "GPU-elsewhere"),
            device("z", "nvidia.com/gpu", "7"),
        ];
        let unplaced = attribute(&mut gpus, &devices, &GpuResources::default());
        let found: Vec<(&str, &str)> = unplaced
            .iter()
            .map(|u| (u.allocation.pod.as_str(), u.allocation.device_id.as_str()))
            .collect();
        assert_eq!(
            found,
            [("x", "0000:3b:00.0"), ("y", "GPU-elsewhere"), ("z", "7")]
        );
        // A PCI address no GPU here has (this GPU's library gave none).
        assert!(
            unplaced[0].reason.contains("matches no GPU"),
            "{unplaced:?}"
        );
        assert!(
            unplaced[1].reason.contains("matches no GPU"),
            "{unplaced:?}"
        );
        assert!(gpus[0].allocations.is_empty());
    }

    #[test]
    fn pci_addresses_parse_in_either_domain_width() {
        assert_eq!(parse_pci_address("0000:19:00.0"), Some((0, 0x19, 0, 0)));
        assert_eq!(parse_pci_address("00000000:19:00.0"), Some((0, 0x19, 0, 0)));
        assert_eq!(parse_pci_address("0001:C1:1F.7"), Some((1, 0xc1, 0x1f, 7)));
        for bad in [
            "19:00.0",
            "0000:19:00",
            "0000:19:20.0",
            "0000:19:00.8",
            "0000:1g:00.0",
            "00:19:00.0",
        ] {
            assert_eq!(parse_pci_address(bad), None, "{bad}");
        }
        assert_eq!(parse_device_id("amdgpu_xcp_3"), DeviceRef::AmdPartition);
        assert_eq!(parse_device_id("amdgpu_xcp_"), DeviceRef::Unknown);
    }

    #[test]
    fn amd_gpus_are_placed_by_pci_address_and_partitions_are_unplaced() {
        let mut gpus = vec![gpu(0, "amd-a", &[]), gpu(1, "amd-b", &[])];
        gpus[0].pci_bus_id = Some("0000:19:00.0".into());
        gpus[1].pci_bus_id = Some("0000:3b:00.0".into());
        let resources = GpuResources::default();
        assert!(resources.is_gpu("amd.com/gpu") && resources.is_gpu("amd.com/cpx_nps4"));
        assert!(resources.is_gpu("amd.com/spx_nps1"));
        for not_a_gpu in [
            "amd.com/nic",
            "amd.com/vnic",
            "amd.com/xpx_nps1",
            "amd.com/cpx_npsx",
        ] {
            assert!(!resources.is_gpu(not_a_gpu), "{not_a_gpu}");
        }
        let devices = vec![
            device("llm-0", "amd.com/gpu", "0000:3B:00.0"),
            device("llm-1", "amd.com/gpu", "0000:19:00.0"),
            device("part-0", "amd.com/cpx_nps4", "amdgpu_xcp_5"),
            device("gone-0", "amd.com/gpu", "0000:c1:00.0"),
        ];
        let unplaced = attribute(&mut gpus, &devices, &resources);
        assert_eq!(pods_on(&gpus[0]), ["llm-1"]);
        assert_eq!(pods_on(&gpus[1]), ["llm-0"]);
        let reasons: Vec<(&str, &str)> = unplaced
            .iter()
            .map(|u| (u.allocation.pod.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].0 == "gone-0" && reasons[0].1.contains("matches no GPU"));
        assert!(reasons[1].0 == "part-0" && reasons[1].1.contains("compute partition"));
    }
}
