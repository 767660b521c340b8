//! Inference engines' own signals (queue length, requests running, KV cache
//! use), read from every replica's Prometheus `/metrics` page without a
//! Prometheus server: where the replicas are (`endpoint`, `resolve`), a
//! small HTTP/1.1 GET client (`http`), a Prometheus text parser that reads
//! only the families asked for (`prom`), each engine's names and how one
//! page becomes one value (`signals`), which endpoints and addresses a
//! trigger may read (`policy`), fair shares of the byte budgets
//! (`share`), the shared, single-flight scrape of every replica
//! (`scrape`), and counters and histograms read over a window: rates,
//! resets, merged quantiles (`window`). Nothing here knows about GPUs,
//! triggers or gRPC.

pub mod endpoint;
pub mod http;
pub mod policy;
pub mod prom;
pub mod resolve;
pub mod scrape;
pub mod share;
pub mod signals;
pub mod window;
