//! One sampling pass over 8 GPUs with 7 MIG devices each, GPM, PCIe and
//! NVLink, through the fake NVML (dlopened, as in production), against a
//! floor: the same NVML entry points called bare, results dropped. Passes
//! are 110 ms apart, as GPM needs, so every pass computes its rates.
//!
//! Run: `cargo bench --bench sampler`. The fake answers in microseconds;
//! a real driver's calls cost more, so this measures the scaler's own
//! work per pass, not NVML's.
//!
//! Last, the size of this node's report to a peer (`Node` protocol), built
//! from the final pass, with no pods and with one pod on every MIG device.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use keda_gpu_scaler::cluster::report::to_proto;
use keda_gpu_scaler::node::nvidia::read_node;
use keda_gpu_scaler::node::rates::Rates;
use keda_gpu_scaler::node::snapshot::{Allocation, Attribution, NodeState, Snapshot};
use keda_gpu_scaler::nvml::sys::{
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
    NVML_FI_DEV_PCIE_COUNT_RX_BYTES, NVML_FI_DEV_PCIE_COUNT_TX_BYTES, NVML_SCOPE_ALL_LINKS,
};
use keda_gpu_scaler::nvml::{GpmSample, Nvml};
use protobuf::Message;

const GPUS: u32 = 8;
const MIGS: u32 = 7;
const PASSES: usize = 30;
const SPACING: Duration = Duration::from_millis(110);

fn main() {
    let mut scenario = String::new();
    for gpu in 0..GPUS {
        scenario.push_str(&format!(
            "gpu {gpu} uuid=GPU-5e2c8a3b-0000-4000-8000-00000000000{gpu} name=\"NVIDIA H100 80GB HBM3\" mig=1 gpm=1 sm=50 occupancy=40 tensor=30 dram=20 mem_used_mib=40000 temp=50 power_mw=500000 pcie_tx_mbps=100 pcie_rx_mbps=200 nvlink_tx_mbps=3000 nvlink_rx_mbps=2000\n"
        ));
        for slot in 0..MIGS {
            scenario.push_str(&format!(
                "mig {gpu} {slot} uuid=MIG-7f1c2d3e-0000-5000-8000-0000000000{gpu}{slot} profile=1g.18gb gi={} ci=0 mem_total_mib=18000 mem_used_mib=9000 sm=40 occupancy=30 tensor=20 dram=10\n",
                slot + 1
            ));
        }
    }
    let fake = common::FakeNvml::new(&scenario);
    // SAFETY: the fake NVML built for tests; its initialisers are trivial.
    let nvml = unsafe { Nvml::open_path(&fake.library) }.expect("open the fake NVML");

    let mut rates = Rates::default();
    read_node(&nvml, &mut rates).expect("first pass");
    std::thread::sleep(SPACING);
    let mut scaler = Vec::new();
    let mut last = Vec::new();
    for _ in 0..PASSES {
        let started = Instant::now();
        let gpus = read_node(&nvml, &mut rates).expect("a pass");
        scaler.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(gpus.len(), GPUS as usize);
        assert!(gpus.iter().all(|g| g.mig.len() == MIGS as usize));
        last = gpus;
        std::thread::sleep(SPACING);
    }
    drop(rates);

    let mut previous: Vec<Option<GpmSample>> = (0..GPUS * (MIGS + 1)).map(|_| None).collect();
    let mut floor = Vec::new();
    for _ in 0..=PASSES {
        let started = Instant::now();
        bare_pass(&nvml, &mut previous);
        floor.push(started.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(SPACING);
    }
    floor.remove(0);
    drop(previous);

    // With 30 passes a p99 is the slowest pass: name it so.
    let (p50, slowest) = (percentile(&scaler, 0.5), percentile(&scaler, 1.0));
    let (f50, f_slowest) = (percentile(&floor, 0.5), percentile(&floor, 1.0));
    println!(
        "sampling pass over {GPUS} GPUs x {MIGS} MIG devices, GPM + PCIe + NVLink, fake NVML ({PASSES} passes)"
    );
    println!(
        "  scaler (read_node): p50 {p50:.3} ms, slowest {slowest:.3} ms, {:.1} µs per GPU",
        p50 * 1e3 / f64::from(GPUS)
    );
    println!("  floor (bare calls): p50 {f50:.3} ms, slowest {f_slowest:.3} ms");
    println!(
        "  ratio p50 {:.2}, slowest {:.2}; of a 1 s interval: p50 {:.3}%, slowest {:.3}%",
        p50 / f50,
        slowest / f_slowest,
        p50 / 10.0,
        slowest / 10.0
    );

    let bare = report_bytes(last.clone());
    for gpu in &mut last {
        for mig in &mut gpu.mig {
            mig.allocations.push(Allocation {
                namespace: "inference".into(),
                pod: format!("vllm-7d9f8b6c5d-{:05}", gpu.index * MIGS + mig.slot),
                container: "vllm".into(),
                device_id: mig.uuid.clone(),
            });
        }
    }
    println!(
        "report to a peer, {GPUS} GPUs x {MIGS} MIG devices: {bare} bytes without pods, {} with a pod on every MIG device",
        report_bytes(last)
    );
}

/// The encoded size of this node's report to a peer, for these GPUs.
fn report_bytes(gpus: Vec<keda_gpu_scaler::node::snapshot::GpuSample>) -> u64 {
    let snapshot = Snapshot {
        sequence: 1,
        taken_at: Instant::now(),
        duration: Duration::from_millis(1),
        state: NodeState::Ready {
            backend: "nvml",
            driver_version: "550.54.15".into(),
            gpus,
            attribution: Attribution::complete(),
        },
    };
    to_proto("gpu-node-0", &snapshot, Instant::now()).compute_size()
}

/// Every entry point `read_node` calls for the same GPUs, results dropped.
fn bare_pass(nvml: &Nvml, previous: &mut [Option<GpmSample>]) {
    let fields = [
        (NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0),
        (NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0),
        (NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, NVML_SCOPE_ALL_LINKS),
        (NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, NVML_SCOPE_ALL_LINKS),
    ];
    let ids = [2, 3, 5, 10];
    let count = nvml.device_count().unwrap();
    for index in 0..count {
        let device = nvml.device(index).unwrap();
        let _ = (
            device.uuid(),
            device.name(),
            device.utilization(),
            device.memory(),
        );
        let _ = (
            device.temperature(),
            device.power_usage_milliwatts(),
            device.mig_enabled(),
        );
        let _ = device.gpm_supported();
        let _ = device.field_values(&fields);
        let slot = (index * (MIGS + 1)) as usize;
        let sample = nvml.gpm_sample_alloc().unwrap();
        device.gpm_sample(&sample).unwrap();
        if let Some(earlier) = &previous[slot] {
            let _ = nvml.gpm_metrics(earlier, &sample, &ids);
        }
        previous[slot] = Some(sample);
        for (mig_slot, mig) in device.mig_devices().unwrap() {
            let _ = (
                mig.uuid(),
                mig.name(),
                mig.compute_instance_id(),
                mig.memory(),
            );
            let gi = mig.gpu_instance_id().unwrap();
            let slot = slot + 1 + mig_slot as usize;
            let sample = nvml.gpm_sample_alloc().unwrap();
            device.gpm_mig_sample(gi, &sample).unwrap();
            if let Some(earlier) = &previous[slot] {
                let _ = nvml.gpm_metrics(earlier, &sample, &ids);
            }
            previous[slot] = Some(sample);
        }
    }
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}
