//! Test support: the fake NVML library (built on first use), per-test copies
//! of it with their own scenario, an in-process server and a loopback client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};
use keda_gpu_scaler::grpc::server::{self, RunningServer, ServeConfig};
use keda_gpu_scaler::proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, ScaledObjectRef,
};
use keda_gpu_scaler::proto::externalscaler_grpc::ExternalScalerClient;

pub mod fleet;

/// Which build of the fake library.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    /// Exports `_v2` symbols where NVML has them.
    Full,
    /// Exports only the unversioned symbols.
    V1Only,
}

/// Builds the fake library once per variant and test binary.
pub fn fake_library_build(variant: Variant) -> PathBuf {
    static FULL: OnceLock<PathBuf> = OnceLock::new();
    static V1: OnceLock<PathBuf> = OnceLock::new();
    let cell = match variant {
        Variant::Full => &FULL,
        Variant::V1Only => &V1,
    };
    cell.get_or_init(|| build_fake(variant)).clone()
}

fn build_fake(variant: Variant) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (dir, features): (&str, &[&str]) = match variant {
        Variant::Full => ("full", &[]),
        Variant::V1Only => ("v1-only", &["--features", "v1-only"]),
    };
    let target_dir = root.join("target").join("fake-nvml").join(dir);
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--offline",
            "-p",
            "fake-nvml",
            "--target-dir",
        ])
        .arg(&target_dir)
        .args(features)
        .status()
        .expect("run cargo to build fake-nvml");
    assert!(status.success(), "building fake-nvml failed");
    let library = target_dir.join("debug").join("libfake_nvml.so");
    assert!(library.exists(), "{} missing", library.display());
    library
}

/// Builds the fake AMD SMI library once per build and test binary
/// (`minimal`: without the optional entry points).
pub fn fake_amdsmi_build(minimal: bool) -> PathBuf {
    static FULL: OnceLock<PathBuf> = OnceLock::new();
    static MINIMAL: OnceLock<PathBuf> = OnceLock::new();
    let cell = if minimal { &MINIMAL } else { &FULL };
    cell.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = if minimal { "minimal" } else { "full" };
        let target_dir = root.join("target").join("fake-amdsmi").join(dir);
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(root)
            .args([
                "build",
                "--quiet",
                "--offline",
                "-p",
                "fake-amdsmi",
                "--target-dir",
            ])
            .arg(&target_dir);
        if minimal {
            command.args(["--features", "minimal"]);
        }
        let status = command.status().expect("run cargo to build fake-amdsmi");
        assert!(status.success(), "building fake-amdsmi failed");
        let library = target_dir.join("debug").join("libfake_amdsmi.so");
        assert!(library.exists(), "{} missing", library.display());
        library
    })
    .clone()
}

/// A private copy of the fake AMD SMI library and its scenario file.
pub struct FakeAmdSmi {
    pub dir: PathBuf,
    pub library: PathBuf,
    pub scenario: PathBuf,
}

impl FakeAmdSmi {
    pub fn new(scenario: &str) -> Self {
        Self::build(false, scenario)
    }

    /// Without `amdsmi_get_gpu_asic_info` and `amdsmi_get_gpu_driver_info`.
    pub fn minimal(scenario: &str) -> Self {
        Self::build(true, scenario)
    }

    fn build(minimal: bool, scenario: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fake-amdsmi-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let fake = Self {
            library: dir.join("libamd_smi.so.26"),
            scenario: dir.join("fake-amdsmi.scenario"),
            dir,
        };
        std::fs::copy(fake_amdsmi_build(minimal), &fake.library).expect("copy fake library");
        fake.set(scenario);
        fake
    }

    /// Replaces the scenario atomically (write, then rename).
    pub fn set(&self, scenario: &str) {
        let staging = self.dir.join("scenario.tmp");
        std::fs::write(&staging, scenario).expect("write scenario");
        std::fs::rename(staging, &self.scenario).expect("replace scenario");
    }
}

