//! The background thread that owns the GPU library (NVML or AMD SMI, via
//! the backend seam). Every interval it reads all GPUs and publishes a
//! snapshot; when no library can be loaded or initialised it publishes why
//! and retries with capped backoff. Nothing else calls the library while
//! serving, so a hung call only makes snapshots stale.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use grpcio::Environment;

use crate::node::attribution::{attribute, GpuResources};
use crate::node::backend::{BackendConfig, Opener};
use crate::node::kubelet::{PodResourcesClient, PodResourcesPoller, Polled};
use crate::node::session::Session;
use crate::node::snapshot::{Attribution, GpuHealth, GpuSample, NodeState, SnapshotCell, Unplaced};

/// The longest wait between two attempts to load or initialise NVML.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// How long one kubelet PodResources call may take. It runs on its own
/// thread, so a slow kubelet delays attribution, never NVML readings.
const POD_RESOURCES_TIMEOUT: Duration = Duration::from_secs(5);

/// The oldest kubelet answer attribution may use (at least this; longer
/// with long sample intervals). Pods change GPUs only when they start or
/// stop, so a few seconds' delay is harmless; a kubelet silent for longer
/// makes attribution unavailable rather than wrong.
const ATTRIBUTION_MAX_AGE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub interval: Duration,
    /// Which GPU library, and where.
    pub backend: BackendConfig,
    /// The kubelet's PodResources socket.
    pub pod_resources_socket: PathBuf,
    pub gpu_resources: GpuResources,
}

/// The running sampler thread (and the kubelet poller it reads). Stopping
/// it (or dropping it) ends both loops.
pub struct Sampler {
    stop: Arc<StopSignal>,
    finished: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
    poller: Option<Arc<PodResourcesPoller>>,
}

impl Sampler {
    pub fn start(
        config: SamplerConfig,
        cell: Arc<SnapshotCell>,
        env: Arc<Environment>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(StopSignal::default());
        let (done, finished) = mpsc::channel();
        let client = PodResourcesClient::new(config.pod_resources_socket.clone(), env);
        let poller = Arc::new(PodResourcesPoller::start(
            client,
            config.interval,
            POD_RESOURCES_TIMEOUT,
        )?);
        let thread = std::thread::Builder::new()
            .name("gpu-sampler".into())
            .spawn({
                let stop = Arc::clone(&stop);
                let poller = Arc::clone(&poller);
                move || {
                    let pods = || poller.latest();
                    run(&config, &cell, &stop, &pods);
                    let _ = done.send(());
                }
            })?;
        Ok(Self {
            stop,
            finished,
            thread: Some(thread),
            poller: Some(poller),
        })
    }

    /// Signals the thread and waits up to `grace` for it. A thread stuck in
    /// an NVML call is left behind (and logged) rather than blocking exit.
    pub fn stop(mut self, grace: Duration) {
        self.stop_and_join(grace);
    }

    fn stop_and_join(&mut self, grace: Duration) {
        // Both threads wind down at once: the sampler is told first, then
        // the poller is stopped while the sampler finishes its pass.
        self.stop.raise();
        if let Some(poller) = self.poller.take() {
            poller.stop(grace);
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        match self.finished.recv_timeout(grace) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log::warn!(
                    "the GPU sampler did not stop within {grace:?} (a GPU library call is hanging); leaving it"
                );
            }
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop_and_join(Duration::from_secs(2));
    }
}

