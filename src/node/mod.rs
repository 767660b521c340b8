//! This node's pipeline, from devices to the published snapshot: the
//! sampler thread (the only caller of NVML while serving), one read of the
//! GPUs, the rates kept between reads (GPM, PCIe, NVLink), the kubelet's
//! PodResources client, attribution of GPUs to pods, the GPU metric kinds,
//! and the snapshot cell requests read.

pub mod amd;
pub mod attribution;
pub mod backend;
pub mod gpu_metric;
pub mod kubelet;
pub mod nvidia;
pub mod rates;
pub mod sampler;
pub mod snapshot;
