//! The cluster view. Each scaler pod serves its node's snapshot
//! (`Node.Snapshot`); a request that needs the whole cluster triggers a
//! sweep: every peer in parallel with a deadline, this node read locally.
//! A sweep is cached for one sample interval and shared by every request
//! that waits for it, so load on peers does not grow with ScaledObjects.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use grpcio::{CallOption, ChannelBuilder, ChannelCredentialsBuilder, Environment};
use protobuf::Message;

use crate::evaluate::{evaluate_nodes, Detail, NodeView, Outcome};
use crate::node_report::NodeReport;
use crate::proto::node::SnapshotRequest;
use crate::proto::node_grpc::NodeClient;
use crate::snapshot::SnapshotCell;
use crate::trigger::Trigger;

#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's name; a peer answering with it is this pod.
    pub node_name: String,
    /// `host:port` entries, each resolved to all its addresses on every sweep.
    pub peers: Vec<String>,
    pub peer_timeout: Duration,
    /// Sweeps are cached this long (the sample interval).
    pub interval: Duration,
    pub stale_after: Duration,
    /// TLS for calls to peers.
    pub tls: Option<PeerTls>,
}

/// How this pod calls its peers when they serve TLS: it trusts the client
/// CA (mutual TLS with one CA), presents its own certificate, and expects
/// `server_name` in theirs.
#[derive(Clone)]
pub struct PeerTls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub server_name: String,
}

/// Every node's report from one sweep.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub taken_at: Instant,
    pub nodes: Vec<NodeReport>,
    /// `address: error` for each peer that did not answer.
    pub failed_peers: Vec<String>,
    /// Set when peers exist but none answered: the view cannot be trusted.
    pub error: Option<String>,
    /// Encoded size of the peers' answers.
    pub bytes: usize,
}

impl ClusterView {
    fn failed(reason: &str) -> Self {
        Self {
            taken_at: Instant::now(),
            nodes: Vec::new(),
            failed_peers: Vec::new(),
            error: Some(reason.to_string()),
            bytes: 0,
        }
    }

    /// The trigger over every node.
    pub fn outcome(&self, trigger: &Trigger, detail: Detail) -> Outcome {
        if let Some(error) = &self.error {
            return Outcome::unavailable(error.clone());
        }
        let views: Vec<NodeView<'_>> = self.nodes.iter().map(NodeReport::view).collect();
        evaluate_nodes(trigger, &views, detail)
    }
}

pub struct Cluster {
    config: ClusterConfig,
    local: Arc<SnapshotCell>,
    env: Arc<Environment>,
    state: Mutex<SweepState>,
    wake: Condvar,
    sweeps: AtomicU64,
    failed_calls: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct SweepState {
    last: Option<Arc<ClusterView>>,
    waiting: Vec<oneshot::Sender<Arc<ClusterView>>>,
    stopped: bool,
}

impl Cluster {
    /// Starts the sweeper thread.
    pub fn start(
        config: ClusterConfig,
        local: Arc<SnapshotCell>,
        env: Arc<Environment>,
    ) -> std::io::Result<Arc<Self>> {
        let cluster = Arc::new(Self {
            config,
            local,
            env,
            state: Mutex::new(SweepState::default()),
            wake: Condvar::new(),
            sweeps: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            thread: Mutex::new(None),
        });
        let thread = std::thread::Builder::new()
            .name("cluster-sweeper".into())
            .spawn({
                let cluster = Arc::clone(&cluster);
                move || cluster.sweep_loop()
            })?;
        *cluster.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(cluster)
    }

    /// Sweeps so far.
    pub fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }

    /// Peer calls that failed so far.
    pub fn failed_calls(&self) -> u64 {
        self.failed_calls.load(Ordering::Relaxed)
    }

