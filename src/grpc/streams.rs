//! Server-streaming RPCs without a thread per stream. One notifier thread
//! wakes on every published snapshot (and at least once per sample
//! interval, to notice staleness), re-evaluates each open stream against
//! one view for the whole pass (one sweep, however many streams) and
//! pushes what is due. Each stream is a future fed by a channel.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use futures_util::{SinkExt, StreamExt};
use grpcio::{RpcStatus, RpcStatusCode, ServerStreamingSink, WriteFlags};

use crate::cluster::scope::{Scope, View};
use crate::grpc::reply::eval_status;
use crate::node::snapshot::{Snapshot, SnapshotCell};
use crate::scaling::outcome::{Detail, EvalError};
use crate::scaling::trigger::Trigger;

/// What a stream's future receives: a message to send, or the status that ends it.
pub type Pushed<T> = Result<T, RpcStatus>;

/// The view of one notifier pass, fetched on first use, so that a pass
/// with only health watches never sweeps peers.
pub struct PassView<'a> {
    scope: &'a Scope,
    view: OnceCell<View>,
}

impl PassView<'_> {
    pub fn get(&self) -> &View {
        self.view.get_or_init(|| self.scope.gpus.view_blocking())
    }

    /// The trigger's value: GPU triggers from the pass's view, engine
    /// triggers from their (shared) scrape.
    pub fn value(&self, trigger: &Trigger) -> Result<f64, EvalError> {
        self.scope
            .outcome_blocking(trigger, || self.get().outcome(trigger, Detail::ValueOnly))
            .value
    }
}

