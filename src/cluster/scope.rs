//! What a trigger is answered from: GPU triggers from this node's snapshot
//! or, with peers, the cluster view; engine triggers from the shared
//! scrape of their endpoints (and, to tell a workload at zero replicas
//! from a wrong name, the GPU view's pod attribution). Nothing here calls
//! NVML, a peer or an engine itself; it asks the sampler, the sweeper and
//! the scraper, which do.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::sweep::{Cluster, ClusterView};
use crate::engine::scrape::Scraper;
use crate::node::gpu_metric::Metric;
use crate::node::snapshot::{Snapshot, SnapshotCell};
use crate::scaling::evaluate::local_outcome;
use crate::scaling::outcome::{Detail, EvalError, Outcome};
use crate::scaling::replicas::{engine_outcome, needs_pods};
use crate::scaling::trigger::{GpuSelector, Source, Trigger};
use crate::scaling::windows::Windows;

/// Where triggers are answered from.
#[derive(Clone)]
pub struct Scope {
    pub gpus: GpuScope,
    pub engines: Arc<Scraper>,
    /// The reads windowed engine triggers (rates, latencies) are computed from.
    pub windows: Arc<Windows>,
    /// Engine scrapes must end within one interval.
    pub sample_interval: Duration,
}

/// Which nodes answer GPU triggers: this one (no `--peers`), or the whole cluster.
#[derive(Clone)]
pub enum GpuScope {
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
    /// The trigger's outcome, without blocking the caller's thread. Work
    /// it needs (a sweep, a scrape) starts now, before the future is
    /// first polled.
    pub fn outcome(
        &self,
        trigger: &Trigger,
        detail: Detail,
    ) -> impl Future<Output = Outcome> + Send + 'static {
        let trigger = trigger.clone();
        let Source::Engine(source) = &trigger.source else {
            let view = self.gpus.view();
            return futures_util::future::Either::Left(async move {
                view.await.outcome(&trigger, detail)
            });
        };
        let checked = source
            .check_window(self.sample_interval)
            .and_then(|()| source.timeout(self.sample_interval));
        let (timeout, timeout_error) = match checked {
            Ok(timeout) => (timeout, None),
            Err(e) => (Duration::ZERO, Some(EvalError::InvalidArgument(e.0))),
        };
        let wants = source.wants();
        let scrapes: Vec<_> = match timeout_error {
            Some(_) => Vec::new(),
            None => source
                .endpoints
                .iter()
                .map(|endpoint| self.engines.scrape(endpoint, &wants, timeout))
                .collect(),
        };
        let gpus = self.gpus.clone();
        let windows = Arc::clone(&self.windows);
        futures_util::future::Either::Right(async move {
            if let Some(error) = timeout_error {
                return Outcome {
                    value: Err(error),
                    ..Outcome::unavailable(String::new())
                };
            }
            let scrapes = futures_util::future::join_all(scrapes).await;
            let pods = match needs_pods(&trigger, &scrapes) {
                true => Some(workload_pods(&gpus, &trigger).await),
                false => None,
            };
            let Source::Engine(source) = &trigger.source else {
                unreachable!("checked above")
            };
            let now = std::time::Instant::now();
            if let Some(window) = &source.window {
                let pods = pods.clone();
                if let Some(outcome) =
                    windows.outcome(&trigger, source, window, &scrapes, pods, detail, now)
                {
                    return outcome;
                }
            }
            engine_outcome(
                &trigger,
                source,
                &scrapes,
                pods,
                detail,
                std::time::Instant::now(),
            )
        })
    }

    /// As `outcome`, on a thread that may wait (the stream notifier);
    /// GPU triggers use the pass's `view`.
    pub fn outcome_blocking(&self, trigger: &Trigger, view: impl FnOnce() -> Outcome) -> Outcome {
        match &trigger.source {
            Source::Gpu { .. } => view(),
            Source::Engine(_) => {
                futures_executor::block_on(self.outcome(trigger, Detail::ValueOnly))
            }
        }
    }

    /// Starts the scrapes an engine trigger will need, without waiting.
    pub fn prefetch(&self, trigger: &Trigger) {
        if let Source::Engine(source) = &trigger.source {
            let Ok(timeout) = source.timeout(self.sample_interval) else {
                return;
            };
            let wants = source.wants();
            for endpoint in &source.endpoints {
                drop(self.engines.scrape(endpoint, &wants, timeout));
            }
        }
    }

    /// Stops engine scrapes (waiting for rounds in flight).
    pub fn shutdown(&self) {
        self.engines.shutdown();
    }
}

/// The pods of the trigger's selector that hold GPUs, by the GPU view's
/// attribution; an error when that cannot be known (attribution down, a
/// silent peer that may hold them).
async fn workload_pods(gpus: &GpuScope, trigger: &Trigger) -> Result<Vec<String>, String> {
    let Some(selector) = &trigger.selector else {
        return Ok(Vec::new());
    };
    let probe = Trigger {
        source: Source::Gpu {
            metric: Metric::MemoryUsedMib,
            gpus: GpuSelector::All,
        },
        selector: Some(selector.clone()),
        ..trigger.clone()
    };
    let outcome = gpus.view().await.outcome(&probe, Detail::Explained);
    let mut pods: Vec<String> = outcome
        .explained
        .iter()
        .flat_map(|gpu| &gpu.pods)
        .filter(|pod| {
            pod.split_once('/')
                .is_some_and(|(namespace, name)| selector.matches(namespace, name))
        })
        .cloned()
        .collect();
    pods.sort();
    pods.dedup();
    match outcome.value {
        _ if !pods.is_empty() => Ok(pods),
        Ok(_) => Ok(pods),
        Err(e) => Err(e.message().to_string()),
    }
}

impl GpuScope {
    /// The current view. Local: ready now. Cluster: after the (shared,
    /// cached) sweep, without blocking the caller's thread.
    pub fn view(&self) -> impl Future<Output = View> + Send + 'static {
        let now_or_later = match self {
            GpuScope::Node {
                snapshots,
                stale_after,
            } => Ok(View::Local {
                snapshot: snapshots.load(),
                stale_after: *stale_after,
            }),
            GpuScope::Cluster(cluster) => Err((cluster.view(), Arc::clone(cluster))),
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
