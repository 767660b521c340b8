//! A client for the kubelet's PodResources API on its unix socket: which
//! devices each container holds, polled on a thread of its own so that a
//! slow kubelet never delays NVML readings. The kubelet recreates the
//! socket when it restarts, so a failed call drops the channel and the
//! next one reconnects.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Environment};

use crate::proto::podresources::ListPodResourcesRequest;
use crate::proto::podresources_grpc::PodResourcesListerClient;

/// The kubelet's default socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// One device id held by one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDevice {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub resource: String,
    pub device_id: String,
}

pub struct PodResourcesClient {
    socket: PathBuf,
    env: Arc<Environment>,
    client: Option<PodResourcesListerClient>,
}

impl PodResourcesClient {
    pub fn new(socket: PathBuf, env: Arc<Environment>) -> Self {
        Self {
            socket,
            env,
            client: None,
        }
    }

    /// Every device id of every container on the node.
    pub fn list(&mut self, timeout: Duration) -> Result<Vec<PodDevice>, String> {
        if !self.socket.exists() {
            return Err(format!(
                "the kubelet pod-resources socket {} does not exist (mount /var/lib/kubelet/pod-resources, or set --pod-resources-socket)",
                self.socket.display()
            ));
        }
        let target = format!("unix:{}", self.socket.display());
        let client = self.client.get_or_insert_with(|| {
            PodResourcesListerClient::new(
                ChannelBuilder::new(Arc::clone(&self.env)).connect(&target),
            )
        });
        let response = client
            .list_opt(
                &ListPodResourcesRequest::new(),
                CallOption::default().timeout(timeout),
            )
            .map_err(|e| {
                self.client = None;
                format!(
                    "kubelet PodResources List on {} failed: {e}",
                    self.socket.display()
                )
            })?;
        let mut devices = Vec::new();
        for pod in response.pod_resources() {
            for container in pod.containers() {
                for device in container.devices() {
                    for id in device.device_ids() {
                        devices.push(PodDevice {
                            namespace: pod.namespace().to_string(),
                            pod: pod.name().to_string(),
                            container: container.name().to_string(),
                            resource: device.resource_name().to_string(),
                            device_id: id.clone(),
                        });
                    }
                }
            }
        }
        Ok(devices)
    }
}

/// The kubelet's latest answer and when it arrived.
#[derive(Debug, Clone)]
pub struct Polled {
    pub at: Instant,
    pub devices: Result<Arc<Vec<PodDevice>>, String>,
}

/// A thread that asks the kubelet every `interval` (after the previous
/// answer) and keeps the latest answer for the sampler to attach.
pub struct PodResourcesPoller {
    latest: Arc<Mutex<Option<Polled>>>,
    /// Dropping the sender stops the thread.
    stop: Mutex<Option<mpsc::Sender<()>>>,
    finished: Mutex<mpsc::Receiver<()>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl PodResourcesPoller {
    pub fn start(
        mut client: PodResourcesClient,
        interval: Duration,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let latest = Arc::new(Mutex::new(None));
        let (stop, stopped) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kubelet-poller".into())
            .spawn({
                let latest = Arc::clone(&latest);
                move || {
                    loop {
                        let started = Instant::now();
                        let devices = client.list(timeout).map(Arc::new);
                        *lock(&latest) = Some(Polled {
                            at: Instant::now(),
                            devices,
                        });
                        let wait = (started + interval).saturating_duration_since(Instant::now());
                        match stopped.recv_timeout(wait) {
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    let _ = done.send(());
                }
            })?;
        Ok(Self {
            latest,
            stop: Mutex::new(Some(stop)),
            finished: Mutex::new(finished),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The latest answer; `None` before the kubelet first answered or failed.
    pub fn latest(&self) -> Option<Polled> {
        lock(&self.latest).clone()
    }

    /// Stops the thread, waiting up to `grace` for a call in flight.
    pub fn stop(&self, grace: Duration) {
        lock(&self.stop).take();
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        match lock(&self.finished).recv_timeout(grace) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                log::warn!("the kubelet poller did not stop within {grace:?}; leaving it");
            }
        }
    }
}

impl Drop for PodResourcesPoller {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
