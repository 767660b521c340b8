//! The cluster view. Each scaler pod serves its node's snapshot
//! (`Node.Snapshot`); a request that needs the whole cluster triggers a
//! sweep: every peer in parallel with a deadline, this node read locally.
//! A sweep is cached for one sample interval after it completes and shared
//! by every request that waits for it, so load on peers does not grow with
//! ScaledObjects. Only the sweeper thread calls peers.
//!
//! A peer that does not answer is never silently dropped: its last good
//! report is kept (trusted for [`PEER_REPORT_TRUST`]), and a trigger whose
//! pods it held is UNAVAILABLE rather than 0. A peer is forgotten when its
//! address leaves DNS (the node or its scaler pod was deleted).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use grpcio::{CallOption, ChannelBuilder, ChannelCredentialsBuilder, Environment};
use protobuf::Message;

use crate::cluster::report::{Holds, NodeReport};
use crate::node::snapshot::SnapshotCell;
use crate::proto::node::SnapshotRequest;
use crate::proto::node_grpc::NodeClient;
use crate::scaling::evaluate::evaluate_nodes;
use crate::scaling::outcome::{Detail, Note, NoteKind, Outcome};
use crate::scaling::trigger::Trigger;

/// How long a silent peer's last report is trusted to say which pods it
/// runs. Longer than a node reboot (~5 minutes) and than Kubernetes'
/// default eviction of pods from an unreachable node (5 minutes), after
/// which a workload's pods have been recreated elsewhere. Past it the peer
/// is unknown.
pub const PEER_REPORT_TRUST: Duration = Duration::from_secs(600);

/// The largest peer answer accepted. A node with 8 GPUs, 7 MIG devices
/// each and a pod on every one encodes to about 20 KB; a larger answer is
/// refused by gRPC (RESOURCE_EXHAUSTED) and the peer counts as not
/// answering, so a sweep's memory stays bounded by peers × this.
pub const MAX_PEER_ANSWER_BYTES: usize = 256 * 1024;

/// Entries kept for logging peer verdicts once per change.
const MAX_LOGGED_VERDICTS: usize = 4096;

#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's name; a peer answering with it is this pod.
    pub node_name: String,
    /// `host:port` entries, each resolved to all its addresses on every sweep.
    pub peers: Vec<String>,
    /// Below `interval`, so that a silent peer cannot expire every view.
    pub peer_timeout: Duration,
    /// Sweeps are cached this long after they complete (the sample interval).
    pub interval: Duration,
    pub stale_after: Duration,
    /// TLS for calls to peers.
    pub tls: Option<PeerTls>,
}

/// How this pod calls its peers when they serve TLS: it trusts the client
/// CA (mutual TLS with one CA), presents its own certificate, and expects
/// `server_name` in theirs. The files are re-read before each sweep, as
/// the server re-reads its own, so a rotation needs no restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server_name: String,
}

/// The contents of the peer TLS files.
#[derive(Clone, PartialEq, Eq)]
struct TlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl PeerTls {
    /// Reads the three files; fails naming the one that cannot be read.
    pub fn check(&self) -> Result<(), String> {
        self.read().map(|_| ())
    }

    fn read(&self) -> Result<TlsMaterial, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        Ok(TlsMaterial {
            ca: read(&self.ca)?,
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        })
    }
}

/// A peer that did not answer this sweep.
#[derive(Debug, Clone)]
pub struct MissingPeer {
    /// `ip:port`, or the `--peers` entry that did not resolve.
    pub address: String,
    pub error: String,
    /// Its last good report while still trusted, with its age.
    pub last: Option<(Arc<NodeReport>, Duration)>,
    /// Why there is no trusted report, when there is none.
    pub unknown_because: String,
}

impl MissingPeer {
    /// `10.0.3.7:6000 (node gpu-3)`, or the address alone.
    pub fn label(&self) -> String {
        match &self.last {
            Some((report, _)) => format!("{} (node {})", self.address, report.name),
            None => self.address.clone(),
        }
    }
}

