//! keda-gpu-scaler: a KEDA external scaler that reads GPU load from NVML or
//! AMD SMI.
//!
//! One folder per concern, each depending only on those before it:
//! - `aggregation`: how several values become one (shared by `engine` and
//!   `scaling`);
//! - `dynlib`: what the FFI rooms share (opening a library, counting failed
//!   calls);
//! - `nvml`, `amdsmi`: the hand-written FFI to NVIDIA's and AMD's
//!   libraries;
//! - `engine`: inference engines' own `/metrics` pages, read from every
//!   replica (endpoints, DNS, an HTTP client, a Prometheus text parser, each
//!   engine's names, and the shared scrape);
//! - `node`: this node's pipeline, from the GPUs and the kubelet to the
//!   published snapshot (only its sampler thread calls NVML);
//! - `scaling`: what a trigger asks (metadata, profiles, selectors) and how
//!   a list of nodes answers it (evaluation, aggregation, HPA arithmetic);
//! - `cluster`: the peer view, one report type for this node and peers, and
//!   the choice of scope (this node, or the cluster);
//! - `observe`: the `/metrics` page for people (not for scaling);
//! - `untrusted`: outside text on its way to a log line or a message,
//!   capped and escaped (shared by all);
//! - `grpc`: the servers KEDA and probes call, streams, replies and TLS;
//! - `commands`: the command line.
//!
//! `proto` is the generated wire code, shared by all.

pub mod aggregation;
pub mod amdsmi;
pub mod cluster;
pub mod commands;
pub mod dynlib;
pub mod engine;
pub mod grpc;
pub mod node;
pub mod nvml;
pub mod observe;
pub mod proto;
pub mod scaling;
pub mod untrusted;
