//! The scope a trigger is answered over: this node's snapshot, or, with
//! peers, the cluster view. Nothing here calls NVML or a peer itself.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::sweep::{Cluster, ClusterView};
use crate::node::snapshot::{Snapshot, SnapshotCell};
use crate::scaling::evaluate::{local_outcome, Detail, Outcome};
use crate::scaling::trigger::Trigger;

/// Which nodes answer: this one (no `--peers`), or the whole cluster.
#[derive(Clone)]
pub enum Scope {
    Node {
        snapshots: Arc<SnapshotCell>,
        stale_after: Duration,
    },
    Cluster(Arc<Cluster>),
}

/// One moment's data to answer triggers from: evaluating many triggers
/// against one view costs one snapshot load or one sweep.
pub enum View {
    Local {
        snapshot: Arc<Snapshot>,
        stale_after: Duration,
    },
    Cluster {
        view: Arc<ClusterView>,
        cluster: Arc<Cluster>,
    },
}

impl Scope {
    /// The current view. Local: ready now. Cluster: after the (shared,
    /// cached) sweep, without blocking the caller's thread.
    pub fn view(&self) -> impl Future<Output = View> + Send + 'static {
        let now_or_later = match self {
            Scope::Node {
                snapshots,
                stale_after,
            } => Ok(View::Local {
                snapshot: snapshots.load(),
                stale_after: *stale_after,
            }),
            Scope::Cluster(cluster) => Err((cluster.view(), Arc::clone(cluster))),
        };
        async move {
            match now_or_later {
                Ok(view) => view,
                Err((view, cluster)) => View::Cluster {
                    view: view.await,
                    cluster,
                },
            }
        }
    }

    /// As `view`, on a thread that may wait (the stream notifier).
    pub fn view_blocking(&self) -> View {
        futures_executor::block_on(self.view())
    }
}

impl View {
    /// The trigger's outcome. Peers a cluster outcome left out are counted
    /// and logged once per change.
    pub fn outcome(&self, trigger: &Trigger, detail: Detail) -> Outcome {
        match self {
            View::Local {
                snapshot,
                stale_after,
            } => local_outcome(trigger, snapshot, Instant::now(), *stale_after, detail),
            View::Cluster { view, cluster } => {
                let outcome = view.outcome(trigger, detail);
                cluster.observe(trigger, &outcome);
                outcome
            }
        }
    }
}
