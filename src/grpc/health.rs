//! `grpc.health.v1.Health` for Kubernetes' native gRPC probes.
//!
//! Readiness (service `""` or `externalscaler.ExternalScaler`) is SERVING
//! while the GPU library (NVML or AMD SMI) answers and the snapshot is
//! fresh. Liveness (service `liveness`) is SERVING whenever the process can
//! answer, so a stuck library makes the pod unready but never gets it
//! restarted in a loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::mpsc::{unbounded, UnboundedSender};
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, UnarySink};

use crate::grpc::reply::reply;
use crate::grpc::streams::{forward, PassView, Pushed, StreamHub, Watch};
use crate::node::snapshot::{stale_reason, NodeState, Snapshot, SnapshotCell};
use crate::proto::health::{
    health_check_response::ServingStatus as Status, HealthCheckRequest, HealthCheckResponse,
};
use crate::proto::health_grpc::Health;

/// The service name the liveness probe asks for.
pub const LIVENESS: &str = "liveness";
/// Service names the readiness probe may ask for.
pub const READINESS: [&str; 2] = ["", "externalscaler.ExternalScaler"];

/// The status of `service`, or `None` for a service this server does not know.
pub fn service_status(
    service: &str,
    snapshot: &Snapshot,
    now: Instant,
    stale_after: Duration,
) -> Option<Status> {
    if service == LIVENESS {
        return Some(Status::SERVING);
    }
    if !READINESS.contains(&service) {
        return None;
    }
    let ready = matches!(snapshot.state, NodeState::Ready { .. })
        && stale_reason(snapshot.age(now), stale_after).is_none();
    Some(if ready {
        Status::SERVING
    } else {
        Status::NOT_SERVING
    })
}

#[derive(Clone)]
pub struct HealthService {
    snapshots: Arc<SnapshotCell>,
    streams: StreamHub,
    stale_after: Duration,
}

impl HealthService {
    pub fn new(snapshots: Arc<SnapshotCell>, streams: StreamHub, stale_after: Duration) -> Self {
        Self {
            snapshots,
            streams,
            stale_after,
        }
    }

    fn status(&self, service: &str) -> Option<Status> {
        service_status(
            service,
            &self.snapshots.load(),
            Instant::now(),
            self.stale_after,
        )
    }
}

impl Health for HealthService {
    fn check(
        &mut self,
        ctx: RpcContext,
        req: HealthCheckRequest,
        sink: UnarySink<HealthCheckResponse>,
    ) {
        let answer = self.status(req.service()).map(response).ok_or_else(|| {
            RpcStatus::with_message(
                RpcStatusCode::NOT_FOUND,
                format!(
                    "unknown service {:?}; use \"\" or {LIVENESS:?}",
                    req.service()
                ),
            )
        });
        reply(&ctx, sink, answer);
    }

    fn watch(
        &mut self,
        ctx: RpcContext,
        req: HealthCheckRequest,
        sink: ServerStreamingSink<HealthCheckResponse>,
    ) {
        let first = self
            .status(req.service())
            .unwrap_or(Status::SERVICE_UNKNOWN);
        let (sender, pushed) = unbounded();
        sender
            .unbounded_send(Ok(first))
            .expect("receiver is held here");
        self.streams.add(Box::new(HealthWatch {
            service: req.service().to_string(),
            stale_after: self.stale_after,
            sender,
            last: first,
        }));
        ctx.spawn(forward(pushed, sink, response));
    }
}

/// Watch: the status at once, then each change.
struct HealthWatch {
    service: String,
    stale_after: Duration,
    sender: UnboundedSender<Pushed<Status>>,
    last: Status,
}

impl Watch for HealthWatch {
    fn update(&mut self, snapshot: &Snapshot, _view: &PassView<'_>, now: Instant) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        let status = service_status(&self.service, snapshot, now, self.stale_after)
            .unwrap_or(Status::SERVICE_UNKNOWN);
        if status == self.last {
            return true;
        }
        self.last = status;
        self.sender.unbounded_send(Ok(status)).is_ok()
    }

    fn next_due(&self) -> Option<Instant> {
        None
    }

    fn end(&mut self, status: RpcStatus) {
        let _ = self.sender.unbounded_send(Err(status));
    }
}

fn response(status: Status) -> HealthCheckResponse {
    let mut response = HealthCheckResponse::new();
    response.set_status(status);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(state: NodeState, age: Duration) -> (Snapshot, Instant) {
        let now = Instant::now();
        (Snapshot::aged(state, age, now), now)
    }

    fn ready() -> NodeState {
        NodeState::Ready {
            backend: "nvml",
            driver_version: "550".into(),
            gpus: vec![],
            attribution: crate::node::snapshot::Attribution::complete(),
        }
    }

    const LIMIT: Duration = Duration::from_secs(3);

    #[test]
    fn readiness_follows_nvml_and_freshness() {
        let (fresh, now) = snapshot(ready(), Duration::from_millis(10));
        assert_eq!(
            service_status("", &fresh, now, LIMIT),
            Some(Status::SERVING)
        );
        let (stale, now) = snapshot(ready(), Duration::from_secs(4));
        assert_eq!(
            service_status("", &stale, now, LIMIT),
            Some(Status::NOT_SERVING)
        );
        let unavailable = NodeState::Unavailable {
            reason: "no driver".into(),
        };
        let (down, now) = snapshot(unavailable, Duration::ZERO);
        assert_eq!(
            service_status("externalscaler.ExternalScaler", &down, now, LIMIT),
            Some(Status::NOT_SERVING)
        );
    }

    #[test]
    fn liveness_serves_even_when_stale() {
        let (stale, now) = snapshot(ready(), Duration::from_secs(60));
        assert_eq!(
            service_status(LIVENESS, &stale, now, LIMIT),
            Some(Status::SERVING)
        );
        assert_eq!(service_status("other", &stale, now, LIMIT), None);
    }
}