    /// The view: the cached one while younger than one interval, else the
    /// next sweep's, shared with everyone else waiting for it.
    pub fn view(&self) -> impl Future<Output = Arc<ClusterView>> + Send + 'static {
        let pending = {
            let mut state = self.lock();
            match &state.last {
                Some(view) if view.taken_at.elapsed() < self.config.interval => {
                    Ok(Arc::clone(view))
                }
                _ if state.stopped => Ok(Arc::new(ClusterView::failed(
                    "keda-gpu-scaler is shutting down",
                ))),
                _ => {
                    let (sender, receiver) = oneshot::channel();
                    state.waiting.push(sender);
                    self.wake.notify_all();
                    Err(receiver)
                }
            }
        };
        async move {
            match pending {
                Ok(view) => view,
                Err(receiver) => receiver.await.unwrap_or_else(|_| {
                    Arc::new(ClusterView::failed("keda-gpu-scaler is shutting down"))
                }),
            }
        }
    }

    /// Stops the sweeper; waiting requests get an error.
    pub fn shutdown(&self) {
        self.lock().stopped = true;
        self.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SweepState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sweep_loop(&self) {
        let mut clients: HashMap<SocketAddr, NodeClient> = HashMap::new();
        let mut failing: HashSet<String> = HashSet::new();
        loop {
            let mut state = self.lock();
            while state.waiting.is_empty() && !state.stopped {
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.stopped {
                state.waiting.clear();
                return;
            }
            // Requests that arrived during the last sweep share its result.
            if let Some(view) = state
                .last
                .as_ref()
                .filter(|v| v.taken_at.elapsed() < self.config.interval)
            {
                let view = Arc::clone(view);
                for waiter in state.waiting.drain(..) {
                    let _ = waiter.send(Arc::clone(&view));
                }
                continue;
            }
            drop(state);
            let view = Arc::new(self.sweep(&mut clients, &mut failing));
            self.sweeps.fetch_add(1, Ordering::Relaxed);
            let mut state = self.lock();
            state.last = Some(Arc::clone(&view));
            for waiter in state.waiting.drain(..) {
                let _ = waiter.send(Arc::clone(&view));
            }
        }
    }

    fn sweep(
        &self,
        clients: &mut HashMap<SocketAddr, NodeClient>,
        failing: &mut HashSet<String>,
    ) -> ClusterView {
        let taken_at = Instant::now();
        let mut failed_peers = Vec::new();
        let mut addresses = Vec::new();
        for entry in &self.config.peers {
            match entry.to_socket_addrs() {
                Ok(resolved) => addresses.extend(resolved),
                Err(e) => failed_peers.push(format!("{entry}: cannot resolve: {e}")),
            }
        }
        addresses.sort();
        addresses.dedup();

        let option = || CallOption::default().timeout(self.config.peer_timeout);
        let calls: Vec<_> = addresses
            .iter()
            .map(|address| {
                let client = clients
                    .entry(*address)
                    .or_insert_with(|| self.client(address));
                (
                    *address,
                    client.snapshot_async_opt(&SnapshotRequest::new(), option()),
                )
            })
            .collect();
        let answers = futures_executor::block_on(futures_util::future::join_all(
            calls.into_iter().map(|(address, call)| async move {
                match call {
                    Ok(receiver) => (address, receiver.await),
                    Err(e) => (address, Err(e)),
                }
            }),
        ));

        let mut nodes = vec![NodeReport::from_local(
            &self.config.node_name,
            &self.local.load(),
            Instant::now(),
            self.config.stale_after,
        )];
        let mut bytes = 0;
        let mut others_answered = 0;
        for (address, answer) in answers {
            let key = address.to_string();
            match answer {
                Ok(message) if message.get_node_name() == self.config.node_name => {
                    failing.remove(&key);
                }
                Ok(message) => {
                    if failing.remove(&key) {
                        log::info!("peer {key} ({}) answers again", message.get_node_name());
                    }
                    bytes += message.compute_size() as usize;
                    others_answered += 1;
                    nodes.push(NodeReport::from_proto(&message, self.config.stale_after));
                }
                Err(e) => {
                    clients.remove(&address);
                    self.failed_calls.fetch_add(1, Ordering::Relaxed);
                    if failing.insert(key.clone()) {
                        log::warn!("peer {key} did not answer; skipping it until it does: {e}");
                    }
                    failed_peers.push(format!("{key}: {e}"));
                }
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let error = (others_answered == 0 && !failed_peers.is_empty()).then(|| {
            format!(
                "no peer answered, so the cluster view has only this node: {}",
                failed_peers.join("; ")
            )
        });
        ClusterView {
            taken_at,
            nodes,
            failed_peers,
            error,
            bytes,
        }
    }

    fn client(&self, address: &SocketAddr) -> NodeClient {
        let builder = ChannelBuilder::new(Arc::clone(&self.env));
        let channel = match &self.config.tls {
            Some(tls) => builder
                .override_ssl_target(tls.server_name.clone())
                .set_credentials(
                    ChannelCredentialsBuilder::new()
                        .root_cert(tls.ca.clone())
                        .cert(tls.cert.clone(), tls.key.clone())
                        .build(),
                )
                .connect(&address.to_string()),
            None => builder.connect(&address.to_string()),
        };
        NodeClient::new(channel)
    }
}
