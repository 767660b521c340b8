//! What the scaler shows people (never what KEDA scales on): a Prometheus
//! text page at `--metrics-listen` with every GPU reading, what each
//! ScaledObject was told, and the scaler's own health. `exposition` writes
//! the format, `stats` keeps the counters the gRPC handlers record, `page`
//! builds the page, `listener` serves it.

pub mod exposition;
pub mod listener;
pub mod page;
pub mod stats;