/// One open stream as the notifier sees it.
pub trait Watch: Send {
    /// Re-evaluates against `snapshot` (or the pass's `view`) and pushes
    /// what is due; false drops it.
    fn update(&mut self, snapshot: &Snapshot, view: &PassView<'_>, now: Instant) -> bool;
    /// When it needs a look even without a new snapshot (a heartbeat).
    fn next_due(&self) -> Option<Instant>;
    /// Starts slow work its update will need (engine scrapes), so that a
    /// pass waits for all of them at once rather than one after another.
    fn prefetch(&self, _scope: &Scope) {}
    /// Ends the stream with `status`.
    fn end(&mut self, status: RpcStatus);
}

/// Shared handle to the notifier; cheap to clone.
#[derive(Clone)]
pub struct StreamHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    snapshots: Arc<SnapshotCell>,
    scope: Scope,
    interval: Duration,
    /// `None` once shut down.
    watches: Mutex<Option<Vec<Box<dyn Watch>>>>,
    /// Streams taken out of `watches` for an update; changed under its lock.
    updating: AtomicUsize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StreamHub {
    /// The hub, with no thread yet (see `start`).
    pub fn new(snapshots: Arc<SnapshotCell>, scope: Scope, interval: Duration) -> Self {
        let inner = Arc::new(HubInner {
            snapshots,
            scope,
            interval,
            watches: Mutex::new(Some(Vec::new())),
            updating: AtomicUsize::new(0),
            thread: Mutex::new(None),
        });
        Self { inner }
    }

    /// Starts the notifier thread.
    pub fn start(&self) -> std::io::Result<()> {
        let thread = std::thread::Builder::new()
            .name("stream-notifier".into())
            .spawn({
                let inner = Arc::clone(&self.inner);
                move || notify_loop(&inner)
            })?;
        *self.inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(())
    }

    /// Adds a stream whose first message is already queued. After shutdown
    /// the stream is ended at once.
    pub fn add(&self, mut watch: Box<dyn Watch>) {
        match self.inner.lock_watches().as_mut() {
            Some(watches) => watches.push(watch),
            None => watch.end(shutting_down()),
        }
    }

    /// Open streams, for logs and tests.
    pub fn open_streams(&self) -> usize {
        let watches = self.inner.lock_watches();
        watches.as_ref().map_or(0, Vec::len) + self.inner.updating.load(Ordering::SeqCst)
    }

    /// Ends every stream with UNAVAILABLE, refuses new ones and stops the thread.
    pub fn shutdown(&self) {
        if let Some(watches) = self.inner.lock_watches().take() {
            for mut watch in watches {
                watch.end(shutting_down());
            }
        }
        self.inner.snapshots.wake_waiters();
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl HubInner {
    fn lock_watches(&self) -> std::sync::MutexGuard<'_, Option<Vec<Box<dyn Watch>>>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn notify_loop(hub: &HubInner) {
    let mut seen = hub.snapshots.load().sequence;
    loop {
        let wait = next_wait(hub, Instant::now());
        let snapshot = hub.snapshots.wait_newer(seen, wait);
        seen = snapshot.sequence;
        // Update outside the lock: with the cluster view an update may wait
        // for a sweep, and `add` runs on gRPC's threads, which must not wait.
        let mut current = match hub.lock_watches().as_mut() {
            Some(watches) => {
                hub.updating.store(watches.len(), Ordering::SeqCst);
                std::mem::take(watches)
            }
            None => return,
        };
        let view = PassView {
            scope: &hub.scope,
            view: OnceCell::new(),
        };
        for watch in &current {
            watch.prefetch(&hub.scope);
        }
        let now = Instant::now();
        current.retain_mut(|watch| watch.update(&snapshot, &view, now));
        let mut watches = hub.lock_watches();
        hub.updating.store(0, Ordering::SeqCst);
        match watches.as_mut() {
            Some(added_meanwhile) => {
                current.append(added_meanwhile);
                *added_meanwhile = current;
            }
            None => {
                // Shut down while updating: end what was out of the list.
                for mut watch in current {
                    watch.end(shutting_down());
                }
                return;
            }
        }
    }
}

/// Until the next due heartbeat, but never longer than one sample interval
/// (a hung sampler publishes nothing, and staleness must still be pushed).
fn next_wait(hub: &HubInner, now: Instant) -> Duration {
    let watches = hub.lock_watches();
    let earliest = watches
        .iter()
        .flatten()
        .filter_map(|w| w.next_due())
        .map(|due| due.saturating_duration_since(now))
        .min();
    earliest.map_or(hub.interval, |d| d.min(hub.interval))
}

/// StreamIsActive: the trigger's active state, on change and every
/// `pollIntervalSeconds`.
pub struct ActiveWatch {
    trigger: Trigger,
    sender: UnboundedSender<Pushed<bool>>,
    last: bool,
    next_heartbeat: Instant,
}

impl ActiveWatch {
    /// Queues the first result (the caller's fresh `first` value), so the
    /// client hears at once. An error ends the stream before it starts.
    pub fn open(
        trigger: Trigger,
        first: Result<f64, EvalError>,
    ) -> Result<(Self, UnboundedReceiver<Pushed<bool>>), RpcStatus> {
        let now = Instant::now();
        let value = first.map_err(|e| eval_status(&e))?;
        let active = trigger.is_active(value);
        let (sender, receiver) = unbounded();
        sender
            .unbounded_send(Ok(active))
            .expect("receiver is held here");
        let watch = Self {
            next_heartbeat: now + trigger.poll_interval,
            trigger,
            sender,
            last: active,
        };
        Ok((watch, receiver))
    }
}

impl Watch for ActiveWatch {
    fn update(&mut self, _snapshot: &Snapshot, view: &PassView<'_>, now: Instant) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        match view.value(&self.trigger) {
            Err(e) => {
                self.end(eval_status(&e));
                false
            }
            Ok(value) => {
                let active = self.trigger.is_active(value);
                if active == self.last && now < self.next_heartbeat {
                    return true;
                }
                self.last = active;
                self.next_heartbeat = now + self.trigger.poll_interval;
                self.sender.unbounded_send(Ok(active)).is_ok()
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        Some(self.next_heartbeat)
    }

    fn prefetch(&self, scope: &Scope) {
        scope.prefetch(&self.trigger);
    }

    fn end(&mut self, status: RpcStatus) {
        let _ = self.sender.unbounded_send(Err(status));
    }
}

/// Sends what the notifier queues until the client goes away, an error
/// ends the stream, or the hub drops the sender.
pub async fn forward<T, M>(
    mut pushed: UnboundedReceiver<Pushed<T>>,
    mut sink: ServerStreamingSink<M>,
    message: impl Fn(T) -> M,
) {
    while let Some(item) = pushed.next().await {
        match item {
            Ok(value) => {
                if sink
                    .send((message(value), WriteFlags::default()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(status) => {
                let _ = sink.fail(status).await;
                return;
            }
        }
    }
    let _ = sink.close().await;
}

fn shutting_down() -> RpcStatus {
    RpcStatus::with_message(
        RpcStatusCode::UNAVAILABLE,
        "keda-gpu-scaler is shutting down".to_string(),
    )
}
