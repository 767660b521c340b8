//! The peer view: sweeping the peers (`sweep`), the node report shared by
//! this node and its peers (`report`), the peer gRPC service (`service`),
//! and what a trigger is answered from (`scope`: this node's view, the
//! cluster's, or the engine scrape). Nothing here calls NVML or an engine.

pub mod report;
pub mod scope;
pub mod service;
pub mod sweep;
