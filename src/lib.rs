//! keda-gpu-scaler: a KEDA external scaler that reads GPU load from NVML.
//!
//! The pipeline, one module each: `nvml` (FFI) → `collect` and `sampler`
//! (a background thread, with `podresources` and `attribution` for which
//! pods hold which GPUs) → `snapshot` (atomically swapped) → `trigger`
//! (metadata) and `evaluate`, over this node or the `cluster` view
//! (`source`) → `service`, `streams`, `health` and `node_service` (gRPC)
//! → `server`.

pub mod attribution;
pub mod cli;
pub mod cluster;
pub mod collect;
pub mod commands;
pub mod duration;
pub mod evaluate;
pub mod health;
pub mod hpa;
pub mod json;
pub mod metrics;
pub mod node_report;
pub mod node_service;
pub mod nvml;
pub mod podresources;
pub mod proto;
pub mod sampler;
pub mod server;
pub mod service;
pub mod signals;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod streams;
pub mod tls;
pub mod trigger;
pub mod trigger_cache;