#[derive(Default)]
struct StopSignal {
    raised: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn raise(&self) {
        *self.raised.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Sleeps until `deadline`; true when stop was raised.
    fn wait_until(&self, deadline: Instant) -> bool {
        let raised = self.raised.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = deadline.saturating_duration_since(Instant::now());
        let (raised, _) = self
            .wake
            .wait_timeout_while(raised, timeout, |raised| !*raised)
            .unwrap_or_else(|e| e.into_inner());
        *raised
    }
}

fn run(
    config: &SamplerConfig,
    cell: &SnapshotCell,
    stop: &StopSignal,
    pods: &dyn Fn() -> Option<Polled>,
) {
    let mut attribution_log = AttributionLog::default();
    let mut opener = Opener::new(config.backend.clone());
    let mut session: Option<Box<dyn Session>> = None;
    let mut retry = Backoff::new(config.interval.min(MAX_RETRY_DELAY), MAX_RETRY_DELAY);
    let mut health = HealthLog::default();
    let mut last_failure: Option<String> = None;
    loop {
        let started = Instant::now();
        let next = match sample(&mut opener, &mut session) {
            Ok((backend, driver_version, mut gpus)) => {
                last_failure = None;
                retry.reset();
                health.fill_identity(&mut gpus);
                health.observe(&gpus);
                let attribution = attach_pods(pods(), &mut gpus, config, &mut attribution_log);
                cell.publish(
                    started,
                    started.elapsed(),
                    NodeState::Ready {
                        backend,
                        driver_version,
                        gpus,
                        attribution,
                    },
                );
                started + config.interval
            }
            Err(reason) => {
                if last_failure.as_ref() != Some(&reason) {
                    log::warn!("{reason}; retrying with backoff up to {MAX_RETRY_DELAY:?}");
                    last_failure = Some(reason.clone());
                }
                health = HealthLog::default();
                cell.publish(
                    started,
                    started.elapsed(),
                    NodeState::Unavailable { reason },
                );
                started + retry.next_delay()
            }
        };
        if stop.wait_until(next) {
            break;
        }
    }
}

/// Attaches the kubelet's latest answer to this pass's GPUs: which pods
/// hold them, and which ids could not be placed.
fn attach_pods(
    polled: Option<Polled>,
    gpus: &mut [GpuSample],
    config: &SamplerConfig,
    log: &mut AttributionLog,
) -> Attribution {
    let max_age = ATTRIBUTION_MAX_AGE.max(config.interval * 2 + POD_RESOURCES_TIMEOUT);
    let devices = match polled {
        None => Err(String::from("the kubelet has not answered yet")),
        Some(polled) if polled.at.elapsed() > max_age => Err(format!(
            "the kubelet's last PodResources answer is {:.0}s old (limit {:.0}s)",
            polled.at.elapsed().as_secs_f64(),
            max_age.as_secs_f64()
        )),
        Some(polled) => polled.devices,
    };
    match devices {
        Ok(devices) => {
            let unplaced = attribute(gpus, &devices, &config.gpu_resources);
            log.known(&unplaced);
            Attribution::Known { unplaced }
        }
        Err(reason) => {
            log.unavailable(&reason);
            Attribution::Unavailable(reason)
        }
    }
}

/// One sampling pass: (re)open the library when needed, then read every GPU.
fn sample(
    opener: &mut Opener,
    session: &mut Option<Box<dyn Session>>,
) -> Result<(&'static str, String, Vec<GpuSample>), String> {
    if session.is_none() {
        let opened = opener.open()?;
        log::info!(
            "{} initialised from {} (driver {})",
            opened.display_name(),
            opened.library_path(),
            opened.driver_version()
        );
        *session = Some(opened);
    }
    let current = session.as_mut().expect("opened above");
    match current.read_node() {
        Ok(gpus) => Ok((
            current.backend(),
            current.driver_version().to_string(),
            gpus,
        )),
        Err(e) => {
            // Shut this session down; the next pass initialises afresh.
            *session = None;
            Err(e)
        }
    }
}

/// Logs attribution state changes, and each device id that cannot be
/// placed, once while it lasts.
#[derive(Default)]
struct AttributionLog {
    unavailable: Option<String>,
    known_once: bool,
    /// The unplaced ids of the last pass (so the set never outgrows the node's pods).
    unplaced_seen: HashSet<Unplaced>,
}

impl AttributionLog {
    fn known(&mut self, unplaced: &[Unplaced]) {
        if self.unavailable.take().is_some() || !self.known_once {
            log::info!("pod attribution is working (kubelet PodResources)");
        }
        self.known_once = true;
        let current: HashSet<Unplaced> = unplaced.iter().cloned().collect();
        for id in current.difference(&self.unplaced_seen) {
            log::warn!(
                "pod {}/{}: {}; triggers selecting this pod are UNAVAILABLE until it can be placed",
                id.allocation.namespace,
                id.allocation.pod,
                id.reason
            );
        }
        self.unplaced_seen = current;
    }

    fn unavailable(&mut self, reason: &str) {
        if self.unavailable.as_deref() != Some(reason) {
            log::warn!("pod attribution is unavailable, so workload triggers fail (node-wide ones work): {reason}");
            self.unavailable = Some(reason.to_string());
        }
    }
}

/// Doubling delay, capped.
struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.current = self.first;
    }
}

/// Remembers each GPU's identity and last health, so a change is logged
/// once and a lost GPU keeps the UUID it had.
#[derive(Default)]
struct HealthLog {
    last: BTreeMap<u32, Known>,
}

struct Known {
    uuid: Option<String>,
    name: Option<String>,
    state: String,
}

impl HealthLog {
    /// A lost GPU often cannot say its UUID; use the one it last reported.
    fn fill_identity(&self, gpus: &mut [GpuSample]) {
        for gpu in gpus {
            if let Some(known) = self.last.get(&gpu.index) {
                if gpu.uuid.is_none() {
                    gpu.uuid.clone_from(&known.uuid);
                }
                if gpu.name.is_none() {
                    gpu.name.clone_from(&known.name);
                }
            }
        }
    }

    fn observe(&mut self, gpus: &[GpuSample]) {
        let mut current = BTreeMap::new();
        for gpu in gpus {
            let state = match &gpu.health {
                GpuHealth::Healthy { .. } => String::from("healthy"),
                GpuHealth::Lost { error } => format!("lost: {error}"),
                GpuHealth::Failed { error } => format!("failing: {error}"),
            };
            let previous = self.last.get(&gpu.index).map(|known| known.state.as_str());
            if previous != Some(state.as_str()) {
                match (&gpu.health, previous) {
                    (GpuHealth::Healthy { .. }, None) => {
                        log::info!(
                            "{} {} found",
                            gpu.label(),
                            gpu.name.as_deref().unwrap_or("")
                        )
                    }
                    (GpuHealth::Healthy { .. }, Some(_)) => {
                        log::info!("{} is healthy again; included", gpu.label())
                    }
                    _ => log::warn!("{} is {state}; excluded", gpu.label()),
                }
            }
            let known = Known {
                uuid: gpu.uuid.clone(),
                name: gpu.name.clone(),
                state,
            };
            current.insert(gpu.index, known);
        }
        for (index, known) in &self.last {
            if !current.contains_key(index) {
                let uuid = known.uuid.as_deref().unwrap_or("unknown uuid");
                log::warn!("GPU {index} ({uuid}) is no longer reported by the GPU library");
            }
        }
        self.last = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), MAX_RETRY_DELAY);
        let delays: Vec<u64> = (0..6).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }
}
