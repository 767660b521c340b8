//! The peer view: sweeping the peers (`sweep`), the node report shared by
//! this node and its peers (`report`), the peer gRPC service (`service`),
//! and the choice between this node's view and the cluster's (`scope`).
//! Nothing here calls NVML.

pub mod report;
pub mod scope;
pub mod service;
pub mod sweep;