/// Every node's report from one sweep.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// When the sweep completed; the view is reused for one interval after.
    pub completed_at: Instant,
    /// This node and every peer that answered.
    pub nodes: Vec<Arc<NodeReport>>,
    /// Peers that did not answer (timeout, refusal, invalid answer).
    pub missing: Vec<MissingPeer>,
    /// Set when peers exist but none answered: node-wide triggers cannot
    /// be trusted. (Selector triggers judge each silent peer instead.)
    pub no_peer_answered: Option<String>,
    /// Set when there is no view at all (shutting down): every trigger fails.
    pub unavailable: Option<String>,
    /// Encoded size of the peers' answers.
    pub bytes: usize,
    /// How long the sweep took.
    pub took: Duration,
}

impl ClusterView {
    fn failed(reason: &str) -> Self {
        Self {
            completed_at: Instant::now(),
            nodes: Vec::new(),
            missing: Vec::new(),
            no_peer_answered: None,
            unavailable: Some(reason.to_string()),
            bytes: 0,
            took: Duration::ZERO,
        }
    }

    /// The trigger over every node. A missing peer leaves a node-wide
    /// trigger's value to the others (as before, with a note). For a
    /// trigger with a selector it is UNAVAILABLE when the peer's last
    /// report held the selector's pods, skipped when it held none, and
    /// unknown otherwise: then a value from pods found elsewhere stands,
    /// but a 0 (no pod found) becomes UNAVAILABLE.
    pub fn outcome(&self, trigger: &Trigger, detail: Detail) -> Outcome {
        if let Some(reason) = &self.unavailable {
            return Outcome::unavailable(reason.clone());
        }
        let Some(selector) = &trigger.selector else {
            if let Some(error) = &self.no_peer_answered {
                return Outcome::unavailable(error.clone());
            }
            let mut outcome = self.evaluate(trigger, detail);
            outcome.notes = self
                .missing
                .iter()
                .map(|peer| Note {
                    peer: peer.address.clone(),
                    kind: NoteKind::Missing,
                    text: format!(
                        "peer {} did not answer ({}): its GPUs are not in the value",
                        peer.label(),
                        peer.error
                    ),
                })
                .collect();
            return outcome;
        };
        let mut notes = Vec::new();
        let mut unknown = Vec::new();
        for peer in &self.missing {
            let holds = match &peer.last {
                Some((report, _)) => report.holds(selector),
                None => Holds::Unknown(peer.unknown_because.clone()),
            };
            let age = peer.last.as_ref().map_or(0.0, |(_, age)| age.as_secs_f64());
            match holds {
                Holds::Pods(pods) => {
                    return Outcome::unavailable(format!(
                        "cannot read {selector}: peer {} did not answer ({}), and its last report ({age:.0}s old) shows {} holding GPUs there",
                        peer.label(),
                        peer.error,
                        pods.join(", ")
                    ))
                }
                Holds::Nothing => notes.push(Note {
                    peer: peer.address.clone(),
                    kind: NoteKind::Skipped,
                    text: format!(
                        "peer {} did not answer ({}); skipped: its last report ({age:.0}s old) shows no pod of {selector}",
                        peer.label(),
                        peer.error
                    ),
                }),
                Holds::Unknown(why) => unknown.push((peer, why)),
            }
        }
        let mut outcome = self.evaluate(trigger, detail);
        if !unknown.is_empty() && outcome.value.is_ok() && outcome.selected == 0 {
            let peers: Vec<String> = unknown
                .iter()
                .map(|(peer, why)| format!("{} ({}; {why})", peer.label(), peer.error))
                .collect();
            return Outcome::unavailable(format!(
                "no pod of {selector} holds a GPU on the nodes that answered, but peers that did not answer may run some: {}; a 0 here could scale a busy workload to zero",
                peers.join("; ")
            ));
        }
        notes.extend(unknown.into_iter().map(|(peer, why)| Note {
            peer: peer.address.clone(),
            kind: NoteKind::Unknown,
            text: format!(
                "peer {} did not answer ({}) and is unknown ({why}): any pods of {selector} there are not in the value",
                peer.label(),
                peer.error
            ),
        }));
        outcome.notes = notes;
        outcome
    }

