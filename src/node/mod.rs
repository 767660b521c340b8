//! This node's pipeline, from devices to the published snapshot: the
//! sampler thread (the only caller of NVML while serving), the session
//! seam each vendor implements and the choice between them, one read of
//! the GPUs, the rates kept between reads (GPM, PCIe, NVLink), why a
//! reading is absent, the kubelet's PodResources client, attribution of
//! GPUs to pods, the GPU metric kinds, and the snapshot cell requests read.

pub mod amd;
pub mod attribution;
pub mod backend;
pub mod gpu_metric;
pub mod kubelet;
pub mod nvidia;
pub mod rates;
pub mod read_error;
pub mod sampler;
pub mod session;
pub mod snapshot;