impl Drop for FakeAmdSmi {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node-local test server reading AMD GPUs through `fake`.
pub fn amd_config(fake: &FakeAmdSmi) -> ServeConfig {
    let mut config = ServeConfig::new("127.0.0.1:0");
    config.sample_interval = INTERVAL;
    config.backend.choice = keda_gpu_scaler::node::backend::BackendChoice::Amd;
    config.backend.amd_smi_library = Some(fake.library.clone());
    config.node_name = "amd-node".into();
    config.pod_resources_socket = fake.dir.join("no-kubelet.sock");
    config
}

/// Builds the fake-engine binary (once per test binary and profile) in its
/// own target directory, as the main one is locked by the running cargo.
pub fn fake_engine_binary(release: bool) -> PathBuf {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEBUG };
    cell.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (dir, profile) = if release {
            ("fake-engine-release", "release")
        } else {
            ("fake-engine", "debug")
        };
        let target_dir = root.join("target").join(dir);
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(root)
            .args(["build", "--quiet", "--offline", "-p", "fake-engine"]);
        if release {
            command.arg("--release");
        }
        let status = command
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .expect("run cargo to build fake-engine");
        assert!(status.success(), "building fake-engine failed");
        target_dir.join(profile).join("fake-engine")
    })
    .clone()
}

/// A private copy of the fake library and its scenario file. A copy at its
/// own path is a separate dlopen instance, so tests run in parallel.
pub struct FakeNvml {
    pub dir: PathBuf,
    pub library: PathBuf,
    pub scenario: PathBuf,
}

impl FakeNvml {
    pub fn new(scenario: &str) -> Self {
        Self::with_variant(Variant::Full, scenario)
    }

    pub fn with_variant(variant: Variant, scenario: &str) -> Self {
        let fake = Self::unplaced();
        std::fs::copy(fake_library_build(variant), &fake.library).expect("copy fake library");
        fake.set(scenario);
        fake
    }

    /// A directory with a scenario but no library yet (see `place_library`).
    pub fn unplaced() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fake-nvml-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        Self {
            library: dir.join("libnvidia-ml.so.1"),
            scenario: dir.join("fake-nvml.scenario"),
            dir,
        }
    }

    pub fn place_library(&self, variant: Variant) {
        let staging = self.dir.join("staging.so");
        std::fs::copy(fake_library_build(variant), &staging).expect("copy fake library");
        std::fs::rename(staging, &self.library).expect("place fake library");
    }

    /// Replaces the scenario atomically (write, then rename).
    pub fn set(&self, scenario: &str) {
        let staging = self.dir.join("scenario.tmp");
        std::fs::write(&staging, scenario).expect("write scenario");
        std::fs::rename(staging, &self.scenario).expect("replace scenario");
    }
}

impl Drop for FakeNvml {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Test servers sample every 100 ms, the shortest allowed interval.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// Generous bound for conditions that should hold within a few intervals.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn start_server(fake: &FakeNvml) -> RunningServer {
    start_server_at(&fake.library)
}

pub fn start_server_at(library: &Path) -> RunningServer {
    server::start(&local_config(library)).expect("start server")
}

/// A node-local test server's settings: fast sampling, this library, and a
/// pod-resources socket that does not exist.
pub fn local_config(library: &Path) -> ServeConfig {
    let mut config = ServeConfig::new("127.0.0.1:0");
    config.sample_interval = INTERVAL;
    // As the chart's NVIDIA DaemonSet runs; `auto` is tested in tests/amd.rs.
    config.backend.choice = keda_gpu_scaler::node::backend::BackendChoice::Nvidia;
    config.backend.nvml_library = Some(library.to_path_buf());
    config.node_name = "test-node".into();
    config.pod_resources_socket = library.with_file_name("no-kubelet.sock");
    config.engine_policy = lab_policy();
    config
}

/// The endpoint policy of a lab on one machine: replicas on loopback, named
/// by IP or by any name (`--engine-allow-cidrs 127.0.0.0/8
/// --engine-any-namespace`). Tests of the policy itself set their own.
pub fn lab_policy() -> keda_gpu_scaler::engine::policy::EndpointPolicy {
    use keda_gpu_scaler::engine::policy::{parse_cidrs, EndpointPolicy};
    EndpointPolicy {
        allowed: parse_cidrs("127.0.0.0/8").unwrap(),
        any_namespace: true,
        ..EndpointPolicy::default()
    }
}

/// The same as flags, for a scaler process.
pub const LAB_POLICY_FLAGS: [&str; 3] = [
    "--engine-allow-cidrs",
    "127.0.0.0/8",
    "--engine-any-namespace",
];

