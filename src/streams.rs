//! StreamIsActive without a thread per stream: one notifier thread wakes on
//! every published snapshot (and at least once per sample interval, to see
//! staleness), re-evaluates each open stream and pushes a result when it
//! changed or its heartbeat is due. Streams are futures fed by channels.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use grpcio::{RpcStatus, RpcStatusCode};

use crate::evaluate::evaluate;
use crate::snapshot::{Snapshot, SnapshotCell};
use crate::status::eval_status;
use crate::trigger::Trigger;

/// What a stream's future receives: a result to send, or the status that ends it.
pub type StreamItem = Result<bool, RpcStatus>;

/// Shared handle to the notifier; cheap to clone.
#[derive(Clone)]
pub struct StreamHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    snapshots: Arc<SnapshotCell>,
    interval: Duration,
    stale_after: Duration,
    /// `None` once shut down.
    streams: Mutex<Option<Vec<Stream>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Stream {
    trigger: Trigger,
    sender: UnboundedSender<StreamItem>,
    last: bool,
    next_heartbeat: Instant,
}

impl StreamHub {
    /// Starts the notifier thread.
    pub fn start(
        snapshots: Arc<SnapshotCell>,
        interval: Duration,
        stale_after: Duration,
    ) -> std::io::Result<Self> {
        let inner = Arc::new(HubInner {
            snapshots,
            interval,
            stale_after,
            streams: Mutex::new(Some(Vec::new())),
            thread: Mutex::new(None),
        });
        let thread = std::thread::Builder::new()
            .name("stream-notifier".into())
            .spawn({
                let inner = Arc::clone(&inner);
                move || notify_loop(&inner)
            })?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(Self { inner })
    }

    /// Opens a stream: evaluates at once and queues that first result, so the
    /// client hears immediately. An error ends the stream before it starts.
    pub fn subscribe(&self, trigger: Trigger) -> Result<UnboundedReceiver<StreamItem>, RpcStatus> {
        let now = Instant::now();
        let snapshot = self.inner.snapshots.load();
        let value = evaluate(&trigger, &snapshot, now, self.inner.stale_after)
            .map_err(|e| eval_status(&e))?;
        let active = trigger.is_active(value);
        let (sender, receiver) = unbounded();
        let mut streams = self.inner.lock_streams();
        let Some(streams) = streams.as_mut() else {
            return Err(shutting_down());
        };
        sender
            .unbounded_send(Ok(active))
            .expect("receiver is still held here");
        streams.push(Stream {
            next_heartbeat: now + trigger.poll_interval,
            trigger,
            sender,
            last: active,
        });
        Ok(receiver)
    }

    /// Open streams, for logs and tests.
    pub fn open_streams(&self) -> usize {
        self.inner.lock_streams().as_ref().map_or(0, Vec::len)
    }

    /// Ends every stream with UNAVAILABLE, refuses new ones and stops the thread.
    pub fn shutdown(&self) {
        if let Some(streams) = self.inner.lock_streams().take() {
            for stream in streams {
                let _ = stream.sender.unbounded_send(Err(shutting_down()));
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
    fn lock_streams(&self) -> std::sync::MutexGuard<'_, Option<Vec<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn notify_loop(hub: &HubInner) {
    let mut seen = hub.snapshots.load().sequence;
    loop {
        let wait = next_wait(hub, Instant::now());
        let snapshot = hub.snapshots.wait_newer(seen, wait);
        seen = snapshot.sequence;
        let mut streams = hub.lock_streams();
        let Some(streams) = streams.as_mut() else {
            return;
        };
        let now = Instant::now();
        streams.retain_mut(|stream| stream.update(&snapshot, now, hub.stale_after));
    }
}

/// Until the next due heartbeat, but never longer than one sample interval
/// (a hung sampler publishes nothing, and staleness must still be pushed).
fn next_wait(hub: &HubInner, now: Instant) -> Duration {
    let streams = hub.lock_streams();
    let earliest = streams
        .iter()
        .flatten()
        .map(|s| s.next_heartbeat.saturating_duration_since(now))
        .min();
    earliest.map_or(hub.interval, |d| d.min(hub.interval))
}

impl Stream {
    /// Pushes a change, a due heartbeat or an error; false drops the stream.
    fn update(&mut self, snapshot: &Snapshot, now: Instant, stale_after: Duration) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        match evaluate(&self.trigger, snapshot, now, stale_after) {
            Err(e) => {
                let _ = self.sender.unbounded_send(Err(eval_status(&e)));
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
}

fn shutting_down() -> RpcStatus {
    RpcStatus::with_message(
        RpcStatusCode::UNAVAILABLE,
        "keda-gpu-scaler is shutting down".to_string(),
    )
}
