//! Where a trigger's value comes from: this node's snapshot, or, with
//! peers, the cluster view.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::evaluate::{local_outcome, Detail, Outcome};
use crate::snapshot::SnapshotCell;
use crate::trigger::Trigger;

#[derive(Clone)]
pub enum Source {
    Local {
        snapshots: Arc<SnapshotCell>,
        stale_after: Duration,
    },
    Cluster(Arc<Cluster>),
}

impl Source {
    /// The trigger's outcome. Local: computed now. Cluster: after the
    /// (shared, cached) sweep, without blocking the caller's thread.
    pub fn outcome(
        &self,
        trigger: &Trigger,
        detail: Detail,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let now_or_later = match self {
            Source::Local {
                snapshots,
                stale_after,
            } => Ok(local_outcome(
                trigger,
                &snapshots.load(),
                Instant::now(),
                *stale_after,
                detail,
            )),
            Source::Cluster(cluster) => Err((cluster.view(), trigger.clone())),
        };
        async move {
            match now_or_later {
                Ok(outcome) => outcome,
                Err((view, trigger)) => view.await.outcome(&trigger, detail),
            }
        }
    }

    /// As `outcome`, on a thread that may wait (the stream notifier).
    pub fn outcome_blocking(&self, trigger: &Trigger) -> Outcome {
        futures_executor::block_on(self.outcome(trigger, Detail::ValueOnly))
    }
}