    fn evaluate(&self, trigger: &Trigger, detail: Detail) -> Outcome {
        let views: Vec<_> = self.nodes.iter().map(|n| n.view()).collect();
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
    skipped: AtomicU64,
    unknown: AtomicU64,
    /// The last verdict logged per (selector, peer), to log changes once.
    verdicts: Mutex<HashMap<(String, String), NoteKind>>,
    /// Dropped by `shutdown` to abort a sweep in flight.
    cancel: Mutex<Option<oneshot::Sender<()>>>,
    cancelled: Mutex<Option<oneshot::Receiver<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct SweepState {
    last: Option<Arc<ClusterView>>,
    waiting: Vec<oneshot::Sender<Arc<ClusterView>>>,
    stopped: bool,
}

/// What the sweeper knows of one peer address.
#[derive(Default)]
struct Peer {
    client: Option<NodeClient>,
    /// The last good report and when it arrived.
    last: Option<(Arc<NodeReport>, Instant)>,
    /// Why the latest call failed; `None` when it answered.
    failing: Option<String>,
    /// The address answered with this node's name: it is this pod.
    is_self: bool,
}

/// The sweeper thread's own state, kept between sweeps.
#[derive(Default)]
struct Sweeper {
    peers: HashMap<SocketAddr, Peer>,
    tls: Option<TlsMaterial>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// The cluster view, with no thread yet (see `start`).
    pub fn new(
        config: ClusterConfig,
        local: Arc<SnapshotCell>,
        env: Arc<Environment>,
    ) -> Arc<Self> {
        let (cancel, cancelled) = oneshot::channel();
        Arc::new(Self {
            config,
            local,
            env,
            state: Mutex::new(SweepState::default()),
            wake: Condvar::new(),
            sweeps: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            verdicts: Mutex::new(HashMap::new()),
            cancel: Mutex::new(Some(cancel)),
            cancelled: Mutex::new(Some(cancelled)),
            thread: Mutex::new(None),
        })
    }

    /// Starts the sweeper thread.
    pub fn start(self: &Arc<Self>) -> std::io::Result<()> {
        let cancelled = lock(&self.cancelled).take();
        let Some(cancelled) = cancelled else {
            return Ok(());
        };
        let thread = std::thread::Builder::new()
            .name("cluster-sweeper".into())
            .spawn({
                let cluster = Arc::clone(self);
                move || cluster.sweep_loop(cancelled)
            })?;
        *lock(&self.thread) = Some(thread);
        Ok(())
    }

    /// The latest sweep's view, if any (for the `/metrics` page).
    pub fn last_view(&self) -> Option<Arc<ClusterView>> {
        lock(&self.state).last.clone()
    }

    /// Sweeps so far.
    pub fn sweeps(&self) -> u64 {
        self.sweeps.load(Ordering::Relaxed)
    }

    /// Peer calls that failed so far.
    pub fn failed_calls(&self) -> u64 {
        self.failed_calls.load(Ordering::Relaxed)
    }

    /// Times a trigger skipped a silent peer whose last report held none of its pods.
    pub fn skipped_peers(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Times a trigger answered without a silent peer it knew nothing of.
    pub fn unknown_peers(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }

    /// The view: the cached one while younger than one interval, else the
    /// next sweep's, shared with everyone else waiting for it.
    pub fn view(&self) -> impl Future<Output = Arc<ClusterView>> + Send + 'static {
        let pending = {
            let mut state = lock(&self.state);
            match &state.last {
                Some(view) if view.completed_at.elapsed() < self.config.interval => {
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

    /// Counts and logs (once per change) the peers a trigger's outcome
    /// skipped or answered without.
    pub fn observe(&self, trigger: &Trigger, outcome: &Outcome) {
        if outcome.notes.is_empty() {
            return;
        }
        let selector = trigger
            .selector
            .as_ref()
            .map_or_else(|| String::from("node-wide triggers"), ToString::to_string);
        let mut changed = Vec::new();
        {
            let mut verdicts = lock(&self.verdicts);
            if verdicts.len() >= MAX_LOGGED_VERDICTS {
                verdicts.clear();
            }
            for note in &outcome.notes {
                match note.kind {
                    NoteKind::Skipped => self.skipped.fetch_add(1, Ordering::Relaxed),
                    NoteKind::Unknown => self.unknown.fetch_add(1, Ordering::Relaxed),
                    NoteKind::Missing => 0,
                    // Engine triggers' notes never reach the sweep.
                    NoteKind::Window => continue,
                };
                let key = (selector.clone(), note.peer.clone());
                if verdicts.insert(key, note.kind) != Some(note.kind) {
                    changed.push(note);
                }
            }
        }
        for note in changed {
            log::warn!("{selector}: {}", note.text);
        }
    }

    /// Stops the sweeper, aborting a sweep in flight; waiting requests get
    /// an error.
    pub fn shutdown(&self) {
        lock(&self.state).stopped = true;
        lock(&self.cancel).take();
        self.wake.notify_all();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        let waiting = std::mem::take(&mut lock(&self.state).waiting);
        drop(waiting);
    }

    fn sweep_loop(&self, mut cancelled: oneshot::Receiver<()>) {
        let mut sweeper = Sweeper::default();
        loop {
            let mut state = lock(&self.state);
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
                .filter(|v| v.completed_at.elapsed() < self.config.interval)
            {
                let view = Arc::clone(view);
                for waiter in state.waiting.drain(..) {
                    let _ = waiter.send(Arc::clone(&view));
                }
                continue;
            }
            drop(state);
            let started = Instant::now();
            let Some(mut view) = self.sweep(&mut sweeper, &mut cancelled) else {
                // Shut down mid-sweep; waiters are dropped, so they get an error.
                lock(&self.state).waiting.clear();
                return;
            };
            // Verdicts about peers that answer again (or are gone) are done.
            lock(&self.verdicts)
                .retain(|(_, peer), _| view.missing.iter().any(|m| &m.address == peer));
            view.took = started.elapsed();
            let view = Arc::new(view);
            self.sweeps.fetch_add(1, Ordering::Relaxed);
            let mut state = lock(&self.state);
            state.last = Some(Arc::clone(&view));
            for waiter in state.waiting.drain(..) {
                let _ = waiter.send(Arc::clone(&view));
            }
        }
    }

    /// One sweep; `None` when shutdown interrupted it.
    fn sweep(
        &self,
        sweeper: &mut Sweeper,
        cancelled: &mut oneshot::Receiver<()>,
    ) -> Option<ClusterView> {
        let (addresses, unresolved) = self.resolve();
        self.forget_departed(sweeper, &addresses, &unresolved);
        self.reload_tls(sweeper);

        let option = || CallOption::default().timeout(self.config.peer_timeout);
        let calls: Vec<_> = addresses
            .iter()
            .map(|address| {
                let peer = sweeper.peers.entry(*address).or_default();
                let client = peer
                    .client
                    .get_or_insert_with(|| self.client(address, sweeper.tls.as_ref()));
                (
                    *address,
                    client.snapshot_async_opt(&SnapshotRequest::new(), option()),
                )
            })
            .collect();
        let answers =
            futures_util::future::join_all(calls.into_iter().map(|(address, call)| async move {
                match call {
                    Ok(receiver) => (address, receiver.await),
                    Err(e) => (address, Err(e)),
                }
            }));
        let answers =
            match futures_executor::block_on(futures_util::future::select(answers, cancelled)) {
                futures_util::future::Either::Left((answers, _)) => answers,
                futures_util::future::Either::Right(_) => return None,
            };

        let now = Instant::now();
        let mut bytes = 0;
        for (address, answer) in answers {
            let peer = sweeper.peers.entry(address).or_default();
            let result = match answer {
                Ok(message) if message.node_name() == self.config.node_name => {
                    peer.is_self = true;
                    peer.failing = None;
                    continue;
                }
                Ok(message) => {
                    bytes += message.compute_size() as usize;
                    NodeReport::from_proto(&message, self.config.stale_after)
                        .map_err(|e| format!("answered, but {e}"))
                }
                Err(e) => {
                    peer.client = None;
                    Err(e.to_string())
                }
            };
            match result {
                Ok(report) => {
                    if peer.failing.take().is_some() {
                        log::info!("peer {address} ({}) answers again", report.name);
                    }
                    peer.last = Some((Arc::new(report), now));
                }
                Err(error) => {
                    self.failed_calls.fetch_add(1, Ordering::Relaxed);
                    if peer.failing.as_deref() != Some(&error) {
                        let known = match &peer.last {
                            Some((report, _)) => format!(
                                "keeping its last report (node {}) for up to {}s",
                                report.name,
                                PEER_REPORT_TRUST.as_secs()
                            ),
                            None => String::from("it has not answered since this scaler started"),
                        };
                        log::warn!("peer {address} did not answer: {error}; {known}");
                    }
                    peer.failing = Some(error);
                }
            }
        }
        for (address, peer) in &mut sweeper.peers {
            if !addresses.contains(address) && !peer.is_self {
                let error = format!("its address did not resolve: {}", unresolved.join("; "));
                peer.failing = Some(error);
            }
        }
        Some(self.compose(sweeper, &unresolved, bytes))
    }

    /// Every `--peers` entry's addresses, and the entries that did not resolve.
    fn resolve(&self) -> (HashSet<SocketAddr>, Vec<String>) {
        let mut addresses = HashSet::new();
        let mut unresolved = Vec::new();
        for entry in &self.config.peers {
            match entry.to_socket_addrs() {
                Ok(resolved) => addresses.extend(resolved),
                Err(e) => unresolved.push(format!("{entry}: cannot resolve: {e}")),
            }
        }
        (addresses, unresolved)
    }

    /// Forgets peers whose address left DNS, but only when every entry
    /// resolved: a DNS failure is not a departure.
    fn forget_departed(
        &self,
        sweeper: &mut Sweeper,
        addresses: &HashSet<SocketAddr>,
        unresolved: &[String],
    ) {
        if !unresolved.is_empty() {
            return;
        }
        sweeper.peers.retain(|address, peer| {
            let present = addresses.contains(address);
            if !present && !peer.is_self {
                match &peer.last {
                    Some((report, _)) => log::info!(
                        "peer {address} (node {}) left the peers' DNS name; forgetting it",
                        report.name
                    ),
                    None => log::info!("peer {address} left the peers' DNS name; forgetting it"),
                }
            }
            present
        });
    }

    /// Re-reads the peer TLS files; on a change, drops every channel so the
    /// next calls use the new certificates.
    fn reload_tls(&self, sweeper: &mut Sweeper) {
        let Some(tls) = &self.config.tls else {
            return;
        };
        match tls.read() {
            Ok(material) if sweeper.tls.as_ref() != Some(&material) => {
                if sweeper.tls.is_some() {
                    log::info!("peer TLS files changed; reconnecting to peers with them");
                }
                sweeper.tls = Some(material);
                for peer in sweeper.peers.values_mut() {
                    peer.client = None;
                }
            }
            Ok(_) => {}
            Err(e) => log::warn!("cannot reload peer TLS files, keeping the last ones: {e}"),
        }
    }

    /// The view from what the sweeper knows now.
    fn compose(&self, sweeper: &Sweeper, unresolved: &[String], bytes: usize) -> ClusterView {
        let now = Instant::now();
        let mut nodes = vec![Arc::new(NodeReport::from_local(
            &self.config.node_name,
            &self.local.load(),
            now,
            self.config.stale_after,
        ))];
        let mut missing = Vec::new();
        for (address, peer) in &sweeper.peers {
            if peer.is_self {
                continue;
            }
            match (&peer.failing, &peer.last) {
                (None, Some((report, _))) => nodes.push(Arc::clone(report)),
                (None, None) => {}
                (Some(error), last) => {
                    let age = last
                        .as_ref()
                        .map(|(_, at)| now.saturating_duration_since(*at));
                    let trusted = match (last, age) {
                        (Some((report, _)), Some(age)) if age <= PEER_REPORT_TRUST => {
                            Some((Arc::clone(report), age))
                        }
                        _ => None,
                    };
                    let unknown_because = match age {
                        None => String::from("it has not answered since this scaler started"),
                        Some(age) => format!(
                            "its last report is {}s old, past the {}s it is trusted",
                            age.as_secs(),
                            PEER_REPORT_TRUST.as_secs()
                        ),
                    };
                    missing.push(MissingPeer {
                        address: address.to_string(),
                        error: error.clone(),
                        last: trusted,
                        unknown_because,
                    });
                }
            }
        }
        if sweeper.peers.is_empty() {
            // Nothing resolved at all: each entry is an unknown peer.
            missing.extend(unresolved.iter().map(|error| MissingPeer {
                address: error.split(": ").next().unwrap_or_default().to_string(),
                error: error.clone(),
                last: None,
                unknown_because: String::from("its name did not resolve"),
            }));
        }
        missing.sort_by(|a, b| a.address.cmp(&b.address));
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let no_peer_answered = (nodes.len() == 1 && !missing.is_empty()).then(|| {
            let failed: Vec<String> = missing
                .iter()
                .map(|m| format!("{}: {}", m.label(), m.error))
                .collect();
            format!(
                "no peer answered, so the cluster view has only this node: {}",
                failed.join("; ")
            )
        });
        ClusterView {
            completed_at: Instant::now(),
            nodes,
            missing,
            no_peer_answered,
            unavailable: None,
            bytes,
            took: Duration::ZERO,
        }
    }

    fn client(&self, address: &SocketAddr, tls: Option<&TlsMaterial>) -> NodeClient {
        let builder = ChannelBuilder::new(Arc::clone(&self.env))
            .max_receive_message_len(MAX_PEER_ANSWER_BYTES as i32);
        let channel = match (tls, &self.config.tls) {
            (Some(material), Some(config)) => builder
                .override_ssl_target(config.server_name.clone())
                .set_credentials(
                    ChannelCredentialsBuilder::new()
                        .root_cert(material.ca.clone())
                        .cert(material.cert.clone(), material.key.clone())
                        .build(),
                )
                .connect(&address.to_string()),
            _ => builder.connect(&address.to_string()),
        };
        NodeClient::new(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::gpu_metric::{Metric, Readings};
    use crate::node::snapshot::{Allocation, Attribution, GpuSample};
    use crate::scaling::trigger::parse;

    fn report(name: &str, util: f64, pods: &[&str]) -> Arc<NodeReport> {
        let mut readings = Readings::default();
        readings.set(Metric::GpuUtilization, util);
        Arc::new(NodeReport {
            name: name.into(),
            usable: Ok(()),
            attribution: Attribution::complete(),
            gpus: vec![GpuSample {
                uuid: Some(format!("GPU-{name}")),
                allocations: pods
                    .iter()
                    .map(|pod| Allocation {
                        namespace: "ml".into(),
                        pod: pod.to_string(),
                        container: "main".into(),
                        device_id: format!("GPU-{name}"),
                    })
                    .collect(),
                ..GpuSample::healthy(0, readings)
            }],
        })
    }

    fn missing(address: &str, last: Option<Arc<NodeReport>>) -> MissingPeer {
        MissingPeer {
            address: address.into(),
            error: "DEADLINE_EXCEEDED".into(),
            last: last.map(|r| (r, Duration::from_secs(12))),
            unknown_because: "it has not answered since this scaler started".into(),
        }
    }

    fn view(nodes: Vec<Arc<NodeReport>>, missing: Vec<MissingPeer>) -> ClusterView {
        ClusterView {
            completed_at: Instant::now(),
            nodes,
            missing,
            no_peer_answered: None,
            unavailable: None,
            bytes: 0,
            took: Duration::ZERO,
        }
    }

    fn trigger(pairs: &[(&str, &str)]) -> Trigger {
        let metadata = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&metadata, "ml").unwrap()
    }

    #[test]
    fn a_silent_peer_that_held_the_workload_makes_it_unavailable() {
        let c = report("c", 90.0, &["vllm-1"]);
        let view = view(
            vec![report("a", 60.0, &["vllm-0"])],
            vec![missing("10.0.0.3:6000", Some(c))],
        );
        let outcome = view.outcome(&trigger(&[("workload", "vllm")]), Detail::ValueOnly);
        let error = outcome.value.unwrap_err();
        assert!(
            error
                .message()
                .contains("peer 10.0.0.3:6000 (node c) did not answer (DEADLINE_EXCEEDED)")
                && error
                    .message()
                    .contains("shows ml/vllm-1 holding GPUs there"),
            "{error:?}"
        );
    }

    #[test]
    fn a_silent_peer_without_the_workload_is_skipped_with_a_note() {
        let c = report("c", 90.0, &["other-0"]);
        let view = view(
            vec![report("a", 60.0, &["vllm-0"])],
            vec![missing("10.0.0.3:6000", Some(c))],
        );
        let outcome = view.outcome(&trigger(&[("workload", "vllm")]), Detail::ValueOnly);
        assert_eq!(outcome.value, Ok(60.0));
        assert_eq!(outcome.notes.len(), 1);
        assert_eq!(outcome.notes[0].kind, NoteKind::Skipped);
        // Zero pods anywhere and the silent peer had none either: 0.
        let idle = view.outcome(&trigger(&[("workload", "idle")]), Detail::ValueOnly);
        assert_eq!(idle.value, Ok(0.0));
    }

    #[test]
    fn an_unknown_peer_turns_a_zero_into_unavailable_but_not_a_value() {
        let view = view(
            vec![report("a", 60.0, &["vllm-0"])],
            vec![missing("10.0.0.3:6000", None)],
        );
        let found = view.outcome(&trigger(&[("workload", "vllm")]), Detail::ValueOnly);
        assert_eq!(found.value, Ok(60.0));
        assert_eq!(found.notes[0].kind, NoteKind::Unknown);
        let nowhere = view.outcome(&trigger(&[("workload", "idle")]), Detail::ValueOnly);
        assert!(nowhere
            .value
            .unwrap_err()
            .message()
            .contains("peers that did not answer may run some: 10.0.0.3:6000"),);
        // Node-wide triggers keep their rule: the others answer, with a note.
        let fleet = view.outcome(&trigger(&[]), Detail::ValueOnly);
        assert_eq!(fleet.value, Ok(60.0));
        assert_eq!(fleet.notes[0].kind, NoteKind::Missing);
    }

    #[test]
    fn a_view_that_could_not_be_taken_fails_every_trigger() {
        let failed = ClusterView::failed("keda-gpu-scaler is shutting down");
        for pairs in [&[][..], &[("workload", "vllm")][..]] {
            let outcome = failed.outcome(&trigger(pairs), Detail::ValueOnly);
            assert_eq!(
                outcome.value.unwrap_err().message(),
                "keda-gpu-scaler is shutting down"
            );
        }
    }
}