pub fn client(port: u16) -> ExternalScalerClient {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let channel = ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}"));
    ExternalScalerClient::new(channel)
}

pub fn scaled_object(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    let mut so = ScaledObjectRef::new();
    so.set_name("app".into());
    so.set_namespace("default".into());
    let metadata: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    so.set_scalerMetadata(metadata);
    so
}

pub fn call_option() -> CallOption {
    CallOption::default().timeout(Duration::from_secs(5))
}

pub fn metric_spec(
    client: &ExternalScalerClient,
    so: &ScaledObjectRef,
) -> Result<GetMetricSpecResponse, grpcio::Error> {
    client.get_metric_spec_opt(so, call_option())
}

pub fn metrics(
    client: &ExternalScalerClient,
    so: &ScaledObjectRef,
    name: &str,
) -> Result<GetMetricsResponse, grpcio::Error> {
    let mut request = GetMetricsRequest::new();
    request.set_scaledObjectRef(so.clone());
    request.set_metricName(name.to_string());
    client.get_metrics_opt(&request, call_option())
}

/// GetMetrics' float value, or the failure status, asked as KEDA asks:
/// GetMetricSpec first, then GetMetrics with the name it gave.
pub fn value(
    client: &ExternalScalerClient,
    pairs: &[(&str, &str)],
) -> Result<f64, (grpcio::RpcStatusCode, String)> {
    let so = scaled_object(pairs);
    let spec = metric_spec(client, &so).map_err(status_of)?;
    let name = spec.metricSpecs()[0].metricName();
    metrics(client, &so, name)
        .map(|r| r.metricValues()[0].metricValueFloat())
        .map_err(status_of)
}

pub fn is_active(
    client: &ExternalScalerClient,
    pairs: &[(&str, &str)],
) -> Result<IsActiveResponse, grpcio::Error> {
    client.is_active_opt(&scaled_object(pairs), call_option())
}

/// The next result a StreamIsActive stream pushes, or the status that
/// ended it.
pub fn next_result(
    stream: &mut grpcio::ClientSStreamReceiver<IsActiveResponse>,
) -> Result<bool, (grpcio::RpcStatusCode, String)> {
    use futures_util::StreamExt;
    match futures_executor::block_on(stream.next()).expect("stream ended without a status") {
        Ok(response) => Ok(response.result()),
        Err(e) => Err(status_of(e)),
    }
}

