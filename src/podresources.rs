//! A client for the kubelet's PodResources API on its unix socket: which
//! devices each container holds. The kubelet recreates the socket when it
//! restarts, so a failed call drops the channel and the next one reconnects.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
        for pod in response.get_pod_resources() {
            for container in pod.get_containers() {
                for device in container.get_devices() {
                    for id in device.get_device_ids() {
                        devices.push(PodDevice {
                            namespace: pod.get_namespace().to_string(),
                            pod: pod.get_name().to_string(),
                            container: container.get_name().to_string(),
                            resource: device.get_resource_name().to_string(),
                            device_id: id.clone(),
                        });
                    }
                }
            }
        }
        Ok(devices)
    }
}
