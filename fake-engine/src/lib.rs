//! Stand-in inference engines for tests, benchmarks and the no-GPU demo:
//! `/metrics` pages shaped like vLLM's, SGLang's, trtllm-serve's and
//! Triton's (`pages`), served over loopback HTTP by replicas whose load,
//! finished requests (counters and latency histograms, still or moving
//! with the clock) and misbehaviour a test controls (`server`).

pub mod pages;
pub mod server;

pub use pages::{page, Finished, Kind, Load};
pub use server::{Answer, Behaviour, Moving, Replica};