pub fn status_of(error: grpcio::Error) -> (grpcio::RpcStatusCode, String) {
    match error {
        grpcio::Error::RpcFailure(status) => (status.code(), status.message().to_string()),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

/// Sends SIGTERM to `child` and waits up to `within` for it to exit: its
/// status, or `None` if it is still running then.
pub fn terminate(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child, with a valid signal.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until GetMetrics answers `expected` for `pairs`; panics with the last answer.
pub fn wait_for_value(client: &ExternalScalerClient, pairs: &[(&str, &str)], expected: f64) {
    let mut last = None;
    let reached = wait_until(PATIENCE, || {
        let answer = value(client, pairs);
        let done = answer == Ok(expected);
        last = Some(answer);
        done
    });
    assert!(
        reached,
        "value never became {expected}; last answer {last:?}"
    );
}

/// Waits until GetMetrics answers with a value, and returns it: on a loaded
/// machine a peer may miss a deadline, which is rightly an error.
pub fn wait_for_ok(client: &ExternalScalerClient, pairs: &[(&str, &str)]) -> f64 {
    let mut last = None;
    let reached = wait_until(PATIENCE, || {
        last = Some(value(client, pairs));
        matches!(last, Some(Ok(_)))
    });
    assert!(reached, "never answered with a value; last answer {last:?}");
    last.unwrap().unwrap()
}

/// Waits until GetMetrics fails with `code` and a message containing `needle`.
pub fn wait_for_error(
    client: &ExternalScalerClient,
    pairs: &[(&str, &str)],
    code: grpcio::RpcStatusCode,
    needle: &str,
) -> String {
    let mut last = None;
    let reached = wait_until(PATIENCE, || {
        let answer = value(client, pairs);
        let done = matches!(&answer, Err((c, m)) if *c == code && m.contains(needle));
        last = Some(answer);
        done
    });
    assert!(
        reached,
        "never failed with {code:?} containing {needle:?}; last answer {last:?}"
    );
    match last {
        Some(Err((_, message))) => message,
        _ => unreachable!(),
    }
}

/// A scenario line for one healthy GPU.
pub fn gpu_line(index: u32, util: u32) -> String {
    format!(
        "gpu {index} util={util} mem_util=10 mem_total_mib=81920 mem_used_mib=8192 temp=40 power_mw=100000\n"
    )
}

/// A kubelet that answers PodResources List from a list the test can
/// change, after an optional delay. `(namespace, pod, device id)`; MIG ids
/// are given the resource `nvidia.com/mig-1g.10gb`, PCI addresses
/// `amd.com/gpu` and `amdgpu_xcp_N` `amd.com/cpx_nps4` (as AMD's device
/// plugin names them), others `nvidia.com/gpu`.
#[derive(Clone, Default)]
pub struct FakeKubelet {
    pub pods: Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
    pub delay: Arc<std::sync::Mutex<Duration>>,
}

impl keda_gpu_scaler::proto::podresources_grpc::PodResourcesLister for FakeKubelet {
    fn list(
        &mut self,
        ctx: grpcio::RpcContext,
        _req: keda_gpu_scaler::proto::podresources::ListPodResourcesRequest,
        sink: grpcio::UnarySink<keda_gpu_scaler::proto::podresources::ListPodResourcesResponse>,
    ) {
        use keda_gpu_scaler::proto::podresources::*;
        let mut response = ListPodResourcesResponse::new();
        for (namespace, pod, device_id) in self.pods.lock().unwrap().iter() {
            let mut devices = ContainerDevices::new();
            let resource = if device_id.starts_with("MIG-") {
                "nvidia.com/mig-1g.10gb"
            } else if device_id.starts_with("amdgpu_xcp_") {
                "amd.com/cpx_nps4"
            } else if device_id.matches(':').count() == 2 {
                "amd.com/gpu"
            } else {
                "nvidia.com/gpu"
            };
            devices.set_resource_name(resource.into());
            devices.mut_device_ids().push(device_id.clone());
            let mut container = ContainerResources::new();
            container.set_name("main".into());
            container.mut_devices().push(devices);
            let mut resources = PodResources::new();
            resources.set_namespace(namespace.clone());
            resources.set_name(pod.clone());
            resources.mut_containers().push(container);
            response.mut_pod_resources().push(resources);
        }
        let delay = *self.delay.lock().unwrap();
        if delay.is_zero() {
            ctx.spawn(async move {
                let _ = sink.success(response).await;
            });
        } else {
            // A slow kubelet: answer from another thread after the delay,
            // so this server's own threads stay free.
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = futures_executor::block_on(sink.success(response));
            });
        }
    }
}

impl FakeKubelet {
    pub fn set_pods(&self, pods: &[(&str, &str, &str)]) {
        *self.pods.lock().unwrap() = pods
            .iter()
            .map(|(n, p, d)| (n.to_string(), p.to_string(), d.to_string()))
            .collect();
    }

    /// Serves this kubelet on a unix socket at `socket`.
    pub fn serve(&self, socket: &Path) -> grpcio::Server {
        let mut server =
            grpcio::ServerBuilder::new(Arc::new(EnvBuilder::new().cq_count(1).build()))
                .register_service(
                    keda_gpu_scaler::proto::podresources_grpc::create_pod_resources_lister(
                        self.clone(),
                    ),
                )
                .build()
                .unwrap();
        server
            .add_listening_port(
                format!("unix:{}", socket.display()),
                grpcio::ServerCredentials::insecure(),
            )
            .unwrap();
        server.start();
        server
    }
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `Node.Explain` on the scaler at `port`, as `query --explain` asks.
pub fn explain(
    port: u16,
    pairs: &[(&str, &str)],
) -> Result<keda_gpu_scaler::proto::node::ExplainResponse, grpcio::Error> {
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let node = keda_gpu_scaler::proto::node_grpc::NodeClient::new(
        ChannelBuilder::new(env).connect(&format!("127.0.0.1:{port}")),
    );
    let mut request = keda_gpu_scaler::proto::node::ExplainRequest::new();
    request.set_namespace("default".into());
    request
        .mut_metadata()
        .extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    node.explain_opt(&request, call_option())
}
