//! Which pods hold which GPUs: the kubelet's device ids matched to the
//! GPUs NVML reports. Pure functions, tested with literal inputs.

use crate::podresources::PodDevice;
use crate::snapshot::{Allocation, GpuSample};

/// Resource names whose device ids are NVIDIA GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuResources {
    /// Beyond `nvidia.com/gpu` and `nvidia.com/mig-*` (e.g. a renamed
    /// time-sliced resource such as `nvidia.com/gpu.shared`).
    pub extra: Vec<String>,
}

impl GpuResources {
    pub fn is_gpu(&self, resource: &str) -> bool {
        resource == "nvidia.com/gpu"
            || resource.starts_with("nvidia.com/mig-")
            || self.extra.iter().any(|r| r == resource)
    }
}

/// A device id, as far as its format tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRef<'a> {
    /// `GPU-<uuid>`: a whole GPU, by NVML UUID.
    Gpu(&'a str),
    /// `MIG-<uuid>`: a MIG device, by its own UUID.
    Mig(&'a str),
    /// `MIG-GPU-<uuid>/<gi>/<ci>` (older drivers): a MIG device on that GPU.
    MigOnGpu(&'a str),
    Unknown,
}

/// Parses a kubelet device id, dropping a time-slicing suffix `::N`.
pub fn parse_device_id(id: &str) -> DeviceRef<'_> {
    let id = match id.rsplit_once("::") {
        Some((base, replica))
            if !replica.is_empty() && replica.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => id,
    };
    if let Some(rest) = id.strip_prefix("MIG-") {
        if rest.starts_with("GPU-") {
            return match rest.split_once('/') {
                Some((gpu, _)) => DeviceRef::MigOnGpu(gpu),
                None => DeviceRef::Unknown,
            };
        }
        return if rest.is_empty() {
            DeviceRef::Unknown
        } else {
            DeviceRef::Mig(id)
        };
    }
    match id.strip_prefix("GPU-") {
        Some(rest) if !rest.is_empty() => DeviceRef::Gpu(id),
        _ => DeviceRef::Unknown,
    }
}

/// Records each GPU device held by a container on the GPU it belongs to.
/// Returns a line for each id that could not be placed (unknown format, or
/// not a GPU on this node), for the caller to log once.
pub fn attribute(
    gpus: &mut [GpuSample],
    devices: &[PodDevice],
    resources: &GpuResources,
) -> Vec<String> {
    for gpu in gpus.iter_mut() {
        gpu.allocations.clear();
    }
    let mut problems = Vec::new();
    for device in devices.iter().filter(|d| resources.is_gpu(&d.resource)) {
        let target = match parse_device_id(&device.device_id) {
            DeviceRef::Gpu(uuid) | DeviceRef::MigOnGpu(uuid) => {
                gpus.iter().position(|g| g.uuid.as_deref() == Some(uuid))
            }
            DeviceRef::Mig(uuid) => gpus
                .iter()
                .position(|g| g.mig_devices.iter().any(|m| m == uuid)),
            DeviceRef::Unknown => {
                problems.push(format!(
                    "skipping device id {:?} of {} (pod {}/{}): unknown format",
                    device.device_id, device.resource, device.namespace, device.pod
                ));
                continue;
            }
        };
        let Some(index) = target else {
            problems.push(format!(
                "skipping device id {:?} of {} (pod {}/{}): no such GPU on this node",
                device.device_id, device.resource, device.namespace, device.pod
            ));
            continue;
        };
        let allocation = Allocation {
            namespace: device.namespace.clone(),
            pod: device.pod.clone(),
            container: device.container.clone(),
            device_id: device.device_id.clone(),
        };
        let allocations = &mut gpus[index].allocations;
        if !allocations.contains(&allocation) {
            allocations.push(allocation);
        }
    }
    for gpu in gpus.iter_mut() {
        gpu.allocations.sort();
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::GpuHealth;

    fn gpu(index: u32, uuid: &str, mig: &[&str]) -> GpuSample {
        GpuSample {
            index,
            uuid: Some(uuid.into()),
            name: None,
            health: GpuHealth::Failed {
                error: String::new(),
            },
            mig_devices: mig.iter().map(|m| m.to_string()).collect(),
            allocations: vec![],
        }
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
            DeviceRef::MigOnGpu("GPU-8c1e")
        );
        assert_eq!(parse_device_id("0000:3b:00.0"), DeviceRef::Unknown);
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
        let pods = |i: usize| {
            gpus[i]
                .allocations
                .iter()
                .map(|a| a.pod.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(pods(0), ["vllm-1", "vllm-2"]);
        assert_eq!(pods(1), ["old-1", "small-1"]);
    }

    #[test]
    fn unknown_and_foreign_ids_are_reported_and_skipped() {
        let mut gpus = vec![gpu(0, "GPU-a", &[])];
        let devices = vec![
            device("x", "nvidia.com/gpu", "0000:3b:00.0"),
            device("y", "nvidia.com/gpu", "GPU-elsewhere"),
        ];
        let problems = attribute(&mut gpus, &devices, &GpuResources::default());
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("unknown format"), "{problems:?}");
        assert!(
            problems[1].contains("no such GPU on this node"),
            "{problems:?}"
        );
        assert!(gpus[0].allocations.is_empty());
    }
}
