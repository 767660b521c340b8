//! `kedagpuscaler.node.v1.Node`, the peer gRPC service: this node's
//! snapshot for peers, and the per-GPU (or per-replica) explanation
//! behind `query --explain`. Handlers read the snapshot or a view; they never block.

use std::sync::Arc;
use std::time::Instant;

use grpcio::{RpcContext, UnarySink};

use crate::cluster::report::to_proto;
use crate::cluster::scope::Scope;
use crate::grpc::reply::{answer, config_status, reply};
use crate::node::snapshot::SnapshotCell;
use crate::proto::node::{
    ExplainLine, ExplainRequest, ExplainResponse, NodeSnapshot, ReplicaLine, SnapshotRequest,
};
use crate::proto::node_grpc::Node;
use crate::scaling::outcome::{Detail, Outcome};
use crate::scaling::trigger;

#[derive(Clone)]
pub struct NodeService {
    node_name: String,
    snapshots: Arc<SnapshotCell>,
    scope: Scope,
}

impl NodeService {
    pub fn new(node_name: String, snapshots: Arc<SnapshotCell>, scope: Scope) -> Self {
        Self {
            node_name,
            snapshots,
            scope,
        }
    }
}

impl Node for NodeService {
    fn snapshot(&mut self, ctx: RpcContext, _req: SnapshotRequest, sink: UnarySink<NodeSnapshot>) {
        let message = to_proto(&self.node_name, &self.snapshots.load(), Instant::now());
        reply(&ctx, sink, Ok(message));
    }

    fn explain(&mut self, ctx: RpcContext, req: ExplainRequest, sink: UnarySink<ExplainResponse>) {
        let trigger = match trigger::parse(req.metadata(), req.namespace()) {
            Ok(trigger) => trigger,
            Err(e) => return reply(&ctx, sink, Err(config_status(&e))),
        };
        let outcome = self.scope.outcome(&trigger, Detail::Explained);
        ctx.spawn(async move {
            let outcome = outcome.await;
            answer(sink, Ok(explanation(&outcome))).await
        });
    }
}

fn explanation(outcome: &Outcome) -> ExplainResponse {
    let mut response = ExplainResponse::new();
    match &outcome.value {
        Ok(value) => {
            response.set_has_value(true);
            response.set_value(*value);
        }
        Err(e) => response.set_error(e.message().to_string()),
    }
    for explained in &outcome.explained {
        let mut line = ExplainLine::new();
        line.set_node(explained.node.clone());
        line.set_gpu_index(explained.index);
        line.set_gpu_uuid(explained.uuid.clone());
        line.set_pods(explained.pods.clone());
        if let Some(value) = explained.value {
            line.set_has_value(true);
            line.set_value(value);
        }
        line.set_counted(explained.counted);
        line.set_reason(explained.reason.clone());
        response.mut_lines().push(line);
    }
    for note in &outcome.notes {
        response.mut_notes().push(note.text.clone());
    }
    for replica in &outcome.replicas {
        let mut line = ReplicaLine::new();
        line.set_endpoint(replica.endpoint.clone());
        line.set_address(replica.address.clone());
        if let Some(value) = replica.value {
            line.set_has_value(true);
            line.set_value(value);
        }
        line.set_counted(replica.counted);
        line.set_reason(replica.status.to_string());
        response.mut_replicas().push(line);
    }
    response
}
